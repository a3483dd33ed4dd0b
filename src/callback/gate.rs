//! One gate in front of the app for every receive and close callback: open
//! while the app is there; closed by the first sign that it is away, after
//! which one probe request at a time retries (with backoff) while everyone
//! else waits; opened again by the first answer. At most
//! `callback.concurrency` requests are in flight at once, so a returning app
//! is not hit by every waiting session together; a request that finds every
//! slot taken waits, and is counted.
//!
//! Owns the gate's state and the request permits; what a request is and
//! what counts as a failure are the caller's (`outbox.rs`, `retry.rs`).

use std::sync::Mutex;

use prometheus::{IntCounter, IntGauge};
use tokio::sync::{Notify, Semaphore, SemaphorePermit};
use tokio::time::Instant;

use super::retry::Backoff;

/// How a caller may send its request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Turn {
    /// The gate is open.
    Open,
    /// The gate is closed and this caller is its one probe.
    Probe,
}

#[derive(Debug)]
struct State {
    open: bool,
    /// A probe request is in flight.
    probing: bool,
    /// Probes that failed since the gate closed.
    failures: u32,
    /// The next probe may start then.
    next_probe: Instant,
}

#[derive(Debug)]
pub(crate) struct Gate {
    state: Mutex<State>,
    changed: Notify,
    permits: Semaphore,
    backoff: Backoff,
    /// `kuiperbelt_app_up`.
    up: IntGauge,
    /// `kuiperbelt_callback_slot_waits_total`.
    slot_waits: IntCounter,
}

impl Gate {
    pub(crate) fn new(
        concurrency: usize,
        backoff: Backoff,
        up: IntGauge,
        slot_waits: IntCounter,
    ) -> Gate {
        up.set(1);
        Gate {
            state: Mutex::new(State {
                open: true,
                probing: false,
                failures: 0,
                next_probe: Instant::now(),
            }),
            changed: Notify::new(),
            permits: Semaphore::new(concurrency),
            backoff,
            up,
            slot_waits,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("gate lock")
    }

    /// Waits until the caller may send: the gate is open, or it is closed
    /// and the caller becomes its probe. `None` once `deadline` has passed.
    pub(crate) async fn turn(&self, deadline: Option<Instant>) -> Option<Turn> {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            // Registered before the state is read, so no change is missed.
            notified.as_mut().enable();
            let wake = {
                let mut state = self.lock();
                if state.open {
                    return Some(Turn::Open);
                }
                let now = Instant::now();
                if deadline.is_some_and(|d| now >= d) {
                    return None;
                }
                if !state.probing && now >= state.next_probe {
                    state.probing = true;
                    return Some(Turn::Probe);
                }
                let probe_at = (!state.probing).then_some(state.next_probe);
                [probe_at, deadline].into_iter().flatten().min()
            };
            match wake {
                Some(at) => {
                    tokio::select! {
                        _ = &mut notified => {}
                        _ = tokio::time::sleep_until(at) => {}
                    }
                }
                None => notified.await,
            }
        }
    }

    /// A request slot; at most `callback.concurrency` are out at once.
    pub(crate) async fn permit(&self) -> SemaphorePermit<'_> {
        if let Ok(permit) = self.permits.try_acquire() {
            return permit;
        }
        self.slot_waits.inc();
        self.permits
            .acquire()
            .await
            .expect("the gate's semaphore is never closed")
    }

    /// The app answered: the gate opens (if closed) and waiters go.
    pub(crate) fn answered(&self, turn: Turn) {
        let mut state = self.lock();
        if turn == Turn::Probe {
            state.probing = false;
        }
        if !state.open {
            state.open = true;
            state.failures = 0;
            self.up.set(1);
            tracing::info!("the app answers again: callbacks resume");
            self.changed.notify_waiters();
        }
    }

    /// The attempt says nothing of whether the app is there (it timed out
    /// after it was sent): an open gate stays open, a probe ends without
    /// opening it, and the next probe comes after the backoff in force.
    pub(crate) fn inconclusive(&self, turn: Turn) {
        if turn == Turn::Probe {
            self.lock().probing = false;
            self.changed.notify_waiters();
        }
    }

    /// The app is away: the gate closes (if open); a failed probe
    /// schedules the next one after a longer backoff.
    pub(crate) fn failed(&self, turn: Turn) {
        let mut state = self.lock();
        let now = Instant::now();
        if state.open {
            state.open = false;
            state.failures = 0;
            state.next_probe = now + self.backoff.delay(0, fastrand::f64());
            self.up.set(0);
            tracing::warn!("a callback to the app failed: holding callbacks, one probe at a time");
        }
        if turn == Turn::Probe {
            state.probing = false;
            state.failures += 1;
            state.next_probe = now + self.backoff.delay(state.failures, fastrand::f64());
            self.changed.notify_waiters();
        }
    }

    /// Whether the gate is open.
    #[cfg(test)]
    fn is_open(&self) -> bool {
        self.lock().open
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn gate() -> Gate {
        let backoff = Backoff {
            first: Duration::from_millis(20),
            max: Duration::from_millis(80),
        };
        Gate::new(
            2,
            backoff,
            IntGauge::new("up", "up").unwrap(),
            IntCounter::new("waits", "waits").unwrap(),
        )
    }

    #[tokio::test]
    async fn one_probe_at_a_time_while_closed_then_everyone() {
        let g = gate();
        assert_eq!(g.turn(None).await, Some(Turn::Open));
        g.failed(Turn::Open);
        assert!(!g.is_open());
        assert_eq!(g.up.get(), 0);
        // After the first backoff, one caller probes; a second one waits.
        let probe = g.turn(None).await;
        assert_eq!(probe, Some(Turn::Probe));
        let waiting = g.turn(Some(Instant::now() + Duration::from_millis(200)));
        tokio::pin!(waiting);
        assert!(
            tokio::time::timeout(Duration::from_millis(100), waiting.as_mut())
                .await
                .is_err(),
            "no second probe while one is in flight"
        );
        // The probe fails: the next probe comes after a backoff.
        g.failed(Turn::Probe);
        assert_eq!(waiting.await, Some(Turn::Probe));
        // It succeeds: the gate opens for everyone.
        g.answered(Turn::Probe);
        assert!(g.is_open());
        assert_eq!(g.up.get(), 1);
        assert_eq!(g.turn(None).await, Some(Turn::Open));
    }

    #[tokio::test]
    async fn an_inconclusive_attempt_neither_closes_nor_opens() {
        let g = gate();
        g.inconclusive(Turn::Open);
        assert!(g.is_open());
        g.failed(Turn::Open);
        assert_eq!(g.turn(None).await, Some(Turn::Probe));
        g.inconclusive(Turn::Probe);
        assert!(!g.is_open());
        assert_eq!(
            g.turn(None).await,
            Some(Turn::Probe),
            "the next probe may go"
        );
    }

    #[tokio::test]
    async fn a_request_that_finds_every_slot_taken_is_counted() {
        let g = gate();
        let a = g.permit().await;
        let _b = g.permit().await;
        assert_eq!(g.slot_waits.get(), 0);
        let third = g.permit();
        tokio::pin!(third);
        assert!(
            tokio::time::timeout(Duration::from_millis(30), third.as_mut())
                .await
                .is_err()
        );
        assert_eq!(g.slot_waits.get(), 1);
        drop(a);
        let _third = tokio::time::timeout(Duration::from_secs(1), third)
            .await
            .expect("a freed slot is taken");
    }

    #[tokio::test]
    async fn a_deadline_ends_the_wait() {
        let g = gate();
        g.failed(Turn::Open);
        assert_eq!(g.turn(None).await, Some(Turn::Probe));
        let started = Instant::now();
        assert_eq!(
            g.turn(Some(started + Duration::from_millis(50))).await,
            None
        );
        assert!(started.elapsed() >= Duration::from_millis(50));
    }
}
