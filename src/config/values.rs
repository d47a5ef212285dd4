//! The named values a setting can take: network presets, log formats and log levels.

use std::fmt;
use std::str::FromStr;

/// A set of timeouts for a kind of network (`--network`, `[network] preset`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preset {
    Lan,
    Cloud,
    CrossBorder,
}

impl Preset {
    pub const NAMES: &str = "lan, cloud or cross-border";

    /// Connect and read timeouts in seconds (the original design's values).
    pub fn timeouts(self) -> (f64, f64) {
        match self {
            Preset::Lan => (10.0, 300.0),
            Preset::Cloud => (30.0, 600.0),
            Preset::CrossBorder => (60.0, 900.0),
        }
    }
}

impl FromStr for Preset {
    type Err = String;

    fn from_str(text: &str) -> Result<Preset, String> {
        match text {
            "lan" => Ok(Preset::Lan),
            "cloud" => Ok(Preset::Cloud),
            "cross-border" => Ok(Preset::CrossBorder),
            other => Err(format!(
                "unknown network preset {other:?}: use {}",
                Self::NAMES
            )),
        }
    }
}

impl fmt::Display for Preset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Preset::Lan => "lan",
            Preset::Cloud => "cloud",
            Preset::CrossBorder => "cross-border",
        })
    }
}

/// How log lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

impl LogFormat {
    pub const NAMES: &str = "text or json";
}

impl FromStr for LogFormat {
    type Err = String;

    fn from_str(text: &str) -> Result<LogFormat, String> {
        match text {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("unknown log format {other:?}: use {}", Self::NAMES)),
        }
    }
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        })
    }
}

/// The least severe log level written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    pub const NAMES: &str = "error, warn, info, debug or trace";
}

impl FromStr for LogLevel {
    type Err = String;

    fn from_str(text: &str) -> Result<LogLevel, String> {
        match text.to_ascii_lowercase().as_str() {
            "error" => Ok(LogLevel::Error),
            "warn" => Ok(LogLevel::Warn),
            "info" => Ok(LogLevel::Info),
            "debug" => Ok(LogLevel::Debug),
            "trace" => Ok(LogLevel::Trace),
            _ => Err(format!("unknown log level {text:?}: use {}", Self::NAMES)),
        }
    }
}

impl fmt::Display for LogLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_have_the_original_designs_timeouts() {
        assert_eq!("lan".parse::<Preset>().unwrap().timeouts(), (10.0, 300.0));
        assert_eq!("cloud".parse::<Preset>().unwrap().timeouts(), (30.0, 600.0));
        let cross = "cross-border".parse::<Preset>().unwrap();
        assert_eq!(cross.timeouts(), (60.0, 900.0));
        assert_eq!(cross.to_string(), "cross-border");
        assert!("wan".parse::<Preset>().is_err());
    }
}

/// The HTTP version of bulk transfers (`--transfer-http`, `[network] transfer_http`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TransferHttp {
    /// HTTP/1.1 only: one TCP connection per range.
    #[default]
    Http11,
    /// HTTP/2 when a TLS server offers it (ranges share one connection), else HTTP/1.1.
    Auto,
}

impl TransferHttp {
    pub const NAMES: &str = "1.1 or auto";
}

impl FromStr for TransferHttp {
    type Err = String;

    fn from_str(text: &str) -> Result<TransferHttp, String> {
        match text {
            "1.1" | "http1.1" => Ok(TransferHttp::Http11),
            "auto" | "2" => Ok(TransferHttp::Auto),
            other => Err(format!(
                "unknown HTTP version {other:?}: use {}",
                Self::NAMES
            )),
        }
    }
}

impl fmt::Display for TransferHttp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TransferHttp::Http11 => "1.1",
            TransferHttp::Auto => "auto",
        })
    }
}
