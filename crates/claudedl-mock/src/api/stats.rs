//! Counters of API requests for benchmarks: requests by status over a window that starts when
//! the API starts or when the counters are reset, and how many requests the rate limit allowed
//! over that window.

use std::collections::BTreeMap;

use serde::Serialize;
use tokio::time::Instant;

/// What the API answered over a window, as `GET /_mock/stats` returns it (see
/// [`super::MockApiConfig::with_stats_routes`]).
///
/// ```json
/// {"requests": 1200, "by_status": {"200": 1190, "429": 10}, "elapsed_secs": 90.01,
///  "limit": 600, "capacity": 10, "allowed": 910.1}
/// ```
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MockStats {
    /// Every API request of the window, whatever its status (the stats routes excluded).
    pub requests: u64,
    /// Requests by the status they got; serialised with the status as a string key.
    pub by_status: BTreeMap<u16, u64>,
    /// Seconds since the window started.
    pub elapsed_secs: f64,
    /// The current requests-per-minute limit; `null`: unlimited.
    pub limit: Option<u32>,
    /// The current bucket capacity (the limit, or the burst capacity); `null`: unlimited.
    pub capacity: Option<u32>,
    /// The most requests the limit could have accepted over the window: the tokens in the bucket
    /// when the window started plus the limit's rate integrated over the window (limit changes
    /// included). `null` while unlimited.
    pub allowed: Option<f64>,
}

/// The window being counted.
#[derive(Debug)]
pub(super) struct StatsWindow {
    since: Instant,
    requests: u64,
    by_status: BTreeMap<u16, u64>,
    /// Tokens granted so far in the window, up to `accrued_at`.
    allowed: f64,
    accrued_at: Instant,
}

impl StatsWindow {
    /// A window starting now with `tokens` in the bucket.
    pub(super) fn new(tokens: f64) -> Self {
        let now = Instant::now();
        StatsWindow {
            since: now,
            requests: 0,
            by_status: BTreeMap::new(),
            allowed: tokens,
            accrued_at: now,
        }
    }

    /// Counts one request that got `status`.
    pub(super) fn count(&mut self, status: u16) {
        self.requests += 1;
        *self.by_status.entry(status).or_default() += 1;
    }

    /// Adds what `limit` (per minute; `None`: unlimited) granted since the last call. Call it
    /// before every limit change, with the limit that applied until then.
    pub(super) fn accrue(&mut self, limit: Option<u32>) {
        let now = Instant::now();
        if let Some(limit) = limit {
            let secs = now.duration_since(self.accrued_at).as_secs_f64();
            self.allowed += secs * f64::from(limit) / 60.0;
        }
        self.accrued_at = now;
    }

    /// Adds `tokens` granted at once (a new bucket).
    pub(super) fn grant(&mut self, tokens: f64) {
        self.allowed += tokens;
    }

    /// The window so far, under the current `limit` and `capacity`.
    pub(super) fn snapshot(&mut self, limit: Option<u32>, capacity: Option<u32>) -> MockStats {
        self.accrue(limit);
        MockStats {
            requests: self.requests,
            by_status: self.by_status.clone(),
            elapsed_secs: self.since.elapsed().as_secs_f64(),
            limit,
            capacity,
            allowed: limit.map(|_| self.allowed),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::time::advance;

    use super::StatsWindow;

    #[tokio::test(start_paused = true)]
    async fn allowed_integrates_the_limit_over_the_window() {
        let mut window = StatsWindow::new(10.0);
        window.count(200);
        window.count(429);
        window.count(200);
        advance(Duration::from_secs(30)).await;
        window.accrue(Some(600));
        advance(Duration::from_secs(30)).await;

        let stats = window.snapshot(Some(300), Some(10));

        assert_eq!(stats.allowed, Some(10.0 + 300.0 + 150.0));
        assert_eq!(stats.requests, 3);
        assert_eq!(
            stats.by_status.into_iter().collect::<Vec<_>>(),
            [(200, 2), (429, 1)]
        );
        assert_eq!(stats.elapsed_secs, 60.0);
        assert_eq!((stats.limit, stats.capacity), (Some(300), Some(10)));
    }

    #[tokio::test(start_paused = true)]
    async fn unlimited_windows_allow_nothing_countable() {
        let mut window = StatsWindow::new(0.0);
        advance(Duration::from_secs(5)).await;
        assert_eq!(window.snapshot(None, None).allowed, None);
        window.grant(60.0);
        advance(Duration::from_secs(5)).await;
        assert_eq!(window.snapshot(Some(60), Some(60)).allowed, Some(65.0));
    }

    #[test]
    fn serialises_statuses_as_string_keys() {
        let mut window = StatsWindow::new(0.0);
        window.count(200);
        let json = serde_json::to_value(window.snapshot(None, None)).unwrap();
        assert_eq!(json["by_status"]["200"], 1);
        assert_eq!(json["limit"], serde_json::Value::Null);
    }
}
