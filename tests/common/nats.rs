//! A real `nats-server` (Debian's package) on a free port of 127.0.0.1, for
//! the cluster tests: stopped and restarted on the same port, killed when
//! dropped.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{free_port, wait_listening};

const NATS: &str = "/usr/sbin/nats-server";

/// A `nats-server` on 127.0.0.1, killed when dropped.
pub struct Nats {
    child: Option<Child>,
    pub port: u16,
    args: Vec<String>,
}

impl Nats {
    pub async fn start() -> Nats {
        Nats::start_with(free_port(), vec![]).await
    }

    pub async fn start_with(port: u16, extra: Vec<String>) -> Nats {
        assert!(
            std::path::Path::new(NATS).exists(),
            "{NATS} is needed: bash .ci/install.sh installs Debian's nats-server"
        );
        let mut nats = Nats {
            child: None,
            port,
            args: extra,
        };
        nats.restart().await;
        nats
    }

    /// Starts (again) on the same port.
    pub async fn restart(&mut self) {
        let child = Command::new(NATS)
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string()])
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        assert!(
            wait_listening(self.port, Duration::from_secs(10)).await,
            "nats-server never listened"
        );
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        self.stop();
    }
}
