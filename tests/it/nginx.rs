//! Downloads from a real nginx: parallel ranges, resume with If-Range, a file that changed.

use std::sync::{Arc, Mutex};

use claudedl::engine::{Reporter, TransferError, TransferReport, TransferSpec, TransferStatus};
use claudedl::store::{ResumeState, StatePaths};

use crate::support::nginx::Nginx;
use crate::support::{MIB, Recorder, data, engine, sha256, sha256_file, spec, test_config};

#[tokio::test(flavor = "multi_thread")]
async fn parallel_ranges_reassemble_the_exact_file() {
    let nginx = Nginx::start();
    let content = data(20 * MIB + 12_345, 1);
    nginx.put("big.bin", &content);
    let out = tempfile::tempdir().unwrap();
    let output = out.path().join("big.bin");

    let report = engine(test_config(8))
        .download(0, &spec(&nginx.url("big.bin"), &output), Recorder::new())
        .await
        .unwrap();

    assert_eq!(report.status, TransferStatus::Downloaded);
    assert_eq!(sha256_file(&output), sha256(&content));
    assert_eq!(report.sha256.as_deref(), Some(sha256(&content).as_str()));
    let log = nginx.log();
    assert!(log.iter().all(|l| l.status == 206), "{log:?}");
    assert!(
        log.len() >= 8,
        "expected at least one request per connection: {log:?}"
    );
    // Every byte came over the wire at least once (a range taken over mid-flight is cut).
    let served: u64 = log.iter().map(|l| l.body_bytes).sum();
    assert!(served >= content.len() as u64);
    let leftovers = std::fs::read_dir(out.path()).unwrap().count();
    assert_eq!(leftovers, 1, "no .part or state file may remain");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_interrupted_download_resumes_with_if_range_and_fetches_only_what_is_missing() {
    let nginx = Nginx::start();
    let content = data(16 * MIB, 2);
    nginx.put("f.bin", &content);
    let out = tempfile::tempdir().unwrap();
    let output = out.path().join("f.bin");
    let first = engine(test_config(4));
    let recorder = crate::support::Recorder::cancelling_after(6 * MIB as u64, &first);

    let error = first
        .download(0, &spec(&nginx.url("f.bin"), &output), recorder)
        .await
        .unwrap_err();
    assert!(error.is_cancelled(), "{error}");
    let state = ResumeState::load(&StatePaths::beside(&output).state).expect("state is saved");
    let done = state.done.covered();
    assert!(done > 0 && done < content.len() as u64, "done {done}");
    assert!(
        !output.exists(),
        "the output name never holds a partial file"
    );
    let before = nginx.log().len();

    let report = engine(test_config(4))
        .download(0, &spec(&nginx.url("f.bin"), &output), Recorder::new())
        .await
        .unwrap();

    assert_eq!(sha256_file(&output), sha256(&content));
    assert_eq!(report.resumed_from, done);
    assert_eq!(report.fetched, content.len() as u64 - done);
    let rerun = &nginx.log()[before..];
    assert!(
        rerun
            .iter()
            .all(|l| l.status == 206 && !l.if_range.is_empty()),
        "{rerun:?}"
    );
    assert!(
        rerun
            .iter()
            .all(|l| l.if_range == state.etag.clone().unwrap()),
        "{rerun:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_file_changed_between_runs_is_started_over() {
    let nginx = Nginx::start();
    let old = data(8 * MIB, 3);
    nginx.put("c.bin", &old);
    let out = tempfile::tempdir().unwrap();
    let output = out.path().join("c.bin");
    let first = engine(test_config(4));
    let recorder = Recorder::cancelling_after(2 * MIB as u64, &first);
    let error = first
        .download(0, &spec(&nginx.url("c.bin"), &output), recorder)
        .await
        .unwrap_err();
    assert!(error.is_cancelled());

    let new = data(9 * MIB, 4);
    nginx.put("c.bin", &new);
    let before = nginx.log().len();
    let recorder = Recorder::new();
    engine(test_config(4))
        .download(0, &spec(&nginx.url("c.bin"), &output), recorder.clone())
        .await
        .unwrap();

    assert_eq!(sha256_file(&output), sha256(&new));
    assert!(
        recorder
            .notices()
            .iter()
            .any(|n| n.contains("changed on the server")),
        "{:?}",
        recorder.notices()
    );
    // The resumed request was refused by If-Range: nginx answered 200 with the new file.
    let rerun = &nginx.log()[before..];
    assert_eq!(rerun[0].status, 200, "{rerun:?}");
    assert!(!rerun[0].if_range.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_existing_output_is_left_alone_unless_forced() {
    let nginx = Nginx::start();
    nginx.put("e.bin", &data(1000, 5));
    let out = tempfile::tempdir().unwrap();
    let output = out.path().join("e.bin");
    std::fs::write(&output, b"mine").unwrap();

    let report = engine(test_config(2))
        .download(0, &spec(&nginx.url("e.bin"), &output), Recorder::new())
        .await
        .unwrap();
    assert_eq!(report.status, TransferStatus::AlreadyPresent);
    assert_eq!(std::fs::read(&output).unwrap(), b"mine");
    assert!(nginx.log().is_empty(), "no request for an existing file");

    let mut forced = spec(&nginx.url("e.bin"), &output);
    forced.overwrite = true;
    engine(test_config(2))
        .download(0, &forced, Recorder::new())
        .await
        .unwrap();
    assert_eq!(std::fs::read(&output).unwrap(), data(1000, 5));
}

#[tokio::test(flavor = "multi_thread")]
async fn many_small_files_take_one_request_each() {
    let nginx = Nginx::start();
    let files: Vec<Vec<u8>> = (0..12)
        .map(|i| data(4096 + i * 100, 10 + i as u64))
        .collect();
    let out = tempfile::tempdir().unwrap();
    let specs = served(&nginx, &files, out.path());

    let results = engine(test_config(8))
        .download_all(specs, 4, Recorder::new())
        .await;

    assert_hashes(&results, &files);
    assert_eq!(nginx.log().len(), files.len());
}

/// Serve each of `files` as `fN.bin`; a spec for each into `dir`.
fn served(nginx: &Nginx, files: &[Vec<u8>], dir: &std::path::Path) -> Vec<TransferSpec> {
    files
        .iter()
        .enumerate()
        .map(|(i, bytes)| {
            let name = format!("f{i}.bin");
            nginx.put(&name, bytes);
            spec(&nginx.url(&name), &dir.join(&name))
        })
        .collect()
}

/// Every transfer succeeded with the hash of its file.
fn assert_hashes(results: &[Result<TransferReport, TransferError>], files: &[Vec<u8>]) {
    assert_eq!(results.len(), files.len());
    for (result, bytes) in results.iter().zip(files) {
        let report = result.as_ref().unwrap();
        assert_eq!(report.sha256.as_deref(), Some(sha256(bytes).as_str()));
    }
}

/// Records the thread each transfer ended on.
#[derive(Default)]
struct ThreadsSeen(Mutex<Vec<Option<String>>>);

impl Reporter for ThreadsSeen {
    fn finished(&self, _id: usize, _result: &Result<TransferReport, TransferError>) {
        let name = std::thread::current().name().map(str::to_owned);
        self.0.lock().unwrap().push(name);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_batch_runs_in_one_lane_per_core_each_on_a_thread_of_its_own() {
    let nginx = Nginx::start();
    let files: Vec<Vec<u8>> = (0..64).map(|i| data(2048, 100 + i as u64)).collect();
    let out = tempfile::tempdir().unwrap();
    let specs = served(&nginx, &files, out.path());
    let threads = Arc::new(ThreadsSeen::default());

    let results = engine(test_config(8))
        .download_all(specs, 16, threads.clone())
        .await;

    assert_hashes(&results, &files);
    assert_eq!(nginx.log().len(), files.len(), "one request a file");
    let cores = std::thread::available_parallelism().unwrap().get();
    let seen = threads.0.lock().unwrap().clone();
    assert_eq!(seen.len(), files.len());
    if cores == 1 {
        return; // one lane, on the caller's runtime
    }
    let lanes: std::collections::BTreeSet<String> = seen
        .into_iter()
        .map(|name| name.expect("a lane's thread has a name"))
        .collect();
    assert!(
        lanes.iter().all(|name| name.starts_with("claudedl-lane-")),
        "every transfer ran on a lane's thread: {lanes:?}"
    );
    // 16 files at once: one lane per core, at most 4 (each keeps at least 4 files at once).
    assert_eq!(lanes.len(), cores.min(4), "{lanes:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_empty_file_downloads_as_empty() {
    let nginx = Nginx::start();
    nginx.put("empty", b"");
    let out = tempfile::tempdir().unwrap();
    let output = out.path().join("empty");
    let report = engine(test_config(4))
        .download(0, &spec(&nginx.url("empty"), &output), Recorder::new())
        .await
        .unwrap();
    assert_eq!(std::fs::read(&output).unwrap(), b"");
    assert_eq!(report.sha256.as_deref(), Some(sha256(b"").as_str()));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_complete_part_left_by_a_kill_before_the_rename_is_finished_without_refetching() {
    let nginx = Nginx::start();
    let content = data(3 * MIB, 6);
    nginx.put("done.bin", &content);
    let out = tempfile::tempdir().unwrap();
    let output = out.path().join("done.bin");
    engine(test_config(4))
        .download(0, &spec(&nginx.url("done.bin"), &output), Recorder::new())
        .await
        .unwrap();
    // Recreate the moment between the last checkpoint and the rename.
    let paths = StatePaths::beside(&output);
    std::fs::rename(&output, &paths.part).unwrap();
    let before = nginx.log().len();
    let mut state = ResumeState::new(nginx.url("done.bin"));
    state.total = Some(content.len() as u64);
    state.ranges_supported = true;
    state.done.insert(0..content.len() as u64);
    state.etag = Some(format!(
        "\"{:x}-{:x}\"",
        std::fs::metadata(nginx.root().join("done.bin"))
            .unwrap()
            .modified()
            .unwrap()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
        content.len()
    ));
    state.save(&paths.state).unwrap();

    let report = engine(test_config(4))
        .download(0, &spec(&nginx.url("done.bin"), &output), Recorder::new())
        .await
        .unwrap();

    assert_eq!(sha256_file(&output), sha256(&content));
    assert_eq!(report.fetched, 0);
    assert_eq!(report.resumed_from, content.len() as u64);
    let rerun = &nginx.log()[before..];
    assert_eq!(
        rerun.len(),
        1,
        "one probe confirms the file is unchanged: {rerun:?}"
    );
    assert_eq!(rerun[0].status, 206);
    assert!(!paths.part.exists() && !paths.state.exists());
}
