//! `claudedl worker`: claim a few items, download each with the engine from sync's transfer spec
//! into the item's staging file (`tmp/fleet/ITEM`, its `.part` and resume state beside it), and
//! complete it in one transaction that checks the claim's epoch before recording it in the index
//! and renaming the file into place. Completions run on tasks of their own (each on a pooled
//! connection) while the worker goes on claiming and downloading; the whole files that land
//! while one commits are completed together in the next (one transaction, one directory
//! `fsync`). `-j` bounds the transfers in flight (a small file's until its body is written);
//! small files are claimed in chunks, ahead of the free slots. A heartbeat extends the leases
//! and sweeps expired ones back to the queue; a transfer whose lease the heartbeat no longer
//! finds (expired and claimed by another) is abandoned at once rather than finished for nothing.
//!
//! A drain (SIGTERM) stops claiming, lets the transfers in flight finish within the drain
//! timeout, cancels the rest (the engine saves their state: the next claimer of the item, on
//! the same shared directory, resumes it), and releases every lease held so that other workers
//! claim them at once. The engine's lock on a `.part` keeps a worker that lost its lease and
//! the item's new claimer from writing it at once (the second fails as busy and retries later).

use std::collections::{HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use deadpool_postgres::Pool;
use serde::Serialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::objects::Objects;
use super::queue::{self, Claim, Completion};
use super::{FleetError, backoff, segment};
use crate::engine::{Silent, TransferError, TransferReport, TransferSpec};
use crate::store::atomic::{parent_dir, rename_durable, sync_dir};
use crate::store::index::FileOutcome;
use crate::sync::files::{UsualPaths, outcome_of, relative, spec_for};
use crate::sync::{Sync, SyncOptions};

/// Completion batches committing at once: while one waits for the database and the disk, the
/// files that land meanwhile gather for the next.
const BATCHES_AT_ONCE: usize = 2;

/// Items a worker holds (leased) per transfer it runs at once (`-j`): besides the transfers,
/// the small files whose bodies wait for their group commit, and the downloads waiting for
/// their completion's transaction. 8 bound a worker's small files (docs/fleet.md, session 13).
const HELD_PER_TRANSFER: usize = 32;

#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// Transfers at once.
    pub jobs: usize,
    pub lease: Duration,
    /// Exit when nothing is queued or leased (a Kubernetes Job).
    pub exit_when_empty: bool,
    pub drain_timeout: Duration,
    /// How often an idle worker looks for work.
    pub poll: Duration,
    /// Touched at start and at every heartbeat (a liveness probe checks its age).
    pub health_file: Option<PathBuf>,
    /// Store downloads in object storage (`--output s3://…`) instead of the data directory.
    pub objects: Option<Arc<Objects>>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct WorkerSummary {
    pub worker: String,
    pub completed: u64,
    pub skipped: u64,
    pub retried: u64,
    pub given_up: u64,
    /// Completions refused because the lease had been lost (the download was discarded).
    pub lost: u64,
    /// Leases given back by the drain.
    pub released: u64,
    /// Transfers stopped because the heartbeat found their lease gone.
    pub abandoned: u64,
    /// Segments of large files fetched and recorded done (see `super::segment`).
    pub segments: u64,
    /// Transactions that completed downloaded whole files (those that land while one commits
    /// are completed together in the next).
    pub completion_batches: u64,
    pub bytes: u64,
    pub drained: bool,
    /// Why the worker stopped sending requests (the spend limit, here or in another worker).
    pub halted: Option<String>,
}

impl WorkerSummary {
    /// Add the counts of `other` (a completion's, made on its own task).
    fn absorb(&mut self, other: WorkerSummary) {
        self.completed += other.completed;
        self.skipped += other.skipped;
        self.retried += other.retried;
        self.given_up += other.given_up;
        self.lost += other.lost;
        self.released += other.released;
        self.abandoned += other.abandoned;
        self.segments += other.segments;
        self.completion_batches += other.completion_batches;
        self.bytes += other.bytes;
    }
}

/// A worker's id: host, process and a random tag (ids never repeat across restarts).
pub fn worker_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "host".to_owned());
    format!(
        "{host}-{}-{:04x}",
        std::process::id(),
        rand::random::<u16>()
    )
}

/// One transfer in flight and where its output goes once its claim is confirmed.
struct Flight {
    claim: Claim,
    staged: PathBuf,
    output: PathBuf,
}

/// A finished transfer: a whole file, or one segment of a large one.
enum Landed {
    Whole(Flight, Result<TransferReport, TransferError>),
    Segment(segment::Landed),
}

impl Landed {
    fn item(&self) -> i64 {
        match self {
            Landed::Whole(flight, _) => flight.claim.item,
            Landed::Segment((flight, _)) => flight.claim.item,
        }
    }

    fn failed(&self) -> bool {
        match self {
            Landed::Whole(_, result) => result.is_err(),
            Landed::Segment((_, result)) => result.is_err(),
        }
    }
}

/// What the last heartbeat found: when it started, and the items still held then.
type Beat = Option<(Instant, HashSet<i64>)>;

/// Transfers in flight by item: when claimed, and how to stop them.
type InFlight = std::collections::HashMap<i64, (Instant, tokio::task::AbortHandle)>;

/// Work until drained (`drain` cancelled) or, with `exit_when_empty`, until no work remains.
pub async fn run(
    pool: &Pool,
    sync: &mut Sync<'_>,
    sync_options: &SyncOptions,
    options: &WorkerOptions,
    worker: &str,
    drain: CancellationToken,
) -> Result<WorkerSummary, FleetError> {
    let host = worker.rsplitn(3, '-').last().unwrap_or(worker).to_owned();
    queue::register(pool, worker, &host).await?;
    touch(options.health_file.as_deref(), worker);
    let beats = CancellationToken::new();
    let (beat, held) = tokio::sync::watch::channel(None);
    let heartbeat = tokio::spawn(heartbeat(
        pool.clone(),
        worker.to_owned(),
        options.lease,
        options.health_file.clone(),
        (beats.clone(), beat),
    ));
    let mut summary = WorkerSummary {
        worker: worker.to_owned(),
        ..WorkerSummary::default()
    };
    let result = work(
        pool,
        sync,
        sync_options,
        options,
        worker,
        (&drain, held),
        &mut summary,
    )
    .await;
    beats.cancel();
    let _ = heartbeat.await;
    summary.released = queue::release_all(pool, worker).await?;
    summary.drained = drain.is_cancelled();
    tracing::info!(
        event = "fleet_worker_stopped",
        worker,
        completed = summary.completed,
        released = summary.released,
        "worker stopped"
    );
    result.map(|()| summary)
}

async fn work(
    pool: &Pool,
    sync: &mut Sync<'_>,
    sync_options: &SyncOptions,
    options: &WorkerOptions,
    worker: &str,
    (drain, mut held): (&CancellationToken, tokio::sync::watch::Receiver<Beat>),
    summary: &mut WorkerSummary,
) -> Result<(), FleetError> {
    let mut running: JoinSet<Landed> = JoinSet::new();
    // A transfer holds one of `slots` until its request is over (a small file's until its body
    // is written, before its group commit); an item is held (leased) from its claim to the end
    // of its completion, at most `most_held` at once.
    let slots = Arc::new(Semaphore::new(options.jobs));
    let most_held = options.jobs * HELD_PER_TRANSFER;
    let mut completions = Completions::default();
    // Claimed items waiting for a slot: claims come in chunks (a round trip to the database
    // for many), at most `jobs` beyond the slots free.
    let mut ready = Ready::new();
    // Set when the queue had fewer ready items than asked for: no claim before then.
    let mut dry_until: Option<tokio::time::Instant> = None;
    let mut in_flight = InFlight::new();
    let mut deadline: Option<Instant> = None;
    let governor = sync.api.http().governor();
    let root = sync.data.root().to_path_buf();
    loop {
        if let Some(halted) = governor.halted().filter(|_| summary.halted.is_none()) {
            // No request may be sent: stop as a drain does (leases released, state saved), and
            // halt the others (written here, before this process can exit).
            summary.halted = Some(halted.to_string());
            drain.cancel();
            super::budget::halt(pool, &halted.to_string()).await?;
        }
        if drain.is_cancelled() && deadline.is_none() {
            deadline = Some(Instant::now() + options.drain_timeout);
            tracing::info!(
                event = "fleet_drain",
                worker,
                in_flight = running.len(),
                "draining"
            );
        }
        completions.start_batch(pool, &root);
        let dry = is_dry(dry_until);
        let holding = items_held(&running, &completions, &ready);
        let wanted = ready.wanted(slots.available_permits(), options.jobs);
        let room = wanted.min(most_held.saturating_sub(holding));
        if deadline.is_none() && !dry && room > 0 && (ready.is_empty() || room >= options.jobs) {
            let claimed = ready
                .claim(pool, (sync, sync_options), (options, worker), room, summary)
                .await?;
            dry_until = (claimed < room).then(|| tokio::time::Instant::now() + options.poll);
        }
        while deadline.is_none()
            && let Some(slot) = ready
                .front()
                .and_then(|_| slots.clone().try_acquire_owned().ok())
        {
            let (claimed, claim, spec) = ready.pop_front().expect("looked at the front");
            let item = claim.item;
            let run = (&mut running, slot);
            let handle = start(pool, sync, options, (claim, spec), run)?;
            in_flight.insert(item, (claimed, handle));
        }
        if running.is_empty() && completions.is_empty() && (ready.is_empty() || deadline.is_some())
        {
            if deadline.is_some() || (options.exit_when_empty && !queue::work_remains(pool).await?)
            {
                return Ok(());
            }
            tokio::select! {
                () = tokio::time::sleep(options.poll) => {}
                () = drain.cancelled() => {}
            }
            continue;
        }
        // Claims and starts above changed both.
        let (holding, dry) = (
            items_held(&running, &completions, &ready),
            is_dry(dry_until),
        );
        let wants_work = deadline.is_none() && holding < most_held;
        let wants_slot = (wants_work && !dry) || (deadline.is_none() && !ready.is_empty());
        let stopping = sync.engine.cancel_token().is_cancelled();
        let until = deadline.map(tokio::time::Instant::from_std);
        tokio::select! {
            Some(joined) = running.join_next() => {
                if let Ok(landed) = joined {
                    in_flight.remove(&landed.item());
                    // A transfer the halt stopped is not a failure of its item.
                    if !(landed.failed() && governor.halted().is_some()) {
                        match landed {
                            Landed::Whole(flight, result) => {
                                let objects = options.objects.clone();
                                completions.add(pool, &root, objects, (flight, result));
                            }
                            Landed::Segment(landed) => {
                                segment::finish(pool, &root, landed, summary).await?;
                            }
                        }
                    }
                }
            }
            Some(finished) = completions.next() => summary.absorb(finished?),
            Ok(()) = held.changed() => {
                let beat = held.borrow_and_update().clone();
                ready.forget_lost(&beat);
                abandon_lost(beat, &mut in_flight, worker, summary);
            }
            // A transfer's request is over: its slot is free for the next item.
            _ = Arc::clone(&slots).acquire_owned(), if wants_slot => {}
            () = sleep_until(dry_until), if wants_work && dry => {}
            () = drain.cancelled(), if deadline.is_none() => {}
            () = sleep_until(until), if until.is_some() && !stopping => {
                // Out of time: the engine saves each transfer's state and ends it.
                sync.engine.cancel_token().cancel();
            }
        }
    }
}

/// The items a worker holds (leased): transfers running, completions, claims not started.
fn items_held(running: &JoinSet<Landed>, completions: &Completions, ready: &Ready) -> usize {
    running.len() + completions.len() + ready.len()
}

/// Whether the queue had too few items at the last claim for another claim yet.
fn is_dry(dry_until: Option<tokio::time::Instant>) -> bool {
    dry_until.is_some_and(|until| tokio::time::Instant::now() < until)
}

/// Whole files' completions. A failed transfer's, and a file's stored in object storage,
/// complete one at a time on tasks of their own; files downloaded into the data directory
/// gather in `downloaded` for the next batch (one transaction for many), which starts once
/// fewer than `BATCHES_AT_ONCE` are committing. The loop goes on claiming and starting
/// transfers meanwhile.
#[derive(Default)]
struct Completions {
    one_by_one: JoinSet<Result<WorkerSummary, FleetError>>,
    downloaded: Vec<(Flight, TransferReport)>,
    /// Each batch's task returns how many items it held.
    batches: JoinSet<(usize, Result<WorkerSummary, FleetError>)>,
    in_batches: usize,
}

impl Completions {
    /// The items held until their completions end.
    fn len(&self) -> usize {
        self.one_by_one.len() + self.downloaded.len() + self.in_batches
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Complete the landed transfer of `flight`.
    fn add(
        &mut self,
        pool: &Pool,
        root: &Path,
        objects: Option<Arc<Objects>>,
        (flight, result): (Flight, Result<TransferReport, TransferError>),
    ) {
        match result {
            Ok(report) if objects.is_none() => self.downloaded.push((flight, report)),
            result => {
                let (pool, root) = (pool.clone(), root.to_path_buf());
                self.one_by_one.spawn(async move {
                    let mut tally = WorkerSummary::default();
                    let landed = (flight, result);
                    finish(&pool, &root, objects.as_deref(), landed, &mut tally)
                        .await
                        .map(|()| tally)
                });
            }
        }
    }

    /// Start completing the files downloaded so far, unless there are none or enough batches
    /// are committing.
    fn start_batch(&mut self, pool: &Pool, root: &Path) {
        if self.downloaded.is_empty() || self.batches.len() >= BATCHES_AT_ONCE {
            return;
        }
        let landed = std::mem::take(&mut self.downloaded);
        self.in_batches += landed.len();
        let (pool, root) = (pool.clone(), root.to_path_buf());
        self.batches.spawn(async move {
            let (items, mut tally) = (landed.len(), WorkerSummary::default());
            let finished = finish_batch(&pool, &root, landed, &mut tally).await;
            (items, finished.map(|()| tally))
        });
    }

    /// The counts of the next completion (or batch) to end; `None` when none is running.
    async fn next(&mut self) -> Option<Result<WorkerSummary, FleetError>> {
        let (items, finished) = tokio::select! {
            Some(done) = self.one_by_one.join_next() => (0, done.expect("a completion panicked")),
            Some(done) = self.batches.join_next() => done.expect("a completion batch panicked"),
            else => return None,
        };
        self.in_batches -= items;
        Some(finished)
    }
}

/// Stop the transfers of items claimed before the last heartbeat that it did not find held.
fn abandon_lost(beat: Beat, in_flight: &mut InFlight, worker: &str, summary: &mut WorkerSummary) {
    let Some((at, held)) = beat else {
        return;
    };
    in_flight.retain(|item, (claimed, handle)| {
        let lost = *claimed < at && !held.contains(item);
        if lost {
            handle.abort();
            summary.abandoned += 1;
            tracing::warn!(
                event = "fleet_lease_abandoned",
                worker,
                item,
                "the lease is gone: transfer stopped"
            );
        }
        !lost
    });
}

async fn sleep_until(until: Option<tokio::time::Instant>) {
    match until {
        Some(until) => tokio::time::sleep_until(until).await,
        None => std::future::pending().await,
    }
}

/// Items claimed and not started yet: when each was claimed, and its transfer's spec.
struct Ready {
    items: VecDeque<(Instant, Claim, TransferSpec)>,
    /// Whether to claim ahead of the slots free (up to `-j` more): the last claim found only
    /// small files, whose transfers give their slots back in moments. Large files and
    /// segments are claimed only as slots free (another worker may be idle meanwhile).
    ahead: bool,
}

impl Ready {
    fn new() -> Ready {
        Ready {
            items: VecDeque::new(),
            ahead: false,
        }
    }

    /// How many to claim: the slots free, and as many more as wait here when claiming ahead.
    fn wanted(&self, free: usize, jobs: usize) -> usize {
        let ahead = if self.ahead { jobs } else { 0 };
        (free + ahead).saturating_sub(self.items.len())
    }

    fn len(&self) -> usize {
        self.items.len()
    }

    fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    fn front(&self) -> Option<&(Instant, Claim, TransferSpec)> {
        self.items.front()
    }

    fn pop_front(&mut self) -> Option<(Instant, Claim, TransferSpec)> {
        self.items.pop_front()
    }

    /// Claim up to `room` items and add each with its transfer's spec (the index asked once
    /// for all of their usual paths); one whose names both belong to other files is given up.
    /// Returns how many were claimed.
    async fn claim(
        &mut self,
        pool: &Pool,
        (sync, sync_options): (&Sync<'_>, &SyncOptions),
        (options, worker): (&WorkerOptions, &str),
        room: usize,
        summary: &mut WorkerSummary,
    ) -> Result<usize, FleetError> {
        let claims = queue::claim(pool, worker, options.lease, room as i64).await?;
        let (claimed_at, claimed) = (Instant::now(), claims.len());
        let specs = tokio::task::block_in_place(|| {
            let files: Vec<_> = claims.iter().map(|claim| claim.file.clone()).collect();
            let mut usual = UsualPaths::of(sync, sync_options, &files)?;
            let spec = |claim: &Claim| {
                // Each on its own: the segments of one file go to one path.
                let taken = &mut HashSet::new();
                spec_for(sync, sync_options, &claim.file, &mut usual, taken)
            };
            claims.iter().map(spec).collect::<Result<Vec<_>, _>>()
        })?;
        self.ahead = !claims.is_empty()
            && claims.iter().all(|claim| {
                let size = claim.file.meta.size_bytes;
                let encrypted = sync_options.encrypt.is_some();
                claim.segment.is_none() && sync.engine.fetches_whole(size, encrypted)
            });
        for (claim, spec) in claims.into_iter().zip(specs) {
            match spec {
                Ok(spec) => self.items.push_back((claimed_at, claim, spec)),
                // Both names are held by other files: nothing to download, ever.
                Err(reason) => _ = give_up(pool, &claim, &reason, summary).await?,
            }
        }
        Ok(claimed)
    }

    /// Drop the items claimed before the last heartbeat that it did not find held (their
    /// leases expired and went back to the queue).
    fn forget_lost(&mut self, beat: &Beat) {
        if let Some((at, held)) = beat {
            self.items
                .retain(|(claimed, claim, _)| *claimed >= *at || held.contains(&claim.item));
        }
    }
}

/// Start the transfer of `claim` with sync's `spec`, holding `slot` (one of the `-j`), its
/// output moved to the claim's staging file.
fn start(
    pool: &Pool,
    sync: &Sync<'_>,
    options: &WorkerOptions,
    (claim, mut spec): (Claim, TransferSpec),
    (running, slot): (&mut JoinSet<Landed>, OwnedSemaphorePermit),
) -> Result<tokio::task::AbortHandle, FleetError> {
    let staging_dir = sync.data.tmp().join("fleet");
    std::fs::create_dir_all(&staging_dir).map_err(|source| FleetError::Install {
        id: claim.file.meta.id.clone(),
        source,
    })?;
    if claim.segment.is_some() {
        let staged = match options.objects {
            Some(_) => staging_dir.join(format!("part-{}", claim.item)),
            None => segment::staging(&sync.data.tmp(), &claim.file.meta.id),
        };
        let flight = segment::Flight {
            staged,
            output: spec.output.clone(),
            relative: relative(sync.data.root(), &spec.output),
            objects: options.objects.clone(),
            claim,
        };
        let (engine, pool) = (sync.engine.clone(), pool.clone());
        let handle = running.spawn(async move {
            let fetched = segment::fetch(engine, pool, spec, flight).await;
            drop(slot);
            Landed::Segment(fetched)
        });
        return Ok(handle);
    }
    let staged = staging_dir.join(claim.item.to_string());
    let output = std::mem::replace(&mut spec.output, staged.clone());
    spec.staging = Some(staged.clone());
    spec.keep_state = false;
    spec.overwrite = true;
    let engine = sync.engine.clone();
    let flight = Flight {
        claim,
        staged,
        output,
    };
    let id = usize::try_from(flight.claim.item).unwrap_or(0);
    let handle = running.spawn(async move {
        let result = engine
            .download_holding(id, &spec, Arc::new(Silent), slot)
            .await;
        Landed::Whole(flight, result)
    });
    Ok(handle)
}

/// Complete, retry later or give up a landed transfer.
async fn finish(
    pool: &Pool,
    root: &Path,
    objects: Option<&Objects>,
    (flight, result): (Flight, Result<TransferReport, TransferError>),
    summary: &mut WorkerSummary,
) -> Result<(), FleetError> {
    if matches!(&result, Err(error) if error.is_cancelled()) {
        return Ok(()); // Drained: the lease is released with the others.
    }
    let claim = &flight.claim;
    let completion = match &result {
        Ok(report) => {
            let outcome = complete_outcome(root, &flight.output, report);
            let completion = match objects {
                Some(objects) => {
                    // Stored before the completion (an object replaced by its own bytes if the
                    // lease turns out lost), the staged file removed after it.
                    let place = relative(root, &flight.output);
                    if let Err(error) = store(objects, &flight.staged, &place).await {
                        retry_or_give_up(pool, claim, &error.to_string(), summary).await?;
                        return Ok(());
                    }
                    let remove = || std::fs::remove_file(&flight.staged);
                    queue::complete(pool, claim, &outcome, remove).await?
                }
                None => {
                    let install = || install(&flight.staged, &flight.output);
                    queue::complete(pool, claim, &outcome, install).await?
                }
            };
            settle_download(pool, root, &flight, report, completion, summary).await?
        }
        Err(_) => failed(pool, root, claim, &result, summary).await?,
    };
    log_end(claim, completion, summary);
    Ok(())
}

/// Complete downloaded whole files together: one transaction, one `fsync` a directory. Refused
/// as a whole by the index (two of them at one path), they are completed one by one.
async fn finish_batch(
    pool: &Pool,
    root: &Path,
    downloaded: Vec<(Flight, TransferReport)>,
    summary: &mut WorkerSummary,
) -> Result<(), FleetError> {
    let batch: Vec<(&Claim, FileOutcome)> = downloaded
        .iter()
        .map(|(flight, report)| {
            let outcome = complete_outcome(root, &flight.output, report);
            (&flight.claim, outcome)
        })
        .collect();
    let install = |completions: &[Completion]| {
        let recorded = downloaded
            .iter()
            .zip(completions)
            .filter(|(_, completion)| **completion == Completion::Recorded)
            .map(|((flight, _), _)| flight);
        install_all(recorded)
    };
    let Some(completions) = queue::complete_batch(pool, &batch, install).await? else {
        drop(batch);
        for (flight, report) in downloaded {
            finish(pool, root, None, (flight, Ok(report)), summary).await?;
        }
        return Ok(());
    };
    summary.completion_batches += 1;
    for ((flight, report), completion) in downloaded.iter().zip(completions) {
        let completion = settle_download(pool, root, flight, report, completion, summary).await?;
        log_end(&flight.claim, completion, summary);
    }
    Ok(())
}

/// What the index records of a whole file downloaded to `output`.
fn complete_outcome(root: &Path, output: &Path, report: &TransferReport) -> FileOutcome {
    FileOutcome::Complete {
        path: relative(root, output),
        sha256: report.sha256.clone().unwrap_or_default(),
        etag: None,
        retries: report.retries,
        encrypted: report.encrypted,
    }
}

/// Count a download's completion; one whose path another file holds is given up (its staged
/// file removed).
async fn settle_download(
    pool: &Pool,
    root: &Path,
    flight: &Flight,
    report: &TransferReport,
    completion: Completion,
    summary: &mut WorkerSummary,
) -> Result<Completion, FleetError> {
    match completion {
        Completion::Recorded => {
            summary.completed += 1;
            summary.bytes += report.fetched;
            Ok(completion)
        }
        Completion::PathTaken => {
            let _ = std::fs::remove_file(&flight.staged);
            let place = relative(root, &flight.output);
            let reason = format!("{place} is recorded for another file");
            give_up(pool, &flight.claim, &reason, summary).await
        }
        other => Ok(other),
    }
}

/// Log how the item of `claim` ended (a lost lease counted).
fn log_end(claim: &Claim, completion: Completion, summary: &mut WorkerSummary) {
    let id = &claim.file.meta.id;
    if completion == Completion::LeaseLost {
        // The staged file is left alone: it may be the item's new claimer's by now.
        summary.lost += 1;
        tracing::warn!(
            event = "fleet_lease_lost",
            id,
            epoch = claim.epoch,
            "the lease was lost: download discarded"
        );
    } else {
        tracing::info!(
            event = "fleet_item_done",
            id,
            epoch = claim.epoch,
            "item done"
        );
    }
}

/// Store the staged download as the object `place`.
async fn store(objects: &Objects, staged: &Path, place: &str) -> Result<(), FleetError> {
    let content = tokio::fs::read(staged)
        .await
        .map_err(|source| FleetError::Install {
            id: place.to_owned(),
            source,
        })?;
    Ok(objects.put(place, content.into()).await?)
}

/// A failed transfer: skipped (the file is gone), retried later with backoff, or given up.
pub(super) async fn failed(
    pool: &Pool,
    root: &Path,
    claim: &Claim,
    result: &Result<TransferReport, TransferError>,
    summary: &mut WorkerSummary,
) -> Result<Completion, FleetError> {
    Ok(match outcome_of(root, result) {
        skipped @ FileOutcome::Skipped { .. } => {
            let done = queue::complete(pool, claim, &skipped, || Ok(())).await?;
            summary.skipped += u64::from(done == Completion::Recorded);
            done
        }
        FileOutcome::Failed { reason, .. } => {
            retry_or_give_up(pool, claim, &reason, summary).await?
        }
        _ => Completion::Recorded,
    })
}

/// Put `claim` back in the queue with backoff, or give it up after too many attempts.
pub(super) async fn retry_or_give_up(
    pool: &Pool,
    claim: &Claim,
    reason: &str,
    summary: &mut WorkerSummary,
) -> Result<Completion, FleetError> {
    match backoff::after_failure(claim.attempts) {
        Some(delay) => {
            let done = queue::retry_later(pool, claim, reason, Some(delay)).await?;
            summary.retried += u64::from(done == Completion::Recorded);
            Ok(done)
        }
        None => give_up(pool, claim, reason, summary).await,
    }
}

pub(super) async fn give_up(
    pool: &Pool,
    claim: &Claim,
    reason: &str,
    summary: &mut WorkerSummary,
) -> Result<Completion, FleetError> {
    let done = queue::retry_later(pool, claim, reason, None).await?;
    summary.given_up += u64::from(done == Completion::Recorded);
    Ok(done)
}

/// Rename the staged download into place (the parent made if needed), then make the rename
/// durable.
pub(super) fn install(staged: &Path, output: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(parent_dir(output))?;
    rename_durable(staged, output)
}

/// [`install`] for many: each renamed into place, then each directory made durable once.
fn install_all<'a>(flights: impl Iterator<Item = &'a Flight>) -> Result<(), FleetError> {
    let mut parents = std::collections::BTreeSet::new();
    for flight in flights {
        let failed = |source| FleetError::Install {
            id: flight.claim.file.meta.id.clone(),
            source,
        };
        let parent = parent_dir(&flight.output);
        if parents.insert(parent) {
            std::fs::create_dir_all(parent).map_err(failed)?;
        }
        std::fs::rename(&flight.staged, &flight.output).map_err(failed)?;
    }
    for parent in parents {
        sync_dir(parent).map_err(|source| FleetError::Install {
            id: parent.display().to_string(),
            source,
        })?;
    }
    Ok(())
}

/// Rewrite the health file (empty), which sets its modification time to now.
fn touch(health_file: Option<&Path>, worker: &str) {
    if let Some(path) = health_file
        && let Err(error) = std::fs::write(path, b"")
    {
        let path = path.display().to_string();
        tracing::warn!(event = "fleet_health_file_failed", worker, path, "{error}");
    }
}

/// Every third of a lease: extend ours, and return expired ones (any worker's) to the queue.
async fn heartbeat(
    pool: Pool,
    worker: String,
    lease: Duration,
    health_file: Option<PathBuf>,
    (stop, beat): (CancellationToken, tokio::sync::watch::Sender<Beat>),
) {
    let every = lease / 3;
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = stop.cancelled() => return,
        }
        let started = Instant::now();
        match queue::heartbeat(&pool, &worker, lease).await {
            Ok(held) => {
                let _ = beat.send(Some((started, held)));
                touch(health_file.as_deref(), &worker);
            }
            Err(error) => tracing::warn!(event = "fleet_heartbeat_failed", worker, "{error}"),
        }
        match queue::sweep(&pool).await {
            Ok(0) => {}
            Ok(swept) => tracing::info!(
                event = "fleet_sweep",
                worker,
                swept,
                "expired leases returned"
            ),
            Err(error) => tracing::warn!(event = "fleet_sweep_failed", worker, "{error}"),
        }
    }
}
