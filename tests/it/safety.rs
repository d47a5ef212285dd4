//! Never lose finished work, never write where it should not (issue 10): one named scenario
//! per defect, each asserting what was wrong before (request counts, bytes, exit codes).

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use claudedl::store::index::{FileState, Index, SqliteIndex};
use claudedl::store::layout::DataDir;
use claudedl_mock::api::{ApiFault, FileSet, MockApi, MockApiConfig, MockFile, Route};
use claudedl_mock::origin::{Fault, Origin, OriginConfig};
use serde_json::json;

use crate::api::{claudedl, run};
use crate::support::{MIB, data, files_under, mock_file, sha256, text};

/// Content requests the mock received for file `id` (a plain id, as sent).
fn content_requests(api: &MockApi, id: &str) -> usize {
    let path = format!("/v1/files/{id}/content");
    api.requests()
        .iter()
        .filter(|r| r.route == Route::FileContent && r.path == path)
        .count()
}

/// Poll (bounded) until `done` holds.
async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn index_of(dir: &Path) -> SqliteIndex {
    SqliteIndex::open(&DataDir::new(dir).index_path()).unwrap()
}

/// The pid of a process that has exited.
fn dead_pid() -> u32 {
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    pid
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sync_killed_after_files_landed_refetches_none_of_them() {
    let small: Vec<MockFile> = (0..6)
        .map(|i| mock_file(&format!("file_s{i}"), "s.bin", "2026-07", data(20_000, i)))
        .collect();
    let big = data(8 * MIB, 99);
    let mut files = small.clone();
    files.push(mock_file("file_big", "big.bin", "2026-08", big.clone()));
    let config_files = files.clone();
    // The big file stalls (every attempt), so the sync never ends on its own.
    let config = MockApiConfig::new(FileSet::Explicit(config_files)).with_fault(ApiFault::Stall {
        route: Route::FileContent,
        after_bytes: MIB as u64,
        times: 1000,
    });
    let api = MockApi::start(config).await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let mut child = claudedl(&api)
        .args(["sync", "--data-dir", d, "--files-only", "-j", "8"])
        .spawn()
        .unwrap();
    let raw = dir.path().join("raw/2026-07");
    wait_until("the small files land in raw/", || {
        raw.exists() && files_under(&raw).len() == small.len()
    })
    .await;
    child.kill().await.unwrap();
    child.wait().await.unwrap();

    api.clear_faults();
    let out = run(&api, &["sync", "--data-dir", d, "--files-only", "--json"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    for file in &small {
        assert_eq!(
            content_requests(&api, &file.id),
            1,
            "{} landed before the kill: never fetched again",
            file.id
        );
    }
    let index = index_of(dir.path());
    files.truncate(0);
    files.extend(small.iter().cloned());
    files.push(mock_file("file_big", "big.bin", "2026-08", big));
    for file in &files {
        let entry = index.file(&file.id).unwrap().unwrap();
        assert_eq!(entry.state, FileState::Complete, "{}", file.id);
        assert_eq!(
            entry.sha256.as_deref(),
            Some(sha256(&file.content).as_str())
        );
        let stored = std::fs::read(dir.path().join(entry.path.unwrap())).unwrap();
        assert_eq!(sha256(&stored), sha256(&file.content), "{}", file.id);
    }
    let left = files_under(&dir.path().join("tmp"));
    assert!(left.is_empty(), "no state left: {left:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_link_at_the_part_is_never_written_through_and_verify_reports_links() {
    // Larger than the first request's piece: the `.part` path (a small file opens no `.part`).
    let content = data(2 * MIB, 7);
    let files = vec![mock_file(
        "file_a",
        "report.csv",
        "2026-08",
        content.clone(),
    )];
    let api = MockApi::start(MockApiConfig::new(FileSet::Explicit(files))).await;
    let dir = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let target = outside.path().join("precious");
    std::fs::write(&target, b"precious").unwrap();
    let data_dir = DataDir::new(dir.path().join("data"));
    data_dir.create().unwrap();
    let output = data_dir.file_path("2026-08-05T10:00:00Z", "file_a", "report.csv");
    let part = PathBuf::from(format!("{}.part", data_dir.tmp_path_for(&output).display()));
    std::os::unix::fs::symlink(&target, &part).unwrap();
    let d = data_dir.root().to_str().unwrap();

    let out = run(&api, &["sync", "--data-dir", d, "--files-only"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("refusing to write through the symbolic link"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(
        std::fs::read(&target).unwrap(),
        b"precious",
        "target untouched"
    );
    assert!(!output.exists(), "no link renamed into raw/");

    // A link placed under raw/ (pointing outside) is reported, and verify fails.
    std::fs::remove_file(&part).unwrap();
    let out = run(&api, &["sync", "--data-dir", d, "--files-only"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(sha256(&std::fs::read(&output).unwrap()), sha256(&content));
    std::os::unix::fs::symlink(&target, output.with_file_name("evil")).unwrap();
    let out = run(&api, &["verify", "--data-dir", d]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    let report = text(&out.stdout);
    assert!(report.contains("raw/2026-08/evil"), "{report}");
    assert!(report.contains("outside the data directory"), "{report}");
}

#[tokio::test(flavor = "multi_thread")]
async fn colliding_ids_get_distinct_files_with_their_own_contents() {
    let ids = ["file_c:d", "file_c_d", "file_c?d", "file_c*d"];
    let files: Vec<MockFile> = ids
        .iter()
        .zip(1..)
        .map(|(id, seed)| mock_file(id, "r.csv", "2026-08", data(30_000, seed)))
        .collect();
    let api = MockApi::start(MockApiConfig::new(FileSet::Explicit(files.clone()))).await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    for _ in 0..2 {
        let out = run(&api, &["sync", "--data-dir", d, "--files-only"]).await;
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    }
    let index = index_of(dir.path());
    let mut paths = std::collections::HashSet::new();
    for file in &files {
        let entry = index.file(&file.id).unwrap().unwrap();
        assert_eq!(entry.state, FileState::Complete, "{}", file.id);
        let path = entry.path.unwrap();
        let stored = std::fs::read(dir.path().join(&path)).unwrap();
        assert_eq!(
            sha256(&stored),
            sha256(&file.content),
            "{} at {path}",
            file.id
        );
        assert!(paths.insert(path), "{} shares a path", file.id);
    }
    assert_eq!(files_under(&dir.path().join("raw")).len(), ids.len());
    let out = run(&api, &["verify", "--data-dir", d]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
}

/// A file listed later whose usual name is held by a file recorded in an earlier sync takes its
/// alternative name: the earlier file is neither fetched again nor overwritten.
#[tokio::test(flavor = "multi_thread")]
async fn a_name_recorded_by_an_earlier_sync_is_not_taken_over() {
    // Both join into `file_a_b_r.csv`.
    let first = mock_file("file_a", "b_r.csv", "2026-08", data(30_000, 1));
    let later = mock_file("file_a_b", "r.csv", "2026-08", data(30_000, 2));
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    for listed in [vec![first.clone()], vec![first.clone(), later.clone()]] {
        let api = MockApi::start(MockApiConfig::new(FileSet::Explicit(listed))).await;
        let out = run(&api, &["sync", "--data-dir", d, "--files-only"]).await;
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    }
    let index = index_of(dir.path());
    let path_of = |id: &str| index.file(id).unwrap().unwrap().path.unwrap();
    let (kept, moved) = (path_of(&first.id), path_of(&later.id));
    assert_ne!(kept, moved);
    for (file, path) in [(&first, &kept), (&later, &moved)] {
        let stored = std::fs::read(dir.path().join(path)).unwrap();
        assert_eq!(
            sha256(&stored),
            sha256(&file.content),
            "{} at {path}",
            file.id
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_get_to_the_same_output_is_refused() {
    let content = Bytes::from(data(4 * MIB, 3));
    // The first get's body stalls after 64 KiB: it holds the `.part` for as long as we like.
    let config = OriginConfig::new(content).with_fault(Fault::Stall {
        after_bytes: 64 * 1024,
        times: 1000,
    });
    let origin = Origin::start(config).await;
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("out.bin");
    let out = output.to_str().unwrap().to_owned();
    let url = origin.url("f.bin");
    let mut first = crate::cli::claudedl()
        .args(["get", &url, "-o", &out, "-c", "1"])
        .spawn()
        .unwrap();
    let state = dir.path().join("out.bin.part.json");
    wait_until("the first get writes its state", || state.exists()).await;
    let requests = origin.request_count();

    let second = crate::cli::claudedl()
        .args(["get", &url, "-o", &out, "-c", "1"])
        .kill_on_drop(true)
        .output();
    let second = tokio::time::timeout(Duration::from_secs(30), second)
        .await
        .expect("the second get is refused at once, not left to download")
        .unwrap();
    assert_eq!(second.status.code(), Some(1), "{}", text(&second.stderr));
    let message = text(&second.stderr);
    assert!(
        message.contains(&format!("another claudedl is downloading {out}")),
        "{message}"
    );
    assert_eq!(
        origin.request_count(),
        requests,
        "the second get sent nothing"
    );
    first.kill().await.unwrap();
}

/// An API with one file, synced into a fresh data directory.
async fn one_file_synced() -> (MockApi, tempfile::TempDir) {
    let files = vec![mock_file("file_a", "a.csv", "2026-08", data(10_000, 1))];
    let api = MockApi::start(MockApiConfig::new(FileSet::Explicit(files))).await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let out = run(&api, &["sync", "--data-dir", d, "--files-only"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    (api, dir)
}

#[tokio::test(flavor = "multi_thread")]
async fn stale_temp_state_files_are_cleaned_and_verify_passes() {
    let (api, dir) = one_file_synced().await;
    let d = dir.path().to_str().unwrap();
    // What kills between writing and renaming a state file leave behind.
    let pid = dead_pid();
    let stale = [
        dir.path()
            .join(format!("tmp/.2026-08__file_b_b.csv.part.json.tmp-{pid}")),
        dir.path().join(format!("meta/.2026-08.json.tmp-{pid}")),
    ];
    for path in &stale {
        std::fs::write(path, b"{}").unwrap();
    }
    let out = run(&api, &["verify", "--data-dir", d]).await;
    assert_eq!(out.status.code(), Some(1), "the leftover is reported");

    let out = run(&api, &["sync", "--data-dir", d, "--files-only"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    for path in &stale {
        assert!(!path.exists(), "{} cleaned", path.display());
    }
    let out = run(&api, &["verify", "--data-dir", d]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));

    // get cleans its own output's leftovers.
    let origin = Origin::start(OriginConfig::new(Bytes::from(data(1000, 2)))).await;
    let output = dir.path().join("got.bin");
    let leftover = dir
        .path()
        .join(format!(".got.bin.part.json.tmp-{}", dead_pid()));
    std::fs::write(&leftover, b"{}").unwrap();
    let got = crate::cli::claudedl()
        .args(["get", &origin.url("g"), "-o", output.to_str().unwrap()])
        .output()
        .await
        .unwrap();
    assert_eq!(got.status.code(), Some(0), "{}", text(&got.stderr));
    assert!(!leftover.exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_entries_are_recorded_failed_and_the_rest_complete() {
    let good = vec![
        mock_file("file_a", "a.csv", "2026-08", data(10_000, 1)),
        mock_file("file_b", "b.csv", "2026-08", data(20_000, 2)),
    ];
    let entry = |id: &str| {
        json!({"id": id, "type": "file", "filename": "x.bin", "mime_type": "text/plain",
               "size_bytes": 10, "created_at": "2026-08-01T00:00:00Z", "downloadable": true})
    };
    let mut negative = entry("file_neg");
    negative["size_bytes"] = json!(-1);
    let mut null_name = entry("file_null");
    null_name["filename"] = json!(null);
    let mut no_name = entry("file_noname");
    no_name.as_object_mut().unwrap().remove("filename");
    let raw = vec![negative, null_name, no_name, entry(".."), entry("file_x/y")];
    let config = MockApiConfig::new(FileSet::Explicit(good.clone())).with_raw_listed(raw);
    let api = MockApi::start(config).await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    for _ in 0..2 {
        let out = run(&api, &["sync", "--data-dir", d, "--files-only", "--json"]).await;
        assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
        let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(summary["failed"].as_array().unwrap().len(), 5, "{summary}");
    }
    let index = index_of(dir.path());
    for file in &good {
        let entry = index.file(&file.id).unwrap().unwrap();
        assert_eq!(entry.state, FileState::Complete, "{}", file.id);
    }
    let reasons = [
        ("file_neg", "size_bytes is -1"),
        ("file_null", "filename is missing or null"),
        ("file_noname", "filename is missing or null"),
        ("..", "not a single safe path segment"),
        ("file_x/y", "not a single safe path segment"),
    ];
    for (id, why) in reasons {
        let entry = index.file(id).unwrap().unwrap();
        assert_eq!(entry.state, FileState::Failed, "{id}");
        assert!(
            entry.reason.as_deref().unwrap().contains(why),
            "{id}: {entry:?}"
        );
    }
    let mut requested: Vec<String> = api
        .requests()
        .iter()
        .filter(|r| r.route != Route::ListFiles)
        .map(|r| r.path.clone())
        .collect();
    requested.sort();
    assert_eq!(
        requested,
        ["/v1/files/file_a/content", "/v1/files/file_b/content"],
        "only the good files' content, once (never /v1/files/content)"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn nothing_kept_is_not_said_to_be_kept() {
    let config = OriginConfig::new(Bytes::from(data(1000, 5))).with_fault(Fault::Status {
        status: 500,
        times: 1000,
    });
    let origin = Origin::start(config).await;
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("x.bin");
    let out = crate::cli::claudedl()
        .args(["get", &origin.url("x"), "-o", output.to_str().unwrap()])
        .args(["--max-retries", "1"])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let message = text(&out.stderr);
    assert!(message.contains("giving up"), "{message}");
    assert!(!message.contains("kept"), "{message}");
    assert!(files_under(dir.path()).is_empty(), "nothing left behind");
}

/// Runs `claudedl ARGS` inside a user and mount namespace where DIR is mounted read-only: a
/// real read-only file system (tests run as root, where `chmod -w` stops nothing). `None` when
/// this system does not allow such namespaces.
fn run_on_read_only_mount(dir: &Path, args: &[&str]) -> Option<std::process::Output> {
    let probe = std::process::Command::new("unshare")
        .args(["-rm", "true"])
        .output();
    if !probe.is_ok_and(|p| p.status.success()) {
        eprintln!("skipped: unshare -rm is not permitted here");
        return None;
    }
    let d = dir.to_str().unwrap();
    let script =
        r#"mount --bind "$1" "$1" && mount -o remount,ro,bind "$1" "$1" && shift && exec "$@""#;
    let output = std::process::Command::new("unshare")
        .args([
            "-rm",
            "sh",
            "-c",
            script,
            "sh",
            d,
            env!("CARGO_BIN_EXE_claudedl"),
        ])
        .args(args)
        .output()
        .unwrap();
    Some(output)
}

#[tokio::test(flavor = "multi_thread")]
async fn ls_and_verify_read_an_index_on_a_read_only_file_system() {
    let (_api, dir) = one_file_synced().await;
    let d = dir.path().to_str().unwrap();
    let listed = |dir: &Path| {
        let mut files = files_under(dir);
        files.sort();
        files
    };
    let before = listed(dir.path());
    let Some(ls) = run_on_read_only_mount(dir.path(), &["ls", "--data-dir", d]) else {
        return;
    };
    assert_eq!(ls.status.code(), Some(0), "{}", text(&ls.stderr));
    assert!(text(&ls.stdout).contains("file_a"), "{}", text(&ls.stdout));
    let verify = run_on_read_only_mount(dir.path(), &["verify", "--data-dir", d]).unwrap();
    assert_eq!(verify.status.code(), Some(0), "{}", text(&verify.stderr));
    assert_eq!(listed(dir.path()), before, "nothing created");
}
