//! Drop-in fidelity: the contract rules an existing app relies on that the
//! Go server shows and the contract states precisely: the establish gate,
//! the `/stats` counters, strict broadcast failures, idle activity and
//! blocked writes, and the accept queue.

mod common;

use std::time::{Duration, Instant};

use common::*;
use tokio_tungstenite::tungstenite::Message;

/// Answers the connect callback with the session id from the query and, for
/// ids starting with `with-body`, a first message.
fn connect_with_bodies(r: &Recorded) -> Canned {
    let id = query_param(r.query.as_deref(), "session").unwrap_or_default();
    if id.starts_with("with-body") {
        Canned::session(&id).body(format!("first for {id}"))
    } else {
        Canned::session(&id)
    }
}

fn establish_yaml(app: &FakeApp, extra: &str) -> String {
    base_yaml(app).replace(
        "callback:\n",
        &format!("callback:\n  establish: {}\n{extra}", app.url("/establish")),
    )
}

#[tokio::test]
async fn establish_gates_registration_and_the_first_message() {
    let app = FakeApp::start().await;
    app.respond(|r| match r.path.as_str() {
        "/connect" => connect_with_bodies(r),
        "/establish" => Canned::ok().delay(Duration::from_millis(700)),
        _ => Canned::ok(),
    });
    let kb = Kb::start(&establish_yaml(&app, "")).await;
    // The 101 does not wait for establish.
    let started = Instant::now();
    let mut ws = kb.connect("with-body-1").await;
    assert!(started.elapsed() < Duration::from_millis(500));
    app.next("/establish").await;
    // Until establish answers: not addressable, no first message.
    for path in ["/send", "/close"] {
        let res = kb.push(path, &["with-body-1"], "too early").await;
        assert_eq!(
            res.text(),
            r#"{"errors":[{"error":"session is not found.","session":"with-body-1"}],"result":"NG"}"#
        );
    }
    assert_silent(&mut ws, 200).await;
    // Then the first message, then the session is addressable.
    assert_eq!(recv_text(&mut ws).await, "first for with-body-1");
    let res = kb.push("/send", &["with-body-1"], "now").await;
    assert_eq!(res.text(), r#"{"result":"OK"}"#);
    assert_eq!(recv_text(&mut ws).await, "now");
}

#[tokio::test]
async fn establish_failure_never_makes_the_id_addressable() {
    // A non-200, a timeout, and an app that is not there.
    let closed_port = free_port();
    for (case, extra) in [
        ("status", String::new()),
        ("timeout", "  timeout: 300ms\n".to_string()),
        ("refused", String::new()),
    ] {
        let app = FakeApp::start().await;
        app.respond(move |r| match r.path.as_str() {
            "/connect" => connect_with_bodies(r),
            "/establish" if case == "timeout" => Canned::ok().delay(Duration::from_secs(3)),
            "/establish" => Canned::status(500),
            _ => Canned::ok(),
        });
        let mut yaml = establish_yaml(&app, &extra);
        if case == "refused" {
            yaml = yaml.replace(
                &app.url("/establish"),
                &format!("http://127.0.0.1:{closed_port}/establish"),
            );
        }
        let kb = Kb::start(&yaml).await;
        let mut ws = kb.connect("with-body-x").await;
        // Polled while establish is pending and after it failed: never found.
        let polling = async {
            for _ in 0..20 {
                let res = kb.push("/send", &["with-body-x"], "never").await;
                assert_eq!(res.json()["result"], "NG", "{case}: {}", res.text());
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        };
        let (close, ()) = tokio::join!(
            async {
                // The close frame comes first: no first message before it.
                match tokio::time::timeout(
                    Duration::from_secs(5),
                    futures_util::StreamExt::next(&mut ws),
                )
                .await
                {
                    Ok(Some(Ok(Message::Close(frame)))) => frame.map(|f| u16::from(f.code)),
                    other => panic!("{case}: expected a close frame first, got {other:?}"),
                }
            },
            polling
        );
        assert_eq!(close, Some(1011), "{case}");
        kb.wait_connections(0).await;
        let stats = kb.stats().await;
        assert_eq!(stats["connect_errors"], 1, "{case}: {stats}");
        assert_eq!(stats["total_messages"], 0, "{case}: {stats}");
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(app.seen("/close").is_empty(), "{case}: no close callback");
        let res = kb.push("/send", &["with-body-x"], "never").await;
        assert_eq!(res.json()["result"], "NG");
    }
}

#[tokio::test]
async fn total_messages_counts_first_messages_and_known_targets() {
    let app = FakeApp::start().await;
    app.respond(|r| match r.path.as_str() {
        "/connect" => connect_with_bodies(r),
        _ => Canned::ok(),
    });
    let kb = Kb::with_app(&app, "").await;
    let mut a = kb.connect("with-body-a").await;
    let mut b = kb.connect("b").await;
    assert_eq!(recv_text(&mut a).await, "first for with-body-a");
    assert_eq!(kb.stats().await["total_messages"], 1, "the first message");
    kb.push("/send", &["with-body-a", "b", "nobody"], "x").await;
    assert_eq!(
        kb.stats().await["total_messages"],
        3,
        "one per known target"
    );
    kb.push("/close", &["b"], "bye").await;
    assert_eq!(
        kb.stats().await["total_messages"],
        4,
        "a /close with a body"
    );
    kb.push("/close", &["with-body-a"], "").await;
    assert_eq!(
        kb.stats().await["total_messages"],
        4,
        "not a /close without one"
    );
    recv_text(&mut b).await;
    let text = kb.get("/stats?format=text").await.text();
    let total = text
        .lines()
        .find(|l| l.starts_with("kuiperbelt.messages.total\t"))
        .expect("messages.total line");
    assert_eq!(total.split('\t').nth(1), Some("4"), "{text}");
}

#[tokio::test]
async fn closing_connections_counts_unanswered_close_callbacks() {
    let app = FakeApp::start().await;
    app.respond(|r| match r.path.as_str() {
        "/connect" => connect_with_bodies(r),
        "/close" => Canned::ok().delay(Duration::from_millis(800)),
        _ => Canned::ok(),
    });
    let kb = Kb::with_app(&app, "").await;
    let mut ws = kb.connect("leaving").await;
    assert_eq!(kb.stats().await["closing_connections"], 0);
    close(&mut ws).await;
    app.next("/close").await;
    let stats = kb.stats().await;
    assert_eq!(stats["closing_connections"], 1, "{stats}");
    assert_eq!(stats["connections"], 0, "{stats}");
    kb.wait_stat("closing_connections", 0).await;
}

/// Pushes 1 MiB messages to `id` (a client that never reads) until one
/// fails; returns that reply.
async fn push_until_refused(kb: &Kb, id: &str) -> HttpReply {
    let big = "x".repeat(1 << 20);
    for _ in 0..64 {
        let res = kb.push("/send", &[id], &big).await;
        if res.json()["result"] == "NG" {
            return res;
        }
    }
    panic!("a never-reading client must eventually refuse a push");
}

#[tokio::test]
async fn strict_broadcast_fails_on_a_full_queue_and_a_closed_target() {
    let app = FakeApp::start().await;
    let kb = Kb::with_app(
        &app,
        "strict_broadcast: true\nsend_timeout: 300ms\nsend_queue_size: 1\nmax_message_size: 4194304\n",
    )
    .await;
    let _stuck = kb.connect("stuck").await;
    let mut fine = kb.connect("fine").await;
    let res = push_until_refused(&kb, "stuck").await;
    assert_eq!(res.status, 400);
    assert_eq!(
        res.text(),
        r#"{"errors":[{"error":"session queue is full.","session":"stuck"}],"result":"NG"}"#
    );
    // With a good target in the same request: still 400, naming only the
    // failed one (the good one got it).
    let res = kb.push("/send", &["fine", "stuck"], "both").await;
    assert_eq!(res.status, 400);
    assert_eq!(
        res.text(),
        r#"{"errors":[{"error":"session queue is full.","session":"stuck"}],"result":"NG"}"#
    );
    assert_eq!(recv_text(&mut fine).await, "both");
    assert_eq!(kb.stats().await["message_errors"], 0, "no write failed");
}

#[tokio::test]
async fn strict_broadcast_fails_on_a_target_that_closed_meanwhile() {
    let app = FakeApp::start().await;
    let kb = Kb::with_app(
        &app,
        "strict_broadcast: true\nsend_queue_size: 1\nmax_message_size: 4194304\n",
    )
    .await;
    let stuck = kb.connect("stuck").await;
    let big = "x".repeat(1 << 20);
    // Without send_timeout a push to a full queue waits; find one that does.
    let mut waiting = None;
    for _ in 0..64 {
        let push = {
            let url = kb.url("/send");
            let big = big.clone();
            tokio::spawn(async move {
                http(
                    http::Method::POST,
                    &url,
                    &[("X-Kuiperbelt-Session", "stuck")],
                    bytes::Bytes::from(big),
                )
                .await
            })
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        if !push.is_finished() {
            waiting = Some(push);
            break;
        }
        assert_eq!(push.await.unwrap().json()["result"], "OK");
    }
    let waiting = waiting.expect("a push waits for room in the full queue");
    // The client goes away while the push waits.
    drop(stuck);
    let res = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("the waiting push is answered")
        .unwrap();
    assert_eq!(res.status, 400);
    assert_eq!(
        res.text(),
        r#"{"errors":[{"error":"session is closed.","session":"stuck"}],"result":"NG"}"#
    );
}

#[tokio::test]
async fn pushes_keep_a_listening_client_alive() {
    let app = FakeApp::start().await;
    let kb = Kb::with_app(&app, "idle_timeout: 600ms\n").await;
    let mut listener = kb.connect("listener").await;
    // 2 s of pushes every 200 ms: the client only reads.
    for i in 0..10 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let res = kb.push("/send", &["listener"], &format!("tick {i}")).await;
        assert_eq!(res.text(), r#"{"result":"OK"}"#, "push {i}");
        assert_eq!(recv_text(&mut listener).await, format!("tick {i}"));
    }
    // Then silence: the timeout applies.
    let quiet = Instant::now();
    assert_eq!(recv_close(&mut listener).await, Some(4000));
    assert!(quiet.elapsed() >= Duration::from_millis(500));
    let closed = app.next("/close").await;
    assert_eq!(closed.header("x-kuiperbelt-close-reason"), Some("idle"));
}

#[tokio::test]
async fn a_write_blocked_past_idle_timeout_fails() {
    let app = FakeApp::start().await;
    let kb = Kb::with_app(
        &app,
        "idle_timeout: 700ms\nsend_queue_size: 64\nmax_message_size: 4194304\n",
    )
    .await;
    let _stuck = kb.connect("stuck").await;
    let big = "x".repeat(1 << 20);
    let started = Instant::now();
    for _ in 0..24 {
        let res = kb.push("/send", &["stuck"], &big).await;
        if res.json()["result"] == "NG" {
            break; // already closed
        }
    }
    // Well before the 30 s write timeout of a connection without idle_timeout.
    let closed = app.next("/close").await;
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(closed.session(), Some("stuck"));
    assert_eq!(
        closed.header("x-kuiperbelt-close-reason"),
        Some("write_timeout")
    );
    kb.wait_connections(0).await;
    let errors = kb.stats().await["message_errors"].as_i64().unwrap();
    assert!(
        errors >= 1,
        "the messages that could not be written: {errors}"
    );
}

#[tokio::test]
async fn listen_backlog_sets_the_accept_queue() {
    let ss = std::path::Path::new("/usr/bin/ss");
    assert!(ss.exists(), "ss (iproute2) is needed: bash .ci/install.sh");
    let backlog_of = |port: u16| -> String {
        let out = std::process::Command::new(ss)
            .args(["-ltnH", &format!("sport = :{port}")])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        // State Recv-Q Send-Q Local Peer: Send-Q is the backlog of a listener.
        text.split_whitespace()
            .nth(2)
            .unwrap_or_default()
            .to_string()
    };
    let app = FakeApp::start().await;
    let bin = Binary::start(&format!("{}listen_backlog: 77\n", base_yaml(&app))).await;
    assert_eq!(backlog_of(bin.port), "77");
    drop(bin);
    let somaxconn = std::fs::read_to_string("/proc/sys/net/core/somaxconn").unwrap();
    let bin = Binary::start(&base_yaml(&app)).await;
    assert_eq!(
        backlog_of(bin.port),
        somaxconn.trim(),
        "default: the system's somaxconn"
    );
}
