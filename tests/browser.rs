//! The demo in a real browser: headless Chromium pages chat through
//! kuiperbelt, each line reaching the others in its room only (not the
//! speaker, not another room), a long line compressed both ways
//! (permessage-deflate), a nameless page is refused, and a closed
//! page's leave is announced; and the `/ui` status page, behind a token,
//! drawing live figures. Takes the README screenshots (`KUIPERBELT_UPDATE_SCREENSHOT=1`
//! writes `docs/demo.png` and `docs/ui.png`).

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";

struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_driver() -> Driver {
    for tool in [CHROMEDRIVER, CHROMIUM] {
        assert!(
            std::path::Path::new(tool).exists(),
            "{tool} is missing: run `bash .ci/install.sh` as root \
             (installs the Debian packages chromium and chromium-driver)"
        );
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver starts");
    assert!(
        common::wait_listening(port, Duration::from_secs(20)).await,
        "chromedriver did not listen"
    );
    Driver {
        child,
        url: format!("http://127.0.0.1:{port}"),
    }
}

/// A fresh headless Chromium with its own profile directory.
async fn browser(driver: &Driver, profile: &tempfile::TempDir) -> Client {
    let caps = serde_json::json!({
        "goog:chromeOptions": {
            "binary": CHROMIUM,
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--no-first-run", "--window-size=900,700",
                format!("--user-data-dir={}", profile.path().display()),
            ]
        }
    });
    let caps = caps.as_object().unwrap().clone();
    ClientBuilder::new(HttpConnector::new())
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .expect("a Chromium session")
}

/// Joins the default room.
async fn join(page: &Client, url: &str, name: &str) {
    join_room(page, url, name, "").await;
}

/// Joins `room` (the default one when empty).
async fn join_room(page: &Client, url: &str, name: &str, room: &str) {
    page.goto(url).await.unwrap();
    if !room.is_empty() {
        page.find(Locator::Id("room"))
            .await
            .unwrap()
            .send_keys(room)
            .await
            .unwrap();
    }
    fill_and_click(page, "name", name, "join-button").await;
}

async fn say(page: &Client, line: &str) {
    fill_and_click(page, "line", line, "send-button").await;
}

/// Types `text` into the `#field` input, then clicks `#button`.
async fn fill_and_click(page: &Client, field: &str, text: &str, button: &str) {
    page.find(Locator::Id(field))
        .await
        .unwrap()
        .send_keys(text)
        .await
        .unwrap();
    page.find(Locator::Id(button))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

/// Writes a screenshot of `page` to `docs/NAME` with
/// `KUIPERBELT_UPDATE_SCREENSHOT` set, else to the temporary directory.
async fn save_screenshot(page: &Client, name: &str) {
    let shot = page.screenshot().await.unwrap();
    assert!(shot.starts_with(b"\x89PNG"), "a PNG screenshot");
    let path = if std::env::var_os("KUIPERBELT_UPDATE_SCREENSHOT").is_some() {
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("docs")
            .join(name)
    } else {
        std::env::temp_dir().join(format!("kuiperbelt-{name}"))
    };
    std::fs::write(&path, shot).unwrap();
}

/// The lines of the page's chat log.
async fn log_lines(page: &Client) -> Vec<String> {
    let log = page.find(Locator::Id("log")).await.unwrap();
    log.text()
        .await
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

/// How many lines of the page's chat log are exactly `line`.
async fn count_line(page: &Client, line: &str) -> usize {
    log_lines(page).await.iter().filter(|l| *l == line).count()
}

/// Waits until the element's text contains `needle` (10 s at most).
async fn wait_text(page: &Client, id: &str, needle: &str) -> String {
    wait_until(page, id, needle, |text| text.contains(needle)).await
}

/// Waits until the element's text is exactly `expected` (10 s at most).
async fn wait_exact(page: &Client, id: &str, expected: &str) -> String {
    wait_until(page, id, expected, |text| text.trim() == expected).await
}

async fn wait_until(page: &Client, id: &str, want: &str, ok: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = page
            .find(Locator::Id(id))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if ok(&text) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "#{id} never showed {want:?}; it shows {text:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn two_pages_chat_through_kuiperbelt() {
    let driver = start_driver().await;
    let demo = kuiperbelt::demo::start(0).await.unwrap();
    let profiles: Vec<tempfile::TempDir> = (0..5).map(|_| tempfile::tempdir().unwrap()).collect();

    let alice = browser(&driver, &profiles[0]).await;
    let bob = browser(&driver, &profiles[1]).await;
    join(&alice, &demo.page_url, "alice").await;
    wait_text(&alice, "status", "Connected as alice").await;
    let join_form = alice.find(Locator::Id("join")).await.unwrap();
    assert!(
        !join_form.is_displayed().await.unwrap(),
        "the join form hides once connected"
    );
    wait_text(&alice, "log", "* welcome to lobby, alice").await;
    join(&bob, &demo.page_url, "bob").await;
    wait_text(&bob, "status", "Connected as bob").await;
    wait_text(&alice, "log", "* bob joined").await;

    // A line goes to the others in the room; the speaker's page shows its
    // own copy, so the app must not send it back: each speaker's line
    // appears once in its log even after the other's answer has arrived
    // (which the app pushed after the first line).
    say(&alice, "hello from alice").await;
    wait_text(&bob, "log", "alice: hello from alice").await;
    say(&bob, "hi alice").await;
    wait_text(&alice, "log", "bob: hi alice").await;
    wait_exact(&alice, "connections", "2").await;
    say(&alice, "see you").await;
    wait_text(&bob, "log", "alice: see you").await;
    let (alice_log, bob_log) = (log_lines(&alice).await, log_lines(&bob).await);
    let once = |log: &[String], line: &str| log.iter().filter(|l| *l == line).count() == 1;
    assert!(
        once(&alice_log, "alice: hello from alice") && once(&bob_log, "bob: hi alice"),
        "a speaker was sent its own line: alice {alice_log:?}, bob {bob_log:?}"
    );
    assert!(
        once(&bob_log, "alice: hello from alice"),
        "bob: {bob_log:?}"
    );

    // A long line travels compressed both ways: Chromium offers
    // permessage-deflate and compresses what it sends; kuiperbelt inflates
    // it for the app and compresses the app's push to bob, who reads it.
    let long = format!("a long line {}", "with many repeated words ".repeat(14));
    say(&alice, long.trim_end()).await;
    wait_text(&bob, "log", &format!("alice: {}", long.trim_end())).await;
    let metrics = format!("http://{}/metrics", demo.proxy);
    for (name, at_least) in [
        ("kuiperbelt_deflate_sessions_total", 2.0),
        ("kuiperbelt_inflated_messages_total", 1.0),
        ("kuiperbelt_compressed_frames_total", 1.0),
    ] {
        let value = common::metric(&metrics, name).await;
        assert!(value >= at_least, "{name} is {value}");
    }

    // A page without a name is refused by the app's connect callback.
    let nameless = browser(&driver, &profiles[2]).await;
    join(&nameless, &demo.page_url, "").await;
    wait_text(&nameless, "status", "Refused").await;
    nameless.close().await.unwrap();

    // Another room is another channel: the lobby hears nothing of it, nor
    // it of the lobby.
    let carol = browser(&driver, &profiles[3]).await;
    let dave = browser(&driver, &profiles[4]).await;
    join_room(&carol, &demo.page_url, "carol", "the kitchen").await;
    wait_text(&carol, "log", "* welcome to the kitchen, carol (1 here)").await;
    join_room(&dave, &demo.page_url, "dave", "the kitchen").await;
    wait_text(&dave, "log", "* welcome to the kitchen, dave (2 here)").await;
    wait_text(&carol, "log", "* dave joined").await;
    say(&carol, "anyone hungry?").await;
    wait_text(&dave, "log", "carol: anyone hungry?").await;
    // Pushed after the kitchen's lines, so they would be in the lobby's
    // logs by now.
    say(&bob, "lobby only").await;
    wait_text(&alice, "log", "bob: lobby only").await;
    wait_exact(&alice, "connections", "4").await;
    for page in [&alice, &bob] {
        let lines = log_lines(page).await;
        assert!(
            !lines
                .iter()
                .any(|l| l.contains("carol") || l.contains("dave")),
            "the kitchen reached the lobby: {lines:?}"
        );
    }

    save_screenshot(&alice, "demo.png").await;

    // Closing bob's browser closes his WebSocket; the app announces it to
    // his room.
    bob.close().await.unwrap();
    wait_text(&alice, "log", "* bob left").await;
    wait_exact(&alice, "connections", "3").await;
    say(&dave, "bye").await;
    wait_text(&carol, "log", "dave: bye").await;
    // Pushed after every lobby line, so those would be in the kitchen's
    // logs by now.
    let kitchen = log_lines(&carol).await;
    assert!(
        !kitchen
            .iter()
            .any(|l| l.starts_with("alice: ") || l.starts_with("bob: ") || l == "* bob left"),
        "the lobby reached the kitchen: {kitchen:?}"
    );
    assert_eq!(count_line(&carol, "carol: anyone hungry?").await, 1);

    for page in [alice, carol, dave] {
        page.close().await.unwrap();
    }
    demo.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_status_page_draws_live_figures_behind_the_token() {
    let driver = start_driver().await;
    let app = common::FakeApp::start().await;
    let api = common::free_port();
    let kb = common::Kb::with_app(
        &app,
        &format!("api:\n  listen: 127.0.0.1:{api}\n  token: ui-token\n"),
    )
    .await;
    let mut clients = Vec::new();
    for i in 0..3 {
        clients.push(kb.connect(&format!("ui{i}")).await);
    }
    let profile = tempfile::tempdir().unwrap();
    let page = browser(&driver, &profile).await;
    page.goto(&format!("http://127.0.0.1:{api}/ui"))
        .await
        .unwrap();
    // Without the token the page says what is missing and shows nothing.
    wait_text(&page, "error", "enter the API token").await;
    assert_eq!(wait_exact(&page, "connections", "-").await, "-");
    fill_and_click(&page, "token", "ui-token", "use").await;
    wait_exact(&page, "connections", "3").await;
    wait_exact(&page, "stage", "ready").await;
    wait_text(&page, "app", "flowing").await;
    // Some traffic for the rate charts, then a few samples.
    for round in 0..4 {
        let ids: Vec<String> = (0..3).map(|i| format!("ui{i}")).collect();
        let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
        let res = common::http(
            http::Method::POST,
            &format!("http://127.0.0.1:{api}/send"),
            &refs
                .iter()
                .map(|id| ("X-Kuiperbelt-Session", *id))
                .chain([("Authorization", "Bearer ui-token")])
                .collect::<Vec<_>>(),
            bytes::Bytes::from(format!("round {round}")),
        )
        .await;
        assert_eq!(res.status, 200);
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    // The pushed-messages chart ("pushed messages /s") has a value and a line.
    wait_until(&page, "v3", "a rate", |t| t.ends_with("/s") && t != "0/s").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let line = page
            .find(Locator::Id("l3"))
            .await
            .unwrap()
            .attr("points")
            .await
            .unwrap()
            .unwrap_or_default();
        if line.split(' ').count() >= 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never a line of samples: {line:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    save_screenshot(&page, "ui.png").await;
    page.close().await.unwrap();
}
