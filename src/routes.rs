//! The HTTP surface as warp filters: which path and method reach which
//! handler, and how request parts are extracted.
//!
//! Owns routing only. Handlers live in `connect`, `push` and here for the
//! one-line monitoring endpoints; every reply body comes from `reply`.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use http::{Response, StatusCode};
use hyper::upgrade::OnUpgrade;
use warp::filters::path::FullPath;
use warp::filters::BoxedFilter;
use warp::{Buf, Filter, Rejection};

use crate::connect::{self, ConnectRequest};
use crate::drain;
use crate::push::{self, PushKind};
use crate::reply::{self, Body};
use crate::state::Shared;

/// A request body that could not be read whole.
#[derive(Debug)]
pub enum BodyError {
    TooLarge(usize),
    Read,
}

impl BodyError {
    fn reply(&self) -> Response<Body> {
        match self {
            BodyError::TooLarge(limit) => reply::error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("request body is larger than max_message_size ({limit} bytes)"),
            ),
            BodyError::Read => {
                reply::error(StatusCode::BAD_REQUEST, "request body could not be read")
            }
        }
    }
}

/// Which endpoints a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Surface {
    /// Everything on one port, as the Go server does (no `api.listen`).
    Combined,
    /// Client-facing only: connect, ping and health.
    Public,
    /// The push/admin API (`api.listen`).
    Api,
    /// Only `/metrics` (`metrics.listen`).
    Metrics,
}

/// The bearer token was missing or wrong.
#[derive(Debug)]
struct Unauthorized;
impl warp::reject::Reject for Unauthorized {}

type Route = BoxedFilter<(Response<Body>,)>;

/// The routes of one listener; every failure becomes a JSON reply.
pub fn routes(
    shared: Arc<Shared>,
    surface: Surface,
) -> impl Filter<Extract = (Response<Body>,), Error = Infallible> + Clone {
    let paths = shared.config.paths.clone();
    let with_shared = {
        let shared = shared.clone();
        warp::any().map(move || shared.clone())
    };
    let client_facing = matches!(surface, Surface::Combined | Surface::Public);
    let admin = matches!(surface, Surface::Combined | Surface::Api);
    let mut list: Vec<Route> = Vec::new();

    // The busiest routes first: pushes, then connects.
    let guard = authorized(&shared);
    if admin {
        list.push(push_route(
            &shared,
            paths.send.clone(),
            PushKind::Send,
            guard.clone(),
        ));
        list.push(push_route(
            &shared,
            paths.close.clone(),
            PushKind::Close,
            guard.clone(),
        ));
    }
    if client_facing {
        list.push(connect_route(&shared, paths.connect.clone()));
    }
    if surface != Surface::Metrics {
        list.push(at(paths.ping.clone()).map(reply::ok).boxed());
        list.push(at("/healthz".into()).map(reply::ok).boxed());
        list.push(
            at("/readyz".into())
                .and(with_shared.clone())
                .map(|shared: Arc<Shared>| {
                    if shared.not_ready.is_cancelled() {
                        reply::error(StatusCode::SERVICE_UNAVAILABLE, "draining")
                    } else {
                        reply::ok()
                    }
                })
                .boxed(),
        );
    }
    if admin {
        list.push(
            at(paths.stats.clone())
                .and(guard.clone())
                .and(with_shared.clone())
                .and(raw_query())
                .map(|shared: Arc<Shared>, query: Option<String>| stats(&shared, query.as_deref()))
                .boxed(),
        );
        list.push(
            at("/metrics".into())
                .and(guard.clone())
                .and(with_shared.clone())
                .map(|shared: Arc<Shared>| metrics(&shared))
                .boxed(),
        );
        list.push(
            at("/drain".into())
                .and(guard)
                .and(with_shared.clone())
                .then(|shared: Arc<Shared>| async move {
                    drain::drain(&shared).await;
                    reply::ok()
                })
                .boxed(),
        );
    }
    if surface == Surface::Metrics {
        list.push(
            at("/metrics".into())
                .and(with_shared)
                .map(|shared: Arc<Shared>| metrics(&shared))
                .boxed(),
        );
    }

    let first = list.remove(0);
    list.into_iter()
        .fold(first, |acc, route| acc.or(route).unify().boxed())
        .recover(rejection_reply)
        .unify()
}

fn connect_route(shared: &Arc<Shared>, path: String) -> Route {
    let shared = shared.clone();
    let limit = shared.config.max_message_size;
    at(path)
        .and(warp::method())
        .and(raw_query())
        .and(warp::header::headers_cloned())
        .and(body(limit))
        .and(warp::ext::optional::<OnUpgrade>())
        .then(
            move |method, query, headers, body: Result<Bytes, BodyError>, on_upgrade| {
                let shared = shared.clone();
                async move {
                    match body {
                        Ok(body) => {
                            let req = ConnectRequest {
                                method,
                                query,
                                headers,
                                body,
                                on_upgrade,
                            };
                            connect::handle(shared, req).await
                        }
                        Err(e) => e.reply(),
                    }
                }
            },
        )
        .boxed()
}

fn push_route(
    shared: &Arc<Shared>,
    path: String,
    kind: PushKind,
    guard: impl Filter<Extract = (), Error = Rejection> + Clone + Send + Sync + 'static,
) -> Route {
    let shared = shared.clone();
    let limit = shared.config.max_message_size;
    at(path)
        .and(guard)
        .and(warp::method())
        .and(warp::header::headers_cloned())
        .and(body(limit))
        .then(move |method, headers, body: Result<Bytes, BodyError>| {
            let shared = shared.clone();
            async move {
                match body {
                    Ok(body) => push::handle(shared, kind, method, headers, body).await,
                    Err(e) => e.reply(),
                }
            }
        })
        .boxed()
}

/// Passes when `api.token` is unset or the request carries
/// `Authorization: Bearer <token>`; rejects with `Unauthorized` otherwise.
fn authorized(
    shared: &Arc<Shared>,
) -> impl Filter<Extract = (), Error = Rejection> + Clone + Send + Sync + 'static {
    let token: Option<Arc<str>> = shared.config.api.token.as_deref().map(Arc::from);
    warp::header::optional::<String>("authorization")
        .and_then(move |given: Option<String>| {
            let ok = match &token {
                None => true,
                Some(token) => given
                    .as_deref()
                    .and_then(|g| g.strip_prefix("Bearer "))
                    .is_some_and(|g| constant_time_eq(g.trim().as_bytes(), token.as_bytes())),
            };
            async move {
                if ok {
                    Ok(())
                } else {
                    Err(warp::reject::custom(Unauthorized))
                }
            }
        })
        .untuple_one()
}

/// Compares without an early exit, so timing does not reveal the token.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Maps every rejection to a JSON reply: 401 for a bad token, 404 otherwise.
async fn rejection_reply(rejection: Rejection) -> Result<Response<Body>, Infallible> {
    if rejection.find::<Unauthorized>().is_some() {
        let mut res = reply::error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
        res.headers_mut().insert(
            http::header::WWW_AUTHENTICATE,
            http::HeaderValue::from_static("Bearer"),
        );
        return Ok(res);
    }
    Ok(reply::error(StatusCode::NOT_FOUND, "not found"))
}

/// `GET /stats`: JSON, Go's text lines with `?format=text|tsv|txt`, or the
/// Prometheus exposition with `?format=prometheus`.
fn stats(shared: &Shared, query: Option<&str>) -> Response<Body> {
    let format = query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .find_map(|kv| kv.strip_prefix("format="))
        .unwrap_or("json");
    let stats = shared.metrics.stats();
    match format {
        "text" | "tsv" | "txt" => reply::with_type(
            StatusCode::OK,
            "text/plain; charset=utf-8",
            Bytes::from(stats.to_text()),
        ),
        "prometheus" => metrics(shared),
        _ => reply::json(StatusCode::OK, &stats),
    }
}

/// The Prometheus text exposition.
fn metrics(shared: &Shared) -> Response<Body> {
    reply::with_type(
        StatusCode::OK,
        "text/plain; version=0.0.4; charset=utf-8",
        Bytes::from(shared.metrics.encode()),
    )
}

/// Matches exactly `path` (configured paths may have several segments).
fn at(
    path: String,
) -> impl Filter<Extract = (), Error = Rejection> + Clone + Send + Sync + 'static {
    let path: Arc<str> = Arc::from(path);
    warp::path::full()
        .and_then(move |full: FullPath| {
            let matched = full.as_str() == &*path;
            async move {
                if matched {
                    Ok(())
                } else {
                    Err(warp::reject::not_found())
                }
            }
        })
        .untuple_one()
}

/// The raw query string, `None` when the request has none.
fn raw_query(
) -> impl Filter<Extract = (Option<String>,), Error = Infallible> + Clone + Send + Sync + 'static {
    warp::query::raw()
        .map(Some)
        .or(warp::any().map(|| None))
        .unify()
}

/// The whole body, up to `limit` bytes; a bad body is handed to the
/// handler, which answers 413 or 400 itself.
fn body(
    limit: usize,
) -> impl Filter<Extract = (Result<Bytes, BodyError>,), Error = Rejection> + Clone {
    warp::body::stream().then(move |stream| read_limited(stream, limit))
}

async fn read_limited<S, B>(stream: S, limit: usize) -> Result<Bytes, BodyError>
where
    S: Stream<Item = Result<B, warp::Error>>,
    B: Buf,
{
    futures_util::pin_mut!(stream);
    let mut buf = BytesMut::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|_| BodyError::Read)?;
        if buf.len() + chunk.remaining() > limit {
            return Err(BodyError::TooLarge(limit));
        }
        buf.put(chunk);
    }
    Ok(buf.freeze())
}
