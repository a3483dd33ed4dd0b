//! Channels in cluster mode: two real `kuiperbelt` binaries on one real
//! `nats-server` (its monitoring port shows who subscribes to what). A
//! channel push reaches every member on every node once, exclusions and ids
//! included; a node subscribes to a channel's subject only while it holds a
//! member; membership of a session on another node changes through its
//! node; order between id and channel pushes holds across nodes; with NATS
//! down, local members still get it and the reply names the channel.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::channels::*;
use common::nats::Nats;
use common::*;
use http::{Method, StatusCode};
use serde_json::json;

/// Two nodes of one cluster, and the NATS server with its monitoring port.
struct Pair {
    nats: Nats,
    monitor: u16,
    one: Binary,
    two: Binary,
    _app: FakeApp,
}

impl Pair {
    async fn start() -> Pair {
        let monitor = free_port();
        let nats = Nats::start_with(free_port(), vec!["-m".into(), monitor.to_string()]).await;
        let app = FakeApp::start().await;
        answer_channels(&app);
        let yaml = format!(
            "{}cluster:\n  nats:\n    url: {}\n  subject_prefix: kb\n  request_timeout: 1s\n",
            base_yaml(&app),
            nats.url()
        );
        let one = Binary::start(&yaml).await;
        let two = Binary::start(&yaml).await;
        Pair {
            nats,
            monitor,
            one,
            two,
            _app: app,
        }
    }

    /// How many subscriptions NATS has on `subject` now.
    async fn subscriptions(&self, subject: &str) -> usize {
        let url = format!(
            "http://127.0.0.1:{}/subsz?subs=1&limit=100000",
            self.monitor
        );
        let Ok(res) = tokio::time::timeout(
            Duration::from_secs(2),
            http(Method::GET, &url, &[], Bytes::new()),
        )
        .await
        else {
            return usize::MAX;
        };
        let list = res.json()["subscriptions_list"].clone();
        list.as_array()
            .map(|subs| subs.iter().filter(|s| s["subject"] == subject).count())
            .unwrap_or(0)
    }

    /// Waits (15 s at most) until `nodes` nodes subscribe to `subject`.
    async fn wait_subscribed(&self, subject: &str, nodes: usize) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while self.subscriptions(subject).await != nodes {
            assert!(
                Instant::now() < deadline,
                "{subject}: expected {nodes} subscriptions, {} now",
                self.subscriptions(subject).await
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_pushes_reach_members_on_every_node_once() {
    let pair = Pair::start().await;
    let (one, two) = (&pair.one, &pair.two);
    let mut a = member(one, "a", "room,solo").await;
    let mut b = member(two, "b", "room").await;
    let mut c = member(two, "c", "room,side").await;
    pair.wait_subscribed("kb.c.room", 2).await;
    pair.wait_subscribed("kb.c.side", 1).await;

    let res = post(one, "/send", &[(CH, "room")], "to room").await;
    assert_eq!(res.json(), json!({"result":"OK"}));
    for ws in [&mut a, &mut b, &mut c] {
        assert_eq!(recv_text(ws).await, "to room");
    }
    // c is in both channels, b is also named: each once, on the other node too.
    let res = post(
        one,
        "/send",
        &[(CH, "room"), (CH, "side"), (SESSION, "b")],
        "both",
    )
    .await;
    assert_eq!(res.json(), json!({"result":"OK"}));
    for ws in [&mut a, &mut b, &mut c] {
        assert_eq!(recv_text(ws).await, "both");
    }
    // Exclusion on the other node.
    let res = post(one, "/send", &[(CH, "room"), (EXCLUDE, "c")], "not c").await;
    assert_eq!(res.json(), json!({"result":"OK"}));
    assert_eq!(recv_text(&mut a).await, "not c");
    assert_eq!(recv_text(&mut b).await, "not c");
    // A channel only this node has members of: delivered here, once (the
    // node never hears its own NATS copy).
    let res = post(one, "/send", &[(CH, "solo")], "solo").await;
    assert_eq!(res.json(), json!({"result":"OK"}));
    assert_eq!(recv_text(&mut a).await, "solo");
    // A channel only the other node has members of.
    let res = post(one, "/send", &[(CH, "side")], "side").await;
    assert_eq!(res.json(), json!({"result":"OK"}));
    assert_eq!(recv_text(&mut c).await, "side");
    // No member anywhere: NATS's no-responders.
    let res = post(one, "/send", &[(CH, "nobody")], "x").await;
    assert_eq!(
        res.json(),
        json!({"errors":[{"error":"channel has no sessions.","channel":"nobody"}],"result":"NG"})
    );
    let res = post(
        one,
        "/send",
        &[(SESSION, "a"), (SESSION, "b"), (SESSION, "c")],
        "end",
    )
    .await;
    assert_eq!(res.json(), json!({"result":"OK"}));
    for ws in [&mut a, &mut b, &mut c] {
        assert_eq!(recv_text(ws).await, "end", "nothing twice");
    }

    // Closing by channel from the other node.
    let res = post(one, "/close", &[(CH, "side")], "").await;
    assert_eq!(res.json(), json!({"result":"OK"}));
    assert_eq!(recv_close(&mut c).await, Some(1000));
    pair.wait_subscribed("kb.c.side", 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_follows_the_session_to_its_node_and_subscriptions_follow_members() {
    let pair = Pair::start().await;
    let (one, two) = (&pair.one, &pair.two);
    let mut b = member(two, "b", "lobby").await;
    pair.wait_subscribed("kb.c.lobby", 1).await;
    assert_eq!(pair.subscriptions("kb.c.game").await, 0);

    // b is held by node two; the app asks node one.
    let res = post(
        one,
        "/subscribe",
        &[(SESSION, "b"), (SESSION, "ghost"), (CH, "game")],
        "",
    )
    .await;
    assert_eq!(
        res.json(),
        json!({"errors":[{"error":"session is not found.","session":"ghost"}],"result":"OK"})
    );
    // Answered once node two's subscription is in place: a push right away
    // reaches b.
    let res = post(one, "/send", &[(CH, "game")], "move").await;
    assert_eq!(res.json(), json!({"result":"OK"}));
    assert_eq!(recv_text(&mut b).await, "move");

    // Order across nodes, alternating ids and the channel.
    for i in 0..60 {
        let target = if i % 2 == 0 {
            (SESSION, "b")
        } else {
            (CH, "game")
        };
        let res = post(one, "/send", &[target], &i.to_string()).await;
        assert_eq!(res.json(), json!({"result":"OK"}), "push {i}");
    }
    for i in 0..60 {
        assert_eq!(recv_text(&mut b).await, i.to_string());
    }

    let res = post(one, "/unsubscribe", &[(SESSION, "b"), (CH, "game")], "").await;
    assert_eq!(res.json(), json!({"result":"OK"}));
    pair.wait_subscribed("kb.c.game", 0).await;
    let res = post(one, "/send", &[(CH, "game")], "gone").await;
    assert_eq!(res.json()["errors"][0]["error"], "channel has no sessions.");

    // The last member leaving by disconnecting.
    close(&mut b).await;
    pair.wait_subscribed("kb.c.lobby", 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_nats_down_local_members_still_get_it_and_the_reply_says_so() {
    let mut pair = Pair::start().await;
    let mut a = member(&pair.one, "a", "room").await;
    let mut b = member(&pair.two, "b", "room").await;
    pair.wait_subscribed("kb.c.room", 2).await;

    pair.nats.stop();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let res = post(&pair.one, "/send", &[(CH, "room")], "while down").await;
    assert_eq!(res.status, StatusCode::OK);
    assert_eq!(
        res.json(),
        json!({"errors":[{"error":"cluster is unavailable.","channel":"room"}],"result":"OK"})
    );
    assert_eq!(recv_text(&mut a).await, "while down");
    // Nobody here, and NATS away: the channel cannot be said to be empty.
    let res = post(&pair.one, "/send", &[(CH, "elsewhere")], "x").await;
    assert_eq!(
        res.json(),
        json!({"errors":[{"error":"cluster is unavailable.","channel":"elsewhere"}],"result":"NG"})
    );

    pair.nats.restart().await;
    // Both nodes reconnect and subscribe again.
    pair.wait_subscribed("kb.c.room", 2).await;
    let res = post(&pair.one, "/send", &[(CH, "room"), (EXCLUDE, "a")], "back").await;
    assert_eq!(res.json(), json!({"result":"OK"}));
    assert_eq!(recv_text(&mut b).await, "back");
    assert_silent(&mut a, 100).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_does_not_read_holds_up_no_one_on_its_node() {
    let pair = Pair::start().await;
    // `stuck` never reads; `reader` does; both on node two.
    let _stuck = member(&pair.two, "stuck", "room").await;
    let mut reader = member(&pair.two, "reader", "room").await;
    pair.wait_subscribed("kb.c.room", 1).await;
    let big = "x".repeat(64 * 1024);
    for i in 0..120 {
        // Far more than the stuck client's socket buffers and queue of one.
        let body = format!("{i} {big}");
        let res = post(&pair.one, "/send", &[(CH, "room")], &body).await;
        assert_eq!(res.json(), json!({"result":"OK"}), "push {i}");
        let got = recv_text(&mut reader).await;
        assert!(
            got.starts_with(&format!("{i} ")),
            "push {i}: {}",
            &got[..10]
        );
    }
}
