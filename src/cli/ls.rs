//! `claudedl ls`: query the index offline.

use std::io::Write;
use std::ops::ControlFlow;

use anyhow::bail;
use claudedl::store::index::{FileEntry, FileQuery, FileState};

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
    let mut left = args.limit.unwrap_or(usize::MAX);
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut written = Ok(());
    // Rows stream from the index to stdout: memory stays bounded at any index size.
    index.each_file(&query, &mut |entry| {
        if left == 0 {
            return ControlFlow::Break(());
        }
        if !select.selects(&entry.meta) {
            return ControlFlow::Continue(());
        }
        left -= 1;
        written = print_entry(&mut out, &entry, args.json);
        if written.is_ok() {
            ControlFlow::Continue(())
        } else {
            ControlFlow::Break(())
        }
    })?;
    match written.and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        other => other?,
    }
    Ok(ExitStatus::Success)
}

fn print_entry(out: &mut impl Write, entry: &FileEntry, json: bool) -> std::io::Result<()> {
    let state = format!("{:?}", entry.state).to_lowercase();
    if json {
        let value = serde_json::json!({
            "id": entry.meta.id, "filename": entry.meta.filename, "mime_type": entry.meta.mime_type,
            "size_bytes": entry.meta.size_bytes, "created_at": entry.meta.created_at,
            "state": state, "reason": entry.reason,
            "path": entry.path, "sha256": entry.sha256, "downloaded_at": entry.downloaded_at,
            "encrypted": entry.encrypted,
        });
        writeln!(out, "{value}")
    } else {
        let place = entry.path.as_deref().unwrap_or("-");
        writeln!(
            out,
            "{}  {}  {:>12}  {:<9} {place}",
            entry.meta.id, entry.meta.created_at, entry.meta.size_bytes, state
        )
    }
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
