//! The server under test: writes its config, starts it as a child process
//! (ours by default, or any kuiperbelt-compatible command template), waits
//! for `/ping`, reads its RSS and CPU time from `/proc`, and kills it when
//! dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Clock ticks per second of `/proc/<pid>/stat` times (USER_HZ, 100 on Linux).
const TICKS_PER_SECOND: f64 = 100.0;
/// How long the server may take to answer `/ping` after it is started.
const START_LIMIT: Duration = Duration::from_secs(20);

/// Server settings the bench writes into the generated config.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub send_queue_size: usize,
    pub send_timeout_ms: u64,
    /// More config lines (the cluster scenario's `cluster:` section).
    pub extra_yaml: String,
}

pub struct Target {
    child: Child,
    pub port: u16,
    dir: PathBuf,
}

/// The `kuiperbelt` binary next to this one.
pub fn default_binary() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let bin = exe.with_file_name("kuiperbelt");
    if !bin.exists() {
        bail!(
            "{} not found: build it with `cargo build --release`, or pass --server-cmd",
            bin.display()
        );
    }
    Ok(bin)
}

impl Target {
    /// Starts the server with a config pointing its callbacks at `app_port`.
    /// `template` is a shell command line with `{config}` and `{port}`;
    /// `None` runs our binary. It is run as `sh -c 'exec …'`, so the child's
    /// pid is the server's own.
    pub async fn start(
        template: Option<&str>,
        app_port: u16,
        settings: &ServerSettings,
    ) -> Result<Target> {
        let port = free_port()?;
        let dir =
            std::env::temp_dir().join(format!("kuiperbelt-bench-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let config = dir.join("config.yml");
        let app = format!("http://127.0.0.1:{app_port}");
        std::fs::write(
            &config,
            format!(
                "port: {port}\nsuppress_access_log: true\n\
                 send_queue_size: {}\nsend_timeout: {}ms\n\
                 callback:\n  connect: {app}/connect\n  receive: {app}/receive\n  close: {app}/close\n{}",
                settings.send_queue_size, settings.send_timeout_ms, settings.extra_yaml
            ),
        )?;
        let command = match template {
            Some(t) => t
                .replace("{config}", &config.display().to_string())
                .replace("{port}", &port.to_string()),
            None => format!(
                "{} -config={}",
                default_binary()?.display(),
                config.display()
            ),
        };
        let log = std::fs::File::create(dir.join("server.log"))?;
        let child = Command::new("sh")
            .arg("-c")
            .arg(format!("exec {command}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {command:?}"))?;
        let mut target = Target { child, port, dir };
        let deadline = Instant::now() + START_LIMIT;
        while !ping(port).await {
            if let Some(status) = target.child.try_wait()? {
                bail!(
                    "server exited at start-up ({status}): {command}\n{}",
                    target.log_tail()
                );
            }
            if Instant::now() > deadline {
                bail!("server did not answer /ping on port {port} within {START_LIMIT:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(target)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident set size in KiB.
    pub fn rss_kib(&self) -> Result<u64> {
        rss_kib(&PathBuf::from(format!("/proc/{}/status", self.pid())))
    }

    /// Fails with the server's last log lines if it has exited.
    pub fn check_alive(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("server exited ({status})\n{}", self.log_tail());
        }
        Ok(())
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Whether `GET /ping` on `port` answers 200.
async fn ping(port: u16) -> bool {
    let exchange = async {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        s.write_all(b"GET /ping HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            .await?;
        let mut head = [0u8; 12];
        s.read_exact(&mut head).await?;
        std::io::Result::Ok(head.starts_with(b"HTTP/1.") && &head[8..12] == b" 200")
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(1), exchange).await,
        Ok(Ok(true))
    )
}

/// A free port below the ephemeral range, so no client socket of this or
/// an earlier run (in TIME_WAIT, say) can hold it when the server binds it.
pub fn free_port() -> Result<u16> {
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let (from, to) = (low.saturating_sub(12_000).max(1024), low.max(1025));
    for _ in 0..200 {
        let port = fastrand::u16(from..to);
        if std::net::TcpListener::bind(("0.0.0.0", port)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no free port in {from}..{to}")
}

pub fn rss_kib(status: &Path) -> Result<u64> {
    let text = std::fs::read_to_string(status)?;
    let line = text
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .context("no VmRSS line")?;
    Ok(line
        .split_whitespace()
        .nth(1)
        .context("no VmRSS value")?
        .parse()?)
}

/// utime + stime of a `/proc/<pid>/stat` file, in seconds.
pub fn cpu_seconds(stat: &Path) -> Result<f64> {
    let text = std::fs::read_to_string(stat)?;
    // Fields after the command name (which may contain spaces) start at `state`.
    let rest = &text[text.rfind(')').context("malformed stat")? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11).context("no utime")?.parse()?;
    let stime: f64 = fields.get(12).context("no stime")?.parse()?;
    Ok((utime + stime) / TICKS_PER_SECOND)
}

/// Server and bench CPU seconds and wall time at one instant.
pub struct Usage {
    server: f64,
    own: f64,
    wall: Instant,
}

/// CPU used between two [`Usage`] readings.
#[derive(Debug, Clone, Copy)]
pub struct Spent {
    /// Server CPU seconds.
    pub server: f64,
    /// Bench (load generator + fake app) CPU seconds.
    pub own: f64,
    /// Wall-clock seconds.
    pub wall: f64,
}

impl Usage {
    /// CPU so far of the server processes `pids` and of the bench.
    pub fn now(pids: &[u32]) -> Result<Usage> {
        let mut server = 0.0;
        for pid in pids {
            server += cpu_seconds(&PathBuf::from(format!("/proc/{pid}/stat")))?;
        }
        Ok(Usage {
            server,
            own: cpu_seconds(Path::new("/proc/self/stat"))?,
            wall: Instant::now(),
        })
    }

    pub fn since(&self, pids: &[u32]) -> Result<Spent> {
        let now = Usage::now(pids)?;
        Ok(Spent {
            server: now.server - self.server,
            own: now.own - self.own,
            wall: now.wall.duration_since(self.wall).as_secs_f64(),
        })
    }
}
