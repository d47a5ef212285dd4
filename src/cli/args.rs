//! Command-line arguments (every clap type), and the layer of settings they set.

use std::path::PathBuf;

use bytesize::ByteSize;
use clap::{Args, Parser, Subcommand};
use claudedl::config::{self, Layer, LogFormat, LogLevel, Preset};

#[derive(Debug, Parser)]
#[command(
    name = "claudedl",
    version,
    about = "Fast, resumable, polite downloads from the Claude API and any HTTP(S) URL"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// More log output (-v info, -vv debug); logs go to stderr unless --log-file is given.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// No progress display; errors only.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    #[command(flatten)]
    pub settings: SettingsArgs,
}

/// Where settings come from and where logs go (global flags; see `claudedl config show`).
#[derive(Debug, Args, Clone, Default)]
pub struct SettingsArgs {
    /// Config file [default: ./claudedl.toml, else $XDG_CONFIG_HOME/claudedl/config.toml].
    #[arg(long, global = true, env = "CLAUDEDL_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Timeouts for a kind of network: lan (10 s connect / 300 s read), cloud (30/600),
    /// cross-border (60/900). Explicit timeouts (flags or config keys) win.
    #[arg(long = "network", global = true, value_name = "PRESET")]
    pub preset: Option<Preset>,
    /// Log lines as text or json (one object per line).
    #[arg(long, global = true, value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,
    /// Write logs to FILE (appended) instead of stderr.
    #[arg(long, global = true, value_name = "FILE")]
    pub log_file: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Download one or more URLs (parallel ranges, resumable).
    Get(GetArgs),
    /// Claude Files API: list and download files.
    #[command(subcommand)]
    Files(FilesCommand),
    /// Claude Message Batches: list, fetch results, show one result.
    #[command(subcommand)]
    Batches(BatchesCommand),
    /// Mirror downloadable files and ended batch results into the data directory.
    Sync(SyncArgs),
    /// Query the index offline.
    Ls(LsArgs),
    /// Re-hash downloaded files against the index; report missing, changed and orphaned files.
    Verify(VerifyArgs),
    /// Try claudedl without a key: sync a bundled mock API into ./claudedl-demo.
    #[cfg(feature = "demo")]
    Demo(DemoArgs),
    /// Decrypt an age file written with --encrypt-to (same as `age -d -i IDENTITY`).
    Decrypt(DecryptArgs),
    /// The effective settings and where each comes from.
    #[command(subcommand)]
    Config(ConfigCommand),
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print every setting with its source (cli, env, file, preset, default); the key redacted.
    Show {
        #[command(flatten)]
        api: ApiArgs,
        #[command(flatten)]
        data: DataArgs,
        /// One JSON object.
        #[arg(long)]
        json: bool,
    },
}

/// Where the API is and how to page through it.
#[derive(Debug, Args, Clone)]
pub struct ApiArgs {
    /// API base URL (default: $ANTHROPIC_BASE_URL, else https://api.anthropic.com). The key is
    /// read from $ANTHROPIC_API_KEY only, never from the command line.
    #[arg(long, value_name = "URL")]
    pub base_url: Option<String>,
    /// Page the Files API with the beta shape (after_id / has_more) instead of GA's page cursor.
    #[arg(long)]
    pub beta_pagination: bool,
    #[command(flatten)]
    pub network: NetworkArgs,
}

/// How requests are made and paced: connections, timeouts, retries, the request budget, backup
/// endpoints and the bandwidth cap. Every option is optional so that a config file can supply
/// it; unset ones take the defaults in `claudedl::config::defaults`.
#[derive(Debug, Args, Clone, Default)]
pub struct NetworkArgs {
    /// Parallel connections (byte ranges) per file [default: 8].
    #[arg(short = 'c', long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=256))]
    pub connections: Option<u16>,
    /// Connections across all files at once [default: the larger of -c and 16].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub max_connections: Option<u16>,
    /// Largest byte range one request asks for [default: 64MiB].
    #[arg(long, value_name = "SIZE")]
    pub chunk_size: Option<ByteSize>,
    /// Ranges smaller than twice this are not split further [default: 1MiB].
    #[arg(long, value_name = "SIZE", hide = true)]
    pub min_split_size: Option<ByteSize>,
    /// Retries per request after the first failure [default: 5].
    #[arg(long, value_name = "N")]
    pub max_retries: Option<u32>,
    /// Seconds to wait for a connection [default: 30].
    #[arg(long, value_name = "SECS", value_parser = seconds)]
    pub connect_timeout: Option<f64>,
    /// Seconds of silence tolerated while reading a body; there is no total timeout [default: 60].
    #[arg(long, value_name = "SECS", value_parser = seconds)]
    pub read_timeout: Option<f64>,
    /// Milliseconds between checkpoints of the resume state [default: 100].
    #[arg(long, value_name = "MS", hide = true)]
    pub checkpoint_ms: Option<u64>,
    /// Ceiling on the request budget of the whole process, requests per minute: never exceeded;
    /// the server's headers or 429s may lower it. Without it, API commands start at 50/min (or
    /// a learned rate) and follow the server; `get` of plain URLs is unpaced.
    #[arg(long = "rpm", value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub requests_per_minute: Option<u32>,
    /// Backup API endpoint, tried in order after a streak of 503/529 (repeatable). They share
    /// the budget and receive the API key.
    #[arg(long = "endpoint", value_name = "URL", value_parser = endpoint)]
    pub endpoints: Vec<String>,
    /// Seconds an overloaded endpoint is left alone before it is tried again [default: 600].
    #[arg(long, value_name = "SECS", value_parser = seconds)]
    pub overload_pause: Option<f64>,
    /// Cap on total download bandwidth across all connections, e.g. 5MB or 500KiB (per second).
    #[arg(long, value_name = "SIZE")]
    pub limit_rate: Option<ByteSize>,
}

#[derive(Debug, Args, Clone)]
pub struct DataArgs {
    /// The data directory [default: [storage] base_dir, else ./data].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum FilesCommand {
    /// List files, newest first.
    Ls {
        #[command(flatten)]
        api: ApiArgs,
        /// One JSON object per file.
        #[arg(long)]
        json: bool,
        /// Stop after this many files.
        #[arg(long, value_name = "N")]
        limit: Option<u64>,
    },
    /// Download files by id into DIR as <id>_<filename>.
    Get {
        #[command(flatten)]
        api: ApiArgs,
        /// File ids (file_...).
        #[arg(required = true)]
        ids: Vec<String>,
        #[arg(short, long, default_value = ".", value_name = "DIR")]
        dir: PathBuf,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        encrypt: EncryptArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum BatchesCommand {
    /// List batches, newest first.
    Ls {
        #[command(flatten)]
        api: ApiArgs,
        #[arg(long)]
        json: bool,
    },
    /// Download a batch's results (JSONL).
    Results {
        #[command(flatten)]
        api: ApiArgs,
        id: String,
        /// Output file (default: <id>.jsonl; `.age` is appended when encrypting).
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
        #[command(flatten)]
        encrypt: EncryptArgs,
    },
    /// Print one result by custom_id, from the index (no request, no scan).
    Show {
        id: String,
        custom_id: String,
        #[command(flatten)]
        data: DataArgs,
    },
}

#[derive(Debug, Args)]
pub struct SyncArgs {
    #[command(flatten)]
    pub api: ApiArgs,
    #[command(flatten)]
    pub data: DataArgs,
    /// Only files.
    #[arg(long, conflicts_with = "batches_only")]
    pub files_only: bool,
    /// Only batch results.
    #[arg(long)]
    pub batches_only: bool,
    /// List everything instead of stopping at the first page already known and complete.
    #[arg(long)]
    pub full: bool,
    /// Print the plan: list, but download nothing and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// List into the index, download nothing.
    #[arg(long, conflicts_with = "dry_run")]
    pub metadata_only: bool,
    /// Files downloaded at once.
    #[arg(short = 'j', long = "jobs", default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub jobs: u16,
    /// Items per list request (1-1000).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub page_size: u32,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub encrypt: EncryptArgs,
}

#[derive(Debug, Args)]
pub struct LsArgs {
    #[command(flatten)]
    pub data: DataArgs,
    /// Month of creation, YYYY-MM.
    #[arg(long)]
    pub month: Option<String>,
    /// Exact MIME type, e.g. text/csv.
    #[arg(long)]
    pub mime: Option<String>,
    /// Filename glob, e.g. '*.csv'.
    #[arg(long)]
    pub name: Option<String>,
    /// Only entries in this state (pending, downloading, complete, skipped, failed).
    #[arg(long)]
    pub state: Option<String>,
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
    #[arg(long)]
    pub json: bool,
}

#[cfg(feature = "demo")]
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Where the demo data goes.
    #[arg(long, default_value = "claudedl-demo", value_name = "DIR")]
    pub data_dir: PathBuf,
}

#[derive(Debug, Args)]
pub struct GetArgs {
    /// URLs to download.
    pub urls: Vec<String>,
    /// Read URLs from FILE, one per line (blank lines and `#` comments are skipped).
    #[arg(short = 'i', long = "input-file", value_name = "FILE")]
    pub input_file: Option<PathBuf>,
    /// Output file (only with a single URL).
    #[arg(short, long, value_name = "FILE", conflicts_with = "dir")]
    pub output: Option<PathBuf>,
    /// Directory to save into, named after the URL's last path segment.
    #[arg(short, long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Files downloaded at once.
    #[arg(short = 'j', long = "jobs", default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub jobs: u16,
    #[command(flatten)]
    pub network: NetworkArgs,
    /// Extra request header, `Name: value` (repeatable). Headers never follow a redirect to
    /// another origin unless --location-trusted is given. Prefer ANTHROPIC_API_KEY for the
    /// Claude API: command-line values are visible to other users in the process list.
    #[arg(short = 'H', long = "header", value_name = "HEADER")]
    pub headers: Vec<String>,
    /// Send the -H headers on after a redirect to another origin too (as curl); the API key
    /// from ANTHROPIC_API_KEY never leaves the API's origin.
    #[arg(long)]
    pub location_trusted: bool,
    /// Replace outputs that already exist (by default they are left alone).
    #[arg(long)]
    pub force: bool,
    /// Print one JSON summary object per file on stdout.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub encrypt: EncryptArgs,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub api: ApiArgs,
    #[command(flatten)]
    pub data: DataArgs,
    /// Download missing, changed and unreadable files again (with the API settings and
    /// ANTHROPIC_API_KEY, as `sync`), each stored as it was: encrypted entries encrypted again
    /// (see --encrypt-to), plain ones plain. Orphaned files are reported, never deleted.
    #[arg(long)]
    pub repair: bool,
    /// Age identity file (as written by age-keygen; repeatable): decrypt encrypted files and
    /// hash their plaintext. Without it they are only checked for presence and size.
    #[arg(short = 'i', long = "identity", value_name = "IDENTITY")]
    pub identities: Vec<PathBuf>,
    /// With --repair: the recipients encrypted entries are encrypted to again.
    #[command(flatten)]
    pub encrypt: EncryptArgs,
    /// Files hashed at once (default: the number of CPUs).
    #[arg(short = 'j', long = "jobs", value_name = "N", value_parser = clap::value_parser!(u16).range(1..=256))]
    pub jobs: Option<u16>,
    /// One JSON object per finding on stdout, then a summary object.
    #[arg(long)]
    pub json: bool,
}

/// Encryption at rest, shared by every command that downloads (`get`, `files get`, `batches
/// results`, `sync`, `verify --repair`). Without these flags the config file's `[crypt]
/// recipients` and `recipients_file` apply; any of them replaces the file's recipients.
#[derive(Debug, Args, Clone, Default)]
pub struct EncryptArgs {
    /// Store downloads as age files (`NAME.age`) encrypted to this recipient (age1…;
    /// repeatable). No plaintext byte is written to disk. Replaces the config file's
    /// `[crypt]` recipients.
    #[arg(long = "encrypt-to", value_name = "RECIPIENT")]
    pub encrypt_to: Vec<String>,
    /// Encrypt to the recipients listed in FILE (one per line, `#` comments; repeatable).
    #[arg(long = "recipients-file", value_name = "FILE")]
    pub recipients_files: Vec<PathBuf>,
    /// Store downloads unencrypted, whatever the config file's `[crypt]` says.
    #[arg(long, conflicts_with_all = ["encrypt_to", "recipients_files"])]
    pub no_encrypt: bool,
}

#[derive(Debug, Args)]
pub struct DecryptArgs {
    /// The age file to decrypt.
    pub file: PathBuf,
    /// Identity file (as written by age-keygen).
    #[arg(short = 'i', long = "identity", value_name = "IDENTITY")]
    pub identity: PathBuf,
    /// Output file (default: FILE without its `.age` suffix). Written whole or not at all.
    #[arg(short, long, value_name = "OUT")]
    pub output: Option<PathBuf>,
    /// Replace OUT if it exists.
    #[arg(long)]
    pub force: bool,
}

/// A positive number of seconds.
fn seconds(text: &str) -> Result<f64, String> {
    let secs: f64 = text.parse().map_err(|e| format!("{e}"))?;
    if !config::network::valid_seconds(secs) {
        return Err("must be a positive number of seconds".to_owned());
    }
    Ok(secs)
}

/// A backup endpoint: an http(s) URL with a host.
fn endpoint(text: &str) -> Result<String, String> {
    config::http_url(text).map(|_| text.to_owned())
}

impl Cli {
    /// What the flags of this command line set (the command line's layer of settings).
    pub fn layer(&self) -> Layer {
        let (api, data) = self.command.api_and_data();
        let network = match &self.command {
            Command::Get(get) => Some(&get.network),
            _ => api.map(|api| &api.network),
        };
        let SettingsArgs {
            preset,
            log_format,
            log_file,
            ..
        } = &self.settings;
        Layer {
            base_url: api.and_then(|api| api.base_url.clone()),
            data_dir: data.and_then(|data| data.data_dir.clone()),
            preset: *preset,
            log_format: *log_format,
            log_file: log_file.clone(),
            log_level: match self.verbose {
                0 => None,
                1 => Some(LogLevel::Info),
                _ => Some(LogLevel::Debug),
            },
            ..network.map(NetworkArgs::layer).unwrap_or_default()
        }
    }
}

impl Command {
    /// The API and data-directory flags of the command, if it has them.
    fn api_and_data(&self) -> (Option<&ApiArgs>, Option<&DataArgs>) {
        match self {
            Command::Files(FilesCommand::Ls { api, .. } | FilesCommand::Get { api, .. })
            | Command::Batches(
                BatchesCommand::Ls { api, .. } | BatchesCommand::Results { api, .. },
            ) => (Some(api), None),
            Command::Batches(BatchesCommand::Show { data, .. })
            | Command::Ls(LsArgs { data, .. }) => (None, Some(data)),
            Command::Sync(sync) => (Some(&sync.api), Some(&sync.data)),
            Command::Verify(verify) => (Some(&verify.api), Some(&verify.data)),
            Command::Config(ConfigCommand::Show { api, data, .. }) => (Some(api), Some(data)),
            Command::Get(_) | Command::Decrypt(_) => (None, None),
            #[cfg(feature = "demo")]
            Command::Demo(_) => (None, None),
        }
    }
}

impl NetworkArgs {
    fn layer(&self) -> Layer {
        Layer {
            connections: self.connections,
            max_connections: self.max_connections,
            chunk_size: self.chunk_size,
            min_split_size: self.min_split_size,
            max_retries: self.max_retries,
            connect_timeout: self.connect_timeout,
            read_timeout: self.read_timeout,
            checkpoint_ms: self.checkpoint_ms,
            requests_per_minute: self.requests_per_minute,
            endpoints: Some(self.endpoints.clone()).filter(|e| !e.is_empty()),
            overload_pause: self.overload_pause,
            limit_rate: self.limit_rate,
            ..Layer::default()
        }
    }
}
