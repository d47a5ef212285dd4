//! The Claude API commands and `sync` against the bundled mock API over loopback.

use std::path::Path;
use std::process::{Output, Stdio};

use claudedl_mock::api::{
    ApiFault, FileSet, MockApi, MockApiConfig, MockBatch, MockFile, MockResult, Route,
};
use tokio::process::Command;

use crate::support::{MIB, data, files_under, mock_file, sha256, text};

pub(crate) fn claudedl(api: &MockApi) -> Command {
    let mut command = crate::support::claudedl_binary();
    command
        .env("ANTHROPIC_BASE_URL", api.base_url())
        .env("ANTHROPIC_API_KEY", api.api_key())
        // Pacing is not what these tests are about (see tests/it/governor.rs).
        .env("CLAUDEDL_RPM", "60000")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

pub(crate) async fn run(api: &MockApi, args: &[&str]) -> Output {
    claudedl(api).args(args).output().await.unwrap()
}

/// Run, require exit 0 (showing stderr otherwise) and parse stdout as one JSON document.
async fn run_json(api: &MockApi, args: &[&str]) -> serde_json::Value {
    let out = run(api, args).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("stdout is one JSON document")
}

pub(crate) fn small_account() -> Vec<MockFile> {
    vec![
        mock_file("file_a", "report.csv", "2026-06", data(10_000, 1)),
        mock_file("file_b", "report.csv", "2026-07", data(3 * MIB, 2)),
        mock_file("file_c", "../../etc/passwd", "2026-08", data(500, 3)),
        MockFile {
            downloadable: false,
            ..mock_file("file_d", "upload.pdf", "2026-08", data(100, 4))
        },
        MockFile {
            expired: true,
            ..mock_file("file_e", "old.bin", "2026-08", data(100, 5))
        },
    ]
}

pub(crate) fn batch(id: &str, results: usize) -> MockBatch {
    let kinds = ["succeeded", "errored", "canceled", "expired"];
    MockBatch {
        id: id.into(),
        created_at: "2026-08-10T00:00:00Z".into(),
        ended: true,
        results: (0..results)
            .map(|i| MockResult {
                custom_id: format!("req-{i:05}"),
                result_type: kinds[i % 4].into(),
            })
            .collect(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sync_mirrors_the_account_into_the_layout_and_a_rerun_fetches_nothing() {
    let api = MockApi::start(
        MockApiConfig::new(FileSet::Explicit(small_account()))
            .with_batches(vec![batch("msgbatch_1", 40)]),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let d = data_dir.to_str().unwrap();

    let summary = run_json(&api, &["sync", "--data-dir", d, "--json"]).await;
    assert_eq!(summary["downloaded"], 3);
    assert_eq!(summary["batches_downloaded"], 1);
    assert_eq!(summary["results_indexed"], 40);
    assert_eq!(summary["skipped"].as_array().unwrap().len(), 2, "{summary}");
    let big = std::fs::read(data_dir.join("raw/2026-07/file_b_report.csv")).unwrap();
    assert_eq!(sha256(&big), sha256(&data(3 * MIB, 2)));
    assert!(
        data_dir.join("raw/2026-06/file_a_report.csv").exists(),
        "same filename, no collision"
    );
    assert!(
        data_dir
            .join("raw/2026-08/batches/msgbatch_1.jsonl")
            .exists()
    );
    assert!(
        data_dir.join("meta/2026-07.json").exists() && data_dir.join("meta/index.sqlite").exists()
    );
    for path in files_under(dir.path()) {
        assert!(
            path.starts_with(&data_dir),
            "{} escaped the data directory",
            path.display()
        );
    }
    let tmp_left = files_under(&data_dir.join("tmp"));
    assert!(tmp_left.is_empty(), "{tmp_left:?}");
    let month: serde_json::Value =
        serde_json::from_slice(&std::fs::read(data_dir.join("meta/2026-07.json")).unwrap())
            .unwrap();
    assert!(month.to_string().contains(&sha256(&big)));
    let content_paths: Vec<String> = api
        .requests()
        .into_iter()
        .filter(|r| r.route == Route::FileContent)
        .map(|r| r.path)
        .collect();
    assert!(
        !content_paths.iter().any(|p| p.contains("file_d")),
        "no request for an upload: {content_paths:?}"
    );
    assert_eq!(
        content_paths
            .iter()
            .filter(|p| p.contains("file_e"))
            .count(),
        1,
        "expired: one 404, recorded"
    );

    let content_before = api.count(Route::FileContent);
    let results_before = api.count(Route::BatchResults);
    let second = run(&api, &["sync", "--data-dir", d, "--json"]).await;
    assert_eq!(second.status.code(), Some(0), "{}", text(&second.stderr));
    assert_eq!(
        api.count(Route::FileContent),
        content_before,
        "a rerun fetches no content"
    );
    assert_eq!(api.count(Route::BatchResults), results_before);
}

#[tokio::test(flavor = "multi_thread")]
async fn incremental_sync_stops_at_the_first_known_page_and_fetches_only_the_new_file() {
    let files: Vec<MockFile> = (0..30)
        .map(|i| mock_file(&format!("file_{i:03}"), "x.bin", "2026-08", data(100, i)))
        .collect();
    let api = MockApi::start(MockApiConfig::new(FileSet::Explicit(files))).await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let first = run(
        &api,
        &["sync", "--data-dir", d, "--files-only", "--page-size", "10"],
    )
    .await;
    assert_eq!(first.status.code(), Some(0), "{}", text(&first.stderr));
    assert_eq!(api.count(Route::ListFiles), 3);

    api.add_file(mock_file("file_new", "new.bin", "2026-09", data(100, 99)));
    let summary = run_json(
        &api,
        &[
            "sync",
            "--data-dir",
            d,
            "--files-only",
            "--page-size",
            "10",
            "--json",
        ],
    )
    .await;
    assert_eq!(summary["downloaded"], 1);
    assert_eq!(
        summary["list_requests"], 2,
        "page 1 had the new file; page 2 was all known"
    );
    assert_eq!(api.count(Route::FileContent), 31);
}

#[tokio::test(flavor = "multi_thread")]
async fn both_pagination_shapes_list_every_file_newest_first() {
    let api = MockApi::start(MockApiConfig::new(FileSet::Generated {
        count: 2_500,
        seed: 7,
        content_len: 16,
    }))
    .await;
    for extra in [&[][..], &["--beta-pagination"][..]] {
        let mut args = vec!["files", "ls", "--json"];
        args.extend_from_slice(extra);
        let out = run(&api, &args).await;
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        let lines: Vec<serde_json::Value> = text(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2_500, "{extra:?}");
        let created: Vec<&str> = lines
            .iter()
            .map(|l| l["created_at"].as_str().unwrap())
            .collect();
        assert!(created.windows(2).all(|w| w[0] >= w[1]), "newest first");
    }
    let beta = api
        .requests()
        .into_iter()
        .filter(|r| r.header("anthropic-beta").is_some())
        .count();
    assert_eq!(
        beta, 3,
        "the beta flag is sent only in beta mode, once per page"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn errors_carry_the_type_the_request_id_and_a_hint() {
    let api = MockApi::start(MockApiConfig::new(FileSet::Explicit(small_account()))).await;
    let wrong_key = claudedl(&api)
        .env("ANTHROPIC_API_KEY", "sk-wrong-key")
        .args(["files", "ls"])
        .output()
        .await
        .unwrap();
    assert_eq!(wrong_key.status.code(), Some(3), "authentication");
    let stderr = text(&wrong_key.stderr);
    assert!(
        stderr.contains("authentication_error")
            && stderr.contains("req_")
            && stderr.contains("ANTHROPIC_API_KEY"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("sk-wrong-key"),
        "the key never appears: {stderr}"
    );

    let missing = run(&api, &["files", "get", "file_nope"]).await;
    assert_eq!(missing.status.code(), Some(4), "not found");
    let stderr = text(&missing.stderr);
    assert!(
        stderr.contains("not_found_error") && stderr.contains("expired"),
        "{stderr}"
    );

    let upload = run(&api, &["files", "get", "file_d"]).await;
    assert_eq!(upload.status.code(), Some(1));
    assert!(text(&upload.stderr).contains("not downloadable"));

    let no_key = crate::support::claudedl_binary()
        .args(["files", "ls"])
        .env_remove("ANTHROPIC_API_KEY")
        .output()
        .await
        .unwrap();
    assert_eq!(
        no_key.status.code(),
        Some(3),
        "no credential: authentication"
    );
    assert!(text(&no_key.stderr).contains("claudedl demo"));
}

#[tokio::test(flavor = "multi_thread")]
async fn files_get_downloads_by_id_with_a_safe_name() {
    let api = MockApi::start(MockApiConfig::new(FileSet::Explicit(small_account()))).await;
    let dir = tempfile::tempdir().unwrap();
    let out = run(
        &api,
        &[
            "files",
            "get",
            "file_c",
            "file_b",
            "-d",
            dir.path().to_str().unwrap(),
            "--json",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        std::fs::read(dir.path().join(format!(
            "file_c_{}",
            claudedl::store::names::safe_file_name("../../etc/passwd", "x")
        )))
        .unwrap(),
        data(500, 3)
    );
    assert_eq!(
        std::fs::read(dir.path().join("file_b_report.csv")).unwrap(),
        data(3 * MIB, 2)
    );
    let key_sent = api
        .requests()
        .iter()
        .filter(|r| r.route == Route::FileContent)
        .all(|r| r.header("x-api-key") == Some(api.api_key().as_str()));
    assert!(key_sent);
}

#[tokio::test(flavor = "multi_thread")]
async fn batch_results_are_indexed_and_one_is_shown_without_a_scan() {
    let api = MockApi::start(
        MockApiConfig::new(FileSet::Explicit(vec![])).with_batches(vec![batch("msgbatch_9", 1000)]),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let synced = run(&api, &["sync", "--data-dir", d, "--batches-only"]).await;
    assert_eq!(synced.status.code(), Some(0), "{}", text(&synced.stderr));

    let line = run_json(
        &api,
        &[
            "batches",
            "show",
            "msgbatch_9",
            "req-00042",
            "--data-dir",
            d,
        ],
    )
    .await;
    assert_eq!(line["custom_id"], "req-00042");
    assert_eq!(line["result"]["type"], "canceled");

    let absent = run(
        &api,
        &[
            "batches",
            "show",
            "msgbatch_9",
            "req-99999",
            "--data-dir",
            d,
        ],
    )
    .await;
    assert_eq!(absent.status.code(), Some(1));

    let out = dir.path().join("r.jsonl");
    let results = run(
        &api,
        &[
            "batches",
            "results",
            "msgbatch_9",
            "-o",
            out.to_str().unwrap(),
        ],
    )
    .await;
    assert_eq!(results.status.code(), Some(0), "{}", text(&results.stderr));
    assert_eq!(std::fs::read_to_string(&out).unwrap().lines().count(), 1000);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_without_range_support_still_syncs() {
    let api =
        MockApi::start(MockApiConfig::new(FileSet::Explicit(small_account())).without_ranges())
            .await;
    let dir = tempfile::tempdir().unwrap();
    let out = run(
        &api,
        &[
            "sync",
            "--data-dir",
            dir.path().to_str().unwrap(),
            "--files-only",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let big = std::fs::read(dir.path().join("raw/2026-07/file_b_report.csv")).unwrap();
    assert_eq!(big, data(3 * MIB, 2));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_sync_on_the_same_directory_is_refused_clearly() {
    let api = MockApi::start(MockApiConfig::new(FileSet::Explicit(small_account()))).await;
    let dir = tempfile::tempdir().unwrap();
    let data_dir = claudedl::store::layout::DataDir::new(dir.path());
    data_dir.create().unwrap();
    let _held = data_dir.lock().unwrap();
    let out = run(&api, &["sync", "--data-dir", dir.path().to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("another claudedl sync"),
        "{}",
        text(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sync_killed_mid_download_resumes() {
    let big = data(24 * MIB, 77);
    let files = vec![mock_file("file_big", "big.bin", "2026-08", big.clone())];
    let config = MockApiConfig::new(FileSet::Explicit(files)).with_fault(ApiFault::Stall {
        route: Route::FileContent,
        after_bytes: 4 * MIB as u64,
        times: 100,
    });
    let api = MockApi::start(config).await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let mut child = claudedl(&api)
        .args(["sync", "--data-dir", d, "--files-only", "-c", "4"])
        .spawn()
        .unwrap();
    api.wait_for_body_bytes(Route::FileContent, 8 * MIB as u64)
        .await;
    // Let a checkpoint record the bytes the stalled connections delivered.
    let state = dir.path().join("tmp");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::time::Instant::now() < deadline && !has_progress(&state) {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    child.kill().await.unwrap();
    assert!(has_progress(&state), "resume state was checkpointed");

    let api2 = MockApi::start(MockApiConfig::new(FileSet::Explicit(vec![mock_file(
        "file_big",
        "big.bin",
        "2026-08",
        big.clone(),
    )])))
    .await;
    let out = claudedl(&api2)
        .args(["sync", "--data-dir", d, "--files-only", "--json"])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        sha256(&std::fs::read(dir.path().join("raw/2026-08/file_big_big.bin")).unwrap()),
        sha256(&big)
    );
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        summary["bytes"].as_u64().unwrap() < big.len() as u64,
        "only the missing bytes: {summary}"
    );
}

fn has_progress(tmp: &Path) -> bool {
    files_under(tmp)
        .iter()
        .filter(|p| p.to_string_lossy().ends_with(".part.json"))
        .any(|p| claudedl::store::ResumeState::load(p).is_some_and(|s| s.done.covered() > 0))
}

#[tokio::test(flavor = "multi_thread")]
async fn batches_ls_lists_every_batch_newest_first() {
    let mut older = batch("msgbatch_old", 3);
    older.created_at = "2026-07-01T00:00:00Z".into();
    let api = MockApi::start(
        MockApiConfig::new(FileSet::Explicit(vec![]))
            .with_batches(vec![older, batch("msgbatch_new", 5)]),
    )
    .await;
    let out = run(&api, &["batches", "ls", "--json"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let ids: Vec<String> = text(&out.stdout)
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(ids, vec!["msgbatch_new", "msgbatch_old"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dry_run_prints_the_plan_and_fetches_no_content() {
    let api = MockApi::start(
        MockApiConfig::new(FileSet::Explicit(small_account()))
            .with_batches(vec![batch("msgbatch_1", 4)]),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let summary = run_json(
        &api,
        &[
            "sync",
            "--data-dir",
            dir.path().to_str().unwrap(),
            "--dry-run",
            "--json",
        ],
    )
    .await;
    let planned: Vec<&str> = summary["planned"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(
        planned,
        vec!["file_e", "file_c", "file_b", "file_a", "msgbatch_1"]
    );
    assert_eq!(
        api.count(Route::FileContent) + api.count(Route::BatchResults),
        0
    );
    assert!(!dir.path().join("raw").join("2026-06").exists());
}
