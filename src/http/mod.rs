//! The HTTP surface: routing (`routes`), the handlers it dispatches to
//! (`connect`, `push`, `batch`, `membership`, `admin`), who may call them
//! (`auth`), request bodies (`body`), push targets (`targets`), the JSON
//! replies (`reply`) and the batch metrics (`metrics`).
//!
//! Owns what a request means; sockets and the accept loop are `server`'s.

pub(crate) mod admin;
pub(crate) mod auth;
pub(crate) mod batch;
pub(crate) mod body;
pub(crate) mod config;
pub(crate) mod connect;
pub(crate) mod membership;
pub(crate) mod metrics;
pub(crate) mod push;
pub(crate) mod reply;
pub(crate) mod routes;
pub(crate) mod targets;

use std::net::SocketAddr;

use http::header::HeaderName;

/// The header naming channels: in the connect callback's answer (join), in
/// `/subscribe` and `/unsubscribe`, and as push targets.
pub(crate) const CHANNEL_HEADER: &str = "X-Kuiperbelt-Channel";
/// [`CHANNEL_HEADER`] as a header name, looked up without parsing.
pub(crate) const CHANNEL: HeaderName = HeaderName::from_static("x-kuiperbelt-channel");

/// The header naming a session a channel push leaves out.
pub(crate) const EXCLUDE: HeaderName = HeaderName::from_static("x-kuiperbelt-exclude");

/// Who sent a request: put on every request by the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Peer {
    Tcp(SocketAddr),
    /// A UNIX socket peer: on this machine, with access to the socket file.
    Unix,
}

impl Peer {
    /// On this machine: a loopback address (127.0.0.0/8, ::1, or an
    /// IPv4-mapped loopback) or the UNIX socket.
    pub(crate) fn is_local(&self) -> bool {
        match self {
            Peer::Unix => true,
            Peer::Tcp(addr) => match addr.ip() {
                std::net::IpAddr::V4(ip) => ip.is_loopback(),
                std::net::IpAddr::V6(ip) => {
                    ip.is_loopback() || ip.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
                }
            },
        }
    }
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Peer::Tcp(addr) => write!(f, "{addr}"),
            Peer::Unix => f.write_str("unix"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_peers_are_loopback_or_unix() {
        let tcp = |s: &str| Peer::Tcp(s.parse().unwrap());
        for local in [
            "127.0.0.1:1",
            "127.9.8.7:1",
            "[::1]:1",
            "[::ffff:127.0.0.1]:1",
        ] {
            assert!(tcp(local).is_local(), "{local}");
        }
        assert!(Peer::Unix.is_local());
        for remote in [
            "10.99.0.1:1",
            "192.168.1.2:1",
            "0.0.0.0:1",
            "[::]:1",
            "[fe80::1]:1",
            "[::ffff:10.0.0.1]:1",
            "[2001:db8::1]:1",
        ] {
            assert!(!tcp(remote).is_local(), "{remote}");
        }
    }
}
