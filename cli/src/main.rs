//! `tcpnet`: see, join and check tcpnet clusters on a LAN.
//!
//! | module | what it holds |
//! |---|---|
//! | `args` | the command line (clap): subcommands, options, `--help` examples |
//! | `browse` | `tcpnet browse`: the nodes announced on the LAN, live or once |
//! | `join` | `tcpnet join`: stdin to the cluster, messages to stdout |
//! | `members` | `tcpnet members`: the membership view of a cluster |
//! | `ping` | `tcpnet ping`: round trips to a cluster's nodes |
//! | `doctor` | `tcpnet doctor`: checks of this host, with a fix for each problem |
//! | `node` | running a node for the commands that join: settings, secret, waiting for links |
//! | `table` | aligned text tables |
//! | `term` | terminal detection and the progress line |
//!
//! Exit status: 0 when all went well, 1 when something failed (a line not
//! sent, a problem found), 2 for a bad command line.

use std::process::ExitCode;

use clap::{CommandFactory, Parser};

mod args;
mod browse;
mod doctor;
mod join;
mod members;
mod node;
mod ping;
mod table;
mod term;

use args::{Cli, Command};

/// Why a command did not succeed.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The command line asks for something impossible (exit status 2).
    Usage(String),
    /// Something failed while running (exit status 1).
    Error(String),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // tcpnet's own logs, on stderr, only when asked for (RUST_LOG=debug).
    if let Ok(filter) = tracing_subscriber::EnvFilter::try_from_default_env() {
        tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .with_env_filter(filter)
            .init();
    }
    if let Command::Completions { shell } = cli.command {
        let mut cmd = Cli::command();
        clap_complete::generate(shell, &mut cmd, "tcpnet", &mut std::io::stdout());
        return ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tcpnet: error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(async {
        match cli.command {
            Command::Browse(args) => browse::run(args).await,
            Command::Join(args) => join::run(args).await,
            Command::Ping(args) => ping::run(args).await,
            Command::Members(args) => members::run(args).await,
            Command::Doctor(args) => doctor::run(args).await,
            Command::Completions { .. } => unreachable!("handled above"),
        }
    });
    // Nothing left to wait for: a thread blocked reading stdin must not keep
    // the process alive.
    runtime.shutdown_background();
    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(Failure::Usage(msg)) => {
            eprintln!("tcpnet: error: {msg}");
            ExitCode::from(2)
        }
        Err(Failure::Error(msg)) => {
            eprintln!("tcpnet: error: {msg}");
            ExitCode::FAILURE
        }
    }
}

/// Ctrl-C or SIGTERM.
pub(crate) async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
