//! Operations: Prometheus metrics (checked by promtool and scraped by a real
//! Prometheus), health endpoints, the API listener and its token, JSON logs,
//! and the staged drain under real SIGTERM with hundreds of clients.

mod common;

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use futures_util::StreamExt;
use http::Method;
use tokio_tungstenite::tungstenite::Message;

fn require(tool: &str) -> String {
    let path = format!("/usr/bin/{tool}");
    assert!(
        std::path::Path::new(&path).exists(),
        "{tool} is not installed: run `bash .ci/install.sh` (Debian package prometheus)"
    );
    path
}

#[tokio::test]
async fn metrics_pass_promtool_and_stats_prometheus_is_the_same() {
    let app = FakeApp::start().await;
    let kb = Kb::with_app(&app, "").await;
    let mut ws = kb.connect("m").await;
    kb.push("/send", &["m", "nobody"], "hello").await;
    recv_text(&mut ws).await;
    send_text(&mut ws, "up").await;
    app.next("/receive").await;
    let metrics = kb.get("/metrics").await;
    assert_eq!(metrics.status, 200);
    assert!(metrics
        .content_type()
        .starts_with("text/plain; version=0.0.4"));
    let text = metrics.text();
    for line in [
        "kuiperbelt_connections 1",
        "kuiperbelt_connections_accepted_total 1",
        "kuiperbelt_messages_pushed_total 1",
        "kuiperbelt_messages_delivered_total 1",
        "kuiperbelt_message_errors_total{reason=\"not_found\"} 1",
        "kuiperbelt_client_messages_total 1",
        "kuiperbelt_received_bytes_total 2",
        "kuiperbelt_sent_bytes_total 5",
        "kuiperbelt_callback_requests_total{callback=\"connect\",class=\"2xx\"} 1",
        "kuiperbelt_callback_duration_seconds_count{callback=\"receive\"} 1",
        "kuiperbelt_draining 0",
    ] {
        assert!(text.contains(line), "missing {line:?} in\n{text}");
    }
    let promtool = require("promtool");
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool: {said}"
    );

    let via_stats = kb.get("/stats?format=prometheus").await;
    assert_eq!(via_stats.content_type(), metrics.content_type());
    let names = |t: &str| -> Vec<String> {
        t.lines()
            .filter(|l| l.starts_with("# TYPE"))
            .map(str::to_string)
            .collect()
    };
    assert_eq!(names(&via_stats.text()), names(&text));
}

#[tokio::test]
async fn a_real_prometheus_scrapes_the_live_connection_count() {
    let prometheus = require("prometheus");
    let app = FakeApp::start().await;
    let kb = Kb::with_app(&app, "").await;
    let mut clients = Vec::new();
    for i in 0..3 {
        clients.push(kb.connect(&format!("p{i}")).await);
    }
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: kuiperbelt\n    static_configs:\n      - targets: ['{}']\n",
            kb.addr
        ),
    )
    .unwrap();
    let port = free_port();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _server = Kill(
        Command::new(prometheus)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let query = |expected: &'static str| async move {
        let deadline = Instant::now() + Duration::from_secs(60);
        while prometheus_value(port, "kuiperbelt_connections")
            .await
            .as_deref()
            != Some(expected)
        {
            assert!(
                Instant::now() < deadline,
                "Prometheus never reported {expected}"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    };
    query("3").await;
    close(&mut clients[0]).await;
    kb.wait_connections(2).await;
    query("2").await;
}

/// The current value of `metric` through Prometheus' HTTP query API.
async fn prometheus_value(port: u16, metric: &str) -> Option<String> {
    let url = format!("http://127.0.0.1:{port}/api/v1/query?query={metric}");
    let req = http::Request::get(&url)
        .body(http_body_util::Full::new(Bytes::new()))
        .ok()?;
    let res = tokio::time::timeout(Duration::from_secs(2), client().request(req))
        .await
        .ok()?
        .ok()?;
    use http_body_util::BodyExt;
    let body = res.into_body().collect().await.ok()?.to_bytes();
    let json: serde_json::Value = serde_json::from_slice(&body).ok()?;
    json["data"]["result"][0]["value"][1]
        .as_str()
        .map(str::to_string)
}

#[tokio::test]
async fn health_and_readiness() {
    let app = FakeApp::start().await;
    let kb = Kb::with_app(&app, "").await;
    let healthz = kb.get("/healthz").await;
    assert_eq!(
        (healthz.status.as_u16(), healthz.text().as_str()),
        (200, r#"{"result":"OK"}"#)
    );
    assert_eq!(kb.get("/readyz").await.status, 200);
    let drained = http(Method::POST, &kb.url("/drain"), &[], Bytes::new()).await;
    assert_eq!(drained.status, 200);
    let ready = kb.get("/readyz").await;
    assert_eq!(ready.status, 503);
    assert_eq!(ready.json()["result"], "NG");
    // Liveness never depends on draining or the app.
    assert_eq!(kb.get("/healthz").await.status, 200);
    assert_eq!(kb.get("/ping").await.status, 200);
    // After the drain, new upgrades get 503.
    let err = kb
        .try_connect("/connect?session=late", &[])
        .await
        .unwrap_err();
    assert!(
        matches!(err, tokio_tungstenite::tungstenite::Error::Http(ref r) if r.status() == 503),
        "{err:?}"
    );
}

#[tokio::test]
async fn drain_endpoint_is_idempotent_and_answers_when_done() {
    let app = FakeApp::start().await;
    let kb = Kb::with_app(&app, "drain:\n  announce_delay: 300ms\n  spread: 300ms\n").await;
    let mut ws = kb.connect("d").await;
    let started = Instant::now();
    let url = kb.url("/drain");
    let (a, b) = tokio::join!(
        http(Method::POST, &url, &[], Bytes::new()),
        http(Method::GET, &url, &[], Bytes::new()),
    );
    assert_eq!((a.status.as_u16(), b.status.as_u16()), (200, 200));
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "answers after the drain, not before"
    );
    assert_eq!(recv_close(&mut ws).await, Some(1001));
    assert_eq!(app.next("/close").await.session(), Some("d"));
    let again = http(Method::POST, &kb.url("/drain"), &[], Bytes::new()).await;
    assert_eq!(again.status, 200);
}

#[tokio::test]
async fn api_listener_takes_the_push_api_off_the_public_port() {
    let app = FakeApp::start().await;
    let api_port = free_port();
    let metrics_port = free_port();
    let kb = Kb::with_app(
        &app,
        &format!("api:\n  listen: 127.0.0.1:{api_port}\n  token: s3cret\nmetrics:\n  listen: 127.0.0.1:{metrics_port}\n"),
    )
    .await;
    let api = |p: &str| format!("http://127.0.0.1:{api_port}{p}");
    let mut ws = kb.connect("a").await;
    // Public port: connect, ping and health only.
    for path in ["/send", "/close", "/stats", "/metrics", "/drain"] {
        let res = http(
            Method::POST,
            &kb.url(path),
            &[
                ("X-Kuiperbelt-Session", "a"),
                ("Authorization", "Bearer s3cret"),
            ],
            Bytes::new(),
        )
        .await;
        assert_eq!(res.status, 404, "{path} must not be on the public port");
    }
    for path in ["/ping", "/healthz", "/readyz"] {
        assert_eq!(kb.get(path).await.status, 200);
    }
    // API port: token required.
    for auth in [
        None,
        Some("Bearer wrong"),
        Some("s3cret"),
        Some("Basic s3cret"),
    ] {
        let mut headers = vec![("X-Kuiperbelt-Session", "a")];
        if let Some(a) = auth {
            headers.push(("Authorization", a));
        }
        let res = http(Method::POST, &api("/send"), &headers, Bytes::from("x")).await;
        assert_eq!(res.status, 401, "{auth:?}");
        assert_eq!(res.json()["result"], "NG");
        assert_eq!(res.headers["www-authenticate"], "Bearer");
    }
    let res = http(
        Method::POST,
        &api("/send"),
        &[
            ("X-Kuiperbelt-Session", "a"),
            ("Authorization", "Bearer s3cret"),
        ],
        Bytes::from("via api"),
    )
    .await;
    assert_eq!(res.text(), r#"{"result":"OK"}"#);
    assert_eq!(recv_text(&mut ws).await, "via api");
    let stats = http(
        Method::GET,
        &api("/stats"),
        &[("Authorization", "Bearer s3cret")],
        Bytes::new(),
    )
    .await;
    assert_eq!(stats.json()["connections"], 1);
    assert_eq!(
        http(Method::GET, &api("/metrics"), &[], Bytes::new())
            .await
            .status,
        401
    );
    // The metrics listener: /metrics only, no token.
    let m = http(
        Method::GET,
        &format!("http://127.0.0.1:{metrics_port}/metrics"),
        &[],
        Bytes::new(),
    )
    .await;
    assert!(m.text().contains("kuiperbelt_connections 1"));
    let other = http(
        Method::GET,
        &format!("http://127.0.0.1:{metrics_port}/stats"),
        &[],
        Bytes::new(),
    )
    .await;
    assert_eq!(other.status, 404);
}

#[tokio::test]
async fn token_protects_the_single_port_api_too() {
    let app = FakeApp::start().await;
    let kb = Kb::with_app(&app, "api:\n  token: t0k\n").await;
    let _ws = kb.connect("a").await;
    assert_eq!(kb.push("/send", &["a"], "x").await.status, 401);
    assert_eq!(kb.get("/stats").await.status, 401);
    let ok = http(
        Method::POST,
        &kb.url("/send"),
        &[
            ("X-Kuiperbelt-Session", "a"),
            ("Authorization", "Bearer t0k"),
        ],
        Bytes::from("x"),
    )
    .await;
    assert_eq!(ok.status, 200);
    // Client-facing endpoints need no token.
    assert_eq!(kb.get("/ping").await.status, 200);
}

#[tokio::test]
async fn json_access_log_lines_for_requests_and_session_ends() {
    let app = FakeApp::start().await;
    let mut bin = Binary::start(&format!("{}log:\n  format: json\n", base_yaml(&app))).await;
    let base = format!("ws://127.0.0.1:{}", bin.port);
    let mut ws = connect_url(&base, "logged").await.unwrap();
    http(Method::GET, &bin.url("/ping"), &[], Bytes::new()).await;
    close(&mut ws).await;
    app.next("/close").await;
    bin.signal("TERM");
    assert_eq!(bin.wait().await, Some(0));
    let lines: Vec<serde_json::Value> = bin
        .stderr()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(lines
        .iter()
        .any(|l| l["path"] == "/ping" && l["status"] == 200 && l["method"] == "GET"));
    let end = lines
        .iter()
        .find(|l| l["session"] == "logged" && l["message"] == "session closed")
        .expect("a session-end line");
    assert_eq!(end["close_code"], 1000);
    assert_eq!(end["reason"], "client");
    assert_eq!(
        end["level"], "INFO",
        "a normal client close is not an error"
    );
}

#[tokio::test]
async fn suppress_access_log_silences_access_lines() {
    let app = FakeApp::start().await;
    let mut bin = Binary::start(&format!(
        "{}suppress_access_log: true\nlog:\n  format: json\n",
        base_yaml(&app)
    ))
    .await;
    http(Method::GET, &bin.url("/ping"), &[], Bytes::new()).await;
    bin.signal("TERM");
    assert_eq!(bin.wait().await, Some(0));
    let log = bin.stderr();
    assert!(!log.contains("\"/ping\""), "{log}");
    assert!(log.contains("listening"), "other logs remain: {log}");
}

/// Per pushed message, the sessions `/send` accepted it for.
type AcceptedLog = Arc<Mutex<Vec<(String, Vec<String>)>>>;

/// What one drained client saw.
#[derive(Default, Debug)]
struct Seen {
    messages: Vec<String>,
    close: Option<(u16, Instant)>,
}

#[tokio::test]
async fn sigterm_drains_hundreds_of_clients_in_order() {
    const N: usize = 300;
    let app = FakeApp::start().await;
    let mut bin = Binary::start(&format!(
        "callback:\n  connect: {}\n  close: {}\ndrain:\n  announce_delay: 1s\n  spread: 2s\n  timeout: 20s\n  callback_concurrency: 8\nsend_queue_size: 64\n",
        app.url("/connect"),
        app.url("/close")
    ))
    .await;
    let base = format!("ws://127.0.0.1:{}", bin.port);
    let seen: Arc<Mutex<HashMap<String, Seen>>> = Arc::default();
    let mut readers = Vec::new();
    for i in 0..N {
        let id = format!("c{i}");
        let mut ws = connect_url(&base, &id).await.unwrap();
        let seen = seen.clone();
        readers.push(tokio::spawn(async move {
            while let Some(Ok(msg)) = ws.next().await {
                let mut seen = seen.lock().unwrap();
                let entry = seen.entry(id.clone()).or_default();
                match msg {
                    Message::Text(t) => entry.messages.push(t.to_string()),
                    Message::Close(f) => {
                        entry.close =
                            Some((f.map(|f| u16::from(f.code)).unwrap_or(0), Instant::now()));
                        break;
                    }
                    _ => {}
                }
            }
        }));
    }
    let ids: Vec<String> = (0..N).map(|i| format!("c{i}")).collect();
    // A pusher that keeps broadcasting through the drain and records, per
    // message, which sessions /send accepted it for.
    let accepted: AcceptedLog = Arc::default();
    let pusher = {
        let (accepted, ids, url) = (accepted.clone(), ids.clone(), bin.url("/send"));
        tokio::spawn(async move {
            for k in 0.. {
                let body = format!("m{k}");
                let headers: Vec<(&str, &str)> = ids
                    .iter()
                    .map(|id| ("X-Kuiperbelt-Session", id.as_str()))
                    .collect();
                let res = tokio::time::timeout(
                    Duration::from_secs(2),
                    http(Method::POST, &url, &headers, Bytes::from(body.clone())),
                )
                .await;
                let Ok(res) = res else { break };
                let json = res.json();
                let missed: Vec<&str> = json["errors"]
                    .as_array()
                    .map(|a| a.iter().filter_map(|e| e["session"].as_str()).collect())
                    .unwrap_or_default();
                let got: Vec<String> = ids
                    .iter()
                    .filter(|id| !missed.contains(&id.as_str()))
                    .cloned()
                    .collect();
                if got.is_empty() {
                    break;
                }
                accepted.lock().unwrap().push((body, got));
                tokio::time::sleep(Duration::from_millis(40)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;

    let term_at = Instant::now();
    bin.signal("TERM");
    // 1. Readiness flips at once.
    let mut not_ready_at = None;
    while not_ready_at.is_none() {
        let r = http(Method::GET, &bin.url("/readyz"), &[], Bytes::new()).await;
        if r.status == 503 {
            not_ready_at = Some(Instant::now());
        }
        assert!(
            term_at.elapsed() < Duration::from_millis(900),
            "readyz did not flip during the announce delay"
        );
    }
    // 2. During the announce delay new connections are still accepted.
    let mut late = connect_url(&base, "late")
        .await
        .expect("accepted during the announce delay");
    // 3. After it, upgrades are refused with 503.
    tokio::time::sleep(Duration::from_millis(1100).saturating_sub(term_at.elapsed())).await;
    let refused = connect_url(&base, "too-late").await.unwrap_err();
    assert!(
        matches!(refused, tokio_tungstenite::tungstenite::Error::Http(ref r) if r.status() == 503),
        "{refused:?}"
    );

    // 6. Exit 0 once everything is closed and called back.
    assert_eq!(bin.wait().await, Some(0), "{}", bin.stderr());
    let _ = pusher.await;
    for r in readers {
        r.await.unwrap();
    }
    assert!(matches!(recv_close(&mut late).await, Some(1001)));

    let seen = seen.lock().unwrap();
    let accepted = accepted.lock().unwrap();
    assert!(accepted.len() >= 5, "the pusher ran through the drain");
    let mut close_times = Vec::new();
    for id in &ids {
        let s = seen.get(id).unwrap_or_else(|| panic!("{id} saw nothing"));
        let (code, at) = s.close.unwrap_or_else(|| panic!("{id} got no close frame"));
        // 4. Every session closes with 1001 ...
        assert_eq!(code, 1001, "{id}");
        close_times.push(at);
        // ... after every message /send accepted for it, in order.
        let expected: Vec<&String> = accepted
            .iter()
            .filter(|(_, got)| got.contains(id))
            .map(|(m, _)| m)
            .collect();
        let received: Vec<&String> = s.messages.iter().collect();
        assert_eq!(received, expected, "{id}");
    }
    // 4. ... spread over the window, not all at once.
    close_times.sort();
    let span = close_times[N - 1] - close_times[0];
    assert!(
        span >= Duration::from_millis(1200),
        "closes spread over {span:?}"
    );
    let first_close = close_times[0];
    let mut buckets = [0usize; 64];
    for t in &close_times {
        buckets[((*t - first_close).as_millis() / 100).min(63) as usize] += 1;
    }
    assert!(
        buckets.iter().all(|&b| b <= N / 4),
        "too many closes in one 100 ms: {buckets:?}"
    );
    assert!(
        first_close > not_ready_at.unwrap(),
        "readiness flips before any close"
    );
    // 5. Close callbacks for every drained session, the late one included.
    let closes = counts(&app.seen("/close"));
    for id in ids.iter().chain(std::iter::once(&"late".to_string())) {
        assert_eq!(closes.get(id), Some(&1), "close callback for {id}");
    }
}

#[tokio::test]
async fn every_metric_is_registered_and_zero_before_first_use() {
    let app = FakeApp::start().await;
    let kb = Kb::with_app(&app, "").await;
    let text = kb.get("/metrics").await.text();
    for family in [
        "kuiperbelt_callback_duration_seconds",
        "kuiperbelt_callback_requests_total",
        "kuiperbelt_client_messages_total",
        "kuiperbelt_connections",
        "kuiperbelt_connections_accepted_total",
        "kuiperbelt_connections_closing",
        "kuiperbelt_connections_refused_total",
        "kuiperbelt_drain_remaining_sessions",
        "kuiperbelt_draining",
        "kuiperbelt_message_errors_total",
        "kuiperbelt_messages_delivered_total",
        "kuiperbelt_messages_pushed_total",
        "kuiperbelt_received_bytes_total",
        "kuiperbelt_sent_bytes_total",
        "kuiperbelt_session_queue_depth",
        "kuiperbelt_sessions_closed_total",
    ] {
        let zero = text
            .lines()
            .any(|l| l.starts_with(family) && l.ends_with(" 0"));
        assert!(zero, "no {family} sample at 0 before first use in\n{text}");
    }
    // Each subsystem's labelled families, every label at 0.
    for sample in [
        "kuiperbelt_connections_refused_total{reason=\"origin\"} 0",
        "kuiperbelt_message_errors_total{reason=\"not_found\"} 0",
        "kuiperbelt_message_errors_total{reason=\"write_timeout\"} 0",
        "kuiperbelt_callback_requests_total{callback=\"receive\",class=\"2xx\"} 0",
        "kuiperbelt_callback_duration_seconds_count{callback=\"close\"} 0",
        "kuiperbelt_callback_dropped_total{callback=\"receive\",reason=\"timeout\"} 0",
        "kuiperbelt_callback_slot_waits_total 0",
        "kuiperbelt_sessions_closed_total{reason=\"drain\"} 0",
        "kuiperbelt_api_denied_total{reason=\"peer\"} 0",
        "kuiperbelt_cluster_connected 0",
        "kuiperbelt_cluster_errors_total{reason=\"timeout\"} 0",
    ] {
        assert!(text.contains(sample), "missing {sample} in\n{text}");
    }
    for name in ["process_open_fds ", "process_max_fds "] {
        assert!(text.contains(name), "missing {name} in\n{text}");
    }
    assert!(
        text.lines()
            .any(|l| l.starts_with("kuiperbelt_build_info{") && l.ends_with(" 1")),
        "build_info missing in\n{text}"
    );
}
