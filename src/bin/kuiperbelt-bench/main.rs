//! `kuiperbelt-bench`: starts a kuiperbelt-compatible server beside a fast
//! fake app on loopback, drives one or more scenarios (idle, unicast,
//! fanout, receive, storm, outage, cluster, channel, batch, compression;
//! unicast also as a sweep of offered rates), and prints a
//! table and a JSON line per result. Every run is bounded in time and stops
//! by itself.
//!
//! ```text
//! cargo build --release
//! target/release/kuiperbelt-bench --scenario all --json-out results.json
//! target/release/kuiperbelt-bench --scenario unicast --sweep 5000,10000,20000
//! target/release/kuiperbelt-bench --scenario storm --connections 3000
//! target/release/kuiperbelt-bench --scenario outage --outage-seconds 10
//! target/release/kuiperbelt-bench --scenario cluster
//! target/release/kuiperbelt-bench --scenario channel
//! target/release/kuiperbelt-bench --scenario batch
//! target/release/kuiperbelt-bench --scenario compression
//! target/release/kuiperbelt-bench --scenario idle --deflate
//! target/release/kuiperbelt-bench --server-cmd 'ekbo -config={config}' --label go
//! ```

mod app;
mod clients;
mod scenarios;
mod sender;
mod stats;
mod target;

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, ValueEnum};
use serde_json::{json, Value};

/// The whole run never outlives this, whatever the options.
const HARD_LIMIT: Duration = Duration::from_secs(1800);

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    Idle,
    Unicast,
    Fanout,
    Receive,
    /// N clients connect at once: connect time and listen-queue overflows.
    Storm,
    /// Clients talk while the app goes away and comes back: loss, drain time.
    Outage,
    /// Pushes across two nodes and a nats-server (unicast, then fanout).
    Cluster,
    /// Channel pushes beside header fan-out on one node, then channel
    /// pushes to members spread over three nodes.
    Channel,
    /// `/batch` requests of many messages beside unicast.
    Batch,
    /// Fanout of 2 KiB JSON updates to clients that offer permessage-deflate
    /// and to clients that do not, alternating, a fresh server for each.
    Compression,
    /// idle, unicast, fanout and receive in turn, a fresh server for each.
    All,
}

#[derive(Debug, Parser)]
#[command(
    name = "kuiperbelt-bench",
    about = "Load scenarios against a kuiperbelt-compatible server on loopback",
    // A later option wins, so scripts can pass defaults and users override them.
    args_override_self = true
)]
pub struct Args {
    #[arg(long, value_enum, default_value = "all")]
    pub scenario: Scenario,
    /// Server command line (run by `sh -c`) with {config} and {port}
    /// placeholders, e.g. "ekbo -config={config}". Default: the kuiperbelt
    /// binary next to this one, with -config={config}.
    #[arg(long)]
    pub server_cmd: Option<String>,
    /// Name of the server in the JSON lines (default: kuiperbelt, or the
    /// first word of --server-cmd).
    #[arg(long)]
    pub label: Option<String>,
    /// WebSocket connections (default: idle 19000, unicast 1000, fanout
    /// 10000, receive 1000, storm 3000, outage 1000).
    #[arg(long)]
    pub connections: Option<usize>,
    /// Handshakes in flight at once while connections open.
    #[arg(long, default_value_t = 128)]
    pub parallel: usize,
    /// Concurrent keep-alive HTTP senders (default: unicast 32, fanout 4).
    #[arg(long)]
    pub senders: Option<usize>,
    /// Sessions named per /send in the fanout scenario.
    #[arg(long, default_value_t = 100)]
    pub targets: usize,
    /// Items per `/batch` request in the batch scenario.
    #[arg(long, default_value_t = 1000)]
    pub items: usize,
    /// Channels the clients are spread over in the channel scenario.
    #[arg(long, default_value_t = 100)]
    pub channels: usize,
    /// Channels each session joins at connect in the idle scenario (each
    /// channel of 100 neighbouring ids), to measure a membership's memory.
    #[arg(long, default_value_t = 0)]
    pub memberships: usize,
    /// Messages per second all clients together offer (default: receive
    /// 20000, outage 5000).
    #[arg(long)]
    pub rate: Option<u64>,
    /// The nats-server binary of the cluster scenario.
    #[arg(long, default_value = "/usr/sbin/nats-server")]
    pub nats_server: String,
    /// Seconds the app is away in the outage scenario.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=300))]
    pub outage_seconds: u64,
    /// Offered /send rates (open loop) for a unicast sweep, e.g.
    /// 5000,10000,20000; one result per rate, on one server.
    #[arg(long, value_delimiter = ',')]
    pub sweep: Option<Vec<u64>>,
    /// Seconds each load phase is measured.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=120))]
    pub duration: u64,
    /// Seconds of load before measuring starts.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(0..=30))]
    pub warmup: u64,
    /// Seconds the idle scenario measures idle server CPU.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=60))]
    pub idle_seconds: u64,
    /// Message size in bytes; the first 40 are the actual and scheduled
    /// send times, so smaller sizes are sent as 40 bytes.
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    /// Pushed messages carry a JSON update after their stamps (as an app
    /// would push), rather than `x` padding.
    #[arg(long)]
    pub json: bool,
    /// Clients offer permessage-deflate (as every browser does).
    #[arg(long)]
    pub deflate: bool,
    /// send_queue_size written into the server's config.
    #[arg(long, default_value_t = 128)]
    pub queue: usize,
    /// send_timeout written into the server's config, in milliseconds.
    #[arg(long, default_value_t = 5000)]
    pub send_timeout_ms: u64,
    /// Append each JSON line to this file.
    #[arg(long)]
    pub json_out: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let nofile = rlimit::increase_nofile_limit(u64::MAX).context("raising RLIMIT_NOFILE")?;
    // The server is our child: it inherits the raised soft limit.
    std::thread::spawn(|| {
        std::thread::sleep(HARD_LIMIT);
        eprintln!("kuiperbelt-bench: hard time limit of {HARD_LIMIT:?} reached; exiting");
        std::process::exit(2);
    });
    stats::origin();
    clients::offer_deflate(args.deflate);
    let label = args
        .label
        .clone()
        .unwrap_or_else(|| match &args.server_cmd {
            None => "kuiperbelt".into(),
            Some(cmd) => cmd
                .split_whitespace()
                .next()
                .and_then(|w| w.rsplit('/').next())
                .unwrap_or("server")
                .to_string(),
        });
    eprintln!("kuiperbelt-bench: open-file limit {nofile}, server {label}");
    let list = match args.scenario {
        Scenario::All => vec![
            Scenario::Idle,
            Scenario::Unicast,
            Scenario::Fanout,
            Scenario::Receive,
        ],
        s => vec![s],
    };
    for scenario in list {
        let rows = match scenario {
            Scenario::Idle => scenarios::idle(&args).await,
            Scenario::Unicast => scenarios::push(&args, false).await,
            Scenario::Fanout => scenarios::push(&args, true).await,
            Scenario::Receive => scenarios::receive(&args).await,
            Scenario::Storm => scenarios::storm(&args).await,
            Scenario::Outage => scenarios::outage(&args).await,
            Scenario::Cluster => scenarios::cluster(&args).await,
            Scenario::Channel => scenarios::channel(&args).await,
            Scenario::Batch => scenarios::batch(&args).await,
            Scenario::Compression => scenarios::compression(&args).await,
            Scenario::All => unreachable!("expanded above"),
        }
        .with_context(|| format!("scenario {scenario:?}"))?;
        for mut row in rows {
            row["server"] = json!(label);
            report(&args, &row)?;
        }
        // Let the previous server's sockets and memory go before the next one.
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    Ok(())
}

/// Prints a table and the JSON line; appends the line to `--json-out`.
fn report(args: &Args, row: &Value) -> Result<()> {
    let Value::Object(fields) = row else {
        anyhow::bail!("a result is a JSON object")
    };
    let title = match &row["offered_per_s"] {
        Value::Number(rate) if row["scenario"] != "receive" => {
            format!(
                "{} at {rate}/s offered",
                row["scenario"].as_str().unwrap_or("?")
            )
        }
        _ => row["scenario"].as_str().unwrap_or("?").to_string(),
    };
    let mut out = std::io::stdout().lock();
    writeln!(out, "\n== {title} ==")?;
    writeln!(out, "  {:<34} value", "metric")?;
    writeln!(out, "  {} {}", "-".repeat(34), "-".repeat(12))?;
    for (k, v) in fields {
        if k != "scenario" && !v.is_null() {
            writeln!(out, "  {k:<34} {v}")?;
        }
    }
    // `scenario` first, then the rest in name order.
    let mut line = format!("{{\"scenario\":{}", row["scenario"]);
    for (k, v) in fields.iter().filter(|(k, _)| *k != "scenario") {
        line.push_str(&format!(",{}:{}", Value::String(k.clone()), v));
    }
    line.push('}');
    writeln!(out, "{line}")?;
    out.flush()?;
    if let Some(path) = &args.json_out {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("opening {}", path.display()))?;
        writeln!(f, "{line}")?;
    }
    Ok(())
}
