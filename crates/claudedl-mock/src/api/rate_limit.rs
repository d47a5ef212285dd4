//! A requests-per-minute token bucket with the `anthropic-ratelimit-requests-*` headers.
//!
//! The bucket holds at most its capacity (the per-minute limit, or an explicit burst capacity)
//! and refills continuously at `limit / 60` tokens per second. The limit can change at run time:
//! lowering it keeps at most the new capacity of tokens, raising it keeps the tokens there are.

use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use super::clock::{ceil_unix_secs, format_rfc3339};

/// Capacity `limit` (or `burst`), refilled continuously at `limit` tokens per minute.
#[derive(Debug)]
pub(super) struct TokenBucket {
    /// Requests per minute.
    limit: u32,
    /// An explicit capacity that survives limit changes; `None`: the capacity is `limit`.
    burst: Option<u32>,
    tokens: f64,
    updated: Instant,
}

impl TokenBucket {
    /// A full bucket; `burst` (at least 1) replaces the default capacity `limit`.
    pub(super) fn new(limit: u32, burst: Option<u32>) -> Self {
        let mut bucket = TokenBucket {
            limit,
            burst: burst.map(|burst| burst.max(1)),
            tokens: 0.0,
            updated: Instant::now(),
        };
        bucket.tokens = f64::from(bucket.capacity());
        bucket
    }

    /// The per-minute limit.
    pub(super) fn limit(&self) -> u32 {
        self.limit
    }

    /// The most tokens the bucket holds.
    pub(super) fn capacity(&self) -> u32 {
        self.burst.unwrap_or(self.limit)
    }

    /// The tokens there are now (fractional).
    pub(super) fn tokens(&mut self) -> f64 {
        self.refill();
        self.tokens
    }

    /// Changes the per-minute limit: tokens accrued so far count at the old rate, and at most
    /// the new capacity of them is kept.
    pub(super) fn set_limit(&mut self, limit: u32) {
        self.refill();
        self.limit = limit;
        self.tokens = self.tokens.min(f64::from(self.capacity()));
    }

    fn per_second(&self) -> f64 {
        f64::from(self.limit.max(1)) / 60.0
    }

    fn refill(&mut self) {
        let now = Instant::now();
        let elapsed = now.duration_since(self.updated).as_secs_f64();
        let tokens = self.tokens + elapsed * self.per_second();
        self.tokens = tokens.min(f64::from(self.capacity()));
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

    /// `anthropic-ratelimit-requests-{limit,remaining,reset}`: the per-minute limit, the whole
    /// tokens left, and when the bucket is full again.
    pub(super) fn headers(&mut self) -> [(&'static str, String); 3] {
        self.refill();
        let missing = f64::from(self.capacity()) - self.tokens;
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::time::advance;

    use super::TokenBucket;

    fn remaining(bucket: &mut TokenBucket) -> String {
        bucket.headers()[1].1.clone()
    }

    /// Takes tokens until refused; returns how many were taken and the refusal's wait.
    fn drain(bucket: &mut TokenBucket) -> (u32, u64) {
        for taken in 0..100_000 {
            if let Err(wait) = bucket.try_take() {
                return (taken, wait);
            }
        }
        panic!("the bucket never ran dry");
    }

    #[tokio::test(start_paused = true)]
    async fn default_capacity_is_the_limit_and_refills_continuously() {
        let mut bucket = TokenBucket::new(600, None);

        assert_eq!(drain(&mut bucket), (600, 1));
        advance(Duration::from_millis(250)).await;
        // 10 per second: 2.5 tokens.
        assert_eq!(remaining(&mut bucket), "2");
        assert_eq!(drain(&mut bucket), (2, 1));
        advance(Duration::from_secs(120)).await;
        assert_eq!(drain(&mut bucket).0, 600, "never more than the capacity");
    }

    #[tokio::test(start_paused = true)]
    async fn burst_caps_the_bucket_but_not_the_rate() {
        let mut bucket = TokenBucket::new(600, Some(10));

        assert_eq!(drain(&mut bucket), (10, 1));
        advance(Duration::from_millis(500)).await;
        assert_eq!(drain(&mut bucket).0, 5);
        advance(Duration::from_secs(60)).await;
        assert_eq!(drain(&mut bucket).0, 10);
        assert_eq!(bucket.headers()[0].1, "600", "the header stays per minute");
        assert_eq!(TokenBucket::new(60, Some(0)).capacity(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn lowering_keeps_at_most_the_new_capacity() {
        let mut bucket = TokenBucket::new(600, None);
        for _ in 0..100 {
            bucket.try_take().unwrap();
        }

        bucket.set_limit(300);

        assert_eq!(remaining(&mut bucket), "300");
        assert_eq!(bucket.headers()[0].1, "300");
        assert_eq!(drain(&mut bucket), (300, 1));
        advance(Duration::from_secs(1)).await;
        assert_eq!(drain(&mut bucket).0, 5, "refills at the new rate");
    }

    #[tokio::test(start_paused = true)]
    async fn raising_keeps_the_tokens_there_are() {
        let mut bucket = TokenBucket::new(60, Some(10));
        for _ in 0..7 {
            bucket.try_take().unwrap();
        }
        advance(Duration::from_secs(2)).await;

        // 3 + 2 tokens accrued at the old rate of 1/s.
        bucket.set_limit(600);

        assert_eq!(remaining(&mut bucket), "5");
        advance(Duration::from_millis(300)).await;
        assert_eq!(
            drain(&mut bucket).0,
            8,
            "then 10/s up to the burst capacity"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_is_the_whole_seconds_until_a_token() {
        let mut bucket = TokenBucket::new(3, None);
        assert_eq!(drain(&mut bucket), (3, 20));
        advance(Duration::from_secs(5)).await;
        assert_eq!(bucket.try_take(), Err(15));
        let mut blocked = TokenBucket::new(0, None);
        assert_eq!(blocked.try_take(), Err(60));
    }
}
