//! Config files as Go templates, the way the Go server and its official
//! image read them: `docker/config_by_env.yml` (the image's default config,
//! every `EKBO_*` variable of the Go project's `config_by_env.yml` with its
//! default) with and without variables, typing after expansion,
//! `KUIPERBELT_*` overrides on top, `must_env`, bad templates, and the Go
//! server's `-gops-addr` flag.

mod common;

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::*;

const BIN: &str = env!("CARGO_BIN_EXE_kuiperbelt");
const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/docker/config_by_env.yml");

/// Runs the binary to completion with only `env` in its environment.
fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .output()
        .expect("binary runs")
}

/// `--check-config` of the fixture: the resolved config as YAML.
fn resolved(env: &[(&str, &str)]) -> serde_yaml::Value {
    let out = run(&[&format!("-config={FIXTURE}"), "--check-config"], env);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_yaml::from_slice(&out.stdout).expect("--check-config prints YAML")
}

#[test]
fn the_image_config_loads_with_the_go_defaults() {
    let c = resolved(&[]);
    assert_eq!(c["port"], 9180);
    assert_eq!(c["sock"], serde_yaml::Value::Null);
    assert_eq!(c["endpoint"], serde_yaml::Value::Null);
    assert_eq!(c["session_header"], "X-Kuiperbelt-Session");
    assert_eq!(c["callback"]["connect"], "http://localhost:12346/connect");
    assert_eq!(c["callback"]["establish"], serde_yaml::Value::Null);
    assert_eq!(c["callback"]["receive"], serde_yaml::Value::Null);
    assert_eq!(c["callback"]["close"], serde_yaml::Value::Null);
    assert_eq!(c["callback"]["timeout"], "0s");
    assert_eq!(c["strict_broadcast"], false);
    assert_eq!(c["suppress_access_log"], false);
    assert_eq!(
        c["proxy_set_header"],
        serde_yaml::Value::Mapping(Default::default())
    );
    assert_eq!(c["send_timeout"], "0s");
    assert_eq!(c["send_queue_size"], 0);
    assert_eq!(c["origin_policy"], "none");
    assert_eq!(c["idle_timeout"], "0s");
    for (key, path) in [
        ("connect", "/connect"),
        ("close", "/close"),
        ("stats", "/stats"),
        ("send", "/send"),
        ("ping", "/ping"),
    ] {
        assert_eq!(c["path"][key], path);
    }
}

#[test]
fn every_ekbo_variable_reaches_its_key_with_its_type() {
    let c = resolved(&[
        ("EKBO_PORT", "19555"),
        ("EKBO_CONNECT_PATH", "/ws"),
        ("EKBO_CLOSE_PATH", "/c"),
        ("EKBO_STATS_PATH", "/st"),
        ("EKBO_SEND_PATH", "/s"),
        ("EKBO_PING_PATH", "/p"),
        ("EKBO_CONNECT_CALLBACK_URL", "http://app:8080/connect"),
        ("EKBO_ESTABLISH_CALLBACK_URL", "http://app:8080/establish"),
        ("EKBO_CLOSE_CALLBACK_URL", "http://app:8080/close"),
        ("EKBO_RECEIVE_CALLBACK_URL", "http://app:8080/receive"),
        ("EKBO_CALLBACK_TIMEOUT", "2s"),
        ("EKBO_SUPPRESS_ACCESS_LOG", "true"),
        ("EKBO_SESSION_HEADER_NAME", "X-Chat-Session"),
        ("EKBO_SELF_ENDPOINT_URL", "kb-1.example:9180"),
        ("EKBO_STRICT_BROADCAST_MODE_SWITCH", "true"),
        (
            "EKBO_PROXY_SET_HEADER",
            r#"{"X-Foo": "bar", "User-Agent": ""}"#,
        ),
        ("EKBO_SEND_TIMEOUT", "500ms"),
        ("EKBO_SEND_QUEUE_SIZE", "5"),
        ("EKBO_ORIGIN_POLICY", "same_hostname"),
        ("EKBO_IDLE_TIMEOUT", "1m30s"),
    ]);
    assert_eq!(c["port"], 19555);
    assert_eq!(c["path"]["connect"], "/ws");
    assert_eq!(c["path"]["close"], "/c");
    assert_eq!(c["path"]["stats"], "/st");
    assert_eq!(c["path"]["send"], "/s");
    assert_eq!(c["path"]["ping"], "/p");
    assert_eq!(c["callback"]["connect"], "http://app:8080/connect");
    assert_eq!(c["callback"]["establish"], "http://app:8080/establish");
    assert_eq!(c["callback"]["close"], "http://app:8080/close");
    assert_eq!(c["callback"]["receive"], "http://app:8080/receive");
    assert_eq!(c["callback"]["timeout"], "2s");
    assert_eq!(c["suppress_access_log"], true);
    assert_eq!(c["session_header"], "X-Chat-Session");
    assert_eq!(c["endpoint"], "kb-1.example:9180");
    assert_eq!(c["strict_broadcast"], true);
    assert_eq!(c["proxy_set_header"]["X-Foo"], "bar");
    assert_eq!(c["proxy_set_header"]["User-Agent"], "");
    assert_eq!(c["send_timeout"], "500ms");
    assert_eq!(c["send_queue_size"], 5);
    assert_eq!(c["origin_policy"], "same_hostname");
    assert_eq!(c["idle_timeout"], "1m30s");
    // The UNIX socket variable.
    let c = resolved(&[("EKBO_UNIX_DOMAIN_SOCKET_FILENAME", "/tmp/kb.sock")]);
    assert_eq!(c["sock"], "/tmp/kb.sock");
}

#[test]
fn kuiperbelt_variables_still_override_the_expanded_file() {
    let c = resolved(&[("EKBO_PORT", "19555"), ("KUIPERBELT_PORT", "19556")]);
    assert_eq!(c["port"], 19556);
}

#[test]
fn a_bad_value_after_expansion_names_the_key() {
    let out = run(
        &[&format!("-config={FIXTURE}"), "--check-config"],
        &[("EKBO_STRICT_BROADCAST_MODE_SWITCH", "sometimes")],
    );
    assert_eq!(out.status.code(), Some(78));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("strict_broadcast"), "{stderr}");
}

#[test]
fn must_env_unset_and_bad_templates_exit_78_naming_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "port: 1\ncallback:\n  connect: '{{ must_env \"KB_TEST_CONNECT\" }}'\n",
            vec!["line 3", "KB_TEST_CONNECT"],
        ),
        (
            "callback:\n  connect: http://a/c\nport: {{ .Port }}\n",
            vec!["line 3", "unsupported"],
        ),
        (
            "callback:\n  connect: {{ getenv \"A\" }}\n",
            vec!["line 2", "getenv"],
        ),
        ("port: {{ env \"A\"\n", vec!["line 1", "unclosed"]),
    ];
    for (yaml, wanted) in cases {
        let path = dir.path().join("c.yml");
        std::fs::write(&path, yaml).unwrap();
        let out = run(&[&format!("-config={}", path.display())], &[]);
        assert_eq!(out.status.code(), Some(78), "{yaml}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        for w in wanted {
            assert!(stderr.contains(w), "{yaml}: stderr lacks {w:?}: {stderr}");
        }
        assert!(stderr.contains(&path.display().to_string()), "{stderr}");
    }
    // Set, even to nothing, must_env is satisfied.
    let path = dir.path().join("c.yml");
    std::fs::write(
        &path,
        "callback:\n  connect: http://a/c\nendpoint: '{{ must_env \"KB_TEST_EMPTY\" }}'\n",
    )
    .unwrap();
    let out = run(
        &[&format!("-config={}", path.display()), "--check-config"],
        &[("KB_TEST_EMPTY", "")],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Starts the binary on the fixture with `env`; waits until it listens.
async fn start_fixture(
    port: u16,
    env: &[(&str, String)],
    args: &[&str],
) -> (std::process::Child, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let stderr = std::fs::File::create(dir.path().join("stderr.log")).unwrap();
    let child = Command::new(BIN)
        .arg(format!("-config={FIXTURE}"))
        .args(args)
        .env_clear()
        .env("EKBO_PORT", port.to_string())
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .unwrap();
    assert!(
        wait_listening(port, Duration::from_secs(5)).await,
        "never listened: {}",
        std::fs::read_to_string(dir.path().join("stderr.log")).unwrap_or_default()
    );
    (child, dir)
}

#[tokio::test]
async fn the_image_config_runs_with_only_ekbo_variables() {
    let app = FakeApp::start().await;
    let port = free_port();
    let (mut child, dir) = start_fixture(
        port,
        &[
            ("EKBO_CONNECT_CALLBACK_URL", app.url("/connect")),
            ("EKBO_RECEIVE_CALLBACK_URL", app.url("/receive")),
        ],
        &["-gops-addr", "127.0.0.1:0"],
    )
    .await;
    let base = format!("ws://127.0.0.1:{port}");
    let mut ws = connect_url(&base, "ekbo").await.unwrap();
    send_text(&mut ws, "via EKBO").await;
    assert_eq!(app.next("/receive").await.body, "via EKBO");
    let res = http(
        http::Method::POST,
        &format!("http://127.0.0.1:{port}/send"),
        &[("X-Kuiperbelt-Session", "ekbo")],
        bytes::Bytes::from_static(b"back"),
    )
    .await;
    assert_eq!(res.text(), r#"{"result":"OK"}"#);
    assert_eq!(recv_text(&mut ws).await, "back");
    child.kill().unwrap();
    child.wait().unwrap();
    let log = std::fs::read_to_string(dir.path().join("stderr.log")).unwrap();
    assert!(
        log.contains("-gops-addr is accepted") && log.contains("ignored"),
        "{log}"
    );
}
