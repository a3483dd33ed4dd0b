//! Where kuiperbelt listens: the public listener (`port` or `sock`), the
//! optional `api.listen` and `metrics.listen` addresses, and the accept
//! queue they get (`listen_backlog`, default the system's `somaxconn`, as
//! the Go server).
//!
//! Owns binding and the listen keys' types; serving is `server/mod.rs`.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use socket2::{Domain, SockAddr, Socket, Type};
use tokio::net::{TcpListener, UnixListener};

use crate::config::error::ConfigError;

/// Used when `/proc/sys/net/core/somaxconn` cannot be read.
const FALLBACK_BACKLOG: u32 = 4096;

/// The system's largest accept queue (`net.core.somaxconn`).
pub(crate) fn system_backlog() -> u32 {
    std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(FALLBACK_BACKLOG)
}

/// `metrics.*` as written in the config file.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawMetricsListen {
    pub(crate) listen: Option<String>,
}

/// Where the public listener binds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Listen {
    Port(u16),
    Unix(PathBuf),
}

impl Listen {
    /// `sock` when set (and not empty), else `port` on every interface.
    pub(crate) fn resolve(port: u16, sock: Option<&str>) -> Listen {
        match sock.filter(|s| !s.is_empty()) {
            Some(path) => Listen::Unix(PathBuf::from(path)),
            None => Listen::Port(port),
        }
    }
}

/// An extra listener: a TCP address or a UNIX socket path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ListenAddr {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl ListenAddr {
    /// Parses `host:port`, `:port` (all interfaces) or a UNIX socket path.
    pub(crate) fn resolve(
        key: &str,
        value: Option<&str>,
    ) -> Result<Option<ListenAddr>, ConfigError> {
        let Some(value) = value.map(str::trim).filter(|v| !v.is_empty()) else {
            return Ok(None);
        };
        if value.contains('/') {
            return Ok(Some(ListenAddr::Unix(PathBuf::from(value))));
        }
        let with_host = if value.starts_with(':') {
            format!("0.0.0.0{value}")
        } else {
            value.to_string()
        };
        with_host
            .parse()
            .map(|a| Some(ListenAddr::Tcp(a)))
            .map_err(|_| {
                ConfigError::new(
                    key,
                    format!(
                        "{value:?} is neither an address like 127.0.0.1:9181 nor a UNIX socket path"
                    ),
                )
            })
    }

    /// Whether only this machine can connect (a loopback address or a UNIX socket).
    pub(crate) fn is_local(&self) -> bool {
        match self {
            ListenAddr::Tcp(a) => a.ip().is_loopback(),
            ListenAddr::Unix(_) => true,
        }
    }
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenAddr::Tcp(a) => write!(f, "{a}"),
            ListenAddr::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// A bound listening socket.
pub enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener, PathBuf),
}

impl Listener {
    /// Binds the public listener: all interfaces on `port`, or `sock`.
    pub(crate) fn bind(listen: &Listen, backlog: u32) -> io::Result<Listener> {
        match listen {
            Listen::Port(port) => Listener::bind_addr(
                &ListenAddr::Tcp(SocketAddr::from(([0, 0, 0, 0], *port))),
                backlog,
            ),
            Listen::Unix(path) => Listener::bind_addr(&ListenAddr::Unix(path.clone()), backlog),
        }
    }

    /// Binds a TCP address or UNIX socket path with an accept queue of
    /// `backlog`, replacing a stale socket file left by a previous run.
    pub(crate) fn bind_addr(addr: &ListenAddr, backlog: u32) -> io::Result<Listener> {
        let backlog = i32::try_from(backlog).unwrap_or(i32::MAX);
        match addr {
            ListenAddr::Tcp(a) => {
                let socket = Socket::new(Domain::for_address(*a), Type::STREAM, None)?;
                socket.set_reuse_address(true)?;
                socket.bind(&(*a).into())?;
                socket.listen(backlog)?;
                socket.set_nonblocking(true)?;
                Ok(Listener::Tcp(TcpListener::from_std(socket.into())?))
            }
            ListenAddr::Unix(path) => {
                remove_stale_socket(path)?;
                let socket = Socket::new(Domain::UNIX, Type::STREAM, None)?;
                socket.bind(&SockAddr::unix(path)?)?;
                socket.listen(backlog)?;
                socket.set_nonblocking(true)?;
                let std: std::os::unix::net::UnixListener = socket.into();
                Ok(Listener::Unix(UnixListener::from_std(std)?, path.clone()))
            }
        }
    }

    /// The bound TCP address, if TCP.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        match self {
            Listener::Tcp(l) => l.local_addr().ok(),
            Listener::Unix(..) => None,
        }
    }

    pub(crate) fn describe(&self) -> String {
        match self {
            Listener::Tcp(l) => l
                .local_addr()
                .map(|a| a.to_string())
                .unwrap_or_else(|_| "tcp".into()),
            Listener::Unix(_, path) => format!("unix:{}", path.display()),
        }
    }
}

/// Removes a socket file (not any other file) left at `path`.
fn remove_stale_socket(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::FileTypeExt;
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => std::fs::remove_file(path),
        _ => Ok(()),
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
    pub(crate) public: Listener,
    /// `api.listen`: push and admin API, off the public port.
    pub(crate) api: Option<Listener>,
    /// `metrics.listen`: `/metrics` only.
    pub(crate) metrics: Option<Listener>,
}

impl Listeners {
    /// Binds every listener the config names.
    pub fn bind(config: &crate::Config) -> io::Result<Listeners> {
        let public = Listener::bind(&config.listen, config.listen_backlog)?;
        Listeners::with_public(config, public)
    }

    /// Uses `public` as given and binds the API and metrics listeners.
    pub fn with_public(config: &crate::Config, public: Listener) -> io::Result<Listeners> {
        let bind = |addr: &Option<ListenAddr>, key: &'static str| match addr {
            Some(a) => Listener::bind_addr(a, config.listen_backlog)
                .map(Some)
                .map_err(|e| io::Error::new(e.kind(), format!("{key} {a}: {e}"))),
            None => Ok(None),
        };
        Ok(Listeners {
            api: bind(&config.api.listen, "api.listen")?,
            metrics: bind(&config.metrics_listen, "metrics.listen")?,
            public,
        })
    }

    /// The public listener's TCP address, if TCP.
    pub fn public_addr(&self) -> Option<SocketAddr> {
        self.public.local_addr()
    }
}
