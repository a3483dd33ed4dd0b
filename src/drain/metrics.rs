//! The drain's metrics: whether the server drains, and how many sessions
//! the running drain has still to close.
//!
//! Owns these families; `drain/mod.rs` sets them.

use prometheus::IntGauge;

use crate::metrics::Metrics;

/// The drain's metric handles.
#[derive(Clone, Debug)]
pub(crate) struct DrainMetrics {
    /// `kuiperbelt_draining`.
    pub(crate) draining: IntGauge,
    /// `kuiperbelt_drain_remaining_sessions`.
    pub(crate) remaining: IntGauge,
}

impl DrainMetrics {
    pub(crate) fn new(metrics: &Metrics) -> DrainMetrics {
        DrainMetrics {
            draining: metrics.gauge("kuiperbelt_draining", "1 while the server drains, else 0."),
            remaining: metrics.gauge(
                "kuiperbelt_drain_remaining_sessions",
                "Sessions the running drain has still to close.",
            ),
        }
    }
}
