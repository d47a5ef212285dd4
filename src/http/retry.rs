//! The retry policy: given how many times a unit of work has failed and what the server said,
//! decide whether to try again and after how long. It never sleeps; the caller does.
//!
//! Exponential backoff with *full* jitter (a uniform draw in `[0, min(cap, base·2ⁿ)]`), as
//! opposed to backon's additive jitter; and a server's `retry-after-ms` / `Retry-After`
//! (seconds or HTTP date) replaces the computed delay. Both are small enough that a crate would
//! not save code, and the exact schedule must be testable, so the policy is written here.

use std::time::{Duration, SystemTime};

use reqwest::header::HeaderMap;

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
            max_retries: 5,
            base: Duration::from_secs(1),
            cap: Duration::from_secs(60),
            max_server_wait: Duration::from_secs(15 * 60),
            overload_retries: 12,
            overload_cap: Duration::from_secs(600),
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
}
