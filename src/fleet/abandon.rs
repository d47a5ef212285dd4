//! `claudedl fleet abandon FILE_ID…`: give a file up for good. A given-up segment leaves its
//! file's resume state behind on purpose (the next `enqueue` queues only that segment again):
//! the shared staging file with the other segments' bytes and, to object storage, the open
//! multipart upload with their parts. Abandoning ends that: the upload is aborted, the file's
//! items and its upload's and age header's rows are deleted and the index records the file
//! as skipped (so no later `enqueue` queues it), in one transaction; then the staging file is
//! removed.
//!
//! A file a worker holds a lease on is refused (stop or drain the worker first); so is one whose
//! items are all done (there is nothing to abandon). A whole file's `.part` in `tmp/` is
//! the engine's and stays (it is resumed if the file is ever fetched again). [`undo`] makes an
//! abandoned file wanted again: the next `enqueue` queues it anew.

use std::path::Path;

use deadpool_postgres::Pool;
use serde::Serialize;

use super::objects::abort_upload;
use super::{FleetError, connection, lock_file, segment, sql};
use crate::store::index::{FileOutcome, pg_record_file, pg_want_again};

/// The reason the index records for an abandoned file (before the last error, if any).
pub const ABANDONED: &str = "abandoned (claudedl fleet abandon)";

/// What abandoning one file did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Abandoned {
    pub id: String,
    /// Queue items deleted (its segments, or the whole file's one item).
    pub items: u64,
    /// The multipart upload aborted (its object's name), if there was one.
    pub upload_aborted: Option<String>,
    /// Whether a staging file of its segments was removed.
    pub staging_removed: bool,
}

/// Abandon `file_id` (see the module's documentation); `tmp` is the shared data directory's
/// `tmp/`, where its segments' staging file is.
pub async fn abandon(pool: &Pool, tmp: &Path, file_id: &str) -> Result<Abandoned, FleetError> {
    let mut client = connection(pool).await?;
    let action = "abandoning a file";
    let tx = lock_file(&mut client, file_id, action).await?;
    let items = tx
        .query(
            "SELECT state, worker, last_error FROM work_items WHERE file_id = $1 \
             ORDER BY part FOR UPDATE",
            &[&file_id],
        )
        .await
        .map_err(sql(action))?;
    let refusal = |reason| FleetError::NotAbandoned {
        id: file_id.to_owned(),
        reason,
    };
    if items.is_empty() {
        return Err(refusal("it is not in the queue".into()));
    }
    if let Some(held) = items.iter().find(|item| item.get::<_, &str>(0) == "leased") {
        let worker: Option<&str> = held.get(1);
        return Err(refusal(format!(
            "worker {} holds a lease on it: stop or drain that worker, then abandon it again",
            worker.unwrap_or("?")
        )));
    }
    if items.iter().all(|item| item.get::<_, &str>(0) == "done") {
        return Err(refusal("it is done".into()));
    }
    let last_error = items
        .iter()
        .find_map(|item| item.get::<_, Option<&str>>(2))
        .map(str::to_owned);
    let upload = tx
        .query_opt(
            "SELECT location, upload_id FROM file_uploads WHERE file_id = $1",
            &[&file_id],
        )
        .await
        .map_err(sql(action))?;
    let upload_aborted = match upload {
        Some(row) => {
            let (location, upload_id): (String, String) = (row.get(0), row.get(1));
            abort_upload(&location, &upload_id).await?;
            Some(location)
        }
        None => None,
    };
    let deleted = tx
        .execute("DELETE FROM work_items WHERE file_id = $1", &[&file_id])
        .await
        .map_err(sql(action))?;
    for table in ["file_uploads", "sealed_files"] {
        tx.execute(
            &format!("DELETE FROM {table} WHERE file_id = $1"),
            &[&file_id],
        )
        .await
        .map_err(sql(action))?;
    }
    let reason = match last_error {
        Some(error) => format!("{ABANDONED}: {error}"),
        None => ABANDONED.to_owned(),
    };
    pg_record_file(&tx, file_id, &FileOutcome::Skipped { reason })
        .await
        .map_err(|source| FleetError::Sql { action, source })?;
    tx.commit().await.map_err(sql(action))?;
    let staging = segment::staging(tmp, file_id);
    let staging_removed = match std::fs::remove_file(&staging) {
        Ok(()) => true,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => false,
        Err(source) => {
            return Err(FleetError::Staging {
                path: staging,
                source,
            });
        }
    };
    Ok(Abandoned {
        id: file_id.to_owned(),
        items: deleted,
        upload_aborted,
        staging_removed,
    })
}

/// Take back the abandon of `file_id`: the index wants it again (pending), and the next
/// `enqueue` queues it anew (its segments from the start). Refuses a file not abandoned.
pub async fn undo(pool: &Pool, file_id: &str) -> Result<(), FleetError> {
    let client = connection(pool).await?;
    let changed = pg_want_again(&**client, file_id, ABANDONED)
        .await
        .map_err(|source| FleetError::Sql {
            action: "taking back an abandon",
            source,
        })?;
    if changed == 0 {
        return Err(FleetError::NeverAbandoned {
            id: file_id.to_owned(),
        });
    }
    Ok(())
}
