//! Command-line arguments.

use std::path::PathBuf;

use bytesize::ByteSize;
use clap::{Args, Parser, Subcommand};

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
}
