//! Client messages and closes: receive and close callbacks, idle timeout,
//! duplicate session ids and shutdown, with real clients and a real app.

mod common;

use std::time::Duration;

use common::*;
use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn client_messages_reach_the_receive_callback_in_order() {
    let app = FakeApp::start().await;
    let kb = Kb::with_app(&app, "proxy_set_header:\n  X-App-Key: k1\n").await;
    let mut ws = kb.connect("r").await;
    for i in 0..50 {
        send_text(&mut ws, &format!("line {i}")).await;
    }
    ws.send(Message::binary(vec![1u8, 2, 3])).await.unwrap();
    let seen = app.wait_seen("/receive", 51).await;
    for (i, req) in seen.iter().take(50).enumerate() {
        assert_eq!(req.body, format!("line {i}").as_bytes());
        assert_eq!(req.header("content-type"), Some("text/plain"));
    }
    let bin = &seen[50];
    assert_eq!(&bin.body[..], &[1, 2, 3]);
    assert_eq!(bin.header("content-type"), Some("application/octet-stream"));
    assert_eq!(bin.method, http::Method::POST);
    assert_eq!(bin.session(), Some("r"));
    assert!(
        bin.header("x-kuiperbelt-endpoint").is_some(),
        "receive carries the endpoint"
    );
    assert_eq!(
        bin.header("x-app-key"),
        Some("k1"),
        "receive applies proxy_set_header"
    );
}

#[tokio::test]
async fn messages_without_receive_callback_are_discarded() {
    let app = FakeApp::start().await;
    let kb = Kb::start(&format!("callback:\n  connect: {}\n", app.url("/connect"))).await;
    let mut ws = kb.connect("d").await;
    send_text(&mut ws, "into the void").await;
    kb.push("/send", &["d"], "still here").await;
    assert_eq!(recv_text(&mut ws).await, "still here");
    // The server did read the message (so the check below is not vacuous)...
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !kb
        .get("/metrics")
        .await
        .text()
        .contains("kuiperbelt_client_messages_total 1")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the message was never read"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // ...and sent it nowhere: the app heard only the connect callback.
    assert!(app.seen("/receive").is_empty());
    assert_eq!(app.request_count(), 1);
}

#[tokio::test]
async fn client_close_fires_the_close_callback() {
    let app = FakeApp::start().await;
    let kb = Kb::with_app(&app, "proxy_set_header:\n  X-App-Key: k2\n").await;
    let mut ws = kb.connect("bye").await;
    send_text(&mut ws, "last words").await;
    close(&mut ws).await;
    let req = app.next("/close").await;
    assert_eq!(req.session(), Some("bye"));
    assert!(
        req.header("x-kuiperbelt-endpoint").is_some(),
        "close carries the endpoint"
    );
    assert_eq!(req.header("x-app-key"), Some("k2"));
    let receive = app.seen("/receive");
    assert_eq!(
        receive.len(),
        1,
        "the receive went out before the close callback"
    );
    kb.wait_connections(0).await;
}

#[tokio::test]
async fn a_broken_connection_fires_the_close_callback() {
    let app = FakeApp::start().await;
    let kb = Kb::with_app(&app, "").await;
    let ws = kb.connect("dropped").await;
    drop(ws); // TCP goes away without a close frame
    assert_eq!(app.next("/close").await.session(), Some("dropped"));
    kb.wait_connections(0).await;
}

#[tokio::test]
async fn idle_timeout_closes_with_4000_and_fires_the_close_callback() {
    let app = FakeApp::start().await;
    let kb = Kb::with_app(&app, "idle_timeout: 400ms\n").await;
    let mut ws = kb.connect("idle").await;
    assert_eq!(recv_close(&mut ws).await, Some(4000));
    assert_eq!(app.next("/close").await.session(), Some("idle"));
}

#[tokio::test]
async fn pings_and_messages_count_as_activity() {
    let app = FakeApp::start().await;
    let kb = Kb::with_app(&app, "idle_timeout: 500ms\n").await;
    let mut pinger = kb.connect("pinger").await;
    let mut talker = kb.connect("talker").await;
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        pinger
            .send(Message::Ping(bytes::Bytes::from_static(b"hb")))
            .await
            .unwrap();
        send_text(&mut talker, "hi").await;
    }
    // 1.6 s in, both alive although well past 500 ms since connecting.
    assert_eq!(kb.stats().await["connections"], 2);
    kb.push("/send", &["pinger", "talker"], "alive").await;
    assert_eq!(recv_text(&mut pinger).await, "alive");
    assert_eq!(recv_text(&mut talker).await, "alive");
    // Silence, then the timeout applies.
    assert_eq!(recv_close(&mut pinger).await, Some(4000));
}

#[tokio::test]
async fn pong_answers_ping() {
    let app = FakeApp::start().await;
    let kb = Kb::with_app(&app, "").await;
    let mut ws = kb.connect("p").await;
    ws.send(Message::Ping(bytes::Bytes::from_static(b"x")))
        .await
        .unwrap();
    let msg = tokio::time::timeout(
        Duration::from_secs(5),
        futures_util::StreamExt::next(&mut ws),
    )
    .await
    .unwrap()
    .unwrap()
    .unwrap();
    assert_eq!(msg, Message::Pong(bytes::Bytes::from_static(b"x")));
}

#[tokio::test]
async fn a_reused_session_id_replaces_the_older_connection() {
    let app = FakeApp::start().await;
    let kb = Kb::with_app(&app, "").await;
    let mut old = kb.connect("dup").await;
    let mut new = kb.connect("dup").await;
    // The older connection is told why and closed, with no close callback:
    // the id is alive on the newer connection.
    assert_eq!(recv_close(&mut old).await, Some(4001));
    kb.wait_connections(1).await;
    let res = kb.push("/send", &["dup"], "to the newest").await;
    assert_eq!(res.text(), r#"{"result":"OK"}"#);
    assert_eq!(recv_text(&mut new).await, "to the newest");
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(app.seen("/close").is_empty());
    // The newer one still owns the id after the older one is fully gone.
    kb.push("/send", &["dup"], "again").await;
    assert_eq!(recv_text(&mut new).await, "again");
    close(&mut new).await;
    assert_eq!(app.next("/close").await.session(), Some("dup"));
}

#[tokio::test]
async fn shutdown_closes_sessions_with_1001_and_fires_close_callbacks() {
    let app = FakeApp::start().await;
    let kb = Kb::with_app(&app, "").await;
    let mut a = kb.connect("s1").await;
    let mut b = kb.connect("s2").await;
    kb.push("/send", &["s1", "s2"], "before shutdown").await;
    let closing = tokio::spawn(kb.shutdown());
    assert_eq!(recv_text(&mut a).await, "before shutdown");
    assert_eq!(recv_close(&mut a).await, Some(1001));
    assert_eq!(recv_text(&mut b).await, "before shutdown");
    assert_eq!(recv_close(&mut b).await, Some(1001));
    closing.await.unwrap();
    let closes = counts(&app.seen("/close"));
    assert_eq!(closes.get("s1"), Some(&1));
    assert_eq!(closes.get("s2"), Some(&1));
}

#[tokio::test]
async fn a_slow_receive_callback_does_not_stall_pushes() {
    let app = FakeApp::start().await;
    let kb = Kb::with_app(&app, "").await;
    app.respond(|r| match r.path.as_str() {
        "/connect" => Canned::session("slowapp"),
        "/receive" => Canned::ok().delay(Duration::from_secs(2)),
        _ => Canned::ok(),
    });
    let mut ws = kb.connect("slowapp").await;
    send_text(&mut ws, "takes a while").await;
    app.next("/receive").await;
    let started = std::time::Instant::now();
    kb.push("/send", &["slowapp"], "meanwhile").await;
    assert_eq!(recv_text(&mut ws).await, "meanwhile");
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[tokio::test]
async fn callbacks_reuse_keep_alive_connections() {
    let app = FakeApp::start().await;
    let kb = Kb::with_app(&app, "").await;
    let mut ws = kb.connect("ka").await;
    for i in 0..100 {
        send_text(&mut ws, &format!("{i}")).await;
    }
    app.wait_seen("/receive", 100).await;
    let used = app.connections.load(std::sync::atomic::Ordering::SeqCst);
    // One connect callback plus 100 sequential receives: a pool needs one or two.
    assert!(used <= 3, "{used} TCP connections for 101 callbacks");
}

#[tokio::test]
async fn client_messages_larger_than_the_read_buffer_arrive_whole() {
    let app = FakeApp::start().await;
    let kb = Kb::with_app(&app, "").await;
    let mut ws = kb.connect("big").await;
    let big: String = (0..200_000)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    send_text(&mut ws, &big).await;
    send_text(&mut ws, "small after big").await;
    let seen = app.wait_seen("/receive", 2).await;
    assert_eq!(seen[0].body.len(), big.len());
    assert_eq!(&seen[0].body[..], big.as_bytes());
    assert_eq!(&seen[1].body[..], b"small after big");
}

/// Pongs written by the session task and frames written directly by pushes
/// share one socket: neither ever splits the other.
#[tokio::test]
async fn pongs_and_pushes_interleave_without_splitting_a_frame() {
    use futures_util::StreamExt;

    let app = FakeApp::start().await;
    let kb = Kb::with_app(&app, "").await;
    let ws = kb.connect("pp").await;
    let (mut sink, mut stream) = ws.split();
    const N: usize = 300;
    let pinger = tokio::spawn(async move {
        for i in 0..N {
            let payload = format!("ping-{i:03}").repeat(10);
            sink.send(Message::Ping(payload.into())).await.unwrap();
            tokio::task::yield_now().await;
        }
    });
    let body = |i: usize| format!("{i:03}-{}", "m".repeat(20_000));
    let pushes = async {
        for i in 0..N {
            let res = kb.push("/send", &["pp"], &body(i)).await;
            assert_eq!(res.json()["result"], "OK");
        }
    };
    let reader = async {
        let (mut texts, mut pongs) = (0, 0);
        while texts < N || pongs < N {
            let msg = tokio::time::timeout(Duration::from_secs(10), stream.next())
                .await
                .expect("frames keep coming")
                .expect("stream open")
                .expect("every frame is well formed");
            match msg {
                Message::Text(t) => {
                    assert!(t.as_str() == body(texts), "message {texts} differs");
                    texts += 1;
                }
                Message::Pong(p) => {
                    assert_eq!(p, format!("ping-{pongs:03}").repeat(10).as_bytes());
                    pongs += 1;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    };
    tokio::join!(pushes, reader);
    pinger.await.unwrap();
}

/// A client that sends its first frame in the same packet as the upgrade
/// request: the bytes read past the request still reach the app.
#[tokio::test]
async fn a_frame_sent_with_the_upgrade_request_is_not_lost() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let app = FakeApp::start().await;
    let kb = Kb::with_app(&app, "").await;
    let mut tcp = tokio::net::TcpStream::connect(kb.addr).await.unwrap();
    let mut bytes = b"GET /connect?session=early HTTP/1.1\r\nHost: kb\r\nUpgrade: websocket\r\n\
        Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
        Sec-WebSocket-Version: 13\r\n\r\n"
        .to_vec();
    // A masked text frame "early bird" with a zero mask key.
    bytes.extend_from_slice(&[0x81, 0x80 | 10, 0, 0, 0, 0]);
    bytes.extend_from_slice(b"early bird");
    tcp.write_all(&bytes).await.unwrap();
    let mut head = [0u8; 12];
    tcp.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 101");
    let seen = app.wait_seen("/receive", 1).await;
    assert_eq!(seen[0].body, &b"early bird"[..]);
    assert_eq!(seen[0].session(), Some("early"));
}
