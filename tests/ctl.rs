//! `kuiperbelt ctl` against a real server: status, sessions, send, close and
//! drain, defaults taken from the config file, a UNIX-socket API, a wrong
//! token and an unreachable API; and `GET /sessions` paging.

mod common;

use std::process::{Command, Output, Stdio};

use common::channels::answer_channels;
use common::*;
use tokio_tungstenite::tungstenite::Message;

const BIN: &str = env!("CARGO_BIN_EXE_kuiperbelt");
const TOKEN: &str = "ctl-test-token";

/// Runs `kuiperbelt ctl ARGS` to completion (off the async runtime).
async fn ctl(args: &[&str], stdin: Option<&'static [u8]>) -> Output {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let mut child = Command::new(BIN)
            .arg("ctl")
            .args(&args)
            .env_remove("KUIPERBELT_API__TOKEN")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut input = child.stdin.take().unwrap();
        if let Some(bytes) = stdin {
            std::io::Write::write_all(&mut input, bytes).unwrap();
        }
        drop(input);
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap()
}

fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A server with its API on its own port and a token from a file.
async fn server(app: &FakeApp) -> (Binary, u16, String) {
    let api = free_port();
    let dir = tempfile::tempdir().unwrap().keep();
    let token_file = dir.join("token");
    std::fs::write(&token_file, TOKEN).unwrap();
    let bin = Binary::start(&format!(
        "{}api:\n  listen: 127.0.0.1:{api}\n  token_file: {}\n",
        base_yaml(app),
        token_file.display()
    ))
    .await;
    let config = bin.dir.path().join("config.yml").display().to_string();
    (bin, api, config)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_subcommand_against_a_running_server() {
    let app = FakeApp::start().await;
    let (bin, api_port, config) = server(&app).await;
    let api = format!("http://127.0.0.1:{api_port}");
    let base = format!("ws://127.0.0.1:{}", bin.port);
    let mut a1 = connect_url(&base, "a1").await.unwrap();
    let mut a2 = connect_url(&base, "a2").await.unwrap();
    let mut b1 = connect_url(&base, "b1").await.unwrap();

    // Defaults from the config file: api.listen and api.token_file.
    let status = ctl(&["--config", &config, "status"], None).await;
    assert_eq!(
        status.status.code(),
        Some(0),
        "{}{}",
        out(&status),
        err(&status)
    );
    let text = out(&status);
    assert!(text.contains("ready:       yes (running)"), "{text}");
    assert!(text.contains("connections: 3"), "{text}");
    assert!(text.contains("the app answers"), "{text}");
    let status = ctl(&["--api", &api, "--token", TOKEN, "status", "--json"], None).await;
    let json: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(json["sessions"], 3);
    assert_eq!(json["version"], env!("CARGO_PKG_VERSION"));

    // Sessions, filtered and limited, in id order.
    let listed = ctl(
        &["--config", &config, "sessions", "--prefix", "a", "--json"],
        None,
    )
    .await;
    let list: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    let ids: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["session"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["a1", "a2"]);
    assert_eq!(
        list[0]["remote"].as_str().unwrap().split(':').next(),
        Some("127.0.0.1")
    );
    let listed = ctl(&["--config", &config, "sessions", "--limit", "1"], None).await;
    let table = out(&listed);
    assert!(
        table.starts_with("SESSION") && table.contains("a1") && !table.contains("a2"),
        "{table}"
    );

    // Send: text, binary from standard input; exit 1 on NG.
    let sent = ctl(
        &[
            "--config", &config, "send", "a1", "b1", "--data", "from ctl",
        ],
        None,
    )
    .await;
    assert_eq!(sent.status.code(), Some(0), "{}", err(&sent));
    assert_eq!(out(&sent).trim(), r#"{"result":"OK"}"#);
    assert_eq!(recv_text(&mut a1).await, "from ctl");
    assert_eq!(recv_text(&mut b1).await, "from ctl");
    let sent = ctl(
        &["--config", &config, "send", "b1", "--binary", "--file", "-"],
        Some(&[1, 2, 3]),
    )
    .await;
    assert_eq!(sent.status.code(), Some(0), "{}", err(&sent));
    assert_eq!(
        recv(&mut b1).await,
        Message::Binary(bytes::Bytes::from_static(&[1, 2, 3]))
    );
    let sent = ctl(
        &["--config", &config, "send", "nobody", "--data", "x"],
        None,
    )
    .await;
    assert_eq!(sent.status.code(), Some(1));
    assert!(out(&sent).contains(r#""result":"NG""#), "{}", out(&sent));
    // The counters /sessions shows moved.
    let listed = ctl(
        &["--config", &config, "sessions", "--prefix", "b1", "--json"],
        None,
    )
    .await;
    let list: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(list[0]["messages_out"], 2, "{list}");

    // Close with a last message.
    let closed = ctl(&["--config", &config, "close", "a2", "--data", "bye"], None).await;
    assert_eq!(closed.status.code(), Some(0), "{}", err(&closed));
    assert_eq!(recv_text(&mut a2).await, "bye");
    assert_eq!(recv_close(&mut a2).await, Some(1000));

    // A wrong token and an unreachable API: a clear message, exit 2.
    let wrong = ctl(&["--api", &api, "--token", "nope", "status"], None).await;
    assert_eq!(wrong.status.code(), Some(2));
    assert!(
        err(&wrong).contains("refused the token (401)"),
        "{}",
        err(&wrong)
    );
    let gone = ctl(
        &[
            "--api",
            &format!("http://127.0.0.1:{}", free_port()),
            "status",
        ],
        None,
    )
    .await;
    assert_eq!(gone.status.code(), Some(2));
    assert!(
        err(&gone).contains("cannot reach the API"),
        "{}",
        err(&gone)
    );
    let nowhere = ctl(&["--config", "/nonexistent/kb.yml", "status"], None).await;
    assert_eq!(nowhere.status.code(), Some(2));
    assert!(err(&nowhere).contains("pass --api"), "{}", err(&nowhere));

    // Drain: started, then not ready (exit 1), then waited for.
    let drain = ctl(&["--config", &config, "drain"], None).await;
    assert_eq!(out(&drain).trim(), "drain started", "{}", err(&drain));
    let status = ctl(&["--config", &config, "status"], None).await;
    assert_eq!(
        status.status.code(),
        Some(1),
        "not ready while draining: {}",
        out(&status)
    );
    let drain = ctl(&["--config", &config, "drain", "--wait"], None).await;
    assert_eq!(out(&drain).trim(), "drain finished", "{}", err(&drain));
}

#[tokio::test]
async fn ctl_reaches_an_api_on_a_unix_socket() {
    let app = FakeApp::start().await;
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("api.sock");
    let bin = Binary::start(&format!(
        "{}api:\n  listen: {}\n",
        base_yaml(&app),
        sock.display()
    ))
    .await;
    let _ws = connect_url(&format!("ws://127.0.0.1:{}", bin.port), "u1")
        .await
        .unwrap();
    let status = ctl(
        &[
            "--api",
            &format!("unix:{}", sock.display()),
            "status",
            "--json",
        ],
        None,
    )
    .await;
    assert_eq!(status.status.code(), Some(0), "{}", err(&status));
    let json: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(json["connections"], 1);
}

#[tokio::test]
async fn sessions_pages_follow_one_another() {
    let app = FakeApp::start().await;
    let kb = Kb::with_app(&app, "").await;
    let mut clients = Vec::new();
    for i in 0..7 {
        clients.push(kb.connect(&format!("s{i}")).await);
    }
    let mut seen = Vec::new();
    let mut after = String::new();
    loop {
        let page = kb
            .get(&format!("/sessions?limit=3&after={after}"))
            .await
            .json();
        for s in page["sessions"].as_array().unwrap() {
            seen.push(s["session"].as_str().unwrap().to_string());
        }
        match page["next_after"].as_str() {
            Some(next) => after = next.to_string(),
            None => break,
        }
    }
    assert_eq!(seen, ["s0", "s1", "s2", "s3", "s4", "s5", "s6"]);
    assert_eq!(kb.get("/sessions?limit=nope").await.status, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channels_are_listed_and_pushed_to() {
    let app = FakeApp::start().await;
    answer_channels(&app);
    let (bin, _, config) = server(&app).await;
    let base = format!("ws://127.0.0.1:{}", bin.port);
    let mut a1 = connect_url(&base, "a1&ch=room").await.unwrap();
    let mut b1 = connect_url(&base, "b1&ch=room,side").await.unwrap();

    let listed = ctl(&["--config", &config, "channels"], None).await;
    assert_eq!(listed.status.code(), Some(0), "{}", err(&listed));
    let table = out(&listed);
    let rows: Vec<Vec<&str>> = table
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows,
        [
            vec!["CHANNEL", "MEMBERS"],
            vec!["room", "2"],
            vec!["side", "1"]
        ]
    );
    let listed = ctl(
        &["--config", &config, "channels", "--prefix", "s", "--json"],
        None,
    )
    .await;
    let list: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(list, serde_json::json!([{"channel":"side","members":1}]));

    let sent = ctl(
        &[
            "--config",
            &config,
            "send",
            "--channel",
            "room",
            "--exclude",
            "b1",
            "--data",
            "hi",
        ],
        None,
    )
    .await;
    assert_eq!(sent.status.code(), Some(0), "{}", err(&sent));
    assert_eq!(recv_text(&mut a1).await, "hi");
    let sent = ctl(
        &[
            "--config",
            &config,
            "send",
            "--channel",
            "side",
            "a1",
            "--data",
            "both",
        ],
        None,
    )
    .await;
    assert_eq!(sent.status.code(), Some(0), "{}", err(&sent));
    assert_eq!(recv_text(&mut a1).await, "both");
    assert_eq!(recv_text(&mut b1).await, "both", "b1 got only this one");
    let sent = ctl(
        &[
            "--config",
            &config,
            "send",
            "--channel",
            "empty",
            "--data",
            "x",
        ],
        None,
    )
    .await;
    assert_eq!(sent.status.code(), Some(1));
    assert!(
        out(&sent).contains("channel has no sessions."),
        "{}",
        out(&sent)
    );
    let nobody = ctl(&["--config", &config, "send", "--data", "x"], None).await;
    assert_ne!(nobody.status.code(), Some(0));
    assert!(err(&nobody).contains("<SESSION>"), "{}", err(&nobody));

    // A batch from standard input: one reply per item; 1 when any is NG.
    let batched = ctl(
        &["--config", &config, "send", "--batch", "-"],
        Some(br#"[{"session":"a1","message":"first"},{"channel":"side","json":[1,2]}]"#),
    )
    .await;
    assert_eq!(batched.status.code(), Some(0), "{}", err(&batched));
    assert_eq!(
        out(&batched).trim(),
        r#"{"result":"OK","results":[{"result":"OK"},{"result":"OK"}]}"#
    );
    assert_eq!(recv_text(&mut a1).await, "first");
    assert_eq!(recv_text(&mut b1).await, "[1,2]");
    let batched = ctl(
        &["--config", &config, "send", "--batch", "-"],
        Some(br#"[{"session":"nobody","message":"x"}]"#),
    )
    .await;
    assert_eq!(batched.status.code(), Some(1), "{}", out(&batched));
    let closed = ctl(&["--config", &config, "close", "--channel", "side"], None).await;
    assert_eq!(closed.status.code(), Some(0), "{}", err(&closed));
    assert_eq!(recv_close(&mut b1).await, Some(1000));
}
