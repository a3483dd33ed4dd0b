//! Clients that break RFC 6455 get a close frame before the connection is
//! dropped (7.1.7): 1002 for protocol errors, 1007 for invalid UTF-8, 1009
//! for a message over `max_message_size`; and the app hears of it through
//! the close callback. Frames are written by hand on a raw TCP socket.

mod common;

use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const MAX: usize = 1024;

/// Upgrades a raw TCP connection as session `id`.
async fn raw_connect(kb: &Kb, id: &str) -> TcpStream {
    let mut s = TcpStream::connect(kb.addr).await.unwrap();
    let req = format!(
        "GET /connect?session={id} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        kb.addr
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        s.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    s
}

/// One frame as a client writes it (`masked` true for a valid client frame).
fn frame(fin: bool, rsv: u8, opcode: u8, masked: bool, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![(u8::from(fin) << 7) | (rsv << 4) | opcode];
    let mask_bit = if masked { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => out.push(mask_bit | n as u8),
        n if n <= 0xffff => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    if masked {
        let key = [0x11, 0x22, 0x33, 0x44];
        out.extend_from_slice(&key);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    } else {
        out.extend_from_slice(payload);
    }
    out
}

/// Reads server frames until a close frame; its code, or `None` when the
/// connection ends without one.
async fn read_close_code(s: &mut TcpStream) -> Option<u16> {
    loop {
        let mut head = [0u8; 2];
        if s.read_exact(&mut head).await.is_err() {
            return None;
        }
        let len = match head[1] & 0x7f {
            126 => {
                let mut b = [0u8; 2];
                s.read_exact(&mut b).await.ok()?;
                u16::from_be_bytes(b) as usize
            }
            127 => {
                let mut b = [0u8; 8];
                s.read_exact(&mut b).await.ok()?;
                u64::from_be_bytes(b) as usize
            }
            n => n as usize,
        };
        let mut payload = vec![0u8; len];
        s.read_exact(&mut payload).await.ok()?;
        if head[0] & 0x0f == 0x8 {
            return (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]));
        }
    }
}

#[tokio::test]
async fn protocol_violations_get_a_close_frame_and_fire_the_close_callback() {
    let app = FakeApp::start().await;
    let kb = Kb::with_app(&app, &format!("max_message_size: {MAX}\n")).await;
    let close_payload = |code: u16, reason: &[u8]| {
        let mut p = code.to_be_bytes().to_vec();
        p.extend_from_slice(reason);
        p
    };
    let text = 0x1;
    let binary = 0x2;
    let cont = 0x0;
    let ping = 0x9;
    let close = 0x8;
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("unmasked", frame(true, 0, text, false, b"hi"), 1002),
        ("reserved bits", frame(true, 0b100, text, true, b"hi"), 1002),
        (
            "unknown data opcode",
            frame(true, 0, 0x3, true, b"hi"),
            1002,
        ),
        (
            "unknown control opcode",
            frame(true, 0, 0xb, true, b""),
            1002,
        ),
        (
            "control frame over 125 bytes",
            frame(true, 0, ping, true, &[b'p'; 126]),
            1002,
        ),
        (
            "fragmented control frame",
            frame(false, 0, ping, true, b"p"),
            1002,
        ),
        (
            "continuation without a start",
            frame(true, 0, cont, true, b"x"),
            1002,
        ),
        (
            "a new message inside a fragmented one",
            [
                frame(false, 0, text, true, b"a"),
                frame(true, 0, binary, true, b"b"),
            ]
            .concat(),
            1002,
        ),
        (
            "invalid close code",
            frame(true, 0, close, true, &close_payload(999, b"")),
            1002,
        ),
        (
            "one-byte close payload",
            frame(true, 0, close, true, b"x"),
            1002,
        ),
        (
            "invalid UTF-8 text",
            frame(true, 0, text, true, &[0xff, 0xfe]),
            1007,
        ),
        (
            "invalid UTF-8 close reason",
            frame(true, 0, close, true, &close_payload(1000, &[0xff])),
            1007,
        ),
        (
            "invalid UTF-8 across fragments",
            [
                frame(false, 0, text, true, &[0xe2]),
                frame(true, 0, cont, true, &[0x28, 0xa1]),
            ]
            .concat(),
            1007,
        ),
        (
            "one frame over max_message_size",
            frame(true, 0, binary, true, &vec![0u8; MAX + 1]),
            1009,
        ),
        (
            "fragments over max_message_size",
            [
                frame(false, 0, binary, true, &vec![0u8; MAX / 2 + 8]),
                frame(true, 0, cont, true, &vec![0u8; MAX / 2 + 8]),
            ]
            .concat(),
            1009,
        ),
    ];
    for (i, (case, bytes, code)) in cases.iter().enumerate() {
        let id = format!("bad-{i}");
        let mut s = raw_connect(&kb, &id).await;
        s.write_all(bytes).await.unwrap();
        let got = tokio::time::timeout(Duration::from_secs(5), read_close_code(&mut s))
            .await
            .unwrap_or_else(|_| panic!("{case}: no close within 5 s"));
        assert_eq!(got, Some(*code), "{case}");
        // The client answers with FIN, as a client that read the close frame
        // would; the server then ends the connection.
        s.shutdown().await.unwrap();
        let mut rest = Vec::new();
        let ended = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest)).await;
        assert!(
            ended.is_ok(),
            "{case}: the connection is closed after the close frame"
        );
        let closed = app.next("/close").await;
        assert_eq!(closed.session(), Some(id.as_str()), "{case}");
        assert_eq!(
            closed.header("x-kuiperbelt-close-reason"),
            Some("protocol_error"),
            "{case}"
        );
    }
    kb.wait_connections(0).await;
}
