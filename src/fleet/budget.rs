//! The fleet's request budget: one row holding a GCRA theoretical arrival time (`tat`). Each
//! request reserves its slot with one `UPDATE … RETURNING` computed on the database's clock, so
//! clock skew between workers does not matter: with `T = 60 / rate` seconds and a burst of `b`,
//! `tat := max(tat, now) + T`, and the request waits `max(0, tat_before − b·T − now)` (and until
//! any pause a 429 set). `b + 1` requests may go back to back, then one every `T`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use deadpool_postgres::Pool;

use super::FleetError;
use crate::http::governor::shared::{BoxFuture, SharedBudget};

const RESERVE: &str = "WITH c AS (SELECT clock_timestamp() AS t) \
    UPDATE fleet_budget b SET tat = greatest(b.tat, c.t) \
        + make_interval(secs => 60.0 / b.requests_per_minute) \
    FROM c WHERE b.id = 1 \
    RETURNING greatest(0.0, \
        extract(epoch FROM b.tat - c.t)::float8 - (b.burst + 1) * 60.0 / b.requests_per_minute, \
        extract(epoch FROM b.paused_until - c.t)::float8), b.halted";

const PAUSED_FOR: &str = "SELECT greatest(0.0, \
    extract(epoch FROM paused_until - clock_timestamp())::float8) FROM fleet_budget WHERE id = 1";

/// The first reason stays.
const HALT: &str = "UPDATE fleet_budget SET halted = coalesce(halted, $1) WHERE id = 1";

/// `to_timestamp` takes seconds since the epoch; the pause only moves later.
const PAUSE: &str = "UPDATE fleet_budget \
    SET paused_until = greatest(paused_until, to_timestamp($1)) WHERE id = 1";

/// Set (or replace) the budget: `rpm` requests per minute fleet-wide, `burst` back to back; a
/// halt is cleared (the operator raised the spend limit).
pub async fn set(pool: &Pool, rpm: f64, burst: i32) -> Result<(), FleetError> {
    client(pool)
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
    client(pool)
        .await?
        .execute(HALT, &[&reason])
        .await
        .map_err(sql("halting the fleet"))?;
    Ok(())
}

/// The budget row's rate and burst, if the fleet has one.
pub async fn get(pool: &Pool) -> Result<Option<(f64, i32)>, FleetError> {
    let row = client(pool)
        .await?
        .query_opt(
            "SELECT requests_per_minute, burst FROM fleet_budget WHERE id = 1",
            &[],
        )
        .await
        .map_err(sql("reading the budget"))?;
    Ok(row.map(|row| (row.get(0), row.get(1))))
}

/// The budget row as the governor's [`SharedBudget`].
#[derive(Debug)]
pub struct PgBudget {
    pool: Pool,
    /// The halt the last reservation read.
    halted: Mutex<Option<String>>,
}

impl PgBudget {
    pub fn new(pool: Pool) -> Arc<PgBudget> {
        Arc::new(PgBudget {
            pool,
            halted: Mutex::new(None),
        })
    }

    async fn seconds(&self, sql_text: &'static str) -> Result<Duration, FleetError> {
        let row = client(&self.pool)
            .await?
            .query_opt(sql_text, &[])
            .await
            .map_err(sql("reserving a request"))?;
        let seconds: f64 = row.as_ref().map_or(0.0, |row| row.get(0));
        if let Some(halted) = row.and_then(|row| row.try_get::<_, Option<String>>(1).ok()) {
            *self.halted.lock().unwrap() = halted;
        }
        Ok(Duration::from_secs_f64(seconds.clamp(0.0, 3600.0)))
    }
}

impl SharedBudget for PgBudget {
    fn reserve(&self) -> BoxFuture<'_, Duration> {
        Box::pin(async move { self.seconds(RESERVE).await.unwrap_or_else(unanswered) })
    }

    fn paused_for(&self) -> BoxFuture<'_, Duration> {
        Box::pin(async move { self.seconds(PAUSED_FOR).await.unwrap_or_else(unanswered) })
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
            let paused = match client(&self.pool).await {
                Ok(client) => client.execute(PAUSE, &[&at]).await.map_err(sql("pausing")),
                Err(error) => Err(error),
            };
            if let Err(error) = paused {
                tracing::warn!(event = "fleet_budget_unavailable", "{error}");
            }
        })
    }
}

/// The database did not answer: the process's own budget still paces it.
fn unanswered(error: FleetError) -> Duration {
    tracing::warn!(event = "fleet_budget_unavailable", "{error}");
    Duration::ZERO
}

async fn client(pool: &Pool) -> Result<deadpool_postgres::Object, FleetError> {
    pool.get()
        .await
        .map_err(|error| FleetError::Pool(error.to_string()))
}

fn sql(action: &'static str) -> impl FnOnce(tokio_postgres::Error) -> FleetError {
    move |source| FleetError::Sql {
        action,
        source: source.into(),
    }
}
