//! Encryption at rest: downloads stored as age files that the real `age` CLI decrypts, with no
//! plaintext anywhere on disk, before, during (killed) and after the download.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;

use age::secrecy::ExposeSecret;
use bytes::Bytes;
use claudedl::crypt::{Encryption, Recipients, ResumeIdentity};
use claudedl::store::{ResumeState, StatePaths};
use claudedl_mock::api::{FileSet, MockApi, MockApiConfig, MockBatch, MockResult};
use claudedl_mock::origin::{Fault, Origin, OriginConfig};
use tokio::process::Command;

use crate::support::nginx::Nginx;
use crate::support::{
    MIB, Recorder, data, engine, files_under, json_lines, mock_file, sha256, spec, test_config,
    text,
};

/// A user's age key pair, and a resume identity of their own, outside every scanned directory.
pub(crate) struct Keys {
    dir: tempfile::TempDir,
    pub(crate) recipient: String,
}

impl Keys {
    pub(crate) fn new() -> Keys {
        let dir = tempfile::tempdir().unwrap();
        let identity = age::x25519::Identity::generate();
        std::fs::write(
            dir.path().join("key.txt"),
            identity.to_string().expose_secret(),
        )
        .unwrap();
        Keys {
            recipient: identity.to_public().to_string(),
            dir,
        }
    }

    pub(crate) fn identity(&self) -> PathBuf {
        self.dir.path().join("key.txt")
    }

    fn resume_identity(&self) -> PathBuf {
        self.dir.path().join("state/resume-identity.txt")
    }

    /// `claudedl` with this user's resume identity and `tmp` as its temporary directory.
    fn claudedl(&self, tmp: &Path) -> Command {
        let mut command = crate::support::claudedl_binary();
        command
            .env_remove("ANTHROPIC_API_KEY")
            .env_remove("ANTHROPIC_BASE_URL")
            .env("CLAUDEDL_RESUME_IDENTITY", self.resume_identity())
            .env("TMPDIR", tmp)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        command
    }

    /// `claudedl` against the mock `api`, with a HOME and XDG_CONFIG_HOME of its own in `tmp`
    /// (no config file but one given with `--config`) and no pacing.
    pub(crate) fn against(&self, api: &MockApi, tmp: &Path) -> Command {
        let mut command = self.claudedl(tmp);
        command
            .env("ANTHROPIC_BASE_URL", api.base_url())
            .env("ANTHROPIC_API_KEY", api.api_key())
            .env("CLAUDEDL_RPM", "60000")
            .env("HOME", tmp)
            .env("XDG_CONFIG_HOME", tmp.join("xdg"))
            .env_remove("CLAUDEDL_CONFIG");
        command
    }

    fn encryption(&self) -> Arc<Encryption> {
        let recipients = Recipients::parse(std::slice::from_ref(&self.recipient), &[]).unwrap();
        let resume = ResumeIdentity::load_or_create(&self.resume_identity()).unwrap();
        Arc::new(Encryption::new(recipients, resume))
    }

    /// The plaintext of `file`, by the real `age` CLI.
    pub(crate) fn age_decrypt(&self, file: &Path) -> Vec<u8> {
        let out = std::process::Command::new(age_binary())
            .arg("-d")
            .arg("-i")
            .arg(self.identity())
            .arg(file)
            .output()
            .expect("age must be installed (apt-get install age)");
        assert!(out.status.success(), "age -d: {}", text(&out.stderr));
        out.stdout
    }
}

fn age_binary() -> &'static str {
    if Path::new("/usr/bin/age").exists() {
        "/usr/bin/age"
    } else {
        "age"
    }
}

/// Sixteen 32-byte windows spread over `plain` (its first and last bytes among them).
fn windows_of(plain: &[u8]) -> Vec<&[u8]> {
    let step = (plain.len() - 32) / 15;
    (0..16).map(|k| &plain[k * step..k * step + 32]).collect()
}

/// Panics if any file under `roots` contains any of `plain`'s windows; returns the files seen.
pub(crate) fn assert_no_plaintext(roots: &[&Path], plain: &[u8]) -> usize {
    let needles = windows_of(plain);
    // One pass per file: a table of the needles' first bytes, then a full comparison.
    let mut first = [false; 256];
    for needle in &needles {
        first[usize::from(needle[0])] = true;
    }
    let mut seen = 0;
    for root in roots {
        for path in files_under(root) {
            let Ok(bytes) = std::fs::read(&path) else {
                continue; // renamed away while we looked
            };
            seen += 1;
            for (at, &byte) in bytes.iter().enumerate() {
                if first[usize::from(byte)] {
                    let found = needles.iter().any(|n| bytes[at..].starts_with(n));
                    assert!(!found, "plaintext found in {}", path.display());
                }
            }
        }
    }
    seen
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

#[tokio::test(flavor = "multi_thread")]
async fn an_encrypted_parallel_download_decrypts_with_age_to_the_original_bytes() {
    let nginx = Nginx::start();
    let content = data(5 * MIB + 12_345, 70);
    nginx.put("big.bin", &content);
    let keys = Keys::new();
    let dir = tempfile::tempdir().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let output = dir.path().join("big.bin");

    let result = keys
        .claudedl(tmp.path())
        .args(["get", &nginx.url("big.bin"), "-o"])
        .arg(&output)
        .args(["-c", "4", "--json", "--encrypt-to", &keys.recipient])
        .output()
        .await
        .unwrap();

    assert_eq!(result.status.code(), Some(0), "{}", text(&result.stderr));
    let summary = &json_lines(&result)[0];
    assert_eq!(summary["sha256"], sha256(&content), "the plaintext's hash");
    assert_eq!(summary["encrypted"], true);
    let stored = dir.path().join("big.bin.age");
    assert_eq!(summary["path"], stored.to_str().unwrap());
    assert!(!output.exists());
    let ranged = nginx.log().iter().filter(|l| l.status == 206).count();
    assert!(ranged >= 4, "parallel ranges: {:?}", nginx.log());
    assert_eq!(keys.age_decrypt(&stored), content);
    assert_eq!(assert_no_plaintext(&[dir.path(), tmp.path()], &content), 1);
}

/// Polls (every 20 ms, at most 10 s) until the checkpointed resume state covers `bytes`: the
/// engine offers no signal for its checkpoints.
async fn wait_for_checkpoint(state: &Path, bytes: u64) -> ResumeState {
    for _ in 0..500 {
        if let Some(state) = ResumeState::load(state).filter(|s| s.done.covered() >= bytes) {
            return state;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("no checkpoint of {bytes} bytes in {}", state.display());
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_with_9_mid_download_no_plaintext_is_on_disk_and_the_rerun_resumes() {
    // Both connections go silent after 512 KiB + 1000 bytes: the download is mid-way, with
    // 16 whole chunks sealed and two partial chunks in memory only, for as long as we look.
    let content = data(4 * MIB + 999, 71);
    let stall = Fault::Stall {
        after_bytes: 512 * 1024 + 1000,
        times: 2,
    };
    let origin =
        Origin::start(OriginConfig::new(Bytes::from(content.clone())).with_fault(stall)).await;
    let keys = Keys::new();
    let dir = tempfile::tempdir().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let output = dir.path().join("k.bin");
    let stored = dir.path().join("k.bin.age");
    let paths = StatePaths::beside(&stored);
    let args = [
        "get",
        &origin.url("/k.bin"),
        "-o",
        output.to_str().unwrap(),
        "-c",
        "2",
        "--json",
        "--encrypt-to",
        &keys.recipient,
    ];

    let mut child = keys.claudedl(tmp.path()).args(args).spawn().unwrap();
    origin.wait_for_body_bytes(2 * (512 * 1024 + 1000)).await;
    let state = wait_for_checkpoint(&paths.state, MIB as u64).await;
    assert_eq!(assert_no_plaintext(&[dir.path(), tmp.path()], &content), 2);
    child.kill().await.unwrap();
    child.wait().await.unwrap();

    assert!(paths.part.exists(), "{:?}", files_under(dir.path()));
    assert!(!stored.exists() && !output.exists());
    assert_no_plaintext(&[dir.path(), tmp.path()], &content);
    let done = state.done.covered();
    assert_eq!(
        done, MIB as u64,
        "whole chunks only, never the partial ones"
    );
    let sealed = state.crypt.expect("the state of an encrypted part");
    assert_eq!(sealed.recipients, std::slice::from_ref(&keys.recipient));

    let rerun = keys.claudedl(tmp.path()).args(args).output().await.unwrap();

    assert_eq!(rerun.status.code(), Some(0), "{}", text(&rerun.stderr));
    let summary = &json_lines(&rerun)[0];
    assert_eq!(summary["resumed_from"], done);
    assert_eq!(summary["bytes"], content.len() as u64 - done);
    assert_eq!(summary["sha256"], sha256(&content));
    assert_eq!(keys.age_decrypt(&stored), content);
    assert!(!paths.part.exists() && !paths.state.exists());
    assert_no_plaintext(&[dir.path(), tmp.path()], &content);
}

#[tokio::test(flavor = "multi_thread")]
async fn decrypt_round_trips_and_a_wrong_identity_fails_clearly() {
    let nginx = Nginx::start();
    let content = data(300_000, 72);
    nginx.put("r.bin", &content);
    let keys = Keys::new();
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("r.bin");
    let got = keys
        .claudedl(dir.path())
        .args(["get", &nginx.url("r.bin"), "-o"])
        .arg(&output)
        .args(["--encrypt-to", &keys.recipient])
        .output()
        .await
        .unwrap();
    assert_eq!(got.status.code(), Some(0), "{}", text(&got.stderr));
    let stored = dir.path().join("r.bin.age");

    let stranger = Keys::new();
    let wrong = keys
        .claudedl(dir.path())
        .args(["decrypt"])
        .arg(&stored)
        .arg("-i")
        .arg(stranger.identity())
        .output()
        .await
        .unwrap();
    assert_eq!(wrong.status.code(), Some(1));
    let stderr = text(&wrong.stderr);
    assert!(
        stderr.contains("r.bin.age") && stderr.contains("does not match any recipient"),
        "{stderr}"
    );
    assert!(!output.exists(), "no output, not even a partial one");
    assert_eq!(files_under(dir.path()), std::slice::from_ref(&stored));

    let right = keys
        .claudedl(dir.path())
        .arg("decrypt")
        .arg(&stored)
        .arg("-i")
        .arg(keys.identity())
        .output()
        .await
        .unwrap();
    assert_eq!(right.status.code(), Some(0), "{}", text(&right.stderr));
    assert_eq!(std::fs::read(&output).unwrap(), content);

    let again = keys
        .claudedl(dir.path())
        .arg("decrypt")
        .arg(&stored)
        .arg("-i")
        .arg(keys.identity())
        .output()
        .await
        .unwrap();
    assert_eq!(again.status.code(), Some(1), "an existing output is kept");

    // And the other way round: a file from the age CLI decrypts with claudedl.
    let by_age = dir.path().join("by-age.age");
    let encrypted = std::process::Command::new(age_binary())
        .args(["-r", &keys.recipient, "-o"])
        .arg(&by_age)
        .arg(&output)
        .status()
        .unwrap();
    assert!(encrypted.success());
    let elsewhere = dir.path().join("elsewhere.bin");
    let decrypted = keys
        .claudedl(dir.path())
        .arg("decrypt")
        .arg(&by_age)
        .args(["-i"])
        .arg(keys.identity())
        .arg("-o")
        .arg(&elsewhere)
        .output()
        .await
        .unwrap();
    assert_eq!(
        decrypted.status.code(),
        Some(0),
        "{}",
        text(&decrypted.stderr)
    );
    assert_eq!(std::fs::read(&elsewhere).unwrap(), content);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_that_ignores_ranges_still_yields_a_valid_age_file() {
    let content = data(3 * MIB + 7, 73);
    let origin = Origin::start(
        OriginConfig::new(Bytes::from(content.clone())).with_fault(Fault::IgnoreRange),
    )
    .await;
    let keys = Keys::new();
    let dir = tempfile::tempdir().unwrap();
    let stored = dir.path().join("s.bin.age");
    let engine = engine(test_config(4));
    let request = claudedl::engine::TransferSpec {
        encrypt: Some(keys.encryption()),
        ..spec(&origin.url("/s.bin"), &stored)
    };

    let report = engine.download(0, &request, Recorder::new()).await.unwrap();

    assert_eq!(report.sha256.as_deref(), Some(sha256(&content).as_str()));
    assert!(report.encrypted);
    assert_eq!(keys.age_decrypt(&stored), content);
    assert_no_plaintext(&[dir.path()], &content);
}

#[tokio::test(flavor = "multi_thread")]
async fn sync_stores_age_files_and_the_index_says_encrypted_with_the_plaintext_hash() {
    let big = data(3 * MIB + 5, 74);
    let small = data(20_000, 75);
    let results = (0..40)
        .map(|i| MockResult {
            custom_id: format!("req-{i:05}"),
            result_type: "succeeded".into(),
        })
        .collect();
    let batch = MockBatch {
        id: "msgbatch_1".into(),
        created_at: "2026-08-10T00:00:00Z".into(),
        ended: true,
        results,
    };
    let files = vec![
        mock_file("file_big", "big.bin", "2026-08", big.clone()),
        mock_file("file_small", "small.bin", "2026-08", small.clone()),
    ];
    let api =
        MockApi::start(MockApiConfig::new(FileSet::Explicit(files)).with_batches(vec![batch]))
            .await;
    let keys = Keys::new();
    let recipients = keys.dir.path().join("recipients.txt");
    std::fs::write(&recipients, format!("# me\n{}\n", keys.recipient)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let run = |args: Vec<&str>| {
        let mut command = keys.claudedl(tmp.path());
        command
            .env("ANTHROPIC_BASE_URL", api.base_url())
            .env("ANTHROPIC_API_KEY", api.api_key())
            .args(args);
        async move { command.output().await.unwrap() }
    };
    let d = data_dir.to_str().unwrap();

    let synced = run(vec![
        "sync",
        "--data-dir",
        d,
        "--json",
        "--recipients-file",
        recipients.to_str().unwrap(),
    ])
    .await;

    assert_eq!(synced.status.code(), Some(0), "{}", text(&synced.stderr));
    let summary: serde_json::Value = serde_json::from_slice(&synced.stdout).unwrap();
    assert_eq!(summary["downloaded"], 2, "{summary}");
    assert_eq!(summary["batches_downloaded"], 1, "{summary}");
    let stored = data_dir.join("raw/2026-08/file_big_big.bin.age");
    assert_eq!(keys.age_decrypt(&stored), big);
    let listed = run(vec!["ls", "--data-dir", d, "--json"]).await;
    assert_eq!(listed.status.code(), Some(0), "{}", text(&listed.stderr));
    for entry in json_lines(&listed) {
        assert_eq!(entry["encrypted"], true, "{entry}");
        assert!(entry["path"].as_str().unwrap().ends_with(".bin.age"));
    }
    let entries = json_lines(&listed);
    let big_entry = entries.iter().find(|e| e["id"] == "file_big").unwrap();
    assert_eq!(big_entry["sha256"], sha256(&big));

    let results = files_under(&data_dir.join("raw/2026-08/batches"));
    assert_eq!(results.len(), 1);
    assert!(results[0].to_str().unwrap().ends_with(".jsonl.age"));
    let lines = keys.age_decrypt(&results[0]);
    assert_eq!(text(&lines).lines().count(), 40);
    let shown = run(vec![
        "batches",
        "show",
        "msgbatch_1",
        "req-00001",
        "--data-dir",
        d,
    ])
    .await;
    assert_eq!(shown.status.code(), Some(1));
    assert!(
        text(&shown.stderr).contains("encrypted"),
        "{}",
        text(&shown.stderr)
    );

    for plain in [&big[..], &small[..], &lines[..]] {
        assert_no_plaintext(&[&data_dir, tmp.path()], plain);
    }
    let index = std::fs::read(data_dir.join("meta/index.sqlite")).unwrap();
    assert!(!contains(&index, b"req-0000"), "no custom_id in the index");

    // Without recipients, a sync into this directory is refused rather than storing plaintext.
    let before = api.requests().len();
    let plain = run(vec!["sync", "--data-dir", d]).await;
    assert_eq!(plain.status.code(), Some(2), "{}", text(&plain.stderr));
    assert!(
        text(&plain.stderr).contains("--no-encrypt"),
        "{}",
        text(&plain.stderr)
    );
    assert_eq!(api.requests().len(), before, "nothing was asked of the API");
}

/// Whether the real `age` CLI decrypts `file` with `identity`.
fn age_opens(identity: &Path, file: &Path) -> bool {
    let out = std::process::Command::new(age_binary())
        .arg("-d")
        .arg("-i")
        .arg(identity)
        .arg(file)
        .output()
        .unwrap();
    out.status.success()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_config_file_s_recipients_encrypt_every_download_unless_flags_replace_them() {
    let content = data(200_000, 76);
    let batch = MockBatch {
        id: "msgbatch_1".into(),
        created_at: "2026-08-10T00:00:00Z".into(),
        ended: true,
        results: vec![MockResult {
            custom_id: "req-1".into(),
            result_type: "succeeded".into(),
        }],
    };
    let files = vec![mock_file("file_a", "a.bin", "2026-08", content.clone())];
    let api =
        MockApi::start(MockApiConfig::new(FileSet::Explicit(files)).with_batches(vec![batch]))
            .await;
    let (alice, carol, bob) = (Keys::new(), Keys::new(), Keys::new());
    let tmp = tempfile::tempdir().unwrap();
    let carol_file = tmp.path().join("carol.txt");
    std::fs::write(&carol_file, format!("{}\n", carol.recipient)).unwrap();
    let config = tmp.path().join("claudedl.toml");
    let toml = format!(
        "[crypt]\nrecipients = [\"{}\"]\nrecipients_file = {:?}\n",
        alice.recipient,
        carol_file.to_str().unwrap()
    );
    std::fs::write(&config, toml).unwrap();
    let data_dir = tmp.path().join("data");
    let run = |args: &[&str]| {
        let mut command = alice.against(&api, tmp.path());
        command.arg("--config").arg(&config).args(args);
        async move { command.output().await.unwrap() }
    };
    let d = data_dir.to_str().unwrap();

    let synced = run(&["sync", "--data-dir", d]).await;
    assert_eq!(synced.status.code(), Some(0), "{}", text(&synced.stderr));
    let stored = data_dir.join("raw/2026-08/file_a_a.bin.age");
    assert_eq!(alice.age_decrypt(&stored), content);
    assert_eq!(carol.age_decrypt(&stored), content);
    assert!(
        files_under(&data_dir.join("raw/2026-08/batches"))[0].ends_with("msgbatch_1.jsonl.age")
    );

    std::fs::remove_file(&stored).unwrap();
    let repaired = run(&["verify", "--data-dir", d, "--repair"]).await;
    assert_eq!(
        repaired.status.code(),
        Some(0),
        "{}",
        text(&repaired.stderr)
    );
    assert_eq!(alice.age_decrypt(&stored), content);
    assert_no_plaintext(&[&data_dir], &content);

    let fetched = run(&["files", "get", "file_a", "-d", tmp.path().to_str().unwrap()]).await;
    assert_eq!(fetched.status.code(), Some(0), "{}", text(&fetched.stderr));
    assert_eq!(
        carol.age_decrypt(&tmp.path().join("file_a_a.bin.age")),
        content
    );

    let out = tmp.path().join("results.jsonl");
    let o = out.to_str().unwrap();
    let for_bob = run(&[
        "batches",
        "results",
        "msgbatch_1",
        "-o",
        o,
        "--encrypt-to",
        &bob.recipient,
    ])
    .await;
    assert_eq!(for_bob.status.code(), Some(0), "{}", text(&for_bob.stderr));
    let sealed = tmp.path().join("results.jsonl.age");
    assert!(text(&bob.age_decrypt(&sealed)).contains("req-1"));
    assert!(
        !age_opens(&alice.identity(), &sealed),
        "flags replace the file's recipients"
    );
    assert!(!out.exists());

    let plain = run(&["batches", "results", "msgbatch_1", "-o", o, "--no-encrypt"]).await;
    assert_eq!(plain.status.code(), Some(0), "{}", text(&plain.stderr));
    assert!(text(&std::fs::read(&out).unwrap()).contains("req-1"));
}
