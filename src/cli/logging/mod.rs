//! Logs: text or JSON lines, to stderr or a file, never garbling the progress bars.
//!
//! The level: `-v` (info) / `-vv` (debug), else `$CLAUDEDL_LOG` (a `tracing` filter such as
//! `claudedl=debug`), else `[log] level`, else `info` when logs are JSON or go to a file and
//! `warn` on stderr (`error` with `-q`). Text on a terminal is coloured unless `NO_COLOR` is set.
//! On stderr, each line is written with the bars suspended (see [`route_through`]).

mod json;

use std::fs::{File, OpenOptions};
use std::io::{IsTerminal, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use indicatif::MultiProgress;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use claudedl::config::{LogFormat, LogLevel, Settings, Source};

pub use json::{JsonLayer, stamp_every_line};

/// The variable holding a log filter.
pub const FILTER_VAR: &str = "CLAUDEDL_LOG";

/// Bars that log lines on stderr are printed above, while some are drawn.
static BARS: Mutex<Option<MultiProgress>> = Mutex::new(None);

/// Route stderr log lines through `bars` (or straight to stderr with `None`).
pub fn route_through(bars: Option<MultiProgress>) {
    *BARS.lock().unwrap() = bars;
}

/// Where log lines go.
#[derive(Clone)]
pub enum Sink {
    /// Stderr, above any bars.
    Stderr,
    File(Arc<Mutex<File>>),
}

impl Sink {
    fn open(path: &Path) -> anyhow::Result<Sink> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("cannot open the log file {}", path.display()))?;
        Ok(Sink::File(Arc::new(Mutex::new(file))))
    }
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.write_all(buf)?;
        Ok(buf.len())
    }

    /// Each call carries one whole log line.
    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        match self {
            Sink::File(file) => file.lock().unwrap().write_all(buf),
            Sink::Stderr => {
                let bars = BARS.lock().unwrap().clone();
                let write = || std::io::stderr().lock().write_all(buf);
                match bars {
                    Some(bars) => bars.suspend(write),
                    None => write(),
                }
            }
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Sink::File(file) => file.lock().unwrap().flush(),
            Sink::Stderr => std::io::stderr().flush(),
        }
    }
}

impl<'a> MakeWriter<'a> for Sink {
    type Writer = Sink;

    fn make_writer(&'a self) -> Sink {
        self.clone()
    }
}

/// Whether logs take stderr (so the caller knows where warnings already go).
pub struct Logging {
    pub on_stderr: bool,
}

/// Install the process's subscriber.
pub fn init(settings: &Settings, quiet: bool) -> anyhow::Result<Logging> {
    let sink = match &settings.log_file {
        Some(file) => Sink::open(&file.value)?,
        None => Sink::Stderr,
    };
    let on_stderr = matches!(sink, Sink::Stderr);
    let json = settings.log_format.value == LogFormat::Json;
    let filter = filter(settings, quiet, json || !on_stderr);
    let registry = tracing_subscriber::registry().with(filter);
    if json {
        registry.with(JsonLayer::new(sink)).init();
    } else {
        let ansi = on_stderr && std::io::stderr().is_terminal() && colours_allowed();
        let text = tracing_subscriber::fmt::layer()
            .with_writer(sink)
            .with_ansi(ansi);
        registry.with(text).init();
    }
    Ok(Logging { on_stderr })
}

/// `-v` > `$CLAUDEDL_LOG` > `[log] level` > the default for the destination.
fn filter(settings: &Settings, quiet: bool, for_machines: bool) -> EnvFilter {
    let level = settings.log_level.as_ref();
    let from_flags = level.filter(|l| matches!(l.source, Source::Cli(_)));
    if let Some(level) = from_flags {
        return directive(level.value);
    }
    if let Ok(filter) = EnvFilter::try_from_env(FILTER_VAR) {
        return filter;
    }
    let default = match (quiet, for_machines) {
        (_, true) => LogLevel::Info,
        (true, false) => LogLevel::Error,
        (false, false) => LogLevel::Warn,
    };
    directive(level.map_or(default, |l| l.value))
}

fn directive(level: LogLevel) -> EnvFilter {
    EnvFilter::new(format!("claudedl={level}"))
}

/// No colours when `NO_COLOR` is set to anything but the empty string (no-color.org).
pub fn colours_allowed() -> bool {
    std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}
