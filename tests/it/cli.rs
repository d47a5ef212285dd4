//! The `claudedl` binary as a user runs it.

use std::path::Path;
use std::process::{Output, Stdio};
use std::time::Duration;

use bytes::Bytes;
use claudedl::store::{ResumeState, StatePaths};
use claudedl_mock::origin::{Fault, Origin, OriginConfig, Throttle};
use tokio::process::{Child, Command};

use crate::support::nginx::Nginx;
use crate::support::{MIB, data, json_lines, sha256, sha256_file, text};

/// The binary with no API settings at all (for plain URLs).
pub(crate) fn claudedl() -> Command {
    let mut command = crate::support::claudedl_binary();
    command
        .env_remove("ANTHROPIC_API_KEY")
        .env_remove("ANTHROPIC_BASE_URL")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

async fn run(args: &[&str]) -> Output {
    claudedl().args(args).output().await.unwrap()
}

/// `get -i` of a list file written into a temporary directory, into its `downloads/`.
struct ListRun {
    /// `get -i LIST -d DOWNLOADS`, then the extra arguments.
    args: Vec<String>,
    downloads: std::path::PathBuf,
}

impl ListRun {
    fn new(dir: &Path, list: &str, extra: &[&str]) -> ListRun {
        let list_path = dir.join("urls.txt");
        std::fs::write(&list_path, list).unwrap();
        let downloads = dir.join("downloads");
        let mut args = vec!["get".to_owned(), "-i".to_owned()];
        args.push(list_path.to_str().unwrap().to_owned());
        args.push("-d".to_owned());
        args.push(downloads.to_str().unwrap().to_owned());
        args.extend(extra.iter().map(|arg| (*arg).to_owned()));
        ListRun { args, downloads }
    }

    async fn output(&self) -> Output {
        claudedl().args(&self.args).output().await.unwrap()
    }
}

/// A slow origin: about 1.3 MB/s per connection, paced smoothly (32 KiB every 25 ms).
async fn slow_origin(content: &[u8]) -> Origin {
    let throttle = Throttle {
        bytes: 32 * 1024,
        every: Duration::from_millis(25),
    };
    let config = OriginConfig::new(Bytes::copy_from_slice(content))
        .with_chunk_size(16 * 1024)
        .with_throttle(throttle);
    Origin::start(config).await
}

async fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
    tokio::time::timeout(Duration::from_secs(60), child.wait())
        .await
        .expect("claudedl exits")
        .unwrap()
}

/// Ctrl-C (SIGINT) to `child`, and its exit.
async fn interrupt(child: &mut Child) -> std::process::ExitStatus {
    let pid = child.id().unwrap().to_string();
    let signalled = Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .await
        .unwrap();
    assert!(signalled.success());
    wait_exit(child).await
}

fn done_bytes(output: &Path) -> u64 {
    ResumeState::load(&StatePaths::beside(output).state).map_or(0, |s| s.done.covered())
}

#[tokio::test(flavor = "multi_thread")]
async fn get_prints_a_json_summary_and_exits_zero() {
    let nginx = Nginx::start();
    let content = data(5 * MIB, 40);
    nginx.put("a.bin", &content);
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("a.bin");

    let result = run(&[
        "get",
        &nginx.url("a.bin"),
        "-o",
        output.to_str().unwrap(),
        "--json",
        "-c",
        "4",
    ])
    .await;

    assert_eq!(result.status.code(), Some(0), "{}", text(&result.stderr));
    assert_eq!(
        text(&result.stderr),
        "",
        "nothing but errors when not on a terminal"
    );
    let lines = json_lines(&result);
    assert_eq!(lines.len(), 1);
    let summary = &lines[0];
    assert_eq!(summary["sha256"], sha256(&content));
    assert_eq!(summary["bytes"], content.len() as u64);
    assert_eq!(summary["status"], "downloaded");
    assert_eq!(summary["retries"], 0);
    assert!(summary["duration_ms"].is_u64() && summary["url"] == nginx.url("a.bin"));
    assert_eq!(sha256_file(&output), sha256(&content));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_list_file_downloads_every_url_into_the_directory() {
    let nginx = Nginx::start();
    let dir = tempfile::tempdir().unwrap();
    let mut list = String::from("# comment\n\n");
    let mut expected = Vec::new();
    for i in 0..3 {
        let content = data(200_000 + i * 7, 50 + i as u64);
        nginx.put(&format!("f{i}.dat"), &content);
        list.push_str(&format!("{}\n", nginx.url(&format!("f{i}.dat"))));
        expected.push((format!("f{i}.dat"), content));
    }
    nginx.put("same.dat", b"first");
    std::fs::create_dir(nginx.root().join("sub")).unwrap();
    std::fs::write(nginx.root().join("sub/same.dat"), b"second").unwrap();
    list.push_str(&format!(
        "{}\n{}\n",
        nginx.url("same.dat"),
        nginx.url("sub/same.dat")
    ));
    let get = ListRun::new(dir.path(), &list, &["-j", "2"]);
    let downloads = &get.downloads;

    let result = get.output().await;

    assert_eq!(result.status.code(), Some(0), "{}", text(&result.stderr));
    for (name, content) in expected {
        assert_eq!(std::fs::read(downloads.join(name)).unwrap(), content);
    }
    assert_eq!(std::fs::read(downloads.join("same.dat")).unwrap(), b"first");
    assert_eq!(
        std::fs::read(downloads.join("same.1.dat")).unwrap(),
        b"second"
    );
}

/// The list is checked whole before the first request (in chunks of 16,384 lines, each shared
/// among the cores): a bad line anywhere stops the run with nothing fetched, and the first bad
/// line is the one named.
#[tokio::test(flavor = "multi_thread")]
async fn a_bad_url_late_in_a_long_list_stops_the_run_before_any_request() {
    let origin = Origin::start(OriginConfig::new(Bytes::from_static(b"x"))).await;
    let dir = tempfile::tempdir().unwrap();
    // Past two whole chunks, in the last share of the third.
    let lines = 2 * 16_384 + 1_000;
    let mut list = String::from("# a comment, then a blank line\n\n");
    for i in 0..lines {
        let line = match i {
            i if i == lines - 2 => "ftp://127.0.0.1/first-bad".to_owned(),
            i if i == lines - 1 => "not a url".to_owned(),
            i => format!("  {}  ", origin.url(&format!("/f{i}"))),
        };
        list.push_str(&line);
        list.push('\n');
    }
    let get = ListRun::new(dir.path(), &list, &[]);

    let refused = get.output().await;

    let said = text(&refused.stderr);
    assert_eq!(refused.status.code(), Some(2), "{said}");
    assert!(said.contains("unsupported scheme \"ftp\""), "{said}");
    assert!(said.contains("first-bad"), "{said}");
    assert!(!said.contains("not a url"), "{said}");
    assert_eq!(origin.request_count(), 0);
    assert!(!get.downloads.exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn exit_codes_tell_usage_errors_from_failures() {
    let no_url = run(&["get"]).await;
    assert_eq!(no_url.status.code(), Some(2));
    assert!(
        text(&no_url.stderr).contains("no URL"),
        "{}",
        text(&no_url.stderr)
    );

    let bad_flag = run(&["get", "--no-such-flag"]).await;
    assert_eq!(bad_flag.status.code(), Some(2));

    let origin = Origin::start(OriginConfig::new(Bytes::from_static(b"x")).with_fault(
        Fault::Status {
            status: 404,
            times: 100,
        },
    ))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("missing.bin");
    let url = origin.url("/missing.bin?signature=TOPSECRET");
    let failed = run(&["get", &url, "-o", output.to_str().unwrap()]).await;
    assert_eq!(failed.status.code(), Some(4), "not found");
    let stderr = text(&failed.stderr);
    assert!(
        stderr.contains("404") && stderr.contains("/missing.bin"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("TOPSECRET"),
        "signed query values never appear: {stderr}"
    );
    assert!(!output.exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_api_key_comes_from_the_environment_and_only_goes_to_the_api_origin() {
    let api = Origin::start(OriginConfig::new(Bytes::from_static(b"api bytes"))).await;
    let other = Origin::start(OriginConfig::new(Bytes::from_static(b"other bytes"))).await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();

    let result = claudedl()
        .args([
            "get",
            &api.url("/v1/files/file_1/content"),
            &other.url("/x.bin"),
            "-d",
            d,
        ])
        .env("ANTHROPIC_BASE_URL", api.url(""))
        .env("ANTHROPIC_API_KEY", "sk-ant-test-key")
        .output()
        .await
        .unwrap();

    assert_eq!(result.status.code(), Some(0), "{}", text(&result.stderr));
    let to_api = &api.requests()[0];
    assert_eq!(to_api.header("x-api-key"), Some("sk-ant-test-key"));
    assert_eq!(to_api.header("anthropic-version"), Some("2023-06-01"));
    assert!(
        to_api
            .header("user-agent")
            .unwrap()
            .starts_with("claudedl/")
    );
    assert_eq!(other.requests()[0].header("x-api-key"), None);
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_then_rerun_fetches_only_the_missing_bytes() {
    let content = data(4 * MIB, 60);
    let origin = slow_origin(&content).await;
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("k.bin");
    let args = [
        "get",
        &origin.url("/k.bin"),
        "-o",
        output.to_str().unwrap(),
        "-c",
        "4",
        "--json",
    ];

    let mut child = claudedl().args(args).spawn().unwrap();
    origin.wait_for_body_bytes(content.len() as u64 / 2).await;
    child.kill().await.unwrap();
    let done = done_bytes(&output);
    assert!(done > 0, "checkpoints were written before the kill");
    assert!(done < content.len() as u64);
    assert!(!output.exists());
    let served_before = origin.body_bytes_sent();

    let rerun = claudedl().args(args).output().await.unwrap();

    assert_eq!(rerun.status.code(), Some(0), "{}", text(&rerun.stderr));
    assert_eq!(sha256_file(&output), sha256(&content));
    let summary = &json_lines(&rerun)[0];
    assert_eq!(summary["resumed_from"], done);
    assert_eq!(
        summary["bytes"],
        content.len() as u64 - done,
        "only the missing bytes are written"
    );
    assert!(origin.body_bytes_sent() - served_before >= content.len() as u64 - done);
}

#[tokio::test(flavor = "multi_thread")]
async fn ctrl_c_saves_state_and_exits_130() {
    let content = data(4 * MIB, 61);
    let origin = slow_origin(&content).await;
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("i.bin");
    let args = [
        "get",
        &origin.url("/i.bin"),
        "-o",
        output.to_str().unwrap(),
        "-c",
        "2",
    ];

    let mut child = claudedl().args(args).spawn().unwrap();
    origin.wait_for_body_bytes(MIB as u64).await;
    let status = interrupt(&mut child).await;

    assert_eq!(status.code(), Some(130));
    assert!(
        done_bytes(&output) >= 512 * 1024,
        "the final checkpoint records what was written"
    );
    assert!(!output.exists());

    let rerun = claudedl().args(args).output().await.unwrap();
    assert_eq!(rerun.status.code(), Some(0), "{}", text(&rerun.stderr));
    assert_eq!(sha256_file(&output), sha256(&content));
}

/// Ctrl-C reaches every lane of a batch (each waits on a child of the engine's cancellation):
/// the run stops with the files in flight unfinished, no final name holds a partial file, and
/// the rerun fetches the rest.
#[tokio::test(flavor = "multi_thread")]
async fn ctrl_c_stops_every_lane_of_a_batch() {
    let content = data(256 * 1024, 62);
    let origin = slow_origin(&content).await;
    let dir = tempfile::tempdir().unwrap();
    // ~200 ms a file, 16 at once: ~3 s for all of them unless stopped.
    let files = 256;
    let list: String = (0..files)
        .map(|i| format!("{}\n", origin.url(&format!("/f{i}.bin"))))
        .collect();
    let get = ListRun::new(dir.path(), &list, &["-q", "-j", "16"]);
    let downloads = &get.downloads;

    let mut child = claudedl().args(&get.args).spawn().unwrap();
    // Every slot of both lanes has its body under way.
    origin.wait_for_body_bytes(16 * 32 * 1024).await;
    let status = interrupt(&mut child).await;

    assert_eq!(status.code(), Some(130));
    let placed = crate::support::files_under(downloads);
    assert!(placed.len() < files, "{} of {files} placed", placed.len());
    for path in &placed {
        assert_eq!(sha256_file(path), sha256(&content), "{}", path.display());
    }

    let rerun = get.output().await;
    assert_eq!(rerun.status.code(), Some(0), "{}", text(&rerun.stderr));
    for i in 0..files {
        let path = downloads.join(format!("f{i}.bin"));
        assert_eq!(sha256_file(&path), sha256(&content), "{}", path.display());
    }
}
