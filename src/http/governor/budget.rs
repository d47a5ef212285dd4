//! The request budget: a GCRA (generic cell rate algorithm, the token bucket expressed as one
//! "theoretical arrival time") whose rate changes at run time.
//!
//! governor's rate is fixed once built, and the budget must follow the server, so the
//! arithmetic is written here, pure (time is passed in) and tested on exact schedules.
//!
//! Where the rate in force comes from, and how it moves:
//! - **Ceiling**: the user's `--rpm` is never exceeded, whatever the server says.
//! - **Server**: an advertised `anthropic-ratelimit-requests-limit` below the rate in force is
//!   adopted at once; one above it is reached by a linear ramp over [`RAMP_TIME`]: a rate, never
//!   a burst (acceleration limits exist).
//! - **Discovery**: while no limit was advertised, the rate doubles every [`DOUBLING_EVERY`]
//!   until the first 429, then settles at [`SETTLE_FRACTION`] of the rate the server *accepted*
//!   (answers other than 429 over the last [`ACCEPTED_WINDOW`]), and climbs by [`PROBE_FACTOR`]
//!   every [`PROBE_EVERY`] without a 429. A learned rate from an earlier run starts there,
//!   settled.

use std::collections::VecDeque;
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

/// How long a climb to a higher advertised limit takes. A linear ramp from `r0` to `r1` costs
/// `RAMP_TIME × (r1 − r0) ÷ 2` requests against starting at `r1`: from the default 50/min to
/// 6,000/min, 1 s of a 10 s run at 2 s (2 s at 4 s).
pub const RAMP_TIME: Duration = Duration::from_secs(2);
/// Discovery before the first 429: the rate doubles this often.
pub const DOUBLING_EVERY: Duration = Duration::from_secs(2);
/// After a 429, the rate settles at this fraction of what the server accepted.
pub const SETTLE_FRACTION: f64 = 0.9;
/// Settled, the rate is raised by [`PROBE_FACTOR`] after this long without a 429.
pub const PROBE_EVERY: Duration = Duration::from_secs(10);
pub const PROBE_FACTOR: f64 = 1.05;
/// What the server accepted is measured over this window: short, so that it measures the rate
/// just before the 429, not the slower climb before it.
pub const ACCEPTED_WINDOW: Duration = Duration::from_secs(3);
/// One 429 lowers the rate to no less than this fraction of it.
pub const MAX_CUT: f64 = 0.5;
/// A settled rate is remembered only when answers have been counted for at least this long.
pub const MIN_MEASURED_TO_REMEMBER: Duration = Duration::from_millis(1500);
/// Discovery never climbs above this (requests/minute): beyond it pacing is moot.
const MAX_RATE: f64 = 1_000_000.0;

/// Where the rate in force came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RateSource {
    /// The user's `--rpm` (flag, environment or config file).
    Flag,
    /// The built-in starting rate.
    Default,
    /// Remembered from an earlier run against the same endpoint.
    Learned,
    /// The server's `anthropic-ratelimit-requests-limit`.
    Server,
    /// Found in this run from what the server accepted.
    Discovered,
}

impl RateSource {
    pub fn as_str(self) -> &'static str {
        match self {
            RateSource::Flag => "flag",
            RateSource::Default => "default",
            RateSource::Learned => "learned",
            RateSource::Server => "server",
            RateSource::Discovered => "discovered",
        }
    }
}

/// The rate a budget starts from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StartRate {
    pub requests_per_minute: f64,
    pub source: RateSource,
}

/// How the rate moves while no limit is advertised.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Discovery {
    /// No 429 yet: doubling, last doubled at the instant given.
    Growing(Instant),
    /// Settled after a 429 (or from memory): probing upward, last raised at the instant given.
    Settled(Instant),
}

/// A linear climb towards a higher advertised limit.
#[derive(Debug, Clone, Copy)]
struct Ramp {
    from: f64,
    to: f64,
    started: Instant,
}

/// A requests-per-minute budget with a small burst.
#[derive(Debug, Clone)]
pub struct Budget {
    /// The rate in force, requests per minute.
    rate: f64,
    source: RateSource,
    /// Never exceeded (`--rpm`).
    ceiling: Option<f64>,
    /// The server's advertised limit, once it said one.
    advertised: Option<f64>,
    ramp: Option<Ramp>,
    discovery: Discovery,
    /// Answers other than 429 within the last [`ACCEPTED_WINDOW`].
    accepted: VecDeque<Instant>,
    first_answer: Option<Instant>,
    /// When the next request would be on schedule with no burst used.
    tat: Instant,
}

impl Budget {
    pub fn new(start: StartRate, ceiling: Option<u32>, now: Instant) -> Budget {
        let ceiling = ceiling.map(|c| f64::from(c.max(1)));
        let rate = clamp(start.requests_per_minute, ceiling);
        let discovery = match start.source {
            RateSource::Learned | RateSource::Flag => Discovery::Settled(now),
            _ => Discovery::Growing(now),
        };
        Budget {
            rate,
            source: start.source,
            ceiling,
            advertised: None,
            ramp: None,
            discovery,
            accepted: VecDeque::new(),
            first_answer: None,
            tat: now,
        }
    }

    /// The rate in force, requests per minute.
    pub fn rate(&self) -> f64 {
        self.rate
    }

    pub fn source(&self) -> RateSource {
        self.source
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
        self.advance(now);
        let earliest = self.tat.checked_sub(self.tolerance()).unwrap_or(self.tat);
        if earliest > now {
            return Err(earliest);
        }
        self.tat = self.tat.max(now) + self.interval();
        Ok(())
    }

    /// The server's advertised limit: adopted at once when lower, ramped to when higher,
    /// never above the ceiling.
    pub fn set_limit(&mut self, requests_per_minute: u32, now: Instant) {
        let limit = f64::from(requests_per_minute.max(1));
        if self.advertised == Some(limit) {
            return;
        }
        self.advertised = Some(limit);
        let target = clamp(limit, self.ceiling);
        self.ramp = None;
        if target < self.rate {
            self.rate = target;
            self.source = RateSource::Server;
        } else if target > self.rate {
            self.ramp = Some(Ramp {
                from: self.rate,
                to: target,
                started: now,
            });
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

    /// An answer other than 429: it counts towards what the server accepts.
    pub fn accepted(&mut self, now: Instant) {
        self.first_answer.get_or_insert(now);
        self.accepted.push_back(now);
        self.forget_before(now);
    }

    /// A 429. With no advertised limit, settle just under what the server accepted, but cut
    /// the rate by at most half: a 429 that comes before many answers were counted (a bucket
    /// emptied by an earlier run, another client) measures what was sent more than what the
    /// server accepts. Returns the new rate when it changed and rests on answers counted for at
    /// least [`MIN_MEASURED_TO_REMEMBER`] (worth remembering).
    pub fn throttled(&mut self, now: Instant) -> Option<f64> {
        if self.advertised.is_some() {
            return None;
        }
        self.forget_before(now);
        let measured = SETTLE_FRACTION * self.accepted_rate(now);
        let settled = clamp(measured.max(self.rate * MAX_CUT), self.ceiling);
        self.discovery = Discovery::Settled(now);
        if settled >= self.rate {
            return None;
        }
        self.rate = settled;
        self.source = RateSource::Discovered;
        let measured_for = self.first_answer.map(|first| now.duration_since(first));
        measured_for
            .is_some_and(|d| d >= MIN_MEASURED_TO_REMEMBER)
            .then_some(settled)
    }

    /// A rate learned for this organisation in an earlier run: used unless the user or the
    /// server said otherwise.
    pub fn adopt_learned(&mut self, requests_per_minute: f64, now: Instant) {
        if self.advertised.is_some() || self.source == RateSource::Flag {
            return;
        }
        self.rate = clamp(requests_per_minute, self.ceiling);
        self.source = RateSource::Learned;
        self.discovery = Discovery::Settled(now);
    }

    /// Requests per minute the server accepted recently.
    fn accepted_rate(&self, now: Instant) -> f64 {
        let Some(first) = self.first_answer else {
            return 1.0;
        };
        let span = now
            .duration_since(first)
            .clamp(Duration::from_secs(1), ACCEPTED_WINDOW);
        (self.accepted.len() as f64 * 60.0 / span.as_secs_f64()).max(1.0)
    }

    fn forget_before(&mut self, now: Instant) {
        while let Some(&oldest) = self.accepted.front() {
            if now.duration_since(oldest) <= ACCEPTED_WINDOW {
                break;
            }
            self.accepted.pop_front();
        }
    }

    /// Move the rate along its ramp, or along discovery when no limit was advertised.
    fn advance(&mut self, now: Instant) {
        if let Some(ramp) = self.ramp {
            let progress = now.duration_since(ramp.started).as_secs_f64() / RAMP_TIME.as_secs_f64();
            self.rate = ramp.from + (ramp.to - ramp.from) * progress.min(1.0);
            self.source = RateSource::Server;
            if progress >= 1.0 {
                self.ramp = None;
            }
            return;
        }
        if self.advertised.is_some() || self.ceiling.is_some_and(|c| self.rate >= c) {
            return;
        }
        let (every, factor) = match self.discovery {
            Discovery::Growing(_) => (DOUBLING_EVERY, 2.0),
            Discovery::Settled(_) => (PROBE_EVERY, PROBE_FACTOR),
        };
        let (Discovery::Growing(last) | Discovery::Settled(last)) = self.discovery;
        let steps = now.duration_since(last).as_nanos() / every.as_nanos();
        if steps == 0 {
            return;
        }
        let steps = steps.min(64) as i32;
        self.rate = clamp(self.rate * factor.powi(steps), self.ceiling);
        let last = last + every * steps as u32;
        self.discovery = match self.discovery {
            Discovery::Growing(_) => Discovery::Growing(last),
            Discovery::Settled(_) => Discovery::Settled(last),
        };
        if self.source != RateSource::Flag {
            self.source = RateSource::Discovered;
        }
    }
}

fn clamp(rate: f64, ceiling: Option<f64>) -> f64 {
    rate.clamp(1.0, ceiling.unwrap_or(MAX_RATE).min(MAX_RATE))
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

    fn flag(rpm: u32, now: Instant) -> Budget {
        let start = StartRate {
            requests_per_minute: f64::from(rpm),
            source: RateSource::Flag,
        };
        Budget::new(start, Some(rpm), now)
    }

    fn default_start(now: Instant) -> Budget {
        let start = StartRate {
            requests_per_minute: 50.0,
            source: RateSource::Default,
        };
        Budget::new(start, None, now)
    }

    #[test]
    fn paces_evenly_after_a_small_burst() {
        let start = Instant::now();
        let mut budget = flag(600, start);
        assert_eq!(budget.burst(), 5);
        assert_eq!(
            schedule(&mut budget, start, 8),
            ms(&[0, 0, 0, 0, 0, 100, 200, 300])
        );
    }

    #[test]
    fn the_lowest_tier_has_no_burst() {
        let start = Instant::now();
        let mut budget = flag(50, start);
        assert_eq!(budget.burst(), 1);
        assert_eq!(schedule(&mut budget, start, 3), ms(&[0, 1200, 2400]));
    }

    #[test]
    fn never_exceeds_rate_plus_burst_in_any_window() {
        let start = Instant::now();
        let mut budget = flag(600, start);
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
        let mut budget = flag(600, start);
        schedule(&mut budget, start, 5);
        budget.set_limit(60, start);
        assert_eq!(budget.rate(), 60.0);
        assert_eq!(budget.source(), RateSource::Server);
        let next = schedule(&mut budget, start, 2);
        assert!(next[1] - next[0] >= Duration::from_secs(1), "{next:?}");
    }

    #[test]
    fn a_higher_limit_is_reached_by_a_linear_ramp_within_the_ramp_time() {
        let start = Instant::now();
        let mut budget = default_start(start);
        budget.set_limit(6000, start);
        let mut rates = Vec::new();
        for step in 1..=5 {
            let _ = budget.try_take(start + Duration::from_millis(500 * step));
            rates.push(budget.rate().round() as u32);
        }
        assert_eq!(rates, [1538, 3025, 4513, 6000, 6000]);
        assert_eq!(budget.source(), RateSource::Server);
    }

    #[test]
    fn a_ramp_sends_a_rate_not_a_burst() {
        let start = Instant::now();
        let mut budget = default_start(start);
        budget.set_limit(6000, start);
        let sent = schedule(&mut budget, start, 400);
        let first_second = sent.iter().filter(|t| **t < Duration::from_secs(1)).count();
        // The first request, at 50/min, holds the next for 1.2 s; then the ramp's rate with a
        // burst of at most 20: never the 100 a burst of the advertised limit would send.
        assert!(
            first_second <= 20,
            "{first_second} requests in the first second"
        );
        // From 1.2 s the rest of the 2 s ramp (about 75) plus a second at 6,000/min (100);
        // a 4 s ramp would have sent about 99.
        let at_3s = sent.iter().filter(|t| **t < Duration::from_secs(3)).count();
        assert!((165..=185).contains(&at_3s), "{at_3s} requests in 3 s");
    }

    #[test]
    fn the_ceiling_is_never_exceeded_even_when_the_server_advertises_more() {
        let start = Instant::now();
        let mut budget = flag(120, start);
        budget.set_limit(6000, start);
        let sent = schedule(&mut budget, start, 300);
        assert_eq!(budget.rate(), 120.0);
        for (i, at) in sent.iter().enumerate() {
            let in_minute = sent[i..]
                .iter()
                .take_while(|t| **t < *at + Duration::from_secs(60))
                .count();
            assert!(
                in_minute <= 120 + 1,
                "{in_minute} within a minute of {at:?}"
            );
        }
    }

    #[test]
    fn remaining_from_the_server_tightens_the_burst() {
        let start = Instant::now();
        let mut budget = flag(600, start);
        budget.anchor_remaining(0, start);
        assert_eq!(schedule(&mut budget, start, 2), ms(&[100, 200]));
        let mut budget = flag(600, start);
        budget.anchor_remaining(2, start);
        assert_eq!(schedule(&mut budget, start, 3), ms(&[0, 0, 100]));
    }

    #[test]
    fn plenty_remaining_changes_nothing() {
        let start = Instant::now();
        let mut budget = flag(600, start);
        budget.anchor_remaining(10_000, start);
        assert_eq!(schedule(&mut budget, start, 6), ms(&[0, 0, 0, 0, 0, 100]));
    }

    #[test]
    fn without_headers_the_rate_doubles_until_the_first_429() {
        let start = Instant::now();
        let mut budget = default_start(start);
        let rates: Vec<u32> = (1..=4)
            .map(|step| {
                let _ = budget.try_take(start + DOUBLING_EVERY * step);
                budget.rate() as u32
            })
            .collect();
        assert_eq!(rates, [100, 200, 400, 800]);
        assert_eq!(budget.source(), RateSource::Discovered);
    }

    #[test]
    fn a_429_settles_just_under_what_the_server_accepted() {
        let start = Instant::now();
        let mut budget = default_start(start);
        // The server accepted 20 a second (1,200/min), then said 429.
        for i in 0..200 {
            budget.accepted(start + Duration::from_millis(50 * i));
        }
        let now = start + Duration::from_secs(10);
        let _ = budget.try_take(now); // rate has grown to 1,600/min by now
        assert_eq!(budget.rate(), 1600.0);
        assert_eq!(budget.throttled(now), Some(1080.0));
        assert_eq!(budget.rate(), 1080.0);
        // Then it probes upward gently: +5 % after 10 s without a 429.
        let _ = budget.try_take(now + PROBE_EVERY);
        assert_eq!(budget.rate().round(), 1134.0);
    }

    #[test]
    fn an_early_429_at_most_halves_the_rate_and_is_not_remembered() {
        let start = Instant::now();
        let learned = StartRate {
            requests_per_minute: 1080.0,
            source: RateSource::Learned,
        };
        let mut budget = Budget::new(learned, None, start);
        // A bucket left empty by an earlier run: 429 after three answers in 200 ms.
        for i in 0..3 {
            budget.accepted(start + Duration::from_millis(50 * i));
        }
        let now = start + Duration::from_millis(200);
        assert_eq!(
            budget.throttled(now),
            None,
            "measured too briefly to remember"
        );
        assert_eq!(budget.rate(), 540.0, "halved, not 90 % of 180/min");
    }

    #[test]
    fn a_429_with_an_advertised_limit_leaves_the_rate_to_the_headers() {
        let start = Instant::now();
        let mut budget = flag(600, start);
        budget.set_limit(600, start);
        budget.accepted(start);
        assert_eq!(budget.throttled(start), None);
        assert_eq!(budget.rate(), 600.0);
    }

    #[test]
    fn a_learned_rate_starts_settled() {
        let start = Instant::now();
        let learned = StartRate {
            requests_per_minute: 1000.0,
            source: RateSource::Learned,
        };
        let mut budget = Budget::new(learned, None, start);
        let _ = budget.try_take(start + DOUBLING_EVERY);
        assert_eq!(budget.rate(), 1000.0, "no doubling from a learned rate");
        let _ = budget.try_take(start + PROBE_EVERY);
        assert_eq!(budget.rate(), 1050.0);
    }
}
