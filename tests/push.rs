//! `POST /send` and `POST /close`: addressing, replies, frames, ordering,
//! queues and timeouts, with real WebSocket clients.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use futures_util::StreamExt;
use http::Method;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn send_to_one_session() {
    let app = FakeApp::start().await;
    let kb = Kb::with_app(&app, "").await;
    let mut alice = kb.connect("alice").await;
    let res = kb.push("/send", &["alice"], "How are you doing?").await;
    assert_eq!(res.status, 200);
    assert_eq!(res.content_type(), "application/json");
    assert_eq!(res.text(), r#"{"result":"OK"}"#);
    assert_eq!(recv(&mut alice).await, Message::text("How are you doing?"));
    assert_eq!(kb.stats().await["total_messages"], 1);
}

#[tokio::test]
async fn octet_stream_is_a_binary_frame() {
    let app = FakeApp::start().await;
    let kb = Kb::with_app(&app, "").await;
    let mut ws = kb.connect("b").await;
    let body = Bytes::from_static(&[0, 1, 2, 255]);
    let res = http(
        Method::POST,
        &kb.url("/send"),
        &[
            ("X-Kuiperbelt-Session", "b"),
            ("Content-Type", "application/octet-stream"),
        ],
        body.clone(),
    )
    .await;
    assert_eq!(res.status, 200);
    assert_eq!(recv(&mut ws).await, Message::Binary(body));
}

#[tokio::test]
async fn some_unknown_targets_still_ok() {
    let app = FakeApp::start().await;
    let kb = Kb::with_app(&app, "").await;
    let mut alice = kb.connect("alice").await;
    let res = kb.push("/send", &["alice", "bob"], "hi").await;
    assert_eq!(res.status, 200);
    assert_eq!(
        res.text(),
        r#"{"errors":[{"error":"session is not found.","session":"bob"}],"result":"OK"}"#
    );
    assert_eq!(recv_text(&mut alice).await, "hi");
    // An unknown target is no message error: nothing was accepted for it.
    assert_eq!(kb.stats().await["message_errors"], 0);
}

#[tokio::test]
async fn no_known_target_is_ng() {
    let app = FakeApp::start().await;
    let kb = Kb::with_app(&app, "").await;
    let res = kb.push("/send", &["bob", "carol"], "hi").await;
    assert_eq!(res.status, 200);
    assert_eq!(
        res.text(),
        r#"{"errors":[{"error":"session is not found.","session":"bob"},{"error":"session is not found.","session":"carol"}],"result":"NG"}"#
    );
}

#[tokio::test]
async fn strict_broadcast_refuses_the_whole_request() {
    let app = FakeApp::start().await;
    let kb = Kb::with_app(&app, "strict_broadcast: true\n").await;
    let mut alice = kb.connect("alice").await;
    let res = kb.push("/send", &["alice", "bob"], "hi").await;
    assert_eq!(res.status, 400);
    assert_eq!(
        res.text(),
        r#"{"errors":[{"error":"session is not found.","session":"bob"}],"result":"NG"}"#
    );
    assert_silent(&mut alice, 150).await;
    let res = kb.push("/send", &["alice"], "only alice").await;
    assert_eq!(res.text(), r#"{"result":"OK"}"#);
    assert_eq!(recv_text(&mut alice).await, "only alice");
}

#[tokio::test]
async fn missing_session_header_is_400() {
    let app = FakeApp::start().await;
    let kb = Kb::with_app(&app, "").await;
    for path in ["/send", "/close"] {
        let res = kb.push(path, &[], "hi").await;
        assert_eq!(res.status, 400);
        assert_eq!(
            res.text(),
            r#"{"errors":[{"error":"session header is missing"}],"result":"NG"}"#
        );
    }
}

#[tokio::test]
async fn other_methods_are_405() {
    let app = FakeApp::start().await;
    let kb = Kb::with_app(&app, "").await;
    for path in ["/send", "/close"] {
        for method in [Method::GET, Method::PUT, Method::DELETE] {
            let res = http(
                method,
                &kb.url(path),
                &[("X-Kuiperbelt-Session", "a")],
                Bytes::new(),
            )
            .await;
            assert_eq!(res.status, 405);
            assert_eq!(res.content_type(), "application/json");
            assert_eq!(
                res.text(),
                r#"{"errors":[{"error":"required POST method"}],"result":"NG"}"#
            );
        }
    }
}

#[tokio::test]
async fn messages_arrive_in_request_order() {
    let app = FakeApp::start().await;
    let kb = Kb::with_app(&app, "").await;
    let mut ws = kb.connect("o").await;
    for i in 0..200 {
        let res = kb.push("/send", &["o"], &format!("m{i}")).await;
        assert_eq!(res.status, 200);
    }
    for i in 0..200 {
        assert_eq!(recv_text(&mut ws).await, format!("m{i}"));
    }
}

#[tokio::test]
async fn a_thousand_targets_in_one_request() {
    let app = FakeApp::start().await;
    let kb = Kb::with_app(&app, "").await;
    let mut a = kb.connect("t-0").await;
    let mut b = kb.connect("t-999").await;
    let ids: Vec<String> = (0..1000).map(|i| format!("t-{i}")).collect();
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    for path in ["/send", "/close"] {
        let res = kb.push(path, &refs, "all").await;
        assert_eq!(res.status, 200, "{}", res.text());
        let json = res.json();
        assert_eq!(json["result"], "OK");
        assert_eq!(json["errors"].as_array().unwrap().len(), 998);
    }
    assert_eq!(recv_text(&mut a).await, "all");
    assert_eq!(recv_text(&mut b).await, "all");
    assert_eq!(recv_text(&mut a).await, "all");
    assert_eq!(recv_close(&mut a).await, Some(1000));
}

#[tokio::test]
async fn invalid_utf8_text_is_refused_and_nothing_is_sent() {
    let app = FakeApp::start().await;
    let kb = Kb::with_app(&app, "").await;
    let mut ws = kb.connect("u").await;
    for path in ["/send", "/close"] {
        let res = http(
            Method::POST,
            &kb.url(path),
            &[
                ("X-Kuiperbelt-Session", "u"),
                ("Content-Type", "text/plain"),
            ],
            Bytes::from_static(&[0x66, 0xff, 0xfe]),
        )
        .await;
        assert_eq!(res.status, 400);
        assert!(res.json()["errors"][0]["error"]
            .as_str()
            .unwrap()
            .contains("UTF-8"));
    }
    assert_silent(&mut ws, 150).await;
    kb.push("/send", &["u"], "still open").await;
    assert_eq!(recv_text(&mut ws).await, "still open");
}

#[tokio::test]
async fn close_sends_last_message_then_1000_without_close_callback() {
    let app = FakeApp::start().await;
    let kb = Kb::with_app(&app, "").await;
    let mut ws = kb.connect("c").await;
    kb.push("/send", &["c"], "first").await;
    let res = kb.push("/close", &["c"], "Bye").await;
    assert_eq!(res.text(), r#"{"result":"OK"}"#);
    assert_eq!(recv_text(&mut ws).await, "first");
    assert_eq!(recv_text(&mut ws).await, "Bye");
    assert_eq!(recv_close(&mut ws).await, Some(1000));
    kb.wait_connections(0).await;
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(
        app.seen("/close").is_empty(),
        "no close callback for a close the app asked for"
    );
    let res = kb.push("/send", &["c"], "gone").await;
    assert_eq!(res.json()["result"], "NG");
}

#[tokio::test]
async fn close_with_empty_body_sends_no_message() {
    let app = FakeApp::start().await;
    let kb = Kb::with_app(&app, "").await;
    let mut ws = kb.connect("e").await;
    kb.push("/close", &["e"], "").await;
    match recv(&mut ws).await {
        Message::Close(frame) => assert_eq!(u16::from(frame.unwrap().code), 1000),
        other => panic!("expected the close frame first, got {other:?}"),
    }
}

#[tokio::test]
async fn unknown_close_target_is_reported() {
    let app = FakeApp::start().await;
    let kb = Kb::with_app(&app, "").await;
    let res = kb.push("/close", &["nobody"], "bye").await;
    assert_eq!(
        res.text(),
        r#"{"errors":[{"error":"session is not found.","session":"nobody"}],"result":"NG"}"#
    );
}

#[tokio::test]
async fn full_queue_times_out_for_that_session_only() {
    let app = FakeApp::start().await;
    let kb = Kb::with_app(
        &app,
        "send_timeout: 300ms\nsend_queue_size: 2\nmax_message_size: 4194304\n",
    )
    .await;
    // `slow` never reads; its socket buffers fill, then its queue.
    let _slow = kb.connect("slow").await;
    let mut fast = kb.connect("fast").await;
    let big = "x".repeat(1 << 20);
    let mut timed_out = false;
    for _ in 0..64 {
        let res = kb.push("/send", &["slow"], &big).await;
        let json = res.json();
        if json["result"] == "NG" {
            assert_eq!(json["errors"][0]["error"], "session queue is full.");
            assert_eq!(json["errors"][0]["session"], "slow");
            timed_out = true;
            break;
        }
    }
    assert!(
        timed_out,
        "a never-reading client must eventually fill its queue"
    );
    // The stuck session delays nobody else, even in the same request.
    let started = Instant::now();
    let res = kb.push("/send", &["fast", "slow"], "hello").await;
    assert_eq!(res.json()["result"], "OK");
    assert_eq!(recv_text(&mut fast).await, "hello");
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn oversized_body_is_413() {
    let app = FakeApp::start().await;
    let kb = Kb::with_app(&app, "max_message_size: 1024\n").await;
    let _ws = kb.connect("m").await;
    let res = kb.push("/send", &["m"], &"y".repeat(2048)).await;
    assert_eq!(res.status, 413);
    assert_eq!(res.json()["result"], "NG");
}

/// A client that stops reading: its socket fills (a direct write leaves a
/// tail for the session task), later pushes queue behind it, then the queue
/// fills. Every message answered OK still arrives, whole and in order, and
/// direct writes resume once the client catches up.
#[tokio::test]
async fn a_stalled_reader_gets_every_accepted_message_whole_and_in_order() {
    let app = FakeApp::start().await;
    let kb = Kb::with_app(
        &app,
        "send_timeout: 200ms\nsend_queue_size: 4\nmax_message_size: 1048576\n",
    )
    .await;
    let mut ws = kb.connect("stall").await;
    let body = |i: usize| format!("{i:05}:{}", "y".repeat(100_000 + i));
    let mut accepted = 0;
    loop {
        assert!(accepted < 1000, "the queue never filled");
        let res = kb.push("/send", &["stall"], &body(accepted)).await;
        let json = res.json();
        if json["result"] == "NG" {
            assert_eq!(json["errors"][0]["error"], "session queue is full.");
            break;
        }
        accepted += 1;
    }
    assert!(accepted > 4, "socket buffers took only {accepted}");
    for i in 0..accepted {
        let got = recv_text(&mut ws).await;
        assert!(
            got == body(i),
            "message {i} differs: {:?}",
            &got[..12.min(got.len())]
        );
    }
    // The refused message was never written.
    assert_silent(&mut ws, 200).await;
    for i in 0..3 {
        let res = kb.push("/send", &["stall"], &format!("after {i}")).await;
        assert_eq!(res.json()["result"], "OK");
        assert_eq!(recv_text(&mut ws).await, format!("after {i}"));
    }
}

/// The push API and `/connect` on a UNIX socket (`sock`): frames reach a
/// WebSocket whose connection is a UNIX stream, direct and queued alike.
#[tokio::test]
async fn pushes_reach_a_session_on_a_unix_socket() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{UnixListener, UnixStream};

    let app = FakeApp::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kb.sock");
    let config = kuiperbelt::config::from_yaml_str(&base_yaml(&app)).unwrap();
    let listener = UnixListener::bind(&path).unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(kuiperbelt::run(
        config,
        kuiperbelt::Listener::Unix(listener, path.clone()),
        async {
            let _ = stopped.await;
        },
    ));
    let stream = UnixStream::connect(&path).await.unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async("ws://kb/connect?session=u", stream)
        .await
        .expect("handshake over the UNIX socket");

    let send = |n: usize| {
        let path = path.clone();
        async move {
            let body = "z".repeat(n);
            let mut s = UnixStream::connect(&path).await.unwrap();
            let req = format!(
                "POST /send HTTP/1.1\r\nHost: kb\r\nX-Kuiperbelt-Session: u\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            s.write_all(req.as_bytes()).await.unwrap();
            let mut reply = String::new();
            s.read_to_string(&mut reply).await.unwrap();
            reply
        }
    };
    for n in [5, 300_000, 7] {
        let reply = send(n).await;
        assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
        assert!(reply.ends_with(r#"{"result":"OK"}"#), "{reply}");
    }
    for n in [5, 300_000, 7] {
        let msg = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("a frame within 5s")
            .unwrap()
            .unwrap();
        assert_eq!(msg, Message::text("z".repeat(n)));
    }
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}
