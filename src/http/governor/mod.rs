//! The governor: one per process, consulted by the HTTP client before and after every request.
//!
//! - [`budget`]: the request budget (GCRA), fed by `anthropic-ratelimit-requests-*` headers;
//! - [`concurrency`]: AIMD on requests in flight (a 429 halves it, successes grow it back);
//! - [`endpoints`]: failover to backup endpoints after a 503/529 streak;
//! - [`bandwidth`]: the `--limit-rate` cap on bytes per second;
//! - [`summary`]: what happened, for the run summary.
//!
//! A 429 pauses every request of the process until its `retry-after`; overload with no backup
//! pauses them with growing delays up to the overload pause; a spend-cap 429 halts the process:
//! no further request is sent. Retries wait out their backoff holding a place in a small pool
//! (the retry-storm guard, taken by [`super::retry::Retrier`]), so a failing server meets a
//! trickle of retries, not a herd.

mod bandwidth;
mod budget;
mod concurrency;
mod endpoints;
mod summary;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use reqwest::header::HeaderMap;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use url::Url;

use self::bandwidth::Bandwidth;
use self::budget::Budget;
use self::concurrency::{Concurrency, Slot};
use self::endpoints::{Endpoints, OVERLOAD_STREAK, Overload};
use self::summary::Stats;
pub use self::summary::TrafficSummary;
use self::summary::WaitReason;
use super::retry::server_wait;

/// A 429 without `retry-after` (that is not the spend cap) pauses everyone this long.
const DEFAULT_THROTTLE_PAUSE: Duration = Duration::from_secs(1);
/// The first process-wide pause once the only endpoint is overloaded; it doubles per answer.
const FIRST_OVERLOAD_PAUSE: Duration = Duration::from_secs(1);
/// The head of the line re-checks at least this often (a pause or a new limit may have come).
const RECHECK: Duration = Duration::from_millis(200);

/// How the process paces itself.
#[derive(Debug, Clone)]
pub struct GovernorConfig {
    /// The request budget to start from; `None`: unpaced (the server's headers are then only
    /// used for 429s).
    pub requests_per_minute: Option<u32>,
    /// Requests in flight at most (the AIMD ceiling).
    pub max_in_flight: usize,
    /// The API's base URL first, then backups; empty: no failover.
    pub endpoints: Vec<Url>,
    /// How long an overloaded endpoint is left alone, and the longest process-wide overload
    /// pause.
    pub overload_pause: Duration,
    /// Cap on bytes per second across all connections.
    pub bytes_per_second: Option<u64>,
    /// Retries waiting out their backoff at once, at most.
    pub max_concurrent_retries: usize,
}

impl Default for GovernorConfig {
    fn default() -> Self {
        GovernorConfig {
            requests_per_minute: None,
            max_in_flight: 64,
            endpoints: Vec::new(),
            overload_pause: Duration::from_secs(600),
            bytes_per_second: None,
            max_concurrent_retries: 4,
        }
    }
}

/// The process has stopped sending requests, and why.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct Halted(pub String);

/// Permission to send one request. Keep it alive as long as the response is being read.
#[derive(Debug)]
pub struct Ticket {
    sequence: u64,
    endpoint: Option<usize>,
    slot: Slot,
}

impl Ticket {
    /// The place in flight, to be kept with the response.
    pub fn into_slot(self) -> Slot {
        self.slot
    }
}

#[derive(Debug)]
pub struct Governor {
    budget: Option<Mutex<Budget>>,
    /// Requests waiting for a budget slot queue here, first come first served.
    line: tokio::sync::Mutex<()>,
    paused_until: Mutex<Option<(Instant, WaitReason)>>,
    concurrency: Arc<Concurrency>,
    endpoints: Mutex<Endpoints>,
    bandwidth: Option<Mutex<Bandwidth>>,
    retries: Arc<Semaphore>,
    stats: Stats,
    halted: OnceLock<Halted>,
    sent: AtomicU64,
    overload_pause: Duration,
}

impl Governor {
    pub fn new(config: GovernorConfig) -> Arc<Governor> {
        let now = Instant::now();
        Arc::new(Governor {
            budget: config
                .requests_per_minute
                .map(|rpm| Mutex::new(Budget::new(rpm, now))),
            line: tokio::sync::Mutex::new(()),
            paused_until: Mutex::new(None),
            concurrency: Concurrency::new(config.max_in_flight),
            endpoints: Mutex::new(Endpoints::new(config.endpoints, config.overload_pause)),
            bandwidth: config
                .bytes_per_second
                .map(|rate| Mutex::new(Bandwidth::new(rate, now))),
            retries: Arc::new(Semaphore::new(config.max_concurrent_retries.max(1))),
            stats: Stats::new(),
            halted: OnceLock::new(),
            sent: AtomicU64::new(0),
            overload_pause: config.overload_pause,
        })
    }

    /// Whether requests are paced by a budget (then each request counts).
    pub fn paces_requests(&self) -> bool {
        self.budget.is_some()
    }

    /// The same request on the endpoint in use (URLs of other origins are left alone), and
    /// which endpoint that is.
    pub fn route(&self, url: &Url) -> (Url, Option<usize>) {
        let routed = self.endpoints.lock().unwrap().route(url, Instant::now());
        if let Some((from, to)) = routed.returned {
            self.stats.switched();
            tracing::info!(
                event = "endpoint_return",
                from,
                to,
                "the preferred endpoint rested; using it again"
            );
        }
        (routed.url, routed.endpoint)
    }

    /// Wait until a request may be sent: a place in flight, no process-wide pause, a slot in
    /// the budget.
    pub async fn admit(&self, endpoint: Option<usize>) -> Result<Ticket, Halted> {
        self.check_halted()?;
        let started = Instant::now();
        let slot = match self.concurrency.try_acquire() {
            Some(slot) => slot,
            None => {
                let slot = self.concurrency.acquire().await;
                self.note_wait(WaitReason::Concurrency, started.elapsed());
                slot
            }
        };
        self.wait_for_turn().await;
        self.check_halted()?;
        self.stats.sent();
        let sequence = self.sent.fetch_add(1, Ordering::Relaxed) + 1;
        Ok(Ticket {
            sequence,
            endpoint,
            slot,
        })
    }

    /// Wait out any process-wide pause, then for a budget slot (first come, first served).
    async fn wait_for_turn(&self) {
        let _line = if self.budget.is_some() {
            Some(self.line.lock().await)
        } else {
            None
        };
        loop {
            let now = Instant::now();
            let next = match self.pause_at(now) {
                Some(pause) => Some(pause),
                None => self
                    .take_budget(now)
                    .err()
                    .map(|at| (at, WaitReason::Budget)),
            };
            let Some((until, reason)) = next else {
                return;
            };
            let until = until.min(now + RECHECK);
            tokio::time::sleep_until(until).await;
            self.note_wait(reason, until - now);
        }
    }

    fn pause_at(&self, now: Instant) -> Option<(Instant, WaitReason)> {
        let paused = *self.paused_until.lock().unwrap();
        paused.filter(|(until, _)| *until > now)
    }

    fn take_budget(&self, now: Instant) -> Result<(), Instant> {
        match &self.budget {
            Some(budget) => budget.lock().unwrap().try_take(now),
            None => Ok(()),
        }
    }

    /// Learn from an answer: the server's budget, pushback, overload.
    pub fn observe(&self, ticket: &Ticket, status: u16, headers: &HeaderMap) {
        self.stats.answered(status);
        let now = Instant::now();
        self.learn_budget(ticket, headers, now);
        match status {
            429 => self.throttled(headers, now),
            503 | 529 => self.overloaded(ticket, status, now),
            _ => {
                self.concurrency.succeeded();
                if let Some(index) = ticket.endpoint {
                    self.endpoints.lock().unwrap().succeeded(index);
                }
            }
        }
    }

    fn learn_budget(&self, ticket: &Ticket, headers: &HeaderMap, now: Instant) {
        let Some(budget) = &self.budget else {
            return;
        };
        let number =
            |name: &str| -> Option<u64> { headers.get(name)?.to_str().ok()?.trim().parse().ok() };
        let mut budget = budget.lock().unwrap();
        if let Some(limit) = number("anthropic-ratelimit-requests-limit") {
            let limit = u32::try_from(limit).unwrap_or(u32::MAX);
            if f64::from(limit) < budget.rate() {
                tracing::info!(
                    event = "budget",
                    limit,
                    "the server's request limit is lower: adopting it"
                );
            }
            budget.set_limit(limit, now);
        }
        if let Some(remaining) = number("anthropic-ratelimit-requests-remaining") {
            // Requests sent after this one have already spent some of what it reported.
            let since = self.sent.load(Ordering::Relaxed) - ticket.sequence;
            budget.anchor_remaining(remaining.saturating_sub(since), now);
        }
    }

    fn throttled(&self, headers: &HeaderMap, now: Instant) {
        let wait = server_wait(headers, SystemTime::now()).unwrap_or(DEFAULT_THROTTLE_PAUSE);
        let limit = self.concurrency.decrease();
        self.pause_all(now + wait, WaitReason::Throttled);
        tracing::info!(
            event = "throttled",
            wait_ms = wait.as_millis() as u64,
            in_flight_limit = limit,
            "429: every request pauses, and fewer run at once"
        );
    }

    fn overloaded(&self, ticket: &Ticket, status: u16, now: Instant) {
        let Some(index) = ticket.endpoint else {
            return;
        };
        let overload = self.endpoints.lock().unwrap().overloaded(index, now);
        match overload {
            Overload::Counting => {}
            Overload::Switched { from, to } => {
                self.stats.switched();
                tracing::warn!(
                    event = "endpoint_switch",
                    status,
                    from,
                    to,
                    pause_s = self.overload_pause.as_secs(),
                    "endpoint overloaded; switching to the next one"
                );
            }
            Overload::NowhereElse { streak } => {
                let doublings = (streak - OVERLOAD_STREAK).min(20);
                let pause = (FIRST_OVERLOAD_PAUSE * (1 << doublings)).min(self.overload_pause);
                self.pause_all(now + pause, WaitReason::Overloaded);
                tracing::warn!(
                    event = "overloaded",
                    status,
                    streak,
                    pause_ms = pause.as_millis() as u64,
                    "the endpoint is overloaded and there is no other: every request pauses"
                );
            }
        }
    }

    fn pause_all(&self, until: Instant, reason: WaitReason) {
        let mut paused = self.paused_until.lock().unwrap();
        if paused.is_none_or(|(current, _)| current < until) {
            *paused = Some((until, reason));
        }
    }

    /// Stop sending requests for the rest of the process.
    pub fn halt(&self, reason: String) {
        if self.halted.set(Halted(reason.clone())).is_ok() {
            tracing::error!(event = "halt", %reason, "no further requests will be sent");
        }
    }

    /// Why the process stopped sending requests, if it did.
    pub fn halted(&self) -> Option<&Halted> {
        self.halted.get()
    }

    fn check_halted(&self) -> Result<(), Halted> {
        match self.halted.get() {
            Some(halted) => Err(halted.clone()),
            None => Ok(()),
        }
    }

    /// Account for `bytes` received; sleeps when the bandwidth cap is ahead of schedule.
    pub async fn received(&self, bytes: u64) {
        let Some(bandwidth) = &self.bandwidth else {
            return;
        };
        let pause = bandwidth.lock().unwrap().consume(bytes, Instant::now());
        if !pause.is_zero() {
            tokio::time::sleep(pause).await;
        }
    }

    /// A place among the retries waiting out their backoff. Only [`super::retry::Retrier`]
    /// takes one, and holds it only while it sleeps: a holder waits for nothing else, so a place
    /// always comes free within the longest backoff delay.
    pub(in crate::http) async fn retry_slot(&self) -> OwnedSemaphorePermit {
        let started = Instant::now();
        let permit = Arc::clone(&self.retries)
            .acquire_owned()
            .await
            .expect("the retry pool is never closed");
        self.note_wait(WaitReason::Retries, started.elapsed());
        permit
    }

    fn note_wait(&self, reason: WaitReason, wait: Duration) {
        if wait.is_zero() {
            return;
        }
        self.stats.waited(reason, wait);
        tracing::debug!(
            event = "wait",
            reason = reason.as_str(),
            wait_ms = wait.as_millis() as u64,
            "request waited"
        );
    }

    /// The run summary so far.
    pub fn summary(&self) -> TrafficSummary {
        let budget = self.budget.as_ref().map(|b| b.lock().unwrap().rate());
        self.stats.summary(budget)
    }
}

#[cfg(test)]
mod tests {
    use reqwest::header::HeaderValue;

    use super::*;

    fn governor(rpm: Option<u32>) -> Arc<Governor> {
        Governor::new(GovernorConfig {
            requests_per_minute: rpm,
            ..GovernorConfig::default()
        })
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    /// Admit `n` requests from concurrent tasks; the times they were admitted, from `start`.
    async fn admit_times(governor: &Arc<Governor>, n: usize, start: Instant) -> Vec<Duration> {
        let tasks: Vec<_> = (0..n)
            .map(|_| {
                let governor = Arc::clone(governor);
                tokio::spawn(async move {
                    governor.admit(None).await.unwrap();
                    Instant::now() - start
                })
            })
            .collect();
        let mut times = Vec::new();
        for task in tasks {
            times.push(task.await.unwrap());
        }
        times.sort();
        times
    }

    #[tokio::test(start_paused = true)]
    async fn requests_are_paced_by_the_budget() {
        let governor = governor(Some(600));
        let start = Instant::now();
        let times = admit_times(&governor, 15, start).await;
        assert_eq!(times[4], Duration::ZERO);
        assert_eq!(times[5], Duration::from_millis(100));
        assert_eq!(times[14], Duration::from_millis(1000));
        assert_eq!(governor.summary().requests, 15);
    }

    #[tokio::test(start_paused = true)]
    async fn a_429_pauses_every_request_for_its_retry_after() {
        let governor = governor(None);
        let ticket = governor.admit(None).await.unwrap();
        let start = Instant::now();
        governor.observe(&ticket, 429, &headers(&[("retry-after", "2")]));
        let times = admit_times(&governor, 4, start).await;
        assert!(
            times.iter().all(|t| *t >= Duration::from_secs(2)),
            "{times:?}"
        );
        let summary = governor.summary();
        assert_eq!(summary.throttled, 1);
        assert!(summary.waited_ms["throttled"] >= 8000, "{summary:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_lower_server_limit_and_remaining_slow_it_down() {
        let governor = governor(Some(600));
        let ticket = governor.admit(None).await.unwrap();
        let answer = headers(&[
            ("anthropic-ratelimit-requests-limit", "60"),
            ("anthropic-ratelimit-requests-remaining", "0"),
        ]);
        governor.observe(&ticket, 200, &answer);
        let start = Instant::now();
        let times = admit_times(&governor, 3, start).await;
        assert_eq!(
            times,
            [1, 2, 3].map(Duration::from_secs).to_vec(),
            "one a second once the server says 60/min with nothing left"
        );
        assert_eq!(governor.summary().budget_rpm, Some(60.0));
    }

    #[tokio::test(start_paused = true)]
    async fn a_halted_governor_refuses_every_request() {
        let governor = governor(None);
        governor.halt("spend limit".into());
        let refused = governor.admit(None).await.unwrap_err();
        assert_eq!(refused.0, "spend limit");
    }

    #[tokio::test(start_paused = true)]
    async fn the_retry_guard_caps_retries_in_progress() {
        let governor = Governor::new(GovernorConfig {
            max_concurrent_retries: 2,
            ..GovernorConfig::default()
        });
        let first = governor.retry_slot().await;
        let _second = governor.retry_slot().await;
        let third = tokio::spawn({
            let governor = Arc::clone(&governor);
            async move { governor.retry_slot().await }
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!third.is_finished());
        drop(first);
        let _third = third.await.unwrap();
    }
}
