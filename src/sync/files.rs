//! Downloading the files the index says are missing, and recording each outcome.

use std::collections::BTreeSet;
use std::path::Path;

use crate::crypt::age_path;
use crate::engine::{TransferError, TransferReport, TransferSpec};
use crate::store::index::{FileEntry, FileOutcome};
use crate::store::layout::month_of;

use super::{Sync, SyncError, SyncOptions, SyncSummary};

const NOT_DOWNLOADABLE: &str =
    "not downloadable: only files created by code execution or skills can be downloaded";

pub async fn download_files(
    sync: &mut Sync<'_>,
    options: &SyncOptions,
    summary: &mut SyncSummary,
    months: &mut BTreeSet<String>,
) -> Result<(), SyncError> {
    let mut wanted = Vec::new();
    let entries = sync.index.files_to_fetch()?;
    for entry in entries.into_iter().filter(|e| options.includes(&e.meta)) {
        if entry.meta.downloadable == Some(false) {
            let reason = NOT_DOWNLOADABLE.to_owned();
            sync.index.record_file(
                &entry.meta.id,
                &FileOutcome::Skipped {
                    reason: reason.clone(),
                },
            )?;
            summary.skipped.push((entry.meta.id.clone(), reason));
            months.extend(month_of(&entry.meta.created_at));
        } else {
            wanted.push(entry);
        }
    }
    let specs: Vec<TransferSpec> = wanted
        .iter()
        .map(|entry| spec_for(sync, options, entry))
        .collect();
    for entry in &wanted {
        sync.index
            .record_file(&entry.meta.id, &FileOutcome::Downloading)?;
    }
    let results = sync
        .engine
        .download_all(specs, options.jobs, sync.reporter.clone())
        .await;
    for (entry, result) in wanted.iter().zip(results) {
        months.extend(month_of(&entry.meta.created_at));
        let outcome = outcome_of(sync.data.root(), &result);
        match (&outcome, &result) {
            (FileOutcome::Complete { .. }, Ok(report)) => {
                summary.downloaded += 1;
                summary.bytes += report.fetched;
            }
            (FileOutcome::Skipped { reason }, _) => summary
                .skipped
                .push((entry.meta.id.clone(), reason.clone())),
            (FileOutcome::Failed { reason, .. }, _) => {
                summary.failed.push((entry.meta.id.clone(), reason.clone()))
            }
            _ => {}
        }
        if matches!(&result, Err(e) if e.is_cancelled()) {
            summary.interrupted = true;
            continue;
        }
        sync.index.record_file(&entry.meta.id, &outcome)?;
    }
    Ok(())
}

fn spec_for(sync: &Sync<'_>, options: &SyncOptions, entry: &FileEntry) -> TransferSpec {
    let meta = &entry.meta;
    let mut output = sync
        .data
        .file_path(&meta.created_at, &meta.id, &meta.filename);
    if options.encrypt.is_some() {
        output = age_path(&output);
    }
    TransferSpec {
        headers: sync.api.headers(),
        overwrite: true,
        staging: Some(sync.data.tmp_path_for(&output)),
        expected_size: Some(meta.size_bytes),
        file_id: Some(meta.id.clone()),
        encrypt: options.encrypt.clone(),
        ..TransferSpec::new(sync.api.file_content_url(&meta.id), output)
    }
}

/// Permanent per-file answers (400 not downloadable, 404/410 gone) are recorded as skipped and
/// not retried; anything else is a failure the next sync tries again.
fn outcome_of(root: &Path, result: &Result<TransferReport, TransferError>) -> FileOutcome {
    match result {
        Ok(report) => FileOutcome::Complete {
            path: relative(root, &report.path),
            sha256: report.sha256.clone().unwrap_or_default(),
            etag: None,
            retries: report.retries,
            encrypted: report.encrypted,
        },
        Err(
            error @ TransferError::Status {
                status: 400 | 404 | 410,
                ..
            },
        ) => FileOutcome::Skipped {
            reason: error.to_string(),
        },
        Err(error) => FileOutcome::Failed {
            reason: error.to_string(),
            retries: 0,
        },
    }
}

/// `path` relative to the data directory, with `/` separators.
pub fn relative(root: &Path, path: &Path) -> String {
    let relative = path.strip_prefix(root).unwrap_or(path);
    relative
        .components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}
