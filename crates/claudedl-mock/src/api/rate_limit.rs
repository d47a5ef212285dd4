//! A requests-per-minute token bucket with the `anthropic-ratelimit-requests-*` headers.

use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use super::clock::{ceil_unix_secs, format_rfc3339};

/// Capacity `limit`, refilled continuously at `limit` tokens per minute.
#[derive(Debug)]
pub(super) struct TokenBucket {
    limit: u32,
    tokens: f64,
    updated: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub(super) fn new(limit: u32) -> Self {
        TokenBucket {
            limit,
            tokens: f64::from(limit),
            updated: Instant::now(),
        }
    }

    fn per_second(&self) -> f64 {
        f64::from(self.limit.max(1)) / 60.0
    }

    fn refill(&mut self) {
        let now = Instant::now();
        let elapsed = now.duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_second()).min(f64::from(self.limit));
        self.updated = now;
    }

    /// Takes one token, or tells how many whole seconds until one is available.
    pub(super) fn try_take(&mut self) -> Result<(), u64> {
        self.refill();
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Ok(());
        }
        let wait = (1.0 - self.tokens) / self.per_second();
        Err((wait.ceil() as u64).max(1))
    }

    /// `anthropic-ratelimit-requests-{limit,remaining,reset}`; reset is when the bucket is full.
    pub(super) fn headers(&mut self) -> [(&'static str, String); 3] {
        self.refill();
        let missing = f64::from(self.limit) - self.tokens;
        let until_full = Duration::from_secs_f64((missing / self.per_second()).max(0.0));
        let reset = format_rfc3339(ceil_unix_secs(SystemTime::now() + until_full));
        [
            ("anthropic-ratelimit-requests-limit", self.limit.to_string()),
            (
                "anthropic-ratelimit-requests-remaining",
                (self.tokens.floor() as u64).to_string(),
            ),
            ("anthropic-ratelimit-requests-reset", reset),
        ]
    }
}
