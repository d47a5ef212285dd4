//! Command-line arguments (every clap type), and the layer of settings they set.

use std::path::PathBuf;

use bytesize::ByteSize;
use clap::{Args, Parser, Subcommand};
use claudedl::config::{self, Layer, LogFormat, LogLevel, Preset, TransferHttp};
use claudedl::sync::Selection;

#[derive(Debug, Parser)]
#[command(
    name = "claudedl",
    version,
    about = "Fast, resumable, polite downloads from the Claude API and any HTTP(S) URL",
    after_long_help = MAIN_HELP
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
    /// The fleet's PostgreSQL database (a URL or key=value string; else $CLAUDEDL_DB; the
    /// password from it or $PGPASSWORD). With it, `ls` and `verify` read the fleet's index.
    #[arg(long, global = true, value_name = "URL")]
    pub db: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Download one or more URLs (parallel ranges, resumable).
    #[command(after_long_help = GET_EXAMPLES)]
    Get(GetArgs),
    /// Claude Files API: list and download files.
    #[command(subcommand)]
    Files(FilesCommand),
    /// Claude Message Batches: list, fetch results, show one result.
    #[command(subcommand)]
    Batches(BatchesCommand),
    /// Mirror downloadable files and ended batch results into the data directory.
    #[command(after_long_help = SYNC_EXAMPLES)]
    Sync(SyncArgs),
    /// Query the index offline.
    #[command(after_long_help = LS_EXAMPLES)]
    Ls(LsArgs),
    /// Re-hash downloaded files against the index; report missing, changed and orphaned files.
    #[command(
        after_long_help = "Examples:\n  claudedl verify --data-dir data\n  claudedl verify --repair -i key.txt --json"
    )]
    Verify(VerifyArgs),
    /// Try claudedl without a key: sync a bundled mock API into ./claudedl-demo.
    #[cfg(feature = "demo")]
    #[command(
        after_long_help = "Example:\n  claudedl demo && claudedl ls --data-dir claudedl-demo --mime text/csv"
    )]
    Demo(DemoArgs),
    /// Decrypt an age file written with --encrypt-to (same as `age -d -i IDENTITY`).
    #[command(
        after_long_help = "Example:\n  claudedl decrypt data/raw/2026-08/file_1_report.csv.age -i key.txt -o report.csv"
    )]
    Decrypt(DecryptArgs),
    /// The effective settings and where each comes from.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// The fleet's database: create or migrate its schema, show the queue.
    #[command(subcommand)]
    Fleet(FleetCommand),
    /// List the API into the fleet's index and queue what it wants (needs --db).
    #[command(
        after_long_help = "Example:\n  claudedl enqueue --db postgresql://fleet@db/claudedl --include '*.csv'"
    )]
    Enqueue(EnqueueArgs),
    /// Claim queued files from the fleet's database and download them (needs --db).
    #[command(
        after_long_help = "Example:\n  claudedl worker --db postgresql://fleet@db/claudedl --data-dir /mnt/shared -j 8"
    )]
    Worker(WorkerArgs),
    /// Print a shell completion script on stdout.
    #[command(after_long_help = COMPLETIONS_EXAMPLES)]
    Completions {
        /// The shell: bash, zsh, fish or powershell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) on stdout.
    #[command(after_long_help = "Example:\n  claudedl man > claudedl.1 && man ./claudedl.1")]
    Man,
}

/// The top level's long help: the credentials and the exit codes.
const MAIN_HELP: &str = concat!(
    "Credentials: $ANTHROPIC_API_KEY (sent as x-api-key) wins; else $ANTHROPIC_AUTH_TOKEN (sent \
     as Authorization: Bearer). Neither is logged nor sent to another origin.\n\n",
    "Examples:\n",
    "  claudedl sync --data-dir data --since 30d --include '*.csv'\n",
    "  claudedl batches results msgbatch_123 -o - | jq .custom_id\n",
    "  claudedl get https://example.com/big.iso -c 16\n\n",
    super::exit::table!()
);

const GET_EXAMPLES: &str = "Examples:
  claudedl get https://example.com/big.iso -c 16
  claudedl get -i urls.txt -d downloads --json
  grep -o 'https://[^ ]*' notes.md | claudedl get -i - -d downloads
  claudedl get https://example.com/data.csv -o - | head
  claudedl get https://internal.example/x.bin --cacert corp-ca.pem --proxy socks5h://127.0.0.1:1080";

const SYNC_EXAMPLES: &str = "Examples:
  claudedl sync --data-dir data
  claudedl sync --dry-run --since 2026-08-01
  claudedl sync --files-only --include '*.csv' --include '*.json' --max-size 100MB
  claudedl sync --mime 'image/*' --since 7d --json";

const LS_EXAMPLES: &str = "Examples:
  claudedl ls --data-dir data --month 2026-08
  claudedl ls --include '*.csv' --state complete --json
  claudedl ls --since 7d --min-size 1MiB --limit 20";

const FILES_LS_EXAMPLES: &str = "Examples:
  claudedl files ls --limit 20
  claudedl files ls --mime text/csv --since 7d --json | jq -r .id";

const FILES_GET_EXAMPLES: &str = "Examples:
  claudedl files get file_011CNha8iCJcU1wXNR6q4V8w -d downloads
  claudedl files ls --include '*.png' --json | jq -r .id | xargs claudedl files get -d pngs";

const BATCHES_EXAMPLES: &str = "Examples:
  claudedl batches ls --json
  claudedl batches results msgbatch_123 -o results.jsonl
  claudedl batches results msgbatch_123 -o - | jq -c 'select(.result.type == \"errored\")'
  claudedl batches show msgbatch_123 req-00042 --data-dir data";

const COMPLETIONS_EXAMPLES: &str = "Examples:
  claudedl completions bash > ~/.local/share/bash-completion/completions/claudedl
  claudedl completions zsh > \"${fpath[1]}/_claudedl\"
  claudedl completions fish > ~/.config/fish/completions/claudedl.fish
  claudedl completions powershell >> $PROFILE";

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print every setting with its source (cli, env, file, preset, default); the key redacted.
    #[command(
        after_long_help = "Examples:\n  claudedl config show\n  claudedl config show --network cloud --json | jq .network"
    )]
    Show {
        #[command(flatten)]
        api: ApiArgs,
        #[command(flatten)]
        transfer: TransferArgs,
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
    /// API base URL (default: $ANTHROPIC_BASE_URL, else https://api.anthropic.com). The
    /// credential is read from $ANTHROPIC_API_KEY (sent as x-api-key), else
    /// $ANTHROPIC_AUTH_TOKEN (sent as Authorization: Bearer); never from the command line.
    #[arg(long, value_name = "URL")]
    pub base_url: Option<String>,
    /// Page the Files API with the beta shape (after_id / has_more) instead of GA's page cursor.
    #[arg(long)]
    pub beta_pagination: bool,
    /// Backup API endpoint, tried in order after a streak of 503/529 (repeatable). They share
    /// the budget and receive the API key.
    #[arg(long = "endpoint", value_name = "URL", value_parser = endpoint)]
    pub endpoints: Vec<String>,
    #[command(flatten)]
    pub network: NetworkArgs,
}

/// How requests are made and paced: timeouts, retries, the request budget, TLS and proxy.
/// Every option is optional so that a config file can supply it; unset ones take the defaults
/// in `claudedl::config::defaults`.
#[derive(Debug, Args, Clone, Default)]
pub struct NetworkArgs {
    /// Retries per request after the first failure [default: 5].
    #[arg(long, value_name = "N")]
    pub max_retries: Option<u32>,
    /// Seconds to wait for a connection [default: 30].
    #[arg(long, value_name = "SECS", value_parser = seconds)]
    pub connect_timeout: Option<f64>,
    /// Seconds of silence tolerated while reading a body; there is no total timeout [default: 60].
    #[arg(long, value_name = "SECS", value_parser = seconds)]
    pub read_timeout: Option<f64>,
    /// Ceiling on the request budget of the whole process, requests per minute: never exceeded;
    /// the server's headers or 429s may lower it. Without it, API commands start at 50/min (or
    /// a learned rate) and follow the server; `get` of plain URLs is unpaced.
    #[arg(long = "rpm", value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub requests_per_minute: Option<u32>,
    /// Seconds an overloaded endpoint is left alone before it is tried again [default: 600].
    #[arg(long, value_name = "SECS", value_parser = seconds)]
    pub overload_pause: Option<f64>,
    /// Trust the CA certificates in FILE (PEM) besides the system's, e.g. a corporate proxy's.
    #[arg(long, value_name = "FILE")]
    pub cacert: Option<PathBuf>,
    /// Accept any TLS certificate (no verification at all). Dangerous: anyone on the path can
    /// read and change the traffic, API key included. A warning is printed on every run.
    #[arg(long, short = 'k')]
    pub insecure: bool,
    /// Proxy for every request: http://, https://, socks5:// or socks5h:// (DNS through the
    /// proxy), e.g. socks5h://127.0.0.1:1080 [default: none].
    #[arg(long, value_name = "URL", value_parser = proxy)]
    pub proxy: Option<String>,
}

/// How files are transferred: parallel ranges, their size, the bandwidth cap, the HTTP
/// version of bulk transfers. Only on commands that download.
#[derive(Debug, Args, Clone, Default)]
pub struct TransferArgs {
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
    /// Milliseconds between checkpoints of the resume state [default: 100].
    #[arg(long, value_name = "MS", hide = true)]
    pub checkpoint_ms: Option<u64>,
    /// Cap on total download bandwidth across all connections, e.g. 5MB or 500KiB (per second).
    #[arg(long, value_name = "SIZE")]
    pub limit_rate: Option<ByteSize>,
    /// HTTP version of bulk transfers: `1.1` (one TCP connection per range) or `auto` (HTTP/2
    /// when a TLS server offers it; ranges then share one connection) [default: 1.1]. API
    /// calls use HTTP/2 whenever a TLS server offers it.
    #[arg(long, value_name = "VERSION")]
    pub transfer_http: Option<TransferHttp>,
}

/// Selection flags: one grammar for `sync`, `files ls` and `ls` (see `claudedl::sync::select`).
#[derive(Debug, Args, Clone, Default)]
pub struct SelectArgs {
    /// Only files whose name matches this glob (`*`, `?`, `[a-z]`; repeatable: any matches).
    #[arg(long, value_name = "GLOB", visible_alias = "name")]
    pub include: Vec<String>,
    /// Leave out files whose name matches this glob (repeatable).
    #[arg(long, value_name = "GLOB")]
    pub exclude: Vec<String>,
    /// Only this MIME type, exact or `type/*` (repeatable), e.g. text/csv or image/*.
    #[arg(long, value_name = "TYPE")]
    pub mime: Vec<String>,
    /// Only items created at or after WHEN: a date (2026-08-01), an RFC 3339 time, or an age
    /// (7d, 12h, 30m, 2w).
    #[arg(long, value_name = "WHEN", value_parser = time)]
    pub since: Option<i64>,
    /// Only items created before WHEN: a date, an RFC 3339 time, or an age (7d).
    #[arg(long, value_name = "WHEN", value_parser = time)]
    pub until: Option<i64>,
    /// Only files of at least this size, e.g. 1MiB.
    #[arg(long, value_name = "SIZE")]
    pub min_size: Option<ByteSize>,
    /// Only files of at most this size, e.g. 100MB.
    #[arg(long, value_name = "SIZE")]
    pub max_size: Option<ByteSize>,
}

impl SelectArgs {
    pub fn selection(&self) -> Selection {
        Selection {
            include: self.include.clone(),
            exclude: self.exclude.clone(),
            mime: self.mime.clone(),
            since: self.since,
            until: self.until,
            min_size: self.min_size.map(|s| s.as_u64()),
            max_size: self.max_size.map(|s| s.as_u64()),
        }
    }
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
    #[command(after_long_help = FILES_LS_EXAMPLES)]
    Ls {
        #[command(flatten)]
        api: ApiArgs,
        #[command(flatten)]
        select: SelectArgs,
        /// One JSON object per file (the API's file object) on stdout.
        #[arg(long)]
        json: bool,
        /// Stop after this many files (counted after the selection).
        #[arg(long, value_name = "N")]
        limit: Option<u64>,
    },
    /// Download files by id into DIR as <id>_<filename>.
    #[command(after_long_help = FILES_GET_EXAMPLES)]
    Get {
        #[command(flatten)]
        api: ApiArgs,
        #[command(flatten)]
        transfer: TransferArgs,
        /// File ids (file_...).
        #[arg(required = true)]
        ids: Vec<String>,
        /// Directory to save into (a local path).
        #[arg(short, long, default_value = ".", value_name = "DIR")]
        dir: PathBuf,
        /// Print one JSON summary object per file on stdout (failed ones too, with url and path).
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        encrypt: EncryptArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum BatchesCommand {
    /// List batches, newest first.
    #[command(after_long_help = BATCHES_EXAMPLES)]
    Ls {
        #[command(flatten)]
        api: ApiArgs,
        /// One JSON object per batch (the API's batch object) on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Download a batch's results (JSONL).
    #[command(after_long_help = BATCHES_EXAMPLES)]
    Results {
        #[command(flatten)]
        api: ApiArgs,
        #[command(flatten)]
        transfer: TransferArgs,
        /// The batch id (msgbatch_...); its results must have ended.
        id: String,
        /// Output file (default: <id>.jsonl; `.age` is appended when encrypting); `-` streams
        /// the results to stdout (one stream, never resumed).
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
        #[command(flatten)]
        encrypt: EncryptArgs,
    },
    /// Print one result by custom_id, from the index (no request, no scan).
    #[command(after_long_help = BATCHES_EXAMPLES)]
    Show {
        /// The batch id (msgbatch_...).
        id: String,
        /// The custom_id of the request.
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
    pub transfer: TransferArgs,
    #[command(flatten)]
    pub data: DataArgs,
    /// Which files (and batches) to download; the listing still records every file.
    #[command(flatten)]
    pub select: SelectArgs,
    /// Only files.
    #[arg(long, conflicts_with = "batches_only")]
    pub files_only: bool,
    /// Only batch results.
    #[arg(long)]
    pub batches_only: bool,
    /// List everything instead of stopping at the first page already known and complete.
    #[arg(long)]
    pub full: bool,
    /// Print the plan (count, bytes, per month): list, but download nothing and write nothing
    /// to disk (no data directory is created).
    #[arg(long)]
    pub dry_run: bool,
    /// List into the index, download nothing.
    #[arg(long, conflicts_with = "dry_run")]
    pub metadata_only: bool,
    /// Files downloaded at once.
    #[arg(short = 'j', long = "jobs", default_value_t = config::defaults::FILES_AT_ONCE, value_parser = clap::value_parser!(u16).range(1..=256))]
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

#[derive(Debug, Subcommand)]
pub enum FleetCommand {
    /// Create the schema (index, queue) in the database, or migrate it to this version.
    #[command(
        after_long_help = "Examples:\n  claudedl fleet init --db postgresql://fleet@db/claudedl\n  claudedl fleet init --rpm 1000 --burst 10"
    )]
    Init {
        /// The fleet's request budget, requests per minute shared by every worker (stored in
        /// the database; workers pace API requests by it).
        #[arg(long, value_name = "N")]
        rpm: Option<f64>,
        /// Requests the shared budget lets go back to back, beyond the first.
        #[arg(long, default_value_t = 5, requires = "rpm")]
        burst: u16,
    },
    /// Queue depth, leases, workers and the last minute's throughput.
    #[command(
        after_long_help = "Example:\n  CLAUDEDL_DB=postgresql://fleet@db/claudedl claudedl fleet status --json"
    )]
    Status {
        /// Print the status as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Give files up for good: abort a segmented file's multipart upload, remove its staging
    /// file, drop its queue items, and record it as skipped (no later enqueue queues it).
    #[command(
        after_long_help = "Examples (the workers' shared data directory):\n  claudedl fleet abandon file_011CNha8iCJcU1wXNR6q4V8w --data-dir /shared/data\n  claudedl fleet abandon --undo file_011CNha8iCJcU1wXNR6q4V8w   # wanted again by the next enqueue"
    )]
    Abandon {
        /// The files' ids.
        #[arg(required = true, value_name = "FILE_ID")]
        ids: Vec<String>,
        /// Take the abandon back: the files are wanted again, and the next enqueue queues them.
        #[arg(long)]
        undo: bool,
        /// The workers' shared data directory (its `tmp/fleet` holds the staging files).
        #[command(flatten)]
        data: DataArgs,
        /// One JSON object per file on stdout.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
pub struct EnqueueArgs {
    #[command(flatten)]
    pub api: ApiArgs,
    /// Which files to queue; the listing still records every file.
    #[command(flatten)]
    pub select: SelectArgs,
    /// List everything instead of stopping at the first page already known and complete.
    #[arg(long)]
    pub full: bool,
    /// Items per list request (1-1000).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub page_size: u32,
    /// Queue a file larger than this as segments of this size (rounded up to 64 KiB), fetched
    /// by any worker; 0 or `none`: whole files only.
    #[arg(long, value_name = "SIZE", default_value_t = claudedl::fleet::segment::DEFAULT_SEGMENT_SIZE, value_parser = segment_size)]
    pub segment_size: u64,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `--segment-size`: a size, or `none` (0).
fn segment_size(value: &str) -> Result<u64, String> {
    if value.eq_ignore_ascii_case("none") {
        return Ok(0);
    }
    value.parse::<ByteSize>().map(|size| size.0)
}

#[derive(Debug, Args)]
pub struct WorkerArgs {
    #[command(flatten)]
    pub api: ApiArgs,
    #[command(flatten)]
    pub transfer: TransferArgs,
    /// The (shared) data directory downloads go to.
    #[command(flatten)]
    pub data: DataArgs,
    /// Files downloaded at once.
    #[arg(short = 'j', long = "jobs", default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub jobs: u16,
    /// Exit when nothing is queued or leased (a Kubernetes Job).
    #[arg(long)]
    pub exit_when_empty: bool,
    /// On SIGTERM, how long transfers in flight may take to finish before they are stopped
    /// and their leases released, in seconds.
    #[arg(long, default_value_t = 25.0, value_name = "SECONDS")]
    pub drain_timeout: f64,
    /// How long a claim holds without a heartbeat, in seconds (a dead worker's items go back
    /// to the queue after this).
    #[arg(long, default_value_t = 30.0, value_name = "SECONDS")]
    pub lease: f64,
    /// Touch this file at start and at every heartbeat (a Kubernetes liveness probe checks its
    /// age).
    #[arg(long, value_name = "PATH")]
    pub health_file: Option<PathBuf>,
    /// Store downloads in object storage, `s3://BUCKET[/PREFIX]`, instead of the data
    /// directory (which then holds only staging files). Credentials, region and endpoint from
    /// the AWS environment variables (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
    /// `AWS_REGION`, `AWS_ENDPOINT_URL`).
    #[arg(long, value_name = "URL")]
    pub output: Option<String>,
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
    #[command(flatten)]
    pub select: SelectArgs,
    /// Month of creation, YYYY-MM.
    #[arg(long, value_name = "YYYY-MM")]
    pub month: Option<String>,
    /// Only entries in this state (pending, downloading, complete, skipped, failed).
    #[arg(long)]
    pub state: Option<String>,
    /// Stop after this many entries (counted after the selection).
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
    /// One JSON object per entry on stdout.
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
    /// Read URLs from FILE, one per line (blank lines and `#` comments are skipped); `-` reads
    /// them from stdin.
    #[arg(short = 'i', long = "input-file", value_name = "FILE")]
    pub input_file: Option<PathBuf>,
    /// Output file (only with a single URL); `-` streams to stdout (one stream, never
    /// resumed). A URL such as s3://… is refused: claudedl writes local files.
    #[arg(short, long, value_name = "FILE", conflicts_with = "dir")]
    pub output: Option<PathBuf>,
    /// Directory to save into, named after the URL's last path segment.
    #[arg(short, long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Files downloaded at once.
    #[arg(short = 'j', long = "jobs", default_value_t = config::defaults::FILES_AT_ONCE, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub jobs: u16,
    #[command(flatten)]
    pub network: NetworkArgs,
    #[command(flatten)]
    pub transfer: TransferArgs,
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
    /// With --repair: how files are downloaded again.
    #[command(flatten)]
    pub transfer: TransferArgs,
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

/// A `--since`/`--until` value, as Unix seconds.
fn time(text: &str) -> Result<i64, String> {
    claudedl::sync::select::parse_time(text, std::time::SystemTime::now())
        .map_err(|e| e.to_string())
}

/// A proxy URL: http, https, socks5 or socks5h, with a host.
fn proxy(text: &str) -> Result<String, String> {
    config::proxy_url(text).map(|_| text.to_owned())
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
            db,
            ..
        } = &self.settings;
        let request = network.map(NetworkArgs::layer).unwrap_or_default();
        let transfer = self.command.transfer().map(TransferArgs::layer);
        Layer {
            base_url: api.and_then(|api| api.base_url.clone()),
            endpoints: api
                .map(|api| api.endpoints.clone())
                .filter(|e| !e.is_empty()),
            data_dir: data.and_then(|data| data.data_dir.clone()),
            preset: *preset,
            db: db.clone().map(config::Secret::new),
            log_format: *log_format,
            log_file: log_file.clone(),
            log_level: match self.verbose {
                0 => None,
                1 => Some(LogLevel::Info),
                _ => Some(LogLevel::Debug),
            },
            ..transfer.unwrap_or_default().over(request)
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
            Command::Enqueue(enqueue) => (Some(&enqueue.api), None),
            Command::Worker(worker) => (Some(&worker.api), Some(&worker.data)),
            Command::Fleet(FleetCommand::Abandon { data, .. }) => (None, Some(data)),
            Command::Fleet(_) => (None, None),
            Command::Get(_) | Command::Decrypt(_) | Command::Completions { .. } | Command::Man => {
                (None, None)
            }
            #[cfg(feature = "demo")]
            Command::Demo(_) => (None, None),
        }
    }

    /// The transfer flags of a command that downloads.
    fn transfer(&self) -> Option<&TransferArgs> {
        match self {
            Command::Get(GetArgs { transfer, .. })
            | Command::Sync(SyncArgs { transfer, .. })
            | Command::Verify(VerifyArgs { transfer, .. })
            | Command::Files(FilesCommand::Get { transfer, .. })
            | Command::Batches(BatchesCommand::Results { transfer, .. })
            | Command::Config(ConfigCommand::Show { transfer, .. })
            | Command::Worker(WorkerArgs { transfer, .. }) => Some(transfer),
            _ => None,
        }
    }
}

impl NetworkArgs {
    fn layer(&self) -> Layer {
        Layer {
            max_retries: self.max_retries,
            connect_timeout: self.connect_timeout,
            read_timeout: self.read_timeout,
            requests_per_minute: self.requests_per_minute,
            overload_pause: self.overload_pause,
            cacert: self.cacert.clone(),
            insecure: self.insecure.then_some(true),
            proxy: self.proxy.clone(),
            ..Layer::default()
        }
    }
}

impl TransferArgs {
    fn layer(&self) -> TransferLayer {
        TransferLayer(self.clone())
    }
}

/// The transfer flags, laid over the request flags' layer.
#[derive(Default)]
struct TransferLayer(TransferArgs);

impl TransferLayer {
    fn over(self, request: Layer) -> Layer {
        let flags = self.0;
        Layer {
            connections: flags.connections,
            max_connections: flags.max_connections,
            chunk_size: flags.chunk_size,
            min_split_size: flags.min_split_size,
            checkpoint_ms: flags.checkpoint_ms,
            limit_rate: flags.limit_rate,
            transfer_http: flags.transfer_http,
            ..request
        }
    }
}
