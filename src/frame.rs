//! Which WebSocket frame an HTTP body becomes (binary for
//! `application/octet-stream`, text, valid UTF-8 only, for anything else),
//! encoded once as the bytes every target gets.
//!
//! Shared by `/send`, `/close`, `/batch` (whose items name their frame
//! kind) and the connect callback's first message.

use bytes::Bytes;
use http::header::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::FrameHeader;

/// The body was meant for a text frame but is not UTF-8.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("body is not valid UTF-8: send binary data with Content-Type: application/octet-stream")]
pub(crate) struct NotUtf8;

/// One server frame, encoded: server frames are not masked, so the bytes are
/// the same for every connection.
#[derive(Debug, Clone)]
pub(crate) struct Encoded {
    pub(crate) bytes: Bytes,
    /// Payload length, for the byte counters.
    pub(crate) payload: usize,
}

/// Whether a Content-Type's media type is `application/octet-stream`
/// (case-insensitive, parameters ignored).
pub(crate) fn is_binary(content_type: Option<&HeaderValue>) -> bool {
    content_type
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|media| {
            media
                .trim()
                .eq_ignore_ascii_case("application/octet-stream")
        })
}

/// The frame for `body` sent with `content_type`.
pub(crate) fn encode(content_type: Option<&HeaderValue>, body: Bytes) -> Result<Encoded, NotUtf8> {
    if is_binary(content_type) {
        Ok(binary(&body))
    } else {
        std::str::from_utf8(&body).map_err(|_| NotUtf8)?;
        Ok(message(Data::Text, &body))
    }
}

/// A text frame of `text`.
pub(crate) fn text(text: &str) -> Encoded {
    message(Data::Text, text.as_bytes())
}

/// A binary frame of `data`.
pub(crate) fn binary(data: &[u8]) -> Encoded {
    message(Data::Binary, data)
}

/// One unfragmented, unmasked frame in one allocation: the header, then the
/// payload.
fn message(kind: Data, payload: &[u8]) -> Encoded {
    let header = FrameHeader {
        opcode: OpCode::Data(kind),
        ..FrameHeader::default()
    };
    let length = payload.len() as u64;
    let mut out = Vec::with_capacity(header.len(length) + payload.len());
    header
        .format(length, &mut out)
        .expect("formatting into a Vec cannot fail");
    out.extend_from_slice(payload);
    Encoded {
        bytes: out.into(),
        payload: payload.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_type_rules() {
        let v = |s: &'static str| HeaderValue::from_static(s);
        assert!(is_binary(Some(&v("application/octet-stream"))));
        assert!(is_binary(Some(&v("Application/Octet-Stream; charset=x"))));
        assert!(!is_binary(Some(&v("text/plain"))));
        assert!(!is_binary(None));
    }

    #[test]
    fn text_must_be_utf8() {
        let text = encode(None, Bytes::from_static(b"hi")).unwrap();
        assert_eq!(&text.bytes[..], b"\x81\x02hi");
        assert_eq!(text.payload, 2);
        assert_eq!(
            encode(None, Bytes::from_static(&[0xff, 0xfe])).unwrap_err(),
            NotUtf8
        );
        let bin = HeaderValue::from_static("application/octet-stream");
        let binary = encode(Some(&bin), Bytes::from_static(&[0xff])).unwrap();
        assert_eq!(&binary.bytes[..], b"\x82\x01\xff");
    }
}
