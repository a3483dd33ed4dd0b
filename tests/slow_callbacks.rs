//! Callbacks that never stall: against the real binary and a real app, one
//! slow answer costs that one request (given up at `callback.timeout`, or
//! retried on its own with `callback.retry_timeouts`), never its session's
//! next message or another session's; only signs that the app is away
//! (refused connections, a connect that times out, 429/502/503/504) close
//! the gate.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;

/// One receive the app got: session, `X-Kuiperbelt-Sequence`, body, when.
type Arrival = (String, u64, String, Instant);

/// The app: accepts every connect, records every receive as it arrives and
/// answers it as `answer` says (by body and how often that body came).
fn recording_app(
    app: &FakeApp,
    answer: impl Fn(&str, usize) -> Canned + Send + Sync + 'static,
) -> Arc<Mutex<Vec<Arrival>>> {
    let arrivals = Arc::new(Mutex::new(Vec::<Arrival>::new()));
    let seen = arrivals.clone();
    app.respond(move |r| match r.path.as_str() {
        "/connect" => Canned::session(&query_param(r.query.as_deref(), "session").unwrap()),
        "/receive" => {
            let body = String::from_utf8(r.body.to_vec()).unwrap();
            let sequence = r.header("x-kuiperbelt-sequence").unwrap().parse().unwrap();
            let mut seen = seen.lock().unwrap();
            let session = r.session().unwrap().to_string();
            seen.push((session, sequence, body.clone(), Instant::now()));
            let times = seen.iter().filter(|a| a.2 == body).count();
            answer(&body, times)
        }
        _ => Canned::ok(),
    });
    arrivals
}

fn yaml(app: &FakeApp, callback: &str) -> String {
    format!(
        "drain:\n  announce_delay: 0s\n  spread: 0s\ncallback:\n  connect: {}\n  receive: {}\n  close: {}\n{callback}",
        app.url("/connect"),
        app.url("/receive"),
        app.url("/close"),
    )
}

/// When `body` first reached the app, waiting up to 5 s for it.
async fn arrived(arrivals: &Mutex<Vec<Arrival>>, body: &str) -> Instant {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(a) = arrivals.lock().unwrap().iter().find(|a| a.2 == body) {
            return a.3;
        }
        assert!(Instant::now() < deadline, "{body:?} never reached the app");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A second client says a line every 100 ms, `lines` in all, while the
/// first is stuck; returns when each was sent.
async fn bystander(base: &str, lines: usize) -> Vec<(String, Instant)> {
    let mut ws = connect_url(base, "bystander").await.unwrap();
    let mut sent = Vec::new();
    for i in 0..lines {
        let line = format!("bystander {i}");
        send_text(&mut ws, &line).await;
        sent.push((line, Instant::now()));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    sent
}

/// What `slow_then_next` leaves running: the stuck client (kept open by
/// the caller), when it sent "next", and the bystander's task, which
/// returns when each of its lines was sent.
struct Scene {
    _stuck: Ws,
    sent_next: Instant,
    others: tokio::task::JoinHandle<Vec<(String, Instant)>>,
}

/// Client "stuck" says "slow", then "next", while a bystander says `lines`
/// lines.
async fn slow_then_next(bin: &Binary, lines: usize) -> Scene {
    let base = format!("ws://127.0.0.1:{}", bin.port);
    let mut ws = connect_url(&base, "stuck").await.unwrap();
    let others = tokio::spawn({
        let base = base.clone();
        async move { bystander(&base, lines).await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    send_text(&mut ws, "slow").await;
    send_text(&mut ws, "next").await;
    Scene {
        _stuck: ws,
        sent_next: Instant::now(),
        others,
    }
}

/// Each line the bystander sent reached the app within 0.5 s.
async fn assert_bystander_never_waited(arrivals: &Mutex<Vec<Arrival>>, sent: &[(String, Instant)]) {
    for (line, at) in sent {
        let late = arrived(arrivals, line).await.duration_since(*at);
        assert!(
            late <= Duration::from_millis(500),
            "{line:?} reached the app {late:?} after it was sent"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_out_message_is_given_up_once_and_nothing_waits_behind_it() {
    let app = FakeApp::start().await;
    let arrivals = recording_app(&app, |body, _| match body {
        "slow" => Canned::ok().delay(Duration::from_secs(4)),
        _ => Canned::ok(),
    });
    let bin = Binary::start(&yaml(&app, "  timeout: 500ms\n")).await;
    let scene = slow_then_next(&bin, 15).await;

    // The session's next message follows once the timeout has passed.
    let late = arrived(&arrivals, "next")
        .await
        .duration_since(scene.sent_next);
    assert!(
        late <= Duration::from_millis(1000),
        "the next message reached the app {late:?} after it was sent"
    );
    // Nobody else waited for it.
    assert_bystander_never_waited(&arrivals, &scene.others.await.unwrap()).await;
    // The slow one was posted once: a timeout is the app's answer.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let arrivals = arrivals.lock().unwrap().clone();
    let slow: Vec<_> = arrivals.iter().filter(|a| a.2 == "slow").collect();
    assert_eq!(slow.len(), 1, "posted once: {slow:?}");
    let next = arrivals.iter().find(|a| a.2 == "next").unwrap();
    assert_eq!((slow[0].1, next.1), (1, 2), "sequence numbers");

    let metrics = bin.url("/metrics");
    let timeout = "kuiperbelt_callback_dropped_total{callback=\"receive\",reason=\"timeout\"}";
    assert_eq!(metric(&metrics, timeout).await, 1.0);
    assert_eq!(metric(&metrics, "kuiperbelt_app_up").await, 1.0);
    let log = bin.stderr();
    let line = log
        .lines()
        .find(|l| l.contains("callback given up"))
        .unwrap_or_else(|| panic!("no warning for the timed-out message:\n{log}"));
    assert!(
        line.contains("WARN") && line.contains("stuck") && line.contains("sequence=1"),
        "{line}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_retry_timeouts_the_slow_message_is_retried_alone_with_its_sequence() {
    let app = FakeApp::start().await;
    // The first two tries of "slow" outlast the timeout; the third is quick.
    let arrivals = recording_app(&app, |body, times| match body {
        "slow" if times <= 2 => Canned::ok().delay(Duration::from_secs(1)),
        _ => Canned::ok(),
    });
    let bin = Binary::start(&yaml(&app, "  timeout: 300ms\n  retry_timeouts: true\n")).await;
    let scene = slow_then_next(&bin, 12).await;
    let metrics = bin.url("/metrics");
    let mut gate_closed = false;
    let until = Instant::now() + Duration::from_millis(1200);
    while Instant::now() < until {
        gate_closed |= metric(&metrics, "kuiperbelt_app_up").await != 1.0;
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    arrived(&arrivals, "next").await;
    assert_bystander_never_waited(&arrivals, &scene.others.await.unwrap()).await;
    assert!(!gate_closed, "a timeout closed the gate");

    let arrivals = arrivals.lock().unwrap().clone();
    let stuck: Vec<_> = arrivals
        .iter()
        .filter(|a| a.0 == "stuck")
        .map(|a| (a.1, a.2.as_str()))
        .collect();
    // At least once, in order: the next message only after the slow one's
    // answered try.
    assert_eq!(
        stuck,
        [(1, "slow"), (1, "slow"), (1, "slow"), (2, "next")],
        "retried with its sequence number, in order"
    );
    let retries = "kuiperbelt_callback_retries_total{callback=\"receive\"}";
    assert_eq!(metric(&metrics, retries).await, 2.0);
    let timeout = "kuiperbelt_callback_dropped_total{callback=\"receive\",reason=\"timeout\"}";
    assert_eq!(metric(&metrics, timeout).await, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_signs_that_the_app_is_away_close_the_gate() {
    let app = FakeApp::start().await;
    let arrivals = recording_app(&app, |body, times| match body {
        "answered 500" => Canned::status(500),
        "answered 408" if times == 1 => Canned::status(408),
        "answered 503" if times <= 3 => Canned::status(503),
        _ => Canned::ok(),
    });
    let bin = Binary::start(&yaml(&app, "  timeout: 500ms\n")).await;
    let base = format!("ws://127.0.0.1:{}", bin.port);
    let metrics = bin.url("/metrics");
    let app_up = || metric(&metrics, "kuiperbelt_app_up");
    let mut ws = connect_url(&base, "talker").await.unwrap();

    // A 500 is the app's final word and a 408 is an answer: the gate stays
    // open and the next message follows at once.
    for line in ["answered 500", "answered 408"] {
        send_text(&mut ws, line).await;
        send_text(&mut ws, &format!("after {line}")).await;
        arrived(&arrivals, &format!("after {line}")).await;
    }
    let refused = "kuiperbelt_callback_dropped_total{callback=\"receive\",reason=\"refused\"}";
    assert_eq!(metric(&metrics, refused).await, 1.0);
    assert_eq!(
        arrivals
            .lock()
            .unwrap()
            .iter()
            .filter(|a| a.2 == "answered 408")
            .count(),
        2,
        "408 is retried"
    );
    assert_eq!(app_up().await, 1.0);

    // 503 closes it until the app answers again.
    send_text(&mut ws, "answered 503").await;
    let mut closed = false;
    let deadline = Instant::now() + Duration::from_secs(3);
    while !closed && Instant::now() < deadline {
        closed = app_up().await == 0.0;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(closed, "503 closes the gate");
    arrived(&arrivals, "answered 503").await;
    send_text(&mut ws, "after 503").await;
    arrived(&arrivals, "after 503").await;
    assert_eq!(app_up().await, 1.0, "the answer opened it again");

    // A refused connection closes it too; nothing is lost.
    app.down();
    send_text(&mut ws, "while away").await;
    let deadline = Instant::now() + Duration::from_secs(3);
    while app_up().await != 0.0 {
        assert!(
            Instant::now() < deadline,
            "a refused connection closes the gate"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    app.up().await;
    arrived(&arrivals, "while away").await;
}

#[tokio::test]
async fn a_connect_that_times_out_closes_the_gate() {
    // A port whose accept queue is full: the SYN of a further connect is
    // dropped, so connecting times out (nothing was sent).
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let full = socket.listen(0).unwrap();
    let blackhole = full.local_addr().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..2 {
        if let Ok(Ok(s)) = tokio::time::timeout(
            Duration::from_millis(300),
            tokio::net::TcpStream::connect(blackhole),
        )
        .await
        {
            fillers.push(s);
        }
    }
    let app = FakeApp::start().await;
    let bin = Binary::start(&format!(
        "callback:\n  connect: {}\n  receive: http://{blackhole}/receive\n  timeout: 300ms\n",
        app.url("/connect")
    ))
    .await;
    let mut ws = connect_url(&format!("ws://127.0.0.1:{}", bin.port), "caller")
        .await
        .unwrap();
    send_text(&mut ws, "hello?").await;
    let metrics = bin.url("/metrics");
    let deadline = Instant::now() + Duration::from_secs(3);
    while metric(&metrics, "kuiperbelt_app_up").await != 0.0 {
        assert!(
            Instant::now() < deadline,
            "a connect timeout closes the gate"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let timeout = "kuiperbelt_callback_dropped_total{callback=\"receive\",reason=\"timeout\"}";
    assert_eq!(
        metric(&metrics, timeout).await,
        0.0,
        "it is not a slow answer"
    );
    drop(fillers);
}
