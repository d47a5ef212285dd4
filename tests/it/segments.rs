//! Segments (issue 14, requirement 5): one large file queued as 64 KiB-aligned segments and
//! fetched by several `claudedl worker` processes at once into one shared directory, one of
//! them SIGKILLed mid-segment.

use std::collections::HashMap;

use claudedl_mock::api::{FileSet, MockApi, MockApiConfig, MockFile};

use crate::fleet::{count, finish, psql, run_ok, spawn_worker, wait_for};
use crate::support::postgres::{self, TestDb};
use crate::support::{data, mock_file, sha256, sha256_file};

const MIB: u64 = 1024 * 1024;

/// An API serving `file` with `cap` bytes/s per connection, and a fleet database.
async fn fleet_capped(file: MockFile, cap: u64) -> (MockApi, TestDb) {
    let config = MockApiConfig::new(FileSet::Explicit(vec![file])).with_connection_cap(cap);
    let api = MockApi::start(config).await;
    let db = postgres::database();
    run_ok(&api, &db, &["fleet", "init"]).await;
    (api, db)
}

/// How many content requests asked for a range starting at each offset.
fn range_starts(api: &MockApi) -> HashMap<u64, usize> {
    let mut starts = HashMap::new();
    for request in api.requests() {
        if !request.path.ends_with("/content") {
            continue;
        }
        let range = request
            .header("range")
            .expect("every segment asks for a range");
        let start = range
            .strip_prefix("bytes=")
            .and_then(|r| r.split('-').next())
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("range {range}"));
        *starts.entry(start).or_default() += 1;
    }
    starts
}

fn kill(pid: u32) {
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(pid as i32).unwrap(),
        rustix::process::Signal::KILL,
    )
    .unwrap();
}

/// The case: 256 MiB in 16 segments over 4 workers, one SIGKILLed while every worker
/// is in the middle of its first segment. The file ends with the right hash, recorded once; the
/// victim's segment is fetched again whole by another worker, and no other segment twice.
#[tokio::test(flavor = "multi_thread")]
async fn a_large_file_in_segments_survives_a_killed_worker() {
    const SIZE: u64 = 256 * MIB;
    const SEGMENT: u64 = 16 * MIB;
    let content = data(SIZE as usize, 14);
    let expected = sha256(&content);
    let file = mock_file("file_big", "big.bin", "2026-08", content);
    // 8 MiB/s per connection: a segment takes 2 s, so a kill lands mid-segment.
    let (api, db) = fleet_capped(file, 8 * MIB).await;
    let queued = run_ok(&api, &db, &["enqueue", "--json", "--segment-size", "16MiB"]).await;
    let queued: serde_json::Value = serde_json::from_str(&queued).unwrap();
    assert_eq!(queued["queued"], 16, "{queued}");
    let again = run_ok(&api, &db, &["enqueue", "--json", "--segment-size", "16MiB"]).await;
    let again: serde_json::Value = serde_json::from_str(&again).unwrap();
    assert_eq!(again["queued"], 0, "enqueueing twice creates nothing twice");
    let ranges = psql(
        &db,
        "SELECT string_agg(part || ':' || range_start || '-' || range_end, ',' ORDER BY part) \
         FROM work_items",
    );
    let want: Vec<String> = (0..16)
        .map(|n| format!("{}:{}-{}", n + 1, n * SEGMENT, (n + 1) * SEGMENT))
        .collect();
    assert_eq!(ranges, want.join(","));

    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let one_each = ["-j", "1", "--exit-when-empty"];
    let mut victim = spawn_worker(&api, &db, d, &one_each);
    let others: Vec<_> = (0..3)
        .map(|_| spawn_worker(&api, &db, d, &one_each))
        .collect();
    let victim_pid = victim.id().unwrap();
    // Every worker has its first segment's response (the mock logs a request as it answers):
    // all four are mid-segment, none done.
    wait_for("four segments in flight", || {
        range_starts(&api).values().sum::<usize>() >= 4
    })
    .await;
    let victim_id = psql(
        &db,
        &format!("SELECT id FROM workers WHERE pid = {victim_pid}"),
    );
    let held = format!("SELECT count(*) FROM work_items WHERE worker = '{victim_id}'");
    assert_eq!(count(&db, &held), 1, "the victim holds one segment");
    assert_eq!(
        count(&db, "SELECT count(*) FROM work_items WHERE state = 'done'"),
        0,
        "no segment is done yet: the kill lands mid-segment"
    );
    kill(victim_pid);
    victim.wait().await.unwrap();

    let mut completed = 0;
    let mut segments = 0;
    for other in others {
        let (status, summary, stderr) = finish(other).await;
        assert!(status.success(), "{stderr}");
        completed += summary["completed"].as_i64().unwrap();
        segments += summary["segments"].as_i64().unwrap();
    }
    assert_eq!(completed, 1, "the file is recorded once");
    assert_eq!(segments, 16, "the survivors stored every segment");
    let row = psql(&db, "SELECT state, sha256, path FROM files");
    let [state, hash, path] = row.split('|').collect::<Vec<_>>()[..] else {
        panic!("{row}");
    };
    assert_eq!((state, hash), ("complete", expected.as_str()));
    assert_eq!(sha256_file(&dir.path().join(path)), expected);
    assert_eq!(
        count(&db, "SELECT count(*) FROM work_items WHERE state = 'done'"),
        16
    );
    let reclaimed = "SELECT count(*) FROM work_items WHERE epoch > 1";
    assert_eq!(
        count(&db, reclaimed),
        1,
        "only the victim's segment was claimed again"
    );
    let starts = range_starts(&api);
    let twice: Vec<_> = starts.iter().filter(|&(_, &n)| n > 1).collect();
    assert!(
        twice.len() <= 1,
        "at most one segment fetched twice: {twice:?}"
    );
    for n in 0..16 {
        assert!(starts.contains_key(&(n * SEGMENT)), "segment {n} fetched");
    }
    let staging = dir.path().join("tmp/fleet/segments-file_big");
    assert!(!staging.exists(), "the staging file was renamed into place");
}
