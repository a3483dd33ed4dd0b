//! The `kuiperbelt` binary: parse flags, load and validate the config, set up
//! logging, bind, and run the library's server until SIGTERM or SIGINT.

use std::process::ExitCode;

use kuiperbelt::cli::{Cli, Command};
use kuiperbelt::server::{self, Listener};
use kuiperbelt::{config, logging};

/// Exit code for a config that cannot be used (sysexits' EX_CONFIG).
const EXIT_CONFIG: u8 = 78;
/// Exit code when the listener cannot be bound.
const EXIT_BIND: u8 = 70;

fn main() -> ExitCode {
    let cli = Cli::from_env();
    if let Some(Command::Demo { .. }) = cli.command {
        eprintln!("kuiperbelt: the demo is not available in this build");
        return ExitCode::from(2);
    }
    let config = match config::load(&cli.source(), &cli.overrides()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("kuiperbelt: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if cli.check_config {
        println!("config OK: listening on {}", config.describe_listen());
        return ExitCode::SUCCESS;
    }
    logging::init(&config.log);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async move {
        let listener = match Listener::bind(&config.listen).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!(
                    "kuiperbelt: cannot listen on {}: {e}",
                    config.describe_listen()
                );
                return ExitCode::from(EXIT_BIND);
            }
        };
        match server::run(config, listener, shutdown_signal()).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("kuiperbelt: {e}");
                ExitCode::FAILURE
            }
        }
    })
}

/// Resolves on the first SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = int.recv() => tracing::info!("SIGINT: shutting down"),
    }
}
