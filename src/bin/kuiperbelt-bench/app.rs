//! The bench's fake app: answers the connect callback with the session id
//! from `?id=`, counts receive callbacks and records their latency from the
//! timestamp in the message, answers close with 200. In-process and lean,
//! since it shares the machine with the server under test.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::header::HeaderValue;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::stats::LatencyPair;

#[derive(Default)]
pub struct AppStats {
    pub connects: AtomicU64,
    pub received: AtomicU64,
    /// Client send time to receive callback, per forwarded message.
    pub receive_latency: LatencyPair,
}

/// Starts the fake app on a loopback port; returns the port and its counters.
pub async fn start() -> anyhow::Result<(u16, Arc<AppStats>)> {
    // A deep accept queue: the server under test may open many callback
    // connections at once (a connect storm), and overflows here would be
    // counted against the server's own listener.
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(std::net::SocketAddr::from(([127, 0, 0, 1], 0)))?;
    let listener: TcpListener = socket.listen(4096)?;
    let port = listener.local_addr()?.port();
    let stats = Arc::new(AppStats::default());
    let shared = stats.clone();
    tokio::spawn(async move {
        let mut serial = 0usize;
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                // Out of file descriptors, say: wait instead of spinning.
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            };
            let _ = stream.set_nodelay(true);
            let stats = shared.clone();
            serial += 1;
            tokio::spawn(async move {
                let service = service_fn(move |req| handle(stats.clone(), serial, req));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok((port, stats))
}

async fn handle(
    stats: Arc<AppStats>,
    shard: usize,
    req: Request<Incoming>,
) -> Result<Response<Empty<Bytes>>, Infallible> {
    let mut res = Response::new(Empty::new());
    match req.uri().path() {
        "/connect" => {
            stats.connects.fetch_add(1, Ordering::Relaxed);
            let id = req
                .uri()
                .query()
                .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("id=")))
                .and_then(|id| HeaderValue::from_str(id).ok());
            match id {
                Some(id) => {
                    res.headers_mut().insert("x-kuiperbelt-session", id);
                }
                None => *res.status_mut() = StatusCode::FORBIDDEN,
            }
        }
        "/receive" => {
            let body = match req.into_body().collect().await {
                Ok(b) => b.to_bytes(),
                Err(_) => Bytes::new(),
            };
            stats.receive_latency.record(shard, &body);
            stats.received.fetch_add(1, Ordering::Relaxed);
        }
        "/close" => {}
        _ => *res.status_mut() = StatusCode::NOT_FOUND,
    }
    Ok(res)
}
