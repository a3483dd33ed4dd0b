//! What the channel tests share: the header names, an app that puts each
//! client in the channels its query names, and clients and pushes against a
//! real binary.

use bytes::Bytes;
use http::Method;

use super::{connect_url, http, query_param, Binary, Canned, FakeApp, HttpReply, Ws};

pub const CH: &str = "X-Kuiperbelt-Channel";
pub const SESSION: &str = "X-Kuiperbelt-Session";
pub const EXCLUDE: &str = "X-Kuiperbelt-Exclude";

/// The app: `/connect?session=ID&ch=NAMES` is accepted as ID in the
/// channels NAMES (one header, as given), with `first` as its first message
/// when the query has `first=TEXT`.
pub fn answer_channels(app: &FakeApp) {
    app.respond(|r| match r.path.as_str() {
        "/connect" => {
            let q = r.query.as_deref();
            let mut answer = Canned::session(&query_param(q, "session").unwrap());
            if let Some(names) = query_param(q, "ch") {
                answer = answer.header(CH, &names);
            }
            if let Some(first) = query_param(q, "first") {
                answer = answer.body(first);
            }
            answer
        }
        _ => Canned::ok(),
    });
}

pub fn ws_base(node: &Binary) -> String {
    format!("ws://127.0.0.1:{}", node.port)
}

/// A client of session `id` in channels `names` (comma-separated, or "").
pub async fn member(node: &Binary, id: &str, names: &str) -> Ws {
    let query = if names.is_empty() {
        id.to_string()
    } else {
        format!("{id}&ch={names}")
    };
    connect_url(&ws_base(node), &query).await.unwrap()
}

/// `POST path` with these headers (name, value) and body.
pub async fn post(node: &Binary, path: &str, headers: &[(&str, &str)], body: &str) -> HttpReply {
    http(
        Method::POST,
        &node.url(path),
        headers,
        Bytes::from(body.to_string()),
    )
    .await
}
