//! Batch results: fetched through the engine (so a cut stream resumes by byte range where the
//! server allows, and restarts otherwise), then every line indexed by `custom_id` with its byte
//! offset and length, and the count checked against the batch's `request_counts`.
//!
//! Indexing replaces rows per `custom_id`, so re-streaming after a cut never duplicates them.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use serde::Deserialize;

use crate::engine::TransferSpec;
use crate::store::index::{BatchEntry, BatchOutcome, ResultRow};
use crate::store::layout::month_of;

use super::files::relative;
use super::{Sync, SyncError, SyncSummary};

/// Rows written to the index per transaction.
const ROWS_PER_COMMIT: usize = 1000;

pub async fn download_batches(
    sync: &mut Sync<'_>,
    summary: &mut SyncSummary,
    months: &mut BTreeSet<String>,
) -> Result<(), SyncError> {
    let entries = sync.index.batches_to_fetch()?;
    sync.reporter.queued(entries.len(), None);
    for entry in entries {
        months.extend(month_of(&entry.meta.created_at));
        match fetch_batch(sync, &entry, summary).await {
            Ok(outcome) => sync.index.record_batch(&entry.meta.id, &outcome)?,
            Err(SyncError::Transfer(error)) if error.is_cancelled() => {
                summary.interrupted = true;
                return Ok(());
            }
            Err(error) => {
                let reason = error.to_string();
                summary.failed.push((entry.meta.id.clone(), reason.clone()));
                sync.index
                    .record_batch(&entry.meta.id, &BatchOutcome::Failed { reason })?;
            }
        }
    }
    Ok(())
}

async fn fetch_batch(
    sync: &mut Sync<'_>,
    entry: &BatchEntry,
    summary: &mut SyncSummary,
) -> Result<BatchOutcome, SyncError> {
    let id = &entry.meta.id;
    let batch = sync.api.batch(id).await?;
    let Some(url) = sync.api.results_url(&batch) else {
        return Ok(BatchOutcome::Skipped {
            reason: "the batch has no results_url".into(),
        });
    };
    let output = sync.data.batch_results_path(&entry.meta.created_at, id);
    let spec = TransferSpec {
        headers: sync.api.headers_for(&url),
        overwrite: true,
        staging: Some(sync.data.tmp_path_for(&output)),
        file_id: Some(id.clone()),
        ..TransferSpec::new(url.clone(), output.clone())
    };
    sync.index.record_batch(id, &BatchOutcome::Downloading)?;
    let report = sync
        .engine
        .download(0, &spec, sync.reporter.clone())
        .await?;
    summary.bytes += report.fetched;
    let lines = index_results(sync, id, &output)?;
    summary.results_indexed += lines;
    let expected = batch.request_counts.total();
    if lines != expected {
        let reason =
            format!("the results hold {lines} lines but request_counts add up to {expected}");
        summary.failed.push((id.clone(), reason.clone()));
        return Ok(BatchOutcome::Failed { reason });
    }
    summary.batches_downloaded += 1;
    let path = relative(sync.data.root(), &output);
    Ok(BatchOutcome::Complete {
        path,
        sha256: report.sha256.unwrap_or_default(),
    })
}

fn index_results(sync: &mut Sync<'_>, batch_id: &str, path: &Path) -> Result<u64, SyncError> {
    sync.index.clear_results(batch_id)?;
    let mut pending = Vec::with_capacity(ROWS_PER_COMMIT);
    let mut count = 0;
    let results_error = |source| SyncError::Results {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(results_error)?;
    for row in scan_results(file) {
        pending.push(row.map_err(results_error)?);
        count += 1;
        if pending.len() == ROWS_PER_COMMIT {
            sync.index.add_results(batch_id, &pending)?;
            pending.clear();
        }
    }
    sync.index.add_results(batch_id, &pending)?;
    Ok(count)
}

#[derive(Deserialize)]
struct Line {
    custom_id: String,
    result: LineResult,
}

#[derive(Deserialize)]
struct LineResult {
    #[serde(rename = "type")]
    kind: String,
}

/// Each non-empty JSONL line as a row: custom_id, result type, byte offset and length (without
/// the newline). Streams: memory does not grow with the file.
pub fn scan_results(source: impl Read) -> impl Iterator<Item = std::io::Result<ResultRow>> {
    let mut reader = BufReader::with_capacity(1 << 20, source);
    let mut offset = 0u64;
    let mut line = Vec::new();
    std::iter::from_fn(move || {
        loop {
            line.clear();
            let read = match reader.read_until(b'\n', &mut line) {
                Ok(0) => return None,
                Ok(read) => read as u64,
                Err(error) => return Some(Err(error)),
            };
            let start = offset;
            offset += read;
            let content = line.strip_suffix(b"\n").unwrap_or(&line);
            let content = content.strip_suffix(b"\r").unwrap_or(content);
            if content.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let parsed: Line = match serde_json::from_slice(content) {
                Ok(parsed) => parsed,
                Err(e) => {
                    return Some(Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!("line at byte {start}: {e}"),
                    )));
                }
            };
            let row = ResultRow {
                custom_id: parsed.custom_id,
                result_type: parsed.result.kind,
                offset: start,
                length: content.len() as u64,
            };
            return Some(Ok(row));
        }
    })
}

/// The line of one result, read at its recorded offset (no scan of the file).
pub fn read_result(path: &Path, row: &ResultRow) -> std::io::Result<Vec<u8>> {
    let mut file = std::fs::File::open(path)?;
    file.seek(SeekFrom::Start(row.offset))?;
    let mut line = vec![0; row.length as usize];
    file.read_exact(&mut line)?;
    Ok(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scans_offsets_lengths_and_types() {
        let text = b"{\"custom_id\":\"a\",\"result\":{\"type\":\"succeeded\"}}\n\n{\"custom_id\":\"b\",\"result\":{\"type\":\"errored\",\"error\":{}}}\n";
        let rows: Vec<ResultRow> = scan_results(&text[..]).map(Result::unwrap).collect();
        assert_eq!(rows.len(), 2);
        assert_eq!(
            (rows[0].offset, rows[0].result_type.as_str()),
            (0, "succeeded")
        );
        assert_eq!(rows[1].custom_id, "b");
        let second = &text[rows[1].offset as usize..(rows[1].offset + rows[1].length) as usize];
        assert!(second.starts_with(b"{\"custom_id\":\"b\"") && second.ends_with(b"}}"));
    }

    #[test]
    fn a_broken_line_is_an_error_naming_its_offset() {
        let rows: Vec<_> = scan_results(&b"{\"custom_id\":\"a\"}\n"[..]).collect();
        assert!(rows[0].as_ref().unwrap_err().to_string().contains("byte 0"));
    }
}
