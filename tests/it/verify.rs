//! `claudedl verify` on a data directory synced from the mock API, then damaged by hand.

use std::path::Path;
use std::process::Output;

use claudedl::store::index::{FileOutcome, Index, SqliteIndex};
use claudedl::store::layout::DataDir;
use claudedl_mock::api::{FileSet, MockApi, MockApiConfig, Route};
use serde_json::Value;

use crate::api::{batch, claudedl, run, small_account, text};
use crate::support::{MIB, data, sha256, sha256_file};

const FILE_A: &str = "raw/2026-06/file_a_report.csv";
const FILE_B: &str = "raw/2026-07/file_b_report.csv";
const RESULTS: &str = "raw/2026-08/batches/msgbatch_1.jsonl";

/// The mock account of the `api` tests, with one batch, synced into a fresh directory.
async fn synced() -> (MockApi, tempfile::TempDir) {
    let api = MockApi::start(
        MockApiConfig::new(FileSet::Explicit(small_account()))
            .with_batches(vec![batch("msgbatch_1", 40)]),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let out = run(&api, &["sync", "--data-dir", path(dir.path())]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    (api, dir)
}

fn path(dir: &Path) -> &str {
    dir.to_str().unwrap()
}

/// `verify --data-dir DIR --json EXTRA…`: the exit code, the findings and the summary.
async fn verify_json(api: &MockApi, dir: &Path, extra: &[&str]) -> (i32, Vec<Value>, Value) {
    let mut args = vec!["verify", "--data-dir", path(dir), "--json"];
    args.extend_from_slice(extra);
    let out = run(api, &args).await;
    let mut lines: Vec<Value> = text(&out.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).expect("each line is JSON"))
        .collect();
    let summary = lines.pop().expect("a summary line");
    assert_eq!(summary["kind"], "summary", "{}", text(&out.stderr));
    (out.status.code().unwrap(), lines, summary)
}

fn flip_byte(file: &Path, at: usize) {
    let mut bytes = std::fs::read(file).unwrap();
    bytes[at] ^= 0xff;
    std::fs::write(file, bytes).unwrap();
}

fn of_kind<'a>(findings: &'a [Value], kind: &str) -> Vec<&'a Value> {
    findings.iter().filter(|f| f["kind"] == kind).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_clean_sync_verifies_in_the_data_dir_given() {
    let (api, dir) = synced().await;
    let (code, findings, summary) = verify_json(&api, dir.path(), &[]).await;
    assert_eq!(code, 0, "{findings:?}");
    assert_eq!(findings, Vec::<Value>::new());
    assert_eq!(
        (&summary["files_checked"], &summary["batches_checked"]),
        (&3.into(), &1.into())
    );
    let results = std::fs::metadata(dir.path().join(RESULTS)).unwrap().len();
    assert_eq!(summary["bytes"], 10_000 + 3 * MIB as u64 + 500 + results);

    let text_out = run(&api, &["verify", "--data-dir", path(dir.path())]).await;
    assert_eq!(text_out.status.code(), Some(0));
    assert!(text(&text_out.stdout).contains("everything matches the index"));

    let elsewhere = tempfile::tempdir().unwrap();
    let no_index = claudedl(&api)
        .arg("verify")
        .current_dir(elsewhere.path())
        .output()
        .await
        .unwrap();
    assert_eq!(no_index.status.code(), Some(1));
    let stderr = text(&no_index.stderr);
    assert!(
        stderr.contains("no index at data/meta/index.sqlite") && stderr.contains("--data-dir"),
        "{stderr}"
    );
    assert!(!elsewhere.path().join("data").exists(), "nothing created");
}

#[tokio::test(flavor = "multi_thread")]
async fn changed_missing_and_orphaned_files_are_reported_by_id_and_path() {
    let (api, dir) = synced().await;
    flip_byte(&dir.path().join(FILE_A), 5_000);
    std::fs::remove_file(dir.path().join(FILE_B)).unwrap();
    std::fs::write(dir.path().join("raw/2026-06/extra.bin"), b"extra").unwrap();

    let (code, findings, summary) = verify_json(&api, dir.path(), &[]).await;
    assert_eq!(code, 1);
    assert_eq!(findings.len(), 3, "{findings:?}");
    let changed = of_kind(&findings, "changed")[0];
    assert_eq!(
        (&changed["id"], &changed["path"]),
        (&"file_a".into(), &FILE_A.into())
    );
    assert_eq!(changed["expected_sha256"], sha256(&data(10_000, 1)));
    assert_eq!(changed["sha256"], sha256_file(&dir.path().join(FILE_A)));
    let missing = of_kind(&findings, "missing")[0];
    assert_eq!(
        (&missing["id"], &missing["path"]),
        (&"file_b".into(), &FILE_B.into())
    );
    let orphaned = of_kind(&findings, "orphaned")[0];
    assert_eq!(orphaned["path"], "raw/2026-06/extra.bin");
    assert_eq!(orphaned["size"], 5);
    assert_eq!(
        (
            &summary["problems"],
            &summary["changed"],
            &summary["missing"],
            &summary["orphaned"]
        ),
        (&3.into(), &1.into(), &1.into(), &1.into())
    );

    let out = run(&api, &["verify", "--data-dir", path(dir.path())]).await;
    assert_eq!(out.status.code(), Some(1));
    let stdout = text(&out.stdout);
    let line = |kind: &str| stdout.lines().find(|l| l.starts_with(kind)).unwrap_or("");
    assert!(
        line("changed").contains("file_a") && line("changed").contains(FILE_A),
        "{stdout}"
    );
    assert!(
        line("missing").contains("file_b") && line("missing").contains(FILE_B),
        "{stdout}"
    );
    assert!(
        line("orphaned").contains("raw/2026-06/extra.bin"),
        "{stdout}"
    );
    assert!(
        stdout.contains("1 changed, 1 missing, 1 orphaned"),
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn repair_downloads_the_changed_and_missing_files_again() {
    let (api, dir) = synced().await;
    let results_before = sha256_file(&dir.path().join(RESULTS));
    flip_byte(&dir.path().join(FILE_A), 0);
    std::fs::remove_file(dir.path().join(FILE_B)).unwrap();
    flip_byte(&dir.path().join(RESULTS), 10);
    let seen = api.requests().len();

    let (code, repairs, summary) = verify_json(&api, dir.path(), &["--repair"]).await;
    assert_eq!(code, 0, "{repairs:?}");
    let mut repaired: Vec<&str> = of_kind(&repairs, "repaired")
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    repaired.sort();
    assert_eq!(repaired, ["file_a", "file_b", "msgbatch_1"]);
    assert_eq!(
        (&summary["repaired"], &summary["repair_failed"]),
        (&3.into(), &0.into())
    );
    let mut fetched: Vec<String> = api.requests()[seen..]
        .iter()
        .filter(|r| matches!(r.route, Route::FileContent | Route::BatchResults))
        .map(|r| r.path.clone())
        .collect();
    fetched.sort();
    fetched.dedup();
    assert_eq!(fetched.len(), 3, "only the bad ones: {fetched:?}");
    for id in ["file_a", "file_b", "msgbatch_1"] {
        assert!(fetched.iter().any(|p| p.contains(id)), "{fetched:?}");
    }
    assert_eq!(
        sha256_file(&dir.path().join(FILE_A)),
        sha256(&data(10_000, 1))
    );
    assert_eq!(
        sha256_file(&dir.path().join(FILE_B)),
        sha256(&data(3 * MIB, 2))
    );
    assert_eq!(sha256_file(&dir.path().join(RESULTS)), results_before);

    let (code, findings, _) = verify_json(&api, dir.path(), &[]).await;
    assert_eq!((code, findings), (0, vec![]));
}

#[tokio::test(flavor = "multi_thread")]
async fn unfinished_downloads_are_not_problems_and_strays_are_never_deleted() {
    let (api, dir) = synced().await;
    let layout = DataDir::new(dir.path());
    let output = layout.file_path("2026-08-05T10:00:00Z", "file_c", "../../etc/passwd");
    let part = format!("{}.part", layout.tmp_path_for(&output).display());
    std::fs::write(&part, [0; 500]).unwrap();
    let mut index = SqliteIndex::open(&layout.index_path()).unwrap();
    index
        .record_file("file_c", &FileOutcome::Downloading)
        .unwrap();
    drop(index);
    let stray = dir.path().join("tmp/stray.bin");
    std::fs::write(&stray, b"?").unwrap();

    let (code, findings, _) = verify_json(&api, dir.path(), &[]).await;
    assert_eq!(code, 1, "the stray is a problem");
    let in_progress = of_kind(&findings, "in_progress");
    assert_eq!(in_progress.len(), 1, "{findings:?}");
    assert_eq!(
        (&in_progress[0]["id"], &in_progress[0]["state"]),
        (&"file_c".into(), &"downloading".into())
    );
    let relative_part = Path::new(&part).strip_prefix(dir.path()).unwrap();
    assert_eq!(in_progress[0]["path"], relative_part.to_str().unwrap());
    assert_eq!(of_kind(&findings, "orphaned")[0]["path"], "tmp/stray.bin");

    let requests = api.requests().len();
    let (code, _, summary) = verify_json(&api, dir.path(), &["--repair"]).await;
    assert_eq!((code, &summary["repaired"]), (1, &0.into()));
    assert_eq!(api.requests().len(), requests, "nothing to download");
    assert!(stray.exists(), "--repair does not delete orphans");

    std::fs::remove_file(&stray).unwrap();
    let (code, _, summary) = verify_json(&api, dir.path(), &[]).await;
    assert_eq!((code, &summary["in_progress"]), (0, &1.into()));

    let _held = layout.lock().unwrap();
    let locked: Output = run(&api, &["verify", "--data-dir", path(dir.path())]).await;
    assert_eq!(locked.status.code(), Some(1));
    assert!(
        text(&locked.stderr).contains("another claudedl sync"),
        "{}",
        text(&locked.stderr)
    );
}
