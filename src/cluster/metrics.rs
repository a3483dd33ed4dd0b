//! Cluster mode's metrics: the NATS link, pushes sent to and received from
//! other nodes, requests without an outcome ([`ClusterError`]) and request
//! latency.
//!
//! Owns these families and their labels; registered on every server, so
//! they read 0 on a single node too.

use prometheus::{Histogram, IntCounter, IntCounterVec, IntGauge};

use crate::metrics::Metrics;

/// Why a request to another node got no outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ClusterError {
    /// Not connected to NATS (or it failed the request).
    Unavailable,
    /// The holder did not answer within `cluster.request_timeout`.
    Timeout,
    /// No node holds the id (counted, though the push reads "not found").
    NoResponders,
}

impl ClusterError {
    pub(crate) const ALL: [ClusterError; 3] = [
        ClusterError::Unavailable,
        ClusterError::Timeout,
        ClusterError::NoResponders,
    ];

    pub(crate) fn label(self) -> &'static str {
        match self {
            ClusterError::Unavailable => "unavailable",
            ClusterError::Timeout => "timeout",
            ClusterError::NoResponders => "no_responders",
        }
    }
}

/// Cluster mode's metric handles.
#[derive(Clone, Debug)]
pub(crate) struct ClusterMetrics {
    /// `kuiperbelt_cluster_connected`.
    pub(crate) connected: IntGauge,
    pushes_sent: IntCounter,
    pushes_received: IntCounter,
    errors: IntCounterVec,
    request_duration: Histogram,
}

impl ClusterMetrics {
    pub(crate) fn new(metrics: &Metrics) -> ClusterMetrics {
        ClusterMetrics {
            connected: metrics.gauge(
                "kuiperbelt_cluster_connected",
                "1 while connected to NATS in cluster mode, else 0.",
            ),
            pushes_sent: metrics.counter(
                "kuiperbelt_cluster_pushes_sent_total",
                "Push targets held by other nodes that answered (one per target).",
            ),
            pushes_received: metrics.counter(
                "kuiperbelt_cluster_pushes_received_total",
                "Pushes from other nodes to sessions held here.",
            ),
            errors: metrics.counter_vec(
                "kuiperbelt_cluster_errors_total",
                "Requests to other nodes without an outcome: unavailable (NATS lost), timeout, no_responders (no node holds the id).",
                "reason",
                &ClusterError::ALL.map(ClusterError::label),
            ),
            request_duration: metrics.histogram(
                "kuiperbelt_cluster_request_duration_seconds",
                "Time of a request to another node over NATS (a remote push or check).",
                &[
                    0.0002, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                    2.5,
                ],
            ),
        }
    }

    pub(crate) fn push_sent(&self) {
        self.pushes_sent.inc();
    }

    pub(crate) fn push_received(&self) {
        self.pushes_received.inc();
    }

    pub(crate) fn error(&self, error: ClusterError) {
        self.errors.with_label_values(&[error.label()]).inc();
    }

    pub(crate) fn request(&self, seconds: f64) {
        self.request_duration.observe(seconds);
    }
}
