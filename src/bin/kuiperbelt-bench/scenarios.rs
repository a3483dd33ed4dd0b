//! The scenarios: idle (handshakes, memory and CPU per connection), push
//! (unicast, fanout, and the unicast sweep at fixed offered rates), channel
//! (channel pushes beside header fan-out, on one node and three), receive
//! (client messages forwarded to the app), storm, outage, cluster and
//! compression (fanout with permessage-deflate on and off). Each returns
//! JSON rows.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Result};
use serde_json::{json, Value};
use tokio::time::Instant;

use crate::app::{self, App};
use crate::clients::{self, ClientStats};
use crate::sender::{self, Sender, To};
use crate::stats;
use crate::target::{ServerSettings, Target, Usage};
use crate::Args;

/// Opening the connections of one scenario may take this long at most.
const OPEN_LIMIT: Duration = Duration::from_secs(120);
/// After the load stops, frames and callbacks still in flight get this long.
const GRACE: Duration = Duration::from_secs(5);
/// File descriptors the bench keeps for itself beyond its client sockets
/// (the fake app's callback connections, senders, /proc reads).
const FD_MARGIN: u64 = 600;

/// A server under test, its fake app, and where to reach the server; in
/// the cluster scenario also the other node and the NATS server.
pub struct Run {
    pub target: Target,
    pub addr: SocketAddr,
    pub app: Arc<App>,
    pub peers: Vec<Target>,
    pub nats: Option<Nats>,
}

impl Run {
    /// Every server process under test, for CPU accounting.
    pub fn pids(&self) -> Vec<u32> {
        let mut pids = vec![self.target.pid()];
        pids.extend(self.peers.iter().map(Target::pid));
        pids.extend(self.nats.as_ref().map(|n| n.child.id()));
        pids
    }
}

/// A `nats-server` on loopback, killed when dropped.
pub struct Nats {
    child: std::process::Child,
    port: u16,
}

impl Nats {
    async fn start(binary: &str) -> Result<Nats> {
        let port = crate::target::free_port()?;
        let child = std::process::Command::new(binary)
            .args(["-a", "127.0.0.1", "-p", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .map_err(|e| {
                anyhow::anyhow!(
                    "starting {binary}: {e} (apt install nats-server, or --nats-server PATH)"
                )
            })?;
        let nats = Nats { child, port };
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return Ok(nats);
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        bail!("nats-server did not listen on {port}")
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub async fn setup(args: &Args, connections: usize) -> Result<Run> {
    setup_with(args, connections, String::new()).await
}

/// A cluster of `nodes` nodes and a fresh `nats-server`, sharing one fake
/// app; `run.addr` is the first node, and the addresses of all come back.
async fn cluster_run(
    args: &Args,
    connections: usize,
    nodes: usize,
) -> Result<(Run, Vec<SocketAddr>)> {
    let nats = Nats::start(&args.nats_server).await?;
    let yaml = format!(
        "cluster:\n  nats:\n    url: nats://127.0.0.1:{}\n  subject_prefix: bench{}\n",
        nats.port,
        fastrand::u32(..)
    );
    let mut run = setup_with(args, connections, yaml.clone()).await?;
    let settings = ServerSettings {
        send_queue_size: args.queue,
        send_timeout_ms: args.send_timeout_ms,
        extra_yaml: yaml,
    };
    let mut addrs = vec![run.addr];
    for _ in 1..nodes {
        let peer = Target::start(args.server_cmd.as_deref(), run.app.port, &settings).await?;
        addrs.push(SocketAddr::from(([127, 0, 0, 1], peer.port)));
        run.peers.push(peer);
    }
    run.nats = Some(nats);
    Ok((run, addrs))
}

async fn setup_with(args: &Args, connections: usize, extra_yaml: String) -> Result<Run> {
    let (soft, _) = rlimit::getrlimit(rlimit::Resource::NOFILE)?;
    if connections as u64 + FD_MARGIN > soft {
        bail!(
            "{connections} connections need about {} file descriptors; this process may open {soft} \
             (raise the hard limit, `ulimit -Hn`, or lower --connections)",
            connections as u64 + FD_MARGIN
        );
    }
    let app = app::start().await?;
    let app_port = app.port;
    let settings = ServerSettings {
        send_queue_size: args.queue,
        send_timeout_ms: args.send_timeout_ms,
        extra_yaml,
    };
    let target = Target::start(args.server_cmd.as_deref(), app_port, &settings).await?;
    let addr = SocketAddr::from(([127, 0, 0, 1], target.port));
    Ok(Run {
        target,
        addr,
        app,
        peers: Vec::new(),
        nats: None,
    })
}

fn round(x: f64) -> i64 {
    x.round() as i64
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn per_100k(cpu: f64, count: u64) -> Value {
    if count == 0 {
        Value::Null
    } else {
        json!(round2(cpu / count as f64 * 1e5))
    }
}

/// `latency_ms_*` from the actual send time; with `scheduled`, also
/// `sched_latency_ms_*` from the scheduled one (open-loop load).
fn latency(fields: &mut Value, l: &stats::LatencyPair, scheduled: bool) {
    let sent = l.sent.summary();
    fields["latency_samples"] = json!(sent.count);
    let mut kinds = vec![("latency_ms", sent)];
    if scheduled {
        kinds.push(("sched_latency_ms", l.scheduled.summary()));
    }
    for (prefix, s) in kinds {
        for (name, ms) in [
            ("p50", s.p50),
            ("p99", s.p99),
            ("p999", s.p999),
            ("max", s.max),
        ] {
            fields[format!("{prefix}_{name}")] = json!(round2(ms));
        }
    }
}

/// Opens N connections and leaves them idle.
pub async fn idle(args: &Args) -> Result<Vec<Value>> {
    let n = args.connections.unwrap_or(19_000);
    let mut run = setup(args, n).await?;
    if args.memberships > 0 {
        run.app.channel_size.store(100, Ordering::Relaxed);
        run.app
            .memberships
            .store(args.memberships as u64, Ordering::Relaxed);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_before = run.target.rss_kib()?;
    let usage = Usage::now(&run.pids())?;
    let opened = clients::open_many(run.addr, n, (0, 1), args.parallel, OPEN_LIMIT).await?;
    let spent = usage.since(&run.pids())?;
    let took = opened.took.as_secs_f64();
    // Let allocators and the callback pool settle before reading RSS.
    tokio::time::sleep(Duration::from_secs(2)).await;
    run.target.check_alive()?;
    let rss_after = run.target.rss_kib()?;
    let quiet = Usage::now(&run.pids())?;
    tokio::time::sleep(Duration::from_secs(args.idle_seconds)).await;
    let idle = quiet.since(&run.pids())?;
    let rss_end = run.target.rss_kib()?;
    let row = json!({
        "scenario": "idle",
        "connections": n,
        "handshake_concurrency": args.parallel,
        "open_seconds": round2(took),
        "handshakes_per_s": round(n as f64 / took),
        "connect_callbacks": run.app.connects.load(Ordering::Relaxed),
        "server_cpu_us_per_handshake": round(spent.server / n as f64 * 1e6),
        "server_cpu_percent_handshaking": round(spent.server / spent.wall * 100.0),
        "bench_cpu_percent_handshaking": round(spent.own / spent.wall * 100.0),
        "rss_kib_before": rss_before,
        "rss_kib_after": rss_after,
        "rss_kib_after_idle": rss_end,
        "rss_kib_per_connection": round2((rss_after as f64 - rss_before as f64) / n as f64),
        "memberships_per_session": args.memberships,
        "idle_seconds": args.idle_seconds,
        "idle_server_cpu_percent": round2(idle.server / idle.wall * 100.0),
    });
    drop(run);
    drop(opened.conns);
    Ok(vec![row])
}

/// TCP counters of `/proc/net/netstat` (`TcpExt`) that show a listen queue
/// overflowing: dropped SYNs and the retransmits they cause.
fn listen_counters() -> Result<Vec<(String, i64)>> {
    const WANTED: [&str; 4] = [
        "ListenOverflows",
        "ListenDrops",
        "TCPTimeouts",
        "TCPSynRetrans",
    ];
    let text = std::fs::read_to_string("/proc/net/netstat")?;
    let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("TcpExt:")).collect();
    let [names, values] = lines[..] else {
        bail!("/proc/net/netstat has no TcpExt lines");
    };
    Ok(names
        .split_whitespace()
        .zip(values.split_whitespace())
        .filter(|(name, _)| WANTED.contains(name))
        .map(|(name, value)| (name.to_string(), value.parse().unwrap_or(0)))
        .collect())
}

/// N clients connect at once (a reconnect storm after a drain or a
/// restart): connect time percentiles, and the kernel's listen-queue
/// overflow and SYN retransmit counters over the storm (machine-wide).
pub async fn storm(args: &Args) -> Result<Vec<Value>> {
    let n = args.connections.unwrap_or(3_000);
    let mut run = setup(args, n).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let latency = Arc::new(stats::Latencies::default());
    let before = listen_counters()?;
    let usage = Usage::now(&run.pids())?;
    let opened = clients::storm(run.addr, n, latency.clone(), OPEN_LIMIT).await?;
    let spent = usage.since(&run.pids())?;
    let after = listen_counters()?;
    run.target.check_alive()?;
    let s = latency.summary();
    let mut row = json!({
        "scenario": "storm",
        "connections": n,
        "open_seconds": round2(opened.took.as_secs_f64()),
        "connect_ms_p50": round2(s.p50),
        "connect_ms_p99": round2(s.p99),
        "connect_ms_max": round2(s.max),
        "server_cpu_us_per_handshake": round(spent.server / n as f64 * 1e6),
    });
    for ((name, a), (_, b)) in before.iter().zip(&after) {
        row[format!("tcp_{name}")] = json!(b - a);
    }
    drop(run);
    drop(opened.conns);
    Ok(vec![row])
}

/// Clients talk at a steady rate while the app goes away (port closed,
/// connections dropped) for `--outage-seconds`, then comes back: messages
/// lost, repeated, skipped, how long the backlog takes to reach the app,
/// peak server RSS, and the most callback requests the app saw at once.
pub async fn outage(args: &Args) -> Result<Vec<Value>> {
    let n = args.connections.unwrap_or(1_000);
    let rate = args.rate.unwrap_or(5_000);
    let mut run = setup(args, n).await?;
    let opened = clients::open_many(run.addr, n, (0, 1), args.parallel, OPEN_LIMIT).await?;
    let stats = Arc::new(ClientStats::default());
    let every = Duration::from_secs_f64(n as f64 / rate.max(1) as f64);
    let clients = clients::spawn_senders(opened.conns, stats.clone(), every, args.size);
    let app = run.app.clone();
    tokio::time::sleep(Duration::from_secs(args.warmup.max(1))).await;
    let rss_before = run.target.rss_kib()?;
    let peak_rss = Arc::new(AtomicU64::new(rss_before));
    let sampler = {
        let (peak, pid) = (peak_rss.clone(), run.target.pid());
        tokio::spawn(async move {
            let status = std::path::PathBuf::from(format!("/proc/{pid}/status"));
            loop {
                if let Ok(kib) = crate::target::rss_kib(&status) {
                    peak.fetch_max(kib, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };

    app.down();
    tokio::time::sleep(Duration::from_secs(args.outage_seconds)).await;
    let sent_before_up = stats.sent.load(Ordering::Relaxed);
    app.max_in_flight.store(0, Ordering::Relaxed);
    app.up().await?;
    let up = Instant::now();
    // The backlog is drained once the app has as many messages as were
    // sent before it came back (each session's arrive in order).
    let mut drained = None;
    let talk_until = up + Duration::from_secs(args.duration);
    while Instant::now() < talk_until {
        if drained.is_none() && app.unique.load(Ordering::Relaxed) >= sent_before_up {
            drained = Some(up.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stats.quiet.store(true, Ordering::Relaxed);
    // Wait until nothing is missing, or the limit.
    let settle = Instant::now();
    let limit = Duration::from_secs(120);
    loop {
        let (sent, unique) = (
            stats.sent.load(Ordering::Relaxed),
            app.unique.load(Ordering::Relaxed),
        );
        if drained.is_none() && unique >= sent_before_up {
            drained = Some(up.elapsed());
        }
        if unique >= sent || settle.elapsed() > limit {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    sampler.abort();
    run.target.check_alive()?;
    let sent = stats.sent.load(Ordering::Relaxed);
    let unique = app.unique.load(Ordering::Relaxed);
    let row = json!({
        "scenario": "outage",
        "connections": n,
        "offered_per_s": rate,
        "message_bytes": args.size,
        "outage_seconds": args.outage_seconds,
        "messages_sent": sent,
        "messages_sent_during_outage": sent_before_up,
        "messages_reached_app": unique,
        "messages_lost": sent.saturating_sub(unique),
        "messages_repeated": app.repeated.load(Ordering::Relaxed),
        "sequence_gaps": app.skipped.load(Ordering::Relaxed),
        "backlog_drain_seconds": drained.map(|d| round2(d.as_secs_f64())),
        "rss_kib_before": rss_before,
        "rss_kib_peak": peak_rss.load(Ordering::Relaxed),
        "peak_callbacks_in_flight_after_return": app.max_in_flight.load(Ordering::Relaxed),
    });
    drop(run);
    for c in clients {
        c.abort();
    }
    Ok(vec![row])
}

/// What one push phase sends.
#[derive(Clone, Copy)]
struct Phase {
    senders: usize,
    /// Frames one request makes: its session headers, or the members of
    /// its channel.
    per_request: usize,
    /// When not 0, each request names one of this many channels (`c0`..)
    /// instead of sessions.
    channels: usize,
    /// Each request is a `/batch` of `per_request` items.
    batch: bool,
    size: usize,
    /// JSON payloads ([`stats::json_payload`]) rather than `x` padding.
    json: bool,
    warmup: Duration,
    duration: Duration,
    /// Open loop at this many requests/s; `None`: closed loop (each sender
    /// sends its next request when the previous one is answered).
    offered: Option<u64>,
}

impl Phase {
    /// Closed-loop `/send`s from `--senders` senders: one target each
    /// (unicast, 32 senders by default), or `--targets` of the `n`
    /// sessions (fanout, 4 senders), with `--size`-byte payloads.
    fn push(args: &Args, fanout: bool, n: usize) -> Phase {
        Phase {
            senders: args.senders.unwrap_or(if fanout { 4 } else { 32 }),
            per_request: if fanout { args.targets.min(n) } else { 1 },
            channels: 0,
            batch: false,
            size: args.size,
            json: args.json,
            warmup: Duration::from_secs(args.warmup),
            duration: Duration::from_secs(args.duration),
            offered: None,
        }
    }
}

/// unicast (one target per `/send`), fanout (`--targets` per `/send`), or,
/// with `--sweep`, unicast at each offered rate in turn.
pub async fn push(args: &Args, fanout: bool) -> Result<Vec<Value>> {
    let n = args
        .connections
        .unwrap_or(if fanout { 10_000 } else { 1_000 });
    let mut run = setup(args, n).await?;
    let opened = clients::open_many(run.addr, n, (0, 1), args.parallel, OPEN_LIMIT).await?;
    let stats = Arc::new(ClientStats::default());
    let clients = clients::spawn_readers(opened.conns, stats.clone());
    let ids = sender::ids(n);
    let base = Phase::push(args, fanout, n);
    let scenario = if fanout { "fanout" } else { "unicast" };
    let rates: Vec<Option<u64>> = match (&args.sweep, fanout) {
        (Some(rates), false) => rates.iter().map(|r| Some(*r)).collect(),
        _ => vec![None],
    };
    let mut rows = Vec::new();
    for offered in rates {
        let phase = Phase { offered, ..base };
        let mut row = push_phase(&run, &ids, &stats, phase).await?;
        run.target.check_alive()?;
        row["scenario"] = json!(scenario);
        row["connections"] = json!(n);
        rows.push(row);
    }
    drop(run);
    for c in clients {
        c.abort();
    }
    Ok(rows)
}

/// Bytes of each JSON update in the compression scenario.
const COMPRESSION_PAYLOAD: usize = 2048;

/// Fanout of 2 KiB JSON updates (`--targets` per `/send`), to clients
/// that do not offer permessage-deflate, then to clients that do, twice
/// over, each phase on a fresh server; then the on/off ratios of wire
/// bytes per frame and server CPU per frame, per round.
pub async fn compression(args: &Args) -> Result<Vec<Value>> {
    let n = args.connections.unwrap_or(10_000);
    let mut rows = Vec::new();
    let mut ratios = Vec::new();
    for _round in 0..2 {
        let mut pair = Vec::new();
        for deflate in [false, true] {
            clients::offer_deflate(deflate);
            let mut run = setup(args, n).await?;
            let opened = clients::open_many(run.addr, n, (0, 1), args.parallel, OPEN_LIMIT).await?;
            let stats = Arc::new(ClientStats::default());
            let clients = clients::spawn_readers(opened.conns, stats.clone());
            let phase = Phase {
                size: COMPRESSION_PAYLOAD,
                json: true,
                ..Phase::push(args, true, n)
            };
            let mut row = push_phase(&run, &sender::ids(n), &stats, phase).await?;
            run.target.check_alive()?;
            row["scenario"] = json!(if deflate {
                "compression-on"
            } else {
                "compression-off"
            });
            row["connections"] = json!(n);
            pair.push((
                row["wire_bytes_per_frame"].as_f64().unwrap_or(0.0),
                row["server_cpu_s_per_100k_frames"].as_f64().unwrap_or(0.0),
            ));
            rows.push(row);
            drop(run);
            for c in clients {
                c.abort();
            }
        }
        let ((off_bytes, off_cpu), (on_bytes, on_cpu)) = (pair[0], pair[1]);
        ratios.push((on_bytes / off_bytes.max(1.0), on_cpu / off_cpu.max(1e-9)));
    }
    clients::offer_deflate(args.deflate);
    let range = |f: fn(&(f64, f64)) -> f64| {
        let values: Vec<f64> = ratios.iter().map(f).collect();
        json!([
            round2(values.iter().cloned().fold(f64::MAX, f64::min)),
            round2(values.iter().cloned().fold(0.0, f64::max))
        ])
    };
    rows.push(json!({
        "scenario": "compression-ratio",
        "connections": n,
        "targets_per_request": args.targets.min(n),
        "message_bytes": COMPRESSION_PAYLOAD,
        "wire_bytes_on_over_off": range(|r| r.0),
        "server_cpu_per_frame_on_over_off": range(|r| r.1),
    }));
    Ok(rows)
}

/// Pushes to sessions held by another node: two nodes and a `nats-server`
/// on this machine; every request goes to node A. Unicast: every session on
/// node B. Fanout: sessions alternate between the nodes, so each request's
/// targets are spread over both. CPU is the nodes' and NATS's together.
pub async fn cluster(args: &Args) -> Result<Vec<Value>> {
    let mut rows = Vec::new();
    for fanout in [false, true] {
        let n = args
            .connections
            .unwrap_or(if fanout { 2_000 } else { 1_000 });
        let (mut run, addrs) = cluster_run(args, n, 2).await?;
        let addr_b = addrs[1];
        let mut conns = Vec::new();
        if fanout {
            let half = n / 2;
            conns.extend(
                clients::open_many(run.addr, half, (0, 2), args.parallel, OPEN_LIMIT)
                    .await?
                    .conns,
            );
            conns.extend(
                clients::open_many(addr_b, half, (1, 2), args.parallel, OPEN_LIMIT)
                    .await?
                    .conns,
            );
        } else {
            conns = clients::open_many(addr_b, n, (0, 1), args.parallel, OPEN_LIMIT)
                .await?
                .conns;
        }
        let stats = Arc::new(ClientStats::default());
        let clients = clients::spawn_readers(conns, stats.clone());
        let ids = sender::ids(n);
        // Let the nodes' subscriptions settle before measuring.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let phase = Phase::push(args, fanout, n);
        let mut row = push_phase(&run, &ids, &stats, phase).await?;
        run.target.check_alive()?;
        row["scenario"] = json!(if fanout {
            "cluster-fanout"
        } else {
            "cluster-unicast"
        });
        row["connections"] = json!(n);
        row["nodes"] = json!(2);
        rows.push(row);
        drop(run);
        for c in clients {
            c.abort();
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    Ok(rows)
}

/// Channels against header fan-out, in one run: `--connections` (10,000)
/// clients in `--channels` (100) channels of neighbouring ids (a fan-out
/// names neighbouring ids too); on one node, phases alternate
/// (twice each) between `/send` naming `--targets` (100) sessions and
/// `/send` naming one random channel; then the same clients spread over
/// three nodes and a `nats-server`, every request to the first node.
pub async fn channel(args: &Args) -> Result<Vec<Value>> {
    let n = args.connections.unwrap_or(10_000);
    let c = args.channels.clamp(1, n);
    let base = Phase::push(args, true, n);
    let by_channel = Phase {
        per_request: n / c,
        channels: c,
        ..base
    };
    let ids = sender::ids(n);
    let mut rows = Vec::new();
    {
        let mut run = setup(args, n).await?;
        run.app
            .channel_size
            .store((n / c) as u64, Ordering::Relaxed);
        let opened = clients::open_many(run.addr, n, (0, 1), args.parallel, OPEN_LIMIT).await?;
        let stats = Arc::new(ClientStats::default());
        let clients = clients::spawn_readers(opened.conns, stats.clone());
        let order = [
            ("fanout", base),
            ("channel", by_channel),
            ("fanout", base),
            ("channel", by_channel),
        ];
        rows.extend(phases(&mut run, &ids, &stats, 1, &order).await?);
        for client in clients {
            client.abort();
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    // Three nodes: members of every channel on each of them.
    let nodes = 3;
    let (mut run, addrs) = cluster_run(args, n, nodes).await?;
    run.app
        .channel_size
        .store((n / c) as u64, Ordering::Relaxed);
    let mut conns = Vec::new();
    for (k, addr) in addrs.iter().enumerate() {
        // Ids k, k+3, ...: every channel has members on every node.
        let count = (n - k).div_ceil(nodes);
        let opened =
            clients::open_many(*addr, count, (k, nodes), args.parallel, OPEN_LIMIT).await?;
        conns.extend(opened.conns);
    }
    let stats = Arc::new(ClientStats::default());
    let clients = clients::spawn_readers(conns, stats.clone());
    // Let the nodes' subscriptions settle before measuring.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let order = [("cluster-channel", by_channel)];
    rows.extend(phases(&mut run, &ids, &stats, nodes, &order).await?);
    drop(run);
    for client in clients {
        client.abort();
    }
    Ok(rows)
}

/// Batches against unicast, in one run: `--connections` (1,000) clients on
/// one server; phases alternate (twice each) between unicast (`--senders`,
/// 32, one session per `/send`) and `/batch` requests of `--items` (1,000)
/// items, each with its own message, from 4 senders. Then the same two
/// against two nodes and a `nats-server`, every session on the second node
/// and every request to the first (`cluster-unicast`, `cluster-batch`).
pub async fn batch(args: &Args) -> Result<Vec<Value>> {
    let n = args.connections.unwrap_or(1_000);
    let unicast = Phase::push(args, false, n);
    let batched = Phase {
        senders: 4,
        per_request: args.items.max(1),
        batch: true,
        ..unicast
    };
    let mut run = setup(args, n).await?;
    let opened = clients::open_many(run.addr, n, (0, 1), args.parallel, OPEN_LIMIT).await?;
    let stats = Arc::new(ClientStats::default());
    let clients = clients::spawn_readers(opened.conns, stats.clone());
    let ids = sender::ids(n);
    let order = [
        ("unicast", unicast),
        ("batch", batched),
        ("unicast", unicast),
        ("batch", batched),
    ];
    let mut rows = phases(&mut run, &ids, &stats, 1, &order).await?;
    drop(run);
    for client in clients {
        client.abort();
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (mut run, addrs) = cluster_run(args, n, 2).await?;
    let opened = clients::open_many(addrs[1], n, (0, 1), args.parallel, OPEN_LIMIT).await?;
    let stats = Arc::new(ClientStats::default());
    let clients = clients::spawn_readers(opened.conns, stats.clone());
    // Let the nodes' subscriptions settle before measuring.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let order = [("cluster-unicast", unicast), ("cluster-batch", batched)];
    rows.extend(phases(&mut run, &ids, &stats, 2, &order).await?);
    drop(run);
    for client in clients {
        client.abort();
    }
    Ok(rows)
}

/// Runs `order`'s push phases in turn on one set of clients (`ids`, on
/// `nodes` nodes), a row each, named by its scenario.
async fn phases(
    run: &mut Run,
    ids: &sender::Ids,
    stats: &Arc<ClientStats>,
    nodes: usize,
    order: &[(&str, Phase)],
) -> Result<Vec<Value>> {
    let mut rows = Vec::new();
    for (name, phase) in order {
        let mut row = push_phase(run, ids, stats, *phase).await?;
        run.target.check_alive()?;
        row["scenario"] = json!(name);
        row["connections"] = json!(ids.len());
        row["nodes"] = json!(nodes);
        rows.push(row);
    }
    Ok(rows)
}

async fn push_phase(
    run: &Run,
    ids: &sender::Ids,
    stats: &Arc<ClientStats>,
    phase: Phase,
) -> Result<Value> {
    let requests = Arc::new(AtomicU64::new(0));
    let not_ok = Arc::new(AtomicU64::new(0));
    let frames_at_start = stats.frames.load(Ordering::Relaxed);
    let channels = sender::channels(phase.channels);
    let start = Instant::now();
    let deadline = start + phase.warmup + phase.duration;
    let mut tasks = Vec::new();
    for s in 0..phase.senders {
        let (requests, not_ok, ids) = (requests.clone(), not_ok.clone(), ids.clone());
        let channels = channels.clone();
        let addr = run.addr;
        tasks.push(tokio::spawn(async move {
            let mut sender = Sender::connect(addr, ids.clone()).await?;
            let mut tick = phase.offered.map(|rate| {
                let period = Duration::from_secs_f64(phase.senders as f64 / rate as f64);
                let first = start + period.mul_f64(s as f64 / phase.senders as f64);
                let mut t = tokio::time::interval_at(first, period);
                t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
                t
            });
            while Instant::now() < deadline {
                // Open loop: also stamp the scheduled time, so a request that
                // waits for a busy sender shows its wait (no coordinated omission).
                let scheduled = match tick.as_mut() {
                    Some(t) => Some(stats::ns_at(t.tick().await.into_std())),
                    None => None,
                };
                let now = stats::now_ns();
                let first = fastrand::usize(0..ids.len());
                let to = if phase.channels > 0 {
                    To::Channel(fastrand::usize(0..phase.channels))
                } else if phase.batch {
                    To::Batch {
                        first,
                        count: phase.per_request,
                    }
                } else {
                    To::Sessions {
                        first,
                        count: phase.per_request,
                    }
                };
                let body = if phase.json {
                    stats::json_payload(phase.size, now, scheduled)
                } else {
                    stats::payload(phase.size, now, scheduled)
                };
                if sender.send(to, &channels, body).await? {
                    requests.fetch_add(1, Ordering::Relaxed);
                } else {
                    not_ok.fetch_add(1, Ordering::Relaxed);
                }
            }
            anyhow::Ok(())
        }));
    }
    tokio::time::sleep(phase.warmup).await;
    stats.latency.reset();
    let usage = Usage::now(&run.pids())?;
    let (req0, frames0, wire0, compressed0) = (
        requests.load(Ordering::Relaxed),
        stats.frames.load(Ordering::Relaxed),
        stats.wire_bytes.load(Ordering::Relaxed),
        stats.compressed.load(Ordering::Relaxed),
    );
    tokio::time::sleep_until(deadline).await;
    let spent = usage.since(&run.pids())?;
    let req = requests.load(Ordering::Relaxed) - req0;
    let frames = stats.frames.load(Ordering::Relaxed) - frames0;
    let wire = stats.wire_bytes.load(Ordering::Relaxed) - wire0;
    let compressed = stats.compressed.load(Ordering::Relaxed) - compressed0;
    for t in tasks {
        t.await??;
    }
    // Whatever was accepted must still arrive.
    let expected = requests.load(Ordering::Relaxed) * phase.per_request as u64;
    let grace_end = Instant::now() + GRACE;
    while stats.frames.load(Ordering::Relaxed) - frames_at_start < expected
        && Instant::now() < grace_end
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let delivered = stats.frames.load(Ordering::Relaxed) - frames_at_start;
    let wall = spent.wall;
    let mut row = json!({
        "mode": if phase.offered.is_some() { "open-loop" } else { "closed-loop" },
        "offered_per_s": phase.offered,
        "senders": phase.senders,
        "targets_per_request": phase.per_request,
        "channels": (phase.channels > 0).then_some(phase.channels),
        "message_bytes": phase.size,
        "payload": if phase.json { "json" } else { "padding" },
        "seconds": round2(wall),
        "requests_per_s": round(req as f64 / wall),
        "frames_per_s": round(frames as f64 / wall),
        "requests_not_ok": not_ok.load(Ordering::Relaxed),
        "frames_undelivered": expected.saturating_sub(delivered),
        "server_cpu_percent": round(spent.server / wall * 100.0),
        "server_cpu_s_per_100k_requests": per_100k(spent.server, req),
        "server_cpu_s_per_100k_frames": per_100k(spent.server, frames),
        "wire_bytes_per_frame": round(wire as f64 / frames.max(1) as f64),
        "compressed_frames_percent": round(compressed as f64 * 100.0 / frames.max(1) as f64),
        "bench_cpu_percent": round(spent.own / wall * 100.0),
    });
    latency(&mut row, &stats.latency, phase.offered.is_some());
    Ok(row)
}

/// Clients send at a fixed total rate; the fake app counts what arrives.
pub async fn receive(args: &Args) -> Result<Vec<Value>> {
    let n = args.connections.unwrap_or(1_000);
    let mut run = setup(args, n).await?;
    let opened = clients::open_many(run.addr, n, (0, 1), args.parallel, OPEN_LIMIT).await?;
    let stats = Arc::new(ClientStats::default());
    let rate = args.rate.unwrap_or(20_000);
    let every = Duration::from_secs_f64(n as f64 / rate.max(1) as f64);
    let clients = clients::spawn_senders(opened.conns, stats.clone(), every, args.size);
    let app = run.app.clone();
    let backlog =
        || stats.sent.load(Ordering::Relaxed) as i64 - app.received.load(Ordering::Relaxed) as i64;
    tokio::time::sleep(Duration::from_secs(args.warmup)).await;
    app.receive_latency.reset();
    let usage = Usage::now(&run.pids())?;
    let (sent0, got0) = (
        stats.sent.load(Ordering::Relaxed),
        app.received.load(Ordering::Relaxed),
    );
    let backlog_start = backlog();
    let half = Duration::from_secs(args.duration) / 2;
    tokio::time::sleep(half).await;
    let backlog_mid = backlog();
    tokio::time::sleep(half).await;
    let spent = usage.since(&run.pids())?;
    let backlog_end = backlog();
    let sent = stats.sent.load(Ordering::Relaxed) - sent0;
    let forwarded = app.received.load(Ordering::Relaxed) - got0;
    stats.quiet.store(true, Ordering::Relaxed);
    // Messages already sent still reach the app (or the grace runs out);
    // their latency counts.
    let drain_start = Instant::now();
    while backlog() > 0 && drain_start.elapsed() < GRACE {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    run.target.check_alive()?;
    let wall = spent.wall;
    let offered = rate as f64;
    let forwarded_per_s = forwarded as f64 / wall;
    // Keeping up: forwarding at (nearly) the offered rate, and the backlog
    // no larger at the end than 50 ms of load above where it started.
    let keeps_up = forwarded_per_s >= 0.97 * offered
        && backlog_end <= backlog_start.max(backlog_mid) + (offered * 0.05) as i64;
    let mut row = json!({
        "scenario": "receive",
        "connections": n,
        "offered_per_s": rate,
        "message_bytes": args.size,
        "seconds": round2(wall),
        "sent_per_s": round(sent as f64 / wall),
        "forwarded_per_s": round(forwarded_per_s),
        "backlog_start": backlog_start,
        "backlog_mid": backlog_mid,
        "backlog_end": backlog_end,
        "backlog_after_grace": backlog(),
        "keeps_up": keeps_up,
        "server_cpu_percent": round(spent.server / wall * 100.0),
        "server_cpu_s_per_100k": per_100k(spent.server, forwarded),
        "bench_cpu_percent": round(spent.own / wall * 100.0),
    });
    latency(&mut row, &app.receive_latency, true);
    drop(run);
    for c in clients {
        c.abort();
    }
    Ok(vec![row])
}
