//! Verify and repair marking on a real data directory and SQLite index.

use std::io::Cursor;
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};

use super::*;
use crate::store::index::{BatchMeta, FileMeta, SqliteIndex};
use crate::store::{ResumeState, StatePaths};
use crate::sync::relative;

const CREATED: &str = "2026-08-01T00:00:00Z";

struct Fixture {
    _dir: tempfile::TempDir,
    data: DataDir,
    index: SqliteIndex,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let data = DataDir::new(dir.path().join("data"));
        data.create().unwrap();
        let index = SqliteIndex::open(&data.index_path()).unwrap();
        Fixture {
            _dir: dir,
            data,
            index,
        }
    }

    fn meta(id: &str, size: usize) -> FileMeta {
        FileMeta {
            id: id.into(),
            filename: "f.bin".into(),
            mime_type: "application/octet-stream".into(),
            size_bytes: size as u64,
            created_at: CREATED.into(),
            downloadable: Some(true),
            expires_at: None,
        }
    }

    /// A file downloaded with `content`, recorded Complete with its hash.
    fn complete(&mut self, id: &str, content: &[u8]) -> String {
        self.index
            .upsert_files(&[Fixture::meta(id, content.len())])
            .unwrap();
        let output = self.data.file_path(CREATED, id, "f.bin");
        std::fs::create_dir_all(output.parent().unwrap()).unwrap();
        std::fs::write(&output, content).unwrap();
        let path = relative(self.data.root(), &output);
        let outcome = FileOutcome::Complete {
            path: path.clone(),
            sha256: hex::encode(Sha256::digest(content)),
            etag: None,
            retries: 0,
            encrypted: false,
        };
        self.index.record_file(id, &outcome).unwrap();
        path
    }

    fn pending(&mut self, id: &str) -> StatePaths {
        self.index.upsert_files(&[Fixture::meta(id, 10)]).unwrap();
        let output = self.data.file_path(CREATED, id, "f.bin");
        StatePaths::staged(&output, &self.data.tmp_path_for(&output))
    }

    fn write(&self, relative: &str, content: &[u8]) {
        let path = self.data.root().join(relative);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }

    fn verify(&self) -> VerifyReport {
        self.verify_with(&DataFiles::new(self.data.root(), None))
    }

    fn verify_with(&self, open: &dyn Opener) -> VerifyReport {
        verify(&self.data, &self.index, open, 4, &Quiet).unwrap()
    }
}

fn kinds(report: &VerifyReport) -> Vec<&'static str> {
    report.findings.iter().map(Finding::kind).collect()
}

#[test]
fn intact_files_and_batches_pass() {
    let mut fx = Fixture::new();
    fx.complete("file_a", b"alpha");
    fx.complete("file_b", &[7; 3 << 20]);
    fx.index
        .upsert_batches(&[BatchMeta {
            id: "msgbatch_1".into(),
            created_at: CREATED.into(),
            processing_status: "ended".into(),
            ended_at: None,
            results_url: None,
            expected_results: 1,
        }])
        .unwrap();
    fx.write("raw/2026-08/batches/msgbatch_1.jsonl", b"{}\n");
    let outcome = BatchOutcome::Complete {
        path: "raw/2026-08/batches/msgbatch_1.jsonl".into(),
        sha256: hex::encode(Sha256::digest(b"{}\n")),
        encrypted: false,
    };
    fx.index.record_batch("msgbatch_1", &outcome).unwrap();
    let report = fx.verify();
    assert_eq!(report.findings, vec![]);
    assert_eq!((report.files_checked, report.batches_checked), (2, 1));
    assert_eq!(report.bytes, 5 + (3 << 20) + 3);
}

#[test]
fn changed_missing_unhashed_and_orphaned_files_are_found() {
    let mut fx = Fixture::new();
    let changed = fx.complete("file_changed", b"original");
    fx.write(&changed, b"0riginal");
    let missing = fx.complete("file_missing", b"gone");
    std::fs::remove_file(fx.data.root().join(&missing)).unwrap();
    let unhashed = fx.complete("file_unhashed", b"x");
    let no_hash = FileOutcome::Complete {
        path: unhashed.clone(),
        sha256: String::new(),
        etag: None,
        retries: 0,
        encrypted: false,
    };
    fx.index.record_file("file_unhashed", &no_hash).unwrap();
    fx.write("raw/2026-08/extra.bin", b"extra");

    let report = fx.verify();
    assert_eq!(
        kinds(&report),
        ["changed", "missing", "orphaned", "unhashed"]
    );
    let Finding::Changed { item, sha256, size } = &report.findings[0] else {
        panic!("{:?}", report.findings[0]);
    };
    assert_eq!(
        (item.id.as_str(), item.path.as_str()),
        ("file_changed", changed.as_str())
    );
    assert_eq!(
        (sha256.clone(), *size),
        (hex::encode(Sha256::digest(b"0riginal")), 8)
    );
    assert_eq!(report.findings[1].repairable().unwrap().path, missing);
    assert_eq!(
        report.findings[2],
        Finding::Orphaned {
            path: "raw/2026-08/extra.bin".into(),
            size: 5
        }
    );
    assert_eq!(report.findings[3].repairable().unwrap().path, unhashed);
}

#[test]
fn a_size_change_alone_is_a_change() {
    let item = Item {
        kind: ItemKind::File,
        id: "file_a".into(),
        path: "p".into(),
        sha256: Some(hex::encode(Sha256::digest(b"abc"))),
        size: Some(4),
        encrypted: false,
    };
    let open = |_: &Item| Ok(Opened::Plain(Box::new(Cursor::new(b"abc".to_vec()))));
    let found = hash::check_all(std::slice::from_ref(&item), &open, 1, &Quiet);
    assert_eq!(kinds_of(&found.findings), ["changed"]);
    assert_eq!(found.bytes, 3);
}

fn kinds_of(findings: &[Finding]) -> Vec<&'static str> {
    findings.iter().map(Finding::kind).collect()
}

#[test]
fn bytes_come_through_the_opener() {
    let mut fx = Fixture::new();
    let path = fx.complete("file_a", b"plaintext");
    // On disk: something else entirely (as an encrypted file would be).
    fx.write(&path, b"ciphertext, longer than the plaintext");
    let decrypt = |item: &Item| -> io::Result<Opened> {
        assert_eq!(item.id, "file_a");
        Ok(Opened::Plain(Box::new(Cursor::new(b"plaintext".to_vec()))))
    };
    assert_eq!(fx.verify_with(&decrypt).findings, vec![]);
    let broken = |_: &Item| -> io::Result<Opened> {
        Err(io::Error::new(io::ErrorKind::InvalidData, "wrong identity"))
    };
    let report = fx.verify_with(&broken);
    assert!(
        matches!(&report.findings[..], [Finding::Unreadable { error, .. }] if error == "wrong identity"),
        "{:?}",
        report.findings
    );
}

#[test]
fn many_files_are_all_hashed_once_across_threads() {
    let mut fx = Fixture::new();
    for i in 0..200 {
        fx.complete(&format!("file_{i:03}"), &vec![i as u8; i * 10]);
    }
    struct Count(AtomicU64, AtomicU64);
    impl Progress for Count {
        fn start(&self, bytes: u64) {
            self.0.store(bytes, Ordering::Relaxed);
        }
        fn hashed(&self, bytes: u64) {
            self.1.fetch_add(bytes, Ordering::Relaxed);
        }
    }
    let count = Count(AtomicU64::new(0), AtomicU64::new(0));
    let report = verify(
        &fx.data,
        &fx.index,
        &DataFiles::new(fx.data.root(), None),
        8,
        &count,
    )
    .unwrap();
    let total: u64 = (0..200).map(|i| i * 10).sum();
    assert_eq!(report.findings, vec![]);
    assert_eq!(report.files_checked, 200);
    assert_eq!(report.bytes, total);
    assert_eq!(count.0.load(Ordering::Relaxed), total);
    assert_eq!(count.1.load(Ordering::Relaxed), total);
}

#[test]
fn unfinished_downloads_are_in_progress_and_unowned_tmp_files_orphaned() {
    let mut fx = Fixture::new();
    let resumable = fx.pending("file_resumable");
    std::fs::write(&resumable.part, [0; 10]).unwrap();
    let mut state = ResumeState::new("http://api/x".into());
    state.done.insert(0..4);
    state.save(&resumable.state).unwrap();
    fx.pending("file_started");
    fx.index
        .record_file("file_started", &FileOutcome::Downloading)
        .unwrap();
    fx.pending("file_untouched");
    fx.write("tmp/leftover.part", b"junk");

    let report = fx.verify();
    let part = relative(fx.data.root(), &resumable.part);
    assert_eq!(
        report.findings,
        vec![
            Finding::InProgress {
                item: ItemKind::File,
                id: "file_resumable".into(),
                state: FileState::Pending,
                path: Some(part),
                bytes: 4,
            },
            Finding::InProgress {
                item: ItemKind::File,
                id: "file_started".into(),
                state: FileState::Downloading,
                path: None,
                bytes: 0,
            },
            Finding::Orphaned {
                path: "tmp/leftover.part".into(),
                size: 4,
            },
        ]
    );
    assert_eq!(report.problems().count(), 1);
}

#[test]
fn repair_marks_bad_entries_failed_and_reads_back_the_outcome() {
    let mut fx = Fixture::new();
    let path = fx.complete("file_bad", b"good");
    fx.write(&path, b"evil");
    fx.complete("file_good", b"fine");
    fx.write("raw/orphan", b"o");
    let report = fx.verify();

    let marked = mark_for_repair(&mut fx.index, &report.findings).unwrap();
    assert_eq!(marked.len(), 1, "orphans are not marked");
    let wanted: Vec<String> = fx
        .index
        .files_to_fetch()
        .unwrap()
        .into_iter()
        .map(|e| e.meta.id)
        .collect();
    assert_eq!(wanted, ["file_bad"]);
    let entry = fx.index.file("file_bad").unwrap().unwrap();
    assert_eq!(entry.path.as_deref(), Some(path.as_str()), "still known");
    assert!(entry.reason.unwrap().contains("changed"));
    let outcomes = repair_outcomes(&fx.index, &marked).unwrap();
    assert!(!outcomes[0].is_repaired());

    fx.complete("file_bad", b"good");
    let outcomes = repair_outcomes(&fx.index, &marked).unwrap();
    assert_eq!(
        outcomes,
        vec![Repair::Repaired {
            item: marked[0].clone(),
            sha256: hex::encode(Sha256::digest(b"good")),
        }]
    );
}

#[test]
fn json_names_the_kind_the_entry_and_both_hashes() {
    let finding = Finding::Changed {
        item: Item {
            kind: ItemKind::Batch,
            id: "msgbatch_1".into(),
            path: "raw/x.jsonl".into(),
            sha256: Some("aa".into()),
            size: None,
            encrypted: true,
        },
        sha256: "bb".into(),
        size: 3,
    };
    let value = serde_json::to_value(&finding).unwrap();
    assert_eq!(
        value,
        serde_json::json!({"kind": "changed", "item": "batch", "id": "msgbatch_1",
            "path": "raw/x.jsonl", "expected_sha256": "aa", "encrypted": true, "sha256": "bb", "size": 3})
    );
}

#[test]
fn an_encrypted_download_in_tmp_is_in_progress_not_orphaned() {
    let mut fx = Fixture::new();
    fx.pending("file_sealed");
    let output = crate::crypt::age_path(&fx.data.file_path(CREATED, "file_sealed", "f.bin"));
    let sealed = StatePaths::staged(&output, &fx.data.tmp_path_for(&output));
    std::fs::write(&sealed.part, [0; 10]).unwrap();
    let mut state = ResumeState::new("http://api/x".into());
    state.done.insert(0..6);
    state.save(&sealed.state).unwrap();

    let report = fx.verify();
    assert!(relative(fx.data.root(), &sealed.part).ends_with("f.bin.age.part"));
    assert_eq!(
        report.findings,
        vec![Finding::InProgress {
            item: ItemKind::File,
            id: "file_sealed".into(),
            state: FileState::Pending,
            path: Some(relative(fx.data.root(), &sealed.part)),
            bytes: 6,
        }]
    );
}
