//! Planning: which connection fetches which bytes.
//!
//! The missing bytes are cut into pieces of equal size (a piece per connection, within
//! `[min_split, chunk_size]`; encrypted downloads cap pieces lower, see
//! [`super::EngineConfig::pieces`]), handed out in order. A connection that runs out of pieces
//! takes over the second half of the largest range still in progress, so no single slow range
//! holds up the tail.
//!
//! When requests are paced by a budget, requests are what is scarce: a file of known size is one
//! request (up to `chunk_size`), and a take-over happens only when it is worth its request
//! ([`Costs`]): the half it takes must be at least what the file's connections deliver while the
//! budget grants one request, measured on the range being split.

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Split points are multiples of this (the age format's chunk size, for encryption later).
pub const ALIGN: u64 = 64 * 1024;

/// One connection's current assignment: bytes `next..end`, where `end` may shrink when another
/// connection takes over the tail.
#[derive(Debug)]
pub struct Segment {
    cursor: Mutex<Cursor>,
}

#[derive(Debug, Clone, Copy)]
struct Cursor {
    next: u64,
    end: u64,
    /// When the first bytes were claimed, and where: the segment's speed is measured from there.
    first: Option<(Instant, u64)>,
}

/// A segment's speed is known once it has been receiving for this long.
pub const MEASURE_AFTER: Duration = Duration::from_millis(300);

/// What a take-over costs while requests are paced by a budget.
#[derive(Debug, Clone, Copy)]
pub struct Costs {
    /// The rate the budget grants requests at.
    pub requests_per_second: f64,
    /// Connections per file.
    pub connections: usize,
}

impl Costs {
    /// The smallest piece worth a request: what `connections` connections at `bytes_per_second`
    /// each deliver while the budget grants one request. A take-over of at least this saves
    /// at least the time the budget needs to grant the file's connections their requests.
    pub fn min_piece(&self, bytes_per_second: f64) -> u64 {
        let rate = self.requests_per_second.max(f64::MIN_POSITIVE);
        let piece = bytes_per_second * self.connections.max(1) as f64 / rate;
        if piece.is_finite() {
            piece as u64
        } else {
            u64::MAX
        }
    }
}

impl Segment {
    pub fn new(range: Range<u64>) -> Arc<Segment> {
        Arc::new(Segment {
            cursor: Mutex::new(Cursor {
                next: range.start,
                end: range.end,
                first: None,
            }),
        })
    }

    /// The bytes still to fetch.
    pub fn remaining(&self) -> Range<u64> {
        let cursor = *self.cursor.lock().unwrap();
        cursor.next..cursor.end
    }

    /// Claim up to `len` bytes at the cursor for writing; returns where they go and how many
    /// of them still belong to this segment (fewer than `len` once the end is reached).
    pub fn claim(&self, len: u64) -> (u64, u64) {
        let mut cursor = self.cursor.lock().unwrap();
        let at = cursor.next;
        let granted = len.min(cursor.end.saturating_sub(at));
        cursor.next += granted;
        if cursor.first.is_none() && granted > 0 {
            // The first chunk arrived with the response: measure from its end.
            cursor.first = Some((Instant::now(), cursor.next));
        }
        (at, granted)
    }

    /// Bytes per second received since the first chunk, once measured for long enough.
    fn speed(&self, now: Instant) -> Option<f64> {
        let cursor = *self.cursor.lock().unwrap();
        let (since, from) = cursor.first?;
        let elapsed = now.checked_duration_since(since)?;
        if elapsed < MEASURE_AFTER {
            return None;
        }
        Some((cursor.next - from) as f64 / elapsed.as_secs_f64())
    }

    /// Give away the second half of what remains, if that half is worth a connection.
    fn split(&self, min_split: u64) -> Option<Range<u64>> {
        let mut cursor = self.cursor.lock().unwrap();
        let remaining = cursor.end.saturating_sub(cursor.next);
        if remaining < 2 * min_split {
            return None;
        }
        let middle = align_up(cursor.next + remaining / 2);
        if middle >= cursor.end {
            return None;
        }
        let stolen = middle..cursor.end;
        cursor.end = middle;
        Some(stolen)
    }
}

/// The pieces not yet started and the segments in progress for one file.
#[derive(Debug)]
pub struct Plan {
    pending: VecDeque<Range<u64>>,
    active: Vec<Arc<Segment>>,
    min_split: u64,
}

impl Plan {
    /// Plan the `missing` ranges in pieces of `piece` bytes.
    pub fn new(missing: &[Range<u64>], piece: u64, min_split: u64) -> Plan {
        let piece = piece.max(ALIGN);
        let mut pending = VecDeque::new();
        for range in missing {
            let mut start = range.start;
            while start < range.end {
                let end = align_up(start + piece).min(range.end);
                pending.push_back(start..end);
                start = end;
            }
        }
        // Taking over a range cuts its connection, which wastes what the server already sent
        // (up to a socket buffer): split only ranges worth that, relative to the piece size.
        let min_split = min_split.max(piece / 8).max(ALIGN);
        Plan {
            pending,
            active: Vec::new(),
            min_split,
        }
    }

    /// The piece size for `total` bytes over `connections`, within `[min_split, chunk_size]`.
    pub fn piece_size(total: u64, connections: usize, min_split: u64, chunk_size: u64) -> u64 {
        let even = total.div_ceil(connections.max(1) as u64);
        align_up(even.max(min_split).min(chunk_size.max(min_split)))
    }

    /// Track `range`, already being fetched outside the plan (the probe), as an active segment.
    pub fn track(&mut self, range: Range<u64>) -> Arc<Segment> {
        let segment = Segment::new(range);
        self.active.push(Arc::clone(&segment));
        segment
    }

    /// The next assignment: a pending piece, else half of the largest active segment.
    pub fn assign(&mut self) -> Option<Arc<Segment>> {
        let range = match self.pending.pop_front() {
            Some(range) => range,
            None => self.steal()?,
        };
        let segment = Segment::new(range);
        self.active.push(Arc::clone(&segment));
        Some(segment)
    }

    /// Like [`Plan::assign`], but a take-over only when it is worth its request (see
    /// [`Costs`]): the half taken is at least the smallest piece worth a request at the speed
    /// measured on the range it comes from. `None` while nothing is worth taking yet; see
    /// [`Plan::in_progress`].
    pub fn assign_costed(&mut self, costs: Costs, now: Instant) -> Option<Arc<Segment>> {
        let range = match self.pending.pop_front() {
            Some(range) => range,
            None => {
                let largest = self.largest()?;
                let speed = largest.speed(now)?;
                let min = costs.min_piece(speed).max(self.min_split);
                largest.split(min)?
            }
        };
        let segment = Segment::new(range);
        self.active.push(Arc::clone(&segment));
        Some(segment)
    }

    /// Whether some range is still being fetched (a take-over may become worth it).
    pub fn in_progress(&self) -> bool {
        !self.pending.is_empty() || !self.active.is_empty()
    }

    /// Forget a finished (or abandoned) segment.
    pub fn finish(&mut self, segment: &Arc<Segment>) {
        self.active.retain(|active| !Arc::ptr_eq(active, segment));
    }

    #[cfg(test)]
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    fn steal(&mut self) -> Option<Range<u64>> {
        self.largest()?.split(self.min_split)
    }

    fn largest(&self) -> Option<&Arc<Segment>> {
        self.active.iter().max_by_key(|segment| {
            let remaining = segment.remaining();
            remaining.end.saturating_sub(remaining.start)
        })
    }
}

fn align_up(offset: u64) -> u64 {
    offset.div_ceil(ALIGN) * ALIGN
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;

    #[test]
    fn cuts_missing_ranges_into_aligned_pieces() {
        let mut plan = Plan::new(&[0..10 * MIB, 12 * MIB..13 * MIB + 5], 4 * MIB, MIB);
        let mut got = Vec::new();
        while plan.pending_len() > 0 {
            got.push(plan.assign().unwrap().remaining());
        }
        assert_eq!(
            got,
            vec![
                0..4 * MIB,
                4 * MIB..8 * MIB,
                8 * MIB..10 * MIB,
                12 * MIB..13 * MIB + 5
            ]
        );
    }

    #[test]
    fn pieces_are_assigned_in_order_so_connections_stay_near_the_start() {
        let mut plan = Plan::new(std::slice::from_ref(&(0..1024 * MIB)), 8 * MIB, MIB);
        let first: Vec<Arc<Segment>> = (0..8).map(|_| plan.assign().unwrap()).collect();
        for (k, segment) in first.iter().enumerate() {
            let k = k as u64;
            assert_eq!(segment.remaining(), k * 8 * MIB..(k + 1) * 8 * MIB);
        }
        // The connection that finishes first takes the next piece: 8 connections span 9 pieces.
        plan.finish(&first[3]);
        assert_eq!(plan.assign().unwrap().remaining(), 64 * MIB..72 * MIB);
        assert_eq!(plan.pending_len(), 1024 / 8 - 9);
    }

    #[test]
    fn piece_size_spreads_over_connections_within_bounds() {
        assert_eq!(Plan::piece_size(64 * MIB, 8, MIB, 16 * MIB), 8 * MIB);
        assert_eq!(Plan::piece_size(1024 * MIB, 8, MIB, 16 * MIB), 16 * MIB);
        assert_eq!(Plan::piece_size(100, 8, MIB, 16 * MIB), MIB);
    }

    #[test]
    fn an_idle_connection_takes_half_of_the_largest_remaining_range() {
        let mut plan = Plan::new(std::slice::from_ref(&(0..8 * MIB)), 8 * MIB, MIB);
        let first = plan.assign().unwrap();
        assert_eq!(first.claim(2 * MIB), (0, 2 * MIB));
        let second = plan.assign().unwrap();
        assert_eq!(second.remaining(), 5 * MIB..8 * MIB);
        assert_eq!(first.remaining(), 2 * MIB..5 * MIB);
        // The original owner stops at the new end.
        assert_eq!(first.claim(4 * MIB), (2 * MIB, 3 * MIB));
        assert_eq!(first.claim(1), (5 * MIB, 0));
    }

    #[test]
    fn ranges_below_twice_the_minimum_are_not_split() {
        let mut plan = Plan::new(std::slice::from_ref(&(0..2 * MIB - 1)), 4 * MIB, MIB);
        let only = plan.assign().unwrap();
        assert!(plan.assign().is_none());
        plan.finish(&only);
        assert!(plan.assign().is_none());
    }

    /// A segment that has received `bytes` since its first chunk, `secs` ago.
    fn measured(plan: &mut Plan, bytes: u64, secs: f64) -> (Arc<Segment>, Instant) {
        let segment = plan.assign().unwrap();
        segment.claim(1);
        let start = segment.cursor.lock().unwrap().first.unwrap().0;
        segment.claim(bytes);
        (segment, start + Duration::from_secs_f64(secs))
    }

    #[test]
    fn the_smallest_piece_worth_a_request_is_what_the_connections_deliver_meanwhile() {
        let costs = Costs {
            requests_per_second: 2.0,
            connections: 8,
        };
        // 2 MiB/s per connection, 8 connections, 2 requests/s: 8 MiB.
        assert_eq!(costs.min_piece(2.0 * MIB as f64), 8 * MIB);
        let fast = Costs {
            requests_per_second: 100.0,
            connections: 4,
        };
        assert_eq!(fast.min_piece(100.0 * MIB as f64), 4 * MIB);
    }

    #[test]
    fn a_paced_take_over_waits_for_a_measured_speed() {
        let costs = Costs {
            requests_per_second: 2.0,
            connections: 8,
        };
        let mut plan = Plan::new(std::slice::from_ref(&(0..256 * MIB)), 256 * MIB, MIB);
        let (first, _) = measured(&mut plan, 0, 0.0);
        let now = Instant::now();
        assert!(plan.assign_costed(costs, now).is_none(), "no speed yet");
        assert!(plan.in_progress());
        // 2 MiB/s measured over one second: taking half of ~254 MiB is worth a request.
        first.claim(2 * MIB - 1);
        let at = first.cursor.lock().unwrap().first.unwrap().0 + Duration::from_secs(1);
        let stolen = plan.assign_costed(costs, at).unwrap().remaining();
        assert_eq!(stolen.end, 256 * MIB);
        assert!(stolen.start > 128 * MIB && stolen.start < 130 * MIB);
    }

    #[test]
    fn a_fast_range_is_not_taken_over_under_a_binding_budget() {
        let costs = Costs {
            requests_per_second: 2.0,
            connections: 8,
        };
        // 100 MiB/s: half of the 150 MiB left is below the 400 MiB one request is worth.
        let mut plan = Plan::new(std::slice::from_ref(&(0..200 * MIB)), 200 * MIB, MIB);
        let (_segment, at) = measured(&mut plan, 50 * MIB, 0.5);
        assert!(plan.assign_costed(costs, at).is_none());
        // Unpaced, the same range is split at once.
        assert_eq!(plan.assign().unwrap().remaining(), 125 * MIB..200 * MIB);
    }

    #[test]
    fn every_byte_is_assigned_exactly_once_under_stealing() {
        let total = 37 * MIB + 12_345;
        let mut plan = Plan::new(std::slice::from_ref(&(0..total)), 16 * MIB, MIB);
        let mut claimed = Vec::new();
        let mut active: Vec<Arc<Segment>> = Vec::new();
        for round in 0.. {
            if let Some(segment) = plan.assign() {
                active.push(segment);
            }
            if active.is_empty() {
                break;
            }
            // Each active segment writes a little, oldest first; finished ones leave.
            for segment in &active {
                let (at, n) = segment.claim(MIB / 3 + round % 7 * 1000);
                if n > 0 {
                    claimed.push(at..at + n);
                }
            }
            active.retain(|segment| {
                let left = segment.remaining();
                let done = left.start >= left.end;
                if done {
                    plan.finish(segment);
                }
                !done
            });
        }
        claimed.sort_by_key(|r| r.start);
        let mut at = 0;
        for range in claimed {
            assert_eq!(range.start, at, "gap or overlap");
            at = range.end;
        }
        assert_eq!(at, total);
    }
}
