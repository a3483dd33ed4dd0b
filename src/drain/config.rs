//! The `drain.*` keys: the drain's announce delay, spread and deadline
//! (and `drain.callback_concurrency`, an older name of
//! `callback.concurrency`).
//!
//! Owns their types, defaults and validation; the drain that uses them is
//! `drain/mod.rs`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::error::ConfigError;
use crate::duration::{self, GoDuration};

/// `drain.*` as written in the config file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawDrain {
    pub(crate) announce_delay: GoDuration,
    pub(crate) spread: GoDuration,
    pub(crate) timeout: GoDuration,
    pub(crate) callback_concurrency: Option<usize>,
}

impl Default for RawDrain {
    fn default() -> Self {
        RawDrain {
            announce_delay: GoDuration(Duration::from_secs(3)),
            spread: GoDuration(Duration::from_secs(5)),
            timeout: GoDuration(Duration::from_secs(25)),
            callback_concurrency: None,
        }
    }
}

/// The staged drain's timing.
#[derive(Debug, Clone)]
pub(crate) struct DrainConfig {
    /// How long new connections are still accepted after readiness flips.
    pub(crate) announce_delay: Duration,
    /// Window over which open sessions are closed.
    pub(crate) spread: Duration,
    /// Hard deadline of the whole drain, from its start.
    pub(crate) timeout: Duration,
}

impl DrainConfig {
    pub(crate) fn resolve(raw: &RawDrain) -> Result<DrainConfig, ConfigError> {
        let drain = DrainConfig {
            announce_delay: raw.announce_delay.0,
            spread: raw.spread.0,
            timeout: raw.timeout.0,
        };
        if drain.timeout < drain.announce_delay + drain.spread {
            return Err(ConfigError::new(
                "drain.timeout",
                format!(
                    "{} is shorter than drain.announce_delay + drain.spread ({})",
                    duration::format(drain.timeout),
                    duration::format(drain.announce_delay + drain.spread)
                ),
            ));
        }
        Ok(drain)
    }
}
