//! `POST /send` and `POST /close`: address one or many sessions by repeated
//! session headers and hand each a frame through its queue.
//!
//! Owns addressing, `strict_broadcast`, `send_timeout` and the reply. Writes
//! go through each target's [`Outlet`](crate::outlet::Outlet), which never
//! blocks: a frame is written directly only when the socket takes it at once
//! and nothing is queued ahead of it. A full queue is waited on (up to
//! `send_timeout`), all targets at once, so one slow session does not delay
//! the others.

use std::borrow::Cow;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::future::join_all;
use http::header::{self, HeaderMap};
use http::{Method, Response, StatusCode};

use crate::frame;
use crate::metrics::MessageError;
use crate::outlet::{Encoded, Offer};
use crate::registry::{Outbound, SessionHandle};
use crate::reply::{self, ApiReply, Body, ErrorEntry};
use crate::state::Shared;

/// Which push endpoint was called.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushKind {
    Send,
    Close,
}

/// Handles `/send` or `/close`.
pub async fn handle(
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
    let message = if kind == PushKind::Close && body.is_empty() {
        None
    } else {
        match frame::message(headers.get(header::CONTENT_TYPE), body) {
            Ok(m) => Some(m),
            Err(e) => return reply::error(StatusCode::BAD_REQUEST, e.to_string()),
        }
    };
    let outbound = match kind {
        PushKind::Send => Outbound::Message(message.expect("send always has a frame")),
        PushKind::Close => Outbound::Close(message),
    };

    if shared.config.strict_broadcast {
        let mut unknown = Vec::new();
        shared
            .registry
            .with_each(targets.iter().map(|t| t.as_ref()), |id, handle| {
                if handle.is_none() {
                    unknown.push(ErrorEntry {
                        error: MessageError::NotFound.text().into(),
                        session: Some(id.to_string()),
                    });
                }
            });
        if !unknown.is_empty() {
            for _ in &unknown {
                shared.metrics.message_error(MessageError::NotFound);
            }
            return reply::json(StatusCode::BAD_REQUEST, &ApiReply::ng(unknown));
        }
    }

    let mut errors: Vec<(usize, MessageError)> = Vec::new();
    let accepted = deliver(&shared, &targets, outbound, &mut errors).await;
    if kind == PushKind::Close {
        // The app's close takes effect for addressing at once: later pushes
        // to these ids are "not found" while the close frame is on its way.
        for (i, serial) in &accepted {
            shared.registry.remove(&targets[*i], *serial);
        }
    }
    for (_, e) in &errors {
        shared.metrics.message_error(*e);
    }
    shared.metrics.messages_pushed.inc_by(accepted.len() as u64);
    errors.sort_by_key(|(i, _)| *i);
    let entries: Vec<ErrorEntry> = errors
        .into_iter()
        .map(|(i, e)| ErrorEntry {
            error: e.text().into(),
            session: Some(targets[i].to_string()),
        })
        .collect();
    let reply = ApiReply {
        errors: entries,
        result: if accepted.is_empty() { "NG" } else { "OK" },
    };
    reply::json(StatusCode::OK, &reply)
}

/// Offers `outbound` to every target: written straight onto idle sockets,
/// queued for the others. Returns `(target index, serial)` of the connections
/// that accepted it and records `(target index, error)` for the rest.
async fn deliver(
    shared: &Shared,
    targets: &[Cow<'_, str>],
    outbound: Outbound,
    errors: &mut Vec<(usize, MessageError)>,
) -> Vec<(usize, u64)> {
    // Encoded once: every target gets the same bytes.
    let frame = match &outbound {
        Outbound::Message(message) => Some(Encoded::new(message)),
        _ => None,
    };
    let mut accepted = Vec::with_capacity(targets.len());
    let mut waiting: Vec<(usize, SessionHandle)> = Vec::new();
    let mut written = 0u64;
    let mut index = 0;
    // Fast path under one read lock: nothing here waits.
    shared
        .registry
        .with_each(targets.iter().map(|t| t.as_ref()), |_, handle| {
            let i = index;
            index += 1;
            let Some(h) = handle else {
                errors.push((i, MessageError::NotFound));
                return;
            };
            match h.outlet.offer(frame.as_ref(), &outbound, &h.tx) {
                Offer::Written => {
                    written += 1;
                    accepted.push((i, h.serial));
                }
                Offer::Queued => accepted.push((i, h.serial)),
                Offer::Full => waiting.push((i, h.clone())),
                Offer::Closed => errors.push((i, MessageError::Closed)),
            }
        });
    if let (Some(frame), true) = (&frame, written > 0) {
        shared.metrics.messages_delivered.inc_by(written);
        let bytes = written * frame.payload as u64;
        shared.metrics.sent_bytes.inc_by(bytes);
    }
    // Slow path: wait for room in the full queues, all at once.
    if !waiting.is_empty() {
        let limit = shared.config.send_timeout;
        let results = join_all(waiting.iter().map(|(_, h)| {
            let out = outbound.clone();
            async move {
                let send = h.tx.send_async(out);
                let result = match limit {
                    Some(limit) => match tokio::time::timeout(limit, send).await {
                        Ok(sent) => sent.map_err(|_| MessageError::Closed),
                        Err(_) => Err(MessageError::QueueFull),
                    },
                    None => send.await.map_err(|_| MessageError::Closed),
                };
                if result.is_err() {
                    // Give back the place `offer` reserved.
                    h.outlet.release(1);
                }
                result
            }
        }))
        .await;
        for ((i, h), result) in waiting.iter().zip(results) {
            match result {
                Ok(()) => accepted.push((*i, h.serial)),
                Err(e) => errors.push((*i, e)),
            }
        }
    }
    accepted
}
