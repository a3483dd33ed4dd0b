//! The `callback.*` and `proxy_set_header` keys: callback URLs (split so the
//! client's query can be merged in), the timeout, and the headers set on
//! every callback request.
//!
//! Owns their types, defaults and validation; the client that uses them is
//! `callback/mod.rs`.

use std::collections::BTreeMap;
use std::time::Duration;

use http::header::{HeaderName, HeaderValue};
use http::Uri;
use serde::{Deserialize, Serialize};

use crate::config::error::ConfigError;
use crate::duration::GoDuration;

/// Default callback timeout: the Go server has none, which lets a hung app
/// hold client handshakes open forever.
pub(crate) const DEFAULT_CALLBACK_TIMEOUT: Duration = Duration::from_secs(10);

/// Default of `callback.concurrency`.
pub(crate) const DEFAULT_CONCURRENCY: usize = 256;
/// Default of `callback.retry_for`.
pub(crate) const DEFAULT_RETRY_FOR: Duration = Duration::from_secs(300);
/// Default of `callback.max_pending_bytes`.
pub(crate) const DEFAULT_MAX_PENDING_BYTES: usize = 64 << 20;

/// `callback.*` as written in the config file.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawCallback {
    pub(crate) connect: Option<String>,
    pub(crate) establish: Option<String>,
    pub(crate) receive: Option<String>,
    pub(crate) close: Option<String>,
    pub(crate) timeout: Option<GoDuration>,
    pub(crate) concurrency: Option<usize>,
    pub(crate) retry_for: Option<GoDuration>,
    pub(crate) max_pending_bytes: Option<usize>,
    pub(crate) retry_timeouts: Option<bool>,
}

/// A callback URL, split so the client's query can be merged in per request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CallbackUrl {
    /// scheme://authority/path without the query.
    pub(crate) base: String,
    /// The configured query string, if any (without `?`).
    pub(crate) query: Option<String>,
}

impl CallbackUrl {
    /// The URL with `extra` query parameters after the configured ones.
    pub(crate) fn with_query(&self, extra: Option<&str>) -> String {
        let extra = extra.filter(|q| !q.is_empty());
        match (self.query.as_deref(), extra) {
            (None, None) => self.base.clone(),
            (Some(q), None) | (None, Some(q)) => format!("{}?{}", self.base, q),
            (Some(a), Some(b)) => format!("{}?{}&{}", self.base, a, b),
        }
    }

    fn parse(key: &str, url: &str) -> Result<CallbackUrl, ConfigError> {
        let uri: Uri = url
            .parse()
            .map_err(|e| ConfigError::new(key, format!("{url:?} is not a valid URL: {e}")))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => {
                return Err(ConfigError::new(
                    key,
                    format!("{url:?}: https callbacks are not supported; the app is expected beside kuiperbelt over plain http"),
                ))
            }
            _ => {
                return Err(ConfigError::new(
                    key,
                    format!("{url:?} must be an absolute http:// URL"),
                ))
            }
        }
        let authority = uri
            .authority()
            .ok_or_else(|| ConfigError::new(key, format!("{url:?} has no host")))?;
        Ok(CallbackUrl {
            base: format!("http://{}{}", authority, uri.path()),
            query: uri.query().filter(|q| !q.is_empty()).map(str::to_string),
        })
    }

    fn optional(key: &str, url: &Option<String>) -> Result<Option<CallbackUrl>, ConfigError> {
        url.as_deref()
            .filter(|s| !s.is_empty())
            .map(|url| CallbackUrl::parse(key, url))
            .transpose()
    }
}

/// The resolved callback settings.
#[derive(Debug, Clone)]
pub(crate) struct CallbackConfig {
    pub(crate) connect: CallbackUrl,
    pub(crate) establish: Option<CallbackUrl>,
    pub(crate) receive: Option<CallbackUrl>,
    pub(crate) close: Option<CallbackUrl>,
    /// `None` means no limit (`callback.timeout: 0`).
    pub(crate) timeout: Option<Duration>,
    /// Header to set (`Some`) or remove (`None`) on every callback request.
    pub(crate) proxy_set_header: Vec<(HeaderName, Option<HeaderValue>)>,
    /// Receive and close callbacks in flight at once.
    pub(crate) concurrency: usize,
    /// How long a receive or close callback is retried; `None`: for ever.
    pub(crate) retry_for: Option<Duration>,
    /// Bytes of client messages waiting for the app before sessions stop
    /// reading their clients.
    pub(crate) max_pending_bytes: usize,
    /// Whether a request that timed out after it was sent is retried (the
    /// app dedupes by `X-Kuiperbelt-Sequence`) instead of given up.
    pub(crate) retry_timeouts: bool,
}

impl CallbackConfig {
    /// Resolves `callback.*` and `proxy_set_header`; the older
    /// `drain.callback_concurrency` (`concurrency_alias`) is an alias of
    /// `callback.concurrency`.
    pub(crate) fn resolve(
        raw: &RawCallback,
        concurrency_alias: Option<usize>,
        proxy_set_header: &BTreeMap<String, String>,
    ) -> Result<CallbackConfig, ConfigError> {
        let connect = match raw.connect.as_deref().filter(|s| !s.is_empty()) {
            Some(url) => CallbackUrl::parse("callback.connect", url)?,
            None => {
                return Err(ConfigError::new(
                    "callback.connect",
                    "is required: the URL kuiperbelt asks whether to accept a client",
                ))
            }
        };
        let concurrency = match (raw.concurrency, concurrency_alias) {
            (Some(n), _) => ("callback.concurrency", n),
            (None, Some(n)) => ("drain.callback_concurrency", n),
            (None, None) => ("callback.concurrency", DEFAULT_CONCURRENCY),
        };
        if concurrency.1 == 0 {
            return Err(ConfigError::new(concurrency.0, "must be at least 1"));
        }
        let max_pending_bytes = raw.max_pending_bytes.unwrap_or(DEFAULT_MAX_PENDING_BYTES);
        if max_pending_bytes == 0 {
            return Err(ConfigError::new(
                "callback.max_pending_bytes",
                "must be greater than 0",
            ));
        }
        Ok(CallbackConfig {
            connect,
            establish: CallbackUrl::optional("callback.establish", &raw.establish)?,
            receive: CallbackUrl::optional("callback.receive", &raw.receive)?,
            close: CallbackUrl::optional("callback.close", &raw.close)?,
            timeout: match raw.timeout {
                None => Some(DEFAULT_CALLBACK_TIMEOUT),
                Some(d) => d.non_zero(),
            },
            proxy_set_header: headers(proxy_set_header)?,
            concurrency: concurrency.1,
            retry_for: match raw.retry_for {
                None => Some(DEFAULT_RETRY_FOR),
                Some(d) => d.non_zero(),
            },
            max_pending_bytes,
            retry_timeouts: raw.retry_timeouts.unwrap_or(false),
        })
    }
}

/// `proxy_set_header`: an empty value removes the header.
fn headers(
    map: &BTreeMap<String, String>,
) -> Result<Vec<(HeaderName, Option<HeaderValue>)>, ConfigError> {
    map.iter()
        .map(|(name, value)| {
            let key = format!("proxy_set_header.{name}");
            let header = HeaderName::try_from(name.as_str())
                .map_err(|_| ConfigError::new(&key, "is not a valid HTTP header name"))?;
            let value = if value.is_empty() {
                None
            } else {
                Some(HeaderValue::try_from(value.as_str()).map_err(|_| {
                    ConfigError::new(&key, "value is not a valid HTTP header value")
                })?)
            };
            Ok((header, value))
        })
        .collect()
}
