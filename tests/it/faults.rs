//! One named fault per test against the in-repo origin, with exact request counts and hashes.

use std::time::Duration;

use bytes::Bytes;
use claudedl::engine::{EngineConfig, TransferError};
use claudedl_mock::api::{ApiFault, FileSet, MockApi, MockApiConfig, Route};
use claudedl_mock::origin::{Fault, Origin, OriginConfig, RetryAfter};
use reqwest::header::{HeaderMap, HeaderValue};

use crate::support::{
    MIB, Recorder, data, engine, mock_file, sha256, sha256_file, spec, test_config, text,
};

/// Download `content` behind `fault` with `config`; returns the origin (for its log) and the
/// result, the output path inside `dir`.
async fn fetch(
    content: &[u8],
    fault: Fault,
    config: EngineConfig,
    dir: &tempfile::TempDir,
) -> (
    Origin,
    Result<claudedl::engine::TransferReport, TransferError>,
    std::sync::Arc<Recorder>,
) {
    let origin =
        Origin::start(OriginConfig::new(Bytes::copy_from_slice(content)).with_fault(fault)).await;
    let recorder = Recorder::new();
    let output = dir.path().join("out.bin");
    let result = engine(config)
        .download(0, &spec(&origin.url("/f.bin"), &output), recorder.clone())
        .await;
    (origin, result, recorder)
}

/// The first request: the first piece, `min_split` (1 MiB) bytes.
const PROBE: &str = "bytes=0-1048575";

fn ranges(origin: &Origin) -> Vec<Option<String>> {
    origin
        .requests()
        .iter()
        .map(|r| r.header("range").map(str::to_owned))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reset_mid_body_resumes_from_the_last_byte_received() {
    let content = data(3 * MIB, 20);
    let dir = tempfile::tempdir().unwrap();
    let cut = 500_123;
    let (origin, result, _) = fetch(
        &content,
        Fault::ResetAfter {
            bytes: cut,
            times: 1,
        },
        test_config(1),
        &dir,
    )
    .await;

    let report = result.unwrap();
    assert_eq!(sha256_file(&dir.path().join("out.bin")), sha256(&content));
    assert_eq!(
        ranges(&origin),
        vec![
            Some(PROBE.into()),
            Some(format!("bytes={cut}-{}", MIB - 1)),
            Some(format!("bytes={MIB}-{}", 3 * MIB - 1)),
        ]
    );
    assert_eq!(
        origin.body_bytes_sent(),
        content.len() as u64,
        "no byte fetched twice"
    );
    assert_eq!(report.retries, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_connection_times_out_and_continues() {
    let content = data(2 * MIB, 21);
    let dir = tempfile::tempdir().unwrap();
    let config = EngineConfig {
        read_timeout: Duration::from_millis(300),
        ..test_config(1)
    };
    let (origin, result, _) = fetch(
        &content,
        Fault::Stall {
            after_bytes: 100_000,
            times: 1,
        },
        config,
        &dir,
    )
    .await;

    result.unwrap();
    assert_eq!(sha256_file(&dir.path().join("out.bin")), sha256(&content));
    assert_eq!(origin.request_count(), 3, "probe, its retry, the rest");
    assert_eq!(
        ranges(&origin)[1],
        Some(format!("bytes=100000-{}", MIB - 1))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn too_many_requests_waits_exactly_as_long_as_the_server_asks() {
    let content = data(100_000, 22);
    let dir = tempfile::tempdir().unwrap();
    let fault = Fault::TooManyRequests {
        retry_after: RetryAfter::Millis(250),
        times: 1,
    };
    let (origin, result, recorder) = fetch(&content, fault, test_config(4), &dir).await;

    result.unwrap();
    assert_eq!(sha256_file(&dir.path().join("out.bin")), sha256(&content));
    assert_eq!(origin.request_count(), 2);
    assert_eq!(
        *recorder.retry_delays.lock().unwrap(),
        vec![Duration::from_millis(250)]
    );

    let dir = tempfile::tempdir().unwrap();
    let fault = Fault::TooManyRequests {
        retry_after: RetryAfter::Seconds(1),
        times: 1,
    };
    let (_, result, recorder) = fetch(&content, fault, test_config(4), &dir).await;
    result.unwrap();
    assert_eq!(
        *recorder.retry_delays.lock().unwrap(),
        vec![Duration::from_secs(1)]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn service_unavailable_is_retried_up_to_the_limit() {
    let content = data(50_000, 23);
    let dir = tempfile::tempdir().unwrap();
    let (origin, result, _) = fetch(
        &content,
        Fault::Status {
            status: 503,
            times: 3,
        },
        test_config(2),
        &dir,
    )
    .await;
    assert_eq!(result.unwrap().retries, 3);
    assert_eq!(origin.request_count(), 4);

    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(2);
    config.retry.max_retries = 2;
    let (origin, result, _) = fetch(
        &content,
        Fault::Status {
            status: 503,
            times: 10,
        },
        config,
        &dir,
    )
    .await;
    let error = result.unwrap_err();
    assert!(
        matches!(error, TransferError::RetriesExhausted { attempts: 3, .. }),
        "{error}"
    );
    assert!(error.to_string().contains("503"), "{error}");
    assert_eq!(origin.request_count(), 3);
    assert!(!dir.path().join("out.bin").exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn other_client_errors_fail_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let (origin, result, _) = fetch(
        &data(10, 24),
        Fault::Status {
            status: 404,
            times: 1,
        },
        test_config(2),
        &dir,
    )
    .await;
    let error = result.unwrap_err();
    assert!(
        matches!(error, TransferError::Status { status: 404, .. }),
        "{error}"
    );
    assert!(
        error.to_string().contains("/f.bin"),
        "the message names the URL: {error}"
    );
    assert_eq!(origin.request_count(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_ignoring_range_is_read_as_one_stream() {
    let content = data(3 * MIB, 25);
    let dir = tempfile::tempdir().unwrap();
    let (origin, result, _) = fetch(&content, Fault::IgnoreRange, test_config(8), &dir).await;
    result.unwrap();
    assert_eq!(sha256_file(&dir.path().join("out.bin")), sha256(&content));
    assert_eq!(
        origin.request_count(),
        1,
        "the probe's full answer is used as it is"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_content_range_falls_back_to_a_plain_stream() {
    let content = data(3 * MIB, 26);
    let dir = tempfile::tempdir().unwrap();
    let (origin, result, recorder) =
        fetch(&content, Fault::WrongContentRange, test_config(8), &dir).await;
    result.unwrap();
    assert_eq!(sha256_file(&dir.path().join("out.bin")), sha256(&content));
    assert_eq!(ranges(&origin), vec![Some(PROBE.into()), None]);
    assert!(
        recorder
            .notices()
            .iter()
            .any(|n| n.contains("single stream"))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_short_body_is_continued_where_it_stopped() {
    let content = data(2 * MIB, 27);
    let dir = tempfile::tempdir().unwrap();
    let (origin, result, _) = fetch(
        &content,
        Fault::ShortBody { times: 1 },
        test_config(1),
        &dir,
    )
    .await;
    result.unwrap();
    assert_eq!(sha256_file(&dir.path().join("out.bin")), sha256(&content));
    assert_eq!(
        origin.request_count(),
        3,
        "probe, its continuation, the rest"
    );
    assert_eq!(origin.body_bytes_sent(), content.len() as u64);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_body_longer_than_announced_is_not_trusted() {
    let content = data(MIB, 28);
    let dir = tempfile::tempdir().unwrap();
    let (origin, result, _) =
        fetch(&content, Fault::LongBody { times: 1 }, test_config(1), &dir).await;
    result.unwrap();
    assert_eq!(sha256_file(&dir.path().join("out.bin")), sha256(&content));
    assert_eq!(ranges(&origin), vec![Some(PROBE.into()), None]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_gzip_encoded_range_is_not_written() {
    let content = data(MIB, 29);
    let dir = tempfile::tempdir().unwrap();
    let (origin, result, _) = fetch(&content, Fault::GzipRange, test_config(4), &dir).await;
    result.unwrap();
    assert_eq!(sha256_file(&dir.path().join("out.bin")), sha256(&content));
    assert_eq!(ranges(&origin), vec![Some(PROBE.into()), None]);
    assert!(
        origin
            .requests()
            .iter()
            .all(|r| r.header("accept-encoding") == Some("identity"))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_etag_change_mid_download_restarts_with_the_new_file() {
    let old = data(8 * MIB, 30);
    let new = Bytes::from(data(8 * MIB, 31));
    let dir = tempfile::tempdir().unwrap();
    let fault = Fault::ChangeAfter {
        requests: 2,
        new_content: new.clone(),
    };
    let (origin, result, recorder) = fetch(&old, fault, test_config(4), &dir).await;

    let report = result.unwrap();
    assert_eq!(sha256_file(&dir.path().join("out.bin")), sha256(&new));
    assert_eq!(report.sha256.as_deref(), Some(sha256(&new).as_str()));
    assert!(
        recorder
            .notices()
            .iter()
            .any(|n| n.contains("changed on the server"))
    );
    let refused = origin.requests().iter().filter(|r| r.status == 200).count();
    assert!(
        refused >= 1,
        "a request with the old If-Range got the whole new file"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn credentials_never_follow_a_redirect_to_another_origin() {
    let content = data(10_000, 32);
    let target = Origin::start(OriginConfig::new(content.clone())).await;
    let redirect = Origin::start(
        OriginConfig::new(Bytes::new()).with_fault(Fault::RedirectTo {
            location: target.url("/elsewhere.bin"),
        }),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("out.bin");
    let mut transfer = spec(&redirect.url("/f.bin"), &output);
    let mut headers = HeaderMap::new();
    headers.insert("x-api-key", HeaderValue::from_static("sk-secret-key"));
    headers.insert(
        "authorization",
        HeaderValue::from_static("Bearer secret-token"),
    );
    headers.insert("x-trace", HeaderValue::from_static("kept"));
    transfer.headers = headers;

    engine(test_config(2))
        .download(0, &transfer, Recorder::new())
        .await
        .unwrap();

    assert_eq!(sha256_file(&output), sha256(&content));
    assert_eq!(
        redirect.requests()[0].header("x-api-key"),
        Some("sk-secret-key")
    );
    for request in target.requests() {
        assert_eq!(request.header("x-api-key"), None);
        assert_eq!(request.header("authorization"), None);
        assert_eq!(request.header("referer"), None);
        // Given headers stay home too (see tests/it/redirects.rs); transfer headers go on.
        assert_eq!(request.header("x-trace"), None);
    }
    assert!(!target.requests().is_empty());
}

// ---- retries that end (issue 10: a hang and a trickle) ----

/// `claudedl` with `args`, killed if it has not exited within `bound`.
async fn run_within(bound: Duration, args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut command = crate::cli::claudedl();
    command.args(args).kill_on_drop(true);
    for (name, value) in env {
        command.env(name, value);
    }
    tokio::time::timeout(bound, command.output())
        .await
        .unwrap_or_else(|_| panic!("claudedl {args:?} still running after {bound:?}"))
        .unwrap()
}

/// Eight failing ranges used to wait on each other for the retry-storm places (max(2, 16/4) of
/// them) and hang forever after 12 requests; now each range gives up on its own schedule.
#[tokio::test(flavor = "multi_thread")]
async fn resets_after_the_first_response_end_the_run_instead_of_hanging() {
    let fault = Fault::ResetAfterServed {
        served: 1,
        bytes: 0,
    };
    let origin = Origin::start(OriginConfig::new(data(8 * MIB, 34)).with_fault(fault)).await;
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("out.bin");
    let args = [
        "get",
        &origin.url("/f.bin"),
        "-o",
        output.to_str().unwrap(),
        "-c",
        "8",
        "--chunk-size",
        "512KiB",
        "--max-retries",
        "2",
    ];

    let out = run_within(Duration::from_secs(60), &args, &[]).await;

    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("after 3 failed attempts in a row"),
        "{stderr}"
    );
    assert!(!output.exists());
    let requests = origin.request_count();
    assert!(
        (4..=1 + 8 * 3).contains(&requests),
        "the probe, then at most three attempts per worker: {requests}"
    );
}

/// A server that sends about 1,000 bytes per connection and then stalls: each attempt keeps
/// its bytes, but that is not progress, so the range gives up after `--max-retries`.
#[tokio::test(flavor = "multi_thread")]
async fn a_trickle_ends_with_a_clear_error() {
    let fault = Fault::Stall {
        after_bytes: 1000,
        times: u32::MAX,
    };
    let origin = Origin::start(OriginConfig::new(data(4 * MIB, 35)).with_fault(fault)).await;
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("out.bin");
    let args = [
        "get",
        &origin.url("/f.bin"),
        "-o",
        output.to_str().unwrap(),
        "-c",
        "1",
        "--read-timeout",
        "0.2",
        "--max-retries",
        "2",
    ];

    let out = run_within(Duration::from_secs(60), &args, &[]).await;

    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("(bytes 3000-1048575) after 3 failed attempts in a row"),
        "{stderr}"
    );
    assert!(stderr.contains("stalled"), "{stderr}");
    assert_eq!(origin.request_count(), 3, "the probe and two retries");
    assert_eq!(origin.body_bytes_sent(), 3000);
}

/// A flaky server (every second body cut after 64 KiB): every range continues where it was
/// cut, and the file is right.
#[tokio::test(flavor = "multi_thread")]
async fn a_flaky_server_still_yields_the_right_file() {
    let content = data(8 * MIB, 36);
    let dir = tempfile::tempdir().unwrap();
    let fault = Fault::ResetEvery {
        nth: 2,
        bytes: 64 * 1024,
    };
    // Four pieces of 2 MiB that are never split: a take-over of a slow range would make the
    // origin send bytes the client then drops (timing-dependent), and this test counts bytes.
    let config = EngineConfig {
        min_split: 2 * MIB as u64,
        ..test_config(4)
    };
    let (origin, result, _) = fetch(&content, fault, config, &dir).await;

    let report = result.unwrap();
    assert_eq!(sha256_file(&dir.path().join("out.bin")), sha256(&content));
    let requests = origin.request_count();
    assert_eq!(
        report.retries as usize,
        requests / 2,
        "one retry per cut body"
    );
    assert!(requests <= 2 * 8 + 1, "{requests}");
    assert_eq!(origin.body_bytes_sent(), content.len() as u64);
}

/// Single-stream mode restarts from byte 0, so nothing a failed attempt fetched is progress.
#[tokio::test(flavor = "multi_thread")]
async fn a_single_stream_that_is_always_cut_gives_up() {
    let fault = Fault::ResetAfterServed {
        served: 0,
        bytes: 100_000,
    };
    let config = OriginConfig::new(data(2 * MIB, 37))
        .without_ranges()
        .with_fault(fault);
    let origin = Origin::start(config).await;
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("out.bin");

    let result = engine(test_config(4))
        .download(0, &spec(&origin.url("/f.bin"), &output), Recorder::new())
        .await;

    let error = result.unwrap_err();
    assert!(
        matches!(error, TransferError::RetriesExhausted { attempts: 6, .. }),
        "{error}"
    );
    assert_eq!(origin.request_count(), 6);
}

/// A sync whose content server dies: eight files, four at a time, every body cut at once (with
/// two places in the retry-storm pool, this used to hang on the third attempt).
/// Each file gives up after its own retries (none waits on another's retry-storm place), and
/// the sync ends with the failures reported.
#[tokio::test(flavor = "multi_thread")]
async fn a_sync_whose_content_server_dies_ends() {
    let files: Vec<_> = (0..8)
        .map(|i| {
            mock_file(
                &format!("file_{i:02}"),
                &format!("f{i}.bin"),
                "2026-06",
                data(200_000, i),
            )
        })
        .collect();
    let fault = ApiFault::ResetAfter {
        route: Route::FileContent,
        bytes: 0,
        times: u32::MAX,
    };
    let api = MockApi::start(MockApiConfig::new(FileSet::Explicit(files)).with_fault(fault)).await;
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let (base_url, key) = (api.base_url(), api.api_key());
    let env = [
        ("ANTHROPIC_BASE_URL", base_url.as_str()),
        ("ANTHROPIC_API_KEY", key.as_str()),
    ];
    let args = [
        "sync",
        "--files-only",
        "--data-dir",
        data_dir.to_str().unwrap(),
        "-j",
        "4",
        "--max-connections",
        "4",
        "--max-retries",
        "2",
        "--rpm",
        "60000",
    ];

    let out = run_within(Duration::from_secs(60), &args, &env).await;

    let stderr = text(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{stderr}");
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("after 3 failed attempts in a row"),
        "{stdout}"
    );
    assert_eq!(
        api.count(Route::FileContent),
        8 * 3,
        "three attempts per file"
    );
}

/// A listener that accepts connections and closes them at once; counts them.
async fn closing_server() -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = std::sync::Arc::clone(&accepted);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            drop(stream);
        }
    });
    (url, accepted)
}

#[tokio::test(flavor = "multi_thread")]
async fn an_api_call_to_a_server_that_always_resets_gives_up() {
    let (base_url, accepted) = closing_server().await;
    let env = [
        ("ANTHROPIC_BASE_URL", base_url.as_str()),
        ("ANTHROPIC_API_KEY", "sk-test"),
    ];
    let args = ["files", "ls", "--max-retries", "2", "--rpm", "60000"];

    let out = run_within(Duration::from_secs(60), &args, &env).await;

    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("after 3 failed attempts in a row"),
        "{stderr}"
    );
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 3);
}

/// 503 with `retry-after: 0` on every call: the overload policy's retries, then a clear error.
#[tokio::test(flavor = "multi_thread")]
async fn an_api_call_to_a_server_that_always_answers_503_gives_up() {
    let fault = ApiFault::Status {
        route: Route::ListFiles,
        status: 503,
        times: u32::MAX,
        retry_after_secs: Some(0),
    };
    let api = MockApi::start(MockApiConfig::new(FileSet::Explicit(vec![])).with_fault(fault)).await;
    let (base_url, key) = (api.base_url(), api.api_key());
    let env = [
        ("ANTHROPIC_BASE_URL", base_url.as_str()),
        ("ANTHROPIC_API_KEY", key.as_str()),
    ];
    let args = [
        "files",
        "ls",
        "--max-retries",
        "2",
        "--overload-pause",
        "0.05",
        "--rpm",
        "60000",
    ];

    let out = run_within(Duration::from_secs(60), &args, &env).await;

    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("HTTP 503"), "{stderr}");
    assert!(stderr.contains("(request-id req_"), "{stderr}");
    assert!(
        stderr.contains("after 13 failed attempts in a row"),
        "overload gets the overload policy's 12 retries: {stderr}"
    );
    assert_eq!(api.count(Route::ListFiles), 13);
}
