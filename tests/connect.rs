//! `/connect` and the connect and establish callbacks, against a real fake app.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use http::Method;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn connect_callback_gets_method_query_body_and_filtered_headers() {
    let app = FakeApp::start().await;
    let kb = Kb::with_app(&app, "proxy_set_header:\n  X-Set: fixed\n  Cookie: \"\"\n").await;
    let mut ws = kb
        .try_connect(
            "/connect?session=alice&a=1&b=x%20y",
            &[
                ("X-Custom", "one"),
                ("Cookie", "sid=secret"),
                ("X-Kuiperbelt-Endpoint", "spoofed"),
                ("Authorization", "Bearer t"),
            ],
        )
        .await
        .unwrap();
    let req = app.next("/connect").await;
    assert_eq!(req.method, Method::GET);
    assert_eq!(req.query.as_deref(), Some("session=alice&a=1&b=x%20y"));
    assert_eq!(req.header("x-custom"), Some("one"));
    assert_eq!(req.header("authorization"), Some("Bearer t"));
    assert_eq!(req.header("x-set"), Some("fixed"), "proxy_set_header sets");
    assert_eq!(
        req.header("cookie"),
        None,
        "empty proxy_set_header value removes"
    );
    for h in [
        "connection",
        "upgrade",
        "sec-websocket-key",
        "sec-websocket-version",
    ] {
        assert!(req.header(h).is_none(), "{h} must not be forwarded");
    }
    let endpoint = req.header_all("x-kuiperbelt-endpoint");
    assert_eq!(endpoint.len(), 1, "client-supplied endpoint is replaced");
    assert_ne!(endpoint[0], "spoofed");
    assert!(req.body.is_empty());
    assert_silent(&mut ws, 100).await;
}

#[tokio::test]
async fn endpoint_header_is_configurable() {
    let app = FakeApp::start().await;
    let kb = Kb::with_app(&app, "endpoint: kb-1.example:9180\n").await;
    let _ws = kb.connect("a").await;
    assert_eq!(
        app.next("/connect").await.header("x-kuiperbelt-endpoint"),
        Some("kb-1.example:9180")
    );
}

#[tokio::test]
async fn configured_callback_query_is_merged_before_the_clients() {
    let app = FakeApp::start().await;
    let yaml = base_yaml(&app).replace("/connect\n", "/connect?from=kb&x=1\n");
    let kb = Kb::start(&yaml).await;
    app.respond(|_| Canned::session("s"));
    let _ws = kb.try_connect("/connect?user=bob", &[]).await.unwrap();
    assert_eq!(
        app.next("/connect").await.query.as_deref(),
        Some("from=kb&x=1&user=bob")
    );
}

#[tokio::test]
async fn refusal_passes_status_content_type_and_body_through() {
    let app = FakeApp::start().await;
    let kb = Kb::with_app(&app, "").await;
    app.respond(|_| {
        Canned::status(401)
            .header("Content-Type", "application/problem+json")
            .body(r#"{"why":"login"}"#)
    });
    let err = kb.try_connect("/connect", &[]).await.unwrap_err();
    let tokio_tungstenite::tungstenite::Error::Http(res) = err else {
        panic!("expected an HTTP refusal, got {err:?}")
    };
    assert_eq!(res.status(), 401);
    assert_eq!(res.headers()["content-type"], "application/problem+json");
    assert_eq!(res.body().as_deref(), Some(&br#"{"why":"login"}"#[..]));
    let stats = kb.stats().await;
    assert_eq!(stats["connect_errors"], 1);
    assert_eq!(stats["connections"], 0);
}

#[tokio::test]
async fn forbidden_is_not_a_connect_error() {
    let app = FakeApp::start().await;
    let kb = Kb::with_app(&app, "").await;
    let res = upgrade_request(&kb).await;
    assert_eq!(res.status, 403);
    assert_eq!(res.text(), "who are you?");
    assert_eq!(res.content_type(), "text/plain");
    assert_eq!(kb.stats().await["connect_errors"], 0);
}

#[tokio::test]
async fn redirect_is_passed_to_the_client_not_followed() {
    let app = FakeApp::start().await;
    let kb = Kb::with_app(&app, "").await;
    let target = app.url("/elsewhere");
    app.respond(move |_| Canned::status(302).header("Location", &target));
    let res = upgrade_request(&kb).await;
    assert_eq!(res.status, 302);
    assert!(app.seen("/elsewhere").is_empty());
}

#[tokio::test]
async fn callback_failure_is_502() {
    let app = FakeApp::start().await;
    // A port with nothing listening.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_url = format!("http://{}/connect", dead.local_addr().unwrap());
    drop(dead);
    let kb = Kb::start(&format!("callback:\n  connect: {dead_url}\n")).await;
    let res = upgrade_request(&kb).await;
    assert_eq!(res.status, 502);
    assert_eq!(res.content_type(), "application/json");
    assert_eq!(res.json()["result"], "NG");
    assert_eq!(kb.stats().await["connect_errors"], 1);
    drop(app);
}

#[tokio::test]
async fn callback_timeout_is_502() {
    let app = FakeApp::start().await;
    let yaml = format!(
        "callback:\n  connect: {}\n  timeout: 200ms\n",
        app.url("/connect")
    );
    let kb = Kb::start(&yaml).await;
    app.respond(|_| Canned::session("slow").delay(Duration::from_secs(3)));
    let started = std::time::Instant::now();
    let res = upgrade_request(&kb).await;
    assert_eq!(res.status, 502);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "timeout honoured"
    );
}

#[tokio::test]
async fn ok_without_session_header_is_400() {
    let app = FakeApp::start().await;
    let kb = Kb::with_app(&app, "").await;
    app.respond(|_| Canned::ok().body("hi"));
    let res = upgrade_request(&kb).await;
    assert_eq!(res.status, 400);
    assert_eq!(res.json()["result"], "NG");
    assert_eq!(kb.stats().await["connections"], 0);
}

#[tokio::test]
async fn callback_body_is_the_first_message_text_or_binary() {
    let app = FakeApp::start().await;
    let kb = Kb::with_app(&app, "").await;
    app.respond(|r| {
        let id = query_param(r.query.as_deref(), "session").unwrap();
        let c = Canned::session(&id);
        match id.as_str() {
            "text" => c
                .header("Content-Type", "text/plain")
                .body("Hello Kuiperbelt"),
            "bin" => c
                .header("Content-Type", "Application/Octet-Stream; x=y")
                .body(vec![0u8, 159, 146, 150]),
            _ => c,
        }
    });
    let mut t = kb.connect("text").await;
    assert_eq!(recv(&mut t).await, Message::text("Hello Kuiperbelt"));
    let mut b = kb.connect("bin").await;
    assert_eq!(
        recv(&mut b).await,
        Message::binary(vec![0u8, 159, 146, 150])
    );
    let mut e = kb.connect("empty").await;
    assert_silent(&mut e, 150).await;
}

#[tokio::test]
async fn origin_policy_is_checked_before_the_callback() {
    let app = FakeApp::start().await;
    let kb = Kb::with_app(&app, "origin_policy: same_origin\n").await;
    let host = kb.addr.to_string();
    let err = kb
        .try_connect("/connect?session=x", &[("Origin", "http://evil.example")])
        .await
        .unwrap_err();
    assert!(
        matches!(err, tokio_tungstenite::tungstenite::Error::Http(ref r) if r.status() == 403),
        "{err:?}"
    );
    assert!(
        app.seen("/connect").is_empty(),
        "the app never sees a refused origin"
    );
    let origin = format!("http://{host}");
    let _ws = kb
        .try_connect("/connect?session=y", &[("Origin", &origin)])
        .await
        .unwrap();

    let kb2 = Kb::with_app(&app, "origin_policy: same_hostname\n").await;
    let _ws = kb2
        .try_connect("/connect?session=z", &[("Origin", "https://127.0.0.1:1")])
        .await
        .unwrap();
    assert!(kb2
        .try_connect("/connect?session=w", &[("Origin", "http://localhost:1")])
        .await
        .is_err());
}

#[tokio::test]
async fn establish_callback_fires_after_upgrade() {
    let app = FakeApp::start().await;
    let kb = with_establish_callback(&app).await;
    let mut ws = kb.connect("est").await;
    let req = app.next("/establish").await;
    assert_eq!(req.method, Method::POST);
    assert_eq!(req.session(), Some("est"));
    assert!(req.header("x-kuiperbelt-endpoint").is_some());
    kb.push("/send", &["est"], "after establish").await;
    assert_eq!(recv_text(&mut ws).await, "after establish");
}

#[tokio::test]
async fn establish_failure_closes_and_counts_a_connect_error() {
    let app = FakeApp::start().await;
    let kb = with_establish_callback(&app).await;
    app.respond(|r| match r.path.as_str() {
        "/connect" => Canned::session("doomed"),
        "/establish" => Canned::status(500),
        _ => Canned::ok(),
    });
    let mut ws = kb.connect("doomed").await;
    assert_eq!(recv_close(&mut ws).await, Some(1011));
    kb.wait_connections(0).await;
    assert_eq!(kb.stats().await["connect_errors"], 1);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        app.seen("/close").is_empty(),
        "no close callback for a connection never established"
    );
}

#[tokio::test]
async fn plain_get_without_upgrade_is_refused_before_the_callback() {
    let app = FakeApp::start().await;
    let kb = Kb::with_app(&app, "").await;
    let res = kb.get("/connect?session=a").await;
    assert_eq!(res.status, 400);
    assert_eq!(res.json()["result"], "NG");
    assert!(app.seen("/connect").is_empty());
}

#[tokio::test]
async fn invalid_utf8_first_message_with_text_type_is_502() {
    let app = FakeApp::start().await;
    let kb = Kb::with_app(&app, "").await;
    app.respond(|_| {
        Canned::session("bad")
            .header("Content-Type", "text/plain")
            .body(vec![0xffu8, 0xfe])
    });
    let res = upgrade_request(&kb).await;
    assert_eq!(res.status, 502);
    assert_eq!(kb.stats().await["connections"], 0);
}

/// Kuiperbelt with the base config plus an establish callback to `/establish`.
async fn with_establish_callback(app: &FakeApp) -> Kb {
    let yaml = base_yaml(app).replace(
        "callback:\n",
        &format!("callback:\n  establish: {}\n", app.url("/establish")),
    );
    Kb::start(&yaml).await
}

/// A WebSocket upgrade request to `/connect` made with the plain HTTP
/// client, to read refusals whole.
async fn upgrade_request(kb: &Kb) -> HttpReply {
    http(
        Method::GET,
        &kb.url("/connect"),
        &ws_headers(),
        Bytes::new(),
    )
    .await
}

/// Headers of a WebSocket upgrade, for requests made with the plain HTTP client.
fn ws_headers() -> Vec<(&'static str, &'static str)> {
    vec![
        ("Connection", "Upgrade"),
        ("Upgrade", "websocket"),
        ("Sec-WebSocket-Version", "13"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ]
}
