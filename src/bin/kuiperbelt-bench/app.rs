//! The bench's fake app: answers the connect callback with the session id
//! from `?id=`, counts receive callbacks and records their latency from the
//! timestamp in the message, answers close with 200. In-process and lean,
//! since it shares the machine with the server under test.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::load::{Latencies, Payload};

#[derive(Default)]
pub struct AppStats {
    pub connects: AtomicU64,
    pub received: AtomicU64,
    pub closes: AtomicU64,
    pub receive_latency: Latencies,
}

/// Starts the fake app on a loopback port; returns the port and its counters.
pub async fn start() -> anyhow::Result<(u16, Arc<AppStats>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let stats = Arc::new(AppStats::default());
    let shared = stats.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let stats = shared.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| handle(stats.clone(), req));
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
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path();
    let mut res = Response::new(Full::new(Bytes::new()));
    if path == "/connect" {
        stats.connects.fetch_add(1, Ordering::Relaxed);
        let id = req
            .uri()
            .query()
            .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("id=")))
            .unwrap_or("none")
            .to_string();
        res.headers_mut().insert(
            "x-kuiperbelt-session",
            id.parse().expect("digits are a header value"),
        );
    } else if path == "/receive" {
        let body = req
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        if let Some(sent) = Payload::timestamp(&body) {
            stats.receive_latency.record_since(sent);
        }
        stats.received.fetch_add(1, Ordering::Relaxed);
    } else if path == "/close" {
        stats.closes.fetch_add(1, Ordering::Relaxed);
    }
    Ok(res)
}
