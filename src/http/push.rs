//! `POST /send` and `POST /close`: read the targets (one session header per
//! target) and the body, hand them to [`Sessions::deliver`], and answer
//! with the contract's JSON.
//!
//! Owns the HTTP side of a push: method and header checks, the frame type,
//! `strict_broadcast`, and the reply texts. Delivery itself (direct writes,
//! queues, `send_timeout`) is the sessions core's.

use std::borrow::Cow;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderMap};
use http::{Method, Response, StatusCode};

use super::reply::{self, ApiReply, Body, ErrorEntry};
use crate::frame;
use crate::sessions::outlet::Push;
use crate::sessions::Outcome;
use crate::state::Shared;

/// Which push endpoint was called.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PushKind {
    Send,
    Close,
}

/// The text of a target's entry in `errors`.
pub(crate) fn error_text(outcome: Outcome) -> Option<&'static str> {
    match outcome {
        Outcome::Written | Outcome::Queued => None,
        Outcome::NotFound => Some("session is not found."),
        Outcome::Full => Some("session queue is full."),
        Outcome::Closed => Some("session is closed."),
        Outcome::Unavailable => Some("cluster is unavailable."),
    }
}

/// Handles `/send` or `/close`.
pub(crate) async fn handle(
    shared: Arc<Shared>,
    kind: PushKind,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response<Body> {
    if method != Method::POST {
        return reply::error(StatusCode::METHOD_NOT_ALLOWED, "required POST method");
    }
    let targets: Vec<Cow<str>> = headers
        .get_all(&shared.config.session_header)
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()))
        .collect();
    if targets.is_empty() {
        return reply::error(StatusCode::BAD_REQUEST, "session header is missing");
    }
    let push = if kind == PushKind::Close && body.is_empty() {
        Push::Close(None)
    } else {
        match frame::encode(headers.get(header::CONTENT_TYPE), body) {
            Ok(frame) if kind == PushKind::Send => Push::Message(frame),
            Ok(frame) => Push::Close(Some(frame)),
            Err(e) => return reply::error(StatusCode::BAD_REQUEST, e.to_string()),
        }
    };

    let strict = shared.config.strict_broadcast;
    if strict {
        // Nothing is sent when a target is unknown (on every node).
        let mut missing: Vec<(usize, Outcome)> = shared
            .sessions
            .missing(&targets)
            .into_iter()
            .map(|i| (i, Outcome::NotFound))
            .collect();
        if let (Some(cluster), false) = (&shared.cluster, missing.is_empty()) {
            let ids: Vec<&str> = missing.iter().map(|(i, _)| targets[*i].as_ref()).collect();
            let remote = cluster.unreachable(&ids).await;
            missing = missing
                .into_iter()
                .zip(remote)
                .filter_map(|((i, _), why)| why.map(|o| (i, o)))
                .collect();
        }
        if !missing.is_empty() {
            return reply::json(
                StatusCode::BAD_REQUEST,
                &ApiReply::ng(entries(&targets, missing.into_iter())),
            );
        }
    }
    // Kept for the other nodes only in cluster mode (a clone of the frame's
    // handle, not of its bytes).
    let remote = shared.cluster.as_ref().map(|_| push.clone());
    let mut outcomes = shared.sessions.deliver(&targets, push).await;
    if let (Some(cluster), Some(push)) = (&shared.cluster, remote) {
        let elsewhere: Vec<usize> = (0..targets.len())
            .filter(|i| outcomes[*i] == Outcome::NotFound)
            .collect();
        if !elsewhere.is_empty() {
            let ids: Vec<&str> = elsewhere.iter().map(|i| targets[*i].as_ref()).collect();
            for (i, outcome) in elsewhere
                .into_iter()
                .zip(cluster.deliver(&ids, &push).await)
            {
                outcomes[i] = outcome;
            }
        }
    }
    let delivered = outcomes.iter().any(|o| o.delivered());
    let errors = entries(&targets, outcomes.into_iter().enumerate());
    if strict && !errors.is_empty() {
        return reply::json(StatusCode::BAD_REQUEST, &ApiReply::ng(errors));
    }
    let reply = ApiReply {
        errors,
        result: if delivered { "OK" } else { "NG" },
    };
    if reply.errors.is_empty() {
        return reply::ok();
    }
    reply::json(StatusCode::OK, &reply)
}

/// One `errors` entry per failed target, in target order.
fn entries(
    targets: &[Cow<'_, str>],
    outcomes: impl Iterator<Item = (usize, Outcome)>,
) -> Vec<ErrorEntry> {
    outcomes
        .filter_map(|(i, outcome)| {
            error_text(outcome).map(|text| ErrorEntry {
                error: text.into(),
                session: Some(targets[i].to_string()),
            })
        })
        .collect()
}
