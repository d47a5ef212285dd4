//! Segments: one large file fetched by many workers at once, each segment an item of its own.
//!
//! `enqueue --segment-size` cuts a file larger than the segment size into byte ranges aligned
//! to 64 KiB (an age chunk, so that an encrypted output can be sealed out of order), queued as
//! items `part` 1..=N. Workers claim, lease, heartbeat and sweep them like whole items. A
//! segment's item goes `queued` → `leased` → `done` (or back to `queued` when its lease expires
//! or its fetch fails); a segment is `done` only once its bytes are durable. Into the shared
//! file, a segment saves its progress (`done_bytes`, whole chunks, after `fdatasync`) every
//! second, and the next claimer resumes there. The worker that ends the last one (the file's
//! row locked, so two last segments cannot both miss each other) verifies the whole output,
//! records the file in the index and installs it, in the same transaction
//! (`queue::complete_segment`).
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

use age_core::format::FileKey;
use sha2::{Digest, Sha256};

use super::objects::{Objects, read_range};
use super::queue::{self, Claim, Completion};
use super::worker::{WorkerSummary, failed, give_up, install, retry_or_give_up};
use super::{FleetError, connection, lock_file, sql};
use crate::crypt::format::{BadChunk, CHUNK, NONCE, chunk_of, chunk_offset, sealed_len};
use crate::crypt::{Encryption, PayloadOpener, SealedPart, SealedState};
use crate::engine::ledger::Ledger;
use crate::engine::{Engine, PartWriter, TransferError, TransferSpec, fetch_range};
use crate::store::index::FileOutcome;
use crate::store::{PartFile, RangeSet};

/// The default `--segment-size`: four requests of the engine's default chunk for a 256 MiB
/// file, and room for 10,000 parts (S3's limit) up to 640 GiB.
pub const DEFAULT_SEGMENT_SIZE: u64 = 64 * 1024 * 1024;

/// How often a segment written into the shared file saves its progress.
const CHECKPOINT: std::time::Duration = std::time::Duration::from_secs(1);

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

/// What a fetched segment left: bytes fetched by this worker, the file's shared age file when
/// encrypting, and (to object storage) the multipart upload and this part's id.
#[derive(Default)]
pub struct Fetched {
    pub bytes: u64,
    pub sealing: Option<Arc<Sealing>>,
    pub upload: Option<(String, String)>,
}

/// Why a segment is not fetched, or not stored.
#[derive(Debug)]
pub enum Failed {
    Transfer(TransferError),
    Fleet(FleetError),
}

pub type Landed = (Flight, Result<Fetched, Failed>);

/// The age file all the segments of an encrypted file seal into: one file key, header and
/// payload nonce (`sealed_files`), so each segment seals its chunks at their indices.
pub struct Sealing {
    file_key: FileKey,
    header: Vec<u8>,
    nonce: [u8; NONCE],
}

impl Sealing {
    fn header_len(&self) -> u64 {
        self.header.len() as u64
    }

    /// Where the plaintext `range` of a file of `total` bytes lies in its age file: from the
    /// start (header and nonce) for the first segment, to the end for the last.
    fn stored(&self, range: &Range<u64>, total: u64) -> Range<u64> {
        let header_len = self.header_len();
        let start = match range.start {
            0 => 0,
            at => chunk_offset(header_len, chunk_of(at)),
        };
        let end = match range.end {
            end if end == total => sealed_len(header_len, total),
            end => chunk_offset(header_len, chunk_of(end)),
        };
        start..end
    }

    /// A writer sealing into `part` (its header and nonce written, the same bytes each time).
    fn writer(&self, part: PartFile, total: u64) -> std::io::Result<PartWriter> {
        let sealed =
            SealedPart::create(part, &self.file_key, &self.header, &self.nonce, Some(total))?;
        Ok(PartWriter::Sealed(Arc::new(sealed)))
    }

    /// The SHA-256 of the plaintext of a stored age file (header and nonce first).
    pub fn hasher(&self, total: u64) -> PlainHasher {
        PlainHasher {
            skip: self.header_len() + NONCE as u64,
            opener: PayloadOpener::new(&self.file_key, &self.nonce, total),
            sha256: Sha256::new(),
        }
    }
}

/// Hashes the plaintext of an age file read in pieces.
pub struct PlainHasher {
    skip: u64,
    opener: PayloadOpener,
    sha256: Sha256,
}

impl PlainHasher {
    pub fn feed(&mut self, mut bytes: &[u8]) -> Result<(), BadChunk> {
        let skipped = self.skip.min(bytes.len() as u64);
        self.skip -= skipped;
        bytes = &bytes[skipped as usize..];
        let sha256 = &mut self.sha256;
        self.opener.feed(bytes, &mut |plain| sha256.update(plain))
    }

    /// The hex SHA-256, if every chunk arrived and opened.
    pub fn finish(self) -> Result<String, BadChunk> {
        if !self.opener.is_complete() {
            return Err(BadChunk);
        }
        Ok(hex::encode(self.sha256.finalize()))
    }
}

/// The shared age file of `file_id`: the one recorded (its key unwrapped with the resume
/// identity, which every worker must share), or a new one recorded now (the file's row locked,
/// so that two first segments agree).
async fn sealing(
    pool: &Pool,
    encryption: &Encryption,
    file_id: &str,
) -> Result<Sealing, FleetError> {
    let mut client = connection(pool).await?;
    let tx = lock_file(&mut client, file_id, "locking a file's age file").await?;
    let known = tx
        .query_opt(
            "SELECT header, nonce, recipients, wrapped_key FROM sealed_files WHERE file_id = $1",
            &[&file_id],
        )
        .await
        .map_err(sql("reading a file's age file"))?;
    if let Some(row) = known {
        let header: Vec<u8> = row.get(0);
        let nonce: Vec<u8> = row.get(1);
        let state = SealedState {
            header_len: header.len() as u64,
            recipients: row.get(2),
            wrapped_key: row.get(3),
        };
        if !encryption.same_recipients(&state) {
            return Err(FleetError::Recipients {
                id: file_id.to_owned(),
            });
        }
        let file_key = encryption.file_key(&state)?;
        let nonce = nonce.try_into().map_err(|_| FleetError::Sql {
            action: "reading a file's age file",
            source: "the payload nonce is not 16 bytes".into(),
        })?;
        return Ok(Sealing {
            file_key,
            header,
            nonce,
        });
    }
    let (fresh, state) = encryption.start()?;
    tx.execute(
        "INSERT INTO sealed_files (file_id, header, nonce, recipients, wrapped_key) \
         VALUES ($1, $2, $3, $4, $5)",
        &[
            &file_id,
            &fresh.header,
            &&fresh.nonce[..],
            &state.recipients,
            &state.wrapped_key,
        ],
    )
    .await
    .map_err(sql("recording a file's age file"))?;
    tx.commit().await.map_err(sql("committing an age file"))?;
    Ok(Sealing {
        file_key: fresh.file_key,
        header: fresh.header,
        nonce: fresh.nonce,
    })
}

/// Fetch `flight`'s segment into its staging file and make it durable (sealed into the file's
/// shared age file when encrypting); to object storage, upload it as its part.
pub async fn fetch(engine: Engine, pool: Pool, spec: TransferSpec, flight: Flight) -> Landed {
    let result = fetch_and_store(&engine, &pool, &spec, &flight).await;
    (flight, result)
}

async fn fetch_and_store(
    engine: &Engine,
    pool: &Pool,
    spec: &TransferSpec,
    flight: &Flight,
) -> Result<Fetched, Failed> {
    let total = flight.claim.file.meta.size_bytes;
    let range = flight
        .claim
        .segment
        .as_ref()
        .map_or(0..total, |s| s.range.clone());
    let sealing = match &spec.encrypt {
        Some(encryption) => {
            let sealing = sealing(pool, encryption, &flight.claim.file.meta.id).await;
            Some(Arc::new(sealing.map_err(Failed::Fleet)?))
        }
        None => None,
    };
    let stored = match &sealing {
        Some(sealing) => sealing.stored(&range, total),
        None => range.clone(),
    };
    // Its own file (sparse: only the range is written) when uploading, else the shared one at
    // its full size.
    let len = flight.objects.is_none().then(|| match &sealing {
        Some(sealing) => sealed_len(sealing.header_len(), total),
        None => total,
    });
    // To the shared file, a reclaimed segment resumes after what its last claimer saved.
    let from = match (&flight.objects, &flight.claim.segment) {
        (None, Some(segment)) => range.start + segment.saved.min(range.end - range.start),
        _ => range.start,
    };
    let part = open(&flight.staged, len).await.map_err(Failed::Transfer)?;
    let writer = match &sealing {
        Some(sealing) => sealing
            .writer(part, total)
            .map_err(|e| Failed::Transfer(TransferError::io("writing", &flight.staged)(e)))?,
        None => PartWriter::Plain(part),
    };
    let ledger = Ledger::new(RangeSet::new(), 0);
    let fetching = fetch_range(engine, spec, from..range.end, total, (&writer, &ledger));
    let bytes = match &flight.objects {
        None => {
            let progress = Progress {
                pool,
                claim: &flight.claim,
                writer: &writer,
                ledger: &ledger,
            };
            progress.save_while(fetching, range, from).await
        }
        Some(_) => fetching.await,
    }
    .map_err(Failed::Transfer)?;
    let upload = match &flight.objects {
        Some(objects) => Some(
            upload(pool, objects, flight, stored)
                .await
                .map_err(Failed::Fleet)?,
        ),
        None => None,
    };
    Ok(Fetched {
        bytes,
        sealing,
        upload,
    })
}

/// What a segment writing into the shared file needs to save its progress.
struct Progress<'a> {
    pool: &'a Pool,
    claim: &'a Claim,
    writer: &'a PartWriter,
    ledger: &'a Ledger,
}

impl Progress<'_> {
    /// Run `fetching` (of `from..range.end`), and every [`CHECKPOINT`] make what it wrote
    /// durable and record it, in whole chunks from the range's start (if the lease holds).
    async fn save_while(
        &self,
        fetching: impl Future<Output = Result<u64, TransferError>>,
        range: Range<u64>,
        from: u64,
    ) -> Result<u64, TransferError> {
        tokio::pin!(fetching);
        let mut saved = from;
        loop {
            tokio::select! {
                result = &mut fetching => return result,
                () = tokio::time::sleep(CHECKPOINT) => {}
            }
            let durable = durable_end(&self.ledger.snapshot(), &range, from);
            if durable <= saved || durable == range.end {
                continue;
            }
            let writer = self.writer.clone();
            let synced = tokio::task::spawn_blocking(move || writer.sync_data()).await;
            if !matches!(synced, Ok(Ok(()))) {
                continue;
            }
            match queue::save_progress(self.pool, self.claim, durable - range.start).await {
                Ok(()) => saved = durable,
                Err(error) => tracing::warn!(event = "fleet_segment_progress_failed", "{error}"),
            }
        }
    }
}

/// Where the bytes written from `from` on stop being contiguous, rounded down to a whole
/// chunk from the range's start (the end of the range itself stays as it is).
fn durable_end(written: &RangeSet, range: &Range<u64>, from: u64) -> u64 {
    let end = written
        .missing(range.end)
        .iter()
        .find(|gap| gap.end > from)
        .map_or(range.end, |gap| gap.start.max(from));
    if end == range.end {
        return end;
    }
    range.start + (end - range.start) / CHUNK * CHUNK
}

async fn open(staged: &Path, len: Option<u64>) -> Result<PartFile, TransferError> {
    let path = staged.to_path_buf();
    let opened = tokio::task::spawn_blocking(move || {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        PartFile::open(&path, len)
    });
    opened
        .await
        .map_err(std::io::Error::other)
        .and_then(|opened| opened)
        .map_err(TransferError::io("opening", staged))
}

/// Upload the stored bytes `stored` of the segment as its part of the file's multipart upload
/// (started by the first segment to get here); returns the upload and the part's id.
async fn upload(
    pool: &Pool,
    objects: &Objects,
    flight: &Flight,
    stored: Range<u64>,
) -> Result<(String, String), FleetError> {
    let part = flight.claim.segment.as_ref().map_or(1, |s| s.part);
    let upload = objects
        .upload_id(pool, &flight.claim.file.meta.id, &flight.relative)
        .await?;
    let staged = flight.staged.clone();
    let content = tokio::task::spawn_blocking(move || {
        let content = read_range(&staged, stored);
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
        Err(Failed::Fleet(error)) => {
            let reason = error.to_string();
            return retry_or_give_up(pool, &claim, &reason, summary)
                .await
                .map(drop);
        }
    };
    let size = claim.file.meta.size_bytes;
    let etag = fetched.upload.as_ref().map(|(_, etag)| etag.as_str());
    let completed = match (&objects, &fetched.upload) {
        (Some(objects), Some((upload, _))) => {
            let sealing = fetched.sealing.as_deref();
            let last = async |parts| {
                let done = objects
                    .complete(&relative, upload, parts, size, sealing)
                    .await;
                done.map_err(FleetError::from)
            };
            queue::complete_segment(pool, &claim, etag, last, || Ok(())).await
        }
        _ => {
            let sealing = fetched.sealing.clone();
            let last = |_parts| verify(staged.clone(), size, relative.clone(), sealing);
            let install = || install(&staged, &output);
            queue::complete_segment(pool, &claim, etag, last, install).await
        }
    };
    let completion = match completed {
        Ok(completion) => completion,
        // The output could not be finished (verified, completed, installed): nothing was
        // recorded; the segment comes back later and its completer tries again.
        Err(
            error @ (FleetError::Object(_) | FleetError::Install { .. } | FleetError::Crypt(_)),
        ) => {
            tracing::warn!(event = "fleet_segment_unfinished", id = %claim.file.meta.id, "{error}");
            return retry_or_give_up(pool, &claim, &error.to_string(), summary)
                .await
                .map(drop);
        }
        Err(error) => return Err(error),
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

/// The whole staging file, once every segment is in: its size checked, the SHA-256 of its
/// content (the plaintext, every chunk authenticated, when sealed) computed.
async fn verify(
    staged: PathBuf,
    size: u64,
    path: String,
    sealing: Option<Arc<Sealing>>,
) -> Result<FileOutcome, FleetError> {
    let id = path.clone();
    let encrypted = sealing.is_some();
    let hashed = tokio::task::spawn_blocking(move || {
        let stored = match &sealing {
            Some(sealing) => sealed_len(sealing.header_len(), size),
            None => size,
        };
        let found = std::fs::metadata(&staged)?.len();
        if found != stored {
            return Err(std::io::Error::other(format!(
                "{} is {found} bytes once every segment is in, not {stored}",
                staged.display()
            )));
        }
        let Some(sealing) = sealing else {
            return crate::engine::sha256_of(&staged);
        };
        let mut hasher = sealing.hasher(size);
        let mut file = std::fs::File::open(&staged)?;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = std::io::Read::read(&mut file, &mut buf)?;
            if n == 0 {
                break;
            }
            hasher.feed(&buf[..n]).map_err(|_| bad_chunk(&staged))?;
        }
        hasher.finish().map_err(|_| bad_chunk(&staged))
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
        encrypted,
    })
}

fn bad_chunk(path: &Path) -> std::io::Error {
    std::io::Error::other(format!("{}: a chunk does not authenticate", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;

    #[test]
    fn a_sealed_segment_is_whole_chunks_with_the_header_in_the_first_and_the_tail_in_the_last() {
        use crate::crypt::format::{SEALED_CHUNK, TAG};
        let sealing = Sealing {
            file_key: crate::crypt::format::new_file_key(),
            header: vec![b'h'; 100],
            nonce: [0; NONCE],
        };
        let total = 3 * CHUNK + 10;
        let parts = ranges(total, Some(CHUNK));
        assert_eq!(parts.len(), 4);
        let stored: Vec<_> = parts.iter().map(|r| sealing.stored(r, total)).collect();
        let base = 100 + NONCE as u64;
        assert_eq!(
            stored[0],
            0..base + SEALED_CHUNK,
            "header and nonce in part 1"
        );
        assert_eq!(stored[1], base + SEALED_CHUNK..base + 2 * SEALED_CHUNK);
        assert_eq!(
            stored[3],
            base + 3 * SEALED_CHUNK..base + 3 * SEALED_CHUNK + 10 + TAG
        );
        assert_eq!(
            stored[3].end,
            sealed_len(100, total),
            "the last part ends the file"
        );
        for pair in stored.windows(2) {
            assert_eq!(pair[0].end, pair[1].start, "parts concatenate");
        }
    }

    #[test]
    fn progress_is_the_contiguous_written_prefix_in_whole_chunks() {
        let range = 4 * CHUNK..8 * CHUNK;
        let mut written = RangeSet::new();
        assert_eq!(durable_end(&written, &range, range.start), range.start);
        written.insert(4 * CHUNK..5 * CHUNK + 100);
        written.insert(6 * CHUNK..7 * CHUNK);
        assert_eq!(
            durable_end(&written, &range, range.start),
            5 * CHUNK,
            "a gap at 5"
        );
        // Resumed at 5 chunks: what this claim wrote counts from there.
        let mut resumed = RangeSet::new();
        resumed.insert(5 * CHUNK..7 * CHUNK + 1);
        assert_eq!(durable_end(&resumed, &range, 5 * CHUNK), 7 * CHUNK);
        resumed.insert(7 * CHUNK..8 * CHUNK);
        assert_eq!(
            durable_end(&resumed, &range, 5 * CHUNK),
            8 * CHUNK,
            "the whole range"
        );
    }

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
