//! The `cluster.*` keys: the NATS servers and credentials, the subject
//! prefix shared by the nodes of one cluster, and the request timeout.
//!
//! Owns their types, defaults and validation; the NATS client that uses
//! them is `cluster/mod.rs`. No `cluster` key: a single node, as before.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::error::ConfigError;
use crate::duration::GoDuration;

/// Default of `cluster.request_timeout`.
pub(crate) const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// `cluster.*` as written in the config file.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawCluster {
    pub(crate) nats: RawNats,
    pub(crate) subject_prefix: Option<String>,
    pub(crate) request_timeout: Option<GoDuration>,
}

/// `cluster.nats.*`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawNats {
    pub(crate) url: Option<String>,
    pub(crate) token: Option<String>,
    pub(crate) user: Option<String>,
    pub(crate) password: Option<String>,
    pub(crate) credentials_file: Option<String>,
}

/// How a node authenticates to NATS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum NatsAuth {
    None,
    Token(String),
    UserPassword(String, String),
    CredentialsFile(PathBuf),
}

/// The resolved cluster settings.
#[derive(Debug, Clone)]
pub(crate) struct ClusterConfig {
    /// NATS server URLs (`nats://host:4222`), tried in turn.
    pub(crate) urls: Vec<String>,
    pub(crate) auth: NatsAuth,
    pub(crate) subject_prefix: String,
    pub(crate) request_timeout: Duration,
}

impl ClusterConfig {
    /// `None` when the config has no `cluster` section.
    pub(crate) fn resolve(raw: Option<&RawCluster>) -> Result<Option<ClusterConfig>, ConfigError> {
        let Some(raw) = raw else { return Ok(None) };
        let urls: Vec<String> = raw
            .nats
            .url
            .as_deref()
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(str::to_string)
            .collect();
        if urls.is_empty() {
            return Err(ConfigError::new(
                "cluster.nats.url",
                "is required in cluster mode: one NATS URL (nats://host:4222) or a comma-separated list",
            ));
        }
        for url in &urls {
            if url.parse::<async_nats::ServerAddr>().is_err() {
                return Err(ConfigError::new(
                    "cluster.nats.url",
                    format!("{url:?} is not a NATS URL like nats://host:4222"),
                ));
            }
        }
        let nats = &raw.nats;
        let given = |v: &Option<String>| v.clone().filter(|s| !s.is_empty());
        let auth = match (
            given(&nats.token),
            given(&nats.user),
            given(&nats.password),
            given(&nats.credentials_file),
        ) {
            (None, None, None, None) => NatsAuth::None,
            (Some(t), None, None, None) => NatsAuth::Token(t),
            (None, Some(u), Some(p), None) => NatsAuth::UserPassword(u, p),
            (None, Some(_), None, None) => {
                return Err(ConfigError::new(
                    "cluster.nats.password",
                    "is required with cluster.nats.user",
                ))
            }
            (None, None, Some(_), None) => {
                return Err(ConfigError::new(
                    "cluster.nats.user",
                    "is required with cluster.nats.password",
                ))
            }
            (None, None, None, Some(f)) => NatsAuth::CredentialsFile(PathBuf::from(f)),
            _ => {
                return Err(ConfigError::new(
                    "cluster.nats",
                    "set one of token, user + password, credentials_file",
                ))
            }
        };
        let prefix = raw
            .subject_prefix
            .clone()
            .unwrap_or_else(|| "kuiperbelt".into());
        let token_ok = |t: &str| !t.is_empty() && !t.contains(['*', '>', ' ', '\t', '\r', '\n']);
        if !prefix.split('.').all(token_ok) {
            return Err(ConfigError::new(
                "cluster.subject_prefix",
                format!(
                    "{prefix:?} is not a NATS subject (dot-separated words without spaces, * or >)"
                ),
            ));
        }
        let request_timeout = match raw.request_timeout {
            None => DEFAULT_REQUEST_TIMEOUT,
            Some(d) => d.non_zero().ok_or_else(|| {
                ConfigError::new("cluster.request_timeout", "must be greater than 0")
            })?,
        };
        Ok(Some(ClusterConfig {
            urls,
            auth,
            subject_prefix: prefix,
            request_timeout,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(yaml: &str) -> RawCluster {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn defaults_and_lists() {
        let c = ClusterConfig::resolve(Some(&raw("nats: {url: 'nats://a:4222, nats://b:4222'}")))
            .unwrap()
            .unwrap();
        assert_eq!(c.urls, ["nats://a:4222", "nats://b:4222"]);
        assert_eq!(c.subject_prefix, "kuiperbelt");
        assert_eq!(c.request_timeout, DEFAULT_REQUEST_TIMEOUT);
        assert_eq!(c.auth, NatsAuth::None);
        assert!(ClusterConfig::resolve(None).unwrap().is_none());
    }

    #[test]
    fn errors_name_the_key() {
        for (yaml, key) in [
            ("subject_prefix: x", "cluster.nats.url"),
            ("nats: {url: 'http://a b'}", "cluster.nats.url"),
            (
                "nats: {url: 'nats://a:1', user: u}",
                "cluster.nats.password",
            ),
            (
                "nats: {url: 'nats://a:1', token: t, user: u, password: p}",
                "cluster.nats",
            ),
            (
                "nats: {url: 'nats://a:1'}\nsubject_prefix: 'a.*'",
                "cluster.subject_prefix",
            ),
            (
                "nats: {url: 'nats://a:1'}\nrequest_timeout: 0",
                "cluster.request_timeout",
            ),
        ] {
            let err = ClusterConfig::resolve(Some(&raw(yaml))).unwrap_err();
            assert_eq!(err.key, key, "{yaml}: {err}");
        }
    }
}
