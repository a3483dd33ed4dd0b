//! Configuration: the Go server's YAML keys, loaded defaults -> file -> env ->
//! flags with figment, validated into resolved types before anything binds.
//!
//! Owns every config key, its default and its validation. It does not read
//! sockets or start anything; `main.rs` decides what to do with the result.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Env, Format, Serialized, Yaml};
use figment::Figment;
use http::header::{HeaderName, HeaderValue};
use http::Uri;
use serde::{Deserialize, Serialize};

use crate::duration::GoDuration;

/// Prefix of environment variables that override config keys
/// (`KUIPERBELT_CALLBACK__CONNECT` sets `callback.connect`).
pub const ENV_PREFIX: &str = "KUIPERBELT_";

/// Default callback timeout: the Go server has none, which lets a hung app
/// hold client handshakes open forever.
pub const DEFAULT_CALLBACK_TIMEOUT: Duration = Duration::from_secs(10);

/// The config file exactly as written: Go key names, Go defaults.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawConfig {
    pub port: u16,
    pub sock: Option<String>,
    pub endpoint: Option<String>,
    pub session_header: String,
    pub callback: RawCallback,
    pub strict_broadcast: bool,
    pub proxy_set_header: BTreeMap<String, String>,
    pub send_timeout: GoDuration,
    pub send_queue_size: usize,
    pub origin_policy: String,
    pub idle_timeout: GoDuration,
    pub suppress_access_log: bool,
    pub max_message_size: usize,
    pub path: RawPaths,
    pub log: RawLog,
    pub api: RawApi,
    pub metrics: RawMetrics,
    pub drain: RawDrain,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawApi {
    pub listen: Option<String>,
    pub token: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawMetrics {
    pub listen: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawDrain {
    pub announce_delay: GoDuration,
    pub spread: GoDuration,
    pub timeout: GoDuration,
    pub callback_concurrency: usize,
}

impl Default for RawDrain {
    fn default() -> Self {
        RawDrain {
            announce_delay: GoDuration(Duration::from_secs(3)),
            spread: GoDuration(Duration::from_secs(5)),
            timeout: GoDuration(Duration::from_secs(25)),
            callback_concurrency: 32,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawCallback {
    pub connect: Option<String>,
    pub establish: Option<String>,
    pub receive: Option<String>,
    pub close: Option<String>,
    pub timeout: Option<GoDuration>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawPaths {
    pub connect: String,
    pub send: String,
    pub close: String,
    pub stats: String,
    pub ping: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawLog {
    pub level: String,
    pub format: String,
}

impl Default for RawConfig {
    fn default() -> Self {
        RawConfig {
            port: 9180,
            sock: None,
            endpoint: None,
            session_header: "X-Kuiperbelt-Session".into(),
            callback: RawCallback::default(),
            strict_broadcast: false,
            proxy_set_header: BTreeMap::new(),
            send_timeout: GoDuration::default(),
            send_queue_size: 0,
            origin_policy: "none".into(),
            idle_timeout: GoDuration::default(),
            suppress_access_log: false,
            max_message_size: 16 << 20,
            path: RawPaths::default(),
            log: RawLog::default(),
            api: RawApi::default(),
            metrics: RawMetrics::default(),
            drain: RawDrain::default(),
        }
    }
}

impl Default for RawPaths {
    fn default() -> Self {
        RawPaths {
            connect: "/connect".into(),
            send: "/send".into(),
            close: "/close".into(),
            stats: "/stats".into(),
            ping: "/ping".into(),
        }
    }
}

impl Default for RawLog {
    fn default() -> Self {
        RawLog {
            level: "info".into(),
            format: "text".into(),
        }
    }
}

/// Values given on the command line; they win over file and environment.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub port: Option<u16>,
    pub sock: Option<PathBuf>,
    pub log_level: Option<String>,
}

/// Where the config file comes from.
#[derive(Debug, Clone)]
pub enum Source {
    /// `-config FILE` given: the file must exist.
    Explicit(PathBuf),
    /// The default `config.yml`: read when present, skipped when absent.
    Default(PathBuf),
}

/// A config value that cannot be used, named by its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub key: String,
    pub message: String,
}

impl ConfigError {
    fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            key: key.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "config: {}", self.message)
        } else {
            write!(f, "config key `{}`: {}", self.key, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

/// Where the public listener binds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    Port(u16),
    Unix(PathBuf),
}

/// Which client `Origin` headers `/connect` accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OriginPolicy {
    None,
    SameOrigin,
    SameHostname,
}

/// A callback URL, split so the client's query can be merged in per request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallbackUrl {
    /// scheme://authority/path without the query.
    pub base: String,
    /// The configured query string, if any (without `?`).
    pub query: Option<String>,
}

impl CallbackUrl {
    /// The URL with `extra` query parameters after the configured ones.
    pub fn with_query(&self, extra: Option<&str>) -> String {
        let extra = extra.filter(|q| !q.is_empty());
        match (self.query.as_deref(), extra) {
            (None, None) => self.base.clone(),
            (Some(q), None) | (None, Some(q)) => format!("{}?{}", self.base, q),
            (Some(a), Some(b)) => format!("{}?{}&{}", self.base, a, b),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Callbacks {
    pub connect: CallbackUrl,
    pub establish: Option<CallbackUrl>,
    pub receive: Option<CallbackUrl>,
    pub close: Option<CallbackUrl>,
    /// `None` means no limit (`callback.timeout: 0`).
    pub timeout: Option<Duration>,
}

#[derive(Debug, Clone)]
pub struct Paths {
    pub connect: String,
    pub send: String,
    pub close: String,
    pub stats: String,
    pub ping: String,
}

/// An extra listener: a TCP address or a UNIX socket path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddr {
    Tcp(std::net::SocketAddr),
    Unix(PathBuf),
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenAddr::Tcp(a) => write!(f, "{a}"),
            ListenAddr::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// Where the push/admin API is served and how it is protected.
#[derive(Debug, Clone, Default)]
pub struct ApiConfig {
    /// `None`: on the public listener, as the Go server does.
    pub listen: Option<ListenAddr>,
    /// Bearer token every push/admin request must carry.
    pub token: Option<String>,
}

/// The staged drain on SIGTERM or `POST /drain`.
#[derive(Debug, Clone)]
pub struct DrainConfig {
    /// How long new connections are still accepted after readiness flips.
    pub announce_delay: Duration,
    /// Window over which open sessions are closed.
    pub spread: Duration,
    /// Hard deadline of the whole drain, from its start.
    pub timeout: Duration,
    /// Close callbacks in flight at once.
    pub callback_concurrency: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone)]
pub struct LogConfig {
    pub level: String,
    pub format: LogFormat,
}

/// The validated configuration every other module reads.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: Listen,
    /// `None`: derived from the hostname and the bound port at start-up.
    pub endpoint: Option<String>,
    pub session_header: HeaderName,
    pub callback: Callbacks,
    pub strict_broadcast: bool,
    /// Header to set (`Some`) or remove (`None`) on every callback request.
    pub proxy_set_header: Vec<(HeaderName, Option<HeaderValue>)>,
    pub send_timeout: Option<Duration>,
    /// Capacity of each session's queue: at least 1 (`send_queue_size: 0`,
    /// Go's unbuffered hand-off, is a queue of one).
    pub send_queue_size: usize,
    pub origin_policy: OriginPolicy,
    pub idle_timeout: Option<Duration>,
    pub suppress_access_log: bool,
    pub max_message_size: usize,
    pub paths: Paths,
    pub log: LogConfig,
    pub api: ApiConfig,
    /// Extra listener serving only `/metrics` (for scrapers that cannot
    /// reach a localhost-only API listener).
    pub metrics_listen: Option<ListenAddr>,
    pub drain: DrainConfig,
}

/// Loads and validates: defaults, then the YAML file, then `KUIPERBELT_*`
/// environment variables, then command-line overrides.
pub fn load(source: &Source, overrides: &Overrides) -> Result<Config, ConfigError> {
    let mut figment = Figment::from(Serialized::defaults(RawConfig::default()));
    match source {
        Source::Explicit(path) => {
            if !path.is_file() {
                return Err(ConfigError::new(
                    "",
                    format!("config file {} does not exist", path.display()),
                ));
            }
            figment = figment.merge(Yaml::file_exact(path));
        }
        Source::Default(path) => {
            if path.is_file() {
                figment = figment.merge(Yaml::file_exact(path));
            }
        }
    }
    figment = figment.merge(Env::prefixed(ENV_PREFIX).split("__"));
    load_figment(figment, overrides)
}

/// Validates a figment assembled by the caller (tests, the demo).
pub fn load_figment(figment: Figment, overrides: &Overrides) -> Result<Config, ConfigError> {
    let mut figment = figment;
    if let Some(port) = overrides.port {
        figment = figment.merge(Serialized::default("port", port));
    }
    if let Some(level) = &overrides.log_level {
        figment = figment.merge(Serialized::default("log.level", level));
    }
    let mut raw: RawConfig = figment.extract().map_err(figment_error)?;
    if let Some(sock) = &overrides.sock {
        raw.sock = Some(sock.display().to_string());
    } else if overrides.port.is_some() {
        raw.sock = None;
    }
    resolve(raw)
}

/// Parses a config from YAML text alone (no environment), for tools and tests.
pub fn from_yaml_str(yaml: &str) -> Result<Config, ConfigError> {
    let figment =
        Figment::from(Serialized::defaults(RawConfig::default())).merge(Yaml::string(yaml));
    load_figment(figment, &Overrides::default())
}

fn figment_error(err: figment::Error) -> ConfigError {
    let err = err.into_iter().next().expect("figment error has one entry");
    let key = err.path.join(".");
    let mut message = err.kind.to_string();
    if let Some(meta) = &err.metadata {
        message.push_str(&format!(" (from {})", meta.name));
        if let Some(source) = &meta.source {
            message.push_str(&format!(" {source}"));
        }
    }
    ConfigError::new(key, message)
}

/// Turns raw values into resolved ones, naming the first bad key.
pub fn resolve(raw: RawConfig) -> Result<Config, ConfigError> {
    let listen = match raw.sock.as_deref().filter(|s| !s.is_empty()) {
        Some(path) => Listen::Unix(PathBuf::from(path)),
        None => Listen::Port(raw.port),
    };
    let session_header = HeaderName::try_from(raw.session_header.as_str()).map_err(|_| {
        ConfigError::new(
            "session_header",
            format!("{:?} is not a valid HTTP header name", raw.session_header),
        )
    })?;

    let connect = match raw.callback.connect.as_deref().filter(|s| !s.is_empty()) {
        Some(url) => callback_url("callback.connect", url)?,
        None => {
            return Err(ConfigError::new(
                "callback.connect",
                "is required: the URL kuiperbelt asks whether to accept a client",
            ))
        }
    };
    let optional_url =
        |key: &str, v: &Option<String>| -> Result<Option<CallbackUrl>, ConfigError> {
            v.as_deref()
                .filter(|s| !s.is_empty())
                .map(|url| callback_url(key, url))
                .transpose()
        };
    let callback = Callbacks {
        connect,
        establish: optional_url("callback.establish", &raw.callback.establish)?,
        receive: optional_url("callback.receive", &raw.callback.receive)?,
        close: optional_url("callback.close", &raw.callback.close)?,
        timeout: match raw.callback.timeout {
            None => Some(DEFAULT_CALLBACK_TIMEOUT),
            Some(d) => d.non_zero(),
        },
    };

    let mut proxy_set_header = Vec::new();
    for (name, value) in &raw.proxy_set_header {
        let key = format!("proxy_set_header.{name}");
        let header = HeaderName::try_from(name.as_str())
            .map_err(|_| ConfigError::new(&key, "is not a valid HTTP header name"))?;
        let value =
            if value.is_empty() {
                None
            } else {
                Some(HeaderValue::try_from(value.as_str()).map_err(|_| {
                    ConfigError::new(&key, "value is not a valid HTTP header value")
                })?)
            };
        proxy_set_header.push((header, value));
    }

    let origin_policy = match raw.origin_policy.as_str() {
        "" | "none" => OriginPolicy::None,
        "same_origin" => OriginPolicy::SameOrigin,
        "same_hostname" => OriginPolicy::SameHostname,
        other => {
            return Err(ConfigError::new(
                "origin_policy",
                format!("{other:?} is not one of none, same_origin, same_hostname"),
            ))
        }
    };

    let path = |key: &str, value: &str| -> Result<String, ConfigError> {
        if value.starts_with('/') && !value.contains(['?', '#', ' ']) {
            Ok(value.to_string())
        } else {
            Err(ConfigError::new(
                format!("path.{key}"),
                format!("{value:?} must be a URL path starting with /"),
            ))
        }
    };
    let paths = Paths {
        connect: path("connect", &raw.path.connect)?,
        send: path("send", &raw.path.send)?,
        close: path("close", &raw.path.close)?,
        stats: path("stats", &raw.path.stats)?,
        ping: path("ping", &raw.path.ping)?,
    };
    let all = [
        &paths.connect,
        &paths.send,
        &paths.close,
        &paths.stats,
        &paths.ping,
    ];
    for (i, a) in all.iter().enumerate() {
        if all[..i].contains(a) {
            return Err(ConfigError::new(
                "path",
                format!("{a:?} is used for two endpoints"),
            ));
        }
    }

    if raw.max_message_size == 0 {
        return Err(ConfigError::new(
            "max_message_size",
            "must be greater than 0",
        ));
    }

    let log = LogConfig {
        level: validate_log_level(&raw.log.level)?,
        format: match raw.log.format.as_str() {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => {
                return Err(ConfigError::new(
                    "log.format",
                    format!("{other:?} is not one of text, json"),
                ))
            }
        },
    };

    let api = ApiConfig {
        listen: listen_addr("api.listen", raw.api.listen.as_deref())?,
        token: raw.api.token.filter(|t| !t.is_empty()),
    };
    let metrics_listen = listen_addr("metrics.listen", raw.metrics.listen.as_deref())?;
    let drain = DrainConfig {
        announce_delay: raw.drain.announce_delay.0,
        spread: raw.drain.spread.0,
        timeout: raw.drain.timeout.0,
        callback_concurrency: raw.drain.callback_concurrency,
    };
    if drain.timeout < drain.announce_delay + drain.spread {
        return Err(ConfigError::new(
            "drain.timeout",
            format!(
                "{} is shorter than drain.announce_delay + drain.spread ({})",
                crate::duration::format(drain.timeout),
                crate::duration::format(drain.announce_delay + drain.spread)
            ),
        ));
    }
    if drain.callback_concurrency == 0 {
        return Err(ConfigError::new(
            "drain.callback_concurrency",
            "must be at least 1",
        ));
    }

    Ok(Config {
        listen,
        endpoint: raw.endpoint.filter(|e| !e.is_empty()),
        session_header,
        callback,
        strict_broadcast: raw.strict_broadcast,
        proxy_set_header,
        send_timeout: raw.send_timeout.non_zero(),
        send_queue_size: raw.send_queue_size.max(1),
        origin_policy,
        idle_timeout: raw.idle_timeout.non_zero(),
        suppress_access_log: raw.suppress_access_log,
        max_message_size: raw.max_message_size,
        paths,
        log,
        api,
        metrics_listen,
        drain,
    })
}

/// Parses `host:port`, `:port` (all interfaces) or a UNIX socket path.
fn listen_addr(key: &str, value: Option<&str>) -> Result<Option<ListenAddr>, ConfigError> {
    let Some(value) = value.map(str::trim).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    if value.contains('/') {
        return Ok(Some(ListenAddr::Unix(PathBuf::from(value))));
    }
    let with_host = if value.starts_with(':') {
        format!("0.0.0.0{value}")
    } else {
        value.to_string()
    };
    with_host
        .parse()
        .map(|a| Some(ListenAddr::Tcp(a)))
        .map_err(|_| {
            ConfigError::new(
                key,
                format!(
                    "{value:?} is neither an address like 127.0.0.1:9181 nor a UNIX socket path"
                ),
            )
        })
}

fn validate_log_level(level: &str) -> Result<String, ConfigError> {
    let level = level.trim().to_ascii_lowercase();
    match level.as_str() {
        "trace" | "debug" | "info" | "warn" | "error" => Ok(level),
        "warning" => Ok("warn".into()),
        _ => Err(ConfigError::new(
            "log.level",
            format!("{level:?} is not one of debug, info, warn, error"),
        )),
    }
}

fn callback_url(key: &str, url: &str) -> Result<CallbackUrl, ConfigError> {
    let uri: Uri = url
        .parse()
        .map_err(|e| ConfigError::new(key, format!("{url:?} is not a valid URL: {e}")))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Err(ConfigError::new(
                key,
                format!("{url:?}: https callbacks are not supported; the app is expected beside kuiperbelt over plain http"),
            ))
        }
        _ => {
            return Err(ConfigError::new(
                key,
                format!("{url:?} must be an absolute http:// URL"),
            ))
        }
    }
    let authority = uri
        .authority()
        .ok_or_else(|| ConfigError::new(key, format!("{url:?} has no host")))?;
    Ok(CallbackUrl {
        base: format!("http://{}{}", authority, uri.path()),
        query: uri.query().filter(|q| !q.is_empty()).map(str::to_string),
    })
}

impl Config {
    /// Where the public listener binds, for messages.
    pub fn describe_listen(&self) -> String {
        match &self.listen {
            Listen::Port(p) => format!("port {p}"),
            Listen::Unix(p) => format!("unix socket {}", p.display()),
        }
    }
}

/// Default config path of the Go server.
pub fn default_path() -> &'static Path {
    Path::new("config.yml")
}

#[cfg(test)]
// figment::Jail closures return figment::Error, which is large by design.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;
    use figment::Jail;

    #[test]
    fn defaults_that_differ_from_go() {
        let c = from_yaml_str("callback:\n  connect: http://127.0.0.1:1/c\n").unwrap();
        assert_eq!(c.callback.timeout, Some(DEFAULT_CALLBACK_TIMEOUT));
        assert_eq!(DEFAULT_CALLBACK_TIMEOUT, Duration::from_secs(10));
        assert_eq!(c.send_queue_size, 1, "send_queue_size 0 is a queue of one");
        let c = from_yaml_str("callback:\n  connect: http://127.0.0.1:1/c\nsend_queue_size: 5\n")
            .unwrap();
        assert_eq!(c.send_queue_size, 5);
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
            assert_eq!(c.proxy_set_header.len(), 2);
            assert!(c
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
        assert_eq!(c.api.token.as_deref(), Some("s3cret"));
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
}
