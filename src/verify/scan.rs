//! The directories around the index: files under `raw/` no row points to, and what `tmp/`
//! holds (the `.part` and resume state of unfinished downloads, or leftovers nothing owns).

use std::collections::{HashMap, HashSet};
use std::io;
use std::path::{Path, PathBuf};

use crate::crypt::age_path;
use crate::store::index::FileState;
use crate::store::layout::DataDir;
use crate::store::{ResumeState, StatePaths};
use crate::sync::relative;

use super::plan::InFlight;
use super::{Finding, VerifyError};

/// Files under `raw/` whose path is not in `known`, and links under `raw/`.
pub fn orphans_in_raw(
    data: &DataDir,
    known: &HashSet<String>,
) -> Result<Vec<Finding>, VerifyError> {
    let (files, mut findings) = walk(data.root(), &data.raw())?;
    let orphans = files
        .into_iter()
        .filter(|(path, _)| !known.contains(path))
        .map(|(path, size)| Finding::Orphaned { path, size });
    findings.extend(orphans);
    Ok(findings)
}

/// The unfinished downloads (Downloading, or with a `.part` in `tmp/`, plain or encrypted) and
/// the files of `tmp/` that belong to none of `entries`.
pub fn in_flight(data: &DataDir, entries: &[InFlight]) -> Result<Vec<Finding>, VerifyError> {
    let (files, mut findings) = walk(data.root(), &data.tmp())?;
    let mut unowned: HashMap<String, u64> = files.into_iter().collect();
    for entry in entries {
        let staged = staged_files(data, &entry.output, &mut unowned);
        if staged.is_some() || entry.state == FileState::Downloading {
            let staged = staged.unwrap_or_default();
            findings.push(Finding::InProgress {
                item: entry.kind,
                id: entry.id.clone(),
                state: entry.state,
                path: staged.part,
                bytes: staged.state.map_or(0, |state| {
                    ResumeState::load(&state).map_or(0, |s| s.done.covered())
                }),
            });
        }
    }
    let orphans = unowned
        .into_iter()
        .map(|(path, size)| Finding::Orphaned { path, size });
    findings.extend(orphans);
    Ok(findings)
}

/// The `.part` (relative) and resume state (absolute) of one download.
#[derive(Default)]
struct Staged {
    part: Option<String>,
    state: Option<PathBuf>,
}

/// Take the files in `tmp/` of a download to `output` out of `unowned`: those of a plain
/// download and those of an encrypted one (`NAME.age.part`, `NAME.age.part.json`). None when
/// there are none; the encrypted download's when there are both.
fn staged_files(
    data: &DataDir,
    output: &Path,
    unowned: &mut HashMap<String, u64>,
) -> Option<Staged> {
    let mut found = None;
    let sealed = age_path(output);
    let outputs = if sealed == output {
        vec![sealed]
    } else {
        vec![output.to_path_buf(), sealed]
    };
    for output in outputs {
        let paths = StatePaths::staged(&output, &data.tmp_path_for(&output));
        let part = relative(data.root(), &paths.part);
        let has_part = unowned.remove(&part).is_some();
        let has_state = unowned
            .remove(&relative(data.root(), &paths.state))
            .is_some();
        if has_part || has_state {
            found = Some(Staged {
                part: has_part.then_some(part),
                state: has_state.then_some(paths.state),
            });
        }
    }
    found
}

/// A path relative to the data directory, and its size.
type FileSize = (String, u64);

/// Every non-directory under `dir` (none if it does not exist), as paths relative to `root`
/// with their sizes, and every symbolic link under it as a [`Finding::Link`] (never followed).
fn walk(root: &Path, dir: &Path) -> Result<(Vec<FileSize>, Vec<Finding>), VerifyError> {
    let mut found = Vec::new();
    let mut links = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let scan_error = |source| VerifyError::Scan {
            path: dir.clone(),
            source,
        };
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(error) if error.kind() == io::ErrorKind::NotFound => continue,
            Err(error) => return Err(scan_error(error)),
        };
        for entry in entries {
            let entry = entry.map_err(scan_error)?;
            let metadata = entry.metadata().map_err(scan_error)?;
            if metadata.is_symlink() {
                links.push(link_finding(root, &entry.path()));
            } else if metadata.is_dir() {
                stack.push(entry.path());
            } else {
                found.push((relative(root, &entry.path()), metadata.len()));
            }
        }
    }
    Ok((found, links))
}

/// The link at `path`, and whether its target (resolved as far as it exists) is outside `root`.
fn link_finding(root: &Path, path: &Path) -> Finding {
    let target = std::fs::read_link(path).unwrap_or_default();
    let joined = path.parent().unwrap_or(root).join(&target);
    let resolved = std::fs::canonicalize(&joined).unwrap_or_else(|_| lexical(&joined));
    let canonical_root = std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
    Finding::Link {
        path: relative(root, path),
        target: target.display().to_string(),
        leaves_data_dir: !resolved.starts_with(&canonical_root),
    }
}

/// `path` with `.` and `..` resolved by name.
fn lexical(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}
