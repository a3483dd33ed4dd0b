//! The monitoring and operations handlers: `/ping`, `/healthz`, `/readyz`,
//! `/stats` (Go's JSON and text forms), `/metrics` and `/drain`.
//!
//! Owns what each answers; routing and protection are `routes` and `auth`.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{Response, StatusCode};
use serde::Deserialize;

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
            Some(cluster) => match cluster.stats().await {
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

/// `/drain` (any method): starts the drain and answers when it has finished
/// or its deadline passed.
pub(crate) async fn drain(shared: Arc<Shared>) -> Response<Body> {
    drain::drain(&shared).await;
    reply::ok()
}
