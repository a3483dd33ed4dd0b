//! Which WebSocket frame an HTTP body becomes (binary for
//! `application/octet-stream`, text, valid UTF-8 only, for anything else),
//! encoded once as the bytes every target gets; its permessage-deflate form
//! (RFC 7692), compressed at most once, when the first session that
//! negotiated the extension is reached; and the server's control frames.
//!
//! Shared by `/send`, `/close`, `/batch` (whose items name their frame
//! kind), pushes arriving over NATS and the connect callback's first message.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use flate2::{Compress, Compression, FlushCompress, Status};
use http::header::HeaderValue;
use prometheus::IntCounter;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Control, Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::FrameHeader;

/// The body was meant for a text frame but is not UTF-8.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("body is not valid UTF-8: send binary data with Content-Type: application/octet-stream")]
pub(crate) struct NotUtf8;

/// One server frame, encoded: server frames are not masked, so the bytes are
/// the same for every connection.
#[derive(Debug, Clone)]
pub(crate) struct Encoded {
    /// The plain frame (RSV1 clear).
    pub(crate) bytes: Bytes,
    /// Payload length, for the byte counters.
    pub(crate) payload: usize,
    /// The compressed frame, shared by every copy of this one: made by the
    /// first [`Encoded::wire`] that wants it; `None` inside when compressing
    /// does not make the frame smaller.
    deflated: Arc<OnceLock<Option<Bytes>>>,
}

/// How frames are compressed for the sessions that negotiated
/// permessage-deflate (`compression.*`), and the counters that show it.
#[derive(Debug)]
pub(crate) struct Deflater {
    /// Payloads shorter than this go uncompressed.
    pub(crate) min_size: usize,
    /// zlib level, 1 (fastest) to 9.
    pub(crate) level: u32,
    /// Payloads compressed (once per push, whatever its number of recipients).
    pub(crate) compressions: IntCounter,
    /// Compressed frames handed to sessions.
    pub(crate) frames: IntCounter,
    /// Bytes those frames saved against their plain form.
    pub(crate) saved: IntCounter,
}

/// What one session negotiated: compressed frames, from the server's
/// window of at most `2^window_bits` bytes.
#[derive(Debug, Clone)]
pub(crate) struct SessionDeflate {
    pub(crate) deflater: Arc<Deflater>,
    /// `server_max_window_bits` of the session's offer (15 without one).
    pub(crate) window_bits: u8,
}

impl Encoded {
    /// Makes the compressed form now if `session` would get it, so that a
    /// caller can compress before taking a lock: that form (`None` inside
    /// when it did not shrink), or `None` when the session gets the plain frame.
    pub(crate) fn prepare(&self, session: Option<&SessionDeflate>) -> Option<&Option<Bytes>> {
        let session = session?;
        let deflater = &*session.deflater;
        // Each message is compressed on its own (no context takeover), so
        // no back reference reaches further than the payload's length: a
        // payload no longer than the session's window decodes within it.
        let beyond_window = session.window_bits < 15 && self.payload > 1 << session.window_bits;
        if self.payload < deflater.min_size || beyond_window {
            return None;
        }
        let deflated = self.deflated.get_or_init(|| {
            deflater.compressions.inc();
            deflate(&self.bytes, self.payload, deflater.level)
        });
        Some(deflated)
    }

    fn from_frame(bytes: Bytes, payload: usize) -> Encoded {
        Encoded {
            bytes,
            payload,
            deflated: Arc::default(),
        }
    }

    /// A frame encoded elsewhere (read back from the cluster's wire), if
    /// `bytes` is one whole unmasked data frame whose payload is `payload` bytes.
    pub(crate) fn from_wire(bytes: Bytes, payload: usize) -> Option<Encoded> {
        let mut cursor = std::io::Cursor::new(&bytes[..]);
        let (header, length) = FrameHeader::parse(&mut cursor).ok()??;
        let whole = cursor.position() as usize + payload == bytes.len();
        let data = matches!(header.opcode, OpCode::Data(Data::Text | Data::Binary));
        (whole && data && length == payload as u64 && header.mask.is_none() && !header.rsv1)
            .then(|| Encoded::from_frame(bytes, payload))
    }

    /// The bytes a session gets: the compressed frame when it negotiated
    /// permessage-deflate, the payload is at least `compression.min_size`
    /// and compressing saved bytes; else the plain frame. Counted as sent.
    pub(crate) fn wire(&self, session: Option<&SessionDeflate>) -> &Bytes {
        let (Some(session), Some(deflated)) = (session, self.prepare(session)) else {
            return &self.bytes;
        };
        let deflater = &session.deflater;
        match deflated {
            Some(compressed) => {
                deflater.frames.inc();
                deflater
                    .saved
                    .inc_by((self.bytes.len() - compressed.len()) as u64);
                compressed
            }
            None => &self.bytes,
        }
    }
}

/// Frames kept by [`Recent`] at most, and the largest it keeps.
const RECENT: usize = 8;
const RECENT_MAX_BYTES: usize = 64 * 1024;

/// The last few frames that arrived from other nodes. A push reaches a node
/// as one NATS request per session (or per channel) there, each with its
/// own copy of the frame; sharing the first copy's compressed form keeps
/// the push compressed once on this node too.
#[derive(Debug)]
pub(crate) struct Recent {
    frames: Mutex<VecDeque<Encoded>>,
    /// Smaller payloads are never compressed (`compression.min_size`), so
    /// not matched; `usize::MAX` with compression off.
    min_payload: usize,
}

impl Recent {
    /// Matches payloads of at least `min_payload` bytes; none with `None`.
    pub(crate) fn new(min_payload: Option<usize>) -> Recent {
        Recent {
            frames: Mutex::default(),
            min_payload: min_payload.unwrap_or(usize::MAX),
        }
    }

    /// `frame`, or an equal frame that arrived before it, whose compressed
    /// form (made or to be made) it then shares.
    pub(crate) fn share(&self, frame: Encoded) -> Encoded {
        if frame.payload < self.min_payload || frame.bytes.len() > RECENT_MAX_BYTES {
            return frame;
        }
        let mut frames = self.frames.lock().expect("recent frames lock");
        if let Some(same) = frames.iter().find(|f| f.bytes == frame.bytes) {
            return same.clone();
        }
        if frames.len() == RECENT {
            frames.pop_front();
        }
        frames.push_back(frame.clone());
        frame
    }
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
    Encoded::from_frame(build(OpCode::Data(kind), payload), payload.len())
}

/// A control frame: `Pong` with the ping's payload, or `Close`.
pub(crate) fn control(kind: Control, payload: &[u8]) -> Bytes {
    build(OpCode::Control(kind), payload)
}

/// A close frame with `code` and `reason` (cut to fit the 125 bytes a
/// control frame may carry, at a character boundary).
pub(crate) fn close(code: u16, reason: &str) -> Bytes {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut payload = Vec::with_capacity(2 + end);
    payload.extend_from_slice(&code.to_be_bytes());
    payload.extend_from_slice(&reason.as_bytes()[..end]);
    control(Control::Close, &payload)
}

/// One unfragmented, unmasked frame in one allocation.
fn build(opcode: OpCode, payload: &[u8]) -> Bytes {
    let header = FrameHeader {
        opcode,
        ..FrameHeader::default()
    };
    let length = payload.len() as u64;
    let mut out = Vec::with_capacity(header.len(length) + payload.len());
    header
        .format(length, &mut out)
        .expect("formatting into a Vec cannot fail");
    out.extend_from_slice(payload);
    out.into()
}

/// Room left before the compressed payload for the longest frame header.
const HEADER_ROOM: usize = 10;

thread_local! {
    /// One raw-deflate compressor per thread and level, reset for each
    /// message: a fresh one allocates and zeroes a few hundred KiB.
    static COMPRESSOR: RefCell<Option<(u32, Compress)>> = const { RefCell::new(None) };
}

/// The compressed form of `frame` (whose payload is its last `payload`
/// bytes): the same frame with RSV1 set and its payload deflated as one
/// message without context takeover (RFC 7692 7.2.1); `None` when that is
/// no smaller.
fn deflate(frame: &[u8], payload: usize, level: u32) -> Option<Bytes> {
    let (header, data) = frame.split_at(frame.len() - payload);
    let mut out = Vec::with_capacity(HEADER_ROOM + data.len() + data.len() / 64 + 64);
    out.resize(HEADER_ROOM, 0);
    COMPRESSOR.with(|cell| {
        let mut cell = cell.borrow_mut();
        let compress = match &mut *cell {
            Some((l, compress)) if *l == level => {
                compress.reset();
                compress
            }
            slot => {
                &mut slot
                    .insert((level, Compress::new(Compression::new(level), false)))
                    .1
            }
        };
        let start = compress.total_in();
        loop {
            let consumed = (compress.total_in() - start) as usize;
            let status = compress
                .compress_vec(&data[consumed..], &mut out, FlushCompress::Sync)
                .ok()?;
            let done = (compress.total_in() - start) as usize == data.len();
            // A sync flush that fit ends with its empty stored block.
            if done && (out.len() < out.capacity() || status == Status::BufError) {
                break;
            }
            out.reserve(data.len() / 4 + 64);
        }
        Some(())
    })?;
    // The sync flush's trailing 00 00 FF FF is left off (RFC 7692 7.2.1).
    if !out.ends_with(&[0, 0, 0xff, 0xff]) {
        return None;
    }
    out.truncate(out.len() - 4);
    let compressed = out.len() - HEADER_ROOM;
    if compressed >= payload {
        return None;
    }
    // The room reserved for the worst case would live as long as the frame.
    out.shrink_to_fit();
    let head = FrameHeader {
        rsv1: true,
        opcode: OpCode::from(header[0] & 0x0f),
        ..FrameHeader::default()
    };
    let start = HEADER_ROOM - head.len(compressed as u64);
    let mut room = &mut out[start..HEADER_ROOM];
    head.format(compressed as u64, &mut room)
        .expect("the header fits the room left for it");
    Some(Bytes::from(out).slice(start..))
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

    #[test]
    fn a_frame_from_the_wire_must_be_whole_and_match_its_payload_length() {
        let frame = text("hello");
        assert!(Encoded::from_wire(frame.bytes.clone(), 5).is_some());
        assert!(Encoded::from_wire(frame.bytes.clone(), 6).is_none());
        assert!(Encoded::from_wire(frame.bytes.slice(..4), 5).is_none());
        assert!(Encoded::from_wire(control(Control::Pong, b"hello"), 5).is_none());
    }

    #[test]
    fn recent_frames_share_one_compressed_form() {
        let recent = Recent::new(Some(64));
        let wide = session(1, 15);
        let first = recent.share(text(&"abc".repeat(100)));
        first.wire(Some(&wide));
        // A copy that arrived separately shares the first one's form.
        let again = recent.share(text(&"abc".repeat(100)));
        again.wire(Some(&wide));
        assert_eq!(wide.deflater.compressions.get(), 1);
        // Evicted after RECENT others; a large frame is not kept.
        for i in 0..RECENT {
            recent.share(text(&format!("other {i} {}", "y".repeat(64))));
        }
        recent.share(text(&"abc".repeat(100))).wire(Some(&wide));
        assert_eq!(wide.deflater.compressions.get(), 2);
        // Nor is one below the smallest payload it matches.
        let off = Recent::new(None);
        off.share(text(&"abc".repeat(100))).wire(Some(&wide));
        off.share(text(&"abc".repeat(100))).wire(Some(&wide));
        assert_eq!(wide.deflater.compressions.get(), 4);
        let big = "x".repeat(RECENT_MAX_BYTES + 1);
        recent.share(text(&big)).wire(Some(&wide));
        recent.share(text(&big)).wire(Some(&wide));
        assert_eq!(wide.deflater.compressions.get(), 6);
    }

    fn session(min_size: usize, window_bits: u8) -> SessionDeflate {
        let counter = || IntCounter::new("c", "c").unwrap();
        SessionDeflate {
            deflater: Arc::new(Deflater {
                min_size,
                level: 1,
                compressions: counter(),
                frames: counter(),
                saved: counter(),
            }),
            window_bits,
        }
    }

    fn inflate(payload: &[u8]) -> Vec<u8> {
        let mut d = flate2::Decompress::new(false);
        let mut out = Vec::with_capacity(1 << 16);
        let input = [payload, &[0, 0, 0xff, 0xff]].concat();
        d.decompress_vec(&input, &mut out, flate2::FlushDecompress::Sync)
            .unwrap();
        out
    }

    #[test]
    fn the_compressed_form_is_made_once_and_only_where_it_may_be_used() {
        let json = r#"{"id":1,"name":"a name","tags":["x","y"]}"#.repeat(60);
        let frame = text(&json);
        let wide = session(256, 15);
        let compressed = frame.wire(Some(&wide)).clone();
        assert_eq!(compressed[0], 0xc1, "FIN, RSV1, text");
        let header = if compressed.len() - 2 < 126 { 2 } else { 4 };
        assert_eq!(inflate(&compressed[header..]), json.as_bytes());
        assert!(compressed.len() < frame.bytes.len() / 4);
        // Shared by every copy, compressed once.
        let copy = frame.clone();
        assert!(copy.wire(Some(&wide)) == &compressed);
        assert_eq!(wide.deflater.compressions.get(), 1);
        assert_eq!(wide.deflater.frames.get(), 2);
        // Plain: no extension, below min_size, or beyond a smaller window.
        assert!(frame.wire(None) == &frame.bytes);
        assert!(frame.wire(Some(&session(json.len() + 1, 15))) == &frame.bytes);
        assert!(frame.wire(Some(&session(256, 9))) == &frame.bytes);
        let short = text(&json[..500]);
        assert_eq!(short.wire(Some(&session(256, 9)))[0], 0xc1);
        // Data that does not shrink goes plain.
        let noise: Vec<u8> = (0..4096).map(|_| fastrand::u8(..)).collect();
        let frame = binary(&noise);
        assert!(frame.wire(Some(&wide)) == &frame.bytes);
    }
}
