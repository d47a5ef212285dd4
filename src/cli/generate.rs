//! `claudedl completions SHELL` and `claudedl man`: generated from the clap definitions, so
//! they list every command and flag as `--help` does.

use std::process::ExitCode;

use clap::CommandFactory;

use super::args::Cli;
use super::exit::ExitStatus;

pub fn completions(shell: clap_complete::Shell) -> ExitCode {
    let mut command = Cli::command();
    clap_complete::generate(shell, &mut command, "claudedl", &mut std::io::stdout());
    ExitStatus::Success.into()
}

pub fn man() -> ExitCode {
    let page = clap_mangen::Man::new(Cli::command());
    match page.render(&mut std::io::stdout()) {
        Ok(()) => ExitStatus::Success.into(),
        Err(error) => {
            eprintln!("error: writing the man page: {error}");
            ExitStatus::Failure.into()
        }
    }
}
