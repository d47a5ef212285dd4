//! The `file_done` log event: one per file, finished or failed, with what a machine reading
//! the logs needs (`file_id`, `bytes_downloaded`, `duration_ms`, `retry_count`, the redacted
//! `url`, `path`, `sha256`, `status`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use super::{Reporter, TransferError, TransferReport, TransferSpec, TransferStatus};
use crate::http::redact::redact_url;

/// A reporter that counts a transfer's bytes and retries on their way to `inner`, so a failed
/// transfer can say how far it got.
pub(super) struct Tally {
    inner: Arc<dyn Reporter>,
    bytes: AtomicU64,
    retries: AtomicU32,
}

impl Tally {
    pub(super) fn new(inner: Arc<dyn Reporter>) -> Tally {
        Tally {
            inner,
            bytes: AtomicU64::new(0),
            retries: AtomicU32::new(0),
        }
    }
}

impl Reporter for Tally {
    fn queued(&self, files: usize, bytes: Option<u64>) {
        self.inner.queued(files, bytes);
    }
    fn started(&self, id: usize, url: &str, total: Option<u64>, already: u64) {
        self.inner.started(id, url, total, already);
    }
    fn progress(&self, id: usize, bytes: u64) {
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        self.inner.progress(id, bytes);
    }
    fn connections(&self, id: usize, live: usize) {
        self.inner.connections(id, live);
    }
    fn notice(&self, id: usize, message: &str) {
        self.inner.notice(id, message);
    }
    fn retrying(&self, id: usize, failures: u32, delay: Duration, reason: &str) {
        self.retries.fetch_add(1, Ordering::Relaxed);
        self.inner.retrying(id, failures, delay, reason);
    }
    fn finished(&self, id: usize, result: &Result<TransferReport, TransferError>) {
        self.inner.finished(id, result);
    }
}

/// Log the outcome of `spec`.
pub(super) fn file_done(
    spec: &TransferSpec,
    result: &Result<TransferReport, TransferError>,
    tally: &Tally,
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
            tally.bytes.load(Ordering::Relaxed),
            tally.retries.load(Ordering::Relaxed),
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
