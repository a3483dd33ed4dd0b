//! Zero-loss callbacks: a real app that goes away (port closed), then
//! answers 503, then comes back, while clients talk and some leave; what
//! they said reaches it in order, every close exactly once, behind one
//! gate; and what waits past `callback.retry_for` is dropped, counted and
//! logged, with memory bounded.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;

/// The app's mood: answering, or 503 to every receive and close.
const UP: u8 = 0;
const UNAVAILABLE: u8 = 1;

/// What the app accepted (answered 200): (session, sequence, body) of each
/// receive, and the session of each close with its reason.
#[derive(Default)]
struct Accepted {
    receives: Vec<(String, u64, String)>,
    closes: Vec<(String, String)>,
    /// Requests answered 503.
    refused: usize,
}

fn app_with_moods(app: &FakeApp) -> (Arc<AtomicU8>, Arc<Mutex<Accepted>>) {
    let mood = Arc::new(AtomicU8::new(UP));
    let accepted = Arc::new(Mutex::new(Accepted::default()));
    let (m, a) = (mood.clone(), accepted.clone());
    app.respond(move |r| {
        let session = r.session().unwrap_or_default().to_string();
        match r.path.as_str() {
            "/connect" => Canned::session(&query_param(r.query.as_deref(), "session").unwrap()),
            _ if m.load(Ordering::SeqCst) == UNAVAILABLE => {
                a.lock().unwrap().refused += 1;
                Canned::status(503)
            }
            "/receive" => {
                let seq = r.header("x-kuiperbelt-sequence").unwrap().parse().unwrap();
                let body = String::from_utf8(r.body.to_vec()).unwrap();
                a.lock().unwrap().receives.push((session, seq, body));
                Canned::ok()
            }
            "/close" => {
                let reason = r.header("x-kuiperbelt-close-reason").unwrap().to_string();
                a.lock().unwrap().closes.push((session, reason));
                Canned::ok()
            }
            _ => Canned::ok(),
        }
    });
    (mood, accepted)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_lost_while_the_app_goes_away_and_comes_back() {
    const CLIENTS: usize = 50;
    const LEAVING: usize = 10;
    const MESSAGES: usize = 40;
    const CONCURRENCY: usize = 8;
    let app = FakeApp::start().await;
    let (mood, accepted) = app_with_moods(&app);
    let kb = Kb::start(&base_yaml(&app).replace(
        "callback:\n",
        &format!("callback:\n  concurrency: {CONCURRENCY}\n"),
    ))
    .await;
    let mut clients = Vec::new();
    for i in 0..CLIENTS {
        clients.push(kb.connect(&format!("c{i}")).await);
    }
    let started = Instant::now();
    let at = |ms: u64| started + Duration::from_millis(ms);

    // Every client says MESSAGES lines, one every 75 ms (3 s in all); the
    // first LEAVING leave at 1.5 s, in the middle of the outage.
    let talkers: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(i, mut ws)| {
            tokio::spawn(async move {
                let leave_after = if i < LEAVING { MESSAGES / 2 } else { MESSAGES };
                for n in 0..leave_after {
                    tokio::time::sleep_until(
                        (started + Duration::from_millis(75 * n as u64)).into(),
                    )
                    .await;
                    send_text(&mut ws, &format!("c{i} line {n}")).await;
                }
                if i < LEAVING {
                    close(&mut ws).await;
                    while let Some(Ok(_)) = futures_util::StreamExt::next(&mut ws).await {}
                    None
                } else {
                    Some(ws)
                }
            })
        })
        .collect();

    // 0.4 s: the app goes away (connection refused).
    tokio::time::sleep_until(at(400).into()).await;
    app.down();
    // During the outage, pushes to every session still work.
    tokio::time::sleep_until(at(900).into()).await;
    let ids: Vec<String> = (LEAVING..CLIENTS).map(|i| format!("c{i}")).collect();
    let id_refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let res = kb.push("/send", &id_refs, "pushed during the outage").await;
    assert_eq!(res.text(), r#"{"result":"OK"}"#);
    // 1.4 s: it is back, answering 503 (still starting up).
    tokio::time::sleep_until(at(1400).into()).await;
    mood.store(UNAVAILABLE, Ordering::SeqCst);
    app.up().await;
    // 3.9 s: it answers.
    tokio::time::sleep_until(at(3900).into()).await;
    let refused_in_503_phase = accepted.lock().unwrap().refused;
    mood.store(UP, Ordering::SeqCst);

    let mut staying = Vec::new();
    for t in talkers {
        if let Some(ws) = t.await.unwrap() {
            staying.push(ws);
        }
    }
    for ws in &mut staying {
        assert_eq!(recv_text(ws).await, "pushed during the outage");
    }
    // Every line arrives (the gate's backoff tops out at 5 s).
    let expected = LEAVING * MESSAGES / 2 + (CLIENTS - LEAVING) * MESSAGES;
    let deadline = Instant::now() + Duration::from_secs(20);
    while accepted.lock().unwrap().receives.len() < expected {
        assert!(
            Instant::now() < deadline,
            "only {} of {expected} messages reached the app",
            accepted.lock().unwrap().receives.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Then the rest leave.
    for ws in &mut staying {
        close(ws).await;
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while accepted.lock().unwrap().closes.len() < CLIENTS {
        assert!(Instant::now() < deadline, "closes missing");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let metrics = kb.get("/metrics").await.text();

    let accepted = accepted.lock().unwrap();
    // In order per connection; a repeat only with a repeated sequence number.
    let mut per_session: HashMap<&str, Vec<(u64, &str)>> = HashMap::new();
    for (session, seq, body) in &accepted.receives {
        per_session.entry(session).or_default().push((*seq, body));
    }
    for i in 0..CLIENTS {
        let id = format!("c{i}");
        let got = per_session.remove(id.as_str()).unwrap_or_default();
        let sent = if i < LEAVING { MESSAGES / 2 } else { MESSAGES };
        let mut next = 1u64;
        for (seq, body) in got {
            if seq < next {
                continue; // a repeat: same number, the app can drop it
            }
            assert_eq!(seq, next, "{id}: out of order or missing");
            assert_eq!(body, format!("{id} line {}", seq - 1));
            next += 1;
        }
        assert_eq!(next - 1, sent as u64, "{id}: every line, once");
    }
    // Every close exactly once; the ones that left during the outage too.
    let mut closes: HashMap<&str, usize> = HashMap::new();
    for (session, reason) in &accepted.closes {
        assert_eq!(reason, "client");
        *closes.entry(session).or_default() += 1;
    }
    assert_eq!(closes.len(), CLIENTS);
    assert!(closes.values().all(|n| *n == 1), "{closes:?}");
    // One gate: while the app answered 503, a few probes (the backoff
    // reaches 0.8-1.6 s by then), not every session.
    assert!(
        (1..=8).contains(&refused_in_503_phase),
        "requests refused in 2.5 s of 503s: {refused_in_503_phase}"
    );
    let max = app.max_in_flight.load(Ordering::SeqCst);
    assert!(
        max <= CONCURRENCY + 1,
        "at most callback.concurrency in flight: {max}"
    );
    assert!(metrics.contains("kuiperbelt_app_up 1"), "{metrics}");
    assert!(
        metrics.contains("kuiperbelt_callback_pending_messages 0"),
        "{metrics}"
    );
    assert!(!metrics.contains("kuiperbelt_callback_retries_total{callback=\"receive\"} 0"));
    assert!(metrics
        .contains("kuiperbelt_callback_dropped_total{callback=\"receive\",reason=\"gave_up\"} 0"));
}

#[tokio::test]
async fn past_retry_for_messages_are_dropped_counted_and_logged() {
    let app = FakeApp::start().await;
    let (_mood, accepted) = app_with_moods(&app);
    let bin = Binary::start(&format!(
        "{}callback:\n  connect: {}\n  receive: {}\n  close: {}\n  retry_for: 1s\n  max_pending_bytes: 4096\n",
        "drain:\n  announce_delay: 0s\n  spread: 0s\n",
        app.url("/connect"),
        app.url("/receive"),
        app.url("/close"),
    ))
    .await;
    let base = format!("ws://127.0.0.1:{}", bin.port);
    let mut ws = connect_url(&base, "patient").await.unwrap();
    let rss = || -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", bin.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    };
    let metrics_url = bin.url("/metrics");
    let sample = |name: &'static str| metric(&metrics_url, name);
    let rss_before = rss();
    app.down();
    // 5 lines while the app is away; then 200 KiB more than the pending
    // bytes allow: the server stops reading this client instead of holding it.
    for n in 0..5 {
        send_text(&mut ws, &format!("lost {n}")).await;
    }
    let chunk = "x".repeat(1000);
    let writer = tokio::spawn(async move {
        for _ in 0..200 {
            if futures_util::SinkExt::send(
                &mut ws,
                tokio_tungstenite::tungstenite::Message::text(chunk.clone()),
            )
            .await
            .is_err()
            {
                break;
            }
        }
        ws
    });
    let mut peak_pending = 0f64;
    let until = Instant::now() + Duration::from_millis(2500);
    while Instant::now() < until {
        peak_pending = peak_pending.max(sample("kuiperbelt_callback_pending_bytes").await);
        assert_eq!(sample("kuiperbelt_app_up").await, 0.0);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        peak_pending <= 4096.0 + 1000.0,
        "pending bytes stay at the bound (one message over at most): {peak_pending}"
    );
    // Past retry_for, what waited was dropped: counted and logged.
    let dropped =
        sample("kuiperbelt_callback_dropped_total{callback=\"receive\",reason=\"gave_up\"}").await;
    assert!(dropped >= 5.0, "dropped {dropped}");
    let log = bin.stderr();
    assert!(
        log.contains("callback dropped") && log.contains("patient") && log.contains("receive"),
        "{log}"
    );
    assert!(
        rss().saturating_sub(rss_before) < 8 * 1024,
        "memory stayed flat: {} -> {} KiB",
        rss_before,
        rss()
    );
    // The app returns: the session still works, both ways.
    app.up().await;
    let mut ws = writer.await.unwrap();
    send_text(&mut ws, "after").await;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let got = accepted
            .lock()
            .unwrap()
            .receives
            .iter()
            .any(|(s, _, b)| s == "patient" && b == "after");
        if got {
            break;
        }
        assert!(Instant::now() < deadline, "the session never worked again");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let res = http(
        http::Method::POST,
        &bin.url("/send"),
        &[("X-Kuiperbelt-Session", "patient")],
        bytes::Bytes::from_static(b"still here"),
    )
    .await;
    assert_eq!(res.text(), r#"{"result":"OK"}"#);
    assert!(accepted
        .lock()
        .unwrap()
        .receives
        .iter()
        .all(|(_, _, b)| !b.starts_with("lost")));
}
