//! Segments (issue 14, requirement 5): one large file queued as 64 KiB-aligned segments and
//! fetched by several `claudedl worker` processes at once into one shared directory, one of
//! them SIGKILLed mid-segment.

use std::collections::HashMap;
use std::process::Stdio;

use claudedl_mock::api::{FileSet, MockApi, MockApiConfig, MockFile};
use tokio::process::Child;

use crate::fleet::{
    claudedl, count, finish, psql, run_ok, signal, spawn_worker, spawn_workers, wait_for,
};
use crate::support::postgres::{self, TestDb};
use crate::support::{data, mock_file, sha256, sha256_file, text};

const MIB: u64 = 1024 * 1024;

/// An API serving `files` with `cap` bytes/s per connection, and a fleet database.
async fn fleet_capped(files: Vec<MockFile>, cap: u64) -> (MockApi, TestDb) {
    let config = MockApiConfig::new(FileSet::Explicit(files)).with_connection_cap(cap);
    let api = MockApi::start(config).await;
    let db = postgres::database();
    run_ok(&api, &db, &["fleet", "init"]).await;
    (api, db)
}

/// The byte ranges content requests asked for (`bytes=S-E` as `S..E + 1`), in order.
fn requested(api: &MockApi) -> Vec<std::ops::Range<u64>> {
    let mut ranges = Vec::new();
    for request in api.requests() {
        if !request.path.ends_with("/content") {
            continue;
        }
        let range = request
            .header("range")
            .expect("every segment asks for a range");
        let bounds: Vec<u64> = range
            .strip_prefix("bytes=")
            .map(|r| r.split('-').filter_map(|n| n.parse().ok()).collect())
            .unwrap_or_default();
        let [start, last] = bounds[..] else {
            panic!("range {range}");
        };
        ranges.push(start..last + 1);
    }
    ranges
}

/// How many content requests asked for a range starting at each offset.
fn range_starts(api: &MockApi) -> HashMap<u64, usize> {
    let mut starts = HashMap::new();
    for range in requested(api) {
        *starts.entry(range.start).or_default() += 1;
    }
    starts
}

/// The case: 256 MiB in 16 segments over 4 workers, one SIGKILLed mid-segment (part of
/// it saved). The file ends with the right hash, recorded once; the victim's segment is resumed
/// by another worker from its saved progress, and no other segment is fetched twice.
#[tokio::test(flavor = "multi_thread")]
async fn a_large_file_in_segments_survives_a_killed_worker() {
    const SIZE: u64 = 256 * MIB;
    const SEGMENT: u64 = 16 * MIB;
    let content = data(SIZE as usize, 14);
    let expected = sha256(&content);
    let file = mock_file("file_big", "big.bin", "2026-08", content);
    // 8 MiB/s per connection: a segment takes 2 s, so a kill lands mid-segment.
    let (api, db) = fleet_capped(vec![file], 8 * MIB).await;
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
    // The victim is mid-segment: it has saved some of its segment, not all.
    let victim_id = || {
        psql(
            &db,
            &format!("SELECT id FROM workers WHERE pid = {victim_pid}"),
        )
    };
    let progress = |id: &str| {
        psql(
            &db,
            &format!(
                "SELECT range_start, done_bytes FROM work_items \
                 WHERE worker = '{id}' AND state = 'leased' AND done_bytes > 0"
            ),
        )
    };
    wait_for("the victim's segment half saved", || {
        let id = victim_id();
        !id.is_empty() && !progress(&id).is_empty()
    })
    .await;
    signal(victim_pid, rustix::process::Signal::KILL);
    victim.wait().await.unwrap();
    let victim_id = victim_id();
    let saved = progress(&victim_id);
    let [start, saved] = saved
        .split('|')
        .map(|n| n.parse::<u64>().unwrap())
        .collect::<Vec<_>>()[..]
    else {
        panic!("{saved}");
    };
    assert!(saved < SEGMENT && saved % (64 * 1024) == 0, "saved {saved}");
    let held = format!("SELECT count(*) FROM work_items WHERE worker = '{victim_id}'");
    assert_eq!(count(&db, &held), 1, "the victim held one segment");

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
    // Every request stays within one segment, and all of them ask for the file once plus at
    // most the one segment again.
    let requests = requested(&api);
    for range in &requests {
        let segment = range.start / SEGMENT;
        assert!(
            range.end <= (segment + 1) * SEGMENT,
            "{range:?} crosses a segment"
        );
    }
    let asked: u64 = requests.iter().map(|r| r.end - r.start).sum();
    assert!(asked <= SIZE + SEGMENT - saved, "{asked} bytes asked for");
    eprintln!(
        "victim saved {saved} of its segment at {start}; {asked} bytes asked for in {} requests",
        requests.len()
    );
    // The victim's segment resumed where it had saved its progress.
    assert!(
        requests.iter().any(|r| r.start == start + saved),
        "a request from {} on",
        start + saved
    );
    let staging = dir.path().join("tmp/fleet/segments-file_big");
    assert!(!staging.exists(), "the staging file was renamed into place");
}

/// The secret key the workers get (moto accepts any): it must appear in no output.
const SECRET: &str = "secret-never-logged-7c1d";

/// A moto S3 server on 127.0.0.1, stopped when dropped.
struct Moto {
    child: std::process::Child,
    endpoint: String,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Moto {
    /// `$CLAUDEDL_MOTO` (CI sets it: then it must run), else `moto_server` on the PATH, else
    /// `None` (the caller skips, saying so).
    #[allow(
        clippy::disallowed_methods,
        reason = "the test harness's switch, not a setting"
    )]
    fn start() -> Option<Moto> {
        let (program, required) = match std::env::var("CLAUDEDL_MOTO") {
            Ok(path) => (path, true),
            Err(_) => ("moto_server".to_owned(), false),
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let spawned = std::process::Command::new(&program)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn();
        let child = match spawned {
            Ok(child) => child,
            Err(error) if !required => {
                let hint = "pip install 'moto[server]'";
                eprintln!("SKIPPED: moto is not installed ({program}: {error}); {hint}");
                return None;
            }
            Err(error) => panic!("$CLAUDEDL_MOTO={program}: {error}"),
        };
        let moto = Moto {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
        };
        let started = std::time::Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(started.elapsed().as_secs() < 30, "moto did not start");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        Some(moto)
    }

    async fn create_bucket(&self, bucket: &str) {
        let url = format!("{}/{bucket}", self.endpoint);
        let response = reqwest::Client::new().put(url).send().await.unwrap();
        assert!(response.status().is_success(), "{}", response.status());
    }

    /// A client of `bucket` on this server, signing its requests (moto refuses anonymous
    /// reads of some).
    fn bucket(&self, bucket: &str) -> object_store::aws::AmazonS3 {
        object_store::aws::AmazonS3Builder::new()
            .with_endpoint(&self.endpoint)
            .with_allow_http(true)
            .with_bucket_name(bucket)
            .with_region("us-east-1")
            .with_access_key_id("testing")
            .with_secret_access_key("testing")
            .build()
            .unwrap()
    }

    /// The object `key`.
    async fn object(&self, bucket: &str, key: &str) -> bytes::Bytes {
        use object_store::ObjectStoreExt;
        let got = self
            .bucket(bucket)
            .get(&object_store::path::Path::from(key))
            .await;
        got.unwrap_or_else(|e| panic!("{key}: {e}"))
            .bytes()
            .await
            .unwrap()
    }

    /// A worker storing into `s3://bucket/prefix` on this server (`dir` only for staging).
    fn worker(&self, api: &MockApi, db: &TestDb, dir: &str, args: &[&str]) -> Child {
        let mut command = self.claudedl(api, db);
        command
            .args(["worker", "--data-dir", dir, "--json", "--lease", "2"])
            .args(["-j", "1", "--exit-when-empty"])
            .args(args)
            .stdin(Stdio::null())
            .kill_on_drop(true);
        command.spawn().unwrap()
    }

    /// `claudedl` with this server's endpoint and credentials in the AWS variables.
    fn claudedl(&self, api: &MockApi, db: &TestDb) -> tokio::process::Command {
        let mut command = claudedl(api, db);
        command
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", SECRET)
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ENDPOINT_URL", &self.endpoint);
        command
    }

    /// Whether the multipart upload `upload` of `location` (`s3://bucket/key`) takes a part.
    async fn upload_open(&self, location: &str, upload: &str) -> bool {
        use object_store::multipart::MultipartStore;
        let (bucket, key) = location
            .strip_prefix("s3://")
            .and_then(|rest| rest.split_once('/'))
            .unwrap();
        let key = object_store::path::Path::from(key);
        let part = object_store::PutPayload::from(vec![0u8; 16]);
        self.bucket(bucket)
            .put_part(&key, &upload.to_owned(), 9, part)
            .await
            .is_ok()
    }
}

/// To S3 (moto), the case: 256 MiB in 16 segments over 4 workers, one SIGKILLed after
/// it uploaded a part. One multipart upload, its parts uploaded by several processes and
/// completed by a survivor; the object's bytes hash right; the file is recorded once; at most
/// one segment fetched twice (a segment to S3 saves no progress); no upload left.
#[tokio::test(flavor = "multi_thread")]
async fn a_large_file_in_segments_to_s3_survives_a_killed_worker() {
    const SIZE: u64 = 256 * MIB;
    const SEGMENT: u64 = 16 * MIB;
    let Some(moto) = Moto::start() else {
        return;
    };
    moto.create_bucket("fleet").await;
    let content = data(SIZE as usize, 15);
    let expected = sha256(&content);
    let file = mock_file("file_s3", "big.bin", "2026-08", content);
    // A small file too: one item, stored with one PUT.
    let small = mock_file("file_small", "small.txt", "2026-08", data(1000, 16));
    let small_hash = sha256(&small.content);
    let (api, db) = fleet_capped(vec![file, small], 8 * MIB).await;
    let queued = run_ok(&api, &db, &["enqueue", "--json", "--segment-size", "16MiB"]).await;
    assert!(queued.contains("\"queued\":17"), "{queued}");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let output = ["--output", "s3://fleet/backup"];
    let mut victim = moto.worker(&api, &db, d, &output);
    let others: Vec<_> = (0..3).map(|_| moto.worker(&api, &db, d, &output)).collect();
    let victim_pid = victim.id().unwrap();
    let victim_id = || {
        psql(
            &db,
            &format!("SELECT id FROM workers WHERE pid = {victim_pid}"),
        )
    };
    wait_for(
        "a part uploaded by the victim, and another segment held",
        || {
            let id = victim_id();
            !id.is_empty()
                && count(
                    &db,
                    &format!("SELECT count(*) FROM work_items WHERE completed_by = '{id}'"),
                ) >= 1
                && count(
                    &db,
                    &format!("SELECT count(*) FROM work_items WHERE worker = '{id}'"),
                ) == 1
        },
    )
    .await;
    let victim_id = victim_id();
    signal(victim_pid, rustix::process::Signal::KILL);
    victim.wait().await.unwrap();
    let mut completed = 0;
    for other in others {
        let (status, summary, stderr) = finish(other).await;
        assert!(status.success(), "{stderr}");
        completed += summary["completed"].as_i64().unwrap();
    }
    let by_victim = format!("SELECT count(*) FROM work_items WHERE completed_by = '{victim_id}'");
    let victim_parts = count(&db, &format!("{by_victim} AND part > 0"));
    let victim_files = count(&db, &format!("{by_victim} AND part = 0"));
    assert_eq!(completed + victim_files, 2, "each file recorded once");
    assert!(victim_parts >= 1, "the victim uploaded a part");
    // The last segment done (its row's time is taken under the file's lock) completed the
    // upload: a survivor, not the process that uploaded the victim's parts.
    let completer = psql(
        &db,
        "SELECT completed_by FROM work_items WHERE part > 0 ORDER BY done_at DESC LIMIT 1",
    );
    assert_ne!(completer, victim_id);
    let uploaders = count(
        &db,
        "SELECT count(DISTINCT completed_by) FROM work_items WHERE part_etag IS NOT NULL",
    );
    assert!(uploaders >= 2, "parts uploaded by {uploaders} processes");
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM work_items WHERE state = 'done' AND part_etag IS NOT NULL"
        ),
        16
    );
    let mut starts: HashMap<u64, usize> = HashMap::new();
    for (request, range) in api
        .requests()
        .iter()
        .filter(|r| r.path.ends_with("/content"))
        .zip(requested(&api))
    {
        if request.path.contains("file_s3") {
            assert!(
                range.end <= (range.start / SEGMENT + 1) * SEGMENT,
                "{range:?} crosses a segment"
            );
            *starts.entry(range.start).or_default() += 1;
        }
    }
    let twice: Vec<_> = starts.iter().filter(|&(_, &n)| n > 1).collect();
    assert!(
        twice.len() <= 1,
        "at most one segment fetched twice: {twice:?}"
    );
    assert_eq!(starts.len(), 16, "every segment fetched: {starts:?}");
    let row = psql(
        &db,
        "SELECT state, sha256, path FROM files WHERE id = 'file_s3'",
    );
    let [state, hash, path] = row.split('|').collect::<Vec<_>>()[..] else {
        panic!("{row}");
    };
    assert_eq!((state, hash), ("complete", expected.as_str()));
    let small_path = psql(
        &db,
        "SELECT path FROM files WHERE id = 'file_small' AND state = 'complete'",
    );
    let stored = moto.object("fleet", &format!("backup/{small_path}")).await;
    assert_eq!(sha256(&stored), small_hash, "the small file's object");
    let object = moto.object("fleet", &format!("backup/{path}")).await;
    assert_eq!(sha256(&object), expected, "the object's bytes");
    assert_eq!(count(&db, "SELECT count(*) FROM file_uploads"), 0);
    assert!(
        !dir.path().join(path).exists(),
        "nothing is written to the data directory but staging"
    );
}

/// Encrypted segments (`--encrypt-to`), to a shared directory and to S3: 20 MiB + 12,345 bytes
/// (the last chunk short) in 3 segments over 2 workers. Each output is one age file that
/// `age -d` decrypts to the content; the index records the plaintext's SHA-256.
#[tokio::test(flavor = "multi_thread")]
async fn encrypted_segments_decrypt_with_age() {
    let keys = crate::crypt::Keys::new();
    let content = data(20 * MIB as usize + 12_345, 17);
    let expected = sha256(&content);
    let file = mock_file("file_sealed", "sealed.bin", "2026-08", content.clone());
    let sealed = ["--encrypt-to", keys.recipient.as_str()];
    let segments = ["enqueue", "--json", "--segment-size", "8MiB"];
    let recorded = |db: &TestDb| {
        let row = psql(db, "SELECT state, sha256, encrypted, path FROM files");
        let [state, hash, encrypted, path] = row.split('|').collect::<Vec<_>>()[..] else {
            panic!("{row}");
        };
        assert_eq!(
            (state, hash, encrypted),
            ("complete", expected.as_str(), "t")
        );
        assert!(path.ends_with(".age"), "{path}");
        assert_eq!(count(db, "SELECT count(*) FROM sealed_files"), 0);
        path.to_owned()
    };

    let (api, db) = fleet_capped(vec![file.clone()], 32 * MIB).await;
    assert!(run_ok(&api, &db, &segments).await.contains("\"queued\":3"));
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let mut args = vec!["-j", "1", "--exit-when-empty"];
    args.extend(sealed);
    let workers = spawn_workers(&api, &db, d, 2, &args);
    for worker in workers {
        let (status, _, stderr) = finish(worker).await;
        assert!(status.success(), "{stderr}");
    }
    let path = recorded(&db);
    assert_eq!(
        keys.age_decrypt(&dir.path().join(&path)),
        content,
        "to a directory"
    );

    let Some(moto) = Moto::start() else {
        return;
    };
    moto.create_bucket("sealed").await;
    let (api, db) = fleet_capped(vec![file], 32 * MIB).await;
    assert!(run_ok(&api, &db, &segments).await.contains("\"queued\":3"));
    let scratch = tempfile::tempdir().unwrap();
    let d = scratch.path().to_str().unwrap();
    let mut args = vec!["--output", "s3://sealed"];
    args.extend(sealed);
    let workers: Vec<_> = (0..2).map(|_| moto.worker(&api, &db, d, &args)).collect();
    for worker in workers {
        let (status, _, stderr) = finish(worker).await;
        assert!(status.success(), "{stderr}");
    }
    let path = recorded(&db);
    let object = moto.object("sealed", &path).await;
    let local = scratch.path().join("object.age");
    std::fs::write(&local, &object).unwrap();
    assert_eq!(keys.age_decrypt(&local), content, "to S3");
}

/// Scaling (ignored; run by hand): one 128 MiB file in 8 segments, the mock capping each
/// connection at 16 MiB/s, fetched by 1, 2 and 4 workers (`-j 1` each) into a shared
/// directory: wall time from the workers' start to the last one's exit, and the speed-up.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "a measurement: cargo test --test it segments::scaling -- --ignored --nocapture"]
async fn scaling() {
    const SIZE: u64 = 128 * MIB;
    let content = data(SIZE as usize, 18);
    let file = mock_file("file_scale", "scale.bin", "2026-08", content);
    let mut one = None;
    for workers in [1, 2, 4] {
        let (api, db) = fleet_capped(vec![file.clone()], 16 * MIB).await;
        run_ok(&api, &db, &["enqueue", "--segment-size", "16MiB"]).await;
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap();
        let started = std::time::Instant::now();
        let children: Vec<_> = (0..workers)
            .map(|_| spawn_worker(&api, &db, d, &["-j", "1", "--exit-when-empty"]))
            .collect();
        for child in children {
            let (status, _, stderr) = finish(child).await;
            assert!(status.success(), "{stderr}");
        }
        let took = started.elapsed().as_secs_f64();
        let one = *one.get_or_insert(took);
        eprintln!(
            "{workers} worker(s): {took:.2} s, {:.1} MiB/s, x{:.2} of one",
            SIZE as f64 / MIB as f64 / took,
            one / took
        );
    }
}

/// A store that refuses (no such bucket) is a failure of the item, retried later with the
/// reason, not the end of the worker; the secret key appears nowhere (log, queue).
#[tokio::test(flavor = "multi_thread")]
async fn a_refusing_store_retries_the_item_and_logs_no_secret() {
    let Some(moto) = Moto::start() else {
        return;
    };
    let file = mock_file("file_nobucket", "a.txt", "2026-08", data(5000, 19));
    let (api, db) = fleet_capped(vec![file], 32 * MIB).await;
    run_ok(&api, &db, &["enqueue"]).await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let worker = moto.worker(&api, &db, d, &["--output", "s3://missing-bucket"]);
    let pid = worker.id().unwrap();
    let failed =
        "SELECT count(*) FROM work_items WHERE state = 'queued' AND last_error IS NOT NULL";
    wait_for("the item queued again with its reason", || {
        count(&db, failed) == 1
    })
    .await;
    signal(pid, rustix::process::Signal::TERM);
    let (status, summary, stderr) = finish(worker).await;
    assert!(status.success(), "the worker drains and exits 0: {stderr}");
    assert_eq!(summary["retried"], 1, "{summary}");
    let reason = psql(&db, "SELECT last_error FROM work_items");
    assert!(reason.contains("missing-bucket"), "{reason}");
    assert!(
        !reason.contains(SECRET) && !stderr.contains(SECRET),
        "{reason}\n{stderr}"
    );
    assert_eq!(
        count(&db, "SELECT count(*) FROM files WHERE state = 'complete'"),
        0
    );
}

/// A fleet with one file of 4 MiB in segments of 1 MiB whose second was given up (as 10 failed
/// claims leave it), the others fetched by a worker: into the shared staging file, or (with
/// `moto`) uploaded as parts of an open upload. The directory is the workers' shared one.
async fn a_given_up_file(id: &str, moto: Option<&Moto>) -> (MockApi, TestDb, tempfile::TempDir) {
    let file = mock_file(id, "big.bin", "2026-08", data(4 * MIB as usize, 21));
    let (api, db) = fleet_capped(vec![file], 1024 * MIB).await;
    run_ok(&api, &db, &["enqueue", "--json", "--segment-size", "1MiB"]).await;
    psql(
        &db,
        "UPDATE work_items SET state = 'failed', attempts = 10, last_error = 'HTTP 500 (test)' \
         WHERE part = 2",
    );
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let worker = match moto {
        Some(moto) => moto.worker(&api, &db, d, &["--output", "s3://abandon/fleet"]),
        None => spawn_worker(&api, &db, d, &["--exit-when-empty", "-j", "2"]),
    };
    let (status, _, stderr) = finish(worker).await;
    assert!(status.success(), "{stderr}");
    let done = "SELECT count(*) FROM work_items WHERE state = 'done'";
    assert_eq!(count(&db, done), 3);
    (api, db, dir)
}

/// `claudedl fleet abandon ID --data-dir DIR --json` (with `moto`'s AWS variables).
async fn abandon(
    api: &MockApi,
    db: &TestDb,
    dir: &tempfile::TempDir,
    moto: Option<&Moto>,
    id: &str,
) -> std::process::Output {
    let mut command = match moto {
        Some(moto) => moto.claudedl(api, db),
        None => claudedl(api, db),
    };
    command.args(["fleet", "abandon", id, "--json", "--data-dir"]);
    command.arg(dir.path()).output().await.unwrap()
}

/// A given-up segmented file in a shared directory: `fleet abandon` refuses while a worker
/// holds a lease on a segment, then drops the file's items, removes its staging file and
/// records it skipped with the last error; the next `enqueue` does not queue it again, and a
/// second abandon says it is not queued. `--undo` makes it wanted again: queued anew.
#[tokio::test(flavor = "multi_thread")]
async fn a_given_up_segmented_file_is_abandoned_for_good() {
    let (api, db, dir) = a_given_up_file("file_dir", None).await;
    let staging = dir.path().join("tmp/fleet/segments-file_dir");
    assert!(
        staging.exists(),
        "the done segments' bytes wait in the staging file"
    );
    psql(
        &db,
        "UPDATE work_items SET state = 'leased', worker = 'w-test' WHERE part = 1",
    );
    let refused = abandon(&api, &db, &dir, None, "file_dir").await;
    let stderr = text(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("w-test") && stderr.contains("lease"),
        "{stderr}"
    );
    let items = "SELECT count(*) FROM work_items";
    assert_eq!(count(&db, items), 4, "nothing changed");
    assert!(staging.exists());
    psql(
        &db,
        "UPDATE work_items SET state = 'done', worker = NULL WHERE part = 1",
    );

    let out = abandon(&api, &db, &dir, None, "file_dir").await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let done: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(done["items"], 4);
    assert_eq!(done["staging_removed"], true);
    assert!(done["upload_aborted"].is_null());
    assert_eq!(count(&db, items), 0);
    assert!(!staging.exists());
    let row = psql(&db, "SELECT state, reason FROM files WHERE id = 'file_dir'");
    assert_eq!(
        row,
        "skipped|abandoned (claudedl fleet abandon): HTTP 500 (test)"
    );

    let again = run_ok(&api, &db, &["enqueue", "--json"]).await;
    assert!(again.contains("\"queued\":0"), "{again}");
    let twice = abandon(&api, &db, &dir, None, "file_dir").await;
    let stderr = text(&twice.stderr);
    assert_eq!(twice.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("not in the queue"), "{stderr}");

    // Taken back: wanted again, and queued anew (every segment) by the next enqueue; once.
    run_ok(&api, &db, &["fleet", "abandon", "--undo", "file_dir"]).await;
    let state = psql(&db, "SELECT state FROM files WHERE id = 'file_dir'");
    assert_eq!(state, "pending");
    let queued = run_ok(&api, &db, &["enqueue", "--json", "--segment-size", "1MiB"]).await;
    assert!(queued.contains("\"queued\":4"), "{queued}");
    let undone = claudedl(&api, &db)
        .args(["fleet", "abandon", "--undo", "file_dir"])
        .output()
        .await
        .unwrap();
    let stderr = text(&undone.stderr);
    assert_eq!(undone.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("was not abandoned"), "{stderr}");
}

/// To S3 (moto): abandoning a given-up segmented file aborts its open multipart upload (a part
/// is refused after) and forgets it; no credential shows.
#[tokio::test(flavor = "multi_thread")]
async fn abandoning_a_file_to_s3_aborts_its_upload() {
    let Some(moto) = Moto::start() else {
        return;
    };
    moto.create_bucket("abandon").await;
    let (api, db, dir) = a_given_up_file("file_s3", Some(&moto)).await;
    let row = psql(&db, "SELECT location, upload_id FROM file_uploads");
    let (location, upload) = row.split_once('|').expect("the parts' upload is recorded");
    assert!(
        moto.upload_open(location, upload).await,
        "the parts' upload is open"
    );
    let out = abandon(&api, &db, &dir, Some(&moto), "file_s3").await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let done: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(done["upload_aborted"], location);
    assert_eq!(done["items"], 4);
    assert!(
        !moto.upload_open(location, upload).await,
        "the upload is aborted"
    );
    assert_eq!(count(&db, "SELECT count(*) FROM file_uploads"), 0);
    assert_eq!(count(&db, "SELECT count(*) FROM work_items"), 0);
    assert!(!text(&out.stderr).contains(SECRET) && !text(&out.stdout).contains(SECRET));
}
