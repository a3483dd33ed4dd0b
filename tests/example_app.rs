//! `examples/python-chat/app.py`, a forking Python stdlib app, against the
//! real proxy: names required, lines broadcast, leaves announced.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

struct Python(Child);

impl Drop for Python {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
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
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/python-chat/app.py");
    let _python = Python(
        Command::new("python3")
            .arg(script)
            .arg(format!("--port={app_port}"))
            .arg(format!("--kuiperbelt={}", kb.url("")))
            .arg(format!(
                "--db={}",
                dir.path().join("chat.sqlite3").display()
            ))
            .stdout(Stdio::null())
            .spawn()
            .expect("python3 runs"),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(("127.0.0.1", app_port))
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "the Python app did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let refused = kb.try_connect("/connect", &[]).await.unwrap_err();
    let tokio_tungstenite::tungstenite::Error::Http(res) = refused else {
        panic!("expected an HTTP refusal, got {refused:?}")
    };
    assert_eq!(res.status(), 401);
    assert_eq!(res.body().as_deref(), Some(&b"a name is required"[..]));

    let mut alice = kb.try_connect("/connect?name=alice", &[]).await.unwrap();
    assert_eq!(recv_text(&mut alice).await, "* welcome, alice");
    assert_eq!(recv_text(&mut alice).await, "* alice joined");
    let mut bob = kb.try_connect("/connect?name=bob", &[]).await.unwrap();
    assert_eq!(recv_text(&mut bob).await, "* welcome, bob");
    assert_eq!(recv_text(&mut bob).await, "* bob joined");
    assert_eq!(recv_text(&mut alice).await, "* bob joined");

    send_text(&mut alice, "hello bob").await;
    assert_eq!(recv_text(&mut bob).await, "alice: hello bob");
    assert_eq!(recv_text(&mut alice).await, "alice: hello bob");

    close(&mut bob).await;
    assert_eq!(recv_text(&mut alice).await, "* bob left");
    // Drain before the app and its database go away: alice's close
    // callback is answered while the app is still up.
    kb.shutdown().await;
    assert_eq!(recv_close(&mut alice).await, Some(1001));
}
