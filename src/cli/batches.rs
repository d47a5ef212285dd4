//! `claudedl batches ls`, `batches results` and `batches show`: Message Batches from the
//! command line.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use claudedl::api::Batch;
use claudedl::crypt::{Encryption, output_path};
use claudedl::engine::TransferSpec;
use claudedl::store::index::Index;
use claudedl::store::layout::DataDir;
use claudedl::store::names::safe_file_name;
use claudedl::sync::read_result;

use super::args::{ApiArgs, BatchesCommand};
use super::common::{self, ExitStatus, GlobalArgs, Target, UsageError, connect};
use super::pipe;
use super::progress::Bars;

pub async fn run(command: BatchesCommand, global: &GlobalArgs) -> anyhow::Result<ExitStatus> {
    match command {
        BatchesCommand::Ls { api, json } => list_batches(&api, json, global).await,
        BatchesCommand::Results {
            api,
            id,
            output,
            encrypt,
            ..
        } => {
            let encrypt = encrypt.encryption(&global.settings)?;
            batch_results(&api, &id, output, encrypt, global).await
        }
        BatchesCommand::Show { id, custom_id, .. } => {
            show_result(&global.data_dir(), &id, &custom_id)
        }
    }
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
    let to_stdout = output.as_deref().is_some_and(pipe::is_stdio);
    if to_stdout && encrypt.is_some() {
        bail!(UsageError(
            "-o - writes plaintext to stdout: drop --encrypt-to (or pipe into age)".into()
        ));
    }
    if let Some(output) = &output {
        common::local_path(output)?;
    }
    let (client, engine) = connect(api, global)?;
    let batch = client.batch(id).await?;
    let Some(url) = client.results_url(&batch).filter(|_| batch.is_ended()) else {
        bail!(
            "batch {id} is {}: results are available once it has ended",
            batch.processing_status
        );
    };
    if to_stdout {
        common::cancel_on_ctrl_c(engine.cancel_token());
        let headers = client.headers_for(&url);
        let result = pipe::to_stdout(client.http(), &url, &headers, &engine.cancel_token()).await;
        let target = Target {
            url: claudedl::http::redact::redact_url(&url),
            path: "-".into(),
        };
        common::report_traffic(client.http(), global);
        return Ok(common::print_piped(result, &target));
    }
    let output =
        output.unwrap_or_else(|| PathBuf::from(format!("{}.jsonl", safe_file_name(id, "batch"))));
    let output = output_path(output, encrypt.is_some());
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
    let targets = [Target::of(&spec)];
    let status = common::print_results(std::slice::from_ref(&result), &targets, false, &bars);
    common::report_traffic(client.http(), global);
    Ok(status)
}

fn show_result(data: &DataDir, id: &str, custom_id: &str) -> anyhow::Result<ExitStatus> {
    let index = common::open_index(data)?;
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
