//! Routing: which path and method reach which handler on which listener, as
//! warp filters.
//!
//! Owns the route table only. Handlers live in `connect`, `push` and
//! `admin`; protection in `auth`; bodies in `body`; every reply from `reply`.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, Method, Response, StatusCode};
use hyper::upgrade::OnUpgrade;
use warp::filters::path::FullPath;
use warp::filters::BoxedFilter;
use warp::{Filter, Rejection};

use super::admin::{self, DrainQuery, PageQuery, StatsQuery};
use super::auth::Denied;
use super::batch;
use super::body::{body, BodyError};
use super::connect::{self, ConnectRequest};
use super::membership::{self, Membership};
use super::push::{self, PushKind};
use super::reply::{self, Body};
use super::Peer;
use crate::state::Shared;

/// Which endpoints a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Surface {
    /// Everything on one port, as the Go server does (no `api.listen`).
    Combined,
    /// Client-facing only: connect, ping and health.
    Public,
    /// The push/admin API (`api.listen`).
    Api,
    /// Only `/metrics` (`metrics.listen`).
    Metrics,
}

/// A push/admin request refused by `auth`.
#[derive(Debug)]
struct Refused(Denied);
impl warp::reject::Reject for Refused {}

type Route = BoxedFilter<(Response<Body>,)>;

/// The routes of one listener; every failure becomes a JSON reply.
pub(crate) fn routes(
    shared: Arc<Shared>,
    surface: Surface,
) -> impl Filter<Extract = (Response<Body>,), Error = Infallible> + Clone {
    let paths = shared.config.paths.clone();
    let with_shared = {
        let shared = shared.clone();
        warp::any().map(move || shared.clone())
    };
    let message = (shared.config.max_message_size, "max_message_size");
    let client_facing = matches!(surface, Surface::Combined | Surface::Public);
    let admin = matches!(surface, Surface::Combined | Surface::Api);
    let mut list: Vec<Route> = Vec::new();

    // The busiest routes first: pushes, then connects.
    if admin {
        for (path, kind) in [
            (&paths.send, PushKind::Send),
            (&paths.close, PushKind::Close),
        ] {
            list.push(api_route(
                &shared,
                path.clone(),
                message,
                move |s, m, h, b| push::handle(s, kind, m, h, b),
            ));
        }
        for (path, kind) in [
            (&paths.subscribe, Membership::Subscribe),
            (&paths.unsubscribe, Membership::Unsubscribe),
        ] {
            list.push(api_route(
                &shared,
                path.clone(),
                message,
                move |s, m, h, _| membership::handle(s, kind, m, h),
            ));
        }
        let batch = (shared.config.batch.max_bytes, "batch.max_bytes");
        list.push(api_route(
            &shared,
            paths.batch.clone(),
            batch,
            batch::handle,
        ));
    }
    if client_facing {
        list.push(connect_route(&shared, paths.connect.clone()));
    }
    if surface != Surface::Metrics {
        list.push(at(paths.ping.clone()).map(reply::ok).boxed());
        list.push(at("/healthz".into()).map(admin::healthz).boxed());
        list.push(
            at("/readyz".into())
                .and(with_shared.clone())
                .map(|shared: Arc<Shared>| admin::readyz(&shared))
                .boxed(),
        );
    }
    if admin {
        list.push(
            at(paths.stats.clone())
                .and(authorized(&shared))
                .and(with_shared.clone())
                .and(
                    warp::query::<StatsQuery>()
                        .or(warp::any().map(StatsQuery::default))
                        .unify(),
                )
                .then(admin::stats)
                .boxed(),
        );
        list.push(
            at("/metrics".into())
                .and(authorized(&shared))
                .and(with_shared.clone())
                .map(|shared: Arc<Shared>| admin::metrics(&shared))
                .boxed(),
        );
        list.push(
            at("/drain".into())
                .and(drain_authorized(&shared))
                .and(with_shared.clone())
                .and(query_or_default::<DrainQuery>())
                .then(admin::drain)
                .boxed(),
        );
        list.push(
            at("/status".into())
                .and(authorized(&shared))
                .and(with_shared.clone())
                .map(|shared: Arc<Shared>| admin::status(&shared))
                .boxed(),
        );
        list.push(
            at("/sessions".into())
                .and(authorized(&shared))
                .and(with_shared.clone())
                .and(query_or_default::<PageQuery>())
                .map(|shared: Arc<Shared>, query: PageQuery| admin::sessions(&shared, &query))
                .boxed(),
        );
        list.push(
            at("/channels".into())
                .and(authorized(&shared))
                .and(with_shared.clone())
                .and(query_or_default::<PageQuery>())
                .map(|shared: Arc<Shared>, query: PageQuery| admin::channels(&shared, &query))
                .boxed(),
        );
        // The page itself holds no data; what it shows is fetched with the token.
        list.push(at("/ui".into()).map(admin::ui).boxed());
    }
    if surface == Surface::Metrics {
        list.push(
            at("/metrics".into())
                .and(with_shared)
                .map(|shared: Arc<Shared>| admin::metrics(&shared))
                .boxed(),
        );
    }

    let first = list.remove(0);
    list.into_iter()
        .fold(first, |acc, route| acc.or(route).unify().boxed())
        .recover(move |rejection| rejection_reply(shared.clone(), rejection))
        .unify()
}

fn connect_route(shared: &Arc<Shared>, path: String) -> Route {
    let shared = shared.clone();
    at(path)
        .and(warp::method())
        .and(
            warp::query::raw()
                .map(Some)
                .or(warp::any().map(|| None))
                .unify(),
        )
        .and(warp::header::headers_cloned())
        .and(body(shared.config.max_message_size, "max_message_size"))
        .and(warp::ext::optional::<OnUpgrade>())
        .and(warp::ext::optional::<Peer>())
        .then(
            move |method, query, headers, body: Result<Bytes, BodyError>, on_upgrade, peer| {
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
                                peer,
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

/// A token-protected API route taking the method, the headers and the body
/// (limited to `limit` bytes, set by config key `key`): pushes, batches and
/// membership changes.
fn api_route<F, Fut>(
    shared: &Arc<Shared>,
    path: String,
    (limit, key): (usize, &'static str),
    handler: F,
) -> Route
where
    F: Fn(Arc<Shared>, Method, HeaderMap, Bytes) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    let shared = shared.clone();
    at(path)
        .and(authorized(&shared))
        .and(warp::method())
        .and(warp::header::headers_cloned())
        .and(body(limit, key))
        .then(move |method, headers, body: Result<Bytes, BodyError>| {
            let (shared, handler) = (shared.clone(), handler.clone());
            async move {
                match body {
                    Ok(body) => handler(shared, method, headers, body).await,
                    Err(e) => e.reply(),
                }
            }
        })
        .boxed()
}

/// The `Authorization` header, if any.
fn authorization(
) -> impl Filter<Extract = (Option<String>,), Error = Rejection> + Clone + Send + Sync + 'static {
    warp::header::optional::<String>("authorization")
}

/// Passes push/admin requests `auth` lets through.
fn authorized(
    shared: &Arc<Shared>,
) -> impl Filter<Extract = (), Error = Rejection> + Clone + Send + Sync + 'static {
    let shared = shared.clone();
    authorization()
        .and_then(move |given: Option<String>| {
            let result = shared.guard.check(given.as_deref().map(str::as_bytes));
            async move { result.map_err(|d| warp::reject::custom(Refused(d))) }
        })
        .untuple_one()
}

/// Passes `/drain` requests `auth` lets through (the peer rule included).
fn drain_authorized(
    shared: &Arc<Shared>,
) -> impl Filter<Extract = (), Error = Rejection> + Clone + Send + Sync + 'static {
    let shared = shared.clone();
    authorization()
        .and(warp::ext::optional::<Peer>())
        .and_then(move |given: Option<String>, peer: Option<Peer>| {
            let result = shared
                .guard
                .check_drain(given.as_deref().map(str::as_bytes), peer);
            if result == Err(Denied::Peer) {
                tracing::warn!(
                    peer = %peer.map(|p| p.to_string()).unwrap_or_default(),
                    "refused /drain from outside the pod: without api.listen or api.token only loopback peers may drain"
                );
            }
            async move { result.map_err(|d| warp::reject::custom(Refused(d))) }
        })
        .untuple_one()
}

/// Maps every rejection to a JSON reply: 401 for a bad token, 403 for a
/// drain from outside, 404 otherwise.
async fn rejection_reply(
    shared: Arc<Shared>,
    rejection: Rejection,
) -> Result<Response<Body>, Infallible> {
    if let Some(BadQuery(e)) = rejection.find::<BadQuery>() {
        return Ok(reply::error(
            StatusCode::BAD_REQUEST,
            format!("bad query: {e}"),
        ));
    }
    let Some(Refused(denied)) = rejection.find::<Refused>() else {
        return Ok(reply::error(StatusCode::NOT_FOUND, "not found"));
    };
    shared.guard.count(*denied);
    Ok(match denied {
        Denied::Token => {
            let mut res = reply::error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
            res.headers_mut().insert(
                http::header::WWW_AUTHENTICATE,
                http::HeaderValue::from_static("Bearer"),
            );
            res
        }
        Denied::Peer => reply::error(
            StatusCode::FORBIDDEN,
            "/drain is served only to local peers: set api.listen or api.token to drain from elsewhere",
        ),
    })
}

/// The query string as `T`, or `T::default()` when there is none; a query
/// that does not parse is rejected (404 is not right: a 400 names it).
fn query_or_default<T>(
) -> impl Filter<Extract = (T,), Error = Rejection> + Clone + Send + Sync + 'static
where
    T: serde::de::DeserializeOwned + Default + Send + 'static,
{
    warp::query::raw()
        .or(warp::any().map(String::new))
        .unify()
        .and_then(|raw: String| async move {
            serde_urlencoded::from_str::<T>(&raw)
                .map_err(|e| warp::reject::custom(BadQuery(e.to_string())))
        })
}

/// A query string that does not parse.
#[derive(Debug)]
struct BadQuery(String);
impl warp::reject::Reject for BadQuery {}

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
