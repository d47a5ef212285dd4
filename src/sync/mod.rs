//! `claudedl sync`: mirror an account's downloadable files and ended batch results into the
//! data directory, incrementally, recording everything in the index.
//!
//! 1. `listing`: list newest first into the index; stop at the first page that is wholly
//!    known and settled (unless `full`).
//! 2. `files`: download what is pending through the engine (`DATA/tmp` → `DATA/raw/YYYY-MM`),
//!    skipping and recording permanent outcomes (not downloadable, expired).
//! 3. `batches`: fetch ended batches' results, index every line, check the count.
//! 4. Rewrite the per-month metadata JSON of every month touched.

mod batches;
pub(crate) mod files;
pub(crate) mod listing;
pub mod select;

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::api::{ApiClient, ApiError};
use crate::crypt::Encryption;
use crate::engine::{Engine, Reporter, TransferError};
use crate::store::index::{Index, IndexError};
use crate::store::layout::{DataDir, LayoutError};
use crate::store::meta::MetaError;

pub use batches::{read_result, scan_results};
pub use files::relative;
pub use select::{Selectable, Selection};

/// What a sync does.
#[derive(Debug, Clone)]
pub struct SyncOptions {
    pub files: bool,
    pub batches: bool,
    /// List everything instead of stopping at the first settled page.
    pub full: bool,
    /// List and print the plan; no downloads, no index writes.
    pub dry_run: bool,
    /// List into the index; no downloads.
    pub metadata_only: bool,
    /// Items per list request (1–1000).
    pub page_size: u32,
    /// Files downloaded at once.
    pub jobs: usize,
    /// Store files and batch results as age files for these recipients.
    pub encrypt: Option<Arc<Encryption>>,
    /// Download only the entries with these ids (`None`: every entry wanted).
    pub only: Option<HashSet<String>>,
    /// Download only the entries selected (`--include`, `--since`, …; see [`select`]).
    pub select: Selection,
    /// Download in plaintext even into a directory that holds encrypted entries
    /// (`--no-encrypt`); otherwise [`Sync::run`] refuses to.
    pub plaintext_ok: bool,
}

impl SyncOptions {
    /// Whether `item` is to be downloaded in this run, if wanted.
    pub(crate) fn includes(&self, item: &impl Selectable) -> bool {
        let listed = self
            .only
            .as_ref()
            .is_none_or(|only| only.contains(item.id()));
        listed && self.select.selects(item)
    }
}

impl Default for SyncOptions {
    fn default() -> Self {
        SyncOptions {
            files: true,
            batches: true,
            full: false,
            dry_run: false,
            metadata_only: false,
            page_size: 1000,
            jobs: crate::config::defaults::FILES_AT_ONCE.into(),
            encrypt: None,
            only: None,
            select: Selection::default(),
            plaintext_ok: false,
        }
    }
}

/// What a sync did.
#[derive(Debug, Default)]
pub struct SyncSummary {
    pub files_listed: u64,
    pub files_new: u64,
    pub list_requests: u64,
    pub downloaded: u64,
    pub bytes: u64,
    pub batches_listed: u64,
    pub batches_downloaded: u64,
    pub results_indexed: u64,
    /// (id, reason) of items skipped for good.
    pub skipped: Vec<(String, String)>,
    /// (id, reason) of items that failed this time and will be retried by the next sync.
    pub failed: Vec<(String, String)>,
    /// Dry run: what would be downloaded.
    pub planned: Vec<Planned>,
    pub interrupted: bool,
    pub duration: Duration,
}

/// An item a dry run would download.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    pub id: String,
    pub created_at: String,
    /// A file's size; `None` for batch results (unknown until fetched).
    pub bytes: Option<u64>,
}

impl Planned {
    fn of(item: &impl Selectable) -> Planned {
        Planned {
            id: item.id().to_owned(),
            created_at: item.created_at().to_owned(),
            bytes: item.file().map(|(_, _, size)| size),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error(transparent)]
    Layout(#[from] LayoutError),
    #[error(transparent)]
    Meta(#[from] MetaError),
    #[error(transparent)]
    Transfer(#[from] TransferError),
    #[error(
        "{} holds encrypted downloads, and no recipients are given: pass --encrypt-to or \
         --recipients-file, set [crypt] recipients in the config file, or pass --no-encrypt to \
         store new downloads in plaintext",
        root.display()
    )]
    PlaintextBesideEncrypted { root: std::path::PathBuf },
    #[error("cleaning stale temporary files in {}: {source}", path.display())]
    Clean {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("reading batch results {}: {source}", path.display())]
    Results {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Everything one sync run works with.
pub struct Sync<'a> {
    pub api: &'a ApiClient,
    pub engine: &'a Engine,
    pub data: &'a DataDir,
    pub index: &'a mut dyn Index,
    pub reporter: Arc<dyn Reporter>,
}

impl Sync<'_> {
    /// Run a sync. The caller holds the data directory's lock.
    ///
    /// A directory that holds encrypted downloads gets no plaintext ones by accident (a file
    /// whose encrypted download failed would otherwise be fetched again in the clear).
    pub async fn run(&mut self, options: &SyncOptions) -> Result<SyncSummary, SyncError> {
        if options.encrypt.is_none() && !options.plaintext_ok && self.index.holds_encrypted()? {
            return Err(SyncError::PlaintextBesideEncrypted {
                root: self.data.root().to_path_buf(),
            });
        }
        let started = Instant::now();
        let mut summary = SyncSummary::default();
        let mut months = BTreeSet::new();
        if !options.dry_run {
            self.clean_stale_temps()?;
        }
        if options.files && (options.dry_run || options.metadata_only) {
            listing::list_files(self, options, &mut summary).await?;
        } else if options.files {
            files::list_and_download_files(self, options, &mut summary, &mut months).await?;
        }
        if options.batches && !summary.interrupted {
            let listed = listing::list_batches(self, options, &mut summary).await?;
            if !options.dry_run && !options.metadata_only {
                batches::download_batches(self, options, &mut summary, &mut months, &listed)
                    .await?;
            }
        }
        self.finish(&months, started, summary)
    }

    /// Download what the index marks as wanted (Pending, Downloading or Failed files when
    /// `options.files`; ended, unsettled batches when `options.batches`; of those, only
    /// `options.only` when set) without listing: how `claudedl verify --repair` fetches again
    /// the entries it marked. The caller holds the data directory's lock.
    pub async fn fetch_wanted(&mut self, options: &SyncOptions) -> Result<SyncSummary, SyncError> {
        let started = Instant::now();
        let mut summary = SyncSummary::default();
        let mut months = BTreeSet::new();
        self.clean_stale_temps()?;
        if options.files {
            files::download_files(self, options, &mut summary, &mut months).await?;
        }
        if options.batches && !summary.interrupted {
            let listed = listing::ListedResults::new();
            batches::download_batches(self, options, &mut summary, &mut months, &listed).await?;
        }
        self.finish(&months, started, summary)
    }

    /// Remove the temporary files (`.NAME.tmp-PID`) that killed processes left in `tmp/` and
    /// `meta/`. Under the data directory's lock no other process writes there, and this one
    /// has not started to.
    fn clean_stale_temps(&self) -> Result<(), SyncError> {
        for dir in [self.data.tmp(), self.data.meta()] {
            crate::store::atomic::remove_stale_temps(&dir, None, true)
                .map_err(|source| SyncError::Clean { path: dir, source })?;
        }
        files::remove_recorded_states(self)
    }

    /// Rewrite the metadata of the months touched and time the run.
    fn finish(
        &self,
        months: &BTreeSet<String>,
        started: Instant,
        mut summary: SyncSummary,
    ) -> Result<SyncSummary, SyncError> {
        crate::store::meta::write_months(
            self.data,
            &*self.index,
            months.iter().map(String::as_str),
        )?;
        summary.duration = started.elapsed();
        Ok(summary)
    }
}
