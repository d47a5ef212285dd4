//! Planning: which connection fetches which bytes.
//!
//! The missing bytes are cut into pieces of equal size (a piece per connection, within
//! `[min_split, chunk_size]`; encrypted downloads cap pieces lower, see
//! [`super::EngineConfig::pieces`]), handed out in order. A connection that runs out of pieces
//! takes over the second half of the largest range still in progress, so no single slow range
//! holds up the tail.

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::{Arc, Mutex};

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
}

impl Segment {
    pub fn new(range: Range<u64>) -> Arc<Segment> {
        Arc::new(Segment {
            cursor: Mutex::new(Cursor {
                next: range.start,
                end: range.end,
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
        (at, granted)
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

    /// Forget a finished (or abandoned) segment.
    pub fn finish(&mut self, segment: &Arc<Segment>) {
        self.active.retain(|active| !Arc::ptr_eq(active, segment));
    }

    #[cfg(test)]
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    fn steal(&mut self) -> Option<Range<u64>> {
        let largest = self.active.iter().max_by_key(|segment| {
            let remaining = segment.remaining();
            remaining.end.saturating_sub(remaining.start)
        })?;
        largest.split(self.min_split)
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
