//! A set of half-open byte ranges, kept sorted and merged: which bytes of a file are done.

use std::ops::Range;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RangeSet {
    /// Sorted, non-overlapping, non-adjacent `[start, end)` pairs.
    ranges: Vec<(u64, u64)>,
}

impl RangeSet {
    pub fn new() -> RangeSet {
        RangeSet::default()
    }

    pub fn insert(&mut self, range: Range<u64>) {
        if range.is_empty() {
            return;
        }
        let (mut start, mut end) = (range.start, range.end);
        let first = self.ranges.partition_point(|&(_, e)| e < start);
        let mut last = first;
        while last < self.ranges.len() && self.ranges[last].0 <= end {
            start = start.min(self.ranges[last].0);
            end = end.max(self.ranges[last].1);
            last += 1;
        }
        self.ranges.splice(first..last, [(start, end)]);
    }

    /// Total bytes covered.
    pub fn covered(&self) -> u64 {
        self.ranges.iter().map(|(s, e)| e - s).sum()
    }

    /// Length of the done prefix starting at byte 0.
    pub fn prefix(&self) -> u64 {
        match self.ranges.first() {
            Some(&(0, end)) => end,
            _ => 0,
        }
    }

    /// The ranges of `[0, total)` not covered, in order.
    pub fn missing(&self, total: u64) -> Vec<Range<u64>> {
        let mut gaps = Vec::new();
        let mut at = 0;
        for &(start, end) in &self.ranges {
            if start >= total {
                break;
            }
            if start > at {
                gaps.push(at..start);
            }
            at = at.max(end);
        }
        if at < total {
            gaps.push(at..total);
        }
        gaps
    }

    /// Whether every byte of `[0, total)` is covered.
    pub fn is_complete(&self, total: u64) -> bool {
        self.missing(total).is_empty()
    }

    /// Whether every range lies inside `[0, total)`.
    pub fn fits(&self, total: u64) -> bool {
        self.ranges.last().is_none_or(|&(_, end)| end <= total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(ranges: &[(u64, u64)]) -> RangeSet {
        let mut set = RangeSet::new();
        for &(s, e) in ranges {
            set.insert(s..e);
        }
        set
    }

    #[test]
    fn merges_overlapping_and_adjacent_ranges() {
        let s = set(&[(10, 20), (30, 40), (20, 30), (5, 12), (50, 60)]);
        assert_eq!(s.ranges, vec![(5, 40), (50, 60)]);
        assert_eq!(s.covered(), 45);
        assert_eq!(set(&[(0, 5), (100, 200), (3, 150)]).ranges, vec![(0, 200)]);
    }

    #[test]
    fn missing_lists_the_gaps_up_to_total() {
        let s = set(&[(0, 10), (20, 30)]);
        assert_eq!(s.missing(40), vec![10..20, 30..40]);
        assert_eq!(set(&[(5, 10)]).missing(10), vec![0..5]);
        assert!(set(&[(0, 10)]).is_complete(10));
        assert_eq!(RangeSet::new().missing(0), Vec::<Range<u64>>::new());
    }

    #[test]
    fn prefix_counts_only_from_zero() {
        assert_eq!(set(&[(0, 10), (20, 30)]).prefix(), 10);
        assert_eq!(set(&[(1, 10)]).prefix(), 0);
    }

    #[test]
    fn serializes_as_pairs() {
        let s = set(&[(0, 10), (20, 30)]);
        assert_eq!(serde_json::to_string(&s).unwrap(), "[[0,10],[20,30]]");
    }
}
