//! What the governor saw: counted while the process runs, reported once at the end.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use super::budget::RateSource;

/// Why a request waited before it was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum WaitReason {
    /// Its turn in the request budget.
    Budget,
    /// A process-wide pause after a 429.
    Throttled,
    /// A process-wide pause while the only endpoint is overloaded (503/529).
    Overloaded,
    /// A place under the concurrency limit.
    Concurrency,
    /// The retry-storm guard: too many retries at once.
    Retries,
}

impl WaitReason {
    pub fn as_str(self) -> &'static str {
        match self {
            WaitReason::Budget => "budget",
            WaitReason::Throttled => "throttled",
            WaitReason::Overloaded => "overloaded",
            WaitReason::Concurrency => "concurrency",
            WaitReason::Retries => "retries",
        }
    }
}

#[derive(Debug)]
pub struct Stats {
    started: Instant,
    requests: AtomicU64,
    endpoint_switches: AtomicU64,
    statuses: Mutex<BTreeMap<u16, u64>>,
    waited: Mutex<BTreeMap<WaitReason, Duration>>,
    /// Content: files finished, the requests they took, their body bytes, and the time spent
    /// reading bodies (summed over connections).
    files: AtomicU64,
    content_requests: AtomicU64,
    bytes: AtomicU64,
    transferring: Mutex<Duration>,
}

/// What the lower bound of a run is computed from.
#[derive(Debug, Clone, Copy)]
pub struct Bound {
    /// The request budget in force, requests per minute.
    pub rpm: Option<f64>,
    /// The `--limit-rate` cap, bytes per second.
    pub bytes_per_second: Option<u64>,
}

impl Stats {
    pub fn new() -> Stats {
        Stats {
            started: Instant::now(),
            requests: AtomicU64::new(0),
            endpoint_switches: AtomicU64::new(0),
            statuses: Mutex::new(BTreeMap::new()),
            waited: Mutex::new(BTreeMap::new()),
            files: AtomicU64::new(0),
            content_requests: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            transferring: Mutex::new(Duration::ZERO),
        }
    }

    pub fn content_request(&self) {
        self.content_requests.fetch_add(1, Ordering::Relaxed);
    }

    pub fn file_finished(&self) {
        self.files.fetch_add(1, Ordering::Relaxed);
    }

    pub fn received(&self, bytes: u64) {
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    pub fn transferred(&self, time: Duration) {
        *self.transferring.lock().unwrap() += time;
    }

    pub fn sent(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    pub fn answered(&self, status: u16) {
        *self.statuses.lock().unwrap().entry(status).or_default() += 1;
    }

    pub fn switched(&self) {
        self.endpoint_switches.fetch_add(1, Ordering::Relaxed);
    }

    pub fn waited(&self, reason: WaitReason, wait: Duration) {
        *self.waited.lock().unwrap().entry(reason).or_default() += wait;
    }

    pub fn summary(&self, budget: Option<(f64, RateSource)>, bound: Bound) -> TrafficSummary {
        let elapsed = self.started.elapsed();
        let requests = self.requests.load(Ordering::Relaxed);
        let statuses = self.statuses.lock().unwrap();
        let minutes = elapsed.as_secs_f64() / 60.0;
        let files = self.files.load(Ordering::Relaxed);
        let content_requests = self.content_requests.load(Ordering::Relaxed);
        let bytes = self.bytes.load(Ordering::Relaxed);
        // One request per file, plus the requests that were not for content (listing).
        let needed = requests.saturating_sub(content_requests) + files;
        TrafficSummary {
            files,
            content_requests,
            bytes,
            transfer_ms: self.transferring.lock().unwrap().as_millis() as u64,
            lower_bound_ms: lower_bound(needed, bytes, bound).map(|b| b.as_millis() as u64),
            requests,
            throttled: statuses.get(&429).copied().unwrap_or(0),
            server_errors: statuses
                .iter()
                .filter(|(status, _)| **status >= 500)
                .map(|(status, n)| (*status, *n))
                .collect(),
            waited_ms: self
                .waited
                .lock()
                .unwrap()
                .iter()
                .map(|(reason, wait)| (reason.as_str(), wait.as_millis() as u64))
                .collect(),
            elapsed_ms: elapsed.as_millis() as u64,
            achieved_rpm: if minutes > 0.0 {
                requests as f64 / minutes
            } else {
                0.0
            },
            budget_rpm: budget.map(|(rate, _)| rate),
            rate_source: budget.map(|(_, source)| source),
            endpoint_switches: self.endpoint_switches.load(Ordering::Relaxed),
        }
    }
}

/// max(requests needed ÷ allowed rate, bytes ÷ bandwidth), when either is known.
fn lower_bound(needed: u64, bytes: u64, bound: Bound) -> Option<Duration> {
    let by_requests = bound
        .rpm
        .filter(|rpm| *rpm > 0.0)
        .map(|rpm| needed as f64 * 60.0 / rpm);
    let by_bytes = bound
        .bytes_per_second
        .filter(|rate| *rate > 0)
        .map(|rate| bytes as f64 / rate as f64);
    let seconds = by_requests.into_iter().chain(by_bytes).reduce(f64::max)?;
    Some(Duration::from_secs_f64(seconds))
}

/// The run summary: requests, pushback, waiting, pace, failovers, and what the content cost.
#[derive(Debug, Clone, Serialize)]
pub struct TrafficSummary {
    /// Files downloaded, the requests their content took, and their body bytes.
    pub files: u64,
    pub content_requests: u64,
    pub bytes: u64,
    /// Time spent reading bodies, summed over connections.
    pub transfer_ms: u64,
    /// max(requests needed ÷ the budget, bytes ÷ `--limit-rate`); `None`: neither binds.
    pub lower_bound_ms: Option<u64>,
    pub requests: u64,
    /// 429 answers.
    pub throttled: u64,
    /// 5xx answers by status.
    pub server_errors: BTreeMap<u16, u64>,
    /// Time requests spent waiting before they were sent, by reason (summed over requests).
    pub waited_ms: BTreeMap<&'static str, u64>,
    pub elapsed_ms: u64,
    pub achieved_rpm: f64,
    /// The request budget in force at the end (`None`: unpaced).
    pub budget_rpm: Option<f64>,
    /// Where that budget came from: flag, default, learned, server or discovered.
    pub rate_source: Option<RateSource>,
    pub endpoint_switches: u64,
}

impl fmt::Display for TrafficSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} requests in {:.1} s ({:.0}/min",
            self.requests,
            self.elapsed_ms as f64 / 1000.0,
            self.achieved_rpm
        )?;
        match self.budget_rpm {
            Some(budget) => {
                let source = self.rate_source.map_or("", RateSource::as_str);
                write!(f, " of a {budget:.0}/min budget, from {source})")?
            }
            None => write!(f, ", unpaced)")?,
        }
        write!(f, ", {} throttled (429)", self.throttled)?;
        for (status, n) in &self.server_errors {
            write!(f, ", {n}×{status}")?;
        }
        let waited: u64 = self.waited_ms.values().sum();
        if waited > 0 {
            let parts: Vec<String> = self
                .waited_ms
                .iter()
                .map(|(reason, ms)| format!("{reason} {:.1} s", *ms as f64 / 1000.0))
                .collect();
            write!(f, ", waited {}", parts.join(", "))?;
        }
        if self.endpoint_switches > 0 {
            write!(f, ", {} endpoint switches", self.endpoint_switches)?;
        }
        self.fmt_content(f)
    }
}

impl TrafficSummary {
    /// Requests per file, bytes per request, budget wait against transfer time, the bound.
    fn fmt_content(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.files == 0 || self.content_requests == 0 {
            return Ok(());
        }
        let per_request = self.bytes / self.content_requests;
        write!(
            f,
            "; {:.2} requests per file, {} per request",
            self.content_requests as f64 / self.files as f64,
            bytesize::ByteSize(per_request).display().iec()
        )?;
        let budget = self.waited_ms.get("budget").copied().unwrap_or(0);
        write!(
            f,
            ", waited for budget {:.1} s vs transferring {:.1} s",
            budget as f64 / 1000.0,
            self.transfer_ms as f64 / 1000.0
        )?;
        if let Some(bound) = self.lower_bound_ms.filter(|b| *b > 0) {
            write!(
                f,
                ", {:.2}× the lower bound of {:.1} s",
                self.elapsed_ms as f64 / bound as f64,
                bound as f64 / 1000.0
            )?;
        }
        Ok(())
    }
}
