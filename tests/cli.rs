//! The `kuiperbelt` binary as users run it: Go-style flags, config errors
//! before binding, listening on a UNIX socket.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_kuiperbelt");

fn write_config(dir: &tempfile::TempDir, yaml: &str) -> String {
    let path = dir.path().join("config.yml");
    std::fs::write(&path, yaml).unwrap();
    path.display().to_string()
}

/// Runs the binary to completion with a clean KUIPERBELT_* environment.
fn run(args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("binary runs")
}

#[test]
fn version_flag_go_and_long_forms() {
    for flag in ["-version", "--version"] {
        let out = run(&[flag]);
        assert!(out.status.success());
        assert!(String::from_utf8_lossy(&out.stdout).contains(env!("CARGO_PKG_VERSION")));
    }
}

#[test]
fn bad_config_names_the_key_and_exits_before_binding() {
    let dir = tempfile::tempdir().unwrap();
    // A port we hold: if the binary tried to bind before validating, the
    // error would be about the address, not the key.
    let held = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let port = held.local_addr().unwrap().port();
    let cases = [
        (format!("port: {port}\ncallback:\n  connect: http://127.0.0.1:1/c\norigin_policy: everyone\n"), "origin_policy"),
        (format!("port: {port}\ncallback:\n  connect: http://127.0.0.1:1/c\nsned_timeout: 1s\n"), "sned_timeout"),
        (format!("port: {port}\ncallback:\n  connect: http://127.0.0.1:1/c\nidle_timeout: 10\n"), "idle_timeout"),
        (format!("port: {port}\n"), "callback.connect"),
    ];
    for (yaml, key) in cases {
        let config = write_config(&dir, &yaml);
        let out = run(&[&format!("-config={config}")]);
        assert_eq!(out.status.code(), Some(78), "{key}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(key), "stderr names {key}: {stderr}");
        assert!(!stderr.contains("in use"), "{stderr}");
    }
}

#[test]
fn missing_config_file_is_an_error() {
    let out = run(&["-config", "/nonexistent/kuiperbelt.yml"]);
    assert_eq!(out.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/kuiperbelt.yml"));
}

#[test]
fn port_and_sock_together_is_a_usage_error() {
    let out = run(&["-port", "1", "-sock", "/tmp/x.sock"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--sock"));
}

#[test]
fn check_config_validates_without_running() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(&dir, "callback:\n  connect: http://127.0.0.1:1/c\n");
    let out = run(&["-config", &config, "--check-config"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("config OK"));
}

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn unix_get(sock: &std::path::Path, path: &str) -> String {
    let mut s = UnixStream::connect(sock).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: kb\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn sock_listens_on_a_unix_socket_and_env_overrides_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("kb.sock");
    // A socket file left by an earlier run is replaced, not an error.
    drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
    assert!(sock.exists());
    let config = write_config(
        &dir,
        "port: 1\ncallback:\n  connect: http://127.0.0.1:1/c\n",
    );
    let child = Command::new(BIN)
        .arg(format!("-config={config}"))
        .arg("-sock")
        .arg(&sock)
        .env("KUIPERBELT_PATH__PING", "/env-ping")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut child = Running(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    while UnixStream::connect(&sock).is_err() {
        assert!(Instant::now() < deadline, "socket never answered");
        assert!(child.0.try_wait().unwrap().is_none(), "server exited early");
        std::thread::sleep(Duration::from_millis(20));
    }
    let reply = unix_get(&sock, "/env-ping");
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(reply.ends_with(r#"{"result":"OK"}"#), "{reply}");
    assert!(unix_get(&sock, "/ping").starts_with("HTTP/1.1 404"));
    // SIGTERM: exits 0 and removes its socket file.
    kill_term(child.0.id());
    let status = child.0.wait().unwrap();
    assert!(status.success(), "{status:?}");
    assert!(!sock.exists());
}

fn kill_term(pid: u32) {
    let status = Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(status.success());
}
