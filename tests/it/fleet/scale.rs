//! The full-size run: 4 `claudedl worker` processes, 10,000 items, two killed with
//! SIGKILL mid-run.

use std::time::{Duration, Instant};

use super::*;

/// The workers' lease (`--lease 2` in [`spawn_worker`]); a heartbeat, and so a sweep, comes
/// every third of it.
const LEASE: Duration = Duration::from_secs(2);

/// SIGKILL `child`; the worker id it registered, the leases it held, and how long until none of
/// them was its any more (swept back to the queue by the survivors).
async fn kill(db: &TestDb, child: &mut Child) -> (String, i64, Duration) {
    let pid = child.id().unwrap();
    signal(pid, rustix::process::Signal::KILL);
    child.wait().await.unwrap();
    let killed = Instant::now();
    let id = psql(db, &format!("SELECT id FROM workers WHERE pid = {pid}"));
    let held_sql =
        format!("SELECT count(*) FROM work_items WHERE worker = '{id}' AND state = 'leased'");
    let held = count(db, &held_sql);
    wait_for("the killed worker's leases to be reclaimed", || {
        count(db, &held_sql) == 0
    })
    .await;
    (id, held, killed.elapsed())
}

/// Every item complete exactly once with the right SHA-256 in the index and on disk; no item
/// completed twice (the survivors' completions plus the killed workers' add up to the items);
/// files fetched twice at most as many as the killed workers held; their leases reclaimed within
/// lease + sweep interval (plus 1 s for a loaded machine's polling).
#[tokio::test(flavor = "multi_thread")]
async fn four_workers_finish_10000_items_when_two_are_killed() {
    const FILES: usize = 10_000;
    let started = Instant::now();
    let files = account(FILES, 256);
    let (api, db) = fleet(files.clone()).await;
    run_ok(&api, &db, &["enqueue", "--page-size", "1000"]).await;
    let listed = api.requests().len();
    let enqueued = started.elapsed();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let args = ["-j", "8", "--exit-when-empty"];
    let mut workers = spawn_workers(&api, &db, d, 4, &args);
    let run = Instant::now();
    let done = || count(&db, "SELECT count(*) FROM work_items WHERE state = 'done'");
    let mut killed = Vec::new();
    for at in [2_000, 5_000] {
        wait_for_long("items done", || done() >= at).await;
        let mut victim = workers.remove(0);
        killed.push(kill(&db, &mut victim).await);
    }
    let (mut survivors, mut batches) = (0, 0);
    for worker in workers {
        let (status, summary, stderr) = finish(worker).await;
        assert!(status.success(), "{stderr}");
        survivors += summary["completed"].as_i64().unwrap();
        batches += summary["completion_batches"].as_i64().unwrap();
    }
    let elapsed = run.elapsed();
    assert_all_complete(&db, dir.path(), &files);
    let mut by_killed = 0;
    let mut held = 0;
    for (id, leases, reclaimed) in &killed {
        by_killed += count(
            &db,
            &format!("SELECT count(*) FROM work_items WHERE completed_by = '{id}'"),
        );
        held += leases;
        eprintln!("killed {id}: held {leases} leases, reclaimed in {reclaimed:.2?}");
        assert!(
            *reclaimed <= LEASE + LEASE / 3 + Duration::from_secs(1),
            "{reclaimed:?}"
        );
    }
    assert_eq!(
        by_killed + survivors,
        FILES as i64,
        "each item completed exactly once"
    );
    let mut fetches: HashMap<&str, usize> = HashMap::new();
    let log = api.requests();
    for request in &log[listed..] {
        let file = request.path.strip_prefix("/v1/files/");
        if let Some(id) = file.and_then(|id| id.strip_suffix("/content")) {
            *fetches.entry(id).or_default() += 1;
        }
    }
    let refetched = fetches.values().filter(|&&n| n > 1).count() as i64;
    eprintln!(
        "{FILES} items: enqueued in {enqueued:.1?}, done in {elapsed:.1?} ({:.0} items/s); \
         {refetched} fetched twice, {held} leases held by the killed; the survivors completed \
         {survivors} in {batches} transactions",
        FILES as f64 / elapsed.as_secs_f64()
    );
    assert!(held > 0, "the killed workers held leases");
    assert!(refetched <= held, "{refetched} fetched twice, {held} held");
}

/// [`wait_for`] with room for a large run (bounded: 120 s).
async fn wait_for_long(what: &str, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "waited too long for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
