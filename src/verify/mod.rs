//! `claudedl verify`: check the data directory against the index.
//!
//! 1. `plan`: from the index, every Complete file and batch results file with the SHA-256 it
//!    recorded (the items to check), every path the index points to, and every entry still in
//!    flight (Pending, Downloading or Failed).
//! 2. `hash`: re-hash the items on a small pool of threads (`jobs`), each with one large
//!    buffer; a file's bytes come through an [`Opener`]. [`DataFiles`] opens them from the data
//!    directory: plain files as they are, encrypted ones (`NAME.age`) through a decrypting reader
//!    when identities are given, so their plaintext is hashed against the index. Without
//!    identities an encrypted file is only checked to be there with the size an age file of the
//!    recorded plaintext size has, and counted as unchecked (not a problem).
//! 3. `scan`: walk `raw/` for files no index row points to, and `tmp/` for in-flight
//!    downloads, plain or encrypted (reported, never a problem), and files no in-flight entry
//!    owns; in both, symbolic links (a problem: claudedl never makes one, and one that leaves
//!    the data directory says so).
//! 4. [`mark_for_repair`]: set each missing, changed or unreadable entry back to Failed, so
//!    the sync download path ([`crate::sync::Sync::fetch_wanted`]) fetches it again through
//!    `tmp/` and replaces the file atomically; [`repair_outcomes`] reads back how that went.
//!
//! A tampered encrypted file cannot be decrypted at all (age authenticates every 64 KiB chunk):
//! with identities it is reported unreadable, never changed; changed means it decrypts, to other
//! bytes. Identities that open none of the encrypted files stop the run before hashing
//! ([`VerifyError::WrongIdentity`]) rather than report every file unreadable.
//!
//! Orphans are reported, never deleted. Nothing here writes to the data directory except
//! [`mark_for_repair`], and the caller holds the data directory's lock throughout.

mod encrypted;
mod hash;
mod plan;
mod scan;

use std::io::{self, Read};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::crypt::CryptError;
use crate::store::index::{BatchOutcome, FileOutcome, FileState, Index, IndexError};
use crate::store::layout::DataDir;

pub use encrypted::{DataFiles, Identities};

/// Where a file's bytes come from.
pub trait Opener: Sync {
    /// The plaintext of `item`, whose hash the index records, or [`Opened::Unchecked`]. An
    /// error of kind `NotFound` means the file is missing; any other, that it is unreadable.
    fn open(&self, item: &Item) -> io::Result<Opened>;

    /// Before anything is hashed, with every item to check: a chance to refuse the whole run
    /// (keys that open none of the files).
    fn preflight(&self, _items: &[Item]) -> Result<(), VerifyError> {
        Ok(())
    }
}

impl<F> Opener for F
where
    F: Fn(&Item) -> io::Result<Opened> + Sync,
{
    fn open(&self, item: &Item) -> io::Result<Opened> {
        self(item)
    }
}

/// What an [`Opener`] found.
pub enum Opened {
    /// The plaintext, to hash.
    Plain(Box<dyn Read>),
    /// An encrypted file and no identity to decrypt it: it is there, and its size fits an age
    /// file of the plaintext size the index records. Not a problem, but not hashed either.
    Unchecked,
}

/// Whether an entry is a file or a batch's results.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ItemKind {
    File,
    Batch,
}

/// A download the index records as complete.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Item {
    #[serde(rename = "item")]
    pub kind: ItemKind,
    pub id: String,
    /// Relative to the data directory, `/`-separated.
    pub path: String,
    /// `None` when the index holds no hash.
    #[serde(rename = "expected_sha256")]
    pub sha256: Option<String>,
    /// The size the API gave (files only).
    #[serde(rename = "expected_size", skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// `path` is an age file; `sha256` and `size` are of its plaintext.
    pub encrypted: bool,
}

/// One thing verify found. All but [`Finding::InProgress`] are problems.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Finding {
    /// The index says complete; the file is not there.
    Missing {
        #[serde(flatten)]
        item: Item,
    },
    /// The file's bytes differ from what the index recorded.
    Changed {
        #[serde(flatten)]
        item: Item,
        sha256: String,
        size: u64,
    },
    /// The file is there but could not be read to the end.
    Unreadable {
        #[serde(flatten)]
        item: Item,
        error: String,
    },
    /// The index records no hash to check the file against.
    Unhashed {
        #[serde(flatten)]
        item: Item,
    },
    /// A file under `raw/` no index row points to, or under `tmp/` no in-flight entry owns.
    Orphaned { path: String, size: u64 },
    /// A symbolic link under `raw/` or `tmp/` (claudedl never makes one): what it points to,
    /// and whether that is outside the data directory.
    Link {
        path: String,
        target: String,
        leaves_data_dir: bool,
    },
    /// A download that has not finished (resumed by the next sync): not a problem.
    InProgress {
        item: ItemKind,
        id: String,
        state: FileState,
        /// The `.part`, when there is one.
        path: Option<String>,
        /// Bytes the resume state records as written.
        bytes: u64,
    },
}

impl Finding {
    pub fn is_problem(&self) -> bool {
        !matches!(self, Finding::InProgress { .. })
    }

    /// The entry to download again, for the problems a download fixes.
    pub fn repairable(&self) -> Option<&Item> {
        match self {
            Finding::Missing { item }
            | Finding::Changed { item, .. }
            | Finding::Unreadable { item, .. }
            | Finding::Unhashed { item } => Some(item),
            Finding::Orphaned { .. } | Finding::Link { .. } | Finding::InProgress { .. } => None,
        }
    }

    /// The kind as it appears in the JSON output.
    pub fn kind(&self) -> &'static str {
        match self {
            Finding::Missing { .. } => "missing",
            Finding::Changed { .. } => "changed",
            Finding::Unreadable { .. } => "unreadable",
            Finding::Unhashed { .. } => "unhashed",
            Finding::Orphaned { .. } => "orphaned",
            Finding::Link { .. } => "link",
            Finding::InProgress { .. } => "in_progress",
        }
    }
}

/// What a verify run checked and found.
#[derive(Debug, Default)]
pub struct VerifyReport {
    /// Sorted by kind, then path.
    pub findings: Vec<Finding>,
    pub files_checked: u64,
    pub batches_checked: u64,
    /// Bytes hashed.
    pub bytes: u64,
    /// Encrypted files only checked for presence and size (no identity to decrypt them).
    pub unchecked: u64,
    pub duration: Duration,
}

impl VerifyReport {
    pub fn problems(&self) -> impl Iterator<Item = &Finding> {
        self.findings.iter().filter(|f| f.is_problem())
    }
}

/// Hears about hashing progress (from several threads at once).
pub trait Progress: Sync {
    /// Before hashing: how many bytes the items should hold.
    fn start(&self, _bytes: u64) {}
    fn hashed(&self, _bytes: u64) {}
}

/// A progress listener that ignores everything.
pub struct Quiet;
impl Progress for Quiet {}

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error("reading the directory {}: {source}", path.display())]
    Scan {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Crypt(#[from] CryptError),
    #[error(
        "none of the identities in {identities} opens {file} (nor any other encrypted file): \
         pass the identity of a recipient the files were encrypted to"
    )]
    WrongIdentity { identities: String, file: String },
}

/// Check every complete download against the index, and look for orphans and in-flight
/// downloads. `jobs` threads hash at once. The caller holds the data directory's lock.
pub fn verify(
    data: &DataDir,
    index: &dyn Index,
    open: &dyn Opener,
    jobs: usize,
    progress: &dyn Progress,
) -> Result<VerifyReport, VerifyError> {
    let started = Instant::now();
    let plan = plan::Plan::from_index(data, index)?;
    open.preflight(&plan.items)?;
    progress.start(plan.items.iter().filter_map(|item| item.size).sum());
    let hashed = hash::check_all(&plan.items, open, jobs, progress);
    let mut findings = hashed.findings;
    findings.extend(scan::orphans_in_raw(data, &plan.known_paths)?);
    findings.extend(scan::in_flight(data, &plan.in_flight)?);
    findings.sort_by(|a, b| (a.kind(), sort_key(a)).cmp(&(b.kind(), sort_key(b))));
    let count = |kind| plan.items.iter().filter(|i| i.kind == kind).count() as u64;
    Ok(VerifyReport {
        findings,
        files_checked: count(ItemKind::File),
        batches_checked: count(ItemKind::Batch),
        bytes: hashed.bytes,
        unchecked: hashed.unchecked,
        duration: started.elapsed(),
    })
}

fn sort_key(finding: &Finding) -> &str {
    match finding {
        Finding::Orphaned { path, .. } | Finding::Link { path, .. } => path,
        Finding::InProgress { id, .. } => id,
        other => other.repairable().map_or("", |item| &item.path),
    }
}

/// Set the entry of every repairable finding back to Failed (its path and hash stay recorded,
/// so the file is no orphan meanwhile), for the sync download path to fetch again. Returns the
/// entries marked.
pub fn mark_for_repair(
    index: &mut dyn Index,
    findings: &[Finding],
) -> Result<Vec<Item>, VerifyError> {
    let mut marked = Vec::new();
    for finding in findings {
        let Some(item) = finding.repairable() else {
            continue;
        };
        let reason = format!("verify: {} {}", finding.kind(), item.path);
        match item.kind {
            ItemKind::File => {
                index.record_file(&item.id, &FileOutcome::Failed { reason, retries: 0 })?
            }
            ItemKind::Batch => index.record_batch(&item.id, &BatchOutcome::Failed { reason })?,
        }
        marked.push(item.clone());
    }
    Ok(marked)
}

/// How the repair of one entry ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Repair {
    Repaired {
        #[serde(flatten)]
        item: Item,
        /// The hash of the bytes downloaded.
        sha256: String,
    },
    /// Still not complete; the next sync tries again.
    RepairFailed {
        #[serde(flatten)]
        item: Item,
        state: FileState,
        reason: String,
    },
}

impl Repair {
    pub fn is_repaired(&self) -> bool {
        matches!(self, Repair::Repaired { .. })
    }
}

/// After the download pass: which of the `marked` entries the index now records as complete.
pub fn repair_outcomes(index: &dyn Index, marked: &[Item]) -> Result<Vec<Repair>, VerifyError> {
    marked
        .iter()
        .map(|item| {
            let (state, reason, sha256) = match item.kind {
                ItemKind::File => index.file(&item.id)?.map(|e| (e.state, e.reason, e.sha256)),
                ItemKind::Batch => index
                    .batch(&item.id)?
                    .map(|e| (e.state, e.reason, e.sha256)),
            }
            .ok_or_else(|| IndexError::Unknown {
                kind: "entry",
                id: item.id.clone(),
            })?;
            Ok(match state {
                FileState::Complete => Repair::Repaired {
                    item: item.clone(),
                    sha256: sha256.unwrap_or_default(),
                },
                state => Repair::RepairFailed {
                    item: item.clone(),
                    state,
                    reason: reason.unwrap_or_else(|| "not downloaded".into()),
                },
            })
        })
        .collect()
}

#[cfg(test)]
mod tests;
