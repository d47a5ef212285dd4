//! Logs: JSON lines with `timestamp`, `level` and `event`, a `file_done` event per file with
//! the original design's fields, `--log-file`, and never the API key.

use std::path::Path;

use claudedl_mock::api::{ApiFault, FileSet, MockApi, MockApiConfig, Route};
use serde_json::Value;

use crate::config::claudedl;
use crate::support::{MIB, data, mock_file, sha256, text};

/// Every line parses as a JSON object with a timestamp, a level and an event.
fn parse_lines(log: &str) -> Vec<Value> {
    log.lines()
        .map(|line| {
            let value: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
            let stamp = value["timestamp"].as_str().expect("a timestamp");
            assert!(
                stamp.ends_with('Z') && stamp.as_bytes()[10] == b'T',
                "{stamp}"
            );
            assert!(
                value["level"].is_string() && value["event"].is_string(),
                "{line}"
            );
            value
        })
        .collect()
}

fn events<'a>(lines: &'a [Value], name: &str) -> Vec<&'a Value> {
    lines.iter().filter(|l| l["event"] == name).collect()
}

/// A sync of two files, one of whose content requests is cut once (so it is retried).
async fn api_with_a_retry() -> (MockApi, Vec<u8>) {
    let big = data(3 * MIB, 9);
    let files = vec![
        mock_file("file_small", "small.txt", "2026-08", data(100_000, 1)),
        mock_file("file_big", "big.bin", "2026-08", big.clone()),
    ];
    let config = MockApiConfig::new(FileSet::Explicit(files)).with_fault(ApiFault::ResetAfter {
        route: Route::FileContent,
        bytes: 64 * 1024,
        times: 1,
    });
    (MockApi::start(config).await, big)
}

fn sync_args<'a>(data_dir: &'a str, more: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["--log-format", "json"];
    args.extend(more);
    args.extend([
        "sync",
        "--files-only",
        "--rpm",
        "60000",
        "--data-dir",
        data_dir,
    ]);
    args
}

#[tokio::test(flavor = "multi_thread")]
async fn a_syncs_json_log_file_has_a_file_done_event_per_file_and_no_key() {
    let (api, big) = api_with_a_retry().await;
    let dir = tempfile::tempdir().unwrap();
    let out = claudedl(dir.path())
        .env("ANTHROPIC_BASE_URL", api.base_url())
        .env("ANTHROPIC_API_KEY", api.api_key())
        .args(sync_args("data", &["--log-file", "log.jsonl"]))
        .output()
        .await
        .unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        !stderr.contains('{') && !stderr.contains("file_done"),
        "{stderr}"
    );

    let log = std::fs::read_to_string(dir.path().join("log.jsonl")).unwrap();
    assert!(!log.contains(&api.api_key()), "the key is in the log");
    let lines = parse_lines(&log);
    let done = events(&lines, "file_done");
    assert_eq!(done.len(), 2, "{log}");
    for event in &done {
        for field in [
            "file_id",
            "bytes_downloaded",
            "duration_ms",
            "retry_count",
            "url",
            "path",
            "sha256",
            "status",
        ] {
            assert!(!event[field].is_null(), "{field} missing in {event}");
        }
        assert_eq!(event["status"], "downloaded");
        assert_eq!(event["level"], "info");
    }
    let big_done = done.iter().find(|e| e["file_id"] == "file_big").unwrap();
    assert_eq!(big_done["bytes_downloaded"], big.len() as u64);
    assert_eq!(big_done["sha256"], sha256(&big));
    assert!(
        big_done["url"]
            .as_str()
            .unwrap()
            .ends_with("/v1/files/file_big/content")
    );
    let path = big_done["path"].as_str().unwrap();
    assert!(
        Path::new(path).ends_with("raw/2026-08/file_big_big.bin"),
        "{path}"
    );
    let retries: u64 = done
        .iter()
        .map(|e| e["retry_count"].as_u64().unwrap())
        .sum();
    assert_eq!(retries, 1, "{log}");
    assert_eq!(events(&lines, "run_summary").len(), 1, "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn json_logs_on_stderr_are_all_json_and_carry_retries_at_debug() {
    let (api, _) = api_with_a_retry().await;
    let dir = tempfile::tempdir().unwrap();
    let out = claudedl(dir.path())
        .env("ANTHROPIC_BASE_URL", api.base_url())
        .env("ANTHROPIC_API_KEY", api.api_key())
        .args(sync_args("data", &["-v", "-v"]))
        .output()
        .await
        .unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let lines = parse_lines(&stderr);
    assert_eq!(events(&lines, "file_done").len(), 2, "{stderr}");
    let retry = events(&lines, "retry");
    assert_eq!(retry.len(), 1, "{stderr}");
    assert_eq!(retry[0]["level"], "debug");
    assert!(retry[0]["delay_ms"].is_u64(), "{}", retry[0]);
    assert!(!stderr.contains(&api.api_key()));
}

#[tokio::test(flavor = "multi_thread")]
async fn get_of_a_plain_url_logs_a_null_file_id_and_text_logs_go_to_the_file() {
    let api = MockApi::start(MockApiConfig::new(FileSet::Explicit(vec![mock_file(
        "file_x",
        "x.bin",
        "2026-08",
        data(10_000, 3),
    )])))
    .await;
    let dir = tempfile::tempdir().unwrap();
    // The mock's content URL, fetched as a plain URL (no key: its origin is not the API's).
    let url = format!("{}/v1/files/file_x/content", api.base_url());
    let out = claudedl(dir.path())
        .args([
            "--log-format",
            "json",
            "--log-file",
            "get.jsonl",
            "get",
            &url,
            "-o",
            "x.bin",
        ])
        .output()
        .await
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(3),
        "the mock wants a key: {}",
        text(&out.stderr)
    );
    let log = std::fs::read_to_string(dir.path().join("get.jsonl")).unwrap();
    let lines = parse_lines(&log);
    let done = events(&lines, "file_done");
    assert_eq!(done.len(), 1, "{log}");
    assert_eq!(done[0]["file_id"], Value::Null);
    assert_eq!(done[0]["status"], "failed");
    assert!(
        done[0]["error"].as_str().unwrap().contains("401"),
        "{}",
        done[0]
    );

    let out = claudedl(dir.path())
        .args(["-v", "--log-file", "get.log", "get", &url, "-o", "x.bin"])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let log = std::fs::read_to_string(dir.path().join("get.log")).unwrap();
    assert!(log.contains("INFO") && log.contains("file failed"), "{log}");
    assert!(!log.contains('\u{1b}'), "no colours in a file: {log}");
    assert!(!text(&out.stderr).contains("INFO"), "{}", text(&out.stderr));
}
