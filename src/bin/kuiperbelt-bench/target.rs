//! The server under test: writes its config, starts it as a child process
//! (ours by default, or any kuiperbelt-compatible command template), waits
//! for `/ping`, and reads its RSS and CPU time from `/proc`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// Clock ticks per second of `/proc/<pid>/stat` times (USER_HZ, 100 on Linux).
const TICKS_PER_SECOND: f64 = 100.0;

pub struct Target {
    child: Child,
    pub port: u16,
    config: PathBuf,
}

/// The `kuiperbelt` binary next to this one.
pub fn default_binary() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let bin = exe.with_file_name("kuiperbelt");
    if !bin.exists() {
        bail!(
            "{} not found: build it with `cargo build --release`",
            bin.display()
        );
    }
    Ok(bin)
}

impl Target {
    /// Starts the server with a config pointing its callbacks at `app_port`.
    /// `template` uses `{config}` and `{port}`; `None` runs our binary.
    pub async fn start(template: Option<&str>, app_port: u16, queue: usize) -> Result<Target> {
        let port = free_port()?;
        let config = std::env::temp_dir().join(format!(
            "kuiperbelt-bench-{}-{port}.yml",
            std::process::id()
        ));
        std::fs::write(
            &config,
            format!(
                "port: {port}\nsuppress_access_log: true\nsend_queue_size: {queue}\nsend_timeout: 5s\n\
                 callback:\n  connect: http://127.0.0.1:{app_port}/connect\n  \
                 receive: http://127.0.0.1:{app_port}/receive\n  close: http://127.0.0.1:{app_port}/close\n"
            ),
        )?;
        let argv = match template {
            Some(t) => t
                .split_whitespace()
                .map(|a| {
                    a.replace("{config}", &config.display().to_string())
                        .replace("{port}", &port.to_string())
                })
                .collect::<Vec<_>>(),
            None => vec![
                default_binary()?.display().to_string(),
                format!("-config={}", config.display()),
            ],
        };
        let child = Command::new(&argv[0])
            .args(&argv[1..])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {:?}", argv))?;
        let mut target = Target {
            child,
            port,
            config,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            if let Some(status) = target.child.try_wait()? {
                bail!("server exited at start-up: {status}");
            }
            if Instant::now() > deadline {
                bail!("server did not listen on {port} within 20 s");
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

    /// User + system CPU seconds so far.
    pub fn cpu_seconds(&self) -> Result<f64> {
        cpu_seconds(&PathBuf::from(format!("/proc/{}/stat", self.pid())))
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.config);
    }
}

/// A port free on all interfaces, below the ephemeral range (32768 and up
/// on Linux), so it cannot collide with the client sockets' source ports.
pub fn free_port() -> Result<u16> {
    for _ in 0..200 {
        let port = fastrand::u16(20_000..32_000);
        if std::net::TcpListener::bind(("0.0.0.0", port)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no free port in 20000..32000")
}

fn rss_kib(status: &Path) -> Result<u64> {
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

/// CPU seconds of this process (the load generator).
pub fn own_cpu_seconds() -> Result<f64> {
    cpu_seconds(Path::new("/proc/self/stat"))
}
