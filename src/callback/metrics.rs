//! The callback metrics: requests by callback and status class, their
//! duration, the gate (`kuiperbelt_app_up`), retries, drops, requests in
//! flight and waiting for a slot, and the backlog waiting for the app.
//!
//! Owns these families, their help texts and labels ([`CallbackKind`],
//! [`Delivery`]); the outbox and the client bump them.

use prometheus::{HistogramVec, IntCounter, IntCounterVec, IntGauge};

use super::request::CallbackKind;
use super::retry::Delivery;
use crate::metrics::Metrics;

/// Outcome classes of a callback request.
const CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "error"];

/// The callback metric handles of one server instance.
#[derive(Clone, Debug)]
pub(crate) struct CallbackMetrics {
    requests: IntCounterVec,
    duration: HistogramVec,
    /// `kuiperbelt_app_up`: the gate's state.
    pub(crate) app_up: IntGauge,
    retries: IntCounterVec,
    dropped: IntCounterVec,
    in_flight: IntGauge,
    /// `kuiperbelt_callback_slot_waits_total`.
    pub(crate) slot_waits: IntCounter,
    pending_messages: IntGauge,
    pending_bytes: IntGauge,
}

/// Decrements `kuiperbelt_callback_in_flight` when dropped.
pub(crate) struct InFlight(IntGauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl CallbackMetrics {
    /// Declares every callback family on `metrics`, each at 0.
    pub(crate) fn new(metrics: &Metrics) -> CallbackMetrics {
        let kinds = CallbackKind::ALL.map(CallbackKind::label);
        let requests = metrics.counter_vec2(
            "kuiperbelt_callback_requests_total",
            "Callback requests to the app, by callback and status class (error: no answer).",
            ["callback", "class"],
            kinds
                .iter()
                .flat_map(|kind| CLASSES.map(|class| [*kind, class])),
        );
        let dropped = metrics.counter_vec2(
            "kuiperbelt_callback_dropped_total",
            "Receive and close callbacks given up: refused (the app answered a status that is not retried), timeout (callback.timeout passed after the request was sent; not retried unless callback.retry_timeouts) or gave_up (callback.retry_for passed).",
            ["callback", "reason"],
            [CallbackKind::Receive, CallbackKind::Close]
                .iter()
                .flat_map(|kind| Delivery::DROPPED.map(|how| [kind.label(), how.label()])),
        );
        CallbackMetrics {
            requests,
            duration: metrics.histogram_vec(
                "kuiperbelt_callback_duration_seconds",
                "Time from sending a callback request to reading its whole response.",
                &[
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                    10.0,
                ],
                "callback",
                &kinds,
            ),
            app_up: metrics.gauge(
                "kuiperbelt_app_up",
                "1 while receive and close callbacks reach the app, 0 while they are held (the gate is closed).",
            ),
            retries: metrics.counter_vec(
                "kuiperbelt_callback_retries_total",
                "Receive and close callback attempts that failed and will be retried.",
                "callback",
                &kinds,
            ),
            dropped,
            in_flight: metrics.gauge(
                "kuiperbelt_callback_in_flight",
                "Receive and close callback requests in flight (at most callback.concurrency).",
            ),
            slot_waits: metrics.counter(
                "kuiperbelt_callback_slot_waits_total",
                "Receive and close callback requests that found callback.concurrency requests in flight and waited for a slot.",
            ),
            pending_messages: metrics.gauge(
                "kuiperbelt_callback_pending_messages",
                "Client messages and close events waiting for the app.",
            ),
            pending_bytes: metrics.gauge(
                "kuiperbelt_callback_pending_bytes",
                "Bytes of client messages waiting for the app (bounded by callback.max_pending_bytes).",
            ),
        }
    }

    /// Records one callback request: its status (or `None` when it got no
    /// answer) and how long it took.
    pub(crate) fn request(&self, kind: CallbackKind, status: Option<u16>, seconds: f64) {
        let class = match status {
            Some(s @ 100..=599) => CLASSES[(s / 100 - 1) as usize],
            _ => "error",
        };
        self.requests
            .with_label_values(&[kind.label(), class])
            .inc();
        self.duration
            .with_label_values(&[kind.label()])
            .observe(seconds);
    }

    /// A receive or close callback attempt failed and will be retried.
    pub(crate) fn retry(&self, kind: CallbackKind) {
        self.retries.with_label_values(&[kind.label()]).inc();
    }

    /// A receive or close callback was given up.
    pub(crate) fn dropped(&self, kind: CallbackKind, how: Delivery) {
        self.dropped
            .with_label_values(&[kind.label(), how.label()])
            .inc();
    }

    /// One more callback request in flight, until the guard drops.
    pub(crate) fn in_flight(&self) -> InFlight {
        self.in_flight.inc();
        InFlight(self.in_flight.clone())
    }

    /// Client messages and close events waiting for the app.
    pub(crate) fn pending_messages(&self) -> i64 {
        self.pending_messages.get()
    }

    /// Messages waiting for the app changed by `delta`; `bytes` wait now.
    pub(crate) fn pending(&self, delta: i64, bytes: usize) {
        self.pending_messages.add(delta);
        self.pending_bytes.set(bytes as i64);
    }
}
