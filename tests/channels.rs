//! Channels on one node, against the real binary, real WebSocket clients and
//! a real app: joining at connect and by API, pushing by channel alone and
//! beside ids (each session once), exclusion, order between id and channel
//! pushes, empty channels with and without `strict_broadcast`, the limits
//! and bad names, replacement, `/close` by channel, and what `/channels`,
//! `/sessions` and `/metrics` show.

mod common;

use bytes::Bytes;
use common::channels::*;
use common::*;
use http::{Method, StatusCode};
use serde_json::json;

async fn server(app: &FakeApp, extra: &str) -> Binary {
    answer_channels(app);
    Binary::start(&format!("{}{extra}", base_yaml(app))).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_pushes_reach_each_member_once() {
    let app = FakeApp::start().await;
    let kb = server(&app, "").await;
    let mut a = member(&kb, "a", "room1").await;
    let mut b = member(&kb, "b", "room1,room2").await;
    let mut c = member(&kb, "c", "room2").await;
    let mut d = member(&kb, "d", "").await;

    let res = post(&kb, "/send", &[(CH, "room1")], "to room1").await;
    assert_eq!(
        (res.status, res.json()),
        (StatusCode::OK, json!({"result":"OK"}))
    );
    assert_eq!(recv_text(&mut a).await, "to room1");
    assert_eq!(recv_text(&mut b).await, "to room1");

    // Two channels: b is in both, and gets it once.
    let res = post(&kb, "/send", &[(CH, "room1"), (CH, "room2")], "rooms").await;
    assert_eq!(res.json(), json!({"result":"OK"}));
    for ws in [&mut a, &mut b, &mut c] {
        assert_eq!(recv_text(ws).await, "rooms");
    }
    // Two channels and ids: b is in both and named, d is named; everyone once.
    let res = post(
        &kb,
        "/send",
        &[(CH, "room1"), (CH, "room2"), (SESSION, "d"), (SESSION, "b")],
        "all",
    )
    .await;
    assert_eq!(res.json(), json!({"result":"OK"}));
    for ws in [&mut a, &mut b, &mut c, &mut d] {
        assert_eq!(recv_text(ws).await, "all");
    }
    // The exclusion: b said it, the others hear it.
    let res = post(
        &kb,
        "/send",
        &[(CH, "room1, room2"), (EXCLUDE, "b")],
        "from b",
    )
    .await;
    assert_eq!(res.json(), json!({"result":"OK"}));
    assert_eq!(recv_text(&mut a).await, "from b");
    assert_eq!(recv_text(&mut c).await, "from b");
    // A session named twice gets it once.
    let res = post(&kb, "/send", &[(SESSION, "d"), (SESSION, "d")], "twice").await;
    assert_eq!(res.json(), json!({"result":"OK"}));
    assert_eq!(recv_text(&mut d).await, "twice");
    // A marker proves nothing else was on its way to anyone.
    let res = post(
        &kb,
        "/send",
        &[
            (SESSION, "a"),
            (SESSION, "b"),
            (SESSION, "c"),
            (SESSION, "d"),
        ],
        "end",
    )
    .await;
    assert_eq!(res.json(), json!({"result":"OK"}));
    for ws in [&mut a, &mut b, &mut c, &mut d] {
        assert_eq!(recv_text(ws).await, "end", "each got each message once");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_hears_its_first_message_before_any_channel_push() {
    let app = FakeApp::start().await;
    let kb = server(&app, "").await;
    let mut watcher = member(&kb, "w", "news").await;
    // Pushes run while clients connect; each new member's first message
    // (the connect answer's body) must come before any channel push.
    let base = kb.url("");
    let pusher = tokio::spawn(async move {
        for i in 0..200 {
            let res = http(
                Method::POST,
                &format!("{base}/send"),
                &[(CH, "news")],
                Bytes::from(format!("n{i}")),
            )
            .await;
            assert_eq!(res.status, StatusCode::OK);
        }
    });
    for i in 0..20 {
        let mut ws = member(&kb, &format!("m{i}&first=hello"), "news").await;
        assert_eq!(recv_text(&mut ws).await, "hello");
    }
    pusher.await.unwrap();
    assert_eq!(recv_text(&mut watcher).await, "n0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_and_leave_by_api_and_see_them() {
    let app = FakeApp::start().await;
    let kb = server(&app, "").await;
    let mut a = member(&kb, "a", "").await;
    let _b = member(&kb, "b", "lobby").await;

    let res = post(
        &kb,
        "/subscribe",
        &[(SESSION, "a"), (SESSION, "ghost"), (CH, "x,y")],
        "",
    )
    .await;
    assert_eq!(
        res.json(),
        json!({"errors":[{"error":"session is not found.","session":"ghost"}],"result":"OK"})
    );
    // Idempotent.
    let res = post(&kb, "/subscribe", &[(SESSION, "a"), (CH, "x")], "").await;
    assert_eq!(res.json(), json!({"result":"OK"}));
    let res = post(&kb, "/send", &[(CH, "x")], "to x").await;
    assert_eq!(res.json(), json!({"result":"OK"}));
    assert_eq!(recv_text(&mut a).await, "to x");

    let page = kb_get(&kb, "/channels").await;
    assert_eq!(
        page,
        json!({"channels":[
            {"channel":"lobby","members":1},
            {"channel":"x","members":1},
            {"channel":"y","members":1}],
            "next_after": null})
    );
    let page = kb_get(&kb, "/channels?limit=1&after=lobby").await;
    assert_eq!(
        page,
        json!({"channels":[{"channel":"x","members":1}],"next_after":"x"})
    );
    let page = kb_get(&kb, "/channels?prefix=l").await;
    assert_eq!(page["channels"], json!([{"channel":"lobby","members":1}]));
    let sessions = kb_get(&kb, "/sessions").await;
    assert_eq!(sessions["sessions"][0]["channels"], json!(["x", "y"]));
    assert_eq!(sessions["sessions"][1]["channels"], json!(["lobby"]));

    let res = post(
        &kb,
        "/unsubscribe",
        &[(SESSION, "a"), (CH, "x"), (CH, "nowhere")],
        "",
    )
    .await;
    assert_eq!(res.json(), json!({"result":"OK"}));
    let res = post(&kb, "/unsubscribe", &[(SESSION, "ghost"), (CH, "x")], "").await;
    assert_eq!(
        res.json(),
        json!({"errors":[{"error":"session is not found.","session":"ghost"}],"result":"NG"})
    );
    let res = post(&kb, "/send", &[(CH, "x")], "nobody").await;
    assert_eq!(
        res.json(),
        json!({"errors":[{"error":"channel has no sessions.","channel":"x"}],"result":"NG"})
    );
    assert_eq!(
        kb_get(&kb, "/sessions").await["sessions"][0]["channels"],
        json!(["y"])
    );
    assert_silent(&mut a, 200).await;

    // Bad requests.
    let res = post(&kb, "/subscribe", &[(SESSION, "a")], "").await;
    assert_eq!(res.status, StatusCode::BAD_REQUEST);
    assert!(
        res.text()
            .contains("X-Kuiperbelt-Channel header is missing"),
        "{}",
        res.text()
    );
    let res = post(&kb, "/subscribe", &[(CH, "x")], "").await;
    assert_eq!(res.status, StatusCode::BAD_REQUEST);
    let res = http(
        Method::GET,
        &kb.url("/subscribe"),
        &[(SESSION, "a"), (CH, "x")],
        Bytes::new(),
    )
    .await;
    assert_eq!(res.status, StatusCode::METHOD_NOT_ALLOWED);
}

async fn kb_get(kb: &Binary, path: &str) -> serde_json::Value {
    let res = http(Method::GET, &kb.url(path), &[], Bytes::new()).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text());
    res.json()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_channel_is_an_error_and_strict_sends_nothing() {
    let app = FakeApp::start().await;
    let kb = server(&app, "").await;
    let mut a = member(&kb, "a", "room").await;

    let res = post(&kb, "/send", &[(CH, "empty")], "x").await;
    assert_eq!(res.status, StatusCode::OK);
    assert_eq!(
        res.json(),
        json!({"errors":[{"error":"channel has no sessions.","channel":"empty"}],"result":"NG"})
    );
    // Beside a target that got it: OK, the channel still named.
    let res = post(&kb, "/send", &[(CH, "empty"), (CH, "room")], "one").await;
    assert_eq!(
        res.json(),
        json!({"errors":[{"error":"channel has no sessions.","channel":"empty"}],"result":"OK"})
    );
    assert_eq!(recv_text(&mut a).await, "one");
    // A channel whose only member is excluded is not an error.
    let res = post(&kb, "/send", &[(CH, "room"), (EXCLUDE, "a")], "not for a").await;
    assert_eq!(res.json(), json!({"result":"OK"}));
    assert_silent(&mut a, 200).await;
    drop(kb);

    let app = FakeApp::start().await;
    let kb = server(&app, "strict_broadcast: true\n").await;
    let mut a = member(&kb, "a", "room").await;
    for headers in [
        vec![(CH, "room"), (CH, "empty")],
        vec![(SESSION, "a"), (CH, "empty")],
    ] {
        let res = post(&kb, "/send", &headers, "never").await;
        assert_eq!(res.status, StatusCode::BAD_REQUEST);
        assert_eq!(
            res.json(),
            json!({"errors":[{"error":"channel has no sessions.","channel":"empty"}],"result":"NG"})
        );
    }
    let res = post(&kb, "/close", &[(CH, "empty"), (CH, "room")], "").await;
    assert_eq!(res.status, StatusCode::BAD_REQUEST);
    let res = post(&kb, "/send", &[(CH, "room")], "only this").await;
    assert_eq!(res.json(), json!({"result":"OK"}));
    assert_eq!(
        recv_text(&mut a).await,
        "only this",
        "nothing was sent before"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn id_and_channel_pushes_keep_their_order() {
    let app = FakeApp::start().await;
    let kb = server(&app, "send_queue_size: 1000\n").await;
    let mut a = member(&kb, "a", "room").await;
    let mut b = member(&kb, "b", "room").await;
    // a and b do not read while 300 pushes of 16 KiB alternate between a's
    // id and the channel: far more than their sockets take, so most wait
    // in their queues, and must come out as they were accepted.
    let pad = "p".repeat(16 * 1024);
    for i in 0..300 {
        let target = if i % 3 == 0 {
            (SESSION, "a")
        } else {
            (CH, "room")
        };
        let res = post(&kb, "/send", &[target], &format!("{i} {pad}")).await;
        assert_eq!(res.json(), json!({"result":"OK"}), "push {i}");
    }
    let number = |text: String| text.split(' ').next().unwrap().to_string();
    for i in 0..300 {
        assert_eq!(number(recv_text(&mut a).await), i.to_string());
    }
    for i in (0..300).filter(|i| i % 3 != 0) {
        assert_eq!(number(recv_text(&mut b).await), i.to_string());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_and_bad_names_are_refused_and_nothing_is_sent() {
    let app = FakeApp::start().await;
    let kb = server(&app, "channel:\n  max_per_session: 2\n").await;
    let mut a = member(&kb, "a", "x,y").await;
    let mut b = member(&kb, "b", "").await;

    // A join past the limit: an error for that session, the others proceed.
    let res = post(
        &kb,
        "/subscribe",
        &[(SESSION, "a"), (SESSION, "b"), (CH, "z")],
        "",
    )
    .await;
    assert_eq!(
        res.json(),
        json!({"errors":[{"error":"too many channels.","session":"a"}],"result":"OK"})
    );
    // All or nothing per session: b may take one more, not two.
    let res = post(&kb, "/subscribe", &[(SESSION, "b"), (CH, "x,y")], "").await;
    assert_eq!(
        res.json(),
        json!({"errors":[{"error":"too many channels.","session":"b"}],"result":"NG"})
    );
    assert_eq!(
        kb_get(&kb, "/sessions").await["sessions"][1]["channels"],
        json!(["z"])
    );
    // A connect answer past the limit is refused.
    let refused = connect_url(&ws_base(&kb), "c&ch=p,q,r").await;
    assert!(
        refused.is_err(),
        "a connect answer with 3 channels is refused"
    );

    let long = "n".repeat(201);
    let ok_long = "n".repeat(200);
    for bad in ["a b", "x,,y", "", "caf\u{e9}", long.as_str(), "tab\there"] {
        let res = post(&kb, "/send", &[(SESSION, "a"), (CH, bad)], "never").await;
        assert_eq!(res.status, StatusCode::BAD_REQUEST, "{bad:?}");
        let body = res.json();
        assert_eq!(body["result"], "NG");
        let text = body["errors"][0]["error"].as_str().unwrap();
        assert!(
            text.starts_with("bad X-Kuiperbelt-Channel header: "),
            "{text}"
        );
        let res = post(&kb, "/subscribe", &[(SESSION, "b"), (CH, bad)], "").await;
        assert_eq!(res.status, StatusCode::BAD_REQUEST, "{bad:?}");
    }
    let refused = connect_url(&ws_base(&kb), "c&ch=a,,b").await;
    assert!(
        refused.is_err(),
        "a bad name in the connect answer is refused"
    );
    let res = post(&kb, "/send", &[(CH, &ok_long)], "x").await;
    assert_eq!(res.json()["errors"][0]["error"], "channel has no sessions.");
    // Nothing of the refused pushes reached anyone.
    let res = post(&kb, "/send", &[(CH, "x"), (CH, "z")], "after").await;
    assert_eq!(res.json(), json!({"result":"OK"}));
    assert_eq!(recv_text(&mut a).await, "after");
    assert_eq!(recv_text(&mut b).await, "after");
    let bad_channels = metric(
        &kb.url("/metrics"),
        "kuiperbelt_connections_refused_total{reason=\"bad_channels\"}",
    )
    .await;
    assert_eq!(bad_channels, 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replacing_connection_brings_its_own_channels() {
    let app = FakeApp::start().await;
    let kb = server(&app, "").await;
    let mut old = member(&kb, "a", "x").await;
    let mut new = member(&kb, "a", "y").await;
    assert_eq!(recv_close(&mut old).await, Some(4001));
    let res = post(&kb, "/send", &[(CH, "x")], "old room").await;
    assert_eq!(res.json()["errors"][0]["error"], "channel has no sessions.");
    let res = post(&kb, "/send", &[(CH, "y")], "new room").await;
    assert_eq!(res.json(), json!({"result":"OK"}));
    assert_eq!(recv_text(&mut new).await, "new room");
    // The old connection's end does not take the new one out.
    drop(old);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(
        kb_get(&kb, "/channels").await["channels"],
        json!([{"channel":"y","members":1}])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_by_channel_and_the_metrics() {
    let app = FakeApp::start().await;
    let kb = server(&app, "").await;
    let mut a = member(&kb, "a", "room,other").await;
    let mut b = member(&kb, "b", "room").await;
    let mut c = member(&kb, "c", "other").await;
    let m = |name: &'static str| {
        let url = kb.url("/metrics");
        async move { metric(&url, name).await }
    };
    assert_eq!(m("kuiperbelt_channels").await, 2.0);
    assert_eq!(m("kuiperbelt_channel_members").await, 4.0);

    let res = post(&kb, "/close", &[(CH, "room"), (EXCLUDE, "b")], "bye").await;
    assert_eq!(res.json(), json!({"result":"OK"}));
    assert_eq!(recv_text(&mut a).await, "bye");
    assert_eq!(recv_close(&mut a).await, Some(1000));
    assert_eq!(m("kuiperbelt_channels").await, 2.0);
    assert_eq!(
        m("kuiperbelt_channel_members").await,
        2.0,
        "a left both at once"
    );
    let res = post(&kb, "/send", &[(CH, "other")], "still here").await;
    assert_eq!(res.json(), json!({"result":"OK"}));
    assert_eq!(recv_text(&mut c).await, "still here");
    assert_silent(&mut b, 100).await;

    let _ = post(&kb, "/send", &[(CH, "gone")], "x").await;
    assert_eq!(
        m("kuiperbelt_channel_pushes_total{outcome=\"no_sessions\"}").await,
        1.0
    );
    assert_eq!(
        m("kuiperbelt_channel_pushes_total{outcome=\"delivered\"}").await,
        2.0
    );
    close(&mut b).await;
    close(&mut c).await;
    for _ in 0..100 {
        if m("kuiperbelt_channels").await == 0.0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(m("kuiperbelt_channels").await, 0.0);
    assert_eq!(m("kuiperbelt_channel_members").await, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_an_establish_callback_a_member_joins_once_it_answers() {
    let app = FakeApp::start().await;
    app.respond(|r| match r.path.as_str() {
        "/connect" => Canned::session("late").header(CH, "room").body("first"),
        "/establish" => Canned::ok().delay(std::time::Duration::from_millis(700)),
        _ => Canned::ok(),
    });
    let kb = Binary::start(&format!(
        "{}  establish: {}\n",
        base_yaml(&app),
        app.url("/establish")
    ))
    .await;
    let mut ws = connect_url(&ws_base(&kb), "late").await.unwrap();
    // Not yet a member while the establish callback has not answered.
    let res = post(&kb, "/send", &[(CH, "room")], "too early").await;
    assert_eq!(res.json()["errors"][0]["error"], "channel has no sessions.");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let res = post(&kb, "/send", &[(CH, "room")], "in time").await;
        if res.json() == json!({"result":"OK"}) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never joined: {}",
            res.text()
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(recv_text(&mut ws).await, "first");
    assert_eq!(recv_text(&mut ws).await, "in time");
}
