//! permessage-deflate (RFC 7692): negotiated with clients that offer it,
//! each push compressed once whatever its number of recipients (on the node
//! that holds them, when it came from another over NATS), client
//! messages inflated before the receive callback within `max_message_size`,
//! and bad deflate data refused. Clients are raw sockets, so every frame's
//! RSV1 bit and size can be seen, beside a client that offers nothing.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::raw::*;
use common::*;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use http::Method;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

const OFFER: &str = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n";
const ANSWER: &str = "sec-websocket-extensions: permessage-deflate; server_no_context_takeover; client_no_context_takeover";
const TEXT: u8 = 0x1;
const BINARY: u8 = 0x2;
const CONTINUATION: u8 = 0x0;
const RSV1: u8 = 0b100;

/// A JSON update of about 2 KiB, as an app would push it.
fn json_update() -> String {
    let rows: Vec<String> = (0..38)
        .map(|i| {
            format!(
                r#"{{"id":{i},"user":"player-{i}","score":{},"online":true}}"#,
                i * 37
            )
        })
        .collect();
    format!(r#"{{"type":"scores","rows":[{}]}}"#, rows.join(","))
}

/// `data` deflated as a client sends it: one message, the sync flush's
/// `00 00 ff ff` left off.
fn deflate(data: &[u8]) -> Vec<u8> {
    let mut c = Compress::new(Compression::default(), false);
    let mut out = Vec::with_capacity(data.len() + 1024);
    while (c.total_in() as usize) < data.len() || out.len() == out.capacity() {
        out.reserve(data.len() / 2 + 1024);
        let done = c.total_in() as usize;
        c.compress_vec(&data[done..], &mut out, FlushCompress::Sync)
            .unwrap();
    }
    assert!(out.ends_with(&[0, 0, 0xff, 0xff]));
    out.truncate(out.len() - 4);
    out
}

/// What a client that negotiated the extension reads from a compressed frame.
fn inflate(data: &[u8]) -> Vec<u8> {
    let mut d = Decompress::new(false);
    let input = [data, &[0, 0, 0xff, 0xff]].concat();
    let mut out = Vec::with_capacity(64 << 10);
    d.decompress_vec(&input, &mut out, FlushDecompress::Sync)
        .unwrap();
    out
}

/// A raw client of session `id` that offers permessage-deflate; the 101 must accept it.
async fn deflating(kb: &Kb, id: &str) -> TcpStream {
    let (s, head) = raw_connect_with(kb, id, OFFER).await;
    assert!(head.to_ascii_lowercase().contains(ANSWER), "{head}");
    s
}

async fn next_frame(s: &mut TcpStream) -> ServerFrame {
    tokio::time::timeout(Duration::from_secs(5), read_frame(s))
        .await
        .expect("a frame within 5 s")
        .expect("the connection is open")
}

#[tokio::test]
async fn a_client_that_offers_deflate_gets_compressed_frames_and_others_plain_ones() {
    let app = FakeApp::start().await;
    let kb = Kb::with_app(&app, "").await;
    let mut offers = deflating(&kb, "offers").await;
    let (mut plain, head) = raw_connect_with(&kb, "plain", "").await;
    assert!(
        !head
            .to_ascii_lowercase()
            .contains("sec-websocket-extensions"),
        "nothing offered, nothing answered: {head}"
    );
    let mut library = kb.connect("library").await;

    let update = json_update();
    assert!((2000..2200).contains(&update.len()), "{}", update.len());
    let reply = kb
        .push("/send", &["offers", "plain", "library"], &update)
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());

    let compressed = next_frame(&mut offers).await;
    assert!(compressed.rsv1(), "RSV1 marks a compressed message");
    assert_eq!(compressed.opcode(), TEXT);
    assert_eq!(inflate(&compressed.payload), update.as_bytes());
    let uncompressed = next_frame(&mut plain).await;
    assert!(!uncompressed.rsv1());
    assert_eq!(uncompressed.payload, update.as_bytes());
    let ratio = compressed.wire_len as f64 / uncompressed.wire_len as f64;
    assert!(
        ratio <= 0.35,
        "{} of {} bytes",
        compressed.wire_len,
        uncompressed.wire_len
    );
    assert_eq!(recv_text(&mut library).await, update);

    // Below compression.min_size (256 bytes), a message goes plain.
    let short = "x".repeat(200);
    kb.push("/send", &["offers"], &short).await;
    let frame = next_frame(&mut offers).await;
    assert!(!frame.rsv1());
    assert_eq!(frame.payload, short.as_bytes());

    // Binary too, and /close's last message.
    let data = vec![7u8; 4096];
    let reply = http(
        Method::POST,
        &kb.url("/close"),
        &[
            ("X-Kuiperbelt-Session", "offers"),
            ("Content-Type", "application/octet-stream"),
        ],
        Bytes::from(data.clone()),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let frame = next_frame(&mut offers).await;
    assert!(frame.rsv1());
    assert_eq!(frame.opcode(), BINARY);
    assert_eq!(inflate(&frame.payload), data);
    assert_eq!(read_close_code(&mut offers).await, Some(1000));

    let sessions = kb.get("/sessions").await.json();
    let negotiated = |id: &str| {
        sessions["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["session"] == id)
            .map(|s| s["permessage_deflate"].clone())
    };
    assert_eq!(negotiated("plain"), Some(serde_json::json!(false)));
    assert_eq!(negotiated("library"), Some(serde_json::json!(false)));
    let metrics = kb.url("/metrics");
    assert_eq!(
        metric(&metrics, "kuiperbelt_deflate_sessions_total").await,
        1.0
    );
    assert_eq!(
        metric(&metrics, "kuiperbelt_compressed_frames_total").await,
        2.0
    );
    let saved = metric(&metrics, "kuiperbelt_compression_saved_bytes_total").await;
    assert!(saved > 1500.0 + 4000.0, "{saved}");
}

#[tokio::test]
async fn a_push_to_a_thousand_sessions_is_compressed_once() {
    let app = FakeApp::start().await;
    let kb = Kb::with_app(&app, "").await;
    let mut clients = Vec::new();
    let mut ids = Vec::new();
    for i in 0..1000 {
        let id = format!("s{i}");
        clients.push(deflating(&kb, &id).await);
        ids.push(id);
    }
    let update = json_update();
    let headers: Vec<(&str, &str)> = ids
        .iter()
        .map(|id| ("X-Kuiperbelt-Session", id.as_str()))
        .collect();
    let reply = http(
        Method::POST,
        &kb.url("/send"),
        &headers,
        Bytes::from(update.clone()),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let mut first = None;
    for client in &mut clients {
        let frame = next_frame(client).await;
        assert!(frame.rsv1());
        // Every recipient gets the same bytes.
        let first = first.get_or_insert_with(|| frame.payload.clone());
        assert_eq!(&frame.payload, first);
    }
    assert_eq!(inflate(first.as_ref().unwrap()), update.as_bytes());
    let metrics = kb.url("/metrics");
    assert_eq!(
        metric(&metrics, "kuiperbelt_compressed_payloads_total").await,
        1.0
    );
    assert_eq!(
        metric(&metrics, "kuiperbelt_compressed_frames_total").await,
        1000.0
    );
}

#[tokio::test]
async fn compressed_client_messages_reach_the_app_inflated() {
    let app = FakeApp::start().await;
    let kb = Kb::with_app(&app, "").await;
    let mut s = deflating(&kb, "talker").await;
    let text = "the same words again and again, ".repeat(40);
    let compressed = deflate(text.as_bytes());
    assert!(compressed.len() < text.len() / 4);
    // A compressed text message in two fragments: RSV1 on the first only.
    let (a, b) = compressed.split_at(compressed.len() / 2);
    s.write_all(
        &[
            frame(false, RSV1, TEXT, true, a),
            frame(true, 0, CONTINUATION, true, b),
        ]
        .concat(),
    )
    .await
    .unwrap();
    // A compressed binary message, and a plain one: compression is per message.
    let data: Vec<u8> = (0..3000u32).map(|i| (i % 7) as u8).collect();
    s.write_all(&frame(true, RSV1, BINARY, true, &deflate(&data)))
        .await
        .unwrap();
    s.write_all(&frame(true, 0, TEXT, true, b"plain"))
        .await
        .unwrap();

    let got = app.wait_seen("/receive", 3).await;
    assert_eq!(got[0].body, text.as_bytes());
    assert_eq!(got[0].header("content-type"), Some("text/plain"));
    assert_eq!(got[1].body, data);
    assert_eq!(
        got[1].header("content-type"),
        Some("application/octet-stream")
    );
    assert_eq!(got[2].body, &b"plain"[..]);
    let metrics = kb.url("/metrics");
    assert_eq!(
        metric(&metrics, "kuiperbelt_inflated_messages_total").await,
        2.0
    );
}

#[tokio::test]
async fn a_zip_bomb_closes_with_1009_without_inflating_it_and_bad_data_with_1007() {
    let app = FakeApp::start().await;
    let max = 1 << 20;
    let kb = Kb::with_app(&app, &format!("max_message_size: {max}\n")).await;
    let metrics = kb.url("/metrics");

    // 64 MiB of zeros deflate to a few hundred KiB: one frame under the limit.
    let bomb = deflate(&vec![0u8; 64 << 20]);
    assert!(
        bomb.len() < max,
        "the bomb fits a frame: {} bytes",
        bomb.len()
    );
    let rss_before = metric(&metrics, "process_resident_memory_bytes").await;
    let mut s = deflating(&kb, "bomber").await;
    s.write_all(&frame(true, RSV1, BINARY, true, &bomb))
        .await
        .unwrap();
    let closed = tokio::time::timeout(Duration::from_secs(10), read_close_code(&mut s)).await;
    assert_eq!(closed.expect("a close within 10 s"), Some(1009));
    let rss_after = metric(&metrics, "process_resident_memory_bytes").await;
    assert!(
        rss_after - rss_before < 32.0 * 1024.0 * 1024.0,
        "inflating grew the server by {} MiB",
        (rss_after - rss_before) / 1048576.0
    );

    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        (
            "bad deflate data",
            frame(true, RSV1, TEXT, true, &[0xff; 16]),
            1007,
        ),
        (
            "compressed text that is not UTF-8",
            frame(true, RSV1, TEXT, true, &deflate(&[0xc3, 0x28, 0xa0, 0xa1])),
            1007,
        ),
        (
            "RSV1 on a continuation frame",
            [
                frame(false, RSV1, TEXT, true, &deflate(b"abc")),
                frame(true, RSV1, CONTINUATION, true, b""),
            ]
            .concat(),
            1002,
        ),
        (
            "RSV1 on a control frame",
            frame(true, RSV1, 0x9, true, b"ping"),
            1002,
        ),
    ];
    for (i, (case, bytes, code)) in cases.iter().enumerate() {
        let mut s = deflating(&kb, &format!("bad-{i}")).await;
        s.write_all(bytes).await.unwrap();
        let got = tokio::time::timeout(Duration::from_secs(5), read_close_code(&mut s)).await;
        assert_eq!(
            got.unwrap_or_else(|_| panic!("{case}: no close")),
            Some(*code),
            "{case}"
        );
    }
    assert!(
        app.seen("/receive").is_empty(),
        "the app heard nothing of them"
    );
}

#[tokio::test]
async fn with_compression_disabled_nothing_is_negotiated() {
    let app = FakeApp::start().await;
    let kb = Kb::with_app(&app, "compression:\n  enabled: false\n").await;
    let (mut s, head) = raw_connect_with(&kb, "offers", OFFER).await;
    assert!(
        !head
            .to_ascii_lowercase()
            .contains("sec-websocket-extensions"),
        "{head}"
    );
    kb.push("/send", &["offers"], &json_update()).await;
    assert!(!next_frame(&mut s).await.rsv1());
    // Without the extension, RSV1 is a protocol error.
    s.write_all(&frame(true, RSV1, TEXT, true, &deflate(b"hello")))
        .await
        .unwrap();
    assert_eq!(read_close_code(&mut s).await, Some(1002));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_from_another_node_is_compressed_once_there() {
    let nats = common::nats::Nats::start().await;
    let app = FakeApp::start().await;
    let yaml = format!(
        "{}cluster:\n  nats:\n    url: {}\n  request_timeout: 1s\n",
        base_yaml(&app),
        nats.url()
    );
    let a = Kb::start(&yaml).await;
    let b = Kb::start(&yaml).await;
    let ids: Vec<String> = (0..50).map(|i| format!("remote{i}")).collect();
    let mut clients = Vec::new();
    for id in &ids {
        clients.push(deflating(&b, id).await);
    }
    let headers: Vec<(&str, &str)> = ids
        .iter()
        .map(|id| ("X-Kuiperbelt-Session", id.as_str()))
        .collect();
    let send_url = a.url("/send");
    let send = |body: String| http(Method::POST, &send_url, &headers, Bytes::from(body));
    // Until node A reaches every session on node B (short, so plain).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let reply = send("ready".into()).await;
        if reply.status == 200 && reply.json()["errors"].is_null() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{}", reply.text());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let update = json_update();
    let reply = send(update.clone()).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    for client in &mut clients {
        let frame = loop {
            let frame = next_frame(client).await;
            if frame.payload != b"ready" {
                break frame;
            }
        };
        assert!(frame.rsv1());
        assert_eq!(inflate(&frame.payload), update.as_bytes());
    }
    // One NATS request per session reached node B; the push was compressed
    // once there, and not at all on node A, which holds none of them.
    let on = |kb: &Kb| kb.url("/metrics");
    assert_eq!(
        metric(&on(&b), "kuiperbelt_compressed_payloads_total").await,
        1.0
    );
    assert_eq!(
        metric(&on(&b), "kuiperbelt_compressed_frames_total").await,
        50.0
    );
    assert_eq!(
        metric(&on(&a), "kuiperbelt_compressed_payloads_total").await,
        0.0
    );
}
