//! The transfer engine: parallel byte ranges written in place into one preallocated `.part`,
//! durable resume state, retries that continue from the last byte written, and a final,
//! verified, atomic rename.
//!
//! - [`plan`]: which connection fetches which bytes (with work stealing at the tail);
//! - [`response`]: judging a response before writing any of it;
//! - `stream`: one body into the file at its offsets, in bounded memory;
//! - [`ledger`]: what is written, checkpointed and hashed; `window`: the content written ahead
//!   of the hashed prefix, kept in memory for the hasher;
//! - `writer`: the `.part` as is, or sealed into an age file when encrypting;
//! - `transfer`: one file from probe to rename; `batch`: many files at once, in a lane per core;
//! - `commit`: small files (fetched whole in one request) written and made durable in groups.
//!
//! The engine never prints: it tells a [`Reporter`].

mod ahead;
mod batch;
mod commit;
mod error;
mod events;
pub mod ledger;
pub mod plan;
pub mod response;
mod small;
mod stream;
mod transfer;
mod window;
mod writer;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::header::HeaderMap;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use url::Url;

pub use batch::Landed;
pub use commit::reserve_open_files;
pub use error::TransferError;
pub use transfer::{fetch_range, release_state, sha256_of};
pub use writer::PartWriter;

use crate::crypt::Encryption;
use crate::http::HttpClient;
use crate::http::retry::RetryPolicy;

const MIB: u64 = 1024 * 1024;
/// Bounds of the plaintext an encrypted download keeps in memory ahead of the hashed prefix.
const SEALED_WINDOW: std::ops::RangeInclusive<u64> = 16 * MIB..=128 * MIB;

/// Tunables of the engine (the CLI maps its flags onto these).
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Parallel ranges per file (`-c`).
    pub connections: usize,
    /// Connections across all files of the process.
    pub max_connections: usize,
    /// The largest range one request asks for (`--chunk-size`).
    pub chunk_size: u64,
    /// The largest range one request asks for when encrypting (if below `chunk_size`; twice
    /// this when requests are paced by a budget): see [`EngineConfig::pieces`].
    pub encrypted_piece: u64,
    /// Ranges smaller than twice this are never split.
    pub min_split: u64,
    pub retry: RetryPolicy,
    /// Longest silence tolerated while reading a body (`--read-timeout`).
    pub read_timeout: Duration,
    /// How often written bytes are synced and recorded in the resume state.
    pub checkpoint_interval: Duration,
    /// How many times a file that changed on the server is started over.
    pub max_restarts: u32,
}

impl Default for EngineConfig {
    fn default() -> Self {
        use crate::config::defaults;
        EngineConfig {
            connections: defaults::CONNECTIONS.into(),
            max_connections: defaults::MIN_MAX_CONNECTIONS.into(),
            chunk_size: defaults::CHUNK_SIZE,
            encrypted_piece: 8 * MIB,
            min_split: defaults::MIN_SPLIT,
            retry: RetryPolicy::default(),
            read_timeout: crate::config::network::seconds(defaults::READ_TIMEOUT),
            checkpoint_interval: Duration::from_millis(defaults::CHECKPOINT_MS),
            max_restarts: 2,
        }
    }
}

/// How one transfer is cut into requests, and how much of its content may wait in memory for
/// the hasher.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pieces {
    /// The largest range one request asks for.
    pub cap: u64,
    /// Content kept in memory ahead of the hashed prefix (0: none, the hasher reads it back).
    pub window: u64,
}

impl EngineConfig {
    /// A plain download asks for pieces of up to `chunk_size` and keeps no window (reading back
    /// from the page cache is cheap). An encrypted one asks for pieces of up to
    /// `encrypted_piece`, taken in order, so that the connections stay near the hashed prefix,
    /// and keeps what they span (one piece each, within 16..=128 MiB) in memory, so that the
    /// hasher need not open the sealed chunks again. Paced by a request budget (API traffic),
    /// its pieces are twice as large: half the requests, twice the memory.
    pub fn pieces(&self, encrypted: bool, paced: bool) -> Pieces {
        if !encrypted {
            return Pieces {
                cap: self.chunk_size,
                window: 0,
            };
        }
        let piece = self.encrypted_piece * if paced { 2 } else { 1 };
        let cap = self.chunk_size.min(piece);
        let span = self.connections.max(1) as u64 * cap;
        Pieces {
            cap,
            window: span.clamp(*SEALED_WINDOW.start(), *SEALED_WINDOW.end()),
        }
    }
}

/// One file to fetch.
#[derive(Debug, Clone)]
pub struct TransferSpec {
    pub url: Url,
    /// Extra request headers (credentials among them stay on the URL's origin).
    pub headers: HeaderMap,
    pub output: PathBuf,
    /// Replace an existing output instead of leaving it alone.
    pub overwrite: bool,
    /// Where the `.part` and its state live, as a base name (default: beside the output).
    pub staging: Option<PathBuf>,
    /// The size the file must have (e.g. the API's `size_bytes`); checked before writing.
    pub expected_size: Option<u64>,
    /// What names the file in logs: the Files API id, a batch id; `None` for a plain URL.
    pub file_id: Option<String>,
    /// Store the file as an age file for these recipients (no plaintext touches the disk).
    pub encrypt: Option<Arc<Encryption>>,
    /// Shown the content in order as it is hashed.
    pub tap: Option<Arc<dyn ContentTap>>,
    /// Keep the resume state (marked installed) after the rename, for the caller to remove
    /// with [`release_state`] once it has recorded the download: a rerun between the two finds
    /// the output complete instead of fetching it again.
    pub keep_state: bool,
    /// An output already there with `expected_size` bytes (and no resume state) is this file,
    /// placed by an interrupted run of ours that did not get to record it (a small file has no
    /// state to say so): it is hashed and reported downloaded without a request. Only for a
    /// caller that knows it began this download (sync: an entry left Downloading).
    pub adopt_output: bool,
}

/// Sees a transfer's content (the plaintext, when encrypting) in order, from its first byte,
/// as the hasher reads it back: a way to index a file without a second pass, and without
/// writing its plaintext anywhere.
pub trait ContentTap: Send + Sync + std::fmt::Debug {
    /// The content starts over from byte 0 (a new attempt).
    fn restart(&self);
    /// The next bytes.
    fn feed(&self, bytes: &[u8]);
}

impl TransferSpec {
    pub fn new(url: Url, output: impl Into<PathBuf>) -> TransferSpec {
        TransferSpec {
            url,
            headers: HeaderMap::new(),
            output: output.into(),
            overwrite: false,
            staging: None,
            expected_size: None,
            file_id: None,
            encrypt: None,
            tap: None,
            keep_state: false,
            adopt_output: false,
        }
    }
}

/// How a transfer ended well.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransferStatus {
    Downloaded,
    /// The output existed already and was left alone.
    AlreadyPresent,
}

/// The record of a finished transfer.
#[derive(Debug, Clone)]
pub struct TransferReport {
    /// Redacted source URL.
    pub url: String,
    pub path: PathBuf,
    pub status: TransferStatus,
    pub size: u64,
    /// Bytes fetched by this run (less than `size` after a resume).
    pub fetched: u64,
    /// Bytes already on disk when this run started.
    pub resumed_from: u64,
    /// SHA-256 of the content (the plaintext, when encrypted).
    pub sha256: Option<String>,
    /// Stored as an age file.
    pub encrypted: bool,
    pub duration: Duration,
    pub retries: u32,
    /// A resume state was kept for the caller to release ([`TransferSpec::keep_state`]); a
    /// small file never has one.
    pub state_kept: bool,
}

/// Hears about progress. Every method has a do-nothing default.
pub trait Reporter: Send + Sync {
    /// `files` more transfers are coming, of `bytes` in all when every size is known.
    fn queued(&self, _files: usize, _bytes: Option<u64>) {}
    fn started(&self, _id: usize, _url: &str, _total: Option<u64>, _already: u64) {}
    fn progress(&self, _id: usize, _bytes: u64) {}
    fn connections(&self, _id: usize, _live: usize) {}
    fn notice(&self, _id: usize, _message: &str) {}
    fn retrying(&self, _id: usize, _failures: u32, _delay: Duration, _reason: &str) {}
    fn finished(&self, _id: usize, _result: &Result<TransferReport, TransferError>) {}
}

/// A reporter that ignores everything.
pub struct Silent;
impl Reporter for Silent {}

/// The engine: one client, one connection cap, one cancellation for the whole process.
#[derive(Clone)]
pub struct Engine {
    client: HttpClient,
    config: Arc<EngineConfig>,
    connections: Arc<Semaphore>,
    cancel: CancellationToken,
    /// The group committer of small files, started with the first one.
    committer: Arc<std::sync::OnceLock<commit::Committer>>,
    /// How many engines share the process's open files for their group commits (more than
    /// one: the lanes of a batch).
    committers: usize,
}

impl Engine {
    pub fn new(client: HttpClient, config: EngineConfig) -> Engine {
        let connections = Arc::new(Semaphore::new(config.max_connections.max(1)));
        Engine {
            client,
            config: Arc::new(config),
            connections,
            cancel: CancellationToken::new(),
            committer: Arc::default(),
            committers: 1,
        }
    }

    /// Whether a file of `size` bytes goes by the small-file path: fetched whole by one
    /// request, its body written in one go, its slot among the files at once given back before
    /// its group commit.
    pub fn fetches_whole(&self, size: u64, encrypted: bool) -> bool {
        !encrypted && size <= self.config.min_split.max(1)
    }

    /// Cancelling this token stops every transfer, saving its resume state.
    pub fn cancel_token(&self) -> CancellationToken {
        self.cancel.clone()
    }

    fn committer(&self) -> &commit::Committer {
        self.committer
            .get_or_init(|| commit::Committer::start(self.committers))
    }

    /// This engine for one of `lanes` (`batch`), each on a runtime of its own: its own HTTP
    /// client (a pooled connection belongs to the runtime that opened it) and group committer;
    /// the same governor, connection cap and settings; a child of its cancellation (cancelled
    /// with it, and waited on by this lane's transfers alone: a file's every wait registers
    /// with the token, and a token shared by the lanes' threads is a lock they contend for).
    fn for_lane(&self, lanes: usize) -> Result<Engine, crate::http::HttpError> {
        Ok(Engine {
            client: self.client.for_lane()?,
            cancel: self.cancel.child_token(),
            committer: Arc::default(),
            committers: lanes,
            ..self.clone()
        })
    }

    /// Download one file; `id` identifies it to the reporter.
    pub async fn download(
        &self,
        id: usize,
        spec: &TransferSpec,
        reporter: Arc<dyn Reporter>,
    ) -> Result<TransferReport, TransferError> {
        self.download_in(id, spec, reporter, None).await
    }

    /// [`Engine::download`] as one of the caller's transfers at once, holding `slot` until its
    /// request is over: a small file gives it back as soon as its body is written, before its
    /// group commit, so that the caller's next transfer starts meanwhile.
    pub async fn download_holding(
        &self,
        id: usize,
        spec: &TransferSpec,
        reporter: Arc<dyn Reporter>,
        slot: tokio::sync::OwnedSemaphorePermit,
    ) -> Result<TransferReport, TransferError> {
        let batch = batch::InBatch { slot, seen: None };
        self.download_in(id, spec, reporter, Some(batch)).await
    }

    /// [`Engine::download`] as one of a batch's files at once (`batch`): a small file gives its
    /// slot back as soon as its body is written, so the next file starts while it commits.
    async fn download_in(
        &self,
        id: usize,
        spec: &TransferSpec,
        reporter: Arc<dyn Reporter>,
        batch: Option<batch::InBatch>,
    ) -> Result<TransferReport, TransferError> {
        let started = Instant::now();
        let counts = Arc::new(events::Counts::default());
        // Boxed: a transfer's future is large, and tasks move it around. It is dropped before
        // a small file waits for its group commit (many wait at once).
        let downloaded = Box::pin(transfer::download(
            self,
            id,
            spec,
            Arc::clone(&reporter),
            &counts,
            batch,
        ))
        .await;
        let result = match downloaded {
            Ok(downloaded) => downloaded.in_place(spec, &self.cancel).await,
            Err(error) => Err(error),
        };
        events::file_done(spec, &result, &counts, started.elapsed());
        reporter.finished(id, &result);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pieces(cap: u64, window: u64) -> Pieces {
        Pieces { cap, window }
    }

    #[test]
    fn encrypted_downloads_ask_for_smaller_pieces_and_keep_what_they_span() {
        let config = EngineConfig::default();
        assert_eq!(config.pieces(false, false), pieces(64 * MIB, 0));
        assert_eq!(config.pieces(false, true), pieces(64 * MIB, 0));
        assert_eq!(config.pieces(true, false), pieces(8 * MIB, 64 * MIB));
        assert_eq!(config.pieces(true, true), pieces(16 * MIB, 128 * MIB));
        let small = EngineConfig {
            chunk_size: 4 * MIB,
            ..EngineConfig::default()
        };
        let smaller = small.pieces(true, false);
        assert_eq!(
            smaller,
            pieces(4 * MIB, 32 * MIB),
            "--chunk-size below wins"
        );
    }

    #[test]
    fn the_window_stays_within_bounds() {
        let with = |connections| EngineConfig {
            connections,
            ..EngineConfig::default()
        };
        assert_eq!(with(1).pieces(true, false).window, 16 * MIB);
        assert_eq!(with(32).pieces(true, false).window, 128 * MIB);
    }
}
