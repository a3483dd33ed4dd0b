//! What nodes send each other over NATS: session subjects (ids encoded so
//! any id is one subject token), requests (a push with its frame encoded
//! once, an existence check, a replacement notice) and outcomes.
//!
//! Owns the byte formats only.

use bytes::{BufMut, Bytes, BytesMut};
use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS};

use crate::frame::Encoded;
use crate::sessions::outlet::Push;
use crate::sessions::Outcome;

/// Characters a NATS subject token cannot hold (and `%`, the escape).
const SUBJECT_UNSAFE: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'.')
    .add(b'*')
    .add(b'>')
    .add(b'%')
    .add(0x7f);

/// The subject of session `id`: `<prefix>.s.<id percent-encoded>`.
pub(crate) fn session_subject(prefix: &str, id: &str) -> String {
    format!("{prefix}.s.{}", utf8_percent_encode(id, SUBJECT_UNSAFE))
}

/// A request to the node holding a session.
#[derive(Debug, Clone)]
pub(crate) enum Request {
    Push(Push),
    /// Is the session held? (answered only by its holder)
    Exists,
    /// A node (named) registered this id: older holders close theirs (4001).
    Replace(String),
}

const SEND: u8 = b'S';
const CLOSE: u8 = b'C';
const EXISTS: u8 = b'E';
const REPLACE: u8 = b'R';

impl Request {
    pub(crate) fn encode(&self) -> Bytes {
        let mut out = BytesMut::new();
        let mut frame = |tag: u8, frame: Option<&Encoded>| {
            out.put_u8(tag);
            if let Some(f) = frame {
                out.put_u32(f.payload as u32);
                out.put_slice(&f.bytes);
            }
        };
        match self {
            Request::Push(Push::Message(f)) => frame(SEND, Some(f)),
            Request::Push(Push::Close(f)) => frame(CLOSE, f.as_ref()),
            Request::Exists => frame(EXISTS, None),
            Request::Replace(node) => {
                frame(REPLACE, None);
                out.put_slice(node.as_bytes());
            }
        }
        out.freeze()
    }

    pub(crate) fn decode(mut data: Bytes) -> Option<Request> {
        if data.is_empty() {
            return None;
        }
        let tag = data.split_to(1)[0];
        let frame = |mut data: Bytes| -> Option<Encoded> {
            if data.len() < 4 {
                return None;
            }
            let payload = u32::from_be_bytes(data.split_to(4)[..].try_into().ok()?) as usize;
            Some(Encoded {
                bytes: data,
                payload,
            })
        };
        match tag {
            SEND => Some(Request::Push(Push::Message(frame(data)?))),
            CLOSE if data.is_empty() => Some(Request::Push(Push::Close(None))),
            CLOSE => Some(Request::Push(Push::Close(Some(frame(data)?)))),
            EXISTS => Some(Request::Exists),
            REPLACE => Some(Request::Replace(String::from_utf8(data.to_vec()).ok()?)),
            _ => None,
        }
    }
}

/// The one-byte answer of a holder.
pub(crate) fn encode_outcome(outcome: Outcome) -> Bytes {
    Bytes::from_static(match outcome {
        Outcome::Written => b"W",
        Outcome::Queued => b"Q",
        Outcome::Full => b"F",
        Outcome::Closed => b"C",
        Outcome::NotFound => b"N",
        Outcome::Unavailable => b"U",
    })
}

pub(crate) fn decode_outcome(data: &[u8]) -> Outcome {
    match data {
        b"W" => Outcome::Written,
        b"Q" => Outcome::Queued,
        b"F" => Outcome::Full,
        b"C" => Outcome::Closed,
        b"N" => Outcome::NotFound,
        _ => Outcome::Unavailable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_session_id_is_one_subject_token() {
        assert_eq!(session_subject("kb", "alice"), "kb.s.alice");
        assert_eq!(session_subject("kb", "a.b *>c%"), "kb.s.a%2Eb%20%2A%3Ec%25");
        assert_eq!(session_subject("kb", "é\t"), "kb.s.%C3%A9%09");
    }

    #[test]
    fn requests_round_trip() {
        let frame = crate::frame::encode(None, Bytes::from_static(b"hello")).unwrap();
        for request in [
            Request::Push(Push::Message(frame.clone())),
            Request::Push(Push::Close(Some(frame.clone()))),
            Request::Push(Push::Close(None)),
            Request::Exists,
            Request::Replace("node-1".into()),
        ] {
            let back = Request::decode(request.encode()).unwrap();
            assert_eq!(format!("{back:?}"), format!("{request:?}"));
        }
        assert!(Request::decode(Bytes::from_static(b"S\0")).is_none());
        assert!(Request::decode(Bytes::new()).is_none());
        for o in [
            Outcome::Written,
            Outcome::Queued,
            Outcome::Full,
            Outcome::Closed,
            Outcome::NotFound,
        ] {
            assert_eq!(decode_outcome(&encode_outcome(o)), o);
        }
    }
}
