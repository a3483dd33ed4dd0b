//! Loading and validating configs: Go files unchanged, templates, env and
//! flags in order, errors naming the key.

use super::*;
use crate::callback::config::DEFAULT_CALLBACK_TIMEOUT;
use crate::http::auth::TokenSource;
use figment::Jail;

#[test]
fn defaults_that_differ_from_go() {
    let c = from_yaml_str("callback:\n  connect: http://127.0.0.1:1/c\n").unwrap();
    assert_eq!(c.callback.timeout, Some(DEFAULT_CALLBACK_TIMEOUT));
    assert_eq!(DEFAULT_CALLBACK_TIMEOUT, Duration::from_secs(10));
    assert_eq!(c.send_queue_size, 1, "send_queue_size 0 is a queue of one");
    let c =
        from_yaml_str("callback:\n  connect: http://127.0.0.1:1/c\nsend_queue_size: 5\n").unwrap();
    assert_eq!(c.send_queue_size, 5);
}

#[test]
fn compression_defaults_and_keys() {
    let c = from_yaml_str("callback:\n  connect: http://127.0.0.1:1/c\n").unwrap();
    assert_eq!(
        c.compression,
        crate::websocket::config::CompressionConfig {
            enabled: true,
            min_size: 256,
            level: 1,
        }
    );
    let c = from_yaml_str(
        "callback:\n  connect: http://127.0.0.1:1/c\ncompression:\n  enabled: false\n  min_size: 0\n  level: 9\n",
    )
    .unwrap();
    assert!(!c.compression.enabled);
    assert_eq!((c.compression.min_size, c.compression.level), (0, 9));
}

#[test]
fn go_config_loads_unchanged() {
    Jail::expect_with(|jail| {
        jail.create_file(
            "config.yml",
            r#"---
port: 12345
callback:
  connect: "http://localhost:12346/connect?x=1"
  receive: "http://localhost:12346/receive"
  close: "http://localhost:12346/close"
  timeout: 1m30s
session_header: "X-Kuiperbelt-Session"
strict_broadcast: true
proxy_set_header:
  X-Foo: bar
  User-Agent: ""
send_timeout: 500ms
send_queue_size: 10
origin_policy: same_hostname
idle_timeout: 0
suppress_access_log: true
path:
  connect: /ws
"#,
        )?;
        let c = load(
            &Source::Explicit("config.yml".into()),
            &Overrides::default(),
        )
        .unwrap();
        assert_eq!(c.listen, Listen::Port(12345));
        assert_eq!(
            c.callback.connect.with_query(Some("a=b")),
            "http://localhost:12346/connect?x=1&a=b"
        );
        assert_eq!(c.callback.timeout, Some(Duration::from_secs(90)));
        assert_eq!(c.send_timeout, Some(Duration::from_millis(500)));
        assert_eq!(c.idle_timeout, None);
        assert_eq!(c.origin_policy, OriginPolicy::SameHostname);
        assert_eq!(c.paths.connect, "/ws");
        assert_eq!(c.paths.send, "/send");
        assert_eq!(c.callback.proxy_set_header.len(), 2);
        assert!(c
            .callback
            .proxy_set_header
            .iter()
            .any(|(n, v)| n == "user-agent" && v.is_none()));
        Ok(())
    });
}

#[test]
fn env_overrides_file_and_flags_override_env() {
    Jail::expect_with(|jail| {
        jail.create_file("c.yml", "port: 1\ncallback:\n  connect: http://a/c\n")?;
        jail.set_env("KUIPERBELT_PORT", "2");
        jail.set_env("KUIPERBELT_CALLBACK__RECEIVE", "http://a/r");
        jail.set_env("KUIPERBELT_IDLE_TIMEOUT", "30s");
        let c = load(&Source::Explicit("c.yml".into()), &Overrides::default()).unwrap();
        assert_eq!(c.listen, Listen::Port(2));
        assert_eq!(c.callback.receive.unwrap().base, "http://a/r");
        assert_eq!(c.idle_timeout, Some(Duration::from_secs(30)));
        let o = Overrides {
            port: Some(3),
            ..Default::default()
        };
        let c = load(&Source::Explicit("c.yml".into()), &o).unwrap();
        assert_eq!(c.listen, Listen::Port(3));
        Ok(())
    });
}

#[test]
fn errors_name_the_key() {
    let cases = [
        ("callback: {connect: http://a/c}\nbogus: 1\n", "bogus"),
        (
            "callback: {connect: http://a/c, bogus: 1}\n",
            "callback.bogus",
        ),
        (
            "callback: {connect: http://a/c}\nsend_timeout: 10\n",
            "send_timeout",
        ),
        (
            "callback: {connect: http://a/c}\nidle_timeout: 5x\n",
            "idle_timeout",
        ),
        (
            "callback: {connect: http://a/c}\norigin_policy: any\n",
            "origin_policy",
        ),
        ("callback: {connect: http://a/c}\nport: 99999\n", "port"),
        ("callback: {connect: 'not a url'}\n", "callback.connect"),
        ("callback: {connect: 'https://a/c'}\n", "callback.connect"),
        ("port: 1\n", "callback.connect"),
        (
            "callback: {connect: http://a/c}\npath: {send: nope}\n",
            "path.send",
        ),
        (
            "callback: {connect: http://a/c}\nsession_header: 'bad header'\n",
            "session_header",
        ),
        (
            "callback: {connect: http://a/c}\nlog: {format: xml}\n",
            "log.format",
        ),
        (
            "callback: {connect: http://a/c}\ncompression: {level: 0}\n",
            "compression.level",
        ),
        (
            "callback: {connect: http://a/c}\ncompression: {level: 10}\n",
            "compression.level",
        ),
        (
            "callback: {connect: http://a/c}\ncompression: {enabled: maybe}\n",
            "compression.enabled",
        ),
        (
            "callback: {connect: http://a/c}\ncompression: {min_size: -1}\n",
            "compression.min_size",
        ),
    ];
    for (yaml, key) in cases {
        let err = from_yaml_str(yaml).unwrap_err();
        assert_eq!(err.key, key, "{yaml}: {err}");
        assert!(err.to_string().contains(key), "{err}");
    }
}

#[test]
fn missing_explicit_file_is_an_error() {
    let err = load(
        &Source::Explicit("/nonexistent/k.yml".into()),
        &Overrides::default(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("/nonexistent/k.yml"));
}

#[test]
fn operations_keys() {
    let c = from_yaml_str(
        "callback: {connect: http://a/c}\napi: {listen: '127.0.0.1:9181', token: s3cret}\nmetrics: {listen: ':9182'}\ndrain: {announce_delay: 1s, spread: 2s, timeout: 5s}\n",
    )
    .unwrap();
    assert_eq!(
        c.api.listen,
        Some(ListenAddr::Tcp("127.0.0.1:9181".parse().unwrap()))
    );
    assert_eq!(c.api.token, Some(TokenSource::Value("s3cret".into())));
    assert_eq!(
        c.metrics_listen,
        Some(ListenAddr::Tcp("0.0.0.0:9182".parse().unwrap()))
    );
    assert_eq!(c.drain.spread, Duration::from_secs(2));
    let c = from_yaml_str("callback: {connect: http://a/c}\napi: {listen: /run/kb/api.sock}\n")
        .unwrap();
    assert_eq!(
        c.api.listen,
        Some(ListenAddr::Unix("/run/kb/api.sock".into()))
    );
    for (yaml, key) in [
        ("api: {listen: 'nonsense'}", "api.listen"),
        (
            "drain: {announce_delay: 10s, spread: 10s, timeout: 5s}",
            "drain.timeout",
        ),
        (
            "drain: {callback_concurrency: 0}",
            "drain.callback_concurrency",
        ),
    ] {
        let err =
            from_yaml_str(&format!("callback: {{connect: http://a/c}}\n{yaml}\n")).unwrap_err();
        assert_eq!(err.key, key, "{err}");
    }
}

#[test]
fn callback_timeout_defaults_and_zero_is_off() {
    let c = from_yaml_str("callback: {connect: http://a/c}\n").unwrap();
    assert_eq!(c.callback.timeout, Some(DEFAULT_CALLBACK_TIMEOUT));
    let c = from_yaml_str("callback: {connect: http://a/c, timeout: 0}\n").unwrap();
    assert_eq!(c.callback.timeout, None);
}

#[test]
fn cluster_keys_from_the_file_and_the_environment() {
    Jail::expect_with(|jail| {
        jail.create_file("c.yml", "callback:\n  connect: http://a/c\n")?;
        let c = load(&Source::Explicit("c.yml".into()), &Overrides::default()).unwrap();
        assert!(c.cluster.is_none(), "no cluster key: a single node");
        jail.set_env(
            "KUIPERBELT_CLUSTER__NATS__URL",
            "nats://n1:4222,nats://n2:4222",
        );
        jail.set_env("KUIPERBELT_CLUSTER__SUBJECT_PREFIX", "chat");
        let c = load(&Source::Explicit("c.yml".into()), &Overrides::default()).unwrap();
        let cluster = c.cluster.expect("cluster mode");
        assert_eq!(cluster.urls, ["nats://n1:4222", "nats://n2:4222"]);
        assert_eq!(cluster.subject_prefix, "chat");
        jail.set_env("KUIPERBELT_CLUSTER__NATS__TOKEN", "secret");
        let c = load(&Source::Explicit("c.yml".into()), &Overrides::default()).unwrap();
        assert!(!c.to_yaml().contains("secret"), "{}", c.to_yaml());
        Ok(())
    });
}
