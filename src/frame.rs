//! Which WebSocket frame an HTTP body becomes: binary for
//! `application/octet-stream`, text (valid UTF-8 only) for anything else.
//!
//! Shared by `/send`, `/close` and the connect callback's first message.

use bytes::Bytes;
use http::header::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::frame::Utf8Bytes;
use tokio_tungstenite::tungstenite::Message;

/// The body was meant for a text frame but is not UTF-8.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("body is not valid UTF-8: send binary data with Content-Type: application/octet-stream")]
pub struct NotUtf8;

/// Whether a Content-Type's media type is `application/octet-stream`
/// (case-insensitive, parameters ignored).
pub fn is_binary(content_type: Option<&HeaderValue>) -> bool {
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
pub fn message(content_type: Option<&HeaderValue>, body: Bytes) -> Result<Message, NotUtf8> {
    if is_binary(content_type) {
        Ok(Message::Binary(body))
    } else {
        Utf8Bytes::try_from(body)
            .map(Message::Text)
            .map_err(|_| NotUtf8)
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
        assert!(matches!(
            message(None, Bytes::from_static(b"hi")),
            Ok(Message::Text(_))
        ));
        assert_eq!(
            message(None, Bytes::from_static(&[0xff, 0xfe])),
            Err(NotUtf8)
        );
        let bin = HeaderValue::from_static("application/octet-stream");
        assert!(matches!(
            message(Some(&bin), Bytes::from_static(&[0xff])),
            Ok(Message::Binary(_))
        ));
    }
}
