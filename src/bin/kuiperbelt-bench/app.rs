//! The bench's fake app: answers the connect callback with the session id
//! from `?id=` (and, when set, the session's channels), counts receive callbacks (unique, repeated and missing by
//! their `X-Kuiperbelt-Sequence`), records their latency from the timestamp
//! in the message, answers close with 200, and counts requests in flight.
//! It can go away (port closed, connections dropped) and come back, for the
//! outage scenario. In-process and lean, since it shares the machine with
//! the server under test.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::header::HeaderValue;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::AbortHandle;

use crate::stats::LatencyPair;

#[derive(Default)]
pub struct App {
    pub port: u16,
    /// When not 0, each session joins channel `c<id / channel_size>` at
    /// connect: ids in a channel are neighbours, as a header fan-out's are.
    pub channel_size: AtomicU64,
    /// With `channel_size`, also channels `g<k>.<id / channel_size>` for k
    /// in 1..memberships (one membership per group).
    pub memberships: AtomicU64,
    pub connects: AtomicU64,
    /// Receive callbacks answered.
    pub received: AtomicU64,
    /// Of those, the first of each sequence number (or every one without).
    pub unique: AtomicU64,
    /// A sequence number seen before.
    pub repeated: AtomicU64,
    /// Sequence numbers skipped over (messages that never arrived in order).
    pub skipped: AtomicU64,
    /// Requests being answered now, and the most at once.
    pub in_flight: AtomicU64,
    pub max_in_flight: AtomicU64,
    /// Client send time to receive callback, per forwarded message.
    pub receive_latency: LatencyPair,
    /// The next sequence number expected per session.
    next: Mutex<HashMap<Bytes, u64>>,
    /// The accept loop and its connections, aborted when the app goes away.
    tasks: Mutex<Vec<AbortHandle>>,
}

/// Starts the fake app on a loopback port.
pub async fn start() -> anyhow::Result<Arc<App>> {
    let listener = listen(0).await?;
    let app = Arc::new(App {
        port: listener.local_addr()?.port(),
        ..App::default()
    });
    serve(app.clone(), listener);
    Ok(app)
}

/// A deep accept queue: the server under test may open many callback
/// connections at once (a connect storm, or the end of an outage), and
/// overflows here would be counted against the server's own listener.
async fn listen(port: u16) -> std::io::Result<TcpListener> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(SocketAddr::from(([127, 0, 0, 1], port)))?;
    socket.listen(4096)
}

fn serve(app: Arc<App>, listener: TcpListener) {
    let shared = app.clone();
    let accept = tokio::spawn(async move {
        let mut serial = 0usize;
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                // Out of file descriptors, say: wait instead of spinning.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            let _ = stream.set_nodelay(true);
            let app = shared.clone();
            serial += 1;
            let conn = tokio::spawn(async move {
                let service = service_fn(move |req| handle(app.clone(), serial, req));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
            shared
                .tasks
                .lock()
                .expect("tasks")
                .push(conn.abort_handle());
        }
    });
    app.tasks.lock().expect("tasks").push(accept.abort_handle());
}

impl App {
    /// The app goes away: its port refuses connections and every open
    /// connection is dropped.
    pub fn down(&self) {
        for task in self.tasks.lock().expect("tasks").drain(..) {
            task.abort();
        }
    }

    /// The app comes back on the same port.
    pub async fn up(self: &Arc<Self>) -> anyhow::Result<()> {
        for _ in 0..200 {
            // The aborted accept loop may not have dropped its socket yet.
            if let Ok(listener) = listen(self.port).await {
                serve(self.clone(), listener);
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        anyhow::bail!("the app could not listen on port {} again", self.port)
    }

    /// Counts one receive by its sequence number (in order per session).
    fn count(&self, session: Option<Bytes>, sequence: Option<u64>) {
        let (Some(session), Some(sequence)) = (session, sequence) else {
            self.unique.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let mut next = self.next.lock().expect("sequence lock");
        let expected = next.entry(session).or_insert(1);
        if sequence < *expected {
            self.repeated.fetch_add(1, Ordering::Relaxed);
        } else {
            self.skipped
                .fetch_add(sequence - *expected, Ordering::Relaxed);
            self.unique.fetch_add(1, Ordering::Relaxed);
            *expected = sequence + 1;
        }
    }
}

async fn handle(
    app: Arc<App>,
    shard: usize,
    req: Request<Incoming>,
) -> Result<Response<Empty<Bytes>>, Infallible> {
    let now = app.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
    app.max_in_flight.fetch_max(now, Ordering::Relaxed);
    let mut res = Response::new(Empty::new());
    match req.uri().path() {
        "/connect" => {
            app.connects.fetch_add(1, Ordering::Relaxed);
            let id = req
                .uri()
                .query()
                .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("id=")))
                .and_then(|id| HeaderValue::from_str(id).ok());
            match id {
                Some(id) => {
                    let size = app.channel_size.load(Ordering::Relaxed);
                    let n: Option<u64> = id.to_str().ok().and_then(|i| i.parse().ok());
                    if let (Some(n), true) = (n, size > 0) {
                        let room = n / size;
                        let mut names = format!("c{room}");
                        for k in 1..app.memberships.load(Ordering::Relaxed) {
                            names.push_str(&format!(",g{k}.{room}"));
                        }
                        let names = HeaderValue::from_str(&names).expect("ASCII");
                        res.headers_mut().insert("x-kuiperbelt-channel", names);
                    }
                    res.headers_mut().insert("x-kuiperbelt-session", id);
                }
                None => *res.status_mut() = StatusCode::FORBIDDEN,
            }
        }
        "/receive" => {
            let session = req
                .headers()
                .get("x-kuiperbelt-session")
                .map(|v| Bytes::copy_from_slice(v.as_bytes()));
            let sequence = req
                .headers()
                .get("x-kuiperbelt-sequence")
                .and_then(|v| v.to_str().ok()?.parse().ok());
            let body = match req.into_body().collect().await {
                Ok(b) => b.to_bytes(),
                Err(_) => Bytes::new(),
            };
            app.receive_latency.record(shard, &body);
            app.received.fetch_add(1, Ordering::Relaxed);
            app.count(session, sequence);
        }
        "/close" => {}
        _ => *res.status_mut() = StatusCode::NOT_FOUND,
    }
    app.in_flight.fetch_sub(1, Ordering::Relaxed);
    Ok(res)
}
