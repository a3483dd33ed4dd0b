//! Clients that break RFC 6455 get a close frame before the connection is
//! dropped (7.1.7): 1002 for protocol errors, 1007 for invalid UTF-8, 1009
//! for a message over `max_message_size`; and the app hears of it through
//! the close callback. Frames are written by hand on a raw TCP socket.

mod common;

use std::time::Duration;

use common::raw::*;
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const MAX: usize = 1024;

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
