//! Serving: accept connections on every listener, serve HTTP/1.1 with
//! upgrades through the warp routes (each request tagged with its peer and
//! its body limited to `max_message_size`), log each request, and on
//! shutdown drain before exiting.
//!
//! Owns sockets up to the upgrade and the order of shutdown. Binding is
//! `listener.rs`; what a request means is `http`'s; what a session does is
//! the session's.

pub(crate) mod listener;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::Limited;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower_service::Service;

use crate::cluster::metrics::ClusterMetrics;
use crate::cluster::{self, Cluster};
use crate::config::Config;
use crate::drain;
use crate::frame::Recent;
use crate::http::routes::{self, Surface};
use crate::http::Peer;
use crate::metrics::Metrics;
use crate::state::Shared;
use listener::{Listener, Listeners};

/// Request headers accepted per request: a push names one session per
/// header, and hyper's default of 100 would cap a broadcast at ~95 targets.
pub(crate) const MAX_HEADERS: usize = 2048;
/// Request-head bytes accepted (2,048 session headers of ~100 bytes fit).
const MAX_HEAD_BYTES: usize = 512 * 1024;
/// A client has this long to send its request head.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// After the drain, HTTP connections get this long to finish their request.
const HTTP_CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// `hostname:port` as the Go server reports itself (just `hostname` for
/// ports up to 1023 and for UNIX sockets).
pub(crate) fn default_endpoint(port: Option<u16>) -> String {
    let host = gethostname::gethostname().to_string_lossy().into_owned();
    match port {
        Some(p) if p > 1023 => format!("{host}:{p}"),
        _ => host,
    }
}

/// Runs a server on `listener` (plus the API and metrics listeners the
/// config names) until `shutdown` resolves, then drains and returns.
pub async fn run(
    config: Config,
    listener: Listener,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let listeners = Listeners::with_public(&config, listener)?;
    run_with(config, listeners, shutdown).await
}

/// Like [`run`] with every listener already bound.
pub async fn run_with(
    config: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let endpoint = config
        .endpoint
        .clone()
        .unwrap_or_else(|| default_endpoint(listeners.public.local_addr().map(|a| a.port())));
    let metrics = Metrics::new();
    // Registered on a single node too, where they read 0.
    let cluster_metrics = ClusterMetrics::new(&metrics);
    let (cluster, events) = match &config.cluster {
        Some(cluster) => {
            let (tx, rx) = mpsc::unbounded_channel();
            // Only frames that may be compressed are worth matching.
            let recent =
                Recent::new((config.compression.enabled).then_some(config.compression.min_size));
            let link = Arc::new(Cluster::connect(cluster, cluster_metrics, recent).await?);
            tracing::info!(nats = ?cluster.urls, prefix = %cluster.subject_prefix, "cluster mode");
            (Some((link, tx)), Some(rx))
        }
        None => (None, None),
    };
    let shared = Shared::new(config, endpoint, metrics, cluster);
    let cluster_task = events.zip(shared.cluster.clone()).map(|(rx, link)| {
        let local = cluster::Local {
            sessions: shared.sessions.clone(),
            metrics: shared.metrics.clone(),
        };
        tokio::spawn(cluster::run(link, local, rx))
    });
    let result = serve(shared, listeners, shutdown).await;
    if let Some(task) = cluster_task {
        task.abort();
    }
    result
}

/// Serves with prepared shared state until `shutdown`, then drains.
async fn serve(
    shared: Arc<Shared>,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_headers(MAX_HEADERS)
        .max_buf_size(MAX_HEAD_BYTES);
    let builder = Arc::new(builder);
    let connections = Connections::default();

    let public_surface = if listeners.api.is_some() {
        Surface::Public
    } else {
        Surface::Combined
    };
    warn_if_open(&shared, &listeners.public);
    let token_watch = tokio::spawn(shared.guard.clone().watch());
    let mut loops = Vec::new();
    for (listener, surface) in [
        (Some(listeners.public), public_surface),
        (listeners.api, Surface::Api),
        (listeners.metrics, Surface::Metrics),
    ] {
        let Some(listener) = listener else { continue };
        tracing::info!(listen = %listener.describe(), surface = ?surface, endpoint = %shared.endpoint, "listening");
        loops.push(tokio::spawn(accept_loop(
            listener,
            shared.clone(),
            surface,
            builder.clone(),
            connections.clone(),
        )));
    }

    shutdown.await;
    drain::drain(&shared).await;

    token_watch.abort();
    connections.stop.cancel();
    for l in loops {
        let _ = l.await;
    }
    connections.tasks.close();
    if tokio::time::timeout(HTTP_CLOSE_TIMEOUT, connections.tasks.wait())
        .await
        .is_err()
    {
        tracing::debug!("HTTP connections still open at exit");
    }
    Ok(())
}

/// HTTP connections not yet upgraded, so shutdown can end them gracefully
/// (hyper finishes the request in flight, then closes).
#[derive(Default, Clone)]
struct Connections {
    stop: CancellationToken,
    tasks: TaskTracker,
}

enum Accepted {
    Tcp(tokio::net::TcpStream, SocketAddr),
    Unix(tokio::net::UnixStream),
}

async fn accept(listener: &Listener) -> io::Result<Accepted> {
    match listener {
        Listener::Tcp(l) => l.accept().await.map(|(s, a)| Accepted::Tcp(s, a)),
        Listener::Unix(l, _) => l.accept().await.map(|(s, _)| Accepted::Unix(s)),
    }
}

/// Logs once at start-up when anyone who reaches the public port can push
/// to or close any session (no `api.listen`, no token).
fn warn_if_open(shared: &Shared, public: &Listener) {
    let api_on_network = match &shared.config.api.listen {
        None => public.local_addr().is_some(),
        Some(addr) => !addr.is_local(),
    };
    if api_on_network && !shared.guard.has_token() {
        tracing::warn!(
            listen = %public.describe(),
            "the push API (/send, /close) is reachable from the network without a token: \
             anyone who reaches it can push to or close any session; set `api.listen: 127.0.0.1:9181` \
             (the app reaches it on localhost) or `api.token`"
        );
    }
}

/// Accepts on `listener` until the server stops; the listener (and its
/// UNIX socket file) is dropped when the loop ends.
async fn accept_loop(
    listener: Listener,
    shared: Arc<Shared>,
    surface: Surface,
    builder: Arc<http1::Builder>,
    connections: Connections,
) {
    let routes = warp::service(routes::routes(shared.clone(), surface));
    let access_log = !shared.config.suppress_access_log;
    let limit = BodyLimit {
        default: shared.config.max_message_size,
        batch_path: Arc::from(shared.config.paths.batch.as_str()),
        batch: shared.config.batch.max_bytes,
    };
    loop {
        let accepted = tokio::select! {
            _ = connections.stop.cancelled() => return,
            accepted = accept(&listener) => accepted,
        };
        match accepted {
            Ok(Accepted::Tcp(stream, remote)) => {
                let _ = stream.set_nodelay(true);
                serve_connection(
                    &builder,
                    &connections,
                    stream,
                    Peer::Tcp(remote),
                    routes.clone(),
                    (access_log, limit.clone()),
                );
            }
            Ok(Accepted::Unix(stream)) => {
                serve_connection(
                    &builder,
                    &connections,
                    stream,
                    Peer::Unix,
                    routes.clone(),
                    (access_log, limit.clone()),
                );
            }
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// How many bytes a request body may have: `max_message_size`, or
/// `batch.max_bytes` on the batch path.
#[derive(Debug, Clone)]
struct BodyLimit {
    default: usize,
    batch_path: Arc<str>,
    batch: usize,
}

impl BodyLimit {
    fn of(&self, path: &str) -> usize {
        if path == &*self.batch_path {
            self.batch
        } else {
            self.default
        }
    }
}

/// Serves one HTTP connection; `(access_log, body limit)`.
fn serve_connection<I, S>(
    builder: &http1::Builder,
    connections: &Connections,
    io: I,
    peer: Peer,
    routes: S,
    (access_log, limit): (bool, BodyLimit),
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: Service<
            http::Request<Limited<Incoming>>,
            Response = warp::reply::Response,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let service = service_fn(move |req: http::Request<Incoming>| {
        let mut routes = routes.clone();
        // What the access line needs is taken only when it will be written.
        let logged = access_log.then(|| {
            (
                Instant::now(),
                req.method().clone(),
                req.uri().path().to_string(),
            )
        });
        let bound = limit.of(req.uri().path());
        let mut req = req.map(|body| Limited::new(body, bound));
        req.extensions_mut().insert(peer);
        async move {
            let res = routes.call(req).await;
            if let (Some((started, method, path)), Ok(res)) = (logged, &res) {
                tracing::info!(
                    target: "kuiperbelt::access",
                    remote = %peer,
                    method = %method,
                    path = %path,
                    status = res.status().as_u16(),
                    duration_ms = started.elapsed().as_secs_f64() * 1000.0,
                    "request"
                );
            }
            res
        }
    });
    let conn = builder
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    let stop = connections.stop.clone();
    connections.tasks.spawn(async move {
        tokio::pin!(conn);
        let result = tokio::select! {
            result = conn.as_mut() => result,
            _ = stop.cancelled() => {
                conn.as_mut().graceful_shutdown();
                conn.await
            }
        };
        if let Err(e) = result {
            tracing::debug!(error = %e, "http connection ended with an error");
        }
    });
}
