//! The `file_done` log event: one per file, finished or failed, with what a machine reading
//! the logs needs (`file_id`, `bytes_downloaded`, `duration_ms`, `retry_count`, the redacted
//! `url`, `path`, `sha256`, `status`).

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use super::{TransferError, TransferReport, TransferSpec, TransferStatus};
use crate::http::redact::redact_url;

/// What one transfer fetched and retried, counted once: its report and its `file_done` event
/// (a failed transfer's too, saying how far it got) read these.
#[derive(Debug, Default)]
pub(super) struct Counts {
    /// Bytes written by this run.
    pub(super) fetched: AtomicU64,
    /// Retries waited out.
    pub(super) retries: AtomicU32,
}

/// Log the outcome of `spec`.
pub(super) fn file_done(
    spec: &TransferSpec,
    result: &Result<TransferReport, TransferError>,
    counts: &Counts,
    elapsed: Duration,
) {
    let (status, bytes, retries, duration, sha256, error) = match result {
        Ok(report) => (
            match report.status {
                TransferStatus::Downloaded => "downloaded",
                TransferStatus::AlreadyPresent => "exists",
            },
            report.fetched,
            report.retries,
            report.duration,
            report.sha256.as_deref(),
            None,
        ),
        Err(error) => (
            if error.is_cancelled() {
                "cancelled"
            } else {
                "failed"
            },
            counts.fetched.load(Ordering::Relaxed),
            counts.retries.load(Ordering::Relaxed),
            elapsed,
            None,
            Some(error.to_string()),
        ),
    };
    tracing::info!(
        event = "file_done",
        file_id = spec.file_id.as_deref(),
        url = %redact_url(&spec.url),
        path = %spec.output.display(),
        status,
        bytes_downloaded = bytes,
        duration_ms = duration.as_millis() as u64,
        retry_count = retries,
        sha256,
        error,
        "file {status}"
    );
}
