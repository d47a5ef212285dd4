//! [`Index`] on SQLite: WAL journal, `synchronous = NORMAL`, a 5 s busy timeout, foreign keys
//! on, the schema from [`super::migrations`].
//!
//! Each trait method runs its SQL in a `*_sql` helper returning `rusqlite::Result` and maps the
//! error once, with context. Writes of many rows use one transaction and cached prepared
//! statements; lookups of many ids pass them as one JSON array (`json_each`), so no query
//! grows with the input.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSqlOutput, Value, ValueRef};
use rusqlite::{
    Connection, ErrorCode, OpenFlags, OptionalExtension, Row, ToSql, params, params_from_iter,
};

use super::migrations::{check_readable, migrate};
use super::time::now_rfc3339;
use super::{
    BatchEntry, BatchMeta, BatchOutcome, FileEntry, FileMeta, FileOutcome, FileQuery, FileState,
    Index, IndexError, MALFORMED_REASON, ResultRow,
};
use crate::store::layout::month_of;

const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Page cache per connection, in KiB (SQLite's default is 2 MiB).
const CACHE_KIB: i64 = 64 * 1024;

/// WAL pages between automatic checkpoints (SQLite's default is 1000). A page of 1,000 files
/// with random ids dirties about that many pages, so the default would checkpoint (and fsync)
/// after nearly every page of a listing.
const CHECKPOINT_PAGES: i64 = 8192;

/// Statements kept prepared: the fixed ones plus a few shapes of `query_files`.
const STATEMENT_CACHE: usize = 64;

const FILE_COLUMNS: &str = "id, filename, mime_type, size_bytes, created_at, downloadable, \
    expires_at, state, reason, path, sha256, etag, retries, first_seen_at, updated_at, \
    downloaded_at, encrypted";

const BATCH_COLUMNS: &str = "id, created_at, processing_status, ended_at, results_url, \
    expected_results, state, reason, path, sha256, results_indexed, downloaded_at, encrypted";

const INSERT_FILE: &str = "INSERT INTO files (id, filename, mime_type, size_bytes, created_at, \
    downloadable, expires_at, first_seen_at, updated_at) \
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8) ON CONFLICT (id) DO NOTHING";

/// Refresh a known file's metadata, writing only when something changed. A Complete file whose
/// size changed, a file Skipped as not downloadable that now is, or a file Failed as a malformed
/// listing entry (`?9`: the reason's pattern) goes back to Pending (all expressions see the row
/// as it was).
const REFRESH_FILE: &str = "UPDATE files SET \
    filename = ?2, mime_type = ?3, size_bytes = ?4, created_at = ?5, downloadable = ?6, \
    expires_at = ?7, updated_at = ?8, \
    state = CASE WHEN (state = 'complete' AND size_bytes <> ?4) \
        OR (state = 'skipped' AND downloadable IS 0 AND ?6 IS 1) \
        OR (state = 'failed' AND reason LIKE ?9) THEN 'pending' ELSE state END, \
    reason = CASE WHEN (state = 'skipped' AND downloadable IS 0 AND ?6 IS 1) \
        OR (state = 'failed' AND reason LIKE ?9) THEN NULL ELSE reason END, \
    sha256 = CASE WHEN state = 'complete' AND size_bytes <> ?4 THEN NULL ELSE sha256 END, \
    etag = CASE WHEN state = 'complete' AND size_bytes <> ?4 THEN NULL ELSE etag END, \
    downloaded_at = CASE WHEN state = 'complete' AND size_bytes <> ?4 \
        THEN NULL ELSE downloaded_at END \
    WHERE id = ?1 AND (filename IS NOT ?2 OR mime_type IS NOT ?3 OR size_bytes IS NOT ?4 \
        OR created_at IS NOT ?5 OR downloadable IS NOT ?6 OR expires_at IS NOT ?7)";

const SETTLED_IDS: &str = "SELECT id FROM files WHERE id IN (SELECT value FROM json_each(?1)) \
    AND +state IN ('complete', 'skipped')";

const FILES_AT: &str = "SELECT path, id FROM files \
    WHERE path IN (SELECT value FROM json_each(?1)) AND path IS NOT NULL";

const INSERT_BATCH: &str = "INSERT INTO batches (id, created_at, processing_status, ended_at, \
    results_url, expected_results, first_seen_at, updated_at) \
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7) ON CONFLICT (id) DO NOTHING";

const REFRESH_BATCH: &str = "UPDATE batches SET \
    created_at = ?2, processing_status = ?3, ended_at = ?4, results_url = ?5, \
    expected_results = ?6, updated_at = ?7 \
    WHERE id = ?1 AND (created_at IS NOT ?2 OR processing_status IS NOT ?3 \
        OR ended_at IS NOT ?4 OR results_url IS NOT ?5 OR expected_results IS NOT ?6)";

const INSERT_RESULT: &str = "INSERT INTO batch_results \
    (batch_id, custom_id, result_type, byte_offset, byte_length) VALUES (?1, ?2, ?3, ?4, ?5) \
    ON CONFLICT (batch_id, custom_id) DO NOTHING";

const REPLACE_RESULT: &str = "UPDATE batch_results \
    SET result_type = ?3, byte_offset = ?4, byte_length = ?5 \
    WHERE batch_id = ?1 AND custom_id = ?2";

/// The index in one SQLite database.
pub struct SqliteIndex {
    conn: Connection,
    path: PathBuf,
}

impl std::fmt::Debug for SqliteIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteIndex")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl SqliteIndex {
    /// Open (creating if needed) the database at `path` and bring its schema up to date. The
    /// directory must exist.
    pub fn open(path: &Path) -> Result<SqliteIndex, IndexError> {
        let conn = Connection::open(path).map_err(|source| open_error(path, source))?;
        SqliteIndex::set_up(conn, path)
    }

    /// Open the database at `path` for reading only: nothing is migrated or written, so this
    /// works on a read-only data directory or file system. SQLite still creates the `-wal` and
    /// `-shm` files of a WAL database where it can; where it cannot (a read-only mount) and no
    /// `-wal` file exists (no writer holds unmerged changes), the file is read as immutable.
    pub fn open_read_only(path: &Path) -> Result<SqliteIndex, IndexError> {
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_URI
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let open = |query: &str| -> rusqlite::Result<Connection> {
            let conn = Connection::open_with_flags(file_uri(path, query), flags)?;
            conn.busy_timeout(BUSY_TIMEOUT)?;
            conn.query_row("SELECT count(*) FROM sqlite_schema", [], |_| Ok(()))?;
            Ok(conn)
        };
        let wal = PathBuf::from(format!("{}-wal", path.display()));
        let conn = match open("mode=ro") {
            Err(error) if !wal.exists() && path.exists() => open("immutable=1").map_err(|_| error),
            other => other,
        }
        .map_err(|source| open_error(path, source))?;
        check_readable(&conn, path)?;
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        Ok(SqliteIndex {
            conn,
            path: path.to_path_buf(),
        })
    }

    /// A fresh index in memory (for tests and dry runs).
    pub fn open_in_memory() -> Result<SqliteIndex, IndexError> {
        let path = Path::new(":memory:");
        let conn = Connection::open_in_memory().map_err(|source| open_error(path, source))?;
        SqliteIndex::set_up(conn, path)
    }

    fn set_up(mut conn: Connection, path: &Path) -> Result<SqliteIndex, IndexError> {
        configure(&conn).map_err(|source| open_error(path, source))?;
        migrate(&mut conn, path)?;
        Ok(SqliteIndex {
            conn,
            path: path.to_path_buf(),
        })
    }

    /// Where the database lives (`:memory:` for an in-memory one).
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// `file:PATH?QUERY`, the path percent-encoded where a URI needs it.
fn file_uri(path: &Path, query: &str) -> String {
    use std::os::unix::ffi::OsStrExt;
    let mut uri = String::from("file:");
    for &byte in path.as_os_str().as_bytes() {
        match byte {
            b'?' | b'#' | b'%' => uri.push_str(&format!("%{byte:02X}")),
            byte if byte.is_ascii() && !byte.is_ascii_control() => uri.push(char::from(byte)),
            byte => uri.push_str(&format!("%{byte:02X}")),
        }
    }
    uri.push('?');
    uri.push_str(query);
    uri
}

fn configure(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    // An in-memory database answers "memory"; either way the mode is what it can be.
    conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get::<_, String>(0))?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", true)?;
    // Negative: KiB. Keeps the hot index pages of a million-file index in memory.
    conn.pragma_update(None, "cache_size", -CACHE_KIB)?;
    conn.pragma_update(None, "wal_autocheckpoint", CHECKPOINT_PAGES)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(())
}

impl Index for SqliteIndex {
    fn reader(&self) -> Result<Option<Box<dyn Index>>, IndexError> {
        if self.conn.path().is_none_or(str::is_empty) {
            return Ok(None);
        }
        Ok(Some(Box::new(SqliteIndex::open_read_only(&self.path)?)))
    }

    fn upsert_files(&mut self, files: &[FileMeta]) -> Result<usize, IndexError> {
        let first = files.first().map_or("", |file| file.id.as_str());
        upsert_files_sql(&mut self.conn, files).map_err(failed("upserting files from", first))
    }

    fn file(&self, id: &str) -> Result<Option<FileEntry>, IndexError> {
        let sql = format!("SELECT {FILE_COLUMNS} FROM files WHERE id = ?1");
        let query = || {
            self.conn
                .prepare_cached(&sql)?
                .query_row([id], file_from_row)
                .optional()
        };
        query().map_err(failed("reading file", id))
    }

    fn settled_ids(&self, ids: &[&str]) -> Result<HashSet<String>, IndexError> {
        let first = ids.first().copied().unwrap_or_default();
        settled_ids_sql(&self.conn, ids).map_err(failed("checking settled files from", first))
    }

    fn holds_encrypted(&self) -> Result<bool, IndexError> {
        let sql = "SELECT EXISTS(SELECT 1 FROM files WHERE encrypted) \
                   OR EXISTS(SELECT 1 FROM batches WHERE encrypted)";
        self.conn
            .query_row(sql, [], |row| row.get(0))
            .map_err(failed("checking", "encrypted entries"))
    }

    fn files_to_fetch(&self) -> Result<Vec<FileEntry>, IndexError> {
        let sql = format!(
            "SELECT {FILE_COLUMNS} FROM files \
             WHERE state IN ('pending', 'downloading', 'failed') ORDER BY created_at DESC, id"
        );
        collect(&self.conn, &sql, [], file_from_row).map_err(failed("listing", "files to fetch"))
    }

    fn files_to_fetch_page(
        &self,
        after: Option<(&str, &str)>,
        limit: usize,
    ) -> Result<Vec<FileEntry>, IndexError> {
        // `+state`: walk `files_by_created` from the cursor (each page costs its rows, not a
        // sort of every file to fetch).
        let (created, id) = after.unwrap_or(("\u{10ffff}", ""));
        let sql = format!(
            "SELECT {FILE_COLUMNS} FROM files \
             WHERE +state IN ('pending', 'downloading', 'failed') \
             AND created_at <= ?1 AND (created_at < ?1 OR id > ?2) \
             ORDER BY created_at DESC, id LIMIT ?3"
        );
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        collect(&self.conn, &sql, params![created, id, limit], file_from_row)
            .map_err(failed("listing", "files to fetch"))
    }

    fn each_file_of_month(
        &self,
        month: &str,
        visit: &mut dyn FnMut(FileEntry) -> std::ops::ControlFlow<()>,
    ) -> Result<(), IndexError> {
        let sql = format!(
            "SELECT {FILE_COLUMNS} FROM files \
             WHERE created_at >= ?1 AND created_at < ?2 AND substr(created_at, 1, 7) = ?1 \
             ORDER BY created_at, id"
        );
        let mut walk = || -> rusqlite::Result<()> {
            let mut statement = self.conn.prepare_cached(&sql)?;
            let mut rows = statement.query(params![month, format!("{month}\u{7f}")])?;
            while let Some(row) = rows.next()? {
                if visit(file_from_row(row)?).is_break() {
                    break;
                }
            }
            Ok(())
        };
        walk().map_err(failed("querying the files of", month))
    }

    fn each_file(
        &self,
        query: &FileQuery,
        visit: &mut dyn FnMut(FileEntry) -> std::ops::ControlFlow<()>,
    ) -> Result<(), IndexError> {
        let (sql, values) = file_query_sql(query);
        let walk = || -> rusqlite::Result<()> {
            let mut statement = self.conn.prepare_cached(&sql)?;
            let mut rows = statement.query(params_from_iter(values))?;
            while let Some(row) = rows.next()? {
                if visit(file_from_row(row)?).is_break() {
                    break;
                }
            }
            Ok(())
        };
        walk().map_err(failed("querying", "files"))
    }

    fn record_file(&mut self, id: &str, outcome: &FileOutcome) -> Result<(), IndexError> {
        let changed = record_file_sql(&self.conn, id, outcome).map_err(refused(
            "file",
            id,
            outcome_path(outcome),
        ))?;
        known(changed, "file", id)
    }

    fn record_files(
        &mut self,
        outcomes: &[(String, FileOutcome)],
    ) -> Result<Vec<Result<(), IndexError>>, IndexError> {
        let first = outcomes.first().map_or("", |(id, _)| id.as_str());
        record_files_sql(&mut self.conn, outcomes).map_err(failed("recording files from", first))
    }

    fn file_at(&self, path: &str) -> Result<Option<String>, IndexError> {
        let query = || {
            self.conn
                .prepare_cached("SELECT id FROM files WHERE path = ?1")?
                .query_row([path], |row| row.get(0))
                .optional()
        };
        query().map_err(failed("finding the file at", path))
    }

    fn files_at(&self, paths: &[&str]) -> Result<HashMap<String, String>, IndexError> {
        let first = paths.first().copied().unwrap_or_default();
        files_at_sql(&self.conn, paths).map_err(failed("finding the files at", first))
    }

    fn query_files(&self, query: &FileQuery) -> Result<Vec<FileEntry>, IndexError> {
        let (sql, values) = file_query_sql(query);
        collect(&self.conn, &sql, params_from_iter(values), file_from_row)
            .map_err(failed("querying", "files"))
    }

    fn months(&self) -> Result<Vec<String>, IndexError> {
        let months = || -> rusqlite::Result<Vec<String>> {
            let mut months = distinct_months(&self.conn, "files")?;
            months.extend(distinct_months(&self.conn, "batches")?);
            Ok(months.into_iter().collect())
        };
        months().map_err(failed("listing", "months"))
    }

    fn upsert_batches(&mut self, batches: &[BatchMeta]) -> Result<usize, IndexError> {
        let first = batches.first().map_or("", |batch| batch.id.as_str());
        upsert_batches_sql(&mut self.conn, batches).map_err(failed("upserting batches from", first))
    }

    fn batch(&self, id: &str) -> Result<Option<BatchEntry>, IndexError> {
        let sql = format!("SELECT {BATCH_COLUMNS} FROM batches WHERE id = ?1");
        let query = || {
            self.conn
                .prepare_cached(&sql)?
                .query_row([id], batch_from_row)
                .optional()
        };
        query().map_err(failed("reading batch", id))
    }

    fn batches_to_fetch(&self) -> Result<Vec<BatchEntry>, IndexError> {
        let sql = format!(
            "SELECT {BATCH_COLUMNS} FROM batches \
             WHERE processing_status = 'ended' AND state NOT IN ('complete', 'skipped') \
             ORDER BY created_at DESC, id"
        );
        collect(&self.conn, &sql, [], batch_from_row).map_err(failed("listing", "batches to fetch"))
    }

    fn record_batch(&mut self, id: &str, outcome: &BatchOutcome) -> Result<(), IndexError> {
        let path = match outcome {
            BatchOutcome::Complete { path, .. } => Some(path.as_str()),
            _ => None,
        };
        let changed =
            record_batch_sql(&self.conn, id, outcome).map_err(refused("batch", id, path))?;
        known(changed, "batch", id)
    }

    fn add_results(&mut self, batch_id: &str, rows: &[ResultRow]) -> Result<(), IndexError> {
        let found = add_results_sql(&mut self.conn, batch_id, rows)
            .map_err(failed("adding results of batch", batch_id))?;
        known(usize::from(found), "batch", batch_id)
    }

    fn result(&self, batch_id: &str, custom_id: &str) -> Result<Option<ResultRow>, IndexError> {
        let query = || {
            self.conn
                .prepare_cached(
                    "SELECT custom_id, result_type, byte_offset, byte_length FROM batch_results \
                     WHERE batch_id = ?1 AND custom_id = ?2",
                )?
                .query_row([batch_id, custom_id], result_from_row)
                .optional()
        };
        query().map_err(failed("reading a result of batch", batch_id))
    }

    fn result_count(&self, batch_id: &str) -> Result<u64, IndexError> {
        let query = || {
            self.conn
                .prepare_cached("SELECT count(*) FROM batch_results WHERE batch_id = ?1")?
                .query_row([batch_id], |row| row.get::<_, i64>(0))
        };
        let count = query().map_err(failed("counting results of batch", batch_id))?;
        Ok(from_sql_u64(count))
    }

    fn clear_results(&mut self, batch_id: &str) -> Result<(), IndexError> {
        clear_results_sql(&mut self.conn, batch_id)
            .map_err(failed("clearing results of batch", batch_id))
    }

    fn query_batches(&self) -> Result<Vec<BatchEntry>, IndexError> {
        let sql = format!("SELECT {BATCH_COLUMNS} FROM batches ORDER BY created_at DESC, id");
        collect(&self.conn, &sql, [], batch_from_row).map_err(failed("listing", "batches"))
    }
}

fn upsert_files_sql(conn: &mut Connection, files: &[FileMeta]) -> rusqlite::Result<usize> {
    let now = now_rfc3339();
    let malformed = format!("{MALFORMED_REASON}%");
    let tx = conn.transaction()?;
    let mut new = 0;
    {
        let mut insert = tx.prepare_cached(INSERT_FILE)?;
        let mut refresh = tx.prepare_cached(REFRESH_FILE)?;
        for file in files {
            let size = to_sql_u64(file.size_bytes);
            let values = params![
                file.id,
                file.filename,
                file.mime_type,
                size,
                file.created_at,
                file.downloadable,
                file.expires_at,
                now,
            ];
            if insert.execute(values)? == 1 {
                new += 1;
            } else {
                refresh.execute(params![
                    file.id,
                    file.filename,
                    file.mime_type,
                    size,
                    file.created_at,
                    file.downloadable,
                    file.expires_at,
                    now,
                    malformed,
                ])?;
            }
        }
    }
    tx.commit()?;
    Ok(new)
}

fn settled_ids_sql(conn: &Connection, ids: &[&str]) -> rusqlite::Result<HashSet<String>> {
    if ids.is_empty() {
        return Ok(HashSet::new());
    }
    let ids = serde_json::to_string(ids)
        .map_err(|e| rusqlite::Error::ToSqlConversionFailure(e.into()))?;
    // `+state`: look each id up by key; never walk the (large) set of settled files.
    let mut statement = conn.prepare_cached(SETTLED_IDS)?;
    let rows = statement.query_map([ids], |row| row.get::<_, String>(0))?;
    rows.collect()
}

fn files_at_sql(conn: &Connection, paths: &[&str]) -> rusqlite::Result<HashMap<String, String>> {
    if paths.is_empty() {
        return Ok(HashMap::new());
    }
    let paths = serde_json::to_string(paths)
        .map_err(|e| rusqlite::Error::ToSqlConversionFailure(e.into()))?;
    let mut statement = conn.prepare_cached(FILES_AT)?;
    let rows = statement.query_map([paths], |row| Ok((row.get(0)?, row.get(1)?)))?;
    rows.collect()
}

fn record_file_sql(conn: &Connection, id: &str, outcome: &FileOutcome) -> rusqlite::Result<usize> {
    let now = now_rfc3339();
    match outcome {
        FileOutcome::Downloading => conn
            .prepare_cached(
                "UPDATE files SET state = 'downloading', reason = NULL, updated_at = ?2 \
                 WHERE id = ?1",
            )?
            .execute(params![id, now]),
        FileOutcome::Complete {
            path,
            sha256,
            etag,
            retries,
            encrypted,
        } => conn
            .prepare_cached(
                "UPDATE files SET state = 'complete', reason = NULL, path = ?2, sha256 = ?3, \
                 etag = ?4, retries = ?5, updated_at = ?6, downloaded_at = ?6, encrypted = ?7 \
                 WHERE id = ?1",
            )?
            .execute(params![id, path, sha256, etag, retries, now, encrypted]),
        FileOutcome::Skipped { reason } => conn
            .prepare_cached(
                "UPDATE files SET state = 'skipped', reason = ?2, updated_at = ?3 WHERE id = ?1",
            )?
            .execute(params![id, reason, now]),
        FileOutcome::Failed { reason, retries } => conn
            .prepare_cached(
                "UPDATE files SET state = 'failed', reason = ?2, retries = ?3, updated_at = ?4 \
                 WHERE id = ?1",
            )?
            .execute(params![id, reason, retries, now]),
    }
}

/// Every outcome in one transaction, committed with `synchronous = FULL`, so that it survives a
/// power cut too; marks that downloads started alone commit without a sync of their own (a
/// lost mark costs a second download, never a wrong record). A refused outcome (its path
/// taken) is rolled back alone: should one be refused, the transaction is done again with each
/// outcome behind a savepoint (two more statements each, which the usual group, all accepted,
/// does without).
fn record_files_sql(
    conn: &mut Connection,
    outcomes: &[(String, FileOutcome)],
) -> rusqlite::Result<Vec<Result<(), IndexError>>> {
    let marks_only = outcomes
        .iter()
        .all(|(_, outcome)| matches!(outcome, FileOutcome::Downloading));
    if !marks_only {
        conn.pragma_update(None, "synchronous", "FULL")?;
    }
    let result = match record_all(conn, outcomes, Refusal::Abandons) {
        Ok(Some(results)) => Ok(results),
        Ok(None) => record_all(conn, outcomes, Refusal::RollsBackItsOwn)
            .map(|results| results.expect("savepoints keep the transaction")),
        Err(e) => Err(e),
    };
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    result
}

/// What a refused outcome does to [`record_all`]'s transaction.
#[derive(Clone, Copy, PartialEq)]
enum Refusal {
    /// The whole transaction is rolled back (`None`).
    Abandons,
    /// Only the refused outcome is rolled back, to its savepoint.
    RollsBackItsOwn,
}

fn record_all(
    conn: &mut Connection,
    outcomes: &[(String, FileOutcome)],
    refusal: Refusal,
) -> rusqlite::Result<Option<Vec<Result<(), IndexError>>>> {
    let mut tx = conn.transaction()?;
    let mut results = Vec::with_capacity(outcomes.len());
    for (id, outcome) in outcomes {
        let result = if refusal == Refusal::RollsBackItsOwn {
            let savepoint = tx.savepoint()?;
            let result = record_file_sql(&savepoint, id, outcome);
            if result.is_ok() {
                savepoint.commit()?;
            }
            result
        } else {
            record_file_sql(&tx, id, outcome)
        };
        results.push(match result {
            Ok(changed) => known(changed, "file", id),
            Err(_) if refusal == Refusal::Abandons => return Ok(None),
            Err(error) => Err(refused("file", id, outcome_path(outcome))(error)),
        });
    }
    tx.commit()?;
    Ok(Some(results))
}

fn outcome_path(outcome: &FileOutcome) -> Option<&str> {
    match outcome {
        FileOutcome::Complete { path, .. } => Some(path),
        _ => None,
    }
}

/// The SQL and its parameters for `query`, newest first.
///
/// Under a limit, the `created_at` index is walked in order and stops after `limit` matches:
/// a unary `+` keeps the planner off the `mime_type` and `state` indexes (which, without
/// statistics, it believes selective, then sorts every match). The exception is a state other
/// than Complete, which few files have: there the `state` index is the short way.
fn file_query_sql(query: &FileQuery) -> (String, Vec<Value>) {
    let mut sql = format!("SELECT {FILE_COLUMNS} FROM files WHERE 1");
    let mut values = Vec::new();
    let ordered = query.limit.is_some();
    let walk = |column: &str, use_index: bool| {
        if use_index {
            column.to_owned()
        } else {
            format!("+{column}")
        }
    };
    if let Some(month) = &query.month {
        // The range lets the index find the month; substr keeps the exact meaning.
        sql.push_str(" AND created_at >= ? AND created_at < ? AND substr(created_at, 1, 7) = ?");
        values.push(Value::Text(month.clone()));
        values.push(Value::Text(format!("{month}\u{7f}")));
        values.push(Value::Text(month.clone()));
    }
    if let Some(mime) = &query.mime {
        sql.push_str(&format!(" AND {} = ?", walk("mime_type", !ordered)));
        values.push(Value::Text(mime.clone()));
    }
    if let Some(glob) = &query.name_glob {
        sql.push_str(" AND filename GLOB ?");
        values.push(Value::Text(glob.clone()));
    }
    if let Some(state) = query.state {
        let rare = state != FileState::Complete;
        sql.push_str(&format!(" AND {} = ?", walk("state", !ordered || rare)));
        values.push(Value::Text(state.as_str().to_owned()));
    }
    sql.push_str(" ORDER BY created_at DESC, id LIMIT ?");
    let limit = query
        .limit
        .map_or(-1, |limit| i64::try_from(limit).unwrap_or(i64::MAX));
    values.push(Value::Integer(limit));
    (sql, values)
}

/// The valid months of `table`'s `created_at`, found by jumping down the `created_at` index
/// one month at a time: one short query per month, however many rows.
fn distinct_months(conn: &Connection, table: &str) -> rusqlite::Result<BTreeSet<String>> {
    let newest = format!("SELECT created_at FROM {table} ORDER BY created_at DESC LIMIT 1");
    let older = format!(
        "SELECT created_at FROM {table} WHERE created_at < ?1 ORDER BY created_at DESC LIMIT 1"
    );
    let mut months = BTreeSet::new();
    let mut next: Option<String> = conn
        .prepare_cached(&newest)?
        .query_row([], |row| row.get(0))
        .optional()?;
    while let Some(created_at) = next {
        // Everything sharing this 7-character prefix sorts at or above the prefix itself.
        let prefix: String = created_at.chars().take(7).collect();
        months.extend(month_of(&prefix));
        next = conn
            .prepare_cached(&older)?
            .query_row([&prefix], |row| row.get(0))
            .optional()?;
    }
    Ok(months)
}

fn upsert_batches_sql(conn: &mut Connection, batches: &[BatchMeta]) -> rusqlite::Result<usize> {
    let now = now_rfc3339();
    let tx = conn.transaction()?;
    let mut new = 0;
    {
        let mut insert = tx.prepare_cached(INSERT_BATCH)?;
        let mut refresh = tx.prepare_cached(REFRESH_BATCH)?;
        for batch in batches {
            let values = params![
                batch.id,
                batch.created_at,
                batch.processing_status,
                batch.ended_at,
                batch.results_url,
                to_sql_u64(batch.expected_results),
                now,
            ];
            if insert.execute(values)? == 1 {
                new += 1;
            } else {
                refresh.execute(values)?;
            }
        }
    }
    tx.commit()?;
    Ok(new)
}

fn record_batch_sql(
    conn: &Connection,
    id: &str,
    outcome: &BatchOutcome,
) -> rusqlite::Result<usize> {
    let now = now_rfc3339();
    let (state, reason) = match outcome {
        BatchOutcome::Complete {
            path,
            sha256,
            encrypted,
        } => {
            return conn
                .prepare_cached(
                    "UPDATE batches SET state = 'complete', reason = NULL, path = ?2, \
                     sha256 = ?3, updated_at = ?4, downloaded_at = ?4, encrypted = ?5 \
                     WHERE id = ?1",
                )?
                .execute(params![id, path, sha256, now, encrypted]);
        }
        BatchOutcome::Downloading => (FileState::Downloading, None),
        BatchOutcome::Failed { reason } => (FileState::Failed, Some(reason)),
        BatchOutcome::Skipped { reason } => (FileState::Skipped, Some(reason)),
    };
    conn.prepare_cached(
        "UPDATE batches SET state = ?2, reason = ?3, updated_at = ?4 WHERE id = ?1",
    )?
    .execute(params![id, state, reason, now])
}

/// Insert or replace `rows` and keep `results_indexed` in step. `Ok(false)`: no such batch.
fn add_results_sql(
    conn: &mut Connection,
    batch_id: &str,
    rows: &[ResultRow],
) -> rusqlite::Result<bool> {
    let tx = conn.transaction()?;
    let exists = tx
        .prepare_cached("SELECT 1 FROM batches WHERE id = ?1")?
        .exists([batch_id])?;
    if !exists {
        return Ok(false);
    }
    let mut new = 0i64;
    {
        let mut insert = tx.prepare_cached(INSERT_RESULT)?;
        let mut replace = tx.prepare_cached(REPLACE_RESULT)?;
        for row in rows {
            let values = params![
                batch_id,
                row.custom_id,
                row.result_type,
                to_sql_u64(row.offset),
                to_sql_u64(row.length),
            ];
            if insert.execute(values)? == 1 {
                new += 1;
            } else {
                replace.execute(values)?;
            }
        }
        tx.prepare_cached(
            "UPDATE batches SET results_indexed = results_indexed + ?2 WHERE id = ?1",
        )?
        .execute(params![batch_id, new])?;
    }
    tx.commit()?;
    Ok(true)
}

fn clear_results_sql(conn: &mut Connection, batch_id: &str) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    tx.prepare_cached("DELETE FROM batch_results WHERE batch_id = ?1")?
        .execute([batch_id])?;
    tx.prepare_cached("UPDATE batches SET results_indexed = 0 WHERE id = ?1")?
        .execute([batch_id])?;
    tx.commit()
}

fn collect<T>(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
    map: impl FnMut(&Row<'_>) -> rusqlite::Result<T>,
) -> rusqlite::Result<Vec<T>> {
    let mut statement = conn.prepare_cached(sql)?;
    let rows = statement.query_map(params, map)?;
    rows.collect()
}

fn file_from_row(row: &Row<'_>) -> rusqlite::Result<FileEntry> {
    Ok(FileEntry {
        meta: FileMeta {
            id: row.get(0)?,
            filename: row.get(1)?,
            mime_type: row.get(2)?,
            size_bytes: from_sql_u64(row.get(3)?),
            created_at: row.get(4)?,
            downloadable: row.get(5)?,
            expires_at: row.get(6)?,
        },
        state: row.get(7)?,
        reason: row.get(8)?,
        path: row.get(9)?,
        sha256: row.get(10)?,
        etag: row.get(11)?,
        retries: row.get(12)?,
        first_seen_at: row.get(13)?,
        updated_at: row.get(14)?,
        downloaded_at: row.get(15)?,
        encrypted: row.get(16)?,
    })
}

fn batch_from_row(row: &Row<'_>) -> rusqlite::Result<BatchEntry> {
    Ok(BatchEntry {
        meta: BatchMeta {
            id: row.get(0)?,
            created_at: row.get(1)?,
            processing_status: row.get(2)?,
            ended_at: row.get(3)?,
            results_url: row.get(4)?,
            expected_results: from_sql_u64(row.get(5)?),
        },
        state: row.get(6)?,
        reason: row.get(7)?,
        path: row.get(8)?,
        sha256: row.get(9)?,
        results_indexed: from_sql_u64(row.get(10)?),
        downloaded_at: row.get(11)?,
        encrypted: row.get(12)?,
    })
}

fn result_from_row(row: &Row<'_>) -> rusqlite::Result<ResultRow> {
    Ok(ResultRow {
        custom_id: row.get(0)?,
        result_type: row.get(1)?,
        offset: from_sql_u64(row.get(2)?),
        length: from_sql_u64(row.get(3)?),
    })
}

impl ToSql for FileState {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.as_str()))
    }
}

impl FromSql for FileState {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        let text = value.as_str()?;
        FileState::parse(text)
            .ok_or_else(|| FromSqlError::Other(format!("unknown state {text:?}").into()))
    }
}

/// SQLite integers are signed; sizes and offsets never come near `i64::MAX`.
fn to_sql_u64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn from_sql_u64(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

fn open_error(path: &Path, source: rusqlite::Error) -> IndexError {
    IndexError::Open {
        path: path.to_path_buf(),
        source: source.into(),
    }
}

/// Map a SQLite error to an [`IndexError`] saying what was being done to what.
fn failed<'a>(
    action: &'static str,
    id: &'a str,
) -> impl FnOnce(rusqlite::Error) -> IndexError + 'a {
    move |source| IndexError::Query {
        action,
        id: id.to_owned(),
        source: source.into(),
    }
}

/// Like [`failed`], but a unique-path violation becomes [`IndexError::PathTaken`].
fn refused<'a>(
    kind: &'static str,
    id: &'a str,
    path: Option<&'a str>,
) -> impl FnOnce(rusqlite::Error) -> IndexError + 'a {
    move |source| {
        let unique = matches!(
            &source,
            rusqlite::Error::SqliteFailure(error, _) if error.code == ErrorCode::ConstraintViolation
        );
        IndexError::refused_write(kind, id, path, unique, source.into())
    }
}

fn known(changed: usize, kind: &'static str, id: &str) -> Result<(), IndexError> {
    IndexError::unless_changed(changed as u64, kind, id)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The query plan of `sql`, one detail line per step.
    fn plan(index: &SqliteIndex, sql: &str, values: Vec<Value>) -> String {
        let mut statement = index
            .conn
            .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
            .unwrap();
        let rows = statement
            .query_map(params_from_iter(values), |row| row.get::<_, String>(3))
            .unwrap();
        rows.map(Result::unwrap).collect::<Vec<_>>().join("\n")
    }

    #[test]
    fn hot_queries_use_indexes() {
        let index = SqliteIndex::open_in_memory().unwrap();
        let newest = FileQuery {
            limit: Some(10),
            ..FileQuery::default()
        };
        let (sql, values) = file_query_sql(&newest);
        let newest_plan = plan(&index, &sql, values);
        assert!(newest_plan.contains("files_by_created"), "{newest_plan}");
        assert!(!newest_plan.contains("TEMP B-TREE"), "{newest_plan}");

        let month = FileQuery {
            month: Some("2026-08".into()),
            ..FileQuery::default()
        };
        let (sql, values) = file_query_sql(&month);
        let month_plan = plan(&index, &sql, values);
        assert!(
            month_plan.contains("files_by_created (created_at>? AND created_at<?)"),
            "{month_plan}"
        );

        let common = FileQuery {
            mime: Some("text/csv".into()),
            state: Some(FileState::Complete),
            limit: Some(10),
            ..FileQuery::default()
        };
        let (sql, values) = file_query_sql(&common);
        let common_plan = plan(&index, &sql, values);
        assert!(common_plan.contains("files_by_created"), "{common_plan}");
        assert!(!common_plan.contains("TEMP B-TREE"), "{common_plan}");

        let failed = FileQuery {
            state: Some(FileState::Failed),
            limit: Some(10),
            ..FileQuery::default()
        };
        let (sql, values) = file_query_sql(&failed);
        let failed_plan = plan(&index, &sql, values);
        assert!(
            failed_plan.contains("files_by_state (state=?)"),
            "{failed_plan}"
        );

        let settled_plan = plan(&index, SETTLED_IDS, vec![Value::Text("[]".into())]);
        assert!(
            settled_plan.contains("USING INDEX sqlite_autoindex_files_1 (id=?)"),
            "{settled_plan}"
        );
    }
}
