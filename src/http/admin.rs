//! The monitoring and operations handlers: `/ping`, `/healthz`, `/readyz`,
//! `/stats` (Go's JSON and text forms), `/metrics`, `/status`, `/sessions`,
//! `/channels`, the `/ui` status page and `/drain`.
//!
//! Owns what each answers; routing and protection are `routes` and `auth`.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{Response, StatusCode};
use serde::{Deserialize, Serialize};

use super::reply::{self, Body};
use crate::drain;
use crate::state::Shared;

/// `GET /healthz`: the process answers; never depends on the app.
pub(crate) fn healthz() -> Response<Body> {
    reply::ok()
}

/// `GET /readyz`: 200 until a drain starts, 503 after.
pub(crate) fn readyz(shared: &Shared) -> Response<Body> {
    if shared.lifecycle.ready() {
        reply::ok()
    } else {
        reply::error(StatusCode::SERVICE_UNAVAILABLE, "draining")
    }
}

/// The query of `GET /stats`.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct StatsQuery {
    format: Option<String>,
    /// `cluster`: the sum over every node (cluster mode).
    scope: Option<String>,
}

/// `GET /stats`: JSON, Go's text lines with `?format=text|tsv|txt`, or the
/// Prometheus exposition with `?format=prometheus`.
pub(crate) async fn stats(shared: Arc<Shared>, query: StatsQuery) -> Response<Body> {
    let stats = match query.scope.as_deref() {
        None | Some("local") => shared.metrics.stats(),
        Some("cluster") => match &shared.cluster {
            Some(cluster) => match cluster.stats(shared.metrics.stats()).await {
                Ok((stats, _nodes)) => stats,
                Err(_) => {
                    return reply::error(StatusCode::SERVICE_UNAVAILABLE, "cluster is unavailable.")
                }
            },
            // A single node is the whole cluster.
            None => shared.metrics.stats(),
        },
        Some(other) => {
            return reply::error(
                StatusCode::BAD_REQUEST,
                format!("scope {other:?} is not one of local, cluster"),
            )
        }
    };
    let shared = &*shared;
    match query.format.as_deref() {
        Some("text" | "tsv" | "txt") => {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            reply::with_type(
                StatusCode::OK,
                "text/plain; charset=utf-8",
                Bytes::from(stats.to_text(now)),
            )
        }
        Some("prometheus") => metrics(shared),
        _ => reply::json(StatusCode::OK, &stats),
    }
}

/// `GET /metrics`: the Prometheus text exposition.
pub(crate) fn metrics(shared: &Shared) -> Response<Body> {
    reply::with_type(
        StatusCode::OK,
        "text/plain; version=0.0.4; charset=utf-8",
        Bytes::from(shared.metrics.encode()),
    )
}

/// The query of `/drain`.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct DrainQuery {
    /// `false`: answer 202 as soon as the drain has started.
    wait: Option<bool>,
}

/// `/drain` (any method): starts the drain and answers when it has finished
/// or its deadline passed (`?wait=false`: 202 at once).
pub(crate) async fn drain(shared: Arc<Shared>, query: DrainQuery) -> Response<Body> {
    if query.wait == Some(false) {
        drain::start(&shared);
        return reply::with_type(
            StatusCode::ACCEPTED,
            "application/json",
            Bytes::from_static(br#"{"result":"OK"}"#),
        );
    }
    drain::drain(&shared).await;
    reply::ok()
}

/// `GET /status`: what an operator asks first.
#[derive(Debug, Serialize)]
struct Status {
    version: &'static str,
    ready: bool,
    stage: &'static str,
    uptime_seconds: u64,
    connections: i64,
    sessions: usize,
    app_up: bool,
    callbacks_waiting: i64,
    closing_connections: i64,
    cluster: Option<ClusterStatus>,
}

#[derive(Debug, Serialize)]
struct ClusterStatus {
    connected: bool,
}

pub(crate) fn status(shared: &Shared) -> Response<Body> {
    let stats = shared.metrics.stats();
    let status = Status {
        version: env!("CARGO_PKG_VERSION"),
        ready: shared.lifecycle.ready(),
        stage: shared.lifecycle.stage().label(),
        uptime_seconds: shared.started.elapsed().as_secs(),
        connections: stats.connections,
        sessions: shared.sessions.len(),
        app_up: shared.callbacks.metrics().app_up.get() == 1,
        callbacks_waiting: shared.callbacks.metrics().pending_messages(),
        closing_connections: stats.closing_connections,
        cluster: shared.cluster.as_ref().map(|cluster| ClusterStatus {
            connected: cluster.metrics.connected.get() == 1,
        }),
    };
    reply::json(StatusCode::OK, &status)
}

/// The query of `GET /sessions` and `GET /channels`.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct PageQuery {
    limit: Option<usize>,
    after: Option<String>,
    prefix: Option<String>,
}

/// Sessions or channels listed per page at most.
const MAX_PAGE: usize = 1000;

impl PageQuery {
    fn limit(&self) -> usize {
        self.limit.unwrap_or(100).clamp(1, MAX_PAGE)
    }

    fn prefix(&self) -> &str {
        self.prefix.as_deref().unwrap_or("")
    }

    /// `{"<key>": page, "next_after": the last name when the page is full}`.
    fn reply<T: Serialize>(
        &self,
        key: &str,
        page: Vec<T>,
        name: impl Fn(&T) -> &str,
    ) -> Response<Body> {
        let next_after = (page.len() == self.limit())
            .then(|| page.last().map(|last| name(last).to_string()))
            .flatten();
        let mut body = serde_json::Map::new();
        body.insert(key.into(), serde_json::json!(page));
        body.insert("next_after".into(), serde_json::json!(next_after));
        reply::json(StatusCode::OK, &body)
    }
}

/// `GET /sessions`: this node's sessions in id order, a page at a time.
pub(crate) fn sessions(shared: &Shared, query: &PageQuery) -> Response<Body> {
    let page = shared
        .sessions
        .list(query.prefix(), query.after.as_deref(), query.limit());
    query.reply("sessions", page, |s| &s.session)
}

/// `GET /channels`: the channels with members on this node, in name order,
/// with their member counts here, a page at a time.
pub(crate) fn channels(shared: &Shared, query: &PageQuery) -> Response<Body> {
    let page = shared
        .sessions
        .channels(query.prefix(), query.after.as_deref(), query.limit());
    query.reply("channels", page, |c| &c.channel)
}

/// `GET /ui`: the status page (its data comes from `/status` and
/// `/metrics`, fetched by the page with the token the operator enters).
pub(crate) fn ui() -> Response<Body> {
    reply::with_type(
        StatusCode::OK,
        "text/html; charset=utf-8",
        Bytes::from_static(include_bytes!("ui.html")),
    )
}
