//! `GET /connect`: origin policy, handshake checks, the connect callback, and
//! the upgrade that hands the socket to a new session task; the
//! `origin_policy` key.
//!
//! Owns the decision to accept or refuse a client, the reply on refusal,
//! and the 101 (with permessage-deflate when the client offers it and
//! `compression.enabled`).
//! Without `callback.establish` it registers the session before answering
//! 101, so the app may push to it as soon as its connect callback has
//! returned; with it, the session task registers once establish says yes.

use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Response, StatusCode};
use hyper::upgrade::OnUpgrade;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

use super::config::OriginPolicy;
use super::reply::{self, Body};
use super::{CHANNEL, CHANNEL_HEADER};
use crate::connection::metrics::Refusal;
use crate::connection::{Session, Welcome};
use crate::frame::{self, SessionDeflate};
use crate::sessions::channels::parse_names;
use crate::state::Shared;
use crate::websocket::negotiate;

/// What the router extracts from a `/connect` request.
pub(crate) struct ConnectRequest {
    pub(crate) method: Method,
    pub(crate) query: Option<String>,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
    pub(crate) on_upgrade: Option<OnUpgrade>,
    pub(crate) peer: Option<super::Peer>,
}

/// Handles one `/connect` request end to end.
pub(crate) async fn handle(shared: Arc<Shared>, req: ConnectRequest) -> Response<Body> {
    shared.connection_metrics.connect_request();
    let refuse = |reason: Refusal, res: Response<Body>| {
        shared.connection_metrics.refused(reason);
        res
    };
    if !shared.lifecycle.accepts_upgrades() {
        return refuse(
            Refusal::Draining,
            reply::error(StatusCode::SERVICE_UNAVAILABLE, "server is draining"),
        );
    }
    if !origin_allowed(shared.config.origin_policy, &req.headers) {
        return refuse(
            Refusal::Origin,
            reply::error(StatusCode::FORBIDDEN, "origin not allowed"),
        );
    }
    let key = match handshake_key(&req.method, &req.headers) {
        Ok(key) => key,
        Err(e) => return refuse(Refusal::NotWebSocket, e.reply()),
    };

    let callback = shared
        .callbacks
        .connect(req.method, req.query.as_deref(), &req.headers, req.body)
        .await;
    let answer = match callback {
        Ok(answer) => answer,
        Err(e) => {
            tracing::warn!(error = %e, "connect callback failed");
            return refuse(
                Refusal::CallbackFailed,
                reply::error(StatusCode::BAD_GATEWAY, "connect callback failed"),
            );
        }
    };
    if answer.status != StatusCode::OK {
        let reason = if answer.status == StatusCode::FORBIDDEN {
            Refusal::CallbackForbidden
        } else {
            Refusal::CallbackRefused
        };
        let mut res = Response::new(answer.body);
        *res.status_mut() = answer.status;
        if let Some(ct) = answer.headers.get(header::CONTENT_TYPE) {
            res.headers_mut().insert(header::CONTENT_TYPE, ct.clone());
        }
        return refuse(reason, res);
    }
    let Some(id) = answer
        .headers
        .get(&shared.config.session_header)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
    else {
        return refuse(
            Refusal::NoSessionHeader,
            reply::error(
                StatusCode::BAD_REQUEST,
                format!(
                    "connect callback did not answer a {} header",
                    shared.config.session_header
                ),
            ),
        );
    };
    let first = if answer.body.is_empty() {
        None
    } else {
        match frame::encode(answer.headers.get(header::CONTENT_TYPE), answer.body) {
            Ok(frame) => Some(frame),
            Err(e) => {
                tracing::warn!(session = id, error = %e, "connect callback body cannot be a text frame");
                return refuse(
                    Refusal::BadFirstMessage,
                    reply::error(
                        StatusCode::BAD_GATEWAY,
                        "connect callback body is not valid UTF-8 text",
                    ),
                );
            }
        }
    };
    let channels = match answered_channels(&answer.headers, shared.sessions.max_channels()) {
        Ok(channels) => channels,
        Err(e) => {
            tracing::warn!(session = id, error = %e, "connect callback answered channels that cannot be joined");
            return refuse(
                Refusal::BadChannels,
                reply::error(StatusCode::BAD_GATEWAY, e),
            );
        }
    };
    let Some(on_upgrade) = req.on_upgrade else {
        return reply::error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "connection cannot be upgraded",
        );
    };

    let remote = req.peer.map(|p| p.to_string());
    let accepted = shared
        .compression
        .deflater
        .as_ref()
        .and_then(|deflater| Some((deflater, negotiate::accept(&req.headers)?)));
    let deflate = accepted.map(|(deflater, accepted)| SessionDeflate {
        deflater: deflater.clone(),
        window_bits: accepted.window_bits(),
    });
    if deflate.is_some() {
        shared.compression.negotiated.inc();
    }
    let (conn, mailbox) = shared.sessions.attach(Arc::from(id), remote, deflate);
    let gated = shared.config.callback.establish.is_some();
    if !gated {
        shared.sessions.register(&conn, &channels);
    }
    shared.connection_metrics.accepted.inc();
    let welcome = Welcome::new(first, if gated { channels } else { Vec::new() });
    let session = Session::new(shared.clone(), conn, mailbox, welcome, gated);
    shared.tasks.sessions.spawn(session.run(on_upgrade));

    let mut res = Response::new(Bytes::new());
    *res.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = res.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(
        header::SEC_WEBSOCKET_ACCEPT,
        HeaderValue::from_str(&key).expect("base64 is a valid header value"),
    );
    if let Some((_, accepted)) = accepted {
        h.insert(header::SEC_WEBSOCKET_EXTENSIONS, accepted.response());
    }
    res
}

/// The channels a connect callback's `200` puts the session in.
fn answered_channels(headers: &HeaderMap, max: usize) -> Result<Vec<Arc<str>>, String> {
    let names = parse_names(headers.get_all(CHANNEL).iter().map(|v| v.as_bytes()))
        .map_err(|e| format!("connect callback answered a bad {CHANNEL_HEADER} header: {e}"))?;
    if names.len() > max {
        return Err(format!(
            "connect callback answered {} channels: too many channels. (channel.max_per_session is {max})",
            names.len()
        ));
    }
    Ok(names.into_iter().map(Arc::from).collect())
}

/// Why a request is not a WebSocket handshake we can answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HandshakeError {
    Method,
    NotUpgrade,
    Version,
    MissingKey,
}

impl HandshakeError {
    fn reply(self) -> Response<Body> {
        match self {
            HandshakeError::Method => {
                reply::error(StatusCode::METHOD_NOT_ALLOWED, "required GET method")
            }
            HandshakeError::NotUpgrade => {
                reply::error(StatusCode::BAD_REQUEST, "websocket upgrade required")
            }
            HandshakeError::MissingKey => {
                reply::error(StatusCode::BAD_REQUEST, "missing Sec-WebSocket-Key")
            }
            HandshakeError::Version => {
                let mut res = reply::error(
                    StatusCode::UPGRADE_REQUIRED,
                    "unsupported websocket version: use 13",
                );
                res.headers_mut().insert(
                    header::SEC_WEBSOCKET_VERSION,
                    HeaderValue::from_static("13"),
                );
                res
            }
        }
    }
}

/// Checks the WebSocket handshake headers; returns the `Sec-WebSocket-Accept` value.
fn handshake_key(method: &Method, headers: &HeaderMap) -> Result<String, HandshakeError> {
    if method != Method::GET {
        return Err(HandshakeError::Method);
    }
    let has_token = |name: header::HeaderName, token: &str| {
        headers.get_all(name).iter().any(|v| {
            v.to_str()
                .map(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
                .unwrap_or(false)
        })
    };
    if !has_token(header::CONNECTION, "upgrade") || !has_token(header::UPGRADE, "websocket") {
        return Err(HandshakeError::NotUpgrade);
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .map(|v| v.as_bytes())
        != Some(b"13")
    {
        return Err(HandshakeError::Version);
    }
    match headers.get(header::SEC_WEBSOCKET_KEY) {
        Some(key) if !key.is_empty() => Ok(derive_accept_key(key.as_bytes())),
        _ => Err(HandshakeError::MissingKey),
    }
}

/// Applies `origin_policy`. A request without `Origin` (not a browser) passes.
pub(crate) fn origin_allowed(policy: OriginPolicy, headers: &HeaderMap) -> bool {
    if policy == OriginPolicy::None {
        return true;
    }
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let Some(host) = headers.get(header::HOST).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let Some(origin_host) = origin
        .parse::<http::Uri>()
        .ok()
        .and_then(|u| u.authority().cloned())
    else {
        return false;
    };
    match policy {
        OriginPolicy::None => true,
        OriginPolicy::SameOrigin => origin_host.as_str().eq_ignore_ascii_case(host),
        OriginPolicy::SameHostname => {
            let host_only = host
                .parse::<http::uri::Authority>()
                .map(|a| a.host().to_string());
            host_only.is_ok_and(|h| h.eq_ignore_ascii_case(origin_host.host()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(origin: Option<&'static str>, host: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static(host));
        if let Some(o) = origin {
            h.insert(header::ORIGIN, HeaderValue::from_static(o));
        }
        h
    }

    #[test]
    fn origin_policies() {
        use OriginPolicy::*;
        assert!(origin_allowed(None, &headers(Some("http://evil"), "a:1")));
        assert!(origin_allowed(
            SameOrigin,
            &headers(Some("http://a:1"), "a:1")
        ));
        assert!(!origin_allowed(
            SameOrigin,
            &headers(Some("http://a:2"), "a:1")
        ));
        assert!(origin_allowed(
            SameHostname,
            &headers(Some("https://A:2"), "a:1")
        ));
        assert!(!origin_allowed(
            SameHostname,
            &headers(Some("http://b:1"), "a:1")
        ));
        assert!(!origin_allowed(SameOrigin, &headers(Some("null"), "a:1")));
        assert!(origin_allowed(SameOrigin, &headers(Option::None, "a:1")));
    }
}
