//! The command line: parse, run, map the outcome to an exit code.
//!
//! Exit codes: 0 all succeeded, 1 some failed, 2 usage error, 130 interrupted (state saved).

mod api;
mod args;
mod crypt;
mod get;
mod progress;
mod sync;

use std::process::ExitCode;

use clap::Parser;

pub use args::{Cli, Command};

/// How a run ended, ordered by severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ExitStatus {
    Success,
    Failure,
    Usage,
    Interrupted,
}

impl From<ExitStatus> for ExitCode {
    fn from(status: ExitStatus) -> ExitCode {
        ExitCode::from(match status {
            ExitStatus::Success => 0,
            ExitStatus::Failure => 1,
            ExitStatus::Usage => 2,
            ExitStatus::Interrupted => 130,
        })
    }
}

/// A mistake in how the command was called (exit code 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// Options every subcommand sees.
pub struct GlobalArgs {
    pub quiet: bool,
}

pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            let _ = error.print();
            return if error.use_stderr() {
                ExitStatus::Usage.into()
            } else {
                ExitStatus::Success.into()
            };
        }
    };
    init_logging(cli.verbose);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitStatus::Failure.into();
        }
    };
    let global = GlobalArgs { quiet: cli.quiet };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Get(args) => get::run(args, &global).await,
            Command::Files(command) => api::files(command, &global).await,
            Command::Batches(command) => api::batches(command, &global).await,
            Command::Sync(args) => sync::sync(args, &global).await,
            Command::Ls(args) => sync::ls(args),
            Command::Demo(args) => sync::demo(args, &global).await,
            Command::Decrypt(args) => crypt::decrypt(args),
        }
    });
    match result {
        Ok(status) => status.into(),
        Err(error) => {
            eprintln!("error: {error:#}");
            let usage = error.downcast_ref::<UsageError>().is_some();
            if usage {
                ExitStatus::Usage
            } else {
                ExitStatus::Failure
            }
            .into()
        }
    }
}

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("CLAUDEDL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("claudedl={default}")));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
