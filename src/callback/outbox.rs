//! Receive and close callbacks that survive an app outage without stalling
//! on a slow answer: a request that finds the app away is retried through
//! the gate until the app answers or `callback.retry_for` passes; one that
//! times out after it was sent is given up (or, with
//! `callback.retry_timeouts`, retried on its own backoff, the gate left
//! open). The bytes of client messages waiting for the app are bounded
//! (`callback.max_pending_bytes`): past the bound, sessions stop reading
//! their clients instead of buffering.
//!
//! Owns the retry loop and the pending budget. What a request carries is
//! the client's (`mod.rs`); order per connection is the session's
//! (`session/forward.rs`): it sends one request at a time.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::config::CallbackConfig;
use super::gate::{Gate, Turn};
use super::metrics::CallbackMetrics;
use super::request::{CallbackError, CallbackKind};
use super::retry::{verdict, Backoff, Delivery, Verdict};

/// Bytes of client messages waiting for the app, with a bound.
#[derive(Debug)]
pub(crate) struct Budget {
    bytes: AtomicUsize,
    max: usize,
    room: Notify,
}

impl Budget {
    fn new(max: usize) -> Budget {
        Budget {
            bytes: AtomicUsize::new(0),
            max,
            room: Notify::new(),
        }
    }

    /// Whether sessions may read more client messages.
    pub(crate) fn has_room(&self) -> bool {
        self.bytes.load(Ordering::Relaxed) < self.max
    }

    /// Resolves once there is room (at once if there is).
    pub(crate) async fn room(&self) {
        loop {
            let notified = self.room.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.has_room() {
                return;
            }
            notified.await;
        }
    }

    fn add(&self, bytes: usize) -> usize {
        self.bytes.fetch_add(bytes, Ordering::Relaxed) + bytes
    }

    fn release(&self, bytes: usize) -> usize {
        let before = self.bytes.fetch_sub(bytes, Ordering::Relaxed);
        let after = before - bytes;
        if before >= self.max && after < self.max {
            self.room.notify_waiters();
        }
        after
    }
}

/// The retry loop, the gate and the budget of one server.
#[derive(Debug)]
pub(crate) struct Outbox {
    pub(crate) gate: Gate,
    pub(crate) budget: Budget,
    retry_for: Option<Duration>,
    retry_timeouts: bool,
    /// Paces the retries that do not close the gate (408, timeouts), as the
    /// gate paces its probes.
    backoff: Backoff,
    metrics: CallbackMetrics,
}

/// Which message a delivery carries, for its log lines.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Subject<'a> {
    pub(crate) kind: CallbackKind,
    pub(crate) session: &'a str,
    /// The receive callback's `X-Kuiperbelt-Sequence`.
    pub(crate) sequence: Option<u64>,
}

impl Outbox {
    pub(crate) fn new(config: &CallbackConfig, metrics: CallbackMetrics) -> Outbox {
        let backoff = Backoff::default();
        Outbox {
            gate: Gate::new(
                config.concurrency,
                backoff,
                metrics.app_up.clone(),
                metrics.slot_waits.clone(),
            ),
            budget: Budget::new(config.max_pending_bytes),
            retry_for: config.retry_for,
            retry_timeouts: config.retry_timeouts,
            backoff,
            metrics,
        }
    }

    /// A message of `bytes` bytes (or a close event, 0) now waits for the app.
    pub(crate) fn queued(&self, bytes: usize) {
        let total = self.budget.add(bytes);
        self.metrics.pending(1, total);
    }

    /// It no longer does (delivered or dropped).
    pub(crate) fn done(&self, bytes: usize) {
        let total = self.budget.release(bytes);
        self.metrics.pending(-1, total);
    }

    /// Sends `attempt` until the app answers, retrying what is worth it
    /// (through the gate while the app is away), until `callback.retry_for`
    /// has passed since `since` (when the message or event arose: one that
    /// waited behind others for that long is dropped at its first failure).
    pub(crate) async fn deliver<F, Fut>(
        &self,
        subject: Subject<'_>,
        since: Instant,
        mut attempt: F,
    ) -> Delivery
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<(), CallbackError>>,
    {
        let deadline = self.retry_for.map(|d| since + d);
        let mut again = 0;
        loop {
            let Some(turn) = self.gate.turn(deadline).await else {
                return self.dropped(subject, Delivery::GaveUp, None);
            };
            let result = {
                let _permit = self.gate.permit().await;
                let _in_flight = self.metrics.in_flight();
                attempt().await
            };
            let verdict = verdict(&result, self.retry_timeouts);
            match verdict {
                Verdict::Delivered => {
                    self.gate.answered(turn);
                    return Delivery::Delivered;
                }
                Verdict::Final => {
                    self.gate.answered(turn);
                    return self.dropped(subject, Delivery::Refused, result.err());
                }
                Verdict::TimedOut => {
                    self.gate.inconclusive(turn);
                    return self.dropped(subject, Delivery::TimedOut, result.err());
                }
                Verdict::Away => self.gate.failed(turn),
                Verdict::Again { answered: true } => self.gate.answered(turn),
                Verdict::Again { answered: false } => self.gate.inconclusive(turn),
            }
            self.metrics.retry(subject.kind);
            if let Err(e) = &result {
                tracing::debug!(session = subject.session, sequence = subject.sequence, callback = subject.kind.label(), error = %e, "callback failed; will retry");
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return self.dropped(subject, Delivery::GaveUp, result.err());
            }
            if matches!(verdict, Verdict::Again { .. }) {
                let wait = Instant::now() + self.backoff.delay(again, fastrand::f64());
                again += 1;
                tokio::time::sleep_until(deadline.map_or(wait, |d| d.min(wait))).await;
            } else if turn == Turn::Open {
                // Give the probe its chance before this one goes again.
                tokio::task::yield_now().await;
            }
        }
    }

    fn dropped(
        &self,
        subject: Subject<'_>,
        how: Delivery,
        error: Option<CallbackError>,
    ) -> Delivery {
        let Subject {
            kind,
            session,
            sequence,
        } = subject;
        self.metrics.dropped(kind, how);
        let error = error.map(|e| e.to_string()).unwrap_or_default();
        let callback = kind.label();
        match how {
            Delivery::GaveUp => tracing::warn!(
                session,
                sequence,
                callback,
                retry_for_s = self.retry_for.map(|d| d.as_secs()),
                error,
                "callback dropped: the app did not answer within callback.retry_for"
            ),
            Delivery::TimedOut => tracing::warn!(
                session,
                sequence,
                callback,
                error,
                "callback given up: callback.timeout passed after it was sent; not retried (callback.retry_timeouts is off)"
            ),
            _ => tracing::warn!(
                session,
                sequence,
                callback,
                error,
                "callback refused by the app; not retried"
            ),
        }
        how
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_budget_wakes_readers_when_it_drops_below_its_bound() {
        let b = Budget::new(10);
        assert!(b.has_room());
        b.add(12);
        assert!(!b.has_room());
        let waiter = b.room();
        tokio::pin!(waiter);
        assert!(
            tokio::time::timeout(Duration::from_millis(30), waiter.as_mut())
                .await
                .is_err()
        );
        b.release(5);
        tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .expect("woken once below the bound");
    }
}
