//! HTTP requests to the app: the connect, establish, receive and close
//! callbacks, over one pooled keep-alive hyper client.
//!
//! Owns what each callback request carries (headers, query, body) and its
//! timeout and metrics. It does not decide what a failed callback means.

pub(crate) mod config;
mod gate;
pub(crate) mod metrics;
pub(crate) mod outbox;
mod request;
mod retry;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::{capture_connection, HttpConnector};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::metrics::Metrics;
use config::{CallbackConfig, CallbackUrl};
use metrics::CallbackMetrics;
use outbox::Outbox;
pub(crate) use request::{CallbackError, CallbackKind, CallbackResponse};

/// Header that tells the app which kuiperbelt holds the connection.
pub(crate) const ENDPOINT_HEADER: &str = "x-kuiperbelt-endpoint";
/// Header of the close callback that says why the connection ended.
pub(crate) const CLOSE_REASON_HEADER: &str = "x-kuiperbelt-close-reason";
/// Header of the receive callback: the message's number on its connection
/// (1, 2, ...), the same on every retry, so the app can drop repeats.
pub(crate) const SEQUENCE_HEADER: &str = "x-kuiperbelt-sequence";

/// Keep-alive connections to the app idle longer than this are closed.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// The client every callback goes through.
#[derive(Clone)]
pub(crate) struct Callbacks {
    client: Client<HttpConnector, Full<Bytes>>,
    config: Arc<CallbackConfig>,
    session_header: HeaderName,
    endpoint: HeaderValue,
    metrics: CallbackMetrics,
    outbox: Arc<Outbox>,
}

impl Callbacks {
    pub(crate) fn new(
        config: CallbackConfig,
        session_header: HeaderName,
        endpoint: &str,
        metrics: &Metrics,
    ) -> Callbacks {
        let metrics = CallbackMetrics::new(metrics);
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_keepalive(Some(Duration::from_secs(60)));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .pool_timer(hyper_util::rt::TokioTimer::new())
            .build(connector);
        let outbox = Outbox::new(&config, metrics.clone());
        Callbacks {
            client,
            outbox: Arc::new(outbox),
            config: Arc::new(config),
            session_header,
            endpoint: HeaderValue::from_str(endpoint)
                .unwrap_or(HeaderValue::from_static("kuiperbelt")),
            metrics,
        }
    }

    /// Asks the app whether to accept a client: the client's method, query,
    /// headers (minus hop-by-hop and `Sec-WebSocket-*`) and body.
    pub(crate) async fn connect(
        &self,
        method: Method,
        query: Option<&str>,
        client_headers: &HeaderMap,
        body: Bytes,
    ) -> Result<CallbackResponse, CallbackError> {
        let url = self.config.connect.with_query(query);
        let mut headers = HeaderMap::with_capacity(client_headers.len() + 2);
        for (name, value) in client_headers {
            if forwarded(name) {
                headers.append(name.clone(), value.clone());
            }
        }
        self.request(CallbackKind::Connect, method, url, headers, body)
            .await
    }

    /// Tells the app the upgrade is done; anything but 200 is an error.
    pub(crate) async fn establish(&self, session: &str) -> Result<(), CallbackError> {
        let Some(url) = &self.config.establish else {
            return Ok(());
        };
        self.post_session(CallbackKind::Establish, url, session, [], Bytes::new())
            .await
    }

    /// Forwards one client message (message `sequence` of its connection):
    /// one attempt; `Ok` when no receive callback is set.
    pub(crate) async fn receive(
        &self,
        session: &str,
        sequence: u64,
        body: Bytes,
        binary: bool,
    ) -> Result<(), CallbackError> {
        let Some(url) = &self.config.receive else {
            return Ok(());
        };
        let content_type = if binary {
            "application/octet-stream"
        } else {
            "text/plain"
        };
        let extra = [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (
                HeaderName::from_static(SEQUENCE_HEADER),
                HeaderValue::from(sequence),
            ),
        ];
        self.post_session(CallbackKind::Receive, url, session, extra, body)
            .await
    }

    /// Tells the app a client left, and why (`X-Kuiperbelt-Close-Reason`:
    /// `reason`); not for closes the app asked for.
    pub(crate) async fn close(
        &self,
        session: &str,
        reason: &'static str,
    ) -> Result<(), CallbackError> {
        let Some(url) = &self.config.close else {
            return Ok(());
        };
        let extra = [(
            HeaderName::from_static(CLOSE_REASON_HEADER),
            HeaderValue::from_static(reason),
        )];
        self.post_session(CallbackKind::Close, url, session, extra, Bytes::new())
            .await
    }

    /// Retries, the gate and the pending budget of receive and close callbacks.
    pub(crate) fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    /// The callback metrics (`/status` reads the gate and the backlog).
    pub(crate) fn metrics(&self) -> &CallbackMetrics {
        &self.metrics
    }

    pub(crate) fn has_receive(&self) -> bool {
        self.config.receive.is_some()
    }

    pub(crate) fn has_close(&self) -> bool {
        self.config.close.is_some()
    }

    async fn post_session(
        &self,
        kind: CallbackKind,
        url: &CallbackUrl,
        session: &str,
        extra: impl IntoIterator<Item = (HeaderName, HeaderValue)>,
        body: Bytes,
    ) -> Result<(), CallbackError> {
        let mut headers = HeaderMap::with_capacity(4);
        let value = HeaderValue::from_str(session).map_err(|_| {
            CallbackError::Invalid(
                kind.label(),
                "session id is not a valid header value".into(),
            )
        })?;
        headers.insert(self.session_header.clone(), value);
        for (name, value) in extra {
            headers.insert(name, value);
        }
        let res = self
            .request(kind, Method::POST, url.with_query(None), headers, body)
            .await?;
        if res.status == StatusCode::OK {
            Ok(())
        } else {
            Err(CallbackError::Status(kind.label(), res.status))
        }
    }

    /// Sends one callback request: applies `proxy_set_header`, then sets the
    /// endpoint header; reads the whole response within `callback.timeout`.
    async fn request(
        &self,
        kind: CallbackKind,
        method: Method,
        url: String,
        mut headers: HeaderMap,
        body: Bytes,
    ) -> Result<CallbackResponse, CallbackError> {
        for (name, value) in &self.config.proxy_set_header {
            match value {
                Some(v) => {
                    headers.insert(name.clone(), v.clone());
                }
                None => {
                    headers.remove(name);
                }
            }
        }
        headers.insert(
            HeaderName::from_static(ENDPOINT_HEADER),
            self.endpoint.clone(),
        );

        let mut req = Request::builder()
            .method(method)
            .uri(&url)
            .body(Full::new(body))
            .map_err(|e| {
                CallbackError::Invalid(kind.label(), format!("bad request to {url}: {e}"))
            })?;
        *req.headers_mut() = headers;
        // Tells a timeout after the request went out from one while connecting.
        let connection = capture_connection(&mut req);

        let started = Instant::now();
        let exchange = async {
            let res = self
                .client
                .request(req)
                .await
                .map_err(|e| CallbackError::Request(kind.label(), error_chain(&e)))?;
            let (parts, body) = res.into_parts();
            let body = body
                .collect()
                .await
                .map_err(|e| CallbackError::Request(kind.label(), format!("reading body: {e}")))?
                .to_bytes();
            Ok(CallbackResponse {
                status: parts.status,
                headers: parts.headers,
                body,
            })
        };
        let result = match self.config.timeout {
            Some(limit) => tokio::time::timeout(limit, exchange)
                .await
                .unwrap_or_else(|_| {
                    Err(if connection.connection_metadata().is_some() {
                        CallbackError::Timeout(kind.label(), limit)
                    } else {
                        CallbackError::ConnectTimeout(kind.label(), limit)
                    })
                }),
            None => exchange.await,
        };
        let status = result.as_ref().ok().map(|r| r.status.as_u16());
        self.metrics
            .request(kind, status, started.elapsed().as_secs_f64());
        result
    }
}

/// Whether a client header is passed on to the connect callback.
fn forwarded(name: &HeaderName) -> bool {
    let n = name.as_str();
    !(n.starts_with("sec-websocket-")
        || n == ENDPOINT_HEADER
        || name == header::HOST
        || name == header::CONNECTION
        || name == header::UPGRADE
        || name == header::CONTENT_LENGTH
        || name == header::TRANSFER_ENCODING
        || name == header::TE
        || name == header::TRAILER
        || n == "keep-alive"
        || n == "proxy-connection")
}

/// An error with its sources, for one log line.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_and_websocket_headers_are_not_forwarded() {
        for h in [
            "connection",
            "upgrade",
            "sec-websocket-key",
            "sec-websocket-version",
            "host",
            "x-kuiperbelt-endpoint",
        ] {
            assert!(!forwarded(&HeaderName::from_static(h)), "{h}");
        }
        for h in [
            "cookie",
            "authorization",
            "origin",
            "user-agent",
            "x-custom",
        ] {
            assert!(forwarded(&HeaderName::from_static(h)), "{h}");
        }
    }
}
