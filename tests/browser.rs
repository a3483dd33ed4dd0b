//! The demo in a real browser: two headless Chromium pages chat through
//! kuiperbelt, a nameless page is refused, and a closed page's leave is
//! announced. Takes the README screenshot (`KUIPERBELT_UPDATE_SCREENSHOT=1`
//! writes `docs/demo.png`).

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

async fn join(page: &Client, url: &str, name: &str) {
    page.goto(url).await.unwrap();
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
    let profiles: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();

    let alice = browser(&driver, &profiles[0]).await;
    let bob = browser(&driver, &profiles[1]).await;
    join(&alice, &demo.page_url, "alice").await;
    wait_text(&alice, "status", "Connected as alice").await;
    let join_form = alice.find(Locator::Id("join")).await.unwrap();
    assert!(
        !join_form.is_displayed().await.unwrap(),
        "the join form hides once connected"
    );
    join(&bob, &demo.page_url, "bob").await;
    wait_text(&bob, "status", "Connected as bob").await;
    wait_text(&alice, "log", "* bob joined").await;

    say(&alice, "hello from alice").await;
    wait_text(&bob, "log", "alice: hello from alice").await;
    say(&bob, "hi alice").await;
    wait_text(&alice, "log", "bob: hi alice").await;
    wait_exact(&alice, "connections", "2").await;

    // A page without a name is refused by the app's connect callback.
    let nameless = browser(&driver, &profiles[2]).await;
    join(&nameless, &demo.page_url, "").await;
    wait_text(&nameless, "status", "Refused").await;
    nameless.close().await.unwrap();

    let shot = alice.screenshot().await.unwrap();
    assert!(shot.starts_with(b"\x89PNG"), "a PNG screenshot");
    let path = if std::env::var_os("KUIPERBELT_UPDATE_SCREENSHOT").is_some() {
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/demo.png")
    } else {
        std::env::temp_dir().join("kuiperbelt-demo.png")
    };
    std::fs::write(&path, shot).unwrap();

    // Closing bob's browser closes his WebSocket; the app announces it.
    bob.close().await.unwrap();
    wait_text(&alice, "log", "* bob left").await;
    wait_exact(&alice, "connections", "1").await;

    alice.close().await.unwrap();
    demo.shutdown().await.unwrap();
}
