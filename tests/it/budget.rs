//! Requests are the scarce resource: exact request counts for files of known size, the cost
//! model of splitting under a budget, the first response of a plain URL, and a learned rate
//! used by the next run — against the mock API and the fault origin.

use std::process::Stdio;

use bytes::Bytes;
use claudedl::engine::TransferError;
use claudedl_mock::api::{
    ApiRequest, FileSet, MockApi, MockApiConfig, MockFile, Route, generated_batches,
};
use claudedl_mock::origin::{Origin, OriginConfig};

use crate::support::{
    MIB, Recorder, data, engine, expected_hashes, mock_file, sha256, spec, synced_hashes,
    test_config, text,
};

fn account(n: usize, len: usize) -> Vec<MockFile> {
    (0..n)
        .map(|i| {
            let id = format!("file_{i:03}");
            mock_file(&id, &format!("f{i}.bin"), "2026-06", data(len, i as u64))
        })
        .collect()
}

/// `claudedl sync --json` against `api` into a fresh directory, with `extra` flags.
async fn sync(api: &MockApi, extra: &[&str]) -> (serde_json::Value, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let out = crate::support::claudedl_binary()
        .env("ANTHROPIC_BASE_URL", api.base_url())
        .env("ANTHROPIC_API_KEY", api.api_key())
        .env_remove("CLAUDEDL_RPM")
        .args(["sync", "--json", "--data-dir", data_dir.to_str().unwrap()])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let summary = serde_json::from_slice(&out.stdout).expect("one JSON summary");
    (summary, dir)
}

fn content_requests(api: &MockApi) -> Vec<ApiRequest> {
    let log = api.requests();
    log.into_iter()
        .filter(|r| r.route == Route::FileContent)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_files_api_download_of_known_size_is_one_request_without_a_probe() {
    let files = account(1, 3 * MIB);
    let api = MockApi::start(MockApiConfig::new(FileSet::Explicit(files.clone()))).await;

    let (summary, dir) = sync(&api, &["--rpm", "6000"]).await;

    assert_eq!(summary["downloaded"], 1, "{summary}");
    assert_eq!(synced_hashes(&dir), expected_hashes(&files));
    let content = content_requests(&api);
    let ranges: Vec<Option<&str>> = content.iter().map(|r| r.header("range")).collect();
    // Planned from `size_bytes`: the whole file in one request, no 1 MiB probe first.
    assert_eq!(ranges, [Some("bytes=0-3145727")]);
    assert_eq!(summary["requests"]["content_requests"], 1, "{summary}");
    assert_eq!(summary["requests"]["files"], 1, "{summary}");
}

#[tokio::test(flavor = "multi_thread")]
async fn small_files_under_a_binding_budget_are_one_request_each() {
    let files = account(6, 3 * MIB);
    let api = MockApi::start(
        MockApiConfig::new(FileSet::Explicit(files.clone()))
            .with_rate_limit(240)
            .with_rate_limit_burst(2),
    )
    .await;

    let (summary, dir) = sync(&api, &["--rpm", "240"]).await;

    assert_eq!(summary["downloaded"], 6, "{summary}");
    assert_eq!(synced_hashes(&dir), expected_hashes(&files));
    let content = content_requests(&api);
    assert_eq!(content.len(), 6, "one request per file");
    let mut paths: Vec<&str> = content.iter().map(|r| r.path.as_str()).collect();
    paths.sort_unstable();
    paths.dedup();
    assert_eq!(paths.len(), 6, "no file asked twice");
    assert_eq!(summary["requests"]["throttled"], 0, "{summary}");
}

#[tokio::test(flavor = "multi_thread")]
async fn batch_results_cost_one_request_each_after_the_listing() {
    let batches = generated_batches(3, 40, 1);
    let api = MockApi::start(
        MockApiConfig::new(FileSet::Explicit(Vec::new())).with_batches(batches.clone()),
    )
    .await;

    let (summary, _dir) = sync(&api, &["--rpm", "6000"]).await;

    assert_eq!(summary["batches_downloaded"], 3, "{summary}");
    assert_eq!(summary["results_indexed"], 120, "{summary}");
    let routes: Vec<Route> = api.requests().iter().map(|r| r.route).collect();
    let count = |route| routes.iter().filter(|r| **r == route).count();
    // The listing already says where each ended batch's results are: no GET of the batch.
    assert_eq!(count(Route::BatchMeta), 0, "{routes:?}");
    assert_eq!(count(Route::BatchResults), 3, "{routes:?}");
    assert_eq!(count(Route::ListBatches), 1, "{routes:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn results_of_unknown_size_under_a_budget_are_one_request() {
    // About 2 MiB of results each: more than the 1 MiB probe of an unpaced download.
    let batches = generated_batches(2, 7000, 2);
    let api = MockApi::start(
        MockApiConfig::new(FileSet::Explicit(Vec::new()))
            .with_batches(batches)
            .with_rate_limit(240)
            .with_rate_limit_burst(2),
    )
    .await;

    let (summary, _dir) = sync(&api, &["--rpm", "240"]).await;

    assert_eq!(summary["batches_downloaded"], 2, "{summary}");
    let results: Vec<ApiRequest> = api
        .requests()
        .into_iter()
        .filter(|r| r.route == Route::BatchResults)
        .collect();
    let ranges: Vec<Option<&str>> = results.iter().map(|r| r.header("range")).collect();
    // One request each, asking for a whole piece (64 MiB), not a 1 MiB probe and the rest.
    assert_eq!(ranges, [Some("bytes=0-67108863"); 2], "{results:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_big_file_behind_a_per_connection_cap_is_split() {
    // 8 MiB at 1 MiB/s per connection: one stream would take 8 s. At 600/min and 8
    // connections a piece is worth a request from about 0.8 MiB, so the file is taken over.
    let files = account(1, 8 * MIB);
    let api = MockApi::start(
        MockApiConfig::new(FileSet::Explicit(files.clone())).with_connection_cap(MIB as u64),
    )
    .await;

    let (summary, dir) = sync(&api, &["--rpm", "600"]).await;

    assert_eq!(summary["downloaded"], 1, "{summary}");
    assert_eq!(synced_hashes(&dir), expected_hashes(&files));
    let content = content_requests(&api);
    assert_eq!(
        content[0].header("range"),
        Some("bytes=0-8388607"),
        "planned as one request"
    );
    assert!(
        (3..=16).contains(&content.len()),
        "{} requests: split by take-overs, each worth its request",
        content.len()
    );
    // A take-over cuts its range short: what the server had already sent past the new end
    // (a socket buffer's worth, here at most a tenth of a second of the cap) is wasted.
    let sent = api.body_bytes_sent(Route::FileContent);
    assert!(
        sent < 8 * MIB as u64 + (content.len() as u64) * MIB as u64 / 10,
        "{sent} bytes sent for 8 MiB in {} requests",
        content.len()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_first_response_of_a_plain_url_download_is_used() {
    let content = data(3 * MIB, 5);
    let origin = Origin::start(OriginConfig::new(Bytes::copy_from_slice(&content))).await;
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("out.bin");

    let report = engine(test_config(4))
        .download(0, &spec(&origin.url("/f.bin"), &output), Recorder::new())
        .await
        .unwrap();

    assert_eq!(report.sha256.as_deref(), Some(sha256(&content).as_str()));
    let requests = origin.requests();
    // The size is learned from the first response (1 MiB asked for), whose body is kept.
    assert_eq!(requests[0].header("range"), Some("bytes=0-1048575"));
    assert_eq!(
        origin.body_bytes_sent(),
        3 * MIB as u64,
        "nothing fetched twice"
    );
    assert!(
        requests[1..].iter().all(|r| r
            .header("range")
            .is_some_and(|range| !range.starts_with("bytes=0-"))),
        "byte 0 asked for once"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_size_other_than_the_known_one_is_never_trusted() {
    let content = data(2 * MIB, 6);
    let origin = Origin::start(OriginConfig::new(Bytes::copy_from_slice(&content))).await;
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("out.bin");
    let mut known = spec(&origin.url("/f.bin"), &output);
    known.expected_size = Some(2 * MIB as u64 + 1);

    let result = engine(test_config(4))
        .download(0, &known, Recorder::new())
        .await;

    assert!(
        matches!(
            result,
            Err(TransferError::LengthMismatch { expected, actual, .. })
                if expected == 2 * MIB as u64 + 1 && actual == 2 * MIB as u64
        ),
        "{result:?}"
    );
    assert_eq!(origin.request_count(), 1, "one request, then stop");
    assert!(!output.exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_sync_against_a_silent_limit_starts_from_the_learned_rate() {
    // 120/min enforced, never advertised. The first run starts at 50/min and doubles every 2 s
    // until the first 429; the second starts where the first settled.
    let files = account(12, 2_000);
    let api = MockApi::start(
        MockApiConfig::new(FileSet::Explicit(files.clone()))
            .with_silent_rate_limit(120)
            .with_rate_limit_burst(2)
            .with_organisation("org-budget-test"),
    )
    .await;

    let (first, first_dir) = sync(&api, &[]).await;
    assert_eq!(first["downloaded"], 12, "{first}");
    assert_eq!(synced_hashes(&first_dir), expected_hashes(&files));
    assert!(
        first["requests"]["throttled"].as_u64().unwrap() >= 1,
        "{first}"
    );
    assert_eq!(first["requests"]["rate_source"], "discovered", "{first}");

    let (second, second_dir) = sync(&api, &[]).await;

    assert_eq!(second["downloaded"], 12, "{second}");
    assert_eq!(synced_hashes(&second_dir), expected_hashes(&files));
    assert_eq!(second["requests"]["rate_source"], "learned", "{second}");
    let rate = second["requests"]["budget_rpm"].as_f64().unwrap();
    assert!((60.0..=130.0).contains(&rate), "started from {rate}/min");
    assert!(
        second["requests"]["throttled"].as_u64().unwrap() <= 1,
        "{second}"
    );
}
