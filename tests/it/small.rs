//! Small files (issue 12): a file one request fetches whole is written in one go and made
//! durable in group commits, with no `.part`, lock or resume state. Kills at several points
//! never leave a partial or empty file under a final name, nor an index claiming a missing one.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use bytes::Bytes;
use claudedl::store::index::{FileState, Index, SqliteIndex};
use claudedl::store::layout::DataDir;
use claudedl_mock::api::{FileSet, MockApi, MockApiConfig, MockFile};
use claudedl_mock::origin::{Fault, Origin, OriginConfig, Throttle};

use crate::api::claudedl;
use crate::support::{claudedl_binary, data, files_under, mock_file, sha256, text};

const SMALL: usize = 4096;

/// Poll (bounded) until `done` holds.
async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting: {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// `.part` files and resume states under `dir` (none on the small-file path, ever).
fn staging_files(dir: &Path) -> Vec<PathBuf> {
    if !dir.exists() {
        return Vec::new();
    }
    files_under(dir)
        .into_iter()
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            name.ends_with(".part") || name.ends_with(".part.json")
        })
        .collect()
}

/// Files under `dir` with a hidden name (temporary names are hidden).
fn hidden_files(dir: &Path) -> Vec<PathBuf> {
    if !dir.exists() {
        return Vec::new();
    }
    files_under(dir)
        .into_iter()
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .collect()
}

fn visible_files(dir: &Path) -> Vec<PathBuf> {
    if !dir.exists() {
        return Vec::new();
    }
    files_under(dir)
        .into_iter()
        .filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .collect()
}

/// Every file under a final name (not hidden) in `dir` is one of the `count` outputs, whole.
fn assert_only_whole_outputs(dir: &Path, content: &[u8], count: usize) {
    for path in visible_files(dir) {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let number: usize = name
            .strip_prefix('f')
            .and_then(|n| n.strip_suffix(".bin"))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("only outputs under final names, found {name}"));
        assert!(number < count, "{name}");
        let got = std::fs::read(&path).unwrap();
        assert_eq!(
            got.len(),
            content.len(),
            "{name}: whole, never partial or empty"
        );
        assert_eq!(sha256(&got), sha256(content), "{name}");
    }
}

fn url_list(origin: &Origin, count: usize, dir: &Path) -> PathBuf {
    let list = dir.join("urls.txt");
    let urls: Vec<String> = (0..count)
        .map(|i| origin.url(&format!("/f{i:03}.bin")))
        .collect();
    std::fs::write(&list, urls.join("\n")).unwrap();
    list
}

async fn get_list(list: &Path, out: &Path, jobs: &str) -> std::process::Output {
    get_list_with(list, out, &["-j", jobs]).await
}

/// `claudedl get -q OPTIONS -i LIST -d OUT`.
async fn get_list_with(list: &Path, out: &Path, options: &[&str]) -> std::process::Output {
    claudedl_binary()
        .args(["get", "-q"])
        .args(options)
        .arg("-i")
        .arg(list)
        .arg("-d")
        .arg(out)
        .output()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_list_of_small_files_takes_one_request_each_and_leaves_nothing_else() {
    let content = data(SMALL, 1);
    let throttle = Throttle {
        bytes: 1024,
        every: Duration::from_millis(5),
    };
    let origin =
        Origin::start(OriginConfig::new(Bytes::from(content.clone())).with_throttle(throttle))
            .await;
    let work = tempfile::tempdir().unwrap();
    let count = 200;
    let list = url_list(&origin, count, work.path());
    let out = work.path().join("out");

    let mut child = claudedl_binary()
        .args(["get", "-q", "-i"])
        .arg(&list)
        .arg("-d")
        .arg(&out)
        .args(["-j", "16"])
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // Watched while it runs (bodies are paced): no `.part`, no resume state and no temporary
    // name, ever (a body is written unnamed and linked under its name once durable).
    let mut staged = Vec::new();
    let status = loop {
        staged.extend(staging_files(&out));
        staged.extend(hidden_files(&out));
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    assert!(status.success());
    assert!(staged.is_empty(), "staging files seen: {staged:?}");
    assert_eq!(origin.request_count(), count, "one request per file");
    assert_eq!(origin.body_bytes_sent(), (count * SMALL) as u64);
    let all = files_under(&out);
    assert_eq!(
        all.len(),
        count,
        "no .part, state or temporary file: {all:?}"
    );
    assert_only_whole_outputs(&out, &content, count);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_small_file_get_killed_at_several_points_leaves_only_whole_files() {
    let content = data(SMALL, 2);
    // Each body takes ~80 ms (512 bytes per 10 ms), so a kill finds transfers mid-body.
    let throttle = Throttle {
        bytes: 512,
        every: Duration::from_millis(10),
    };
    let origin =
        Origin::start(OriginConfig::new(Bytes::from(content.clone())).with_throttle(throttle))
            .await;
    let work = tempfile::tempdir().unwrap();
    let count = 60;
    let list = url_list(&origin, count, work.path());
    let out = work.path().join("out");
    for landed in [1, 15, 40] {
        let mut child = claudedl_binary()
            .args(["get", "-q", "-i"])
            .arg(&list)
            .arg("-d")
            .arg(&out)
            .args(["-j", "4"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        wait_until("files land", || visible_files(&out).len() >= landed).await;
        child.start_kill().unwrap();
        child.wait().await.unwrap();
        assert_only_whole_outputs(&out, &content, count);
    }
    let requests_before = origin.request_count();
    let present = visible_files(&out).len();
    let run = get_list(&list, &out, "4").await;
    assert_eq!(run.status.code(), Some(0), "{}", text(&run.stderr));
    assert_eq!(visible_files(&out).len(), count);
    assert_only_whole_outputs(&out, &content, count);
    assert_eq!(
        origin.request_count() - requests_before,
        count - present,
        "the rerun fetches only the files not there"
    );
    let left = files_under(&out);
    assert_eq!(
        left.len(),
        count,
        "the rerun cleans what the kills left: {left:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_list_longer_than_a_window_keeps_its_order_and_unique_names() {
    let content = data(64, 3);
    let origin = Origin::start(OriginConfig::new(Bytes::from(content.clone()))).await;
    let work = tempfile::tempdir().unwrap();
    // More than one window of 4,096 URLs; the first and the last share a name.
    let count = 4_100;
    let urls: Vec<String> = (0..count)
        .map(|i| match i {
            0 => origin.url("/a/same.bin"),
            i if i == count - 1 => origin.url("/b/same.bin"),
            i => origin.url(&format!("/f{i:04}.bin")),
        })
        .collect();
    let list = work.path().join("urls.txt");
    std::fs::write(&list, urls.join("\n")).unwrap();
    let out = work.path().join("out");
    let run = get_list_with(&list, &out, &["--json"]).await;
    assert_eq!(run.status.code(), Some(0), "{}", text(&run.stderr));
    let lines: Vec<serde_json::Value> = text(&run.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let reported: Vec<&str> = lines.iter().map(|l| l["url"].as_str().unwrap()).collect();
    assert_eq!(reported, urls, "one line per URL, in the list's order");
    let name = |line: &serde_json::Value| {
        let path = PathBuf::from(line["path"].as_str().unwrap());
        path.file_name().unwrap().to_string_lossy().into_owned()
    };
    assert_eq!(name(&lines[0]), "same.bin");
    assert_eq!(
        name(&lines[count - 1]),
        "same.1.bin",
        "unique across windows"
    );
    assert_eq!(origin.request_count(), count, "one request per file");
    assert_eq!(visible_files(&out).len(), count);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_file_holds_back_no_other_file_of_a_long_list() {
    let content = data(64, 5);
    let stall = Fault::Stall {
        after_bytes: 0,
        times: 1,
    };
    let origin =
        Origin::start(OriginConfig::new(Bytes::from(content.clone())).with_fault(stall)).await;
    let work = tempfile::tempdir().unwrap();
    // More URLs than are planned at once (4,096): the last ones start while the first
    // response stalls.
    let count = 4_200;
    let list = url_list(&origin, count, work.path());
    let out = work.path().join("out");
    // Long enough for the others to finish first on a loaded machine (4,199 files of 64 bytes
    // take about a second).
    let run = get_list_with(&list, &out, &["--read-timeout", "10"]).await;
    assert_eq!(run.status.code(), Some(0), "{}", text(&run.stderr));
    let paths: Vec<String> = origin.requests().into_iter().map(|r| r.path).collect();
    assert_eq!(paths.len(), count + 1, "one request each, and one retry");
    let stalled = paths
        .iter()
        .find(|p| paths.iter().filter(|q| q == p).count() == 2)
        .expect("the stalled file is fetched again");
    assert_eq!(
        paths.last(),
        Some(stalled),
        "every other file was fetched before the stalled one timed out"
    );
    assert_eq!(visible_files(&out).len(), count);
}

fn small_account(count: usize) -> Vec<MockFile> {
    (0..count)
        .map(|i| {
            let month = if i % 2 == 0 { "2026-07" } else { "2026-08" };
            mock_file(
                &format!("file_{i:03}"),
                "s.bin",
                month,
                data(SMALL, i as u64),
            )
        })
        .collect()
}

/// The index and raw/ agree: every Complete entry's file is there, whole, with its hash; every
/// file in raw/ is recorded or is the whole file of the entry that will own it.
fn assert_index_consistent(dir: &Path, files: &[MockFile]) -> usize {
    let data_dir = DataDir::new(dir);
    let index = SqliteIndex::open(&data_dir.index_path()).unwrap();
    let mut complete = 0;
    for file in files {
        let entry = index.file(&file.id).unwrap().unwrap();
        if entry.state == FileState::Complete {
            complete += 1;
            let path = dir.join(entry.path.unwrap());
            let got = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", file.id));
            assert_eq!(sha256(&got), sha256(&file.content), "{}", file.id);
            assert_eq!(
                entry.sha256.as_deref(),
                Some(sha256(&file.content).as_str())
            );
        }
    }
    for path in visible_files(&dir.join("raw")) {
        let got = std::fs::read(&path).unwrap();
        assert!(
            files.iter().any(|f| f.content == got),
            "{}: a whole file, never partial or empty",
            path.display()
        );
    }
    complete
}

#[tokio::test(flavor = "multi_thread")]
async fn a_small_file_sync_killed_at_several_points_loses_nothing_and_verifies() {
    let count = 60;
    let files = small_account(count);
    let api = MockApi::start(MockApiConfig::new(FileSet::Explicit(files.clone()))).await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let raw = dir.path().join("raw");
    for landed in [1, 20, 45] {
        // 1,200 requests a minute: one file every 50 ms, so a kill comes mid-run.
        let mut child = claudedl(&api)
            .env("CLAUDEDL_RPM", "1200")
            .args(["sync", "--data-dir", d, "--files-only", "-j", "4"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut staged = Vec::new();
        wait_until("files land in raw/", || {
            staged.extend(staging_files(&dir.path().join("tmp")));
            visible_files(&raw).len() >= landed
        })
        .await;
        child.start_kill().unwrap();
        child.wait().await.unwrap();
        assert!(staged.is_empty(), "no .part or resume state: {staged:?}");
        assert_index_consistent(dir.path(), &files);
    }
    let out = claudedl(&api)
        .args(["sync", "--data-dir", d, "--files-only", "--json"])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(assert_index_consistent(dir.path(), &files), count);
    let left = files_under(&dir.path().join("tmp"));
    assert!(left.is_empty(), "nothing left in tmp/: {left:?}");
    let verify = claudedl(&api)
        .args(["verify", "--data-dir", d])
        .output()
        .await
        .unwrap();
    assert_eq!(verify.status.code(), Some(0), "{}", text(&verify.stdout));
    assert!(
        text(&verify.stdout).contains("everything matches the index"),
        "{}",
        text(&verify.stdout)
    );
}
