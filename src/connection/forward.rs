//! What one connection says to the app: its client messages, numbered
//! (`X-Kuiperbelt-Sequence`) and forwarded to the receive callback in order,
//! one request at a time, each retried through the outbox while the app is
//! away (one that times out is given up, and the next follows); and at its
//! end exactly one close callback, after every receive still waiting.
//!
//! Owns the per-connection order and the bound on waiting messages (the
//! session stops reading its client when it is reached, or when the
//! server-wide pending bytes are). Retries and the gate are the outbox's.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use tokio::time::Instant;

use super::metrics::CloseReason;
use crate::callback::outbox::Subject;
use crate::callback::CallbackKind;
use crate::state::Shared;

/// Client messages waiting for the receive callback before the session stops
/// reading its socket (TCP backpressure reaches the client).
const MAX_PENDING_RECEIVES: usize = 32;

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// One client message on its way to the app.
struct Pending {
    sequence: u64,
    body: Bytes,
    binary: bool,
    /// When the client sent it: `callback.retry_for` counts from here.
    received: Instant,
}

/// Client messages on their way to the receive callback.
#[derive(Default)]
pub(super) struct Forwarder {
    in_flight: Option<BoxFuture<()>>,
    pending: VecDeque<Pending>,
    /// The last sequence number given.
    sequence: u64,
}

/// Forwards one client message until the app answers (or it is dropped),
/// then gives its bytes back to the budget.
async fn forward(shared: Arc<Shared>, id: Arc<str>, message: Pending) {
    let outbox = shared.callbacks.outbox();
    let len = message.body.len();
    let subject = Subject {
        kind: CallbackKind::Receive,
        session: &id,
        sequence: Some(message.sequence),
    };
    outbox
        .deliver(subject, message.received, || {
            shared
                .callbacks
                .receive(&id, message.sequence, message.body.clone(), message.binary)
        })
        .await;
    outbox.done(len);
}

impl Forwarder {
    /// Numbers a client message and queues it for the receive callback.
    pub(super) fn push(&mut self, shared: &Shared, body: Bytes, binary: bool) {
        self.sequence += 1;
        shared.callbacks.outbox().queued(body.len());
        self.pending.push_back(Pending {
            sequence: self.sequence,
            body,
            binary,
            received: Instant::now(),
        });
    }

    /// Whether the session may read another client message.
    pub(super) fn has_room(&self) -> bool {
        self.pending.len() < MAX_PENDING_RECEIVES
    }

    /// Starts the next request if none is in flight.
    pub(super) fn start_next(&mut self, shared: &Arc<Shared>, id: &Arc<str>) {
        if self.in_flight.is_none() {
            if let Some(message) = self.pending.pop_front() {
                let fut = forward(shared.clone(), id.clone(), message);
                self.in_flight = Some(Box::pin(fut));
            }
        }
    }

    pub(super) fn busy(&self) -> bool {
        self.in_flight.is_some()
    }

    /// Resolves when the request in flight is answered (never, with none).
    pub(super) async fn completed(&mut self) {
        match &mut self.in_flight {
            Some(f) => {
                f.await;
                self.in_flight = None;
            }
            None => std::future::pending().await,
        }
    }

    /// The connection ended: sends what is still waiting, then the close
    /// callback when `close` says why, in the background.
    pub(super) fn finish(self, shared: &Arc<Shared>, id: Arc<str>, close: Option<CloseReason>) {
        let Forwarder {
            in_flight,
            mut pending,
            ..
        } = self;
        if in_flight.is_none() && pending.is_empty() && close.is_none() {
            return;
        }
        if close.is_some() {
            shared.metrics.figures.connections_closing.inc();
            shared.callbacks.outbox().queued(0);
        }
        let task = shared.clone();
        let ended = Instant::now();
        shared.tasks.background.spawn(async move {
            if let Some(f) = in_flight {
                f.await;
            }
            while let Some(message) = pending.pop_front() {
                forward(task.clone(), id.clone(), message).await;
            }
            if let Some(reason) = close {
                let outbox = task.callbacks.outbox();
                let subject = Subject {
                    kind: CallbackKind::Close,
                    session: &id,
                    sequence: None,
                };
                outbox
                    .deliver(subject, ended, || task.callbacks.close(&id, reason.label()))
                    .await;
                outbox.done(0);
                task.metrics.figures.connections_closing.dec();
            }
        });
    }
}
