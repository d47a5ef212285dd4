//! When an item whose download failed for a transient reason is claimable again: doubling from
//! [`FIRST`], capped at [`CAP`], given up after [`MAX_ATTEMPTS`] claims. Decides, never sleeps.

use std::time::Duration;

pub const FIRST: Duration = Duration::from_secs(2);
pub const CAP: Duration = Duration::from_secs(300);
/// Claims of one item before it is recorded failed (the next enqueue queues it again).
pub const MAX_ATTEMPTS: i32 = 10;

/// After the `attempts`-th claim failed: `Some(delay)` before the next claim, or `None` to give
/// the item up.
pub fn after_failure(attempts: i32) -> Option<Duration> {
    if attempts >= MAX_ATTEMPTS {
        return None;
    }
    let doublings = u32::try_from(attempts.max(1) - 1).unwrap_or(0).min(16);
    Some((FIRST * 2u32.pow(doublings)).min(CAP))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_cap_then_the_item_is_given_up() {
        let schedule: Vec<Option<u64>> = (1..=11)
            .map(|attempts| after_failure(attempts).map(|d| d.as_secs()))
            .collect();
        let expected = [2, 4, 8, 16, 32, 64, 128, 256, 300].map(Some);
        assert_eq!(schedule[..9], expected);
        assert_eq!(schedule[9..], [None, None]);
    }
}
