//! Counters of API requests for benchmarks: requests by status and by route, and successful body
//! bytes by route, over a window that starts when the API starts or when the counters are reset,
//! and how many requests the rate limit allowed over that window.

use std::collections::BTreeMap;

use serde::Serialize;
use tokio::time::Instant;

use super::{Route, SentBytes};

/// What the API answered over a window, as `GET /_mock/stats` returns it (see
/// [`super::MockApiConfig::with_stats_routes`]).
///
/// ```json
/// {"requests": 1200, "by_status": {"200": 1190, "429": 10},
///  "by_route": {"list_files": 2, "file_content": 1198},
///  "body_bytes": {"list_files": 51234, "file_content": 1240000},
///  "elapsed_secs": 90.01, "limit": 600, "capacity": 10, "allowed": 910.1}
/// ```
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MockStats {
    /// Every API request of the window, whatever its status (the stats routes excluded).
    pub requests: u64,
    /// Requests by the status they got; serialised with the status as a string key.
    pub by_status: BTreeMap<u16, u64>,
    /// Requests by the route they hit (see [`Route::name`]).
    pub by_route: BTreeMap<&'static str, u64>,
    /// Body bytes of successful (`200`/`206`) responses handed to connections, by route: cut
    /// bodies count what was sent.
    pub body_bytes: BTreeMap<&'static str, u64>,
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
    by_route: BTreeMap<&'static str, u64>,
    /// Body bytes sent since the API started, when the window started.
    sent_before: SentBytes,
    /// Tokens granted so far in the window, up to `accrued_at`.
    allowed: f64,
    accrued_at: Instant,
}

impl StatsWindow {
    /// A window starting now with `tokens` in the bucket, `sent` body bytes sent so far.
    pub(super) fn new(tokens: f64, sent: SentBytes) -> Self {
        let now = Instant::now();
        StatsWindow {
            since: now,
            requests: 0,
            by_status: BTreeMap::new(),
            by_route: BTreeMap::new(),
            sent_before: sent,
            allowed: tokens,
            accrued_at: now,
        }
    }

    /// Counts one request to `route` that got `status`.
    pub(super) fn count(&mut self, route: Route, status: u16) {
        self.requests += 1;
        *self.by_status.entry(status).or_default() += 1;
        *self.by_route.entry(route.name()).or_default() += 1;
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

    /// The window so far, under the current `limit` and `capacity`, with `sent` body bytes sent
    /// since the API started.
    pub(super) fn snapshot(
        &mut self,
        limit: Option<u32>,
        capacity: Option<u32>,
        sent: SentBytes,
    ) -> MockStats {
        self.accrue(limit);
        let body_bytes = Route::ALL
            .iter()
            .map(|route| {
                let at = route.index();
                (route.name(), sent[at] - self.sent_before[at])
            })
            .filter(|(_, bytes)| *bytes > 0)
            .collect();
        MockStats {
            requests: self.requests,
            by_status: self.by_status.clone(),
            by_route: self.by_route.clone(),
            body_bytes,
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
    use crate::api::Route;

    #[tokio::test(start_paused = true)]
    async fn allowed_integrates_the_limit_over_the_window() {
        let mut window = StatsWindow::new(10.0, [0; 7]);
        window.count(Route::ListFiles, 200);
        window.count(Route::FileContent, 429);
        window.count(Route::FileContent, 200);
        advance(Duration::from_secs(30)).await;
        window.accrue(Some(600));
        advance(Duration::from_secs(30)).await;

        let stats = window.snapshot(Some(300), Some(10), [0; 7]);

        assert_eq!(stats.allowed, Some(10.0 + 300.0 + 150.0));
        assert_eq!(stats.requests, 3);
        assert_eq!(
            stats.by_status.into_iter().collect::<Vec<_>>(),
            [(200, 2), (429, 1)]
        );
        assert_eq!(
            stats.by_route.into_iter().collect::<Vec<_>>(),
            [("file_content", 2), ("list_files", 1)]
        );
        assert_eq!(stats.elapsed_secs, 60.0);
        assert_eq!((stats.limit, stats.capacity), (Some(300), Some(10)));
    }

    #[tokio::test(start_paused = true)]
    async fn unlimited_windows_allow_nothing_countable() {
        let mut window = StatsWindow::new(0.0, [0; 7]);
        advance(Duration::from_secs(5)).await;
        assert_eq!(window.snapshot(None, None, [0; 7]).allowed, None);
        window.grant(60.0);
        advance(Duration::from_secs(5)).await;
        assert_eq!(
            window.snapshot(Some(60), Some(60), [0; 7]).allowed,
            Some(65.0)
        );
    }

    #[test]
    fn serialises_statuses_as_string_keys_and_counts_bytes_of_the_window() {
        let mut window = StatsWindow::new(0.0, [0, 0, 100, 0, 0, 0, 0]);
        window.count(Route::FileContent, 200);
        let sent = [0, 0, 350, 0, 0, 0, 0];
        let json = serde_json::to_value(window.snapshot(None, None, sent)).unwrap();
        assert_eq!(json["by_status"]["200"], 1);
        assert_eq!(json["by_route"]["file_content"], 1);
        assert_eq!(json["body_bytes"], serde_json::json!({"file_content": 250}));
        assert_eq!(json["limit"], serde_json::Value::Null);
    }
}
