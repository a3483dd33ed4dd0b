//! One task per WebSocket connection, from the upgrade to the close
//! callback: it waits for the establish callback (when set) before the
//! connection is registered and its first message sent, then runs the
//! connection's `select!` loop (`conn.rs`), and when it ends hands what the
//! client said and the close event to the app (`forward.rs`).
//!
//! Owns the connection's reads and its end. Writes go through the sessions
//! core's outlet, shared with pushes; the registry entry is removed here
//! however the task ends.

mod conn;
mod forward;
pub(crate) mod metrics;

use std::sync::Arc;
use std::time::Instant;

use hyper::upgrade::OnUpgrade;

use crate::frame::{self, Encoded};
use crate::sessions::outlet::Mailbox;
use crate::sessions::socket::RawSocket;
use crate::sessions::Attached;
use crate::state::Shared;
use crate::websocket::reader::Reader;
use conn::Connection;
use forward::Forwarder;
pub(crate) use metrics::CloseReason;
use metrics::Refusal;

/// Everything a session task needs, built by the connect handler.
pub(crate) struct Session {
    shared: Arc<Shared>,
    conn: Attached,
    mailbox: Mailbox,
    welcome: Option<Box<Welcome>>,
    /// `callback.establish` must answer 200 before the session is registered.
    gated: bool,
}

/// What the connect callback's answer gives a session beyond its id: its
/// first message, and the channels it joins when it registers after the
/// establish callback. Boxed, and only when there is one, so that a session
/// without either keeps a pointer's worth of it.
#[derive(Debug, Default)]
pub(crate) struct Welcome {
    /// The connect callback's body, sent before anything else.
    first: Option<Encoded>,
    channels: Vec<Arc<str>>,
}

impl Welcome {
    pub(crate) fn new(first: Option<Encoded>, channels: Vec<Arc<str>>) -> Option<Box<Welcome>> {
        (first.is_some() || !channels.is_empty()).then(|| Box::new(Welcome { first, channels }))
    }
}

/// Keeps the open-connection gauge and the registry right however the task ends.
struct Guard {
    shared: Arc<Shared>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.shared.metrics.figures.connections.dec();
    }
}

impl Session {
    pub(crate) fn new(
        shared: Arc<Shared>,
        conn: Attached,
        mailbox: Mailbox,
        welcome: Option<Box<Welcome>>,
        gated: bool,
    ) -> Session {
        Session {
            shared,
            conn,
            mailbox,
            welcome,
            gated,
        }
    }

    /// Waits for the upgrade, then serves the connection until it ends.
    pub(crate) async fn run(self, upgrade: OnUpgrade) {
        let Session {
            shared,
            conn,
            mailbox,
            welcome,
            gated,
        } = self;
        let started = Instant::now();
        let upgraded = match upgrade.await {
            Ok(u) => u,
            Err(e) => {
                tracing::debug!(session = %conn.id, error = %e, "upgrade failed");
                shared.sessions.unregister(&conn);
                return;
            }
        };
        let Some((socket, read_ahead)) = RawSocket::from_upgraded(upgraded) else {
            tracing::error!(session = %conn.id, "upgraded connection is neither TCP nor UNIX");
            shared.sessions.unregister(&conn);
            return;
        };
        shared.metrics.figures.connections.inc();
        let _guard = Guard {
            shared: shared.clone(),
        };
        let socket = Arc::new(socket);
        mailbox.attach(socket.clone());
        let reader = Reader::new(
            read_ahead,
            shared.config.max_message_size,
            mailbox.deflated(),
        );

        if gated {
            // Boxed: the request future is large, and every session task
            // would otherwise carry its size for its whole life.
            if let Err(e) = Box::pin(shared.callbacks.establish(&conn.id)).await {
                tracing::warn!(session = %conn.id, error = %e, "establish callback failed; closing");
                shared.connection_metrics.refused(Refusal::EstablishFailed);
                shared
                    .connection_metrics
                    .session_closed(CloseReason::EstablishFailed);
                let frame = frame::close(conn::CLOSE_ERROR, "establish callback failed");
                let _ = tokio::time::timeout(
                    conn::CLOSE_HANDSHAKE_TIMEOUT,
                    mailbox.write_control(frame),
                )
                .await;
                return;
            }
        }
        let mut connection = Connection::new(shared.clone(), &conn, mailbox, socket, reader);
        let Welcome { first, channels } = welcome.map(|w| *w).unwrap_or_default();
        let register = gated.then_some(channels);
        let (reason, code) = connection.start(first, register).await;
        let forwarder = connection.finish();
        shared.sessions.unregister(&conn);
        end(&shared, conn, reason, code, started, forwarder);
    }
}

/// After a connection ended: count it, write its access line, and send the
/// receives still waiting, then (if the app should hear of it) the close
/// callback, in that order, in the background.
fn end(
    shared: &Arc<Shared>,
    conn: Attached,
    reason: CloseReason,
    code: Option<u16>,
    started: Instant,
    forwarder: Forwarder,
) {
    shared.connection_metrics.session_closed(reason);
    if !shared.config.suppress_access_log {
        tracing::info!(
            target: "kuiperbelt::access",
            method = "GET",
            path = %shared.config.paths.connect,
            status = 101,
            duration_ms = started.elapsed().as_millis() as u64,
            session = %conn.id,
            close_code = code,
            reason = reason.label(),
            "session closed"
        );
    }
    let notify = reason.fires_close_callback() && shared.callbacks.has_close();
    forwarder.finish(shared, conn.id, notify.then_some(reason));
}
