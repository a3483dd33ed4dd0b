//! What became of a push for each target ([`Outcome`]) and of an accepted
//! message its connection could not write ([`WriteError`]): the sessions
//! core's answers, and the labels of its message metrics.

use super::outlet::Offer;

/// What became of a push for one target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Written onto the socket at once.
    Written,
    /// Queued behind what the connection has still to write.
    Queued,
    /// The queue stayed full past `send_timeout`.
    Full,
    /// The session closed meanwhile.
    Closed,
    /// No session has this id.
    NotFound,
    /// In cluster mode, the node holding it could not be asked (NATS lost,
    /// or no answer within `cluster.request_timeout`).
    Unavailable,
}

impl Outcome {
    /// Whether the target got the message (written or queued).
    pub(crate) fn delivered(self) -> bool {
        matches!(self, Outcome::Written | Outcome::Queued)
    }

    /// The metric label of a failure.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Outcome::Written | Outcome::Queued => "delivered",
            Outcome::Full => "queue_full",
            Outcome::Closed => "closed",
            Outcome::NotFound => "not_found",
            Outcome::Unavailable => "cluster_unavailable",
        }
    }

    /// Every failure, for metrics registered at start-up.
    pub(crate) const FAILURES: [Outcome; 4] = [
        Outcome::NotFound,
        Outcome::Full,
        Outcome::Closed,
        Outcome::Unavailable,
    ];
}

impl From<Offer> for Outcome {
    fn from(offer: Offer) -> Outcome {
        match offer {
            Offer::Written => Outcome::Written,
            Offer::Queued => Outcome::Queued,
            Offer::Full => Outcome::Full,
            Offer::Closed => Outcome::Closed,
        }
    }
}

/// Why an accepted message could not be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WriteError {
    /// The socket refused it (reset, closed).
    Failed,
    /// The write stayed blocked past its timeout.
    TimedOut,
}

impl WriteError {
    pub(crate) const ALL: [WriteError; 2] = [WriteError::Failed, WriteError::TimedOut];

    pub(crate) fn label(self) -> &'static str {
        match self {
            WriteError::Failed => "write_failed",
            WriteError::TimedOut => "write_timeout",
        }
    }
}
