//! Secure by default: without `api.listen` and `api.token`, `/drain` is
//! served to local peers only; the start-up warning when the push API is
//! open to the network; the token read from a file and re-read when it
//! changes or on SIGHUP.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http::Method;

const BIN: &str = env!("CARGO_BIN_EXE_kuiperbelt");
/// An address of this test's own network namespace that is not loopback.
const OUTSIDE: &str = "10.99.0.1";

/// Runs the binary with `extra` config on port 9180 inside a new network
/// namespace (its own `lo`, up, with `OUTSIDE` added), then `check` on a
/// runtime of that namespace's thread; returns the binary's log, or `None`
/// (after saying why) when namespaces are not allowed here.
fn against_server_in_netns<F, Fut>(extra: &'static str, check: F) -> Option<String>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    std::thread::spawn(move || {
        // SAFETY: unshare(2) with CLONE_NEWNET only changes this thread's
        // network namespace; no memory is involved.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
            eprintln!(
                "SKIPPED: cannot create a network namespace here ({}); run as root (CI does)",
                std::io::Error::last_os_error()
            );
            return None;
        }
        for args in [
            vec!["link", "set", "lo", "up"],
            vec!["addr", "add", "10.99.0.1/32", "dev", "lo"],
        ] {
            let status = Command::new("ip")
                .args(&args)
                .status()
                .expect("ip (iproute2) runs");
            assert!(status.success(), "ip {args:?}");
        }
        // Processes started from this thread live in its namespace.
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "port: 9180\n{extra}callback:\n  connect: http://127.0.0.1:1/connect\n\
                 drain:\n  announce_delay: 0s\n  spread: 0s\n  timeout: 5s\n"
            ),
        )
        .unwrap();
        let stderr = std::fs::File::create(dir.path().join("stderr.log")).unwrap();
        let mut child = Command::new(BIN)
            .arg(format!("-config={}", config.display()))
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap();
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async {
                assert!(wait_listening(9180, Duration::from_secs(5)).await);
                check().await;
            });
        let _ = child.kill();
        let _ = child.wait();
        Some(std::fs::read_to_string(dir.path().join("stderr.log")).unwrap())
    })
    .join()
    .expect("the namespaced test passes")
}

#[test]
fn drain_from_outside_the_pod_is_refused_without_a_token() {
    let log = against_server_in_netns("", || async {
        let outside = format!("http://{OUTSIDE}:9180");
        let inside = "http://127.0.0.1:9180";
        // From a non-loopback address: refused, counted, nothing drains.
        let res = http(Method::POST, &format!("{outside}/drain"), &[], Bytes::new()).await;
        assert_eq!(res.status, 403);
        assert_eq!(res.json()["result"], "NG");
        assert!(res.json()["errors"][0]["error"]
            .as_str()
            .unwrap()
            .contains("api.token"));
        let metrics = http(
            Method::GET,
            &format!("{outside}/metrics"),
            &[],
            Bytes::new(),
        )
        .await;
        assert!(
            metrics
                .text()
                .contains("kuiperbelt_api_denied_total{reason=\"peer\"} 1"),
            "{}",
            metrics.text()
        );
        let ready = http(Method::GET, &format!("{outside}/readyz"), &[], Bytes::new()).await;
        assert_eq!(ready.status, 200, "the refused drain did not start");
        // Information endpoints stay open, as in the Go server.
        let stats = http(Method::GET, &format!("{outside}/stats"), &[], Bytes::new()).await;
        assert_eq!(stats.status, 200);
        // From loopback (the pod's preStop hook): the drain runs.
        let res = http(Method::POST, &format!("{inside}/drain"), &[], Bytes::new()).await;
        assert_eq!(res.status, 200, "{}", res.text());
        let ready = http(Method::GET, &format!("{inside}/readyz"), &[], Bytes::new()).await;
        assert_eq!(ready.status, 503);
    });
    if let Some(log) = log {
        assert!(
            log.contains("refused /drain from outside the pod") && log.contains(OUTSIDE),
            "{log}"
        );
    }
}

#[test]
fn with_a_token_drain_from_outside_needs_only_the_token() {
    against_server_in_netns("api:\n  token: s3cret\n", || async {
        let url = format!("http://{OUTSIDE}:9180/drain");
        let res = http(Method::POST, &url, &[], Bytes::new()).await;
        assert_eq!(res.status, 401);
        let res = http(
            Method::POST,
            &url,
            &[("Authorization", "Bearer s3cret")],
            Bytes::new(),
        )
        .await;
        assert_eq!(res.status, 200, "{}", res.text());
    });
}

#[tokio::test]
async fn an_open_push_api_is_warned_about_once_at_start() {
    let app = FakeApp::start().await;
    let open = Binary::start(&base_yaml(&app)).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let log = open.stderr();
    let warning = "the push API (/send, /close) is reachable from the network without a token";
    assert_eq!(log.matches(warning).count(), 1, "{log}");
    assert!(
        log.contains("api.listen: 127.0.0.1:9181") && log.contains("api.token"),
        "{log}"
    );
    drop(open);
    let api_port = free_port();
    for closed in [
        format!("api:\n  listen: 127.0.0.1:{api_port}\n"),
        "api:\n  token: t\n".to_string(),
    ] {
        let bin = Binary::start(&format!("{}{closed}", base_yaml(&app))).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(
            !bin.stderr().contains(warning),
            "{closed}: {}",
            bin.stderr()
        );
    }
}

#[tokio::test]
async fn the_token_file_is_reread_when_it_changes_and_on_sighup() {
    let app = FakeApp::start().await;
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "first\n").unwrap();
    let bin = Binary::start(&format!(
        "{}api:\n  token_file: {}\n",
        base_yaml(&app),
        token.display()
    ))
    .await;
    let stats = |t: &'static str| {
        let url = bin.url("/stats");
        async move {
            http(Method::GET, &url, &[("Authorization", t)], Bytes::new())
                .await
                .status
        }
    };
    assert_eq!(stats("Bearer first").await, 200);
    assert_eq!(stats("Bearer second").await, 401);
    // A Kubernetes Secret update replaces the file: picked up within ~1 s.
    let fresh = dir.path().join("token.new");
    std::fs::write(&fresh, "second").unwrap();
    std::fs::rename(&fresh, &token).unwrap();
    let mut switched = false;
    for _ in 0..50 {
        if stats("Bearer second").await == 200 {
            switched = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        switched,
        "the new token was never accepted: {}",
        bin.stderr()
    );
    assert_eq!(stats("Bearer first").await, 401);
    // SIGHUP re-reads at once, even when the file's size and time look the
    // same (so the change watch cannot see it).
    let before = std::fs::metadata(&token).unwrap().modified().unwrap();
    let since = before.duration_since(std::time::UNIX_EPOCH).unwrap();
    std::fs::write(&token, "third!").unwrap();
    let touched = Command::new("touch")
        .args([
            "-m",
            "-d",
            &format!("@{}.{:09}", since.as_secs(), since.subsec_nanos()),
        ])
        .arg(&token)
        .status()
        .unwrap();
    assert!(touched.success());
    assert_eq!(
        std::fs::metadata(&token).unwrap().modified().unwrap(),
        before
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(stats("Bearer third!").await, 401, "unchanged to the watch");
    bin.signal("HUP");
    let mut switched = false;
    for _ in 0..20 {
        if stats("Bearer third!").await == 200 {
            switched = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(
        switched,
        "SIGHUP did not re-read the token: {}",
        bin.stderr()
    );
}

#[tokio::test]
async fn a_missing_token_file_stops_the_start() {
    let app = FakeApp::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yml");
    std::fs::write(
        &config,
        format!(
            "{}api:\n  token_file: /nonexistent/token\n",
            base_yaml(&app)
        ),
    )
    .unwrap();
    let out = Command::new(BIN)
        .arg(format!("-config={}", config.display()))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("api.token_file") && stderr.contains("/nonexistent/token"),
        "{stderr}"
    );
}
