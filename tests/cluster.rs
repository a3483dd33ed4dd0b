//! Cluster mode against real `nats-server`s (Debian's package, started on
//! free ports): pushes and closes across nodes with the contract's exact
//! replies, strict broadcast, one id one connection cluster-wide, NATS lost
//! and back, a node killed, two NATS servers joined by routes, and the
//! cluster-wide `/stats`.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::nats::Nats;
use common::*;
use http::Method;
use tokio_tungstenite::tungstenite::Message;

fn cluster_yaml(app: &FakeApp, nats_url: &str, extra: &str) -> String {
    format!(
        "{}cluster:\n  nats:\n    url: {nats_url}\n  request_timeout: 1s\n{extra}",
        base_yaml(app)
    )
}

/// Pushes from `node` until the reply is OK (the holder's subscription may
/// take a moment after the connect); a refused try delivers nothing.
async fn push_until_ok(node: &str, path: &str, ids: &[&str], body: &str) -> HttpReply {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let headers: Vec<(&str, &str)> =
            ids.iter().map(|id| ("X-Kuiperbelt-Session", *id)).collect();
        let res = http(
            Method::POST,
            &format!("{node}{path}"),
            &headers,
            Bytes::from(body.to_string()),
        )
        .await;
        if res.status == 200 && res.json()["errors"].is_null() {
            return res;
        }
        assert!(Instant::now() < deadline, "never OK: {}", res.text());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `N` nodes of one cluster, in this process.
async fn nodes<const N: usize>(yaml: &str) -> [Kb; N] {
    let mut nodes = Vec::with_capacity(N);
    for _ in 0..N {
        nodes.push(Kb::start(yaml).await);
    }
    nodes.try_into().unwrap_or_else(|_| unreachable!("N nodes"))
}

async fn push(node: &str, ids: &[&str], body: &str) -> HttpReply {
    let headers: Vec<(&str, &str)> = ids.iter().map(|id| ("X-Kuiperbelt-Session", *id)).collect();
    http(
        Method::POST,
        &format!("{node}/send"),
        &headers,
        Bytes::from(body.to_string()),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_and_closes_reach_sessions_on_every_node() {
    let nats = Nats::start().await;
    let app = FakeApp::start().await;
    let yaml = cluster_yaml(&app, &nats.url(), "");
    let [a, b, c] = nodes(&yaml).await;
    let mut alice = a.connect("alice").await;
    let mut bob = b.connect("bob").await;
    let mut carol = c.connect("carol").await;
    let node_a = a.url("");

    // One target on another node.
    let res = push_until_ok(&node_a, "/send", &["bob"], "hi bob").await;
    assert_eq!(res.text(), r#"{"result":"OK"}"#);
    assert_eq!(recv_text(&mut bob).await, "hi bob");
    push_until_ok(&node_a, "/send", &["carol"], "hi carol").await;
    assert_eq!(recv_text(&mut carol).await, "hi carol");

    // Targets on three nodes and one nowhere: the contract's exact reply.
    let res = push(&node_a, &["alice", "bob", "nobody", "carol"], "all").await;
    assert_eq!(
        res.text(),
        r#"{"errors":[{"error":"session is not found.","session":"nobody"}],"result":"OK"}"#
    );
    for ws in [&mut alice, &mut bob, &mut carol] {
        assert_eq!(recv_text(ws).await, "all");
    }
    let res = push(&node_a, &["nobody", "nobody2"], "x").await;
    assert_eq!(res.json()["result"], "NG");

    // Binary frames.
    let res = http(
        Method::POST,
        &a.url("/send"),
        &[
            ("X-Kuiperbelt-Session", "bob"),
            ("Content-Type", "application/octet-stream"),
        ],
        Bytes::from_static(&[0, 1, 255]),
    )
    .await;
    assert_eq!(res.text(), r#"{"result":"OK"}"#);
    assert_eq!(
        recv(&mut bob).await,
        Message::Binary(Bytes::from_static(&[0, 1, 255]))
    );

    // Order per session: one caller's pushes arrive as they were answered.
    for i in 0..50 {
        let res = push(&node_a, &["bob"], &format!("n{i}")).await;
        assert_eq!(res.text(), r#"{"result":"OK"}"#);
    }
    for i in 0..50 {
        assert_eq!(recv_text(&mut bob).await, format!("n{i}"));
    }

    // A close with a last message, across nodes: no close callback, and
    // the id is gone everywhere.
    let res = http(
        Method::POST,
        &a.url("/close"),
        &[("X-Kuiperbelt-Session", "carol")],
        Bytes::from_static(b"bye carol"),
    )
    .await;
    assert_eq!(res.text(), r#"{"result":"OK"}"#);
    assert_eq!(recv_text(&mut carol).await, "bye carol");
    assert_eq!(recv_close(&mut carol).await, Some(1000));
    let res = push(&node_a, &["carol"], "gone").await;
    assert_eq!(
        res.text(),
        r#"{"errors":[{"error":"session is not found.","session":"carol"}],"result":"NG"}"#
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        app.seen("/close").is_empty(),
        "no close callback for an app close"
    );

    // The cluster-wide /stats sums every node; plain /stats is this node's.
    while let Some(Ok(_)) = futures_util::StreamExt::next(&mut carol).await {}
    c.wait_connections(0).await;
    let cluster = a.get("/stats?scope=cluster").await.json();
    assert_eq!(cluster["connections"], 2, "{cluster}");
    assert_eq!(a.stats().await["connections"], 1);
    let metrics = b.get("/metrics").await.text();
    assert!(
        metrics.contains("kuiperbelt_cluster_connected 1"),
        "{metrics}"
    );
    assert!(
        !metrics.contains("kuiperbelt_cluster_pushes_received_total 0"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_broadcast_counts_every_node() {
    let nats = Nats::start().await;
    let app = FakeApp::start().await;
    let yaml = cluster_yaml(&app, &nats.url(), "strict_broadcast: true\n");
    let [a, b] = nodes(&yaml).await;
    let mut alice = a.connect("alice").await;
    let mut bob = b.connect("bob").await;
    push_until_ok(&a.url(""), "/send", &["alice", "bob"], "both").await;
    assert_eq!(recv_text(&mut alice).await, "both");
    assert_eq!(recv_text(&mut bob).await, "both");
    let res = push(&a.url(""), &["alice", "bob", "nobody"], "never").await;
    assert_eq!(res.status, 400);
    assert_eq!(
        res.text(),
        r#"{"errors":[{"error":"session is not found.","session":"nobody"}],"result":"NG"}"#
    );
    assert_silent(&mut alice, 200).await;
    assert_silent(&mut bob, 100).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_id_is_one_connection_across_the_cluster() {
    let nats = Nats::start().await;
    let app = FakeApp::start().await;
    let yaml = cluster_yaml(&app, &nats.url(), "");
    let [a, b, c] = nodes(&yaml).await;
    let mut older = a.connect("dup").await;
    push_until_ok(&c.url(""), "/send", &["dup"], "to the older").await;
    assert_eq!(recv_text(&mut older).await, "to the older");
    let mut newer = b.connect("dup").await;
    assert_eq!(recv_close(&mut older).await, Some(4001));
    a.wait_connections(0).await;
    let res = push_until_ok(&c.url(""), "/send", &["dup"], "to the newer").await;
    assert_eq!(res.text(), r#"{"result":"OK"}"#);
    assert_eq!(recv_text(&mut newer).await, "to the newer");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        app.seen("/close").is_empty(),
        "no close callback for a replaced id"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_nats_keeps_local_pushes_and_reports_remote_ones() {
    let mut nats = Nats::start().await;
    let app = FakeApp::start().await;
    let yaml = cluster_yaml(&app, &nats.url(), "");
    let [a, b] = nodes(&yaml).await;
    let mut alice = a.connect("alice").await;
    let mut bob = b.connect("bob").await;
    push_until_ok(&a.url(""), "/send", &["bob"], "before").await;
    assert_eq!(recv_text(&mut bob).await, "before");

    nats.stop();
    // NATS lost: local pushes work, remote ones say so (not "not found").
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let res = push(&a.url(""), &["alice", "bob"], "during").await;
        if res.text()
            == r#"{"errors":[{"error":"cluster is unavailable.","session":"bob"}],"result":"OK"}"#
        {
            break;
        }
        assert!(Instant::now() < deadline, "{}", res.text());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(recv_text(&mut alice).await, "during");
    let ready = a.get("/readyz").await;
    assert_eq!(ready.status, 200, "readiness does not depend on NATS");
    assert_eq!(a.get("/stats?scope=cluster").await.status, 503);
    assert!(a
        .get("/metrics")
        .await
        .text()
        .contains("kuiperbelt_cluster_connected 0"));

    // NATS back: remote pushes work again, without reconnecting clients.
    nats.restart().await;
    push_until_ok(&a.url(""), "/send", &["bob"], "after").await;
    let mut got = recv_text(&mut bob).await;
    while got == "during" {
        got = recv_text(&mut bob).await;
    }
    assert_eq!(got, "after");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_nodes_sessions_become_not_found() {
    let nats = Nats::start().await;
    let app = FakeApp::start().await;
    let yaml = cluster_yaml(&app, &nats.url(), "");
    let a = Kb::start(&yaml).await;
    let mut b = Binary::start(&yaml).await;
    let mut bob = connect_url(&format!("ws://127.0.0.1:{}", b.port), "bob")
        .await
        .unwrap();
    push_until_ok(&a.url(""), "/send", &["bob"], "alive").await;
    assert_eq!(recv_text(&mut bob).await, "alive");
    b.signal("KILL");
    b.wait().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let res = push(&a.url(""), &["bob"], "dead").await;
        if res.text()
            == r#"{"errors":[{"error":"session is not found.","session":"bob"}],"result":"NG"}"#
        {
            break;
        }
        assert!(Instant::now() < deadline, "{}", res.text());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_on_two_routed_nats_servers_reach_each_other() {
    let (c1, c2) = (free_port(), free_port());
    let route = |port: u16| format!("nats://127.0.0.1:{port}");
    let s1 = Nats::start_with(
        free_port(),
        vec![
            "--cluster_name".into(),
            "kb".into(),
            "--cluster".into(),
            route(c1),
            "--routes".into(),
            route(c2),
        ],
    )
    .await;
    let s2 = Nats::start_with(
        free_port(),
        vec![
            "--cluster_name".into(),
            "kb".into(),
            "--cluster".into(),
            route(c2),
            "--routes".into(),
            route(c1),
        ],
    )
    .await;
    let app = FakeApp::start().await;
    let a = Kb::start(&cluster_yaml(&app, &s1.url(), "")).await;
    let b = Kb::start(&cluster_yaml(&app, &s2.url(), "")).await;
    let mut alice = a.connect("alice").await;
    let mut bob = b.connect("bob").await;
    push_until_ok(&a.url(""), "/send", &["bob"], "via routes").await;
    assert_eq!(recv_text(&mut bob).await, "via routes");
    push_until_ok(&b.url(""), "/send", &["alice"], "and back").await;
    assert_eq!(recv_text(&mut alice).await, "and back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_starts_without_nats_and_joins_when_it_comes() {
    let port = free_port();
    let app = FakeApp::start().await;
    let yaml = cluster_yaml(&app, &format!("nats://127.0.0.1:{port}"), "");
    // One node in its own process, one in this one.
    let b = Binary::start(&yaml).await;
    let a = Kb::start(&yaml).await;
    let mut alice = a.connect("alice").await;
    let res = push(&a.url(""), &["alice"], "local while NATS is away").await;
    assert_eq!(res.text(), r#"{"result":"OK"}"#);
    assert_eq!(recv_text(&mut alice).await, "local while NATS is away");
    let mut bob = connect_url(&format!("ws://127.0.0.1:{}", b.port), "bob")
        .await
        .unwrap();
    let res = push(&a.url(""), &["bob"], "x").await;
    assert_eq!(res.json()["errors"][0]["error"], "cluster is unavailable.");
    let _nats = Nats::start_with(port, vec![]).await;
    push_until_ok(&a.url(""), "/send", &["bob"], "joined").await;
    let mut got = recv_text(&mut bob).await;
    while got != "joined" {
        got = recv_text(&mut bob).await;
    }
}
