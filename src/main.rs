//! The `claudedl` binary: the command line over the `claudedl` library.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
