//! Listing newest first into the index, with the incremental stop.

use tokio::sync::mpsc;

use crate::api::{ApiClient, Batch, FileObject, Listed};
use crate::store::index::{BatchMeta, FileMeta, Index};

use super::{Planned, Sync, SyncError, SyncOptions, SyncSummary};

pub async fn list_files(
    sync: &mut Sync<'_>,
    options: &SyncOptions,
    summary: &mut SyncSummary,
) -> Result<(), SyncError> {
    let api = sync.api;
    let index = &mut *sync.index;
    walk_pages(api, options, summary, |page: &[FileObject], summary| {
        take_files(index, options, summary, page)
    })
    .await
}

/// Take one page of the files listing into the index (or, in a dry run, into the plan);
/// whether every file of the page is known and settled (the incremental stop).
pub fn take_files(
    index: &mut dyn Index,
    options: &SyncOptions,
    summary: &mut SyncSummary,
    page: &[FileObject],
) -> Result<bool, SyncError> {
    summary.files_listed += page.len() as u64;
    let ids: Vec<&str> = page.iter().map(|f| f.id.as_str()).collect();
    if options.dry_run {
        let settled = index.settled_ids(&ids)?;
        let fetchable = page.iter().filter(|f| {
            !settled.contains(&f.id)
                && f.downloadable != Some(false)
                && f.malformed.is_none()
                && options.includes(*f)
        });
        summary.planned.extend(fetchable.map(Planned::of));
    } else {
        let metas: Vec<FileMeta> = page
            .iter()
            .filter(|f| f.malformed.is_none())
            .map(file_meta)
            .collect();
        summary.files_new += index.upsert_files(&metas)? as u64;
        for file in page.iter().filter(|f| f.malformed.is_some()) {
            super::files::record_malformed(index, file, summary)?;
        }
    }
    Ok(index.settled_ids(&ids)?.len() == page.len())
}

/// Whether the walk goes on after a page that `take` found `settled` (see [`walk_pages`]).
pub fn goes_on_after(page: &[impl Listed], settled: bool, options: &SyncOptions) -> bool {
    !(settled && !page.is_empty() && !options.full)
}

/// Fetch each page of the files listing when asked to (`asked`), and hand it over (`pages`):
/// the caller takes a page into the index while its downloads run, then asks for the next
/// only if the walk goes on, so no page is fetched that the incremental stop would not fetch.
/// Ends (closing `pages`) after the last page or an error, or once the caller stops asking.
pub async fn list_files_on_demand(
    api: &ApiClient,
    page_size: u32,
    mut asked: mpsc::Receiver<()>,
    pages: mpsc::Sender<Result<Vec<FileObject>, SyncError>>,
) {
    let mut walk = api.pages::<FileObject>(page_size);
    while asked.recv().await.is_some() {
        let page = match walk.next_page().await {
            Ok(Some(page)) => Ok(page),
            Ok(None) => return,
            Err(error) => Err(error.into()),
        };
        let failed = page.is_err();
        if pages.send(page).await.is_err() || failed {
            return;
        }
    }
}

/// List batches into the index; returns where this listing says each ended batch's results are
/// (kept in memory only: the index holds redacted URLs), so that fetching them costs no
/// request for the batch again.
pub async fn list_batches(
    sync: &mut Sync<'_>,
    options: &SyncOptions,
    summary: &mut SyncSummary,
) -> Result<ListedResults, SyncError> {
    let api = sync.api;
    let index = &mut *sync.index;
    let mut listed = ListedResults::new();
    walk_pages(api, options, summary, |page: &[Batch], summary| {
        summary.batches_listed += page.len() as u64;
        listed.extend(page.iter().filter(|b| b.is_ended()).filter_map(|b| {
            let url = api.results_url(b)?;
            Some((b.id.clone(), (url, b.request_counts.total())))
        }));
        let metas: Vec<BatchMeta> = page.iter().map(|b| batch_meta(api, b)).collect();
        let unsettled: Vec<&BatchMeta> = metas
            .iter()
            .filter(|m| !is_settled(&*index, &m.id))
            .collect();
        if options.dry_run {
            let to_fetch = unsettled
                .iter()
                .filter(|m| m.processing_status == "ended" && options.includes(**m));
            summary.planned.extend(to_fetch.map(|m| Planned::of(*m)));
        } else {
            index.upsert_batches(&metas)?;
        }
        Ok(unsettled.is_empty())
    })
    .await?;
    Ok(listed)
}

/// Ended batches of this run's listing: their results URL and expected line count, by id.
pub type ListedResults = std::collections::HashMap<String, (url::Url, u64)>;

/// Fetch pages newest first until the last one, or (unless `--full`) until a page that `take`
/// reports as wholly known and settled: everything older was settled by an earlier sync. A
/// listing that loops ends with an error (see [`crate::api::Pages`]).
async fn walk_pages<T: Listed>(
    api: &ApiClient,
    options: &SyncOptions,
    summary: &mut SyncSummary,
    mut take: impl FnMut(&[T], &mut SyncSummary) -> Result<bool, SyncError>,
) -> Result<(), SyncError> {
    let mut pages = api.pages::<T>(options.page_size);
    while let Some(page) = pages.next_page().await? {
        summary.list_requests += 1;
        let settled = take(&page, summary)?;
        if !goes_on_after(&page, settled, options) {
            break;
        }
    }
    Ok(())
}

fn is_settled(index: &dyn Index, id: &str) -> bool {
    use crate::store::index::FileState;
    let entry = index.batch(id).ok().flatten();
    entry.is_some_and(|e| matches!(e.state, FileState::Complete | FileState::Skipped))
}

pub(super) fn file_meta(file: &FileObject) -> FileMeta {
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

fn batch_meta(api: &ApiClient, batch: &Batch) -> BatchMeta {
    BatchMeta {
        id: batch.id.clone(),
        created_at: batch.created_at.clone(),
        processing_status: batch.processing_status.clone(),
        ended_at: batch.ended_at.clone(),
        // Redacted: a signed results URL must not rest in the index; a fresh one is fetched later.
        results_url: api
            .results_url(batch)
            .map(|u| crate::http::redact::redact_url(&u)),
        expected_results: batch.request_counts.total(),
    }
}
