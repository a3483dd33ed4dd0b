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

/// One entry of `errors`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub(crate) struct ErrorEntry {
    pub(crate) error: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) session: Option<String>,
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
        }]),
    )
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
            errors: vec![ErrorEntry {
                error: "session is not found.".into(),
                session: Some("bob".into()),
            }],
            result: "OK",
        };
        assert_eq!(
            serde_json::to_string(&reply).unwrap(),
            r#"{"errors":[{"error":"session is not found.","session":"bob"}],"result":"OK"}"#
        );
        assert_eq!(&ok().into_body()[..], br#"{"result":"OK"}"#);
    }
}
