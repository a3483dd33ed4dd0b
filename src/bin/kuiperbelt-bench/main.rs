//! `kuiperbelt-bench`: starts a kuiperbelt-compatible server beside a fast
//! fake app on loopback, drives one or more scenarios (idle, unicast,
//! fanout, receive, and a unicast latency sweep), and prints a table and a
//! JSON line per scenario. Every run is bounded in time and stops by itself.

mod app;
mod load;
mod target;

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use clap::Parser;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use load::{ClientStats, Sender};
use target::Target;

/// A whole run never outlives this, whatever the options.
const HARD_LIMIT: Duration = Duration::from_secs(1200);

#[derive(Debug, Parser)]
#[command(
    name = "kuiperbelt-bench",
    about = "Load scenarios against a kuiperbelt-compatible server"
)]
struct Args {
    /// idle, unicast, fanout, receive, sweep or all (all but sweep).
    #[arg(long, default_value = "all")]
    scenario: String,
    /// Server command template with {config} and {port}, e.g. "ekbo -config={config}";
    /// default: the kuiperbelt binary next to this one.
    #[arg(long)]
    server_cmd: Option<String>,
    /// WebSocket connections (default per scenario: idle 19000, unicast 1000,
    /// fanout 10000, receive 1000).
    #[arg(long)]
    connections: Option<usize>,
    /// Concurrent HTTP senders (default: unicast 32, fanout 4).
    #[arg(long)]
    senders: Option<usize>,
    /// Sessions named per /send in the fanout scenario.
    #[arg(long, default_value_t = 100)]
    targets: usize,
    /// Messages per second the clients offer in the receive scenario.
    #[arg(long, default_value_t = 20_000)]
    rate: u64,
    /// Seconds each load phase runs.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Message size in bytes (at least 20: the timestamp).
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// Offered /send rates for the sweep scenario, e.g. 10000,20000,40000.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "5000,10000,20000,40000,60000,80000"
    )]
    sweep: Vec<u64>,
    /// Per-session queue of the server under test.
    #[arg(long, default_value_t = 128)]
    queue: usize,
    /// Append each JSON line to this file.
    #[arg(long)]
    json_out: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    if args.size < 20 {
        bail!("--size must be at least 20 (the timestamp)");
    }
    rlimit::increase_nofile_limit(u64::MAX)?;
    std::thread::spawn(|| {
        std::thread::sleep(HARD_LIMIT);
        eprintln!("kuiperbelt-bench: hard time limit reached");
        std::process::exit(2);
    });
    load::now_ns();
    let scenarios: Vec<&str> = match args.scenario.as_str() {
        "all" => vec!["idle", "unicast", "fanout", "receive"],
        s @ ("idle" | "unicast" | "fanout" | "receive" | "sweep") => vec![s],
        other => bail!("unknown scenario {other:?}"),
    };
    for scenario in scenarios {
        let results = match scenario {
            "idle" => vec![idle(&args).await?],
            "unicast" => vec![push(&args, "unicast", None).await?],
            "fanout" => vec![push(&args, "fanout", None).await?],
            "receive" => vec![receive(&args).await?],
            _ => {
                let mut rows = Vec::new();
                for rate in &args.sweep {
                    rows.push(push(&args, "sweep", Some(*rate)).await?);
                }
                rows
            }
        };
        for result in results {
            report(&args, &result)?;
        }
    }
    Ok(())
}

/// A server and its fake app, ready for clients.
async fn setup(args: &Args) -> Result<(Target, SocketAddr, Arc<app::AppStats>)> {
    let (app_port, app) = app::start().await?;
    let target = Target::start(args.server_cmd.as_deref(), app_port, args.queue).await?;
    let addr = SocketAddr::from(([127, 0, 0, 1], target.port));
    Ok((target, addr, app))
}

/// Server and bench CPU seconds and wall time, from one instant to another.
struct Usage {
    server: f64,
    own: f64,
    wall: Instant,
}

impl Usage {
    fn now(target: &Target) -> Result<Usage> {
        Ok(Usage {
            server: target.cpu_seconds()?,
            own: target::own_cpu_seconds()?,
            wall: Instant::now(),
        })
    }

    /// (server CPU s, bench CPU s, wall s) since `self`.
    fn since(&self, target: &Target) -> Result<(f64, f64, f64)> {
        let now = Usage::now(target)?;
        Ok((
            now.server - self.server,
            now.own - self.own,
            self.wall.elapsed().as_secs_f64(),
        ))
    }
}

async fn idle(args: &Args) -> Result<Value> {
    let n = args.connections.unwrap_or(19_000);
    let (target, addr, _app) = setup(args).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_before = target.rss_kib()?;
    let usage = Usage::now(&target)?;
    let (conns, took) =
        tokio::time::timeout(Duration::from_secs(300), load::open_many(addr, n, 256)).await??;
    let (cpu, own, _) = usage.since(&target)?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_after = target.rss_kib()?;
    let quiet = Usage::now(&target)?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (idle_cpu, _, idle_wall) = quiet.since(&target)?;
    drop(conns);
    Ok(json!({
        "scenario": "idle",
        "connections": n,
        "handshakes_per_s": round(n as f64 / took.as_secs_f64()),
        "server_cpu_us_per_handshake": round(cpu / n as f64 * 1e6),
        "rss_kib_before": rss_before,
        "rss_kib_after": rss_after,
        "rss_kib_per_connection": round2((rss_after - rss_before) as f64 / n as f64),
        "idle_server_cpu_percent": round2(idle_cpu / idle_wall * 100.0),
        "bench_cpu_s": round2(own),
    }))
}

/// unicast (one target per /send), fanout (`--targets` per /send) or one
/// sweep point (unicast at a fixed offered rate).
async fn push(args: &Args, scenario: &str, offered: Option<u64>) -> Result<Value> {
    let fanout = scenario == "fanout";
    let n = args
        .connections
        .unwrap_or(if fanout { 10_000 } else { 1_000 });
    let senders = args.senders.unwrap_or(if fanout { 4 } else { 32 });
    let per_request = if fanout { args.targets.min(n) } else { 1 };
    let (target, addr, _app) = setup(args).await?;
    let (conns, _) = load::open_many(addr, n, 256).await?;
    let stats = Arc::new(ClientStats::default());
    let stop = CancellationToken::new();
    let clients = load::spawn_clients(conns, stats.clone(), None, args.size, stop.clone());

    let duration = Duration::from_secs(args.duration);
    let usage = Usage::now(&target)?;
    let frames_before = stats.frames.load(Ordering::Relaxed);
    let deadline = tokio::time::Instant::now() + duration;
    let mut tasks = Vec::new();
    for s in 0..senders {
        let size = args.size;
        let pace = offered.map(|rate| Duration::from_secs_f64(senders as f64 / rate as f64));
        tasks.push(tokio::spawn(async move {
            let mut sender = Sender::connect(addr).await?;
            let mut sent = 0u64;
            let mut tick = pace.map(|p| {
                let mut t = tokio::time::interval_at(
                    tokio::time::Instant::now() + p.mul_f64(s as f64 / senders as f64),
                    p,
                );
                t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
                t
            });
            let mut targets = vec![0usize; per_request];
            while tokio::time::Instant::now() < deadline {
                if let Some(t) = tick.as_mut() {
                    t.tick().await;
                }
                let start = fastrand::usize(0..n);
                for (k, slot) in targets.iter_mut().enumerate() {
                    *slot = (start + k) % n;
                }
                if sender.send(&targets, size).await? {
                    sent += 1;
                }
            }
            anyhow::Ok(sent)
        }));
    }
    let mut requests = 0u64;
    for t in tasks {
        requests += t.await??;
    }
    let (cpu, own, wall) = usage.since(&target)?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let frames = stats.frames.load(Ordering::Relaxed) - frames_before;
    let (p50, p99, p999, _) = stats.latency.percentiles_ms();
    stop.cancel();
    for c in clients {
        let _ = c.await;
    }
    let mut row = json!({
        "scenario": scenario,
        "connections": n,
        "senders": senders,
        "targets_per_request": per_request,
        "message_bytes": args.size,
        "requests_per_s": round(requests as f64 / wall),
        "frames_per_s": round(frames as f64 / wall),
        "frames_delivered": frames,
        "frames_expected": requests * per_request as u64,
        "latency_ms_p50": round2(p50),
        "latency_ms_p99": round2(p99),
        "latency_ms_p999": round2(p999),
        "server_cpu_s_per_100k_requests": round2(cpu / requests.max(1) as f64 * 1e5),
        "server_cpu_s_per_100k_frames": round2(cpu / frames.max(1) as f64 * 1e5),
        "bench_cpu_percent": round(own / wall * 100.0),
    });
    if let Some(rate) = offered {
        row["offered_per_s"] = json!(rate);
    }
    Ok(row)
}

async fn receive(args: &Args) -> Result<Value> {
    let n = args.connections.unwrap_or(1_000);
    let (target, addr, app) = setup(args).await?;
    let (conns, _) = load::open_many(addr, n, 256).await?;
    let stats = Arc::new(ClientStats::default());
    let stop = CancellationToken::new();
    let every = Duration::from_secs_f64(n as f64 / args.rate as f64);
    let usage = Usage::now(&target)?;
    let clients = load::spawn_clients(conns, stats.clone(), Some(every), args.size, stop.clone());
    let half = Duration::from_secs(args.duration) / 2;
    tokio::time::sleep(half).await;
    let backlog_mid =
        stats.sent.load(Ordering::Relaxed) as i64 - app.received.load(Ordering::Relaxed) as i64;
    tokio::time::sleep(half).await;
    let sent = stats.sent.load(Ordering::Relaxed);
    let forwarded = app.received.load(Ordering::Relaxed);
    let (cpu, own, wall) = usage.since(&target)?;
    stop.cancel();
    let (p50, p99, p999, _) = app.receive_latency.percentiles_ms();
    for c in clients {
        let _ = c.await;
    }
    Ok(json!({
        "scenario": "receive",
        "connections": n,
        "offered_per_s": args.rate,
        "sent_per_s": round(sent as f64 / wall),
        "forwarded_per_s": round(forwarded as f64 / wall),
        "backlog_at_half": backlog_mid,
        "backlog_at_end": sent as i64 - forwarded as i64,
        "latency_ms_p50": round2(p50),
        "latency_ms_p99": round2(p99),
        "latency_ms_p999": round2(p999),
        "server_cpu_s_per_100k": round2(cpu / forwarded.max(1) as f64 * 1e5),
        "bench_cpu_percent": round(own / wall * 100.0),
    }))
}

fn round(x: f64) -> f64 {
    x.round()
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// Prints a table and the JSON line; appends the line to `--json-out`.
fn report(args: &Args, row: &Value) -> Result<()> {
    let Value::Object(fields) = row else {
        bail!("a report is an object")
    };
    println!("\n{}", row["scenario"].as_str().unwrap_or("?"));
    for (k, v) in fields {
        if k != "scenario" {
            println!("  {k:<32} {v}");
        }
    }
    let line = serde_json::to_string(row)?;
    println!("{line}");
    if let Some(path) = &args.json_out {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        writeln!(f, "{line}")?;
    }
    Ok(())
}
