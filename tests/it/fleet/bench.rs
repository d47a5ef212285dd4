//! Fleet benchmarks (ignored; `bench/fleet.sh` runs them in a release build and prints
//! `BENCH` lines): scaling over 1, 2 and 4 workers on a bandwidth-bound workload, small files
//! through 1 and 4 workers against one `sync`, and the shared budget's accuracy with 4 workers.
//! The queue's own rate is `fleet::queue_throughput`.

use std::time::{Duration, Instant};

use claudedl_mock::api::{FileSet, MockApi, MockApiConfig};

use super::*;

/// The mock's cap per connection (a body is sent at most this fast).
const CONNECTION_CAP: u64 = 1024 * 1024;

/// `n` workers, two transfers each, on 96 files of 512 KiB (one request each, under the
/// small-file size) from an API that sends each body at most 1 MiB/s: a worker is worth
/// 2 MiB/s; total throughput and its ratio to one worker.
#[tokio::test(flavor = "multi_thread")]
#[ignore]
async fn bench_scaling() {
    const FILES: usize = 96;
    const LEN: usize = 512 * 1024;
    let files = account(FILES, LEN);
    let mut one = None;
    for workers in [1, 2, 4] {
        let config = MockApiConfig::new(FileSet::Explicit(files.clone()))
            .with_connection_cap(CONNECTION_CAP);
        let api = MockApi::start(config).await;
        let db = postgres::database();
        run_ok(&api, &db, &["fleet", "init"]).await;
        run_ok(&api, &db, &["enqueue"]).await;
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap();
        let args = ["-j", "2", "--exit-when-empty"];
        let started = Instant::now();
        let running: Vec<Child> = (0..workers)
            .map(|_| spawn_worker(&api, &db, d, &args))
            .collect();
        for worker in running {
            let (status, _, stderr) = finish(worker).await;
            assert!(status.success(), "{stderr}");
        }
        let wall = started.elapsed().as_secs_f64();
        assert_all_complete(&db, dir.path(), &files);
        let mib_s = (FILES * LEN) as f64 / wall / (1024.0 * 1024.0);
        let ratio = mib_s / *one.get_or_insert(mib_s);
        eprintln!(
            "BENCH scaling workers={workers} wall_s={wall:.2} mib_s={mib_s:.2} ratio={ratio:.2} \
             bound_mib_s={}",
            workers * 2
        );
    }
}

/// 10,000 files of 4 KiB from the mock with no budget: one `claudedl sync -j 16`, then 1 and 4
/// workers (`-j 16` each) on the same files: files/s, and the transactions that completed them.
#[tokio::test(flavor = "multi_thread")]
#[ignore]
async fn bench_small_files() {
    const FILES: usize = 10_000;
    let files = account(FILES, 4096);
    let (api, db) = fleet(files.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let started = Instant::now();
    let sync = [
        "sync",
        "-q",
        "--data-dir",
        data.to_str().unwrap(),
        "-j",
        "16",
    ];
    let out = unbudgeted(&api, &db).args(sync).output().await.unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let wall = started.elapsed().as_secs_f64();
    use crate::support::{expected_hashes, synced_hashes};
    assert_eq!(synced_hashes(&dir), expected_hashes(&files));
    let files_s = FILES as f64 / wall;
    eprintln!("BENCH small_files sync wall_s={wall:.2} files_s={files_s:.0}");
    for workers in [1, 4] {
        let (api, db) = fleet(files.clone()).await;
        run_ok(&api, &db, &["enqueue", "--page-size", "1000"]).await;
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap();
        let args = [
            "worker",
            "--data-dir",
            d,
            "--json",
            "-j",
            "16",
            "--exit-when-empty",
        ];
        let started = Instant::now();
        let running: Vec<Child> = (0..workers)
            .map(|_| unbudgeted(&api, &db).args(args).spawn().unwrap())
            .collect();
        let mut batches = 0;
        for worker in running {
            let (status, summary, stderr) = finish(worker).await;
            assert!(status.success(), "{stderr}");
            batches += summary["completion_batches"].as_i64().unwrap();
        }
        let wall = started.elapsed().as_secs_f64();
        assert_all_complete(&db, dir.path(), &files);
        let files_s = FILES as f64 / wall;
        eprintln!(
            "BENCH small_files workers={workers} wall_s={wall:.2} files_s={files_s:.0} \
             completion_transactions={batches}"
        );
    }
}

/// `claudedl` on the fleet's database, paced at a million requests a minute (the tests'
/// default, 60,000, would be the bound).
fn unbudgeted(api: &MockApi, db: &TestDb) -> tokio::process::Command {
    let mut command = claudedl(api, db);
    command.env("CLAUDEDL_RPM", "1000000");
    command
}

/// 4 workers (4 transfers each) share 1,200/min (burst 4) against an API enforcing 1,200/min
/// (bucket 10), 400 files of 512 bytes: content requests ÷ what the budget allowed from the
/// first to the last, the busiest 1 s window, 429s.
#[tokio::test(flavor = "multi_thread")]
#[ignore]
async fn bench_budget_accuracy() {
    use super::budget::{BURST, RPM, budgeted_fleet};
    const FILES: usize = 400;
    let files = account(FILES, 512);
    let (api, db) = budgeted_fleet(&files, 10).await;
    let listed = api.requests().len();
    let log = four_workers_drain(&api, &db, &files, listed).await;
    let sent: Vec<Duration> = log
        .iter()
        .filter(|r| r.path.ends_with("/content"))
        .map(|r| r.at)
        .collect();
    let span = (*sent.last().unwrap() - sent[0]).as_secs_f64();
    let per_second = RPM / 60.0;
    let allowed = per_second * span + (BURST + 1) as f64;
    let busiest = claudedl_mock::api::max_in_window(&log, Duration::from_secs(1), |_| true);
    let throttled = log.iter().filter(|r| r.status == 429).count();
    eprintln!(
        "BENCH budget requests={} span_s={span:.2} allowed={allowed:.1} achieved_ratio={:.3} \
         busiest_1s={busiest} bound_1s={} status_429={throttled}",
        sent.len(),
        sent.len() as f64 / allowed,
        per_second as usize + BURST + 1
    );
}
