//! The sessions core: every addressable connection, and the one way to reach
//! them. `/send`, `/close` (and anything else that pushes) call
//! [`Sessions::deliver`]; connections come and go through
//! [`Sessions::attach`], [`Sessions::register`] and [`Sessions::unregister`];
//! the drain stops them with [`Sessions::close_all`].
//!
//! Owns the id -> connection map ([`registry`]), each connection's write side
//! and queue accounting ([`outlet`]), and the rules between them: the newest
//! connection with an id wins, a push is written directly or queued in
//! order, a full queue is waited on up to `send_timeout`, and the app's
//! close takes effect for addressing at once. It never reads a socket; the
//! session task does.

mod handle;
pub(crate) mod metrics;
mod outcome;
pub(crate) mod outlet;
pub(crate) mod registry;
pub(crate) mod socket;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use tokio::sync::mpsc;

use crate::metrics::Metrics;
pub(crate) use handle::{Info, Stop, StopReason};
use metrics::SessionsMetrics;
pub(crate) use outcome::{Outcome, WriteError};
use outlet::{Mailbox, Outlet, Push};
use registry::{Entry, Registry};

/// A session became addressable here, or stopped being (for cluster mode,
/// which subscribes to each session's subject while this node holds it).
#[derive(Debug, Clone)]
pub(crate) enum SessionEvent {
    Registered { id: Arc<str>, serial: u64 },
    Unregistered { id: Arc<str>, serial: u64 },
}

/// One session as `GET /sessions` lists it.
#[derive(Debug, serde::Serialize)]
pub(crate) struct SessionView {
    pub(crate) session: String,
    pub(crate) age_seconds: f64,
    pub(crate) remote: Option<String>,
    pub(crate) messages_in: u64,
    pub(crate) messages_out: u64,
    pub(crate) queued_bytes: usize,
}

/// A connection with an id that is not (yet) addressable: the connect
/// handler attaches it, and it is registered before or after the upgrade.
#[derive(Debug)]
pub(crate) struct Attached {
    pub(crate) id: Arc<str>,
    pub(crate) serial: u64,
    pub(crate) stop: Arc<Stop>,
    pub(crate) info: Arc<Info>,
    outlet: Arc<Outlet>,
}

/// Every addressable session of this server.
#[derive(Debug)]
pub(crate) struct Sessions {
    registry: Registry,
    next_serial: AtomicU64,
    /// Set by the drain: a session registered from now on is stopped at once.
    closing: AtomicBool,
    queue_size: usize,
    send_timeout: Option<Duration>,
    metrics: SessionsMetrics,
    /// Where registrations are reported (cluster mode only).
    events: Option<mpsc::UnboundedSender<SessionEvent>>,
}

impl Sessions {
    /// `queue_size` items per session queue (at least 1); a full queue is
    /// waited on up to `send_timeout` (`None`: no limit).
    pub(crate) fn new(
        queue_size: usize,
        send_timeout: Option<Duration>,
        metrics: &Metrics,
        events: Option<mpsc::UnboundedSender<SessionEvent>>,
    ) -> Sessions {
        Sessions {
            registry: Registry::default(),
            next_serial: AtomicU64::new(0),
            closing: AtomicBool::new(false),
            queue_size: queue_size.max(1),
            send_timeout,
            metrics: SessionsMetrics::new(metrics),
            events,
        }
    }

    fn report(&self, event: impl FnOnce() -> SessionEvent) {
        if let Some(events) = &self.events {
            let _ = events.send(event());
        }
    }

    /// A new connection under `id` from `remote`, with the mailbox its task reads.
    pub(crate) fn attach(&self, id: Arc<str>, remote: Option<String>) -> (Attached, Mailbox) {
        let (outlet, mailbox) = outlet::channel(self.queue_size);
        let attached = Attached {
            id,
            serial: self.next_serial.fetch_add(1, Ordering::Relaxed),
            stop: Arc::new(Stop::default()),
            info: Arc::new(Info::new(remote)),
            outlet,
        };
        (attached, mailbox)
    }

    /// Makes `conn` addressable; an older connection with the same id is
    /// stopped (it closes with 4001 after what was queued for it).
    pub(crate) fn register(&self, conn: &Attached) {
        let entry = Entry {
            serial: conn.serial,
            outlet: conn.outlet.clone(),
            stop: conn.stop.clone(),
            info: conn.info.clone(),
        };
        if let Some(old) = self.registry.insert(conn.id.clone(), entry) {
            tracing::info!(session = %conn.id, "session id reused: closing the older connection");
            old.stop.stop(StopReason::Replaced);
        }
        self.report(|| SessionEvent::Registered {
            id: conn.id.clone(),
            serial: conn.serial,
        });
        // Checked after the insert: either the drain's snapshot has this
        // entry, or this sees the flag the drain set before taking it.
        if self.closing.load(Ordering::SeqCst) {
            conn.stop.stop(StopReason::Drain);
        }
    }

    /// The message metrics (connections count what they write).
    pub(crate) fn metrics(&self) -> &SessionsMetrics {
        &self.metrics
    }

    /// Removes `conn` from the map if it is still the one under its id.
    pub(crate) fn unregister(&self, conn: &Attached) {
        if self.registry.remove(&conn.id, conn.serial) {
            self.report(|| SessionEvent::Unregistered {
                id: conn.id.clone(),
                serial: conn.serial,
            });
        }
    }

    /// Stops the session held here under `id`, if any.
    pub(crate) fn stop(&self, id: &str, reason: StopReason) {
        self.registry.with_each([id], |_, entry| {
            if let Some(entry) = entry {
                entry.stop.stop(reason);
            }
        });
    }

    /// Addressable sessions.
    pub(crate) fn len(&self) -> usize {
        self.registry.len()
    }

    /// Up to `limit` sessions whose ids start with `prefix` and sort after
    /// `after`, in id order (see [`Registry::page`] for the cost).
    pub(crate) fn list(&self, prefix: &str, after: Option<&str>, limit: usize) -> Vec<SessionView> {
        let now = std::time::SystemTime::now();
        self.registry
            .page(prefix, after, limit)
            .into_iter()
            .map(|(id, entry)| {
                let (messages_out, queued_bytes) = entry.outlet.counts();
                SessionView {
                    session: id.to_string(),
                    age_seconds: now
                        .duration_since(entry.info.opened)
                        .map(|d| (d.as_secs_f64() * 10.0).round() / 10.0)
                        .unwrap_or(0.0),
                    remote: entry.info.remote.clone(),
                    messages_in: entry.info.received.load(Ordering::Relaxed),
                    messages_out,
                    queued_bytes,
                }
            })
            .collect()
    }

    /// Indices of `targets` that no session has.
    pub(crate) fn missing<S: AsRef<str>>(&self, targets: &[S]) -> Vec<usize> {
        let mut missing = Vec::new();
        let mut i = 0;
        self.registry
            .with_each(targets.iter().map(AsRef::as_ref), |_, entry| {
                if entry.is_none() {
                    missing.push(i);
                }
                i += 1;
            });
        missing
    }

    /// From now on every session is stopped as it registers; returns the
    /// stop signals of those registered now, for the drain to use.
    pub(crate) fn close_all(&self) -> Vec<Arc<Stop>> {
        self.closing.store(true, Ordering::SeqCst);
        self.registry.stops().into_iter().map(|(_, s)| s).collect()
    }

    /// Hands `push` to every target: written straight onto idle sockets,
    /// queued for the others, full queues waited on all at once (so one slow
    /// session does not delay the rest). One outcome per target, in order.
    /// A `Close` that reached a session unregisters it at once.
    pub(crate) async fn deliver<S: AsRef<str>>(&self, targets: &[S], push: Push) -> Vec<Outcome> {
        let mut outcomes = Vec::with_capacity(targets.len());
        let mut waiting: Vec<(usize, Entry)> = Vec::new();
        let mut closed: Vec<(usize, u64)> = Vec::new();
        let is_close = matches!(push, Push::Close(_));
        // Fast path under one read lock: nothing here waits.
        self.registry
            .with_each(targets.iter().map(AsRef::as_ref), |_, entry| {
                let Some(entry) = entry else {
                    outcomes.push(Outcome::NotFound);
                    return;
                };
                let outcome = Outcome::from(entry.outlet.offer(&push));
                if outcome == Outcome::Full {
                    waiting.push((outcomes.len(), entry.clone()));
                } else if is_close && outcome.delivered() {
                    closed.push((outcomes.len(), entry.serial));
                }
                outcomes.push(outcome);
            });
        // Slow path: wait for room in the full queues, all at once.
        if !waiting.is_empty() {
            let limit = self.send_timeout;
            let results = join_all(
                waiting
                    .iter()
                    .map(|(_, e)| e.outlet.wait_room(push.clone(), limit)),
            )
            .await;
            for ((i, entry), offer) in waiting.iter().zip(results) {
                outcomes[*i] = offer.into();
                if is_close && outcomes[*i].delivered() {
                    closed.push((*i, entry.serial));
                }
            }
        }
        // The app's close takes effect for addressing at once: later pushes
        // to these ids are "not found" while the close frame is on its way.
        for (i, serial) in closed {
            let id = targets[i].as_ref();
            if self.registry.remove(id, serial) {
                self.report(|| SessionEvent::Unregistered {
                    id: Arc::from(id),
                    serial,
                });
            }
        }
        self.metrics
            .pushed(&outcomes, push.frame().map(|f| f.payload));
        outcomes
    }
}
