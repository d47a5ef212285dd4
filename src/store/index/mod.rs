//! The index: the authoritative record of what a sync has seen, fetched, skipped or failed.
//!
//! [`Index`] is deliberately narrow so that two backends implement it: [`SqliteIndex`], the
//! default, kept at `DATA/meta/index.sqlite`, and [`PgIndex`], the fleet's index in PostgreSQL
//! (`--db`). Timestamps are RFC 3339 UTC text, paths are relative to the data directory with
//! `/` separators.

mod migrations;
pub(crate) mod pg_migrations;
pub mod pg_tls;
mod postgres;
mod sqlite;
#[cfg(test)]
mod tests;
mod time;

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::PathBuf;

use serde::Serialize;

pub use postgres::PgIndex;
pub(crate) use postgres::{
    file_from_row as pg_file_from_row, record_completes_sql as pg_record_completes,
    record_file_sql as pg_record_file, want_again_sql as pg_want_again,
};
pub use sqlite::SqliteIndex;

/// Where a file (or batch's results) stands. Stored as lowercase text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FileState {
    /// Known, not yet fetched.
    Pending,
    /// A fetch started and has not recorded its end (it may have been interrupted).
    Downloading,
    /// Fetched and verified; nothing more to do.
    Complete,
    /// Never to be fetched (not downloadable, gone); nothing more to do.
    Skipped,
    /// The last fetch failed; the next sync tries again.
    Failed,
}

impl FileState {
    pub const ALL: [FileState; 5] = [
        FileState::Pending,
        FileState::Downloading,
        FileState::Complete,
        FileState::Skipped,
        FileState::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FileState::Pending => "pending",
            FileState::Downloading => "downloading",
            FileState::Complete => "complete",
            FileState::Skipped => "skipped",
            FileState::Failed => "failed",
        }
    }

    /// The state named `text` (as written by [`FileState::as_str`]).
    pub fn parse(text: &str) -> Option<FileState> {
        FileState::ALL
            .into_iter()
            .find(|state| state.as_str() == text)
    }

    /// Complete or Skipped: nothing more to do.
    pub fn is_settled(self) -> bool {
        matches!(self, FileState::Complete | FileState::Skipped)
    }
}

impl fmt::Display for FileState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A file's metadata as the API lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileMeta {
    pub id: String,
    pub filename: String,
    pub mime_type: String,
    pub size_bytes: u64,
    pub created_at: String,
    pub downloadable: Option<bool>,
    pub expires_at: Option<String>,
}

/// A file as the index records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileEntry {
    pub meta: FileMeta,
    pub state: FileState,
    /// Why it was skipped or failed.
    pub reason: Option<String>,
    /// Relative to the data directory.
    pub path: Option<String>,
    /// SHA-256 of the content (the plaintext, when encrypted).
    pub sha256: Option<String>,
    pub etag: Option<String>,
    pub retries: u32,
    pub first_seen_at: String,
    pub updated_at: String,
    pub downloaded_at: Option<String>,
    /// `path` is an age file.
    pub encrypted: bool,
}

/// How the reason of a file Failed as a malformed listing entry starts: such a file is not
/// fetched, and goes back to Pending when a later listing gives it valid metadata.
pub const MALFORMED_REASON: &str = "malformed listing entry";

/// The end (or start) of a file's fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileOutcome {
    Downloading,
    Complete {
        path: String,
        sha256: String,
        etag: Option<String>,
        retries: u32,
        encrypted: bool,
    },
    Skipped {
        reason: String,
    },
    Failed {
        reason: String,
        retries: u32,
    },
}

/// A filter over the files; every field set must match. Results come newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileQuery {
    /// `YYYY-MM`: the first seven characters of `created_at`.
    pub month: Option<String>,
    /// Exact MIME type.
    pub mime: Option<String>,
    /// A glob on the filename (`*.csv`; `*`, `?`, `[...]`; case-sensitive).
    pub name_glob: Option<String>,
    pub state: Option<FileState>,
    pub limit: Option<usize>,
}

/// A batch's metadata as the API lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchMeta {
    pub id: String,
    pub created_at: String,
    pub processing_status: String,
    pub ended_at: Option<String>,
    pub results_url: Option<String>,
    /// The sum of the batch's `request_counts`.
    pub expected_results: u64,
}

/// A batch as the index records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchEntry {
    pub meta: BatchMeta,
    pub state: FileState,
    pub reason: Option<String>,
    /// The results file, relative to the data directory.
    pub path: Option<String>,
    pub sha256: Option<String>,
    /// Result rows in the index (none for encrypted results: see `sync::batches`).
    pub results_indexed: u64,
    pub downloaded_at: Option<String>,
    /// `path` is an age file.
    pub encrypted: bool,
}

/// One line of a batch's results file: where it is and what it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResultRow {
    pub custom_id: String,
    /// `succeeded`, `errored`, `canceled` or `expired`.
    pub result_type: String,
    /// Byte offset of the line in the results file.
    pub offset: u64,
    /// Length of the line in bytes, without its newline.
    pub length: u64,
}

/// The end (or start) of a batch results fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchOutcome {
    Downloading,
    Complete {
        path: String,
        /// Of the content (the plaintext, when encrypted).
        sha256: String,
        encrypted: bool,
    },
    Failed {
        reason: String,
    },
    Skipped {
        reason: String,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("opening the index {}: {source}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: BoxError,
    },
    #[error(
        "the index {} has schema version {found}, newer than this claudedl knows ({known}): \
         upgrade claudedl or use another --data-dir",
        path.display()
    )]
    TooNew {
        path: PathBuf,
        found: i64,
        known: i64,
    },
    #[error("migrating the index {} to schema version {version}: {source}", path.display())]
    Migrate {
        path: PathBuf,
        version: usize,
        #[source]
        source: BoxError,
    },
    #[error("index: {action} {id}: {source}")]
    Query {
        /// What was being done, e.g. "recording file".
        action: &'static str,
        /// The file or batch concerned, or what the query was for.
        id: String,
        #[source]
        source: BoxError,
    },
    #[error("index: {kind} {id} is not in the index")]
    Unknown { kind: &'static str, id: String },
    #[error(
        "index: {kind} {id} cannot be recorded at {path}: another {kind} is recorded there \
         (two entries never share a file)"
    )]
    PathTaken {
        kind: &'static str,
        id: String,
        path: String,
    },
    #[error(
        "the index {} has schema version {found}, too old to read without migrating it: \
         run `claudedl sync` on this data directory first",
        path.display()
    )]
    TooOld { path: PathBuf, found: i64 },
    #[error(
        "the database {database} holds no claudedl schema: run `claudedl fleet init` on it first"
    )]
    NoSchema { database: String },
}

impl IndexError {
    /// An update of a `kind` row that changed `changed` rows: none means the row was not there
    /// ([`IndexError::Unknown`]). The one place both backends decide it.
    pub(crate) fn unless_changed(changed: u64, kind: &'static str, id: &str) -> Result<(), Self> {
        match changed {
            0 => Err(IndexError::Unknown {
                kind,
                id: id.to_owned(),
            }),
            _ => Ok(()),
        }
    }

    /// A failed write of a `kind` row ("file" or "batch"): a unique-path violation (when the
    /// backend says so and the row has a path) is [`IndexError::PathTaken`], anything else a
    /// [`IndexError::Query`]. The one place both backends map a refused write.
    pub(crate) fn refused_write(
        kind: &'static str,
        id: &str,
        path: Option<&str>,
        unique_violation: bool,
        source: BoxError,
    ) -> IndexError {
        match path {
            Some(path) if unique_violation => IndexError::PathTaken {
                kind,
                id: id.to_owned(),
                path: path.to_owned(),
            },
            _ => IndexError::Query {
                action: if kind == "file" {
                    "recording file"
                } else {
                    "recording batch"
                },
                id: id.to_owned(),
                source,
            },
        }
    }
}

/// A backend's own error, kept as the source so the trait does not name the backend.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The index a sync records into.
pub trait Index: Send {
    /// Insert or refresh API metadata for many files in one transaction. A file already
    /// Complete keeps its state, unless its size changed: then it goes back to Pending. A file
    /// Skipped as not downloadable goes back to Pending when it becomes downloadable. Returns how
    /// many were new.
    fn upsert_files(&mut self, files: &[FileMeta]) -> Result<usize, IndexError>;

    /// Another connection to this index, for reading on another thread while this one stays
    /// with its owner; it sees what was committed before it opened. `None` where there is
    /// none to open (an index in memory; a backend that does not offer one).
    fn reader(&self) -> Result<Option<Box<dyn Index>>, IndexError> {
        Ok(None)
    }

    fn file(&self, id: &str) -> Result<Option<FileEntry>, IndexError>;

    /// Of `ids`, those whose state is Complete or Skipped (nothing more to do): the
    /// incremental stop.
    fn settled_ids(&self, ids: &[&str]) -> Result<HashSet<String>, IndexError>;

    /// Files whose state is Pending, Downloading or Failed, newest first.
    fn files_to_fetch(&self) -> Result<Vec<FileEntry>, IndexError>;

    /// Up to `limit` of [`Index::files_to_fetch`], those after `after` (the `created_at` and
    /// `id` of the last one of the previous page) in its order: a sync of any size holds one
    /// page at a time. The default pages through `files_to_fetch`; backends override it.
    fn files_to_fetch_page(
        &self,
        after: Option<(&str, &str)>,
        limit: usize,
    ) -> Result<Vec<FileEntry>, IndexError> {
        let beyond = |e: &FileEntry| {
            after.is_none_or(|(created, id)| {
                (e.meta.created_at.as_str() < created)
                    || (e.meta.created_at == created && e.meta.id.as_str() > id)
            })
        };
        let all = self.files_to_fetch()?.into_iter();
        Ok(all.filter(beyond).take(limit).collect())
    }

    /// Show `visit` each file created in `month` (`YYYY-MM`), oldest first (by `created_at`,
    /// then `id`), one at a time. The default sorts [`Index::query_files`]; backends override it.
    fn each_file_of_month(
        &self,
        month: &str,
        visit: &mut dyn FnMut(FileEntry) -> std::ops::ControlFlow<()>,
    ) -> Result<(), IndexError> {
        let query = FileQuery {
            month: Some(month.to_owned()),
            ..FileQuery::default()
        };
        let mut files = self.query_files(&query)?;
        files.sort_by(|a, b| {
            (&a.meta.created_at, &a.meta.id).cmp(&(&b.meta.created_at, &b.meta.id))
        });
        for entry in files {
            if visit(entry).is_break() {
                break;
            }
        }
        Ok(())
    }

    /// Show `visit` each file matching `query`, newest first, one at a time (memory stays
    /// bounded at any index size) until it breaks. The default collects [`Index::query_files`];
    /// backends override it.
    fn each_file(
        &self,
        query: &FileQuery,
        visit: &mut dyn FnMut(FileEntry) -> std::ops::ControlFlow<()>,
    ) -> Result<(), IndexError> {
        for entry in self.query_files(query)? {
            if visit(entry).is_break() {
                break;
            }
        }
        Ok(())
    }

    /// Record the start or end of a file's fetch; the file must be in the index. A path
    /// another file is recorded at is refused ([`IndexError::PathTaken`]).
    fn record_file(&mut self, id: &str, outcome: &FileOutcome) -> Result<(), IndexError>;

    /// Record many outcomes in one durable transaction (group commit): when this returns `Ok`,
    /// they survive a crash. One result per outcome, in order: a refused one
    /// ([`IndexError::PathTaken`], [`IndexError::Unknown`]) does not stop the others.
    fn record_files(
        &mut self,
        outcomes: &[(String, FileOutcome)],
    ) -> Result<Vec<Result<(), IndexError>>, IndexError>;

    /// The id of the file recorded at `path` (relative to the data directory), if any.
    fn file_at(&self, path: &str) -> Result<Option<String>, IndexError>;

    /// [`Index::file_at`] for many paths in one query: the id recorded at each of `paths`
    /// that one is recorded at.
    fn files_at(&self, paths: &[&str]) -> Result<HashMap<String, String>, IndexError>;

    /// Files matching `query`, newest first.
    fn query_files(&self, query: &FileQuery) -> Result<Vec<FileEntry>, IndexError>;

    /// The distinct months (`YYYY-MM`, ascending) having files or batches.
    fn months(&self) -> Result<Vec<String>, IndexError>;

    /// Insert or refresh API metadata for many batches in one transaction; a batch keeps its
    /// state. Returns how many were new.
    fn upsert_batches(&mut self, batches: &[BatchMeta]) -> Result<usize, IndexError>;

    fn batch(&self, id: &str) -> Result<Option<BatchEntry>, IndexError>;

    /// Ended batches (`processing_status == "ended"`) not yet Complete or Skipped, newest first.
    fn batches_to_fetch(&self) -> Result<Vec<BatchEntry>, IndexError>;

    /// Record the start or end of a batch results fetch; the batch must be in the index.
    fn record_batch(&mut self, id: &str, outcome: &BatchOutcome) -> Result<(), IndexError>;

    /// Append result rows in one transaction; a `custom_id` already present for the batch is
    /// replaced. The batch must be in the index.
    fn add_results(&mut self, batch_id: &str, rows: &[ResultRow]) -> Result<(), IndexError>;

    fn result(&self, batch_id: &str, custom_id: &str) -> Result<Option<ResultRow>, IndexError>;

    fn result_count(&self, batch_id: &str) -> Result<u64, IndexError>;

    fn clear_results(&mut self, batch_id: &str) -> Result<(), IndexError>;

    /// All batches, newest first.
    fn query_batches(&self) -> Result<Vec<BatchEntry>, IndexError>;

    /// Whether any file or batch results were stored encrypted.
    fn holds_encrypted(&self) -> Result<bool, IndexError>;
}
