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
use warp::{Buf, Filter, Rejection};

use crate::connect::{self, ConnectRequest};
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

/// Every route, ending in a JSON 404; never rejects.
pub fn routes(
    shared: Arc<Shared>,
) -> impl Filter<Extract = (Response<Body>,), Error = Infallible> + Clone {
    let paths = shared.config.paths.clone();
    let limit = shared.config.max_message_size;
    let with_shared = {
        let shared = shared.clone();
        warp::any().map(move || shared.clone())
    };

    let connect = at(paths.connect)
        .and(with_shared.clone())
        .and(warp::method())
        .and(raw_query())
        .and(warp::header::headers_cloned())
        .and(body(limit))
        .and(warp::ext::optional::<OnUpgrade>())
        .then(|shared, method, query, headers, body: Result<Bytes, BodyError>, on_upgrade| async move {
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
        });

    let push_route = |path: String, kind: PushKind| {
        at(path)
            .and(with_shared.clone())
            .and(warp::method())
            .and(warp::header::headers_cloned())
            .and(body(limit))
            .then(
                move |shared, method, headers, body: Result<Bytes, BodyError>| async move {
                    match body {
                        Ok(body) => push::handle(shared, kind, method, headers, body).await,
                        Err(e) => e.reply(),
                    }
                },
            )
    };
    let send = push_route(paths.send, PushKind::Send);
    let close = push_route(paths.close, PushKind::Close);

    let ping = at(paths.ping).map(reply::ok);

    let stats = at(paths.stats)
        .and(with_shared)
        .and(raw_query())
        .map(|shared: Arc<Shared>, query: Option<String>| stats(&shared, query.as_deref()));

    let not_found = warp::any().map(|| reply::error(StatusCode::NOT_FOUND, "not found"));

    connect
        .or(send)
        .unify()
        .or(close)
        .unify()
        .or(ping)
        .unify()
        .or(stats)
        .unify()
        .or(not_found)
        .unify()
}

/// `GET /stats`: JSON, or Go's text lines with `?format=text|tsv|txt`.
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
pub fn metrics(shared: &Shared) -> Response<Body> {
    reply::with_type(
        StatusCode::OK,
        "text/plain; version=0.0.4; charset=utf-8",
        Bytes::from(shared.metrics.encode()),
    )
}

/// Matches exactly `path` (configured paths may have several segments).
fn at(path: String) -> impl Filter<Extract = (), Error = Rejection> + Clone {
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
fn raw_query() -> impl Filter<Extract = (Option<String>,), Error = Infallible> + Clone {
    warp::query::raw()
        .map(Some)
        .or(warp::any().map(|| None))
        .unify()
}

/// The whole body, up to `limit` bytes; never rejects, so a bad body gets
/// its own reply instead of falling through to another route.
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
