//! What nodes send each other over NATS: session and channel subjects (ids
//! and names encoded so any is one subject token), requests (a push with its
//! frame encoded once, a channel push with the sessions it leaves out, an
//! existence check, a replacement notice, a membership change) and answers.
//!
//! Owns the byte formats only.

use bytes::{BufMut, Bytes, BytesMut};
use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS};

use crate::frame::Encoded;
use crate::sessions::outlet::Push;
use crate::sessions::{Missed, Outcome};

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

/// The subject of channel `name`: `<prefix>.c.<name percent-encoded>`.
pub(crate) fn channel_subject(prefix: &str, name: &str) -> String {
    format!("{prefix}.c.{}", utf8_percent_encode(name, SUBJECT_UNSAFE))
}

/// A request to the node holding a session, or to every node with members
/// of a channel.
#[derive(Debug, Clone)]
pub(crate) enum Request {
    Push(Push),
    /// A channel push: its members here get it, except the sessions in
    /// `skip` and those in a channel of `covered` (earlier channel targets
    /// of the same push, which reached them already).
    Broadcast {
        push: Push,
        skip: Vec<String>,
        covered: Vec<String>,
    },
    /// Is the session held, or does the channel have members? (answered
    /// only by a holder)
    Exists,
    /// A node (named) registered this id: older holders close theirs (4001).
    Replace(String),
    /// Put the session in these channels.
    Join(Vec<String>),
    /// Take the session out of these channels.
    Leave(Vec<String>),
}

const SEND: u8 = b'S';
const CLOSE: u8 = b'C';
const BROADCAST: u8 = b'B';
const EXISTS: u8 = b'E';
const REPLACE: u8 = b'R';
const JOIN: u8 = b'J';
const LEAVE: u8 = b'L';

fn put_push(out: &mut BytesMut, push: &Push) {
    let (tag, frame) = match push {
        Push::Message(f) => (SEND, Some(f)),
        Push::Close(f) => (CLOSE, f.as_ref()),
    };
    out.put_u8(tag);
    if let Some(f) = frame {
        out.put_u32(f.payload as u32);
        out.put_slice(&f.bytes);
    }
}

fn take_push(mut data: Bytes) -> Option<Push> {
    if data.is_empty() {
        return None;
    }
    let tag = data.split_to(1)[0];
    let frame = |mut data: Bytes| -> Option<Encoded> {
        if data.len() < 4 {
            return None;
        }
        let payload = u32::from_be_bytes(data.split_to(4)[..].try_into().ok()?) as usize;
        Encoded::from_wire(data, payload)
    };
    match tag {
        SEND => Some(Push::Message(frame(data)?)),
        CLOSE if data.is_empty() => Some(Push::Close(None)),
        CLOSE => Some(Push::Close(Some(frame(data)?))),
        _ => None,
    }
}

/// A count, then each string with its length.
fn put_list<S: AsRef<str>>(out: &mut BytesMut, list: &[S]) {
    out.put_u32(list.len() as u32);
    for s in list {
        out.put_u32(s.as_ref().len() as u32);
        out.put_slice(s.as_ref().as_bytes());
    }
}

fn take_list(data: &mut Bytes) -> Option<Vec<String>> {
    let take_u32 = |data: &mut Bytes| -> Option<usize> {
        (data.len() >= 4)
            .then(|| u32::from_be_bytes(data.split_to(4)[..].try_into().expect("4 bytes")) as usize)
    };
    let n = take_u32(data)?;
    let mut list = Vec::with_capacity(n.min(1024));
    for _ in 0..n {
        let len = take_u32(data)?;
        if data.len() < len {
            return None;
        }
        list.push(String::from_utf8(data.split_to(len).to_vec()).ok()?);
    }
    Some(list)
}

impl Request {
    /// A channel push, encoded without building the request first.
    pub(crate) fn encode_broadcast<S: AsRef<str>>(push: &Push, skip: &[S], covered: &[S]) -> Bytes {
        let mut out = BytesMut::new();
        out.put_u8(BROADCAST);
        put_list(&mut out, skip);
        put_list(&mut out, covered);
        put_push(&mut out, push);
        out.freeze()
    }

    pub(crate) fn encode(&self) -> Bytes {
        let mut out = BytesMut::new();
        match self {
            Request::Push(push) => put_push(&mut out, push),
            Request::Broadcast {
                push,
                skip,
                covered,
            } => return Request::encode_broadcast(push, skip, covered),
            Request::Exists => out.put_u8(EXISTS),
            Request::Replace(node) => {
                out.put_u8(REPLACE);
                out.put_slice(node.as_bytes());
            }
            Request::Join(names) | Request::Leave(names) => {
                out.put_u8(if matches!(self, Request::Join(_)) {
                    JOIN
                } else {
                    LEAVE
                });
                put_list(&mut out, names);
            }
        }
        out.freeze()
    }

    pub(crate) fn decode(data: Bytes) -> Option<Request> {
        let tag = *data.first()?;
        let mut rest = data.slice(1..);
        match tag {
            SEND | CLOSE => Some(Request::Push(take_push(data)?)),
            BROADCAST => {
                let skip = take_list(&mut rest)?;
                let covered = take_list(&mut rest)?;
                Some(Request::Broadcast {
                    push: take_push(rest)?,
                    skip,
                    covered,
                })
            }
            EXISTS => Some(Request::Exists),
            REPLACE => Some(Request::Replace(String::from_utf8(rest.to_vec()).ok()?)),
            JOIN => Some(Request::Join(take_list(&mut rest)?)),
            LEAVE => Some(Request::Leave(take_list(&mut rest)?)),
            _ => None,
        }
    }
}

/// A node's answer to a channel push: how many members it reached.
pub(crate) fn encode_count(count: usize) -> Bytes {
    Bytes::copy_from_slice(&(count as u32).to_be_bytes())
}

pub(crate) fn decode_count(data: &[u8]) -> Option<usize> {
    Some(u32::from_be_bytes(data.try_into().ok()?) as usize)
}

/// A holder's answer to a membership change.
pub(crate) fn encode_membership(result: Result<(), Missed>) -> Bytes {
    Bytes::from_static(match result {
        Ok(()) => b"K",
        Err(Missed::TooMany) => b"T",
        Err(Missed::NotFound) => b"N",
        Err(Missed::Unavailable) => b"U",
    })
}

pub(crate) fn decode_membership(data: &[u8]) -> Result<(), Missed> {
    match data {
        b"K" => Ok(()),
        b"T" => Err(Missed::TooMany),
        b"N" => Err(Missed::NotFound),
        _ => Err(Missed::Unavailable),
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
        assert_eq!(channel_subject("kb", "room.1>*"), "kb.c.room%2E1%3E%2A");
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
            Request::Broadcast {
                push: Push::Message(frame.clone()),
                skip: vec!["a".into(), "b".into()],
                covered: vec!["room".into()],
            },
            Request::Broadcast {
                push: Push::Close(None),
                skip: vec![],
                covered: vec![],
            },
            Request::Join(vec!["x".into(), "y".into()]),
            Request::Leave(vec!["x".into()]),
        ] {
            let back = Request::decode(request.encode()).unwrap();
            assert_eq!(format!("{back:?}"), format!("{request:?}"));
        }
        assert!(Request::decode(Bytes::from_static(b"S\0")).is_none());
        assert!(Request::decode(Bytes::new()).is_none());
        assert!(Request::decode(Bytes::from_static(b"J\0\0\0\x02\0")).is_none());
        assert_eq!(decode_count(&encode_count(12345)), Some(12345));
        for m in [Ok(()), Err(Missed::TooMany), Err(Missed::NotFound)] {
            assert_eq!(decode_membership(&encode_membership(m)), m);
        }
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
