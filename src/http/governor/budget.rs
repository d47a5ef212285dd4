//! The request budget: a GCRA (generic cell rate algorithm, the token bucket expressed as one
//! "theoretical arrival time") whose rate can change at run time.
//!
//! governor's rate is fixed once built, and the budget must follow the server: adopt a lower
//! limit at once, climb towards a higher one in steps (acceleration limits exist), and re-anchor
//! to the `remaining` count the server reports. That is a few lines of arithmetic, so it is
//! written here, pure (time is passed in) and tested on exact schedules.

use std::time::Duration;

use tokio::time::Instant;

/// How often the rate may climb towards a higher limit, and by how much each time.
const RAMP_EVERY: Duration = Duration::from_secs(2);
const RAMP_FACTOR: f64 = 1.25;

/// A requests-per-minute budget with a small burst.
#[derive(Debug, Clone)]
pub struct Budget {
    /// The rate in force, requests per minute.
    rate: f64,
    /// The rate the server allows; `rate` climbs towards it.
    target: f64,
    /// When the next request would be on schedule with no burst used.
    tat: Instant,
    last_raise: Instant,
}

impl Budget {
    pub fn new(requests_per_minute: u32, now: Instant) -> Budget {
        let rate = f64::from(requests_per_minute.max(1));
        Budget {
            rate,
            target: rate,
            tat: now,
            last_raise: now,
        }
    }

    /// The rate in force, requests per minute.
    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// Requests that may go back to back: about half a second's worth, at least one.
    pub fn burst(&self) -> u32 {
        (self.rate / 120.0).round().clamp(1.0, 20.0) as u32
    }

    fn interval(&self) -> Duration {
        Duration::from_secs_f64(60.0 / self.rate)
    }

    fn tolerance(&self) -> Duration {
        self.interval() * (self.burst() - 1)
    }

    /// Take a slot now, or say when one will be free.
    pub fn try_take(&mut self, now: Instant) -> Result<(), Instant> {
        self.ramp(now);
        let earliest = self.tat.checked_sub(self.tolerance()).unwrap_or(self.tat);
        if earliest > now {
            return Err(earliest);
        }
        self.tat = self.tat.max(now) + self.interval();
        Ok(())
    }

    /// The server's limit: adopted at once when lower, approached in steps when higher.
    pub fn set_limit(&mut self, requests_per_minute: u32, now: Instant) {
        let limit = f64::from(requests_per_minute.max(1));
        self.target = limit;
        if limit < self.rate {
            self.rate = limit;
            self.last_raise = now;
        }
    }

    /// The server says `remaining` requests are left right now: never plan to send more than
    /// that before the bucket refills (only ever tightens; a higher count is not spent in a burst).
    pub fn anchor_remaining(&mut self, remaining: u64, now: Instant) {
        let available = remaining.min(u64::from(self.burst()));
        let used = u64::from(self.burst()) - available;
        let anchored = now + self.interval() * used as u32;
        self.tat = self.tat.max(anchored);
    }

    fn ramp(&mut self, now: Instant) {
        if self.rate < self.target && now.duration_since(self.last_raise) >= RAMP_EVERY {
            self.rate = (self.rate * RAMP_FACTOR).min(self.target);
            self.last_raise = now;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The times at which `n` requests, all asking at `start`, are admitted.
    fn schedule(budget: &mut Budget, start: Instant, n: usize) -> Vec<Duration> {
        let mut now = start;
        let mut sent = Vec::new();
        while sent.len() < n {
            match budget.try_take(now) {
                Ok(()) => sent.push(now - start),
                Err(at) => now = at,
            }
        }
        sent
    }

    fn ms(values: &[u64]) -> Vec<Duration> {
        values.iter().map(|&v| Duration::from_millis(v)).collect()
    }

    #[test]
    fn paces_evenly_after_a_small_burst() {
        let start = Instant::now();
        let mut budget = Budget::new(600, start);
        assert_eq!(budget.burst(), 5);
        assert_eq!(
            schedule(&mut budget, start, 8),
            ms(&[0, 0, 0, 0, 0, 100, 200, 300])
        );
    }

    #[test]
    fn the_lowest_tier_has_no_burst() {
        let start = Instant::now();
        let mut budget = Budget::new(50, start);
        assert_eq!(budget.burst(), 1);
        assert_eq!(schedule(&mut budget, start, 3), ms(&[0, 1200, 2400]));
    }

    #[test]
    fn never_exceeds_rate_plus_burst_in_any_window() {
        let start = Instant::now();
        let mut budget = Budget::new(600, start);
        let sent = schedule(&mut budget, start, 200);
        for (i, at) in sent.iter().enumerate() {
            let in_window = sent[i..]
                .iter()
                .take_while(|t| **t < *at + Duration::from_secs(1))
                .count();
            assert!(
                in_window <= 10 + 5,
                "{in_window} requests within 1 s of {at:?}"
            );
        }
    }

    #[test]
    fn a_lower_limit_applies_at_once() {
        let start = Instant::now();
        let mut budget = Budget::new(600, start);
        schedule(&mut budget, start, 5);
        budget.set_limit(60, start);
        assert_eq!(budget.rate(), 60.0);
        let next = schedule(&mut budget, start, 2);
        assert!(next[1] - next[0] >= Duration::from_secs(1), "{next:?}");
    }

    #[test]
    fn a_higher_limit_is_approached_in_steps() {
        let start = Instant::now();
        let mut budget = Budget::new(100, start);
        budget.set_limit(1000, start);
        let mut rates = Vec::new();
        for step in 1..=12 {
            let _ = budget.try_take(start + RAMP_EVERY * step);
            rates.push(budget.rate().round() as u32);
        }
        assert_eq!(rates[0], 125);
        assert!(
            rates
                .windows(2)
                .all(|w| w[1] as f64 <= w[0] as f64 * RAMP_FACTOR + 1.0)
        );
        assert_eq!(*rates.last().unwrap(), 1000);
    }

    #[test]
    fn remaining_from_the_server_tightens_the_burst() {
        let start = Instant::now();
        let mut budget = Budget::new(600, start);
        budget.anchor_remaining(0, start);
        assert_eq!(schedule(&mut budget, start, 2), ms(&[100, 200]));
        let mut budget = Budget::new(600, start);
        budget.anchor_remaining(2, start);
        assert_eq!(schedule(&mut budget, start, 3), ms(&[0, 0, 100]));
    }

    #[test]
    fn plenty_remaining_changes_nothing() {
        let start = Instant::now();
        let mut budget = Budget::new(600, start);
        budget.anchor_remaining(10_000, start);
        assert_eq!(schedule(&mut budget, start, 6), ms(&[0, 0, 0, 0, 0, 100]));
    }
}
