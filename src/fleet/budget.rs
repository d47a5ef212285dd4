//! The fleet's request budget: one row holding a GCRA theoretical arrival time (`tat`). Each
//! request reserves its slot with one `UPDATE … RETURNING` computed on the database's clock, so
//! clock skew between workers does not matter: with `T = 60 / rate` seconds and a burst of `b`,
//! `tat := max(tat, now) + T`, and the request waits `max(0, tat_before − b·T − now)` (and until
//! any pause a 429 set). `b + 1` requests may go back to back, then one every `T`.
//!
//! A server's `anthropic-ratelimit-requests-remaining` below `b + 1` re-anchors the row: `tat`
//! moves to where that many requests are left (only ever later). A 429's pause is written with a
//! `NOTIFY` on [`CHANNEL`]; every process keeps one connection that `LISTEN`s there and wakes its
//! waiting requests, which re-read the pause at once instead of at the end of their wait.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use deadpool_postgres::Pool;
use tokio::sync::watch;
use tokio_postgres::AsyncMessage;

use super::{FleetError, connection, sql};
use crate::http::governor::shared::{BoxFuture, SharedBudget};
use crate::store::index::pg_tls::PgConfig;

/// The channel a pause or a halt is announced on.
pub const CHANNEL: &str = "claudedl_budget";
/// A listener whose connection failed connects again after this long.
const RELISTEN_AFTER: Duration = Duration::from_secs(1);

/// Also counts the reservation in the database clock's current minute (see [`usage`]).
const RESERVE: &str = "WITH c AS (SELECT clock_timestamp() AS t, \
        date_trunc('minute', clock_timestamp()) AS m) \
    UPDATE fleet_budget b SET tat = greatest(b.tat, c.t) \
        + make_interval(secs => 60.0 / b.requests_per_minute), \
        minute = c.m, \
        minute_count = CASE WHEN b.minute = c.m THEN b.minute_count + 1 ELSE 1 END, \
        before_count = CASE WHEN b.minute = c.m THEN b.before_count \
            WHEN b.minute = c.m - interval '1 minute' THEN b.minute_count ELSE 0 END \
    FROM c WHERE b.id = 1 \
    RETURNING greatest(0.0, \
        extract(epoch FROM b.tat - c.t)::float8 - (b.burst + 1) * 60.0 / b.requests_per_minute, \
        extract(epoch FROM b.paused_until - c.t)::float8), b.halted, b.burst";

const PAUSED_FOR: &str = "SELECT greatest(0.0, \
    extract(epoch FROM paused_until - clock_timestamp())::float8), halted \
    FROM fleet_budget WHERE id = 1";

/// The first reason stays; listeners are told.
const HALT: &str = "UPDATE fleet_budget SET halted = coalesce(halted, $1) WHERE id = 1 \
    RETURNING pg_notify('claudedl_budget', 'halt')";

/// `to_timestamp` takes seconds since the epoch; the pause only moves later, and listeners are
/// told when it does.
const PAUSE: &str = "UPDATE fleet_budget SET paused_until = to_timestamp($1) \
    WHERE id = 1 AND paused_until < to_timestamp($1) \
    RETURNING pg_notify('claudedl_budget', 'pause')";

/// `$1` requests are left (at most `burst + 1` count): `tat` where the row would say so, if
/// that is later.
const ANCHOR: &str = "UPDATE fleet_budget SET tat = greatest(tat, clock_timestamp() \
    + make_interval(secs => (burst + 1 - least($1::float8, burst + 1)) * 60.0 / requests_per_minute)) \
    WHERE id = 1";

/// Set (or replace) the budget: `rpm` requests per minute fleet-wide, `burst` back to back; a
/// halt is cleared (the operator raised the spend limit).
pub async fn set(pool: &Pool, rpm: f64, burst: i32) -> Result<(), FleetError> {
    connection(pool)
        .await?
        .execute(
            "INSERT INTO fleet_budget (id, requests_per_minute, burst) VALUES (1, $1, $2) \
             ON CONFLICT (id) DO UPDATE SET requests_per_minute = $1, burst = $2, halted = NULL",
            &[&rpm, &burst],
        )
        .await
        .map_err(sql("setting the budget"))?;
    Ok(())
}

/// Halt the fleet: every worker stops at its next reservation (the first reason stays).
pub async fn halt(pool: &Pool, reason: &str) -> Result<(), FleetError> {
    connection(pool)
        .await?
        .execute(HALT, &[&reason])
        .await
        .map_err(sql("halting the fleet"))?;
    Ok(())
}

/// The budget row's rate and burst, if the fleet has one.
pub async fn get(pool: &Pool) -> Result<Option<(f64, i32)>, FleetError> {
    let row = connection(pool)
        .await?
        .query_opt(
            "SELECT requests_per_minute, burst FROM fleet_budget WHERE id = 1",
            &[],
        )
        .await
        .map_err(sql("reading the budget"))?;
    Ok(row.map(|row| (row.get(0), row.get(1))))
}

/// How much of the budget is in use: requests reserved in the database clock's current minute
/// and in the minute before it (complete).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Usage {
    pub this_minute: i64,
    pub last_minute: i64,
}

const USAGE: &str = "WITH c AS (SELECT date_trunc('minute', clock_timestamp()) AS m) \
    SELECT CASE WHEN minute = c.m THEN minute_count ELSE 0 END, \
        CASE WHEN minute = c.m THEN before_count \
            WHEN minute = c.m - interval '1 minute' THEN minute_count ELSE 0 END \
    FROM fleet_budget, c WHERE id = 1";

/// The budget's use, if the fleet has a budget.
pub async fn usage(pool: &Pool) -> Result<Option<Usage>, FleetError> {
    let row = connection(pool)
        .await?
        .query_opt(USAGE, &[])
        .await
        .map_err(sql("reading the budget's use"))?;
    Ok(row.map(|row| Usage {
        this_minute: row.get(0),
        last_minute: row.get(1),
    }))
}

/// The budget row as the governor's [`SharedBudget`].
#[derive(Debug)]
pub struct PgBudget {
    pool: Pool,
    /// The halt the last read of the row found.
    halted: Mutex<Option<String>>,
    /// The row's burst as last read (`-1`: not read yet); fewer remaining re-anchors the row.
    burst: AtomicI64,
    /// Counts the notifications heard on [`CHANNEL`] (see [`PgBudget::listen`]).
    wakes: watch::Sender<u64>,
}

impl PgBudget {
    pub fn new(pool: Pool) -> Arc<PgBudget> {
        Arc::new(PgBudget {
            pool,
            halted: Mutex::new(None),
            burst: AtomicI64::new(-1),
            wakes: watch::Sender::new(0),
        })
    }

    /// Listen on [`CHANNEL`] on one dedicated connection of `config` (reconnecting after a
    /// failure) until the budget is dropped. Each `LISTEN` that succeeds also counts as a wake:
    /// the first says the listener is ready, a later one that a notification may have been
    /// missed.
    pub fn listen(self: &Arc<Self>, config: impl Into<PgConfig>) -> tokio::task::JoinHandle<()> {
        let config = config.into();
        let budget = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let Some(wakes) = budget.upgrade().map(|b| b.wakes.clone()) else {
                    return;
                };
                if let Err(error) = listen_once(&config, &wakes).await {
                    tracing::warn!(event = "fleet_budget_unavailable", "listening: {error}");
                }
                drop(wakes);
                tokio::time::sleep(RELISTEN_AFTER).await;
            }
        })
    }

    async fn seconds(&self, sql_text: &'static str) -> Result<Duration, FleetError> {
        let row = connection(&self.pool)
            .await?
            .query_opt(sql_text, &[])
            .await
            .map_err(sql("reserving a request"))?;
        let seconds: f64 = row.as_ref().map_or(0.0, |row| row.get(0));
        if let Some(row) = &row {
            *self.halted.lock().unwrap() = row.get(1);
            if let Ok(burst) = row.try_get::<_, i32>(2) {
                self.burst.store(i64::from(burst), Ordering::Relaxed);
            }
        }
        Ok(Duration::from_secs_f64(seconds.clamp(0.0, 3600.0)))
    }

    async fn write(&self, action: &'static str, sql_text: &str, value: &ToSqlSync) {
        let written = match connection(&self.pool).await {
            Ok(client) => client
                .execute(sql_text, &[value])
                .await
                .map(drop)
                .map_err(sql(action)),
            Err(error) => Err(error),
        };
        if let Err(error) = written {
            tracing::warn!(event = "fleet_budget_unavailable", "{error}");
        }
    }
}

type ToSqlSync = dyn tokio_postgres::types::ToSql + Sync;

/// One connection: `LISTEN`, then count every notification until the connection ends.
async fn listen_once(config: &PgConfig, wakes: &watch::Sender<u64>) -> Result<(), FleetError> {
    let (client, mut connection) = super::connect(config).await?;
    let (messages, mut heard) = tokio::sync::mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        while let Some(message) = std::future::poll_fn(|cx| connection.poll_message(cx)).await {
            match message {
                Ok(AsyncMessage::Notification(_)) => {
                    let _ = messages.send(());
                }
                Ok(_) => {}
                Err(_) => return,
            }
        }
    });
    let listened = client
        .batch_execute(&format!("LISTEN {CHANNEL}"))
        .await
        .map_err(sql("listening for pauses"));
    if let Err(error) = listened {
        driver.abort();
        return Err(error);
    }
    wakes.send_modify(|n| *n += 1);
    while heard.recv().await.is_some() {
        wakes.send_modify(|n| *n += 1);
    }
    Err(FleetError::Pool("the listening connection closed".into()))
}

impl SharedBudget for PgBudget {
    fn reserve(&self) -> BoxFuture<'_, Duration> {
        Box::pin(async move { self.seconds(RESERVE).await.unwrap_or_else(unanswered) })
    }

    fn paused_for(&self) -> BoxFuture<'_, Duration> {
        Box::pin(async move { self.seconds(PAUSED_FOR).await.unwrap_or_else(unanswered) })
    }

    fn wakes(&self) -> Option<watch::Receiver<u64>> {
        Some(self.wakes.subscribe())
    }

    fn anchor(&self, remaining: u64) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let burst = self.burst.load(Ordering::Relaxed);
            // More left than the row ever lets go at once: nothing to move.
            if burst < 0 || remaining > burst as u64 {
                return;
            }
            let remaining = remaining as f64;
            self.write("re-anchoring the budget", ANCHOR, &remaining)
                .await;
        })
    }

    fn halted(&self) -> Option<String> {
        self.halted.lock().unwrap().clone()
    }

    fn halt(&self, reason: String) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            if let Err(error) = halt(&self.pool, &reason).await {
                tracing::warn!(event = "fleet_budget_unavailable", "{error}");
            }
        })
    }

    fn pause(&self, until: SystemTime) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let at = until
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs_f64();
            self.write("pausing", PAUSE, &at).await;
        })
    }
}

/// The database did not answer: the process's own budget still paces it.
fn unanswered(error: FleetError) -> Duration {
    tracing::warn!(event = "fleet_budget_unavailable", "{error}");
    Duration::ZERO
}
