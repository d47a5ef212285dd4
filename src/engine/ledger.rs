//! The ledger of written bytes for one transfer, and the two followers that read it: the
//! checkpointer (which makes the resume state durable) and the hasher (which computes SHA-256
//! over the growing done prefix while the download runs, so finishing costs no extra pass).
//!
//! The hasher takes the content of the prefix from the ledger's window (`super::window`) when
//! it is still in memory, and reads the rest back from the `.part` (for a sealed part: opens
//! its chunks).
//! With a window, writers wait ([`Ledger::room_for`]) rather than run further ahead of a busy
//! hasher than the window holds: on a busy CPU, a hasher that falls behind would otherwise
//! have to read everything back, which costs more CPU still. They do not wait for a hasher
//! that has not moved for [`HASHER_STALL`]: it is waiting for the done prefix, held up by a
//! slow connection, and the others go on (what overflows the window is read back later). The
//! writer of the first missing byte never waits (its bytes start at the done prefix).

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::window::{Next, Window};
use super::writer::{PartWriter, Written};
use super::{ContentTap, TransferError};
use crate::store::{RangeSet, ResumeState};

/// Writers stop waiting for a hasher that has not moved for this long (it waits for the done
/// prefix itself, i.e. for a slow connection, not for the CPU).
pub const HASHER_STALL: Duration = Duration::from_millis(250);

/// Where the done prefix stands, and whether it will grow further.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Prefix {
    pub len: u64,
    pub last: bool,
}

/// Byte ranges written to the `.part` (in the page cache, not necessarily on disk yet), and
/// the content of those not hashed yet, as far as the window holds it.
#[derive(Debug)]
pub struct Ledger {
    written: Mutex<RangeSet>,
    window: Mutex<Window>,
    /// The window's capacity (0: no window, writers never wait).
    capacity: u64,
    changes: AtomicU64,
    prefix: watch::Sender<Prefix>,
    /// Where the window starts: where the hasher stands, but no lower than the done prefix a
    /// resumed transfer starts from (the hasher reads that back; new bytes come after it), and
    /// `u64::MAX` once the hasher has stopped.
    window_start: watch::Sender<u64>,
    /// When the hasher last made progress.
    hasher_seen: Mutex<Instant>,
}

impl Ledger {
    /// A ledger starting from `done`, keeping up to `window` bytes of content for the hasher.
    pub fn new(done: RangeSet, window: u64) -> Ledger {
        let prefix = Prefix {
            len: done.prefix(),
            last: false,
        };
        Ledger {
            written: Mutex::new(done),
            window: Mutex::new(Window::new(window)),
            capacity: window,
            changes: AtomicU64::new(0),
            prefix: watch::channel(prefix).0,
            window_start: watch::channel(prefix.len).0,
            hasher_seen: Mutex::new(Instant::now()),
        }
    }

    /// Count `written` (its content goes to the window first, so the hasher finds it there).
    pub fn record(&self, written: Written) {
        let range = written.range();
        self.window
            .lock()
            .unwrap()
            .insert(written.at, written.plain);
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

    /// Wait until bytes up to `end` fit in the window (`end` is at most the window's capacity
    /// past its start), or until the hasher has not moved for [`HASHER_STALL`]. At once without
    /// a window, or once the hasher has stopped.
    pub async fn room_for(&self, end: u64) {
        if self.capacity == 0 {
            return;
        }
        let mut start = self.window_start.subscribe();
        loop {
            if end <= start.borrow_and_update().saturating_add(self.capacity) {
                return;
            }
            let deadline = *self.hasher_seen.lock().unwrap() + HASHER_STALL;
            if Instant::now() >= deadline {
                return;
            }
            // The sender lives as long as `self`: `changed` never fails.
            let _ = tokio::time::timeout_at(deadline, start.changed()).await;
        }
    }

    /// The hasher has hashed everything before `at`.
    fn hashed_to(&self, at: u64) {
        *self.hasher_seen.lock().unwrap() = Instant::now();
        self.window_start.send_if_modified(|start| {
            let moved = at > *start;
            *start = (*start).max(at);
            moved
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
/// byte that is not on disk. An error names the file that failed: the `.part` or the state.
pub async fn checkpoint(
    part: &PartWriter,
    ledger: &Ledger,
    state: &mut ResumeState,
    state_path: &std::path::Path,
) -> Result<(), TransferError> {
    state.done = ledger.snapshot();
    let part_path = part.path().to_path_buf();
    let part = part.clone();
    tokio::task::spawn_blocking(move || part.sync_data())
        .await
        .map_err(std::io::Error::other)
        .and_then(|r| r)
        .map_err(TransferError::io("syncing", part_path))?;
    let (snapshot, path) = (state.clone(), state_path.to_path_buf());
    tokio::task::spawn_blocking(move || snapshot.save(&path))
        .await
        .map_err(std::io::Error::other)
        .and_then(|r| r)
        .map_err(TransferError::io("saving the resume state", state_path))
}

/// Checkpoint every `interval` while bytes keep arriving, until `stop` fires.
pub async fn checkpoint_loop(
    part: PartWriter,
    ledger: Arc<Ledger>,
    mut state: ResumeState,
    state_path: std::path::PathBuf,
    interval: Duration,
    stop: CancellationToken,
) -> Result<(), TransferError> {
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

/// What the hasher found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hashed {
    /// SHA-256 of the content, in hex.
    pub sha256: String,
    /// Bytes hashed.
    pub len: u64,
    /// Bytes among them that were not in the window and were read back from the `.part`.
    pub read_back: u64,
}

/// SHA-256 of the `.part`'s content as its done prefix grows, until the ledger is sealed;
/// `tap` sees the same bytes.
pub async fn hash_prefix(
    part: PartWriter,
    ledger: Arc<Ledger>,
    tap: Option<Arc<dyn ContentTap>>,
) -> std::io::Result<Hashed> {
    if let Some(tap) = &tap {
        tap.restart();
    }
    // However the hasher ends (done, failed, aborted), no writer waits for it any longer.
    let _release = Release(Arc::clone(&ledger));
    let mut prefix = ledger.follow_prefix();
    let mut hashing = Hashing {
        hasher: Sha256::new(),
        buffers: [vec![0u8; 1 << 20], vec![0u8; 1 << 20]],
        read_back: 0,
    };
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
            let (part, ledger, tap) = (part.clone(), Arc::clone(&ledger), tap.clone());
            hashing = tokio::task::spawn_blocking(move || {
                hashing.range(&part, &ledger, tap.as_deref(), hashed..target.len)?;
                Ok::<_, std::io::Error>(hashing)
            })
            .await
            .map_err(std::io::Error::other)??;
            hashed = target.len;
        }
        if target.last && target.len == hashed {
            tracing::debug!(hashed, read_back = hashing.read_back, "content hashed");
            return Ok(Hashed {
                sha256: hex::encode(hashing.hasher.finalize()),
                len: hashed,
                read_back: hashing.read_back,
            });
        }
    }
}

/// Releases the writers waiting for the hasher when it stops.
struct Release(Arc<Ledger>);

impl Drop for Release {
    fn drop(&mut self) {
        self.0.hashed_to(u64::MAX);
    }
}

/// The hasher's state between two advances of the prefix.
struct Hashing {
    hasher: Sha256,
    /// Two buffers for reading back: one read while the other is hashed.
    buffers: [Vec<u8>; 2],
    /// Bytes that were not in the window and were read back.
    read_back: u64,
}

impl Hashing {
    /// Hash `range`: what the window holds from memory, the rest read back from `part`.
    fn range(
        &mut self,
        part: &PartWriter,
        ledger: &Ledger,
        tap: Option<&dyn ContentTap>,
        range: Range<u64>,
    ) -> std::io::Result<()> {
        let mut at = range.start;
        while at < range.end {
            let next = ledger.window.lock().unwrap().next(at, range.end);
            match next {
                Next::Held(content) => {
                    self.hasher.update(&content);
                    if let Some(tap) = tap {
                        tap.feed(&content);
                    }
                    at += content.len() as u64;
                }
                Next::ReadBack(len) => {
                    self.read_back(part, tap, at..at + len)?;
                    self.read_back += len;
                    at += len;
                }
            }
            ledger.hashed_to(at);
        }
        Ok(())
    }

    /// Hash `range` read back from `part` piece by piece, reading (for sealed parts:
    /// decrypting) the next piece while another thread hashes the current one.
    fn read_back(
        &mut self,
        part: &PartWriter,
        tap: Option<&dyn ContentTap>,
        range: Range<u64>,
    ) -> std::io::Result<()> {
        let piece = self.buffers[0].len() as u64;
        let mut at = range.start;
        // Bytes of `buffers[0]` read and not yet hashed.
        let mut ready = 0;
        while at < range.end || ready > 0 {
            let n = (range.end - at).min(piece) as usize;
            let [current, next] = &mut self.buffers;
            let (hashing, reading) = (&current[..ready], &mut next[..n]);
            let hasher = &mut self.hasher;
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
            self.buffers.swap(0, 1);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypt::SealedPart;
    use crate::crypt::format::{self, CHUNK};
    use crate::store::PartFile;
    use bytes::Bytes;

    /// Write `pieces` (offset, bytes) through `part`, recording them, then seal the ledger.
    fn write_all(part: &PartWriter, ledger: &Ledger, pieces: &[(u64, Bytes)], total: u64) {
        for (at, bytes) in pieces {
            for written in part.write_at(bytes.clone(), *at).unwrap() {
                ledger.record(written);
            }
        }
        for written in part.finish(total).unwrap() {
            ledger.record(written);
        }
        ledger.seal();
    }

    fn sealed_writer(path: &std::path::Path, total: u64) -> PartWriter {
        let file_key = format::new_file_key();
        let header = format::header(&file_key, &[]);
        let len = format::sealed_len(header.len() as u64, total);
        let part = PartFile::open(path, Some(len)).unwrap();
        let nonce = format::new_nonce();
        let sealed = SealedPart::create(part, &file_key, &header, &nonce, Some(total)).unwrap();
        PartWriter::Sealed(Arc::new(sealed))
    }

    #[tokio::test]
    async fn hashes_the_prefix_as_it_grows_out_of_order() {
        let dir = tempfile::tempdir().unwrap();
        let part = PartWriter::Plain(PartFile::open(&dir.path().join("p"), Some(6)).unwrap());
        let ledger = Arc::new(Ledger::new(RangeSet::new(), 0));
        let hasher = tokio::spawn(hash_prefix(part.clone(), Arc::clone(&ledger), None));
        let pieces = [
            (3, Bytes::from_static(b"def")),
            (0, Bytes::from_static(b"abc")),
        ];
        write_all(&part, &ledger, &pieces, 6);
        let hashed = hasher.await.unwrap().unwrap();
        assert_eq!((hashed.len, hashed.read_back), (6, 6));
        assert_eq!(hashed.sha256, hex::encode(Sha256::digest(b"abcdef")));
    }

    /// A sealed part written out of order, hashed with windows of several sizes: from memory,
    /// partly read back (opened) after evictions, or all read back, the digest is the same.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_sealed_part_hashes_the_same_from_memory_and_read_back() {
        let total = 40 * CHUNK + 777;
        let mut plain = vec![0u8; total as usize];
        rand::fill(&mut plain[..]);
        let plain = Bytes::from(plain);
        let expected = hex::encode(Sha256::digest(&plain));
        // Pieces of odd sizes, in an order that leaves gaps before the prefix catches up.
        let cuts = [0, 100_000, 700_000, 1_500_000, 2_000_000, total];
        let mut pieces: Vec<(u64, Bytes)> = cuts
            .windows(2)
            .map(|w| (w[0], plain.slice(w[0] as usize..w[1] as usize)))
            .collect();
        pieces.swap(0, 3);
        pieces.swap(1, 4);
        let dir = tempfile::tempdir().unwrap();
        for (capacity, read_back) in [(0, Some(total)), (1 << 20, None), (8 << 20, Some(0))] {
            let part = sealed_writer(&dir.path().join(format!("{capacity}.age.part")), total);
            let ledger = Arc::new(Ledger::new(RangeSet::new(), capacity));
            let hasher = tokio::spawn(hash_prefix(part.clone(), Arc::clone(&ledger), None));
            write_all(&part, &ledger, &pieces, total);
            let hashed = hasher.await.unwrap().unwrap();
            assert_eq!(
                (&hashed.sha256, hashed.len),
                (&expected, total),
                "{capacity}"
            );
            match read_back {
                Some(bytes) => assert_eq!(hashed.read_back, bytes, "{capacity}"),
                None => assert!(hashed.read_back > 0 && hashed.read_back < total),
            }
        }
    }

    #[tokio::test]
    async fn a_writer_past_the_window_waits_for_the_hasher_until_it_stops() {
        const MIB: u64 = 1 << 20;
        let dir = tempfile::tempdir().unwrap();
        let part = PartWriter::Plain(PartFile::open(&dir.path().join("p"), Some(4 * MIB)).unwrap());
        let ledger = Arc::new(Ledger::new(RangeSet::new(), MIB));
        let soon = |end| tokio::time::timeout(Duration::from_millis(50), ledger.room_for(end));
        assert!(
            soon(MIB).await.is_ok(),
            "the first window's worth never waits"
        );
        assert!(soon(MIB + 1).await.is_err());
        let hasher = tokio::spawn(hash_prefix(part.clone(), Arc::clone(&ledger), None));
        for written in part
            .write_at(Bytes::from(vec![7; MIB as usize]), 0)
            .unwrap()
        {
            ledger.record(written);
        }
        assert!(
            soon(2 * MIB).await.is_ok(),
            "the hasher moved the window on"
        );
        assert!(soon(2 * MIB + 1).await.is_err());
        hasher.abort();
        assert!(hasher.await.unwrap_err().is_cancelled());
        assert!(
            soon(u64::MAX).await.is_ok(),
            "a stopped hasher holds no one back"
        );

        // Resumed with 3 MiB done: new bytes after them need not wait for the read-back.
        let mut done = RangeSet::new();
        done.insert(0..3 * MIB);
        let ledger = Ledger::new(done, MIB);
        let room = |end| tokio::time::timeout(Duration::from_millis(50), ledger.room_for(end));
        assert!(room(4 * MIB).await.is_ok());
        assert!(room(4 * MIB + 1).await.is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn writers_stop_waiting_for_a_hasher_that_does_not_move() {
        let ledger = Ledger::new(RangeSet::new(), 1 << 20);
        let started = Instant::now();
        ledger.room_for(2 << 20).await;
        assert_eq!(started.elapsed(), HASHER_STALL);
        ledger.room_for(3 << 20).await;
        assert_eq!(
            started.elapsed(),
            HASHER_STALL,
            "no second wait while it stays still"
        );
        ledger.hashed_to(1000);
        let moved = Instant::now();
        ledger.room_for(3 << 20).await;
        assert_eq!(
            moved.elapsed(),
            HASHER_STALL,
            "it moved: worth waiting for again"
        );
    }

    #[tokio::test]
    async fn checkpoint_records_exactly_the_written_ranges() {
        let dir = tempfile::tempdir().unwrap();
        let part = PartWriter::Plain(PartFile::open(&dir.path().join("p"), Some(10)).unwrap());
        let ledger = Ledger::new(RangeSet::new(), 0);
        ledger.record(Written {
            at: 4,
            plain: Bytes::from_static(b"efgh"),
        });
        let mut state = ResumeState::new("u".into());
        let path = dir.path().join("p.json");
        checkpoint(&part, &ledger, &mut state, &path).await.unwrap();
        assert_eq!(
            ResumeState::load(&path).unwrap().done.missing(10),
            vec![0..4, 8..10]
        );
    }

    /// A failed write of the state (a full disk, here a missing directory) names the state
    /// file, not the `.part`.
    #[tokio::test]
    async fn a_failed_state_write_names_the_state_file() {
        let dir = tempfile::tempdir().unwrap();
        let part = PartWriter::Plain(PartFile::open(&dir.path().join("p.part"), Some(4)).unwrap());
        let ledger = Ledger::new(RangeSet::new(), 0);
        let mut state = ResumeState::new("u".into());
        let path = dir.path().join("gone/p.part.json");
        let error = checkpoint(&part, &ledger, &mut state, &path)
            .await
            .unwrap_err();
        let message = error.to_string();
        assert!(message.contains("gone/p.part.json"), "{message}");
        assert!(message.starts_with("saving the resume state"), "{message}");
    }
}
