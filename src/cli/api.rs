//! `claudedl files …` and `claudedl batches …`: the API from the command line.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};

use super::args::{ApiArgs, BatchesCommand, FilesCommand, NetworkArgs};
use super::get::print_results;
use super::network::report_traffic;
use super::network::{self, Traffic};
use super::progress::Bars;
use super::settings;
use super::{ExitStatus, GlobalArgs};
use crate::api::{ApiClient, ApiConfig, Batch, FileObject, Pagination};
use crate::crypt::{Encryption, age_path};
use crate::engine::{Engine, TransferSpec};
use crate::store::index::Index;
use crate::store::layout::DataDir;
use crate::store::names::safe_file_name;
use crate::sync::read_result;

/// One HTTP client (and one request budget) for the API and the engine.
pub fn connect(api: &ApiArgs, global: &GlobalArgs) -> anyhow::Result<(ApiClient, Engine)> {
    let pagination = if api.beta_pagination {
        Pagination::Beta
    } else {
        Pagination::Ga
    };
    let config = ApiConfig::from_settings(&global.settings, pagination)?;
    clients(
        config,
        &settings::network_args(&global.settings, &api.network),
    )
}

pub fn clients(
    mut config: ApiConfig,
    network: &NetworkArgs,
) -> anyhow::Result<(ApiClient, Engine)> {
    config.retry = network::retry_policy(network)?;
    let traffic = Traffic::Api {
        base_url: config.base_url.clone(),
    };
    let (http, engine) = network::engine(network, &traffic, false)?;
    Ok((ApiClient::new(http, config), engine))
}

pub async fn files(command: FilesCommand, global: &GlobalArgs) -> anyhow::Result<ExitStatus> {
    match command {
        FilesCommand::Ls { api, json, limit } => list_files(&api, json, limit, global).await,
        FilesCommand::Get {
            api,
            ids,
            dir,
            json,
            encrypt,
        } => {
            let encrypt = encrypt.encryption(&global.settings)?;
            get_files(&api, &ids, dir, json, encrypt, global).await
        }
    }
}

pub async fn batches(command: BatchesCommand, global: &GlobalArgs) -> anyhow::Result<ExitStatus> {
    match command {
        BatchesCommand::Ls { api, json } => list_batches(&api, json, global).await,
        BatchesCommand::Results {
            api,
            id,
            output,
            encrypt,
        } => {
            let encrypt = encrypt.encryption(&global.settings)?;
            batch_results(&api, &id, output, encrypt, global).await
        }
        BatchesCommand::Show { id, custom_id, .. } => {
            let data = DataDir::new(settings::data_dir(&global.settings));
            show_result(&data, &id, &custom_id)
        }
    }
}

async fn list_files(
    api: &ApiArgs,
    json: bool,
    limit: Option<u64>,
    global: &GlobalArgs,
) -> anyhow::Result<ExitStatus> {
    let (client, _) = connect(api, global)?;
    let mut pages = client.pages::<FileObject>(1000);
    let mut shown = 0;
    while let Some(page) = pages.next_page().await? {
        for file in page {
            if limit.is_some_and(|limit| shown >= limit) {
                return Ok(ExitStatus::Success);
            }
            shown += 1;
            if json {
                println!("{}", serde_json::to_string(&file)?);
            } else {
                let flag = if file.downloadable == Some(false) {
                    " (not downloadable)"
                } else {
                    ""
                };
                let name = file.filename.escape_debug();
                println!(
                    "{}  {}  {:>12}  {:<24} {name}{flag}",
                    file.id, file.created_at, file.size_bytes, file.mime_type
                );
            }
        }
    }
    Ok(ExitStatus::Success)
}

async fn get_files(
    api: &ApiArgs,
    ids: &[String],
    dir: PathBuf,
    json: bool,
    encrypt: Option<Arc<Encryption>>,
    global: &GlobalArgs,
) -> anyhow::Result<ExitStatus> {
    let (client, engine) = connect(api, global)?;
    let mut specs = Vec::new();
    for id in ids {
        let file = client.file(id).await?;
        if file.downloadable == Some(false) {
            bail!(
                "{id} is not downloadable: only files created by code execution or skills can be downloaded"
            );
        }
        let name = format!(
            "{}_{}",
            safe_file_name(&file.id, "file"),
            safe_file_name(&file.filename, "download")
        );
        let output = dir.join(name);
        specs.push(TransferSpec {
            headers: client.headers(),
            expected_size: Some(file.size_bytes),
            file_id: Some(file.id.clone()),
            output: match &encrypt {
                Some(_) => age_path(&output),
                None => output,
            },
            encrypt: encrypt.clone(),
            ..TransferSpec::new(client.file_content_url(id), "")
        });
    }
    let visible = global.bars_visible(json);
    let bars = Arc::new(Bars::new(
        specs
            .iter()
            .map(|s| s.output.display().to_string())
            .collect(),
        visible,
    ));
    let results = engine.download_all(specs, 4, bars.clone()).await;
    let status = print_results(&results, json, &bars);
    report_traffic(client.http(), global);
    Ok(status)
}

async fn list_batches(
    api: &ApiArgs,
    json: bool,
    global: &GlobalArgs,
) -> anyhow::Result<ExitStatus> {
    let (client, _) = connect(api, global)?;
    let mut pages = client.pages::<Batch>(100);
    while let Some(page) = pages.next_page().await? {
        for batch in page {
            if json {
                println!("{}", serde_json::to_string(&batch)?);
            } else {
                let counts = batch.request_counts;
                println!(
                    "{}  {}  {:<11}  succeeded {} errored {} canceled {} expired {} processing {}",
                    batch.id,
                    batch.created_at,
                    batch.processing_status,
                    counts.succeeded,
                    counts.errored,
                    counts.canceled,
                    counts.expired,
                    counts.processing
                );
            }
        }
    }
    Ok(ExitStatus::Success)
}

async fn batch_results(
    api: &ApiArgs,
    id: &str,
    output: Option<PathBuf>,
    encrypt: Option<Arc<Encryption>>,
    global: &GlobalArgs,
) -> anyhow::Result<ExitStatus> {
    let (client, engine) = connect(api, global)?;
    let batch = client.batch(id).await?;
    let Some(url) = client.results_url(&batch).filter(|_| batch.is_ended()) else {
        bail!(
            "batch {id} is {}: results are available once it has ended",
            batch.processing_status
        );
    };
    let mut output =
        output.unwrap_or_else(|| PathBuf::from(format!("{}.jsonl", safe_file_name(id, "batch"))));
    if encrypt.is_some() {
        output = age_path(&output);
    }
    let spec = TransferSpec {
        headers: client.headers_for(&url),
        overwrite: true,
        file_id: Some(id.to_owned()),
        encrypt,
        ..TransferSpec::new(url.clone(), output)
    };
    let visible = global.bars_visible(false);
    let bars = Arc::new(Bars::new(vec![id.to_owned()], visible));
    let result = engine.download(0, &spec, bars.clone()).await;
    let status = print_results(std::slice::from_ref(&result), false, &bars);
    report_traffic(client.http(), global);
    Ok(status)
}

fn show_result(data: &DataDir, id: &str, custom_id: &str) -> anyhow::Result<ExitStatus> {
    let index = super::sync::open_index(data)?;
    let index_path = data.index_path();
    let not_synced = || {
        format!(
            "batch {id} has no result {custom_id:?} in the index at {}",
            index_path.display()
        )
    };
    let batch = index.batch(id)?.with_context(not_synced)?;
    if batch.encrypted {
        bail!(
            "the results of batch {id} are encrypted ({}): decrypt them with `claudedl decrypt`",
            batch.path.as_deref().unwrap_or("-")
        );
    }
    let row = index.result(id, custom_id)?.with_context(not_synced)?;
    let path = data.root().join(batch.path.with_context(not_synced)?);
    let line = read_result(&path, &row).with_context(|| format!("reading {}", path.display()))?;
    println!("{}", String::from_utf8_lossy(&line));
    Ok(ExitStatus::Success)
}
