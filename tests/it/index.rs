//! The index's behaviour through the `Index` trait, one suite run on both backends: SQLite
//! in memory and PostgreSQL on the throwaway cluster (a fresh database per test). Backend-specific
//! behaviour (files, migrations, read-only opens) is tested beside each backend.

use std::collections::HashSet;

use claudedl::store::index::{
    BatchMeta, BatchOutcome, FileEntry, FileMeta, FileOutcome, FileQuery, FileState, Index,
    IndexError, MALFORMED_REASON, PgIndex, ResultRow, SqliteIndex,
};

use crate::support::postgres as cluster;

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

fn batch(id: &str, created_at: &str, status: &str) -> BatchMeta {
    BatchMeta {
        id: id.into(),
        created_at: created_at.into(),
        processing_status: status.into(),
        ended_at: None,
        results_url: Some("https://api.example/v1/messages/batches/x/results".into()),
        expected_results: 2,
    }
}

fn row(custom_id: &str, offset: u64) -> ResultRow {
    ResultRow {
        custom_id: custom_id.into(),
        result_type: "succeeded".into(),
        offset,
        length: 10,
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

fn state_of(index: &dyn Index, id: &str) -> FileState {
    index.file(id).unwrap().unwrap().state
}

fn ids(entries: &[FileEntry]) -> Vec<&str> {
    entries.iter().map(|entry| entry.meta.id.as_str()).collect()
}

fn sqlite() -> Box<dyn Index> {
    Box::new(SqliteIndex::open_in_memory().unwrap())
}

fn pg() -> Box<dyn Index> {
    let db = cluster::database();
    Box::new(PgIndex::connect(db.url.parse::<tokio_postgres::Config>().unwrap(), &db.name).unwrap())
}

/// Each named test, once per backend: `index::sqlite::NAME` and `index::postgres::NAME`.
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[test]
            fn $name() {
                super::$name(&mut *super::sqlite());
            })*
        }
        mod postgres {
            $(#[test]
            fn $name() {
                super::$name(&mut *super::pg());
            })*
        }
    };
}

on_both_backends!(
    upsert_counts_new_files_and_keeps_complete_state,
    a_size_change_sends_a_complete_file_back_to_pending,
    a_skipped_file_that_becomes_downloadable_is_pending_again,
    outcomes_are_recorded_and_unknown_ids_refused,
    settled_ids_are_the_complete_and_skipped_ones,
    files_to_fetch_are_the_unsettled_ones_newest_first,
    queries_filter_by_month_mime_glob_and_state,
    months_span_files_and_batches,
    batches_to_fetch_are_ended_and_unsettled,
    results_are_added_looked_up_replaced_counted_and_cleared,
    two_files_are_never_recorded_at_one_path,
    the_owners_of_many_paths_are_found_at_once,
    a_group_commit_records_every_outcome_and_refuses_only_the_bad_one,
    a_malformed_entry_goes_back_to_pending_once_listed_well,
);

fn upsert_counts_new_files_and_keeps_complete_state(index: &mut dyn Index) {
    let a = file("file_a", "2026-08-01T00:00:00Z");
    assert_eq!(index.upsert_files(std::slice::from_ref(&a)).unwrap(), 1);
    index
        .record_file("file_a", &complete("raw/2026-08/file_a_a.csv"))
        .unwrap();

    let renamed = FileMeta {
        filename: "renamed.csv".into(),
        ..a.clone()
    };
    let b = file("file_b", "2026-08-02T00:00:00Z");
    assert_eq!(index.upsert_files(&[a, renamed, b]).unwrap(), 1);

    let entry = index.file("file_a").unwrap().unwrap();
    assert_eq!(entry.state, FileState::Complete);
    assert_eq!(entry.meta.filename, "renamed.csv");
    assert_eq!(entry.path.as_deref(), Some("raw/2026-08/file_a_a.csv"));
    assert_eq!(entry.sha256, Some("ab".repeat(32)));
    assert_eq!(entry.etag.as_deref(), Some("\"v1\""));
    assert_eq!(entry.retries, 2);
    assert!(entry.downloaded_at.is_some());
    assert_eq!(state_of(index, "file_b"), FileState::Pending);
}

fn a_size_change_sends_a_complete_file_back_to_pending(index: &mut dyn Index) {
    let a = file("file_a", "2026-08-01T00:00:00Z");
    index.upsert_files(std::slice::from_ref(&a)).unwrap();
    index
        .record_file("file_a", &complete("raw/2026-08/file_a_a.csv"))
        .unwrap();
    let grown = FileMeta {
        size_bytes: 101,
        ..a
    };
    assert_eq!(index.upsert_files(&[grown]).unwrap(), 0);
    let entry = index.file("file_a").unwrap().unwrap();
    assert_eq!(entry.state, FileState::Pending);
    assert_eq!(entry.meta.size_bytes, 101);
    assert_eq!((entry.sha256, entry.downloaded_at), (None, None));
}

fn a_skipped_file_that_becomes_downloadable_is_pending_again(index: &mut dyn Index) {
    let hidden = FileMeta {
        downloadable: Some(false),
        ..file("file_a", "2026-08-01T00:00:00Z")
    };
    index.upsert_files(std::slice::from_ref(&hidden)).unwrap();
    let skipped = FileOutcome::Skipped {
        reason: "not downloadable".into(),
    };
    index.record_file("file_a", &skipped).unwrap();
    index.upsert_files(std::slice::from_ref(&hidden)).unwrap();
    assert_eq!(state_of(index, "file_a"), FileState::Skipped);
    let shown = FileMeta {
        downloadable: Some(true),
        ..hidden
    };
    index.upsert_files(&[shown]).unwrap();
    let entry = index.file("file_a").unwrap().unwrap();
    assert_eq!((entry.state, entry.reason), (FileState::Pending, None));
}

fn outcomes_are_recorded_and_unknown_ids_refused(index: &mut dyn Index) {
    index
        .upsert_files(&[file("file_a", "2026-08-01T00:00:00Z")])
        .unwrap();
    index
        .record_file("file_a", &FileOutcome::Downloading)
        .unwrap();
    assert_eq!(state_of(index, "file_a"), FileState::Downloading);
    let failed = FileOutcome::Failed {
        reason: "HTTP 503".into(),
        retries: 5,
    };
    index.record_file("file_a", &failed).unwrap();
    let entry = index.file("file_a").unwrap().unwrap();
    assert_eq!(entry.state, FileState::Failed);
    assert_eq!(
        (entry.reason.as_deref(), entry.retries),
        (Some("HTTP 503"), 5)
    );

    let error = index
        .record_file("file_nope", &FileOutcome::Downloading)
        .unwrap_err();
    assert!(
        matches!(&error, IndexError::Unknown { id, .. } if id == "file_nope"),
        "{error:?}"
    );
    assert!(index.file("file_nope").unwrap().is_none());
}

fn settled_ids_are_the_complete_and_skipped_ones(index: &mut dyn Index) {
    let metas: Vec<FileMeta> = ["file_a", "file_b", "file_c", "file_d", "file_e"]
        .iter()
        .map(|id| file(id, "2026-08-01T00:00:00Z"))
        .collect();
    index.upsert_files(&metas).unwrap();
    index.record_file("file_a", &complete("a")).unwrap();
    let skipped = FileOutcome::Skipped {
        reason: "gone".into(),
    };
    index.record_file("file_b", &skipped).unwrap();
    let failed = FileOutcome::Failed {
        reason: "x".into(),
        retries: 0,
    };
    index.record_file("file_c", &failed).unwrap();
    index
        .record_file("file_d", &FileOutcome::Downloading)
        .unwrap();

    let asked = [
        "file_a",
        "file_b",
        "file_c",
        "file_d",
        "file_e",
        "file_unknown",
        "it's \"odd\"",
    ];
    let settled = index.settled_ids(&asked).unwrap();
    let expected: HashSet<String> = ["file_a", "file_b"].map(String::from).into();
    assert_eq!(settled, expected);
    assert!(index.settled_ids(&[]).unwrap().is_empty());
}

fn files_to_fetch_are_the_unsettled_ones_newest_first(index: &mut dyn Index) {
    index
        .upsert_files(&[
            file("file_old", "2026-06-01T00:00:00Z"),
            file("file_new", "2026-08-01T00:00:00Z"),
            file("file_mid_b", "2026-07-01T00:00:00Z"),
            file("file_mid_a", "2026-07-01T00:00:00Z"),
            file("file_done", "2026-09-01T00:00:00Z"),
            file("file_failed", "2026-05-01T00:00:00Z"),
        ])
        .unwrap();
    index.record_file("file_done", &complete("d")).unwrap();
    let failed = FileOutcome::Failed {
        reason: "x".into(),
        retries: 1,
    };
    index.record_file("file_failed", &failed).unwrap();
    index
        .record_file("file_old", &FileOutcome::Downloading)
        .unwrap();
    let fetch = index.files_to_fetch().unwrap();
    assert_eq!(
        ids(&fetch),
        [
            "file_new",
            "file_mid_a",
            "file_mid_b",
            "file_old",
            "file_failed"
        ]
    );
}

fn queries_filter_by_month_mime_glob_and_state(index: &mut dyn Index) {
    let pdf = FileMeta {
        filename: "Report 2026.pdf".into(),
        mime_type: "application/pdf".into(),
        ..file("file_pdf", "2026-08-05T00:00:00Z")
    };
    index
        .upsert_files(&[
            file("file_aug", "2026-08-01T00:00:00Z"),
            file("file_jul", "2026-07-31T23:59:59Z"),
            file("file_sep", "2026-09-01T00:00:00Z"),
            pdf,
        ])
        .unwrap();
    index.record_file("file_aug", &complete("a")).unwrap();
    let query = |query: FileQuery| {
        let entries = index.query_files(&query).unwrap();
        ids(&entries)
            .into_iter()
            .map(String::from)
            .collect::<Vec<_>>()
    };

    assert_eq!(
        query(FileQuery::default()),
        ["file_sep", "file_pdf", "file_aug", "file_jul"]
    );
    let august = FileQuery {
        month: Some("2026-08".into()),
        ..FileQuery::default()
    };
    assert_eq!(query(august.clone()), ["file_pdf", "file_aug"]);
    let csv_in_august = FileQuery {
        mime: Some("text/csv".into()),
        ..august.clone()
    };
    assert_eq!(query(csv_in_august), ["file_aug"]);
    let glob = FileQuery {
        name_glob: Some("*.csv".into()),
        ..FileQuery::default()
    };
    assert_eq!(query(glob), ["file_sep", "file_aug", "file_jul"]);
    let spaced = FileQuery {
        name_glob: Some("Report *.pdf".into()),
        ..FileQuery::default()
    };
    assert_eq!(query(spaced), ["file_pdf"]);
    let complete = FileQuery {
        state: Some(FileState::Complete),
        ..FileQuery::default()
    };
    assert_eq!(query(complete), ["file_aug"]);
    let limited = FileQuery {
        limit: Some(2),
        ..FileQuery::default()
    };
    assert_eq!(query(limited), ["file_sep", "file_pdf"]);
    let year = FileQuery {
        month: Some("2026".into()),
        ..FileQuery::default()
    };
    assert!(query(year).is_empty());
}

fn months_span_files_and_batches(index: &mut dyn Index) {
    assert!(index.months().unwrap().is_empty());
    index
        .upsert_files(&[
            file("file_a", "2026-08-01T00:00:00Z"),
            file("file_b", "2026-08-31T23:59:59Z"),
            file("file_c", "2025-12-01T00:00:00Z"),
            file("file_bad", "yesterday"),
        ])
        .unwrap();
    index
        .upsert_batches(&[batch("msgbatch_1", "2026-03-01T00:00:00Z", "ended")])
        .unwrap();
    assert_eq!(index.months().unwrap(), ["2025-12", "2026-03", "2026-08"]);
}

fn batches_to_fetch_are_ended_and_unsettled(index: &mut dyn Index) {
    let new = index
        .upsert_batches(&[
            batch("msgbatch_running", "2026-08-04T00:00:00Z", "in_progress"),
            batch("msgbatch_ended", "2026-08-03T00:00:00Z", "ended"),
            batch("msgbatch_done", "2026-08-02T00:00:00Z", "ended"),
            batch("msgbatch_cancelling", "2026-08-01T00:00:00Z", "canceling"),
        ])
        .unwrap();
    assert_eq!(new, 4);
    let done = BatchOutcome::Complete {
        path: "raw/2026-08/batches/msgbatch_done.jsonl".into(),
        sha256: "cd".repeat(32),
        encrypted: true,
    };
    index.record_batch("msgbatch_done", &done).unwrap();
    let fetch_ids = |index: &dyn Index| {
        let entries = index.batches_to_fetch().unwrap();
        entries.into_iter().map(|e| e.meta.id).collect::<Vec<_>>()
    };
    assert_eq!(fetch_ids(index), ["msgbatch_ended"]);

    // The running batch ends; the complete one keeps its state when listed again.
    let listed = [
        batch("msgbatch_running", "2026-08-04T00:00:00Z", "ended"),
        batch("msgbatch_done", "2026-08-02T00:00:00Z", "ended"),
    ];
    assert_eq!(index.upsert_batches(&listed).unwrap(), 0);
    assert_eq!(fetch_ids(index), ["msgbatch_running", "msgbatch_ended"]);
    let entry = index.batch("msgbatch_done").unwrap().unwrap();
    assert_eq!(entry.state, FileState::Complete);
    assert!(entry.encrypted);
    assert_eq!(
        entry.path.as_deref(),
        Some("raw/2026-08/batches/msgbatch_done.jsonl")
    );

    let skipped = BatchOutcome::Skipped {
        reason: "no results_url".into(),
    };
    index.record_batch("msgbatch_running", &skipped).unwrap();
    let failed = BatchOutcome::Failed {
        reason: "count".into(),
    };
    index.record_batch("msgbatch_ended", &failed).unwrap();
    assert_eq!(fetch_ids(index), ["msgbatch_ended"]);
    let entry = index.batch("msgbatch_ended").unwrap().unwrap();
    assert_eq!(
        (entry.state, entry.reason.as_deref()),
        (FileState::Failed, Some("count"))
    );
    assert_eq!(index.query_batches().unwrap().len(), 4);
    let error = index
        .record_batch("msgbatch_nope", &BatchOutcome::Downloading)
        .unwrap_err();
    assert!(
        matches!(error, IndexError::Unknown { kind: "batch", .. }),
        "{error:?}"
    );
}

fn results_are_added_looked_up_replaced_counted_and_cleared(index: &mut dyn Index) {
    index
        .upsert_batches(&[
            batch("msgbatch_1", "2026-08-01T00:00:00Z", "ended"),
            batch("msgbatch_2", "2026-08-01T00:00:00Z", "ended"),
        ])
        .unwrap();
    index
        .add_results("msgbatch_1", &[row("a", 0), row("b", 11)])
        .unwrap();
    index.add_results("msgbatch_2", &[row("a", 0)]).unwrap();
    assert_eq!(index.result_count("msgbatch_1").unwrap(), 2);
    assert_eq!(index.result("msgbatch_1", "b").unwrap(), Some(row("b", 11)));
    assert_eq!(index.result("msgbatch_1", "zz").unwrap(), None);

    // Re-indexing after a cut stream replaces rows instead of duplicating them.
    let moved = ResultRow {
        result_type: "errored".into(),
        ..row("b", 40)
    };
    index
        .add_results("msgbatch_1", &[moved.clone(), row("c", 51)])
        .unwrap();
    assert_eq!(index.result_count("msgbatch_1").unwrap(), 3);
    assert_eq!(index.result("msgbatch_1", "b").unwrap(), Some(moved));
    assert_eq!(
        index.batch("msgbatch_1").unwrap().unwrap().results_indexed,
        3
    );
    index.add_results("msgbatch_1", &[]).unwrap();

    index.clear_results("msgbatch_1").unwrap();
    assert_eq!(index.result_count("msgbatch_1").unwrap(), 0);
    assert_eq!(
        index.batch("msgbatch_1").unwrap().unwrap().results_indexed,
        0
    );
    assert_eq!(index.result_count("msgbatch_2").unwrap(), 1);

    let error = index
        .add_results("msgbatch_nope", &[row("a", 0)])
        .unwrap_err();
    assert!(
        matches!(error, IndexError::Unknown { kind: "batch", .. }),
        "{error:?}"
    );
}

fn two_files_are_never_recorded_at_one_path(index: &mut dyn Index) {
    index
        .upsert_files(&[file("file_a", "2026-08-01"), file("file_b", "2026-08-02")])
        .unwrap();
    index
        .record_file("file_a", &complete("raw/2026-08/x"))
        .unwrap();
    let error = index
        .record_file("file_b", &complete("raw/2026-08/x"))
        .unwrap_err();
    assert!(matches!(error, IndexError::PathTaken { .. }), "{error:?}");
    let message = error.to_string();
    assert!(
        message.contains("file_b") && message.contains("raw/2026-08/x"),
        "{message}"
    );
    assert_eq!(state_of(index, "file_b"), FileState::Pending);
    assert_eq!(
        index.file_at("raw/2026-08/x").unwrap().as_deref(),
        Some("file_a")
    );
}

/// Files `file_a`, `file_b` and `file_c`, listed.
fn list_a_b_c(index: &mut dyn Index) {
    index
        .upsert_files(&[
            file("file_a", "2026-08-01"),
            file("file_b", "2026-08-02"),
            file("file_c", "2026-08-03"),
        ])
        .unwrap();
}

fn the_owners_of_many_paths_are_found_at_once(index: &mut dyn Index) {
    list_a_b_c(index);
    index.record_file("file_a", &complete("raw/a")).unwrap();
    index.record_file("file_b", &complete("raw/b")).unwrap();
    let owners = index.files_at(&["raw/a", "raw/b", "raw/c"]).unwrap();
    let expected = [("raw/a", "file_a"), ("raw/b", "file_b")]
        .map(|(path, id)| (path.to_owned(), id.to_owned()));
    assert_eq!(owners, expected.into_iter().collect());
    assert!(index.files_at(&[]).unwrap().is_empty());
}

fn a_group_commit_records_every_outcome_and_refuses_only_the_bad_one(index: &mut dyn Index) {
    list_a_b_c(index);
    let outcomes = vec![
        ("file_a".to_owned(), complete("raw/a")),
        ("file_b".to_owned(), complete("raw/a")),
        ("file_x".to_owned(), complete("raw/x")),
        ("file_c".to_owned(), complete("raw/c")),
    ];
    let results = index.record_files(&outcomes).unwrap();
    assert!(results[0].is_ok() && results[3].is_ok(), "{results:?}");
    assert!(
        matches!(results[1], Err(IndexError::PathTaken { .. })),
        "{results:?}"
    );
    assert!(
        matches!(results[2], Err(IndexError::Unknown { .. })),
        "{results:?}"
    );
    assert_eq!(state_of(index, "file_a"), FileState::Complete);
    assert_eq!(state_of(index, "file_b"), FileState::Pending);
    assert_eq!(state_of(index, "file_c"), FileState::Complete);
}

fn a_malformed_entry_goes_back_to_pending_once_listed_well(index: &mut dyn Index) {
    let bad = FileMeta {
        filename: String::new(),
        size_bytes: 0,
        ..file("file_a", "2026-08-01")
    };
    index.upsert_files(std::slice::from_ref(&bad)).unwrap();
    let reason = format!("{MALFORMED_REASON}: filename is missing or null");
    index
        .record_file("file_a", &FileOutcome::Failed { reason, retries: 0 })
        .unwrap();
    index.upsert_files(&[bad]).unwrap();
    assert_eq!(state_of(index, "file_a"), FileState::Failed);
    index.upsert_files(&[file("file_a", "2026-08-01")]).unwrap();
    let entry = index.file("file_a").unwrap().unwrap();
    assert_eq!((entry.state, entry.reason), (FileState::Pending, None));
}

#[test]
fn postgres_connecting_again_keeps_data_and_does_not_migrate_again() {
    let db = cluster::database();
    let config = db.url.parse().unwrap();
    let mut index = PgIndex::connect(&config, &db.name).unwrap();
    index.upsert_files(&[file("file_a", "2026-08-01")]).unwrap();
    drop(index);
    for _ in 0..2 {
        let index = PgIndex::connect(&config, &db.name).unwrap();
        assert_eq!(state_of(&index, "file_a"), FileState::Pending);
    }
    let version = cluster::cluster().psql(&db.name, "SELECT version FROM claudedl_schema");
    let rows = cluster::cluster().psql(&db.name, "SELECT count(*) FROM claudedl_schema");
    assert_eq!((version.as_str(), rows.as_str()), ("5", "1"));
}

#[test]
fn postgres_a_database_from_a_newer_claudedl_is_refused() {
    let db = cluster::database();
    let config = db.url.parse().unwrap();
    drop(PgIndex::connect(&config, &db.name).unwrap());
    cluster::cluster().psql(&db.name, "UPDATE claudedl_schema SET version = 1000");
    let error = PgIndex::connect(&config, &db.name).unwrap_err();
    assert!(
        matches!(error, IndexError::TooNew { found: 1000, .. }),
        "{error:?}"
    );
    let error = PgIndex::connect_read_only(&config, &db.name).unwrap_err();
    assert!(
        matches!(error, IndexError::TooNew { found: 1000, .. }),
        "{error:?}"
    );
}

#[test]
fn postgres_a_read_only_connection_creates_nothing() {
    let db = cluster::database();
    let config = db.url.parse().unwrap();
    let error = PgIndex::connect_read_only(&config, &db.name).unwrap_err();
    assert!(matches!(error, IndexError::NoSchema { .. }), "{error:?}");
    assert!(error.to_string().contains("fleet init"), "{error}");
    let tables = cluster::cluster().psql(
        &db.name,
        "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'",
    );
    assert_eq!(tables, "0");
    drop(PgIndex::connect(&config, &db.name).unwrap());
    let index = PgIndex::connect_read_only(&config, &db.name).unwrap();
    assert!(index.query_files(&FileQuery::default()).unwrap().is_empty());
}

/// Two processes' worth of first connections at once: each script is applied once.
#[test]
fn postgres_concurrent_first_connections_migrate_once() {
    let db = cluster::database();
    let config: tokio_postgres::Config = db.url.parse().unwrap();
    std::thread::scope(|scope| {
        for _ in 0..4 {
            scope.spawn(|| drop(PgIndex::connect(&config, &db.name).unwrap()));
        }
    });
    let rows = cluster::cluster().psql(&db.name, "SELECT count(*) FROM claudedl_schema");
    assert_eq!(rows, "1");
}

/// Inside a runtime (the CLI's async commands) the queries run on a thread of their own
/// instead of panicking on a nested `block_on`.
#[tokio::test]
async fn postgres_works_from_inside_a_runtime() {
    let mut index = pg();
    upsert_counts_new_files_and_keeps_complete_state(&mut *index);
}

/// Text orders by bytes, as SQLite sorts, whatever the database's locale.
#[test]
fn postgres_orders_ids_and_dates_by_bytes() {
    let mut index = pg();
    index
        .upsert_files(&[
            file("file_b", "2026-08-01T00:00:00Z"),
            file("File_c", "2026-08-01T00:00:00Z"),
            file("file_a", "2026-08-01T00:00:00Z"),
        ])
        .unwrap();
    let entries = index.query_files(&FileQuery::default()).unwrap();
    assert_eq!(ids(&entries), ["File_c", "file_a", "file_b"]);
}
