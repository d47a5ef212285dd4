//! Request rates learned by discovery, remembered between runs.
//!
//! One small JSON file in the user's state directory (never the data directory), keyed by the
//! API endpoint's origin and, when a response named it, the organisation:
//! `{"rates": {"https://api.anthropic.com": {"requests_per_minute": 1080.0, "updated": 1796000000}}}`.
//! It holds rates only: no key, no header, no URL path. Written whole to a temporary file and
//! renamed into place, so a reader sees the old file or the new one. Two processes writing at once
//! keep the last writer's rates, which is harmless: both learned from the same server.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use url::Url;

/// A learned rate older than this is not trusted (limits change with the account's tier).
const FORGET_AFTER: Duration = Duration::from_secs(30 * 24 * 3600);

#[derive(Debug, Default, Serialize, Deserialize)]
struct Rates {
    #[serde(default)]
    rates: BTreeMap<String, Learned>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct Learned {
    requests_per_minute: f64,
    /// Seconds since the Unix epoch.
    updated: u64,
}

/// The file of learned rates.
#[derive(Debug, Clone)]
pub struct RateMemory {
    path: PathBuf,
}

impl RateMemory {
    pub fn new(path: PathBuf) -> RateMemory {
        RateMemory { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The key of an endpoint (its origin) and, if known, the organisation.
    pub fn key(endpoint: &Url, organisation: Option<&str>) -> String {
        let origin = endpoint.origin().ascii_serialization();
        match organisation {
            Some(org) => format!("{origin} organisation={org}"),
            None => origin,
        }
    }

    /// The rate learned for `key`, if one is remembered and recent.
    pub fn load(&self, key: &str) -> Option<f64> {
        let learned = *self.read().rates.get(key)?;
        let age = now_secs().saturating_sub(learned.updated);
        let usable = learned.requests_per_minute.is_finite() && learned.requests_per_minute >= 1.0;
        (usable && age < FORGET_AFTER.as_secs()).then_some(learned.requests_per_minute)
    }

    /// Remember `requests_per_minute` under each of `keys`.
    pub fn store(&self, keys: &[String], requests_per_minute: f64) -> io::Result<()> {
        let mut rates = self.read();
        let learned = Learned {
            requests_per_minute,
            updated: now_secs(),
        };
        for key in keys {
            rates.rates.insert(key.clone(), learned);
        }
        self.write(&rates)
    }

    /// What the file says; an unreadable or damaged file counts as empty (it is only a hint).
    fn read(&self) -> Rates {
        std::fs::read(&self.path)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default()
    }

    fn write(&self, rates: &Rates) -> io::Result<()> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)?;
        let temporary = self
            .path
            .with_extension(format!("json.tmp-{}", std::process::id()));
        let json = serde_json::to_vec_pretty(rates).map_err(io::Error::other)?;
        std::fs::write(&temporary, json)?;
        std::fs::rename(&temporary, &self.path).inspect_err(|_| {
            let _ = std::fs::remove_file(&temporary);
        })
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_rate_is_loaded_by_origin_and_by_organisation() {
        let dir = tempfile::tempdir().unwrap();
        let memory = RateMemory::new(dir.path().join("state/claudedl/rates.json"));
        let endpoint = Url::parse("https://api.example.test/v1/files?x=1").unwrap();
        let origin = RateMemory::key(&endpoint, None);
        let org = RateMemory::key(&endpoint, Some("org-1"));
        assert_eq!(origin, "https://api.example.test");
        assert_eq!(memory.load(&origin), None);
        memory
            .store(&[origin.clone(), org.clone()], 1080.0)
            .unwrap();
        assert_eq!(memory.load(&origin), Some(1080.0));
        assert_eq!(memory.load(&org), Some(1080.0));
        assert_eq!(memory.load("https://other.example.test"), None);
        let text = std::fs::read_to_string(memory.path()).unwrap();
        assert!(!text.contains("/v1/files"), "{text}");
    }

    #[test]
    fn a_damaged_file_is_ignored_and_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let memory = RateMemory::new(dir.path().join("rates.json"));
        std::fs::write(memory.path(), "{not json").unwrap();
        assert_eq!(memory.load("https://a.test"), None);
        memory.store(&["https://a.test".into()], 90.0).unwrap();
        assert_eq!(memory.load("https://a.test"), Some(90.0));
    }
}
