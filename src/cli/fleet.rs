//! `claudedl fleet init|status`, `claudedl enqueue` and `claudedl worker`: the fleet on one
//! PostgreSQL database (see `claudedl::fleet`).

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use claudedl::engine::Silent;
use claudedl::fleet::{self, enqueue::EnqueueSummary, queue, worker};
use claudedl::store::index::pg_tls::PgConfig;
use claudedl::store::index::{Index, PgIndex};
use claudedl::sync::{Sync, SyncOptions};
use tokio_util::sync::CancellationToken;

use super::args::{EnqueueArgs, FleetCommand, WorkerArgs};
use super::common::{ExitStatus, GlobalArgs, UsageError, connect, database};

/// Connections a worker keeps: claims, heartbeats and completions overlap.
const WORKER_CONNECTIONS: usize = 4;

pub async fn run(command: FleetCommand, global: &GlobalArgs) -> anyhow::Result<ExitStatus> {
    let (config, name) = required_db(global)?;
    match command {
        FleetCommand::Init { rpm, burst } => {
            drop(PgIndex::connect(config.clone(), &name)?);
            println!("the fleet's schema is up to date in {name}");
            if let Some(rpm) = rpm {
                if !(rpm.is_finite() && rpm > 0.0) {
                    bail!(UsageError("--rpm: expected a positive rate".into()));
                }
                let pool = fleet::pool(config, 1)?;
                fleet::budget::set(&pool, rpm, i32::from(burst)).await?;
                println!("the fleet's request budget: {rpm}/min, burst {burst}");
            }
        }
        FleetCommand::Status { json } => {
            drop(PgIndex::connect_read_only(config.clone(), &name)?);
            let pool = fleet::pool(config, 1)?;
            let status = queue::status(&pool).await?;
            let budget = fleet::budget::get(&pool).await?;
            let usage = fleet::budget::usage(&pool).await?;
            if json {
                let mut value = serde_json::to_value(&status)?;
                value["budget_rpm"] = budget.map(|(rpm, _)| rpm).into();
                value["budget_burst"] = budget.map(|(_, burst)| burst).into();
                value["budget_used"] = serde_json::to_value(usage)?;
                println!("{value}");
            } else {
                print_status(&status);
                match (budget, usage) {
                    (Some((rpm, burst)), Some(used)) => println!(
                        "budget: {rpm}/min shared, burst {burst}; reserved {} in the last full \
                         minute ({:.0} %), {} in this one",
                        used.last_minute,
                        100.0 * used.last_minute as f64 / rpm,
                        used.this_minute
                    ),
                    _ => println!("budget: per worker (no shared budget set)"),
                }
            }
        }
        FleetCommand::Abandon {
            ids, undo, json, ..
        } => {
            let pool = fleet::pool(config, 1)?;
            return abandon(&pool, &global.data_dir().tmp(), &ids, undo, json).await;
        }
    }
    Ok(ExitStatus::Success)
}

/// Abandon each of `ids` (or take its abandon back); one refused or failed does not stop the
/// others.
async fn abandon(
    pool: &deadpool_postgres::Pool,
    tmp: &std::path::Path,
    ids: &[String],
    undo: bool,
    json: bool,
) -> anyhow::Result<ExitStatus> {
    let mut status = ExitStatus::Success;
    for id in ids {
        let said = if undo {
            fleet::abandon::undo(pool, id)
                .await
                .map(|()| format!("{id} is wanted again: the next enqueue queues it"))
        } else {
            fleet::abandon::abandon(pool, tmp, id)
                .await
                .map(|done| abandoned(&done, json))
        };
        match said {
            Ok(line) => println!("{line}"),
            Err(error) => {
                eprintln!("error: {error}");
                status = ExitStatus::Failure;
            }
        }
    }
    Ok(status)
}

/// What `fleet abandon` prints of `done`: a JSON object, or a sentence.
fn abandoned(done: &fleet::abandon::Abandoned, json: bool) -> String {
    if json {
        return serde_json::to_string(done).expect("a summary serializes");
    }
    let upload = match &done.upload_aborted {
        Some(location) => format!(", upload to {location} aborted"),
        None => String::new(),
    };
    let staging = if done.staging_removed {
        ", staging file removed"
    } else {
        ""
    };
    format!(
        "abandoned {}: {} queue items dropped{upload}{staging}",
        done.id, done.items
    )
}

pub async fn enqueue(args: EnqueueArgs, global: &GlobalArgs) -> anyhow::Result<ExitStatus> {
    let (config, name) = required_db(global)?;
    let (api, engine) = connect(&args.api, global)?;
    let mut index = PgIndex::connect(config.clone(), &name)?;
    let pool = fleet::pool(config, 2)?;
    let options = SyncOptions {
        batches: false,
        full: args.full,
        page_size: args.page_size,
        select: args.select.selection(),
        ..SyncOptions::default()
    };
    // Listing touches no data directory; `Sync` names one all the same.
    let data = global.data_dir();
    let mut sync = Sync {
        api: &api,
        engine: &engine,
        data: &data,
        index: &mut index,
        reporter: Arc::new(Silent),
    };
    let summary =
        fleet::enqueue::enqueue(&pool, &mut sync, &options, Some(args.segment_size)).await?;
    print_enqueued(&summary, args.json);
    Ok(ExitStatus::Success)
}

pub async fn worker(args: WorkerArgs, global: &GlobalArgs) -> anyhow::Result<ExitStatus> {
    let (config, name) = required_db(global)?;
    let (api, engine) = connect(&args.api, global)?;
    let data = global.data_dir();
    data.create()?;
    let mut index = PgIndex::connect(config.clone(), &name)?;
    let pool = fleet::pool(config.clone(), WORKER_CONNECTIONS)?;
    if fleet::budget::get(&pool).await?.is_some() {
        // Its own pool: a reservation never waits behind the queue's statements.
        let shared = fleet::budget::PgBudget::new(fleet::pool(config.clone(), 2)?);
        // One connection LISTENs for pauses for the whole process (ends with it).
        shared.listen(config);
        api.http().governor().share_budget(shared);
    }
    let options = worker::WorkerOptions {
        jobs: args.jobs.into(),
        lease: seconds(args.lease, "--lease")?,
        exit_when_empty: args.exit_when_empty,
        drain_timeout: seconds(args.drain_timeout, "--drain-timeout")?,
        poll: Duration::from_millis(200),
        health_file: args.health_file,
        objects: match &args.output {
            Some(url) => Some(Arc::new(fleet::objects::Objects::from_url(url)?)),
            None => None,
        },
    };
    let sync_options = SyncOptions {
        batches: false,
        jobs: args.jobs.into(),
        encrypt: args.encrypt.encryption(&global.settings)?,
        plaintext_ok: args.encrypt.no_encrypt,
        ..SyncOptions::default()
    };
    // As sync: no plaintext download beside encrypted ones by accident.
    if sync_options.encrypt.is_none()
        && !sync_options.plaintext_ok
        && tokio::task::block_in_place(|| index.holds_encrypted())?
    {
        bail!(UsageError(format!(
            "the fleet's index at {name} holds encrypted downloads: pass --encrypt-to (or \
             --no-encrypt to store plaintext beside them)"
        )));
    }
    let drain = CancellationToken::new();
    let signals = drain_on_signals(drain.clone())?;
    let id = worker::worker_id();
    // Every JSON log line of this process names the worker (the engine's `file_done` too).
    super::logging::stamp_every_line("worker", id.clone());
    tracing::info!(event = "fleet_worker_started", worker = %id, db = %name, "worker started");
    let mut sync = Sync {
        api: &api,
        engine: &engine,
        data: &data,
        index: &mut index,
        reporter: Arc::new(Silent),
    };
    let summary = worker::run(&pool, &mut sync, &sync_options, &options, &id, drain).await;
    signals.abort();
    let summary = summary?;
    if args.json {
        println!("{}", serde_json::to_string(&summary)?);
    } else if global.human_stderr() {
        eprintln!(
            "worker {}: {} completed, {} skipped, {} retried later, {} given up, {} discarded \
             (lease lost), {} released{}",
            summary.worker,
            summary.completed,
            summary.skipped,
            summary.retried,
            summary.given_up,
            summary.lost,
            summary.released,
            if summary.drained { " (drained)" } else { "" }
        );
    }
    if let Some(reason) = &summary.halted {
        eprintln!("error: {reason}");
        return Ok(ExitStatus::Halted);
    }
    Ok(ExitStatus::Success)
}

/// SIGTERM (Kubernetes) and Ctrl-C drain the worker.
fn drain_on_signals(drain: CancellationToken) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("watching SIGTERM")?;
    Ok(tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        drain.cancel();
    }))
}

fn required_db(global: &GlobalArgs) -> anyhow::Result<(PgConfig, String)> {
    match database(global)? {
        Some(db) => Ok(db),
        None => bail!(UsageError(
            "this command needs the fleet's database: pass --db URL or set $CLAUDEDL_DB".into()
        )),
    }
}

fn seconds(value: f64, flag: &str) -> anyhow::Result<Duration> {
    if !(value.is_finite() && value > 0.0) {
        bail!(UsageError(format!(
            "{flag}: expected a positive number of seconds"
        )));
    }
    Ok(Duration::from_secs_f64(value))
}

fn print_enqueued(summary: &EnqueueSummary, json: bool) {
    if json {
        println!("{}", serde_json::to_string(summary).unwrap_or_default());
    } else {
        println!(
            "listed {} files ({} new) in {} list requests; queued {}",
            summary.files_listed, summary.files_new, summary.list_requests, summary.queued
        );
    }
}

fn print_status(status: &queue::Status) {
    println!(
        "queue: {} ready, {} waiting to retry, {} leased ({} expired), {} done, {} failed",
        status.queued,
        status.delayed,
        status.leased,
        status.expired_leases,
        status.done,
        status.failed
    );
    println!(
        "last minute: {} done, {}",
        status.done_last_minute,
        bytesize::ByteSize(status.bytes_last_minute.max(0) as u64)
            .display()
            .iec()
    );
    for worker in &status.workers {
        println!(
            "  {}  {:<8} {} leases, heartbeat {:.0}s ago",
            worker.id, worker.state, worker.leases, worker.heartbeat_age_s
        );
    }
}
