//! Many files at once: up to `files_at_once` transfers run together, all drawing connections
//! from the engine's one cap. They run in lanes, one per core: each lane a thread with a
//! current-thread runtime, its own pooled connections and its own group committer, so that a
//! small file's request, body and commit stay on one thread (on one multi-thread runtime they
//! hop between workers, a wake-up of another CPU each time).

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
    ///
    /// The files at once are shared out among lanes (one per core, `lanes_for`), each a
    /// thread with a runtime of its own that takes the next spec fed whenever one of its slots
    /// frees: a transfer's requests, its connection and its group commit never change thread.
    pub fn download_each(
        &self,
        fed: mpsc::Receiver<(usize, TransferSpec)>,
        files_at_once: usize,
        reporter: Arc<dyn Reporter>,
    ) -> mpsc::UnboundedReceiver<Landed> {
        let (send, receive) = mpsc::unbounded_channel();
        let fed = Arc::new(tokio::sync::Mutex::new(fed));
        let seen = Arc::new(DirsSeen::default());
        let engines = self.lanes(lanes_for(files_at_once));
        let lanes = engines.len();
        for (at, engine) in engines.into_iter().enumerate() {
            let lane = Lane {
                engine,
                fed: Arc::clone(&fed),
                slots: share_of(files_at_once, lanes, at),
                reporter: Arc::clone(&reporter),
                seen: Arc::clone(&seen),
                send: send.clone(),
            };
            if lanes == 1 {
                tokio::spawn(lane.run());
            } else {
                lane.start(at);
            }
        }
        receive
    }

    /// One engine for each of `lanes`; just this one when there is one lane, or when a
    /// lane's client cannot be built.
    fn lanes(&self, lanes: usize) -> Vec<Engine> {
        if lanes <= 1 {
            return vec![self.clone()];
        }
        match (0..lanes).map(|_| self.for_lane(lanes)).collect() {
            Ok(engines) => engines,
            Err(error) => {
                tracing::warn!(%error, "a batch runs in one lane: a lane's HTTP client failed");
                vec![self.clone()]
            }
        }
    }
}

/// The most lanes a batch runs in.
const MAX_LANES: usize = 8;
/// The fewest files at once a lane has (more lanes would each hold too few transfers to keep
/// their runtime busy).
const MIN_SLOTS_PER_LANE: usize = 4;

/// How many lanes a batch of `files_at_once` runs in: one per core (a runtime per core keeps
/// a file's request, body and commit on one thread; get -i of 10,000 small files: ~8 %
/// faster than one runtime for all, docs/benchmarks-small.md, session 14).
fn lanes_for(files_at_once: usize) -> usize {
    crate::cores()
        .min(MAX_LANES)
        .min(files_at_once / MIN_SLOTS_PER_LANE)
        .max(1)
}

/// Lane `at`'s share of `files_at_once` among `lanes`.
fn share_of(files_at_once: usize, lanes: usize, at: usize) -> usize {
    (files_at_once / lanes + usize::from(at < files_at_once % lanes)).max(1)
}

/// A share of a batch's files at once, and the transfers it runs.
struct Lane {
    engine: Engine,
    /// The batch's one feed, shared by its lanes.
    fed: Arc<tokio::sync::Mutex<mpsc::Receiver<(usize, TransferSpec)>>>,
    slots: usize,
    reporter: Arc<dyn Reporter>,
    seen: Arc<DirsSeen>,
    send: mpsc::UnboundedSender<Landed>,
}

impl Lane {
    /// Run on a thread of its own with a current-thread runtime; where either cannot be had,
    /// as a task of the caller's runtime.
    fn start(self, at: usize) {
        let caller = tokio::runtime::Handle::current();
        let lane = Arc::new(Mutex::new(Some(self)));
        let taken = Arc::clone(&lane);
        let spawned = std::thread::Builder::new()
            .name(format!("claudedl-lane-{at}"))
            .spawn(move || {
                let Some(lane) = taken.lock().unwrap().take() else {
                    return;
                };
                match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime.block_on(lane.run()),
                    Err(error) => {
                        tracing::warn!(%error, lane = at, "a lane runs on the caller's runtime");
                        caller.spawn(lane.run());
                    }
                }
            });
        if let Err(error) = spawned {
            tracing::warn!(%error, lane = at, "a lane runs on the caller's runtime");
            if let Some(lane) = lane.lock().unwrap().take() {
                tokio::spawn(lane.run());
            }
        }
    }

    /// A transfer's task is spawned once it has its slot: the tasks alive are those in flight
    /// (and small files waiting for their group), whatever the number of specs.
    async fn run(self) {
        let slots = Arc::new(Semaphore::new(self.slots));
        let mut set = JoinSet::new();
        let (mut more, mut slot) = (true, None);
        loop {
            tokio::select! {
                biased;
                Some(joined) = set.join_next() => {
                    // A receiver gone (its caller failed) leaves the rest to finish unheard.
                    let _ = self.send.send(joined.expect("a transfer task panicked"));
                }
                free = Arc::clone(&slots).acquire_owned(), if more && slot.is_none() => {
                    slot = Some(free.expect("the semaphore is never closed"));
                }
                next = async { self.fed.lock().await.recv().await }, if more && slot.is_some() => {
                    let Some((id, spec)) = next else {
                        more = false;
                        continue;
                    };
                    let (engine, reporter) = (self.engine.clone(), Arc::clone(&self.reporter));
                    let batch = InBatch {
                        slot: slot.take().expect("a spec is taken with a slot"),
                        seen: Some(Arc::clone(&self.seen)),
                    };
                    set.spawn(async move {
                        let result = engine.download_in(id, &spec, reporter, Some(batch)).await;
                        (id, result)
                    });
                }
                else => break,
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lanes_share_the_files_at_once_out_evenly() {
        for files_at_once in 1..=64 {
            for lanes in 1..=MAX_LANES.min(files_at_once) {
                let shares: Vec<usize> = (0..lanes)
                    .map(|at| share_of(files_at_once, lanes, at))
                    .collect();
                assert_eq!(shares.iter().sum::<usize>(), files_at_once);
                let (least, most) = (shares.iter().min(), shares.iter().max());
                assert!(most.unwrap() - least.unwrap() <= 1, "{shares:?}");
            }
        }
    }

    #[test]
    fn a_lane_keeps_at_least_four_files_at_once_and_there_is_one_per_core_at_most() {
        let cores = crate::cores();
        assert_eq!(lanes_for(1), 1);
        assert_eq!(lanes_for(7), 1);
        assert_eq!(lanes_for(8), cores.min(2));
        assert_eq!(lanes_for(16), cores.min(4));
        assert_eq!(lanes_for(256), cores.min(MAX_LANES));
    }
}
