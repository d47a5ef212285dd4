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
    // 3: one row per path. Rows that already share a path (ids whose names collided before
    // names were made injective) go back to pending, to be fetched again under their own names;
    // the shared file is left for verify to report.
    r#"
    UPDATE files SET state = 'pending', reason = NULL, path = NULL, sha256 = NULL, etag = NULL,
        downloaded_at = NULL
    WHERE path IN (SELECT path FROM files WHERE path IS NOT NULL GROUP BY path
        HAVING count(*) > 1);
    DELETE FROM batch_results WHERE batch_id IN (SELECT id FROM batches WHERE path IN
        (SELECT path FROM batches WHERE path IS NOT NULL GROUP BY path HAVING count(*) > 1));
    UPDATE batches SET state = 'pending', reason = NULL, path = NULL, sha256 = NULL,
        downloaded_at = NULL, results_indexed = 0
    WHERE path IN (SELECT path FROM batches WHERE path IS NOT NULL GROUP BY path
        HAVING count(*) > 1);
    CREATE UNIQUE INDEX files_by_path ON files (path) WHERE path IS NOT NULL;
    CREATE UNIQUE INDEX batches_by_path ON batches (path) WHERE path IS NOT NULL;
    "#,
];

/// The oldest schema a read-only open can query (see `SqliteIndex::open_read_only`).
pub const MIN_READABLE: i64 = 2;

/// Bring the database up to the last script, all in one transaction.
pub fn migrate(conn: &mut Connection, path: &Path) -> Result<(), IndexError> {
    apply(conn, path, MIGRATIONS)
}

/// The schema version of the database, refusing one written by a newer claudedl or too old to
/// be read without migrating it.
pub fn check_readable(conn: &Connection, path: &Path) -> Result<(), IndexError> {
    let found: i64 = conn
        .query_row("SELECT user_version FROM pragma_user_version", [], |row| {
            row.get(0)
        })
        .map_err(|source| IndexError::Open {
            path: path.to_path_buf(),
            source: source.into(),
        })?;
    let known = MIGRATIONS.len() as i64;
    if found > known {
        return Err(IndexError::TooNew {
            path: path.to_path_buf(),
            found,
            known,
        });
    }
    if found < MIN_READABLE {
        return Err(IndexError::TooOld {
            path: path.to_path_buf(),
            found,
        });
    }
    Ok(())
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
    fn rows_sharing_a_path_go_back_to_pending_and_paths_become_unique() {
        let mut conn = Connection::open_in_memory().unwrap();
        let path = Path::new(":memory:");
        apply(&mut conn, path, &MIGRATIONS[..2]).unwrap();
        conn.execute_batch(
            "INSERT INTO files (id, filename, mime_type, size_bytes, created_at, first_seen_at,
                updated_at, state, path, sha256) VALUES
             ('a', 'x', 't', 1, 'c', 'n', 'n', 'complete', 'raw/p', 'h1'),
             ('b', 'x', 't', 1, 'c', 'n', 'n', 'complete', 'raw/p', 'h2'),
             ('c', 'x', 't', 1, 'c', 'n', 'n', 'complete', 'raw/q', 'h3');",
        )
        .unwrap();
        migrate(&mut conn, path).unwrap();
        let states: Vec<(String, Option<String>)> = conn
            .prepare("SELECT state, path FROM files ORDER BY id")
            .unwrap()
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(
            states,
            [
                ("pending".into(), None),
                ("pending".into(), None),
                ("complete".into(), Some("raw/q".into()))
            ]
        );
        let again = conn.execute("UPDATE files SET path = 'raw/q' WHERE id = 'a'", []);
        assert!(again.is_err(), "unique path");
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
