//! A live connection's `select!` loop: the stop signal, the outbound queue,
//! inbound frames, the receive forwarder and the idle timer; and how the
//! connection closes (close frames, protocol errors, write timeouts).
//!
//! Owns the connection from its first message to its last frame: the
//! reader gives what the client sent, bytes go out through the mailbox
//! (the sessions core's outlet; pongs and close frames too), and client
//! messages go to the forwarder.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::frame::coding::Control;

use super::forward::Forwarder;
use super::metrics::CloseReason;
use crate::frame::{self, Encoded};
use crate::sessions::outlet::{Mailbox, Next};
use crate::sessions::socket::RawSocket;
use crate::sessions::{Attached, StopReason, WriteError};
use crate::state::Shared;
use crate::websocket::reader::{Incoming, ReadError, Reader, Violation};

/// Close code of a normal close (`POST /close`).
const CLOSE_NORMAL: u16 = 1000;
/// Close code sent when the server goes away (drain, shutdown).
const CLOSE_AWAY: u16 = 1001;
/// Close code sent when the server cannot serve the connection.
pub(super) const CLOSE_ERROR: u16 = 1011;
/// Close code sent when `idle_timeout` passes.
pub(crate) const CLOSE_IDLE: u16 = 4000;
/// Close code sent to an older connection replaced by a newer one with the same id.
pub(crate) const CLOSE_REPLACED: u16 = 4001;

/// Without `idle_timeout`, a client that takes no data for this long is
/// disconnected (with it, `idle_timeout` is the limit).
pub(crate) const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a server-initiated close waits for the client's close frame.
pub(super) const CLOSE_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(3);
/// Frames written per batch at most, so one busy session yields to others.
const MAX_BATCH: usize = 64;

/// How a connection ended: why, and the close code sent or received.
pub(super) type Ended = (CloseReason, Option<u16>);

pub(super) struct Connection<'a> {
    shared: Arc<Shared>,
    conn: &'a Attached,
    mailbox: Mailbox,
    socket: Arc<RawSocket>,
    reader: Reader,
    forwarder: Forwarder,
    /// A write blocked longer than this fails.
    write_timeout: Duration,
}

impl<'a> Connection<'a> {
    pub(super) fn new(
        shared: Arc<Shared>,
        conn: &'a Attached,
        mailbox: Mailbox,
        socket: Arc<RawSocket>,
        reader: Reader,
    ) -> Connection<'a> {
        let write_timeout = shared.config.idle_timeout.unwrap_or(WRITE_TIMEOUT);
        Connection {
            shared,
            conn,
            mailbox,
            socket,
            reader,
            forwarder: Forwarder::default(),
            write_timeout,
        }
    }

    /// Registers the connection in its channels when `register` says so (a
    /// push from then on queues behind the first message: the outlet is not
    /// open yet), sends the first message, opens the outlet to direct
    /// writes, then serves the connection until it ends.
    pub(super) async fn start(
        &mut self,
        first: Option<Encoded>,
        register: Option<Vec<Arc<str>>>,
    ) -> Ended {
        if let Some(channels) = register {
            self.shared.sessions.register(self.conn, &channels);
        }
        if let Some(first) = first {
            self.shared.sessions.metrics().first_message();
            let written =
                tokio::time::timeout(self.write_timeout, self.mailbox.write_first(&first)).await;
            if let Some(error) = write_error(written) {
                return self.write_failed(error, 1);
            }
            self.shared
                .sessions
                .metrics()
                .delivered(1, first.payload as u64);
            self.mailbox.written(1);
        }
        self.mailbox.open();
        self.serve().await
    }

    /// The forwarder, for what is still to be sent after the end.
    pub(super) fn finish(self) -> Forwarder {
        self.forwarder
    }

    async fn serve(&mut self) -> Ended {
        let idle = self.shared.config.idle_timeout;
        let mut last_seen = Instant::now();
        let idle_timer = tokio::time::sleep(idle.unwrap_or(Duration::from_secs(86400)));
        tokio::pin!(idle_timer);
        // Created once: a fresh future per loop turn would lock the stop
        // token's tree to register a waiter on every message.
        let stopped = self.conn.stop.stopped();
        tokio::pin!(stopped);

        loop {
            self.forwarder.start_next(&self.shared, &self.conn.id);
            // Read the client only while its messages and everyone's bytes
            // waiting for the app are below their bounds.
            let budget = self.shared.callbacks.outbox().budget.has_room();
            let room = self.forwarder.has_room() && budget;
            tokio::select! {
                biased;
                _ = &mut stopped => {
                    return match self.conn.stop.reason() {
                        Some(StopReason::Replaced) => {
                            self.close_after_queue(CLOSE_REPLACED, "session replaced", CloseReason::Replaced).await
                        }
                        Some(StopReason::Drain) | None => {
                            self.close_after_queue(CLOSE_AWAY, "going away", CloseReason::Drain).await
                        }
                    };
                }
                next = self.mailbox.next() => {
                    if let Err(ended) = self.write(next).await {
                        return ended;
                    }
                }
                incoming = self.reader.next(&self.socket), if room => {
                    last_seen = Instant::now();
                    if let Some(ended) = self.incoming(incoming).await {
                        return ended;
                    }
                }
                _ = self.forwarder.completed(), if self.forwarder.busy() => {}
                _ = self.shared.callbacks.outbox().budget.room(), if !budget => {}
                _ = &mut idle_timer, if idle.is_some() => {
                    let idle = idle.unwrap_or_default();
                    let last = last_seen.max(Instant::from_std(self.mailbox.last_write()));
                    if Instant::now() >= last + idle {
                        return self.close(CLOSE_IDLE, "idle timeout", CloseReason::Idle).await;
                    }
                    idle_timer.as_mut().reset(last + idle);
                }
            }
        }
    }

    /// Handles what the client sent: a message goes to the forwarder, a ping
    /// is answered, a close frame is answered and ends the connection, as
    /// does a read that failed. `Some` when the connection ends.
    async fn incoming(&mut self, incoming: Result<Incoming, ReadError>) -> Option<Ended> {
        match incoming {
            Ok(Incoming::Message {
                data,
                binary,
                compressed,
            }) => {
                if compressed {
                    self.shared.compression.inflated.inc();
                }
                self.received(data, binary);
                None
            }
            Ok(Incoming::Ping(payload)) => {
                let pong = frame::control(Control::Pong, &payload);
                let sent =
                    tokio::time::timeout(self.write_timeout, self.mailbox.write_control(pong))
                        .await;
                write_error(sent).map(|error| self.write_failed(error, 0))
            }
            Ok(Incoming::Pong) => None,
            Ok(Incoming::Close(code)) => {
                // The reply carries the client's code back (RFC 6455 5.5.1).
                self.mailbox.close();
                let reply = match code {
                    Some(code) => frame::close(code, ""),
                    None => frame::control(Control::Close, &[]),
                };
                let _ = tokio::time::timeout(
                    CLOSE_HANDSHAKE_TIMEOUT,
                    self.mailbox.write_control(reply),
                )
                .await;
                Some((CloseReason::Client, code))
            }
            Err(ReadError::Violation(violation)) => Some(self.violation(violation).await),
            Err(ReadError::Eof) => Some((CloseReason::Broken, None)),
            Err(ReadError::Io(e)) => {
                tracing::debug!(session = %self.conn.id, error = %e, "connection broken");
                Some((CloseReason::Broken, None))
            }
        }
    }

    /// Counts a client message and hands it to the forwarder.
    fn received(&mut self, body: Bytes, binary: bool) {
        self.shared.connection_metrics.client_message(body.len());
        self.conn
            .info
            .received
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if self.shared.callbacks.has_receive() {
            self.forwarder.push(&self.shared, body, binary);
        }
    }

    /// Writes `next` and whatever else is queued (up to a batch); `Err`
    /// when the connection must end.
    async fn write(&mut self, next: Option<Next>) -> Result<(), Ended> {
        self.shared
            .sessions
            .metrics()
            .queue_depth(self.mailbox.len());
        let batch = self.mailbox.take_batch(next, MAX_BATCH);
        let written = tokio::time::timeout(self.write_timeout, self.mailbox.write_pending()).await;
        if let Some(error) = write_error(written) {
            return Err(self.write_failed(error, batch.frames as u64));
        }
        self.shared
            .sessions
            .metrics()
            .delivered(batch.frames as u64, batch.bytes);
        self.mailbox.written(batch.frames as u64);
        if batch.close {
            return Err(self.close(CLOSE_NORMAL, "", CloseReason::App).await);
        }
        Ok(())
    }

    /// A write failed: `lost` messages of the batch and everything still
    /// queued are message errors, and the connection ends without a close
    /// frame (the socket cannot take one).
    fn write_failed(&mut self, error: WriteError, lost: u64) -> Ended {
        self.mailbox.seal();
        let queued = std::iter::from_fn(|| self.mailbox.try_take())
            .filter(|push| push.frame().is_some())
            .count() as u64;
        tracing::debug!(session = %self.conn.id, error = error.label(), "write to the client failed");
        self.shared
            .sessions
            .metrics()
            .write_failed(error, lost + queued);
        (close_reason(error), None)
    }

    /// The client broke the protocol: its close frame (1002, 1007 or 1009,
    /// RFC 6455 7.4.1), then the end.
    async fn violation(&mut self, violation: Violation) -> Ended {
        tracing::info!(session = %self.conn.id, error = violation.reason, "client broke the WebSocket protocol; closing");
        self.mailbox.close();
        let frame = frame::close(violation.code, violation.reason);
        let _ =
            tokio::time::timeout(CLOSE_HANDSHAKE_TIMEOUT, self.mailbox.write_control(frame)).await;
        // Whatever the client sent after the bad frame is discarded, so
        // closing the socket does not reset the connection before the close
        // frame is read.
        self.mailbox.linger(CLOSE_HANDSHAKE_TIMEOUT).await;
        (CloseReason::ProtocolError, Some(violation.code))
    }

    /// Stops new pushes, writes every message already accepted, then closes.
    async fn close_after_queue(
        &mut self,
        code: u16,
        reason: &'static str,
        why: CloseReason,
    ) -> Ended {
        // Unregistered first, a push can no longer find this connection; one
        // already waiting for room is moved into the queue as it empties, or
        // answered "session is closed." once the queue is dropped.
        self.shared.sessions.unregister(self.conn);
        self.mailbox.close();
        let mut sealed = false;
        loop {
            if self.mailbox.len() == 0 {
                if sealed {
                    break;
                }
                // What got in before the seal is still written.
                self.mailbox.seal();
                sealed = true;
                continue;
            }
            let next = self.mailbox.next().await;
            if let Err(ended) = self.write(next).await {
                return ended;
            }
        }
        self.close(code, reason, why).await
    }

    /// Sends a close frame and waits briefly for the client's reply.
    async fn close(&mut self, code: u16, reason: &'static str, why: CloseReason) -> Ended {
        self.mailbox.close();
        let frame = frame::close(code, reason);
        let sent =
            tokio::time::timeout(self.write_timeout, self.mailbox.write_control(frame)).await;
        if matches!(sent, Ok(Ok(()))) {
            let _ = tokio::time::timeout(CLOSE_HANDSHAKE_TIMEOUT, async {
                while let Ok(incoming) = self.reader.next(&self.socket).await {
                    if matches!(incoming, Incoming::Close(_)) {
                        break;
                    }
                }
            })
            .await;
        }
        (why, Some(code))
    }
}

/// What went wrong with a write bounded by a timeout, if anything.
fn write_error(
    written: Result<std::io::Result<()>, tokio::time::error::Elapsed>,
) -> Option<WriteError> {
    match written {
        Ok(Ok(())) => None,
        Ok(Err(_)) => Some(WriteError::Failed),
        Err(_) => Some(WriteError::TimedOut),
    }
}

/// How a connection whose write failed ends.
fn close_reason(error: WriteError) -> CloseReason {
    match error {
        WriteError::Failed => CloseReason::Broken,
        WriteError::TimedOut => CloseReason::WriteTimeout,
    }
}
