//! Group commit for small files: a file fetched whole in one request is written at once by its
//! transfer (no thread hop) into an unnamed file in its output's directory, then made durable
//! and given its name together with every other file that landed meanwhile. Several groups
//! commit at once, each on a blocking thread of its own (never one thread per file).
//!
//! A group takes the files that land until it is [`GROUP_AGE`] old or [`GROUP_QUIET`] passes
//! without one, up to [`MAX_GROUP`] files; a busy run commits in groups of hundreds, a lone
//! file waits [`GROUP_QUIET`]. For each file and group:
//! 1. the transfer writes the body whole into an `O_TMPFILE` of the output's directory (an
//!    inode without a name, most often one made ahead: `super::ahead`; where the file system
//!    has none, a temporary name `.NAME.part~N.tmp-PID` beside the output);
//! 2. one `syncfs` makes the content of the whole group durable;
//! 3. each file is linked under its final name (an existing file is replaced by a rename);
//!    a second `syncfs` makes the names durable;
//! 4. only then does each waiting transfer hear that its file is done.
//!
//! A crash leaves a final name either absent (or holding its previous file) or holding the whole
//! new file, never a partial or empty one. An unnamed file of a killed run has no name to leave
//! behind (the file system reclaims it); temporary names of dead processes are removed by the
//! next run that commits into their directory.

use std::collections::{BTreeSet, HashSet};
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use rustix::fs::{AtFlags, CWD, Mode, OFlags};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};

use super::ahead::{AHEAD, Ahead, open_unnamed};
use crate::store::atomic::{create_new_no_follow, parent_dir, remove_stale_marked};

/// The most files one group commits.
pub const MAX_GROUP: usize = 1024;
/// A group closes this long after its first file at the latest: each `syncfs` costs much
/// the same for one file as for hundreds, so a busy run commits in groups of hundreds. Where
/// every flush goes through to the device, fewer groups matter: a sync of 100,000 small files
/// took 3-9 % less time with groups of 150 ms than of 50 ms (docs/benchmarks-small.md,
/// session 9); a lone file still waits only [`GROUP_QUIET`].
const GROUP_AGE: Duration = Duration::from_millis(150);
/// A group closes once no file joined it for this long: a lone file, or the last of a run,
/// waits no longer.
const GROUP_QUIET: Duration = Duration::from_millis(2);
/// Groups committing at once, at most: one names its files while another waits for its
/// `syncfs`. More make smaller groups, each with a `syncfs` of its own.
const COMMITTERS: usize = 2;
/// Staged files waiting for their group, at most (each holds an open file descriptor); fewer
/// when the limit on open files is low.
const MOST_WAITING: usize = 8192;
/// Open files left for everything else (connections, `.part`s, the index).
const FDS_KEPT: u64 = 256;
/// Marks the temporary names of small files (`.NAME.part~N.tmp-PID`).
pub const SMALL_TEMP_MARK: &str = ".part~";

/// A body written whole, waiting for its group to make it durable and name it.
#[derive(Debug)]
pub struct Staged {
    file: File,
    /// The temporary name it has, where the file system offers no unnamed files.
    temp: Option<PathBuf>,
}

/// One file waiting for its group.
struct Pending {
    staged: Staged,
    output: PathBuf,
    /// Where the file's `.part` and resume state would be (cleaned of leftovers once a run).
    part_dir: PathBuf,
    done: oneshot::Sender<io::Result<()>>,
    /// The place among those waiting, given back once it is committed.
    _room: OwnedSemaphorePermit,
}

/// The queue of files waiting for a group commit; its task ends with the last handle.
#[derive(Debug)]
pub struct Committer {
    queue: mpsc::UnboundedSender<Pending>,
    room: Arc<Semaphore>,
    ahead: Arc<Ahead>,
}

impl Committer {
    /// Start the committing task (within a tokio runtime), for one of `committers` that run at
    /// once (one per lane of a batch: `super::batch`), which share the open files.
    pub fn start(committers: usize) -> Committer {
        let (queue, receive) = mpsc::unbounded_channel();
        tokio::spawn(run(receive));
        Committer {
            queue,
            room: Arc::new(Semaphore::new(waiting_share(committers))),
            ahead: Arc::default(),
        }
    }

    /// Write `body` whole, unnamed, beside `output` ([`stage`]), into a file made ahead when
    /// one is ready (blocking, but one small write: called from the transfer's task).
    pub fn stage(&self, output: &Path, body: &[u8]) -> io::Result<Staged> {
        match self.ahead.take(parent_dir(output)) {
            Some(file) => write_unnamed(file, body),
            None => stage(output, body),
        }
    }

    /// Wait until one more staged file may wait for its group (bounded open files).
    pub async fn room(&self) -> OwnedSemaphorePermit {
        Arc::clone(&self.room)
            .acquire_owned()
            .await
            .expect("the semaphore is never closed")
    }

    /// Hand `staged` to its group, to be made durable as `output` (whose `.part` would be
    /// `part`); [`Committing::done`] says when it is in place.
    pub fn submit(
        &self,
        staged: Staged,
        output: &Path,
        part: &Path,
        room: OwnedSemaphorePermit,
    ) -> io::Result<Committing> {
        let (done, heard) = oneshot::channel();
        let pending = Pending {
            staged,
            output: output.to_path_buf(),
            part_dir: parent_dir(part).to_path_buf(),
            done,
            _room: room,
        };
        self.queue
            .send(pending)
            .map_err(|_| io::Error::other("the committer has stopped"))?;
        Ok(Committing { heard })
    }
}

/// A file handed to its group, on its way to its name.
#[derive(Debug)]
pub struct Committing {
    heard: oneshot::Receiver<io::Result<()>>,
}

impl Committing {
    /// Wait until the file is durable under its name.
    pub async fn done(self) -> io::Result<()> {
        self.heard
            .await
            .unwrap_or_else(|_| Err(io::Error::other("the committer has stopped")))
    }
}

/// How many staged files may wait for their group (once per process): raises the soft limit
/// on open files, and grows the process's table of open files to hold them all. Grown later,
/// while threads run, each doubling of the table makes the kernel wait for an RCU grace period
/// (`expand_files`: milliseconds in a VM) and stalls every thread opening a file meanwhile;
/// called before the runtime starts (as the CLI does), it costs nothing.
pub fn reserve_open_files() -> usize {
    static WAITING: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *WAITING.get_or_init(|| {
        let waiting = waiting_files();
        grow_fd_table(waiting + FDS_KEPT as usize + AHEAD);
        waiting
    })
}

/// The staged files one of `committers` may keep waiting: each also makes [`AHEAD`] files
/// ahead, all of them within what [`reserve_open_files`] keeps.
fn waiting_share(committers: usize) -> usize {
    let committers = committers.max(1);
    let waiting = reserve_open_files().saturating_sub((committers - 1) * AHEAD);
    (waiting / committers).max(1)
}

/// Grow the table of open files to `fds` entries: a descriptor duplicated near the top, then
/// closed (best effort: a refusal leaves the table to grow as files open).
fn grow_fd_table(fds: usize) {
    let Ok(top) = rustix::fd::RawFd::try_from(fds.saturating_sub(1)) else {
        return;
    };
    let root = rustix::fs::open("/", OFlags::PATH | OFlags::CLOEXEC, Mode::empty());
    if let Ok(root) = root {
        let _ = rustix::io::fcntl_dupfd_cloexec(&root, top);
    }
}

/// How many staged files may wait: raises the soft limit on open files to the hard one, and
/// keeps [`FDS_KEPT`] of it for the rest of the process and [`AHEAD`] for files made ahead.
fn waiting_files() -> usize {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        let raised = rustix::process::Rlimit {
            current: limit.maximum,
            ..limit
        };
        if setrlimit(Resource::Nofile, raised).is_ok() {
            limit = raised;
        }
    }
    let open = limit.current.unwrap_or(u64::MAX);
    let free = open.saturating_sub(FDS_KEPT + AHEAD as u64).max(16);
    usize::try_from(free)
        .unwrap_or(usize::MAX)
        .min(MOST_WAITING)
}

/// Whether this file system gave unnamed files (`O_TMPFILE`) so far.
static UNNAMED: AtomicBool = AtomicBool::new(true);

/// Write `body` whole, unnamed (or under a temporary name) in the directory of `output`
/// (blocking).
pub fn stage(output: &Path, body: &[u8]) -> io::Result<Staged> {
    if UNNAMED.load(Ordering::Relaxed) {
        match open_unnamed(parent_dir(output)) {
            Ok(file) => return write_unnamed(file, body),
            Err(e) if e == rustix::io::Errno::OPNOTSUPP || e == rustix::io::Errno::ISDIR => {
                UNNAMED.store(false, Ordering::Relaxed);
            }
            Err(e) => return Err(e.into()),
        }
    }
    let temp = temp_name(output);
    let mut file = create_new_no_follow(&temp)?;
    if let Err(e) = file.write_all(body) {
        let _ = std::fs::remove_file(&temp);
        return Err(e);
    }
    Ok(Staged {
        file,
        temp: Some(temp),
    })
}

/// `body` written whole into the unnamed `file`.
fn write_unnamed(mut file: File, body: &[u8]) -> io::Result<Staged> {
    file.write_all(body)?;
    Ok(Staged { file, temp: None })
}

/// A temporary name no other small file of this process uses: `.NAME.part~N.tmp-PID` for the
/// output NAME.
fn temp_name(output: &Path) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let seq = NEXT.fetch_add(1, Ordering::Relaxed);
    let name = output
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    parent_dir(output).join(format!(
        ".{name}{SMALL_TEMP_MARK}{seq}.tmp-{}",
        std::process::id()
    ))
}

/// The group `first` opens: the files that join it until it is full, [`GROUP_AGE`] old, or
/// [`GROUP_QUIET`] passed without a file joining.
async fn gather<T>(first: T, receive: &mut mpsc::UnboundedReceiver<T>) -> Vec<T> {
    use tokio::time::{Instant, timeout_at};
    let closes = Instant::now() + GROUP_AGE;
    let mut group = vec![first];
    while group.len() < MAX_GROUP {
        let until = closes.min(Instant::now() + GROUP_QUIET);
        match timeout_at(until, receive.recv()).await {
            Ok(Some(more)) => group.push(more),
            Ok(None) | Err(_) => break,
        }
    }
    group
}

async fn run(mut receive: mpsc::UnboundedReceiver<Pending>) {
    let committers = Arc::new(Semaphore::new(COMMITTERS));
    let mut cleaned = HashSet::new();
    while let Some(first) = receive.recv().await {
        let committer = Arc::clone(&committers)
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        let group = gather(first, &mut receive).await;
        let fresh: Vec<PathBuf> = group
            .iter()
            .flat_map(|p| [parent_dir(&p.output), &p.part_dir])
            .filter(|dir| !cleaned.contains(*dir))
            .map(Path::to_path_buf)
            .collect::<BTreeSet<_>>()
            .into_iter()
            .filter(|dir| cleaned.insert(dir.clone()))
            .collect();
        tokio::task::spawn_blocking(move || {
            let _committer = committer;
            // What killed runs left in these directories (once per run): temporary small files
            // and resume states (a small file takes no lock that would clean the latter).
            for dir in fresh {
                let stale =
                    |name: &str| name.contains(SMALL_TEMP_MARK) || name.ends_with(".part.json");
                if let Err(e) = remove_stale_marked(&dir, stale) {
                    tracing::warn!(dir = %dir.display(), "cannot clean stale temporary files: {e}");
                }
            }
            // A panicked commit drops its senders: each waiter hears "stopped".
            let results = commit_group(&group);
            for (pending, result) in group.into_iter().zip(results) {
                let _ = pending.done.send(result);
            }
        });
    }
}

/// Sync once, name each file, sync again (blocking). One result per file.
///
/// The second `syncfs` makes the new names durable together with what linking changed in each
/// file (its link count): syncing only the directories would leave the latter to the file
/// system's journal, and this disk may have none.
fn commit_group(group: &[Pending]) -> Vec<io::Result<()>> {
    let any = &group[0].staged.file;
    let synced = rustix::fs::syncfs(any).map_err(io::Error::from);
    let mut results: Vec<io::Result<()>> = group
        .iter()
        .map(|pending| {
            let named = match &synced {
                Ok(()) => name(&pending.staged, &pending.output),
                Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
            };
            if let (Err(_), Some(temp)) = (&named, &pending.staged.temp) {
                let _ = std::fs::remove_file(temp);
            }
            named
        })
        .collect();
    if results.iter().any(Result::is_ok)
        && let Err(e) = rustix::fs::syncfs(any).map_err(io::Error::from)
    {
        for result in results.iter_mut().filter(|r| r.is_ok()) {
            *result = Err(io::Error::new(e.kind(), e.to_string()));
        }
    }
    results
}

/// Give a durable staged file its final name, replacing a file already there.
fn name(staged: &Staged, output: &Path) -> io::Result<()> {
    if let Some(temp) = &staged.temp {
        return std::fs::rename(temp, output);
    }
    match link(&staged.file, output) {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            let temp = temp_name(output);
            link(&staged.file, &temp)?;
            std::fs::rename(&temp, output).inspect_err(|_| {
                let _ = std::fs::remove_file(&temp);
            })
        }
        other => other,
    }
}

/// Whether `linkat(AT_EMPTY_PATH)` was refused (it needs a capability): link through
/// `/proc/self/fd` instead.
static THROUGH_PROC: AtomicBool = AtomicBool::new(false);

/// Give the unnamed `file` the name `path`.
pub(super) fn link(file: &File, path: &Path) -> io::Result<()> {
    if !THROUGH_PROC.load(Ordering::Relaxed) {
        match rustix::fs::linkat(file, "", CWD, path, AtFlags::EMPTY_PATH) {
            Err(rustix::io::Errno::NOENT) if parent_dir(path).is_dir() => {
                THROUGH_PROC.store(true, Ordering::Relaxed);
            }
            other => return other.map_err(io::Error::from),
        }
    }
    let proc = format!("/proc/self/fd/{}", file.as_raw_fd());
    rustix::fs::linkat(CWD, proc.as_str(), CWD, path, AtFlags::SYMLINK_FOLLOW)
        .map_err(io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn commit_all(committer: &Arc<Committer>, files: Vec<(PathBuf, Vec<u8>)>) {
        let mut waits = tokio::task::JoinSet::new();
        for (output, body) in files {
            let committer = Arc::clone(committer);
            waits.spawn(async move {
                let room = committer.room().await;
                let staged = stage(&output, &body)?;
                committer
                    .submit(staged, &output, &output, room)?
                    .done()
                    .await
            });
        }
        while let Some(result) = waits.join_next().await {
            result.unwrap().unwrap();
        }
    }

    fn names_in(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn files_land_whole_under_their_names_and_no_temporary_is_left() {
        let dir = tempfile::tempdir().unwrap();
        let committer = Arc::new(Committer::start(1));
        let files = (0..200u8)
            .map(|i| {
                let output = dir.path().join(format!("f{i}"));
                (output, vec![i; 100 + usize::from(i)])
            })
            .collect();
        commit_all(&committer, files).await;
        assert_eq!(
            names_in(dir.path()).len(),
            200,
            "{:?}",
            names_in(dir.path())
        );
        for i in 0..200u8 {
            let got = std::fs::read(dir.path().join(format!("f{i}"))).unwrap();
            assert_eq!(got, vec![i; 100 + usize::from(i)]);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_file_already_there_is_replaced_whole() {
        let dir = tempfile::tempdir().unwrap();
        let output = dir.path().join("f");
        std::fs::write(&output, b"the previous, longer content").unwrap();
        let committer = Arc::new(Committer::start(1));
        commit_all(&committer, vec![(output.clone(), b"new".to_vec())]).await;
        assert_eq!(std::fs::read(&output).unwrap(), b"new");
        assert_eq!(
            names_in(dir.path()),
            vec!["f".to_owned()],
            "no temporary is left"
        );
    }

    #[test]
    fn a_staged_file_has_no_name_until_it_is_committed() {
        let dir = tempfile::tempdir().unwrap();
        let output = dir.path().join("f");
        let staged = stage(&output, b"body").unwrap();
        assert!(
            staged.temp.is_none(),
            "this file system offers unnamed files"
        );
        assert!(
            names_in(dir.path()).is_empty(),
            "nothing under any name yet"
        );
        name(&staged, &output).unwrap();
        assert_eq!(std::fs::read(&output).unwrap(), b"body");
    }

    /// Sends a file every `every` into a group opened at time 0; the group's size and the
    /// time it closed.
    async fn group_of_arrivals(every: Duration, files: usize) -> (usize, Duration) {
        let (send, mut receive) = mpsc::unbounded_channel();
        let start = tokio::time::Instant::now();
        tokio::spawn(async move {
            for i in 1..files {
                tokio::time::sleep_until(start + every * i as u32).await;
                let _ = send.send(i);
            }
            // The queue stays open, as the committer's does while the run lasts.
            tokio::time::sleep(Duration::from_secs(3600)).await;
            drop(send);
        });
        let group = gather(0, &mut receive).await;
        (group.len(), start.elapsed())
    }

    #[tokio::test(start_paused = true)]
    async fn a_lone_file_waits_only_for_the_quiet() {
        assert_eq!(group_of_arrivals(Duration::ZERO, 1).await, (1, GROUP_QUIET));
    }

    #[tokio::test(start_paused = true)]
    async fn a_steady_stream_closes_groups_at_their_age() {
        let every = Duration::from_millis(1);
        assert!(every < GROUP_QUIET);
        let (files, closed) = group_of_arrivals(every, 1000).await;
        assert_eq!(closed, GROUP_AGE);
        assert_eq!(
            files, 150,
            "one file a millisecond for {GROUP_AGE:?}, the first included"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_group_closes_once_full() {
        let (files, closed) = group_of_arrivals(Duration::from_micros(10), 5000).await;
        assert_eq!(files, MAX_GROUP);
        assert!(closed < GROUP_AGE, "{closed:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_pause_longer_than_the_quiet_closes_the_group() {
        let (files, closed) = group_of_arrivals(GROUP_QUIET * 2, 10).await;
        assert_eq!((files, closed), (1, GROUP_QUIET));
    }

    #[test]
    fn the_table_of_open_files_holds_every_waiting_file_from_the_start() {
        let waiting = reserve_open_files();
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let size: usize = status
            .lines()
            .find_map(|line| line.strip_prefix("FDSize:"))
            .map(|size| size.trim().parse().unwrap())
            .unwrap();
        assert!(
            size >= waiting + FDS_KEPT as usize,
            "FDSize {size}, {waiting} waiting"
        );
    }

    #[test]
    fn temporary_names_are_unique_and_marked() {
        let output = Path::new("/d/x");
        let (a, b) = (temp_name(output), temp_name(output));
        assert_ne!(a, b);
        let name = a.file_name().unwrap().to_string_lossy().into_owned();
        assert!(name.starts_with(".x.part~"), "{name}");
        assert!(name.contains(SMALL_TEMP_MARK));
        assert!(name.ends_with(&format!(".tmp-{}", std::process::id())));
    }
}
