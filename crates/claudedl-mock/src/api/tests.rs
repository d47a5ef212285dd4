//! The fake API over raw HTTP/1.1, as a client sees it.

use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::AsyncReadExt as _;
use tokio::time::timeout;

use super::*;
use crate::testing::{self, PATIENCE, RawResponse, connect_and_send};

const VERSION: (&str, &str) = ("anthropic-version", "2023-06-01");
const BETA: (&str, &str) = ("anthropic-beta", "other-2025-01-01, files-api-2025-04-14");

impl RawResponse {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }

    fn ids(&self) -> Vec<String> {
        let json = self.json();
        let data = json["data"].as_array().expect("a data array");
        data.iter()
            .map(|item| item["id"].as_str().unwrap().to_owned())
            .collect()
    }
}

fn generated(count: usize) -> MockApiConfig {
    MockApiConfig::new(FileSet::Generated {
        count,
        seed: 7,
        content_len: 1000,
    })
}

fn file(id: &str, created_at: &str) -> MockFile {
    let content: Vec<u8> = (0..1000_u32).map(|i| (i % 251) as u8).collect();
    MockFile::new(id, format!("{id}.bin"), content).with_created_at(created_at)
}

/// `GET target` with exactly `headers`; reads until the server closes the connection.
async fn send_raw(api: &MockApi, target: &str, headers: &[(&str, &str)]) -> RawResponse {
    testing::send(api.addr(), "GET", target, headers).await
}

/// `GET target` with a valid key and version, plus `extra` headers.
async fn get(api: &MockApi, target: &str, extra: &[(&str, &str)]) -> RawResponse {
    let key = api.api_key();
    let mut headers = vec![("x-api-key", key.as_str()), VERSION];
    headers.extend_from_slice(extra);
    send_raw(api, target, &headers).await
}

fn assert_error(response: &RawResponse, status: u16, error_type: &str) {
    assert_eq!(response.status, status);
    assert_eq!(response.header("content-type"), Some("application/json"));
    let json = response.json();
    assert_eq!(json["type"], "error");
    assert_eq!(json["error"]["type"], error_type);
    assert!(
        json["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty())
    );
    assert_eq!(json["request_id"].as_str(), response.header("request-id"));
}

#[tokio::test]
async fn authentication_and_version_are_checked() {
    let api = MockApi::start(generated(3)).await;

    let missing = send_raw(&api, "/v1/files", &[VERSION]).await;
    let wrong = send_raw(&api, "/v1/files", &[("x-api-key", "sk-wrong"), VERSION]).await;
    let key = api.api_key();
    let unversioned = send_raw(&api, "/v1/files", &[("x-api-key", &key)]).await;
    let fine = get(&api, "/v1/files", &[]).await;

    assert_error(&missing, 401, "authentication_error");
    assert_error(&wrong, 401, "authentication_error");
    assert_eq!(wrong.header("request-id"), Some("req_mock_2"));
    assert_error(&unversioned, 400, "invalid_request_error");
    assert_eq!(fine.status, 200);
    assert_eq!(fine.header("request-id"), Some("req_mock_4"));
    assert_eq!(key, DEFAULT_API_KEY);
    let statuses: Vec<u16> = api.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [401, 401, 400, 200]);
    assert_eq!(api.count(Route::ListFiles), 4);
}

#[tokio::test]
async fn ga_pages_walk_every_file_newest_first() {
    let api = MockApi::start(generated(2500)).await;

    let mut ids = Vec::new();
    let mut target = "/v1/files?limit=1000".to_owned();
    let mut pages = 0;
    loop {
        let page = get(&api, &target, &[]).await;
        assert_eq!(page.status, 200);
        pages += 1;
        ids.extend(page.ids());
        let json = page.json();
        assert!(json.get("has_more").is_none());
        assert!(json["data"][0].get("expires_at").is_some());
        match json["next_page"].as_str() {
            Some(cursor) => {
                assert!(cursor.starts_with("page_"));
                target = format!("/v1/files?limit=1000&page={cursor}");
            }
            None => break,
        }
    }

    assert_eq!(pages, 3);
    let expected: Vec<String> = (0..2500).rev().map(|i| format!("file_{i:024}")).collect();
    assert_eq!(ids, expected);
    let default = get(&api, "/v1/files", &[]).await;
    assert_eq!(default.ids().len(), 20);
    let object = &default.json()["data"][0];
    assert_eq!(object["type"], "file");
    assert_eq!(object["size_bytes"], 1000);
    assert_eq!(object["downloadable"], true);
    assert_eq!(object["expires_at"], Value::Null);
    assert!(
        object["created_at"]
            .as_str()
            .unwrap()
            .starts_with("2026-07-28T")
    );
}

#[tokio::test]
async fn ga_rejects_bad_parameters() {
    let api = MockApi::start(generated(10)).await;

    for target in [
        "/v1/files?limit=0",
        "/v1/files?limit=1001",
        "/v1/files?limit=ten",
        "/v1/files?page=nonsense",
        "/v1/files?after_id=file_000000000000000000000001",
        "/v1/files?before_id=file_000000000000000000000001",
    ] {
        assert_error(&get(&api, target, &[]).await, 400, "invalid_request_error");
    }
    let many: String = (0..101).map(|i| format!("ids[]=file_{i:024}&")).collect();
    let too_many = get(&api, &format!("/v1/files?{many}"), &[]).await;
    assert_error(&too_many, 400, "invalid_request_error");
}

#[tokio::test]
async fn beta_pages_follow_after_id_and_before_id() {
    let api = MockApi::start(generated(25)).await;

    let first = get(&api, "/v1/files?limit=10", &[BETA]).await;
    let json = first.json();
    assert_eq!(json["has_more"], true);
    assert!(json.get("next_page").is_none());
    assert!(json["data"][0].get("expires_at").is_none());
    let last_id = json["last_id"].as_str().unwrap().to_owned();
    assert_eq!(json["first_id"], "file_000000000000000000000024");
    assert_eq!(last_id, "file_000000000000000000000015");

    let second = get(
        &api,
        &format!("/v1/files?limit=10&after_id={last_id}"),
        &[BETA],
    )
    .await;
    let third_target = format!(
        "/v1/files?limit=10&after_id={}",
        second.json()["last_id"].as_str().unwrap()
    );
    let third = get(&api, &third_target, &[BETA]).await;
    let back = get(
        &api,
        "/v1/files?limit=3&before_id=file_000000000000000000000020",
        &[BETA],
    )
    .await;

    assert_eq!(
        second.ids().first().unwrap(),
        "file_000000000000000000000014"
    );
    assert_eq!(second.json()["has_more"], true);
    assert_eq!(third.ids().len(), 5);
    assert_eq!(third.json()["has_more"], false);
    assert_eq!(third.json()["last_id"], "file_000000000000000000000000");
    let expected: Vec<String> = (21..24).rev().map(|i| format!("file_{i:024}")).collect();
    assert_eq!(back.ids(), expected);
    assert_eq!(back.json()["has_more"], true);
}

#[tokio::test]
async fn ids_return_the_named_files_as_one_page() {
    let api = MockApi::start(generated(50)).await;

    let target = "/v1/files?ids%5B%5D=file_000000000000000000000003&ids[]=file_000000000000000000000042&ids[]=file_missing";
    let response = get(&api, target, &[]).await;

    assert_eq!(response.status, 200);
    assert_eq!(
        response.ids(),
        [
            "file_000000000000000000000003",
            "file_000000000000000000000042"
        ]
    );
    assert_eq!(response.json()["next_page"], Value::Null);
}

#[tokio::test]
async fn metadata_and_permanent_content_errors() {
    let config = MockApiConfig::new(FileSet::Explicit(vec![
        file("file_uploaded", "2026-08-01T00:00:00Z").not_downloadable(),
        file("file_expired", "2026-08-02T00:00:00Z").expired(),
        file("file_ok", "2026-08-03T00:00:00Z"),
    ]));
    let api = MockApi::start(config).await;

    let uploaded = get(&api, "/v1/files/file_uploaded/content", &[]).await;
    let expired = get(&api, "/v1/files/file_expired/content", &[]).await;
    let missing = get(&api, "/v1/files/file_nope", &[]).await;
    let expired_meta = get(&api, "/v1/files/file_expired", &[]).await;
    let unknown = get(&api, "/v2/whatever", &[]).await;

    assert_error(&uploaded, 400, "invalid_request_error");
    assert!(
        uploaded.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not downloadable")
    );
    assert_error(&expired, 404, "not_found_error");
    assert_error(&missing, 404, "not_found_error");
    assert_eq!(expired_meta.status, 200);
    assert_eq!(expired_meta.json()["expires_at"], "2026-08-03T00:00:00Z");
    assert_error(&unknown, 404, "not_found_error");
    assert_eq!(api.count(Route::Other), 1);
    assert_eq!(api.body_bytes_sent(Route::FileContent), 0);
}

#[tokio::test]
async fn content_serves_ranges_with_validators() {
    let api = MockApi::start(generated(5)).await;
    let id = "file_000000000000000000000002";
    let expected = api.file(id).unwrap().content;
    let target = format!("/v1/files/{id}/content");

    let full = get(&api, &target, &[]).await;
    let etag = full.header("etag").unwrap().to_owned();
    let part = get(
        &api,
        &target,
        &[("range", "bytes=100-199"), ("if-range", &etag)],
    )
    .await;
    let stale = get(
        &api,
        &target,
        &[("range", "bytes=100-"), ("if-range", "\"old\"")],
    )
    .await;
    let beyond = get(&api, &target, &[("range", "bytes=1000-")]).await;

    assert_eq!(full.status, 200);
    assert_eq!(full.body, expected);
    assert_eq!(
        full.header("content-type"),
        Some("application/octet-stream")
    );
    assert_eq!(full.header("accept-ranges"), Some("bytes"));
    assert_eq!(etag, format!("\"{id}-1000\""));
    assert_eq!(part.status, 206);
    assert_eq!(part.header("content-range"), Some("bytes 100-199/1000"));
    assert_eq!(part.body, expected[100..200]);
    assert_eq!((stale.status, stale.body.len()), (200, 1000));
    assert_eq!(beyond.status, 416);
    assert_eq!(beyond.header("content-range"), Some("bytes */1000"));
    assert_eq!(api.body_bytes_sent(Route::FileContent), 2100);
}

#[tokio::test]
async fn without_ranges_always_sends_everything() {
    let api = MockApi::start(generated(1).without_ranges()).await;

    let response = get(
        &api,
        "/v1/files/file_000000000000000000000000/content",
        &[("range", "bytes=0-9")],
    )
    .await;

    assert_eq!((response.status, response.body.len()), (200, 1000));
    assert_eq!(response.header("accept-ranges"), None);
    assert_eq!(response.header("etag"), None);
}

fn batches() -> Vec<MockBatch> {
    let results = |n: usize| -> Vec<MockResult> {
        let kinds = ["succeeded", "errored", "canceled", "expired"];
        (0..n)
            .map(|i| MockResult::new(format!("req-{i:04}"), kinds[i % 7 % 4]))
            .collect()
    };
    vec![
        MockBatch::ended("msgbatch_old", "2026-07-01T00:00:00Z", results(120)),
        MockBatch::ended("msgbatch_new", "2026-08-01T00:00:00Z", results(30)),
        MockBatch::in_progress("msgbatch_running", "2026-08-02T00:00:00Z", results(5)),
    ]
}

#[tokio::test]
async fn batches_list_and_describe_themselves() {
    let api = MockApi::start(generated(0).with_batches(batches())).await;

    let list = get(&api, "/v1/messages/batches?limit=2", &[]).await;
    let rest = get(
        &api,
        "/v1/messages/batches?limit=2&after_id=msgbatch_new",
        &[],
    )
    .await;
    let running = get(&api, "/v1/messages/batches/msgbatch_running", &[]).await;

    assert_eq!(list.ids(), ["msgbatch_running", "msgbatch_new"]);
    assert_eq!(list.json()["has_more"], true);
    assert_eq!(rest.ids(), ["msgbatch_old"]);
    assert_eq!(rest.json()["has_more"], false);
    let old = &rest.json()["data"][0];
    assert_eq!(old["type"], "message_batch");
    assert_eq!(old["processing_status"], "ended");
    assert_eq!(
        old["results_url"],
        "/v1/messages/batches/msgbatch_old/results"
    );
    let counts = &old["request_counts"];
    let total: u64 = ["processing", "succeeded", "errored", "canceled", "expired"]
        .iter()
        .map(|name| counts[name].as_u64().unwrap())
        .sum();
    assert_eq!((total, counts["processing"].as_u64()), (120, Some(0)));
    let running = running.json();
    assert_eq!(running["processing_status"], "in_progress");
    assert_eq!(running["results_url"], Value::Null);
    assert_eq!(running["request_counts"]["processing"], 5);
}

#[tokio::test]
async fn batch_results_are_jsonl_in_a_shuffled_order() {
    let config = generated(0)
        .with_batches(batches())
        .with_absolute_results_url();
    let api = MockApi::start(config).await;

    let meta = get(&api, "/v1/messages/batches/msgbatch_old", &[]).await;
    let url = meta.json()["results_url"].as_str().unwrap().to_owned();
    let path = url
        .strip_prefix(&api.base_url())
        .expect("an absolute URL")
        .to_owned();
    let results = get(&api, &path, &[]).await;
    let ranged = get(&api, &path, &[("range", "bytes=0-99")]).await;
    let running = get(&api, "/v1/messages/batches/msgbatch_running/results", &[]).await;

    assert_eq!(results.status, 200);
    assert_eq!(results.header("content-type"), Some("application/x-jsonl"));
    let lines: Vec<Value> = results
        .body
        .split(|byte| *byte == b'\n')
        .filter(|line| !line.is_empty())
        .map(|line| serde_json::from_slice(line).unwrap())
        .collect();
    assert_eq!(lines.len(), 120);
    let ids: Vec<&str> = lines
        .iter()
        .map(|line| line["custom_id"].as_str().unwrap())
        .collect();
    let mut sorted = ids.clone();
    sorted.sort_unstable();
    assert_ne!(ids, sorted, "results come shuffled");
    sorted.dedup();
    assert_eq!(sorted.len(), 120);
    let first_succeeded = lines
        .iter()
        .find(|line| line["result"]["type"] == "succeeded")
        .unwrap();
    assert_eq!(first_succeeded["result"]["message"]["role"], "assistant");
    assert_eq!(results.body, api.results_body("msgbatch_old").unwrap());
    assert_eq!(ranged.status, 206);
    assert_eq!(ranged.body, results.body[..100]);
    assert_error(&running, 400, "invalid_request_error");
}

#[tokio::test]
async fn status_fault_then_success() {
    let fault = ApiFault::Status {
        route: Route::ListFiles,
        status: 529,
        times: 2,
        retry_after_secs: Some(3),
    };
    let api = MockApi::start(generated(3).with_fault(fault)).await;

    let first = get(&api, "/v1/files", &[]).await;
    let meta = get(&api, "/v1/files/file_000000000000000000000000", &[]).await;
    let second = get(&api, "/v1/files", &[]).await;
    let third = get(&api, "/v1/files", &[]).await;

    assert_error(&first, 529, "overloaded_error");
    assert_eq!(first.header("retry-after"), Some("3"));
    assert_eq!(meta.status, 200);
    assert_error(&second, 529, "overloaded_error");
    assert_eq!(third.status, 200);
}

#[tokio::test]
async fn reset_after_cuts_the_content_then_recovers() {
    let fault = ApiFault::ResetAfter {
        route: Route::FileContent,
        bytes: 300,
        times: 1,
    };
    let api = MockApi::start(generated(1).with_fault(fault)).await;
    let target = "/v1/files/file_000000000000000000000000/content";
    let expected = api.file("file_000000000000000000000000").unwrap().content;

    let cut = get(&api, target, &[]).await;
    let whole = get(&api, target, &[]).await;

    assert_eq!(cut.header("content-length"), Some("1000"));
    assert_eq!(cut.body, expected[..300]);
    assert_eq!(whole.body, expected);
    assert_eq!(api.body_bytes_sent(Route::FileContent), 1300);
}

#[tokio::test]
async fn stall_goes_silent_after_some_bytes() {
    let fault = ApiFault::Stall {
        route: Route::FileContent,
        after_bytes: 100,
        times: 1,
    };
    let api = MockApi::start(generated(1).with_fault(fault)).await;
    let key = api.api_key();
    let headers = [("x-api-key", key.as_str()), VERSION];
    let target = "/v1/files/file_000000000000000000000000/content";
    let mut stream = connect_and_send(api.addr(), "GET", target, &headers).await;

    timeout(PATIENCE, api.wait_for_body_bytes(Route::FileContent, 100))
        .await
        .unwrap();
    let mut received = Vec::new();
    let mut buf = [0; 4096];
    while !received.ends_with(&api.file("file_000000000000000000000000").unwrap().content[..100]) {
        let read = timeout(PATIENCE, stream.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_ne!(read, 0, "connection closed early");
        received.extend_from_slice(&buf[..read]);
    }
    let silence = timeout(Duration::from_millis(200), stream.read(&mut buf)).await;
    assert!(silence.is_err(), "a stalled body sends nothing");
    drop(api);
    let rest = timeout(PATIENCE, stream.read(&mut buf)).await.unwrap();
    assert!(rest.is_err() || rest.is_ok_and(|read| read == 0));
}

#[tokio::test]
async fn rate_limit_headers_and_429_when_exhausted() {
    let api = MockApi::start(generated(3).with_rate_limit(3)).await;

    let mut responses = Vec::new();
    for _ in 0..4 {
        responses.push(get(&api, "/v1/files", &[]).await);
    }

    let remaining: Vec<Option<&str>> = responses
        .iter()
        .map(|r| r.header("anthropic-ratelimit-requests-remaining"))
        .collect();
    assert_eq!(remaining, [Some("2"), Some("1"), Some("0"), Some("0")]);
    for response in &responses {
        assert_eq!(
            response.header("anthropic-ratelimit-requests-limit"),
            Some("3")
        );
        let reset = response
            .header("anthropic-ratelimit-requests-reset")
            .unwrap();
        assert!(clock::parse_rfc3339(reset).is_some(), "reset {reset:?}");
    }
    assert_eq!(responses[2].status, 200);
    let limited = &responses[3];
    assert_error(limited, 429, "rate_limit_error");
    // 3 per minute: one token every 20 s.
    let retry_after: u64 = limited.header("retry-after").unwrap().parse().unwrap();
    assert!(
        (19..=20).contains(&retry_after),
        "retry-after {retry_after}"
    );
}

#[tokio::test]
async fn add_file_appears_as_newest() {
    let api = MockApi::start(MockApiConfig::new(FileSet::Explicit(vec![
        file("file_a", "2026-08-01T00:00:00Z"),
        file("file_b", "2026-08-02T00:00:00Z"),
    ])))
    .await;

    api.add_file(file("file_c", "2026-08-04T00:00:00Z"));
    let listed = get(&api, "/v1/files", &[]).await;

    assert_eq!(listed.ids(), ["file_c", "file_b", "file_a"]);
}

#[tokio::test]
async fn a_million_files_page_fast() {
    let api = MockApi::start(generated(1_000_000)).await;

    let started = Instant::now();
    let first = get(&api, "/v1/files?limit=1000", &[]).await;
    let cursor = first.json()["next_page"].as_str().unwrap().to_owned();
    let second = get(&api, &format!("/v1/files?limit=1000&page={cursor}"), &[]).await;
    let elapsed = started.elapsed();
    let middle = get(
        &api,
        "/v1/files?limit=1000&after_id=file_000000000000000000500000",
        &[BETA],
    )
    .await;

    assert_eq!(first.ids()[0], "file_000000000000000000999999");
    assert_eq!(second.ids()[0], "file_000000000000000000998999");
    assert_eq!(middle.ids()[999], "file_000000000000000000499000");
    // Generous: an unoptimised test build on a busy machine.
    assert!(
        elapsed < Duration::from_secs(2),
        "two pages took {elapsed:?}"
    );
}

/// A logged request at `at` milliseconds, with `status`.
fn logged(at_ms: u64, status: u16) -> ApiRequest {
    ApiRequest {
        method: "GET".to_owned(),
        path: "/v1/files".to_owned(),
        query: String::new(),
        headers: Vec::new(),
        status,
        route: Route::ListFiles,
        at: Duration::from_millis(at_ms),
    }
}

/// `max_in_window` the slow way: every window that starts at a request.
fn brute_force_max(times_ms: &[u64], window_ms: u64) -> usize {
    times_ms
        .iter()
        .map(|start| {
            times_ms
                .iter()
                .filter(|at| (*start..start + window_ms).contains(at))
                .count()
        })
        .max()
        .unwrap_or(0)
}

#[test]
fn max_in_window_counts_the_busiest_half_open_window() {
    let second = Duration::from_secs(1);
    let times = [1050, 0, 100, 900, 1000, 2500];
    let requests: Vec<ApiRequest> = times.iter().map(|ms| logged(*ms, 200)).collect();

    // [100, 1100) holds 100, 900, 1000 and 1050; [0, 1000) leaves 1000 out.
    assert_eq!(max_in_window(&requests, second, |_| true), 4);
    assert_eq!(
        max_in_window(&requests, Duration::from_millis(1000), |r| r.at < second),
        3
    );
    assert_eq!(
        max_in_window(&requests, Duration::from_millis(50), |_| true),
        1
    );
    assert_eq!(
        max_in_window(&requests, Duration::from_millis(51), |_| true),
        2
    );
    assert_eq!(
        max_in_window(&requests, Duration::from_secs(10), |_| true),
        6
    );
    assert_eq!(max_in_window(&requests, Duration::ZERO, |_| true), 0);
    assert_eq!(max_in_window(&[], second, |_| true), 0);
    assert_eq!(max_in_window(&requests, second, |_| false), 0);
}

#[test]
fn max_in_window_agrees_with_brute_force() {
    // Bursts, gaps and duplicates from a small LCG: deterministic.
    let mut state: u64 = 12_345;
    let mut times = Vec::new();
    for _ in 0..300 {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1);
        let step = match (state >> 33) % 4 {
            0 => 0,
            1 => (state >> 40) % 20,
            2 => (state >> 40) % 300,
            _ => (state >> 40) % 2000,
        };
        times.push(times.last().copied().unwrap_or(0) + step);
    }
    let statuses = [200, 429];
    let requests: Vec<ApiRequest> = times
        .iter()
        .enumerate()
        .map(|(i, ms)| logged(*ms, statuses[i % 2]))
        .collect();
    let ok: Vec<u64> = times.iter().step_by(2).copied().collect();

    for window_ms in [1, 10, 99, 100, 250, 1000, 5000, 100_000] {
        let window = Duration::from_millis(window_ms);
        assert_eq!(
            max_in_window(&requests, window, |_| true),
            brute_force_max(&times, window_ms),
            "window {window_ms} ms"
        );
        assert_eq!(
            max_in_window(&requests, window, |r| r.status == 200),
            brute_force_max(&ok, window_ms),
            "window {window_ms} ms, 200s only"
        );
    }
}

#[tokio::test]
async fn requests_are_timed_since_the_start() {
    let before = tokio::time::Instant::now();
    let api = MockApi::start(generated(3).with_rate_limit(2)).await;

    for _ in 0..3 {
        get(&api, "/v1/files", &[]).await;
    }
    let bound = before.elapsed();

    let times: Vec<Duration> = api.requests().iter().map(|r| r.at).collect();
    assert_eq!(times.len(), 3);
    assert!(times.is_sorted(), "{times:?}");
    assert!(times[2] <= bound, "{times:?} after {bound:?}");
    assert_eq!(api.max_in_window(Duration::from_secs(3600), |_| true), 3);
    assert_eq!(
        api.max_in_window(Duration::from_secs(3600), |r| r.status == 429),
        1
    );
}

fn limit_headers(response: &RawResponse) -> (Option<&str>, Option<&str>) {
    (
        response.header("anthropic-ratelimit-requests-limit"),
        response.header("anthropic-ratelimit-requests-remaining"),
    )
}

/// Seconds from now until the `-reset` header of `response`.
fn secs_until_reset(response: &RawResponse) -> i64 {
    let reset = response
        .header("anthropic-ratelimit-requests-reset")
        .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    clock::parse_rfc3339(reset).unwrap().secs - now.as_secs() as i64
}

#[tokio::test]
async fn set_rate_limit_shows_in_the_next_response() {
    // Slow refills (one token per 10 s or more) keep the counts exact on a busy machine.
    let api = MockApi::start(generated(3).with_rate_limit(6)).await;

    let first = get(&api, "/v1/files", &[]).await;
    api.set_rate_limit(Some(2));
    let lowered = get(&api, "/v1/files", &[]).await;
    api.set_rate_limit(Some(12));
    let raised = get(&api, "/v1/files", &[]).await;
    let empty = get(&api, "/v1/files", &[]).await;
    api.set_rate_limit(None);
    let unlimited = get(&api, "/v1/files", &[]).await;
    api.set_rate_limit(Some(1));
    let fresh = get(&api, "/v1/files", &[]).await;
    let refused = get(&api, "/v1/files", &[]).await;

    assert_eq!(limit_headers(&first), (Some("6"), Some("5")));
    // 5 tokens, at most 2 kept, one taken.
    assert_eq!(limit_headers(&lowered), (Some("2"), Some("1")));
    // The token there was is kept, and taken.
    assert_eq!(limit_headers(&raised), (Some("12"), Some("0")));
    assert_eq!(raised.status, 200);
    assert_error(&empty, 429, "rate_limit_error");
    // Capacity 12 at 12/min, empty: full again in a minute.
    let until_full = secs_until_reset(&empty);
    assert!((55..=61).contains(&until_full), "reset in {until_full} s");
    assert_eq!(unlimited.status, 200);
    assert_eq!(limit_headers(&unlimited), (None, None));
    assert_eq!(limit_headers(&fresh), (Some("1"), Some("0")));
    assert_eq!(fresh.status, 200);
    assert_error(&refused, 429, "rate_limit_error");
    assert_eq!(refused.header("retry-after"), Some("60"));
}

#[tokio::test]
async fn burst_capacity_caps_the_bucket() {
    let api = MockApi::start(generated(3).with_rate_limit(6).with_rate_limit_burst(2)).await;

    let mut responses = Vec::new();
    for _ in 0..3 {
        responses.push(get(&api, "/v1/files", &[]).await);
    }

    assert_eq!(limit_headers(&responses[0]), (Some("6"), Some("1")));
    assert_eq!(limit_headers(&responses[1]), (Some("6"), Some("0")));
    assert_error(&responses[2], 429, "rate_limit_error");
    // One token every 10 s; two missing: full in 20 s (a capacity of 6 would take 60 s).
    let retry_after: u64 = responses[2].header("retry-after").unwrap().parse().unwrap();
    assert!((9..=10).contains(&retry_after), "retry-after {retry_after}");
    let until_full = secs_until_reset(&responses[2]);
    assert!((18..=21).contains(&until_full), "reset in {until_full} s");
}

#[tokio::test]
async fn spend_limit_is_a_429_without_retry_after() {
    let fault = ApiFault::SpendLimit {
        route: Route::FileContent,
        times: 1,
    };
    let api = MockApi::start(generated(1).with_rate_limit(100).with_fault(fault)).await;
    let target = "/v1/files/file_000000000000000000000000/content";

    let listed = get(&api, "/v1/files", &[]).await;
    let capped = get(&api, target, &[]).await;
    let after = get(&api, target, &[]).await;

    assert_eq!(listed.status, 200);
    assert_error(&capped, 429, "rate_limit_error");
    assert_eq!(capped.header("retry-after"), None);
    let json = capped.json();
    assert_eq!(
        json["error"]["details"]["error_code"],
        "enforced_spend_limit_reached"
    );
    assert!(json["request_id"].as_str().unwrap().starts_with("req_"));
    assert_eq!(after.status, 200);
    // Ordinary errors carry no details.
    let missing = get(&api, "/v1/files/file_nope", &[]).await;
    assert!(missing.json()["error"].get("details").is_none());
}

#[tokio::test]
async fn faults_can_be_pushed_and_cleared_while_running() {
    let api = MockApi::start(generated(1)).await;
    let overloaded = ApiFault::Status {
        route: Route::ListFiles,
        status: 529,
        times: 1000,
        retry_after_secs: None,
    };

    let before = get(&api, "/v1/files", &[]).await;
    api.push_fault(overloaded);
    let streak = [
        get(&api, "/v1/files", &[]).await,
        get(&api, "/v1/files", &[]).await,
    ];
    api.clear_faults();
    let back = get(&api, "/v1/files", &[]).await;
    api.push_fault(ApiFault::SpendLimit {
        route: Route::ListFiles,
        times: 1,
    });
    let capped = get(&api, "/v1/files", &[]).await;

    assert_eq!(before.status, 200);
    for response in &streak {
        assert_error(response, 529, "overloaded_error");
    }
    assert_eq!(back.status, 200);
    assert_error(&capped, 429, "rate_limit_error");
    let statuses: Vec<u16> = api.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [200, 529, 529, 200, 429]);
}

async fn stats_over_http(api: &MockApi, method: &str, path: &str) -> RawResponse {
    testing::send(api.addr(), method, path, &[]).await
}

#[tokio::test]
async fn stats_routes_count_api_requests_only() {
    let config = generated(2).with_rate_limit(2).with_stats_routes();
    let api = MockApi::start(config).await;

    for _ in 0..3 {
        get(&api, "/v1/files", &[]).await;
    }
    send_raw(&api, "/v1/files", &[]).await;
    let stats = stats_over_http(&api, "GET", "/_mock/stats").await;
    let closed = stats_over_http(&api, "POST", "/_mock/reset-stats").await;
    get(&api, "/v1/files/file_000000000000000000000000", &[]).await;
    let after = stats_over_http(&api, "GET", "/_mock/stats").await;
    let wrong_method = stats_over_http(&api, "POST", "/_mock/stats").await;

    assert_eq!(stats.status, 200);
    assert_eq!(stats.header("content-type"), Some("application/json"));
    assert_eq!(stats.header("anthropic-ratelimit-requests-limit"), None);
    let json = stats.json();
    assert_eq!(json["requests"], 4);
    assert_eq!(
        json["by_status"],
        serde_json::json!({"200": 2, "429": 1, "401": 1})
    );
    assert_eq!(
        (json["limit"].as_u64(), json["capacity"].as_u64()),
        (Some(2), Some(2))
    );
    // A full bucket of 2, plus 2/min for the (short) time the test took.
    let allowed = json["allowed"].as_f64().unwrap();
    assert!((2.0..2.5).contains(&allowed), "allowed {allowed}");
    assert!(json["elapsed_secs"].as_f64().unwrap() < PATIENCE.as_secs_f64());
    assert_eq!(closed.json()["requests"], 4);
    let after = after.json();
    assert_eq!(after["requests"], 1);
    assert_eq!(after["by_status"], serde_json::json!({"429": 1}));
    assert!(
        after["allowed"].as_f64().unwrap() < 0.5,
        "nearly empty at the reset"
    );
    assert_eq!(wrong_method.status, 405);
    assert_eq!(api.requests().len(), 5, "control requests are not logged");
    assert_eq!(api.stats().requests, 1);
}

#[tokio::test]
async fn stats_routes_are_off_by_default() {
    let api = MockApi::start(generated(1)).await;

    let stats = get(&api, "/_mock/stats", &[]).await;

    assert_error(&stats, 404, "not_found_error");
    assert_eq!(api.count(Route::Other), 1);
    assert_eq!(api.stats().by_status.get(&404), Some(&1));
    assert_eq!(api.reset_stats().requests, 1);
    assert_eq!(api.stats().requests, 0);
}

fn looping(fault: ListingFault) -> MockApiConfig {
    generated(3).with_fault(ApiFault::Listing {
        route: Route::ListFiles,
        fault,
        times: u32::MAX,
    })
}

#[tokio::test]
async fn repeat_cursor_points_back_in_either_shape() {
    let api = MockApi::start(looping(ListingFault::RepeatCursor)).await;

    let first = get(&api, "/v1/files?limit=2", &[]).await.json();
    let cursor = first["next_page"].as_str().unwrap().to_owned();
    let second = get(&api, &format!("/v1/files?limit=2&page={cursor}"), &[]).await;
    assert_eq!(second.ids().len(), 1);
    assert_eq!(second.json()["next_page"], cursor.as_str());

    let beta = get(&api, "/v1/files?limit=2", &[BETA]).await.json();
    let last = beta["last_id"].as_str().unwrap().to_owned();
    let again = get(&api, &format!("/v1/files?limit=2&after_id={last}"), &[BETA]).await;
    assert_eq!(
        (
            again.json()["has_more"].clone(),
            again.json()["last_id"].clone()
        ),
        (Value::Bool(true), Value::from(last))
    );
}

#[tokio::test]
async fn repeat_items_serves_the_first_page_under_new_cursors() {
    let api = MockApi::start(looping(ListingFault::RepeatItems)).await;

    let first = get(&api, "/v1/files?limit=2", &[]).await;
    let cursor = first.json()["next_page"].as_str().unwrap().to_owned();
    let second = get(&api, &format!("/v1/files?limit=2&page={cursor}"), &[]).await;
    assert_eq!(second.ids(), first.ids());
    assert_ne!(second.json()["next_page"], cursor.as_str());

    let stats = api.stats();
    assert_eq!(stats.by_route.get("list_files"), Some(&2));
    assert!(stats.body_bytes["list_files"] > 0);
}

#[tokio::test]
async fn chaos_answers_overloads_and_cuts_content() {
    let chaos = Chaos {
        seed: 1,
        reset_permille: 1000,
        status_503_permille: 0,
        status_529_permille: 0,
    };
    let api = MockApi::start(generated(3).with_chaos(chaos)).await;
    let id = get(&api, "/v1/files?limit=1", &[]).await.ids()[0].clone();
    let content = get(&api, &format!("/v1/files/{id}/content"), &[]).await;
    assert_eq!(content.status, 200);
    assert!(content.body.len() < 1000, "{} bytes", content.body.len());

    let overloaded = Chaos {
        status_529_permille: 1000,
        ..chaos
    };
    let api = MockApi::start(generated(3).with_chaos(overloaded)).await;
    assert_error(&get(&api, "/v1/files", &[]).await, 529, "overloaded_error");
}
