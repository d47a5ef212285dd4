//! `claudedl-mock`: runs the fake Claude API of [`claudedl_mock::api`] until Ctrl-C.
//!
//! ```text
//! claudedl-mock [--port N] [--files N] [--content-bytes N] [--seed N] [--demo] [--rpm N] [--no-ranges]
//! ```
//!
//! Prints one line, `base_url=http://127.0.0.1:PORT api_key=KEY`, once it is listening.

use std::io::Write as _;
use std::process::ExitCode;

use claudedl_mock::api::{FileSet, MockApi, MockApiConfig, demo_config};

const USAGE: &str = "usage: claudedl-mock [--port N] [--files N] [--content-bytes N] [--seed N] \
                     [--demo] [--rpm N] [--no-ranges]";

/// Command-line options.
#[derive(Debug)]
struct Options {
    port: u16,
    files: usize,
    content_bytes: usize,
    seed: u64,
    demo: bool,
    rpm: Option<u32>,
    no_ranges: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            port: 0,
            files: 100,
            content_bytes: 1024,
            seed: 0,
            demo: false,
            rpm: None,
            no_ranges: false,
        }
    }
}

impl Options {
    fn parse(mut args: impl Iterator<Item = String>) -> Result<Options, String> {
        let mut options = Options::default();
        while let Some(arg) = args.next() {
            let mut value = || args.next().ok_or_else(|| format!("{arg} needs a value"));
            match arg.as_str() {
                "--port" => options.port = number(&arg, &value()?)?,
                "--files" => options.files = number(&arg, &value()?)?,
                "--content-bytes" => options.content_bytes = number(&arg, &value()?)?,
                "--seed" => options.seed = number(&arg, &value()?)?,
                "--rpm" => options.rpm = Some(number(&arg, &value()?)?),
                "--demo" => options.demo = true,
                "--no-ranges" => options.no_ranges = true,
                "-h" | "--help" => return Err(USAGE.to_owned()),
                _ => return Err(format!("unknown argument {arg:?}\n{USAGE}")),
            }
        }
        Ok(options)
    }

    fn config(&self) -> MockApiConfig {
        let mut config = if self.demo {
            demo_config()
        } else {
            MockApiConfig::new(FileSet::Generated {
                count: self.files,
                seed: self.seed,
                content_len: self.content_bytes,
            })
        };
        config.rate_limit = self.rpm;
        if self.no_ranges {
            config = config.without_ranges();
        }
        config
    }
}

fn number<T: std::str::FromStr>(flag: &str, value: &str) -> Result<T, String> {
    value
        .parse()
        .map_err(|_| format!("{flag}: not a valid number: {value:?}"))
}

#[tokio::main]
async fn main() -> ExitCode {
    let options = match Options::parse(std::env::args().skip(1)) {
        Ok(options) => options,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    let api = match MockApi::bind(options.config(), options.port).await {
        Ok(api) => api,
        Err(error) => {
            eprintln!(
                "claudedl-mock: cannot listen on port {}: {error}",
                options.port
            );
            return ExitCode::FAILURE;
        }
    };
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(
        stdout,
        "base_url={} api_key={}",
        api.base_url(),
        api.api_key()
    );
    let _ = stdout.flush();
    drop(stdout);
    let _ = tokio::signal::ctrl_c().await;
    ExitCode::SUCCESS
}
