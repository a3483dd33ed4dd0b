//! `examples/python-chat/app.py`, a forking Python stdlib app, against the
//! real proxy: names required, a channel per room, lines sent to the others
//! in the room only (not the speaker, not another room), the app redeployed
//! under open WebSockets, members kuiperbelt no longer holds dropped, leaves
//! announced. Each step is one the example's README walks through.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use futures_util::StreamExt;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/python-chat/app.py");

/// The Python app, stopped on drop as a deploy would: SIGTERM, after which
/// it finishes the requests in flight (its forked children hold the listening
/// socket until then) and exits; SIGKILL if it takes over 10 s.
struct Python(Child);

impl Drop for Python {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if !matches!(self.0.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Python {
    /// Starts `app.py` on `port` and waits until it listens.
    async fn start(port: u16, kuiperbelt: &str, db: &Path) -> Python {
        let child = Command::new("python3")
            .arg(SCRIPT)
            .arg(format!("--port={port}"))
            .arg(format!("--kuiperbelt={kuiperbelt}"))
            .arg(format!("--db={}", db.display()))
            .stdout(Stdio::null())
            .spawn()
            .expect("python3 runs (python3 is on the build machine; Debian package python3)");
        let python = Python(child);
        assert!(
            wait_listening(port, Duration::from_secs(10)).await,
            "the Python app did not start"
        );
        python
    }
}

/// `(session, name)` rows of the app's member list, sorted by name.
fn members(db: &Path) -> Vec<(String, String)> {
    let out = Command::new("python3")
        .arg("-c")
        .arg(
            "import sqlite3, sys\n\
             for s, n in sqlite3.connect(sys.argv[1]).execute(\
             'SELECT session, name FROM members ORDER BY name'):\n    print(s, n)",
        )
        .arg(db)
        .output()
        .expect("python3 runs");
    assert!(out.status.success(), "reading {}: {out:?}", db.display());
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(s, n)| (s.to_string(), n.to_string()))
        .collect()
}

fn names(db: &Path) -> Vec<String> {
    members(db).into_iter().map(|(_, n)| n).collect()
}

#[tokio::test]
async fn python_chat_app_works_against_kuiperbelt() {
    let app_port = free_port();
    let app = format!("http://127.0.0.1:{app_port}");
    let kb = Kb::start(&format!(
        "callback:\n  connect: {app}/connect\n  establish: {app}/establish\n  receive: {app}/receive\n  close: {app}/close\n\
         drain:\n  announce_delay: 0s\n  spread: 0s\n"
    ))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let db: PathBuf = dir.path().join("chat.sqlite3");
    let python = Python::start(app_port, &kb.url(""), &db).await;

    // 1. No name: the connect callback's 401 and body reach the client.
    let refused = kb.try_connect("/connect", &[]).await.unwrap_err();
    let tokio_tungstenite::tungstenite::Error::Http(res) = refused else {
        panic!("expected an HTTP refusal, got {refused:?}")
    };
    assert_eq!(res.status(), 401);
    assert_eq!(res.body().as_deref(), Some(&b"a name is required"[..]));
    // A room is a channel name; the app takes letters, digits, - and _.
    let refused = kb
        .try_connect("/connect?name=eve&room=no%20spaces", &[])
        .await
        .unwrap_err();
    let tokio_tungstenite::tungstenite::Error::Http(res) = refused else {
        panic!("expected an HTTP refusal, got {refused:?}")
    };
    assert_eq!(res.status(), 400);

    // 2. Named clients are welcomed into their room (the lobby unless they
    // name one) and put in its channel by the connect answer. A join is
    // announced to the others in the room by the establish callback: the
    // newcomer is addressable (and gets its welcome) only once establish
    // has answered. A line is one push to the room's channel that leaves
    // the speaker out.
    let mut alice = kb.try_connect("/connect?name=alice", &[]).await.unwrap();
    assert_eq!(recv_text(&mut alice).await, "* welcome to lobby, alice");
    let mut bob = kb
        .try_connect("/connect?name=bob&room=lobby", &[])
        .await
        .unwrap();
    assert_eq!(recv_text(&mut bob).await, "* welcome to lobby, bob");
    assert_eq!(recv_text(&mut alice).await, "* bob joined");

    send_text(&mut alice, "hello bob").await;
    assert_eq!(recv_text(&mut bob).await, "alice: hello bob");
    send_text(&mut bob, "hi alice").await;
    // Pushed after alice's line: had she been sent her own, it would come
    // first.
    assert_eq!(recv_text(&mut alice).await, "bob: hi alice");

    // 5. Redeploy: the WebSockets stay in kuiperbelt, the members in SQLite.
    drop(python);
    let python = Python::start(app_port, &kb.url(""), &db).await;
    send_text(&mut bob, "still here").await;
    assert_eq!(recv_text(&mut alice).await, "bob: still here");

    // Another room is another channel: carol's join is announced to the
    // kitchen only, and the lobby's lines do not reach her. bob's next
    // message is alice's line: not his own lines, not carol's join.
    let mut carol = kb
        .try_connect("/connect?name=carol&room=kitchen", &[])
        .await
        .unwrap();
    assert_eq!(recv_text(&mut carol).await, "* welcome to kitchen, carol");
    send_text(&mut alice, "anyone?").await;
    assert_eq!(recv_text(&mut bob).await, "alice: anyone?");
    assert_silent(&mut carol, 300).await;

    // 4 and 5. carol is closed from the server side: no close callback, so
    // she stays in the member list until a push to her room finds nobody
    // in its channel.
    let carol_id = members(&db)
        .into_iter()
        .find(|(_, n)| n == "carol")
        .expect("carol is a member")
        .0;
    let reply = kb.push("/close", &[&carol_id], "bye carol").await;
    assert_eq!(reply.json()["result"], "OK", "{}", reply.text());
    assert_eq!(recv_text(&mut carol).await, "bye carol");
    recv_close(&mut carol).await;
    while let Some(Ok(_)) = carol.next().await {} // answer the close handshake
    kb.wait_connections(2).await;
    // The lobby's pushes are not about the kitchen.
    send_text(&mut bob, "yes").await;
    assert_eq!(recv_text(&mut alice).await, "bob: yes");
    assert_eq!(names(&db), ["alice", "bob", "carol"]);
    // dave's join is announced to the kitchen, whose channel is empty: the
    // app drops carol before it lets dave in.
    let mut dave = kb
        .try_connect("/connect?name=dave&room=kitchen", &[])
        .await
        .unwrap();
    assert_eq!(recv_text(&mut dave).await, "* welcome to kitchen, dave");
    assert_eq!(names(&db), ["alice", "bob", "dave"]);

    // dave's line goes to the kitchen, where nobody else is: no one gets it
    // (kuiperbelt counts it not delivered), the lobby least of all.
    let metrics = kb.url("/metrics");
    let not_delivered = r#"kuiperbelt_channel_pushes_total{outcome="not_delivered"}"#;
    let before = metric(&metrics, not_delivered).await;
    send_text(&mut dave, "hello kitchen").await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while metric(&metrics, not_delivered).await == before {
        assert!(Instant::now() < deadline, "dave's line was never pushed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_silent(&mut alice, 100).await;
    assert_silent(&mut bob, 100).await;
    assert_silent(&mut dave, 100).await;

    // 4. A client that leaves is announced by the close callback, to his
    // room.
    close(&mut bob).await;
    assert_eq!(recv_text(&mut alice).await, "* bob left");
    close(&mut dave).await;
    kb.wait_connections(1).await;
    // Drain before the app and its database go away: alice's close
    // callback is answered while the app is still up.
    let alice_closed = tokio::spawn(async move {
        let code = recv_close(&mut alice).await;
        while let Some(Ok(_)) = alice.next().await {} // answer the close handshake
        code
    });
    kb.shutdown().await;
    assert_eq!(alice_closed.await.unwrap(), Some(1001));
    drop(python);
}
