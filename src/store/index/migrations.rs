//! The index schema as an append-only list of SQL scripts, tracked with `PRAGMA user_version`
//! (the pattern of cargo's `src/util/sqlite.rs`).
//!
//! Never edit or reorder a script once released: add a new one at the end. A database whose
//! version is past the end of the list was written by a newer claudedl and is refused.

use std::path::Path;

use rusqlite::{Connection, TransactionBehavior};

use super::IndexError;

/// Script `n` takes the schema from version `n` to `n + 1`.
pub const MIGRATIONS: &[&str] = &[
    // 1: files, batches and batch results.
    r#"
    CREATE TABLE files (
        id             TEXT PRIMARY KEY NOT NULL,
        filename       TEXT NOT NULL,
        mime_type      TEXT NOT NULL,
        size_bytes     INTEGER NOT NULL,
        created_at     TEXT NOT NULL,
        downloadable   INTEGER,
        expires_at     TEXT,
        state          TEXT NOT NULL DEFAULT 'pending',
        reason         TEXT,
        path           TEXT,
        sha256         TEXT,
        etag           TEXT,
        retries        INTEGER NOT NULL DEFAULT 0,
        first_seen_at  TEXT NOT NULL,
        updated_at     TEXT NOT NULL,
        downloaded_at  TEXT
    );
    CREATE INDEX files_by_created ON files (created_at DESC, id);
    CREATE INDEX files_by_state ON files (state);
    CREATE INDEX files_by_mime ON files (mime_type);

    CREATE TABLE batches (
        id                 TEXT PRIMARY KEY NOT NULL,
        created_at         TEXT NOT NULL,
        processing_status  TEXT NOT NULL,
        ended_at           TEXT,
        results_url        TEXT,
        expected_results   INTEGER NOT NULL,
        state              TEXT NOT NULL DEFAULT 'pending',
        reason             TEXT,
        path               TEXT,
        sha256             TEXT,
        results_indexed    INTEGER NOT NULL DEFAULT 0,
        first_seen_at      TEXT NOT NULL,
        updated_at         TEXT NOT NULL,
        downloaded_at      TEXT
    );
    CREATE INDEX batches_by_created ON batches (created_at DESC, id);

    CREATE TABLE batch_results (
        batch_id     TEXT NOT NULL REFERENCES batches (id) ON DELETE CASCADE,
        custom_id    TEXT NOT NULL,
        result_type  TEXT NOT NULL,
        byte_offset  INTEGER NOT NULL,
        byte_length  INTEGER NOT NULL,
        PRIMARY KEY (batch_id, custom_id)
    ) WITHOUT ROWID;
    "#,
    // 2: encryption at rest. `encrypted` = 1: `path` is an age file; `sha256` stays the hash
    // of the content (the plaintext), so it is comparable whether encrypted or not.
    r#"
    ALTER TABLE files ADD COLUMN encrypted INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE batches ADD COLUMN encrypted INTEGER NOT NULL DEFAULT 0;
    "#,
];

/// Bring the database up to the last script, all in one transaction.
pub fn migrate(conn: &mut Connection, path: &Path) -> Result<(), IndexError> {
    apply(conn, path, MIGRATIONS)
}

fn apply(conn: &mut Connection, path: &Path, scripts: &[&str]) -> Result<(), IndexError> {
    let open_error = |source: rusqlite::Error| IndexError::Open {
        path: path.to_path_buf(),
        source: source.into(),
    };
    // Immediate: two processes opening a fresh database do not both try to migrate it.
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(open_error)?;
    let found: i64 = tx
        .query_row("SELECT user_version FROM pragma_user_version", [], |row| {
            row.get(0)
        })
        .map_err(open_error)?;
    let known = scripts.len() as i64;
    if found > known {
        return Err(IndexError::TooNew {
            path: path.to_path_buf(),
            found,
            known,
        });
    }
    for (version, script) in scripts.iter().enumerate().skip(found.max(0) as usize) {
        let migrate_error = |source: rusqlite::Error| IndexError::Migrate {
            path: path.to_path_buf(),
            version: version + 1,
            source: source.into(),
        };
        tx.execute_batch(script).map_err(migrate_error)?;
        tx.pragma_update(None, "user_version", version as i64 + 1)
            .map_err(migrate_error)?;
    }
    tx.commit().map_err(open_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version(conn: &Connection) -> i64 {
        conn.query_row("SELECT user_version FROM pragma_user_version", [], |row| {
            row.get(0)
        })
        .unwrap()
    }

    #[test]
    fn applies_each_script_once_in_order() {
        let mut conn = Connection::open_in_memory().unwrap();
        let path = Path::new(":memory:");
        let scripts = ["CREATE TABLE a (x)", "CREATE TABLE b (y)"];
        apply(&mut conn, path, &scripts[..1]).unwrap();
        assert_eq!(version(&conn), 1);
        apply(&mut conn, path, &scripts).unwrap();
        apply(&mut conn, path, &scripts).unwrap();
        assert_eq!(version(&conn), 2);
    }

    #[test]
    fn a_failing_script_leaves_the_database_untouched() {
        let mut conn = Connection::open_in_memory().unwrap();
        let path = Path::new(":memory:");
        let error = apply(&mut conn, path, &["CREATE TABLE a (x)", "NOT SQL"]).unwrap_err();
        assert!(
            matches!(error, IndexError::Migrate { version: 2, .. }),
            "{error:?}"
        );
        assert_eq!(version(&conn), 0);
        apply(&mut conn, path, &["CREATE TABLE a (x)"]).unwrap();
    }

    #[test]
    fn a_newer_database_is_refused_clearly() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.pragma_update(None, "user_version", 99).unwrap();
        let error = migrate(&mut conn, Path::new("index.sqlite")).unwrap_err();
        assert!(
            matches!(error, IndexError::TooNew { found: 99, .. }),
            "{error:?}"
        );
        assert!(error.to_string().contains("newer"), "{error}");
    }
}
