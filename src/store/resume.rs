//! Resume state: what a `.part` file holds, recorded beside it as JSON.
//!
//! The state is written atomically and only after the data it claims has been synced, so it
//! never claims a byte that is not on disk. A rerun trusts it only for the same URL, and only
//! while the server confirms (via `If-Range`) that the validator still names the same bytes.

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::RangeSet;
use super::atomic::write_atomic;
use crate::crypt::SealedState;

const FORMAT_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResumeState {
    pub version: u32,
    /// The source, redacted (no credentials, no query values).
    pub url: String,
    /// Total size, when the server told us.
    pub total: Option<u64>,
    pub etag: Option<String>,
    pub last_modified: Option<String>,
    /// Whether the server honoured byte ranges when this state was written.
    pub ranges_supported: bool,
    /// Byte ranges of the `.part` that are written and synced (plaintext offsets).
    pub done: RangeSet,
    /// For an encrypted download: where the age payload starts, and its file key, wrapped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crypt: Option<SealedState>,
    /// Set just before the complete `.part` is renamed to the output: what the output then
    /// holds. A rerun that finds the output so (killed between the rename and recording it)
    /// takes it as done instead of fetching it again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub installed: Option<Installed>,
}

/// What a complete download renamed to its output holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Installed {
    /// SHA-256 of the content (the plaintext, when encrypted).
    pub sha256: String,
    /// Content bytes.
    pub size: u64,
    /// Bytes of the output file (larger than `size` when encrypted).
    pub stored: u64,
    /// The output the `.part` was renamed to.
    pub output: PathBuf,
}

impl ResumeState {
    pub fn new(url: String) -> ResumeState {
        ResumeState {
            version: FORMAT_VERSION,
            url,
            total: None,
            etag: None,
            last_modified: None,
            ranges_supported: false,
            done: RangeSet::new(),
            crypt: None,
            installed: None,
        }
    }

    /// The validator to send in `If-Range`: a strong ETag, else Last-Modified.
    pub fn validator(&self) -> Option<&str> {
        let strong_etag = self.etag.as_deref().filter(|tag| !tag.starts_with("W/"));
        strong_etag.or(self.last_modified.as_deref())
    }

    /// Load the state at `path`; a missing, unreadable or foreign-version file yields `None`
    /// (the caller then starts afresh, which is always safe).
    pub fn load(path: &Path) -> Option<ResumeState> {
        let bytes = std::fs::read(path).ok()?;
        let state: ResumeState = serde_json::from_slice(&bytes).ok()?;
        (state.version == FORMAT_VERSION).then_some(state)
    }

    pub fn save(&self, path: &Path) -> io::Result<()> {
        let bytes = serde_json::to_vec_pretty(self).map_err(io::Error::other)?;
        write_atomic(path, &bytes)
    }
}

/// Where a download's in-flight files live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatePaths {
    pub output: PathBuf,
    pub part: PathBuf,
    pub state: PathBuf,
}

impl StatePaths {
    /// `big.bin` → `big.bin.part` and `big.bin.part.json` beside it.
    pub fn beside(output: &Path) -> StatePaths {
        StatePaths::staged(output, output)
    }

    /// The output, with its `.part` and state at `staging.part` and `staging.part.json`.
    pub fn staged(output: &Path, staging: &Path) -> StatePaths {
        let name = staging
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        StatePaths {
            output: output.to_path_buf(),
            part: staging.with_file_name(format!("{name}.part")),
            state: staging.with_file_name(format!("{name}.part.json")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.part.json");
        let mut state = ResumeState::new("http://h/f".into());
        state.total = Some(100);
        state.etag = Some("\"abc\"".into());
        state.done.insert(0..50);
        state.save(&path).unwrap();
        assert_eq!(ResumeState::load(&path), Some(state));
        std::fs::write(&path, b"{not json").unwrap();
        assert_eq!(ResumeState::load(&path), None);
    }

    #[test]
    fn prefers_a_strong_etag_as_validator() {
        let mut state = ResumeState::new("u".into());
        state.last_modified = Some("Tue, 14 Nov 2023 22:13:20 GMT".into());
        assert_eq!(state.validator(), Some("Tue, 14 Nov 2023 22:13:20 GMT"));
        state.etag = Some("W/\"weak\"".into());
        assert_eq!(state.validator(), Some("Tue, 14 Nov 2023 22:13:20 GMT"));
        state.etag = Some("\"strong\"".into());
        assert_eq!(state.validator(), Some("\"strong\""));
    }

    #[test]
    fn paths_sit_beside_the_output() {
        let paths = StatePaths::beside(Path::new("dl/big.bin"));
        assert_eq!(paths.part, Path::new("dl/big.bin.part"));
        assert_eq!(paths.state, Path::new("dl/big.bin.part.json"));
    }
}
