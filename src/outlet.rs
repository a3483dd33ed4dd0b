//! The write side of one WebSocket connection, shared by its session task and
//! the push API, so a push can write its frame straight onto an idle socket.
//!
//! Owns the order of bytes on the wire. A push writes directly only when
//! nothing is waiting ahead of it: no frame queued for the session task, no
//! bytes held back by tungstenite, no unwritten tail of an earlier direct
//! write. Otherwise it goes through the session's queue as before. All of
//! this, and every write to the socket, happens under one short per-session
//! lock, and nothing under it blocks: writes are non-blocking `try_write`s.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixStream};
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::Message;

use crate::registry::Outbound;

/// The connection's socket, as accepted by the server.
#[derive(Debug)]
pub enum RawSocket {
    Tcp(TcpStream),
    Unix(UnixStream),
}

macro_rules! each_socket {
    ($self:ident, $s:ident => $e:expr) => {
        match $self {
            RawSocket::Tcp($s) => $e,
            RawSocket::Unix($s) => $e,
        }
    };
}

impl RawSocket {
    /// Takes the socket and any read-ahead bytes back from hyper after an
    /// upgrade; `None` for an I/O type the server does not accept.
    pub fn from_upgraded(upgraded: Upgraded) -> Option<(RawSocket, Bytes)> {
        let upgraded = match upgraded.downcast::<TokioIo<TcpStream>>() {
            Ok(parts) => return Some((RawSocket::Tcp(parts.io.into_inner()), parts.read_buf)),
            Err(upgraded) => upgraded,
        };
        match upgraded.downcast::<TokioIo<UnixStream>>() {
            Ok(parts) => Some((RawSocket::Unix(parts.io.into_inner()), parts.read_buf)),
            Err(_) => None,
        }
    }

    fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        each_socket!(self, s => s.try_write(buf))
    }

    fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each_socket!(self, s => s.poll_write_ready(cx))
    }

    fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        each_socket!(self, s => s.try_read(buf))
    }

    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each_socket!(self, s => s.poll_read_ready(cx))
    }

    /// Writes all of `buf`, waiting for the socket to become writable.
    fn poll_write_all(&self, cx: &mut Context<'_>, buf: &mut Bytes) -> Poll<io::Result<()>> {
        while !buf.is_empty() {
            match self.try_write(buf) {
                Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Ok(n) => buf.advance(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    ready!(self.poll_write_ready(cx))?;
                }
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        Poll::Ready(Ok(()))
    }
}

/// One `/send` frame, encoded once for every target (server frames are not
/// masked, so the bytes are the same for all of them).
#[derive(Debug, Clone)]
pub struct Encoded {
    pub bytes: Bytes,
    /// Payload length, for the byte counters.
    pub payload: usize,
}

impl Encoded {
    pub fn new(message: &Message) -> Encoded {
        let opcode = match message {
            Message::Binary(_) => OpCode::Data(Data::Binary),
            _ => OpCode::Data(Data::Text),
        };
        let payload = message.clone().into_data();
        let len = payload.len();
        let frame = Frame::message(payload, opcode, true);
        let mut out = Vec::with_capacity(frame.len());
        frame
            .format(&mut out)
            .expect("formatting into a Vec cannot fail");
        Encoded {
            bytes: out.into(),
            payload: len,
        }
    }
}

/// What became of a push offered to one session.
#[derive(Debug)]
pub enum Offer {
    /// Written onto the socket (perhaps partly: the session task writes the rest).
    Written,
    /// Put in the session's queue.
    Queued,
    /// The queue is full: the caller waits for room (see [`Outlet::release`]).
    Full,
    /// The session is closing or gone.
    Closed,
}

/// The per-session state behind the lock.
#[derive(Debug, Default)]
struct State {
    /// Set once the session has written its first frame; taken when it closes.
    socket: Option<Arc<RawSocket>>,
    /// Items put in the queue (or about to be) that the session task has not
    /// yet written out.
    queued: usize,
    /// The unwritten tail of a direct write, written before anything else.
    leftover: Bytes,
    /// tungstenite holds bytes it could not write yet.
    held: bool,
    /// No more pushes: the session is closing.
    closed: bool,
}

/// The shared write side of one connection.
#[derive(Debug, Default)]
pub struct Outlet {
    state: Mutex<State>,
}

impl Outlet {
    pub fn new() -> Outlet {
        Outlet::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().expect("outlet lock")
    }

    /// Writes `frame` onto the socket if nothing is ahead of it, else queues
    /// `outbound` through `tx` without waiting.
    pub fn offer(
        &self,
        frame: Option<&Encoded>,
        outbound: &Outbound,
        tx: &flume::Sender<Outbound>,
    ) -> Offer {
        let mut state = self.lock();
        if state.closed {
            return Offer::Closed;
        }
        let idle = state.queued == 0 && state.leftover.is_empty() && !state.held;
        if let (Some(frame), Some(socket), true) = (frame, &state.socket, idle) {
            let written = match socket.try_write(&frame.bytes) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
                // Broken: the session task will see it on its next read.
                Err(_) => return Offer::Closed,
            };
            if written == frame.bytes.len() {
                return Offer::Written;
            }
            // The session task writes the tail; a `Flush` wakes it.
            state.leftover = frame.bytes.slice(written..);
            return match tx.try_send(Outbound::Flush) {
                Ok(()) => {
                    state.queued += 1;
                    Offer::Written
                }
                Err(_) => Offer::Closed,
            };
        }
        match tx.try_send(outbound.clone()) {
            Ok(()) => {
                state.queued += 1;
                Offer::Queued
            }
            Err(flume::TrySendError::Full(_)) => {
                // Reserved now, so no direct write overtakes it while it waits.
                state.queued += 1;
                Offer::Full
            }
            Err(flume::TrySendError::Disconnected(_)) => Offer::Closed,
        }
    }

    /// `n` queued items were written out by the session task, or a push that
    /// waited for room gave up.
    pub fn release(&self, n: usize) {
        let mut state = self.lock();
        state.queued = state.queued.saturating_sub(n);
    }

    /// Lets pushes write directly to `socket` from now on.
    pub fn open(&self, socket: Arc<RawSocket>) {
        self.lock().socket = Some(socket);
    }

    /// Refuses further pushes; what was already accepted is still written.
    pub fn close(&self) {
        let mut state = self.lock();
        state.closed = true;
        state.socket = None;
    }
}

/// The stream tungstenite reads and writes: the shared socket, with every
/// write ordered behind the outlet's lock and any direct write's tail.
pub struct SharedStream {
    socket: Arc<RawSocket>,
    outlet: Arc<Outlet>,
    /// Bytes hyper read past the upgrade request. Dropped once read: an empty
    /// slice still pins hyper's whole read buffer (8 KiB) per connection.
    read_ahead: Option<Bytes>,
}

impl SharedStream {
    pub fn new(socket: Arc<RawSocket>, outlet: Arc<Outlet>, read_ahead: Bytes) -> SharedStream {
        SharedStream {
            socket,
            outlet,
            read_ahead: (!read_ahead.is_empty()).then_some(read_ahead),
        }
    }

    /// Writes the tail of a direct write, which goes before anything else.
    fn poll_leftover(&self, state: &mut State, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut leftover = std::mem::take(&mut state.leftover);
        let written = self.socket.poll_write_all(cx, &mut leftover);
        state.leftover = leftover;
        written
    }
}

impl AsyncRead for SharedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(ahead) = &mut this.read_ahead {
            let n = ahead.len().min(buf.remaining());
            buf.put_slice(&ahead.split_to(n));
            if ahead.is_empty() {
                this.read_ahead = None;
            }
            return Poll::Ready(Ok(()));
        }
        loop {
            ready!(this.socket.poll_read_ready(cx))?;
            match this.socket.try_read(buf.initialize_unfilled()) {
                Ok(n) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncWrite for SharedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let mut state = this.outlet.lock();
        let flushed = this.poll_leftover(&mut state, cx);
        if flushed.is_pending() {
            state.held = true;
        }
        ready!(flushed)?;
        loop {
            match this.socket.try_write(buf) {
                Ok(n) => {
                    // tungstenite keeps the rest; cleared by the flush that follows.
                    state.held |= n < buf.len();
                    return Poll::Ready(Ok(n));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if this.socket.poll_write_ready(cx)?.is_pending() {
                        state.held = true;
                        return Poll::Pending;
                    }
                }
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    /// Writes any direct write's tail; tungstenite flushes only once its own
    /// buffer is empty, so nothing is held back after this.
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let mut state = this.outlet.lock();
        ready!(this.poll_leftover(&mut state, cx))?;
        state.held = false;
        Poll::Ready(Ok(()))
    }

    /// The socket is closed when the session drops it.
    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Waker;
    use tokio::net::TcpListener;

    /// A connected loopback pair: our side as a `RawSocket`, and a peer that never reads.
    async fn pair() -> (Arc<RawSocket>, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let peer = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (ours, _) = listener.accept().await.unwrap();
        (Arc::new(RawSocket::Tcp(ours)), peer)
    }

    #[tokio::test]
    async fn pushes_queue_behind_bytes_tungstenite_holds_back() {
        let (socket, _peer) = pair().await;
        let outlet = Arc::new(Outlet::new());
        let (tx, rx) = flume::bounded(8);
        let message = Message::text("hi");
        let frame = Encoded::new(&message);
        assert_eq!(&frame.bytes[..], b"\x81\x02hi");
        let out = Outbound::Message(message);

        // Before the session opens the outlet, pushes queue.
        assert!(matches!(
            outlet.offer(Some(&frame), &out, &tx),
            Offer::Queued
        ));
        rx.try_recv().unwrap();
        outlet.release(1);
        outlet.open(socket.clone());
        // Idle and open: written directly.
        assert!(matches!(
            outlet.offer(Some(&frame), &out, &tx),
            Offer::Written
        ));
        assert!(rx.is_empty());

        // tungstenite writes until the socket refuses part of a write.
        let mut stream = SharedStream::new(socket, outlet.clone(), Bytes::new());
        let chunk = vec![0u8; 1 << 16];
        let mut cx = Context::from_waker(Waker::noop());
        while let Poll::Ready(Ok(n)) = Pin::new(&mut stream).poll_write(&mut cx, &chunk) {
            if n < chunk.len() {
                break;
            }
        }
        // Its unwritten bytes go first: a push must not slip in ahead of them.
        assert!(matches!(
            outlet.offer(Some(&frame), &out, &tx),
            Offer::Queued
        ));
        assert_eq!(rx.len(), 1);

        outlet.close();
        assert!(matches!(
            outlet.offer(Some(&frame), &out, &tx),
            Offer::Closed
        ));
    }
}
