//! The staged drain, run once on SIGTERM or `POST /drain`: not ready ->
//! announce delay (still accepting) -> refuse upgrades -> close sessions
//! spread over a window (each flushes its queue, then 1001) -> callbacks
//! finish -> done, all under one hard deadline. Its `drain.*` keys are
//! `config.rs`, its metrics `metrics.rs`.
//!
//! Owns the order and timing of the stages and moves the lifecycle through
//! them. Sessions do their own flushing and close callbacks; this module only
//! tells them when.

pub(crate) mod config;
pub(crate) mod metrics;

use std::sync::Arc;
use std::time::Duration;

use tokio::time::{sleep_until, Instant};

use crate::lifecycle::Stage;
use crate::state::Shared;

/// Starts the drain if it is not running and waits until it has finished
/// (or its deadline passed). Idempotent: every caller waits for the same drain.
pub(crate) async fn drain(shared: &Arc<Shared>) {
    start(shared);
    shared.lifecycle.reached(Stage::Done).await;
}

/// Starts the drain if it is not running; returns at once.
pub(crate) fn start(shared: &Arc<Shared>) {
    if shared.lifecycle.advance(Stage::Announcing) {
        let task = shared.clone();
        tokio::spawn(async move { run(task).await });
    }
}

/// When session `i` of `n` closes: slot `i` of `n` equal slots of `spread`,
/// at a random point inside the slot (even spread, with jitter).
pub(crate) fn close_offset(spread: Duration, i: usize, n: usize, jitter: f64) -> Duration {
    if n == 0 {
        return Duration::ZERO;
    }
    spread.mul_f64((i as f64 + jitter.clamp(0.0, 1.0)) / n as f64)
}

async fn run(shared: Arc<Shared>) {
    let cfg = &shared.config.drain;
    let metrics = &shared.drain_metrics;
    let started = Instant::now();
    let deadline = started + cfg.timeout;

    // 1. Not ready (the caller moved the stage): load balancers stop sending
    // new clients.
    metrics.draining.set(1);
    tracing::info!(
        sessions = shared.sessions.len(),
        announce_delay_ms = cfg.announce_delay.as_millis() as u64,
        "drain started: readiness off, still accepting during the announce delay"
    );
    // 2. Keep accepting while endpoint removal propagates.
    sleep_until((started + cfg.announce_delay).min(deadline)).await;

    // 3. Refuse new upgrades; the push API keeps working.
    shared.lifecycle.advance(Stage::Draining);

    // 4. Close sessions spread over the window; one that registers from now
    // on (its connect callback was in flight) is closed as it registers.
    let stops = shared.sessions.close_all();
    let n = stops.len();
    metrics.remaining.set(n as i64);
    tracing::info!(
        sessions = n,
        spread_ms = cfg.spread.as_millis() as u64,
        "drain: closing sessions"
    );
    let window = Instant::now();
    for (i, stop) in stops.iter().enumerate() {
        let at = window + close_offset(cfg.spread, i, n, fastrand::f64());
        sleep_until(at.min(deadline)).await;
        stop.stop(crate::sessions::StopReason::Drain);
        metrics.remaining.set((n - i - 1) as i64);
    }

    // 5. Wait for sessions to flush and close, then for their callbacks.
    shared.tasks.sessions.close();
    shared.tasks.background.close();
    let finished = tokio::time::timeout_at(deadline, async {
        shared.tasks.sessions.wait().await;
        shared.tasks.background.wait().await;
    })
    .await;
    match finished {
        Ok(()) => tracing::info!(
            elapsed_ms = started.elapsed().as_millis() as u64,
            "drain finished"
        ),
        Err(_) => tracing::warn!(
            sessions_left = shared.tasks.sessions.len(),
            connections_with_callbacks_left = shared.tasks.background.len(),
            callbacks_left = shared.callbacks.metrics().pending_messages(),
            "drain deadline passed with work left: these client messages and close events never reached the app"
        ),
    }
    // 6. Done: whoever waits may exit.
    shared.lifecycle.advance(Stage::Done);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_cover_the_window_evenly() {
        let spread = Duration::from_secs(10);
        let offsets: Vec<Duration> = (0..10).map(|i| close_offset(spread, i, 10, 0.5)).collect();
        assert_eq!(offsets[0], Duration::from_millis(500));
        assert_eq!(offsets[9], Duration::from_millis(9500));
        assert!(offsets.windows(2).all(|w| w[0] < w[1]));
        assert!(close_offset(spread, 9, 10, 1.0) <= spread);
        assert_eq!(close_offset(spread, 0, 0, 0.3), Duration::ZERO);
    }
}
