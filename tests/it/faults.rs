//! One named fault per test against the in-repo origin, with exact request counts and hashes.

use std::time::Duration;

use bytes::Bytes;
use claudedl::engine::{EngineConfig, TransferError};
use claudedl_mock::origin::{Fault, Origin, OriginConfig, RetryAfter};
use reqwest::header::{HeaderMap, HeaderValue};

use crate::support::{MIB, Recorder, data, engine, sha256, sha256_file, spec, test_config};

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
