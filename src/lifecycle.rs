//! The server's one lifecycle: running -> announcing (not ready, still
//! accepting) -> draining (refusing upgrades, closing sessions) -> done.
//!
//! Owns the stage value, on a `watch` channel that the routes, the connect
//! handler, the drain and the server read; it only moves forward. Who moves
//! it is the drain's business (`drain.rs`).

use tokio::sync::watch;

/// Where the server is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Stage {
    /// Ready, accepting clients.
    Running,
    /// A drain started: `/readyz` answers 503, upgrades are still accepted
    /// while load balancers catch up (`drain.announce_delay`).
    Announcing,
    /// Upgrades are refused and sessions are being closed.
    Draining,
    /// The drain finished or hit its deadline.
    Done,
}

impl Stage {
    pub(crate) fn label(self) -> &'static str {
        match self {
            Stage::Running => "running",
            Stage::Announcing => "announcing",
            Stage::Draining => "draining",
            Stage::Done => "done",
        }
    }
}

/// The stage, shared by everything that reads it.
#[derive(Debug)]
pub(crate) struct Lifecycle {
    stage: watch::Sender<Stage>,
}

impl Default for Lifecycle {
    fn default() -> Self {
        Lifecycle {
            stage: watch::Sender::new(Stage::Running),
        }
    }
}

impl Lifecycle {
    pub(crate) fn stage(&self) -> Stage {
        *self.stage.borrow()
    }

    /// Ready for new clients (`/readyz`).
    pub(crate) fn ready(&self) -> bool {
        self.stage() == Stage::Running
    }

    /// New WebSocket upgrades are accepted.
    pub(crate) fn accepts_upgrades(&self) -> bool {
        self.stage() < Stage::Draining
    }

    /// Moves to `to` if that is forward; true when this call moved it.
    pub(crate) fn advance(&self, to: Stage) -> bool {
        self.stage.send_if_modified(|stage| {
            if *stage < to {
                *stage = to;
                true
            } else {
                false
            }
        })
    }

    /// Waits until the stage is at least `stage`.
    pub(crate) async fn reached(&self, stage: Stage) {
        let mut rx = self.stage.subscribe();
        let _ = rx.wait_for(|s| *s >= stage).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stages_only_move_forward() {
        let l = Lifecycle::default();
        assert!(l.ready() && l.accepts_upgrades());
        assert!(l.advance(Stage::Announcing));
        assert!(
            !l.advance(Stage::Announcing),
            "a second start is not a start"
        );
        assert!(!l.ready() && l.accepts_upgrades());
        assert!(l.advance(Stage::Draining));
        assert!(!l.advance(Stage::Running));
        assert!(!l.accepts_upgrades());
        let waiter = l.reached(Stage::Done);
        l.advance(Stage::Done);
        waiter.await;
    }
}
