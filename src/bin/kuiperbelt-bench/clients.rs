//! The WebSocket clients: opening many connections from several loopback
//! source addresses (offering permessage-deflate when asked to), then
//! running each one (counting frames and the bytes they took on the wire,
//! inflating compressed ones, recording delivery latency, and optionally
//! sending timestamped messages at a rate).

use std::cell::RefCell;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::BytesMut;
use flate2::{Decompress, FlushDecompress};
use futures_util::{SinkExt, StreamExt};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpSocket, TcpStream};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::Utf8Bytes;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::stats::{self, LatencyPair};

/// Connections per source address (the ephemeral range holds ~28,000 ports
/// per address; staying well below it leaves room for TIME_WAIT).
const PER_SOURCE: usize = 4_000;

/// Read buffer of each client: frames here are small, and tungstenite's
/// 128 KiB default would cost the bench gigabytes at 19,000 connections.
const CLIENT_READ_BUFFER: usize = 4096;

pub type Ws = WebSocketStream<TcpStream>;

/// Whether new connections offer permessage-deflate (`--deflate`, and the
/// compression scenario's "on" phases).
static OFFER_DEFLATE: AtomicBool = AtomicBool::new(false);

/// Connections opened from now on offer permessage-deflate, or not.
pub fn offer_deflate(on: bool) {
    OFFER_DEFLATE.store(on, Ordering::Relaxed);
}

/// What the clients saw.
#[derive(Default)]
pub struct ClientStats {
    /// Frames received.
    pub frames: AtomicU64,
    /// Of them, compressed (RSV1 set).
    pub compressed: AtomicU64,
    /// Bytes read from the server, headers included.
    pub wire_bytes: AtomicU64,
    /// Messages sent by clients (receive scenario).
    pub sent: AtomicU64,
    /// Set to stop clients sending while they stay connected.
    pub quiet: AtomicBool,
    /// Delivery latency of received frames.
    pub latency: LatencyPair,
}

/// Opened connections and how long opening them took.
pub struct Opened {
    pub conns: Vec<Ws>,
    pub took: Duration,
}

/// Opens `n` connections, `parallel` handshakes at a time, within `limit`.
/// Connection `i` asks for session id `first + i * step` (`/connect?id=...`) and binds
/// 127.A.B.(1 + i / PER_SOURCE), with A and B random per call so that sockets
/// still in TIME_WAIT from an earlier run never collide with new ones.
pub async fn open_many(
    server: SocketAddr,
    n: usize,
    (first, step): (usize, usize),
    parallel: usize,
    limit: Duration,
) -> Result<Opened> {
    let base = (fastrand::u8(1..=254), fastrand::u8(0..=255));
    let next = Arc::new(AtomicUsize::new(0));
    let opened: Arc<Mutex<Vec<Option<Ws>>>> = Arc::new(Mutex::new((0..n).map(|_| None).collect()));
    let first_error: Arc<Mutex<Option<String>>> = Arc::default();
    let started = Instant::now();
    let workers: Vec<JoinHandle<()>> = (0..parallel.clamp(1, n.max(1)))
        .map(|_| {
            let (next, opened, first_error) = (next.clone(), opened.clone(), first_error.clone());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        return;
                    }
                    let source = Ipv4Addr::new(127, base.0, base.1, 1 + (i / PER_SOURCE) as u8);
                    match open(server, source, first + i * step).await {
                        Ok(ws) => opened.lock().expect("lock")[i] = Some(ws),
                        Err(e) => {
                            first_error
                                .lock()
                                .expect("lock")
                                .get_or_insert(format!("connection {i}: {e:#}"));
                            next.store(n, Ordering::Relaxed);
                            return;
                        }
                    }
                }
            })
        })
        .collect();
    let all = async {
        for w in workers {
            let _ = w.await;
        }
    };
    if tokio::time::timeout(limit, all).await.is_err() {
        next.store(n, Ordering::Relaxed);
        bail!("opening {n} connections took longer than {limit:?}");
    }
    let took = started.elapsed();
    if let Some(e) = first_error.lock().expect("lock").take() {
        bail!("opening {n} connections failed: {e}");
    }
    let conns: Vec<Ws> = std::mem::take(&mut *opened.lock().expect("lock"))
        .into_iter()
        .flatten()
        .collect();
    if conns.len() != n {
        bail!("opened {} of {n} connections", conns.len());
    }
    Ok(Opened { conns, took })
}

/// Opens `n` connections all at once (every task starts its handshake at
/// the same instant) and records each one's time from `connect()` to the
/// end of the handshake in `latency`; returns the connections.
pub async fn storm(
    server: SocketAddr,
    n: usize,
    latency: Arc<stats::Latencies>,
    limit: Duration,
) -> Result<Opened> {
    let base = (fastrand::u8(1..=254), fastrand::u8(0..=255));
    let start = Arc::new(tokio::sync::Barrier::new(n + 1));
    let tasks: Vec<JoinHandle<Result<Ws>>> = (0..n)
        .map(|i| {
            let (start, latency) = (start.clone(), latency.clone());
            tokio::spawn(async move {
                let source = Ipv4Addr::new(127, base.0, base.1, 1 + (i / PER_SOURCE) as u8);
                start.wait().await;
                let began = stats::now_ns();
                let ws = open(server, source, i).await?;
                latency.record_since(i, began);
                Ok(ws)
            })
        })
        .collect();
    start.wait().await;
    let started = Instant::now();
    let mut conns = Vec::with_capacity(n);
    let all = async {
        for t in tasks {
            conns.push(t.await??);
        }
        anyhow::Ok(())
    };
    tokio::time::timeout(limit, all)
        .await
        .map_err(|_| anyhow::anyhow!("a storm of {n} connections took longer than {limit:?}"))??;
    Ok(Opened {
        conns,
        took: started.elapsed(),
    })
}

/// One WebSocket from `source` to the server, through the connect callback.
async fn open(server: SocketAddr, source: Ipv4Addr, id: usize) -> Result<Ws> {
    let socket = TcpSocket::new_v4()?;
    socket
        .bind(SocketAddr::V4(SocketAddrV4::new(source, 0)))
        .with_context(|| format!("bind {source}"))?;
    let stream = socket.connect(server).await.context("connect")?;
    stream.set_nodelay(true)?;
    let config = WebSocketConfig::default().read_buffer_size(CLIENT_READ_BUFFER);
    let mut request = format!("ws://{server}/connect?id={id}").into_client_request()?;
    if OFFER_DEFLATE.load(Ordering::Relaxed) {
        request.headers_mut().insert(
            "Sec-WebSocket-Extensions",
            http::HeaderValue::from_static("permessage-deflate; client_max_window_bits"),
        );
    }
    let (ws, _) = tokio_tungstenite::client_async_with_config(request, stream, Some(config))
        .await
        .context("handshake")?;
    Ok(ws)
}

/// Reads frames on every connection until aborted: counts text and binary
/// frames and the bytes read, inflates compressed ones and records their
/// latency. Reads the socket directly and parses the (unmasked,
/// unfragmented) server frames itself: tungstenite's reader costs the load
/// generator more CPU per frame than the server's writer, and cannot read
/// compressed frames.
pub fn spawn_readers(conns: Vec<Ws>, stats: Arc<ClientStats>) -> Vec<JoinHandle<()>> {
    conns
        .into_iter()
        .enumerate()
        .map(|(i, ws)| {
            let stats = stats.clone();
            tokio::spawn(async move {
                let mut tcp = ws.into_inner();
                let mut buf = BytesMut::with_capacity(CLIENT_READ_BUFFER);
                loop {
                    let read = match tcp.read_buf(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    // Counted once per read: a shared counter per frame would
                    // bounce its cache line between the bench's threads.
                    let (mut frames, mut compressed, mut closed) = (0, 0, false);
                    while let Some(frame) = next_frame(&mut buf) {
                        match frame {
                            Frame::Data {
                                payload,
                                rsv1: false,
                            } => {
                                frames += 1;
                                stats.latency.record(i, &payload);
                            }
                            Frame::Data {
                                payload,
                                rsv1: true,
                            } => {
                                frames += 1;
                                compressed += 1;
                                stats.latency.record(i, &inflate(&payload));
                            }
                            Frame::Close => {
                                closed = true;
                                break;
                            }
                            Frame::Other => {}
                        }
                    }
                    stats.frames.fetch_add(frames, Ordering::Relaxed);
                    stats.wire_bytes.fetch_add(read as u64, Ordering::Relaxed);
                    if compressed > 0 {
                        stats.compressed.fetch_add(compressed, Ordering::Relaxed);
                    }
                    if closed {
                        return;
                    }
                    if buf.capacity() - buf.len() < CLIENT_READ_BUFFER / 4 {
                        buf.reserve(CLIENT_READ_BUFFER);
                    }
                }
            })
        })
        .collect()
}

enum Frame {
    /// A text or binary frame; `rsv1`: compressed.
    Data {
        payload: BytesMut,
        rsv1: bool,
    },
    Close,
    Other,
}

thread_local! {
    static DECOMPRESSOR: RefCell<Decompress> = RefCell::new(Decompress::new(false));
}

/// A compressed message's payload inflated (RFC 7692: each message on its
/// own, the server keeps no context).
fn inflate(payload: &[u8]) -> Vec<u8> {
    DECOMPRESSOR.with(|d| {
        let mut d = d.borrow_mut();
        d.reset(false);
        let input = [payload, &[0, 0, 0xff, 0xff]].concat();
        let mut out = Vec::with_capacity(payload.len() * 8 + 64);
        loop {
            let read = d.total_in() as usize;
            let status = d.decompress_vec(&input[read..], &mut out, FlushDecompress::Sync);
            let all_in = d.total_in() as usize == input.len();
            if status.is_err() || (all_in && out.len() < out.capacity()) {
                break;
            }
            out.reserve(out.capacity());
        }
        out
    })
}

/// Takes one complete server frame off the front of `buf`, if there is one.
fn next_frame(buf: &mut BytesMut) -> Option<Frame> {
    if buf.len() < 2 {
        return None;
    }
    let opcode = buf[0] & 0x0f;
    let rsv1 = buf[0] & 0x40 != 0;
    let masked = buf[1] & 0x80 != 0;
    let (len, header) = match buf[1] & 0x7f {
        126 => (u16::from_be_bytes([*buf.get(2)?, *buf.get(3)?]) as usize, 4),
        127 => (
            u64::from_be_bytes(buf.get(2..10)?.try_into().ok()?) as usize,
            10,
        ),
        n => (n as usize, 2),
    };
    let header = header + if masked { 4 } else { 0 };
    if buf.len() < header + len {
        buf.reserve(header + len - buf.len());
        return None;
    }
    let mut frame = buf.split_to(header + len);
    let payload = frame.split_off(header);
    Some(match opcode {
        1 | 2 => Frame::Data { payload, rsv1 },
        8 => Frame::Close,
        _ => Frame::Other,
    })
}

/// Runs every client until aborted, each sending a message of `size` bytes
/// every `send_every` (until `stats.quiet` is set), stamped with its actual
/// and its scheduled send time (so time a client spends blocked by
/// backpressure shows too); missed sends are caught up in a burst, keeping
/// the offered rate. Frames the server sends are counted.
pub fn spawn_senders(
    conns: Vec<Ws>,
    stats: Arc<ClientStats>,
    send_every: Duration,
    size: usize,
) -> Vec<JoinHandle<()>> {
    let count = conns.len().max(1);
    conns
        .into_iter()
        .enumerate()
        .map(|(i, mut ws)| {
            let stats = stats.clone();
            tokio::spawn(async move {
                // Spread first sends evenly so clients do not fire in lockstep.
                let offset = send_every.mul_f64(i as f64 / count as f64);
                let mut tick =
                    tokio::time::interval_at(tokio::time::Instant::now() + offset, send_every);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
                loop {
                    tokio::select! {
                        msg = ws.next() => match msg {
                            Some(Ok(Message::Text(_) | Message::Binary(_))) => {
                                stats.frames.fetch_add(1, Ordering::Relaxed);
                            }
                            Some(Ok(_)) => {}
                            _ => return,
                        },
                        due = tick.tick() => {
                            if stats.quiet.load(Ordering::Relaxed) {
                                continue;
                            }
                            let body = stats::payload(size, stats::now_ns(), Some(stats::ns_at(due.into_std())));
                            let text = Utf8Bytes::try_from(body).expect("ASCII payload");
                            if ws.send(Message::Text(text)).await.is_err() {
                                return;
                            }
                            stats.sent.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_parsed_across_reads() {
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&[0x81, 3, b'a', b'b']);
        assert!(next_frame(&mut buf).is_none());
        buf.extend_from_slice(&[b'c', 0x82, 126, 0, 200]);
        assert!(
            matches!(next_frame(&mut buf), Some(Frame::Data { payload, rsv1: false }) if &payload[..] == b"abc")
        );
        assert!(next_frame(&mut buf).is_none());
        buf.extend_from_slice(&[7; 200]);
        assert!(
            matches!(next_frame(&mut buf), Some(Frame::Data { payload, .. }) if payload.len() == 200)
        );
        // A compressed "abc" (RSV1).
        buf.extend_from_slice(&[0xc1, 5, 0x4a, 0x4c, 0x4a, 0x06, 0x00]);
        match next_frame(&mut buf) {
            Some(Frame::Data {
                payload,
                rsv1: true,
            }) => assert_eq!(inflate(&payload), b"abc"),
            _ => panic!("a compressed frame"),
        }
        buf.extend_from_slice(&[0x89, 0, 0x88, 2, 3, 232]);
        assert!(matches!(next_frame(&mut buf), Some(Frame::Other)));
        assert!(matches!(next_frame(&mut buf), Some(Frame::Close)));
        assert!(buf.is_empty());
    }
}
