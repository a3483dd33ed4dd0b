//! Monitoring endpoints, configurable paths and header names, and replies to
//! requests that match nothing.

mod common;

use bytes::Bytes;
use common::*;
use http::Method;

#[tokio::test]
async fn ping_answers_ok() {
    let app = FakeApp::start().await;
    let kb = Kb::with_app(&app, "").await;
    let res = kb.get("/ping").await;
    assert_eq!(res.status, 200);
    assert_eq!(res.content_type(), "application/json");
    assert_eq!(res.text(), r#"{"result":"OK"}"#);
}

#[tokio::test]
async fn stats_json_counts_connections_messages_and_errors() {
    let app = FakeApp::start().await;
    let kb = Kb::with_app(&app, "").await;
    let _a = kb.connect("a").await;
    let mut b = kb.connect("b").await;
    close(&mut b).await;
    kb.wait_connections(1).await;
    app.next("/close").await;
    kb.push("/send", &["a", "zz"], "x").await;
    let _ = kb.try_connect("/connect", &[]).await; // 403 from the app: not an error
    kb.wait_stat("closing_connections", 0).await;
    let res = kb.get("/stats").await;
    assert_eq!(res.content_type(), "application/json");
    // As the Go server counts: every request to the connect path is a
    // connection, an unknown target is no message error (nothing was
    // accepted to be written).
    assert_eq!(
        res.text(),
        r#"{"connections":1,"total_connections":3,"total_messages":1,"connect_errors":0,"message_errors":0,"closing_connections":0}"#
    );
}

#[tokio::test]
async fn stats_text_formats() {
    let app = FakeApp::start().await;
    let kb = Kb::with_app(&app, "").await;
    let _a = kb.connect("a").await;
    for format in ["text", "tsv", "txt"] {
        let res = kb.get(&format!("/stats?format={format}")).await;
        assert_eq!(res.status, 200);
        assert!(res.content_type().starts_with("text/plain"));
        let lines: Vec<Vec<String>> = res
            .text()
            .lines()
            .map(|l| l.split('\t').map(str::to_string).collect())
            .collect();
        let names: Vec<&str> = lines.iter().map(|l| l[0].as_str()).collect();
        assert_eq!(
            names,
            [
                "kuiperbelt.conn.current",
                "kuiperbelt.conn.total",
                "kuiperbelt.conn.errors",
                "kuiperbelt.conn.closing",
                "kuiperbelt.messages.total",
                "kuiperbelt.messages.errors"
            ]
        );
        assert_eq!(lines[0][1], "1");
        assert!(lines
            .iter()
            .all(|l| l.len() == 3 && l[2].parse::<u64>().is_ok()));
    }
}

#[tokio::test]
async fn every_path_is_configurable() {
    let app = FakeApp::start().await;
    let kb = Kb::with_app(
        &app,
        "path:\n  connect: /ws/connect\n  send: /api/send\n  close: /api/close\n  stats: /api/stats\n  ping: /health/ping\n",
    )
    .await;
    let mut ws = kb.try_connect("/ws/connect?session=p", &[]).await.unwrap();
    assert_eq!(app.next("/connect").await.session(), None);
    assert_eq!(kb.push("/api/send", &["p"], "moved").await.status, 200);
    assert_eq!(recv_text(&mut ws).await, "moved");
    assert_eq!(kb.get("/health/ping").await.status, 200);
    assert_eq!(kb.get("/api/stats").await.json()["connections"], 1);
    for old in ["/send", "/ping", "/stats"] {
        let res = kb.get(old).await;
        assert_eq!(res.status, 404, "{old} must not answer once moved");
        assert_eq!(res.json()["result"], "NG");
    }
    kb.push("/api/close", &["p"], "").await;
    assert_eq!(recv_close(&mut ws).await, Some(1000));
}

#[tokio::test]
async fn session_header_name_is_configurable_and_case_insensitive() {
    let app = FakeApp::start().await;
    let kb = Kb::with_app(&app, "session_header: x-my-session\n").await;
    app.respond(|r| match r.path.as_str() {
        "/connect" => Canned::ok().header("X-My-Session", "lower"),
        _ => Canned::ok(),
    });
    let mut ws = kb.try_connect("/connect", &[]).await.unwrap();
    let res = http(
        Method::POST,
        &kb.url("/send"),
        &[("X-MY-SESSION", "lower")],
        Bytes::from("hi"),
    )
    .await;
    assert_eq!(res.text(), r#"{"result":"OK"}"#);
    assert_eq!(recv_text(&mut ws).await, "hi");
    send_text(&mut ws, "up").await;
    assert_eq!(
        app.next("/receive").await.header("x-my-session"),
        Some("lower")
    );
    // The default header name is not the session header any more.
    let res = kb.push("/send", &["lower"], "x").await;
    assert_eq!(res.status, 400);
}

#[tokio::test]
async fn unknown_paths_get_json_404() {
    let app = FakeApp::start().await;
    let kb = Kb::with_app(&app, "").await;
    let res = kb.get("/nope").await;
    assert_eq!(res.status, 404);
    assert_eq!(res.content_type(), "application/json");
    assert_eq!(res.json()["result"], "NG");
}
