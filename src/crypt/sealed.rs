//! A `.part` being written as an age file: plaintext arrives in pieces of any size at any
//! offset; whole 64 KiB chunks are sealed and written at their place in the age file, and the
//! plaintext of partial chunks waits in memory until the rest of the chunk arrives.
//!
//! Only the plaintext of chunks that are sealed and written is reported back ([`Written`], with
//! the bytes, so the hasher need not open them again), so the ledger (and the resume state
//! after it) never counts a byte that is not on disk encrypted; resume granularity is whole
//! chunks. Runs of whole chunks stay slices of the caller's buffer (no copy but the one into
//! the sealed buffer). When the plaintext size is unknown (one plain stream), a full chunk is
//! sealed once a byte past it arrives, and the final chunk by [`SealedPart::finish`].

use std::collections::HashMap;
use std::io;
use std::ops::Range;
use std::sync::Mutex;

use age_core::format::FileKey;
use bytes::Bytes;

use super::CryptError;
use super::format::{
    BadChunk, CHUNK, NONCE, PayloadKey, SEALED_CHUNK, TAG, chunk_count, chunk_len, chunk_of,
    chunk_offset, header_matches, sealed_len,
};
use crate::store::PartFile;

/// An age file under construction in a `.part`.
pub struct SealedPart {
    part: PartFile,
    key: PayloadKey,
    header_len: u64,
    layout: Mutex<Layout>,
}

/// What is known of the plaintext, and the chunks still incomplete.
#[derive(Default)]
struct Layout {
    /// The plaintext size, once known.
    total: Option<u64>,
    /// The end of the furthest byte received.
    max_end: u64,
    pending: HashMap<u64, Pending>,
}

struct Pending {
    plain: Vec<u8>,
    filled: usize,
}

/// Consecutive chunks ready to seal: `plain` starts at chunk `index`; every chunk but the final
/// one is full, and `last` tells whether that final one is the payload's last chunk.
struct Ready {
    index: u64,
    last: bool,
    plain: Bytes,
}

impl Ready {
    /// The chunks' plaintexts (an empty plaintext is one empty chunk).
    fn chunks(&self) -> impl Iterator<Item = (u64, bool, &[u8])> {
        let count = (self.plain.len() as u64).div_ceil(CHUNK).max(1);
        (0..count).map(move |k| {
            let from = (k * CHUNK) as usize;
            let to = ((k + 1) * CHUNK).min(self.plain.len() as u64) as usize;
            (
                self.index + k,
                self.last && k + 1 == count,
                &self.plain[from..to],
            )
        })
    }

    /// The index after the final chunk.
    fn end(&self) -> u64 {
        self.index + (self.plain.len() as u64).div_ceil(CHUNK).max(1)
    }
}

/// Whole chunks of one write gathered by [`Layout::take`]: the first index, their bytes in the
/// write's buffer, and whether the final one is the payload's last chunk.
struct Run {
    index: u64,
    bytes: Range<usize>,
    last: bool,
}

/// Plaintext now sealed and written to the `.part`: where it starts, and its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    pub at: u64,
    pub plain: Bytes,
}

impl Written {
    /// The plaintext range written.
    pub fn range(&self) -> Range<u64> {
        self.at..self.at + self.plain.len() as u64
    }
}

impl Layout {
    /// Whether chunk `index` is the last one, when that is already decided.
    fn last_flag(&self, index: u64) -> Option<bool> {
        match self.total {
            Some(total) => Some(index + 1 == chunk_count(total)),
            None => (self.max_end > (index + 1) * CHUNK).then_some(false),
        }
    }

    /// The end of chunk `index` as far as is known.
    fn chunk_end(&self, index: u64) -> u64 {
        let end = (index + 1) * CHUNK;
        self.total.map_or(end, |total| end.min(total))
    }

    /// Take the bytes of `data` (plaintext at `at`): runs of whole chunks are returned ready to
    /// seal (as slices of `data`, no copy), the rest is buffered.
    fn take(&mut self, data: &Bytes, at: u64, ready: &mut Vec<Ready>) {
        let end = at + data.len() as u64;
        self.max_end = self.max_end.max(end);
        let mut run: Option<Run> = None;
        for index in chunk_of(at)..chunk_of(end.saturating_sub(1)) + 1 {
            let (chunk_start, chunk_end) = (index * CHUNK, self.chunk_end(index));
            let (from, to) = (at.max(chunk_start), end.min(chunk_end));
            let span = (from - at) as usize..(to - at) as usize;
            let whole = from == chunk_start && to == chunk_end;
            match self.last_flag(index) {
                Some(last) if whole && !self.pending.contains_key(&index) => match &mut run {
                    // The run so far ends just before this chunk, and not with the last one.
                    Some(current) if !current.last => {
                        current.bytes.end = span.end;
                        current.last = last;
                    }
                    _ => {
                        push_run(ready, data, run.take());
                        let bytes = span;
                        run = Some(Run { index, bytes, last });
                    }
                },
                _ => {
                    push_run(ready, data, run.take());
                    let pending = self.pending.entry(index).or_insert_with(|| Pending {
                        plain: vec![0; (chunk_end - chunk_start) as usize],
                        filled: 0,
                    });
                    let offset = (from - chunk_start) as usize;
                    pending.plain[offset..offset + span.len()].copy_from_slice(&data[span]);
                    pending.filled += (to - from) as usize;
                }
            }
        }
        push_run(ready, data, run);
    }

    /// Move buffered chunks that are complete (and whose last flag is decided) to `ready`.
    fn drain_complete(&mut self, ready: &mut Vec<Ready>) {
        let complete: Vec<(u64, bool)> = self
            .pending
            .iter()
            .filter(|(_, pending)| pending.filled == pending.plain.len())
            .filter_map(|(&index, _)| Some((index, self.last_flag(index)?)))
            .collect();
        for (index, last) in complete {
            let pending = self.pending.remove(&index).expect("listed above");
            ready.push(Ready {
                index,
                last,
                plain: Bytes::from(pending.plain),
            });
        }
    }
}

/// Add `run`, if any, to `ready`, as a slice of `data`.
fn push_run(ready: &mut Vec<Ready>, data: &Bytes, run: Option<Run>) {
    if let Some(run) = run {
        ready.push(Ready {
            index: run.index,
            last: run.last,
            plain: data.slice(run.bytes),
        });
    }
}

impl SealedPart {
    /// Start an age file in `part`: write `header` and `nonce` at its start.
    pub fn create(
        part: PartFile,
        file_key: &FileKey,
        header: &[u8],
        nonce: &[u8; NONCE],
        total: Option<u64>,
    ) -> io::Result<SealedPart> {
        let mut start = header.to_vec();
        start.extend_from_slice(nonce);
        part.write_at(&start, 0)?;
        Ok(SealedPart::new(
            part,
            file_key,
            header.len() as u64,
            nonce,
            total,
        ))
    }

    /// Continue the age file in `part`, whose header (of `header_len` bytes) must carry the MAC
    /// of `file_key`.
    pub fn reopen(
        part: PartFile,
        file_key: &FileKey,
        header_len: u64,
        total: u64,
    ) -> Result<SealedPart, CryptError> {
        let mut start = vec![0u8; header_len as usize + NONCE];
        part.read_at(&mut start, 0)
            .map_err(CryptError::io("reading", part.path()))?;
        let (header, nonce) = start.split_at(header_len as usize);
        if !header_matches(file_key, header) {
            return Err(CryptError::ForeignPart {
                path: part.path().to_path_buf(),
            });
        }
        let nonce: &[u8; NONCE] = nonce.try_into().expect("split at NONCE from the end");
        Ok(SealedPart::new(
            part,
            file_key,
            header_len,
            nonce,
            Some(total),
        ))
    }

    fn new(
        part: PartFile,
        file_key: &FileKey,
        header_len: u64,
        nonce: &[u8; NONCE],
        total: Option<u64>,
    ) -> SealedPart {
        SealedPart {
            part,
            key: PayloadKey::new(file_key, nonce),
            header_len,
            layout: Mutex::new(Layout {
                total,
                ..Layout::default()
            }),
        }
    }

    pub fn part(&self) -> &PartFile {
        &self.part
    }

    /// The size of the finished age file for `plain` bytes of plaintext.
    pub fn sealed_len(&self, plain: u64) -> u64 {
        sealed_len(self.header_len, plain)
    }

    /// Take plaintext `data` at offset `at` (blocking). Returns the plaintext now sealed and
    /// written.
    pub fn write(&self, data: &Bytes, at: u64) -> io::Result<Vec<Written>> {
        if data.is_empty() {
            return Ok(Vec::new());
        }
        let mut ready = Vec::new();
        {
            let mut layout = self.layout.lock().unwrap();
            layout.take(data, at, &mut ready);
            layout.drain_complete(&mut ready);
        }
        self.seal_and_write(ready)
    }

    /// The plaintext is complete at `size` bytes: seal what waited for that (the final chunk of
    /// a stream of unknown size; the one empty chunk of an empty file).
    pub fn finish(&self, size: u64) -> io::Result<Vec<Written>> {
        let mut ready = Vec::new();
        {
            let mut layout = self.layout.lock().unwrap();
            let total = *layout.total.get_or_insert(size);
            for (&index, pending) in layout.pending.iter_mut() {
                pending.plain.truncate(chunk_len(total, index) as usize);
            }
            layout.drain_complete(&mut ready);
            if total == 0 {
                ready.push(Ready {
                    index: 0,
                    last: true,
                    plain: Bytes::new(),
                });
            }
        }
        self.seal_and_write(ready)
    }

    /// Seal the chunks and write each run of consecutive ones with one positional write.
    fn seal_and_write(&self, mut ready: Vec<Ready>) -> io::Result<Vec<Written>> {
        ready.sort_by_key(|chunk| chunk.index);
        let mut runs = ready.as_slice();
        while let Some(first) = runs.first() {
            let (mut run, mut end) = (1, first.end());
            while let Some(next) = runs.get(run).filter(|next| next.index == end) {
                end = next.end();
                run += 1;
            }
            let (this, rest) = runs.split_at(run);
            let plain: usize = this.iter().map(|span| span.plain.len()).sum();
            let mut sealed =
                Vec::with_capacity(plain + (end - first.index) as usize * TAG as usize);
            for (index, last, chunk) in this.iter().flat_map(Ready::chunks) {
                self.key.seal_into(index, last, chunk, &mut sealed);
            }
            self.part
                .write_at(&sealed, chunk_offset(self.header_len, first.index))?;
            runs = rest;
        }
        Ok(ready
            .into_iter()
            .map(|span| Written {
                at: span.index * CHUNK,
                plain: span.plain,
            })
            .collect())
    }

    /// Fill `buf` with the plaintext at `at` (a chunk boundary), from chunks already sealed and
    /// written by this process or a previous run (blocking). Every chunk is authenticated.
    pub fn read_plain(&self, buf: &mut [u8], at: u64) -> io::Result<()> {
        debug_assert_eq!(at % CHUNK, 0, "reads start at chunk boundaries");
        let total = self.layout.lock().unwrap().total;
        let first = chunk_of(at);
        let chunks = (buf.len() as u64).div_ceil(CHUNK);
        let mut sealed = vec![0u8; buf.len() + (chunks * TAG) as usize];
        self.part
            .read_at(&mut sealed, chunk_offset(self.header_len, first))?;
        let pieces = sealed.chunks_mut(SEALED_CHUNK as usize);
        for (k, (plain, sealed)) in buf.chunks_mut(CHUNK as usize).zip(pieces).enumerate() {
            let index = first + k as u64;
            let last = total.is_some_and(|total| index + 1 == chunk_count(total));
            let opened = self.key.open(index, last, sealed).map_err(|BadChunk| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("chunk {index} of the age payload fails authentication"),
                )
            })?;
            plain.copy_from_slice(opened);
        }
        Ok(())
    }
}

/// Opens an age payload that arrives in pieces of any size (the header and nonce already
/// skipped): every sealed chunk is authenticated and its plaintext handed on, in order. For
/// reading back an age file stored elsewhere (an object) without writing its plaintext.
pub struct PayloadOpener {
    key: PayloadKey,
    total: u64,
    index: u64,
    pending: Vec<u8>,
}

impl PayloadOpener {
    /// The payload of `total` plaintext bytes sealed with `file_key` and `nonce`.
    pub fn new(file_key: &FileKey, nonce: &[u8; NONCE], total: u64) -> PayloadOpener {
        PayloadOpener {
            key: PayloadKey::new(file_key, nonce),
            total,
            index: 0,
            pending: Vec::with_capacity(SEALED_CHUNK as usize),
        }
    }

    /// Take the next sealed bytes; `plain` is given each chunk's plaintext once it is whole.
    pub fn feed(
        &mut self,
        mut sealed: &[u8],
        plain: &mut impl FnMut(&[u8]),
    ) -> Result<(), BadChunk> {
        let count = chunk_count(self.total);
        while !sealed.is_empty() {
            if self.index >= count {
                return Err(BadChunk); // Bytes past the last chunk.
            }
            let want = (chunk_len(self.total, self.index) + TAG) as usize;
            let take = (want - self.pending.len()).min(sealed.len());
            self.pending.extend_from_slice(&sealed[..take]);
            sealed = &sealed[take..];
            if self.pending.len() == want {
                let last = self.index + 1 == count;
                plain(self.key.open(self.index, last, &mut self.pending)?);
                self.pending.clear();
                self.index += 1;
            }
        }
        Ok(())
    }

    /// Whether every chunk arrived and opened.
    pub fn is_complete(&self) -> bool {
        self.index == chunk_count(self.total) && self.pending.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::super::format::{header, new_file_key, new_nonce};
    use super::*;

    fn random(len: usize) -> Bytes {
        let mut bytes = vec![0u8; len];
        rand::fill(&mut bytes[..]);
        Bytes::from(bytes)
    }

    /// Open every chunk of the finished file, checking every tag.
    fn open_all(path: &std::path::Path, file_key: &FileKey, header_len: usize) -> Vec<u8> {
        let file = std::fs::read(path).unwrap();
        let nonce: [u8; NONCE] = file[header_len..header_len + NONCE].try_into().unwrap();
        let key = PayloadKey::new(file_key, &nonce);
        let mut body = file[header_len + NONCE..].to_vec();
        let count = body.len().div_ceil(SEALED_CHUNK as usize);
        let mut plain = Vec::new();
        for (index, chunk) in body.chunks_mut(SEALED_CHUNK as usize).enumerate() {
            let last = index + 1 == count;
            plain.extend_from_slice(key.open(index as u64, last, chunk).unwrap());
        }
        plain
    }

    fn sealed_part(dir: &std::path::Path, total: Option<u64>) -> (SealedPart, FileKey, usize) {
        let file_key = new_file_key();
        let header = header(&file_key, &[]);
        let len = total.map(|total| sealed_len(header.len() as u64, total));
        let part = PartFile::open(&dir.join("x.age.part"), len).unwrap();
        let sealed = SealedPart::create(part, &file_key, &header, &new_nonce(), total).unwrap();
        (sealed, file_key, header.len())
    }

    #[test]
    fn the_opener_takes_a_stored_age_file_in_pieces_of_any_size() {
        let dir = tempfile::tempdir().unwrap();
        let plain = random(2 * CHUNK as usize + 999);
        let total = plain.len() as u64;
        let (sealed, file_key, header_len) = sealed_part(dir.path(), Some(total));
        sealed.write(&plain, 0).unwrap();
        let file = std::fs::read(sealed.part().path()).unwrap();
        let nonce: [u8; NONCE] = file[header_len..header_len + NONCE].try_into().unwrap();
        let payload = &file[header_len + NONCE..];
        let mut opener = PayloadOpener::new(&file_key, &nonce, total);
        let mut opened = Vec::new();
        for piece in payload.chunks(10_000) {
            opener
                .feed(piece, &mut |p| opened.extend_from_slice(p))
                .unwrap();
        }
        assert!(opener.is_complete());
        assert_eq!(opened, plain);
        // A flipped bit, or a byte past the last chunk, does not open.
        let mut damaged = payload.to_vec();
        damaged[CHUNK as usize + 20] ^= 1;
        let mut opener = PayloadOpener::new(&file_key, &nonce, total);
        assert_eq!(opener.feed(&damaged, &mut |_| {}), Err(BadChunk));
        let mut longer = payload.to_vec();
        longer.push(0);
        let mut opener = PayloadOpener::new(&file_key, &nonce, total);
        assert_eq!(opener.feed(&longer, &mut |_| {}), Err(BadChunk));
        // Stopping short is not complete.
        let mut opener = PayloadOpener::new(&file_key, &nonce, total);
        opener
            .feed(&payload[..payload.len() - 1], &mut |_| {})
            .unwrap();
        assert!(!opener.is_complete());
    }

    #[test]
    fn out_of_order_pieces_of_any_size_seal_whole_chunks_only() {
        let dir = tempfile::tempdir().unwrap();
        let plain = random(3 * CHUNK as usize + 1234);
        let total = plain.len() as u64;
        let (sealed, file_key, header_len) = sealed_part(dir.path(), Some(total));
        // Pieces: a tail, a middle that spans a boundary, then the rest in odd sizes.
        let pieces = [
            (2 * CHUNK + 7, total),
            (CHUNK - 100, 2 * CHUNK + 7),
            (0, CHUNK - 100),
        ];
        let mut written = crate::store::RangeSet::new();
        for (start, end) in pieces {
            let piece = plain.slice(start as usize..end as usize);
            for done in sealed.write(&piece, start).unwrap() {
                assert_eq!(done.at % CHUNK, 0);
                assert_eq!(
                    done.plain,
                    plain[done.range().start as usize..][..done.plain.len()]
                );
                written.insert(done.range());
            }
        }
        assert!(written.is_complete(total));
        assert!(sealed.finish(total).unwrap().is_empty());
        assert_eq!(open_all(sealed.part().path(), &file_key, header_len), plain);
        let mut back = vec![0u8; plain.len()];
        sealed.read_plain(&mut back, 0).unwrap();
        assert_eq!(back, plain);
    }

    #[test]
    fn whole_chunks_of_one_write_come_back_as_one_slice_of_it() {
        let dir = tempfile::tempdir().unwrap();
        let total = 4 * CHUNK + 10;
        let (sealed, file_key, header_len) = sealed_part(dir.path(), Some(total));
        let plain = random(total as usize);
        // Chunk 0 partly, chunks 1..=3 whole, chunk 4 (the last) partly.
        let middle = plain.slice(100..(4 * CHUNK + 5) as usize);
        let written = sealed.write(&middle, 100).unwrap();
        assert_eq!(written.len(), 1);
        assert_eq!(written[0].range(), CHUNK..4 * CHUNK);
        let offset = (CHUNK - 100) as usize;
        assert_eq!(
            written[0].plain.as_ptr(),
            middle[offset..].as_ptr(),
            "no copy"
        );
        let mut done: Vec<_> = sealed.write(&plain.slice(..100), 0).unwrap();
        done.extend(
            sealed
                .write(&plain.slice((4 * CHUNK + 5) as usize..), 4 * CHUNK + 5)
                .unwrap(),
        );
        let ranges: Vec<_> = done.iter().map(Written::range).collect();
        assert_eq!(ranges, vec![0..CHUNK, 4 * CHUNK..total]);
        assert_eq!(open_all(sealed.part().path(), &file_key, header_len), plain);
    }

    #[test]
    fn a_partial_chunk_is_not_reported() {
        let dir = tempfile::tempdir().unwrap();
        let (sealed, _, _) = sealed_part(dir.path(), Some(2 * CHUNK));
        assert!(sealed.write(&random(1000), 0).unwrap().is_empty());
        let second = random(CHUNK as usize);
        let written = sealed.write(&second, CHUNK).unwrap();
        assert_eq!(written.len(), 1);
        assert_eq!(
            (written[0].range(), &written[0].plain),
            (CHUNK..2 * CHUNK, &second)
        );
    }

    #[test]
    fn a_stream_of_unknown_size_seals_its_last_chunk_at_finish() {
        for size in [0, 1, CHUNK, 2 * CHUNK, 2 * CHUNK + 5] {
            let dir = tempfile::tempdir().unwrap();
            let plain = random(size as usize);
            let (sealed, file_key, header_len) = sealed_part(dir.path(), None);
            let mut sealed_plain = 0;
            for (k, piece) in plain.chunks(10_000).enumerate() {
                let piece = Bytes::copy_from_slice(piece);
                for done in sealed.write(&piece, k as u64 * 10_000).unwrap() {
                    sealed_plain += done.plain.len() as u64;
                }
            }
            assert!(
                sealed_plain < size.max(1),
                "the last chunk waits for finish"
            );
            for done in sealed.finish(size).unwrap() {
                sealed_plain += done.plain.len() as u64;
            }
            assert_eq!(sealed_plain, size);
            let len = std::fs::metadata(sealed.part().path()).unwrap().len();
            assert_eq!(len, sealed_len(header_len as u64, size));
            assert_eq!(open_all(sealed.part().path(), &file_key, header_len), plain);
        }
    }

    #[test]
    fn reopen_requires_the_same_file_key() {
        let dir = tempfile::tempdir().unwrap();
        let (sealed, file_key, header_len) = sealed_part(dir.path(), Some(10));
        let part = sealed.part().clone();
        assert!(SealedPart::reopen(part.clone(), &file_key, header_len as u64, 10).is_ok());
        let other = SealedPart::reopen(part, &new_file_key(), header_len as u64, 10);
        assert!(matches!(other, Err(CryptError::ForeignPart { .. })));
    }
}
