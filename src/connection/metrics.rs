//! How connections are refused and how sessions end ([`Refusal`],
//! [`CloseReason`]), and the metrics that count them and what clients send.
//!
//! Owns these label types and families; the connect handler and the
//! connection task bump them. The open-connection gauge and the connect
//! requests are `/stats` figures (`crate::metrics::Figures`).

use prometheus::{IntCounter, IntCounterVec};

use crate::metrics::{Figures, Metrics};

/// Why a `/connect` did not become a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
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
    /// The connect callback's channels are bad or too many (502).
    BadChannels,
    /// `callback.establish` failed after the upgrade.
    EstablishFailed,
    /// The server is draining (503).
    Draining,
}

impl Refusal {
    pub(crate) const ALL: [Refusal; 10] = [
        Refusal::Origin,
        Refusal::NotWebSocket,
        Refusal::CallbackFailed,
        Refusal::CallbackForbidden,
        Refusal::CallbackRefused,
        Refusal::NoSessionHeader,
        Refusal::BadFirstMessage,
        Refusal::BadChannels,
        Refusal::EstablishFailed,
        Refusal::Draining,
    ];

    pub(crate) fn label(self) -> &'static str {
        match self {
            Refusal::Origin => "origin",
            Refusal::NotWebSocket => "not_websocket",
            Refusal::CallbackFailed => "callback_failed",
            Refusal::CallbackForbidden => "callback_forbidden",
            Refusal::CallbackRefused => "callback_refused",
            Refusal::NoSessionHeader => "no_session_header",
            Refusal::BadFirstMessage => "bad_first_message",
            Refusal::BadChannels => "bad_channels",
            Refusal::EstablishFailed => "establish_failed",
            Refusal::Draining => "draining",
        }
    }

    /// Whether Go's `connect_errors` counts it: a 403 from the app is not an error.
    pub(crate) fn is_connect_error(self) -> bool {
        self != Refusal::CallbackForbidden
    }
}

/// How a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CloseReason {
    /// The client sent a close frame.
    Client,
    /// The connection broke (reset, EOF).
    Broken,
    /// The client broke the WebSocket protocol (1002, 1007 or 1009 sent).
    ProtocolError,
    /// `idle_timeout` passed with no activity.
    Idle,
    /// A write to the client stayed blocked past its timeout.
    WriteTimeout,
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
    pub(crate) const ALL: [CloseReason; 9] = [
        CloseReason::Client,
        CloseReason::Broken,
        CloseReason::ProtocolError,
        CloseReason::Idle,
        CloseReason::WriteTimeout,
        CloseReason::App,
        CloseReason::Drain,
        CloseReason::Replaced,
        CloseReason::EstablishFailed,
    ];

    /// The metric label, the access-log reason and the close callback's
    /// `X-Kuiperbelt-Close-Reason`.
    pub(crate) fn label(self) -> &'static str {
        match self {
            CloseReason::Client => "client",
            CloseReason::Broken => "broken",
            CloseReason::ProtocolError => "protocol_error",
            CloseReason::Idle => "idle",
            CloseReason::WriteTimeout => "write_timeout",
            CloseReason::App => "app",
            CloseReason::Drain => "drain",
            CloseReason::Replaced => "replaced",
            CloseReason::EstablishFailed => "establish_failed",
        }
    }

    /// Whether the app hears of it through the close callback: not for a
    /// close it asked for, a replaced id (still alive), or a connection
    /// that was never established.
    pub(crate) fn fires_close_callback(self) -> bool {
        !matches!(
            self,
            CloseReason::App | CloseReason::Replaced | CloseReason::EstablishFailed
        )
    }
}

/// The connection metric handles.
#[derive(Clone, Debug)]
pub(crate) struct ConnectionMetrics {
    /// `kuiperbelt_connections_accepted_total`.
    pub(crate) accepted: IntCounter,
    refused: IntCounterVec,
    closed: IntCounterVec,
    client_messages: IntCounter,
    received_bytes: IntCounter,
    figures: Figures,
}

impl ConnectionMetrics {
    pub(crate) fn new(metrics: &Metrics) -> ConnectionMetrics {
        ConnectionMetrics {
            accepted: metrics.counter(
                "kuiperbelt_connections_accepted_total",
                "WebSocket connections accepted by the connect callback and upgraded.",
            ),
            refused: metrics.counter_vec(
                "kuiperbelt_connections_refused_total",
                "Connect attempts that did not become a session, by reason.",
                "reason",
                &Refusal::ALL.map(Refusal::label),
            ),
            closed: metrics.counter_vec(
                "kuiperbelt_sessions_closed_total",
                "Sessions ended, by reason.",
                "reason",
                &CloseReason::ALL.map(CloseReason::label),
            ),
            client_messages: metrics.counter(
                "kuiperbelt_client_messages_total",
                "Messages received from clients (forwarded to the receive callback when set).",
            ),
            received_bytes: metrics.counter(
                "kuiperbelt_received_bytes_total",
                "Payload bytes of messages received from clients.",
            ),
            figures: metrics.figures.clone(),
        }
    }

    /// A request to the connect path (`/stats` total_connections).
    pub(crate) fn connect_request(&self) {
        self.figures.connect_requests.inc();
    }

    pub(crate) fn refused(&self, reason: Refusal) {
        self.refused.with_label_values(&[reason.label()]).inc();
        if reason.is_connect_error() {
            self.figures.connect_errors.inc();
        }
    }

    pub(crate) fn session_closed(&self, reason: CloseReason) {
        self.closed.with_label_values(&[reason.label()]).inc();
    }

    pub(crate) fn client_message(&self, bytes: usize) {
        self.client_messages.inc();
        self.received_bytes.inc_by(bytes as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forbidden_is_not_a_connect_error() {
        let metrics = Metrics::new();
        let m = ConnectionMetrics::new(&metrics);
        m.refused(Refusal::CallbackForbidden);
        m.refused(Refusal::CallbackFailed);
        assert_eq!(metrics.stats().connect_errors, 1);
        let text = metrics.encode();
        assert!(
            text.contains("kuiperbelt_connections_refused_total{reason=\"callback_forbidden\"} 1")
        );
        assert!(text.contains("kuiperbelt_sessions_closed_total{reason=\"drain\"} 0"));
    }
}
