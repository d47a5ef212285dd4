//! The work queue's SQL: claiming with `FOR UPDATE SKIP LOCKED`, leases with a fencing epoch,
//! completion in the index's transaction, retries with backoff, the sweep, the status.
//!
//! Every write that ends a lease names the epoch of its claim: a worker whose lease expired and
//! was claimed again (a new epoch) changes nothing. Every statement that locks several items
//! locks them in the order of their ids, so that two transactions (a heartbeat and a batch of
//! completions, say) never wait for each other in a circle.

use std::collections::HashSet;
use std::future::Future;
use std::ops::Range;
use std::time::Duration;

use deadpool_postgres::Pool;
use serde::Serialize;
use tokio_postgres::Row;

use super::{FleetError, connection, lock_file, sql};
use crate::store::index::{
    FileEntry, FileOutcome, pg_file_from_row, pg_record_completes, pg_record_file,
};

/// One claimed item: the file and the epoch its completion must name.
#[derive(Debug, Clone)]
pub struct Claim {
    pub item: i64,
    pub epoch: i64,
    pub attempts: i32,
    pub file: FileEntry,
    /// `None`: the whole file; else one segment of it.
    pub segment: Option<SegmentClaim>,
}

/// A segment of a large file, an item of its own (see `super::segment`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentClaim {
    /// 1..=N (an S3 part number).
    pub part: i32,
    pub range: Range<u64>,
    /// Bytes from the range's start already durable in the shared staging file.
    pub saved: u64,
}

/// A completed segment, as the completer of the last one finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DonePart {
    pub part: i32,
    /// The uploaded part's id (S3), if any.
    pub etag: Option<String>,
}

/// How a completion went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Completion {
    /// Recorded; the output was installed.
    Recorded,
    /// The lease was lost (expired and claimed again, or released): nothing was recorded or
    /// installed.
    LeaseLost,
    /// Another file is recorded at the output's path: nothing was recorded or installed.
    PathTaken,
    /// A segment is stored; others of its file remain (nothing recorded in the index yet).
    Stored,
}

const CLAIM: &str = "UPDATE work_items w SET state = 'leased', epoch = w.epoch + 1, \
        worker = $1, lease_until = now() + make_interval(secs => $2), attempts = w.attempts + 1 \
    FROM (SELECT id FROM work_items WHERE state = 'queued' AND not_before <= now() \
          ORDER BY not_before, id LIMIT $3 FOR UPDATE SKIP LOCKED) c \
    WHERE w.id = c.id \
    RETURNING w.id, w.epoch, w.attempts, w.file_id, w.part, w.range_start, w.range_end, \
        w.done_bytes";

/// The index entries of the files claimed (`pg_file_from_row`'s columns).
const CLAIMED_FILES: &str = "SELECT id, filename, mime_type, size_bytes, created_at, \
    downloadable, expires_at, state, reason, path, sha256, etag, retries, first_seen_at, \
    updated_at, downloaded_at, encrypted FROM files WHERE id = ANY($1)";

/// Claim up to `limit` ready items for `worker`, leased for `lease`.
pub async fn claim(
    pool: &Pool,
    worker: &str,
    lease: Duration,
    limit: i64,
) -> Result<Vec<Claim>, FleetError> {
    let client = connection(pool).await?;
    let statement = client
        .prepare_cached(CLAIM)
        .await
        .map_err(sql("claiming work"))?;
    let rows = client
        .query(&statement, &[&worker, &lease.as_secs_f64(), &limit])
        .await
        .map_err(sql("claiming work"))?;
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<String> = rows.iter().map(|row| row.get(3)).collect();
    let statement = client
        .prepare_cached(CLAIMED_FILES)
        .await
        .map_err(sql("reading claimed files"))?;
    let files = client
        .query(&statement, &[&ids])
        .await
        .map_err(sql("reading claimed files"))?;
    let mut claims = Vec::with_capacity(rows.len());
    for row in &rows {
        let file_id: String = row.get(3);
        let file = files
            .iter()
            .find(|f| f.get::<_, &str>(0) == file_id)
            .map(pg_file_from_row)
            .transpose()
            .map_err(|source| FleetError::Sql {
                action: "reading claimed files",
                source,
            })?;
        if let Some(file) = file {
            claims.push(Claim {
                item: row.get(0),
                epoch: row.get(1),
                attempts: row.get(2),
                file,
                segment: segment_of(row),
            });
        }
    }
    Ok(claims)
}

fn segment_of(row: &Row) -> Option<SegmentClaim> {
    let part: i32 = row.get(4);
    let start: Option<i64> = row.get(5);
    let end: Option<i64> = row.get(6);
    match (start, end) {
        (Some(start), Some(end)) if part > 0 => Some(SegmentClaim {
            part,
            range: start as u64..end as u64,
            saved: row.get::<_, i64>(7).max(0) as u64,
        }),
        _ => None,
    }
}

/// Extend every lease `worker` still holds; return the items it holds.
pub async fn heartbeat(
    pool: &Pool,
    worker: &str,
    lease: Duration,
) -> Result<HashSet<i64>, FleetError> {
    let client = connection(pool).await?;
    client
        .execute(
            "UPDATE workers SET heartbeat_at = now() WHERE id = $1",
            &[&worker],
        )
        .await
        .map_err(sql("recording a heartbeat"))?;
    let held = client
        .query(
            "UPDATE work_items w SET lease_until = now() + make_interval(secs => $2) \
             FROM (SELECT id FROM work_items WHERE worker = $1 AND state = 'leased' \
                   ORDER BY id FOR UPDATE) held \
             WHERE w.id = held.id RETURNING w.id",
            &[&worker, &lease.as_secs_f64()],
        )
        .await
        .map_err(sql("extending leases"))?;
    Ok(held.iter().map(|row| row.get(0)).collect())
}

/// Return expired leases to the queue (their holders' completions will find a new epoch or a
/// queued item, and record nothing). Returns how many.
pub async fn sweep(pool: &Pool) -> Result<u64, FleetError> {
    connection(pool)
        .await?
        .execute(
            "UPDATE work_items w SET state = 'queued', worker = NULL, lease_until = NULL \
             FROM (SELECT id FROM work_items WHERE state = 'leased' AND lease_until < now() \
                   ORDER BY id FOR UPDATE) expired \
             WHERE w.id = expired.id",
            &[],
        )
        .await
        .map_err(sql("sweeping expired leases"))
}

/// In one transaction: check that the lease of `claim` still holds (locking the item), record
/// `outcome` in the index, end the item (`done`), and run `install` (the rename into place)
/// just before the commit. A lost lease or a path another file holds records nothing and does
/// not call `install`. (A commit failing after the rename leaves the file in place unrecorded:
/// the item's next claim downloads it again over it.)
pub async fn complete(
    pool: &Pool,
    claim: &Claim,
    outcome: &FileOutcome,
    install: impl FnOnce() -> std::io::Result<()>,
) -> Result<Completion, FleetError> {
    let mut client = connection(pool).await?;
    let tx = client
        .transaction()
        .await
        .map_err(sql("starting a completion"))?;
    if !holds(&tx, claim).await? {
        return Ok(Completion::LeaseLost);
    }
    let bytes = match outcome {
        FileOutcome::Complete { .. } => Some(claim.file.meta.size_bytes as i64),
        _ => None,
    };
    if !record_outcome(&tx, claim, outcome).await? {
        return Ok(Completion::PathTaken);
    }
    let end = "UPDATE work_items SET state = 'done', done_at = now(), completed_by = worker, \
        worker = NULL, lease_until = NULL, last_error = NULL, bytes = $2 WHERE id = $1";
    query_in(&tx, end, &[&claim.item, &bytes], "ending an item").await?;
    install_and_commit(tx, claim, install).await
}

/// [`complete`] for many downloaded whole files at once, in one transaction: the leases still
/// held are locked, the files whose paths no other file holds are recorded complete and their
/// items ended, and `install` (given each one's completion) moves the `Recorded` ones into
/// place just before the commit. Returns each item's completion, in order (`Recorded`,
/// `LeaseLost` or `PathTaken`); `None` when the database refuses the batch as a whole (two of
/// it at one path, a path recorded meanwhile by another transaction, or a deadlock it broke):
/// nothing was recorded or installed, and the caller completes them one by one.
pub async fn complete_batch(
    pool: &Pool,
    batch: &[(&Claim, FileOutcome)],
    install: impl FnOnce(&[Completion]) -> Result<(), FleetError>,
) -> Result<Option<Vec<Completion>>, FleetError> {
    match complete_together(pool, batch, install).await {
        Err(FleetError::Sql { source, .. }) if is_deadlock(&source) => Ok(None),
        completed => completed,
    }
}

async fn complete_together(
    pool: &Pool,
    batch: &[(&Claim, FileOutcome)],
    install: impl FnOnce(&[Completion]) -> Result<(), FleetError>,
) -> Result<Option<Vec<Completion>>, FleetError> {
    let mut client = connection(pool).await?;
    let tx = client
        .transaction()
        .await
        .map_err(sql("starting a completion"))?;
    let held = held_of(&tx, batch).await?;
    let taken = paths_taken(&tx, batch).await?;
    let completions: Vec<Completion> = batch
        .iter()
        .map(|(claim, _)| {
            if !held.contains(&claim.item) {
                Completion::LeaseLost
            } else if taken.contains(&claim.file.meta.id) {
                Completion::PathTaken
            } else {
                Completion::Recorded
            }
        })
        .collect();
    let recorded: Vec<&(&Claim, FileOutcome)> = batch
        .iter()
        .zip(&completions)
        .filter(|(_, completion)| **completion == Completion::Recorded)
        .map(|(item, _)| item)
        .collect();
    if !recorded.is_empty() {
        let outcomes: Vec<(&str, &FileOutcome)> = recorded
            .iter()
            .map(|(claim, outcome)| (claim.file.meta.id.as_str(), outcome))
            .collect();
        match pg_record_completes(&tx, &outcomes).await {
            Ok(_) => {}
            Err(source) if is_unique_violation(&source) => return Ok(None),
            Err(source) => {
                return Err(FleetError::Sql {
                    action: "recording completions",
                    source,
                });
            }
        }
        let items: Vec<i64> = recorded.iter().map(|(claim, _)| claim.item).collect();
        let bytes: Vec<i64> = recorded
            .iter()
            .map(|(claim, _)| claim.file.meta.size_bytes as i64)
            .collect();
        query_in(&tx, END_ITEMS, &[&items, &bytes], "ending items").await?;
    }
    install(&completions)?;
    tx.commit().await.map_err(sql("committing completions"))?;
    Ok(Some(completions))
}

/// End the items `$1` (done by their workers), each with its file's size `$2`.
const END_ITEMS: &str = "UPDATE work_items w SET state = 'done', done_at = now(), \
    completed_by = w.worker, worker = NULL, lease_until = NULL, last_error = NULL, \
    bytes = n.bytes FROM unnest($1::int8[], $2::int8[]) AS n (id, bytes) WHERE w.id = n.id";

/// The items of `batch` whose leases still hold, locked (in the order of their ids) until the
/// transaction ends.
async fn held_of(
    tx: &deadpool_postgres::Transaction<'_>,
    batch: &[(&Claim, FileOutcome)],
) -> Result<HashSet<i64>, FleetError> {
    let items: Vec<i64> = batch.iter().map(|(claim, _)| claim.item).collect();
    let epochs: Vec<i64> = batch.iter().map(|(claim, _)| claim.epoch).collect();
    let held = "SELECT w.id FROM work_items w \
        JOIN unnest($1::int8[], $2::int8[]) AS c (id, epoch) ON w.id = c.id AND w.epoch = c.epoch \
        WHERE w.state = 'leased' ORDER BY w.id FOR UPDATE OF w";
    let rows = query_in(tx, held, &[&items, &epochs], "checking leases").await?;
    Ok(rows.iter().map(|row| row.get(0)).collect())
}

/// The files of `batch` whose paths another file is recorded at.
async fn paths_taken(
    tx: &deadpool_postgres::Transaction<'_>,
    batch: &[(&Claim, FileOutcome)],
) -> Result<HashSet<String>, FleetError> {
    let (mut ids, mut paths) = (vec![], vec![]);
    for (claim, outcome) in batch {
        if let FileOutcome::Complete { path, .. } = outcome {
            ids.push(claim.file.meta.id.as_str());
            paths.push(path.as_str());
        }
    }
    let taken = "SELECT n.id FROM unnest($1::text[], $2::text[]) AS n (id, path) \
        JOIN files f ON f.path = n.path AND f.id <> n.id";
    let rows = query_in(tx, taken, &[&ids, &paths], "checking paths").await?;
    Ok(rows.iter().map(|row| row.get(0)).collect())
}

/// Record `outcome` for `claim`'s file in the index; `false`: another file is recorded at its
/// path (nothing recorded).
async fn record_outcome(
    tx: &tokio_postgres::Transaction<'_>,
    claim: &Claim,
    outcome: &FileOutcome,
) -> Result<bool, FleetError> {
    match pg_record_file(tx, &claim.file.meta.id, outcome).await {
        Ok(_) => Ok(true),
        Err(source) if is_unique_violation(&source) => Ok(false),
        Err(source) => Err(FleetError::Sql {
            action: "recording a completion",
            source,
        }),
    }
}

/// The last step of a completion: `install` (the rename into place) just before the commit.
async fn install_and_commit(
    tx: deadpool_postgres::Transaction<'_>,
    claim: &Claim,
    install: impl FnOnce() -> std::io::Result<()>,
) -> Result<Completion, FleetError> {
    install().map_err(|source| FleetError::Install {
        id: claim.file.meta.id.clone(),
        source,
    })?;
    tx.commit().await.map_err(sql("committing a completion"))?;
    Ok(Completion::Recorded)
}

/// Put `claim` back in the queue, claimable after `delay` (a transient failure), or give it up
/// (`delay` None: state `failed`, the index records `reason`). A lost lease changes nothing.
pub async fn retry_later(
    pool: &Pool,
    claim: &Claim,
    reason: &str,
    delay: Option<Duration>,
) -> Result<Completion, FleetError> {
    let mut client = connection(pool).await?;
    let tx = client
        .transaction()
        .await
        .map_err(sql("starting a retry"))?;
    if !holds(&tx, claim).await? {
        return Ok(Completion::LeaseLost);
    }
    match delay {
        Some(delay) => tx
            .execute(
                "UPDATE work_items SET state = 'queued', worker = NULL, lease_until = NULL, \
                 last_error = $2, not_before = now() + make_interval(secs => $3) WHERE id = $1",
                &[&claim.item, &reason, &delay.as_secs_f64()],
            )
            .await
            .map_err(sql("queueing a retry"))?,
        None => {
            let failed = FileOutcome::Failed {
                reason: reason.to_owned(),
                retries: u32::try_from(claim.attempts).unwrap_or(0),
            };
            pg_record_file(&tx, &claim.file.meta.id, &failed)
                .await
                .map_err(|source| FleetError::Sql {
                    action: "recording a failure",
                    source,
                })?;
            tx.execute(
                "UPDATE work_items SET state = 'failed', worker = NULL, lease_until = NULL, \
                 last_error = $2, done_at = now() WHERE id = $1",
                &[&claim.item, &reason],
            )
            .await
            .map_err(sql("giving up an item"))?
        }
    };
    tx.commit().await.map_err(sql("committing a retry"))?;
    Ok(Completion::Recorded)
}

/// Give back every lease `worker` holds, claimable again at once (a drain).
pub async fn release_all(pool: &Pool, worker: &str) -> Result<u64, FleetError> {
    let client = connection(pool).await?;
    let released = client
        .execute(
            "UPDATE work_items w SET state = 'queued', worker = NULL, lease_until = NULL, \
             attempts = greatest(w.attempts - 1, 0), not_before = now() \
             FROM (SELECT id FROM work_items WHERE worker = $1 AND state = 'leased' \
                   ORDER BY id FOR UPDATE) held \
             WHERE w.id = held.id",
            &[&worker],
        )
        .await
        .map_err(sql("releasing leases"))?;
    client
        .execute(
            "UPDATE workers SET state = 'stopped', heartbeat_at = now() WHERE id = $1",
            &[&worker],
        )
        .await
        .map_err(sql("recording a stop"))?;
    Ok(released)
}

/// Whether `claim`'s lease still holds, locking its row until the transaction ends (so a sweep
/// waits for this completion rather than racing it).
async fn holds(tx: &deadpool_postgres::Transaction<'_>, claim: &Claim) -> Result<bool, FleetError> {
    let held = "SELECT 1 FROM work_items WHERE id = $1 AND epoch = $2 AND state = 'leased' \
        FOR UPDATE";
    let rows = query_in(tx, held, &[&claim.item, &claim.epoch], "checking a lease").await?;
    Ok(!rows.is_empty())
}

/// Run `statement` in `tx`, prepared once a pooled connection; `action` names it in an error.
async fn query_in(
    tx: &deadpool_postgres::Transaction<'_>,
    statement: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    action: &'static str,
) -> Result<Vec<Row>, FleetError> {
    let prepared = tx.prepare_cached(statement).await.map_err(sql(action))?;
    tx.query(&prepared, params).await.map_err(sql(action))
}

/// Register `worker` (its host and process id) for `fleet status`.
pub async fn register(pool: &Pool, worker: &str, host: &str) -> Result<(), FleetError> {
    connection(pool)
        .await?
        .execute(
            "INSERT INTO workers (id, host, pid) VALUES ($1, $2, $3) \
             ON CONFLICT (id) DO UPDATE SET heartbeat_at = now(), state = 'running'",
            &[&worker, &host, &(std::process::id() as i32)],
        )
        .await
        .map_err(sql("registering the worker"))?;
    Ok(())
}

/// Queue the files `ids`, each one whole item (see [`enqueue_files`]).
pub async fn enqueue(pool: &Pool, ids: &[&str]) -> Result<u64, FleetError> {
    let files: Vec<(&str, u64)> = ids.iter().map(|&id| (id, 0)).collect();
    enqueue_files(pool, &files, None).await
}

/// Queue `files` (id and size; larger than `segment_size` and it becomes segments, see
/// `super::segment::ranges`): items for files without any, and again the items of files whose
/// items all ended `done`, and those that ended `failed`, while the index still wants them. A
/// file keeps the layout of its first enqueue. Returns how many items were created or queued
/// again.
pub async fn enqueue_files(
    pool: &Pool,
    files: &[(&str, u64)],
    segment_size: Option<u64>,
) -> Result<u64, FleetError> {
    if files.is_empty() {
        return Ok(0);
    }
    let (mut ids, mut parts, mut starts, mut ends) = (vec![], vec![], vec![], vec![]);
    for &(id, size) in files {
        let ranges = super::segment::ranges(size, segment_size);
        if ranges.is_empty() {
            ids.push(id);
            parts.push(0i32);
            starts.push(None);
            ends.push(None);
        }
        for (index, range) in ranges.into_iter().enumerate() {
            ids.push(id);
            parts.push(index as i32 + 1);
            starts.push(Some(range.start as i64));
            ends.push(Some(range.end as i64));
        }
    }
    let all: Vec<&str> = files.iter().map(|&(id, _)| id).collect();
    let row = connection(pool)
        .await?
        .query_one(
            "WITH fresh AS ( \
               INSERT INTO work_items (file_id, part, range_start, range_end) \
               SELECT n.* FROM unnest($1::text[], $2::int4[], $3::int8[], $4::int8[]) \
                 AS n (file_id, part, range_start, range_end) \
               WHERE NOT EXISTS (SELECT 1 FROM work_items o WHERE o.file_id = n.file_id) \
               ON CONFLICT DO NOTHING RETURNING 1), \
             again AS ( \
               UPDATE work_items w SET state = 'queued', not_before = now(), attempts = 0, \
                 last_error = NULL, done_at = NULL, part_etag = NULL, done_bytes = 0 \
               WHERE w.file_id = ANY($5) AND (w.state = 'failed' OR (w.state = 'done' \
                 AND NOT EXISTS (SELECT 1 FROM work_items o \
                                 WHERE o.file_id = w.file_id AND o.state <> 'done'))) \
               RETURNING 1) \
             SELECT (SELECT count(*) FROM fresh) + (SELECT count(*) FROM again)",
            &[&ids, &parts, &starts, &ends, &all],
        )
        .await
        .map_err(sql("queueing files"))?;
    let queued: i64 = row.get(0);
    Ok(queued as u64)
}

/// Record that the first `done` bytes of the segment of `claim` are durable (if its lease
/// still holds): the next claimer resumes there.
pub async fn save_progress(pool: &Pool, claim: &Claim, done: u64) -> Result<(), FleetError> {
    connection(pool)
        .await?
        .execute(
            "UPDATE work_items SET done_bytes = $3 \
             WHERE id = $1 AND epoch = $2 AND state = 'leased' AND done_bytes < $3",
            &[&claim.item, &claim.epoch, &(done as i64)],
        )
        .await
        .map_err(sql("saving a segment's progress"))?;
    Ok(())
}

/// In one transaction, serialised with the other segments of its file (the file's row is
/// locked first): check that the lease of `claim` (a segment) still holds, end it (`done`, with
/// the uploaded part's `etag`), and if it was the file's last, call `last` with every part to
/// finish the output (verify, complete an upload) and give the file's outcome, record that in
/// the index, run `install` and commit. `last` failing rolls everything back (the segment is
/// retried like a failed one).
pub async fn complete_segment<Last, Done>(
    pool: &Pool,
    claim: &Claim,
    etag: Option<&str>,
    last: Last,
    install: impl FnOnce() -> std::io::Result<()>,
) -> Result<Completion, FleetError>
where
    Last: FnOnce(Vec<DonePart>) -> Done,
    Done: Future<Output = Result<FileOutcome, FleetError>>,
{
    let mut client = connection(pool).await?;
    let tx = lock_file(
        &mut client,
        &claim.file.meta.id,
        "locking a file's segments",
    )
    .await?;
    if !holds(&tx, claim).await? {
        return Ok(Completion::LeaseLost);
    }
    let bytes = claim
        .segment
        .as_ref()
        .map(|segment| (segment.range.end - segment.range.start) as i64);
    tx.execute(
        "UPDATE work_items SET state = 'done', done_at = clock_timestamp(), \
         completed_by = worker, worker = NULL, lease_until = NULL, last_error = NULL, \
         bytes = $2, part_etag = $3 \
         WHERE id = $1",
        &[&claim.item, &bytes, &etag],
    )
    .await
    .map_err(sql("ending a segment"))?;
    let rows = tx
        .query(
            "SELECT part, part_etag, state = 'done' FROM work_items \
             WHERE file_id = $1 AND part > 0 ORDER BY part",
            &[&claim.file.meta.id],
        )
        .await
        .map_err(sql("reading a file's segments"))?;
    if rows.iter().any(|row| !row.get::<_, bool>(2)) {
        tx.commit().await.map_err(sql("committing a segment"))?;
        return Ok(Completion::Stored);
    }
    let parts = rows
        .iter()
        .map(|row| DonePart {
            part: row.get(0),
            etag: row.get(1),
        })
        .collect();
    let outcome = last(parts).await?;
    if !record_outcome(&tx, claim, &outcome).await? {
        return Ok(Completion::PathTaken);
    }
    for forget in [
        "DELETE FROM file_uploads WHERE file_id = $1",
        "DELETE FROM sealed_files WHERE file_id = $1",
    ] {
        tx.execute(forget, &[&claim.file.meta.id])
            .await
            .map_err(sql("forgetting a file's upload and age file"))?;
    }
    install_and_commit(tx, claim, install).await
}

/// The queue at a glance.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Status {
    pub queued: i64,
    /// Queued but waiting for their backoff.
    pub delayed: i64,
    pub leased: i64,
    pub done: i64,
    pub failed: i64,
    pub expired_leases: i64,
    pub workers: Vec<WorkerStatus>,
    /// Completions in the last minute, fleet-wide.
    pub done_last_minute: i64,
    pub bytes_last_minute: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct WorkerStatus {
    pub id: String,
    pub host: String,
    pub pid: i32,
    pub state: String,
    pub leases: i64,
    pub heartbeat_age_s: f64,
}

pub async fn status(pool: &Pool) -> Result<Status, FleetError> {
    let client = connection(pool).await?;
    let row = client
        .query_one(
            "SELECT \
               count(*) FILTER (WHERE state = 'queued' AND not_before <= now()), \
               count(*) FILTER (WHERE state = 'queued' AND not_before > now()), \
               count(*) FILTER (WHERE state = 'leased'), \
               count(*) FILTER (WHERE state = 'done'), \
               count(*) FILTER (WHERE state = 'failed'), \
               count(*) FILTER (WHERE state = 'leased' AND lease_until < now()), \
               count(*) FILTER (WHERE state = 'done' AND done_at > now() - interval '1 minute'), \
               coalesce(sum(bytes) FILTER (WHERE state = 'done' \
                   AND done_at > now() - interval '1 minute'), 0)::int8 \
             FROM work_items",
            &[],
        )
        .await
        .map_err(sql("reading the queue"))?;
    let workers = client
        .query(
            "SELECT w.id, w.host, w.pid, w.state, \
               (SELECT count(*) FROM work_items i WHERE i.worker = w.id AND i.state = 'leased'), \
               extract(epoch FROM now() - w.heartbeat_at)::float8 \
             FROM workers w ORDER BY w.started_at, w.id",
            &[],
        )
        .await
        .map_err(sql("reading the workers"))?;
    Ok(Status {
        queued: row.get(0),
        delayed: row.get(1),
        leased: row.get(2),
        done: row.get(3),
        failed: row.get(4),
        expired_leases: row.get(5),
        done_last_minute: row.get(6),
        bytes_last_minute: row.get(7),
        workers: workers.iter().map(worker_status).collect(),
    })
}

fn worker_status(row: &Row) -> WorkerStatus {
    WorkerStatus {
        id: row.get(0),
        host: row.get(1),
        pid: row.get(2),
        state: row.get(3),
        leases: row.get(4),
        heartbeat_age_s: row.get(5),
    }
}

/// Whether any item is queued (ready or delayed) or leased: work remains.
pub async fn work_remains(pool: &Pool) -> Result<bool, FleetError> {
    let row = connection(pool)
        .await?
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM work_items WHERE state IN ('queued', 'leased'))",
            &[],
        )
        .await
        .map_err(sql("checking for work"))?;
    Ok(row.get(0))
}

fn is_unique_violation(error: &crate::store::index::BoxError) -> bool {
    sql_state(error) == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION)
}

fn is_deadlock(error: &crate::store::index::BoxError) -> bool {
    sql_state(error) == Some(&tokio_postgres::error::SqlState::T_R_DEADLOCK_DETECTED)
}

fn sql_state(error: &crate::store::index::BoxError) -> Option<&tokio_postgres::error::SqlState> {
    error
        .downcast_ref::<tokio_postgres::Error>()
        .and_then(tokio_postgres::Error::code)
}
