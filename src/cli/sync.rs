//! `claudedl sync`: mirror the account into the data directory. Also the sync run and its
//! summary that `demo` reuses.

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::bail;
use claudedl::api::ApiClient;
use claudedl::engine::Engine;
use claudedl::http::TrafficSummary;
use claudedl::store::index::SqliteIndex;
use claudedl::store::layout::DataDir;
use claudedl::sync::{Planned, Sync, SyncError, SyncOptions, SyncSummary};

use super::args::SyncArgs;
use super::common::{self, ExitStatus, GlobalArgs, UsageError, connect};
use super::progress::Bars;

pub async fn run(args: SyncArgs, global: &GlobalArgs) -> anyhow::Result<ExitStatus> {
    let (api, engine) = connect(&args.api, global)?;
    let options = SyncOptions {
        files: !args.batches_only,
        batches: !args.files_only,
        full: args.full,
        dry_run: args.dry_run,
        metadata_only: args.metadata_only,
        page_size: args.page_size,
        jobs: args.jobs.into(),
        encrypt: args.encrypt.encryption(&global.settings)?,
        only: None,
        select: args.select.selection(),
        plaintext_ok: args.encrypt.no_encrypt,
    };
    let data = global.data_dir();
    let summary = run_sync(&api, &engine, &data, &options, global).await?;
    print_summary(
        &summary,
        &options,
        args.json,
        &api.http().governor().summary(),
    );
    common::report_traffic(api.http(), global);
    if api.http().governor().halted().is_some() {
        return Ok(ExitStatus::Halted);
    }
    Ok(exit_status(&summary))
}

/// Lock the data directory, open the index and sync; Ctrl-C stops transfers with state saved.
pub async fn run_sync(
    api: &ApiClient,
    engine: &Engine,
    data: &DataDir,
    options: &SyncOptions,
    global: &GlobalArgs,
) -> anyhow::Result<SyncSummary> {
    // A dry run writes nothing: it reads the index if there is one, else starts from an empty
    // one in memory, and creates no directory nor lock.
    let (mut index, _lock) = if options.dry_run {
        let index = if data.index_path().exists() {
            SqliteIndex::open(&data.index_path())?
        } else {
            SqliteIndex::open_in_memory()?
        };
        (index, None)
    } else {
        data.create()?;
        let lock = data.lock()?;
        (SqliteIndex::open(&data.index_path())?, Some(lock))
    };
    common::cancel_on_ctrl_c(engine.cancel_token());
    let visible = global.bars_visible(false);
    let reporter = Arc::new(Bars::new(Vec::new(), visible));
    let mut sync = Sync {
        api,
        engine,
        data,
        index: &mut index,
        reporter,
    };
    match sync.run(options).await {
        Err(refused @ SyncError::PlaintextBesideEncrypted { .. }) => {
            bail!(UsageError(refused.to_string()))
        }
        result => Ok(result?),
    }
}

pub fn exit_status(summary: &SyncSummary) -> ExitStatus {
    if summary.interrupted {
        ExitStatus::Interrupted
    } else if summary.failed.is_empty() {
        ExitStatus::Success
    } else {
        ExitStatus::Failure
    }
}

pub fn print_summary(
    summary: &SyncSummary,
    options: &SyncOptions,
    json: bool,
    traffic: &TrafficSummary,
) {
    if json {
        let value = serde_json::json!({
            "files_listed": summary.files_listed,
            "files_new": summary.files_new,
            "list_requests": summary.list_requests,
            "downloaded": summary.downloaded,
            "bytes": summary.bytes,
            "batches_listed": summary.batches_listed,
            "batches_downloaded": summary.batches_downloaded,
            "results_indexed": summary.results_indexed,
            "skipped": summary.skipped.iter().map(|(id, why)| serde_json::json!({"id": id, "reason": why})).collect::<Vec<_>>(),
            "failed": summary.failed.iter().map(|(id, why)| serde_json::json!({"id": id, "reason": why})).collect::<Vec<_>>(),
            "planned": summary.planned.iter().map(|p| &p.id).collect::<Vec<_>>(),
            "planned_bytes": planned_bytes(&summary.planned),
            "planned_months": planned_months(&summary.planned).iter().map(|(month, (count, bytes))| {
                (month.clone(), serde_json::json!({"count": count, "bytes": bytes}))
            }).collect::<serde_json::Map<_, _>>(),
            "interrupted": summary.interrupted,
            "duration_ms": summary.duration.as_millis() as u64,
            "requests": traffic,
        });
        println!("{value}");
        return;
    }
    if options.dry_run {
        print_plan(summary);
        return;
    }
    println!(
        "listed {} files ({} new) and {} batches in {} list requests",
        summary.files_listed, summary.files_new, summary.batches_listed, summary.list_requests
    );
    println!(
        "downloaded {} files and {} batch results ({} results indexed), {} in {:.1?}",
        summary.downloaded,
        summary.batches_downloaded,
        summary.results_indexed,
        bytesize::ByteSize(summary.bytes).display().iec(),
        summary.duration
    );
    print_reasons("skipped", &summary.skipped);
    print_reasons("failed (retried by the next sync)", &summary.failed);
    if summary.interrupted {
        println!("interrupted: progress is saved, run the same command again to continue");
    }
}

/// The dry run's plan: the count and bytes in all and per month of creation, then the ids.
fn print_plan(summary: &SyncSummary) {
    let iec = |bytes: u64| bytesize::ByteSize(bytes).display().iec().to_string();
    println!(
        "dry run: {} files and {} batches listed; would download {} items, {} (batch results' \
         sizes are unknown until fetched); nothing was written",
        summary.files_listed,
        summary.batches_listed,
        summary.planned.len(),
        iec(planned_bytes(&summary.planned)),
    );
    for (month, (count, bytes)) in planned_months(&summary.planned) {
        println!("  {month}  {count:>6} items  {:>12}", iec(bytes));
    }
    for planned in summary.planned.iter().take(50) {
        println!("  {}", planned.id);
    }
    if summary.planned.len() > 50 {
        println!("  … and {} more", summary.planned.len() - 50);
    }
}

fn planned_bytes(planned: &[Planned]) -> u64 {
    planned.iter().filter_map(|p| p.bytes).sum()
}

/// Month of creation (`YYYY-MM`) → (items, bytes).
fn planned_months(planned: &[Planned]) -> BTreeMap<String, (u64, u64)> {
    let mut months = BTreeMap::new();
    for item in planned {
        let month = item.created_at.get(..7).unwrap_or("unknown").to_owned();
        let entry: &mut (u64, u64) = months.entry(month).or_default();
        entry.0 += 1;
        entry.1 += item.bytes.unwrap_or(0);
    }
    months
}

fn print_reasons(what: &str, items: &[(String, String)]) {
    if items.is_empty() {
        return;
    }
    println!("{what}: {}", items.len());
    for (id, reason) in items.iter().take(20) {
        println!("  {id}: {reason}");
    }
    if items.len() > 20 {
        println!("  … and {} more", items.len() - 20);
    }
}
