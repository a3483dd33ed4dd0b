//! The sessions core's channel keys: `channel.max_per_session`.
//!
//! Owns their raw shape, default and validation.

use serde::{Deserialize, Serialize};

use crate::config::error::ConfigError;

/// `channel.*` as written in the config file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawChannel {
    pub(crate) max_per_session: usize,
}

impl Default for RawChannel {
    fn default() -> Self {
        RawChannel {
            max_per_session: 100,
        }
    }
}

/// Validated channel settings.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ChannelConfig {
    /// Channels one session may be in at once.
    pub(crate) max_per_session: usize,
}

impl ChannelConfig {
    pub(crate) fn resolve(raw: &RawChannel) -> Result<ChannelConfig, ConfigError> {
        if raw.max_per_session == 0 {
            return Err(ConfigError::new(
                "channel.max_per_session",
                "must be at least 1",
            ));
        }
        Ok(ChannelConfig {
            max_per_session: raw.max_per_session,
        })
    }
}
