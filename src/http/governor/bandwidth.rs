//! The bandwidth cap (`--limit-rate`): bytes per second across every connection of the
//! process, as a GCRA over bytes with a tenth of a second of tolerance. Readers that are ahead
//! of schedule sleep; TCP's flow control then slows the senders, so the rate stays smooth.

use std::time::Duration;

use tokio::time::Instant;

const TOLERANCE: Duration = Duration::from_millis(100);

#[derive(Debug)]
pub struct Bandwidth {
    bytes_per_second: f64,
    tat: Instant,
}

impl Bandwidth {
    pub fn new(bytes_per_second: u64, now: Instant) -> Bandwidth {
        Bandwidth {
            bytes_per_second: bytes_per_second.max(1) as f64,
            tat: now,
        }
    }

    /// Account for `bytes` received at `now`; returns how long the reader should pause.
    pub fn consume(&mut self, bytes: u64, now: Instant) -> Duration {
        let cost = Duration::from_secs_f64(bytes as f64 / self.bytes_per_second);
        self.tat = self.tat.max(now) + cost;
        self.tat.saturating_duration_since(now + TOLERANCE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_steady_reader_is_held_to_the_rate() {
        let start = Instant::now();
        let mut cap = Bandwidth::new(1_000_000, start);
        let mut now = start;
        let mut received = 0u64;
        while received < 10_000_000 {
            let pause = cap.consume(64 * 1024, now);
            received += 64 * 1024;
            now += pause;
        }
        let elapsed = (now - start).as_secs_f64();
        let rate = received as f64 / elapsed;
        assert!((rate - 1_000_000.0).abs() / 1_000_000.0 < 0.02, "{rate}");
    }

    #[test]
    fn a_short_burst_within_the_tolerance_does_not_wait() {
        let start = Instant::now();
        let mut cap = Bandwidth::new(1_000_000, start);
        assert_eq!(cap.consume(50_000, start), Duration::ZERO);
        assert_eq!(cap.consume(50_000, start), Duration::ZERO);
        assert_eq!(cap.consume(50_000, start), Duration::from_millis(50));
    }
}
