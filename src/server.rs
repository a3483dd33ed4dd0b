//! Listening and serving: bind the public listener (TCP or UNIX) and the
//! optional API and metrics listeners, accept connections, serve HTTP/1.1
//! with upgrades through the warp routes, log each request, and on shutdown
//! drain before exiting.
//!
//! Owns sockets up to the upgrade and the order of shutdown. What a request
//! means is the routes' business; what a session does is the session's.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower_service::Service;

use crate::config::{Config, Listen, ListenAddr};
use crate::drain;
use crate::metrics::Metrics;
use crate::routes::{self, Surface};
use crate::state::Shared;

/// Request headers accepted per request: a push names one session per
/// header, and hyper's default of 100 would cap a broadcast at ~95 targets.
pub const MAX_HEADERS: usize = 2048;
/// Request-head bytes accepted (2,048 session headers of ~100 bytes fit).
const MAX_HEAD_BYTES: usize = 512 * 1024;
/// A client has this long to send its request head.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// After the drain, HTTP connections get this long to finish their request.
const HTTP_CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// A bound listening socket.
pub enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener, PathBuf),
}

impl Listener {
    /// Binds the public listener: all interfaces on `port`, or `sock`.
    pub async fn bind(listen: &Listen) -> io::Result<Listener> {
        match listen {
            Listen::Port(port) => Ok(Listener::Tcp(TcpListener::bind(("0.0.0.0", *port)).await?)),
            Listen::Unix(path) => Listener::bind_unix(path),
        }
    }

    /// Binds an `api.listen` / `metrics.listen` address.
    pub async fn bind_addr(addr: &ListenAddr) -> io::Result<Listener> {
        match addr {
            ListenAddr::Tcp(a) => Ok(Listener::Tcp(TcpListener::bind(a).await?)),
            ListenAddr::Unix(path) => Listener::bind_unix(path),
        }
    }

    /// Binds a UNIX socket, replacing a stale socket file left by a previous run.
    pub fn bind_unix(path: &Path) -> io::Result<Listener> {
        use std::os::unix::fs::FileTypeExt;
        if let Ok(meta) = std::fs::symlink_metadata(path) {
            if meta.file_type().is_socket() {
                std::fs::remove_file(path)?;
            }
        }
        Ok(Listener::Unix(
            UnixListener::bind(path)?,
            path.to_path_buf(),
        ))
    }

    /// The bound TCP address, if TCP.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        match self {
            Listener::Tcp(l) => l.local_addr().ok(),
            Listener::Unix(..) => None,
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Listener::Tcp(l) => l
                .local_addr()
                .map(|a| a.to_string())
                .unwrap_or_else(|_| "tcp".into()),
            Listener::Unix(_, path) => format!("unix:{}", path.display()),
        }
    }

    async fn accept(&self) -> io::Result<Accepted> {
        match self {
            Listener::Tcp(l) => l.accept().await.map(|(s, a)| Accepted::Tcp(s, a)),
            Listener::Unix(l, _) => l.accept().await.map(|(s, _)| Accepted::Unix(s)),
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Listener::Unix(_, path) = self {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Every listener of one server.
pub struct Listeners {
    pub public: Listener,
    /// `api.listen`: push and admin API, off the public port.
    pub api: Option<Listener>,
    /// `metrics.listen`: `/metrics` only.
    pub metrics: Option<Listener>,
}

impl Listeners {
    /// Binds every listener the config names.
    pub async fn bind(config: &Config) -> io::Result<Listeners> {
        let public = Listener::bind(&config.listen).await?;
        Listeners::with_public(config, public).await
    }

    /// Uses `public` as given and binds the API and metrics listeners.
    pub async fn with_public(config: &Config, public: Listener) -> io::Result<Listeners> {
        let bind = |addr: &Option<ListenAddr>, key: &'static str| {
            let addr = addr.clone();
            async move {
                match addr {
                    Some(a) => Listener::bind_addr(&a)
                        .await
                        .map(Some)
                        .map_err(|e| io::Error::new(e.kind(), format!("{key} {a}: {e}"))),
                    None => Ok(None),
                }
            }
        };
        Ok(Listeners {
            api: bind(&config.api.listen, "api.listen").await?,
            metrics: bind(&config.metrics_listen, "metrics.listen").await?,
            public,
        })
    }
}

/// `hostname:port` as the Go server reports itself (just `hostname` for
/// ports up to 1023 and for UNIX sockets).
pub fn default_endpoint(port: Option<u16>) -> String {
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
    let listeners = Listeners::with_public(&config, listener).await?;
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
    let shared = Shared::new(config, endpoint, Metrics::new());
    serve(shared, listeners, shutdown).await
}

/// Serves with prepared shared state until `shutdown`, then drains.
pub async fn serve(
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
    loop {
        let accepted = tokio::select! {
            _ = connections.stop.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok(Accepted::Tcp(stream, remote)) => {
                let _ = stream.set_nodelay(true);
                serve_connection(
                    &builder,
                    &connections,
                    stream,
                    remote.to_string(),
                    routes.clone(),
                    access_log,
                );
            }
            Ok(Accepted::Unix(stream)) => {
                serve_connection(
                    &builder,
                    &connections,
                    stream,
                    "unix".into(),
                    routes.clone(),
                    access_log,
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

fn serve_connection<I, S>(
    builder: &http1::Builder,
    connections: &Connections,
    io: I,
    remote: String,
    routes: S,
    access_log: bool,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: Service<
            http::Request<Incoming>,
            Response = warp::reply::Response,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let remote: Arc<str> = Arc::from(remote);
    let service = service_fn(move |req: http::Request<Incoming>| {
        let mut routes = routes.clone();
        let remote = remote.clone();
        // What the access line needs is taken only when it will be written.
        let logged = access_log.then(|| {
            (
                Instant::now(),
                req.method().clone(),
                req.uri().path().to_string(),
            )
        });
        async move {
            let res = routes.call(req).await;
            if let (Some((started, method, path)), Ok(res)) = (logged, &res) {
                tracing::info!(
                    target: "kuiperbelt::access",
                    remote = %remote,
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
