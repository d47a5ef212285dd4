//! `claudedl enqueue`: list the API into the fleet's index (sync's incremental listing), then
//! queue every file the index wants and the selection takes. One lister at a time: a session
//! advisory lock, released when the listing ends or its connection drops.

use serde::Serialize;

use super::{FleetError, queue};
use crate::api::check_id;
use crate::store::index::MALFORMED_REASON;
use crate::sync::{Sync, SyncOptions, SyncSummary};

/// The advisory lock key of the lister (any constant no other user of the database takes).
pub const LISTER_LOCK: i64 = 0x636c_6475_6c73_7431;

#[derive(Debug, Clone, Default, Serialize)]
pub struct EnqueueSummary {
    pub files_listed: u64,
    pub files_new: u64,
    pub list_requests: u64,
    /// Items created or queued again.
    pub queued: u64,
}

/// List (under the lister's lock) and queue; files larger than `segment_size` as segments
/// (`super::segment`). `sync.index` is the fleet's index.
pub async fn enqueue(
    pool: &deadpool_postgres::Pool,
    sync: &mut Sync<'_>,
    options: &SyncOptions,
    segment_size: Option<u64>,
) -> Result<EnqueueSummary, FleetError> {
    let guard = pool.get().await.map_err(|error| FleetError::pool(&error))?;
    let locked: bool = guard
        .query_one("SELECT pg_try_advisory_lock($1)", &[&LISTER_LOCK])
        .await
        .map_err(|source| FleetError::Sql {
            action: "taking the lister's lock",
            source: source.into(),
        })?
        .get(0);
    if !locked {
        return Err(FleetError::ListerBusy);
    }
    let result = list_and_queue(pool, sync, options, segment_size).await;
    let unlocked = guard
        .query_one("SELECT pg_advisory_unlock($1)", &[&LISTER_LOCK])
        .await;
    if unlocked.is_err() {
        // The lock would outlive this call in the pooled connection: close it instead.
        drop(deadpool_postgres::Object::take(guard));
    }
    result
}

async fn list_and_queue(
    pool: &deadpool_postgres::Pool,
    sync: &mut Sync<'_>,
    options: &SyncOptions,
    segment_size: Option<u64>,
) -> Result<EnqueueSummary, FleetError> {
    let mut summary = SyncSummary::default();
    crate::sync::listing::list_files(sync, options, &mut summary).await?;
    let wanted = sync.index.files_to_fetch()?;
    let files: Vec<(&str, u64)> = wanted
        .iter()
        .filter(|entry| {
            options.includes(&entry.meta)
                && entry.meta.downloadable != Some(false)
                && check_id(&entry.meta.id).is_ok()
                && !entry
                    .reason
                    .as_deref()
                    .is_some_and(|reason| reason.starts_with(MALFORMED_REASON))
        })
        .map(|entry| (entry.meta.id.as_str(), entry.meta.size_bytes))
        .collect();
    let queued = queue::enqueue_files(pool, &files, segment_size).await?;
    tracing::info!(
        event = "fleet_enqueue",
        listed = summary.files_listed,
        new = summary.files_new,
        queued,
        "listed {} files, queued {queued}",
        summary.files_listed
    );
    Ok(EnqueueSummary {
        files_listed: summary.files_listed,
        files_new: summary.files_new,
        list_requests: summary.list_requests,
        queued,
    })
}
