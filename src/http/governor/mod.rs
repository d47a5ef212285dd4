//! The governor: one per process, consulted by the HTTP client before and after every request.
//!
//! - `budget`: the request budget (GCRA): a ceiling (`--rpm`), the server's advertised limit
//!   (`anthropic-ratelimit-requests-*`), or a rate discovered from 429s when nobody says;
//! - `memory`: discovered rates remembered between runs, per endpoint and organisation;
//! - `concurrency`: AIMD on requests in flight (a 429 halves it, successes grow it back);
//! - `endpoints`: failover to backup endpoints after a 503/529 streak;
//! - `bandwidth`: the `--limit-rate` cap on bytes per second;
//! - `summary`: what happened, for the run summary;
//! - `shared`: a budget shared with other processes (the fleet's), consulted after this one.
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
mod memory;
pub mod shared;
mod summary;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use reqwest::header::HeaderMap;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use url::Url;

use self::bandwidth::Bandwidth;
pub use self::budget::RateSource;
use self::budget::{Budget, StartRate};
use self::concurrency::{Concurrency, Slot};
use self::endpoints::{Endpoints, OVERLOAD_STREAK, Overload};
pub use self::memory::RateMemory;
pub use self::summary::TrafficSummary;
use self::summary::WaitReason;
use self::summary::{Bound, Stats};
use super::retry::server_wait;

/// A 429 without `retry-after` (that is not the spend cap) pauses everyone this long.
const DEFAULT_THROTTLE_PAUSE: Duration = Duration::from_secs(1);
/// The first process-wide pause once the only endpoint is overloaded; it doubles per answer.
const FIRST_OVERLOAD_PAUSE: Duration = Duration::from_secs(1);
/// The head of the line re-checks at least this often (a pause or a new limit may have come).
const RECHECK: Duration = Duration::from_millis(200);
/// A request waiting for its shared slot re-reads the shared pause at most this often.
const SHARED_REREADS: usize = 8;
/// A learned rate is written to the state directory at most this often.
const REMEMBER_EVERY: Duration = Duration::from_secs(5);

/// A response header naming the organisation whose budget a request spent.
const ORGANISATION_HEADER: &str = "anthropic-organization-id";

/// How requests are paced by a budget.
#[derive(Debug, Clone, PartialEq)]
pub struct Pacing {
    /// The user's `--rpm`: the starting rate and a ceiling never exceeded.
    pub ceiling: Option<u32>,
    /// The starting rate when there is no ceiling and nothing was learned.
    pub start: u32,
    /// Where discovered rates are remembered between runs (`None`: not remembered).
    pub memory: Option<PathBuf>,
}

/// How the process paces itself.
#[derive(Debug, Clone)]
pub struct GovernorConfig {
    /// The request budget; `None`: unpaced (the server's headers are then only used for 429s).
    pub pacing: Option<Pacing>,
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
            pacing: None,
            max_in_flight: 64,
            endpoints: Vec::new(),
            overload_pause: crate::config::network::seconds(
                crate::config::defaults::OVERLOAD_PAUSE,
            ),
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
    learning: Option<Learning>,
    bytes_per_second: Option<u64>,
    shared: OnceLock<Arc<dyn shared::SharedBudget>>,
}

/// Remembering discovered rates: where, under which keys, and what was last written.
#[derive(Debug)]
struct Learning {
    memory: RateMemory,
    endpoint: Url,
    organisation: OnceLock<String>,
    stored: Mutex<Option<(f64, Instant)>>,
}

impl Governor {
    pub fn new(config: GovernorConfig) -> Arc<Governor> {
        let now = Instant::now();
        let learning = config.pacing.as_ref().and_then(|pacing| {
            Some(Learning {
                memory: RateMemory::new(pacing.memory.clone()?),
                endpoint: config.endpoints.first()?.clone(),
                organisation: OnceLock::new(),
                stored: Mutex::new(None),
            })
        });
        let budget = config.pacing.as_ref().map(|pacing| {
            let start = starting_rate(pacing, learning.as_ref());
            Mutex::new(Budget::new(start, pacing.ceiling, now))
        });
        Arc::new(Governor {
            budget,
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
            learning,
            bytes_per_second: config.bytes_per_second,
            shared: OnceLock::new(),
        })
    }

    /// Pace requests by `budget` too, after this process's own budget (set once).
    pub fn share_budget(&self, budget: Arc<dyn shared::SharedBudget>) {
        let _ = self.shared.set(budget);
    }

    /// Whether requests are paced by a budget (then each request counts).
    pub fn paces_requests(&self) -> bool {
        self.budget.is_some()
    }

    /// The request rate in force, requests per minute (`None`: unpaced).
    pub fn request_rate(&self) -> Option<f64> {
        self.budget.as_ref().map(|b| b.lock().unwrap().rate())
    }

    /// A request for content (a transfer's probe, piece or take-over) was sent.
    pub fn content_request(&self) {
        self.stats.content_request();
    }

    /// A transfer finished well (for requests per file in the summary).
    pub fn file_finished(&self) {
        self.stats.file_finished();
    }

    /// A connection spent `time` reading a body.
    pub fn transferred(&self, time: Duration) {
        self.stats.transferred(time);
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
                return self.wait_for_shared_turn().await;
            };
            let until = until.min(now + RECHECK);
            tokio::time::sleep_until(until).await;
            self.note_wait(reason, until - now);
        }
    }

    /// Reserve a slot in the shared budget and wait for it, and out any shared pause a 429
    /// set meanwhile: re-read when another process announces one (a wake), else at the end of
    /// the wait (bounded: a pause is re-read at most a few times).
    async fn wait_for_shared_turn(&self) {
        let Some(shared) = self.shared.get() else {
            return;
        };
        // Subscribed before reserving: a pause written meanwhile still wakes this request.
        let mut wakes = shared.wakes();
        let wait = shared.reserve().await;
        if let Some(reason) = shared.halted() {
            return self.halt(reason);
        }
        let mut until = Instant::now() + wait;
        self.note_wait(WaitReason::Budget, wait);
        for _ in 0..SHARED_REREADS {
            let now = Instant::now();
            if until <= now {
                return;
            }
            let woken = tokio::select! {
                () = tokio::time::sleep_until(until) => false,
                () = changed(wakes.as_mut()) => true,
            };
            let paused = shared.paused_for().await;
            if let Some(reason) = shared.halted() {
                return self.halt(reason);
            }
            let now = Instant::now();
            if !paused.is_zero() {
                // The whole process learns it: requests in line wait it out too.
                self.pause_all(now + paused, WaitReason::Throttled);
                self.note_wait(
                    WaitReason::Throttled,
                    (now + paused).saturating_duration_since(until),
                );
            }
            until = if woken {
                until.max(now + paused)
            } else {
                now + paused
            };
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
        self.anchor_shared(headers);
        self.learn_budget(ticket, headers, now);
        self.learn_organisation(headers, now);
        match status {
            429 => self.throttled(headers, now),
            503 | 529 => self.overloaded(ticket, status, now),
            _ => {
                self.accepted(now);
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

    /// The server's remaining count re-anchors the shared budget too (it decides whether that
    /// tightens anything).
    fn anchor_shared(&self, headers: &HeaderMap) {
        let Some(shared) = self.shared.get() else {
            return;
        };
        let remaining = headers
            .get("anthropic-ratelimit-requests-remaining")
            .and_then(|value| value.to_str().ok()?.trim().parse::<u64>().ok());
        if let Some(remaining) = remaining {
            let shared = Arc::clone(shared);
            tokio::spawn(async move { shared.anchor(remaining).await });
        }
    }

    /// An answer other than 429 counts towards the rate the server accepts.
    fn accepted(&self, now: Instant) {
        if let Some(budget) = &self.budget {
            budget.lock().unwrap().accepted(now);
        }
    }

    fn throttled(&self, headers: &HeaderMap, now: Instant) {
        let wait = server_wait(headers, SystemTime::now()).unwrap_or(DEFAULT_THROTTLE_PAUSE);
        // 429s that arrive during the pause are echoes of the same overshoot: settle once.
        let echo = self.pause_at(now).is_some();
        let settled = self
            .budget
            .as_ref()
            .filter(|_| !echo)
            .and_then(|budget| budget.lock().unwrap().throttled(now));
        if let Some(rate) = settled {
            tracing::info!(
                event = "budget",
                rate_rpm = rate,
                "429 without an advertised limit: settling under the rate the server accepted"
            );
            self.remember(rate, now);
        }
        let limit = self.concurrency.decrease();
        self.pause_all(now + wait, WaitReason::Throttled);
        if let Some(shared) = self.shared.get() {
            let shared = Arc::clone(shared);
            let until = SystemTime::now() + wait;
            tokio::spawn(async move { shared.pause(until).await });
        }
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

    /// The first response naming the organisation: a rate learned for it is used from now on.
    fn learn_organisation(&self, headers: &HeaderMap, now: Instant) {
        let (Some(learning), Some(budget)) = (&self.learning, &self.budget) else {
            return;
        };
        if learning.organisation.get().is_some() {
            return;
        }
        let Some(org) = headers
            .get(ORGANISATION_HEADER)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty())
        else {
            return;
        };
        if learning.organisation.set(org.to_owned()).is_err() {
            return;
        }
        let key = RateMemory::key(&learning.endpoint, Some(org));
        if let Some(rate) = learning.memory.load(&key) {
            budget.lock().unwrap().adopt_learned(rate, now);
        }
    }

    /// Write the rate discovery settled at after a 429 to the state directory (at most every few
    /// seconds, and only when it moved): the next run against the same endpoint starts there.
    /// Probing above it is not remembered: only a rate the server was seen to hold is.
    fn remember(&self, rate: f64, now: Instant) {
        let Some(learning) = &self.learning else {
            return;
        };
        {
            let mut stored = learning.stored.lock().unwrap();
            let unchanged = stored.is_some_and(|(last, at)| {
                (rate / last - 1.0).abs() < 0.02 || now.duration_since(at) < REMEMBER_EVERY
            });
            if unchanged {
                return;
            }
            *stored = Some((rate, now));
        }
        let mut keys = vec![RateMemory::key(&learning.endpoint, None)];
        if let Some(org) = learning.organisation.get() {
            keys.push(RateMemory::key(&learning.endpoint, Some(org)));
        }
        match learning.memory.store(&keys, rate) {
            Ok(()) => tracing::debug!(event = "rate_learned", rate_rpm = rate, "remembered"),
            Err(error) => tracing::warn!(
                event = "rate_learned",
                path = %learning.memory.path().display(),
                %error,
                "could not remember the learned request rate"
            ),
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
            if let Some(shared) = self.shared.get() {
                let shared = Arc::clone(shared);
                tokio::spawn(async move { shared.halt(reason).await });
            }
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
        self.stats.received(bytes);
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
        let budget = self.budget.as_ref().map(|b| {
            let budget = b.lock().unwrap();
            (budget.rate(), budget.source())
        });
        let bound = Bound {
            rpm: budget.map(|(rate, _)| rate),
            bytes_per_second: self.bytes_per_second,
        };
        self.stats.summary(budget, bound)
    }
}

/// The next wake of a shared budget; never, without one (or once its sender is gone).
async fn changed(wakes: Option<&mut tokio::sync::watch::Receiver<u64>>) {
    if let Some(wakes) = wakes
        && wakes.changed().await.is_ok()
    {
        return;
    }
    std::future::pending().await
}

/// The flag's rate, else a rate learned for the endpoint, else the configured start.
fn starting_rate(pacing: &Pacing, learning: Option<&Learning>) -> StartRate {
    if let Some(ceiling) = pacing.ceiling {
        return StartRate {
            requests_per_minute: f64::from(ceiling),
            source: RateSource::Flag,
        };
    }
    let learned = learning.and_then(|l| l.memory.load(&RateMemory::key(&l.endpoint, None)));
    match learned {
        Some(rate) => StartRate {
            requests_per_minute: rate,
            source: RateSource::Learned,
        },
        None => StartRate {
            requests_per_minute: f64::from(pacing.start),
            source: RateSource::Default,
        },
    }
}

#[cfg(test)]
mod tests {
    use reqwest::header::HeaderValue;

    use super::*;

    fn governor(rpm: Option<u32>) -> Arc<Governor> {
        Governor::new(GovernorConfig {
            pacing: rpm.map(|rpm| Pacing {
                ceiling: Some(rpm),
                start: rpm,
                memory: None,
            }),
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

    /// A shared budget that makes every request wait `slot`, with a pause the test sets and
    /// announces; it records when the pause was read.
    #[derive(Debug)]
    struct FakeShared {
        slot: Duration,
        paused_until: Mutex<Instant>,
        reads: Mutex<Vec<Instant>>,
        wakes: tokio::sync::watch::Sender<u64>,
        anchored: Mutex<Vec<u64>>,
    }

    impl shared::SharedBudget for FakeShared {
        fn reserve(&self) -> shared::BoxFuture<'_, Duration> {
            Box::pin(async move { self.slot })
        }
        fn paused_for(&self) -> shared::BoxFuture<'_, Duration> {
            Box::pin(async move {
                let now = Instant::now();
                self.reads.lock().unwrap().push(now);
                self.paused_until
                    .lock()
                    .unwrap()
                    .saturating_duration_since(now)
            })
        }
        fn pause(&self, _: SystemTime) -> shared::BoxFuture<'_, ()> {
            Box::pin(async {})
        }
        fn halted(&self) -> Option<String> {
            None
        }
        fn halt(&self, _: String) -> shared::BoxFuture<'_, ()> {
            Box::pin(async {})
        }
        fn wakes(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
            Some(self.wakes.subscribe())
        }
        fn anchor(&self, remaining: u64) -> shared::BoxFuture<'_, ()> {
            self.anchored.lock().unwrap().push(remaining);
            Box::pin(async {})
        }
    }

    fn fake_shared(slot: Duration) -> Arc<FakeShared> {
        Arc::new(FakeShared {
            slot,
            paused_until: Mutex::new(Instant::now()),
            reads: Mutex::new(Vec::new()),
            wakes: tokio::sync::watch::Sender::new(0),
            anchored: Mutex::new(Vec::new()),
        })
    }

    /// A request waiting 10 s for its shared slot hears of another process's 30 s pause at once
    /// (re-reads it when woken, not at the end of its wait), and is sent when the pause ends.
    #[tokio::test(start_paused = true)]
    async fn a_waiting_request_rereads_the_shared_pause_when_woken() {
        let governor = governor(None);
        let shared = fake_shared(Duration::from_secs(10));
        governor.share_budget(Arc::clone(&shared) as Arc<dyn shared::SharedBudget>);
        let start = Instant::now();
        let admitted = tokio::spawn({
            let governor = Arc::clone(&governor);
            async move {
                governor.admit(None).await.unwrap();
                Instant::now() - start
            }
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        *shared.paused_until.lock().unwrap() = start + Duration::from_secs(30);
        shared.wakes.send_modify(|n| *n += 1);
        assert_eq!(admitted.await.unwrap(), Duration::from_secs(30));
        let reads = shared.reads.lock().unwrap().clone();
        assert_eq!(
            reads.first().map(|at| *at - start),
            Some(Duration::from_secs(1)),
            "the pause is read when the wake comes: {reads:?}"
        );
        // The process learned it: its next request waits for the pause too (then its slot).
        let summary = governor.summary();
        assert!(summary.waited_ms["throttled"] >= 20_000, "{summary:?}");
    }

    /// The server's remaining count goes to the shared budget with every answer that has it.
    #[tokio::test(start_paused = true)]
    async fn the_servers_remaining_count_reaches_the_shared_budget() {
        let governor = governor(None);
        let shared = fake_shared(Duration::ZERO);
        governor.share_budget(Arc::clone(&shared) as Arc<dyn shared::SharedBudget>);
        let ticket = governor.admit(None).await.unwrap();
        let answer = headers(&[("anthropic-ratelimit-requests-remaining", "3")]);
        governor.observe(&ticket, 200, &answer);
        governor.observe(&ticket, 200, &HeaderMap::new());
        tokio::task::yield_now().await;
        assert_eq!(*shared.anchored.lock().unwrap(), [3]);
    }

    /// A server that enforces `rpm` (a token bucket holding `capacity`) and says nothing about
    /// it; answers 429 with `retry-after: 1` when the bucket is empty.
    struct SilentServer {
        rpm: f64,
        capacity: f64,
        tokens: f64,
        at: Instant,
    }

    impl SilentServer {
        fn answer(&mut self, now: Instant) -> u16 {
            let refill = now.duration_since(self.at).as_secs_f64() * self.rpm / 60.0;
            self.tokens = (self.tokens + refill).min(self.capacity);
            self.at = now;
            if self.tokens >= 1.0 {
                self.tokens -= 1.0;
                200
            } else {
                429
            }
        }
    }

    /// 16 workers send requests for `run` against a silent 1,200/min server; the answers'
    /// statuses and times.
    async fn against_silent_server(
        governor: &Arc<Governor>,
        run: Duration,
    ) -> Vec<(u16, Duration)> {
        let start = Instant::now();
        let server = Arc::new(Mutex::new(SilentServer {
            rpm: 1200.0,
            capacity: 20.0,
            tokens: 20.0,
            at: start,
        }));
        let answers = Arc::new(Mutex::new(Vec::new()));
        let workers: Vec<_> = (0..16)
            .map(|_| {
                let (governor, server, answers) = (
                    Arc::clone(governor),
                    Arc::clone(&server),
                    Arc::clone(&answers),
                );
                tokio::spawn(async move {
                    while Instant::now() - start < run {
                        let ticket = governor.admit(None).await.unwrap();
                        let status = server.lock().unwrap().answer(Instant::now());
                        let retry = headers(&[("retry-after", "1")]);
                        let answer = if status == 429 {
                            retry
                        } else {
                            HeaderMap::new()
                        };
                        governor.observe(&ticket, status, &answer);
                        answers
                            .lock()
                            .unwrap()
                            .push((status, Instant::now() - start));
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                })
            })
            .collect();
        for worker in workers {
            worker.await.unwrap();
        }
        answers.lock().unwrap().clone()
    }

    fn discovering(memory: &std::path::Path) -> Arc<Governor> {
        Governor::new(GovernorConfig {
            pacing: Some(Pacing {
                ceiling: None,
                start: 50,
                memory: Some(memory.to_path_buf()),
            }),
            endpoints: vec![Url::parse("http://127.0.0.1:9/v1/").unwrap()],
            ..GovernorConfig::default()
        })
    }

    #[tokio::test(start_paused = true)]
    async fn discovery_converges_under_a_silent_limit_with_few_429s_and_is_remembered() {
        let dir = tempfile::tempdir().unwrap();
        let memory = dir.path().join("rates.json");
        let governor = discovering(&memory);
        let answers = against_silent_server(&governor, Duration::from_secs(120)).await;
        let throttled = answers.iter().filter(|(s, _)| *s == 429).count();
        let last_minute = answers
            .iter()
            .filter(|(s, t)| *s == 200 && *t >= Duration::from_secs(60))
            .count();
        assert!(
            throttled * 100 <= answers.len() * 2,
            "{throttled} of {} answers were 429",
            answers.len()
        );
        assert!(
            (1020..=1230).contains(&last_minute),
            "{last_minute} accepted in the second minute (limit 1,200)"
        );
        let summary = governor.summary();
        assert_eq!(summary.rate_source, Some(RateSource::Discovered));
        let learned = RateMemory::new(memory.clone())
            .load("http://127.0.0.1:9")
            .expect("the discovered rate is remembered");
        assert!((960.0..=1200.0).contains(&learned), "learned {learned}/min");

        // The next run starts at the learned rate: nearly the whole limit from the first minute.
        let next = discovering(&memory);
        assert_eq!(next.summary().rate_source, Some(RateSource::Learned));
        let answers = against_silent_server(&next, Duration::from_secs(60)).await;
        let accepted = answers.iter().filter(|(s, _)| *s == 200).count();
        let throttled = answers.len() - accepted;
        assert!(accepted >= 950, "{accepted} accepted in the first minute");
        assert!(throttled * 100 <= answers.len() * 2, "{throttled} 429s");
    }

    #[tokio::test(start_paused = true)]
    async fn an_advertised_limit_is_in_use_within_the_ramp_time_and_the_ceiling_holds() {
        let limit = headers(&[("anthropic-ratelimit-requests-limit", "6000")]);
        let governor = governor(None);
        assert!(!governor.paces_requests());
        let paced = Governor::new(GovernorConfig {
            pacing: Some(Pacing {
                ceiling: None,
                start: 50,
                memory: None,
            }),
            ..GovernorConfig::default()
        });
        let ticket = paced.admit(None).await.unwrap();
        paced.observe(&ticket, 200, &limit);
        tokio::time::sleep(budget::RAMP_TIME).await;
        let start = Instant::now();
        let times = admit_times(&paced, 100, start).await;
        assert!(times[99] <= Duration::from_millis(1000), "{:?}", times[99]);
        assert_eq!(paced.summary().budget_rpm, Some(6000.0));

        let capped = Governor::new(GovernorConfig {
            pacing: Some(Pacing {
                ceiling: Some(600),
                start: 600,
                memory: None,
            }),
            ..GovernorConfig::default()
        });
        let ticket = capped.admit(None).await.unwrap();
        capped.observe(&ticket, 200, &limit);
        tokio::time::sleep(budget::RAMP_TIME).await;
        let start = Instant::now();
        let times = admit_times(&capped, 100, start).await;
        assert!(times[99] >= Duration::from_millis(9000), "{:?}", times[99]);
        assert_eq!(capped.summary().budget_rpm, Some(600.0));
    }
}
