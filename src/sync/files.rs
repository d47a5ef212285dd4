//! Downloading the files the index says are missing, and recording each outcome as it lands.
//!
//! Each file is recorded complete as soon as its transfer ends, in a durable group commit with
//! whatever else landed meanwhile, so a kill loses no finished file. The transfer marks its
//! resume state installed (with the hash) before it renames the `.part` into `raw/`, and the
//! state is removed only after the commit: a rerun after a kill between the two finds the file
//! there with that size and hash and records it without fetching it again.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::mpsc;

use crate::api::{FileObject, check_id};
use crate::crypt::output_path;
use crate::engine::Landed;
use crate::engine::{TransferError, TransferReport, TransferSpec, release_state};
use crate::store::ResumeState;
use crate::store::index::{FileEntry, FileOutcome, FileState, Index, IndexError, MALFORMED_REASON};
use crate::store::layout::month_of;

use super::{Sync, SyncError, SyncOptions, SyncSummary, listing};

const NOT_DOWNLOADABLE: &str =
    "not downloadable: only files created by code execution or skills can be downloaded";

/// Files placed ahead of the downloads, at most: the entries and specs of up to twice this many
/// are all a run holds in memory, whatever the number of files to fetch.
const WINDOW: usize = 4096;
/// Files placed before the first download starts.
const FIRST_PAGE: usize = 64;
/// Finished files recorded in one index transaction, at most; the first of them waits at most
/// [`RECORD_WAIT`] for the others (the downloads and the listing go on meanwhile).
const RECORD_GROUP: usize = 512;
const RECORD_WAIT: Duration = Duration::from_millis(20);

/// List the files into the index and download those to fetch, both at once: each page listed
/// is placed and handed to the engine while the next is requested.
pub async fn list_and_download_files(
    sync: &mut Sync<'_>,
    options: &SyncOptions,
    summary: &mut SyncSummary,
    months: &mut BTreeSet<String>,
) -> Result<(), SyncError> {
    let (ask, asked) = mpsc::channel(1);
    let (pages_sent, pages) = mpsc::channel(1);
    let lister = listing::list_files_on_demand(sync.api, options.page_size, asked, pages_sent);
    let listing = Listing::start(ask, pages);
    let fetcher = download(sync, options, summary, months, Some(listing));
    let ((), fetched) = tokio::join!(lister, fetcher);
    fetched
}

/// Download the files the index says are missing.
pub async fn download_files(
    sync: &mut Sync<'_>,
    options: &SyncOptions,
    summary: &mut SyncSummary,
    months: &mut BTreeSet<String>,
) -> Result<(), SyncError> {
    download(sync, options, summary, months, None).await
}

async fn download(
    sync: &mut Sync<'_>,
    options: &SyncOptions,
    summary: &mut SyncSummary,
    months: &mut BTreeSet<String>,
    mut listing: Option<Listing>,
) -> Result<(), SyncError> {
    let (feed, fed) = mpsc::channel(WINDOW);
    let mut landed = sync
        .engine
        .download_each(fed, options.jobs, sync.reporter.clone());
    let mut feeding = Feeding {
        feed: Some(feed),
        ..Feeding::default()
    };
    // A listing that fails ends the sync with its error once the files in flight are recorded.
    let mut failed = None;
    // Files landed and not recorded yet: recorded together once the first of them is
    // RECORD_WAIT old, or once RECORD_GROUP landed, in one durable index transaction (the
    // run's serial part).
    let (mut group, mut due) = (Vec::new(), None);
    let mut all_landed = false;
    loop {
        if summary.interrupted || sync.engine.cancel_token().is_cancelled() || failed.is_some() {
            (feeding.feed, listing) = (None, None);
        }
        if all_landed {
            record_group(sync, &mut feeding, group, summary, months)?;
            return failed.map_or(Ok(()), Err);
        }
        if let Some(room) = feeding.room() {
            let listed = listing.as_ref().map_or(Listed::All, Listing::listed);
            if feeding.feed_page(sync, options, summary, months, room, &listed)? {
                continue;
            }
        }
        let record_at = due.unwrap_or_else(tokio::time::Instant::now);
        tokio::select! {
            page = async { listing.as_mut()?.pages.recv().await }, if listing.is_some() => {
                let goes_on = match page {
                    Some(Ok(page)) => take_page(sync, options, summary, listing.as_mut(), page)?,
                    Some(Err(error)) => {
                        failed = Some(error);
                        false
                    }
                    None => false,
                };
                if !goes_on {
                    listing = None;
                }
            }
            next = landed.recv() => match next {
                Some(result) => {
                    due.get_or_insert_with(|| tokio::time::Instant::now() + RECORD_WAIT);
                    group.push(result);
                    if group.len() >= RECORD_GROUP {
                        due = None;
                        record_group(sync, &mut feeding, std::mem::take(&mut group), summary, months)?;
                    }
                }
                None => all_landed = true,
            },
            () = tokio::time::sleep_until(record_at), if due.is_some() => {
                due = None;
                record_group(sync, &mut feeding, std::mem::take(&mut group), summary, months)?;
            }
        }
    }
}

/// Record a group of landed files (see [`record_landed`]).
fn record_group(
    sync: &mut Sync<'_>,
    feeding: &mut Feeding,
    group: Vec<Landed>,
    summary: &mut SyncSummary,
    months: &mut BTreeSet<String>,
) -> Result<(), SyncError> {
    if group.is_empty() {
        return Ok(());
    }
    let group = group
        .into_iter()
        .map(|(id, result)| {
            let (entry, spec) = feeding.landed(id);
            (entry, spec, result)
        })
        .collect();
    record_landed(sync, group, summary, months)
}

/// Take a listed page into the index; whether the listing goes on (then the next page is
/// asked for).
fn take_page(
    sync: &mut Sync<'_>,
    options: &SyncOptions,
    summary: &mut SyncSummary,
    listing: Option<&mut Listing>,
    page: Vec<FileObject>,
) -> Result<bool, SyncError> {
    summary.list_requests += 1;
    let settled = listing::take_files(sync.index, options, summary, &page)?;
    let listing = listing.expect("a page comes from a listing");
    if let Some(oldest) = page.iter().map(|f| f.created_at.as_str()).min() {
        let frontier = listing.frontier.get_or_insert_with(|| oldest.to_owned());
        if oldest < frontier.as_str() {
            *frontier = oldest.to_owned();
        }
    }
    let goes_on = listing::goes_on_after(&page, settled, options);
    if goes_on {
        listing.ask();
    }
    Ok(goes_on)
}

/// The files listing while it runs: the pages it hands over, and how far it has come.
struct Listing {
    ask: mpsc::Sender<()>,
    pages: mpsc::Receiver<Result<Vec<FileObject>, SyncError>>,
    /// The oldest `created_at` listed so far: the listing goes newest first, so every file to
    /// fetch created after it is in the index already.
    frontier: Option<String>,
}

impl Listing {
    /// Ask for the first page.
    fn start(
        ask: mpsc::Sender<()>,
        pages: mpsc::Receiver<Result<Vec<FileObject>, SyncError>>,
    ) -> Listing {
        let listing = Listing {
            ask,
            pages,
            frontier: None,
        };
        listing.ask();
        listing
    }

    fn ask(&self) {
        // The lister took the previous ask before it sent that page; gone, it sends no more.
        let _ = self.ask.try_send(());
    }

    fn listed(&self) -> Listed<'_> {
        match &self.frontier {
            None => Listed::Nothing,
            Some(frontier) => Listed::NewerThan(frontier),
        }
    }
}

/// Which files to fetch the index holds for sure: those to place now.
enum Listed<'a> {
    /// The listing is over (or there is none).
    All,
    /// Those created after the frontier (the listing is still going).
    NewerThan(&'a str),
    /// Nothing is listed yet.
    Nothing,
}

/// The files handed to the engine and not recorded yet, and where the next page of files to
/// fetch starts. Files are placed and handed over a page at a time while the earlier ones
/// download; each is placed where no file recorded or in flight is (`taken`).
#[derive(Default)]
struct Feeding {
    /// Closed after the last page, or once the run is interrupted.
    feed: Option<mpsc::Sender<(usize, TransferSpec)>>,
    /// The `(created_at, id)` of the last file fed.
    after: Option<(String, String)>,
    next_id: usize,
    /// The entry and spec of each file fed and not recorded yet, by id.
    placed: HashMap<usize, (FileEntry, TransferSpec)>,
    /// Their outputs.
    taken: HashSet<PathBuf>,
    /// The listing's frontier when the index last had nothing newer to place: it is not asked
    /// again (for every file that lands) until the listing moves on.
    dry_at: Option<String>,
}

impl Feeding {
    /// Room in the feed for the next page, once it has room for at least half a window; the
    /// first page is short, so that the first downloads start while the next is placed.
    fn room(&self) -> Option<usize> {
        let room = self.feed.as_ref()?.capacity();
        match self.after {
            None => Some(room.min(FIRST_PAGE)),
            Some(_) => (room >= WINDOW / 2).then_some(room),
        }
    }

    /// Place the next page of files to fetch (`room` at most, of those `listed`), record them
    /// Downloading and hand them to the engine; after the last page, close the feed. Whether
    /// it took any.
    fn feed_page(
        &mut self,
        sync: &mut Sync<'_>,
        options: &SyncOptions,
        summary: &mut SyncSummary,
        months: &mut BTreeSet<String>,
        room: usize,
        listed: &Listed<'_>,
    ) -> Result<bool, SyncError> {
        let cursor = self.after.as_ref().map(|(c, i)| (c.as_str(), i.as_str()));
        let mut page = match listed {
            Listed::Nothing => return Ok(false),
            Listed::NewerThan(frontier) if self.dry_at.as_deref() == Some(*frontier) => {
                return Ok(false);
            }
            _ => sync.index.files_to_fetch_page(cursor, room)?,
        };
        if let Listed::NewerThan(frontier) = listed {
            page.retain(|entry| entry.meta.created_at.as_str() > *frontier);
        }
        let Some(last) = page.last() else {
            match listed {
                Listed::All => self.feed = None,
                Listed::NewerThan(frontier) => self.dry_at = Some((*frontier).to_owned()),
                Listed::Nothing => {}
            }
            return Ok(false);
        };
        self.after = Some((last.meta.created_at.clone(), last.meta.id.clone()));
        let wanted = wanted_files(sync, options, summary, months, page)?;
        let mut usual = UsualPaths::of(sync, options, &wanted)?;
        let mut placed = Vec::with_capacity(wanted.len());
        for entry in wanted {
            match spec_for(sync, options, &entry, &mut usual, &mut self.taken)? {
                Ok(spec) => placed.push((entry, spec)),
                Err(reason) => {
                    let outcome = FileOutcome::Failed {
                        reason: reason.clone(),
                        retries: 0,
                    };
                    sync.index.record_file(&entry.meta.id, &outcome)?;
                    summary.failed.push((entry.meta.id.clone(), reason));
                }
            }
        }
        let starting: Vec<(String, FileOutcome)> = placed
            .iter()
            .map(|(entry, _)| (entry.meta.id.clone(), FileOutcome::Downloading))
            .collect();
        for result in sync.index.record_files(&starting)? {
            result?;
        }
        let sizes = placed.iter().map(|(_, spec)| spec.expected_size).sum();
        sync.reporter.queued(placed.len(), sizes);
        let feed = self.feed.as_ref().expect("a page is fed only with room");
        for (entry, spec) in placed {
            let id = self.next_id;
            self.next_id += 1;
            feed.try_send((id, spec.clone()))
                .expect("the feed has room for the page");
            self.placed.insert(id, (entry, spec));
        }
        Ok(true)
    }

    /// The entry and spec of the file `id`, which landed: its output is no longer in flight.
    fn landed(&mut self, id: usize) -> (FileEntry, TransferSpec) {
        let (entry, spec) = self.placed.remove(&id).expect("every file landing was fed");
        self.taken.remove(&spec.output);
        (entry, spec)
    }
}

/// Remove the resume states in `tmp/` of downloads installed and recorded complete (a kill
/// came between the commit and their removal); those of installed downloads not recorded yet
/// stay, for the rerun to find the output complete.
pub fn remove_recorded_states(sync: &Sync<'_>) -> Result<(), SyncError> {
    let tmp = sync.data.tmp();
    let clean_error = |source| SyncError::Clean {
        path: tmp.clone(),
        source,
    };
    let entries = match std::fs::read_dir(&tmp) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(clean_error(e)),
    };
    for entry in entries {
        let path = entry.map_err(clean_error)?.path();
        if !path.to_string_lossy().ends_with(".part.json") {
            continue;
        }
        let Some(installed) = ResumeState::load(&path).and_then(|state| state.installed) else {
            continue;
        };
        let recorded = sync
            .index
            .file_at(&relative(sync.data.root(), &installed.output))?
            .map(|id| sync.index.file(&id))
            .transpose()?
            .flatten()
            .is_some_and(|e| e.state == FileState::Complete && e.sha256 == Some(installed.sha256));
        if recorded {
            std::fs::remove_file(&path).map_err(clean_error)?;
        }
    }
    Ok(())
}

/// Record a listing entry that cannot be used as listed (see [`FileObject::malformed`]) as
/// Failed with its reason, so the rest of the sync goes on and the next listing looks again.
/// A file already settled keeps what it has; an entry without an id is only reported.
pub fn record_malformed(
    index: &mut dyn Index,
    file: &FileObject,
    summary: &mut SyncSummary,
) -> Result<(), SyncError> {
    let problem = file.malformed.as_deref().unwrap_or("malformed");
    let reason = format!("{MALFORMED_REASON}: {problem}");
    if file.id.is_empty() {
        summary.failed.push(("(no id)".to_owned(), reason));
        return Ok(());
    }
    match index.file(&file.id)? {
        Some(entry) if entry.state.is_settled() => {
            tracing::warn!(id = %file.id, "{reason}; keeping the {} entry", entry.state);
            return Ok(());
        }
        Some(_) => {}
        None => {
            index.upsert_files(&[super::listing::file_meta(file)])?;
        }
    }
    let outcome = FileOutcome::Failed {
        reason: reason.clone(),
        retries: 0,
    };
    index.record_file(&file.id, &outcome)?;
    summary.failed.push((file.id.clone(), reason));
    Ok(())
}

/// Of one page of files to fetch, those to fetch now. Those not downloadable are recorded Skipped, those failed as
/// malformed listing entries or with an id unfit for a request path are left (or recorded)
/// Failed: neither is fetched.
fn wanted_files(
    sync: &mut Sync<'_>,
    options: &SyncOptions,
    summary: &mut SyncSummary,
    months: &mut BTreeSet<String>,
    entries: Vec<FileEntry>,
) -> Result<Vec<FileEntry>, SyncError> {
    let mut wanted = Vec::new();
    for entry in entries.into_iter().filter(|e| options.includes(&e.meta)) {
        let id = entry.meta.id.clone();
        let malformed = entry
            .reason
            .as_deref()
            .filter(|reason| reason.starts_with(MALFORMED_REASON));
        if let Some(reason) = malformed {
            if !summary.failed.iter().any(|(failed, _)| *failed == id) {
                summary.failed.push((id, reason.to_owned()));
            }
        } else if let Err(problem) = check_id(&id) {
            let reason = format!("{MALFORMED_REASON}: {problem}");
            let outcome = FileOutcome::Failed {
                reason: reason.clone(),
                retries: 0,
            };
            sync.index.record_file(&id, &outcome)?;
            summary.failed.push((id, reason));
        } else if entry.meta.downloadable == Some(false) {
            let reason = NOT_DOWNLOADABLE.to_owned();
            let outcome = FileOutcome::Skipped {
                reason: reason.clone(),
            };
            sync.index.record_file(&id, &outcome)?;
            summary.skipped.push((id, reason));
            months.extend(month_of(&entry.meta.created_at));
        } else {
            wanted.push(entry);
        }
    }
    Ok(wanted)
}

/// Record a group of finished transfers in one durable commit, then drop the resume states
/// their transfers kept for exactly this moment.
fn record_landed(
    sync: &mut Sync<'_>,
    group: Vec<(
        FileEntry,
        TransferSpec,
        Result<TransferReport, TransferError>,
    )>,
    summary: &mut SyncSummary,
    months: &mut BTreeSet<String>,
) -> Result<(), SyncError> {
    let mut recorded = Vec::new();
    let mut outcomes = Vec::new();
    for (entry, spec, result) in group {
        months.extend(month_of(&entry.meta.created_at));
        if matches!(&result, Err(e) if e.is_cancelled()) {
            summary.interrupted = true;
            continue;
        }
        outcomes.push((entry.meta.id.clone(), outcome_of(sync.data.root(), &result)));
        recorded.push((spec, result));
    }
    let results = sync.index.record_files(&outcomes)?;
    for (((id, outcome), (spec, result)), written) in outcomes.iter().zip(recorded).zip(results) {
        match (written, outcome, &result) {
            (Err(refused @ IndexError::PathTaken { .. }), _, _) => {
                let reason = refused.to_string();
                let failed = FileOutcome::Failed {
                    reason: reason.clone(),
                    retries: 0,
                };
                sync.index.record_file(id, &failed)?;
                summary.failed.push((id.clone(), reason));
            }
            (Err(other), _, _) => return Err(other.into()),
            (Ok(()), FileOutcome::Complete { .. }, Ok(report)) => {
                summary.downloaded += 1;
                summary.bytes += report.fetched;
                if report.state_kept {
                    release_state(&spec)?;
                }
            }
            (Ok(()), FileOutcome::Skipped { reason }, _) => {
                summary.skipped.push((id.clone(), reason.clone()))
            }
            (Ok(()), FileOutcome::Failed { reason, .. }, _) => {
                summary.failed.push((id.clone(), reason.clone()))
            }
            _ => {}
        }
    }
    Ok(())
}

/// The transfer of `entry` into `raw/`, at a path no other file is recorded at or is being
/// fetched to in this run (`taken`): ids map to distinct names, but an id and a filename can
/// still join into another's name (`a` + `b_c`, `a_b` + `c`); such a file gets the hashed form
/// of its name. `usual` may know the usual path already (and who holds it).
///
/// `Ok(Err(reason))`: both names are held by others; the file is not fetched (its download
/// would replace another's file).
pub(crate) fn spec_for(
    sync: &Sync<'_>,
    options: &SyncOptions,
    entry: &FileEntry,
    usual: &mut UsualPaths,
    taken: &mut HashSet<PathBuf>,
) -> Result<Result<TransferSpec, String>, SyncError> {
    let meta = &entry.meta;
    let data = sync.data;
    let free = |path: &PathBuf, owner: Option<String>| {
        !taken.contains(path) && owner.is_none_or(|owner| owner == meta.id)
    };
    let (usual, owner) = usual.take(sync, options, entry)?;
    let output = if free(&usual, owner) {
        usual
    } else {
        let alternate = data.alternate_file_path(&meta.created_at, &meta.id, &meta.filename);
        let alternate = output_path(alternate, options.encrypt.is_some());
        let place = relative(data.root(), &alternate);
        if !free(&alternate, sync.index.file_at(&place)?) {
            return Ok(Err(format!(
                "{place} and its alternative name belong to other files"
            )));
        }
        alternate
    };
    taken.insert(output.clone());
    Ok(Ok(TransferSpec {
        headers: sync.api.headers(),
        overwrite: true,
        staging: Some(data.tmp_path_for(&output)),
        expected_size: Some(meta.size_bytes),
        file_id: Some(meta.id.clone()),
        encrypt: options.encrypt.clone(),
        keep_state: true,
        // Left Downloading by a killed run: an output already there is that run's (whole).
        adopt_output: entry.state == FileState::Downloading && options.encrypt.is_none(),
        ..TransferSpec::new(sync.api.file_content_url(&meta.id), output)
    }))
}

/// Where `entry` goes unless another file holds that path.
fn usual_output(sync: &Sync<'_>, options: &SyncOptions, entry: &FileEntry) -> PathBuf {
    let meta = &entry.meta;
    let path = sync
        .data
        .file_path(&meta.created_at, &meta.id, &meta.filename);
    output_path(path, options.encrypt.is_some())
}

/// The usual paths of a page of files and who holds each, looked up together: one query of the
/// index for the page instead of one a file.
#[derive(Debug, Default)]
pub(crate) struct UsualPaths {
    /// By file id: its usual output, and the id of the file recorded there.
    known: HashMap<String, (PathBuf, Option<String>)>,
}

impl UsualPaths {
    pub(crate) fn of(
        sync: &Sync<'_>,
        options: &SyncOptions,
        entries: &[FileEntry],
    ) -> Result<UsualPaths, SyncError> {
        let outputs: Vec<(PathBuf, String)> = entries
            .iter()
            .map(|entry| {
                let output = usual_output(sync, options, entry);
                let place = relative(sync.data.root(), &output);
                (output, place)
            })
            .collect();
        let places: Vec<&str> = outputs.iter().map(|(_, place)| place.as_str()).collect();
        let owners = sync.index.files_at(&places)?;
        let known = entries
            .iter()
            .zip(outputs)
            .map(|(entry, (output, place))| {
                (entry.meta.id.clone(), (output, owners.get(&place).cloned()))
            })
            .collect();
        Ok(UsualPaths { known })
    }

    /// The usual output of `entry` and the id of the file recorded there: as looked up with
    /// its page, or from the index.
    fn take(
        &mut self,
        sync: &Sync<'_>,
        options: &SyncOptions,
        entry: &FileEntry,
    ) -> Result<(PathBuf, Option<String>), SyncError> {
        if let Some(known) = self.known.remove(&entry.meta.id) {
            return Ok(known);
        }
        let output = usual_output(sync, options, entry);
        let owner = sync.index.file_at(&relative(sync.data.root(), &output))?;
        Ok((output, owner))
    }
}

/// Permanent per-file answers (400 not downloadable, 404/410 gone) are recorded as skipped and
/// not retried; anything else is a failure the next sync tries again.
pub(crate) fn outcome_of(
    root: &Path,
    result: &Result<TransferReport, TransferError>,
) -> FileOutcome {
    match result {
        Ok(report) => FileOutcome::Complete {
            path: relative(root, &report.path),
            sha256: report.sha256.clone().unwrap_or_default(),
            etag: None,
            retries: report.retries,
            encrypted: report.encrypted,
        },
        Err(
            error @ TransferError::Status {
                status: 400 | 404 | 410,
                ..
            },
        ) => FileOutcome::Skipped {
            reason: error.to_string(),
        },
        Err(error) => FileOutcome::Failed {
            reason: error.to_string(),
            retries: 0,
        },
    }
}

/// `path` relative to the data directory, with `/` separators.
pub fn relative(root: &Path, path: &Path) -> String {
    let relative = path.strip_prefix(root).unwrap_or(path);
    relative
        .components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}
