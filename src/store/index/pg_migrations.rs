//! The PostgreSQL schema (the index and the fleet's tables) as an append-only list of SQL
//! scripts, tracked in the one-row table `claudedl_schema`.
//!
//! The rules of the SQLite index's `migrations.rs` hold: never edit or reorder a script once
//! released, add a new one at the end; a database whose version is past the end of the list was
//! written by a newer claudedl and is refused. All scripts run in one transaction under a
//! transaction-scoped advisory lock, so two processes migrating one database at once apply each
//! script once. Text compared or ordered (ids, dates, paths) is `COLLATE "C"`: byte order, as
//! SQLite sorts, whatever the database's locale.

/// Script `n` takes the schema from version `n` to `n + 1`.
pub const MIGRATIONS: &[&str] = &[
    // 1: files, batches and batch results (the SQLite index at its version 3).
    r#"
    CREATE TABLE files (
        id             TEXT COLLATE "C" PRIMARY KEY,
        filename       TEXT COLLATE "C" NOT NULL,
        mime_type      TEXT NOT NULL,
        size_bytes     BIGINT NOT NULL,
        created_at     TEXT COLLATE "C" NOT NULL,
        downloadable   BOOLEAN,
        expires_at     TEXT,
        state          TEXT NOT NULL DEFAULT 'pending',
        reason         TEXT,
        path           TEXT COLLATE "C",
        sha256         TEXT,
        etag           TEXT,
        retries        BIGINT NOT NULL DEFAULT 0,
        first_seen_at  TEXT NOT NULL,
        updated_at     TEXT NOT NULL,
        downloaded_at  TEXT,
        encrypted      BOOLEAN NOT NULL DEFAULT false
    );
    CREATE INDEX files_by_created ON files (created_at DESC, id);
    CREATE INDEX files_by_state ON files (state);
    CREATE INDEX files_by_mime ON files (mime_type);
    CREATE UNIQUE INDEX files_by_path ON files (path) WHERE path IS NOT NULL;

    CREATE TABLE batches (
        id                 TEXT COLLATE "C" PRIMARY KEY,
        created_at         TEXT COLLATE "C" NOT NULL,
        processing_status  TEXT NOT NULL,
        ended_at           TEXT,
        results_url        TEXT,
        expected_results   BIGINT NOT NULL,
        state              TEXT NOT NULL DEFAULT 'pending',
        reason             TEXT,
        path               TEXT COLLATE "C",
        sha256             TEXT,
        results_indexed    BIGINT NOT NULL DEFAULT 0,
        first_seen_at      TEXT NOT NULL,
        updated_at         TEXT NOT NULL,
        downloaded_at      TEXT,
        encrypted          BOOLEAN NOT NULL DEFAULT false
    );
    CREATE INDEX batches_by_created ON batches (created_at DESC, id);
    CREATE UNIQUE INDEX batches_by_path ON batches (path) WHERE path IS NOT NULL;

    CREATE TABLE batch_results (
        batch_id     TEXT COLLATE "C" NOT NULL REFERENCES batches (id) ON DELETE CASCADE,
        custom_id    TEXT COLLATE "C" NOT NULL,
        result_type  TEXT NOT NULL,
        byte_offset  BIGINT NOT NULL,
        byte_length  BIGINT NOT NULL,
        PRIMARY KEY (batch_id, custom_id)
    );
    "#,
    // 2: the fleet's work queue and its workers (see `crate::fleet`). An item is `queued`
    // (claimable from `not_before`), `leased` (by `worker` until `lease_until`), `done` or
    // `failed` (given up; the next enqueue queues it again). `epoch` grows at every claim: a
    // completion counts only with the epoch of its claim.
    r#"
    CREATE TABLE work_items (
        id           BIGSERIAL PRIMARY KEY,
        file_id      TEXT COLLATE "C" NOT NULL UNIQUE REFERENCES files (id),
        state        TEXT NOT NULL DEFAULT 'queued',
        epoch        BIGINT NOT NULL DEFAULT 0,
        worker       TEXT,
        lease_until  TIMESTAMPTZ,
        attempts     INTEGER NOT NULL DEFAULT 0,
        not_before   TIMESTAMPTZ NOT NULL DEFAULT now(),
        last_error   TEXT,
        enqueued_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
        done_at      TIMESTAMPTZ,
        completed_by TEXT,
        bytes        BIGINT
    );
    CREATE INDEX work_ready ON work_items (not_before, id) WHERE state = 'queued';
    CREATE INDEX work_leases ON work_items (lease_until) WHERE state = 'leased';

    CREATE TABLE workers (
        id            TEXT PRIMARY KEY,
        host          TEXT NOT NULL,
        pid           INTEGER NOT NULL,
        started_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
        heartbeat_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
        state         TEXT NOT NULL DEFAULT 'running'
    );
    "#,
    // 3: the fleet's request budget, one row (see `crate::fleet::budget`): a GCRA theoretical
    // arrival time on the database's clock, the pause a 429 set, and why the fleet halted (a
    // spend-limit 429; `fleet init --rpm` clears it). No row: no shared budget.
    r#"
    CREATE TABLE fleet_budget (
        id                   INTEGER PRIMARY KEY CHECK (id = 1),
        requests_per_minute  FLOAT8 NOT NULL CHECK (requests_per_minute > 0),
        burst                INTEGER NOT NULL CHECK (burst >= 0),
        tat                  TIMESTAMPTZ NOT NULL DEFAULT now(),
        paused_until         TIMESTAMPTZ NOT NULL DEFAULT 'epoch',
        halted               TEXT
    );
    "#,
    // 4: segments (see `crate::fleet::segment`). A file larger than the enqueue's segment size
    // is queued as items `part` 1..=N, each the byte range `range_start..range_end` (64 KiB
    // aligned); a whole file is one item with `part` 0 and no range. `done_bytes`: how much of
    // a segment's range, from its start, is durable in the shared staging file (whole 64 KiB
    // chunks; a reclaimed segment resumes there). Segments are claimed,
    // leased and swept like whole items; `part_etag` is an uploaded part's id (S3). A file's
    // multipart upload, when its output is object storage, is `file_uploads`; its shared age
    // file, when encrypted, `sealed_files`.
    r#"
    ALTER TABLE work_items DROP CONSTRAINT work_items_file_id_key;
    ALTER TABLE work_items
        ADD COLUMN part INTEGER NOT NULL DEFAULT 0,
        ADD COLUMN range_start BIGINT,
        ADD COLUMN range_end BIGINT,
        ADD COLUMN part_etag TEXT,
        ADD COLUMN done_bytes BIGINT NOT NULL DEFAULT 0,
        ADD CONSTRAINT work_items_part_range CHECK
            ((part = 0) = (range_start IS NULL) AND (range_start IS NULL) = (range_end IS NULL)
             AND (range_start IS NULL OR range_start < range_end));
    CREATE UNIQUE INDEX work_items_by_file_part ON work_items (file_id, part);

    CREATE TABLE file_uploads (
        file_id     TEXT COLLATE "C" PRIMARY KEY REFERENCES files (id),
        location    TEXT NOT NULL,
        upload_id   TEXT NOT NULL,
        started_at  TIMESTAMPTZ NOT NULL DEFAULT now()
    );

    -- The age file of an encrypted segmented file, shared by its segments' workers: its header
    -- (for the recipients), payload nonce, and file key wrapped to the resume identity the
    -- workers share (never in the clear). Deleted when the file is recorded.
    CREATE TABLE sealed_files (
        file_id      TEXT COLLATE "C" PRIMARY KEY REFERENCES files (id),
        header       BYTEA NOT NULL,
        nonce        BYTEA NOT NULL,
        recipients   TEXT[] NOT NULL,
        wrapped_key  TEXT NOT NULL
    );
    "#,
    // 5: how much of the budget is used (`fleet status`): reservations counted per minute of the
    // database's clock, the current one and the one before.
    r#"
    ALTER TABLE fleet_budget
        ADD COLUMN minute        TIMESTAMPTZ NOT NULL DEFAULT 'epoch',
        ADD COLUMN minute_count  BIGINT NOT NULL DEFAULT 0,
        ADD COLUMN before_count  BIGINT NOT NULL DEFAULT 0;
    "#,
];

/// Creates the version table if needed and serialises migrators.
pub const PREPARE: &str = "SELECT pg_advisory_xact_lock(7205759403792793); \
    CREATE TABLE IF NOT EXISTS claudedl_schema (version BIGINT NOT NULL); \
    INSERT INTO claudedl_schema (version) SELECT 0 WHERE NOT EXISTS \
        (SELECT 1 FROM claudedl_schema)";

pub const READ_VERSION: &str = "SELECT version FROM claudedl_schema";

pub const HAS_SCHEMA: &str = "SELECT to_regclass('claudedl_schema') IS NOT NULL";

pub const WRITE_VERSION: &str = "UPDATE claudedl_schema SET version = $1";
