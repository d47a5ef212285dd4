//! `claudedl verify`: lock the data directory, check it against the index with a progress bar,
//! print the findings (text or JSON lines), and with `--repair` fetch the bad entries again
//! through the sync download path. The logic is in [`claudedl::verify`].
//!
//! Encrypted entries are decrypted and hashed with `-i IDENTITY`; without it they are only
//! checked for presence and size, and counted as unchecked. `--repair` stores each entry as it
//! was: an encrypted entry encrypted again (to `--encrypt-to`/`--recipients-file`, else the
//! config file's `[crypt]` recipients; with none, it refuses before downloading anything), a
//! plain entry plain.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;
use bytesize::ByteSize;
use claudedl::api::ApiClient;
use claudedl::crypt::Encryption;
use claudedl::engine::Engine;
use claudedl::store::index::Index;
use claudedl::store::layout::DataDir;
use claudedl::sync::{Sync, SyncOptions, SyncSummary};
use claudedl::verify::{
    DataFiles, Finding, Identities, Item, ItemKind, Progress, Repair, VerifyReport,
    mark_for_repair, repair_outcomes, verify,
};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::args::VerifyArgs;
use super::common::{self, ExitStatus, GlobalArgs, connect, open_any_index};
use super::progress::Bars;

pub async fn run(args: VerifyArgs, global: &GlobalArgs) -> anyhow::Result<ExitStatus> {
    let data = global.data_dir();
    // Without --repair nothing is written: the index is opened read-only, and the lock is
    // skipped where the directory cannot be written (a read-only mount).
    let (mut index, _lock) = if args.repair {
        (open_any_index(global, &data, true)?, Some(data.lock()?))
    } else {
        (open_any_index(global, &data, false)?, data.lock_to_read()?)
    };
    let identities = match args.identities.as_slice() {
        [] => None,
        files => Some(Identities::load(files)?),
    };
    // Before hashing, so a missing key fails at once rather than after a long check.
    let fixer = args
        .repair
        .then(|| Fixer::new(&args, global, &data))
        .transpose()?;
    let visible = global.bars_visible(false);
    let jobs = args.jobs.map_or_else(claudedl::cores, usize::from);
    let report = tokio::task::block_in_place(|| {
        let bar = HashBar::new(visible);
        let files = DataFiles::new(data.root(), identities.as_ref());
        verify(&data, &*index, &files, jobs, &bar)
    })?;
    let output = Output { json: args.json };
    output.findings(&report.findings);
    let mut repairs = Vec::new();
    let mut interrupted = false;
    if let Some(fix) = &fixer {
        (repairs, interrupted) = fix.repair(&mut *index, &report, visible).await?;
        output.repairs(&repairs);
        common::report_traffic(fix.api.http(), global);
    }
    output.summary(&report, &repairs);
    Ok(exit_status(&report, &repairs, args.repair, interrupted))
}

/// Exit 0 when nothing is wrong, or when `--repair` repaired everything wrong and nothing
/// else (orphans) is.
fn exit_status(
    report: &VerifyReport,
    repairs: &[Repair],
    repair: bool,
    interrupted: bool,
) -> ExitStatus {
    if interrupted {
        return ExitStatus::Interrupted;
    }
    let left = report
        .problems()
        .filter(|f| !repair || f.repairable().is_none())
        .count();
    let unrepaired = repairs.iter().filter(|r| !r.is_repaired()).count();
    if left + unrepaired == 0 {
        ExitStatus::Success
    } else {
        ExitStatus::Failure
    }
}

/// What `--repair` works with.
struct Fixer<'a> {
    api: ApiClient,
    engine: Engine,
    data: &'a DataDir,
    /// What encrypted entries are encrypted to again.
    encrypt: Option<Arc<Encryption>>,
}

impl<'a> Fixer<'a> {
    fn new(args: &VerifyArgs, global: &GlobalArgs, data: &'a DataDir) -> anyhow::Result<Self> {
        let (api, engine) = connect(&args.api, global)?;
        Ok(Fixer {
            api,
            engine,
            data,
            encrypt: args.encrypt.encryption(&global.settings)?,
        })
    }

    /// Mark the repairable entries, fetch them through sync's download path (the encrypted
    /// ones encrypted, then the plain ones plain), and read back how each ended. Also reports
    /// whether Ctrl-C interrupted the downloads.
    async fn repair(
        &self,
        index: &mut dyn Index,
        report: &VerifyReport,
        visible: bool,
    ) -> anyhow::Result<(Vec<Repair>, bool)> {
        self.check_recipients(report)?;
        let marked = mark_for_repair(index, &report.findings)?;
        for encrypted in [true, false] {
            let items: Vec<&Item> = marked.iter().filter(|i| i.encrypted == encrypted).collect();
            if items.is_empty() {
                continue;
            }
            let wanted = |kind| items.iter().any(|item| item.kind == kind);
            let options = SyncOptions {
                files: wanted(ItemKind::File),
                batches: wanted(ItemKind::Batch),
                encrypt: self.encrypt.clone().filter(|_| encrypted),
                only: Some(
                    items
                        .iter()
                        .map(|item| item.id.clone())
                        .collect::<HashSet<_>>(),
                ),
                ..SyncOptions::default()
            };
            if self.fetch(index, &options, visible).await?.interrupted {
                return Ok((repair_outcomes(index, &marked)?, true));
            }
        }
        Ok((repair_outcomes(index, &marked)?, false))
    }

    /// Refuse, before anything is marked or downloaded, to repair an encrypted entry with no
    /// recipient to encrypt it to: that would store its plaintext.
    fn check_recipients(&self, report: &VerifyReport) -> anyhow::Result<()> {
        let mut sealed = report
            .findings
            .iter()
            .filter_map(Finding::repairable)
            .filter(|item| item.encrypted);
        let Some(first) = sealed.next() else {
            return Ok(());
        };
        if self.encrypt.is_none() {
            let count = sealed.count() + 1;
            let entries = if count == 1 {
                "entry needs"
            } else {
                "entries need"
            };
            bail!(
                "{count} encrypted {entries} repair ({}), but no recipient is known to encrypt \
                 again to: pass --encrypt-to or --recipients-file, or set [crypt] recipients in \
                 the config file. Nothing was downloaded.",
                first.path
            );
        }
        Ok(())
    }

    async fn fetch(
        &self,
        index: &mut dyn Index,
        options: &SyncOptions,
        visible: bool,
    ) -> anyhow::Result<SyncSummary> {
        let watcher = common::cancel_on_ctrl_c(self.engine.cancel_token());
        let mut sync = Sync {
            api: &self.api,
            engine: &self.engine,
            data: self.data,
            index,
            reporter: Arc::new(Bars::new(Vec::new(), visible)),
        };
        let summary = sync.fetch_wanted(options).await;
        watcher.abort();
        Ok(summary?)
    }
}

/// A byte bar over the hashing on stderr; hidden when not wanted.
struct HashBar(ProgressBar);

impl HashBar {
    fn new(visible: bool) -> HashBar {
        let target = if visible {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        let bar = ProgressBar::with_draw_target(Some(0), target);
        let template = "verifying [{bar:30}] {bytes:>10}/{total_bytes:<10} {bytes_per_sec:>12} \
                        ETA {eta:>4}";
        let style = ProgressStyle::with_template(template).expect("the template is valid");
        bar.set_style(style.progress_chars("=> "));
        bar.enable_steady_tick(Duration::from_millis(200));
        HashBar(bar)
    }
}

impl Progress for HashBar {
    fn start(&self, bytes: u64) {
        self.0.set_length(bytes);
    }

    fn hashed(&self, bytes: u64) {
        self.0.inc(bytes);
    }
}

impl Drop for HashBar {
    fn drop(&mut self) {
        self.0.finish_and_clear();
    }
}

/// Prints findings, repairs and the summary as text or JSON lines.
struct Output {
    json: bool,
}

impl Output {
    fn findings(&self, findings: &[Finding]) {
        for finding in findings {
            if self.json {
                println!("{}", to_json(finding));
            } else {
                println!("{}", describe(finding));
            }
        }
    }

    fn repairs(&self, repairs: &[Repair]) {
        for repair in repairs {
            if self.json {
                println!("{}", to_json(repair));
                continue;
            }
            let (label, item, reason) = match repair {
                Repair::Repaired { item, .. } => ("repaired", item, String::new()),
                Repair::RepairFailed { item, reason, .. } => {
                    ("repair failed", item, format!(": {reason}"))
                }
            };
            let (kind, id, path) = (kind(item.kind), &item.id, &item.path);
            println!("{label:<14}{kind}  {id}  {path}{reason}");
        }
    }

    fn summary(&self, report: &VerifyReport, repairs: &[Repair]) {
        let counts = counts(report, repairs);
        if self.json {
            let mut summary = serde_json::json!({
                "kind": "summary",
                "files_checked": report.files_checked,
                "batches_checked": report.batches_checked,
                "bytes": report.bytes,
                "problems": report.problems().count(),
                "duration_ms": report.duration.as_millis() as u64,
            });
            for (kind, count) in counts {
                summary[kind] = count.into();
            }
            println!("{summary}");
        } else {
            println!("{}", summary_line(report, &counts));
            if report.unchecked > 0 {
                println!(
                    "{} encrypted files not hashed: pass -i IDENTITY to decrypt and hash them",
                    report.unchecked
                );
            }
            if counts["orphaned"] > 0 {
                println!("orphaned files are only reported: delete them by hand if unwanted");
            }
        }
    }
}

fn to_json(value: &impl serde::Serialize) -> String {
    serde_json::to_string(value).expect("findings serialize")
}

/// How many of each kind of finding and repair outcome (zeros included).
fn counts(report: &VerifyReport, repairs: &[Repair]) -> BTreeMap<&'static str, u64> {
    let kinds = [
        "missing",
        "changed",
        "unreadable",
        "unhashed",
        "orphaned",
        "in_progress",
        "unchecked",
        "repaired",
        "repair_failed",
    ];
    let mut counts: BTreeMap<&'static str, u64> = kinds.into_iter().map(|k| (k, 0)).collect();
    counts.insert("unchecked", report.unchecked);
    for finding in &report.findings {
        *counts.entry(finding.kind()).or_default() += 1;
    }
    for repair in repairs {
        let kind = if repair.is_repaired() {
            "repaired"
        } else {
            "repair_failed"
        };
        *counts.entry(kind).or_default() += 1;
    }
    counts
}

fn summary_line(report: &VerifyReport, counts: &BTreeMap<&'static str, u64>) -> String {
    let found: Vec<String> = counts
        .iter()
        .filter(|(_, count)| **count > 0)
        .map(|(kind, count)| format!("{count} {}", kind.replace('_', " ")))
        .collect();
    let verdict = if found.is_empty() {
        "everything matches the index".to_owned()
    } else {
        found.join(", ")
    };
    format!(
        "checked {} files and {} batch results ({}) in {:.1?}: {verdict}",
        report.files_checked,
        report.batches_checked,
        ByteSize(report.bytes).display().iec(),
        report.duration
    )
}

fn kind(kind: ItemKind) -> &'static str {
    match kind {
        ItemKind::File => "file ",
        ItemKind::Batch => "batch",
    }
}

/// One line per finding: what, which entry, where, and the detail.
fn describe(finding: &Finding) -> String {
    let label = format!("{:<14}", finding.kind().replace('_', " "));
    let entry = |item: &Item| format!("{label}{}  {}  {}", kind(item.kind), item.id, item.path);
    match finding {
        Finding::Missing { item } => entry(item),
        Finding::Changed { item, sha256, size } => {
            let expected = item.sha256.as_deref().map_or("-", short);
            let expected_size = item.size.map(|s| format!(", {s} bytes"));
            format!(
                "{}  (sha256 {}, {size} bytes; the index has {expected}{})",
                entry(item),
                short(sha256),
                expected_size.unwrap_or_default()
            )
        }
        Finding::Unreadable { item, error } => format!("{}: {error}", entry(item)),
        Finding::Unhashed { item } => format!("{}: the index records no hash", entry(item)),
        Finding::Orphaned { path, size } => {
            let size = ByteSize(*size).display().iec();
            format!("{label}{path} ({size}): no index entry owns it")
        }
        Finding::Link {
            path,
            target,
            leaves_data_dir,
        } => {
            let outside = if *leaves_data_dir {
                ", outside the data directory"
            } else {
                ""
            };
            format!("{label}{path} -> {target}{outside}: a symbolic link (claudedl makes none)")
        }
        Finding::InProgress {
            item,
            id,
            state,
            path,
            bytes,
        } => {
            let written = ByteSize(*bytes).display().iec();
            let place = path.as_deref().map(|p| format!(" in {p}"));
            format!(
                "{label}{}  {id}: {state}, {written} written{} (the next sync resumes it)",
                kind(*item),
                place.unwrap_or_default()
            )
        }
    }
}

/// The first 12 hex digits of a hash.
fn short(hash: &str) -> &str {
    hash.get(..12).unwrap_or(hash)
}
