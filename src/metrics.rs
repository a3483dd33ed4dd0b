//! Every counter, gauge and histogram kuiperbelt keeps, on a registry owned by
//! one server instance, and Go's `/stats` numbers read from the same values.
//!
//! Owns metric names, help texts and label sets. Call sites bump the
//! handles through the methods here; nothing else registers metrics. The
//! label values are the domain's own (`Refusal`, `CloseReason`, `Outcome`,
//! `CallbackKind`, `WriteError`).

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};
use serde::{Deserialize, Serialize};

use crate::callback::outbox::Delivery;
use crate::callback::CallbackKind;
use crate::http::connect::Refusal;
use crate::session::{CloseReason, WriteError};
use crate::sessions::Outcome;

/// Outcome classes of a callback request.
pub(crate) const CALLBACK_CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "error"];

/// The metric handles of one server instance.
#[derive(Clone, Debug)]
pub(crate) struct Metrics {
    registry: Registry,
    pub(crate) connections: IntGauge,
    connect_requests: IntCounter,
    pub(crate) connections_accepted: IntCounter,
    connections_refused: IntCounterVec,
    pub(crate) connections_closing: IntGauge,
    sessions_closed: IntCounterVec,
    messages_pushed: IntCounter,
    messages_delivered: IntCounter,
    message_errors: IntCounterVec,
    client_messages: IntCounter,
    received_bytes: IntCounter,
    sent_bytes: IntCounter,
    callback_requests: IntCounterVec,
    callback_duration: HistogramVec,
    queue_depth: Histogram,
    pub(crate) draining: IntGauge,
    pub(crate) drain_remaining: IntGauge,
    api_denied: IntCounterVec,
    pub(crate) app_up: IntGauge,
    callback_retries: IntCounterVec,
    callback_dropped: IntCounterVec,
    callback_in_flight: IntGauge,
    pub(crate) callback_slot_waits: IntCounter,
    pending_messages: IntGauge,
    pending_bytes: IntGauge,
    pub(crate) cluster_connected: IntGauge,
    cluster_pushes_sent: IntCounter,
    cluster_pushes_received: IntCounter,
    cluster_errors: IntCounterVec,
    cluster_request_duration: Histogram,
}

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

/// Decrements `kuiperbelt_callback_in_flight` when dropped.
pub(crate) struct InFlight(IntGauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// Labels of `kuiperbelt_api_denied_total`.
pub(crate) const API_DENIALS: [&str; 2] = ["token", "peer"];

impl Metrics {
    /// Creates and registers every metric, so each reads 0 before first use.
    pub(crate) fn new() -> Metrics {
        let registry = Registry::new();
        let register = |c: Box<dyn prometheus::core::Collector>| {
            registry.register(c).expect("metric names are unique");
        };
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).expect("valid gauge");
            register(Box::new(g.clone()));
            g
        };
        let counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).expect("valid counter");
            register(Box::new(c.clone()));
            c
        };
        let counter_vec = |name: &str, help: &str, label: &str, values: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), &[label]).expect("valid counter");
            register(Box::new(c.clone()));
            for v in values {
                c.with_label_values(&[*v]);
            }
            c
        };

        // process_open_fds, process_max_fds, process_resident_memory_bytes,
        // process_cpu_seconds_total, ...: every connection is a descriptor.
        register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ));

        let build_info = IntGaugeVec::new(
            Opts::new(
                "kuiperbelt_build_info",
                "Build information; the value is always 1.",
            ),
            &["version"],
        )
        .expect("valid gauge");
        register(Box::new(build_info.clone()));
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);

        let callback_labels = CallbackKind::ALL.map(CallbackKind::label);
        let callback_dropped = IntCounterVec::new(
            Opts::new(
                "kuiperbelt_callback_dropped_total",
                "Receive and close callbacks given up: refused (the app answered a status that is not retried), timeout (callback.timeout passed after the request was sent; not retried unless callback.retry_timeouts) or gave_up (callback.retry_for passed).",
            ),
            &["callback", "reason"],
        )
        .expect("valid counter");
        register(Box::new(callback_dropped.clone()));
        for kind in [CallbackKind::Receive, CallbackKind::Close] {
            for how in Delivery::DROPPED {
                callback_dropped.with_label_values(&[kind.label(), how.label()]);
            }
        }
        let cluster_request_duration = Histogram::with_opts(
            HistogramOpts::new(
                "kuiperbelt_cluster_request_duration_seconds",
                "Time of a request to another node over NATS (a remote push or check).",
            )
            .buckets(vec![
                0.0002, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
            ]),
        )
        .expect("valid histogram");
        register(Box::new(cluster_request_duration.clone()));
        let mut message_error_labels: Vec<&str> =
            Outcome::FAILURES.iter().map(|o| o.label()).collect();
        message_error_labels.extend(WriteError::ALL.map(WriteError::label));

        let callback_requests = IntCounterVec::new(
            Opts::new(
                "kuiperbelt_callback_requests_total",
                "Callback requests to the app, by callback and status class (error: no answer).",
            ),
            &["callback", "class"],
        )
        .expect("valid counter");
        register(Box::new(callback_requests.clone()));
        let callback_duration = HistogramVec::new(
            HistogramOpts::new(
                "kuiperbelt_callback_duration_seconds",
                "Time from sending a callback request to reading its whole response.",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0,
            ]),
            &["callback"],
        )
        .expect("valid histogram");
        register(Box::new(callback_duration.clone()));
        for kind in CallbackKind::ALL {
            callback_duration.with_label_values(&[kind.label()]);
            for class in CALLBACK_CLASSES {
                callback_requests.with_label_values(&[kind.label(), class]);
            }
        }
        let queue_depth = Histogram::with_opts(
            HistogramOpts::new(
                "kuiperbelt_session_queue_depth",
                "Messages waiting in a session's queue, sampled at each write to its socket.",
            )
            .buckets(vec![
                0.0, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0,
            ]),
        )
        .expect("valid histogram");
        register(Box::new(queue_depth.clone()));

        Metrics {
            connections: gauge(
                "kuiperbelt_connections",
                "WebSocket connections open (from the upgrade to the end; /stats connections).",
            ),
            connect_requests: counter(
                "kuiperbelt_connect_requests_total",
                "Requests to the connect path, accepted or not (/stats total_connections).",
            ),
            connections_accepted: counter(
                "kuiperbelt_connections_accepted_total",
                "WebSocket connections accepted by the connect callback and upgraded.",
            ),
            connections_refused: counter_vec(
                "kuiperbelt_connections_refused_total",
                "Connect attempts that did not become a session, by reason.",
                "reason",
                &Refusal::ALL.map(Refusal::label),
            ),
            connections_closing: gauge(
                "kuiperbelt_connections_closing",
                "Ended connections whose close callback the app has not answered yet.",
            ),
            sessions_closed: counter_vec(
                "kuiperbelt_sessions_closed_total",
                "Sessions ended, by reason.",
                "reason",
                &CloseReason::ALL.map(CloseReason::label),
            ),
            messages_pushed: counter(
                "kuiperbelt_messages_pushed_total",
                "Messages accepted for a session: the first message, and one per known target of /send or of /close with a body (/stats total_messages).",
            ),
            messages_delivered: counter(
                "kuiperbelt_messages_delivered_total",
                "Messages written to client sockets.",
            ),
            message_errors: counter_vec(
                "kuiperbelt_message_errors_total",
                "Messages that did not reach a client, by reason: push targets that missed it (not_found, queue_full, closed) and accepted messages that could not be written (write_failed, write_timeout; /stats message_errors).",
                "reason",
                &message_error_labels,
            ),
            client_messages: counter(
                "kuiperbelt_client_messages_total",
                "Messages received from clients (forwarded to the receive callback when set).",
            ),
            received_bytes: counter(
                "kuiperbelt_received_bytes_total",
                "Payload bytes of messages received from clients.",
            ),
            sent_bytes: counter(
                "kuiperbelt_sent_bytes_total",
                "Payload bytes of messages written to clients.",
            ),
            callback_requests,
            callback_duration,
            queue_depth,
            draining: gauge("kuiperbelt_draining", "1 while the server drains, else 0."),
            drain_remaining: gauge(
                "kuiperbelt_drain_remaining_sessions",
                "Sessions the running drain has still to close.",
            ),
            api_denied: counter_vec(
                "kuiperbelt_api_denied_total",
                "Push/admin requests refused: a missing or wrong token (token), or /drain from a peer outside the pod without a token or api.listen (peer).",
                "reason",
                &API_DENIALS,
            ),
            app_up: gauge(
                "kuiperbelt_app_up",
                "1 while receive and close callbacks reach the app, 0 while they are held (the gate is closed).",
            ),
            callback_retries: counter_vec(
                "kuiperbelt_callback_retries_total",
                "Receive and close callback attempts that failed and will be retried.",
                "callback",
                &callback_labels,
            ),
            callback_dropped,
            callback_in_flight: gauge(
                "kuiperbelt_callback_in_flight",
                "Receive and close callback requests in flight (at most callback.concurrency).",
            ),
            callback_slot_waits: counter(
                "kuiperbelt_callback_slot_waits_total",
                "Receive and close callback requests that found callback.concurrency requests in flight and waited for a slot.",
            ),
            pending_messages: gauge(
                "kuiperbelt_callback_pending_messages",
                "Client messages and close events waiting for the app.",
            ),
            pending_bytes: gauge(
                "kuiperbelt_callback_pending_bytes",
                "Bytes of client messages waiting for the app (bounded by callback.max_pending_bytes).",
            ),
            cluster_connected: gauge(
                "kuiperbelt_cluster_connected",
                "1 while connected to NATS in cluster mode, else 0.",
            ),
            cluster_pushes_sent: counter(
                "kuiperbelt_cluster_pushes_sent_total",
                "Push targets held by other nodes that answered (one per target).",
            ),
            cluster_pushes_received: counter(
                "kuiperbelt_cluster_pushes_received_total",
                "Pushes from other nodes to sessions held here.",
            ),
            cluster_errors: counter_vec(
                "kuiperbelt_cluster_errors_total",
                "Requests to other nodes without an outcome: unavailable (NATS lost), timeout, no_responders (no node holds the id).",
                "reason",
                &ClusterError::ALL.map(ClusterError::label),
            ),
            cluster_request_duration,
            registry,
        }
    }

    pub(crate) fn cluster_push_sent(&self) {
        self.cluster_pushes_sent.inc();
    }

    pub(crate) fn cluster_push_received(&self) {
        self.cluster_pushes_received.inc();
    }

    pub(crate) fn cluster_error(&self, error: ClusterError) {
        self.cluster_errors
            .with_label_values(&[error.label()])
            .inc();
    }

    pub(crate) fn cluster_request(&self, seconds: f64) {
        self.cluster_request_duration.observe(seconds);
    }

    /// A receive or close callback attempt failed and will be retried.
    pub(crate) fn callback_retry(&self, kind: CallbackKind) {
        self.callback_retries
            .with_label_values(&[kind.label()])
            .inc();
    }

    /// A receive or close callback was given up.
    pub(crate) fn callback_dropped(&self, kind: CallbackKind, how: Delivery) {
        self.callback_dropped
            .with_label_values(&[kind.label(), how.label()])
            .inc();
    }

    /// One more callback request in flight, until the guard drops.
    pub(crate) fn in_flight(&self) -> InFlight {
        self.callback_in_flight.inc();
        InFlight(self.callback_in_flight.clone())
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

    pub(crate) fn connect_request(&self) {
        self.connect_requests.inc();
    }

    pub(crate) fn refused(&self, reason: Refusal) {
        self.connections_refused
            .with_label_values(&[reason.label()])
            .inc();
    }

    pub(crate) fn api_denied(&self, reason: &'static str) {
        self.api_denied.with_label_values(&[reason]).inc();
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
                    self.message_errors
                        .with_label_values(&[failed.label()])
                        .inc();
                }
            }
            known += u64::from(*outcome != Outcome::NotFound);
        }
        if let Some(payload) = payload {
            self.messages_pushed.inc_by(known);
            if written > 0 {
                self.delivered(written, written * payload as u64);
            }
        }
    }

    /// The connect callback's body, accepted as a session's first message.
    pub(crate) fn first_message(&self) {
        self.messages_pushed.inc();
    }

    /// `frames` frames of `bytes` payload bytes reached client sockets.
    pub(crate) fn delivered(&self, frames: u64, bytes: u64) {
        self.messages_delivered.inc_by(frames);
        self.sent_bytes.inc_by(bytes);
    }

    /// `lost` accepted messages could not be written.
    pub(crate) fn write_failed(&self, error: WriteError, lost: u64) {
        self.message_errors
            .with_label_values(&[error.label()])
            .inc_by(lost);
    }

    pub(crate) fn client_message(&self, bytes: usize) {
        self.client_messages.inc();
        self.received_bytes.inc_by(bytes as u64);
    }

    pub(crate) fn queue_depth(&self, depth: usize) {
        self.queue_depth.observe(depth as f64);
    }

    pub(crate) fn session_closed(&self, reason: CloseReason) {
        self.sessions_closed
            .with_label_values(&[reason.label()])
            .inc();
    }

    /// Records one callback request: its status (or `None` when it got no
    /// answer) and how long it took.
    pub(crate) fn callback(&self, kind: CallbackKind, status: Option<u16>, seconds: f64) {
        let class = match status {
            Some(s @ 100..=599) => CALLBACK_CLASSES[(s / 100 - 1) as usize],
            _ => "error",
        };
        self.callback_requests
            .with_label_values(&[kind.label(), class])
            .inc();
        self.callback_duration
            .with_label_values(&[kind.label()])
            .observe(seconds);
    }

    /// The Prometheus text exposition of every metric.
    pub(crate) fn encode(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .expect("text encoding cannot fail");
        String::from_utf8(buf).expect("exposition is UTF-8")
    }

    /// Go's `/stats` numbers.
    pub(crate) fn stats(&self) -> Stats {
        let refused = |r: &Refusal| {
            self.connections_refused
                .with_label_values(&[r.label()])
                .get()
        };
        Stats {
            connections: self.connections.get(),
            total_connections: self.connect_requests.get(),
            total_messages: self.messages_pushed.get(),
            connect_errors: Refusal::ALL
                .iter()
                .filter(|r| r.is_connect_error())
                .map(refused)
                .sum(),
            message_errors: WriteError::ALL
                .iter()
                .map(|e| self.message_errors.with_label_values(&[e.label()]).get())
                .sum(),
            closing_connections: self.connections_closing.get(),
        }
    }
}

/// The body of `GET /stats`, field order as the Go server writes it.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct Stats {
    pub(crate) connections: i64,
    pub(crate) total_connections: u64,
    pub(crate) total_messages: u64,
    pub(crate) connect_errors: u64,
    pub(crate) message_errors: u64,
    pub(crate) closing_connections: i64,
}

impl Stats {
    /// Adds another node's numbers (`/stats?scope=cluster`).
    pub(crate) fn add(&mut self, other: &Stats) {
        self.connections += other.connections;
        self.total_connections += other.total_connections;
        self.total_messages += other.total_messages;
        self.connect_errors += other.connect_errors;
        self.message_errors += other.message_errors;
        self.closing_connections += other.closing_connections;
    }

    /// The `?format=text` form: `name<TAB>value<TAB>unixtime` per line.
    pub(crate) fn to_text(self, unixtime: u64) -> String {
        let rows: [(&str, i128); 6] = [
            ("kuiperbelt.conn.current", self.connections as i128),
            ("kuiperbelt.conn.total", self.total_connections as i128),
            ("kuiperbelt.conn.errors", self.connect_errors as i128),
            ("kuiperbelt.conn.closing", self.closing_connections as i128),
            ("kuiperbelt.messages.total", self.total_messages as i128),
            ("kuiperbelt.messages.errors", self.message_errors as i128),
        ];
        rows.iter()
            .map(|(name, value)| format!("{name}\t{value}\t{unixtime}\n"))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_reads_zero_before_use() {
        let m = Metrics::new();
        let text = m.encode();
        for name in [
            "kuiperbelt_connections 0",
            "kuiperbelt_connections_refused_total{reason=\"origin\"} 0",
            "kuiperbelt_message_errors_total{reason=\"not_found\"} 0",
            "kuiperbelt_message_errors_total{reason=\"write_timeout\"} 0",
            "kuiperbelt_callback_requests_total{callback=\"receive\",class=\"2xx\"} 0",
            "kuiperbelt_callback_duration_seconds_count{callback=\"close\"} 0",
            "kuiperbelt_sessions_closed_total{reason=\"drain\"} 0",
            "kuiperbelt_api_denied_total{reason=\"peer\"} 0",
            "process_open_fds ",
            "kuiperbelt_cluster_connected 0",
            "kuiperbelt_cluster_errors_total{reason=\"timeout\"} 0",
            "process_max_fds ",
            "kuiperbelt_build_info{version=",
        ] {
            assert!(text.contains(name), "missing {name} in\n{text}");
        }
    }

    #[test]
    fn forbidden_is_not_a_connect_error() {
        let m = Metrics::new();
        m.refused(Refusal::CallbackForbidden);
        m.refused(Refusal::CallbackFailed);
        assert_eq!(m.stats().connect_errors, 1);
    }

    #[test]
    fn message_errors_in_stats_are_write_failures_only() {
        let m = Metrics::new();
        m.pushed(
            &[Outcome::NotFound, Outcome::Full, Outcome::Queued],
            Some(1),
        );
        assert_eq!(m.stats().message_errors, 0);
        assert_eq!(m.stats().total_messages, 2, "known targets count");
        m.write_failed(WriteError::TimedOut, 3);
        assert_eq!(m.stats().message_errors, 3);
    }

    #[test]
    fn stats_text_lines() {
        let m = Metrics::new();
        m.connections.set(3);
        let text = m.stats().to_text(1_700_000_000);
        let first = text.lines().next().unwrap();
        assert_eq!(first, "kuiperbelt.conn.current\t3\t1700000000");
        assert_eq!(text.lines().count(), 6);
    }
}
