//! Layering: command line > environment > file > network preset > default.
//!
//! The environment supplies `ANTHROPIC_API_KEY` and `ANTHROPIC_BASE_URL`. The API key never
//! comes from the command line; its order is `ANTHROPIC_API_KEY`, then the variable named by
//! `[auth] api_key_env`, then `[auth] api_key`. A preset (`--network`, else `[network] preset`)
//! only fills the timeouts that no flag and no file key sets.

use std::path::PathBuf;

use bytesize::ByteSize;

use super::{
    ConfigFile, DB_VAR, Database, Layer, LogFormat, LogLevel, PASSWORD_VAR, Preset, Secret,
    Setting, Source, TransferHttp, defaults,
};

/// The environment variable holding the API key.
pub const KEY_VAR: &str = "ANTHROPIC_API_KEY";
/// The environment variable holding a bearer token (used when no API key is set, as the SDKs do).
pub const AUTH_TOKEN_VAR: &str = "ANTHROPIC_AUTH_TOKEN";
/// The environment variable holding the API base URL.
pub const BASE_URL_VAR: &str = "ANTHROPIC_BASE_URL";
/// The request budget from the environment (e.g. for a whole CI job).
pub const RPM_VAR: &str = "CLAUDEDL_RPM";
/// Where learned request rates are kept, when not in the state directory.
pub const RATES_VAR: &str = "CLAUDEDL_RATES";

/// `$CLAUDEDL_RPM`, checked: unset is fine, anything but 1..=1,000,000 is an error.
pub fn env_rpm(var: impl Fn(&str) -> Option<String>) -> Result<Option<u32>, super::ConfigError> {
    let Some(text) = var(RPM_VAR).filter(|v| !v.trim().is_empty()) else {
        return Ok(None);
    };
    match text.trim().parse::<u32>() {
        Ok(rpm) if (1..=1_000_000).contains(&rpm) => Ok(Some(rpm)),
        _ => Err(super::ConfigError::BadEnv {
            name: RPM_VAR,
            value: text,
            expected: "requests per minute, 1 to 1000000",
        }),
    }
}

/// The file of learned request rates, outside the data directory (see
/// [`Settings::learned_rates`]).
fn learned_rates(var: impl Fn(&str) -> Option<String>) -> Option<PathBuf> {
    if let Some(path) = var(RATES_VAR) {
        return Some(path.into());
    }
    let state = var("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| var("HOME").map(|home| PathBuf::from(home).join(".local/state")))?;
    Some(state.join("claudedl").join("rates.json"))
}

/// Every setting with its effective value and source. Settings without a default are `None`
/// when unset; [`Settings::network`] turns the network ones into typed values.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The config file read, if any.
    pub config_file: Option<PathBuf>,
    pub api_key: Option<Setting<Secret>>,
    /// `$ANTHROPIC_AUTH_TOKEN`, sent as `Authorization: Bearer` when no API key is set.
    pub auth_token: Option<Setting<Secret>>,
    /// `[auth] api_key_env`: the variable the key is read from (when `ANTHROPIC_API_KEY` is
    /// unset).
    pub api_key_env: Option<Setting<String>>,
    pub base_url: Setting<String>,
    pub preset: Option<Setting<Preset>>,
    pub connect_timeout: Setting<f64>,
    pub read_timeout: Setting<f64>,
    pub max_retries: Setting<u32>,
    pub connections: Setting<u16>,
    /// When unset: the larger of `connections` and [`defaults::MIN_MAX_CONNECTIONS`].
    pub max_connections: Setting<u16>,
    /// A ceiling; when unset: API traffic starts at [`defaults::API_RPM`] (or a learned rate)
    /// and follows the server, plain URLs are unpaced.
    pub requests_per_minute: Option<Setting<u32>>,
    /// The file of request rates learned by discovery: `$CLAUDEDL_RATES`, else
    /// `$XDG_STATE_HOME/claudedl/rates.json`, else `~/.local/state/claudedl/rates.json`.
    pub learned_rates: Option<PathBuf>,
    pub endpoints: Setting<Vec<String>>,
    pub overload_pause: Setting<f64>,
    pub limit_rate: Option<Setting<ByteSize>>,
    /// `--cacert`, `[network] cacert`: extra trusted CA certificates (PEM).
    pub cacert: Option<Setting<PathBuf>>,
    /// `--insecure`: accept any certificate (command line only).
    pub insecure: Setting<bool>,
    /// `--proxy`, `[network] proxy`.
    pub proxy: Option<Setting<String>>,
    /// `--transfer-http`, `[network] transfer_http`.
    pub transfer_http: Setting<TransferHttp>,
    pub data_dir: Setting<PathBuf>,
    pub chunk_size: Setting<ByteSize>,
    /// `--min-split-size` (a hidden tuning flag).
    pub min_split: Setting<ByteSize>,
    /// `--checkpoint-ms` (a hidden tuning flag).
    pub checkpoint_ms: Setting<u64>,
    /// `[crypt] recipients`: public keys files are encrypted to.
    pub crypt_recipients: Setting<Vec<String>>,
    /// `[crypt] recipients_file`: a file of recipients, one per line.
    pub crypt_recipients_file: Option<Setting<PathBuf>>,
    pub log_format: Setting<LogFormat>,
    pub log_file: Option<Setting<PathBuf>>,
    pub log_level: Option<Setting<LogLevel>>,
    /// `--db`, else `$CLAUDEDL_DB`: the fleet's PostgreSQL database (the password from the URL,
    /// else `$PGPASSWORD`). Unset: the index is SQLite in the data directory.
    pub db: Option<Setting<Database>>,
}

/// Resolve `cli` (flags given), the environment (`var`) and `file` into [`Settings`].
pub fn resolve(
    cli: &Layer,
    var: impl Fn(&str) -> Option<String>,
    file: Option<&ConfigFile>,
) -> Settings {
    let non_empty = |name: &str| var(name).filter(|v| !v.trim().is_empty());
    // The environment's layer holds the base URL and the budget (checked by `env_rpm` before
    // resolving); the key has an order of its own.
    let env = Layer {
        base_url: non_empty(BASE_URL_VAR),
        requests_per_minute: env_rpm(&var).ok().flatten(),
        ..Layer::default()
    };
    let layers = Layers { cli, env, file };
    let preset = layers.pick(|l| &l.preset, "--network");
    let timeout = |get: fn(&Layer) -> &Option<f64>, flag, index: fn((f64, f64)) -> f64, default| {
        layers.pick(get, flag).unwrap_or_else(|| match &preset {
            Some(p) => Setting::new(index(p.value.timeouts()), Source::Preset(p.value)),
            None => Setting::default_value(default),
        })
    };
    let connections = layers.or(|l| &l.connections, "--connections", defaults::CONNECTIONS);
    Settings {
        config_file: file.map(|f| f.path.clone()),
        api_key: layers.api_key(&non_empty),
        auth_token: non_empty(AUTH_TOKEN_VAR).map(|t| {
            Setting::new(
                Secret::new(t.trim()),
                Source::Env(AUTH_TOKEN_VAR.to_owned()),
            )
        }),
        api_key_env: layers.pick(|l| &l.api_key_env, ""),
        base_url: layers
            .pick(|l| &l.base_url, "--base-url")
            .unwrap_or_else(|| Setting::default_value(defaults::BASE_URL.to_owned())),
        connect_timeout: timeout(
            |l| &l.connect_timeout,
            "--connect-timeout",
            |t| t.0,
            defaults::CONNECT_TIMEOUT,
        ),
        read_timeout: timeout(
            |l| &l.read_timeout,
            "--read-timeout",
            |t| t.1,
            defaults::READ_TIMEOUT,
        ),
        preset,
        max_retries: layers.or(|l| &l.max_retries, "--max-retries", defaults::MAX_RETRIES),
        max_connections: layers.or(
            |l| &l.max_connections,
            "--max-connections",
            connections.value.max(defaults::MIN_MAX_CONNECTIONS),
        ),
        connections,
        requests_per_minute: layers.pick(|l| &l.requests_per_minute, "--rpm"),
        learned_rates: learned_rates(non_empty),
        endpoints: layers.or(|l| &l.endpoints, "--endpoint", Vec::new()),
        overload_pause: layers.or(
            |l| &l.overload_pause,
            "--overload-pause",
            defaults::OVERLOAD_PAUSE,
        ),
        limit_rate: layers.pick(|l| &l.limit_rate, "--limit-rate"),
        cacert: layers.pick(|l| &l.cacert, "--cacert"),
        insecure: layers.or(|l| &l.insecure, "--insecure", false),
        proxy: layers.pick(|l| &l.proxy, "--proxy"),
        transfer_http: layers.or(
            |l| &l.transfer_http,
            "--transfer-http",
            defaults::TRANSFER_HTTP,
        ),
        data_dir: layers.or(|l| &l.data_dir, "--data-dir", defaults::DATA_DIR.into()),
        chunk_size: layers.or(
            |l| &l.chunk_size,
            "--chunk-size",
            ByteSize(defaults::CHUNK_SIZE),
        ),
        min_split: layers.or(
            |l| &l.min_split_size,
            "--min-split-size",
            ByteSize(defaults::MIN_SPLIT),
        ),
        checkpoint_ms: layers.or(
            |l| &l.checkpoint_ms,
            "--checkpoint-ms",
            defaults::CHECKPOINT_MS,
        ),
        crypt_recipients: layers.or(|l| &l.crypt_recipients, "", Vec::new()),
        crypt_recipients_file: layers.pick(|l| &l.crypt_recipients_file, ""),
        log_format: layers.or(|l| &l.log_format, "--log-format", LogFormat::Text),
        log_file: layers.pick(|l| &l.log_file, "--log-file"),
        log_level: layers.pick(|l| &l.log_level, "-v"),
        db: database(cli, &non_empty),
    }
}

/// `--db`, else `$CLAUDEDL_DB`; the password from `$PGPASSWORD` where the URL has none.
fn database(cli: &Layer, var: &impl Fn(&str) -> Option<String>) -> Option<Setting<Database>> {
    let password = var(PASSWORD_VAR).map(Secret::new);
    let (url, source) = match &cli.db {
        Some(url) => (url.clone(), Source::Cli("--db")),
        None => (
            Secret::new(var(DB_VAR)?.trim()),
            Source::Env(DB_VAR.to_owned()),
        ),
    };
    Some(Setting::new(Database::new(url, password), source))
}

struct Layers<'a> {
    cli: &'a Layer,
    env: Layer,
    file: Option<&'a ConfigFile>,
}

impl Layers<'_> {
    /// The first layer's value, with its source (`flag` names the command-line flag).
    fn pick<T: Clone>(
        &self,
        get: impl Fn(&Layer) -> &Option<T>,
        flag: &'static str,
    ) -> Option<Setting<T>> {
        if let Some(value) = get(self.cli) {
            return Some(Setting::new(value.clone(), Source::Cli(flag)));
        }
        let from_file = || {
            let file = self.file?;
            let value = get(&file.layer).clone()?;
            Some(Setting::new(value, Source::File(file.path.clone())))
        };
        let env_var = match flag {
            "--base-url" => Some(BASE_URL_VAR),
            "--rpm" => Some(RPM_VAR),
            _ => None,
        };
        env_var
            .and_then(|name| {
                Some(Setting::new(
                    get(&self.env).clone()?,
                    Source::Env(name.into()),
                ))
            })
            .or_else(from_file)
    }

    /// [`Self::pick`], else `default`.
    fn or<T: Clone>(
        &self,
        get: impl Fn(&Layer) -> &Option<T>,
        flag: &'static str,
        default: T,
    ) -> Setting<T> {
        self.pick(get, flag)
            .unwrap_or_else(|| Setting::default_value(default))
    }

    /// `ANTHROPIC_API_KEY`, else the variable `[auth] api_key_env` names, else `[auth] api_key`.
    fn api_key(&self, var: &impl Fn(&str) -> Option<String>) -> Option<Setting<Secret>> {
        let from_var = |name: &str| {
            let key = Secret::new(var(name)?.trim());
            Some(Setting::new(key, Source::Env(name.to_owned())))
        };
        if let Some(key) = from_var(KEY_VAR) {
            return Some(key);
        }
        let file = self.file?;
        if let Some(name) = &file.layer.api_key_env {
            return from_var(name);
        }
        let key = file.layer.api_key.clone()?;
        Some(Setting::new(key, Source::File(file.path.clone())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Format;

    fn file(layer: Layer) -> ConfigFile {
        ConfigFile {
            path: PathBuf::from("/etc/claudedl.toml"),
            format: Format::Toml,
            layer,
            warnings: Vec::new(),
            notes: Vec::new(),
        }
    }

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn cli_beats_env_beats_file_beats_default() {
        let file = file(Layer {
            base_url: Some("http://file".into()),
            max_retries: Some(9),
            connections: Some(3),
            ..Layer::default()
        });
        let cli = Layer {
            connections: Some(4),
            ..Layer::default()
        };
        let env = |name: &str| (name == BASE_URL_VAR).then(|| "http://env".to_owned());
        let settings = resolve(&cli, env, Some(&file));
        assert_eq!(settings.connections.value, 4);
        assert_eq!(settings.connections.source, Source::Cli("--connections"));
        assert_eq!(settings.base_url.value, "http://env");
        assert_eq!(settings.base_url.source, Source::Env(BASE_URL_VAR.into()));
        assert_eq!(settings.max_retries.value, 9);
        assert_eq!(settings.max_retries.source, Source::File(file.path.clone()));
        assert_eq!(settings.data_dir.source, Source::Default);
    }

    #[test]
    fn a_preset_fills_only_the_timeouts_nobody_set() {
        let file = file(Layer {
            preset: Some(Preset::Lan),
            read_timeout: Some(42.0),
            ..Layer::default()
        });
        let settings = resolve(&Layer::default(), no_env, Some(&file));
        assert_eq!(settings.connect_timeout.value, 10.0);
        assert_eq!(settings.connect_timeout.source, Source::Preset(Preset::Lan));
        assert_eq!(settings.read_timeout.value, 42.0);
        let cli = Layer {
            preset: Some(Preset::CrossBorder),
            ..Layer::default()
        };
        let settings = resolve(&cli, no_env, Some(&file));
        assert_eq!(settings.connect_timeout.value, 60.0);
        assert_eq!(
            settings.read_timeout.value, 42.0,
            "a file value beats any preset"
        );
    }

    #[test]
    fn the_key_comes_from_the_environment_then_the_named_variable_then_the_file() {
        let named = file(Layer {
            api_key_env: Some("MY_KEY".into()),
            ..Layer::default()
        });
        let env = |name: &str| (name == "MY_KEY").then(|| " secret-from-my-key ".to_owned());
        let key = resolve(&Layer::default(), env, Some(&named))
            .api_key
            .unwrap();
        assert_eq!(key.value.expose(), "secret-from-my-key");
        assert_eq!(key.source, Source::Env("MY_KEY".into()));
        let both = |name: &str| Some(format!("value-of-{name}"));
        let key = resolve(&Layer::default(), both, Some(&named))
            .api_key
            .unwrap();
        assert_eq!(key.source, Source::Env(KEY_VAR.into()));
        let in_file = file(Layer {
            api_key: Some(Secret::new("k")),
            ..Layer::default()
        });
        let key = resolve(&Layer::default(), no_env, Some(&in_file));
        assert_eq!(key.api_key.unwrap().source, Source::File(in_file.path));
        assert!(resolve(&Layer::default(), no_env, None).api_key.is_none());
    }
}
