//! The `compression.*` keys: whether permessage-deflate is offered back to
//! clients that ask for it, the smallest payload worth compressing, and the
//! zlib level.
//!
//! Owns their raw shape, defaults and validation.

use serde::{Deserialize, Serialize};

use crate::config::error::ConfigError;

/// `compression.*` as written in the config file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawCompression {
    pub(crate) enabled: bool,
    pub(crate) min_size: usize,
    pub(crate) level: u32,
}

impl Default for RawCompression {
    fn default() -> Self {
        RawCompression {
            enabled: true,
            min_size: 256,
            level: 1,
        }
    }
}

/// Validated compression settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CompressionConfig {
    /// Negotiate permessage-deflate with clients that offer it.
    pub(crate) enabled: bool,
    /// Payloads shorter than this go uncompressed.
    pub(crate) min_size: usize,
    /// zlib level: 1 (fastest) to 9 (smallest).
    pub(crate) level: u32,
}

impl CompressionConfig {
    pub(crate) fn resolve(raw: &RawCompression) -> Result<CompressionConfig, ConfigError> {
        if !(1..=9).contains(&raw.level) {
            return Err(ConfigError::new(
                "compression.level",
                format!(
                    "must be from 1 (fastest) to 9 (smallest), not {}",
                    raw.level
                ),
            ));
        }
        Ok(CompressionConfig {
            enabled: raw.enabled,
            min_size: raw.min_size,
            level: raw.level,
        })
    }
}
