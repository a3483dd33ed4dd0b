//! Reads what a client sends on a WebSocket connection: frames parsed from
//! the socket (RFC 6455 section 5), unmasked and put together into messages,
//! text checked as UTF-8 frame by frame, compressed messages inflated (RFC
//! 7692), and every protocol violation turned into the close code the RFCs
//! give it.
//!
//! Holds no buffer while the connection is idle: bytes are read only once
//! the socket is readable, and the buffer is let go as soon as every frame
//! in it has been handled.

use std::io::{self, Cursor};
use std::task::Poll;

use bytes::Bytes;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Control, Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::FrameHeader;

use super::inflate::{inflate, InflateError};
use crate::sessions::socket::RawSocket;

/// What the client sent, one item at a time.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Incoming {
    /// A whole message: text (valid UTF-8) or binary, inflated if it came
    /// `compressed`.
    Message {
        data: Bytes,
        binary: bool,
        compressed: bool,
    },
    /// A ping, with its payload (the pong carries it back).
    Ping(Bytes),
    Pong,
    /// A close frame: its code, if it had one.
    Close(Option<u16>),
}

/// Why reading ended.
#[derive(Debug)]
pub(crate) enum ReadError {
    /// The client closed the TCP connection.
    Eof,
    Io(io::Error),
    /// The client broke the protocol: the connection closes with this code.
    Violation(Violation),
}

/// A protocol violation and its close code: 1002 (protocol), 1007 (bad
/// data) or 1009 (too big).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Violation {
    pub(crate) code: u16,
    pub(crate) reason: &'static str,
}

const fn protocol(reason: &'static str) -> ReadError {
    ReadError::Violation(Violation { code: 1002, reason })
}

const INVALID_UTF8: ReadError = ReadError::Violation(Violation {
    code: 1007,
    reason: "invalid UTF-8 in a text message",
});

const TOO_BIG: ReadError = ReadError::Violation(Violation {
    code: 1009,
    reason: "message larger than max_message_size",
});

/// Bytes read at a time at least.
const READ_SIZE: usize = 2048;
/// Room made at a time at most, whatever length a frame header claims: the
/// buffer grows with the bytes that actually arrive.
const MAX_GROWTH: usize = 64 * 1024;

/// A message whose first frame has arrived but not its last.
#[derive(Debug)]
struct Partial {
    binary: bool,
    /// RSV1 was set on its first frame: the data is deflated.
    compressed: bool,
    data: Vec<u8>,
    /// Bytes of `data` known to be valid UTF-8 (a text message that is not compressed).
    checked: usize,
}

/// A connection's read side.
#[derive(Debug)]
pub(crate) struct Reader {
    /// Bytes read and not yet handled, from `start`; no allocation while idle.
    buf: Vec<u8>,
    start: usize,
    /// Bytes the frame at `start` needs in all, when more than `buf` holds.
    want: usize,
    partial: Option<Box<Partial>>,
    /// `max_message_size`: the largest message, inflated.
    limit: usize,
    /// The connection negotiated permessage-deflate.
    deflate: bool,
}

impl Reader {
    /// A reader starting with `read_ahead` (what the HTTP server read past the upgrade).
    pub(crate) fn new(read_ahead: Bytes, limit: usize, deflate: bool) -> Reader {
        Reader {
            buf: read_ahead.to_vec(),
            start: 0,
            want: 0,
            partial: None,
            limit,
            deflate,
        }
    }

    /// The next thing the client sent. Cancel-safe: what was read stays here.
    pub(crate) async fn next(&mut self, socket: &RawSocket) -> Result<Incoming, ReadError> {
        loop {
            if let Some(incoming) = self.parse()? {
                return Ok(incoming);
            }
            std::future::poll_fn(|cx| loop {
                std::task::ready!(socket.poll_read_ready(cx)).map_err(ReadError::Io)?;
                self.make_room();
                match socket.try_read_buf(&mut self.buf) {
                    Ok(0) => return Poll::Ready(Err(ReadError::Eof)),
                    Ok(_) => return Poll::Ready(Ok(())),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    Err(e) => return Poll::Ready(Err(ReadError::Io(e))),
                }
            })
            .await?;
        }
    }

    /// Moves unhandled bytes to the front and makes room for the next read:
    /// what the frame being read still needs, within `READ_SIZE` to
    /// `MAX_GROWTH`. Room left by an earlier large frame is given back.
    fn make_room(&mut self) {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        let want = self
            .want
            .saturating_sub(self.buf.len())
            .clamp(READ_SIZE, MAX_GROWTH);
        if self.buf.capacity() > MAX_GROWTH && self.buf.capacity() > 2 * (self.buf.len() + want) {
            self.buf.shrink_to(self.buf.len() + want);
        }
        self.buf.reserve(want);
    }

    /// Handles the frames `buf` holds until one gives something to return;
    /// `None` when more bytes are needed.
    fn parse(&mut self) -> Result<Option<Incoming>, ReadError> {
        loop {
            let available = &self.buf[self.start..];
            if available.is_empty() {
                // Idle again: let the buffer go.
                self.buf = Vec::new();
                self.start = 0;
                return Ok(None);
            }
            let mut cursor = Cursor::new(available);
            let (header, length) = match FrameHeader::parse(&mut cursor) {
                Ok(Some(parsed)) => parsed,
                Ok(None) => return Ok(None),
                Err(_) => return Err(protocol("reserved opcode")),
            };
            let header_len = cursor.position() as usize;
            self.check(&header, length)?;
            let length = length as usize;
            if available.len() < header_len + length {
                self.want = header_len + length;
                return Ok(None);
            }
            self.want = 0;
            let at = self.start + header_len;
            self.start = at + length;
            let payload = &mut self.buf[at..at + length];
            if let Some(mask) = header.mask {
                unmask(payload, mask);
            }
            if let Some(incoming) = self.frame(&header, at, length)? {
                return Ok(Some(incoming));
            }
        }
    }

    /// The checks a frame header must pass before its payload is read.
    fn check(&self, header: &FrameHeader, length: u64) -> Result<(), ReadError> {
        if header.mask.is_none() {
            return Err(protocol("client frame is not masked"));
        }
        if header.rsv2 || header.rsv3 {
            return Err(protocol("reserved bits set"));
        }
        match header.opcode {
            _ if length > i64::MAX as u64 => {
                return Err(protocol("frame length with its most significant bit set"));
            }
            OpCode::Control(_) => {
                if length > 125 {
                    return Err(protocol("control frame larger than 125 bytes"));
                }
                if !header.is_final {
                    return Err(protocol("fragmented control frame"));
                }
                if header.rsv1 {
                    return Err(protocol("RSV1 set on a control frame"));
                }
            }
            OpCode::Data(Data::Continue) => {
                let Some(partial) = &self.partial else {
                    return Err(protocol("continuation frame without a message to continue"));
                };
                if header.rsv1 {
                    return Err(protocol("RSV1 set on a continuation frame"));
                }
                if partial.data.len() as u64 + length > self.limit as u64 {
                    return Err(TOO_BIG);
                }
            }
            OpCode::Data(_) => {
                if self.partial.is_some() {
                    return Err(protocol("new message before the last one ended"));
                }
                if header.rsv1 && !self.deflate {
                    return Err(protocol("RSV1 set without permessage-deflate"));
                }
                if length > self.limit as u64 {
                    return Err(TOO_BIG);
                }
            }
        }
        Ok(())
    }

    /// Handles one whole frame whose unmasked payload is `buf[at..at + length]`.
    fn frame(
        &mut self,
        header: &FrameHeader,
        at: usize,
        length: usize,
    ) -> Result<Option<Incoming>, ReadError> {
        let payload = &self.buf[at..at + length];
        match header.opcode {
            OpCode::Control(Control::Ping) => {
                Ok(Some(Incoming::Ping(Bytes::copy_from_slice(payload))))
            }
            OpCode::Control(Control::Pong) => Ok(Some(Incoming::Pong)),
            OpCode::Control(Control::Close) => close(payload).map(Some),
            OpCode::Control(Control::Reserved(_)) | OpCode::Data(Data::Reserved(_)) => {
                Err(protocol("reserved opcode"))
            }
            OpCode::Data(Data::Continue) => {
                let partial = self.partial.as_mut().expect("checked before");
                // Doubling, but never past the limit (checked before).
                let needed = partial.data.len() + payload.len();
                if needed > partial.data.capacity() {
                    let target =
                        (2 * partial.data.capacity()).clamp(needed, self.limit.max(needed));
                    partial.data.reserve_exact(target - partial.data.len());
                }
                partial.data.extend_from_slice(payload);
                if !partial.binary && !partial.compressed {
                    partial.checked = check_utf8(&partial.data, partial.checked, header.is_final)?;
                }
                if !header.is_final {
                    return Ok(None);
                }
                let partial = self.partial.take().expect("checked before");
                self.finish(partial.data, partial.binary, partial.compressed)
                    .map(Some)
            }
            OpCode::Data(kind) => {
                let binary = kind == Data::Binary;
                let compressed = header.rsv1;
                let data = payload.to_vec();
                // Compressed text is checked once inflated.
                let checked = if binary || compressed {
                    0
                } else {
                    check_utf8(&data, 0, header.is_final)?
                };
                if header.is_final {
                    return self.finish(data, binary, compressed).map(Some);
                }
                self.partial = Some(Box::new(Partial {
                    binary,
                    compressed,
                    data,
                    checked,
                }));
                Ok(None)
            }
        }
    }

    /// A whole message: inflated if compressed (then checked as UTF-8 if text).
    fn finish(&self, data: Vec<u8>, binary: bool, compressed: bool) -> Result<Incoming, ReadError> {
        let data = if compressed {
            let inflated = inflate(&data, self.limit).map_err(|e| match e {
                InflateError::TooBig => TOO_BIG,
                InflateError::Invalid => ReadError::Violation(Violation {
                    code: 1007,
                    reason: "invalid permessage-deflate data",
                }),
            })?;
            if !binary {
                check_utf8(&inflated, 0, true)?;
            }
            inflated
        } else {
            data
        };
        Ok(Incoming::Message {
            data: Bytes::from(data),
            binary,
            compressed,
        })
    }
}

/// A close frame's payload: nothing, or a valid code and a UTF-8 reason.
fn close(payload: &[u8]) -> Result<Incoming, ReadError> {
    match payload {
        [] => Ok(Incoming::Close(None)),
        [_] => Err(protocol("close frame with a one-byte payload")),
        [hi, lo, reason @ ..] => {
            let code = u16::from_be_bytes([*hi, *lo]);
            if !CloseCode::from(code).is_allowed() {
                return Err(protocol("invalid close code"));
            }
            if std::str::from_utf8(reason).is_err() {
                return Err(INVALID_UTF8);
            }
            Ok(Incoming::Close(Some(code)))
        }
    }
}

/// Checks `data[from..]` as UTF-8; a character cut at the end is allowed
/// until the message's last frame. Returns how far `data` is valid.
fn check_utf8(data: &[u8], from: usize, last: bool) -> Result<usize, ReadError> {
    match std::str::from_utf8(&data[from..]) {
        Ok(_) => Ok(data.len()),
        Err(e) if e.error_len().is_none() && !last => Ok(from + e.valid_up_to()),
        Err(_) => Err(INVALID_UTF8),
    }
}

/// Unmasks a client frame's payload in place (RFC 6455 section 5.3).
fn unmask(payload: &mut [u8], mask: [u8; 4]) {
    let word = u32::from_ne_bytes(mask);
    let mut chunks = payload.chunks_exact_mut(4);
    for chunk in &mut chunks {
        let value = u32::from_ne_bytes(chunk.try_into().expect("four bytes")) ^ word;
        chunk.copy_from_slice(&value.to_ne_bytes());
    }
    for (i, byte) in chunks.into_remainder().iter_mut().enumerate() {
        *byte ^= mask[i];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unmasking_matches_the_rfc_example() {
        // RFC 6455 5.7: a masked "Hello".
        let mut payload = [0x7f, 0x9f, 0x4d, 0x51, 0x58];
        unmask(&mut payload, [0x37, 0xfa, 0x21, 0x3d]);
        assert_eq!(&payload, b"Hello");
    }

    #[test]
    fn utf8_is_checked_across_frames() {
        let euro = "€".as_bytes();
        assert_eq!(check_utf8(&euro[..2], 0, false).unwrap(), 0);
        assert!(check_utf8(&euro[..2], 0, true).is_err());
        assert_eq!(check_utf8(euro, 0, true).unwrap(), 3);
        assert!(check_utf8(&[b'a', 0xff], 0, false).is_err());
    }

    #[test]
    fn close_payloads() {
        assert_eq!(close(&[]).unwrap(), Incoming::Close(None));
        assert_eq!(
            close(&[0x03, 0xe8, b'o', b'k']).unwrap(),
            Incoming::Close(Some(1000))
        );
        for bad in [&[0x03][..], &[0x03, 0xed], &[0x03, 0xe8, 0xff]] {
            assert!(close(bad).is_err(), "{bad:?}");
        }
    }
}
