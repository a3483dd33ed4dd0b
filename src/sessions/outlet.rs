//! The write side of one WebSocket connection, shared by its session task and
//! every push: the session's bounded queue, the bytes waiting for the wire,
//! and the order in which they reach it.
//!
//! A push is written straight onto the socket only when nothing is ahead of
//! it: no item in the queue, no bytes waiting in [`State::pending`].
//! Otherwise it goes into the queue, which the session task empties into
//! `pending` and writes. Everything that touches the socket's write side
//! (direct writes, and the session's writes of queued frames, pongs and
//! close frames) happens under one short per-connection lock, and nothing
//! under that lock blocks. The queue count is kept here and only here. A
//! session that negotiated permessage-deflate gets each frame's compressed
//! form ([`Encoded::wire`]).

use std::collections::VecDeque;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::socket::RawSocket;
use crate::frame::{Encoded, SessionDeflate};

/// What a push hands one session.
#[derive(Debug, Clone)]
pub(crate) enum Push {
    /// Write this frame.
    Message(Encoded),
    /// Write this frame if any, then close with 1000 (`POST /close`).
    Close(Option<Encoded>),
}

impl Push {
    /// The frame this push writes, if any.
    pub(crate) fn frame(&self) -> Option<&Encoded> {
        match self {
            Push::Message(frame) => Some(frame),
            Push::Close(frame) => frame.as_ref(),
        }
    }

    /// The same push with its frame (if any) replaced by `f(frame)`.
    pub(crate) fn map_frame(self, f: impl FnOnce(Encoded) -> Encoded) -> Push {
        match self {
            Push::Message(frame) => Push::Message(f(frame)),
            Push::Close(frame) => Push::Close(frame.map(f)),
        }
    }
}

/// An item of the session's queue.
#[derive(Debug)]
enum Item {
    Push(Push),
    /// Wakes the session task to write the tail of a direct write.
    Flush,
}

/// What became of a push offered to one session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Offer {
    /// Written onto the socket (perhaps partly: the session task writes the rest).
    Written,
    /// Put in the session's queue.
    Queued,
    /// The queue is full (and stayed full up to `send_timeout` when waited on).
    Full,
    /// The session is closing or gone.
    Closed,
}

/// A place in the queue reserved by [`Offer::Full`], given back when its
/// wait is dropped before it ends.
struct Reserved<'a>(Option<&'a Outlet>);

impl Drop for Reserved<'_> {
    fn drop(&mut self) {
        if let Some(outlet) = self.0 {
            let mut state = outlet.lock();
            state.queued = state.queued.saturating_sub(1);
        }
    }
}

/// The per-connection state behind the lock.
#[derive(Debug, Default)]
struct State {
    /// The socket, from the upgrade until the session ends.
    socket: Option<Arc<RawSocket>>,
    /// Pushes may write directly (set once the first message is out).
    open: bool,
    /// Items in the queue, or reserved for it by a push waiting for room,
    /// that the session task has not yet moved to `pending`.
    queued: usize,
    /// Bytes accepted for the wire, in order, not yet written.
    pending: VecDeque<Bytes>,
    /// No more pushes: the session is closing.
    closed: bool,
    /// The session takes nothing more from its queue: an item that gets in
    /// now is never written.
    sealed: bool,
    /// Bytes of frames in the queue (not yet in `pending`), for `/sessions`.
    queued_bytes: usize,
}

impl State {
    fn idle(&self) -> bool {
        self.open && self.queued == 0 && self.pending.is_empty()
    }
}

/// The shared write side of one connection.
#[derive(Debug)]
pub(crate) struct Outlet {
    state: Mutex<State>,
    /// A flume sender: its bounded channel allocates nothing until an item
    /// waits (tokio's allocates a 32-slot block, ~2.5 KiB, per channel).
    tx: flume::Sender<Item>,
    /// When bytes last reached the socket, in milliseconds of [`clock`].
    last_write: AtomicU64,
    /// Frames written to the socket so far.
    written: AtomicU64,
    /// What the session negotiated for compressed frames, if it did.
    deflate: Option<SessionDeflate>,
}

/// The session task's end of an outlet: its queue and the writes it makes.
pub(crate) struct Mailbox {
    outlet: Arc<Outlet>,
    /// Waits for the next item without allocating per wait.
    stream: flume::r#async::RecvStream<'static, Item>,
    /// The same queue, for non-blocking reads and its length.
    rx: flume::Receiver<Item>,
}

/// A new outlet whose queue holds `capacity` items, and its mailbox.
pub(crate) fn channel(capacity: usize, deflate: Option<SessionDeflate>) -> (Arc<Outlet>, Mailbox) {
    let (tx, rx) = flume::bounded(capacity);
    let outlet = Arc::new(Outlet {
        state: Mutex::new(State::default()),
        tx,
        last_write: AtomicU64::new(clock()),
        written: AtomicU64::new(0),
        deflate,
    });
    let mailbox = Mailbox {
        outlet: outlet.clone(),
        stream: rx.clone().into_stream(),
        rx,
    };
    (outlet, mailbox)
}

/// The instant write timestamps count from.
fn base() -> Instant {
    static BASE: OnceLock<Instant> = OnceLock::new();
    *BASE.get_or_init(Instant::now)
}

/// Milliseconds since [`base`]: a cheap, monotonic write timestamp.
fn clock() -> u64 {
    base().elapsed().as_millis() as u64
}

impl Outlet {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().expect("outlet lock")
    }

    /// Whether the session negotiated permessage-deflate.
    pub(crate) fn deflated(&self) -> bool {
        self.deflate.is_some()
    }

    fn wrote(&self) {
        self.last_write.store(clock(), Ordering::Relaxed);
    }

    /// Writes the push's frame onto the socket if nothing is ahead of it,
    /// else queues the push without waiting.
    pub(crate) fn offer(&self, push: &Push) -> Offer {
        if let Push::Message(frame) = push {
            // Compressed (if this session wants it) before the lock is taken.
            frame.prepare(self.deflate.as_ref());
        }
        let mut state = self.lock();
        if state.closed {
            return Offer::Closed;
        }
        if let (Push::Message(frame), true) = (push, state.idle()) {
            let socket = state.socket.as_ref().expect("an open outlet has a socket");
            let bytes = frame.wire(self.deflate.as_ref());
            let written = match socket.try_write(bytes) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
                // Broken: the session task will see it on its next read.
                Err(_) => return Offer::Closed,
            };
            if written > 0 {
                self.wrote();
            }
            if written == bytes.len() {
                self.written.fetch_add(1, Ordering::Relaxed);
                return Offer::Written;
            }
            // The session task writes the tail; a `Flush` wakes it.
            state.pending.push_back(bytes.slice(written..));
            return match self.tx.try_send(Item::Flush) {
                Ok(()) => {
                    state.queued += 1;
                    self.written.fetch_add(1, Ordering::Relaxed);
                    Offer::Written
                }
                Err(_) => Offer::Closed,
            };
        }
        match self.tx.try_send(Item::Push(push.clone())) {
            Ok(()) => {
                state.queued += 1;
                state.queued_bytes += push.frame().map_or(0, |f| f.bytes.len());
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

    /// After [`Offer::Full`]: waits up to `limit` (`None`: no limit) for room
    /// in the queue; `Queued`, `Full` (timed out) or `Closed`.
    pub(crate) async fn wait_room(&self, push: Push, limit: Option<Duration>) -> Offer {
        let len = push.frame().map_or(0, |f| f.bytes.len());
        // Dropped before it ends (its task was stopped), the wait still
        // gives back the place `offer` reserved.
        let mut reserved = Reserved(Some(self));
        let send = self.tx.send_async(Item::Push(push));
        let result = match limit {
            Some(limit) => match tokio::time::timeout(limit, send).await {
                Ok(sent) => sent.map_err(|_| Offer::Closed),
                Err(_) => Err(Offer::Full),
            },
            None => send.await.map_err(|_| Offer::Closed),
        };
        reserved.0 = None;
        match result {
            Ok(()) => {
                let mut state = self.lock();
                state.queued_bytes += len;
                if state.sealed {
                    Offer::Closed
                } else {
                    Offer::Queued
                }
            }
            Err(offer) => {
                // Give back the place `offer` reserved.
                let mut state = self.lock();
                state.queued = state.queued.saturating_sub(1);
                offer
            }
        }
    }

    /// When bytes last reached the socket.
    pub(crate) fn last_write(&self) -> Instant {
        base() + Duration::from_millis(self.last_write.load(Ordering::Relaxed))
    }

    /// Frames written so far, and bytes waiting to be.
    pub(crate) fn counts(&self) -> (u64, usize) {
        let state = self.lock();
        let pending: usize = state.pending.iter().map(|b| b.len()).sum();
        (
            self.written.load(Ordering::Relaxed),
            state.queued_bytes + pending,
        )
    }
}

/// A queue item the session task has taken but not yet written.
#[derive(Debug)]
pub(crate) struct Next(Item);

/// What the session task took from its queue and wrote.
#[derive(Debug, Default)]
pub(crate) struct Batch {
    /// Frames written.
    pub(crate) frames: usize,
    /// Their payload bytes.
    pub(crate) bytes: u64,
    /// The batch ended with `POST /close`: close the connection now.
    pub(crate) close: bool,
}

impl Mailbox {
    /// Hands the session's socket to the outlet; pushes still queue until
    /// [`Mailbox::open`].
    pub(crate) fn attach(&self, socket: Arc<RawSocket>) {
        self.outlet.lock().socket = Some(socket);
    }

    /// Lets pushes write directly from now on.
    pub(crate) fn open(&self) {
        self.outlet.lock().open = true;
    }

    /// Refuses further pushes; what was already accepted is still written.
    pub(crate) fn close(&self) {
        self.outlet.lock().closed = true;
    }

    /// The session takes nothing more from its queue after what
    /// [`Mailbox::try_take`] still finds: a push waiting for room that gets
    /// in later is answered "closed".
    pub(crate) fn seal(&self) {
        let mut state = self.outlet.lock();
        state.closed = true;
        state.sealed = true;
    }

    /// Items waiting in the queue.
    pub(crate) fn len(&self) -> usize {
        self.rx.len()
    }

    /// Waits for the next queued item (the queue lives as long as the
    /// mailbox, so this ends only with it).
    pub(crate) async fn next(&mut self) -> Option<Next> {
        use futures_util::StreamExt;
        self.stream.next().await.map(Next)
    }

    /// Moves `item` into `pending`; counts it in `batch`.
    fn take(state: &mut State, item: Item, deflate: Option<&SessionDeflate>, batch: &mut Batch) {
        state.queued = state.queued.saturating_sub(1);
        match item {
            Item::Flush => {}
            Item::Push(push) => {
                if let Some(frame) = push.frame() {
                    state.pending.push_back(frame.wire(deflate).clone());
                    state.queued_bytes = state.queued_bytes.saturating_sub(frame.bytes.len());
                    batch.frames += 1;
                    batch.bytes += frame.payload as u64;
                }
                batch.close |= matches!(push, Push::Close(_));
            }
        }
    }

    /// `frames` queued frames were written out.
    pub(crate) fn written(&self, frames: u64) {
        self.outlet.written.fetch_add(frames, Ordering::Relaxed);
    }

    /// Moves `first` and up to `max` queued items (stopping after a close)
    /// into the pending bytes, for [`Mailbox::write_pending`].
    pub(crate) fn take_batch(&mut self, first: Option<Next>, max: usize) -> Batch {
        let mut batch = Batch::default();
        let deflate = self.outlet.deflate.as_ref();
        let mut state = self.outlet.lock();
        if let Some(Next(item)) = first {
            Self::take(&mut state, item, deflate, &mut batch);
        }
        while batch.frames < max && !batch.close {
            match self.rx.try_recv() {
                Ok(item) => Self::take(&mut state, item, deflate, &mut batch),
                Err(_) => break,
            }
        }
        batch
    }

    /// Writes `frame` ahead of everything (the connect callback's first message).
    pub(crate) async fn write_first(&mut self, frame: &Encoded) -> io::Result<()> {
        let bytes = frame.wire(self.outlet.deflate.as_ref()).clone();
        self.outlet.lock().pending.push_front(bytes);
        self.write_pending().await
    }

    /// Writes a control frame (a pong, a close) after the bytes already
    /// accepted for the wire, ahead of what is still queued.
    pub(crate) async fn write_control(&self, frame: Bytes) -> io::Result<()> {
        self.outlet.lock().pending.push_back(frame);
        self.write_pending().await
    }

    /// Whether the session negotiated permessage-deflate.
    pub(crate) fn deflated(&self) -> bool {
        self.outlet.deflated()
    }

    /// Sends FIN, then reads and discards what the peer still sends until it
    /// closes or `limit` passes, so closing the socket does not reset the
    /// connection (which can destroy a close frame the peer has not read).
    pub(crate) async fn linger(&self, limit: Duration) {
        let Some(socket) = self.outlet.lock().socket.clone() else {
            return;
        };
        socket.shutdown_write();
        let _ = tokio::time::timeout(limit, socket.discard_reads()).await;
    }

    /// Writes every pending byte, waiting for the socket as needed.
    pub(crate) async fn write_pending(&self) -> io::Result<()> {
        let outlet = &self.outlet;
        std::future::poll_fn(|cx| {
            let mut state = outlet.lock();
            let state = &mut *state;
            let Some(socket) = state.socket.clone() else {
                return Poll::Ready(Err(io::ErrorKind::NotConnected.into()));
            };
            let written = socket.poll_write_all(cx, &mut state.pending);
            if written.is_ready() {
                outlet.wrote();
            }
            written
        })
        .await
    }

    /// Takes one queued push without waiting (for the final drain of the queue).
    pub(crate) fn try_take(&mut self) -> Option<Push> {
        loop {
            let item = self.rx.try_recv().ok()?;
            let mut state = self.outlet.lock();
            state.queued = state.queued.saturating_sub(1);
            if let Item::Push(push) = item {
                return Some(push);
            }
        }
    }

    /// When bytes last reached the socket.
    pub(crate) fn last_write(&self) -> Instant {
        self.outlet.last_write()
    }
}

impl Drop for Mailbox {
    /// Lets go of the socket: a push still holding this outlet must not keep
    /// the file descriptor open.
    fn drop(&mut self) {
        let mut state = self.outlet.lock();
        state.closed = true;
        state.sealed = true;
        state.socket = None;
        state.pending.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::{TcpListener, TcpStream};

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
    async fn pushes_queue_behind_the_tail_of_a_direct_write() {
        let (socket, _peer) = pair().await;
        let (outlet, mut mailbox) = channel(8, None);
        let frame = crate::frame::encode(None, Bytes::from_static(b"hi")).unwrap();
        assert_eq!(&frame.bytes[..], b"\x81\x02hi");
        let push = Push::Message(frame);

        // Before the session opens the outlet, pushes queue.
        assert_eq!(outlet.offer(&push), Offer::Queued);
        mailbox.attach(socket.clone());
        let batch = mailbox.take_batch(None, 8);
        assert_eq!(batch.frames, 1);
        mailbox.write_pending().await.unwrap();
        assert_eq!(mailbox.len(), 0);
        mailbox.open();
        // Idle and open: written directly.
        assert_eq!(outlet.offer(&push), Offer::Written);
        assert_eq!(mailbox.len(), 0);

        // A frame larger than the socket takes is written in part; the
        // session task writes its tail.
        let big = crate::frame::binary(&vec![0u8; 16 << 20]);
        assert_eq!(outlet.offer(&Push::Message(big)), Offer::Written);
        assert_eq!(mailbox.len(), 1, "a flush for the tail");
        // The tail goes first: a push must not slip in ahead of it.
        assert_eq!(outlet.offer(&push), Offer::Queued);
        assert_eq!(mailbox.len(), 2);

        mailbox.close();
        assert_eq!(outlet.offer(&push), Offer::Closed);
    }

    #[tokio::test]
    async fn a_full_queue_is_reserved_then_released_on_timeout() {
        let (socket, _peer) = pair().await;
        let (outlet, mailbox) = channel(1, None);
        mailbox.attach(socket);
        let push = Push::Message(crate::frame::encode(None, Bytes::from_static(b"x")).unwrap());
        assert_eq!(outlet.offer(&push), Offer::Queued);
        assert_eq!(outlet.offer(&push), Offer::Full);
        let waited = outlet
            .wait_room(push.clone(), Some(Duration::from_millis(20)))
            .await;
        assert_eq!(waited, Offer::Full);
        assert_eq!(outlet.lock().queued, 1, "the reservation is given back");
        // A wait stopped before it ends gives it back too.
        assert_eq!(outlet.offer(&push), Offer::Full);
        let stopped = tokio::time::timeout(
            Duration::from_millis(20),
            outlet.wait_room(push.clone(), None),
        )
        .await;
        assert!(stopped.is_err());
        assert_eq!(outlet.lock().queued, 1, "a dropped wait gives it back");
    }
}
