//! The command line's layer of settings, and [`Settings`] turned into what the commands use.
//!
//! [`load`] runs once in `cli::main`: it finds and reads the config file, then resolves the
//! flags of the command being run, the environment and the file (see [`crate::config`]).

use std::path::PathBuf;

use super::args::{
    ApiArgs, BatchesCommand, Cli, Command, ConfigCommand, DataArgs, FilesCommand, LsArgs,
    NetworkArgs, SettingsArgs,
};
use crate::config::{self, ConfigError, ConfigFile, Layer, LogLevel, Settings};

/// Settings and what reading the file had to say.
pub struct Loaded {
    pub settings: Settings,
    pub file: Option<ConfigFile>,
}

/// Read the config file and resolve every setting for this command line.
pub fn load(cli: &Cli) -> Result<Loaded, ConfigError> {
    let var = |name: &str| std::env::var(name).ok();
    let file = config::file::locate(cli.settings.config.as_deref(), var)
        .map(|path| config::file::load(&path))
        .transpose()?;
    config::env_rpm(var)?;
    let settings = config::resolve(&cli_layer(cli), var, file.as_ref());
    Ok(Loaded { settings, file })
}

/// What the flags of this command line set.
fn cli_layer(cli: &Cli) -> Layer {
    let (api, data) = command_args(&cli.command);
    let network = match &cli.command {
        Command::Get(get) => Some(&get.network),
        _ => api.map(|api| &api.network),
    };
    let SettingsArgs {
        preset,
        log_format,
        log_file,
        ..
    } = &cli.settings;
    Layer {
        base_url: api.and_then(|api| api.base_url.clone()),
        data_dir: data.and_then(|data| data.data_dir.clone()),
        preset: *preset,
        log_format: *log_format,
        log_file: log_file.clone(),
        log_level: match cli.verbose {
            0 => None,
            1 => Some(LogLevel::Info),
            _ => Some(LogLevel::Debug),
        },
        ..network.map(network_layer).unwrap_or_default()
    }
}

/// The API and data-directory flags of the command, if it has them.
fn command_args(command: &Command) -> (Option<&ApiArgs>, Option<&DataArgs>) {
    match command {
        Command::Files(FilesCommand::Ls { api, .. } | FilesCommand::Get { api, .. })
        | Command::Batches(BatchesCommand::Ls { api, .. } | BatchesCommand::Results { api, .. }) => {
            (Some(api), None)
        }
        Command::Batches(BatchesCommand::Show { data, .. }) | Command::Ls(LsArgs { data, .. }) => {
            (None, Some(data))
        }
        Command::Sync(sync) => (Some(&sync.api), Some(&sync.data)),
        Command::Verify(verify) => (Some(&verify.api), Some(&verify.data)),
        Command::Config(ConfigCommand::Show { api, data, .. }) => (Some(api), Some(data)),
        Command::Get(_) | Command::Demo(_) | Command::Decrypt(_) => (None, None),
    }
}

fn network_layer(network: &NetworkArgs) -> Layer {
    Layer {
        connections: network.connections,
        max_connections: network.max_connections,
        chunk_size: network.chunk_size,
        max_retries: network.max_retries,
        connect_timeout: network.connect_timeout,
        read_timeout: network.read_timeout,
        requests_per_minute: network.requests_per_minute,
        endpoints: Some(network.endpoints.clone()).filter(|e| !e.is_empty()),
        overload_pause: network.overload_pause,
        limit_rate: network.limit_rate,
        ..Layer::default()
    }
}

/// The network options in effect: every layer's values, plus the hidden tuning flags of `cli`.
pub fn network_args(settings: &Settings, cli: &NetworkArgs) -> NetworkArgs {
    NetworkArgs {
        connections: Some(settings.connections.value),
        max_connections: settings.max_connections.as_ref().map(|s| s.value),
        chunk_size: Some(settings.chunk_size.value),
        min_split_size: cli.min_split_size,
        max_retries: Some(settings.max_retries.value),
        connect_timeout: Some(settings.connect_timeout.value),
        read_timeout: Some(settings.read_timeout.value),
        checkpoint_ms: cli.checkpoint_ms,
        requests_per_minute: settings.requests_per_minute.as_ref().map(|s| s.value),
        endpoints: settings.endpoints.value.clone(),
        overload_pause: Some(settings.overload_pause.value),
        limit_rate: settings.limit_rate.as_ref().map(|s| s.value),
    }
}

/// The data directory in effect.
pub fn data_dir(settings: &Settings) -> PathBuf {
    settings.data_dir.value.clone()
}
