//! Configuration: the Go server's YAML keys, loaded defaults -> file (a Go
//! template, expanded first) -> `KUIPERBELT_*` env -> flags with figment,
//! then validated into each subsystem's resolved config before anything
//! binds.
//!
//! Owns the file's shape ([`RawConfig`], Go key names and defaults), the
//! loading order and the composition of the resolved [`Config`]. Each
//! subsystem's own keys are typed and validated beside the code that uses
//! them (`callback::config`, `http::routes`, `http::auth`, `server::listener`,
//! `drain`, `logging`, `sessions::config`). It does not read sockets or start anything.

pub(crate) mod error;
pub(crate) mod template;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Env, Format, Serialized, Yaml};
use figment::Figment;
use http::header::HeaderName;
use serde::{Deserialize, Serialize};

use crate::callback::config::{CallbackConfig, RawCallback};
use crate::cluster::config::{ClusterConfig, RawCluster};
use crate::drain::config::{DrainConfig, RawDrain};
use crate::duration::GoDuration;
use crate::http::auth::{ApiConfig, RawApi};
use crate::http::config::{BatchLimits, OriginPolicy, Paths, RawBatch, RawPaths};
use crate::logging::{LogConfig, RawLog};
use crate::server::listener::{Listen, ListenAddr, RawMetricsListen};
use crate::sessions::config::{ChannelConfig, RawChannel};
use crate::websocket::config::{CompressionConfig, RawCompression};
pub use error::ConfigError;

/// Prefix of environment variables that override config keys
/// (`KUIPERBELT_CALLBACK__CONNECT` sets `callback.connect`).
pub const ENV_PREFIX: &str = "KUIPERBELT_";

/// The config file exactly as written: Go key names, Go defaults.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawConfig {
    pub(crate) port: u16,
    pub(crate) sock: Option<String>,
    pub(crate) listen_backlog: Option<u32>,
    pub(crate) endpoint: Option<String>,
    pub(crate) session_header: String,
    pub(crate) callback: RawCallback,
    pub(crate) strict_broadcast: bool,
    pub(crate) proxy_set_header: BTreeMap<String, String>,
    pub(crate) send_timeout: GoDuration,
    pub(crate) send_queue_size: usize,
    pub(crate) origin_policy: String,
    pub(crate) idle_timeout: GoDuration,
    pub(crate) suppress_access_log: bool,
    pub(crate) max_message_size: usize,
    pub(crate) path: RawPaths,
    pub(crate) log: RawLog,
    pub(crate) api: RawApi,
    pub(crate) metrics: RawMetricsListen,
    pub(crate) drain: RawDrain,
    pub(crate) channel: RawChannel,
    pub(crate) batch: RawBatch,
    pub(crate) compression: RawCompression,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) cluster: Option<RawCluster>,
}

impl Default for RawConfig {
    fn default() -> Self {
        RawConfig {
            port: 9180,
            sock: None,
            listen_backlog: None,
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
            metrics: RawMetricsListen::default(),
            drain: RawDrain::default(),
            channel: RawChannel::default(),
            batch: RawBatch::default(),
            compression: RawCompression::default(),
            cluster: None,
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

/// The validated configuration every other module reads.
#[derive(Debug, Clone)]
pub struct Config {
    pub(crate) listen: Listen,
    /// Pending connections the public listener queues (`listen(2)` backlog).
    pub(crate) listen_backlog: u32,
    /// `None`: derived from the hostname and the bound port at start-up.
    pub(crate) endpoint: Option<String>,
    pub(crate) session_header: HeaderName,
    pub(crate) callback: CallbackConfig,
    pub(crate) strict_broadcast: bool,
    pub(crate) send_timeout: Option<Duration>,
    /// Capacity of each session's queue: at least 1 (`send_queue_size: 0`,
    /// Go's unbuffered hand-off, is a queue of one).
    pub(crate) send_queue_size: usize,
    pub(crate) origin_policy: OriginPolicy,
    pub(crate) idle_timeout: Option<Duration>,
    pub(crate) suppress_access_log: bool,
    pub(crate) max_message_size: usize,
    pub(crate) paths: Paths,
    pub(crate) log: LogConfig,
    pub(crate) api: ApiConfig,
    /// Extra listener serving only `/metrics` (for scrapers that cannot
    /// reach a localhost-only API listener).
    pub(crate) metrics_listen: Option<ListenAddr>,
    pub(crate) drain: DrainConfig,
    pub(crate) channel: ChannelConfig,
    pub(crate) batch: BatchLimits,
    pub(crate) compression: CompressionConfig,
    /// `None`: a single node.
    pub(crate) cluster: Option<ClusterConfig>,
    /// What was loaded, for `--check-config`.
    raw: RawConfig,
}

/// Loads and validates: defaults, then the YAML file (expanded as a Go
/// template), then `KUIPERBELT_*` environment variables, then command-line
/// overrides.
pub fn load(source: &Source, overrides: &Overrides) -> Result<Config, ConfigError> {
    let path = match source {
        Source::Explicit(path) if !path.is_file() => {
            return Err(ConfigError::new(
                "",
                format!("config file {} does not exist", path.display()),
            ));
        }
        Source::Explicit(path) => Some(path),
        Source::Default(path) => path.is_file().then_some(path),
    };
    let mut figment = Figment::from(Serialized::defaults(RawConfig::default()));
    if let Some(path) = path {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::new("", format!("cannot read {}: {e}", path.display())))?;
        let expanded = template::expand(&text, &|name| std::env::var(name).ok())
            .map_err(|e| ConfigError::new("", format!("{} {e}", path.display())))?;
        figment = figment.merge(Yaml::string(&expanded));
    }
    figment = figment.merge(Env::prefixed(ENV_PREFIX).split("__"));
    load_figment(figment, overrides).map_err(|mut e| {
        if let Some(path) = path {
            e.message
                .push_str(&format!(" (config file {})", path.display()));
        }
        e
    })
}

/// Validates a figment assembled by the caller.
fn load_figment(figment: Figment, overrides: &Overrides) -> Result<Config, ConfigError> {
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

/// Parses a config from YAML text alone (no environment, no template), for
/// the demo and the tests.
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
        if meta.name.contains("environment") {
            message.push_str(&format!(" (from {})", meta.name));
        }
    }
    ConfigError::new(key, message)
}

/// Turns raw values into resolved ones, naming the first bad key.
fn resolve(raw: RawConfig) -> Result<Config, ConfigError> {
    let session_header = HeaderName::try_from(raw.session_header.as_str()).map_err(|_| {
        ConfigError::new(
            "session_header",
            format!("{:?} is not a valid HTTP header name", raw.session_header),
        )
    })?;
    if raw.max_message_size == 0 {
        return Err(ConfigError::new(
            "max_message_size",
            "must be greater than 0",
        ));
    }
    let listen_backlog = match raw.listen_backlog {
        Some(0) => return Err(ConfigError::new("listen_backlog", "must be at least 1")),
        Some(n) => n,
        None => crate::server::listener::system_backlog(),
    };
    Ok(Config {
        listen: Listen::resolve(raw.port, raw.sock.as_deref()),
        listen_backlog,
        endpoint: raw.endpoint.clone().filter(|e| !e.is_empty()),
        session_header,
        callback: CallbackConfig::resolve(
            &raw.callback,
            raw.drain.callback_concurrency,
            &raw.proxy_set_header,
        )?,
        strict_broadcast: raw.strict_broadcast,
        send_timeout: raw.send_timeout.non_zero(),
        send_queue_size: raw.send_queue_size.max(1),
        origin_policy: OriginPolicy::resolve(&raw.origin_policy)?,
        idle_timeout: raw.idle_timeout.non_zero(),
        suppress_access_log: raw.suppress_access_log,
        max_message_size: raw.max_message_size,
        paths: Paths::resolve(&raw.path)?,
        log: LogConfig::resolve(&raw.log)?,
        api: ApiConfig::resolve(&raw.api)?,
        metrics_listen: ListenAddr::resolve("metrics.listen", raw.metrics.listen.as_deref())?,
        drain: DrainConfig::resolve(&raw.drain)?,
        channel: ChannelConfig::resolve(&raw.channel)?,
        compression: CompressionConfig::resolve(&raw.compression)?,
        batch: BatchLimits::resolve(&raw.batch)?,
        cluster: ClusterConfig::resolve(raw.cluster.as_ref())?,
        raw,
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

    /// Logging settings, for the binary to install before anything runs.
    pub fn log(&self) -> &LogConfig {
        &self.log
    }

    /// The loaded config as YAML (template expanded, environment and flags
    /// applied, secrets hidden), for `--check-config`.
    pub fn to_yaml(&self) -> String {
        let mut raw = self.raw.clone();
        let hide = |secret: &mut Option<String>| {
            if secret.as_deref().is_some_and(|t| !t.is_empty()) {
                *secret = Some("<hidden>".into());
            }
        };
        hide(&mut raw.api.token);
        if let Some(cluster) = &mut raw.cluster {
            hide(&mut cluster.nats.token);
            hide(&mut cluster.nats.password);
        }
        serde_yaml::to_string(&raw).expect("config serializes")
    }
}

/// Default config path of the Go server.
pub fn default_path() -> &'static Path {
    Path::new("config.yml")
}

#[cfg(test)]
// figment::Jail closures return figment::Error, which is large by design.
#[allow(clippy::result_large_err)]
mod tests;
