//! Group commit for small files: a file fetched whole in one request is handed over in memory
//! and written, made durable and renamed into place together with every other file that landed
//! meanwhile, on one blocking thread per group (never one per file).
//!
//! A group forms while the previous one commits, so a lone file waits for no timer and a busy
//! run commits in groups of up to [`MAX_GROUP`] files. For each group:
//! 1. each file is written whole to a temporary name beside its `.part` (`.NAME.part~N.tmp-PID`);
//! 2. one `syncfs` makes all of their content durable at once;
//! 3. each is renamed to its final name; each directory holding a final name is synced once;
//! 4. only then does each waiting transfer hear that its file is done.
//!
//! A crash leaves a final name either absent (or holding its previous file) or holding the whole
//! new file, never a partial or empty one; leftovers are temporary names of a dead process.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};

use crate::store::atomic::{create_new_no_follow, parent_dir, remove_stale_marked, sync_dir};

/// The most files one group commits.
pub const MAX_GROUP: usize = 1024;
/// Bodies waiting for their group take at most this much memory (in 4 KiB pages: 64 MiB).
const ROOM_PAGES: usize = 16 * 1024;
const PAGE: usize = 4096;
/// Marks the temporary names of small files (`.NAME.part~N.tmp-PID`).
pub const SMALL_TEMP_MARK: &str = ".part~";

/// One file waiting for its group.
struct Pending {
    temp: PathBuf,
    output: PathBuf,
    body: Bytes,
    done: oneshot::Sender<io::Result<()>>,
    /// The memory the body takes, given back once it is committed.
    _room: OwnedSemaphorePermit,
}

/// The queue of files waiting for a group commit; its task ends with the last handle.
#[derive(Debug)]
pub struct Committer {
    queue: mpsc::UnboundedSender<Pending>,
    room: Arc<Semaphore>,
}

impl Committer {
    /// Start the committing task (within a tokio runtime).
    pub fn start() -> Committer {
        let (queue, receive) = mpsc::unbounded_channel();
        tokio::spawn(run(receive));
        Committer {
            queue,
            room: Arc::new(Semaphore::new(ROOM_PAGES)),
        }
    }

    /// Wait until a body of `len` bytes may wait for its group (bounded memory).
    pub async fn room(&self, len: usize) -> OwnedSemaphorePermit {
        let pages = len.div_ceil(PAGE).clamp(1, ROOM_PAGES);
        Arc::clone(&self.room)
            .acquire_many_owned(pages as u32)
            .await
            .expect("the semaphore is never closed")
    }

    /// Write `body` as `output` (staged beside `part`), durably; returns once it is in place.
    pub async fn commit(
        &self,
        part: &Path,
        output: &Path,
        body: Bytes,
        room: OwnedSemaphorePermit,
    ) -> io::Result<()> {
        let (done, heard) = oneshot::channel();
        let pending = Pending {
            temp: temp_name(part),
            output: output.to_path_buf(),
            body,
            done,
            _room: room,
        };
        self.queue
            .send(pending)
            .map_err(|_| io::Error::other("the committer has stopped"))?;
        heard
            .await
            .unwrap_or_else(|_| Err(io::Error::other("the committer has stopped")))
    }
}

/// A temporary name no other small file of this process uses: `.NAME~N.tmp-PID` for the
/// `.part` NAME.
fn temp_name(part: &Path) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let seq = NEXT.fetch_add(1, Ordering::Relaxed);
    let name = part
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    parent_dir(part).join(format!(".{name}~{seq}.tmp-{}", std::process::id()))
}

async fn run(mut receive: mpsc::UnboundedReceiver<Pending>) {
    let mut cleaned = std::collections::HashSet::new();
    while let Some(first) = receive.recv().await {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match receive.try_recv() {
                Ok(more) => group.push(more),
                Err(_) => break,
            }
        }
        let fresh: Vec<PathBuf> = group
            .iter()
            .map(|p| parent_dir(&p.temp).to_path_buf())
            .filter(|dir| cleaned.insert(dir.clone()))
            .collect();
        let committed = tokio::task::spawn_blocking(move || {
            // What killed runs left in these directories (once per run): temporary small
            // files and resume states (a small file takes no lock that would clean the latter).
            for dir in fresh {
                let stale =
                    |name: &str| name.contains(SMALL_TEMP_MARK) || name.ends_with(".part.json");
                if let Err(e) = remove_stale_marked(&dir, stale) {
                    tracing::warn!(dir = %dir.display(), "cannot clean stale temporary files: {e}");
                }
            }
            let results = commit_group(&group);
            (group, results)
        })
        .await;
        // A panicked commit drops its senders: each waiter hears "stopped".
        if let Ok((group, results)) = committed {
            for (pending, result) in group.into_iter().zip(results) {
                let _ = pending.done.send(result);
            }
        }
    }
}

/// Write, sync once, rename, sync the directories (blocking). One result per file.
fn commit_group(group: &[Pending]) -> Vec<io::Result<()>> {
    let mut results: Vec<io::Result<Option<File>>> = group
        .iter()
        .map(|pending| write_temp(&pending.temp, &pending.body).map(Some))
        .collect();
    let synced = results
        .iter()
        .find_map(|r| r.as_ref().ok().and_then(Option::as_ref))
        .map_or(Ok(()), |file| {
            rustix::fs::syncfs(file).map_err(io::Error::from)
        });
    let mut dirs = BTreeSet::new();
    for (pending, result) in group.iter().zip(results.iter_mut()) {
        if result.is_err() {
            continue;
        }
        let renamed = match &synced {
            Ok(()) => std::fs::rename(&pending.temp, &pending.output),
            Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
        };
        match renamed {
            Ok(()) => {
                dirs.insert(parent_dir(&pending.output).to_path_buf());
            }
            Err(e) => *result = Err(e),
        }
    }
    let dir_results: Vec<(PathBuf, io::Result<()>)> = dirs
        .into_iter()
        .map(|d| (d.clone(), sync_dir(&d)))
        .collect();
    group
        .iter()
        .zip(results)
        .map(|(pending, result)| match result {
            Ok(_) => match dir_results
                .iter()
                .find(|(dir, _)| dir == parent_dir(&pending.output))
            {
                Some((_, Err(e))) => Err(io::Error::new(e.kind(), e.to_string())),
                _ => Ok(()),
            },
            Err(e) => {
                let _ = std::fs::remove_file(&pending.temp);
                Err(e)
            }
        })
        .collect()
}

fn write_temp(temp: &Path, body: &[u8]) -> io::Result<File> {
    let mut file = create_new_no_follow(temp)?;
    file.write_all(body)?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn files_land_whole_under_their_names_and_no_temporary_is_left() {
        let dir = tempfile::tempdir().unwrap();
        let committer = std::sync::Arc::new(Committer::start());
        let mut waits = tokio::task::JoinSet::new();
        for i in 0..20u8 {
            let output = dir.path().join(format!("f{i}"));
            let part = dir.path().join(format!("f{i}.part"));
            let body = Bytes::from(vec![i; 100 + usize::from(i)]);
            let committer = std::sync::Arc::clone(&committer);
            waits.spawn(async move {
                let room = committer.room(body.len()).await;
                committer.commit(&part, &output, body, room).await
            });
        }
        while let Some(result) = waits.join_next().await {
            result.unwrap().unwrap();
        }
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names.len(), 20, "{names:?}");
        for i in 0..20u8 {
            let got = std::fs::read(dir.path().join(format!("f{i}"))).unwrap();
            assert_eq!(got, vec![i; 100 + usize::from(i)]);
        }
    }

    #[test]
    fn temporary_names_are_unique_and_marked() {
        let part = Path::new("/d/x.part");
        let (a, b) = (temp_name(part), temp_name(part));
        assert_ne!(a, b);
        let name = a.file_name().unwrap().to_string_lossy().into_owned();
        assert!(name.starts_with(".x.part~"), "{name}");
        assert!(name.contains(SMALL_TEMP_MARK));
        assert!(name.ends_with(&format!(".tmp-{}", std::process::id())));
    }
}
