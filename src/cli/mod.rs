//! The command line: parse, resolve the settings once, run the command, map the outcome to an
//! exit code.
//!
//! Exit codes: see `exit` (the one table).
//!
//! - `args`: every clap type, and the layer of settings the flags set;
//! - `common`: what the commands share (the client, engine and API client built from the
//!   settings, the index, Ctrl-C, printing results, the traffic report);
//! - `encrypt`: the encryption the flags and the config file ask for;
//! - `logging`, `progress`: log lines and progress bars on stderr;
//! - one file per command.
//!
//! Imports run one way: commands → `common`/`encrypt` → `args`, `progress` → `logging`.

mod args;
mod batches;
mod common;
mod config;
mod decrypt;
#[cfg(feature = "demo")]
mod demo;
mod encrypt;
mod exit;
mod files;
mod fleet;
mod generate;
mod get;
mod logging;
mod ls;
mod pipe;
mod progress;
mod sync;
mod verify;

use std::process::ExitCode;

use clap::Parser;

use args::{Cli, Command};
use common::GlobalArgs;
use exit::ExitStatus;

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
    match &cli.command {
        Command::Completions { shell } => return generate::completions(*shell),
        Command::Man => return generate::man(),
        _ => {}
    }
    let global = match start(&cli) {
        Ok(global) => global,
        Err(status) => return status.into(),
    };
    // Before any other thread exists (see `reserve_open_files`).
    claudedl::engine::reserve_open_files();
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
            Command::Files(command) => files::run(command, &global).await,
            Command::Batches(command) => batches::run(command, &global).await,
            Command::Sync(args) => sync::run(args, &global).await,
            Command::Ls(args) => ls::run(args, &global),
            #[cfg(feature = "demo")]
            Command::Demo(args) => demo::run(args, &global).await,
            Command::Verify(args) => verify::run(args, &global).await,
            Command::Config(command) => config::run(command, &global),
            Command::Fleet(command) => fleet::run(command, &global).await,
            Command::Enqueue(args) => fleet::enqueue(args, &global).await,
            Command::Worker(args) => fleet::worker(args, &global).await,
            Command::Decrypt(args) => decrypt::run(args),
            Command::Completions { .. } | Command::Man => Ok(ExitStatus::Success),
        }
    });
    match result {
        Ok(status) => status.into(),
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitStatus::of_error(&error).into()
        }
    }
}

/// Read the config file, resolve the settings (once) and start logging; tell the user what the
/// file needs fixing.
fn start(cli: &Cli) -> Result<GlobalArgs, ExitStatus> {
    let loaded =
        claudedl::config::load(&cli.layer(), cli.settings.config.as_deref()).map_err(|error| {
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
        network: loaded.settings.network(),
        settings: loaded.settings,
    })
}
