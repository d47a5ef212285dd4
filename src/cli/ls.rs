//! `claudedl ls`: query the index offline.

use anyhow::bail;
use claudedl::store::index::{FileQuery, FileState};

use super::args::LsArgs;
use super::common::{ExitStatus, GlobalArgs, UsageError, open_any_index};

pub fn run(args: LsArgs, global: &GlobalArgs) -> anyhow::Result<ExitStatus> {
    let index = open_any_index(global, &global.data_dir(), false)?;
    let state = args.state.as_deref().map(state).transpose()?;
    let query = FileQuery {
        month: args.month,
        state,
        ..FileQuery::default()
    };
    let select = args.select.selection();
    let entries = index.query_files(&query)?.into_iter();
    let selected = entries.filter(|e| select.selects(&e.meta));
    for entry in selected.take(args.limit.unwrap_or(usize::MAX)) {
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

/// The state named `text`, or a usage error.
fn state(text: &str) -> anyhow::Result<FileState> {
    match FileState::parse(text) {
        Some(state) => Ok(state),
        None => bail!(UsageError(format!(
            "unknown state {text:?}: use pending, downloading, complete, skipped or failed"
        ))),
    }
}
