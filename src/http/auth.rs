//! Who may call the push and admin API: the `api.*` keys, the bearer token
//! (from the config or a file re-read on change and on SIGHUP), and the rule
//! that keeps `/drain` to the pod when nothing else protects it.
//!
//! Owns the decision only; routing applies it, and the replies come from
//! `reply`.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use prometheus::IntCounterVec;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use super::Peer;
use crate::config::error::ConfigError;
use crate::metrics::Metrics;
use crate::server::listener::ListenAddr;

/// How often a token file is checked for a new token.
const TOKEN_FILE_POLL: Duration = Duration::from_secs(1);

/// `api.*` as written in the config file.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawApi {
    pub(crate) listen: Option<String>,
    pub(crate) token: Option<String>,
    pub(crate) token_file: Option<String>,
}

/// Where the bearer token comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TokenSource {
    /// `api.token`.
    Value(String),
    /// `api.token_file`: read at start, re-read when it changes and on SIGHUP.
    File(PathBuf),
}

/// Where the push/admin API is served and how it is protected.
#[derive(Debug, Clone, Default)]
pub(crate) struct ApiConfig {
    /// `None`: on the public listener, as the Go server does.
    pub(crate) listen: Option<ListenAddr>,
    /// Bearer token every push/admin request must carry.
    pub(crate) token: Option<TokenSource>,
}

impl ApiConfig {
    pub(crate) fn resolve(raw: &RawApi) -> Result<ApiConfig, ConfigError> {
        let value = raw.token.clone().filter(|t| !t.is_empty());
        let file = raw.token_file.clone().filter(|t| !t.is_empty());
        let token = match (value, file) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::new(
                    "api.token_file",
                    "api.token and api.token_file cannot both be set",
                ))
            }
            (Some(v), None) => Some(TokenSource::Value(v)),
            (None, Some(path)) => {
                let path = PathBuf::from(path);
                read_token(&path).map_err(|e| ConfigError::new("api.token_file", e))?;
                Some(TokenSource::File(path))
            }
            (None, None) => None,
        };
        Ok(ApiConfig {
            listen: ListenAddr::resolve("api.listen", raw.listen.as_deref())?,
            token,
        })
    }
}

/// Reads a token file: its content without surrounding whitespace, which
/// must not be empty.
fn read_token(path: &std::path::Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let token = text.trim();
    if token.is_empty() {
        return Err(format!("{} is empty", path.display()));
    }
    Ok(token.to_string())
}

/// Why a push/admin request is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Denied {
    /// Missing or wrong bearer token (401).
    Token,
    /// `/drain` from outside the pod with nothing else protecting it (403).
    Peer,
}

impl Denied {
    const ALL: [Denied; 2] = [Denied::Token, Denied::Peer];

    pub(crate) fn label(self) -> &'static str {
        match self {
            Denied::Token => "token",
            Denied::Peer => "peer",
        }
    }
}

/// The API's protection, shared by every route of a server.
#[derive(Debug)]
pub(crate) struct Guard {
    token: RwLock<Option<Arc<[u8]>>>,
    file: Option<PathBuf>,
    /// Neither `api.listen` nor a token: the push API is as open as Go's,
    /// and `/drain` is kept to local peers.
    open: bool,
    /// `kuiperbelt_api_denied_total`.
    denied: IntCounterVec,
}

impl Guard {
    pub(crate) fn new(config: &ApiConfig, metrics: &Metrics) -> Guard {
        let (token, file) = match &config.token {
            None => (None, None),
            Some(TokenSource::Value(v)) => (Some(v.clone()), None),
            Some(TokenSource::File(path)) => (read_token(path).ok(), Some(path.clone())),
        };
        Guard {
            token: RwLock::new(token.map(|t| Arc::from(t.into_bytes()))),
            file,
            open: config.listen.is_none() && config.token.is_none(),
            denied: metrics.counter_vec(
                "kuiperbelt_api_denied_total",
                "Push/admin requests refused: a missing or wrong token (token), or /drain from a peer outside the pod without a token or api.listen (peer).",
                "reason",
                &Denied::ALL.map(Denied::label),
            ),
        }
    }

    /// Counts a refused request.
    pub(crate) fn count(&self, denied: Denied) {
        self.denied.with_label_values(&[denied.label()]).inc();
    }

    /// Whether requests must carry a token.
    pub(crate) fn has_token(&self) -> bool {
        self.token.read().expect("token lock").is_some()
    }

    /// Checks a push/admin request's `Authorization` header.
    pub(crate) fn check(&self, authorization: Option<&[u8]>) -> Result<(), Denied> {
        let Some(token) = self.token.read().expect("token lock").clone() else {
            return Ok(());
        };
        let given = authorization
            .and_then(|h| h.strip_prefix(b"Bearer "))
            .map(|g| g.trim_ascii())
            .unwrap_or_default();
        if equal(given, &token) {
            Ok(())
        } else {
            Err(Denied::Token)
        }
    }

    /// Checks a `/drain` request: the token rule, and without `api.listen`
    /// or a token, a local peer.
    pub(crate) fn check_drain(
        &self,
        authorization: Option<&[u8]>,
        peer: Option<Peer>,
    ) -> Result<(), Denied> {
        self.check(authorization)?;
        if self.open && !peer.is_some_and(|p| p.is_local()) {
            return Err(Denied::Peer);
        }
        Ok(())
    }

    /// Re-reads the token file; keeps the old token if it cannot be read.
    pub(crate) fn reload(&self) {
        let Some(path) = &self.file else { return };
        match read_token(path) {
            Ok(token) => {
                let mut current = self.token.write().expect("token lock");
                if current.as_deref() != Some(token.as_bytes()) {
                    *current = Some(Arc::from(token.into_bytes()));
                    tracing::info!(file = %path.display(), "api token reloaded");
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "api.token_file unreadable; keeping the previous token")
            }
        }
    }

    /// Re-reads the token file when it changes and on SIGHUP, until the
    /// server stops (the caller aborts the task).
    pub(crate) async fn watch(self: Arc<Self>) {
        let Some(path) = self.file.clone() else {
            return;
        };
        let mut hangup =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        let stamp = |p: &PathBuf| -> Option<(SystemTime, u64)> {
            let meta = std::fs::metadata(p).ok()?;
            Some((meta.modified().ok()?, meta.len()))
        };
        let mut last = stamp(&path);
        let mut poll = tokio::time::interval(TOKEN_FILE_POLL);
        loop {
            let signalled = async {
                match hangup.as_mut() {
                    Some(h) => h.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = signalled => self.reload(),
                _ = poll.tick() => {
                    let now = stamp(&path);
                    if now != last {
                        last = now;
                        self.reload();
                    }
                }
            }
        }
    }
}

/// Compares without an early exit: the time depends only on the token's
/// length, never on where a guess differs or on the guess's length.
fn equal(given: &[u8], token: &[u8]) -> bool {
    let mut same = (given.len() as u64).ct_eq(&(token.len() as u64));
    for (i, t) in token.iter().enumerate() {
        same &= given.get(i).copied().unwrap_or(0).ct_eq(t);
    }
    same.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(token: Option<&str>, listen: bool) -> Guard {
        Guard::new(
            &ApiConfig {
                listen: listen.then(|| ListenAddr::Tcp("127.0.0.1:9181".parse().unwrap())),
                token: token.map(|t| TokenSource::Value(t.into())),
            },
            &Metrics::new(),
        )
    }

    #[test]
    fn token_comparison() {
        assert!(equal(b"s3cret", b"s3cret"));
        assert!(!equal(b"s3cre", b"s3cret"));
        assert!(!equal(b"s3cretx", b"s3cret"));
        assert!(!equal(b"", b"s3cret"));
        assert!(!equal(b"s3creT", b"s3cret"));
        let g = guard(Some("s3cret"), false);
        assert_eq!(g.check(Some(b"Bearer s3cret")), Ok(()));
        assert_eq!(g.check(Some(b"Bearer  s3cret ")), Ok(()));
        assert_eq!(g.check(Some(b"Basic s3cret")), Err(Denied::Token));
        assert_eq!(g.check(None), Err(Denied::Token));
    }

    #[test]
    fn drain_is_local_only_when_nothing_else_protects_it() {
        let outside = Some(Peer::Tcp("10.99.0.1:4000".parse().unwrap()));
        let inside = Some(Peer::Tcp("127.0.0.1:4000".parse().unwrap()));
        let open = guard(None, false);
        assert_eq!(open.check_drain(None, outside), Err(Denied::Peer));
        assert_eq!(open.check_drain(None, inside), Ok(()));
        assert_eq!(open.check_drain(None, Some(Peer::Unix)), Ok(()));
        assert_eq!(open.check_drain(None, None), Err(Denied::Peer));
        // With api.listen or a token, today's rules apply.
        assert_eq!(guard(None, true).check_drain(None, outside), Ok(()));
        let token = guard(Some("t"), false);
        assert_eq!(token.check_drain(Some(b"Bearer t"), outside), Ok(()));
        assert_eq!(token.check_drain(None, inside), Err(Denied::Token));
    }

    #[test]
    fn token_file_is_read_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "first\n").unwrap();
        let config = ApiConfig::resolve(&RawApi {
            token_file: Some(path.display().to_string()),
            ..RawApi::default()
        })
        .unwrap();
        let g = Guard::new(&config, &Metrics::new());
        assert_eq!(g.check(Some(b"Bearer first")), Ok(()));
        std::fs::write(&path, "second").unwrap();
        g.reload();
        assert_eq!(g.check(Some(b"Bearer first")), Err(Denied::Token));
        assert_eq!(g.check(Some(b"Bearer second")), Ok(()));
        std::fs::write(&path, "").unwrap();
        g.reload();
        assert_eq!(
            g.check(Some(b"Bearer second")),
            Ok(()),
            "an empty file keeps the old token"
        );

        let missing = ApiConfig::resolve(&RawApi {
            token_file: Some("/nonexistent/token".into()),
            ..RawApi::default()
        })
        .unwrap_err();
        assert_eq!(missing.key, "api.token_file");
    }
}
