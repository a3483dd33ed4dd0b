//! The HTTP surface's own keys: the `path.*` URL paths, `origin_policy` and
//! the `/batch` limits (`batch.*`).
//!
//! Owns their types, defaults and validation; the routes and the connect
//! handler use them (the API keys, `api.*`, are `auth.rs`'s).

use serde::{Deserialize, Serialize};

use crate::config::error::ConfigError;

/// `path.*` as written in the config file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawPaths {
    pub(crate) connect: String,
    pub(crate) send: String,
    pub(crate) close: String,
    pub(crate) stats: String,
    pub(crate) ping: String,
    pub(crate) subscribe: String,
    pub(crate) unsubscribe: String,
    pub(crate) batch: String,
}

impl Default for RawPaths {
    fn default() -> Self {
        RawPaths {
            connect: "/connect".into(),
            send: "/send".into(),
            close: "/close".into(),
            stats: "/stats".into(),
            ping: "/ping".into(),
            subscribe: "/subscribe".into(),
            unsubscribe: "/unsubscribe".into(),
            batch: "/batch".into(),
        }
    }
}

/// The configurable URL paths, validated.
#[derive(Debug, Clone)]
pub(crate) struct Paths {
    pub(crate) connect: String,
    pub(crate) send: String,
    pub(crate) close: String,
    pub(crate) stats: String,
    pub(crate) ping: String,
    pub(crate) subscribe: String,
    pub(crate) unsubscribe: String,
    pub(crate) batch: String,
}

impl Paths {
    pub(crate) fn resolve(raw: &RawPaths) -> Result<Paths, ConfigError> {
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
            connect: path("connect", &raw.connect)?,
            send: path("send", &raw.send)?,
            close: path("close", &raw.close)?,
            stats: path("stats", &raw.stats)?,
            ping: path("ping", &raw.ping)?,
            subscribe: path("subscribe", &raw.subscribe)?,
            unsubscribe: path("unsubscribe", &raw.unsubscribe)?,
            batch: path("batch", &raw.batch)?,
        };
        let all = [
            &paths.connect,
            &paths.send,
            &paths.close,
            &paths.stats,
            &paths.ping,
            &paths.subscribe,
            &paths.unsubscribe,
            &paths.batch,
        ];
        for (i, a) in all.iter().enumerate() {
            if all[..i].contains(a) {
                return Err(ConfigError::new(
                    "path",
                    format!("{a:?} is used for two endpoints"),
                ));
            }
        }
        Ok(paths)
    }
}

/// `batch.*` as written in the config file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawBatch {
    pub(crate) max_items: usize,
    pub(crate) max_bytes: usize,
}

impl Default for RawBatch {
    fn default() -> Self {
        RawBatch {
            max_items: 10_000,
            max_bytes: 64 << 20,
        }
    }
}

/// The limits of one `/batch` request.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BatchLimits {
    /// Items in one request at most.
    pub(crate) max_items: usize,
    /// Bytes of one request body at most (413 above).
    pub(crate) max_bytes: usize,
}

impl BatchLimits {
    pub(crate) fn resolve(raw: &RawBatch) -> Result<BatchLimits, ConfigError> {
        if raw.max_items == 0 {
            return Err(ConfigError::new("batch.max_items", "must be at least 1"));
        }
        if raw.max_bytes == 0 {
            return Err(ConfigError::new("batch.max_bytes", "must be at least 1"));
        }
        Ok(BatchLimits {
            max_items: raw.max_items,
            max_bytes: raw.max_bytes,
        })
    }
}

/// Which client `Origin` headers `/connect` accepts (`origin_policy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OriginPolicy {
    None,
    SameOrigin,
    SameHostname,
}

impl OriginPolicy {
    pub(crate) fn resolve(value: &str) -> Result<OriginPolicy, ConfigError> {
        match value {
            "" | "none" => Ok(OriginPolicy::None),
            "same_origin" => Ok(OriginPolicy::SameOrigin),
            "same_hostname" => Ok(OriginPolicy::SameHostname),
            other => Err(ConfigError::new(
                "origin_policy",
                format!("{other:?} is not one of none, same_origin, same_hostname"),
            )),
        }
    }
}
