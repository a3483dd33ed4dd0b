//! What became of a push for each target ([`Outcome`]), for each channel
//! ([`Reach`]) and of an accepted message its connection could not write
//! ([`WriteError`]): the sessions core's answers, and the labels of its
//! message metrics.

use std::sync::Arc;

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

/// What became of a channel push on this node.
#[derive(Debug, Clone, Default)]
pub(crate) struct Reach {
    /// Members here when it was offered (the skipped ones included).
    pub(crate) members: usize,
    /// Members that got it.
    pub(crate) delivered: usize,
    /// Members that missed it, and why.
    pub(crate) failed: Vec<(Arc<str>, Outcome)>,
    /// For a close: the members it reached, with their connection serials.
    pub(crate) closed: Vec<(Arc<str>, u64)>,
}

impl Reach {
    pub(crate) fn record(&mut self, id: &Arc<str>, outcome: Outcome) {
        if outcome.delivered() {
            self.delivered += 1;
        } else {
            self.failed.push((id.clone(), outcome));
        }
    }
}

/// What became of a channel push, everywhere, for its metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ChannelOutcome {
    /// A member (here or on another node) got it.
    Delivered,
    /// It has members, but none got it (excluded, full queues, closing).
    Missed,
    /// No member anywhere.
    NoSessions,
    /// The other nodes could not be asked.
    Unavailable,
}

impl ChannelOutcome {
    pub(crate) const ALL: [ChannelOutcome; 4] = [
        ChannelOutcome::Delivered,
        ChannelOutcome::Missed,
        ChannelOutcome::NoSessions,
        ChannelOutcome::Unavailable,
    ];

    pub(crate) fn label(self) -> &'static str {
        match self {
            ChannelOutcome::Delivered => "delivered",
            ChannelOutcome::Missed => "not_delivered",
            ChannelOutcome::NoSessions => "no_sessions",
            ChannelOutcome::Unavailable => "cluster_unavailable",
        }
    }
}
