//! The per-month metadata `DATA/meta/YYYY-MM.json`: a readable copy of what the index knows
//! about one month, rewritten atomically from the index after each sync (every month the sync
//! touched, made durable together).
//!
//! ```json
//! {"month": "2026-08",
//!  "files": [{"id", "filename", "mime_type", "size_bytes", "created_at", "path", "sha256",
//!             "downloaded_at", "state"}],
//!  "batches": [{"id", "created_at", "path", "results", "sha256", "downloaded_at", "state"}]}
//! ```
//!
//! Entries are sorted by `created_at`, then `id`, each on a line of its own; paths are relative
//! to the data directory. The index stays the authoritative record: these files are for people
//! and other tools.

use std::io::{self, Write};
use std::path::PathBuf;

use serde::Serialize;

use super::atomic::Replacements;
use super::index::{BatchEntry, FileEntry, FileState, Index, IndexError};
use super::layout::{DataDir, month_of};

#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    #[error("reading the batches from the index: {source}")]
    Batches {
        #[source]
        source: IndexError,
    },
    #[error("reading month {month} from the index: {source}")]
    Index {
        month: String,
        #[source]
        source: IndexError,
    },
    #[error("writing {}: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

#[derive(Serialize)]
struct MonthMeta<'a> {
    month: &'a str,
    files: MonthFiles<'a>,
    batches: Vec<BatchRecord<'a>>,
}

/// A month's files, serialized as they stream from the index (oldest first): a month of any
/// size is written in bounded memory.
struct MonthFiles<'a> {
    index: &'a dyn Index,
    month: &'a str,
    /// Why the index stopped the walk, if it did.
    failed: std::cell::RefCell<Option<IndexError>>,
}

impl Serialize for MonthFiles<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{Error, SerializeSeq};
        let mut seq = serializer.serialize_seq(None)?;
        let mut written = Ok(());
        let walked = self.index.each_file_of_month(self.month, &mut |entry| {
            written = seq.serialize_element(&file_record(&entry));
            match written {
                Ok(()) => std::ops::ControlFlow::Continue(()),
                Err(_) => std::ops::ControlFlow::Break(()),
            }
        });
        written?;
        if let Err(error) = walked {
            *self.failed.borrow_mut() = Some(error);
            return Err(S::Error::custom("the index failed"));
        }
        seq.end()
    }
}

#[derive(Serialize)]
struct FileRecord<'a> {
    id: &'a str,
    filename: &'a str,
    mime_type: &'a str,
    size_bytes: u64,
    created_at: &'a str,
    path: Option<&'a str>,
    sha256: Option<&'a str>,
    downloaded_at: Option<&'a str>,
    state: FileState,
    /// Present (true) when `path` is an age file; `sha256` is then the plaintext's.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    encrypted: bool,
}

#[derive(Serialize)]
struct BatchRecord<'a> {
    id: &'a str,
    created_at: &'a str,
    path: Option<&'a str>,
    /// Result rows indexed.
    results: u64,
    sha256: Option<&'a str>,
    downloaded_at: Option<&'a str>,
    state: FileState,
    /// Present (true) when `path` is an age file; `sha256` is then the plaintext's.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    encrypted: bool,
}

/// Rewrite `DATA/meta/<month>.json` of each of `months` from the index; all of them are made
/// durable together, at the end (one wait for the disk, not one a month). Where the index
/// offers a second connection ([`Index::reader`]), a helper thread writes every other month
/// meanwhile: at 1,000,000 files the months' JSON is most of the end of a sync, and one core
/// would otherwise idle.
pub fn write_months<'a>(
    dir: &DataDir,
    index: &dyn Index,
    months: impl IntoIterator<Item = &'a str>,
) -> Result<(), MetaError> {
    let months: Vec<&str> = months.into_iter().collect();
    if months.is_empty() {
        return Ok(());
    }
    let meta_dir = dir.meta();
    std::fs::create_dir_all(&meta_dir).map_err(|source| MetaError::Write {
        path: meta_dir.clone(),
        source,
    })?;
    let mut batches = index
        .query_batches()
        .map_err(|source| MetaError::Batches { source })?;
    batches.sort_by(|a, b| (&a.meta.created_at, &a.meta.id).cmp(&(&b.meta.created_at, &b.meta.id)));
    let helper = match months.len() {
        1 => None,
        // Only an aid: without it the months are written one after the other.
        _ => index.reader().unwrap_or_else(|error| {
            tracing::debug!("writing the months' metadata on one thread: {error}");
            None
        }),
    };
    let (theirs, mine): (Vec<&str>, Vec<&str>) = match helper {
        Some(_) => {
            let every_other = months.iter().skip(1).step_by(2).copied().collect();
            (every_other, months.iter().step_by(2).copied().collect())
        }
        None => (Vec::new(), months),
    };
    let replacing = std::thread::scope(|scope| {
        let batches = &batches;
        let helping =
            helper.map(|reader| scope.spawn(move || stage_months(dir, &*reader, &theirs, batches)));
        let mut replacing = stage_months(dir, index, &mine, batches)?;
        if let Some(helping) = helping {
            let helped = helping
                .join()
                .expect("writing a month's metadata panicked")?;
            replacing.absorb(helped);
        }
        Ok::<_, MetaError>(replacing)
    })?;
    replacing.commit().map_err(|source| MetaError::Write {
        path: meta_dir,
        source,
    })
}

/// The new `DATA/meta/<month>.json` of each of `months`, staged; `batches` are every batch,
/// oldest first.
fn stage_months(
    dir: &DataDir,
    index: &dyn Index,
    months: &[&str],
    batches: &[BatchEntry],
) -> Result<Replacements, MetaError> {
    let mut replacing = Replacements::default();
    for month in months {
        stage_month(&mut replacing, dir, index, month, batches)?;
    }
    Ok(replacing)
}

/// Write the new `DATA/meta/<month>.json` into `replacing`.
fn stage_month(
    replacing: &mut Replacements,
    dir: &DataDir,
    index: &dyn Index,
    month: &str,
    batches: &[BatchEntry],
) -> Result<(), MetaError> {
    let meta = MonthMeta {
        month,
        files: MonthFiles {
            index,
            month,
            failed: Default::default(),
        },
        batches: batches
            .iter()
            .filter(|batch| month_of(&batch.meta.created_at).as_deref() == Some(month))
            .map(batch_record)
            .collect(),
    };
    let path = dir.meta_month(month);
    let written = replacing.stage_with(&path, |out| {
        let mut json = serde_json::Serializer::with_formatter(&mut *out, EntryPerLine::default());
        meta.serialize(&mut json).map_err(io::Error::from)?;
        out.write_all(b"\n")
    });
    if let Some(source) = meta.files.failed.take() {
        return Err(MetaError::Index {
            month: month.to_owned(),
            source,
        });
    }
    written.map_err(|source| MetaError::Write { path, source })
}

/// Compact JSON with each entry of a month's lists on a line of its own: a month of 200,000
/// files is a fifth smaller than indented JSON, and still reads and greps one entry at a time.
#[derive(Default)]
struct EntryPerLine {
    depth: usize,
    /// Whether the list being written has an entry yet (an empty one stays `[]`).
    list_has_entries: bool,
}

/// The depth of the lists `files` and `batches` (inside the month's object).
const LIST_DEPTH: usize = 2;

impl serde_json::ser::Formatter for EntryPerLine {
    fn begin_object<W: ?Sized + Write>(&mut self, out: &mut W) -> io::Result<()> {
        self.depth += 1;
        out.write_all(b"{")
    }

    fn end_object<W: ?Sized + Write>(&mut self, out: &mut W) -> io::Result<()> {
        self.depth -= 1;
        out.write_all(b"}")
    }

    fn begin_array<W: ?Sized + Write>(&mut self, out: &mut W) -> io::Result<()> {
        self.depth += 1;
        if self.depth == LIST_DEPTH {
            self.list_has_entries = false;
        }
        out.write_all(b"[")
    }

    fn end_array<W: ?Sized + Write>(&mut self, out: &mut W) -> io::Result<()> {
        let list = self.depth == LIST_DEPTH && self.list_has_entries;
        self.depth -= 1;
        out.write_all(if list { b"\n]" } else { b"]" })
    }

    fn begin_array_value<W: ?Sized + Write>(&mut self, out: &mut W, first: bool) -> io::Result<()> {
        if self.depth == LIST_DEPTH {
            self.list_has_entries = true;
            return out.write_all(if first { b"\n" } else { b",\n" });
        }
        if first { Ok(()) } else { out.write_all(b",") }
    }
}

fn file_record(entry: &FileEntry) -> FileRecord<'_> {
    FileRecord {
        id: &entry.meta.id,
        filename: &entry.meta.filename,
        mime_type: &entry.meta.mime_type,
        size_bytes: entry.meta.size_bytes,
        created_at: &entry.meta.created_at,
        path: entry.path.as_deref(),
        sha256: entry.sha256.as_deref(),
        downloaded_at: entry.downloaded_at.as_deref(),
        state: entry.state,
        encrypted: entry.encrypted,
    }
}

fn batch_record(entry: &BatchEntry) -> BatchRecord<'_> {
    BatchRecord {
        id: &entry.meta.id,
        created_at: &entry.meta.created_at,
        path: entry.path.as_deref(),
        results: entry.results_indexed,
        sha256: entry.sha256.as_deref(),
        downloaded_at: entry.downloaded_at.as_deref(),
        state: entry.state,
        encrypted: entry.encrypted,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;
    use crate::store::index::{
        BatchMeta, BatchOutcome, FileMeta, FileOutcome, ResultRow, SqliteIndex,
    };

    fn file(id: &str, created_at: &str) -> FileMeta {
        FileMeta {
            id: id.into(),
            filename: format!("{id}.csv"),
            mime_type: "text/csv".into(),
            size_bytes: 10,
            created_at: created_at.into(),
            downloadable: Some(true),
            expires_at: None,
        }
    }

    fn batch(id: &str, created_at: &str) -> BatchMeta {
        BatchMeta {
            id: id.into(),
            created_at: created_at.into(),
            processing_status: "ended".into(),
            ended_at: Some(created_at.into()),
            results_url: None,
            expected_results: 1,
        }
    }

    /// The ids of a month's files, in order.
    fn file_ids(meta: &Value) -> Vec<&str> {
        meta["files"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["id"].as_str().unwrap())
            .collect()
    }

    /// A new data directory and an empty index.
    fn data_and_index() -> (tempfile::TempDir, DataDir, SqliteIndex) {
        let dir = tempfile::tempdir().unwrap();
        let data = DataDir::new(dir.path());
        data.create().unwrap();
        (dir, data, SqliteIndex::open_in_memory().unwrap())
    }

    #[test]
    fn writes_one_month_sorted_and_parses_back() {
        let (_dir, data, mut index) = data_and_index();
        index
            .upsert_files(&[
                file("file_b", "2026-08-03T10:00:00Z"),
                file("file_a", "2026-08-03T10:00:00Z"),
                file("file_c", "2026-08-01T00:00:00Z"),
                file("file_july", "2026-07-31T23:59:59Z"),
            ])
            .unwrap();
        let complete = FileOutcome::Complete {
            path: "raw/2026-08/file_a_file_a.csv".into(),
            sha256: "ab".repeat(32),
            etag: None,
            retries: 0,
            encrypted: false,
        };
        index.record_file("file_a", &complete).unwrap();
        index
            .upsert_batches(&[
                batch("msgbatch_1", "2026-08-02T00:00:00Z"),
                batch("msgbatch_0", "2026-07-02T00:00:00Z"),
            ])
            .unwrap();
        let row = ResultRow {
            custom_id: "r1".into(),
            result_type: "succeeded".into(),
            offset: 0,
            length: 5,
        };
        index.add_results("msgbatch_1", &[row]).unwrap();
        let done = BatchOutcome::Complete {
            path: "raw/2026-08/batches/msgbatch_1.jsonl".into(),
            sha256: "cd".repeat(32),
            encrypted: true,
        };
        index.record_batch("msgbatch_1", &done).unwrap();

        write_months(&data, &index, ["2026-08"]).unwrap();
        let text = std::fs::read_to_string(data.meta_month("2026-08")).unwrap();
        let meta: Value = serde_json::from_str(&text).unwrap();

        assert_eq!(meta["month"], "2026-08");
        assert_eq!(file_ids(&meta), ["file_c", "file_a", "file_b"]);
        let a = &meta["files"][1];
        assert_eq!(a["state"], "complete");
        assert_eq!(a["path"], "raw/2026-08/file_a_file_a.csv");
        assert_eq!(a["size_bytes"], 10);
        assert_eq!(a["mime_type"], "text/csv");
        assert!(a["downloaded_at"].is_string());
        assert_eq!(meta["files"][0]["state"], "pending");
        assert!(meta["files"][0]["path"].is_null());

        let batches = meta["batches"].as_array().unwrap();
        assert_eq!(batches.len(), 1);
        assert_eq!(batches[0]["id"], "msgbatch_1");
        assert_eq!(batches[0]["results"], 1);
        assert_eq!(batches[0]["path"], "raw/2026-08/batches/msgbatch_1.jsonl");
        assert_eq!(batches[0]["encrypted"], true);
        assert!(
            a.get("encrypted").is_none(),
            "only encrypted entries say so"
        );
    }

    #[test]
    fn several_months_are_written_together_and_leave_no_temporary() {
        let (_dir, data, mut index) = data_and_index();
        index
            .upsert_files(&[
                file("file_aug", "2026-08-03T10:00:00Z"),
                file("file_july", "2026-07-31T23:59:59Z"),
            ])
            .unwrap();
        write_months(&data, &index, ["2026-08", "2026-07"]).unwrap();
        for (month, id) in [("2026-08", "file_aug"), ("2026-07", "file_july")] {
            let text = std::fs::read_to_string(data.meta_month(month)).unwrap();
            let meta: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(meta["month"], month);
            assert_eq!(meta["files"][0]["id"], id);
            assert_eq!(meta["files"].as_array().unwrap().len(), 1);
        }
        let mut names: Vec<String> = std::fs::read_dir(data.meta())
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name.ends_with(".json") || name.contains(".tmp-"))
            .collect();
        names.sort();
        assert_eq!(names, ["2026-07.json", "2026-08.json"]);
    }

    #[test]
    fn months_written_beside_a_helper_thread_are_each_whole() {
        let dir = tempfile::tempdir().unwrap();
        let data = DataDir::new(dir.path());
        data.create().unwrap();
        let mut index = SqliteIndex::open(&data.index_path()).unwrap();
        assert!(
            index.reader().unwrap().is_some(),
            "a file index has readers"
        );
        let months = ["2026-01", "2026-02", "2026-03", "2026-04", "2026-05"];
        let files: Vec<FileMeta> = months
            .iter()
            .enumerate()
            .flat_map(|(m, month)| {
                (0..=m).map(move |i| {
                    file(
                        &format!("file_{m}_{i}"),
                        &format!("{month}-0{}T00:00:00Z", i + 1),
                    )
                })
            })
            .collect();
        index.upsert_files(&files).unwrap();
        write_months(&data, &index, months).unwrap();
        for (m, month) in months.iter().enumerate() {
            let meta: Value =
                serde_json::from_slice(&std::fs::read(data.meta_month(month)).unwrap()).unwrap();
            assert_eq!(meta["month"], *month);
            let expected: Vec<String> = (0..=m).map(|i| format!("file_{m}_{i}")).collect();
            assert_eq!(file_ids(&meta), expected, "{month}");
        }
        let temporaries = std::fs::read_dir(data.meta())
            .unwrap()
            .filter(|entry| {
                let name = entry.as_ref().unwrap().file_name();
                name.to_string_lossy().contains(".tmp-")
            })
            .count();
        assert_eq!(temporaries, 0);
    }

    #[test]
    fn each_entry_is_on_a_line_of_its_own() {
        let (_dir, data, mut index) = data_and_index();
        index
            .upsert_files(&[
                file("file_a", "2026-08-01T00:00:00Z"),
                file("file_b", "2026-08-02T00:00:00Z"),
            ])
            .unwrap();
        index
            .upsert_batches(&[batch("msgbatch_1", "2026-08-03T00:00:00Z")])
            .unwrap();
        write_months(&data, &index, ["2026-08"]).unwrap();
        let text = std::fs::read_to_string(data.meta_month("2026-08")).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 6, "{text}");
        assert_eq!(lines[0], r#"{"month":"2026-08","files":["#);
        for (line, id) in [(lines[1], "file_a"), (lines[2], "file_b")] {
            let entry: Value = serde_json::from_str(line.trim_end_matches(',')).unwrap();
            assert_eq!(entry["id"], id);
        }
        assert_eq!(lines[3], r#"],"batches":["#);
        let batch: Value = serde_json::from_str(lines[4]).unwrap();
        assert_eq!(batch["id"], "msgbatch_1");
        assert_eq!(lines[5], "]}");
    }

    #[test]
    fn an_empty_month_is_written_empty() {
        let dir = tempfile::tempdir().unwrap();
        let data = DataDir::new(dir.path());
        let index = SqliteIndex::open_in_memory().unwrap();
        write_months(&data, &index, ["2026-01"]).unwrap();
        let text = std::fs::read_to_string(data.meta_month("2026-01")).unwrap();
        assert_eq!(
            text,
            "{\"month\":\"2026-01\",\"files\":[],\"batches\":[]}\n"
        );
    }
}
