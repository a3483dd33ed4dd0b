//! Every counter, gauge and histogram kuiperbelt keeps, on a registry owned by
//! one server instance; `/stats` (Go's JSON and text forms) reads the same values.
//!
//! Owns metric names, labels and the Go stats view. Call sites only bump the
//! handles defined here; nothing else registers metrics.

use std::time::{SystemTime, UNIX_EPOCH};

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};
use serde::Serialize;

/// Why a `/connect` did not become a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `origin_policy` rejected the Origin header (403).
    Origin,
    /// Not a valid WebSocket upgrade request (400/405/426).
    NotWebSocket,
    /// The connect callback failed or timed out (502).
    CallbackFailed,
    /// The connect callback answered 403 (the app's normal "no").
    CallbackForbidden,
    /// The connect callback answered another non-200 status.
    CallbackRefused,
    /// The connect callback answered 200 without the session header (400).
    NoSessionHeader,
    /// The connect callback's body could not become the first frame (502).
    BadFirstMessage,
    /// `callback.establish` failed after the upgrade.
    EstablishFailed,
    /// The server is draining (503).
    Draining,
}

impl Refusal {
    pub const ALL: [Refusal; 9] = [
        Refusal::Origin,
        Refusal::NotWebSocket,
        Refusal::CallbackFailed,
        Refusal::CallbackForbidden,
        Refusal::CallbackRefused,
        Refusal::NoSessionHeader,
        Refusal::BadFirstMessage,
        Refusal::EstablishFailed,
        Refusal::Draining,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Refusal::Origin => "origin",
            Refusal::NotWebSocket => "not_websocket",
            Refusal::CallbackFailed => "callback_failed",
            Refusal::CallbackForbidden => "callback_forbidden",
            Refusal::CallbackRefused => "callback_refused",
            Refusal::NoSessionHeader => "no_session_header",
            Refusal::BadFirstMessage => "bad_first_message",
            Refusal::EstablishFailed => "establish_failed",
            Refusal::Draining => "draining",
        }
    }

    /// Whether Go's `connect_errors` counts it: a 403 from the app is not an error.
    fn is_connect_error(self) -> bool {
        self != Refusal::CallbackForbidden
    }
}

/// Why a push did not reach one target session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageError {
    NotFound,
    QueueFull,
    Closed,
}

impl MessageError {
    pub const ALL: [MessageError; 3] = [
        MessageError::NotFound,
        MessageError::QueueFull,
        MessageError::Closed,
    ];

    pub fn label(self) -> &'static str {
        match self {
            MessageError::NotFound => "not_found",
            MessageError::QueueFull => "queue_full",
            MessageError::Closed => "closed",
        }
    }

    /// The text in the `errors` entry of a `/send` or `/close` reply.
    pub fn text(self) -> &'static str {
        match self {
            MessageError::NotFound => "session is not found.",
            MessageError::QueueFull => "session queue is full.",
            MessageError::Closed => "session is closed.",
        }
    }
}

/// How a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The client sent a close frame.
    Client,
    /// The connection broke (reset, EOF, protocol error).
    Broken,
    /// `idle_timeout` passed with no inbound frame.
    Idle,
    /// The client read nothing for the write timeout.
    WriteStalled,
    /// The app asked with `POST /close`.
    App,
    /// Shutdown or drain.
    Drain,
    /// A newer connection arrived with the same session id.
    Replaced,
    /// `callback.establish` failed.
    EstablishFailed,
}

impl CloseReason {
    pub const ALL: [CloseReason; 8] = [
        CloseReason::Client,
        CloseReason::Broken,
        CloseReason::Idle,
        CloseReason::WriteStalled,
        CloseReason::App,
        CloseReason::Drain,
        CloseReason::Replaced,
        CloseReason::EstablishFailed,
    ];

    pub fn label(self) -> &'static str {
        match self {
            CloseReason::Client => "client",
            CloseReason::Broken => "broken",
            CloseReason::Idle => "idle_timeout",
            CloseReason::WriteStalled => "write_stalled",
            CloseReason::App => "app",
            CloseReason::Drain => "drain",
            CloseReason::Replaced => "replaced",
            CloseReason::EstablishFailed => "establish_failed",
        }
    }

    /// Whether the app hears of it through the close callback: not for a
    /// close it asked for, a replaced id (still alive), or a connection
    /// that was never established.
    pub fn fires_close_callback(self) -> bool {
        matches!(
            self,
            CloseReason::Client
                | CloseReason::Broken
                | CloseReason::Idle
                | CloseReason::WriteStalled
                | CloseReason::Drain
        )
    }
}

/// Which callback a request went to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallbackKind {
    Connect,
    Establish,
    Receive,
    Close,
}

impl CallbackKind {
    pub const ALL: [CallbackKind; 4] = [
        CallbackKind::Connect,
        CallbackKind::Establish,
        CallbackKind::Receive,
        CallbackKind::Close,
    ];

    pub fn label(self) -> &'static str {
        match self {
            CallbackKind::Connect => "connect",
            CallbackKind::Establish => "establish",
            CallbackKind::Receive => "receive",
            CallbackKind::Close => "close",
        }
    }
}

/// Outcome classes of a callback request.
pub const CALLBACK_CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "error"];

/// The metric handles of one server instance.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    pub connections: IntGauge,
    pub connections_accepted: IntCounter,
    connections_refused: IntCounterVec,
    pub connections_closing: IntGauge,
    sessions_closed: IntCounterVec,
    pub messages_pushed: IntCounter,
    pub messages_delivered: IntCounter,
    message_errors: IntCounterVec,
    pub client_messages: IntCounter,
    pub received_bytes: IntCounter,
    pub sent_bytes: IntCounter,
    callback_requests: IntCounterVec,
    callback_duration: HistogramVec,
    pub queue_depth: Histogram,
    pub draining: IntGauge,
    pub drain_remaining: IntGauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Creates and registers every metric, so each reads 0 before first use.
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).expect("valid gauge");
            registry
                .register(Box::new(g.clone()))
                .expect("unique gauge");
            g
        };
        let counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).expect("valid counter");
            registry
                .register(Box::new(c.clone()))
                .expect("unique counter");
            c
        };
        let counter_vec = |name: &str, help: &str, label: &str, values: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), &[label]).expect("valid counter");
            registry
                .register(Box::new(c.clone()))
                .expect("unique counter");
            for v in values {
                c.with_label_values(&[*v]);
            }
            c
        };

        let build_info = IntGaugeVec::new(
            Opts::new(
                "kuiperbelt_build_info",
                "Build information; the value is always 1.",
            ),
            &["version"],
        )
        .expect("valid gauge");
        registry
            .register(Box::new(build_info.clone()))
            .expect("unique gauge");
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);

        let connections = gauge(
            "kuiperbelt_connections",
            "WebSocket sessions currently open.",
        );
        let connections_accepted = counter(
            "kuiperbelt_connections_accepted_total",
            "WebSocket connections accepted by the connect callback and upgraded.",
        );
        let connections_refused = counter_vec(
            "kuiperbelt_connections_refused_total",
            "Connect attempts that did not become a session, by reason.",
            "reason",
            &Refusal::ALL.map(Refusal::label),
        );
        let connections_closing = gauge(
            "kuiperbelt_connections_closing",
            "Sessions in their closing handshake.",
        );
        let sessions_closed = counter_vec(
            "kuiperbelt_sessions_closed_total",
            "Sessions ended, by reason.",
            "reason",
            &CloseReason::ALL.map(CloseReason::label),
        );
        let messages_pushed = counter(
            "kuiperbelt_messages_pushed_total",
            "Messages accepted by /send or /close for a session (one per target).",
        );
        let messages_delivered = counter(
            "kuiperbelt_messages_delivered_total",
            "Messages written to client sockets.",
        );
        let message_errors = counter_vec(
            "kuiperbelt_message_errors_total",
            "Push targets that did not get the message, by reason.",
            "reason",
            &MessageError::ALL.map(MessageError::label),
        );
        let client_messages = counter(
            "kuiperbelt_client_messages_total",
            "Messages received from clients (forwarded to the receive callback when set).",
        );
        let received_bytes = counter(
            "kuiperbelt_received_bytes_total",
            "Payload bytes of messages received from clients.",
        );
        let sent_bytes = counter(
            "kuiperbelt_sent_bytes_total",
            "Payload bytes of messages written to clients.",
        );
        let callback_requests = IntCounterVec::new(
            Opts::new(
                "kuiperbelt_callback_requests_total",
                "Callback requests to the app, by callback and status class (error: no answer).",
            ),
            &["callback", "class"],
        )
        .expect("valid counter");
        registry
            .register(Box::new(callback_requests.clone()))
            .expect("unique counter");
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
        registry
            .register(Box::new(callback_duration.clone()))
            .expect("unique histogram");
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
        registry
            .register(Box::new(queue_depth.clone()))
            .expect("unique histogram");
        let draining = gauge("kuiperbelt_draining", "1 while the server drains, else 0.");
        let drain_remaining = gauge(
            "kuiperbelt_drain_remaining_sessions",
            "Sessions the running drain has still to close.",
        );

        Metrics {
            registry,
            connections,
            connections_accepted,
            connections_refused,
            connections_closing,
            sessions_closed,
            messages_pushed,
            messages_delivered,
            message_errors,
            client_messages,
            received_bytes,
            sent_bytes,
            callback_requests,
            callback_duration,
            queue_depth,
            draining,
            drain_remaining,
        }
    }

    pub fn refused(&self, reason: Refusal) {
        self.connections_refused
            .with_label_values(&[reason.label()])
            .inc();
    }

    pub fn message_error(&self, reason: MessageError) {
        self.message_errors
            .with_label_values(&[reason.label()])
            .inc();
    }

    pub fn session_closed(&self, reason: CloseReason) {
        self.sessions_closed
            .with_label_values(&[reason.label()])
            .inc();
    }

    /// Records one callback request: its status (or `None` when it got no
    /// answer) and how long it took.
    pub fn callback(&self, kind: CallbackKind, status: Option<u16>, seconds: f64) {
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

    pub fn refused_count(&self, reason: Refusal) -> u64 {
        self.connections_refused
            .with_label_values(&[reason.label()])
            .get()
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .expect("text encoding cannot fail");
        String::from_utf8(buf).expect("exposition is UTF-8")
    }

    /// Go's `/stats` numbers.
    pub fn stats(&self) -> Stats {
        Stats {
            connections: self.connections.get(),
            total_connections: self.connections_accepted.get(),
            total_messages: self.messages_pushed.get(),
            connect_errors: Refusal::ALL
                .iter()
                .filter(|r| r.is_connect_error())
                .map(|r| self.refused_count(*r))
                .sum(),
            message_errors: MessageError::ALL
                .iter()
                .map(|e| self.message_errors.with_label_values(&[e.label()]).get())
                .sum(),
            closing_connections: self.connections_closing.get(),
        }
    }
}

/// The body of `GET /stats`, field order as the Go server writes it.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct Stats {
    pub connections: i64,
    pub total_connections: u64,
    pub total_messages: u64,
    pub connect_errors: u64,
    pub message_errors: u64,
    pub closing_connections: i64,
}

impl Stats {
    /// The `?format=text` form: `name<TAB>value<TAB>unixtime` per line.
    pub fn to_text(&self) -> String {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let rows: [(&str, i128); 6] = [
            ("kuiperbelt.conn.current", self.connections as i128),
            ("kuiperbelt.conn.total", self.total_connections as i128),
            ("kuiperbelt.conn.errors", self.connect_errors as i128),
            ("kuiperbelt.conn.closing", self.closing_connections as i128),
            ("kuiperbelt.messages.total", self.total_messages as i128),
            ("kuiperbelt.messages.errors", self.message_errors as i128),
        ];
        rows.iter()
            .map(|(name, value)| format!("{name}\t{value}\t{now}\n"))
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
            "kuiperbelt_callback_requests_total{callback=\"receive\",class=\"2xx\"} 0",
            "kuiperbelt_callback_duration_seconds_count{callback=\"close\"} 0",
            "kuiperbelt_sessions_closed_total{reason=\"drain\"} 0",
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
    fn stats_text_lines() {
        let m = Metrics::new();
        m.connections.set(3);
        let text = m.stats().to_text();
        let first = text.lines().next().unwrap();
        let cols: Vec<&str> = first.split('\t').collect();
        assert_eq!(cols[0], "kuiperbelt.conn.current");
        assert_eq!(cols[1], "3");
        assert!(cols[2].parse::<u64>().unwrap() > 1_600_000_000);
        assert_eq!(text.lines().count(), 6);
    }
}
