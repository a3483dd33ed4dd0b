//! `POST /batch` against the real binary, real WebSocket clients and a real
//! app (and, for the cluster, two nodes on a real `nats-server`): payload
//! kinds, per-item replies and `strict_broadcast`, order within a batch and
//! after earlier pushes, every bad input (nothing sent), the limits, close
//! items, and the metrics.

mod common;

use bytes::Bytes;
use common::channels::*;
use common::nats::Nats;
use common::*;
use http::{Method, StatusCode};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

async fn server(app: &FakeApp, extra: &str) -> Binary {
    answer_channels(app);
    Binary::start(&format!("{}{extra}", base_yaml(app))).await
}

async fn batch(node: &Binary, body: impl Into<Bytes>) -> HttpReply {
    http(Method::POST, &node.url("/batch"), &[], body.into()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn items_are_sent_in_order_and_answered_one_by_one() {
    let app = FakeApp::start().await;
    let kb = server(&app, "").await;
    let mut a = member(&kb, "a", "room").await;
    let mut b = member(&kb, "b", "room").await;

    let res = post(&kb, "/send", &[(SESSION, "a")], "before").await;
    assert_eq!(res.json(), json!({"result":"OK"}));
    let res = batch(
        &kb,
        r#"[
          {"session":"a","message":"one"},
          {"session":["a","b"],"json":{"n":2, "s":"x"}},
          {"channel":"room","exclude":["a"],"binary":"AAEC"},
          {"session":"ghost","message":"nobody"},
          {"channel":"empty","message":"nobody"},
          {"session":"a","channel":"room","message":"last"}
        ]"#,
    )
    .await;
    assert_eq!(res.status, StatusCode::OK);
    assert_eq!(
        res.json(),
        json!({"result":"NG","results":[
            {"result":"OK"},
            {"result":"OK"},
            {"result":"OK"},
            {"errors":[{"error":"session is not found.","session":"ghost"}],"result":"NG"},
            {"errors":[{"error":"channel has no sessions.","channel":"empty"}],"result":"NG"},
            {"result":"OK"}
        ]})
    );
    for expected in ["before", "one", r#"{"n":2,"s":"x"}"#, "last"] {
        assert_eq!(recv_text(&mut a).await, expected);
    }
    assert_eq!(recv_text(&mut b).await, r#"{"n":2,"s":"x"}"#);
    assert_eq!(
        recv(&mut b).await,
        Message::Binary(Bytes::from_static(&[0, 1, 2]))
    );
    assert_eq!(recv_text(&mut b).await, "last");

    let res = batch(&kb, r#"[{"session":"a","message":"only"}]"#).await;
    assert_eq!(
        res.json(),
        json!({"result":"OK","results":[{"result":"OK"}]})
    );
    assert_eq!(recv_text(&mut a).await, "only");
    let m = |name: &str| {
        let (url, name) = (kb.url("/metrics"), name.to_string());
        async move { metric(&url, &name).await }
    };
    assert_eq!(
        m("kuiperbelt_batch_requests_total{result=\"accepted\"}").await,
        2.0
    );
    assert_eq!(m("kuiperbelt_batch_items_total").await, 7.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_broadcast_holds_back_an_item_not_the_batch() {
    let app = FakeApp::start().await;
    let kb = server(&app, "strict_broadcast: true\n").await;
    let mut a = member(&kb, "a", "").await;
    let res = batch(
        &kb,
        r#"[{"session":["a","ghost"],"message":"never"},{"session":"a","message":"sent"}]"#,
    )
    .await;
    assert_eq!(res.status, StatusCode::OK);
    assert_eq!(
        res.json(),
        json!({"result":"NG","results":[
            {"errors":[{"error":"session is not found.","session":"ghost"}],"result":"NG"},
            {"result":"OK"}
        ]})
    );
    assert_eq!(recv_text(&mut a).await, "sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_with_the_item_and_nothing_is_sent() {
    let app = FakeApp::start().await;
    let kb = server(
        &app,
        "max_message_size: 100\nbatch:\n  max_items: 3\n  max_bytes: 2000\n",
    )
    .await;
    let mut a = member(&kb, "a", "").await;
    let ok = r#"{"session":"a","message":"never"}"#;
    let long = "x".repeat(101);
    let cases: Vec<(String, StatusCode, &str)> = vec![
        (
            r#"{"session":"a","message":"x"}"#.into(),
            StatusCode::BAD_REQUEST,
            "a JSON array",
        ),
        ("not json".into(), StatusCode::BAD_REQUEST, "bad batch"),
        (
            format!(r#"[{ok},{{"message":"x"}}]"#),
            StatusCode::BAD_REQUEST,
            "item 1: no targets",
        ),
        (
            format!(r#"[{ok},{{"session":"a"}}]"#),
            StatusCode::BAD_REQUEST,
            "item 1: no payload",
        ),
        (
            format!(r#"[{ok},{{"session":"a","message":"x","binary":"AA=="}}]"#),
            StatusCode::BAD_REQUEST,
            "item 1: more than one payload",
        ),
        (
            format!(r#"[{ok},{{"session":"a","binary":"not base64!"}}]"#),
            StatusCode::BAD_REQUEST,
            "item 1: binary is not base64",
        ),
        (
            format!(r#"[{ok},{{"channel":"a b","message":"x"}}]"#),
            StatusCode::BAD_REQUEST,
            "item 1: bad channel",
        ),
        (
            format!(r#"[{ok},{{"session":"a","message":"\ud800"}}]"#),
            StatusCode::BAD_REQUEST,
            "item 1: ",
        ),
        (
            format!(r#"[{ok},{{"session":"a","massage":"x"}}]"#),
            StatusCode::BAD_REQUEST,
            "item 1: unknown field",
        ),
        (
            format!("[{ok},{ok},{ok},{ok}]"),
            StatusCode::BAD_REQUEST,
            "more than batch.max_items (3)",
        ),
        (
            format!(r#"[{ok},{{"session":"a","message":"{long}"}}]"#),
            StatusCode::PAYLOAD_TOO_LARGE,
            "item 1: payload of 101 bytes is larger than max_message_size",
        ),
        (
            format!("[{ok},{}]", [ok; 60].join(",")),
            StatusCode::PAYLOAD_TOO_LARGE,
            "larger than batch.max_bytes (2000 bytes)",
        ),
    ];
    for (body, status, text) in &cases {
        let res = batch(&kb, body.clone()).await;
        assert_eq!(res.status, *status, "{body}: {}", res.text());
        assert_eq!(res.json()["result"], "NG");
        let error = res.json()["errors"][0]["error"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(error.contains(text), "{body}: {error}");
    }
    // Text that is not UTF-8 inside a JSON string.
    let mut raw = br#"[{"session":"a","message":""#.to_vec();
    raw.extend_from_slice(&[0xff, 0xfe]);
    raw.extend_from_slice(br#""}]"#);
    let res = batch(&kb, raw).await;
    assert_eq!(res.status, StatusCode::BAD_REQUEST, "{}", res.text());
    let res = http(Method::GET, &kb.url("/batch"), &[], Bytes::new()).await;
    assert_eq!(res.status, StatusCode::METHOD_NOT_ALLOWED);
    // None of it reached the client.
    let res = post(&kb, "/send", &[(SESSION, "a")], "marker").await;
    assert_eq!(res.json(), json!({"result":"OK"}));
    assert_eq!(recv_text(&mut a).await, "marker");
    let refused = metric(
        &kb.url("/metrics"),
        "kuiperbelt_batch_requests_total{result=\"refused\"}",
    )
    .await;
    // Every refusal but the body over batch.max_bytes, which is answered
    // before it is read.
    assert_eq!(refused, cases.len() as f64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_items_close_after_their_last_message() {
    let app = FakeApp::start().await;
    let kb = server(&app, "").await;
    let mut a = member(&kb, "a", "").await;
    let mut b = member(&kb, "b", "room").await;
    let mut c = member(&kb, "c", "").await;
    let res = batch(
        &kb,
        r#"[{"session":"a","close":true,"message":"bye"},{"channel":"room","close":true},{"session":"c","message":"still here"}]"#,
    )
    .await;
    assert_eq!(
        res.json(),
        json!({"result":"OK","results":[{"result":"OK"},{"result":"OK"},{"result":"OK"}]})
    );
    assert_eq!(recv_text(&mut a).await, "bye");
    assert_eq!(recv_close(&mut a).await, Some(1000));
    assert_eq!(recv_close(&mut b).await, Some(1000));
    assert_eq!(recv_text(&mut c).await, "still here");
    let res = batch(&kb, r#"[{"session":"a","message":"gone"}]"#).await;
    assert_eq!(
        res.json()["results"][0],
        json!({"errors":[{"error":"session is not found.","session":"a"}],"result":"NG"})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn items_reach_sessions_and_channels_on_another_node() {
    let nats = Nats::start().await;
    let app = FakeApp::start().await;
    answer_channels(&app);
    let yaml = format!(
        "{}cluster:\n  nats:\n    url: {}\n  request_timeout: 1s\n",
        base_yaml(&app),
        nats.url()
    );
    let one = Binary::start(&yaml).await;
    let two = Binary::start(&yaml).await;
    let mut a = member(&one, "a", "room").await;
    let mut b = member(&two, "b", "room").await;
    // Node two's subscriptions are in place once a push by id reaches b.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while post(&one, "/send", &[(SESSION, "b")], "hello").await.json() != json!({"result":"OK"}) {
        assert!(
            std::time::Instant::now() < deadline,
            "node two never reachable"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(recv_text(&mut b).await, "hello");

    let res = batch(
        &one,
        r#"[{"session":"b","message":"x"},{"session":"ghost","message":"y"},{"channel":"room","message":"z"},{"session":["a","b"],"message":"w"}]"#,
    )
    .await;
    assert_eq!(
        res.json(),
        json!({"result":"NG","results":[
            {"result":"OK"},
            {"errors":[{"error":"session is not found.","session":"ghost"}],"result":"NG"},
            {"result":"OK"},
            {"result":"OK"}
        ]})
    );
    for expected in ["x", "z", "w"] {
        assert_eq!(recv_text(&mut b).await, expected);
    }
    for expected in ["z", "w"] {
        assert_eq!(recv_text(&mut a).await, expected);
    }
    // Many items for a session on the other node, and a channel item in
    // the middle: in item order.
    let mut items: Vec<serde_json::Value> = (0..100)
        .map(|i| json!({"session": "b", "message": i.to_string()}))
        .collect();
    items.insert(
        50,
        json!({"channel": "room", "exclude": ["a"], "message": "mid"}),
    );
    let res = batch(&one, serde_json::to_vec(&items).unwrap()).await;
    assert_eq!(res.json()["result"], "OK", "{}", res.text());
    for i in 0..100 {
        if i == 50 {
            assert_eq!(recv_text(&mut b).await, "mid");
        }
        assert_eq!(recv_text(&mut b).await, i.to_string());
    }
}
