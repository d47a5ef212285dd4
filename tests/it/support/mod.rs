//! Shared helpers: test data, hashing, a fast-retrying engine, a recording reporter, nginx.

#![allow(dead_code)]

pub mod nginx;
pub mod postgres;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use claudedl::engine::{
    Engine, EngineConfig, Reporter, TransferError, TransferReport, TransferSpec,
};
use claudedl::http::retry::RetryPolicy;
use claudedl::http::{ClientConfig, HttpClient};
use claudedl_mock::api::MockFile;
use sha2::{Digest, Sha256};

pub const MIB: usize = 1024 * 1024;

/// The `claudedl` binary, with a state directory of this test process's own: nothing a test
/// learns (request rates, resume keys) leaks into the user's state or into another test run.
pub fn claudedl_binary() -> tokio::process::Command {
    static STATE: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    let state = STATE.get_or_init(|| tempfile::tempdir().expect("a state directory"));
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_claudedl"));
    command
        .env_remove("ANTHROPIC_AUTH_TOKEN")
        .env("XDG_STATE_HOME", state.path())
        .env("CLAUDEDL_RATES", state.path().join("rates.json"));
    command
}

/// Deterministic pseudo-random bytes (xorshift), different for each seed.
pub fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

pub fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

pub fn sha256_file(path: &Path) -> String {
    sha256(&std::fs::read(path).unwrap())
}

/// Engine settings for tests: real defaults, but retries spaced in milliseconds.
pub fn test_config(connections: usize) -> EngineConfig {
    EngineConfig {
        connections,
        retry: RetryPolicy {
            max_retries: 5,
            base: Duration::from_millis(10),
            cap: Duration::from_millis(50),
            overload_retries: 0,
            overload_cap: Duration::from_millis(50),
            ..RetryPolicy::default()
        },
        read_timeout: Duration::from_secs(5),
        ..EngineConfig::default()
    }
}

pub fn engine(config: EngineConfig) -> Engine {
    Engine::new(HttpClient::new(&ClientConfig::default()).unwrap(), config)
}

pub fn spec(url: &str, output: &Path) -> TransferSpec {
    TransferSpec::new(url.parse().unwrap(), output)
}

/// Remembers what the engine reported; can cancel the engine once enough bytes are written.
#[derive(Default)]
pub struct Recorder {
    pub notices: Mutex<Vec<String>>,
    pub retry_delays: Mutex<Vec<Duration>>,
    pub written: std::sync::atomic::AtomicU64,
    pub cancel_after: Mutex<Option<(u64, tokio_util::sync::CancellationToken)>>,
}

impl Recorder {
    pub fn new() -> Arc<Recorder> {
        Arc::new(Recorder::default())
    }

    pub fn cancelling_after(bytes: u64, engine: &Engine) -> Arc<Recorder> {
        let recorder = Recorder::default();
        *recorder.cancel_after.lock().unwrap() = Some((bytes, engine.cancel_token()));
        Arc::new(recorder)
    }

    pub fn notices(&self) -> Vec<String> {
        self.notices.lock().unwrap().clone()
    }
}

impl Reporter for Recorder {
    fn progress(&self, _id: usize, bytes: u64) {
        let total = self
            .written
            .fetch_add(bytes, std::sync::atomic::Ordering::SeqCst)
            + bytes;
        if let Some((limit, token)) = &*self.cancel_after.lock().unwrap()
            && total >= *limit
        {
            token.cancel();
        }
    }
    fn notice(&self, _id: usize, message: &str) {
        self.notices.lock().unwrap().push(message.to_owned());
    }
    fn retrying(&self, _id: usize, _failures: u32, delay: Duration, _reason: &str) {
        self.retry_delays.lock().unwrap().push(delay);
    }
    fn finished(&self, _id: usize, _result: &Result<TransferReport, TransferError>) {}
}

/// Output bytes as text (lossy).
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// stdout as JSON lines, every one of which must parse.
pub fn json_lines(output: &Output) -> Vec<serde_json::Value> {
    text(&output.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("every line is JSON"))
        .collect()
}

/// Every file below `root`, recursively.
pub fn files_under(root: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                found.push(path);
            }
        }
    }
    found
}

/// A downloadable mock file created on the 5th of `month` (YYYY-MM); CSV names get text/csv.
pub fn mock_file(id: &str, name: &str, month: &str, content: Vec<u8>) -> MockFile {
    MockFile {
        id: id.into(),
        filename: name.into(),
        mime_type: if name.ends_with(".csv") {
            "text/csv".into()
        } else {
            "application/octet-stream".into()
        },
        created_at: format!("{month}-05T10:00:00Z"),
        downloadable: true,
        expired: false,
        content: Bytes::from(content),
    }
}

/// The SHA-256 of every file a sync put under `DIR/data/raw`, sorted.
pub fn synced_hashes(dir: &tempfile::TempDir) -> Vec<String> {
    let mut hashes: Vec<String> = files_under(&dir.path().join("data/raw"))
        .iter()
        .map(|path| sha256(&std::fs::read(path).unwrap()))
        .collect();
    hashes.sort();
    hashes
}

/// The SHA-256 of every mock file's content, sorted (to compare with [`synced_hashes`]).
pub fn expected_hashes(files: &[MockFile]) -> Vec<String> {
    let mut hashes: Vec<String> = files.iter().map(|f| sha256(&f.content)).collect();
    hashes.sort();
    hashes
}
