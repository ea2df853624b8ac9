//! `herald`: the one binary. It runs the server (`serve`), checks and prints its configuration
//! (`config`), and is a client of a running server (`publish`, `tail`, `webhooks`, `bench`).
//!
//! # Layout
//! - [`cli`]: the clap declarations of every command and flag.
//! - [`serve`]: `herald serve`: configuration, logging, listener, signals, `herald_server::run`.
//! - [`config`]: `herald config check|print`, and the loading shared with `serve`.
//! - [`client`]: the HTTP client shared by the client commands, URLs, problem+json errors.
//! - [`publish`], [`tail`], [`webhooks`], [`bench`]: the client commands.
//! - [`limits`]: raising the open-file limit.
//!
//! Exit codes: 0 success, 1 failure (I/O, HTTP error, bind failure), 2 bad configuration or
//! bad arguments (clap's usage errors).

use std::{io::Write as _, process::ExitCode};

use clap::Parser as _;
use herald_server::config::ConfigError;

mod bench;
mod cli;
mod client;
mod config;
mod limits;
mod publish;
mod serve;
mod tail;
mod webhook_bench;
mod webhooks;

use cli::{Cli, Command};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return report(&anyhow::Error::new(e).context("starting the async runtime")),
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => serve::run(args).await,
            Command::Config(args) => config::run(args),
            Command::Publish(args) => publish::run(args).await,
            Command::Tail(args) => tail::run(args).await,
            Command::Webhooks(args) => webhooks::run(args).await,
            Command::Bench(args) => bench::run(args).await,
        }
    });
    // Subscribers and long polls may still be parked on sockets: do not wait for them.
    runtime.shutdown_background();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => report(&e),
    }
}

/// Prints an error as one line on stderr and picks the exit code: 2 for configuration errors,
/// 0 for a closed stdout (`herald tail ... | head`), 1 otherwise.
fn report(err: &anyhow::Error) -> ExitCode {
    let broken_pipe = err.chain().any(|e| {
        e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    });
    if broken_pipe {
        return ExitCode::SUCCESS;
    }
    let line = format!("{err:#}").replace(['\n', '\r'], " ");
    // If stderr itself is gone there is nobody left to tell.
    let _ = writeln!(std::io::stderr(), "herald: {line}");
    if err.chain().any(|e| e.is::<ConfigError>()) {
        ExitCode::from(2)
    } else {
        ExitCode::FAILURE
    }
}
