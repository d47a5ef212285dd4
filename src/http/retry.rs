//! Retrying, in one place: the policy that decides (pure: given how many times a unit of work
//! has failed and what the server said, try again and after how long, or give up), the one
//! table of retryable answers, the rule for when progress forgives past failures, and the
//! [`Retrier`] that every retry loop (the engine's probe, range and single stream, the API
//! client) goes through: it counts failures, picks the overload policy, holds a place in the
//! retry-storm pool, sleeps (cancellably) and writes the retry log line.
//!
//! Exponential backoff with *full* jitter (a uniform draw in `[0, min(cap, base·2ⁿ)]`), as
//! opposed to backon's additive jitter; and a server's `retry-after-ms` / `Retry-After`
//! (seconds or HTTP date) replaces the computed delay. Both are small enough that a crate would
//! not save code, and the exact schedule must be testable, so the policy is written here.
//!
//! **No retry can wait on another.** A place in the retry-storm pool (the governor's retry slot)
//! is held only while the backoff sleep runs, and released before the next attempt: its holder
//! waits for nothing but a timer (or cancellation), so a place always comes free within the
//! longest delay, however many units of work fail at once.

use std::fmt::Display;
use std::time::{Duration, SystemTime};

use reqwest::header::HeaderMap;
use tokio_util::sync::CancellationToken;

use super::{Governor, HttpError};
use crate::config::defaults;
use crate::config::network::seconds;

/// How retries are spaced and bounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries allowed after the first failure (`--max-retries`).
    pub max_retries: u32,
    /// Upper bound of the first backoff window.
    pub base: Duration,
    /// No backoff window grows beyond this.
    pub cap: Duration,
    /// The longest server-requested wait we accept before giving up instead.
    pub max_server_wait: Duration,
    /// Retries allowed while the server is overloaded (503/529): overload streaks are long.
    pub overload_retries: u32,
    /// The backoff window's cap while the server is overloaded (`--overload-pause`).
    pub overload_cap: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: defaults::MAX_RETRIES,
            base: Duration::from_secs(1),
            cap: Duration::from_secs(60),
            max_server_wait: Duration::from_secs(15 * 60),
            overload_retries: 12,
            overload_cap: seconds(defaults::OVERLOAD_PAUSE),
        }
    }
}

/// What to do after a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryDecision {
    RetryAfter(Duration),
    GiveUp,
}

impl RetryPolicy {
    /// Decide after the `failures`-th consecutive failure (1 for the first).
    ///
    /// `server_wait` is what the server asked for, if anything; `jitter` maps the backoff window
    /// to the delay actually used (production passes [`full_jitter`]).
    pub fn decide(
        &self,
        failures: u32,
        server_wait: Option<Duration>,
        jitter: impl FnOnce(Duration) -> Duration,
    ) -> RetryDecision {
        if failures > self.max_retries {
            return RetryDecision::GiveUp;
        }
        match server_wait {
            Some(wait) if wait > self.max_server_wait => RetryDecision::GiveUp,
            Some(wait) => RetryDecision::RetryAfter(wait),
            None => RetryDecision::RetryAfter(jitter(self.window(failures))),
        }
    }

    /// The policy for a server that said it is overloaded (503/529): more retries, growing up
    /// to the overload pause.
    pub fn for_overload(&self) -> RetryPolicy {
        RetryPolicy {
            max_retries: self.overload_retries.max(self.max_retries),
            cap: self.overload_cap.max(self.cap),
            ..*self
        }
    }

    /// The backoff window after `failures` failures: `min(cap, base·2^(failures-1))`.
    pub fn window(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(32);
        self.base
            .saturating_mul(1u32 << doublings.min(31))
            .min(self.cap)
    }
}

/// A uniform draw in `[0, window]`.
pub fn full_jitter(window: Duration) -> Duration {
    window.mul_f64(rand::random::<f64>())
}

/// The wait a response asks for: `retry-after-ms`, else `Retry-After` as seconds or HTTP date.
pub fn server_wait(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let text = |name: &str| headers.get(name)?.to_str().ok().map(str::trim);
    let millis = text("retry-after-ms").and_then(|v| v.parse::<f64>().ok());
    if let Some(ms) = millis.filter(|ms| ms.is_finite() && *ms >= 0.0) {
        return Some(Duration::from_secs_f64(ms / 1000.0));
    }
    let value = text("retry-after")?;
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let date = httpdate::parse_http_date(value).ok()?;
    Some(date.duration_since(now).unwrap_or(Duration::ZERO))
}

/// What an answer that is not a success means for another attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusClass {
    /// Final: another attempt would get the same answer.
    Final,
    /// Worth another attempt.
    Retry,
    /// The server is overloaded (503, 529): retried longer, with longer waits.
    Overload,
}

/// The one table of retryable statuses: 408, 409, 429 and 5xx, with 503 and 529 as overload;
/// a server's `x-should-retry: true|false` overrides the table.
pub fn classify(status: u16, headers: &HeaderMap) -> StatusClass {
    let should_retry = headers
        .get("x-should-retry")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim() == "true");
    let retryable =
        should_retry.unwrap_or(matches!(status, 408 | 409 | 429) || (500..600).contains(&status));
    match status {
        _ if !retryable => StatusClass::Final,
        503 | 529 => StatusClass::Overload,
        _ => StatusClass::Retry,
    }
}

/// Whether an exchange that got no answer may succeed on another attempt: network trouble
/// (refused, reset, stalled) yes; a request that cannot be built or redirected, a halted process
/// and a rejected TLS certificate (the same certificate comes back) no.
pub fn transient(error: &HttpError) -> bool {
    if error.is_certificate() {
        return false;
    }
    match error {
        HttpError::Send { source, .. } | HttpError::Body { source, .. } => {
            !source.is_builder() && !source.is_redirect()
        }
        HttpError::Stalled { .. } => true,
        _ => false,
    }
}

/// Whether `status` says the server is overloaded (the overload policy applies).
pub fn is_overload(status: u16) -> bool {
    matches!(status, 503 | 529)
}

/// Bytes one attempt must deliver, and keep, for the failures before it to be forgiven.
///
/// Progress is counted in bytes kept, never in time or attempts: a server can stretch time
/// and open connections at no cost (a trickle of 1,000 bytes then silence, forever), but each
/// forgiveness costs it a MiB of the file. So a unit of work of `n` bytes fails at most
/// `(max_retries + 1) · (n / PROGRESS_BYTES + 1)` times before it gives up; a range smaller
/// than this is never forgiven, and gives up after `max_retries + 1` failed attempts in all.
pub const PROGRESS_BYTES: u64 = 1024 * 1024;

/// Whether an attempt that kept `kept` bytes before failing made real progress.
pub fn made_progress(kept: u64) -> bool {
    kept >= PROGRESS_BYTES
}

/// A failed attempt, as the retrier needs to know it.
#[derive(Clone, Copy)]
pub struct Failed<'a> {
    /// Why it failed (for the log line and the reporter).
    pub reason: &'a (dyn Display + Sync),
    /// The server said it is overloaded.
    pub overload: bool,
    /// What the server asked to wait, if anything.
    pub server_wait: Option<Duration>,
    /// Bytes the attempt delivered that are kept (0 when the next attempt starts over).
    pub kept: u64,
    /// The bytes concerned (`"S-E"`), when the unit of work is a range.
    pub range: Option<&'a str>,
}

/// Why a retrier stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// The policy gave up after this many failed attempts in a row.
    GaveUp { attempts: u32 },
    /// Cancelled while waiting.
    Cancelled,
}

/// The retries of one unit of work (a range, a stream, an API call). Create one per unit of
/// work, call [`Retrier::wait`] after each failed attempt.
pub struct Retrier<'a> {
    policy: RetryPolicy,
    governor: &'a Governor,
    cancel: &'a CancellationToken,
    /// The (redacted) URL, for the log line.
    url: &'a str,
    failures: u32,
}

impl<'a> Retrier<'a> {
    pub fn new(
        policy: RetryPolicy,
        governor: &'a Governor,
        cancel: &'a CancellationToken,
        url: &'a str,
    ) -> Retrier<'a> {
        Retrier {
            policy,
            governor,
            cancel,
            url,
            failures: 0,
        }
    }

    /// Failed attempts in a row, as counted (see [`made_progress`]).
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// After a failed attempt: give up, or tell `on_retry` (failures, delay) and wait out the
    /// delay holding a place in the retry-storm pool, released before this returns.
    pub async fn wait(
        &mut self,
        failed: Failed<'_>,
        on_retry: impl FnOnce(u32, Duration),
    ) -> Result<(), Stop> {
        if made_progress(failed.kept) {
            self.failures = 0;
        }
        self.failures += 1;
        let failures = self.failures;
        let policy = if failed.overload {
            self.policy.for_overload()
        } else {
            self.policy
        };
        let delay = match policy.decide(failures, failed.server_wait, full_jitter) {
            RetryDecision::GiveUp => return Err(Stop::GaveUp { attempts: failures }),
            RetryDecision::RetryAfter(delay) => delay,
        };
        let cancelled = self.cancel.cancelled();
        let backoff = async {
            let _slot = self.governor.retry_slot().await;
            tracing::debug!(event = "retry", url = self.url, range = failed.range, failures, delay_ms = delay.as_millis() as u64, reason = %failed.reason, "retrying");
            on_retry(failures, delay);
            tokio::time::sleep(delay).await;
        };
        tokio::select! {
            biased;
            () = cancelled => Err(Stop::Cancelled),
            () = backoff => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn schedule(policy: &RetryPolicy) -> Vec<RetryDecision> {
        (1..=policy.max_retries + 1)
            .map(|failures| policy.decide(failures, None, |window| window))
            .collect()
    }

    #[test]
    fn default_schedule_doubles_from_one_second_and_gives_up_after_five_retries() {
        use RetryDecision::*;
        let secs = |s| RetryAfter(Duration::from_secs(s));
        assert_eq!(
            schedule(&RetryPolicy::default()),
            vec![secs(1), secs(2), secs(4), secs(8), secs(16), GiveUp]
        );
    }

    #[test]
    fn window_is_capped() {
        let policy = RetryPolicy {
            max_retries: 10,
            ..RetryPolicy::default()
        };
        let windows: Vec<u64> = (1..=10).map(|n| policy.window(n).as_secs()).collect();
        assert_eq!(windows, vec![1, 2, 4, 8, 16, 32, 60, 60, 60, 60]);
        assert_eq!(policy.window(u32::MAX), Duration::from_secs(60));
    }

    #[test]
    fn overload_gets_more_retries_growing_to_the_overload_pause() {
        let policy = RetryPolicy::default().for_overload();
        let windows: Vec<u64> = (1..=12).map(|n| policy.window(n).as_secs()).collect();
        assert_eq!(
            windows,
            vec![1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 600, 600]
        );
        assert_eq!(policy.decide(13, None, |w| w), RetryDecision::GiveUp);
    }

    #[test]
    fn full_jitter_stays_inside_the_window() {
        let window = Duration::from_millis(250);
        for _ in 0..1000 {
            assert!(full_jitter(window) <= window);
        }
    }

    #[test]
    fn server_wait_replaces_backoff_but_not_the_retry_limit() {
        let policy = RetryPolicy::default();
        let wait = Some(Duration::from_secs(7));
        assert_eq!(
            policy.decide(1, wait, |_| unreachable!()),
            RetryDecision::RetryAfter(Duration::from_secs(7))
        );
        assert_eq!(policy.decide(6, wait, |w| w), RetryDecision::GiveUp);
        assert_eq!(
            policy.decide(1, Some(Duration::from_secs(3600)), |w| w),
            RetryDecision::GiveUp
        );
    }

    #[test]
    fn reads_retry_after_forms() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut headers = HeaderMap::new();
        assert_eq!(server_wait(&headers, now), None);
        headers.insert("retry-after", HeaderValue::from_static("3"));
        assert_eq!(server_wait(&headers, now), Some(Duration::from_secs(3)));
        let date = httpdate::fmt_http_date(now + Duration::from_secs(12));
        headers.insert("retry-after", HeaderValue::from_str(&date).unwrap());
        assert_eq!(server_wait(&headers, now), Some(Duration::from_secs(12)));
        headers.insert("retry-after-ms", HeaderValue::from_static("1500"));
        assert_eq!(
            server_wait(&headers, now),
            Some(Duration::from_millis(1500))
        );
    }

    #[test]
    fn a_date_in_the_past_means_no_wait() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut headers = HeaderMap::new();
        let date = httpdate::fmt_http_date(now - Duration::from_secs(60));
        headers.insert("retry-after", HeaderValue::from_str(&date).unwrap());
        assert_eq!(server_wait(&headers, now), Some(Duration::ZERO));
    }

    #[test]
    fn one_table_of_retryable_statuses() {
        let none = HeaderMap::new();
        let class = |status| classify(status, &none);
        for status in [408, 409, 429, 500, 502, 504] {
            assert_eq!(class(status), StatusClass::Retry, "{status}");
        }
        for status in [503, 529] {
            assert_eq!(class(status), StatusClass::Overload, "{status}");
        }
        for status in [400, 401, 403, 404, 410, 416] {
            assert_eq!(class(status), StatusClass::Final, "{status}");
        }
        let mut headers = HeaderMap::new();
        headers.insert("x-should-retry", HeaderValue::from_static("false"));
        assert_eq!(classify(503, &headers), StatusClass::Final);
        headers.insert("x-should-retry", HeaderValue::from_static("true"));
        assert_eq!(classify(400, &headers), StatusClass::Retry);
    }

    #[test]
    fn only_a_mebibyte_kept_is_progress() {
        assert!(!made_progress(0));
        assert!(!made_progress(1000));
        assert!(!made_progress(PROGRESS_BYTES - 1));
        assert!(made_progress(PROGRESS_BYTES));
    }

    fn fast(max_retries: u32) -> RetryPolicy {
        RetryPolicy {
            max_retries,
            base: Duration::from_millis(10),
            cap: Duration::from_millis(40),
            ..RetryPolicy::default()
        }
    }

    fn failed(kept: u64) -> Failed<'static> {
        Failed {
            reason: &"reset",
            overload: false,
            server_wait: None,
            kept,
            range: Some("0-9"),
        }
    }

    fn governor(slots: usize) -> std::sync::Arc<Governor> {
        Governor::new(super::super::GovernorConfig {
            max_concurrent_retries: slots,
            ..Default::default()
        })
    }

    #[tokio::test(start_paused = true)]
    async fn a_trickle_is_not_progress_and_gives_up_after_the_retry_limit() {
        let governor = governor(2);
        let cancel = CancellationToken::new();
        let mut retrier = Retrier::new(fast(2), &governor, &cancel, "u");
        assert_eq!(retrier.wait(failed(1000), |_, _| {}).await, Ok(()));
        assert_eq!(retrier.wait(failed(1000), |_, _| {}).await, Ok(()));
        assert_eq!(
            retrier.wait(failed(1000), |_, _| {}).await,
            Err(Stop::GaveUp { attempts: 3 })
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_mebibyte_per_attempt_forgives_the_failures_before_it() {
        let governor = governor(2);
        let cancel = CancellationToken::new();
        let mut retrier = Retrier::new(fast(1), &governor, &cancel, "u");
        for _ in 0..10 {
            assert_eq!(
                retrier.wait(failed(PROGRESS_BYTES), |_, _| {}).await,
                Ok(())
            );
            assert_eq!(retrier.failures(), 1);
        }
        assert_eq!(
            retrier.wait(failed(0), |_, _| {}).await,
            Err(Stop::GaveUp { attempts: 2 })
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_overload_policy_is_chosen_by_the_failure() {
        let governor = governor(2);
        let cancel = CancellationToken::new();
        let policy = RetryPolicy {
            overload_retries: 3,
            ..fast(1)
        };
        let mut retrier = Retrier::new(policy, &governor, &cancel, "u");
        let overloaded = Failed {
            overload: true,
            ..failed(0)
        };
        for _ in 0..3 {
            assert_eq!(retrier.wait(overloaded, |_, _| {}).await, Ok(()));
        }
        assert_eq!(
            retrier.wait(overloaded, |_, _| {}).await,
            Err(Stop::GaveUp { attempts: 4 })
        );
    }

    /// Many units of work failing at once on a pool of one place: each holds the place only
    /// while it sleeps, so all of them run their schedules to the end.
    #[tokio::test(start_paused = true)]
    async fn failing_units_never_wait_on_each_other() {
        let governor = governor(1);
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let governor = std::sync::Arc::clone(&governor);
                tokio::spawn(async move {
                    let cancel = CancellationToken::new();
                    let mut retrier = Retrier::new(fast(3), &governor, &cancel, "u");
                    let mut retried = 0;
                    while retrier.wait(failed(0), |_, _| retried += 1).await.is_ok() {}
                    retried
                })
            })
            .collect();
        let all = async {
            let mut retried = 0;
            for task in tasks {
                retried += task.await.unwrap();
            }
            retried
        };
        let retried = tokio::time::timeout(Duration::from_secs(60), all).await;
        assert_eq!(retried, Ok(8 * 3));
    }

    #[tokio::test(start_paused = true)]
    async fn cancellation_ends_a_wait_for_a_place_or_a_delay() {
        let governor = governor(1);
        let cancel = CancellationToken::new();
        let slow = RetryPolicy {
            base: Duration::from_secs(3600),
            cap: Duration::from_secs(3600),
            ..fast(5)
        };
        let _taken = governor.retry_slot().await;
        let mut retrier = Retrier::new(slow, &governor, &cancel, "u");
        let waiting = retrier.wait(failed(0), |_, _| {});
        let cancel_soon = async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            cancel.cancel();
        };
        let (waited, ()) = tokio::join!(waiting, cancel_soon);
        assert_eq!(waited, Err(Stop::Cancelled));
    }
}
