//! The rate governor as a user meets it: the request budget, pushback (429), the spend cap,
//! failover after a 503/529 streak, and the bandwidth cap — against the mock API and nginx.

use std::time::Duration;

use claudedl_mock::api::{ApiFault, ApiRequest, FileSet, MockApi, MockApiConfig, MockFile, Route};

use crate::api::run;
use crate::support::nginx::Nginx;
use crate::support::{MIB, data, expected_hashes, mock_file, sha256, synced_hashes, text};

fn account(n: usize) -> Vec<MockFile> {
    (0..n)
        .map(|i| {
            let id = format!("file_{i:03}");
            mock_file(&id, &format!("f{i}.bin"), "2026-06", data(2_000, i as u64))
        })
        .collect()
}

/// `sync --json` into a fresh directory; returns the summary and the directory.
async fn sync_json(api: &MockApi, extra: &[&str]) -> (serde_json::Value, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let mut args = vec!["sync", "--json", "--data-dir", data_dir.to_str().unwrap()];
    args.extend_from_slice(extra);
    let out = run(api, &args).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let summary = serde_json::from_slice(&out.stdout).expect("one JSON summary");
    (summary, dir)
}

#[tokio::test(flavor = "multi_thread")]
async fn an_overload_streak_switches_to_the_backup_and_returns_after_the_pause() {
    let files = account(30);
    // The first four content requests (one per job) meet 529: a streak of three benches the
    // primary and the request is retried on the backup at once; the budget (600/min) makes the
    // run outlast the 1 s pause by far, so the primary is used again.
    let overloaded = ApiFault::Status {
        route: Route::FileContent,
        status: 529,
        times: 4,
        retry_after_secs: None,
    };
    let primary =
        MockApi::start(MockApiConfig::new(FileSet::Explicit(files.clone())).with_fault(overloaded))
            .await;
    let backup = MockApi::start(
        MockApiConfig::new(FileSet::Explicit(files.clone())).with_api_key(primary.api_key()),
    )
    .await;

    let backup_url = backup.base_url();
    let (summary, dir) = sync_json(
        &primary,
        &[
            "--rpm",
            "600",
            "-j",
            "4",
            "--endpoint",
            &backup_url,
            "--overload-pause",
            "1",
        ],
    )
    .await;

    assert_eq!(summary["downloaded"], 30, "{summary}");
    assert_eq!(synced_hashes(&dir), expected_hashes(&files));
    let requests = &summary["requests"];
    assert_eq!(requests["server_errors"]["529"], 4, "{requests}");
    assert!(
        requests["endpoint_switches"].as_u64().unwrap() >= 2,
        "{requests}"
    );
    let on_backup = backup.count(Route::FileContent);
    let on_primary = primary.count(Route::FileContent);
    assert!(on_backup >= 1, "the backup served nothing");
    assert!(
        on_primary > 4,
        "the primary was never used again after its pause"
    );
    assert_eq!(on_primary + on_backup, 34);
    // The key went to the configured backup, and only there besides the primary.
    let keys = backup
        .requests()
        .iter()
        .filter(|r| r.header("x-api-key").is_some())
        .count();
    assert_eq!(keys, backup.requests().len());
}

#[tokio::test(flavor = "multi_thread")]
async fn limit_rate_holds_the_download_within_ten_percent() {
    let nginx = Nginx::start();
    let content = data(3 * MIB, 7);
    nginx.put("capped.bin", &content);
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("capped.bin");

    let out = crate::cli::claudedl()
        .args([
            "get",
            &nginx.url("capped.bin"),
            "-o",
            output.to_str().unwrap(),
            "-c",
            "4",
            "--limit-rate",
            "1MiB",
            "--json",
        ])
        .output()
        .await
        .unwrap();

    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["sha256"], sha256(&content));
    let seconds = report["duration_ms"].as_f64().unwrap() / 1000.0;
    let rate = content.len() as f64 / seconds / MIB as f64;
    assert!(
        (0.9..=1.1).contains(&rate),
        "{rate:.3} MiB/s over {seconds:.2} s"
    );
}

fn is_api_call(request: &ApiRequest) -> bool {
    request.route != Route::Other
}

#[tokio::test(flavor = "multi_thread")]
async fn no_second_holds_more_than_the_budget_plus_its_burst() {
    let files = account(40);
    let api = MockApi::start(
        MockApiConfig::new(FileSet::Explicit(files.clone()))
            .with_rate_limit(600)
            .with_rate_limit_burst(10),
    )
    .await;

    let (summary, dir) = sync_json(&api, &["--rpm", "600", "-j", "8"]).await;

    assert_eq!(summary["downloaded"], 40, "{summary}");
    assert_eq!(synced_hashes(&dir), expected_hashes(&files));
    let busiest = api.max_in_window(Duration::from_secs(1), is_api_call);
    // 600/min is 10 a second; the client's burst is 5.
    assert!(busiest <= 15, "{busiest} requests within one second");
    let refused = api.requests().iter().filter(|r| r.status == 429).count();
    assert_eq!(
        refused, 0,
        "the budget was respected, so nothing was refused"
    );
    assert_eq!(summary["requests"]["throttled"], 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lower_limit_from_the_server_is_adopted_mid_run() {
    let files = account(24);
    let api = MockApi::start(
        MockApiConfig::new(FileSet::Explicit(files.clone()))
            .with_rate_limit(600)
            .with_rate_limit_burst(10),
    )
    .await;
    let lowered = async {
        // Once eight files have been served, the server cuts the limit to 120/min.
        api.wait_for_body_bytes(Route::FileContent, 8 * 2_000).await;
        api.set_rate_limit(Some(120));
        api.requests().len()
    };

    let (sync, changed_after) =
        tokio::join!(sync_json(&api, &["--rpm", "600", "-j", "8"]), lowered);
    let (summary, _dir) = sync;

    assert_eq!(summary["downloaded"], 24, "{summary}");
    assert_eq!(summary["requests"]["budget_rpm"], 120.0, "{summary}");
    let log = api.requests();
    let refused = log.iter().filter(|r| r.status == 429).count();
    assert!(refused <= 1, "{refused} requests refused after the change");
    // After the change (and the few requests already on their way), two a second at most.
    let later = &log[(changed_after + 8).min(log.len())..];
    let first = later.first().expect("requests after the change").at;
    let last = later.last().unwrap().at;
    let span = (last - first).as_secs_f64();
    assert!(
        later.len() as f64 <= 2.0 * span + 2.0,
        "{} requests in {span:.2} s at 120/min",
        later.len()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_429_with_retry_after_pauses_every_worker() {
    let files = account(30);
    let throttle = ApiFault::Status {
        route: Route::FileContent,
        status: 429,
        times: 1,
        retry_after_secs: Some(1),
    };
    let api =
        MockApi::start(MockApiConfig::new(FileSet::Explicit(files.clone())).with_fault(throttle))
            .await;

    // Paced at 10 a second, the run lasts about three seconds: without a process-wide pause the
    // other workers would go on asking while the refused one waits.
    let (summary, dir) = sync_json(&api, &["--rpm", "600", "-j", "8"]).await;

    assert_eq!(summary["downloaded"], 30, "{summary}");
    assert_eq!(synced_hashes(&dir), expected_hashes(&files));
    assert_eq!(summary["requests"]["throttled"], 1);
    let log = api.requests();
    let refused = log.iter().find(|r| r.status == 429).expect("the 429").at;
    // Requests already on their way when the 429 was answered may still arrive; after that,
    // nobody asks until the second is over.
    let early = log
        .iter()
        .filter(|r| r.at > refused + Duration::from_millis(200))
        .filter(|r| r.at < refused + Duration::from_millis(950))
        .count();
    assert_eq!(early, 0, "requests were sent during the pause");
    assert!(log.iter().any(|r| r.at >= refused + Duration::from_secs(1)));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_spend_cap_stops_the_run_and_a_rerun_finishes_it() {
    let files = account(10);
    let cap = ApiFault::SpendLimit {
        route: Route::FileContent,
        times: 1,
    };
    let api =
        MockApi::start(MockApiConfig::new(FileSet::Explicit(files.clone())).with_fault(cap)).await;
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let args = ["sync", "--data-dir", data_dir.to_str().unwrap(), "-j", "1"];

    let out = run(&api, &args).await;

    assert_eq!(out.status.code(), Some(5), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("spend limit"), "{stderr}");
    assert!(stderr.contains("request-id req_"), "{stderr}");
    let log = api.requests();
    let capped = log
        .iter()
        .position(|r| r.status == 429)
        .expect("the spend-cap 429");
    assert_eq!(capped, log.len() - 1, "no request after the spend cap");

    let out = run(&api, &args).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(synced_hashes(&dir), expected_hashes(&files));
}
