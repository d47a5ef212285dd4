//! The content window: plaintext written to the `.part` ahead of the hashed prefix, kept in
//! memory (bounded) so that the hasher takes it from here instead of reading it back from the
//! `.part` (for a sealed part, opening its chunks again).
//!
//! Entries are the plaintext of written ranges, as [`Bytes`] (no copy). Past the capacity, the
//! entries furthest from the start are dropped first: they are the ones the hasher needs last,
//! and it reads dropped ranges back from the `.part` as before. Nothing here is written to disk.

use std::collections::BTreeMap;

use bytes::Bytes;

/// Plaintext kept for the hasher, by offset.
#[derive(Debug, Default)]
pub struct Window {
    entries: BTreeMap<u64, Bytes>,
    held: u64,
    capacity: u64,
}

/// What the hasher finds at its position.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// The content at the position, from memory.
    Held(Bytes),
    /// Not in memory: read back this many bytes from the `.part` first.
    ReadBack(u64),
}

impl Window {
    /// A window holding at most `capacity` bytes (0 keeps nothing).
    pub fn new(capacity: u64) -> Window {
        Window {
            capacity,
            ..Window::default()
        }
    }

    /// Bytes held.
    #[cfg(test)]
    pub fn held(&self) -> u64 {
        self.held
    }

    /// Keep `content`, just written at `at`, then drop the furthest entries beyond capacity.
    pub fn insert(&mut self, at: u64, content: Bytes) {
        if content.is_empty() || content.len() as u64 > self.capacity {
            return;
        }
        self.held += content.len() as u64;
        if let Some(replaced) = self.entries.insert(at, content) {
            self.held -= replaced.len() as u64;
        }
        while self.held > self.capacity {
            let (_, dropped) = self.entries.pop_last().expect("held > 0 means an entry");
            self.held -= dropped.len() as u64;
        }
    }

    /// Take what lies at `at`, up to `end`: held content, or how much to read back before the
    /// next held entry. Content before `at` is forgotten.
    pub fn next(&mut self, at: u64, end: u64) -> Next {
        debug_assert!(at < end);
        self.forget_before(at);
        let Some(mut entry) = self.entries.first_entry() else {
            return Next::ReadBack(end - at);
        };
        let start = *entry.key();
        if start > at {
            return Next::ReadBack(start.min(end) - at);
        }
        let content = entry.get_mut();
        let skip = (at - start) as usize;
        let take = (content.len() - skip).min((end - at) as usize);
        let taken = content.slice(skip..skip + take);
        let rest = content.slice(skip + take..);
        let whole = content.len() as u64;
        entry.remove();
        self.held -= whole;
        if !rest.is_empty() {
            self.held += rest.len() as u64;
            self.entries.insert(at + take as u64, rest);
        }
        Next::Held(taken)
    }

    /// Drop entries that end at or before `at`.
    fn forget_before(&mut self, at: u64) {
        while let Some(entry) = self.entries.first_entry() {
            if *entry.key() + entry.get().len() as u64 > at {
                return;
            }
            self.held -= entry.remove().len() as u64;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(len: usize, fill: u8) -> Bytes {
        Bytes::from(vec![fill; len])
    }

    #[test]
    fn takes_held_content_in_order_and_reads_back_the_gaps() {
        let mut window = Window::new(100);
        window.insert(10, bytes(5, 1));
        window.insert(20, bytes(5, 2));
        assert_eq!(window.held(), 10);
        assert_eq!(window.next(0, 30), Next::ReadBack(10));
        assert_eq!(window.next(10, 30), Next::Held(bytes(5, 1)));
        assert_eq!(window.next(15, 30), Next::ReadBack(5));
        assert_eq!(window.next(20, 22), Next::Held(bytes(2, 2)));
        assert_eq!(window.held(), 3, "the rest of an entry stays");
        assert_eq!(window.next(22, 30), Next::Held(bytes(3, 2)));
        assert_eq!(window.next(25, 30), Next::ReadBack(5));
        assert_eq!(window.held(), 0);
    }

    #[test]
    fn beyond_capacity_the_furthest_entries_are_dropped() {
        let mut window = Window::new(10);
        window.insert(40, bytes(4, 4));
        window.insert(0, bytes(4, 0));
        window.insert(20, bytes(4, 2));
        assert_eq!(window.held(), 8, "the entry at 40 was dropped");
        assert_eq!(window.next(0, 50), Next::Held(bytes(4, 0)));
        assert_eq!(window.next(4, 50), Next::ReadBack(16));
        assert_eq!(window.next(20, 50), Next::Held(bytes(4, 2)));
        assert_eq!(window.next(24, 50), Next::ReadBack(26));
        // A newcomer further than everything held is the one dropped.
        window.insert(0, bytes(8, 0));
        window.insert(30, bytes(4, 3));
        assert_eq!(window.held(), 8);
    }

    #[test]
    fn zero_capacity_keeps_nothing_and_passed_content_is_forgotten() {
        let mut window = Window::new(0);
        window.insert(0, bytes(4, 0));
        assert_eq!(window.held(), 0);
        let mut window = Window::new(100);
        window.insert(0, bytes(4, 0));
        window.insert(8, bytes(4, 1));
        assert_eq!(window.next(6, 20), Next::ReadBack(2));
        assert_eq!(window.held(), 4, "content before the position is gone");
        assert_eq!(window.next(9, 20), Next::Held(bytes(3, 1)));
    }
}
