//! Segments: one large file fetched by many workers at once, each segment an item of its own.
//!
//! `enqueue --segment-size` cuts a file larger than the segment size into byte ranges aligned
//! to 64 KiB (an age chunk, so that an encrypted output can be sealed out of order), queued as
//! items `part` 1..=N. Workers claim, lease, heartbeat and sweep them like whole items. A
//! segment's item goes `queued` → `leased` → `done` (or back to `queued` when its lease expires
//! or its fetch fails, refetched whole by the next claimer); a segment is `done` only once its
//! bytes are durable. The worker that ends the last one (the file's row locked, so two last
//! segments cannot both miss each other) verifies the whole output, records the file in the
//! index and installs it, in the same transaction (`queue::complete_segment`).
//!
//! To object storage (`super::objects`), a segment is fetched into a local file of its own,
//! uploaded as its part of the file's multipart upload, and its part id recorded with it; the
//! last one completes the upload.
//!
//! To a shared directory, every segment writes its range into one staging file,
//! `tmp/fleet/segments-FILE_ID`, with positional writes (no lock across workers) and
//! `fdatasync`s it before it is recorded done; the last one hashes the whole file, checks its
//! size and renames it into place.

use std::ops::Range;
use std::path::{Path, PathBuf};

use deadpool_postgres::Pool;

use std::sync::Arc;

use super::FleetError;
use super::objects::{Objects, read_range};
use super::queue::{self, Claim, Completion};
use super::worker::{WorkerSummary, failed, give_up, install, retry_or_give_up};
use crate::crypt::format::CHUNK;
use crate::engine::{Engine, PartWriter, TransferError, TransferSpec, fetch_range};
use crate::store::PartFile;
use crate::store::index::FileOutcome;

/// The default `--segment-size`: four requests of the engine's default chunk for a 256 MiB
/// file, and room for 10,000 parts (S3's limit) up to 640 GiB.
pub const DEFAULT_SEGMENT_SIZE: u64 = 64 * 1024 * 1024;

/// The segments of a file of `size` bytes: none (the file is one whole item) when it is not
/// larger than `segment_size` (rounded up to a whole number of 64 KiB chunks) or that is
/// `None` or 0; else ranges of that size, the last one shorter.
pub fn ranges(size: u64, segment_size: Option<u64>) -> Vec<Range<u64>> {
    let Some(step) = segment_size
        .filter(|&s| s > 0)
        .map(|s| s.div_ceil(CHUNK) * CHUNK)
    else {
        return Vec::new();
    };
    if size <= step {
        return Vec::new();
    }
    (0..size.div_ceil(step))
        .map(|n| n * step..((n + 1) * step).min(size))
        .collect()
}

/// The staging file all the segments of `file_id` write into, in the shared directory.
pub fn staging(tmp: &Path, file_id: &str) -> PathBuf {
    tmp.join("fleet").join(format!("segments-{file_id}"))
}

/// A segment in flight.
pub struct Flight {
    pub claim: Claim,
    /// Where its bytes are written: the shared staging file, or (to object storage) a local
    /// file of this segment's own.
    pub staged: PathBuf,
    pub output: PathBuf,
    /// The output's path relative to the data directory (the object's name under the prefix).
    pub relative: String,
    pub objects: Option<Arc<Objects>>,
}

/// What a fetched segment left: bytes fetched by this worker, and (to object storage) the
/// multipart upload and this part's id.
#[derive(Debug, Default)]
pub struct Fetched {
    pub bytes: u64,
    pub upload: Option<(String, String)>,
}

/// Why a segment is not fetched or not uploaded.
#[derive(Debug)]
pub enum Failed {
    Transfer(TransferError),
    Upload(FleetError),
}

pub type Landed = (Flight, Result<Fetched, Failed>);

/// Fetch `flight`'s segment into its staging file (created at the file's size by the first
/// segment to start) and make it durable; to object storage, upload it as its part.
pub async fn fetch(engine: Engine, pool: Pool, spec: TransferSpec, flight: Flight) -> Landed {
    let total = flight.claim.file.meta.size_bytes;
    let range = flight
        .claim
        .segment
        .as_ref()
        .map_or(0..total, |s| s.range.clone());
    // Its own file (sparse: only the range is written) when uploading, else the shared one.
    let len = flight.objects.is_none().then_some(total);
    let fetched = fetch_into(&engine, &spec, &flight.staged, range.clone(), total, len).await;
    let result = match (fetched, &flight.objects) {
        (Err(error), _) => Err(Failed::Transfer(error)),
        (Ok(bytes), None) => Ok(Fetched {
            bytes,
            upload: None,
        }),
        (Ok(bytes), Some(objects)) => upload(&pool, objects, &flight, range)
            .await
            .map(|upload| Fetched {
                bytes,
                upload: Some(upload),
            })
            .map_err(Failed::Upload),
    };
    (flight, result)
}

async fn fetch_into(
    engine: &Engine,
    spec: &TransferSpec,
    staged: &Path,
    range: Range<u64>,
    total: u64,
    len: Option<u64>,
) -> Result<u64, TransferError> {
    let path = staged.to_path_buf();
    let opened = tokio::task::spawn_blocking(move || {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        PartFile::open(&path, len)
    });
    let part = opened
        .await
        .map_err(std::io::Error::other)
        .and_then(|opened| opened)
        .map_err(TransferError::io("opening", staged))?;
    fetch_range(engine, spec, range, total, &PartWriter::Plain(part)).await
}

/// Upload the segment's bytes as its part of the file's multipart upload (started by the
/// first segment to get here); returns the upload and the part's id.
async fn upload(
    pool: &Pool,
    objects: &Objects,
    flight: &Flight,
    range: Range<u64>,
) -> Result<(String, String), FleetError> {
    let part = flight.claim.segment.as_ref().map_or(1, |s| s.part);
    let upload = objects
        .upload_id(pool, &flight.claim.file.meta.id, &flight.relative)
        .await?;
    let staged = flight.staged.clone();
    let content = tokio::task::spawn_blocking(move || {
        let content = read_range(&staged, range);
        let _ = std::fs::remove_file(&staged);
        content
    })
    .await
    .map_err(std::io::Error::other)
    .and_then(|read| read)
    .map_err(|source| FleetError::Install {
        id: flight.claim.file.meta.id.clone(),
        source,
    })?;
    let etag = objects
        .put_part(&flight.relative, &upload, part, content)
        .await?;
    Ok((upload, etag))
}

/// Record a landed segment: done (and, if it was the file's last, the file verified, recorded
/// and installed), or retried later, or given up.
pub async fn finish(
    pool: &Pool,
    root: &Path,
    (flight, result): Landed,
    summary: &mut WorkerSummary,
) -> Result<(), FleetError> {
    let Flight {
        claim,
        staged,
        output,
        relative,
        objects,
    } = flight;
    let fetched = match result {
        Ok(fetched) => fetched,
        Err(Failed::Transfer(error)) if error.is_cancelled() => return Ok(()),
        Err(Failed::Transfer(error)) => {
            return failed(pool, root, &claim, &Err(error), summary)
                .await
                .map(drop);
        }
        Err(Failed::Upload(error)) => {
            let reason = error.to_string();
            return retry_or_give_up(pool, &claim, &reason, summary)
                .await
                .map(drop);
        }
    };
    let size = claim.file.meta.size_bytes;
    let etag = fetched.upload.as_ref().map(|(_, etag)| etag.as_str());
    let completion = match (&objects, &fetched.upload) {
        (Some(objects), Some((upload, _))) => {
            let last = async |parts| {
                let done = objects.complete(&relative, upload, parts, size).await;
                done.map_err(FleetError::from)
            };
            queue::complete_segment(pool, &claim, etag, last, || Ok(())).await?
        }
        _ => {
            let last = |_parts| verify(staged.clone(), size, relative.clone());
            let install = || install(&staged, &output);
            queue::complete_segment(pool, &claim, etag, last, install).await?
        }
    };
    let id = &claim.file.meta.id;
    let part = claim.segment.as_ref().map_or(0, |s| s.part);
    let recorded = completion == Completion::Recorded;
    match completion {
        Completion::Recorded | Completion::Stored => {
            summary.segments += 1;
            summary.bytes += fetched.bytes;
            summary.completed += u64::from(recorded);
            tracing::info!(
                event = "fleet_segment_done",
                id,
                part,
                last = recorded,
                "segment done"
            );
        }
        Completion::PathTaken => {
            let reason = format!("{relative} is recorded for another file");
            give_up(pool, &claim, &reason, summary).await?;
        }
        Completion::LeaseLost => {
            summary.lost += 1;
            tracing::warn!(
                event = "fleet_lease_lost",
                id,
                part,
                "the lease was lost: segment discarded"
            );
        }
    }
    Ok(())
}

/// The whole staging file, once every segment is in: its size checked, its SHA-256 computed.
async fn verify(staged: PathBuf, size: u64, path: String) -> Result<FileOutcome, FleetError> {
    let id = path.clone();
    let hashed = tokio::task::spawn_blocking(move || {
        let found = std::fs::metadata(&staged)?.len();
        if found != size {
            return Err(std::io::Error::other(format!(
                "{} is {found} bytes once every segment is in, not {size}",
                staged.display()
            )));
        }
        crate::engine::sha256_of(&staged)
    });
    let sha256 = hashed
        .await
        .map_err(std::io::Error::other)
        .and_then(|hashed| hashed)
        .map_err(|source| FleetError::Install { id, source })?;
    Ok(FileOutcome::Complete {
        path,
        sha256,
        etag: None,
        retries: 0,
        encrypted: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;

    #[test]
    fn large_files_become_aligned_segments_and_small_ones_stay_whole() {
        assert_eq!(ranges(256 * MIB, Some(16 * MIB)).len(), 16);
        assert_eq!(ranges(256 * MIB, Some(16 * MIB))[15], 240 * MIB..256 * MIB);
        assert_eq!(ranges(16 * MIB, Some(16 * MIB)), Vec::<Range<u64>>::new());
        assert_eq!(ranges(100 * MIB, None), Vec::<Range<u64>>::new());
        assert_eq!(ranges(100 * MIB, Some(0)), Vec::<Range<u64>>::new());
        // A size that is not a whole number of chunks is rounded up to one.
        assert_eq!(
            ranges(200_000, Some(100_000)),
            vec![0..131_072, 131_072..200_000]
        );
        for range in ranges(1_000_000_007, Some(3 * MIB + 1)) {
            assert_eq!(range.start % CHUNK, 0, "{range:?}");
        }
    }
}
