//! The file store: explicit files (kept sorted) and generated ones (computed from their index),
//! paged newest first without ever materialising more than a page.

use std::cmp::Ordering;

use bytes::Bytes;
use serde::Serialize;

use super::body::BodySource;
use super::clock::{DAY_SECS, Timestamp, parse_rfc3339};
use super::listing::{Keyed, Sequence, SortKey, merge, newer_range, older_range};
use super::{FileSet, MockFile, SizeMix};

/// `created_at` of generated file 0: 2026-03-01T00:00:00Z.
const GENERATED_START_SECS: i64 = 1_772_323_200;
/// Generated files are spread over this many seconds.
const GENERATED_SPAN_SECS: i64 = 150 * DAY_SECS;
/// The kinds generated files cycle through: filename stem, extension, MIME type.
const GENERATED_KINDS: [(&str, &str, &str); 5] = [
    ("report", "csv", "text/csv"),
    ("data", "json", "application/json"),
    ("chart", "png", "image/png"),
    ("document", "pdf", "application/pdf"),
    ("notes", "txt", "text/plain"),
];
/// How long after `created_at` an expired file expired.
const EXPIRY_SECS: i64 = DAY_SECS;

/// One file as served.
#[derive(Debug, Clone)]
pub(super) struct FileView {
    key: SortKey,
    filename: String,
    mime_type: String,
    created_at: String,
    pub(super) downloadable: bool,
    pub(super) expired: bool,
    /// The whole content.
    pub(super) content: BodySource,
}

impl Keyed for FileView {
    fn key(&self) -> &SortKey {
        &self.key
    }
}

impl FileView {
    pub(super) fn created(&self) -> Timestamp {
        self.key.time
    }

    /// The file object; `expires_at` only in the GA shape.
    pub(super) fn object(&self, ga: bool) -> FileObject<'_> {
        let expires_at = self
            .expired
            .then(|| Timestamp::from_secs(self.key.time.secs + EXPIRY_SECS).to_rfc3339());
        FileObject {
            id: &self.key.id,
            object_type: "file",
            filename: &self.filename,
            mime_type: &self.mime_type,
            size_bytes: self.content.len(),
            created_at: &self.created_at,
            downloadable: self.downloadable,
            expires_at: ga.then_some(expires_at),
        }
    }
}

/// The JSON file object.
#[derive(Debug, Serialize)]
pub(super) struct FileObject<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    object_type: &'static str,
    filename: &'a str,
    mime_type: &'a str,
    size_bytes: u64,
    created_at: &'a str,
    downloadable: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_at: Option<Option<String>>,
}

/// All files served: the generated set, if any, and explicit files, merged by key.
#[derive(Debug)]
pub(super) struct FileStore {
    generated: Option<GeneratedFiles>,
    /// Ascending by key.
    explicit: Vec<StoredFile>,
}

#[derive(Debug)]
struct StoredFile {
    key: SortKey,
    file: MockFile,
}

impl StoredFile {
    fn new(file: MockFile) -> Self {
        let time = parse_rfc3339(&file.created_at).unwrap_or_else(|| {
            panic!(
                "file {}: created_at {:?} is not RFC 3339",
                file.id, file.created_at
            )
        });
        let key = SortKey {
            time,
            id: file.id.clone(),
        };
        StoredFile { key, file }
    }

    fn view(&self) -> FileView {
        FileView {
            key: self.key.clone(),
            filename: self.file.filename.clone(),
            mime_type: self.file.mime_type.clone(),
            created_at: self.file.created_at.clone(),
            downloadable: self.file.downloadable,
            expired: self.file.expired,
            content: BodySource::Bytes(self.file.content.clone()),
        }
    }
}

impl FileStore {
    pub(super) fn new(files: FileSet) -> Self {
        let mut store = FileStore {
            generated: None,
            explicit: Vec::new(),
        };
        match files {
            FileSet::Explicit(files) => {
                let mut explicit: Vec<StoredFile> =
                    files.into_iter().map(StoredFile::new).collect();
                explicit.sort_by(|a, b| a.key.cmp(&b.key));
                store.explicit = explicit;
            }
            FileSet::Generated {
                count,
                seed,
                content_len,
            } => store.generated = Some(GeneratedFiles::new(count, seed, content_len)),
            FileSet::Mixed { count, seed, sizes } => {
                store.generated = Some(GeneratedFiles::mixed(count, seed, sizes));
            }
        }
        store
    }

    /// Adds a file in key order.
    pub(super) fn insert(&mut self, file: MockFile) {
        let stored = StoredFile::new(file);
        let at = self
            .explicit
            .partition_point(|other| other.key < stored.key);
        self.explicit.insert(at, stored);
    }

    pub(super) fn get(&self, id: &str) -> Option<FileView> {
        let explicit = self.explicit.iter().find(|stored| stored.key.id == id);
        explicit.map(StoredFile::view).or_else(|| {
            let generated = self.generated.as_ref()?;
            generated.view(generated.index_of(id)?)
        })
    }

    /// The file with its content in memory.
    pub(super) fn materialize(&self, id: &str) -> Option<MockFile> {
        let explicit = self.explicit.iter().find(|stored| stored.key.id == id);
        explicit.map(|stored| stored.file.clone()).or_else(|| {
            let generated = self.generated.as_ref()?;
            generated.materialize(generated.index_of(id)?)
        })
    }

    fn compare_explicit(&self, at: usize, key: &SortKey) -> Ordering {
        self.explicit[at].key.cmp(key)
    }
}

impl Sequence for FileStore {
    type Item = FileView;

    fn older(&self, key: Option<&SortKey>, n: usize) -> Vec<FileView> {
        let range = older_range(self.explicit.len(), key, n, |at, key| {
            self.compare_explicit(at, key)
        });
        let explicit = self.explicit[range]
            .iter()
            .rev()
            .map(StoredFile::view)
            .collect();
        let generated = self.generated.as_ref().map(|g| g.older(key, n));
        merge(explicit, generated.unwrap_or_default(), n, true)
    }

    fn newer(&self, key: &SortKey, n: usize) -> Vec<FileView> {
        let range = newer_range(self.explicit.len(), key, n, |at, key| {
            self.compare_explicit(at, key)
        });
        let explicit = self.explicit[range].iter().map(StoredFile::view).collect();
        let generated = self.generated.as_ref().map(|g| g.newer(key, n));
        merge(explicit, generated.unwrap_or_default(), n, false)
    }

    fn key_of(&self, id: &str) -> Option<SortKey> {
        self.get(id).map(|file| file.key)
    }
}

/// A [`FileSet::Generated`] set: everything about file `i` is computed from `i`.
#[derive(Debug, Clone)]
pub(super) struct GeneratedFiles {
    count: usize,
    seed: u64,
    sizes: SizeMix,
}

impl GeneratedFiles {
    pub(super) fn new(count: usize, seed: u64, content_len: usize) -> Self {
        Self::mixed(count, seed, SizeMix::fixed(content_len))
    }

    pub(super) fn mixed(count: usize, seed: u64, sizes: SizeMix) -> Self {
        GeneratedFiles { count, seed, sizes }
    }

    /// The length of file `index`: big if it is one of `big_count` evenly spaced indices, else
    /// drawn from `min..=max` by the hash of its content key.
    pub(super) fn content_len(&self, index: usize) -> usize {
        let SizeMix {
            min,
            max,
            big_count,
            big_len,
        } = self.sizes;
        if let Some(stride) = self.count.checked_div(big_count) {
            let stride = stride.max(1);
            if index.is_multiple_of(stride) && index / stride < big_count {
                return big_len;
            }
        }
        let spread = max.saturating_sub(min) as u64 + 1;
        // Rotated: the content's first word is `splitmix64(key)` itself.
        let draw = splitmix64(content_key(self.seed, index).rotate_left(32));
        min + (draw % spread) as usize
    }

    fn id(index: usize) -> String {
        format!("file_{index:024}")
    }

    fn index_of(&self, id: &str) -> Option<usize> {
        let digits = id.strip_prefix("file_")?;
        let all_digits = digits.len() == 24 && digits.bytes().all(|byte| byte.is_ascii_digit());
        let index: usize = if all_digits {
            digits.parse().ok()?
        } else {
            return None;
        };
        (index < self.count).then_some(index)
    }

    /// Non-decreasing in `index`, so keys ascend with the index.
    fn created(&self, index: usize) -> Timestamp {
        let offset = index as i128 * i128::from(GENERATED_SPAN_SECS) / self.count.max(1) as i128;
        Timestamp::from_secs(GENERATED_START_SECS + offset as i64)
    }

    fn key(&self, index: usize) -> SortKey {
        SortKey {
            time: self.created(index),
            id: Self::id(index),
        }
    }

    fn view(&self, index: usize) -> Option<FileView> {
        if index >= self.count {
            return None;
        }
        let (stem, extension, mime_type) = GENERATED_KINDS[index % GENERATED_KINDS.len()];
        let key = self.key(index);
        Some(FileView {
            filename: format!("{stem}-{index}.{extension}"),
            mime_type: mime_type.to_owned(),
            created_at: key.time.to_rfc3339(),
            downloadable: true,
            expired: false,
            content: BodySource::Generated {
                key: content_key(self.seed, index),
                range: 0..self.content_len(index) as u64,
            },
            key,
        })
    }

    pub(super) fn materialize(&self, index: usize) -> Option<MockFile> {
        let view = self.view(index)?;
        let content = generated_bytes(content_key(self.seed, index), 0, self.content_len(index));
        Some(MockFile {
            id: view.key.id,
            filename: view.filename,
            mime_type: view.mime_type,
            created_at: view.created_at,
            downloadable: view.downloadable,
            expired: view.expired,
            content,
        })
    }

    fn older(&self, key: Option<&SortKey>, n: usize) -> Vec<FileView> {
        let range = older_range(self.count, key, n, |at, key| self.key(at).cmp(key));
        range.rev().filter_map(|index| self.view(index)).collect()
    }

    fn newer(&self, key: &SortKey, n: usize) -> Vec<FileView> {
        let range = newer_range(self.count, key, n, |at, key| self.key(at).cmp(key));
        range.filter_map(|index| self.view(index)).collect()
    }
}

/// The key of the content of generated file `index`.
fn content_key(seed: u64, index: usize) -> u64 {
    splitmix64(seed ^ splitmix64(index as u64 + 1))
}

/// `len` bytes of the content with key `key`, from byte `start` on: byte `k` is byte `k % 8` of
/// `splitmix64(key ^ k / 8)`, so any range can be produced on its own.
pub(super) fn generated_bytes(key: u64, start: u64, len: usize) -> Bytes {
    let mut bytes = Vec::with_capacity(len);
    let mut offset = start;
    while bytes.len() < len {
        let word = splitmix64(key ^ (offset / 8)).to_le_bytes();
        let skip = (offset % 8) as usize;
        let take = (8 - skip).min(len - bytes.len());
        bytes.extend_from_slice(&word[skip..skip + take]);
        offset += take as u64;
    }
    Bytes::from(bytes)
}

/// The SplitMix64 finaliser: a cheap, well-mixed hash of `value`.
pub(super) fn splitmix64(value: u64) -> u64 {
    let mut z = value.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ranges_agree_with_the_whole() {
        let whole = generated_bytes(7, 0, 1000);
        assert_eq!(generated_bytes(7, 13, 100), whole[13..113]);
        assert_eq!(generated_bytes(7, 999, 1), whole[999..]);
        assert_ne!(generated_bytes(8, 0, 1000), whole);
    }

    #[test]
    fn mixed_sizes_stay_in_range_and_place_the_big_files() {
        let sizes = SizeMix {
            min: 4096,
            max: 8192,
            big_count: 4,
            big_len: 1 << 20,
        };
        let files = GeneratedFiles::mixed(204, 3, sizes);
        let lens: Vec<usize> = (0..204).map(|i| files.content_len(i)).collect();
        let big: Vec<usize> = (0..204).filter(|&i| lens[i] == 1 << 20).collect();
        assert_eq!(big, [0, 51, 102, 153]);
        let small: Vec<usize> = lens.iter().copied().filter(|&len| len != 1 << 20).collect();
        assert!(small.iter().all(|len| (4096..=8192).contains(len)));
        let distinct: std::collections::BTreeSet<usize> = small.iter().copied().collect();
        assert!(distinct.len() > 150, "{} distinct sizes", distinct.len());
        let view = files.view(7).unwrap();
        assert_eq!(view.object(true).size_bytes, lens[7] as u64);
        assert_eq!(files.materialize(7).unwrap().content.len(), lens[7]);
        let fixed = GeneratedFiles::new(10, 3, 100);
        assert!((0..10).all(|i| fixed.content_len(i) == 100));
    }

    #[test]
    fn generated_files_page_by_key() {
        let files = GeneratedFiles::new(10, 1, 4);
        let newest: Vec<String> = files
            .older(None, 3)
            .iter()
            .map(|f| f.key.id.clone())
            .collect();
        assert_eq!(
            newest,
            [
                GeneratedFiles::id(9),
                GeneratedFiles::id(8),
                GeneratedFiles::id(7)
            ]
        );
        let after = files.older(Some(&files.key(7)), 100);
        assert_eq!(after.len(), 7);
        let before = files.newer(&files.key(7), 2);
        assert_eq!(before[0].key.id, GeneratedFiles::id(8));
        assert_eq!(files.index_of(&GeneratedFiles::id(9)), Some(9));
        assert_eq!(files.index_of(&GeneratedFiles::id(10)), None);
    }
}
