//! The data directory of `claudedl sync` and where everything in it lives.
//!
//! ```text
//! DATA/
//!   .lock                          held by the one sync using this directory
//!   raw/YYYY-MM/<id>_<filename>    downloaded files, by month of creation
//!   raw/YYYY-MM/batches/<id>.jsonl batch results
//!   meta/YYYY-MM.json              per-month metadata, rewritten from the index
//!   meta/index.sqlite              the index (the authoritative record)
//!   tmp/                           in-flight downloads
//! ```
//!
//! Every name that comes from elsewhere (ids, filenames, months) passes through
//! [`safe_file_name`], so no input can place a path outside the data directory.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io;
use std::path::{Component, Path, PathBuf};

use super::names::{
    MAX_NAME_BYTES, hashed_id, safe_file_name, safe_id, truncate_keeping_extension,
};

/// The month directory used when `created_at` carries no valid `YYYY-MM`.
pub const UNDATED: &str = "undated";

/// Longest temporary name kept as is; leaves room for `.part.json` within 255 bytes.
const MAX_TMP_NAME_BYTES: usize = 240;

#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    #[error("creating the data directory {}: {source}", path.display())]
    Create {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("locking the data directory {}: {source}", path.display())]
    Lock {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "another claudedl sync is using this data directory (lock {} is held): \
         wait for it to finish or pick another --data-dir",
        path.display()
    )]
    Locked { path: PathBuf },
}

/// The root of a sync's data directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataDir {
    root: PathBuf,
}

impl DataDir {
    pub fn new(root: impl Into<PathBuf>) -> DataDir {
        DataDir { root: root.into() }
    }

    /// Create the root and its `raw/`, `meta/` and `tmp/` directories.
    pub fn create(&self) -> Result<(), LayoutError> {
        for dir in [self.root.clone(), self.raw(), self.meta(), self.tmp()] {
            fs::create_dir_all(&dir).map_err(|source| LayoutError::Create { path: dir, source })?;
        }
        Ok(())
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `DATA/raw/2026-08`.
    pub fn raw_month(&self, month: &str) -> PathBuf {
        self.raw().join(safe_file_name(month, UNDATED))
    }

    /// `DATA/raw/YYYY-MM/<id>_<filename>`, the month taken from `created_at`; the id as
    /// [`safe_id`] has it (so two ids never share a name through it), the filename cut to fit.
    pub fn file_path(&self, created_at: &str, id: &str, filename: &str) -> PathBuf {
        self.file_path_with(created_at, &safe_id(id), filename)
    }

    /// [`DataDir::file_path`] with the id always hashed ([`hashed_id`]): for a file whose usual
    /// name another file holds.
    pub fn alternate_file_path(&self, created_at: &str, id: &str, filename: &str) -> PathBuf {
        self.file_path_with(created_at, &hashed_id(id), filename)
    }

    fn file_path_with(&self, created_at: &str, id: &str, filename: &str) -> PathBuf {
        let filename = safe_file_name(filename, "download");
        let room = MAX_NAME_BYTES.saturating_sub(id.len() + 1);
        let filename = truncate_keeping_extension(&filename, room);
        let filename = filename.trim_end_matches(['.', ' ']);
        let filename = if filename.is_empty() {
            "download"
        } else {
            filename
        };
        self.raw_month(&month_or_undated(created_at))
            .join(format!("{id}_{filename}"))
    }

    /// `DATA/raw/YYYY-MM/batches/<batch_id>.jsonl`.
    pub fn batch_results_path(&self, created_at: &str, batch_id: &str) -> PathBuf {
        let name = format!("{}.jsonl", safe_id(batch_id));
        self.raw_month(&month_or_undated(created_at))
            .join("batches")
            .join(name)
    }

    /// Where the download of `final_path` happens: `DATA/tmp/<name>`, the name made of the
    /// final path's components relative to the data directory joined by `__`
    /// (`raw/2026-08/file_x_report.csv` → `2026-08__file_x_report.csv`).
    pub fn tmp_path_for(&self, final_path: &Path) -> PathBuf {
        let relative = final_path
            .strip_prefix(self.raw())
            .unwrap_or_else(|_| final_path.strip_prefix(&self.root).unwrap_or(final_path));
        let parts: Vec<String> = relative
            .components()
            .filter_map(|component| match component {
                Component::Normal(part) => Some(safe_file_name(&part.to_string_lossy(), "_")),
                _ => None,
            })
            .collect();
        // Each part is already safe, so the joined name is too; only an overlong one (never a
        // path of this layout) is cut back to the name length cap.
        let joined = parts.join("__");
        let name = match joined.len() {
            0 => "download".to_owned(),
            len if len <= MAX_TMP_NAME_BYTES => joined,
            _ => safe_file_name(&joined, "download"),
        };
        self.tmp().join(name)
    }

    /// `DATA/meta/2026-08.json`.
    pub fn meta_month(&self, month: &str) -> PathBuf {
        let month = safe_file_name(month, UNDATED);
        self.meta().join(format!("{month}.json"))
    }

    /// `DATA/meta/index.sqlite`.
    pub fn index_path(&self) -> PathBuf {
        self.meta().join("index.sqlite")
    }

    /// Take the exclusive lock on `DATA/.lock` without waiting; it is released when the
    /// returned guard drops (or the process dies).
    pub fn lock(&self) -> Result<DataDirLock, LayoutError> {
        let path = self.root.join(".lock");
        let lock_error = |source| LayoutError::Lock {
            path: path.clone(),
            source,
        };
        fs::create_dir_all(&self.root).map_err(lock_error)?;
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(lock_error)?;
        match file.try_lock() {
            Ok(()) => Ok(DataDirLock { _file: file, path }),
            Err(TryLockError::WouldBlock) => Err(LayoutError::Locked { path }),
            Err(TryLockError::Error(source)) => Err(lock_error(source)),
        }
    }

    /// [`DataDir::lock`] for a command that only reads: `None` (no lock) when the lock file
    /// cannot be opened for writing because the directory or file system is read-only, where
    /// no sync can run either.
    pub fn lock_to_read(&self) -> Result<Option<DataDirLock>, LayoutError> {
        match self.lock() {
            Ok(lock) => Ok(Some(lock)),
            Err(LayoutError::Lock { source, .. })
                if matches!(
                    source.kind(),
                    io::ErrorKind::ReadOnlyFilesystem | io::ErrorKind::PermissionDenied
                ) =>
            {
                Ok(None)
            }
            Err(other) => Err(other),
        }
    }

    /// `DATA/raw`.
    pub fn raw(&self) -> PathBuf {
        self.root.join("raw")
    }

    /// `DATA/meta`.
    pub fn meta(&self) -> PathBuf {
        self.root.join("meta")
    }

    /// `DATA/tmp`.
    pub fn tmp(&self) -> PathBuf {
        self.root.join("tmp")
    }
}

/// The held lock of a data directory; dropping it releases the lock.
#[derive(Debug)]
pub struct DataDirLock {
    /// Closing the file releases the lock.
    _file: File,
    path: PathBuf,
}

impl DataDirLock {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// `"2026-08-03T10:00:00Z"` → `"2026-08"`; `None` unless it starts with `YYYY-MM` (month 01–12).
pub fn month_of(created_at: &str) -> Option<String> {
    let month = created_at.get(..7)?;
    let bytes = month.as_bytes();
    let digits = |range: std::ops::Range<usize>| bytes[range].iter().all(u8::is_ascii_digit);
    if !(digits(0..4) && bytes[4] == b'-' && digits(5..7)) {
        return None;
    }
    let number: u8 = month[5..7].parse().ok()?;
    (1..=12).contains(&number).then(|| month.to_owned())
}

fn month_or_undated(created_at: &str) -> String {
    month_of(created_at).unwrap_or_else(|| UNDATED.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOSTILE: [&str; 9] = [
        "../../x",
        "..",
        "/etc/passwd",
        "C:\\Windows\\win.ini",
        "a\u{0}b\n\u{7f}",
        "",
        "./.",
        "x/../../../y",
        "\\\\server\\share",
    ];

    fn assert_inside(root: &Path, path: &Path) {
        assert!(
            path.starts_with(root),
            "{} escapes {}",
            path.display(),
            root.display()
        );
        let relative = path.strip_prefix(root).unwrap();
        assert!(
            relative
                .components()
                .all(|c| matches!(c, Component::Normal(_))),
            "{} has a non-normal component",
            path.display()
        );
        let name = path.file_name().unwrap().to_string_lossy();
        assert!(!name.chars().any(char::is_control), "{name:?}");
    }

    #[test]
    fn months_are_validated() {
        assert_eq!(month_of("2026-08-03T10:00:00Z").as_deref(), Some("2026-08"));
        assert_eq!(month_of("2026-12").as_deref(), Some("2026-12"));
        for bad in [
            "",
            "2026-8-03",
            "2026-13-01",
            "2026-00-01",
            "20x6-08-01",
            "../../x",
            "é2026-08",
        ] {
            assert_eq!(month_of(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn paths_follow_the_layout() {
        let data = DataDir::new("/data");
        let file = data.file_path("2026-08-03T10:00:00Z", "file_x", "report.csv");
        assert_eq!(file, Path::new("/data/raw/2026-08/file_x_report.csv"));
        assert_eq!(
            data.batch_results_path("2026-07-01T00:00:00Z", "msgbatch_1"),
            Path::new("/data/raw/2026-07/batches/msgbatch_1.jsonl")
        );
        assert_eq!(
            data.tmp_path_for(&file),
            Path::new("/data/tmp/2026-08__file_x_report.csv")
        );
        assert_eq!(
            data.tmp_path_for(&data.batch_results_path("2026-07-01", "b")),
            Path::new("/data/tmp/2026-07__batches__b.jsonl")
        );
        assert_eq!(
            data.meta_month("2026-08"),
            Path::new("/data/meta/2026-08.json")
        );
        assert_eq!(data.index_path(), Path::new("/data/meta/index.sqlite"));
        assert_eq!(data.raw_month("2026-08"), Path::new("/data/raw/2026-08"));
        let undated = data.file_path("yesterday", "file_y", "a.txt");
        assert_eq!(undated, Path::new("/data/raw/undated/file_y_a.txt"));
    }

    #[test]
    fn hostile_ids_filenames_and_months_stay_inside_the_root() {
        let root = Path::new("/data");
        let data = DataDir::new(root);
        for hostile in HOSTILE {
            let paths = [
                data.file_path(hostile, hostile, hostile),
                data.file_path("2026-08-01T00:00:00Z", hostile, "ok.txt"),
                data.file_path("2026-08-01T00:00:00Z", "file_ok", hostile),
                data.batch_results_path(hostile, hostile),
                data.raw_month(hostile),
                data.meta_month(hostile),
                data.tmp_path_for(&data.file_path(hostile, hostile, hostile)),
                data.tmp_path_for(Path::new(hostile)),
            ];
            for path in paths {
                assert_inside(root, &path);
            }
        }
    }

    #[test]
    fn ids_that_sanitise_alike_get_distinct_paths() {
        let data = DataDir::new("/data");
        let ids = ["file_c/d", "file_c_d", "file_c?d", "file_c:d", "file_c\\d"];
        let mut paths: Vec<PathBuf> = ids
            .iter()
            .map(|id| data.file_path("2026-08-01", id, "r.csv"))
            .collect();
        paths.push(data.alternate_file_path("2026-08-01", "file_c_d", "r.csv"));
        paths.extend(
            ids.iter()
                .map(|id| data.batch_results_path("2026-08-01", id)),
        );
        let distinct: std::collections::HashSet<&PathBuf> = paths.iter().collect();
        assert_eq!(distinct.len(), paths.len(), "{paths:?}");
        assert_eq!(
            data.file_path("2026-08-01", "file_c_d", "r.csv"),
            Path::new("/data/raw/2026-08/file_c_d_r.csv")
        );
    }

    #[test]
    fn long_names_are_cut_to_fit() {
        let data = DataDir::new("/data");
        let long = format!("{}.csv", "n".repeat(400));
        let path = data.file_path("2026-08-01", &"i".repeat(300), &long);
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            name.len() <= crate::store::names::MAX_NAME_BYTES,
            "{}",
            name.len()
        );
        assert!(name.ends_with(".csv"));
        let tmp = data.tmp_path_for(&path);
        assert!(tmp.file_name().unwrap().len() + ".part.json".len() <= 255);
    }

    #[test]
    fn create_makes_the_directories() {
        let dir = tempfile::tempdir().unwrap();
        let data = DataDir::new(dir.path().join("data"));
        data.create().unwrap();
        for sub in ["raw", "meta", "tmp"] {
            assert!(data.root().join(sub).is_dir(), "{sub}");
        }
    }

    #[test]
    fn a_second_lock_fails_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let data = DataDir::new(dir.path());
        let first = data.lock().unwrap();
        let second = data.lock().unwrap_err();
        assert!(matches!(second, LayoutError::Locked { .. }), "{second:?}");
        let message = second.to_string();
        assert!(message.contains("another claudedl sync"), "{message}");
        assert!(message.contains("--data-dir"), "{message}");
        drop(first);
        let again = data.lock().unwrap();
        assert_eq!(again.path(), dir.path().join(".lock"));
    }
}
