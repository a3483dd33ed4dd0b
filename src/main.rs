//! The `kuiperbelt` binary: parse flags, load and validate the config, set up
//! logging, bind, and run the library's server until SIGTERM or SIGINT, which
//! start the drain; a second signal exits at once.

use std::process::ExitCode;

use kuiperbelt::cli::{Cli, Command};
use kuiperbelt::{config, logging, Listeners};

/// Exit code for a config that cannot be used (sysexits' EX_CONFIG).
const EXIT_CONFIG: u8 = 78;
/// Exit code when a listener cannot be bound.
const EXIT_BIND: u8 = 70;
/// Exit code when a second signal cuts the drain short.
const EXIT_SECOND_SIGNAL: i32 = 130;

fn main() -> ExitCode {
    let cli = Cli::from_env();
    match cli.command {
        Some(Command::Demo { port }) => return run_demo(port),
        Some(Command::Ctl(args)) => return kuiperbelt::ctl::run(*args),
        None => {}
    }
    let config = match config::load(&cli.source(), &cli.overrides()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("kuiperbelt: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if cli.check_config {
        println!("# config OK: listening on {}", config.describe_listen());
        print!("{}", config.to_yaml());
        return ExitCode::SUCCESS;
    }
    logging::init(config.log());
    if let Some(addr) = &cli.gops_addr {
        tracing::info!(gops_addr = %addr, "-gops-addr is accepted for the Go server's command lines and ignored: its Go debugging agent has no equivalent here");
    }
    raise_fd_limit();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async move {
        let listeners = match Listeners::bind(&config) {
            Ok(l) => l,
            Err(e) => {
                eprintln!(
                    "kuiperbelt: cannot listen ({}): {e}",
                    config.describe_listen()
                );
                return ExitCode::from(EXIT_BIND);
            }
        };
        match kuiperbelt::run_with(config, listeners, shutdown_signal()).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("kuiperbelt: {e}");
                ExitCode::FAILURE
            }
        }
    })
}

/// `kuiperbelt demo`: proxy and chat app on loopback until Ctrl-C.
fn run_demo(port: u16) -> ExitCode {
    logging::init(&logging::LogConfig {
        level: "warn".into(),
        format: logging::LogFormat::Text,
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async move {
        let demo = match kuiperbelt::demo::start(port).await {
            Ok(d) => d,
            Err(e) => {
                eprintln!(
                    "kuiperbelt: cannot start the demo on port {port}: {e} (try `demo --port 0`)"
                );
                return ExitCode::from(EXIT_BIND);
            }
        };
        println!(
            "kuiperbelt demo: open {} in two browser windows",
            demo.page_url
        );
        println!("  proxy (WebSockets, push API): http://{}", demo.proxy);
        println!("  chat app (page, callbacks):   http://{}", demo.app);
        println!("Press Ctrl-C to stop.");
        let _ = tokio::signal::ctrl_c().await;
        match demo.shutdown().await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("kuiperbelt: {e}");
                ExitCode::FAILURE
            }
        }
    })
}

/// Resolves on the first SIGTERM or SIGINT (the drain then runs); a second
/// one exits the process at once.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: draining (a second signal exits at once)"),
        _ = int.recv() => tracing::info!("SIGINT: draining (a second signal exits at once)"),
    }
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        tracing::warn!("second signal: exiting without finishing the drain");
        std::process::exit(EXIT_SECOND_SIGNAL);
    });
}

/// Raises the open-file soft limit to the hard limit: every connection is a
/// file descriptor, and distributions default the soft limit to 1024.
fn raise_fd_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => tracing::debug!(limit, "open-file limit"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the open-file limit"),
    }
}
