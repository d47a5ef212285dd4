//! The fleet: many `claudedl worker` processes, on one machine or many, sharing one PostgreSQL
//! database that holds the index and a work queue.
//!
//! - [`queue`]: the queue's SQL (claims with `FOR UPDATE SKIP LOCKED`, leases with a fencing
//!   epoch, completion in the index's transaction, retries, the sweep, the status);
//! - [`backoff`]: when a transient failure is tried again (a policy that never sleeps);
//! - [`budget`]: the fleet's request budget, one GCRA row on the database's clock;
//! - [`enqueue`]: list the API once (one lister at a time) and queue what the index wants;
//! - [`segment`]: a large file as segments, fetched by any worker, to a shared file or S3;
//! - [`objects`]: output to object storage (S3) instead of the data directory;
//! - [`worker`]: claim, download with the engine and sync's transfer specs, complete, drain;
//! - [`abandon`]: give a file up for good (its upload aborted, its staging file removed).
//!
//! One process with SQLite stays the default; nothing here runs without `--db`.

pub mod abandon;
pub mod backoff;
pub mod budget;
pub mod enqueue;
pub mod objects;
pub mod queue;
pub mod segment;
pub mod worker;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};

use crate::store::index::BoxError;
use crate::store::index::pg_tls::{self, PgConfig};
use crate::sync::SyncError;

#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error("the fleet's database: {action}: {source}")]
    Sql {
        action: &'static str,
        #[source]
        source: BoxError,
    },
    #[error("the fleet's database: no connection: {0}")]
    Pool(String),
    #[error("installing the download of {id}: {source}")]
    Install {
        id: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "another `claudedl enqueue` is listing into this database; one lister at a time \
         (try again when it ends)"
    )]
    ListerBusy,
    #[error(transparent)]
    Sync(#[from] SyncError),
    #[error(transparent)]
    Object(#[from] objects::ObjectError),
    #[error(transparent)]
    Crypt(#[from] crate::crypt::CryptError),
    #[error(
        "{id} is being sealed for other recipients by other workers: give every worker the \
         same --encrypt-to"
    )]
    Recipients { id: String },
    #[error(transparent)]
    Index(#[from] crate::store::index::IndexError),
    #[error("{id} is not abandoned: {reason}")]
    NotAbandoned { id: String, reason: String },
    #[error("{id} was not abandoned: there is no abandon to take back")]
    NeverAbandoned { id: String },
    #[error("removing the staging file {}: {source}", path.display())]
    Staging {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A connection from the pool (its error names every cause).
pub(crate) async fn connection(pool: &Pool) -> Result<deadpool_postgres::Object, FleetError> {
    pool.get().await.map_err(|error| FleetError::pool(&error))
}

/// A database error as [`FleetError::Sql`], naming what was being done.
pub(crate) fn sql(action: &'static str) -> impl FnOnce(tokio_postgres::Error) -> FleetError {
    move |source| FleetError::Sql {
        action,
        source: source.into(),
    }
}

/// A transaction holding the lock on `file_id`'s row: what is decided once per file (its
/// upload, its age header) is decided by one worker at a time.
pub(crate) async fn lock_file<'a>(
    client: &'a mut deadpool_postgres::Object,
    file_id: &str,
    action: &'static str,
) -> Result<deadpool_postgres::Transaction<'a>, FleetError> {
    let tx = client.transaction().await.map_err(sql(action))?;
    tx.execute("SELECT 1 FROM files WHERE id = $1 FOR UPDATE", &[&file_id])
        .await
        .map_err(sql(action))?;
    Ok(tx)
}

impl FleetError {
    /// No connection: `error` with each of its causes (a refused certificate says why), each
    /// said once.
    pub fn pool(error: &(dyn std::error::Error + 'static)) -> FleetError {
        let mut message = error.to_string();
        let mut source = error.source();
        while let Some(cause) = source {
            let text = cause.to_string();
            if !message.ends_with(&text) {
                message = format!("{message}: {text}");
            }
            source = cause.source();
        }
        FleetError::Pool(message)
    }
}

/// A pool of `size` connections to the database of `config` (TLS as its `sslmode` says).
pub fn pool(config: impl Into<PgConfig>, size: usize) -> Result<Pool, FleetError> {
    let config = config.into();
    let tls = pg_tls::connector(&config).map_err(|error| FleetError::pool(&error))?;
    let manager = Manager::from_config(
        config.pg,
        tls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(size)
        .build()
        .map_err(|error| FleetError::pool(&error))
}

/// One connection outside any pool (the budget's listener), its driver to be polled by the
/// caller.
async fn connect(
    config: &PgConfig,
) -> Result<(tokio_postgres::Client, pg_tls::Connection), FleetError> {
    pg_tls::connect(config)
        .await
        .map_err(|source| FleetError::Sql {
            action: "connecting",
            source,
        })
}
