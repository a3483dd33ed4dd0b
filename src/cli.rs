//! Command-line flags: the Go server's (`-config=FILE`, `-config FILE`,
//! `-port`, `-sock`, `-log-level`, `-version`, `-gops-addr`) and the usual
//! `--` forms.
//!
//! Owns argument parsing only; the values go to `config::load` as overrides.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config::{self, Overrides, Source};

#[derive(Debug, Parser)]
#[command(
    name = "kuiperbelt",
    version,
    about = "WebSocket <-> HTTP/1.1 bridge for apps that cannot hold WebSockets"
)]
pub struct Cli {
    /// YAML config file (default: config.yml, skipped when absent).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// TCP port to listen on (overrides `port`).
    #[arg(long, conflicts_with = "sock")]
    pub port: Option<u16>,
    /// UNIX socket path to listen on instead of a port (overrides `sock`).
    #[arg(long, value_name = "PATH")]
    pub sock: Option<PathBuf>,
    /// debug, info, warn or error (overrides `log.level`).
    #[arg(long = "log-level", value_name = "LEVEL")]
    pub log_level: Option<String>,
    /// Validate the config, print it resolved, and exit.
    #[arg(long = "check-config")]
    pub check_config: bool,
    /// The Go server's debugging agent address: accepted and ignored.
    #[arg(long = "gops-addr", value_name = "ADDR", hide = true)]
    pub gops_addr: Option<String>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Talk to a running kuiperbelt's API: status, sessions, send, close, drain.
    Ctl(Box<crate::ctl::CtlArgs>),
    /// Run kuiperbelt with a demo chat app on loopback ports.
    Demo {
        /// Port of the proxy (0 picks a free one; the demo app always takes a free one).
        #[arg(long, default_value_t = 9180)]
        port: u16,
    },
}

/// Flags the Go server spells with one dash.
const GO_FLAGS: [&str; 8] = [
    "config",
    "port",
    "sock",
    "log-level",
    "version",
    "check-config",
    "gops-addr",
    "help",
];

/// Rewrites `-flag` and `-flag=value` to `--flag...` for the Go flag names.
pub fn normalize_args<I: IntoIterator<Item = OsString>>(args: I) -> Vec<OsString> {
    args.into_iter()
        .map(|arg| {
            let Some(s) = arg.to_str() else { return arg };
            let Some(rest) = s.strip_prefix('-') else {
                return arg;
            };
            if rest.starts_with('-') {
                return arg;
            }
            let name = rest.split('=').next().unwrap_or(rest);
            if GO_FLAGS.contains(&name) {
                OsString::from(format!("-{s}"))
            } else {
                arg
            }
        })
        .collect()
}

impl Cli {
    /// Parses the process arguments (Go forms included); exits on `--help`,
    /// `--version` or a usage error, as clap does.
    pub fn from_env() -> Cli {
        Cli::parse_from(normalize_args(std::env::args_os()))
    }

    pub fn source(&self) -> Source {
        match &self.config {
            Some(path) => Source::Explicit(path.clone()),
            None => Source::Default(config::default_path().to_path_buf()),
        }
    }

    pub fn overrides(&self) -> Overrides {
        Overrides {
            port: self.port,
            sock: self.sock.clone(),
            log_level: self.log_level.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(normalize_args(args.iter().map(OsString::from)))
    }

    #[test]
    fn go_single_dash_forms() {
        let cli = parse(&[
            "kuiperbelt",
            "-config=c.yml",
            "-port",
            "1234",
            "-log-level",
            "debug",
        ])
        .unwrap();
        assert_eq!(cli.config, Some(PathBuf::from("c.yml")));
        assert_eq!(cli.port, Some(1234));
        assert_eq!(cli.log_level.as_deref(), Some("debug"));
        let cli = parse(&["kuiperbelt", "-config", "c.yml", "-sock=/tmp/k.sock"]).unwrap();
        assert_eq!(cli.sock, Some(PathBuf::from("/tmp/k.sock")));
        let cli = parse(&["kuiperbelt", "--config", "c.yml", "--port=1"]).unwrap();
        assert_eq!(cli.port, Some(1));
    }

    #[test]
    fn gops_addr_is_accepted() {
        let cli = parse(&[
            "kuiperbelt",
            "-config=c.yml",
            "-gops-addr",
            "127.0.0.1:9999",
        ])
        .unwrap();
        assert_eq!(cli.gops_addr.as_deref(), Some("127.0.0.1:9999"));
        let cli = parse(&["kuiperbelt", "-gops-addr=:1234"]).unwrap();
        assert_eq!(cli.gops_addr.as_deref(), Some(":1234"));
    }

    #[test]
    fn ctl_subcommands() {
        let cli = parse(&[
            "kuiperbelt",
            "ctl",
            "--api",
            "http://127.0.0.1:1",
            "send",
            "a",
            "b",
            "--data",
            "x",
        ])
        .unwrap();
        let Some(Command::Ctl(ctl)) = cli.command else {
            panic!("ctl")
        };
        assert_eq!(ctl.api.as_deref(), Some("http://127.0.0.1:1"));
        assert!(
            matches!(ctl.command, crate::ctl::CtlCommand::Send { ref sessions, .. } if sessions == &["a", "b"])
        );
        assert!(
            parse(&["kuiperbelt", "ctl", "send"]).is_err(),
            "a session or a channel is required"
        );
        assert!(parse(&["kuiperbelt", "ctl", "send", "--channel", "room"]).is_ok());
        assert!(parse(&["kuiperbelt", "ctl", "drain", "--wait"]).is_ok());
    }

    #[test]
    fn port_and_sock_together_is_an_error() {
        assert!(parse(&["kuiperbelt", "-port", "1", "-sock", "/tmp/s"]).is_err());
    }

    #[test]
    fn version_flag() {
        let err = parse(&["kuiperbelt", "-version"]).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::DisplayVersion);
    }
}
