//! Random misbehaviour at fixed rates, for soaks: [`super::Chaos`] applied request by request
//! from a seeded generator, so one seed and one request order always misbehave the same.

use axum::http::StatusCode;

use super::{Chaos, Route};

/// The chaos of a running API: its rates and its generator.
#[derive(Debug)]
pub(super) struct ChaosState {
    rates: Chaos,
    state: u64,
}

impl ChaosState {
    pub(super) fn new(rates: Chaos) -> Self {
        ChaosState {
            state: rates.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
            rates,
        }
    }

    /// `503` or `529` for this request, or `None`.
    pub(super) fn status(&mut self) -> Option<StatusCode> {
        let roll = self.permille();
        if roll < self.rates.status_503_permille {
            Some(StatusCode::SERVICE_UNAVAILABLE)
        } else if roll < self.rates.status_503_permille + self.rates.status_529_permille {
            Some(StatusCode::from_u16(529).expect("529 is a valid status"))
        } else {
            None
        }
    }

    /// Where to cut a successful content body of `len` bytes of `route`, or `None`.
    pub(super) fn reset_at(&mut self, route: Route, len: u64) -> Option<u64> {
        let content = matches!(route, Route::FileContent | Route::BatchResults);
        if !content || len == 0 || self.permille() >= self.rates.reset_permille {
            return None;
        }
        Some(self.next() % len)
    }

    fn permille(&mut self) -> u32 {
        (self.next() % 1000) as u32
    }

    /// xorshift64.
    fn next(&mut self) -> u64 {
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        self.state
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_hold_over_many_requests_and_a_seed_repeats() {
        let rates = Chaos {
            seed: 7,
            reset_permille: 200,
            status_503_permille: 50,
            status_529_permille: 50,
        };
        let mut chaos = ChaosState::new(rates);
        let statuses: Vec<_> = (0..10_000).map(|_| chaos.status()).collect();
        let count = |code: u16| {
            statuses
                .iter()
                .flatten()
                .filter(|s| s.as_u16() == code)
                .count()
        };
        assert!((400..600).contains(&count(503)), "{}", count(503));
        assert!((400..600).contains(&count(529)), "{}", count(529));
        let resets = (0..10_000)
            .filter_map(|_| chaos.reset_at(Route::FileContent, 100))
            .collect::<Vec<_>>();
        assert!((1800..2200).contains(&resets.len()), "{}", resets.len());
        assert!(resets.iter().all(|at| *at < 100));
        assert_eq!(chaos.reset_at(Route::ListFiles, 100), None);
        let mut again = ChaosState::new(rates);
        let replay: Vec<_> = (0..10_000).map(|_| again.status()).collect();
        assert_eq!(replay, statuses);
    }
}
