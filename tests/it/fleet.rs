//! The fleet (issue 14): real `claudedl worker` processes on one PostgreSQL queue (the
//! throwaway cluster), the mock API, one shared data directory.

use std::collections::HashMap;
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use claudedl_mock::api::{FileSet, MockApi, MockApiConfig, MockFile};
use tokio::process::{Child, Command};

use crate::support::postgres::{self, TestDb};
use crate::support::{data, mock_file, sha256, sha256_file, text};

/// `claudedl` against `api` and `db` (through `$CLAUDEDL_DB`, as a deployment sets it).
pub(crate) fn claudedl(api: &MockApi, db: &TestDb) -> Command {
    let mut command = crate::api::claudedl(api);
    command.env("CLAUDEDL_DB", &db.url);
    command
}

pub(crate) async fn run_ok(api: &MockApi, db: &TestDb, args: &[&str]) -> String {
    let out = claudedl(api, db).args(args).output().await.unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{args:?}: {}",
        text(&out.stderr)
    );
    text(&out.stdout)
}

fn account(count: usize, len: usize) -> Vec<MockFile> {
    (0..count)
        .map(|n| {
            let day = n % 28 + 1;
            mock_file(
                &format!("file_{n:05}"),
                &format!("part-{n}.bin"),
                "2026-08",
                data(len, n as u64 + 1),
            )
            .with_created_at(format!(
                "2026-08-{day:02}T00:{:02}:{:02}Z",
                n / 60 % 60,
                n % 60
            ))
        })
        .collect()
}

fn expected_hashes(files: &[MockFile]) -> HashMap<String, String> {
    files
        .iter()
        .map(|f| (f.id.clone(), sha256(&f.content)))
        .collect()
}

/// A fleet database with its schema, and an API serving `files`.
pub(crate) async fn fleet(files: Vec<MockFile>) -> (MockApi, TestDb) {
    let api = MockApi::start(MockApiConfig::new(FileSet::Explicit(files))).await;
    let db = postgres::database();
    run_ok(&api, &db, &["fleet", "init"]).await;
    (api, db)
}

pub(crate) fn psql(db: &TestDb, sql: &str) -> String {
    postgres::cluster().psql(&db.name, sql)
}

pub(crate) fn count(db: &TestDb, sql: &str) -> i64 {
    psql(db, sql).parse().unwrap()
}

/// A worker process on `dir` with JSON output, logs quiet.
pub(crate) fn spawn_worker(api: &MockApi, db: &TestDb, dir: &str, extra: &[&str]) -> Child {
    let mut command = claudedl(api, db);
    command
        .args(["worker", "--data-dir", dir, "--json", "--lease", "2"])
        .args(extra)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    command.spawn().unwrap()
}

/// Send `signal` to the process `pid`.
pub(crate) fn signal(pid: u32, signal: rustix::process::Signal) {
    rustix::process::kill_process(rustix::process::Pid::from_raw(pid as i32).unwrap(), signal)
        .unwrap();
}

/// `n` workers on `dir`, each with `extra`.
pub(crate) fn spawn_workers(
    api: &MockApi,
    db: &TestDb,
    dir: &str,
    n: usize,
    extra: &[&str],
) -> Vec<Child> {
    (0..n).map(|_| spawn_worker(api, db, dir, extra)).collect()
}

/// Set the fleet's budget (`rpm`/`burst`) and queue every file the API lists.
pub(crate) async fn budget_and_queue(api: &MockApi, db: &TestDb, rpm: &str, burst: &str) {
    run_ok(api, db, &["fleet", "init", "--rpm", rpm, "--burst", burst]).await;
    run_ok(api, db, &["enqueue"]).await;
}

/// Poll `done` until it holds (bounded: panics after 60 s).
pub(crate) async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "waited too long for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub(crate) async fn finish(child: Child) -> (ExitStatus, serde_json::Value, String) {
    let out = child.wait_with_output().await.unwrap();
    let summary = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    (out.status, summary, text(&out.stderr))
}

/// Four workers (`-j 4 --exit-when-empty`) on a fresh directory until the queue is empty; each
/// exits 0 and every one of `files` is complete. Returns the requests the mock saw after the
/// first `listed` (the enqueue's listing).
pub(crate) async fn four_workers_drain(
    api: &MockApi,
    db: &TestDb,
    files: &[MockFile],
    listed: usize,
) -> Vec<claudedl_mock::api::ApiRequest> {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let args = ["-j", "4", "--exit-when-empty"];
    let workers = spawn_workers(api, db, d, 4, &args);
    for worker in workers {
        let (status, _, stderr) = finish(worker).await;
        assert!(status.success(), "{stderr}");
    }
    assert_all_complete(db, dir.path(), files);
    api.requests().split_off(listed)
}

/// Every file complete in the index with the content's SHA-256, and on disk with it.
fn assert_all_complete(db: &TestDb, dir: &std::path::Path, files: &[MockFile]) {
    let expected = expected_hashes(files);
    let rows = psql(db, "SELECT id, state, sha256, path FROM files ORDER BY id");
    let mut seen = 0;
    for line in rows.lines() {
        let [id, state, hash, path] = line.split('|').collect::<Vec<_>>()[..] else {
            panic!("row {line}");
        };
        assert_eq!((state, hash), ("complete", expected[id].as_str()), "{id}");
        assert_eq!(sha256_file(&dir.join(path)), expected[id], "{path}");
        seen += 1;
    }
    assert_eq!(seen, files.len());
    let not_done = count(db, "SELECT count(*) FROM work_items WHERE state <> 'done'");
    assert_eq!(not_done, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn enqueue_twice_creates_nothing_twice() {
    let files = account(30, 100);
    let (api, db) = fleet(files.clone()).await;
    let first = run_ok(&api, &db, &["enqueue", "--json", "--page-size", "10"]).await;
    let first: serde_json::Value = serde_json::from_str(&first).unwrap();
    assert_eq!(
        (&first["files_new"], &first["queued"]),
        (&30.into(), &30.into())
    );
    let second = run_ok(&api, &db, &["enqueue", "--json", "--page-size", "10"]).await;
    let second: serde_json::Value = serde_json::from_str(&second).unwrap();
    assert_eq!(
        (&second["files_new"], &second["queued"]),
        (&0.into(), &0.into())
    );
    assert_eq!(count(&db, "SELECT count(*) FROM work_items"), 30);
    assert_eq!(count(&db, "SELECT count(*) FROM files"), 30);
    // One lister at a time: while another holds the lister's lock, enqueue refuses at once.
    let (client, connection) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let lock = claudedl::fleet::enqueue::LISTER_LOCK;
    client
        .execute("SELECT pg_advisory_lock($1)", &[&lock])
        .await
        .unwrap();
    let listed_before = api.requests().len();
    let busy = claudedl(&api, &db).arg("enqueue").output().await.unwrap();
    assert_eq!(busy.status.code(), Some(1), "{}", text(&busy.stderr));
    assert!(
        text(&busy.stderr).contains("one lister at a time"),
        "{}",
        text(&busy.stderr)
    );
    assert_eq!(api.requests().len(), listed_before, "nothing listed");
    drop(client);
    // The selection flags are sync's: a narrower enqueue on a fresh database queues less.
    let (api, db) = fleet(files).await;
    let narrow = run_ok(
        &api,
        &db,
        &["enqueue", "--json", "--include", "part-1*.bin"],
    )
    .await;
    let narrow: serde_json::Value = serde_json::from_str(&narrow).unwrap();
    assert_eq!(narrow["queued"], 11, "part-1 and part-10..19");
}

/// Files that land while a completion waits for the database are completed together: with the
/// index's table locked (a completion's write waits), a worker downloads all 16 small files;
/// once the lock goes, they are recorded in fewer transactions than files, each with its hash,
/// and no staging file is left.
#[tokio::test(flavor = "multi_thread")]
async fn files_landing_together_are_completed_in_one_transaction() {
    const FILES: usize = 16;
    let files = account(FILES, 4096);
    let (api, db) = fleet(files.clone()).await;
    run_ok(&api, &db, &["enqueue"]).await;
    let config: tokio_postgres::Config = db.url.parse().unwrap();
    let pool = claudedl::fleet::pool(config, 1).unwrap();
    let locker = pool.get().await.unwrap();
    locker
        .batch_execute("BEGIN; LOCK TABLE files IN SHARE MODE")
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let worker = spawn_worker(&api, &db, d, &["-j", "16", "--exit-when-empty"]);
    let staging = dir.path().join("tmp/fleet");
    let staged = || std::fs::read_dir(&staging).map_or(0, |entries| entries.count());
    wait_for("every file downloaded", || staged() == FILES).await;
    let waiting = "SELECT count(*) FROM pg_stat_activity \
                   WHERE wait_event_type = 'Lock' AND datname = current_database()";
    wait_for("a completion waiting for the lock", || {
        count(&db, waiting) > 0
    })
    .await;
    locker.batch_execute("COMMIT").await.unwrap();
    let (status, summary, stderr) = finish(worker).await;
    assert!(status.success(), "{stderr}");
    assert_eq!(summary["completed"], FILES, "{summary}");
    let transactions = summary["completion_batches"].as_u64().unwrap();
    assert!(
        (1..FILES as u64).contains(&transactions),
        "{transactions} transactions for {FILES} files"
    );
    assert_all_complete(&db, dir.path(), &files);
    assert_eq!(staged(), 0, "no staging file is left");
}

/// Three workers over 240 files; one is killed with SIGKILL mid-run. Every file ends complete
/// exactly once with the right hash; the killed worker's leases go back to the queue and are
/// finished by the others; refetches are bounded by what it held.
#[tokio::test(flavor = "multi_thread")]
async fn workers_finish_every_item_exactly_once_when_one_is_killed() {
    const FILES: usize = 240;
    let files = account(FILES, 32 * 1024);
    let (api, db) = fleet(files.clone()).await;
    run_ok(&api, &db, &["enqueue"]).await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    // A bandwidth cap per worker keeps a few transfers in flight at any moment.
    let pace = ["-j", "4", "--limit-rate", "1MiB", "--exit-when-empty"];
    let mut victim = spawn_worker(&api, &db, d, &pace);
    let others = [
        spawn_worker(&api, &db, d, &pace),
        spawn_worker(&api, &db, d, &pace),
    ];
    let victim_pid = victim.id().unwrap();
    wait_for("30 items done", || {
        count(&db, "SELECT count(*) FROM work_items WHERE state = 'done'") >= 30
    })
    .await;
    signal(victim_pid, rustix::process::Signal::KILL);
    victim.wait().await.unwrap();
    let victim_id = psql(
        &db,
        &format!("SELECT id FROM workers WHERE pid = {victim_pid}"),
    );
    let held = count(
        &db,
        &format!(
            "SELECT count(*) FROM work_items WHERE worker = '{victim_id}' AND state = 'leased'"
        ),
    );
    let killed_completed = count(
        &db,
        &format!("SELECT count(*) FROM work_items WHERE completed_by = '{victim_id}'"),
    );
    let mut survivors_completed = 0;
    for other in others {
        let (status, summary, stderr) = finish(other).await;
        assert!(status.success(), "{stderr}");
        survivors_completed += summary["completed"].as_i64().unwrap();
    }
    assert_all_complete(&db, dir.path(), &files);
    assert_eq!(
        survivors_completed + killed_completed,
        FILES as i64,
        "each item completed exactly once"
    );
    eprintln!(
        "killed worker: {killed_completed} completed, {held} leases held; survivors: \
         {survivors_completed} completed"
    );
    assert!(held > 0, "the victim held leases when killed");
    let reclaimed = count(
        &db,
        &format!(
            "SELECT count(*) FROM work_items WHERE completed_by <> '{victim_id}' AND epoch > 1"
        ),
    );
    assert!(
        reclaimed >= held,
        "{reclaimed} items claimed again, {held} held by the victim"
    );
    let mut fetches: HashMap<String, usize> = HashMap::new();
    for request in api.requests() {
        let file = request.path.strip_prefix("/v1/files/");
        if let Some(id) = file.and_then(|id| id.strip_suffix("/content")) {
            *fetches.entry(id.to_owned()).or_default() += 1;
        }
    }
    let refetched = fetches.values().filter(|&&n| n > 1).count() as i64;
    eprintln!("{refetched} files fetched twice; {reclaimed} claimed again");
    assert!(
        refetched <= held,
        "{refetched} files fetched twice, {held} leases lost"
    );
}

/// SIGTERM: the worker stops claiming, stops its transfers at the drain timeout, releases its
/// leases (claimable at once) and exits 0; another worker then finishes everything.
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_drains_and_releases_leases() {
    // Files above the small-file size (1 MiB): only the ranged path checkpoints a transfer.
    let files = account(12, 2 * 1024 * 1024);
    let (api, db) = fleet(files.clone()).await;
    run_ok(&api, &db, &["enqueue"]).await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let slow = ["-j", "3", "--limit-rate", "64KiB", "--drain-timeout", "1"];
    let worker = spawn_worker(&api, &db, d, &slow);
    wait_for("three leases", || {
        count(
            &db,
            "SELECT count(*) FROM work_items WHERE state = 'leased'",
        ) == 3
    })
    .await;
    // The transfers have asked for their bytes (2 MiB at 64 KiB/s: none ends within the drain).
    wait_for("three downloads under way", || {
        let fetching = api
            .requests()
            .into_iter()
            .filter(|r| r.path.ends_with("/content"));
        fetching.count() >= 3
    })
    .await;
    signal(worker.id().unwrap(), rustix::process::Signal::TERM);
    let (status, summary, stderr) = finish(worker).await;
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert_eq!(summary["drained"], true);
    assert_eq!(summary["released"], 3, "{summary}");
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM work_items WHERE state = 'leased'"
        ),
        0
    );
    let ready = count(
        &db,
        "SELECT count(*) FROM work_items WHERE state = 'queued' AND not_before <= now()",
    );
    assert_eq!(ready, 12, "released items are claimable at once");
    let after = spawn_worker(&api, &db, d, &["-j", "4", "--exit-when-empty"]);
    let (status, summary, stderr) = finish(after).await;
    assert!(status.success(), "{stderr}");
    assert_eq!(summary["completed"], 12);
    assert_all_complete(&db, dir.path(), &files);
    // The drained transfers were checkpointed: the next worker fetched less than everything.
    let fetched = summary["bytes"].as_u64().unwrap();
    eprintln!(
        "after the drain: {fetched} of {} bytes fetched",
        12 * 2 * 1024 * 1024
    );
    assert!(
        fetched < 12 * 2 * 1024 * 1024,
        "{fetched} bytes: nothing was resumed"
    );
}

/// `ls --db` and `verify --db` read the fleet's index; `fleet status --json` counts the queue.
#[tokio::test(flavor = "multi_thread")]
async fn ls_verify_and_status_read_the_fleet() {
    let files = account(5, 1000);
    let (api, db) = fleet(files.clone()).await;
    run_ok(&api, &db, &["enqueue"]).await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let worker = spawn_worker(&api, &db, d, &["--exit-when-empty", "--log-format", "json"]);
    let (status, summary, stderr) = finish(worker).await;
    assert!(status.success(), "{stderr}");
    // Every JSON log line names the worker, the engine's file_done lines among them.
    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .map(|line| serde_json::from_str(line).expect("a JSON log line"))
        .collect();
    let done = lines.iter().filter(|l| l["event"] == "file_done").count();
    assert_eq!(done, 5, "{stderr}");
    assert!(
        lines.iter().all(|l| l["worker"] == summary["worker"]),
        "{stderr}"
    );
    let listed = run_ok(&api, &db, &["ls", "--json", "--state", "complete"]).await;
    assert_eq!(listed.lines().count(), 5);
    let status = run_ok(&api, &db, &["fleet", "status", "--json"]).await;
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!((&status["done"], &status["queued"]), (&5.into(), &0.into()));
    run_ok(&api, &db, &["verify", "--data-dir", d]).await;
    std::fs::write(
        dir.path().join(psql(&db, "SELECT path FROM files LIMIT 1")),
        "x",
    )
    .unwrap();
    let out = claudedl(&api, &db)
        .args(["verify", "--data-dir", d])
        .output()
        .await
        .unwrap();
    assert_ne!(out.status.code(), Some(0), "a changed file is found");
    // The password never shows: not in `config show`.
    let shown = claudedl(&api, &db)
        .args(["config", "show", "--json"])
        .env("CLAUDEDL_DB", format!("{} password=hunter2", db.url))
        .output()
        .await
        .unwrap();
    assert!(
        !text(&shown.stdout).contains("hunter2"),
        "{}",
        text(&shown.stdout)
    );
    assert!(text(&shown.stdout).contains(&db.name));
}

/// The fencing epoch: a worker whose lease expired, was swept and claimed by another, cannot
/// complete (nothing recorded, nothing installed); the new holder can. A released item is
/// claimable at once.
#[tokio::test(flavor = "multi_thread")]
async fn a_stale_lease_completes_nothing() {
    use claudedl::fleet::queue::{self, Completion};
    use claudedl::store::index::{FileMeta, FileOutcome, Index, PgIndex};

    let db = postgres::database();
    let config: tokio_postgres::Config = db.url.parse().unwrap();
    let mut index = PgIndex::connect(&config, &db.name).unwrap();
    let meta = FileMeta {
        id: "file_a".into(),
        filename: "a.bin".into(),
        mime_type: "application/octet-stream".into(),
        size_bytes: 3,
        created_at: "2026-08-01T00:00:00Z".into(),
        downloadable: Some(true),
        expires_at: None,
    };
    index.upsert_files(&[meta]).unwrap();
    let pool = claudedl::fleet::pool(config, 2).unwrap();
    assert_eq!(queue::enqueue(&pool, &["file_a"]).await.unwrap(), 1);
    assert_eq!(queue::enqueue(&pool, &["file_a"]).await.unwrap(), 0);

    // A claims with a lease that is over at once; the sweep returns it; B claims it.
    let a = queue::claim(&pool, "worker-a", Duration::ZERO, 5)
        .await
        .unwrap();
    assert_eq!(a.len(), 1);
    assert!(
        queue::claim(&pool, "worker-b", Duration::from_secs(60), 5)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(queue::sweep(&pool).await.unwrap(), 1);
    let b = queue::claim(&pool, "worker-b", Duration::from_secs(60), 5)
        .await
        .unwrap();
    assert_eq!((a[0].epoch, b[0].epoch), (1, 2));

    let outcome = |sha: &str| FileOutcome::Complete {
        path: "raw/a.bin".into(),
        sha256: sha.into(),
        etag: None,
        retries: 0,
        encrypted: false,
    };
    let mut installed = Vec::new();
    let stale = queue::complete(&pool, &a[0], &outcome("aa"), || {
        installed.push("a");
        Ok(())
    })
    .await
    .unwrap();
    assert_eq!(stale, Completion::LeaseLost);
    assert_eq!(index.file("file_a").unwrap().unwrap().sha256, None);
    let fresh = queue::complete(&pool, &b[0], &outcome("bb"), || {
        installed.push("b");
        Ok(())
    })
    .await
    .unwrap();
    assert_eq!(fresh, Completion::Recorded);
    assert_eq!(installed, ["b"]);
    assert_eq!(
        index.file("file_a").unwrap().unwrap().sha256.as_deref(),
        Some("bb")
    );
    let again = queue::complete(&pool, &b[0], &outcome("cc"), || Ok(()))
        .await
        .unwrap();
    assert_eq!(again, Completion::LeaseLost, "an item completes once");

    // Done items come back only through enqueue; a released lease is claimable at once.
    assert_eq!(queue::enqueue(&pool, &["file_a"]).await.unwrap(), 1);
    let c = queue::claim(&pool, "worker-c", Duration::from_secs(60), 5)
        .await
        .unwrap();
    assert_eq!(queue::release_all(&pool, "worker-c").await.unwrap(), 1);
    let d = queue::claim(&pool, "worker-d", Duration::from_secs(60), 5)
        .await
        .unwrap();
    assert_eq!(d[0].epoch, c[0].epoch + 1);

    // Another file completing at a recorded path: refused, nothing installed.
    let meta_b = FileMeta {
        id: "file_b".into(),
        ..index.file("file_a").unwrap().unwrap().meta
    };
    index.upsert_files(&[meta_b]).unwrap();
    queue::enqueue(&pool, &["file_b"]).await.unwrap();
    let e = queue::claim(&pool, "worker-e", Duration::from_secs(60), 5)
        .await
        .unwrap();
    assert_eq!(e[0].file.meta.id, "file_b");
    let taken = queue::complete(&pool, &e[0], &outcome("dd"), || panic!("installed"))
        .await
        .unwrap();
    assert_eq!(taken, Completion::PathTaken);
    assert_eq!(index.file("file_b").unwrap().unwrap().sha256, None);
}

/// A batch of completions decides each item as one completion would: a stale lease records
/// nothing, a path another file holds is refused, the rest are recorded and installed, in one
/// transaction. Two of a batch at one path refuse it as a whole (nothing recorded or
/// installed), and each can still complete alone.
#[tokio::test(flavor = "multi_thread")]
async fn a_batch_of_completions_decides_each_item_as_one_completion_would() {
    use claudedl::fleet::queue::{self, Completion};
    use claudedl::store::index::{FileMeta, FileOutcome, Index, PgIndex};

    let db = postgres::database();
    let config: tokio_postgres::Config = db.url.parse().unwrap();
    let mut index = PgIndex::connect(&config, &db.name).unwrap();
    let meta = |n: usize| FileMeta {
        id: format!("file_{n}"),
        filename: format!("{n}.bin"),
        mime_type: "application/octet-stream".into(),
        size_bytes: 3,
        created_at: "2026-08-01T00:00:00Z".into(),
        downloadable: Some(true),
        expires_at: None,
    };
    index
        .upsert_files(&(1..=7).map(meta).collect::<Vec<_>>())
        .unwrap();
    let pool = claudedl::fleet::pool(config, 2).unwrap();
    let lease = Duration::from_secs(60);
    let outcome = |path: &str| FileOutcome::Complete {
        path: path.into(),
        sha256: format!("sha of {path}"),
        etag: None,
        retries: 0,
        encrypted: false,
    };
    // file_1: claimed by A with a lease over at once, swept, claimed by B.
    queue::enqueue(&pool, &["file_1"]).await.unwrap();
    let stale = queue::claim(&pool, "worker-a", Duration::ZERO, 1)
        .await
        .unwrap();
    queue::sweep(&pool).await.unwrap();
    queue::claim(&pool, "worker-b", lease, 1).await.unwrap();
    // file_5 holds raw/taken.bin.
    queue::enqueue(&pool, &["file_5"]).await.unwrap();
    let five = queue::claim(&pool, "worker-b", lease, 1).await.unwrap();
    let taken = outcome("raw/taken.bin");
    let done = queue::complete(&pool, &five[0], &taken, || Ok(()));
    assert_eq!(done.await.unwrap(), Completion::Recorded);
    queue::enqueue(&pool, &["file_2", "file_3", "file_4"])
        .await
        .unwrap();
    let mut claims = queue::claim(&pool, "worker-a", lease, 5).await.unwrap();
    claims.sort_by(|a, b| a.file.meta.id.cmp(&b.file.meta.id));
    let batch = [
        (&stale[0], outcome("raw/1.bin")),
        (&claims[0], outcome("raw/2.bin")),
        (&claims[1], outcome("raw/taken.bin")),
        (&claims[2], outcome("raw/4.bin")),
    ];
    let mut installed = Vec::new();
    let completions = queue::complete_batch(&pool, &batch, |completions| {
        installed.extend_from_slice(completions);
        Ok(())
    })
    .await
    .unwrap();
    use Completion::{LeaseLost, PathTaken, Recorded};
    let decided = [LeaseLost, Recorded, PathTaken, Recorded];
    assert_eq!(completions.as_deref(), Some(&decided[..]));
    assert_eq!(installed, decided, "install was told the same");
    let sha = |id: &str| index.file(id).unwrap().unwrap().sha256;
    assert_eq!(sha("file_1"), None);
    assert_eq!(sha("file_2").as_deref(), Some("sha of raw/2.bin"));
    assert_eq!(sha("file_3"), None);
    assert_eq!(sha("file_4").as_deref(), Some("sha of raw/4.bin"));
    let done = "SELECT string_agg(file_id, ',' ORDER BY file_id) FROM work_items \
                WHERE state = 'done' AND completed_by = 'worker-a'";
    assert_eq!(psql(&db, done), "file_2,file_4");

    queue::enqueue(&pool, &["file_6", "file_7"]).await.unwrap();
    let pair = queue::claim(&pool, "worker-c", lease, 2).await.unwrap();
    let same = [
        (&pair[0], outcome("raw/same.bin")),
        (&pair[1], outcome("raw/same.bin")),
    ];
    let refused = queue::complete_batch(&pool, &same, |_| panic!("installed"))
        .await
        .unwrap();
    assert_eq!(refused, None);
    assert_eq!((sha("file_6"), sha("file_7")), (None, None));
    let alone = queue::complete(&pool, &pair[0], &same[0].1, || Ok(()));
    assert_eq!(alone.await.unwrap(), Recorded);
}

/// The budget row's schedule on the database's clock: `burst + 1` at once, then one every
/// `60 / rate` seconds; a 429's pause is a floor for the next reservation.
#[tokio::test(flavor = "multi_thread")]
async fn the_shared_budget_reserves_slots_on_the_database_clock() {
    use claudedl::fleet::budget::{self, PgBudget};
    use claudedl::http::governor::shared::SharedBudget;

    let db = postgres::database();
    let config: tokio_postgres::Config = db.url.parse().unwrap();
    drop(claudedl::store::index::PgIndex::connect(&config, &db.name).unwrap());
    let pool = claudedl::fleet::pool(config, 2).unwrap();
    let shared = PgBudget::new(pool.clone());
    assert_eq!(
        shared.reserve().await,
        Duration::ZERO,
        "no row: no shared budget"
    );
    budget::set(&pool, 60.0, 2).await.unwrap();
    let mut waits = Vec::new();
    for _ in 0..5 {
        waits.push(shared.reserve().await.as_secs_f64());
    }
    assert_eq!(waits[..3], [0.0, 0.0, 0.0], "{waits:?}");
    assert!((0.8..=1.0).contains(&waits[3]), "{waits:?}");
    assert!((1.8..=2.0).contains(&waits[4]), "{waits:?}");
    shared
        .pause(std::time::SystemTime::now() + Duration::from_secs(30))
        .await;
    let paused = shared.paused_for().await.as_secs_f64();
    assert!((29.0..=30.0).contains(&paused), "{paused}");
    let next = shared.reserve().await.as_secs_f64();
    assert!(
        (29.0..=30.0).contains(&next),
        "the pause is a floor: {next}"
    );
}

/// Three workers, each allowed 60,000 requests a minute on its own, share a budget of 600 a
/// minute (burst 2): no second of the mock's log holds more than rate + burst + 1 content
/// requests (with a margin for a loaded machine sending a reserved slot late), and every file
/// still lands.
#[tokio::test(flavor = "multi_thread")]
async fn workers_share_one_request_budget() {
    let files = account(40, 1024);
    let (api, db) = fleet(files.clone()).await;
    budget_and_queue(&api, &db, "600", "2").await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let args = ["-j", "4", "--exit-when-empty"];
    let workers = spawn_workers(&api, &db, d, 3, &args);
    for worker in workers {
        let (status, _, stderr) = finish(worker).await;
        assert!(status.success(), "{stderr}");
    }
    assert_all_complete(&db, dir.path(), &files);
    let content = |r: &claudedl_mock::api::ApiRequest| r.path.ends_with("/content");
    let busiest = api.max_in_window(Duration::from_secs(1), content);
    eprintln!("busiest second: {busiest} content requests (budget 10/s, burst 2)");
    // Unshared, the three workers send all 40 within a second.
    assert!(
        busiest <= 10 + 2 + 1 + 7,
        "{busiest} requests in one second"
    );
}

/// Benchmark (ignored: run with `cargo test --test it fleet::queue_throughput -- --ignored
/// --nocapture`): claims plus completions per second, 8 clients on the test cluster (fsync off),
/// each claiming 8 items at a time and completing each in its own transaction.
#[tokio::test(flavor = "multi_thread")]
#[ignore]
async fn queue_throughput() {
    use claudedl::fleet::queue::{self, Completion};
    use claudedl::store::index::{FileMeta, FileOutcome, Index, PgIndex};

    const ITEMS: usize = 8000;
    let db = postgres::database();
    let config: tokio_postgres::Config = db.url.parse().unwrap();
    let mut index = PgIndex::connect(&config, &db.name).unwrap();
    let metas: Vec<FileMeta> = (0..ITEMS)
        .map(|n| FileMeta {
            id: format!("file_{n:06}"),
            filename: "x.bin".into(),
            mime_type: "application/octet-stream".into(),
            size_bytes: 1,
            created_at: "2026-08-01T00:00:00Z".into(),
            downloadable: Some(true),
            expires_at: None,
        })
        .collect();
    for page in metas.chunks(1000) {
        index.upsert_files(page).unwrap();
    }
    let pool = claudedl::fleet::pool(config, 8).unwrap();
    let ids: Vec<&str> = metas.iter().map(|m| m.id.as_str()).collect();
    queue::enqueue(&pool, &ids).await.unwrap();
    let started = Instant::now();
    let mut clients = tokio::task::JoinSet::new();
    for client in 0..8 {
        let pool = pool.clone();
        clients.spawn(async move {
            let worker = format!("bench-{client}");
            let mut done = 0;
            loop {
                let claims = queue::claim(&pool, &worker, Duration::from_secs(60), 8)
                    .await
                    .unwrap();
                if claims.is_empty() {
                    return done;
                }
                for claim in claims {
                    let outcome = FileOutcome::Complete {
                        path: format!("raw/{}", claim.file.meta.id),
                        sha256: "00".repeat(32),
                        etag: None,
                        retries: 0,
                        encrypted: false,
                    };
                    let end = queue::complete(&pool, &claim, &outcome, || Ok(())).await;
                    assert_eq!(end.unwrap(), Completion::Recorded);
                    done += 1;
                }
            }
        });
    }
    let done: usize = clients.join_all().await.into_iter().sum();
    let elapsed = started.elapsed();
    assert_eq!(done, ITEMS);
    eprintln!(
        "{ITEMS} items claimed and completed by 8 clients in {elapsed:.2?}: {:.0} items/s",
        ITEMS as f64 / elapsed.as_secs_f64()
    );
}

/// `worker --encrypt-to`: every file lands as an age file the real `age` CLI decrypts to the
/// content, and the index keeps the plaintext's hash; a later plaintext worker is refused.
#[tokio::test(flavor = "multi_thread")]
async fn workers_encrypt_at_rest() {
    let keys = crate::crypt::Keys::new();
    let files = account(4, 70_000);
    let (api, db) = fleet(files.clone()).await;
    run_ok(&api, &db, &["enqueue"]).await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let sealed = ["--exit-when-empty", "--encrypt-to", keys.recipient.as_str()];
    let (status, summary, stderr) = finish(spawn_worker(&api, &db, d, &sealed)).await;
    assert!(status.success(), "{stderr}");
    assert_eq!(summary["completed"], 4);
    let expected = expected_hashes(&files);
    let contents: HashMap<String, Vec<u8>> = files
        .iter()
        .map(|f| (f.id.clone(), f.content.to_vec()))
        .collect();
    let rows = psql(
        &db,
        "SELECT id, sha256, path, encrypted FROM files ORDER BY id",
    );
    for line in rows.lines() {
        let [id, hash, path, encrypted] = line.split('|').collect::<Vec<_>>()[..] else {
            panic!("row {line}");
        };
        assert_eq!((hash, encrypted), (expected[id].as_str(), "t"), "{id}");
        assert!(path.ends_with(".age"), "{path}");
        assert_eq!(
            keys.age_decrypt(&dir.path().join(path)),
            contents[id],
            "{path}"
        );
    }
    psql(&db, "UPDATE work_items SET state = 'queued'");
    let plain = claudedl(&api, &db)
        .args(["worker", "--data-dir", d, "--exit-when-empty"])
        .output()
        .await
        .unwrap();
    assert_eq!(plain.status.code(), Some(2), "{}", text(&plain.stderr));
    assert!(
        text(&plain.stderr).contains("encrypted"),
        "{}",
        text(&plain.stderr)
    );
}

/// A database that cannot be reached is an error naming it without its password, not a crash.
#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_database_is_a_clear_error() {
    let api = MockApi::start(MockApiConfig::new(FileSet::Explicit(Vec::new()))).await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let commands = [
        &["ls", "--data-dir", d][..],
        &["fleet", "status"],
        &["enqueue"],
    ];
    for args in commands {
        let out = crate::api::claudedl(&api)
            .args(args)
            .env(
                "CLAUDEDL_DB",
                "postgresql://fleet:hunter2@127.0.0.1:1/claudedl",
            )
            .output()
            .await
            .unwrap();
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(
            stderr.contains("postgresql://fleet@127.0.0.1:1/claudedl"),
            "{stderr}"
        );
        assert!(
            !stderr.contains("hunter2") && !stderr.contains("panicked"),
            "{stderr}"
        );
    }
}

/// A worker whose lease is taken from it (expired and claimed by another) stops that transfer
/// at its next heartbeat instead of finishing it for nothing, and records nothing.
#[tokio::test(flavor = "multi_thread")]
async fn a_transfer_whose_lease_is_gone_is_abandoned() {
    let files = account(1, 1024 * 1024);
    let (api, db) = fleet(files).await;
    run_ok(&api, &db, &["enqueue"]).await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let log = dir.path().join("worker.log");
    let log_arg = log.to_str().unwrap();
    let slow = [
        "--limit-rate",
        "32KiB",
        "--log-format",
        "json",
        "--log-file",
        log_arg,
    ];
    let worker = spawn_worker(&api, &db, d, &slow);
    wait_for("the lease", || {
        count(
            &db,
            "SELECT count(*) FROM work_items WHERE state = 'leased'",
        ) == 1
    })
    .await;
    // What a sweep and another worker's claim do to it.
    psql(
        &db,
        "UPDATE work_items SET worker = 'intruder', epoch = epoch + 1, \
         lease_until = now() + interval '1 hour'",
    );
    wait_for("the transfer to be abandoned", || {
        std::fs::read_to_string(&log).is_ok_and(|l| l.contains("fleet_lease_abandoned"))
    })
    .await;
    signal(worker.id().unwrap(), rustix::process::Signal::TERM);
    let (status, summary, stderr) = finish(worker).await;
    assert!(status.success(), "{stderr}");
    assert_eq!(
        (
            &summary["abandoned"],
            &summary["lost"],
            &summary["released"]
        ),
        (&1.into(), &0.into(), &0.into()),
        "{summary}"
    );
    let item = psql(&db, "SELECT worker, epoch, state FROM work_items");
    assert_eq!(
        item, "intruder|2|leased",
        "the new holder's lease is untouched"
    );
    assert_eq!(psql(&db, "SELECT state FROM files"), "pending");
}

/// A spend-limit 429 met by one worker halts the fleet through the budget row: every worker
/// stops sending, releases its leases and exits 5; `fleet init --rpm` clears the halt and a new
/// worker finishes everything.
#[tokio::test(flavor = "multi_thread")]
async fn the_spend_limit_halts_the_whole_fleet() {
    use claudedl_mock::api::{ApiFault, Route};

    let files = account(30, 2048);
    let cap = ApiFault::SpendLimit {
        route: Route::FileContent,
        times: 1,
    };
    let api =
        MockApi::start(MockApiConfig::new(FileSet::Explicit(files.clone())).with_fault(cap)).await;
    let db = postgres::database();
    budget_and_queue(&api, &db, "300", "1").await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let args = ["-j", "2", "--exit-when-empty"];
    let workers = spawn_workers(&api, &db, d, 3, &args);
    for worker in workers {
        let (status, summary, stderr) = finish(worker).await;
        assert_eq!(status.code(), Some(5), "{summary} {stderr}");
        assert!(
            summary["halted"].as_str().unwrap().contains("spend limit"),
            "{summary}"
        );
    }
    let log = api.requests();
    let capped = log.iter().position(|r| r.status == 429).expect("the 429");
    let after = log[capped + 1..]
        .iter()
        .filter(|r| r.path.ends_with("/content"))
        .count();
    assert!(after <= 2, "{after} content requests after the spend limit");
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM work_items WHERE state = 'leased'"
        ),
        0
    );
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM work_items WHERE state = 'failed'"
        ),
        0
    );
    assert_ne!(
        psql(&db, "SELECT coalesce(halted, '') FROM fleet_budget"),
        ""
    );

    run_ok(&api, &db, &["fleet", "init", "--rpm", "6000"]).await;
    let (status, _, stderr) = finish(spawn_worker(&api, &db, d, &args)).await;
    assert!(status.success(), "{stderr}");
    assert_all_complete(&db, dir.path(), &files);
}

/// `--health-file`: written at start and rewritten at every heartbeat (every third of the
/// lease), so a liveness probe can check its age.
#[tokio::test(flavor = "multi_thread")]
async fn the_health_file_is_touched_at_every_heartbeat() {
    let (api, db) = fleet(Vec::new()).await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let health = dir.path().join("alive");
    let worker = spawn_worker(&api, &db, d, &["--health-file", health.to_str().unwrap()]);
    let modified = || std::fs::metadata(&health).and_then(|m| m.modified()).ok();
    wait_for("the health file", || modified().is_some()).await;
    let first = modified().unwrap();
    // A lease of 2 s beats every 0.67 s; the registration wrote the file before any beat.
    wait_for("a heartbeat to touch it", || modified() > Some(first)).await;
    signal(worker.id().unwrap(), rustix::process::Signal::TERM);
    let (status, _, stderr) = finish(worker).await;
    assert_eq!(status.code(), Some(0), "{stderr}");
}

mod bench;
mod budget;
mod scale;
mod tls;
