//! JSON replies of the HTTP API (`{"errors":[...],"result":"OK"|"NG"}`): the
//! body shapes and how they are written.
//!
//! Owns response bodies only; each handler decides which reply and status
//! apply.

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Response, StatusCode};
use serde::Serialize;

/// The body type every handler answers with (warp turns it into its own).
pub(crate) type Body = Bytes;

/// One entry of `errors`: about a session, a channel, or the request.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub(crate) struct ErrorEntry {
    pub(crate) error: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) session: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) channel: Option<String>,
}

impl ErrorEntry {
    pub(crate) fn session(error: &str, session: &str) -> ErrorEntry {
        ErrorEntry {
            error: error.into(),
            session: Some(session.into()),
            channel: None,
        }
    }

    pub(crate) fn channel(error: &str, channel: &str) -> ErrorEntry {
        ErrorEntry {
            error: error.into(),
            session: None,
            channel: Some(channel.into()),
        }
    }
}

/// `{"errors":[...],"result":"OK"}`, field order as the Go server writes it.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ApiReply {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) errors: Vec<ErrorEntry>,
    pub(crate) result: &'static str,
}

impl ApiReply {
    pub(crate) fn ng(errors: Vec<ErrorEntry>) -> ApiReply {
        ApiReply {
            errors,
            result: "NG",
        }
    }
}

/// A JSON response with `Content-Type: application/json`.
pub(crate) fn json<T: Serialize>(status: StatusCode, body: &T) -> Response<Body> {
    let bytes = serde_json::to_vec(body).expect("reply serializes");
    with_type(status, "application/json", Bytes::from(bytes))
}

/// A response with the given status, content type and body.
pub(crate) fn with_type(
    status: StatusCode,
    content_type: &'static str,
    body: Bytes,
) -> Response<Body> {
    let mut res = Response::new(body);
    *res.status_mut() = status;
    res.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    res
}

/// `{"errors":[{"error":message}],"result":"NG"}` with `status`.
pub(crate) fn error(status: StatusCode, message: impl Into<String>) -> Response<Body> {
    json(
        status,
        &ApiReply::ng(vec![ErrorEntry {
            error: message.into(),
            session: None,
            channel: None,
        }]),
    )
}

/// `{"result":"OK"}` when nothing failed; else the errors, with `result`
/// `NG` when nothing succeeded.
pub(crate) fn outcome(errors: Vec<ErrorEntry>, succeeded: bool) -> Response<Body> {
    if errors.is_empty() {
        return ok();
    }
    let reply = ApiReply {
        errors,
        result: if succeeded { "OK" } else { "NG" },
    };
    json(StatusCode::OK, &reply)
}

/// `{"result":"OK"}`, the most frequent reply, written once.
pub(crate) fn ok() -> Response<Body> {
    with_type(
        StatusCode::OK,
        "application/json",
        Bytes::from_static(br#"{"result":"OK"}"#),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_field_order() {
        let reply = ApiReply {
            errors: vec![
                ErrorEntry::session("session is not found.", "bob"),
                ErrorEntry::channel("channel has no sessions.", "room"),
            ],
            result: "OK",
        };
        assert_eq!(
            serde_json::to_string(&reply).unwrap(),
            r#"{"errors":[{"error":"session is not found.","session":"bob"},{"error":"channel has no sessions.","channel":"room"}],"result":"OK"}"#
        );
        assert_eq!(&ok().into_body()[..], br#"{"result":"OK"}"#);
    }
}
