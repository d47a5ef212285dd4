//! `claudedl completions SHELL` and `claudedl man`: generated from the clap definitions, so
//! they list every command and flag as `--help` does.

use std::io::Write;
use std::process::ExitCode;

use clap::CommandFactory;

use super::args::Cli;
use super::exit::ExitStatus;

pub fn completions(shell: clap_complete::Shell) -> ExitCode {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "claudedl", &mut script);
    print(&script)
}

pub fn man() -> ExitCode {
    let mut page = Vec::new();
    match clap_mangen::Man::new(Cli::command()).render(&mut page) {
        Ok(()) => print(&page),
        Err(error) => {
            eprintln!("error: rendering the man page: {error}");
            ExitStatus::Failure.into()
        }
    }
}

/// Write `bytes` to stdout; a reader that stops early (`| head`) is no error.
fn print(bytes: &[u8]) -> ExitCode {
    match std::io::stdout().write_all(bytes) {
        Ok(()) => ExitStatus::Success.into(),
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => ExitStatus::Success.into(),
        Err(error) => {
            eprintln!("error: writing to stdout: {error}");
            ExitStatus::Failure.into()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every visible flag and argument of every command has help, and every leaf command's
    /// long help has examples.
    #[test]
    fn every_flag_has_help_and_every_command_examples() {
        fn visit(command: &clap::Command, path: &str, missing: &mut Vec<String>) {
            let path = format!("{path} {}", command.get_name());
            for arg in command.get_arguments() {
                let builtin = matches!(arg.get_id().as_str(), "help" | "version");
                if !arg.is_hide_set() && !builtin && arg.get_help().is_none() {
                    missing.push(format!("{path}: {} has no help", arg.get_id()));
                }
            }
            let leaf = command.get_subcommands().next().is_none();
            let examples = command
                .get_after_long_help()
                .is_some_and(|h| h.to_string().contains("Example"));
            if leaf && !examples && command.get_name() != "help" {
                missing.push(format!("{path}: no examples in the long help"));
            }
            for sub in command.get_subcommands() {
                visit(sub, &path, missing);
            }
        }
        let mut missing = Vec::new();
        visit(&Cli::command(), "", &mut missing);
        assert!(missing.is_empty(), "{missing:#?}");
    }
}
