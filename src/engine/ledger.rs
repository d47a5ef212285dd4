//! The ledger of written bytes for one transfer, and the two followers that read it: the
//! checkpointer (which makes the resume state durable) and the hasher (which computes SHA-256
//! over the growing done prefix while the download runs, so finishing costs no extra pass).

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::ContentTap;
use super::writer::PartWriter;
use crate::store::{RangeSet, ResumeState};

/// Where the done prefix stands, and whether it will grow further.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Prefix {
    pub len: u64,
    pub last: bool,
}

/// Byte ranges written to the `.part` (in the page cache, not necessarily on disk yet).
#[derive(Debug)]
pub struct Ledger {
    written: Mutex<RangeSet>,
    changes: AtomicU64,
    prefix: watch::Sender<Prefix>,
}

impl Ledger {
    pub fn new(done: RangeSet) -> Ledger {
        let prefix = Prefix {
            len: done.prefix(),
            last: false,
        };
        Ledger {
            written: Mutex::new(done),
            changes: AtomicU64::new(0),
            prefix: watch::channel(prefix).0,
        }
    }

    pub fn record(&self, range: Range<u64>) {
        let prefix = {
            let mut written = self.written.lock().unwrap();
            written.insert(range);
            written.prefix()
        };
        self.changes.fetch_add(1, Ordering::Release);
        self.prefix.send_if_modified(|current| {
            let grew = prefix > current.len;
            current.len = current.len.max(prefix);
            grew
        });
    }

    /// No more bytes will be written: lets the hasher finish.
    pub fn seal(&self) {
        self.prefix.send_modify(|current| current.last = true);
    }

    pub fn snapshot(&self) -> RangeSet {
        self.written.lock().unwrap().clone()
    }

    pub fn changes(&self) -> u64 {
        self.changes.load(Ordering::Acquire)
    }

    pub fn follow_prefix(&self) -> watch::Receiver<Prefix> {
        self.prefix.subscribe()
    }
}

/// Sync the `.part`, then record what was written before the sync: the state never claims a
/// byte that is not on disk.
pub async fn checkpoint(
    part: &PartWriter,
    ledger: &Ledger,
    state: &mut ResumeState,
    state_path: &std::path::Path,
) -> std::io::Result<()> {
    state.done = ledger.snapshot();
    let part = part.clone();
    tokio::task::spawn_blocking(move || part.sync_data())
        .await
        .map_err(std::io::Error::other)??;
    let (snapshot, path) = (state.clone(), state_path.to_path_buf());
    tokio::task::spawn_blocking(move || snapshot.save(&path))
        .await
        .map_err(std::io::Error::other)?
}

/// Checkpoint every `interval` while bytes keep arriving, until `stop` fires.
pub async fn checkpoint_loop(
    part: PartWriter,
    ledger: Arc<Ledger>,
    mut state: ResumeState,
    state_path: std::path::PathBuf,
    interval: Duration,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let mut seen = ledger.changes();
    loop {
        tokio::select! {
            () = stop.cancelled() => return Ok(()),
            () = tokio::time::sleep(interval) => {}
        }
        let now = ledger.changes();
        if now != seen {
            seen = now;
            checkpoint(&part, &ledger, &mut state, &state_path).await?;
        }
    }
}

/// SHA-256 of the `.part`'s content, read back as its done prefix grows, until the ledger is
/// sealed; `tap` sees the same bytes. Returns the digest and the number of bytes hashed.
pub async fn hash_prefix(
    part: PartWriter,
    mut prefix: watch::Receiver<Prefix>,
    tap: Option<Arc<dyn ContentTap>>,
) -> std::io::Result<(String, u64)> {
    if let Some(tap) = &tap {
        tap.restart();
    }
    let mut hasher = Sha256::new();
    let mut buffers = [vec![0u8; 1 << 20], vec![0u8; 1 << 20]];
    let mut hashed = 0u64;
    loop {
        let target = match prefix.wait_for(|p| p.len > hashed || p.last).await {
            Ok(p) => *p,
            Err(_) => {
                return Err(std::io::Error::other(
                    "transfer ended before the hash was complete",
                ));
            }
        };
        if target.len > hashed {
            let (part, tap) = (part.clone(), tap.clone());
            (hasher, buffers) = tokio::task::spawn_blocking(move || {
                hash_range(&part, tap.as_deref(), hasher, buffers, hashed..target.len)
            })
            .await
            .map_err(std::io::Error::other)??;
            hashed = target.len;
        }
        if target.last && target.len == hashed {
            return Ok((hex::encode(hasher.finalize()), hashed));
        }
    }
}

/// Hash `range` piece by piece, reading (for sealed parts: decrypting) the next piece while
/// another thread hashes the current one: the hash finishes sooner after the done prefix jumps.
fn hash_range(
    part: &PartWriter,
    tap: Option<&dyn ContentTap>,
    mut hasher: Sha256,
    mut buffers: [Vec<u8>; 2],
    range: Range<u64>,
) -> std::io::Result<(Sha256, [Vec<u8>; 2])> {
    let piece = buffers[0].len() as u64;
    let mut at = range.start;
    // Bytes of `buffers[0]` read and not yet hashed.
    let mut ready = 0;
    while at < range.end || ready > 0 {
        let n = (range.end - at).min(piece) as usize;
        let [current, next] = &mut buffers;
        let (hashing, reading) = (&current[..ready], &mut next[..n]);
        let hasher = &mut hasher;
        std::thread::scope(|scope| {
            let hashed = scope.spawn(move || {
                hasher.update(hashing);
                if let Some(tap) = tap {
                    tap.feed(hashing);
                }
            });
            let read = match n {
                0 => Ok(()),
                _ => part.read_plain(reading, at),
            };
            hashed.join().expect("hashing does not panic");
            read
        })?;
        at += n as u64;
        ready = n;
        buffers.swap(0, 1);
    }
    Ok((hasher, buffers))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::PartFile;

    #[tokio::test]
    async fn hashes_the_prefix_as_it_grows_out_of_order() {
        let dir = tempfile::tempdir().unwrap();
        let part = PartWriter::Plain(PartFile::open(&dir.path().join("p"), Some(6)).unwrap());
        let ledger = std::sync::Arc::new(Ledger::new(RangeSet::new()));
        let hasher = tokio::spawn(hash_prefix(part.clone(), ledger.follow_prefix(), None));
        for range in part.write_at(b"def", 3).unwrap() {
            ledger.record(range);
        }
        for range in part.write_at(b"abc", 0).unwrap() {
            ledger.record(range);
        }
        ledger.seal();
        let (digest, len) = hasher.await.unwrap().unwrap();
        assert_eq!(len, 6);
        assert_eq!(digest, hex::encode(Sha256::digest(b"abcdef")));
    }

    #[tokio::test]
    async fn checkpoint_records_exactly_the_written_ranges() {
        let dir = tempfile::tempdir().unwrap();
        let part = PartWriter::Plain(PartFile::open(&dir.path().join("p"), Some(10)).unwrap());
        let ledger = Ledger::new(RangeSet::new());
        ledger.record(4..8);
        let mut state = ResumeState::new("u".into());
        let path = dir.path().join("p.json");
        checkpoint(&part, &ledger, &mut state, &path).await.unwrap();
        assert_eq!(
            ResumeState::load(&path).unwrap().done.missing(10),
            vec![0..4, 8..10]
        );
    }
}
