//! The server's limits beyond the budget: a silent rate limit, a per-connection bandwidth cap,
//! the organisation header.

use std::time::{Duration, Instant};

use super::*;
use crate::testing::{self, RawResponse};

const CONTENT: &str = "/v1/files/file_000000000000000000000000/content";

fn generated(content_len: usize) -> MockApiConfig {
    MockApiConfig::new(FileSet::Generated {
        count: 2,
        seed: 7,
        content_len,
    })
}

async fn get(api: &MockApi, target: &str) -> RawResponse {
    let key = api.api_key();
    let headers = [
        ("x-api-key", key.as_str()),
        ("anthropic-version", "2023-06-01"),
    ];
    testing::send(api.addr(), "GET", target, &headers).await
}

#[tokio::test]
async fn a_silent_limit_is_enforced_without_headers() {
    let api = MockApi::start(generated(100).with_silent_rate_limit(2)).await;

    let first = get(&api, "/v1/files").await;
    let second = get(&api, "/v1/files").await;
    let third = get(&api, "/v1/files").await;

    assert_eq!((first.status, second.status, third.status), (200, 200, 429));
    assert!(third.header("retry-after").is_some());
    for response in [&first, &second, &third] {
        assert_eq!(response.header("anthropic-ratelimit-requests-limit"), None);
        assert_eq!(
            response.header("anthropic-ratelimit-requests-remaining"),
            None
        );
    }
}

#[tokio::test]
async fn every_answer_names_the_organisation() {
    let api = MockApi::start(
        generated(100)
            .with_organisation("org-42")
            .with_rate_limit(1),
    )
    .await;

    let ok = get(&api, "/v1/files").await;
    let limited = get(&api, "/v1/files").await;

    assert_eq!((ok.status, limited.status), (200, 429));
    for response in [&ok, &limited] {
        assert_eq!(response.header("anthropic-organization-id"), Some("org-42"));
    }
    let plain = MockApi::start(generated(100)).await;
    assert_eq!(
        get(&plain, "/v1/files")
            .await
            .header("anthropic-organization-id"),
        None
    );
}

#[tokio::test]
async fn each_body_is_capped_per_connection() {
    // 400 KiB at 1 MiB/s: about 0.4 s (the first tenth of a second's worth goes at once).
    let api = MockApi::start(generated(400 * 1024).with_connection_cap(1024 * 1024)).await;

    let started = Instant::now();
    let response = get(&api, CONTENT).await;
    let took = started.elapsed();

    assert_eq!(response.status, 200);
    assert_eq!(response.body.len(), 400 * 1024);
    assert!(took >= Duration::from_millis(250), "took {took:?}");
    assert!(took < Duration::from_secs(5), "took {took:?}");
}
