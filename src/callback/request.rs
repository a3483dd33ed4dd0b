//! One callback request as the rest of the callback module sees it: which
//! callback it went to, what can go wrong with it, and the answer.
//!
//! Owns these types only; the client that sends requests is `mod.rs`, the
//! policy that judges failures `retry.rs`.

use std::time::Duration;

use bytes::Bytes;
use http::header::HeaderMap;
use http::StatusCode;

/// Which callback a request went to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CallbackKind {
    Connect,
    Establish,
    Receive,
    Close,
}

impl CallbackKind {
    pub(crate) const ALL: [CallbackKind; 4] = [
        CallbackKind::Connect,
        CallbackKind::Establish,
        CallbackKind::Receive,
        CallbackKind::Close,
    ];

    pub(crate) fn label(self) -> &'static str {
        match self {
            CallbackKind::Connect => "connect",
            CallbackKind::Establish => "establish",
            CallbackKind::Receive => "receive",
            CallbackKind::Close => "close",
        }
    }
}

/// A callback got no usable answer.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CallbackError {
    /// The request was sent (a connection to the app was in hand) and no
    /// whole answer came within `callback.timeout`.
    #[error("callback {0} timed out after {1:?}")]
    Timeout(&'static str, Duration),
    /// No connection to the app could be made within `callback.timeout`.
    #[error("callback {0} could not connect within {1:?}")]
    ConnectTimeout(&'static str, Duration),
    #[error("callback {0} failed: {1}")]
    Request(&'static str, String),
    #[error("callback {0} answered {1}")]
    Status(&'static str, StatusCode),
    #[error("callback {0} cannot be sent: {1}")]
    Invalid(&'static str, String),
}

/// A callback's whole response.
#[derive(Debug)]
pub(crate) struct CallbackResponse {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}
