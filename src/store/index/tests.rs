//! [`SqliteIndex`]'s own behaviour: its file, migrations, read-only opens and scale. What every
//! backend does through the [`Index`] trait is one suite run on SQLite and PostgreSQL:
//! `tests/it/index.rs`.

use std::time::Instant;

use super::*;

fn file(id: &str, created_at: &str) -> FileMeta {
    FileMeta {
        id: id.into(),
        filename: format!("{id}.csv"),
        mime_type: "text/csv".into(),
        size_bytes: 100,
        created_at: created_at.into(),
        downloadable: Some(true),
        expires_at: None,
    }
}

fn complete(path: &str) -> FileOutcome {
    FileOutcome::Complete {
        path: path.into(),
        sha256: "ab".repeat(32),
        etag: Some("\"v1\"".into()),
        retries: 2,
        encrypted: false,
    }
}

fn state_of(index: &SqliteIndex, id: &str) -> FileState {
    index.file(id).unwrap().unwrap().state
}

#[test]
fn reopening_keeps_data_and_does_not_migrate_again() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("index.sqlite");
    let mut index = SqliteIndex::open(&path).unwrap();
    assert_eq!(
        index
            .upsert_files(&[file("file_a", "2026-08-01T00:00:00Z")])
            .unwrap(),
        1
    );
    drop(index);
    for _ in 0..2 {
        let index = SqliteIndex::open(&path).unwrap();
        assert_eq!(state_of(&index, "file_a"), FileState::Pending);
    }
    let conn = rusqlite::Connection::open(&path).unwrap();
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .unwrap();
    assert_eq!(version, migrations::MIGRATIONS.len() as i64);
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |row| row.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
}

#[test]
fn a_database_from_a_newer_claudedl_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("index.sqlite");
    drop(SqliteIndex::open(&path).unwrap());
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.pragma_update(None, "user_version", 1000).unwrap();
    drop(conn);
    let error = SqliteIndex::open(&path).unwrap_err();
    assert!(
        matches!(error, IndexError::TooNew { found: 1000, .. }),
        "{error:?}"
    );
}

#[test]
fn a_hundred_thousand_files_upsert_in_pages() {
    const TOTAL: usize = 100_000;
    const PAGE: usize = 1_000;
    let dir = tempfile::tempdir().unwrap();
    let mut index = SqliteIndex::open(&dir.path().join("index.sqlite")).unwrap();
    let metas: Vec<FileMeta> = (0..TOTAL)
        .map(|n| {
            let created = format!(
                "2026-{:02}-{:02}T00:00:{:02}Z",
                n % 12 + 1,
                n % 28 + 1,
                n % 60
            );
            file(&format!("file_{n:08}"), &created)
        })
        .collect();

    let started = Instant::now();
    let mut new = 0;
    for page in metas.chunks(PAGE) {
        new += index.upsert_files(page).unwrap();
    }
    let upsert = started.elapsed();
    assert_eq!(new, TOTAL);

    let page = &metas[..PAGE];
    let started = Instant::now();
    assert_eq!(index.upsert_files(page).unwrap(), 0);
    let unchanged = started.elapsed();

    for meta in &metas[..PAGE / 2] {
        let path = format!("raw/{}", meta.id);
        index.record_file(&meta.id, &complete(&path)).unwrap();
    }
    let page_ids: Vec<&str> = page.iter().map(|meta| meta.id.as_str()).collect();
    let started = Instant::now();
    assert_eq!(index.settled_ids(&page_ids).unwrap().len(), PAGE / 2);
    let settled = started.elapsed();

    let started = Instant::now();
    let newest = FileQuery {
        limit: Some(50),
        ..FileQuery::default()
    };
    assert_eq!(index.query_files(&newest).unwrap().len(), 50);
    let query = started.elapsed();

    eprintln!(
        "{TOTAL} files in pages of {PAGE}: upsert {upsert:.2?} ({:.2?} per page); \
         unchanged page {unchanged:.2?}; settled_ids of {PAGE} {settled:.2?}; \
         newest 50 {query:.2?}",
        upsert / (TOTAL / PAGE) as u32
    );
}

#[test]
fn a_read_only_open_reads_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("index.sqlite");
    let mut index = SqliteIndex::open(&path).unwrap();
    index.upsert_files(&[file("file_a", "2026-08-01")]).unwrap();
    drop(index);
    let before = std::fs::read(&path).unwrap();
    let index = SqliteIndex::open_read_only(&path).unwrap();
    assert_eq!(index.query_files(&FileQuery::default()).unwrap().len(), 1);
    drop(index);
    assert_eq!(std::fs::read(&path).unwrap(), before);
    let missing = SqliteIndex::open_read_only(&dir.path().join("none.sqlite")).unwrap_err();
    assert!(matches!(missing, IndexError::Open { .. }), "{missing:?}");
}
