//! What one connection says to the app: its client messages, forwarded to
//! the receive callback in order with one request in flight, and at its end
//! the close callback, after every receive still waiting.
//!
//! Owns the per-connection order and the bound on waiting messages (the
//! session stops reading its client when it is reached). Requests
//! themselves are the callback client's.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;

use super::CloseReason;
use crate::state::Shared;

/// Client messages waiting for the receive callback before the session stops
/// reading its socket (TCP backpressure reaches the client).
const MAX_PENDING_RECEIVES: usize = 32;

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// Client messages on their way to the receive callback.
#[derive(Default)]
pub(super) struct Forwarder {
    in_flight: Option<BoxFuture<()>>,
    pending: VecDeque<(Bytes, bool)>,
}

/// Forwards one client message, logging (not propagating) a failure.
async fn forward(shared: Arc<Shared>, id: Arc<str>, body: Bytes, binary: bool) {
    if let Err(e) = shared.callbacks.receive(&id, body, binary).await {
        tracing::warn!(session = %id, error = %e, "receive callback failed");
    }
}

impl Forwarder {
    /// Queues a client message for the receive callback.
    pub(super) fn push(&mut self, body: Bytes, binary: bool) {
        self.pending.push_back((body, binary));
    }

    /// Whether the session may read another client message.
    pub(super) fn has_room(&self) -> bool {
        self.pending.len() < MAX_PENDING_RECEIVES
    }

    /// Starts the next request if none is in flight.
    pub(super) fn start_next(&mut self, shared: &Arc<Shared>, id: &Arc<str>) {
        if self.in_flight.is_none() {
            if let Some((body, binary)) = self.pending.pop_front() {
                let fut = forward(shared.clone(), id.clone(), body, binary);
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
        } = self;
        if in_flight.is_none() && pending.is_empty() && close.is_none() {
            return;
        }
        if close.is_some() {
            shared.metrics.connections_closing.inc();
        }
        let task = shared.clone();
        shared.tasks.background.spawn(async move {
            if let Some(f) = in_flight {
                f.await;
            }
            while let Some((body, binary)) = pending.pop_front() {
                forward(task.clone(), id.clone(), body, binary).await;
            }
            if let Some(reason) = close {
                let permit = task.close_permits.acquire().await;
                if let Err(e) = task.callbacks.close(&id, reason).await {
                    tracing::warn!(session = %id, error = %e, "close callback failed");
                }
                drop(permit);
                task.metrics.connections_closing.dec();
            }
        });
    }
}
