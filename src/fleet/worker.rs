//! `claudedl worker`: claim a few items, download each with the engine from sync's transfer spec
//! into the item's staging file (`tmp/fleet/ITEM`, its `.part` and resume state beside it), and
//! complete it in one transaction that checks the claim's epoch before recording it in the index
//! and renaming the file into place. Completions run on tasks of their own (each on a pooled
//! connection) while the worker goes on claiming and downloading; an item counts against the
//! worker's `-j` from its claim to the end of its completion. A heartbeat extends the leases
//! and sweeps expired ones back to the queue; a transfer whose lease the heartbeat no longer
//! finds (expired and claimed by another) is abandoned at once rather than finished for nothing.
//!
//! A drain (SIGTERM) stops claiming, lets the transfers in flight finish within the drain
//! timeout, cancels the rest (the engine saves their state: the next claimer of the item, on
//! the same shared directory, resumes it), and releases every lease held so that other workers
//! claim them at once. The engine's lock on a `.part` keeps a worker that lost its lease and
//! the item's new claimer from writing it at once (the second fails as busy and retries later).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use deadpool_postgres::Pool;
use serde::Serialize;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::objects::Objects;
use super::queue::{self, Claim, Completion};
use super::{FleetError, backoff, segment};
use crate::engine::{Silent, TransferError, TransferReport, TransferSpec};
use crate::store::index::FileOutcome;
use crate::sync::files::{UsualPaths, outcome_of, relative, spec_for};
use crate::sync::{Sync, SyncOptions};

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
    // Whole files' completions, each a transaction of its own on a pooled connection: the
    // loop goes on claiming and starting transfers meanwhile. An item is held (leased) from its
    // claim to the end of its completion, and a worker holds at most `jobs` items.
    let mut finishing: JoinSet<Result<WorkerSummary, FleetError>> = JoinSet::new();
    let mut in_flight = InFlight::new();
    let mut deadline: Option<Instant> = None;
    let governor = sync.api.http().governor();
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
        let holding = running.len() + finishing.len();
        if deadline.is_none() && holding < options.jobs {
            let room = (options.jobs - holding) as i64;
            for claim in queue::claim(pool, worker, options.lease, room).await? {
                let item = claim.item;
                let claimed = Instant::now();
                if let Some(handle) = start(
                    pool,
                    sync,
                    (sync_options, options),
                    claim,
                    &mut running,
                    summary,
                )
                .await?
                {
                    in_flight.insert(item, (claimed, handle));
                }
            }
        }
        if running.is_empty() && finishing.is_empty() {
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
        let stopping = sync.engine.cancel_token().is_cancelled();
        let until = deadline.map(tokio::time::Instant::from_std);
        tokio::select! {
            Some(joined) = running.join_next() => {
                if let Ok(landed) = joined {
                    in_flight.remove(&landed.item());
                    // A transfer the halt stopped is not a failure of its item.
                    if !(landed.failed() && governor.halted().is_some()) {
                        let root = sync.data.root();
                        match landed {
                            Landed::Whole(flight, result) => {
                                let (pool, root) = (pool.clone(), root.to_path_buf());
                                let objects = options.objects.clone();
                                finishing.spawn(async move {
                                    let mut tally = WorkerSummary::default();
                                    let landed = (flight, result);
                                    finish(&pool, &root, objects.as_deref(), landed, &mut tally)
                                        .await
                                        .map(|()| tally)
                                });
                            }
                            Landed::Segment(landed) => {
                                segment::finish(pool, root, landed, summary).await?;
                            }
                        }
                    }
                }
            }
            Some(finished) = finishing.join_next() => {
                summary.absorb(finished.expect("a completion panicked")?);
            }
            Ok(()) = held.changed() => {
                let beat = held.borrow_and_update().clone();
                abandon_lost(beat, &mut in_flight, worker, summary);
            }
            () = tokio::time::sleep(options.poll),
                if running.len() + finishing.len() < options.jobs && deadline.is_none() => {}
            () = drain.cancelled(), if deadline.is_none() => {}
            () = sleep_until(until), if until.is_some() && !stopping => {
                // Out of time: the engine saves each transfer's state and ends it.
                sync.engine.cancel_token().cancel();
            }
        }
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

/// Start the transfer of `claim` with sync's spec, its output moved to the claim's staging file.
async fn start(
    pool: &Pool,
    sync: &mut Sync<'_>,
    (sync_options, options): (&SyncOptions, &WorkerOptions),
    claim: Claim,
    running: &mut JoinSet<Landed>,
    summary: &mut WorkerSummary,
) -> Result<Option<tokio::task::AbortHandle>, FleetError> {
    let staging_dir = sync.data.tmp().join("fleet");
    let mut taken = HashSet::new();
    let spec = tokio::task::block_in_place(|| {
        spec_for(
            sync,
            sync_options,
            &claim.file,
            &mut UsualPaths::default(),
            &mut taken,
        )
    })?;
    let mut spec = match spec {
        Ok(spec) => spec,
        Err(reason) => {
            // Both names are held by other files: nothing to download, ever.
            give_up(pool, &claim, &reason, summary).await?;
            return Ok(None);
        }
    };
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
            Landed::Segment(segment::fetch(engine, pool, spec, flight).await)
        });
        return Ok(Some(handle));
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
        let result = download(&engine, id, &spec).await;
        Landed::Whole(flight, result)
    });
    Ok(Some(handle))
}

async fn download(
    engine: &crate::engine::Engine,
    id: usize,
    spec: &TransferSpec,
) -> Result<TransferReport, TransferError> {
    engine.download(id, spec, Arc::new(Silent)).await
}

/// Complete, retry later or give up a landed transfer.
async fn finish(
    pool: &Pool,
    root: &Path,
    objects: Option<&Objects>,
    (flight, result): (Flight, Result<TransferReport, TransferError>),
    summary: &mut WorkerSummary,
) -> Result<(), FleetError> {
    let Flight {
        claim,
        staged,
        output,
    } = flight;
    let id = claim.file.meta.id.clone();
    if matches!(&result, Err(error) if error.is_cancelled()) {
        return Ok(()); // Drained: the lease is released with the others.
    }
    let completion = match &result {
        Ok(report) => {
            let outcome = FileOutcome::Complete {
                path: relative(root, &output),
                sha256: report.sha256.clone().unwrap_or_default(),
                etag: None,
                retries: report.retries,
                encrypted: report.encrypted,
            };
            let place = relative(root, &output);
            let completion = match objects {
                Some(objects) => {
                    // Stored before the completion (an object replaced by its own bytes if the
                    // lease turns out lost), the staged file removed after it.
                    if let Err(error) = store(objects, &staged, &place).await {
                        retry_or_give_up(pool, &claim, &error.to_string(), summary).await?;
                        return Ok(());
                    }
                    let remove = || std::fs::remove_file(&staged);
                    queue::complete(pool, &claim, &outcome, remove).await?
                }
                None => {
                    let install = || install(&staged, &output);
                    queue::complete(pool, &claim, &outcome, install).await?
                }
            };
            match completion {
                Completion::Recorded => {
                    summary.completed += 1;
                    summary.bytes += report.fetched;
                    Completion::Recorded
                }
                Completion::PathTaken => {
                    let _ = std::fs::remove_file(&staged);
                    let place = relative(root, &output);
                    let reason = format!("{place} is recorded for another file");
                    give_up(pool, &claim, &reason, summary).await?
                }
                other => other,
            }
        }
        Err(_) => failed(pool, root, &claim, &result, summary).await?,
    };
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
    Ok(())
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
    let parent = output.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent)?;
    std::fs::rename(staged, output)?;
    std::fs::File::open(parent)?.sync_all()
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
