//! `claudedl sync`, `claudedl ls` and `claudedl demo`.

use std::sync::Arc;

use anyhow::{Context, bail};

use super::api::{clients, connect};
use super::args::{DemoArgs, LsArgs, NetworkArgs, SyncArgs};
use super::network::report_traffic;
use super::progress::Bars;
use super::settings;
use super::{ExitStatus, GlobalArgs};
use crate::api::{ApiClient, ApiConfig, ApiKey, Pagination};
use crate::engine::Engine;
use crate::http::TrafficSummary;
use crate::store::index::{FileQuery, FileState, Index, SqliteIndex};
use crate::store::layout::DataDir;
use crate::sync::{Sync, SyncError, SyncOptions, SyncSummary};

pub async fn sync(args: SyncArgs, global: &GlobalArgs) -> anyhow::Result<ExitStatus> {
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
        plaintext_ok: args.encrypt.no_encrypt,
    };
    let data = DataDir::new(settings::data_dir(&global.settings));
    let summary = run_sync(&api, &engine, &data, &options, global).await?;
    print_summary(
        &summary,
        &options,
        args.json,
        &api.http().governor().summary(),
    );
    report_traffic(api.http(), global);
    Ok(exit_status(&summary))
}

/// Lock the data directory, open the index and sync; Ctrl-C stops transfers with state saved.
async fn run_sync(
    api: &ApiClient,
    engine: &Engine,
    data: &DataDir,
    options: &SyncOptions,
    global: &GlobalArgs,
) -> anyhow::Result<SyncSummary> {
    data.create()?;
    let _lock = data.lock()?;
    let mut index = SqliteIndex::open(&data.index_path())?;
    let cancel = engine.cancel_token();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            cancel.cancel();
        }
    });
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
            bail!(super::UsageError(refused.to_string()))
        }
        result => Ok(result?),
    }
}

fn exit_status(summary: &SyncSummary) -> ExitStatus {
    if summary.interrupted {
        ExitStatus::Interrupted
    } else if summary.failed.is_empty() {
        ExitStatus::Success
    } else {
        ExitStatus::Failure
    }
}

fn print_summary(
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
            "planned": summary.planned,
            "interrupted": summary.interrupted,
            "duration_ms": summary.duration.as_millis() as u64,
            "requests": traffic,
        });
        println!("{value}");
        return;
    }
    if options.dry_run {
        println!(
            "dry run: {} files listed; would download {} items:",
            summary.files_listed,
            summary.planned.len()
        );
        for id in summary.planned.iter().take(50) {
            println!("  {id}");
        }
        if summary.planned.len() > 50 {
            println!("  … and {} more", summary.planned.len() - 50);
        }
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

pub fn ls(args: LsArgs, global: &GlobalArgs) -> anyhow::Result<ExitStatus> {
    let data = DataDir::new(settings::data_dir(&global.settings));
    let index = open_index(&data)?;
    let state = args.state.as_deref().map(parse_state).transpose()?;
    let query = FileQuery {
        month: args.month,
        mime: args.mime,
        name_glob: args.name,
        state,
        limit: args.limit,
    };
    for entry in index.query_files(&query)? {
        if args.json {
            let value = serde_json::json!({
                "id": entry.meta.id, "filename": entry.meta.filename, "mime_type": entry.meta.mime_type,
                "size_bytes": entry.meta.size_bytes, "created_at": entry.meta.created_at,
                "state": format!("{:?}", entry.state).to_lowercase(), "reason": entry.reason,
                "path": entry.path, "sha256": entry.sha256, "downloaded_at": entry.downloaded_at,
                "encrypted": entry.encrypted,
            });
            println!("{value}");
        } else {
            let state = format!("{:?}", entry.state).to_lowercase();
            let place = entry.path.as_deref().unwrap_or("-");
            println!(
                "{}  {}  {:>12}  {:<9} {place}",
                entry.meta.id, entry.meta.created_at, entry.meta.size_bytes, state
            );
        }
    }
    Ok(ExitStatus::Success)
}

/// The index of an existing data directory, opened read-only (for commands that only read
/// it: they work on a read-only data directory or file system).
pub(super) fn open_index(data: &DataDir) -> anyhow::Result<SqliteIndex> {
    Ok(SqliteIndex::open_read_only(&existing_index(data)?)?)
}

/// The index of an existing data directory, for writing.
pub(super) fn open_index_to_write(data: &DataDir) -> anyhow::Result<SqliteIndex> {
    Ok(SqliteIndex::open(&existing_index(data)?)?)
}

fn existing_index(data: &DataDir) -> anyhow::Result<std::path::PathBuf> {
    let index_path = data.index_path();
    if !index_path.exists() {
        bail!(
            "no index at {}: run `claudedl sync` first (or pass --data-dir)",
            index_path.display()
        );
    }
    Ok(index_path)
}

fn parse_state(text: &str) -> anyhow::Result<FileState> {
    Ok(match text {
        "pending" => FileState::Pending,
        "downloading" => FileState::Downloading,
        "complete" => FileState::Complete,
        "skipped" => FileState::Skipped,
        "failed" => FileState::Failed,
        other => bail!(super::UsageError(format!(
            "unknown state {other:?}: use pending, downloading, complete, skipped or failed"
        ))),
    })
}

/// The demo's request budget (the bundled mock does not limit it).
const DEMO_RPM: u32 = 60_000;

pub async fn demo(args: DemoArgs, global: &GlobalArgs) -> anyhow::Result<ExitStatus> {
    let mock = claudedl_mock::api::MockApi::start(claudedl_mock::api::demo_config()).await;
    println!(
        "demo: a mock Claude API is serving sample files and batches at {}",
        mock.base_url()
    );
    let config = ApiConfig::new(
        &mock.base_url(),
        ApiKey::new(mock.api_key()),
        Pagination::Ga,
    )?;
    // The mock is local: a budget of its own size, far above the lowest tier.
    let network = NetworkArgs {
        requests_per_minute: Some(DEMO_RPM),
        ..NetworkArgs::default()
    };
    let (api, engine) = clients(config, &network)?;
    let data = DataDir::new(&args.data_dir);
    let options = SyncOptions::default();
    let summary = run_sync(&api, &engine, &data, &options, global)
        .await
        .context("demo sync")?;
    print_summary(&summary, &options, false, &api.http().governor().summary());
    report_traffic(api.http(), global);
    let root = data.root().display();
    println!("\nwhere things are:");
    println!("  {root}/raw/YYYY-MM/           downloaded files, by month of creation");
    println!("  {root}/raw/YYYY-MM/batches/   batch results (JSONL)");
    println!("  {root}/meta/YYYY-MM.json      per-month metadata");
    println!("  {root}/meta/index.sqlite      the index");
    println!("try:  claudedl ls --data-dir {root} --mime text/csv");
    println!("      claudedl demo --data-dir {root}    (again: nothing new to fetch)");
    Ok(exit_status(&summary).min(ExitStatus::Failure))
}
