//! Re-hashing: `jobs` threads take items off one shared counter, each reading through its
//! own large buffer, so many small files keep every thread busy and a big file streams
//! through in large reads.

use std::io::{self, Read};
use std::sync::atomic::{AtomicUsize, Ordering};

use sha2::{Digest, Sha256};

use super::{Finding, Item, Opened, Opener, Progress};

/// Bytes per read.
const BUFFER_BYTES: usize = 1 << 20;

/// The findings of hashing, how many bytes were read, and how many encrypted files could only
/// be checked for size.
#[derive(Debug, Default)]
pub struct Hashed {
    pub findings: Vec<Finding>,
    pub bytes: u64,
    pub unchecked: u64,
}

/// Check every item on up to `jobs` threads.
pub fn check_all(
    items: &[Item],
    open: &dyn Opener,
    jobs: usize,
    progress: &dyn Progress,
) -> Hashed {
    let next = AtomicUsize::new(0);
    let threads = jobs.clamp(1, items.len().max(1));
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| scope.spawn(|| worker(items, &next, open, progress)))
            .collect();
        let mut all = Hashed::default();
        for worker in workers {
            let hashed = worker.join().expect("a hashing thread panicked");
            all.findings.extend(hashed.findings);
            all.bytes += hashed.bytes;
            all.unchecked += hashed.unchecked;
        }
        all
    })
}

fn worker(
    items: &[Item],
    next: &AtomicUsize,
    open: &dyn Opener,
    progress: &dyn Progress,
) -> Hashed {
    let mut buffer = vec![0; BUFFER_BYTES];
    let mut hashed = Hashed::default();
    while let Some(item) = items.get(next.fetch_add(1, Ordering::Relaxed)) {
        let checked = check(item, open, &mut buffer, progress);
        hashed.findings.extend(checked.finding);
        hashed.bytes += checked.bytes;
        hashed.unchecked += u64::from(checked.unchecked);
    }
    hashed
}

/// What checking one item came to.
#[derive(Default)]
struct Checked {
    /// None when it matches (or was only size-checked and fits).
    finding: Option<Finding>,
    /// Bytes hashed.
    bytes: u64,
    /// Encrypted, and only its presence and size were checked.
    unchecked: bool,
}

impl Checked {
    fn found(finding: Finding) -> Checked {
        Checked {
            finding: Some(finding),
            ..Checked::default()
        }
    }
}

fn check(item: &Item, open: &dyn Opener, buffer: &mut [u8], progress: &dyn Progress) -> Checked {
    let item = item.clone();
    let mut reader = match open.open(&item) {
        Ok(Opened::Plain(reader)) => reader,
        Ok(Opened::Unchecked) if item.sha256.is_none() => {
            return Checked::found(Finding::Unhashed { item });
        }
        Ok(Opened::Unchecked) => {
            // Its bytes count as done for the bar, though none was hashed.
            progress.hashed(item.size.unwrap_or(0));
            return Checked {
                unchecked: true,
                ..Checked::default()
            };
        }
        Err(error) if error.kind() == io::ErrorKind::NotFound => {
            return Checked::found(Finding::Missing { item });
        }
        Err(error) => return Checked::found(unreadable(item, &error)),
    };
    match hash_reader(&mut reader, buffer, &|bytes| progress.hashed(bytes)) {
        Err(error) => Checked::found(unreadable(item, &error)),
        Ok((sha256, size)) => Checked {
            finding: judge(item, sha256, size),
            bytes: size,
            unchecked: false,
        },
    }
}

fn judge(item: Item, sha256: String, size: u64) -> Option<Finding> {
    let Some(expected) = &item.sha256 else {
        return Some(Finding::Unhashed { item });
    };
    let same_size = item.size.is_none_or(|expected| expected == size);
    if same_size && expected.eq_ignore_ascii_case(&sha256) {
        None
    } else {
        Some(Finding::Changed { item, sha256, size })
    }
}

fn unreadable(item: Item, error: &io::Error) -> Finding {
    Finding::Unreadable {
        item,
        error: error.to_string(),
    }
}

/// The lowercase hex SHA-256 of everything `reader` yields, and its length, reading through
/// `buffer` and telling `hashed` after each read.
fn hash_reader(
    reader: &mut dyn Read,
    buffer: &mut [u8],
    hashed: &dyn Fn(u64),
) -> io::Result<(String, u64)> {
    let mut hasher = Sha256::new();
    let mut total = 0u64;
    loop {
        let read = match reader.read(buffer) {
            Ok(0) => return Ok((hex::encode(hasher.finalize()), total)),
            Ok(read) => read,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(error),
        };
        hasher.update(&buffer[..read]);
        total += read as u64;
        hashed(read as u64);
    }
}
