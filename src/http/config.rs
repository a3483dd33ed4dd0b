//! The HTTP surface's own keys: the `path.*` URL paths and `origin_policy`.
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
        };
        let all = [
            &paths.connect,
            &paths.send,
            &paths.close,
            &paths.stats,
            &paths.ping,
            &paths.subscribe,
            &paths.unsubscribe,
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
