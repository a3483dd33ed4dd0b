//! Log output: tracing-subscriber as text or JSON lines on stderr, at the
//! configured level, and the `log.*` keys. Access lines use the target
//! `kuiperbelt::access`.
//!
//! Owns subscriber setup and its config only; what is logged is decided
//! where it happens.

use serde::{Deserialize, Serialize};
use tracing_subscriber::EnvFilter;

use crate::config::error::ConfigError;

/// `log.*` as written in the config file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawLog {
    pub(crate) level: String,
    pub(crate) format: String,
}

impl Default for RawLog {
    fn default() -> Self {
        RawLog {
            level: "info".into(),
            format: "text".into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// Where and how much to log.
#[derive(Debug, Clone)]
pub struct LogConfig {
    pub level: String,
    pub format: LogFormat,
}

impl LogConfig {
    pub(crate) fn resolve(raw: &RawLog) -> Result<LogConfig, ConfigError> {
        let level = raw.level.trim().to_ascii_lowercase();
        let level = match level.as_str() {
            "trace" | "debug" | "info" | "warn" | "error" => level,
            "warning" => "warn".into(),
            _ => {
                return Err(ConfigError::new(
                    "log.level",
                    format!("{level:?} is not one of debug, info, warn, error"),
                ))
            }
        };
        let format = match raw.format.as_str() {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => {
                return Err(ConfigError::new(
                    "log.format",
                    format!("{other:?} is not one of text, json"),
                ))
            }
        };
        Ok(LogConfig { level, format })
    }
}

/// Installs the global subscriber. `RUST_LOG`, when set, overrides the level.
pub fn init(log: &LogConfig) {
    let filter = EnvFilter::try_from_env("RUST_LOG").unwrap_or_else(|_| {
        EnvFilter::new(format!(
            "warn,kuiperbelt={level},kuiperbelt::access={level}",
            level = log.level
        ))
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = match log.format {
        LogFormat::Text => builder.with_ansi(false).try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
    };
    if result.is_err() {
        tracing::debug!("a log subscriber was already installed");
    }
}
