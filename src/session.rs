//! One task per WebSocket connection: a single `select!` loop over inbound
//! frames, the outbound queue, the receive-callback pipeline, the establish
//! callback, the idle timer and the cancel token.
//!
//! Owns the socket and everything written to it. It never touches another
//! session; the registry entry is removed by `SessionGuard` however the task ends.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use hyper::upgrade::OnUpgrade;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;

use crate::metrics::{CloseReason, Refusal};
use crate::outlet::{Outlet, RawSocket, SharedStream};
use crate::registry::Outbound;
use crate::state::Shared;

/// Close code sent when `idle_timeout` passes.
pub const CLOSE_IDLE: u16 = 4000;
/// Close code sent to an older connection replaced by a newer one with the same id.
pub const CLOSE_REPLACED: u16 = 4001;
/// A client that takes no data for this long is disconnected.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a server-initiated close waits for the client's close frame.
const CLOSE_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(3);
/// Frames written per flush at most, so one busy session yields to others.
const MAX_BATCH: usize = 64;
/// Client messages waiting for the receive callback before the session stops
/// reading its socket (TCP backpressure reaches the client).
const MAX_PENDING_RECEIVES: usize = 32;

type Socket = WebSocketStream<SharedStream>;
type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// Unregisters the session and keeps the connection gauge right, on drop.
pub struct SessionGuard {
    shared: Arc<Shared>,
    id: Arc<str>,
    serial: u64,
}

impl SessionGuard {
    pub fn new(shared: Arc<Shared>, id: Arc<str>, serial: u64) -> SessionGuard {
        shared.metrics.connections.inc();
        SessionGuard { shared, id, serial }
    }
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        self.shared.registry.remove(&self.id, self.serial);
        self.shared.metrics.connections.dec();
    }
}

/// Everything a session task needs, built by the connect handler.
pub struct Session {
    pub shared: Arc<Shared>,
    pub id: Arc<str>,
    pub guard: SessionGuard,
    pub serial: u64,
    pub rx: flume::Receiver<Outbound>,
    pub cancel: CancellationToken,
    pub outlet: Arc<Outlet>,
    pub first: Option<Message>,
}

/// Frames and payload bytes written in one batch, counted once per batch.
#[derive(Default)]
struct Batch {
    frames: usize,
    bytes: u64,
}

impl Batch {
    fn record(&self, shared: &Shared) {
        if self.frames > 0 {
            shared.metrics.messages_delivered.inc_by(self.frames as u64);
            shared.metrics.sent_bytes.inc_by(self.bytes);
        }
    }
}

/// Client messages on their way to the receive callback, in order, one
/// request in flight per session.
struct Forwarder {
    in_flight: Option<BoxFuture<()>>,
    pending: VecDeque<(Bytes, bool)>,
}

impl Session {
    /// Waits for the upgrade, then serves the connection until it ends.
    pub async fn run(self, upgrade: OnUpgrade) {
        let started = Instant::now();
        let upgraded = match upgrade.await {
            Ok(u) => u,
            Err(e) => {
                tracing::debug!(session = %self.id, error = %e, "upgrade failed");
                return;
            }
        };
        let Some((socket, read_ahead)) = RawSocket::from_upgraded(upgraded) else {
            tracing::error!(session = %self.id, "upgraded connection is neither TCP nor UNIX");
            return;
        };
        let socket = Arc::new(socket);
        let Session {
            shared,
            id,
            guard,
            serial,
            rx,
            cancel,
            outlet,
            first,
        } = self;
        let ws = WebSocketStream::from_raw_socket(
            SharedStream::new(socket.clone(), outlet.clone(), read_ahead),
            Role::Server,
            Some(shared.ws_config),
        )
        .await;
        let mut conn = Connection {
            shared: shared.clone(),
            id: id.clone(),
            serial,
            ws,
            queue: rx.clone().into_stream(),
            rx,
            cancel,
            outlet,
            forwarder: Forwarder {
                in_flight: None,
                pending: VecDeque::new(),
            },
        };
        let (reason, code) = conn.serve(first, socket).await;
        conn.outlet.close();
        drop(guard);
        drop(conn.ws);
        finish(&shared, id, reason, code, started, conn.forwarder);
    }
}

/// After a connection ended: count it, write its access line, and send the
/// receives still queued, then (if the app should hear of it) the close
/// callback, in that order, in the background.
fn finish(
    shared: &Arc<Shared>,
    id: Arc<str>,
    reason: CloseReason,
    code: Option<u16>,
    started: Instant,
    forwarder: Forwarder,
) {
    shared.metrics.session_closed(reason);
    if !shared.config.suppress_access_log {
        tracing::info!(
            target: "kuiperbelt::access",
            method = "GET",
            path = %shared.config.paths.connect,
            status = 101,
            duration_ms = started.elapsed().as_millis() as u64,
            session = %id,
            close_code = code,
            reason = reason.label(),
            "session closed"
        );
    }
    let notify = reason.fires_close_callback() && shared.callbacks.has_close();
    let Forwarder {
        in_flight,
        mut pending,
    } = forwarder;
    if in_flight.is_none() && pending.is_empty() && !notify {
        return;
    }
    let task = shared.clone();
    shared.background.spawn(async move {
        if let Some(f) = in_flight {
            f.await;
        }
        while let Some((body, binary)) = pending.pop_front() {
            forward(task.clone(), id.clone(), body, binary).await;
        }
        if notify {
            let _permit = task.close_permits.acquire().await;
            if let Err(e) = task.callbacks.close(&id).await {
                tracing::warn!(session = %id, error = %e, "close callback failed");
            }
        }
    });
}

/// The live connection inside a session task.
struct Connection {
    shared: Arc<Shared>,
    id: Arc<str>,
    serial: u64,
    ws: Socket,
    /// Waits for the next outbound message without allocating per wait.
    queue: flume::r#async::RecvStream<'static, Outbound>,
    /// The same queue, for non-blocking reads and its length.
    rx: flume::Receiver<Outbound>,
    cancel: CancellationToken,
    /// The write side shared with the push API.
    outlet: Arc<Outlet>,
    forwarder: Forwarder,
}

/// Forwards one client message, logging (not propagating) a failure.
async fn forward(shared: Arc<Shared>, id: Arc<str>, body: Bytes, binary: bool) {
    if let Err(e) = shared.callbacks.receive(&id, body, binary).await {
        tracing::warn!(session = %id, error = %e, "receive callback failed");
    }
}

/// Awaits a socket write, arming `WRITE_TIMEOUT` only when the write does
/// not complete on its first poll (a timer per frame costs ~2% of fan-out CPU).
async fn within_write_timeout<F: Future>(fut: F) -> Result<F::Output, tokio::time::error::Elapsed> {
    let mut fut = std::pin::pin!(fut);
    let first = std::future::poll_fn(|cx| Poll::Ready(fut.as_mut().poll(cx))).await;
    match first {
        Poll::Ready(output) => Ok(output),
        Poll::Pending => tokio::time::timeout(WRITE_TIMEOUT, fut).await,
    }
}

/// Awaits the future in `slot`, or never when there is none.
async fn poll_slot<T>(slot: &mut Option<BoxFuture<T>>) -> T {
    match slot {
        Some(f) => f.await,
        None => std::future::pending().await,
    }
}

impl Connection {
    async fn serve(
        &mut self,
        first: Option<Message>,
        socket: Arc<RawSocket>,
    ) -> (CloseReason, Option<u16>) {
        if let Some(message) = first {
            if let Err(reason) = self.write_frames(Outbound::Message(message), false).await {
                return (reason, None);
            }
        }
        // From here on pushes may write directly, behind the first message.
        self.outlet.open(socket);
        let mut establish: Option<BoxFuture<Result<(), crate::callback::CallbackError>>> =
            self.shared.config.callback.establish.as_ref().map(|_| {
                let shared = self.shared.clone();
                let id = self.id.clone();
                Box::pin(async move { shared.callbacks.establish(&id).await }) as BoxFuture<_>
            });
        let idle = self.shared.config.idle_timeout;
        let mut last_seen = Instant::now();
        let idle_timer = tokio::time::sleep(idle.unwrap_or(Duration::from_secs(86400)));
        tokio::pin!(idle_timer);
        // Created once: a fresh `cancelled()` per loop turn would lock the
        // token's tree to register a waiter on every message.
        let cancelled = self.cancel.clone().cancelled_owned();
        tokio::pin!(cancelled);

        loop {
            if self.forwarder.in_flight.is_none() {
                if let Some((body, binary)) = self.forwarder.pending.pop_front() {
                    let fut = forward(self.shared.clone(), self.id.clone(), body, binary);
                    self.forwarder.in_flight = Some(Box::pin(fut));
                }
            }
            let room = self.forwarder.pending.len() < MAX_PENDING_RECEIVES;
            tokio::select! {
                biased;
                _ = &mut cancelled => {
                    return if self.shared.draining.is_cancelled() {
                        self.close_after_queue(CloseCode::Away, "going away", CloseReason::Drain).await
                    } else {
                        self.close_after_queue(CloseCode::from(CLOSE_REPLACED), "session replaced", CloseReason::Replaced).await
                    };
                }
                out = self.queue.next() => match out {
                    Some(out) => {
                        if let Err(reason) = self.write_frames(out, true).await {
                            let code = (reason == CloseReason::App).then_some(1000);
                            return (reason, code);
                        }
                    }
                    // Every sender is gone: the app closed it or a newer connection took the id.
                    None => return self.close(CloseCode::Normal, "", CloseReason::App).await,
                },
                frame = self.ws.next(), if room => {
                    last_seen = Instant::now();
                    match frame {
                        Some(Ok(Message::Text(text))) => self.received(Bytes::from(text), false),
                        Some(Ok(Message::Binary(data))) => self.received(data, true),
                        Some(Ok(Message::Close(frame))) => {
                            let code = frame.map(|f| u16::from(f.code));
                            // tungstenite queued the reply; flush it.
                            let _ = tokio::time::timeout(CLOSE_HANDSHAKE_TIMEOUT, self.ws.flush()).await;
                            return (CloseReason::Client, code);
                        }
                        Some(Ok(_)) => {}
                        Some(Err(e)) => {
                            tracing::debug!(session = %self.id, error = %e, "connection broken");
                            return (CloseReason::Broken, None);
                        }
                        None => return (CloseReason::Broken, None),
                    }
                }
                _ = poll_slot(&mut self.forwarder.in_flight), if self.forwarder.in_flight.is_some() => {
                    self.forwarder.in_flight = None;
                }
                result = poll_slot(&mut establish), if establish.is_some() => {
                    establish = None;
                    if let Err(e) = result {
                        tracing::warn!(session = %self.id, error = %e, "establish callback failed; closing");
                        self.shared.metrics.refused(Refusal::EstablishFailed);
                        return self.close(CloseCode::Error, "establish callback failed", CloseReason::EstablishFailed).await;
                    }
                }
                _ = &mut idle_timer, if idle.is_some() => {
                    let deadline = last_seen + idle.unwrap_or_default();
                    if Instant::now() >= deadline {
                        return self.close(CloseCode::from(CLOSE_IDLE), "idle timeout", CloseReason::Idle).await;
                    }
                    idle_timer.as_mut().reset(deadline.into());
                }
            }
        }
    }

    /// Counts a client message and queues it for the receive callback.
    fn received(&mut self, body: Bytes, binary: bool) {
        self.shared.metrics.client_messages.inc();
        self.shared.metrics.received_bytes.inc_by(body.len() as u64);
        if self.shared.callbacks.has_receive() {
            self.forwarder.pending.push_back((body, binary));
        }
    }

    /// Writes `first` (taken from the queue if `queued`) and whatever else is
    /// queued (up to a batch), then one flush, and tells the outlet how many
    /// queued items are out. `Err` carries why the session must end.
    async fn write_frames(&mut self, first: Outbound, queued: bool) -> Result<(), CloseReason> {
        self.shared
            .metrics
            .queue_depth
            .observe(self.rx.len() as f64);
        let mut next = Some(first);
        let mut taken = usize::from(queued);
        let mut batch = Batch::default();
        let result = loop {
            let Some(out) = next.take() else {
                let flushed = self.flush().await;
                if flushed.is_ok() {
                    self.outlet.release(taken);
                }
                break flushed;
            };
            let message = match out {
                Outbound::Message(message) => Some(message),
                Outbound::Flush => None,
                Outbound::Close(last) => {
                    if let Some(message) = last {
                        if let Err(e) = self.feed(message, &mut batch).await {
                            break Err(e);
                        }
                    }
                    self.close(CloseCode::Normal, "", CloseReason::App).await;
                    break Err(CloseReason::App);
                }
            };
            if let Some(message) = message {
                if let Err(e) = self.feed(message, &mut batch).await {
                    break Err(e);
                }
            }
            if batch.frames < MAX_BATCH {
                next = self.rx.try_recv().ok();
                taken += usize::from(next.is_some());
            }
        };
        batch.record(&self.shared);
        result
    }

    /// Queues one frame in tungstenite's write buffer (written at flush, or
    /// earlier when the buffer fills).
    async fn feed(&mut self, message: Message, batch: &mut Batch) -> Result<(), CloseReason> {
        let len = message.len() as u64;
        match within_write_timeout(self.ws.feed(message)).await {
            Ok(Ok(())) => {
                batch.frames += 1;
                batch.bytes += len;
                Ok(())
            }
            Ok(Err(e)) => {
                tracing::debug!(session = %self.id, error = %e, "write failed");
                Err(CloseReason::Broken)
            }
            Err(_) => Err(CloseReason::WriteStalled),
        }
    }

    async fn flush(&mut self) -> Result<(), CloseReason> {
        match within_write_timeout(self.ws.flush()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => {
                tracing::debug!(session = %self.id, error = %e, "flush failed");
                Err(CloseReason::Broken)
            }
            Err(_) => Err(CloseReason::WriteStalled),
        }
    }

    /// Stops new pushes, writes every message the queue already accepted,
    /// then closes.
    async fn close_after_queue(
        &mut self,
        code: CloseCode,
        reason: &'static str,
        why: CloseReason,
    ) -> (CloseReason, Option<u16>) {
        // Unregistered first, a push can no longer find this connection; one
        // already waiting for room is moved into the queue as we empty it, or
        // answered "session is closed." when the queue is dropped.
        self.shared.registry.remove(&self.id, self.serial);
        self.outlet.close();
        let mut batch = Batch::default();
        let mut end = (why, code, reason);
        while let Ok(out) = self.rx.try_recv() {
            let last = match out {
                Outbound::Message(message) => Some(message),
                Outbound::Flush => None,
                Outbound::Close(last) => {
                    end = (CloseReason::App, CloseCode::Normal, "");
                    last
                }
            };
            if let Some(message) = last {
                if let Err(e) = self.feed(message, &mut batch).await {
                    batch.record(&self.shared);
                    return (e, None);
                }
            }
            if end.0 == CloseReason::App {
                break;
            }
        }
        batch.record(&self.shared);
        let (why, code, reason) = end;
        self.close(code, reason, why).await
    }

    /// Sends a close frame and waits briefly for the client's reply.
    async fn close(
        &mut self,
        code: CloseCode,
        reason: &'static str,
        why: CloseReason,
    ) -> (CloseReason, Option<u16>) {
        self.outlet.close();
        let metrics = &self.shared.metrics;
        metrics.connections_closing.inc();
        let frame = CloseFrame {
            code,
            reason: reason.into(),
        };
        let sent = tokio::time::timeout(WRITE_TIMEOUT, self.ws.close(Some(frame))).await;
        if matches!(sent, Ok(Ok(()))) {
            let _ = tokio::time::timeout(CLOSE_HANDSHAKE_TIMEOUT, async {
                while let Some(Ok(_)) = self.ws.next().await {}
            })
            .await;
        }
        metrics.connections_closing.dec();
        (why, Some(u16::from(code)))
    }
}
