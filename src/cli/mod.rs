//! The command line: parse, run, map the outcome to an exit code.
//!
//! Exit codes: 0 all succeeded, 1 some failed, 2 usage error, 130 interrupted (state saved).

mod api;
mod args;
mod config_cmd;
mod crypt;
mod get;
pub mod logging;
mod network;
mod progress;
mod settings;
mod sync;
mod verify;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;

pub use args::{Cli, Command};

use crate::config::{LogFormat, Settings};

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
    /// Every setting, resolved once from the command line, the environment and the file.
    pub settings: Settings,
}

impl GlobalArgs {
    /// Whether progress bars may be drawn: not with `-q`, not while JSON logs take stderr, not
    /// when stderr is no terminal, and not when the command prints `json` on stdout.
    pub fn bars_visible(&self, json: bool) -> bool {
        !json && self.human_stderr() && std::io::stderr().is_terminal()
    }

    /// Whether stderr is for people: not with `-q`, nor while JSON logs take it.
    pub fn human_stderr(&self) -> bool {
        let json_logs_on_stderr =
            self.settings.log_format.value == LogFormat::Json && self.settings.log_file.is_none();
        !self.quiet && !json_logs_on_stderr
    }
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
    let global = match start(&cli) {
        Ok(global) => global,
        Err(status) => return status.into(),
    };
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
    let result = runtime.block_on(async {
        match cli.command {
            Command::Get(args) => get::run(args, &global).await,
            Command::Files(command) => api::files(command, &global).await,
            Command::Batches(command) => api::batches(command, &global).await,
            Command::Sync(args) => sync::sync(args, &global).await,
            Command::Ls(args) => sync::ls(args, &global),
            Command::Demo(args) => sync::demo(args, &global).await,
            Command::Verify(args) => verify::run(args, &global).await,
            Command::Config(command) => config_cmd::run(command, &global),
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

/// Read the config file, resolve the settings and start logging; tell the user what the file
/// needs fixing.
fn start(cli: &Cli) -> Result<GlobalArgs, ExitStatus> {
    let loaded = settings::load(cli).map_err(|error| {
        eprintln!("error: {error}");
        ExitStatus::Usage
    })?;
    let logging = logging::init(&loaded.settings, cli.quiet).map_err(|error| {
        eprintln!("error: {error:#}");
        ExitStatus::Usage
    })?;
    for note in loaded.file.iter().flat_map(|f| &f.notes) {
        tracing::info!(event = "config_note", "{note}");
    }
    for warning in loaded.file.iter().flat_map(|f| &f.warnings) {
        tracing::warn!(event = "config_warning", "{warning}");
        if !logging.on_stderr && !cli.quiet {
            eprintln!("warning: {warning}");
        }
    }
    Ok(GlobalArgs {
        quiet: cli.quiet,
        settings: loaded.settings,
    })
}
