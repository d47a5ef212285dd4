//! Listing newest first into the index, with the incremental stop.

use crate::api::{Batch, Cursor, FileObject};
use crate::store::index::{BatchMeta, FileMeta};

use super::{Sync, SyncError, SyncOptions, SyncSummary};

pub async fn list_files(
    sync: &mut Sync<'_>,
    options: &SyncOptions,
    summary: &mut SyncSummary,
) -> Result<(), SyncError> {
    let mut cursor: Option<Cursor> = None;
    loop {
        let (page, next) = sync
            .api
            .list_files(cursor.as_ref(), options.page_size)
            .await?;
        summary.list_requests += 1;
        summary.files_listed += page.len() as u64;
        let ids: Vec<&str> = page.iter().map(|f| f.id.as_str()).collect();
        if options.dry_run {
            let settled = sync.index.settled_ids(&ids)?;
            let fetchable = page
                .iter()
                .filter(|f| !settled.contains(&f.id) && f.downloadable != Some(false));
            summary.planned.extend(fetchable.map(|f| f.id.clone()));
        } else {
            let metas: Vec<FileMeta> = page.iter().map(file_meta).collect();
            summary.files_new += sync.index.upsert_files(&metas)? as u64;
        }
        let page_settled = !page.is_empty() && sync.index.settled_ids(&ids)?.len() == page.len();
        match next {
            Some(next) if options.full || !page_settled => cursor = Some(next),
            _ => return Ok(()),
        }
    }
}

pub async fn list_batches(
    sync: &mut Sync<'_>,
    options: &SyncOptions,
    summary: &mut SyncSummary,
) -> Result<(), SyncError> {
    let mut cursor: Option<Cursor> = None;
    loop {
        let (page, next) = sync
            .api
            .list_batches(cursor.as_ref(), options.page_size.min(1000))
            .await?;
        summary.list_requests += 1;
        summary.batches_listed += page.len() as u64;
        let metas: Vec<BatchMeta> = page.iter().map(|b| batch_meta(sync, b)).collect();
        let settled = metas.iter().filter(|m| is_settled(sync, &m.id)).count();
        if options.dry_run {
            let to_fetch = metas
                .iter()
                .filter(|m| m.processing_status == "ended" && !is_settled(sync, &m.id));
            summary.planned.extend(to_fetch.map(|m| m.id.clone()));
        } else {
            sync.index.upsert_batches(&metas)?;
        }
        let page_settled = !page.is_empty() && settled == page.len();
        match next {
            Some(next) if options.full || !page_settled => cursor = Some(next),
            _ => return Ok(()),
        }
    }
}

fn is_settled(sync: &Sync<'_>, id: &str) -> bool {
    use crate::store::index::FileState;
    let entry = sync.index.batch(id).ok().flatten();
    entry.is_some_and(|e| matches!(e.state, FileState::Complete | FileState::Skipped))
}

fn file_meta(file: &FileObject) -> FileMeta {
    FileMeta {
        id: file.id.clone(),
        filename: file.filename.clone(),
        mime_type: file.mime_type.clone(),
        size_bytes: file.size_bytes,
        created_at: file.created_at.clone(),
        downloadable: file.downloadable,
        expires_at: file.expires_at.clone(),
    }
}

fn batch_meta(sync: &Sync<'_>, batch: &Batch) -> BatchMeta {
    BatchMeta {
        id: batch.id.clone(),
        created_at: batch.created_at.clone(),
        processing_status: batch.processing_status.clone(),
        ended_at: batch.ended_at.clone(),
        // Redacted: a signed results URL must not rest in the index; a fresh one is fetched later.
        results_url: sync
            .api
            .results_url(batch)
            .map(|u| crate::http::redact::redact_url(&u)),
        expected_results: batch.request_counts.total(),
    }
}
