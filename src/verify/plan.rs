//! What the index says should be on disk: the items to hash, every path a row points to, and
//! the entries whose download has not finished.

use std::collections::HashSet;
use std::path::PathBuf;

use crate::store::index::{BatchEntry, FileEntry, FileQuery, FileState, Index};
use crate::store::layout::DataDir;
use crate::sync::relative;

use super::{Item, ItemKind, VerifyError};

/// An entry whose download may have left a `.part` in `tmp/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InFlight {
    pub kind: ItemKind,
    pub id: String,
    pub state: FileState,
    /// Where the file will go; its `.part` lives at the matching name in `tmp/`.
    pub output: PathBuf,
}

#[derive(Debug, Default)]
pub struct Plan {
    /// Complete entries, sorted by path.
    pub items: Vec<Item>,
    /// Every path (relative, `/`-separated) some row records.
    pub known_paths: HashSet<String>,
    /// Pending, Downloading and Failed entries.
    pub in_flight: Vec<InFlight>,
}

impl Plan {
    pub fn from_index(data: &DataDir, index: &dyn Index) -> Result<Plan, VerifyError> {
        let mut plan = Plan::default();
        index.each_file(&FileQuery::default(), &mut |entry| {
            let output =
                data.file_path(&entry.meta.created_at, &entry.meta.id, &entry.meta.filename);
            plan.add(data, Row::file(entry), output);
            std::ops::ControlFlow::Continue(())
        })?;
        for entry in index.query_batches()? {
            let output = data.batch_results_path(&entry.meta.created_at, &entry.meta.id);
            plan.add(data, Row::batch(entry), output);
        }
        plan.items.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(plan)
    }

    fn add(&mut self, data: &DataDir, row: Row, output: PathBuf) {
        if let Some(path) = &row.path {
            self.known_paths.insert(path.clone());
        }
        match row.state {
            FileState::Complete => {
                let path = row.path.unwrap_or_else(|| relative(data.root(), &output));
                self.items.push(Item {
                    kind: row.kind,
                    id: row.id,
                    path,
                    sha256: row.sha256.filter(|hash| !hash.is_empty()),
                    size: row.size,
                    encrypted: row.encrypted,
                });
            }
            FileState::Skipped => {}
            state @ (FileState::Pending | FileState::Downloading | FileState::Failed) => {
                self.in_flight.push(InFlight {
                    kind: row.kind,
                    id: row.id,
                    state,
                    output,
                })
            }
        }
    }
}

/// The columns verify needs of a file or batch row.
struct Row {
    kind: ItemKind,
    id: String,
    state: FileState,
    path: Option<String>,
    sha256: Option<String>,
    size: Option<u64>,
    encrypted: bool,
}

impl Row {
    fn file(entry: FileEntry) -> Row {
        Row {
            kind: ItemKind::File,
            id: entry.meta.id,
            state: entry.state,
            path: entry.path,
            sha256: entry.sha256,
            size: Some(entry.meta.size_bytes),
            encrypted: entry.encrypted,
        }
    }

    fn batch(entry: BatchEntry) -> Row {
        Row {
            kind: ItemKind::Batch,
            id: entry.meta.id,
            state: entry.state,
            path: entry.path,
            sha256: entry.sha256,
            size: None,
            encrypted: entry.encrypted,
        }
    }
}
