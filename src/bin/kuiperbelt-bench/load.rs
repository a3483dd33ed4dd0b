//! Load generation: WebSocket clients bound to several 127.0.0.x source
//! addresses, keep-alive HTTP senders for `/send`, timestamped payloads and
//! latency histograms.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;

/// Connections per source address before the next 127.0.0.x is used: with
/// bind-before-connect the kernel searches for a free port per bind, which
/// slows down sharply as one address fills up.
const PER_SOURCE: usize = 4_000;

static ORIGIN: OnceLock<Instant> = OnceLock::new();

/// Next unused source address (last octet): every batch of connections gets
/// fresh addresses, so ports still in TIME_WAIT from an earlier scenario are
/// never in the way.
static NEXT_SOURCE: AtomicU64 = AtomicU64::new(2);

/// Nanoseconds since the bench started: the clock of every timestamp.
pub fn now_ns() -> u64 {
    ORIGIN.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// A message body: a 20-digit send timestamp, padded to the message size.
pub struct Payload;

impl Payload {
    pub fn stamped(size: usize) -> Bytes {
        let mut text = format!("{:020}", now_ns());
        while text.len() < size {
            text.push('x');
        }
        Bytes::from(text)
    }

    pub fn timestamp(body: &[u8]) -> Option<u64> {
        std::str::from_utf8(body.get(..20)?).ok()?.parse().ok()
    }
}

/// A latency histogram shared by many tasks (microseconds, 1 µs to 60 s).
pub struct Latencies(Mutex<Histogram<u64>>);

impl Default for Latencies {
    fn default() -> Self {
        Latencies(Mutex::new(
            Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds"),
        ))
    }
}

impl Latencies {
    pub fn record_since(&self, sent_ns: u64) {
        let micros = now_ns().saturating_sub(sent_ns) / 1_000;
        let _ = self.0.lock().expect("histogram lock").record(micros.max(1));
    }

    /// (p50, p99, p99.9) in milliseconds, and the sample count.
    pub fn percentiles_ms(&self) -> (f64, f64, f64, u64) {
        let h = self.0.lock().expect("histogram lock");
        let q = |p: f64| h.value_at_quantile(p) as f64 / 1000.0;
        (q(0.5), q(0.99), q(0.999), h.len())
    }
}

/// What the WebSocket clients saw.
#[derive(Default)]
pub struct ClientStats {
    pub frames: AtomicU64,
    pub sent: AtomicU64,
    pub latency: Latencies,
}

pub type Ws = WebSocketStream<TcpStream>;

/// Opens WebSocket `i` to the server, from 127.0.0.(`first_source` + i / PER_SOURCE).
pub async fn open(server: SocketAddr, i: usize, first_source: u64) -> Result<Ws> {
    let octet = first_source + (i / PER_SOURCE) as u64;
    let source = Ipv4Addr::new(
        127,
        0,
        0,
        u8::try_from(octet).context("out of 127.0.0.x source addresses")?,
    );
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::V4(SocketAddrV4::new(source, 0)))?;
    let stream = socket.connect(server).await?;
    stream.set_nodelay(true)?;
    let url = format!("ws://{server}/connect?id={i}");
    let (ws, _) = tokio_tungstenite::client_async(url, stream)
        .await
        .context("handshake")?;
    Ok(ws)
}

/// Opens `n` connections, `parallel` at a time; returns them and the time taken.
pub async fn open_many(
    server: SocketAddr,
    n: usize,
    parallel: usize,
) -> Result<(Vec<Ws>, Duration)> {
    let first_source = NEXT_SOURCE.fetch_add(n.div_ceil(PER_SOURCE) as u64, Ordering::Relaxed);
    let started = Instant::now();
    let results: Vec<Result<Ws>> = futures_util::stream::iter(0..n)
        .map(|i| open(server, i, first_source))
        .buffer_unordered(parallel)
        .collect()
        .await;
    let conns = results.into_iter().collect::<Result<Vec<_>>>()?;
    Ok((conns, started.elapsed()))
}

/// Runs every client until `stop`: counts frames and records latency from
/// each frame's timestamp; with `send_every`, also sends a timestamped
/// message of `size` bytes at that interval.
pub fn spawn_clients(
    conns: Vec<Ws>,
    stats: Arc<ClientStats>,
    send_every: Option<Duration>,
    size: usize,
    stop: CancellationToken,
) -> Vec<tokio::task::JoinHandle<()>> {
    conns
        .into_iter()
        .enumerate()
        .map(|(i, mut ws)| {
            let (stats, stop) = (stats.clone(), stop.clone());
            tokio::spawn(async move {
                let period = send_every.unwrap_or(Duration::from_secs(3600));
                // Stagger the first send so clients do not fire in lockstep.
                let offset = period.mul_f64((i % 1000) as f64 / 1000.0);
                let mut tick =
                    tokio::time::interval_at(tokio::time::Instant::now() + offset, period);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        msg = ws.next() => match msg {
                            Some(Ok(Message::Text(t))) => {
                                stats.frames.fetch_add(1, Ordering::Relaxed);
                                if let Some(sent) = Payload::timestamp(t.as_bytes()) {
                                    stats.latency.record_since(sent);
                                }
                            }
                            Some(Ok(_)) => {}
                            _ => break,
                        },
                        _ = tick.tick(), if send_every.is_some() => {
                            let body = Payload::stamped(size);
                            let text = String::from_utf8(body.to_vec()).expect("ASCII payload");
                            if ws.send(Message::text(text)).await.is_err() {
                                break;
                            }
                            stats.sent.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                let _ = ws.close(None).await;
            })
        })
        .collect()
}

/// One keep-alive HTTP/1.1 connection to the push API.
pub struct Sender {
    send: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    url: String,
}

impl Sender {
    pub async fn connect(server: SocketAddr) -> Result<Sender> {
        let stream = TcpStream::connect(server).await?;
        stream.set_nodelay(true)?;
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        Ok(Sender {
            send,
            url: format!("http://{server}/send"),
        })
    }

    /// `POST /send` to `targets` with a timestamped body; true when OK.
    pub async fn send(&mut self, targets: &[usize], size: usize) -> Result<bool> {
        let mut req = Request::post(&self.url).header("content-type", "text/plain");
        for t in targets {
            req = req.header("x-kuiperbelt-session", t.to_string());
        }
        let req = req.body(Full::new(Payload::stamped(size)))?;
        self.send.ready().await?;
        let res = self.send.send_request(req).await?;
        let ok = res.status().is_success();
        let body = res.into_body().collect().await?.to_bytes();
        Ok(ok && body.starts_with(b"{\"result\":\"OK\"}"))
    }
}
