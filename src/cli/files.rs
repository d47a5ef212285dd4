//! `claudedl files ls` and `claudedl files get`: the Files API from the command line.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::bail;
use claudedl::api::FileObject;
use claudedl::crypt::{Encryption, output_path};
use claudedl::engine::TransferSpec;
use claudedl::store::names::safe_file_name;
use claudedl::sync::Selection;

use super::args::{ApiArgs, FilesCommand};
use super::common::{self, ExitStatus, GlobalArgs, Target, connect};
use super::progress::Bars;

pub async fn run(command: FilesCommand, global: &GlobalArgs) -> anyhow::Result<ExitStatus> {
    match command {
        FilesCommand::Ls {
            api,
            select,
            json,
            limit,
        } => list_files(&api, &select.selection(), json, limit, global).await,
        FilesCommand::Get {
            api,
            ids,
            dir,
            json,
            encrypt,
            ..
        } => {
            let encrypt = encrypt.encryption(&global.settings)?;
            get_files(&api, &ids, dir, json, encrypt, global).await
        }
    }
}

async fn list_files(
    api: &ApiArgs,
    select: &Selection,
    json: bool,
    limit: Option<u64>,
    global: &GlobalArgs,
) -> anyhow::Result<ExitStatus> {
    let (client, _) = connect(api, global)?;
    let mut pages = client.pages::<FileObject>(1000);
    let mut shown = 0;
    while let Some(page) = pages.next_page().await? {
        for file in page.into_iter().filter(|f| select.selects(f)) {
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
    common::local_path(&dir)?;
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
        let output = output_path(dir.join(name), encrypt.is_some());
        specs.push(TransferSpec {
            headers: client.headers(),
            expected_size: Some(file.size_bytes),
            file_id: Some(file.id.clone()),
            output,
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
    let targets: Vec<Target> = specs.iter().map(Target::of).collect();
    let results = engine.download_all(specs, 4, bars.clone()).await;
    let status = common::print_results(&results, &targets, json, &bars);
    common::report_traffic(client.http(), global);
    Ok(status)
}
