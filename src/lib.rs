//! kuiperbelt: a WebSocket <-> HTTP/1.1 bridge. Clients hold WebSockets here;
//! the app, a plain HTTP server, decides who may connect (connect callback),
//! hears what clients say (receive/close callbacks) and pushes with
//! `POST /send` and `POST /close`.
//!
//! # Module map
//!
//! | module | owns |
//! |---|---|
//! | [`config`] | config keys, defaults, loading (file, env, flags) and validation |
//! | [`duration`] | Go-style duration strings |
//! | [`cli`] | command-line flags, Go's single-dash forms included |
//! | [`logging`] | tracing-subscriber setup (text or JSON) |
//! | [`server`] | listeners (TCP, UNIX), the hyper accept loop, shutdown |
//! | [`routes`] | warp filters: path and method to handler |
//! | [`connect`] | `/connect`: origin, handshake, connect callback, upgrade |
//! | [`session`] | one task per WebSocket: the `select!` loop |
//! | [`drain`] | the staged drain on SIGTERM or `POST /drain` |
//! | [`registry`] | session id -> handle (queue sender, cancel token, outlet) |
//! | [`outlet`] | a connection's shared write side: direct writes, byte order |
//! | [`push`] | `/send` and `/close`: addressing and replies |
//! | [`callback`] | HTTP requests to the app over a pooled client |
//! | [`frame`] | body + Content-Type -> text or binary frame |
//! | [`reply`] | JSON reply bodies and error statuses |
//! | [`demo`] | `kuiperbelt demo`: the proxy plus a chat app on loopback |
//! | [`metrics`] | Prometheus metrics and Go's `/stats` view |
//! | [`state`] | the state shared by handlers and sessions |
//!
//! # Path of a message from `POST /send` to a frame
//!
//! 1. [`server`] accepts the TCP connection and hyper parses the request.
//! 2. [`routes`] matches `path.send` and reads the body (up to `max_message_size`).
//! 3. [`push::handle`] collects the session headers, turns the body into a
//!    text or binary [`tungstenite::Message`](tokio_tungstenite::tungstenite::Message)
//!    via [`frame`], and encodes it once as a WebSocket frame for every target.
//! 4. Under one read lock of the [`registry`], it offers the frame to each
//!    target's [`outlet`]: when nothing is queued ahead of it, the frame is
//!    written straight onto the socket with a non-blocking `try_write`;
//!    otherwise it goes into the target's bounded queue, and full queues are
//!    awaited together up to `send_timeout`.
//! 5. It answers `{"result":"OK"}` (with `errors` for targets that missed it).
//! 6. For queued frames (and the tail of a direct write the socket did not
//!    take at once), the target's [`session`] task takes them from its queue
//!    with any others waiting, writes them, and flushes once.

pub mod callback;
pub mod cli;
pub mod config;
pub mod connect;
pub mod demo;
pub mod drain;
pub mod duration;
pub mod frame;
pub mod logging;
pub mod metrics;
pub mod outlet;
pub mod push;
pub mod registry;
pub mod reply;
pub mod routes;
pub mod server;
pub mod session;
pub mod state;

pub use config::Config;
pub use server::{run, run_with, Listener, Listeners};
