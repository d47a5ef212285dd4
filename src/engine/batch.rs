//! Many files at once: up to `files_at_once` transfers run together, all drawing connections
//! from the engine's one cap and reusing the one client's pooled connections.

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinSet;

use super::{Engine, Reporter, TransferError, TransferReport, TransferSpec};

/// A finished transfer: its position among the specs, and how it ended.
pub type Landed = (usize, Result<TransferReport, TransferError>);

impl Engine {
    /// Download every spec; results come back in the order of `specs`.
    pub async fn download_all(
        &self,
        specs: Vec<TransferSpec>,
        files_at_once: usize,
        reporter: Arc<dyn Reporter>,
    ) -> Vec<Result<TransferReport, TransferError>> {
        let count = specs.len();
        let sizes: Option<u64> = specs.iter().map(|s| s.expected_size).sum();
        reporter.queued(count, sizes);
        let (feed, fed) = mpsc::channel(count.max(1));
        for spec in specs.into_iter().enumerate() {
            feed.try_send(spec).expect("the feed holds every spec");
        }
        drop(feed);
        let mut landed = self.download_each(fed, files_at_once, reporter);
        let mut results: Vec<Option<Result<TransferReport, TransferError>>> =
            std::iter::repeat_with(|| None).take(count).collect();
        while let Some((id, result)) = landed.recv().await {
            results[id] = Some(result);
        }
        results
            .into_iter()
            .map(|r| r.expect("every transfer reports"))
            .collect()
    }

    /// Download each spec fed (with an id of the caller's, unique within the batch, that its
    /// result comes back with) as soon as a slot frees, handing each result over as soon as
    /// its transfer ends: the caller plans more specs and records results while the others
    /// run. The caller tells the reporter what it queues. The results close after the feed
    /// closes and the last transfer ends.
    pub fn download_each(
        &self,
        mut fed: mpsc::Receiver<(usize, TransferSpec)>,
        files_at_once: usize,
        reporter: Arc<dyn Reporter>,
    ) -> mpsc::UnboundedReceiver<Landed> {
        let slots = Arc::new(Semaphore::new(files_at_once.max(1)));
        let (send, receive) = mpsc::unbounded_channel();
        let engine = self.clone();
        let seen = Arc::new(DirsSeen::default());
        // A transfer's task is spawned once it has its slot: the tasks alive are those in
        // flight (and small files waiting for their group), whatever the number of specs.
        tokio::spawn(async move {
            let mut set = JoinSet::new();
            let (mut more, mut slot) = (true, None);
            loop {
                tokio::select! {
                    biased;
                    Some(joined) = set.join_next() => {
                        // A receiver gone (its caller failed) leaves the rest to finish unheard.
                        let _ = send.send(joined.expect("a transfer task panicked"));
                    }
                    free = Arc::clone(&slots).acquire_owned(), if more && slot.is_none() => {
                        slot = Some(free.expect("the semaphore is never closed"));
                    }
                    next = fed.recv(), if more && slot.is_some() => {
                        let Some((id, spec)) = next else {
                            more = false;
                            continue;
                        };
                        let (engine, reporter) = (engine.clone(), Arc::clone(&reporter));
                        let batch = InBatch {
                            slot: slot.take().expect("a spec is taken with a slot"),
                            seen: Some(Arc::clone(&seen)),
                        };
                        set.spawn(async move {
                            let result = engine.download_in(id, &spec, reporter, Some(batch)).await;
                            (id, result)
                        });
                    }
                    else => break,
                }
            }
        });
        receive
    }
}

/// What a transfer of a batch holds: its slot among the files at once, and the batch's view of
/// its directories (none where other processes write into them meanwhile: a fleet's workers).
pub(super) struct InBatch {
    pub slot: OwnedSemaphorePermit,
    pub seen: Option<Arc<DirsSeen>>,
}

/// What each directory held when the batch first looked at it: one read of a directory
/// instead of a lookup per file (a lookup of a missing name in a directory of many files is
/// much of a small file's cost). A resume state appears only when a transfer of its own file
/// starts, an output only when its own transfer ends, and every file of a batch is fetched
/// once; a name the listing holds is looked up again.
#[derive(Debug, Default)]
pub(super) struct DirsSeen {
    dirs: Mutex<HashMap<PathBuf, Option<Arc<Listing>>>>,
    /// Directories known to exist (none is removed while the batch runs).
    made: Mutex<HashSet<PathBuf>>,
}

#[derive(Debug, Default)]
struct Listing {
    /// The names of resume states (`*.part.json`).
    states: HashSet<OsString>,
    /// Hashes of every name (8 bytes a name, whatever its length).
    names: HashSet<u64>,
}

impl DirsSeen {
    /// Whether the resume state `state` is there (blocking: reads its directory once).
    pub fn state_exists(&self, state: &Path) -> bool {
        match (self.listing(state), state.file_name()) {
            (Some(listing), Some(name)) => listing.states.contains(name),
            _ => state.exists(),
        }
    }

    /// Whether `output` is there (blocking: reads its directory once).
    pub fn output_exists(&self, output: &Path) -> bool {
        match (self.listing(output), output.file_name()) {
            (Some(listing), Some(name)) if !listing.names.contains(&name_hash(name)) => false,
            _ => output.exists(),
        }
    }

    /// Create `dir` unless it is known to exist (blocking: looks it up once a batch).
    pub fn ensure_dir(&self, dir: &Path) -> std::io::Result<()> {
        if self.made.lock().unwrap().contains(dir) {
            return Ok(());
        }
        super::transfer::ensure_dir(dir)?;
        self.made.lock().unwrap().insert(dir.to_path_buf());
        Ok(())
    }

    fn listing(&self, path: &Path) -> Option<Arc<Listing>> {
        let dir = crate::store::atomic::parent_dir(path);
        let mut dirs = self.dirs.lock().unwrap();
        dirs.entry(dir.to_path_buf())
            .or_insert_with(|| listing_of(dir).map(Arc::new))
            .clone()
    }
}

fn name_hash(name: &std::ffi::OsStr) -> u64 {
    use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
    BuildHasherDefault::<DefaultHasher>::default().hash_one(name)
}

/// What `dir` holds (nothing when it does not exist); `None` when it cannot be read.
fn listing_of(dir: &Path) -> Option<Listing> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Some(Listing::default()),
        Err(_) => return None,
    };
    let mut listing = Listing::default();
    for entry in entries {
        let name = entry.ok()?.file_name();
        listing.names.insert(name_hash(&name));
        if name.as_encoded_bytes().ends_with(b".part.json") {
            listing.states.insert(name);
        }
    }
    Some(listing)
}
