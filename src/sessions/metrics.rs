//! The message metrics of the sessions core: what pushes reached (and
//! missed), what was written to client sockets, and queue depths.
//!
//! Owns these families, labelled by [`Outcome`], [`WriteError`] and
//! [`ChannelOutcome`], and the channel gauges; it also keeps the `/stats`
//! figures `total_messages` and `message_errors`.

use prometheus::{Histogram, IntCounter, IntCounterVec, IntGauge};

use super::outcome::{ChannelOutcome, Outcome, WriteError};
use crate::metrics::{Figures, Metrics};

/// The sessions core's metric handles.
#[derive(Clone, Debug)]
pub(crate) struct SessionsMetrics {
    delivered: IntCounter,
    errors: IntCounterVec,
    sent_bytes: IntCounter,
    queue_depth: Histogram,
    channels: IntGauge,
    channel_members: IntGauge,
    channel_pushes: IntCounterVec,
    figures: Figures,
}

impl SessionsMetrics {
    pub(crate) fn new(metrics: &Metrics) -> SessionsMetrics {
        let mut error_labels: Vec<&str> = Outcome::FAILURES.iter().map(|o| o.label()).collect();
        error_labels.extend(WriteError::ALL.map(WriteError::label));
        SessionsMetrics {
            delivered: metrics.counter(
                "kuiperbelt_messages_delivered_total",
                "Messages written to client sockets.",
            ),
            errors: metrics.counter_vec(
                "kuiperbelt_message_errors_total",
                "Messages that did not reach a client, by reason: push targets that missed it (not_found, queue_full, closed) and accepted messages that could not be written (write_failed, write_timeout; /stats message_errors).",
                "reason",
                &error_labels,
            ),
            sent_bytes: metrics.counter(
                "kuiperbelt_sent_bytes_total",
                "Payload bytes of messages written to clients.",
            ),
            queue_depth: metrics.histogram(
                "kuiperbelt_session_queue_depth",
                "Messages waiting in a session's queue, sampled at each write to its socket.",
                &[0.0, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0],
            ),
            channels: metrics.gauge(
                "kuiperbelt_channels",
                "Channels with at least one member on this node.",
            ),
            channel_members: metrics.gauge(
                "kuiperbelt_channel_members",
                "Channel memberships of this node's sessions (a session in two channels counts twice).",
            ),
            channel_pushes: metrics.counter_vec(
                "kuiperbelt_channel_pushes_total",
                "Channel targets of /send and /close accepted here, by outcome: delivered (a member here or elsewhere got it), not_delivered (members, none got it: excluded, full or closing), no_sessions (no member anywhere), cluster_unavailable.",
                "outcome",
                &ChannelOutcome::ALL.map(ChannelOutcome::label),
            ),
            figures: metrics.figures.clone(),
        }
    }

    /// Channels and memberships here changed by these amounts.
    pub(crate) fn channels_changed(&self, channels: i64, members: i64) {
        self.channels.add(channels);
        self.channel_members.add(members);
    }

    /// One channel target of a push ended this way.
    pub(crate) fn channel_push(&self, outcome: ChannelOutcome) {
        self.channel_pushes
            .with_label_values(&[outcome.label()])
            .inc();
    }

    /// Counts one push's outcomes: every known target as a message (when the
    /// push carries one), the direct writes as delivered, each failure.
    pub(crate) fn pushed(&self, outcomes: &[Outcome], payload: Option<usize>) {
        let mut known = 0u64;
        let mut written = 0u64;
        for outcome in outcomes {
            match outcome {
                Outcome::Written => written += 1,
                Outcome::Queued => {}
                failed => {
                    self.errors.with_label_values(&[failed.label()]).inc();
                }
            }
            known += u64::from(*outcome != Outcome::NotFound);
        }
        if let Some(payload) = payload {
            self.figures.messages_pushed.inc_by(known);
            if written > 0 {
                self.delivered(written, written * payload as u64);
            }
        }
    }

    /// The connect callback's body, accepted as a session's first message.
    pub(crate) fn first_message(&self) {
        self.figures.messages_pushed.inc();
    }

    /// `frames` frames of `bytes` payload bytes reached client sockets.
    pub(crate) fn delivered(&self, frames: u64, bytes: u64) {
        self.delivered.inc_by(frames);
        self.sent_bytes.inc_by(bytes);
    }

    /// `lost` accepted messages could not be written.
    pub(crate) fn write_failed(&self, error: WriteError, lost: u64) {
        self.errors.with_label_values(&[error.label()]).inc_by(lost);
        self.figures.message_errors.inc_by(lost);
    }

    pub(crate) fn queue_depth(&self, depth: usize) {
        self.queue_depth.observe(depth as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_errors_in_stats_are_write_failures_only() {
        let metrics = Metrics::new();
        let m = SessionsMetrics::new(&metrics);
        m.pushed(
            &[Outcome::NotFound, Outcome::Full, Outcome::Queued],
            Some(1),
        );
        assert_eq!(metrics.stats().message_errors, 0);
        assert_eq!(metrics.stats().total_messages, 2, "known targets count");
        m.write_failed(WriteError::TimedOut, 3);
        assert_eq!(metrics.stats().message_errors, 3);
        let text = metrics.encode();
        assert!(text.contains("kuiperbelt_message_errors_total{reason=\"not_found\"} 1"));
        assert!(text.contains("kuiperbelt_message_errors_total{reason=\"write_timeout\"} 3"));
    }
}
