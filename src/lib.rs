//! kuiperbelt: a WebSocket <-> HTTP/1.1 bridge. Clients hold WebSockets here;
//! the app, a plain HTTP server, decides who may connect (connect callback),
//! hears what clients say (receive/close callbacks) and pushes with
//! `POST /send` and `POST /close`, to sessions or to channels.
//!
//! The public API is what the binary and the tests use: [`config`] to load
//! a config, [`run`] / [`run_with`] to serve it on bound [`Listeners`],
//! [`logging::init`], the [`cli`] flags, [`ctl`] and the [`demo`].
//!
//! # Module map
//!
//! | module | owns |
//! |---|---|
//! | [`config`] | composing each subsystem's config: the file's shape, defaults, loading (Go template, file, env, flags); `config::error` is the error every subsystem's keys return |
//! | `duration` | Go-style duration strings |
//! | [`cli`] | command-line flags, Go's single-dash forms included |
//! | [`logging`] | tracing-subscriber setup and `log.*` |
//! | `server` | listeners (`listener`: TCP, UNIX, backlog) and the hyper accept loop |
//! | `http` | the HTTP surface: `routes`, handlers (`connect`, `push`, `membership`: subscribe and unsubscribe, `admin`: health, stats, metrics, status, sessions, channels, the `/ui` page, drain), `auth` (and its metric), `body`, `batch` (many pushes in one request), `targets` (session, channel and exclude headers), `reply`, `metrics` (batch counters), `config` (`path.*`, `origin_policy`, `batch.*`) |
//! | `sessions` | the sessions core: `registry` (id -> connection, and the channel tables under the same lock), `channels` (membership, channel names), `handle` (stop signal, info), `outlet` (each connection's queue and write side), `socket`, `outcome`, `metrics`, `config` (`channel.*`), and `Sessions::deliver` / `Sessions::offer_channels` |
//! | `connection` | one task per connection: establish, the `select!` loop (`conn`), what it tells the app (`forward`), how it ends (`metrics`: close reasons, refusals) |
//! | `callback` | HTTP requests to the app over a pooled client (`mod`, `request`), retried while the app is away behind one gate (`retry`, `gate`, `outbox`); `metrics`; `callback.*` |
//! | `cluster` | cluster mode: pushes to sessions held by other nodes and to channels' members on other nodes, over NATS (`wire`); `metrics`; `cluster.*` |
//! | `frame` | body + Content-Type -> an encoded text or binary frame, its permessage-deflate form (compressed once, when first wanted; copies arriving from other nodes share it through `Recent`), control frames |
//! | `websocket` | the protocol's read side: the frame reader (`reader`: RFC 6455 frames, UTF-8, close codes), permessage-deflate's negotiation (`negotiate`) and inflation (`inflate`), `compression.*` (`config`) and its metrics |
//! | `lifecycle` | the server's stage: running, announcing, draining, done |
//! | `drain` | the staged drain on SIGTERM or `POST /drain`; `metrics`; `drain.*` (`config`) |
//! | `metrics` | the registry, the helpers subsystems declare their families with, process metrics and Go's `/stats` figures |
//! | `state` | the state shared by handlers and connections |
//! | [`demo`] | `kuiperbelt demo`: the proxy plus a chat app on loopback |
//! | [`ctl`] | `kuiperbelt ctl`: the operator's client for a running kuiperbelt's API |
//!
//! # Layers
//!
//! Lowest first. A file may import another file of the crate (`use
//! crate::…`, `super::…`, `self::…` or a child module) only when that file
//! sits on a lower layer; each subsystem keeps its config keys and metric
//! families low and its behaviour high, and only `config` composes the
//! keys. `cargo test --test layers` checks this table against the code.
//!
//! | layer | files |
//! |---|---|
//! | 0 ground | `duration`, `frame`, `lifecycle`, `metrics`, `config::error`, `config::template`, `http`, `http::reply`, `sessions::socket`, `sessions::handle`, `sessions::page`, `callback::request`, `demo::app`, `websocket`, `websocket::negotiate`, `websocket::inflate` |
//! | 1 keys, families, write side | `logging`, `http::metrics`, `server::listener`, `callback::config`, `cluster::config`, `drain::config`, `http::config`, `sessions::config`, `http::body`, `callback::retry`, `cluster::metrics`, `connection::metrics`, `drain::metrics`, `sessions::outlet`, `websocket::config`, `websocket::reader` |
//! | 2 | `callback::gate`, `callback::metrics`, `http::auth`, `sessions::outcome`, `sessions::channels`, `websocket::metrics` |
//! | 3 | `callback::outbox`, `sessions::metrics`, `sessions::registry`, `http::targets`, `config` |
//! | 4 cores | `callback`, `sessions`, `ctl` |
//! | 5 | `cluster::wire`, `cli` |
//! | 6 | `cluster` |
//! | 7 shared state | `state` |
//! | 8 | `connection::forward`, `drain`, `http::push` |
//! | 9 | `connection::conn`, `http::admin`, `http::membership`, `http::batch` |
//! | 10 | `connection` |
//! | 11 | `http::connect` |
//! | 12 | `http::routes` |
//! | 13 | `server` |
//! | 14 | `demo` |
//!
//! # A push: from `POST /send` to a frame
//!
//! 1. `server` accepts the TCP connection; hyper parses the request, whose
//!    body is limited to `max_message_size`.
//! 2. `http::routes` matches `path.send`, checks the token (`http::auth`)
//!    and reads the body (`http::body`).
//! 3. `http::push::handle` collects the session headers and encodes the
//!    body once as a text or binary frame (`frame::encode`).
//! 4. `sessions::Sessions::deliver` looks every target up under one read
//!    lock of the `registry` and offers the frame to each target's `outlet`:
//!    when nothing is waiting ahead of it, the frame is written straight onto
//!    the socket with a non-blocking `try_write`; otherwise it goes into the
//!    target's bounded queue, and full queues are awaited together up to
//!    `send_timeout`. One `Outcome` per target comes back.
//! 5. In cluster mode, each target not held here is asked of the other nodes
//!    (`cluster`): a NATS request on the session's subject, which its holder
//!    hands to its own `Sessions::deliver`.
//! 6. A channel target (`X-Kuiperbelt-Channel`) goes to
//!    `Sessions::offer_channels`, which offers the frame to the channel's members
//!    here under one read lock, each session once; in cluster mode it
//!    is then one NATS request on the channel's subject, which every other
//!    node with members hands to its own; full queues are waited on
//!    (`Sessions::settle`) while the other nodes deliver.
//! 7. `http::push` answers `{"result":"OK"}`, with an `errors` entry per
//!    target that missed it.
//! 8. For queued frames (and the tail of a direct write the socket did not
//!    take at once), the target's connection task (`connection::conn`) takes them
//!    from its queue with any others waiting and writes them in one vectored
//!    write.
//! 9. A target that negotiated permessage-deflate gets the frame's
//!    compressed form (`frame::Encoded::wire`), made once per push by the
//!    first such target and shared by the rest.
//!
//! # A client message: from a frame to the receive callback
//!
//! 1. The connection's `connection::conn` loop reads a text or binary
//!    message through `websocket::reader`, which puts fragments together,
//!    checks text as UTF-8 and inflates a compressed message (a protocol
//!    violation is answered with a close frame: 1002, 1007 or 1009).
//! 2. It counts it and hands it to the connection's `connection::forward`
//!    forwarder, which keeps the connection's messages in order, one request
//!    in flight; while 32 wait, the loop stops reading (TCP backpressure).
//! 3. The forwarder sends it through `callback::outbox`, which waits at the
//!    app gate, retries while the app is away and gives up a timed-out one; `callback::Callbacks::receive`
//!    POSTs it to `callback.receive` with the session header,
//!    `X-Kuiperbelt-Sequence`, `Content-Type` and `X-Kuiperbelt-Endpoint`.
//! 4. When the connection ends, what is still waiting is sent, then the close
//!    callback, in the background (`drain` waits for it).

mod callback;
pub mod cli;
mod cluster;
pub mod config;
mod connection;
pub mod ctl;
pub mod demo;
mod drain;
mod duration;
mod frame;
mod http;
mod lifecycle;
pub mod logging;
mod metrics;
mod server;
mod sessions;
mod state;
mod websocket;

pub use config::Config;
pub use server::listener::{Listener, Listeners};
pub use server::{run, run_with};
