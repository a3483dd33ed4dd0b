//! What the registry keeps of each connection beside its outlet: its stop
//! signal (with the reason, the first one winning) and what `/sessions`
//! shows of it.

use std::sync::atomic::AtomicU64;
use std::sync::OnceLock;

use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

/// Why a session was told to stop from outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StopReason {
    /// A newer connection took the session id.
    Replaced,
    /// The server drains.
    Drain,
}

/// A session's stop signal; the reason travels with it (the first one wins).
#[derive(Debug, Default)]
pub(crate) struct Stop {
    token: CancellationToken,
    reason: OnceLock<StopReason>,
}

impl Stop {
    pub(crate) fn stop(&self, reason: StopReason) {
        let _ = self.reason.set(reason);
        self.token.cancel();
    }

    /// Resolves once stopped; then [`Stop::reason`] says why.
    pub(crate) fn stopped(&self) -> WaitForCancellationFutureOwned {
        self.token.clone().cancelled_owned()
    }

    pub(crate) fn reason(&self) -> Option<StopReason> {
        self.reason.get().copied()
    }
}

/// What `/sessions` shows of a connection beside its outlet's counters.
#[derive(Debug)]
pub(crate) struct Info {
    pub(crate) opened: std::time::SystemTime,
    /// The client's address.
    pub(crate) remote: Option<String>,
    /// Messages received from the client.
    pub(crate) received: AtomicU64,
}

impl Info {
    pub(crate) fn new(remote: Option<String>) -> Info {
        Info {
            opened: std::time::SystemTime::now(),
            remote,
            received: AtomicU64::new(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_stop_reason_wins() {
        let stop = Stop::default();
        assert_eq!(stop.reason(), None);
        stop.stop(StopReason::Replaced);
        stop.stop(StopReason::Drain);
        assert_eq!(stop.reason(), Some(StopReason::Replaced));
    }
}
