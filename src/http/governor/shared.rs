//! A request budget shared with other processes (the fleet's budget row in PostgreSQL): after
//! its own turn, each request reserves a slot there and waits what it says. A 429 sets a pause
//! there too, a floor for every process's next send, and wakes the requests waiting in every
//! process; a halt (the spend limit) stops them all. The server's remaining count re-anchors
//! it. Implemented outside `http` (see `crate::fleet::budget`); the governor only calls it.

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, SystemTime};

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

pub trait SharedBudget: Send + Sync + std::fmt::Debug {
    /// Reserve the next slot: how long to wait before sending (zero: now). A budget that cannot
    /// answer says zero (the process's own budget still paces it).
    fn reserve(&self) -> BoxFuture<'_, Duration>;
    /// How long every process must still wait after a 429 (zero: no pause).
    fn paused_for(&self) -> BoxFuture<'_, Duration>;
    /// A 429 asked for a pause until `until`.
    fn pause(&self, until: SystemTime) -> BoxFuture<'_, ()>;
    /// Why every process must stop (a spend-limit 429 anywhere), as of the last reservation.
    fn halted(&self) -> Option<String>;
    /// This process halted: every other stops at its next reservation.
    fn halt(&self, reason: String) -> BoxFuture<'_, ()>;
    /// Changes each time a pause or a halt may have been written (by any process): a waiting
    /// request re-reads the pause then. `None`: never told (re-read at the end of each wait).
    fn wakes(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        None
    }
    /// The server says `remaining` requests are left: the shared budget plans no more than that
    /// before it refills (it only ever tightens).
    fn anchor(&self, remaining: u64) -> BoxFuture<'_, ()> {
        let _ = remaining;
        Box::pin(async {})
    }
}
