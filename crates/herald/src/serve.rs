//! `herald serve`: load and validate the configuration, set up logging, bind the listener,
//! raise the open-file limit, and run the server until SIGTERM or SIGINT.

use std::io::IsTerminal as _;

use anyhow::Context as _;
use herald_server::config::{Config, LogSection, Overrides};
use tokio::{
    net::TcpListener,
    signal::unix::{SignalKind, signal},
};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

use crate::cli::ServeArgs;

/// Runs the server until a signal asks it to stop.
///
/// # Errors
/// A configuration error (exit 2), a listener that cannot be bound, or a server failure.
pub(crate) async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let overrides = Overrides {
        listen: args.listen,
        data_dir: args.data_dir,
        memory: args.memory,
        nats: args.nats,
    };
    let config: Config = crate::config::load(args.config.file, overrides)?;
    init_tracing(&config.raw.log)?;

    // Install the handlers before serving, so a signal that arrives during start-up is not
    // lost (and does not kill the process with the default disposition).
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;

    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;

    match crate::limits::raise_nofile() {
        Some(l) => tracing::info!(
            soft = %crate::limits::show(l.soft),
            hard = %crate::limits::show(l.hard),
            "open-file limit (each connection uses one)"
        ),
        None => tracing::debug!("cannot read the open-file limit"),
    }

    let token = CancellationToken::new();
    let on_signal = token.clone();
    tokio::spawn(async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        tracing::info!(
            signal = name,
            "shutting down (send it again to exit at once)"
        );
        on_signal.cancel();
        tokio::select! {
            _ = term.recv() => {},
            _ = int.recv() => {},
        }
        tracing::warn!("second signal: exiting without waiting");
        std::process::exit(130);
    });

    herald_server::run(config, listener, token).await
}

/// Logs to stderr, as text or JSON per `log.format`, filtered by `RUST_LOG` when it is set and
/// valid, else by `log.level`.
fn init_tracing(log: &LogSection) -> anyhow::Result<()> {
    let filter = match EnvFilter::try_from_default_env() {
        Ok(f) => f,
        Err(_) => crate::config::level_filter(&log.level)?,
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let installed = if log.format == "json" {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
    installed.map_err(|e| anyhow::anyhow!("setting up logging: {e}"))
}
