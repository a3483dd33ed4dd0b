//! Log output: tracing-subscriber as text or JSON lines on stderr, at the
//! configured level. Access lines use the target `kuiperbelt::access`.
//!
//! Owns subscriber setup only; what is logged is decided where it happens.

use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

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
