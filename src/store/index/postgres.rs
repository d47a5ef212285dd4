//! [`Index`] on PostgreSQL: the fleet's shared index, the schema from [`super::pg_migrations`].
//!
//! The trait is synchronous (SQLite answers in microseconds and its callers are plain loops), so
//! this backend owns a current-thread tokio runtime and one connection, and runs each method's
//! queries to completion on it. Called from inside another runtime (the CLI's async commands),
//! where blocking on a second runtime would panic, the query runs on a short-lived scoped thread
//! instead: a thread costs tens of microseconds, a query round trip more, and the trait and its
//! SQLite backend stay untouched. Many-row writes send arrays (`unnest`) in one statement.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::future::Future;
use std::path::PathBuf;

use tokio::runtime::Runtime;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Row, Transaction};

use super::pg_tls::{self, PgConfig};

use super::pg_migrations::{HAS_SCHEMA, MIGRATIONS, PREPARE, READ_VERSION, WRITE_VERSION};
use super::time::now_rfc3339;
use super::{
    BatchEntry, BatchMeta, BatchOutcome, BoxError, FileEntry, FileMeta, FileOutcome, FileQuery,
    FileState, Index, IndexError, MALFORMED_REASON, ResultRow,
};
use crate::store::layout::month_of;

/// The oldest schema a read-only connection can query.
const MIN_READABLE: i64 = 1;

const FILE_COLUMNS: &str = "id, filename, mime_type, size_bytes, created_at, downloadable, \
    expires_at, state, reason, path, sha256, etag, retries, first_seen_at, updated_at, \
    downloaded_at, encrypted";

const BATCH_COLUMNS: &str = "id, created_at, processing_status, ended_at, results_url, \
    expected_results, state, reason, path, sha256, results_indexed, downloaded_at, encrypted";

/// Insert new files and refresh known ones in one statement, with the rules of the SQLite
/// index's `REFRESH_FILE` (a row is written only when its metadata changed; `f.` is the row as
/// it was). `inserted`: the row is new.
const UPSERT_FILES: &str = "INSERT INTO files AS f (id, filename, mime_type, size_bytes, \
        created_at, downloadable, expires_at, first_seen_at, updated_at) \
    SELECT t.*, $8, $8 FROM unnest($1::text[], $2::text[], $3::text[], $4::int8[], $5::text[], \
        $6::bool[], $7::text[]) AS t \
    ON CONFLICT (id) DO UPDATE SET \
        filename = EXCLUDED.filename, mime_type = EXCLUDED.mime_type, \
        size_bytes = EXCLUDED.size_bytes, created_at = EXCLUDED.created_at, \
        downloadable = EXCLUDED.downloadable, expires_at = EXCLUDED.expires_at, \
        updated_at = EXCLUDED.updated_at, \
        state = CASE WHEN (f.state = 'complete' AND f.size_bytes <> EXCLUDED.size_bytes) \
            OR (f.state = 'skipped' AND f.downloadable IS FALSE \
                AND EXCLUDED.downloadable IS TRUE) \
            OR (f.state = 'failed' AND f.reason LIKE $9) THEN 'pending' ELSE f.state END, \
        reason = CASE WHEN (f.state = 'skipped' AND f.downloadable IS FALSE \
                AND EXCLUDED.downloadable IS TRUE) \
            OR (f.state = 'failed' AND f.reason LIKE $9) THEN NULL ELSE f.reason END, \
        sha256 = CASE WHEN f.state = 'complete' AND f.size_bytes <> EXCLUDED.size_bytes \
            THEN NULL ELSE f.sha256 END, \
        etag = CASE WHEN f.state = 'complete' AND f.size_bytes <> EXCLUDED.size_bytes \
            THEN NULL ELSE f.etag END, \
        downloaded_at = CASE WHEN f.state = 'complete' AND f.size_bytes <> EXCLUDED.size_bytes \
            THEN NULL ELSE f.downloaded_at END \
    WHERE f.filename IS DISTINCT FROM EXCLUDED.filename \
        OR f.mime_type IS DISTINCT FROM EXCLUDED.mime_type \
        OR f.size_bytes IS DISTINCT FROM EXCLUDED.size_bytes \
        OR f.created_at IS DISTINCT FROM EXCLUDED.created_at \
        OR f.downloadable IS DISTINCT FROM EXCLUDED.downloadable \
        OR f.expires_at IS DISTINCT FROM EXCLUDED.expires_at \
    RETURNING (xmax = 0) AS inserted";

const UPSERT_BATCH: &str = "INSERT INTO batches AS b (id, created_at, processing_status, \
        ended_at, results_url, expected_results, first_seen_at, updated_at) \
    VALUES ($1, $2, $3, $4, $5, $6, $7, $7) \
    ON CONFLICT (id) DO UPDATE SET created_at = EXCLUDED.created_at, \
        processing_status = EXCLUDED.processing_status, ended_at = EXCLUDED.ended_at, \
        results_url = EXCLUDED.results_url, expected_results = EXCLUDED.expected_results, \
        updated_at = EXCLUDED.updated_at \
    WHERE b.created_at IS DISTINCT FROM EXCLUDED.created_at \
        OR b.processing_status IS DISTINCT FROM EXCLUDED.processing_status \
        OR b.ended_at IS DISTINCT FROM EXCLUDED.ended_at \
        OR b.results_url IS DISTINCT FROM EXCLUDED.results_url \
        OR b.expected_results IS DISTINCT FROM EXCLUDED.expected_results \
    RETURNING (xmax = 0) AS inserted";

const UPSERT_RESULTS: &str = "INSERT INTO batch_results AS r \
        (batch_id, custom_id, result_type, byte_offset, byte_length) \
    SELECT $1, t.* FROM unnest($2::text[], $3::text[], $4::int8[], $5::int8[]) AS t \
    ON CONFLICT (batch_id, custom_id) DO UPDATE SET result_type = EXCLUDED.result_type, \
        byte_offset = EXCLUDED.byte_offset, byte_length = EXCLUDED.byte_length \
    RETURNING (xmax = 0) AS inserted";

type PgResult<T> = Result<T, BoxError>;

/// The index in one PostgreSQL database.
pub struct PgIndex {
    runtime: OwnRuntime,
    client: Client,
    /// The database as messages name it (no password).
    name: String,
}

/// A runtime that may be dropped anywhere: inside another runtime a plain drop would panic, so
/// it shuts down without waiting (its only task is the connection, which ends with the client).
struct OwnRuntime(Option<Runtime>);

impl std::ops::Deref for OwnRuntime {
    type Target = Runtime;

    fn deref(&self) -> &Runtime {
        self.0
            .as_ref()
            .expect("the runtime lives as long as the index")
    }
}

impl Drop for OwnRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

impl std::fmt::Debug for PgIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgIndex")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl PgIndex {
    /// Connect to the database of `config` and bring its schema up to date. `name` names it in
    /// messages: the URL without its password.
    pub fn connect(config: impl Into<PgConfig>, name: &str) -> Result<PgIndex, IndexError> {
        let mut index = PgIndex::connect_only(config.into(), name)?;
        index.migrate()?;
        Ok(index)
    }

    /// Connect without migrating or writing anything (`ls --db`, `verify --db`): the schema
    /// must already be readable.
    pub fn connect_read_only(
        config: impl Into<PgConfig>,
        name: &str,
    ) -> Result<PgIndex, IndexError> {
        let index = PgIndex::connect_only(config.into(), name)?;
        let found = index.version().map_err(|source| index.open_error(source))?;
        let known = MIGRATIONS.len() as i64;
        if found > known {
            return Err(IndexError::TooNew {
                path: index.name.clone().into(),
                found,
                known,
            });
        }
        if found == 0 {
            return Err(IndexError::NoSchema {
                database: index.name.clone(),
            });
        }
        if found < MIN_READABLE {
            return Err(IndexError::TooOld {
                path: index.name.clone().into(),
                found,
            });
        }
        Ok(index)
    }

    fn connect_only(config: PgConfig, name: &str) -> Result<PgIndex, IndexError> {
        let open_error = |source: BoxError| IndexError::Open {
            path: PathBuf::from(name),
            source,
        };
        // Wrapped at once: a failed connection drops it, perhaps inside another runtime.
        let runtime = OwnRuntime(Some(
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|error| open_error(error.into()))?,
        ));
        let client = block(&runtime, move || async move {
            let (client, connection) = pg_tls::connect(&config).await?;
            // Runs whenever the runtime runs a query; ends when the client is dropped.
            tokio::spawn(async move {
                let _ = connection.await;
            });
            Ok::<_, BoxError>(client)
        })
        .map_err(open_error)?;
        Ok(PgIndex {
            runtime,
            client,
            name: name.to_owned(),
        })
    }

    /// The database as messages name it.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn open_error(&self, source: BoxError) -> IndexError {
        IndexError::Open {
            path: PathBuf::from(&self.name),
            source,
        }
    }

    fn version(&self) -> PgResult<i64> {
        let client = &self.client;
        block(&self.runtime, move || async move {
            let exists: bool = client.query_one(HAS_SCHEMA, &[]).await?.try_get(0)?;
            if !exists {
                return Ok(0);
            }
            Ok(client.query_one(READ_VERSION, &[]).await?.try_get(0)?)
        })
    }

    /// Every script past the database's version, all in one transaction.
    fn migrate(&mut self) -> Result<(), IndexError> {
        let name = self.name.clone();
        let client = &mut self.client;
        block(&self.runtime, move || async move {
            let open_error = |source: tokio_postgres::Error| IndexError::Open {
                path: PathBuf::from(&name),
                source: source.into(),
            };
            let tx = client.transaction().await.map_err(open_error)?;
            tx.batch_execute(PREPARE).await.map_err(open_error)?;
            let found: i64 = tx
                .query_one(READ_VERSION, &[])
                .await
                .and_then(|row| row.try_get(0))
                .map_err(open_error)?;
            let known = MIGRATIONS.len() as i64;
            if found > known {
                return Err(IndexError::TooNew {
                    path: PathBuf::from(&name),
                    found,
                    known,
                });
            }
            for (version, script) in MIGRATIONS.iter().enumerate().skip(found.max(0) as usize) {
                let migrate_error = |source: tokio_postgres::Error| IndexError::Migrate {
                    path: PathBuf::from(&name),
                    version: version + 1,
                    source: source.into(),
                };
                tx.batch_execute(script).await.map_err(migrate_error)?;
                tx.execute(WRITE_VERSION, &[&(version as i64 + 1)])
                    .await
                    .map_err(migrate_error)?;
            }
            tx.commit().await.map_err(open_error)
        })
    }

    /// Run `work` in one transaction on this index's connection (the fleet's queue uses it to
    /// complete an item and record it in the index at once).
    fn write<T: Send>(
        &mut self,
        work: impl AsyncFnOnce(&Transaction<'_>) -> PgResult<T> + Send,
    ) -> PgResult<T> {
        let client = &mut self.client;
        block(&self.runtime, move || async move {
            let tx = client.transaction().await?;
            let value = work(&tx).await?;
            tx.commit().await?;
            Ok(value)
        })
    }

    fn read<T: Send>(&self, work: impl AsyncFnOnce(&Client) -> PgResult<T> + Send) -> PgResult<T> {
        let client = &self.client;
        block(&self.runtime, move || async move { work(client).await })
    }
}

/// Run `future` to completion on `runtime`, from a scoped thread when this thread is already
/// inside a runtime (see the module docs).
/// `make` builds the future on the thread that runs it, so the future need not be `Send`.
fn block<T, F>(runtime: &Runtime, make: impl FnOnce() -> F + Send) -> T
where
    F: Future<Output = T>,
    T: Send,
{
    if tokio::runtime::Handle::try_current().is_err() {
        return runtime.block_on(make());
    }
    std::thread::scope(|scope| {
        scope
            .spawn(|| runtime.block_on(make()))
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

impl Index for PgIndex {
    fn upsert_files(&mut self, files: &[FileMeta]) -> Result<usize, IndexError> {
        let first = files.first().map_or("", |file| file.id.as_str());
        self.write(async |tx| upsert_files_sql(tx, files).await)
            .map_err(failed("upserting files from", first))
    }

    fn file(&self, id: &str) -> Result<Option<FileEntry>, IndexError> {
        let sql = format!("SELECT {FILE_COLUMNS} FROM files WHERE id = $1");
        self.read(async |client| {
            let row = client.query_opt(&sql, &[&id]).await?;
            row.as_ref().map(file_from_row).transpose()
        })
        .map_err(failed("reading file", id))
    }

    fn settled_ids(&self, ids: &[&str]) -> Result<HashSet<String>, IndexError> {
        let first = ids.first().copied().unwrap_or_default();
        let ids: Vec<&str> = ids.to_vec();
        self.read(async |client| {
            let rows = client
                .query(
                    "SELECT id FROM files WHERE id = ANY($1) \
                     AND state IN ('complete', 'skipped')",
                    &[&ids],
                )
                .await?;
            rows.iter()
                .map(|row| Ok(row.try_get::<_, String>(0)?))
                .collect()
        })
        .map_err(failed("checking settled files from", first))
    }

    fn files_to_fetch(&self) -> Result<Vec<FileEntry>, IndexError> {
        let sql = format!(
            "SELECT {FILE_COLUMNS} FROM files \
             WHERE state IN ('pending', 'downloading', 'failed') ORDER BY created_at DESC, id"
        );
        self.read(async |client| collect(client, &sql, &[], file_from_row).await)
            .map_err(failed("listing", "files to fetch"))
    }

    fn record_file(&mut self, id: &str, outcome: &FileOutcome) -> Result<(), IndexError> {
        let changed = self
            .write(async |tx| record_file_sql(tx, id, outcome).await)
            .map_err(refused("file", id, outcome_path(outcome)))?;
        known(changed, "file", id)
    }

    fn record_files(
        &mut self,
        outcomes: &[(String, FileOutcome)],
    ) -> Result<Vec<Result<(), IndexError>>, IndexError> {
        let first = outcomes.first().map_or("", |(id, _)| id.as_str());
        self.write(async |tx| record_files_sql(tx, outcomes).await)
            .map_err(failed("recording files from", first))
    }

    fn file_at(&self, path: &str) -> Result<Option<String>, IndexError> {
        self.read(async |client| {
            let row = client
                .query_opt("SELECT id FROM files WHERE path = $1", &[&path])
                .await?;
            Ok(row.map(|row| row.try_get(0)).transpose()?)
        })
        .map_err(failed("finding the file at", path))
    }

    fn files_at(&self, paths: &[&str]) -> Result<HashMap<String, String>, IndexError> {
        let first = paths.first().copied().unwrap_or_default();
        let paths: Vec<&str> = paths.to_vec();
        self.read(async |client| {
            let rows = client
                .query("SELECT path, id FROM files WHERE path = ANY($1)", &[&paths])
                .await?;
            rows.iter()
                .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
                .collect()
        })
        .map_err(failed("finding the files at", first))
    }

    fn query_files(&self, query: &FileQuery) -> Result<Vec<FileEntry>, IndexError> {
        let (sql, texts) = file_query_sql(query);
        let limit = query
            .limit
            .map(|limit| i64::try_from(limit).unwrap_or(i64::MAX));
        self.read(async |client| {
            let mut params: Vec<&(dyn ToSql + Sync)> = Vec::with_capacity(texts.len() + 1);
            params.extend(texts.iter().map(|text| text as &(dyn ToSql + Sync)));
            params.push(&limit);
            collect(client, &sql, &params, file_from_row).await
        })
        .map_err(failed("querying", "files"))
    }

    fn months(&self) -> Result<Vec<String>, IndexError> {
        self.read(async |client| {
            let rows = client
                .query(
                    "SELECT DISTINCT substr(created_at, 1, 7) FROM files UNION \
                     SELECT DISTINCT substr(created_at, 1, 7) FROM batches",
                    &[],
                )
                .await?;
            let mut months = BTreeSet::new();
            for row in rows {
                months.extend(month_of(row.try_get::<_, &str>(0)?));
            }
            Ok(months.into_iter().collect())
        })
        .map_err(failed("listing", "months"))
    }

    fn upsert_batches(&mut self, batches: &[BatchMeta]) -> Result<usize, IndexError> {
        let first = batches.first().map_or("", |batch| batch.id.as_str());
        self.write(async |tx| {
            let now = now_rfc3339();
            let statement = tx.prepare(UPSERT_BATCH).await?;
            let mut new = 0;
            for batch in batches {
                let expected = to_i64(batch.expected_results);
                let rows = tx
                    .query(
                        &statement,
                        &[
                            &batch.id,
                            &batch.created_at,
                            &batch.processing_status,
                            &batch.ended_at,
                            &batch.results_url,
                            &expected,
                            &now,
                        ],
                    )
                    .await?;
                new += count_inserted(&rows)?;
            }
            Ok(new)
        })
        .map_err(failed("upserting batches from", first))
    }

    fn batch(&self, id: &str) -> Result<Option<BatchEntry>, IndexError> {
        let sql = format!("SELECT {BATCH_COLUMNS} FROM batches WHERE id = $1");
        self.read(async |client| {
            let row = client.query_opt(&sql, &[&id]).await?;
            row.as_ref().map(batch_from_row).transpose()
        })
        .map_err(failed("reading batch", id))
    }

    fn batches_to_fetch(&self) -> Result<Vec<BatchEntry>, IndexError> {
        let sql = format!(
            "SELECT {BATCH_COLUMNS} FROM batches \
             WHERE processing_status = 'ended' AND state NOT IN ('complete', 'skipped') \
             ORDER BY created_at DESC, id"
        );
        self.read(async |client| collect(client, &sql, &[], batch_from_row).await)
            .map_err(failed("listing", "batches to fetch"))
    }

    fn record_batch(&mut self, id: &str, outcome: &BatchOutcome) -> Result<(), IndexError> {
        let path = match outcome {
            BatchOutcome::Complete { path, .. } => Some(path.as_str()),
            _ => None,
        };
        let changed = self
            .write(async |tx| record_batch_sql(tx, id, outcome).await)
            .map_err(refused("batch", id, path))?;
        known(changed, "batch", id)
    }

    fn add_results(&mut self, batch_id: &str, rows: &[ResultRow]) -> Result<(), IndexError> {
        let found = self
            .write(async |tx| add_results_sql(tx, batch_id, rows).await)
            .map_err(failed("adding results of batch", batch_id))?;
        known(u64::from(found), "batch", batch_id)
    }

    fn result(&self, batch_id: &str, custom_id: &str) -> Result<Option<ResultRow>, IndexError> {
        self.read(async |client| {
            let row = client
                .query_opt(
                    "SELECT custom_id, result_type, byte_offset, byte_length FROM batch_results \
                     WHERE batch_id = $1 AND custom_id = $2",
                    &[&batch_id, &custom_id],
                )
                .await?;
            row.as_ref().map(result_from_row).transpose()
        })
        .map_err(failed("reading a result of batch", batch_id))
    }

    fn result_count(&self, batch_id: &str) -> Result<u64, IndexError> {
        self.read(async |client| {
            let row = client
                .query_one(
                    "SELECT count(*) FROM batch_results WHERE batch_id = $1",
                    &[&batch_id],
                )
                .await?;
            Ok(from_i64(row.try_get(0)?))
        })
        .map_err(failed("counting results of batch", batch_id))
    }

    fn clear_results(&mut self, batch_id: &str) -> Result<(), IndexError> {
        self.write(async |tx| {
            tx.execute(
                "DELETE FROM batch_results WHERE batch_id = $1",
                &[&batch_id],
            )
            .await?;
            tx.execute(
                "UPDATE batches SET results_indexed = 0 WHERE id = $1",
                &[&batch_id],
            )
            .await?;
            Ok(())
        })
        .map_err(failed("clearing results of batch", batch_id))
    }

    fn query_batches(&self) -> Result<Vec<BatchEntry>, IndexError> {
        let sql = format!("SELECT {BATCH_COLUMNS} FROM batches ORDER BY created_at DESC, id");
        self.read(async |client| collect(client, &sql, &[], batch_from_row).await)
            .map_err(failed("listing", "batches"))
    }

    fn holds_encrypted(&self) -> Result<bool, IndexError> {
        self.read(async |client| {
            let row = client
                .query_one(
                    "SELECT EXISTS(SELECT 1 FROM files WHERE encrypted) \
                     OR EXISTS(SELECT 1 FROM batches WHERE encrypted)",
                    &[],
                )
                .await?;
            Ok(row.try_get(0)?)
        })
        .map_err(failed("checking", "encrypted entries"))
    }
}

/// The last of each id's metadata (one statement cannot write a row twice), as arrays.
async fn upsert_files_sql(tx: &Transaction<'_>, files: &[FileMeta]) -> PgResult<usize> {
    if files.is_empty() {
        return Ok(0);
    }
    let last: HashMap<&str, usize> = files
        .iter()
        .enumerate()
        .map(|(at, file)| (file.id.as_str(), at))
        .collect();
    let files: Vec<&FileMeta> = files
        .iter()
        .enumerate()
        .filter(|(at, file)| last[file.id.as_str()] == *at)
        .map(|(_, file)| file)
        .collect();
    let ids: Vec<&str> = files.iter().map(|f| f.id.as_str()).collect();
    let names: Vec<&str> = files.iter().map(|f| f.filename.as_str()).collect();
    let mimes: Vec<&str> = files.iter().map(|f| f.mime_type.as_str()).collect();
    let sizes: Vec<i64> = files.iter().map(|f| to_i64(f.size_bytes)).collect();
    let created: Vec<&str> = files.iter().map(|f| f.created_at.as_str()).collect();
    let downloadable: Vec<Option<bool>> = files.iter().map(|f| f.downloadable).collect();
    let expires: Vec<Option<&str>> = files.iter().map(|f| f.expires_at.as_deref()).collect();
    let now = now_rfc3339();
    let malformed = format!("{MALFORMED_REASON}%");
    let rows = tx
        .query(
            UPSERT_FILES,
            &[
                &ids,
                &names,
                &mimes,
                &sizes,
                &created,
                &downloadable,
                &expires,
                &now,
                &malformed,
            ],
        )
        .await?;
    count_inserted(&rows)
}

/// Make the file `id`, skipped with a reason that starts with `reason`, wanted again
/// (pending): the next enqueue or sync fetches it. Returns how many rows changed (0 or 1).
pub(crate) async fn want_again_sql(
    client: &impl tokio_postgres::GenericClient,
    id: &str,
    reason: &str,
) -> PgResult<u64> {
    let changed = client
        .execute(
            "UPDATE files SET state = 'pending', reason = NULL, updated_at = $3 \
             WHERE id = $1 AND state = 'skipped' AND starts_with(reason, $2)",
            &[&id, &reason, &now_rfc3339()],
        )
        .await?;
    Ok(changed)
}

pub(crate) async fn record_file_sql(
    tx: &Transaction<'_>,
    id: &str,
    outcome: &FileOutcome,
) -> PgResult<u64> {
    let now = now_rfc3339();
    let changed = match outcome {
        FileOutcome::Downloading => {
            tx.execute(
                "UPDATE files SET state = 'downloading', reason = NULL, updated_at = $2 \
                 WHERE id = $1",
                &[&id, &now],
            )
            .await?
        }
        FileOutcome::Complete { .. } => record_completes_sql(tx, &[(id, outcome)]).await?,
        FileOutcome::Skipped { reason } => {
            tx.execute(
                "UPDATE files SET state = 'skipped', reason = $2, updated_at = $3 WHERE id = $1",
                &[&id, reason, &now],
            )
            .await?
        }
        FileOutcome::Failed { reason, retries } => {
            tx.execute(
                "UPDATE files SET state = 'failed', reason = $2, retries = $3, updated_at = $4 \
                 WHERE id = $1",
                &[&id, reason, &i64::from(*retries), &now],
            )
            .await?
        }
    };
    Ok(changed)
}

/// Record the complete downloads `completes` (a file id and its `FileOutcome::Complete`; any
/// other outcome is left out) in one statement ([`record_file_sql`] records one this way). A
/// path that another file holds fails the whole statement. Returns how many rows changed.
pub(crate) async fn record_completes_sql(
    tx: &Transaction<'_>,
    completes: &[(&str, &FileOutcome)],
) -> PgResult<u64> {
    let mut columns = (vec![], vec![], vec![], vec![], vec![], vec![]);
    for &(id, outcome) in completes {
        if let FileOutcome::Complete {
            path,
            sha256,
            etag,
            retries,
            encrypted,
        } = outcome
        {
            columns.0.push(id);
            columns.1.push(path.as_str());
            columns.2.push(sha256.as_str());
            columns.3.push(etag.as_deref());
            columns.4.push(i64::from(*retries));
            columns.5.push(*encrypted);
        }
    }
    let (ids, paths, sha256s, etags, retries, encrypted) = columns;
    tx.execute(
        "UPDATE files f SET state = 'complete', reason = NULL, path = n.path, \
         sha256 = n.sha256, etag = n.etag, retries = n.retries, updated_at = $7, \
         downloaded_at = $7, encrypted = n.encrypted \
         FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::int8[], $6::bool[]) \
           AS n (id, path, sha256, etag, retries, encrypted) \
         WHERE f.id = n.id",
        &[
            &ids,
            &paths,
            &sha256s,
            &etags,
            &retries,
            &encrypted,
            &now_rfc3339(),
        ],
    )
    .await
    .map_err(BoxError::from)
}

/// Each outcome behind a savepoint, so that a refused one is rolled back alone.
async fn record_files_sql(
    tx: &Transaction<'_>,
    outcomes: &[(String, FileOutcome)],
) -> PgResult<Vec<Result<(), IndexError>>> {
    let mut results = Vec::with_capacity(outcomes.len());
    for (id, outcome) in outcomes {
        tx.batch_execute("SAVEPOINT outcome").await?;
        let result = match record_file_sql(tx, id, outcome).await {
            Ok(changed) => known(changed, "file", id),
            Err(error) => Err(refused("file", id, outcome_path(outcome))(error)),
        };
        let end = if result.is_ok() {
            "RELEASE SAVEPOINT outcome"
        } else {
            "ROLLBACK TO SAVEPOINT outcome"
        };
        tx.batch_execute(end).await?;
        results.push(result);
    }
    Ok(results)
}

async fn record_batch_sql(tx: &Transaction<'_>, id: &str, outcome: &BatchOutcome) -> PgResult<u64> {
    let now = now_rfc3339();
    let (state, reason) = match outcome {
        BatchOutcome::Complete {
            path,
            sha256,
            encrypted,
        } => {
            let changed = tx
                .execute(
                    "UPDATE batches SET state = 'complete', reason = NULL, path = $2, \
                     sha256 = $3, updated_at = $4, downloaded_at = $4, encrypted = $5 \
                     WHERE id = $1",
                    &[&id, path, sha256, &now, encrypted],
                )
                .await?;
            return Ok(changed);
        }
        BatchOutcome::Downloading => (FileState::Downloading, None),
        BatchOutcome::Failed { reason } => (FileState::Failed, Some(reason)),
        BatchOutcome::Skipped { reason } => (FileState::Skipped, Some(reason)),
    };
    let changed = tx
        .execute(
            "UPDATE batches SET state = $2, reason = $3, updated_at = $4 WHERE id = $1",
            &[&id, &state.as_str(), &reason, &now],
        )
        .await?;
    Ok(changed)
}

/// Insert or replace `rows` (the last of each `custom_id`) and keep `results_indexed` in step.
/// `Ok(false)`: no such batch.
async fn add_results_sql(
    tx: &Transaction<'_>,
    batch_id: &str,
    rows: &[ResultRow],
) -> PgResult<bool> {
    let exists = tx
        .query_opt("SELECT 1 FROM batches WHERE id = $1", &[&batch_id])
        .await?
        .is_some();
    if !exists {
        return Ok(false);
    }
    let last: HashMap<&str, usize> = rows
        .iter()
        .enumerate()
        .map(|(at, row)| (row.custom_id.as_str(), at))
        .collect();
    let rows: Vec<&ResultRow> = rows
        .iter()
        .enumerate()
        .filter(|(at, row)| last[row.custom_id.as_str()] == *at)
        .map(|(_, row)| row)
        .collect();
    let custom_ids: Vec<&str> = rows.iter().map(|r| r.custom_id.as_str()).collect();
    let types: Vec<&str> = rows.iter().map(|r| r.result_type.as_str()).collect();
    let offsets: Vec<i64> = rows.iter().map(|r| to_i64(r.offset)).collect();
    let lengths: Vec<i64> = rows.iter().map(|r| to_i64(r.length)).collect();
    let written = tx
        .query(
            UPSERT_RESULTS,
            &[&batch_id, &custom_ids, &types, &offsets, &lengths],
        )
        .await?;
    let new = count_inserted(&written)? as i64;
    tx.execute(
        "UPDATE batches SET results_indexed = results_indexed + $2 WHERE id = $1",
        &[&batch_id, &new],
    )
    .await?;
    Ok(true)
}

fn count_inserted(rows: &[Row]) -> PgResult<usize> {
    let mut new = 0;
    for row in rows {
        if row.try_get::<_, bool>(0)? {
            new += 1;
        }
    }
    Ok(new)
}

/// The SQL and its text parameters for `query`, newest first; the limit is the last parameter
/// (NULL: no limit).
fn file_query_sql(query: &FileQuery) -> (String, Vec<String>) {
    let mut sql = format!("SELECT {FILE_COLUMNS} FROM files WHERE true");
    let mut texts = Vec::new();
    let mut bind = |sql: &mut String, clause: &str, value: String| {
        texts.push(value);
        sql.push_str(&clause.replace('?', &format!("${}", texts.len())));
    };
    if let Some(month) = &query.month {
        bind(&mut sql, " AND substr(created_at, 1, 7) = ?", month.clone());
    }
    if let Some(mime) = &query.mime {
        bind(&mut sql, " AND mime_type = ?", mime.clone());
    }
    if let Some(glob) = &query.name_glob {
        bind(&mut sql, " AND filename ~ ?", glob_regex(glob));
    }
    if let Some(state) = query.state {
        bind(&mut sql, " AND state = ?", state.as_str().to_owned());
    }
    sql.push_str(&format!(
        " ORDER BY created_at DESC, id LIMIT ${}::int8",
        texts.len() + 1
    ));
    (sql, texts)
}

/// SQLite's `GLOB` as an anchored PostgreSQL regular expression: `*`, `?`, `[...]` and
/// `[^...]`, everything else literal, case-sensitive. An unclosed `[` is literal.
fn glob_regex(glob: &str) -> String {
    let mut regex = String::from("^");
    let chars: Vec<char> = glob.chars().collect();
    let mut at = 0;
    while at < chars.len() {
        match chars[at] {
            '*' => regex.push_str(".*"),
            '?' => regex.push('.'),
            '[' => match class_end(&chars, at) {
                Some(end) => {
                    regex.push('[');
                    let mut inner = at + 1;
                    if chars[inner] == '^' {
                        regex.push('^');
                        inner += 1;
                    }
                    for &c in &chars[inner..end] {
                        if matches!(c, '\\' | '[') {
                            regex.push('\\');
                        }
                        regex.push(c);
                    }
                    regex.push(']');
                    at = end;
                }
                None => regex.push_str("\\["),
            },
            c => {
                if !c.is_alphanumeric() && c != ' ' && c != '_' {
                    regex.push('\\');
                }
                regex.push(c);
            }
        }
        at += 1;
    }
    regex.push('$');
    regex
}

/// The `]` closing the class opened at `open` (a `]` first, or after `^`, is a member).
fn class_end(chars: &[char], open: usize) -> Option<usize> {
    let mut at = open + 1;
    if chars.get(at) == Some(&'^') {
        at += 1;
    }
    if chars.get(at) == Some(&']') {
        at += 1;
    }
    (at..chars.len()).find(|&at| chars[at] == ']')
}

async fn collect<T>(
    client: &Client,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
    map: impl Fn(&Row) -> PgResult<T>,
) -> PgResult<Vec<T>> {
    let rows = client.query(sql, params).await?;
    rows.iter().map(map).collect()
}

pub(crate) fn file_from_row(row: &Row) -> PgResult<FileEntry> {
    Ok(FileEntry {
        meta: FileMeta {
            id: row.try_get(0)?,
            filename: row.try_get(1)?,
            mime_type: row.try_get(2)?,
            size_bytes: from_i64(row.try_get(3)?),
            created_at: row.try_get(4)?,
            downloadable: row.try_get(5)?,
            expires_at: row.try_get(6)?,
        },
        state: state_from(row.try_get(7)?)?,
        reason: row.try_get(8)?,
        path: row.try_get(9)?,
        sha256: row.try_get(10)?,
        etag: row.try_get(11)?,
        retries: u32::try_from(row.try_get::<_, i64>(12)?).unwrap_or(u32::MAX),
        first_seen_at: row.try_get(13)?,
        updated_at: row.try_get(14)?,
        downloaded_at: row.try_get(15)?,
        encrypted: row.try_get(16)?,
    })
}

fn batch_from_row(row: &Row) -> PgResult<BatchEntry> {
    Ok(BatchEntry {
        meta: BatchMeta {
            id: row.try_get(0)?,
            created_at: row.try_get(1)?,
            processing_status: row.try_get(2)?,
            ended_at: row.try_get(3)?,
            results_url: row.try_get(4)?,
            expected_results: from_i64(row.try_get(5)?),
        },
        state: state_from(row.try_get(6)?)?,
        reason: row.try_get(7)?,
        path: row.try_get(8)?,
        sha256: row.try_get(9)?,
        results_indexed: from_i64(row.try_get(10)?),
        downloaded_at: row.try_get(11)?,
        encrypted: row.try_get(12)?,
    })
}

fn result_from_row(row: &Row) -> PgResult<ResultRow> {
    Ok(ResultRow {
        custom_id: row.try_get(0)?,
        result_type: row.try_get(1)?,
        offset: from_i64(row.try_get(2)?),
        length: from_i64(row.try_get(3)?),
    })
}

fn state_from(text: &str) -> PgResult<FileState> {
    FileState::parse(text).ok_or_else(|| format!("unknown state {text:?}").into())
}

/// PostgreSQL integers are signed; sizes and offsets never come near `i64::MAX`.
fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn from_i64(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

fn outcome_path(outcome: &FileOutcome) -> Option<&str> {
    match outcome {
        FileOutcome::Complete { path, .. } => Some(path),
        _ => None,
    }
}

fn failed<'a>(action: &'static str, id: &'a str) -> impl FnOnce(BoxError) -> IndexError + 'a {
    move |source| IndexError::Query {
        action,
        id: id.to_owned(),
        source,
    }
}

/// Like [`failed`], but a unique-path violation becomes [`IndexError::PathTaken`].
fn refused<'a>(
    kind: &'static str,
    id: &'a str,
    path: Option<&'a str>,
) -> impl FnOnce(BoxError) -> IndexError + 'a {
    move |source| {
        let unique = source
            .downcast_ref::<tokio_postgres::Error>()
            .and_then(tokio_postgres::Error::code)
            == Some(&SqlState::UNIQUE_VIOLATION);
        IndexError::refused_write(kind, id, path, unique, source)
    }
}

fn known(changed: u64, kind: &'static str, id: &str) -> Result<(), IndexError> {
    IndexError::unless_changed(changed, kind, id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_become_anchored_regular_expressions() {
        assert_eq!(glob_regex("*.csv"), "^.*\\.csv$");
        assert_eq!(glob_regex("Report ?.pdf"), "^Report .\\.pdf$");
        assert_eq!(glob_regex("[a-c]x[^0-9]"), "^[a-c]x[^0-9]$");
        assert_eq!(glob_regex("[]]"), "^[]]$");
        assert_eq!(glob_regex("a[b"), "^a\\[b$");
        assert_eq!(glob_regex("(x)+"), "^\\(x\\)\\+$");
    }
}
