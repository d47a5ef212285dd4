//! Settings from a config file, the environment and the command line, each value with where it
//! came from.
//!
//! - [`file`](mod@file): finding the file (`--config`, `./claudedl.toml`, the XDG config directory),
//!   reading TOML or the original design's INI, and the permission check for a key on disk;
//! - [`schema`]: the sections and keys a file may hold, read into a [`Layer`] with errors
//!   naming the key, its section and the file;
//! - [`resolve`]: layering (command line > environment > file > network preset > default) into
//!   [`Settings`], where every value is a [`Setting`] that knows its [`Source`];
//! - [`defaults`]: every default, in one table;
//! - `database`: the fleet's PostgreSQL database (`--db`, `$CLAUDEDL_DB`, `$PGPASSWORD`);
//! - [`network`]: the network settings as the typed values the engine, the HTTP client, the
//!   governor and the API client are built from, and the request budget of each kind of
//!   traffic.
//!
//! [`load`] is the one resolution of a run. This module is the one reader of the environment
//! (besides the log filter), and imports nothing from `api`, `engine` or `http`. Nothing here
//! prints or logs: warnings are returned for the caller to show.

mod database;
pub mod defaults;
pub mod file;
mod ini;
pub mod network;
mod resolve;
pub mod schema;
mod secret;
mod values;

use std::path::{Path, PathBuf};

pub use database::{DB_VAR, Database, DatabaseError, PASSWORD_VAR, redacted as redacted_db};
pub use file::{ConfigFile, Format};
pub use network::{Network, Tls, Traffic, http_url, proxy_url};
pub use resolve::{AUTH_TOKEN_VAR, BASE_URL_VAR, KEY_VAR, RPM_VAR, Settings, env_rpm, resolve};
pub use schema::Layer;
pub use secret::Secret;
pub use values::{LogFormat, LogLevel, Preset, TransferHttp};

/// Settings and what reading the file had to say.
#[derive(Debug)]
pub struct Loaded {
    pub settings: Settings,
    /// The file read, with its warnings and notes.
    pub file: Option<ConfigFile>,
}

/// Find and read the config file (`config_path`, else the usual places), check the
/// environment, and resolve every setting over `flags` (what the command line set).
pub fn load(flags: &Layer, config_path: Option<&Path>) -> Result<Loaded, ConfigError> {
    let file = file::locate(config_path, env_var)
        .map(|path| file::load(&path))
        .transpose()?;
    env_rpm(env_var)?;
    let settings = resolve(flags, env_var, file.as_ref());
    Ok(Loaded { settings, file })
}

/// A variable of the process environment (unset and not Unicode alike: `None`).
#[allow(clippy::disallowed_methods)] // The one place the environment is read.
fn env_var(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// Where a value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A command-line flag.
    Cli(&'static str),
    /// An environment variable.
    Env(String),
    /// The config file.
    File(PathBuf),
    /// A network preset (`--network`, `[network] preset`).
    Preset(Preset),
    Default,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Cli(flag) => write!(f, "cli {flag}"),
            Source::Env(name) => write!(f, "env {name}"),
            Source::File(path) => write!(f, "file {}", path.display()),
            Source::Preset(preset) => write!(f, "preset {preset}"),
            Source::Default => f.write_str("default"),
        }
    }
}

/// A value and where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Setting<T> {
    pub value: T,
    pub source: Source,
}

impl<T> Setting<T> {
    pub fn new(value: T, source: Source) -> Setting<T> {
        Setting { value, source }
    }

    pub fn default_value(value: T) -> Setting<T> {
        Setting::new(value, Source::Default)
    }
}

/// Why a config file cannot be used. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("${name}={value:?}: expected {expected}")]
    BadEnv {
        name: &'static str,
        value: String,
        expected: &'static str,
    },
    #[error("cannot read the config file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: invalid TOML: {message}", path.display())]
    Toml { path: PathBuf, message: String },
    #[error("{}: invalid INI: {message}", path.display())]
    Ini { path: PathBuf, message: String },
    #[error("{}: unknown section [{section}] (known: {known})", path.display())]
    UnknownSection {
        path: PathBuf,
        section: String,
        known: String,
    },
    #[error("{}: unknown key `{key}` in section [{section}] (known: {known})", path.display())]
    UnknownKey {
        path: PathBuf,
        section: String,
        key: String,
        known: String,
    },
    #[error("{}: key `{key}` is outside any section; put it under [auth], [network], [storage], [crypt] or [log]", path.display())]
    OutsideSection { path: PathBuf, key: String },
    #[error("{}: [{section}] {key}: expected {expected}, found {found}", path.display())]
    Invalid {
        path: PathBuf,
        section: String,
        key: String,
        expected: String,
        found: String,
    },
    #[error("{}: [{section}] sets both `{first}` and `{second}`; keep one", path.display())]
    Conflict {
        path: PathBuf,
        section: &'static str,
        first: &'static str,
        second: &'static str,
    },
}
