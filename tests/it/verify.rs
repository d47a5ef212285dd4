//! `claudedl verify` on a data directory synced from the mock API (plain or encrypted), then
//! damaged by hand.

use std::path::Path;
use std::process::Output;

use claudedl::store::index::{FileOutcome, Index, SqliteIndex};
use claudedl::store::layout::DataDir;
use claudedl_mock::api::{FileSet, MockApi, MockApiConfig, Route};
use serde_json::Value;

use crate::api::{batch, claudedl, run, small_account};
use crate::crypt::{Keys, assert_no_plaintext};
use crate::support::{MIB, data, sha256, sha256_file, text};

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

/// The files of the `api` tests' account, synced encrypted to `keys` into `dir/data`.
async fn synced_encrypted(keys: &Keys, dir: &Path) -> MockApi {
    let api = MockApi::start(
        MockApiConfig::new(FileSet::Explicit(small_account()))
            .with_batches(vec![batch("msgbatch_1", 40)]),
    )
    .await;
    let out = keys
        .against(&api, dir)
        .args(["sync", "--data-dir", path(&dir.join("data"))])
        .args(["--encrypt-to", &keys.recipient])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    api
}

/// `verify --data-dir DIR/data --json EXTRA…` as `keys`' user: the output, the findings and
/// the summary.
async fn verify_sealed(
    keys: &Keys,
    api: &MockApi,
    dir: &Path,
    extra: &[&str],
) -> (Output, Vec<Value>, Value) {
    let out = keys
        .against(api, dir)
        .args(["verify", "--data-dir", path(&dir.join("data")), "--json"])
        .args(extra)
        .output()
        .await
        .unwrap();
    let mut lines: Vec<Value> = text(&out.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).expect("each line is JSON"))
        .collect();
    let summary = lines.pop().unwrap_or_default();
    (out, lines, summary)
}

fn content_requests(api: &MockApi) -> usize {
    let routes = api.requests();
    let content = routes
        .iter()
        .filter(|r| matches!(r.route, Route::FileContent | Route::BatchResults));
    content.count()
}

#[tokio::test(flavor = "multi_thread")]
async fn encrypted_files_are_hashed_with_an_identity_and_size_checked_without() {
    let keys = Keys::new();
    let dir = tempfile::tempdir().unwrap();
    let api = synced_encrypted(&keys, dir.path()).await;
    let plain_bytes = 10_000 + 3 * MIB as u64 + 500;

    let (out, findings, summary) = verify_sealed(&keys, &api, dir.path(), &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(findings, Vec::<Value>::new());
    assert_eq!(
        (&summary["unchecked"], &summary["bytes"]),
        (&4.into(), &0.into())
    );
    let shown = keys
        .against(&api, dir.path())
        .args(["verify", "--data-dir", path(&dir.path().join("data"))])
        .output()
        .await
        .unwrap();
    assert_eq!(shown.status.code(), Some(0));
    assert!(
        text(&shown.stdout).contains("4 encrypted files not hashed: pass -i IDENTITY"),
        "{}",
        text(&shown.stdout)
    );

    let identity = keys.identity();
    let with_key = ["-i", identity.to_str().unwrap()];
    let (out, findings, summary) = verify_sealed(&keys, &api, dir.path(), &with_key).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{findings:?} {}",
        text(&out.stderr)
    );
    assert_eq!(summary["unchecked"], 0);
    let results = summary["bytes"].as_u64().unwrap() - plain_bytes;
    assert!(
        results > 40 * 10,
        "the plaintext of the results too: {summary}"
    );

    let stranger = Keys::new();
    let stranger_key = stranger.identity();
    let wrong = ["-i", stranger_key.to_str().unwrap()];
    let (out, findings, _) = verify_sealed(&keys, &api, dir.path(), &wrong).await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        findings,
        Vec::<Value>::new(),
        "one error, not a line per file"
    );
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("none of the identities")
            && stderr.contains(stranger_key.to_str().unwrap())
            && stderr.contains(".age"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_damaged_encrypted_file_is_unreadable_and_repair_encrypts_it_again() {
    let keys = Keys::new();
    let dir = tempfile::tempdir().unwrap();
    let api = synced_encrypted(&keys, dir.path()).await;
    let data_dir = dir.path().join("data");
    let (file_a, file_b) = (format!("{FILE_A}.age"), format!("{FILE_B}.age"));
    let size_a = std::fs::metadata(data_dir.join(&file_a)).unwrap().len();
    flip_byte(&data_dir.join(&file_a), size_a as usize - 100);
    std::fs::remove_file(data_dir.join(&file_b)).unwrap();
    let identity = keys.identity();
    let with_key = ["-i", identity.to_str().unwrap()];

    let (out, findings, _) = verify_sealed(&keys, &api, dir.path(), &with_key).await;
    assert_eq!(out.status.code(), Some(1));
    let kinds: Vec<_> = findings.iter().map(|f| (&f["kind"], &f["path"])).collect();
    assert_eq!(
        kinds,
        [
            (&"missing".into(), &file_b.clone().into()),
            (&"unreadable".into(), &file_a.clone().into())
        ]
    );
    assert_eq!(findings[1]["encrypted"], true);
    assert!(
        findings[1]["error"]
            .as_str()
            .unwrap()
            .contains("fails authentication"),
        "{findings:?}"
    );
    let (out, findings, summary) = verify_sealed(&keys, &api, dir.path(), &[]).await;
    assert_eq!(
        out.status.code(),
        Some(1),
        "without -i, the missing file still counts"
    );
    assert_eq!(
        findings.len(),
        1,
        "a flipped byte keeps the size: {findings:?}"
    );
    assert_eq!(summary["unchecked"], 3);

    let before = content_requests(&api);
    let (out, _, _) =
        verify_sealed(&keys, &api, dir.path(), &["--repair", "-i", with_key[1]]).await;
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("2 encrypted entries need repair") && stderr.contains("--encrypt-to"),
        "{stderr}"
    );
    assert_eq!(content_requests(&api), before, "nothing downloaded");
    assert!(!data_dir.join(FILE_B).exists() && !data_dir.join(&file_b).exists());

    let repair = [
        "--repair",
        "-i",
        with_key[1],
        "--encrypt-to",
        &keys.recipient,
    ];
    let (out, repairs, summary) = verify_sealed(&keys, &api, dir.path(), &repair).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{repairs:?} {}",
        text(&out.stderr)
    );
    assert_eq!(summary["repaired"], 2, "{summary}");
    assert_eq!(keys.age_decrypt(&data_dir.join(&file_a)), data(10_000, 1));
    assert_eq!(keys.age_decrypt(&data_dir.join(&file_b)), data(3 * MIB, 2));
    assert!(!data_dir.join(FILE_A).exists() && !data_dir.join(FILE_B).exists());
    for plain in [data(10_000, 1), data(3 * MIB, 2)] {
        assert_no_plaintext(&[&data_dir], &plain);
    }
    let (out, findings, _) = verify_sealed(&keys, &api, dir.path(), &with_key).await;
    assert_eq!((out.status.code(), findings), (Some(0), vec![]));
}
