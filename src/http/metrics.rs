//! The HTTP surface's own metric families: `/batch` requests, accepted or
//! refused as bad input, and the items the accepted ones carried.

use prometheus::{IntCounter, IntCounterVec};

use crate::metrics::Metrics;

#[derive(Clone, Debug)]
pub(crate) struct BatchMetrics {
    requests: IntCounterVec,
    items: IntCounter,
}

impl BatchMetrics {
    pub(crate) fn new(metrics: &Metrics) -> BatchMetrics {
        BatchMetrics {
            requests: metrics.counter_vec(
                "kuiperbelt_batch_requests_total",
                "/batch requests: accepted (delivered item by item), or refused as bad input (nothing sent: a bad body or item, too many items, a payload over max_message_size; a body over batch.max_bytes is refused before it is read and not counted).",
                "result",
                &["accepted", "refused"],
            ),
            items: metrics.counter(
                "kuiperbelt_batch_items_total",
                "Items of accepted /batch requests.",
            ),
        }
    }

    pub(crate) fn accepted(&self, items: usize) {
        self.requests.with_label_values(&["accepted"]).inc();
        self.items.inc_by(items as u64);
    }

    pub(crate) fn refused(&self) {
        self.requests.with_label_values(&["refused"]).inc();
    }
}
