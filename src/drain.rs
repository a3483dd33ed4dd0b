//! The staged drain, run once on SIGTERM or `POST /drain`: not ready ->
//! announce delay (still accepting) -> refuse upgrades -> close sessions
//! spread over a window (each flushes its queue, then 1001) -> close
//! callbacks finish -> done, all under one hard deadline.
//!
//! Owns the order and timing of the stages. Sessions do their own flushing
//! and close callbacks; this module only tells them when.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::{sleep_until, Instant};

use crate::state::Shared;

/// Starts the drain if it is not running and waits until it has finished
/// (or its deadline passed). Idempotent: every caller waits for the same drain.
pub async fn drain(shared: &Arc<Shared>) {
    if !shared.drain_started.swap(true, Ordering::SeqCst) {
        let task = shared.clone();
        tokio::spawn(async move { run(task).await });
    }
    shared.drain_done.cancelled().await;
}

/// When session `i` of `n` closes: slot `i` of `n` equal slots of `spread`,
/// at a random point inside the slot (even spread, with jitter).
pub fn close_offset(spread: Duration, i: usize, n: usize, jitter: f64) -> Duration {
    if n == 0 {
        return Duration::ZERO;
    }
    spread.mul_f64((i as f64 + jitter.clamp(0.0, 1.0)) / n as f64)
}

async fn run(shared: Arc<Shared>) {
    let cfg = shared.config.drain.clone();
    let metrics = &shared.metrics;
    let started = Instant::now();
    let deadline = started + cfg.timeout;

    // 1. Not ready: load balancers stop sending new clients.
    metrics.draining.set(1);
    shared.not_ready.cancel();
    tracing::info!(
        sessions = shared.registry.len(),
        announce_delay_ms = cfg.announce_delay.as_millis() as u64,
        "drain started: readiness off, still accepting during the announce delay"
    );
    // 2. Keep accepting while endpoint removal propagates.
    sleep_until((started + cfg.announce_delay).min(deadline)).await;

    // 3. Refuse new upgrades; the push API keeps working.
    shared.refuse_upgrades.cancel();
    shared.draining.cancel();

    // 4. Close sessions spread over the window.
    let handles = shared.registry.handles();
    let n = handles.len();
    metrics.drain_remaining.set(n as i64);
    tracing::info!(
        sessions = n,
        spread_ms = cfg.spread.as_millis() as u64,
        "drain: closing sessions"
    );
    let window = Instant::now();
    for (i, (_, handle)) in handles.iter().enumerate() {
        let at = window + close_offset(cfg.spread, i, n, fastrand::f64());
        sleep_until(at.min(deadline)).await;
        handle.cancel.cancel();
        metrics.drain_remaining.set((n - i - 1) as i64);
    }
    // Sessions whose connect callback was in flight at step 3 register late;
    // cancelling the root closes them (and any missed) at once.
    shared.root.cancel();

    // 5. Wait for sessions to flush and close, then for close callbacks.
    shared.sessions.close();
    shared.background.close();
    let finished = tokio::time::timeout_at(deadline, async {
        shared.sessions.wait().await;
        shared.background.wait().await;
    })
    .await;
    match finished {
        Ok(()) => tracing::info!(
            elapsed_ms = started.elapsed().as_millis() as u64,
            "drain finished"
        ),
        Err(_) => tracing::warn!(
            sessions_left = shared.sessions.len(),
            callbacks_left = shared.background.len(),
            "drain deadline passed with work left"
        ),
    }
    // 6. Done: whoever waits may exit.
    shared.drain_done.cancel();
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
