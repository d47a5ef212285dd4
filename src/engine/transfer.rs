//! One file, from the first request to the final rename.
//!
//! 1. First request: `GET` with `Range` for the first piece (S = first missing byte; `If-Range`
//!    when resuming). When the size is known (the Files API's `size_bytes`, a resume), that is the
//!    first planned piece, the whole file when it is not split; otherwise a probe of `min_split`
//!    bytes (a whole piece under a request budget). A 206 teaches (or checks) size, range
//!    support and validators, and its body is used.
//! 2. Ranged mode: up to `connections` workers fetch the planned pieces, each request carrying
//!    `If-Range`; a checkpointer syncs and records progress; a hasher follows the done prefix.
//! 3. Single mode, when the server ignores or mangles ranges: one plain stream from byte 0.
//! 4. Finish: every byte accounted for, length checked, synced, renamed over the output.
//!
//! A file the probe fetched whole (a fresh plain download of at most `min_split` bytes) takes
//! the small-file path instead: no `.part`, no lock, no resume state; its body is read into
//! memory, written at once into an unnamed file beside its output and handed to the engine's
//! group committer (`commit`), which makes it durable with the other files of its group and
//! names it. The transfer ends once the file is handed over: its caller waits for the commit
//! ([`Downloaded::in_place`]) with none of the transfer's state held meanwhile.
//!
//! A file that changed on the server is started over (a bounded number of times); a server
//! that lied about ranges once is not asked for ranges again during this transfer.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use reqwest::Response;
use reqwest::header::{self, HeaderMap, HeaderValue};
use tokio::sync::OwnedSemaphorePermit;
use tokio::task::JoinSet;

use super::batch::InBatch;
use super::commit::Committing;
use super::events::Counts;
use super::ledger::{Hashed, Ledger, checkpoint, checkpoint_loop, hash_prefix};
use super::plan::{Costs, Plan, Segment};
use super::response::{
    Failure, RangedReply, Validators, content_length, judge_ranged, size_mismatch, status_failure,
};
use super::stream::{Sink, copy_body};
use super::writer::PartWriter;
use super::{
    Engine, Pieces, Reporter, TransferError, TransferReport, TransferSpec, TransferStatus,
};
use crate::http::range::range_header;
use crate::http::redact::redact_url;
use crate::http::retry::{Failed, Retrier, Stop};
use crate::store::atomic::{is_link_error, remove_stale_temps, rename_durable};
use crate::store::{Installed, PartLock, PartLockError, ResumeState, StatePaths};

/// A response together with the connection permit it holds.
type Held = (Response, OwnedSemaphorePermit);

/// How often a paced worker with nothing to do checks whether a take-over has become worth it.
const RECHECK_TAKE_OVER: Duration = Duration::from_millis(250);

/// A transfer that ended well: its report and, for a small file, the group commit that puts it
/// in place.
pub struct Downloaded {
    report: TransferReport,
    committing: Option<Committing>,
}

impl Downloaded {
    fn now(report: TransferReport) -> Downloaded {
        Downloaded {
            report,
            committing: None,
        }
    }

    /// The report once the file is in place: a small file's group commit waited for, unless
    /// the engine is cancelled first.
    pub async fn in_place(
        self,
        spec: &TransferSpec,
        cancel: &tokio_util::sync::CancellationToken,
    ) -> Result<TransferReport, TransferError> {
        let Downloaded {
            mut report,
            committing,
        } = self;
        let Some(committing) = committing else {
            return Ok(report);
        };
        let waiting = Instant::now();
        let done = tokio::select! {
            biased;
            () = cancel.cancelled() => Err(TransferError::Cancelled {
                state: staged_paths(spec).state,
            }),
            done = committing.done() => {
                done.map_err(TransferError::io("writing", spec.output.clone()))
            }
        };
        done.map_err(|error| error.with_kept(false))?;
        report.duration += waiting.elapsed();
        Ok(report)
    }
}

pub async fn download(
    engine: &Engine,
    id: usize,
    spec: &TransferSpec,
    reporter: Arc<dyn Reporter>,
    counts: &Arc<Counts>,
    batch: Option<InBatch>,
) -> Result<Downloaded, TransferError> {
    let mut job = Job::new(engine, id, spec, reporter, Arc::clone(counts));
    let seen = batch.as_ref().and_then(|batch| batch.seen.clone());
    let state_found = match &seen {
        Some(seen) => seen.state_exists(&job.paths.state),
        None => job.paths.state.exists(),
    };
    let output_found = || match &seen {
        Some(seen) => seen.output_exists(&spec.output),
        None => spec.output.exists(),
    };
    let present = !spec.overwrite && !state_found && output_found();
    job.slot = Mutex::new(batch.map(|batch| batch.slot));
    let job = Arc::new(job);
    let started = Instant::now();
    if present {
        let report = job.report(TransferStatus::AlreadyPresent, None, started);
        return Ok(Downloaded::now(report));
    }
    let parents = [spec.output.parent(), job.paths.part.parent()];
    for (at, parent) in parents.iter().enumerate() {
        let Some(parent) = parent.filter(|p| !p.as_os_str().is_empty()) else {
            continue;
        };
        if at == 1 && parents[0] == Some(parent) {
            continue;
        }
        match &seen {
            Some(seen) => seen.ensure_dir(parent),
            None => ensure_dir(parent),
        }
        .map_err(TransferError::io("creating", parent))?;
    }
    if spec.adopt_output
        && !state_found
        && let Some(finished) = job.adopt_output().await
    {
        let report = job.report(TransferStatus::Downloaded, Some(finished), started);
        return Ok(Downloaded::now(report));
    }
    // Without a resume state, the `.part` is locked only once there is something to write to
    // it (never for a small file).
    if state_found {
        job.lock_part()?;
        if let Some(finished) = job.recover_installed().await {
            // The `.part` is the empty file the lock created.
            remove_if_present(&job.paths.part)?;
            job.release_state()?;
            let report = job.report(TransferStatus::Downloaded, Some(finished), started);
            return Ok(Downloaded::now(report));
        }
    }
    let result = match job.run_to_completion().await {
        Ok(finished) if finished.committed => Ok(finished),
        Ok(finished) => job.install(&finished).map(|()| finished),
        Err(error) => Err(error),
    };
    match result {
        Ok(mut finished) => {
            engine.client.governor().file_finished();
            let committing = finished.committing.take();
            let report = job.report(TransferStatus::Downloaded, Some(finished), started);
            Ok(Downloaded { report, committing })
        }
        Err(error) => Err(job.after_failure(error)),
    }
}

/// Create `dir` (and its parents) unless it is there.
pub(super) fn ensure_dir(dir: &std::path::Path) -> std::io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::create_dir_all(dir)
}

/// Remove the resume state a download with [`TransferSpec::keep_state`] left beside its
/// installed output (the caller has recorded the download).
pub fn release_state(spec: &TransferSpec) -> Result<(), TransferError> {
    let paths = staged_paths(spec);
    remove_if_present(&paths.state)
}

fn staged_paths(spec: &TransferSpec) -> StatePaths {
    StatePaths::staged(
        &spec.output,
        spec.staging.as_deref().unwrap_or(&spec.output),
    )
}

fn remove_if_present(path: &std::path::Path) -> Result<(), TransferError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(TransferError::io("removing", path)(e)),
    }
}

/// The bytes of a complete `.part`.
#[derive(Debug)]
struct Finished {
    size: u64,
    /// The size of the complete `.part` (larger than `size` when encrypted).
    stored: u64,
    sha256: String,
    resumed_from: u64,
    /// Already in place, or on its way (the small-file path's group commit): nothing to
    /// install.
    committed: bool,
    /// The small file's group commit, to be waited for once the transfer is over.
    committing: Option<Committing>,
}

/// Everything the workers of one transfer share.
struct Job {
    engine: Engine,
    id: usize,
    spec: TransferSpec,
    url: String,
    paths: StatePaths,
    reporter: Arc<dyn Reporter>,
    counts: Arc<Counts>,
    live: AtomicUsize,
    /// The lock on the `.part`, held from before the first byte is read until the end.
    part_lock: OnceLock<PartLock>,
    /// The batch's files-at-once slot this transfer holds (given back early by a small file).
    slot: Mutex<Option<OwnedSemaphorePermit>>,
}

impl Job {
    fn new(
        engine: &Engine,
        id: usize,
        spec: &TransferSpec,
        reporter: Arc<dyn Reporter>,
        counts: Arc<Counts>,
    ) -> Job {
        Job {
            engine: engine.clone(),
            id,
            spec: spec.clone(),
            url: redact_url(&spec.url),
            paths: staged_paths(spec),
            reporter,
            counts,
            live: AtomicUsize::new(0),
            part_lock: OnceLock::new(),
            slot: Mutex::new(None),
        }
    }

    /// Ranged mode first; start over when the file changes, fall back to one plain stream when
    /// the server cannot be trusted with ranges.
    async fn run_to_completion(self: &Arc<Self>) -> Result<Finished, TransferError> {
        let mut ranges_trusted = true;
        let mut restarts = 0;
        loop {
            let attempt = if ranges_trusted {
                self.ranged().await
            } else {
                self.single(None).await
            };
            match attempt {
                Ok(finished) => return Ok(finished),
                Err(Failure::Changed) => {
                    restarts += 1;
                    if restarts > self.engine.config.max_restarts {
                        return Err(TransferError::KeepsChanging {
                            url: self.url.clone(),
                            restarts,
                        });
                    }
                    self.notice("the file changed on the server; discarding the partial data and starting over");
                    self.discard()?;
                }
                Err(Failure::Untrustworthy(reason)) if ranges_trusted => {
                    self.notice(&format!("{reason}; falling back to a single stream"));
                    self.discard()?;
                    ranges_trusted = false;
                }
                Err(Failure::Untrustworthy(reason)) => {
                    return Err(TransferError::Protocol {
                        url: self.url.clone(),
                        reason,
                    });
                }
                Err(Failure::Retry { error, .. } | Failure::Fatal(error)) => return Err(error),
            }
        }
    }

    // ---- ranged mode ----

    async fn ranged(self: &Arc<Self>) -> Result<Finished, Failure> {
        let resume = self.load_resume();
        let expected = resume.as_ref().map(validators_of).unwrap_or_default();
        // The first request asks for exactly its piece (bounded, so its connection is reused and
        // never cut): the first missing range, at most the first planned piece of it when the
        // size is known, else at most `min_split` bytes.
        let first_gap = resume.as_ref().and_then(|state| {
            state
                .done
                .missing(state.total.unwrap_or(0))
                .first()
                .cloned()
        });
        let start = first_gap.as_ref().map_or(0, |gap| gap.start);
        let known = resume
            .as_ref()
            .and_then(|state| state.total)
            .or(self.spec.expected_size);
        let probe_end = match known {
            Some(total) => (start + self.piece(total)).min(total.max(start + 1)),
            None => start + self.first_request_len(),
        };
        let probe_end = first_gap.map_or(probe_end, |gap| probe_end.min(gap.end));
        let if_range = resume.as_ref().and(expected.if_range());
        let (response, permit) = self.probe(start, probe_end, if_range).await?;
        let found = Validators::from_headers(response.headers());
        let (total, probed) = match judge_ranged(&self.url, &response, start, Some(probe_end))? {
            RangedReply::Partial { total, range } => (total, range),
            RangedReply::Whole
                if resume.is_some()
                    && (expected.differ(&found) || found == Validators::default()) =>
            {
                return Err(Failure::Changed);
            }
            RangedReply::Whole => return self.single(Some((response, permit))).await,
            RangedReply::Unsatisfiable { total: Some(0) } if start == 0 => {
                return self.empty_file().await;
            }
            RangedReply::Unsatisfiable { .. } if resume.is_some() => return Err(Failure::Changed),
            RangedReply::Unsatisfiable { .. } => {
                return Err(Failure::Untrustworthy(
                    "416 for a range starting at 0".into(),
                ));
            }
            RangedReply::Untrustworthy(reason) => return Err(Failure::Untrustworthy(reason)),
        };
        if resume.is_none() && self.is_small(total, &probed) {
            return self.small((response, permit), total, probe_end).await;
        }
        let state = match resume {
            Some(state) if state.total == Some(total) && !expected.differ(&found) => state,
            Some(_) => return Err(Failure::Changed),
            None => self.fresh_state(Some(total), &found, true),
        };
        let writing = Writing::start(self, state, Some(total))?;
        let outcome = self
            .run_workers(&writing, total, found, probed, (response, permit))
            .await;
        writing.finish(self, outcome, total).await
    }

    async fn run_workers(
        self: &Arc<Self>,
        writing: &Writing,
        total: u64,
        validators: Validators,
        probed: std::ops::Range<u64>,
        probe: Held,
    ) -> Result<(), Failure> {
        let config = &self.engine.config;
        let missing = writing.ledger.snapshot().missing(total);
        let piece = self.piece(total);
        // Nothing missing (killed after the last checkpoint, before the rename): the probe's
        // 206 has confirmed the file is unchanged, and the `.part` is complete.
        if missing.is_empty() {
            return Ok(());
        }
        // The probe's range is the start of the first missing range; plan the rest.
        let rest: Vec<std::ops::Range<u64>> = missing
            .iter()
            .map(|range| range.start.max(probed.end).min(range.end)..range.end)
            .filter(|range| !range.is_empty())
            .collect();
        let mut plan = Plan::new(&rest, piece, config.min_split);
        let probe_segment = plan.track(probed);
        let shared = Arc::new(Workers {
            job: Arc::clone(self),
            plan: Mutex::new(plan),
            part: writing.part.clone(),
            ledger: Arc::clone(&writing.ledger),
            validators,
            total,
        });
        let remaining: u64 = missing.iter().map(|r| r.end - r.start).sum();
        let workers = (remaining.div_ceil(config.min_split.max(1)) as usize)
            .clamp(1, config.connections.max(1));
        let mut set = JoinSet::new();
        set.spawn(Arc::clone(&shared).work(Some((probe_segment, probe))));
        for _ in 1..workers {
            set.spawn(Arc::clone(&shared).work(None));
        }
        while let Some(joined) = set.join_next().await {
            let result = joined.unwrap_or_else(|e| {
                Err(Failure::Fatal(TransferError::Protocol {
                    url: self.url.clone(),
                    reason: format!("a worker task failed: {e}"),
                }))
            });
            if let Err(failure) = result {
                set.abort_all();
                return Err(failure);
            }
        }
        Ok(())
    }

    /// The first request, retried like any other.
    async fn probe(&self, start: u64, end: u64, if_range: Option<&str>) -> Result<Held, Failure> {
        let mut retrier = self.retrier();
        let range = format!("{start}-{}", end - 1);
        loop {
            match self.probe_once(start, end, if_range).await {
                Ok(held) => return Ok(held),
                Err(failure) => self.retry(&mut retrier, failure, &range, 0).await?,
            }
        }
    }

    /// One content request for `range` under a connection permit (held with the response).
    async fn request_range(
        &self,
        range: std::ops::Range<u64>,
        if_range: Option<&str>,
    ) -> Result<Held, Failure> {
        let permit = self.permit().await?;
        let headers = self.range_headers(range.start, Some(range.end), if_range);
        self.engine.client.governor().content_request();
        let response = self.cancellable(async {
            self.engine
                .client
                .get(&self.spec.url, &headers)
                .await
                .map_err(transient)
        });
        Ok((response.await?, permit))
    }

    /// One probe request; its connection permit is released when it fails.
    async fn probe_once(
        &self,
        start: u64,
        end: u64,
        if_range: Option<&str>,
    ) -> Result<Held, Failure> {
        let (response, permit) = self.request_range(start..end, if_range).await?;
        let status = response.status();
        if status.is_success() || status.as_u16() == 416 {
            Ok((response, permit))
        } else {
            Err(status_failure(&self.url, &response))
        }
    }

    // ---- small files ----

    /// Whether the probe fetched the whole file and it takes the small-file path: a fresh,
    /// plain download (an encrypted one needs its sealed `.part`).
    fn is_small(&self, total: u64, probed: &std::ops::Range<u64>) -> bool {
        let encrypted = self.spec.encrypt.is_some();
        self.engine.fetches_whole(total, encrypted) && *probed == (0..total)
    }

    /// Read the whole body (fetching it again from byte 0 after a cut), hash it, and hand it
    /// to the group committer; returns once it is durable under its final name.
    async fn small(
        self: &Arc<Self>,
        probe: Held,
        total: u64,
        probe_end: u64,
    ) -> Result<Finished, Failure> {
        let mut retrier = self.retrier();
        let mut held = Some(probe);
        self.reporter.started(self.id, &self.url, Some(total), 0);
        let body = loop {
            let attempt = match held.take() {
                Some((response, _permit)) => self.read_small(response, total).await,
                None => match self.probe_once(0, probe_end, None).await {
                    Ok((response, _permit)) => self.refetch_small(response, total).await,
                    Err(failure) => Err(failure),
                },
            };
            match attempt {
                Ok(body) => break body,
                Err(failure) => {
                    let range = format!("0-{}", total.saturating_sub(1));
                    self.retry(&mut retrier, failure, &range, 0).await?;
                }
            }
        };
        if let Some(tap) = &self.spec.tap {
            tap.restart();
            tap.feed(&body);
        }
        self.reporter.progress(self.id, total);
        self.counts.fetched.fetch_add(total, Ordering::Relaxed);
        let sha256 = super::small::sha256_hex(&body);
        let committer = self.engine.committer();
        let room = self.cancellable(async { Ok(committer.room().await) });
        let room = room.await?;
        let failed = |e| Failure::Fatal(TransferError::io("writing", self.spec.output.clone())(e));
        let staged = committer.stage(&self.spec.output, &body).map_err(failed)?;
        drop(body);
        // The file waits for its group on disk: the next file of the batch may start.
        drop(self.slot.lock().unwrap().take());
        let committing = committer
            .submit(staged, &self.spec.output, &self.paths.part, room)
            .map_err(failed)?;
        Ok(Finished {
            size: total,
            stored: total,
            sha256,
            resumed_from: 0,
            committed: true,
            committing: Some(committing),
        })
    }

    /// A second request for a small file must get the same file whole.
    async fn refetch_small(&self, response: Response, total: u64) -> Result<bytes::Bytes, Failure> {
        match judge_ranged(&self.url, &response, 0, Some(total.max(1)))? {
            RangedReply::Partial {
                total: again,
                range,
            } if again == total && range == (0..total) => self.read_small(response, total).await,
            RangedReply::Untrustworthy(reason) => Err(Failure::Untrustworthy(reason)),
            _ => Err(Failure::Changed),
        }
    }

    async fn read_small(&self, response: Response, total: u64) -> Result<bytes::Bytes, Failure> {
        let reading = super::small::Reading {
            url: &self.url,
            read_timeout: self.engine.config.read_timeout,
            cancel: &self.engine.cancel,
            governor: self.engine.client.governor(),
            state: &self.paths.state,
        };
        super::small::read_whole(response, total, &reading).await
    }

    // ---- single-stream mode ----

    /// One plain `GET` from byte 0 (or the 200 the probe already received). A failure mid-body
    /// starts the stream over: a server without ranges cannot continue it.
    async fn single(self: &Arc<Self>, mut first: Option<Held>) -> Result<Finished, Failure> {
        let mut retrier = self.retrier();
        loop {
            let held = match first.take() {
                Some(held) => Ok(held),
                None => self.plain_get().await,
            };
            let failure = match held {
                Ok((response, _permit)) => match self.single_attempt(response).await {
                    Ok(finished) => return Ok(finished),
                    Err(failure) => failure,
                },
                Err(failure) => failure,
            };
            // Nothing is kept: the next attempt starts over from byte 0.
            self.retry(&mut retrier, failure, "0-", 0).await?;
        }
    }

    async fn plain_get(&self) -> Result<Held, Failure> {
        let permit = self.permit().await?;
        let mut headers = self.spec.headers.clone();
        headers.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("identity"),
        );
        self.engine.client.governor().content_request();
        match self.engine.client.get(&self.spec.url, &headers).await {
            Ok(response) if response.status().is_success() => Ok((response, permit)),
            Ok(response) => Err(status_failure(&self.url, &response)),
            Err(error) => Err(transient(error)),
        }
    }

    async fn single_attempt(self: &Arc<Self>, response: Response) -> Result<Finished, Failure> {
        let total = content_length(response.headers());
        let found = Validators::from_headers(response.headers());
        self.discard().map_err(Failure::Fatal)?;
        let writing = Writing::start(self, self.fresh_state(total, &found, false), total)?;
        let segment = Segment::new(0..total.unwrap_or(u64::MAX));
        let sink = self.sink(&writing.part, &writing.ledger);
        self.live.fetch_add(1, Ordering::Relaxed);
        let reading = Instant::now();
        let outcome = copy_body(response, &segment, total, &sink).await;
        self.engine.client.governor().transferred(reading.elapsed());
        self.live.fetch_sub(1, Ordering::Relaxed);
        let size = total.unwrap_or(segment.remaining().start);
        writing.finish(self, outcome, size).await
    }

    /// An empty file (for an encrypted one, the age file of an empty plaintext).
    async fn empty_file(&self) -> Result<Finished, Failure> {
        let state = self.fresh_state(Some(0), &Validators::default(), false);
        let writing = Writing::start(self, state, Some(0))?;
        writing.finish(self, Ok(()), 0).await
    }

    // ---- shared steps ----

    fn load_resume(&self) -> Option<ResumeState> {
        // Unlocked: there was no state when this transfer began (see `download`).
        self.part_lock.get()?;
        let state = ResumeState::load(&self.paths.state)?;
        // An empty `.part` (created by the lock) holds none of what a state may claim; a state
        // marked installed describes the output, not the `.part`.
        let part_len = std::fs::symlink_metadata(&self.paths.part).map_or(0, |m| m.len());
        let usable = same_resource(&state.url, &self.url)
            && state.installed.is_none()
            && (part_len > 0 || state.done.covered() == 0)
            && state.ranges_supported
            && state.total.is_some_and(|total| state.done.fits(total))
            && self.paths.part.exists()
            && PartWriter::resumable(self.spec.encrypt.as_deref(), &state, &self.paths.part);
        if !usable {
            self.notice("ignoring resume state that does not match this download");
            return None;
        }
        Some(state)
    }

    fn fresh_state(&self, total: Option<u64>, found: &Validators, ranges: bool) -> ResumeState {
        let mut state = ResumeState::new(self.url.clone());
        state.total = total;
        state.etag = found.etag.clone();
        state.last_modified = found.last_modified.clone();
        state.ranges_supported = ranges;
        state
    }

    fn range_headers(&self, start: u64, end: Option<u64>, if_range: Option<&str>) -> HeaderMap {
        let mut headers = self.spec.headers.clone();
        headers.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("identity"),
        );
        let range = HeaderValue::from_str(&range_header(start, end)).expect("digits are valid");
        headers.insert(header::RANGE, range);
        if let Some(value) = if_range.and_then(|v| HeaderValue::from_str(v).ok()) {
            headers.insert(header::IF_RANGE, value);
        }
        headers
    }

    async fn permit(&self) -> Result<OwnedSemaphorePermit, Failure> {
        let acquire = Arc::clone(&self.engine.connections).acquire_owned();
        let permit =
            self.cancellable(async { Ok(acquire.await.expect("the semaphore is never closed")) });
        permit.await
    }

    /// Run `work` unless the engine is cancelled first.
    async fn cancellable<T>(
        &self,
        work: impl Future<Output = Result<T, Failure>>,
    ) -> Result<T, Failure> {
        tokio::select! {
            biased;
            () = self.engine.cancel.cancelled() => Err(Failure::Fatal(self.cancelled())),
            result = work => result,
        }
    }

    fn cancelled(&self) -> TransferError {
        TransferError::Cancelled {
            state: self.paths.state.clone(),
        }
    }

    /// The retries of one unit of work of this transfer.
    fn retrier(&self) -> Retrier<'_> {
        let governor = self.engine.client.governor();
        Retrier::new(
            self.engine.config.retry,
            governor,
            &self.engine.cancel,
            &self.url,
        )
    }

    /// Wait before another attempt at `range` (the failed one kept `kept` bytes), or turn the
    /// failure into the transfer's final error.
    async fn retry(
        &self,
        retrier: &mut Retrier<'_>,
        failure: Failure,
        range: &str,
        kept: u64,
    ) -> Result<(), Failure> {
        let (error, server_wait) = match failure {
            Failure::Retry { error, server_wait } => (error, server_wait),
            other => return Err(other),
        };
        let reason = error.to_string();
        let failed = Failed {
            reason: &reason,
            overload: error.is_overload(),
            server_wait,
            kept,
            range: Some(range),
        };
        let waited = retrier.wait(failed, |failures, delay| {
            self.counts.retries.fetch_add(1, Ordering::Relaxed);
            self.reporter.retrying(self.id, failures, delay, &reason);
        });
        match waited.await {
            Ok(()) => Ok(()),
            Err(Stop::Cancelled) => Err(Failure::Fatal(self.cancelled())),
            Err(Stop::GaveUp { attempts }) => {
                Err(Failure::Fatal(TransferError::RetriesExhausted {
                    url: self.url.clone(),
                    range: range.to_owned(),
                    attempts,
                    last: Box::new(error),
                    kept: false,
                }))
            }
        }
    }

    /// The size of the pieces of a file of `total` bytes. Paced by a request budget (and not
    /// encrypted), a file is one request up to `chunk_size`: connections come from several
    /// files at once, and a take-over splits a file only when [`Costs`] say it is worth it.
    /// Unpaced, it is spread over the connections.
    fn piece(&self, total: u64) -> u64 {
        let config = &self.engine.config;
        let connections = if self.costs().is_some() {
            1
        } else {
            config.connections
        };
        Plan::piece_size(total, connections, config.min_split, self.pieces().cap)
    }

    /// How much the first request asks for when the size is unknown: `min_split`, so that the
    /// rest can be planned over several connections; under a request budget a whole piece, so
    /// that most files (batch results, say) take one request.
    fn first_request_len(&self) -> u64 {
        if self.costs().is_some() {
            self.pieces().cap.max(1)
        } else {
            self.engine.config.min_split.max(1)
        }
    }

    /// What a take-over costs, when requests are paced by a budget; `None`: take over at once.
    /// Encrypted downloads keep their small in-order pieces (their window depends on it).
    fn costs(&self) -> Option<Costs> {
        if self.spec.encrypt.is_some() {
            return None;
        }
        let requests_per_minute = self.engine.client.governor().request_rate()?;
        Some(Costs {
            requests_per_second: requests_per_minute / 60.0,
            connections: self.engine.config.connections,
        })
    }

    /// How this transfer is cut into requests, and its window.
    fn pieces(&self) -> Pieces {
        let paced = self.engine.client.governor().paces_requests();
        self.engine
            .config
            .pieces(self.spec.encrypt.is_some(), paced)
    }

    /// Where a body's bytes go, for this job.
    fn sink<'a>(&'a self, part: &'a PartWriter, ledger: &'a Ledger) -> Sink<'a> {
        Sink {
            part,
            ledger,
            reporter: &self.reporter,
            id: self.id,
            url: &self.url,
            read_timeout: self.engine.config.read_timeout,
            fetched: &self.counts.fetched,
            cancel: &self.engine.cancel,
            state: &self.paths.state,
            governor: self.engine.client.governor(),
        }
    }

    fn notice(&self, message: &str) {
        tracing::info!(url = %self.url, "{message}");
        self.reporter.notice(self.id, message);
    }

    /// Drop the state and empty the `.part` (which stays, locked).
    fn discard(&self) -> Result<(), TransferError> {
        // Unlocked, this transfer has written nothing yet.
        let Some(lock) = self.part_lock.get() else {
            return Ok(());
        };
        remove_if_present(&self.paths.state)?;
        lock.truncate()
            .map_err(TransferError::io("emptying", self.paths.part.clone()))
    }

    /// Lock the `.part` (refusing a second process, and a symbolic link in its place) and
    /// clean the temporary state files dead processes left for this download.
    fn lock_part(&self) -> Result<(), TransferError> {
        if self.part_lock.get().is_some() {
            return Ok(());
        }
        let part = &self.paths.part;
        let lock = PartLock::acquire(part).map_err(|error| match error {
            PartLockError::Held => TransferError::Busy {
                output: self.spec.output.clone(),
            },
            PartLockError::Io(e) if is_link_error(&e) => TransferError::Link { path: part.clone() },
            PartLockError::Io(e) => TransferError::io("locking", part.clone())(e),
        })?;
        let _ = self.part_lock.set(lock);
        let state = &self.paths.state;
        let dir = match state.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => std::path::Path::new("."),
        };
        let name = state
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        remove_stale_temps(dir, Some(&name), false)
            .map_err(TransferError::io("cleaning stale state files in", dir))?;
        Ok(())
    }

    /// The output a previous run renamed into place and did not get to record (its state says
    /// so, and the output has that size and hash), as this run's result. Encrypted outputs are
    /// not checked (that needs an identity) and so are fetched again.
    async fn recover_installed(&self) -> Option<Finished> {
        let installed = ResumeState::load(&self.paths.state)?.installed?;
        let meta = std::fs::symlink_metadata(&self.spec.output).ok()?;
        let fits = meta.is_file()
            && meta.len() == installed.stored
            && self
                .spec
                .expected_size
                .is_none_or(|size| size == installed.size)
            && self.spec.encrypt.is_none();
        if !fits {
            return None;
        }
        let sha256 = self.hash_output().await?;
        (sha256 == installed.sha256).then(|| {
            self.notice("found the output complete (installed by an interrupted run)");
            Finished {
                size: installed.size,
                stored: installed.stored,
                sha256,
                resumed_from: installed.size,
                committed: false,
                committing: None,
            }
        })
    }

    /// The SHA-256 of the output as it is on disk (`None`: unreadable).
    async fn hash_output(&self) -> Option<String> {
        let output = self.spec.output.clone();
        tokio::task::spawn_blocking(move || sha256_of(&output))
            .await
            .ok()?
            .ok()
    }

    /// The output an interrupted run placed whole and did not record (see
    /// [`TransferSpec::adopt_output`]): a regular file of the expected size, never encrypted.
    async fn adopt_output(&self) -> Option<Finished> {
        let size = self.spec.expected_size?;
        let meta = std::fs::symlink_metadata(&self.spec.output).ok()?;
        if !meta.is_file() || meta.len() != size || self.spec.encrypt.is_some() {
            return None;
        }
        let sha256 = self.hash_output().await?;
        self.notice("found the output complete (placed by an interrupted run)");
        Some(Finished {
            size,
            stored: size,
            sha256,
            resumed_from: size,
            committed: true,
            committing: None,
        })
    }

    /// After the rename: drop the state, unless the caller keeps it until it has recorded
    /// the download ([`TransferSpec::keep_state`]).
    fn release_state(&self) -> Result<(), TransferError> {
        if self.spec.keep_state {
            return Ok(());
        }
        remove_if_present(&self.paths.state)
    }

    /// Say in `error` whether the partial download was kept; when nothing was, remove the
    /// (empty or unclaimed) `.part` and the state rather than leave them behind.
    fn after_failure(&self, error: TransferError) -> TransferError {
        if self.part_lock.get().is_none() {
            // Nothing was written: the `.part` and state, if any, are another process's.
            return error.with_kept(false);
        }
        let kept = ResumeState::load(&self.paths.state)
            .is_some_and(|state| state.installed.is_none() && state.done.covered() > 0);
        if !kept {
            let _ = remove_if_present(&self.paths.state);
            if self.part_lock.get().is_some() {
                let _ = remove_if_present(&self.paths.part);
            }
        }
        error.with_kept(kept)
    }

    /// A size the server announces must be the size the caller expects.
    fn check_size(&self, announced: Option<u64>) -> Result<(), Failure> {
        size_mismatch(&self.url, self.spec.expected_size, announced).map_or(Ok(()), Err)
    }

    /// Move the complete `.part` to the output name: first mark the state installed (with
    /// the hash), then rename, then drop the state (see [`Job::release_state`]). Only the
    /// regular file this job locked is renamed, never a link put in its place.
    fn install(&self, finished: &Finished) -> Result<(), TransferError> {
        if let Err(Failure::Fatal(error)) = self.check_size(Some(finished.size)) {
            return Err(error);
        }
        let part = &self.paths.part;
        let meta = std::fs::symlink_metadata(part).map_err(TransferError::io("checking", part))?;
        if !meta.is_file() {
            return Err(TransferError::Link { path: part.clone() });
        }
        if meta.len() != finished.stored {
            return Err(TransferError::LengthMismatch {
                url: self.url.clone(),
                expected: finished.stored,
                actual: meta.len(),
                kept: true,
            });
        }
        let mut state = ResumeState::load(&self.paths.state)
            .unwrap_or_else(|| ResumeState::new(self.url.clone()));
        state.installed = Some(Installed {
            sha256: finished.sha256.clone(),
            size: finished.size,
            stored: finished.stored,
            output: self.spec.output.clone(),
        });
        state
            .save(&self.paths.state)
            .map_err(TransferError::io("saving", self.paths.state.clone()))?;
        rename_durable(part, &self.spec.output).map_err(TransferError::io("renaming", part))?;
        self.release_state()
    }

    fn report(
        &self,
        status: TransferStatus,
        finished: Option<Finished>,
        started: Instant,
    ) -> TransferReport {
        let size = match &finished {
            Some(f) => f.size,
            None => std::fs::metadata(&self.spec.output)
                .map(|m| m.len())
                .unwrap_or(0),
        };
        TransferReport {
            url: self.url.clone(),
            path: self.spec.output.clone(),
            status,
            size,
            fetched: self.counts.fetched.load(Ordering::Relaxed),
            resumed_from: finished.as_ref().map_or(0, |f| f.resumed_from),
            sha256: finished.map(|f| f.sha256),
            encrypted: self.spec.encrypt.is_some(),
            duration: started.elapsed(),
            retries: self.counts.retries.load(Ordering::Relaxed),
            state_kept: self.spec.keep_state && self.part_lock.get().is_some(),
        }
    }
}

fn transient(error: crate::http::HttpError) -> Failure {
    if error.is_transient() {
        Failure::Retry {
            error: error.into(),
            server_wait: None,
        }
    } else {
        Failure::Fatal(error.into())
    }
}

/// SHA-256 of a file, in hex (blocking).
pub fn sha256_of(path: &std::path::Path) -> std::io::Result<String> {
    use sha2::Digest;
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match file.read(&mut buf)? {
            0 => return Ok(hex::encode(hasher.finalize())),
            n => hasher.update(&buf[..n]),
        }
    }
}

/// Whether two redacted URLs name the same resource: same path and query, on any origin (a
/// backup endpoint serves the same files; `If-Range` and the size still guard the bytes).
fn same_resource(a: &str, b: &str) -> bool {
    let tail = |url: &str| {
        url::Url::parse(url)
            .ok()
            .map(|u| (u.path().to_owned(), u.query().map(str::to_owned)))
    };
    a == b || tail(a).is_some_and(|tail_a| Some(tail_a) == tail(b))
}

fn validators_of(state: &ResumeState) -> Validators {
    Validators {
        etag: state.etag.clone(),
        last_modified: state.last_modified.clone(),
    }
}

/// The workers of one ranged transfer.
struct Workers {
    job: Arc<Job>,
    plan: Mutex<Plan>,
    part: PartWriter,
    ledger: Arc<Ledger>,
    validators: Validators,
    total: u64,
}

impl Workers {
    /// Take assignments until none are left. The first worker starts with the probe's body.
    async fn work(self: Arc<Self>, mut first: Option<(Arc<Segment>, Held)>) -> Result<(), Failure> {
        loop {
            let (segment, held) = match first.take() {
                Some((segment, held)) => (segment, Some(held)),
                None => match self.next_assignment() {
                    Next::Segment(segment) => (segment, None),
                    Next::Later => {
                        let pause = async {
                            tokio::time::sleep(RECHECK_TAKE_OVER).await;
                            Ok(())
                        };
                        self.job.cancellable(pause).await?;
                        continue;
                    }
                    Next::Done => return Ok(()),
                },
            };
            let result = self.fetch_segment(&segment, held).await;
            self.plan.lock().unwrap().finish(&segment);
            result?;
        }
    }

    /// A pending piece or a take-over; paced, a take-over only once it is worth its request.
    fn next_assignment(&self) -> Next {
        let mut plan = self.plan.lock().unwrap();
        let Some(costs) = self.job.costs() else {
            return plan.assign().map_or(Next::Done, Next::Segment);
        };
        match plan.assign_costed(costs, Instant::now()) {
            Some(segment) => Next::Segment(segment),
            None if plan.in_progress() => Next::Later,
            None => Next::Done,
        }
    }

    /// Fetch a segment, retrying from the last byte written.
    async fn fetch_segment(
        &self,
        segment: &Segment,
        mut first: Option<Held>,
    ) -> Result<(), Failure> {
        let job = &self.job;
        let mut retrier = job.retrier();
        loop {
            let range = segment.remaining();
            if range.is_empty() {
                return Ok(());
            }
            let result = match first.take() {
                Some((response, _permit)) => {
                    self.copy(response, segment, Some(range.end - range.start))
                        .await
                }
                None => self.request_and_copy(segment, range.clone()).await,
            };
            if let Err(failure) = result {
                let at = segment.remaining().start;
                let kept = at.saturating_sub(range.start);
                let described = format!("{at}-{}", range.end - 1);
                job.retry(&mut retrier, failure, &described, kept).await?;
            }
        }
    }

    async fn request_and_copy(
        &self,
        segment: &Segment,
        range: std::ops::Range<u64>,
    ) -> Result<(), Failure> {
        let job = &self.job;
        let (response, _permit) = job
            .request_range(range.clone(), self.validators.if_range())
            .await?;
        let found = Validators::from_headers(response.headers());
        match judge_ranged(&job.url, &response, range.start, Some(range.end))? {
            RangedReply::Partial { total, .. }
                if total != self.total || self.validators.differ(&found) =>
            {
                Err(Failure::Changed)
            }
            RangedReply::Partial { range: got, .. } => {
                self.copy(response, segment, Some(got.end - got.start))
                    .await
            }
            RangedReply::Whole if self.validators.differ(&found) => Err(Failure::Changed),
            RangedReply::Whole => Err(Failure::Untrustworthy("the server ignored Range".into())),
            RangedReply::Unsatisfiable { .. } => Err(Failure::Changed),
            RangedReply::Untrustworthy(reason) => Err(Failure::Untrustworthy(reason)),
        }
    }

    async fn copy(
        &self,
        response: Response,
        segment: &Segment,
        body_len: Option<u64>,
    ) -> Result<(), Failure> {
        let job = &self.job;
        let sink = job.sink(&self.part, &self.ledger);
        let live = job.live.fetch_add(1, Ordering::Relaxed) + 1;
        job.reporter.connections(job.id, live);
        let reading = Instant::now();
        let result = copy_body(response, segment, body_len, &sink).await;
        job.engine.client.governor().transferred(reading.elapsed());
        let live = job.live.fetch_sub(1, Ordering::Relaxed) - 1;
        job.reporter.connections(job.id, live);
        result
    }
}

/// What a worker does next.
enum Next {
    Segment(Arc<Segment>),
    /// Nothing is worth a request yet, but ranges are still in progress: look again shortly.
    Later,
    Done,
}

/// The `.part` being written, with its checkpointer and hasher running.
struct Writing {
    part: PartWriter,
    ledger: Arc<Ledger>,
    state: ResumeState,
    resumed_from: u64,
    stop: tokio_util::sync::CancellationToken,
    checkpointer: tokio::task::JoinHandle<Result<(), TransferError>>,
    hasher: tokio::task::JoinHandle<std::io::Result<Hashed>>,
}

impl Writing {
    fn start(job: &Job, mut state: ResumeState, total: Option<u64>) -> Result<Writing, Failure> {
        job.check_size(total)?;
        job.lock_part().map_err(Failure::Fatal)?;
        let paths = &job.paths;
        let encrypt = job.spec.encrypt.as_deref();
        let part = PartWriter::open(encrypt, &paths.part, &mut state, total)
            .map_err(|e| Failure::Fatal(e.into()))?;
        state.save(&paths.state).map_err(|e| {
            Failure::Fatal(TransferError::io(
                "saving the resume state",
                paths.state.clone(),
            )(e))
        })?;
        let resumed_from = state.done.covered();
        let window = job.pieces().window;
        let ledger = Arc::new(Ledger::new(state.done.clone(), window));
        job.reporter.started(job.id, &job.url, total, resumed_from);
        let stop = tokio_util::sync::CancellationToken::new();
        let checkpointer = tokio::spawn(checkpoint_loop(
            part.clone(),
            Arc::clone(&ledger),
            state.clone(),
            paths.state.clone(),
            job.engine.config.checkpoint_interval,
            stop.clone(),
        ));
        let tap = job.spec.tap.clone();
        let hasher = tokio::spawn(hash_prefix(part.clone(), Arc::clone(&ledger), tap));
        Ok(Writing {
            part,
            ledger,
            state,
            resumed_from,
            stop,
            checkpointer,
            hasher,
        })
    }

    /// Stop the followers, make progress durable, and if all went well check completeness
    /// and collect the hash.
    async fn finish(
        mut self,
        job: &Job,
        outcome: Result<(), Failure>,
        size: u64,
    ) -> Result<Finished, Failure> {
        self.stop.cancel();
        let fatal = |e| Failure::Fatal(TransferError::io("syncing", job.paths.part.clone())(e));
        if let Ok(Err(e)) = (&mut self.checkpointer).await {
            tracing::warn!(path = %job.paths.state.display(), "checkpoint failed: {e}");
        }
        let outcome = outcome.and_then(|()| self.seal_tail(size).map_err(fatal));
        let saved = checkpoint(&self.part, &self.ledger, &mut self.state, &job.paths.state).await;
        if let Err(failure) = outcome {
            self.hasher.abort();
            return Err(failure);
        }
        saved.map_err(Failure::Fatal)?;
        let done = self.ledger.snapshot();
        if !done.is_complete(size) {
            self.hasher.abort();
            let error = TransferError::LengthMismatch {
                url: job.url.clone(),
                expected: size,
                actual: done.covered(),
                kept: true,
            };
            return Err(Failure::Fatal(error));
        }
        self.ledger.seal();
        let hashed = self
            .hasher
            .await
            .map_err(std::io::Error::other)
            .and_then(|r| r)
            .map_err(fatal)?;
        debug_assert_eq!(hashed.len, size);
        Ok(Finished {
            size,
            stored: self.part.stored_len(size),
            sha256: hashed.sha256,
            resumed_from: self.resumed_from,
            committed: false,
            committing: None,
        })
    }

    /// Write what could only be written once the size is known (the last chunk of an
    /// encrypted stream of unknown length; the one chunk of an empty encrypted file).
    fn seal_tail(&self, size: u64) -> std::io::Result<()> {
        for written in self.part.finish(size)? {
            self.ledger.record(written);
        }
        Ok(())
    }
}

/// Fetch the bytes `range` of `spec`'s file (of `total` bytes) into `part` at their offsets,
/// with the transfer's own requests, response checks and retries (a cut body continues from the
/// last byte written), then make them durable (`fdatasync`). Nothing else of a transfer
/// happens: no lock on `part`, no resume state, no hash, no rename: the caller owns the file
/// and writes other ranges of it at the same time (a fleet segment, `crate::fleet::segment`).
/// `ledger` (a new one, without a window) records what is written, for the caller to
/// checkpoint. Returns the bytes fetched.
pub async fn fetch_range(
    engine: &Engine,
    spec: &TransferSpec,
    range: std::ops::Range<u64>,
    total: u64,
    (part, ledger): (&PartWriter, &Ledger),
) -> Result<u64, TransferError> {
    let counts = Arc::new(Counts::default());
    let job = Job::new(
        engine,
        0,
        spec,
        Arc::new(super::Silent),
        Arc::clone(&counts),
    );
    let segment = Segment::new(range);
    let mut retrier = job.retrier();
    loop {
        let left = segment.remaining();
        if left.is_empty() {
            break;
        }
        if let Err(failure) = job
            .fetch_rest(&segment, left.clone(), total, part, ledger)
            .await
        {
            let failure = match failure {
                Failure::Changed => Failure::Fatal(TransferError::Protocol {
                    url: job.url.clone(),
                    reason: format!("the file is no longer {total} bytes on the server"),
                }),
                Failure::Untrustworthy(reason) => Failure::Fatal(TransferError::Protocol {
                    url: job.url.clone(),
                    reason,
                }),
                other => other,
            };
            let at = segment.remaining().start;
            let described = format!("{at}-{}", left.end - 1);
            match job
                .retry(&mut retrier, failure, &described, at - left.start)
                .await
            {
                Ok(()) => {}
                Err(Failure::Fatal(error)) => return Err(error),
                Err(_) => unreachable!("retry returns only Fatal failures"),
            }
        }
    }
    let syncing = part.clone();
    tokio::task::spawn_blocking(move || syncing.sync_data())
        .await
        .map_err(std::io::Error::other)
        .and_then(|synced| synced)
        .map_err(TransferError::io("syncing", part.path()))?;
    Ok(counts.fetched.load(Ordering::Relaxed))
}

impl Job {
    /// One request for what is left of a range fetched by [`fetch_range`], copied into `part`.
    async fn fetch_rest(
        &self,
        segment: &Segment,
        left: std::ops::Range<u64>,
        total: u64,
        part: &PartWriter,
        ledger: &Ledger,
    ) -> Result<(), Failure> {
        let (response, _permit) = self.request_range(left.clone(), None).await?;
        if !response.status().is_success() && response.status().as_u16() != 416 {
            return Err(status_failure(&self.url, &response));
        }
        match judge_ranged(&self.url, &response, left.start, Some(left.end))? {
            RangedReply::Partial { total: found, .. } if found != total => Err(Failure::Changed),
            RangedReply::Partial { range: got, .. } => {
                let sink = self.sink(part, ledger);
                let reading = Instant::now();
                let copied = copy_body(response, segment, Some(got.end - got.start), &sink).await;
                self.engine.client.governor().transferred(reading.elapsed());
                copied
            }
            RangedReply::Whole => Err(Failure::Untrustworthy("the server ignored Range".into())),
            RangedReply::Unsatisfiable { .. } => Err(Failure::Changed),
            RangedReply::Untrustworthy(reason) => Err(Failure::Untrustworthy(reason)),
        }
    }
}
