//! Command-line arguments.

use std::path::PathBuf;

use bytesize::ByteSize;
use clap::{Args, Parser, Subcommand};

pub use super::crypt::{DecryptArgs, EncryptArgs};

#[derive(Debug, Parser)]
#[command(
    name = "claudedl",
    version,
    about = "Fast, resumable, polite downloads from the Claude API and any HTTP(S) URL"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// More log output (-v info, -vv debug); logs go to stderr.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// No progress display; errors only.
    #[arg(short, long, global = true)]
    pub quiet: bool,
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
    /// Try claudedl without a key: sync a bundled mock API into ./claudedl-demo.
    Demo(DemoArgs),
    /// Decrypt an age file written with --encrypt-to (same as `age -d -i IDENTITY`).
    Decrypt(DecryptArgs),
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
}

#[derive(Debug, Args, Clone)]
pub struct DataArgs {
    /// The data directory.
    #[arg(long, default_value = "data", value_name = "DIR")]
    pub data_dir: PathBuf,
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
        /// Output file (default: <id>.jsonl).
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
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
    /// Parallel ranges per file.
    #[arg(short = 'c', long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub connections: u16,
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
    /// Parallel connections (byte ranges) per file.
    #[arg(short = 'c', long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub connections: u16,
    /// Files downloaded at once.
    #[arg(short = 'j', long = "jobs", default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub jobs: u16,
    /// Connections across all files at once (default: the larger of -c and 16).
    #[arg(long, value_name = "N")]
    pub max_connections: Option<u16>,
    /// Largest byte range one request asks for.
    #[arg(long, default_value = "64MiB", value_name = "SIZE")]
    pub chunk_size: ByteSize,
    /// Ranges smaller than twice this are not split further.
    #[arg(long, default_value = "1MiB", value_name = "SIZE", hide = true)]
    pub min_split_size: ByteSize,
    /// Retries per range after the first failure.
    #[arg(long, default_value_t = 5, value_name = "N")]
    pub max_retries: u32,
    /// Seconds to wait for a connection.
    #[arg(long, default_value_t = 30.0, value_name = "SECS")]
    pub connect_timeout: f64,
    /// Seconds of silence tolerated while reading a body (there is no total timeout).
    #[arg(long, default_value_t = 60.0, value_name = "SECS")]
    pub read_timeout: f64,
    /// Milliseconds between checkpoints of the resume state.
    #[arg(long, default_value_t = 100, value_name = "MS", hide = true)]
    pub checkpoint_ms: u64,
    /// Extra request header, `Name: value` (repeatable). Credential headers never follow a
    /// redirect to another origin. Prefer ANTHROPIC_API_KEY for the Claude API: command-line
    /// values are visible to other users in the process list.
    #[arg(short = 'H', long = "header", value_name = "HEADER")]
    pub headers: Vec<String>,
    /// Replace outputs that already exist (by default they are left alone).
    #[arg(long)]
    pub force: bool,
    /// Print one JSON summary object per file on stdout.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub encrypt: EncryptArgs,
}
