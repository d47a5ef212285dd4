//! Batch results: fetched through the engine (so a cut stream resumes by byte range where the
//! server allows, and restarts otherwise), then every line indexed by `custom_id` with its byte
//! offset and length, and the count checked against the batch's `request_counts`.
//!
//! Indexing replaces rows per `custom_id`, so re-streaming after a cut never duplicates them.
//!
//! Encrypted results (`.jsonl.age`) are counted and checked line by line from the plaintext as
//! the engine hashes it ([`LineTally`], a [`ContentTap`]), but not indexed by `custom_id`:
//! custom ids and result types are content, and the index is plaintext on disk. Decrypt the file
//! (`claudedl decrypt`) to read a result.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::{Arc, Mutex};

use serde::Deserialize;
use url::Url;

use crate::crypt::output_path;
use crate::engine::{ContentTap, TransferSpec};
use crate::store::index::{BatchEntry, BatchOutcome, ResultRow};
use crate::store::layout::month_of;

use super::files::relative;
use super::listing::ListedResults;
use super::{Sync, SyncError, SyncOptions, SyncSummary};

/// Rows written to the index per transaction.
const ROWS_PER_COMMIT: usize = 1000;

/// Fetch the ended, unsettled batches' results; `listed` (this run's listing, possibly empty)
/// spares a request for each batch it describes.
pub async fn download_batches(
    sync: &mut Sync<'_>,
    options: &SyncOptions,
    summary: &mut SyncSummary,
    months: &mut BTreeSet<String>,
    listed: &ListedResults,
) -> Result<(), SyncError> {
    let mut entries = sync.index.batches_to_fetch()?;
    entries.retain(|entry| options.includes(&entry.meta));
    sync.reporter.queued(entries.len(), None);
    for entry in entries {
        months.extend(month_of(&entry.meta.created_at));
        match fetch_batch(sync, options, &entry, listed.get(&entry.meta.id), summary).await {
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
    options: &SyncOptions,
    entry: &BatchEntry,
    listed: Option<&(Url, u64)>,
    summary: &mut SyncSummary,
) -> Result<BatchOutcome, SyncError> {
    let id = &entry.meta.id;
    let (url, expected) = match listed {
        Some(found) => found.clone(),
        None => {
            let batch = sync.api.batch(id).await?;
            let Some(url) = sync.api.results_url(&batch) else {
                return Ok(BatchOutcome::Skipped {
                    reason: "the batch has no results_url".into(),
                });
            };
            (url, batch.request_counts.total())
        }
    };
    let mut output = sync.data.batch_results_path(&entry.meta.created_at, id);
    let tally = options
        .encrypt
        .as_ref()
        .map(|_| Arc::new(LineTally::default()));
    output = output_path(output, tally.is_some());
    let spec = TransferSpec {
        headers: sync.api.headers_for(&url),
        overwrite: true,
        staging: Some(sync.data.tmp_path_for(&output)),
        file_id: Some(id.clone()),
        encrypt: options.encrypt.clone(),
        tap: tally.clone().map(|tally| tally as Arc<dyn ContentTap>),
        ..TransferSpec::new(url.clone(), output.clone())
    };
    sync.index.record_batch(id, &BatchOutcome::Downloading)?;
    let report = sync
        .engine
        .download(0, &spec, sync.reporter.clone())
        .await?;
    summary.bytes += report.fetched;
    let lines = match &tally {
        Some(tally) => {
            sync.index.clear_results(id)?;
            tally.lines().map_err(|source| SyncError::Results {
                path: output.clone(),
                source,
            })?
        }
        None => {
            let lines = index_results(sync, id, &output)?;
            summary.results_indexed += lines;
            lines
        }
    };
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
        encrypted: report.encrypted,
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
            if let Some(row) = parse_line(&line, start) {
                return Some(row);
            }
        }
    })
}

/// The row of one line (with or without its newline) starting at byte `start`; `None` for a
/// blank line.
fn parse_line(line: &[u8], start: u64) -> Option<std::io::Result<ResultRow>> {
    let content = line.strip_suffix(b"\n").unwrap_or(line);
    let content = content.strip_suffix(b"\r").unwrap_or(content);
    if content.iter().all(u8::is_ascii_whitespace) {
        return None;
    }
    let row = serde_json::from_slice(content)
        .map(|parsed: Line| ResultRow {
            custom_id: parsed.custom_id,
            result_type: parsed.result.kind,
            offset: start,
            length: content.len() as u64,
        })
        .map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("line at byte {start}: {e}"),
            )
        });
    Some(row)
}

/// Counts (and checks) the result lines of a results file from its content as it streams by,
/// keeping only the current line in memory.
#[derive(Debug, Default)]
pub struct LineTally {
    state: Mutex<Tally>,
}

#[derive(Debug, Default)]
struct Tally {
    line: Vec<u8>,
    line_start: u64,
    offset: u64,
    lines: u64,
    error: Option<String>,
}

impl Tally {
    fn end_line(&mut self) {
        let line = std::mem::take(&mut self.line);
        match parse_line(&line, self.line_start) {
            Some(Ok(_)) => self.lines += 1,
            Some(Err(e)) => {
                self.error.get_or_insert(e.to_string());
            }
            None => {}
        }
        self.line = line;
        self.line.clear();
        self.line_start = self.offset;
    }
}

impl ContentTap for LineTally {
    fn restart(&self) {
        *self.state.lock().unwrap() = Tally::default();
    }

    fn feed(&self, mut bytes: &[u8]) {
        let mut tally = self.state.lock().unwrap();
        while let Some(newline) = bytes.iter().position(|&b| b == b'\n') {
            tally.line.extend_from_slice(&bytes[..=newline]);
            tally.offset += newline as u64 + 1;
            tally.end_line();
            bytes = &bytes[newline + 1..];
        }
        tally.line.extend_from_slice(bytes);
        tally.offset += bytes.len() as u64;
    }
}

impl LineTally {
    /// The number of result lines, once all the content went by; the first bad line is an
    /// error.
    pub fn lines(&self) -> std::io::Result<u64> {
        let mut tally = self.state.lock().unwrap();
        if !tally.line.is_empty() {
            tally.end_line();
        }
        match &tally.error {
            Some(error) => Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                error.clone(),
            )),
            None => Ok(tally.lines),
        }
    }
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
    fn the_tally_counts_lines_fed_in_any_pieces() {
        let text = b"{\"custom_id\":\"a\",\"result\":{\"type\":\"succeeded\"}}\n\n{\"custom_id\":\"b\",\"result\":{\"type\":\"errored\"}}";
        for piece in [1, 7, text.len()] {
            let tally = LineTally::default();
            tally.feed(b"stale bytes of an attempt that started over");
            tally.restart();
            text.chunks(piece).for_each(|bytes| tally.feed(bytes));
            assert_eq!(tally.lines().unwrap(), 2, "pieces of {piece}");
        }
        let broken = LineTally::default();
        broken.feed(b"{\"custom_id\":\"a\",\"result\":{\"type\":\"succeeded\"}}\n{oops}\n");
        assert!(broken.lines().unwrap_err().to_string().contains("byte 48"));
    }

    #[test]
    fn a_broken_line_is_an_error_naming_its_offset() {
        let rows: Vec<_> = scan_results(&b"{\"custom_id\":\"a\"}\n"[..]).collect();
        assert!(rows[0].as_ref().unwrap_err().to_string().contains("byte 0"));
    }
}
