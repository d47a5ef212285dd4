//! HTTP machinery shared by the test servers, [`crate::origin`] and [`crate::api`].
//!
//! - [`serve`]: binding a loopback port, serving a router on flush-tracked connections until a
//!   shutdown switch flips, and the helpers of the request logs;
//! - [`body`]: bodies streamed in chunks, paced, counted, and ended normally, by a cut after
//!   exactly N bytes, or by a stall;
//! - [`reply`]: a response decided under a state lock and turned into an HTTP response later;
//! - [`range`]: single byte ranges and `If-Range`.

pub(crate) mod body;
pub(crate) mod range;
pub(crate) mod reply;
pub(crate) mod serve;

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Locks `mutex`, ignoring poisoning (a panicking test must not hide its own message behind
/// ours).
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
