//! AIMD concurrency: how many requests may be in flight at once. A 429 halves the limit; a run
//! of successes grows it back by one, up to the ceiling it started at.
//!
//! tokio's `Semaphore` cannot shrink below the permits already handed out, so this is a small
//! counter with a `Notify`: a permit is released when its response is dropped.

use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

/// Successes in a row that earn one more slot.
const GROW_AFTER: u32 = 20;

#[derive(Debug)]
pub struct Concurrency {
    state: Mutex<State>,
    freed: Notify,
    ceiling: usize,
}

#[derive(Debug)]
struct State {
    limit: usize,
    in_flight: usize,
    successes: u32,
}

/// One request's place; dropping it frees the place.
#[derive(Debug)]
pub struct Slot {
    owner: Arc<Concurrency>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.owner.state.lock().unwrap().in_flight -= 1;
        self.owner.freed.notify_one();
    }
}

impl Concurrency {
    pub fn new(ceiling: usize) -> Arc<Concurrency> {
        let ceiling = ceiling.max(1);
        Arc::new(Concurrency {
            state: Mutex::new(State {
                limit: ceiling,
                in_flight: 0,
                successes: 0,
            }),
            freed: Notify::new(),
            ceiling,
        })
    }

    #[cfg(test)]
    fn limit(&self) -> usize {
        self.state.lock().unwrap().limit
    }

    /// Wait for a place under the current limit.
    pub async fn acquire(self: &Arc<Self>) -> Slot {
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            {
                let mut state = self.state.lock().unwrap();
                if state.in_flight < state.limit {
                    state.in_flight += 1;
                    return Slot {
                        owner: Arc::clone(self),
                    };
                }
            }
            freed.await;
        }
    }

    /// Take a place at once, whatever the limit (for a caller that already holds a place and
    /// must not wait behind itself).
    pub fn try_acquire(self: &Arc<Self>) -> Option<Slot> {
        let mut state = self.state.lock().unwrap();
        (state.in_flight < state.limit).then(|| {
            state.in_flight += 1;
            Slot {
                owner: Arc::clone(self),
            }
        })
    }

    /// The server pushed back: halve the limit. Returns the new limit.
    pub fn decrease(&self) -> usize {
        let mut state = self.state.lock().unwrap();
        state.limit = (state.limit / 2).max(1);
        state.successes = 0;
        state.limit
    }

    /// A request went through: after enough in a row, one more place.
    pub fn succeeded(&self) {
        let grew = {
            let mut state = self.state.lock().unwrap();
            state.successes += 1;
            let grow = state.successes >= GROW_AFTER && state.limit < self.ceiling;
            if grow {
                state.limit += 1;
                state.successes = 0;
            }
            grow
        };
        if grew {
            self.freed.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn halves_on_pushback_and_grows_back_one_at_a_time() {
        let concurrency = Concurrency::new(8);
        assert_eq!(concurrency.decrease(), 4);
        assert_eq!(concurrency.decrease(), 2);
        for _ in 0..GROW_AFTER - 1 {
            concurrency.succeeded();
        }
        assert_eq!(concurrency.limit(), 2);
        concurrency.succeeded();
        assert_eq!(concurrency.limit(), 3);
        for _ in 0..GROW_AFTER * 100 {
            concurrency.succeeded();
        }
        assert_eq!(concurrency.limit(), 8);
    }

    #[tokio::test]
    async fn waits_for_a_place_and_gets_it_when_one_is_freed() {
        let concurrency = Concurrency::new(2);
        concurrency.decrease();
        let first = concurrency.acquire().await;
        assert!(concurrency.try_acquire().is_none());
        let waiter = tokio::spawn({
            let concurrency = Arc::clone(&concurrency);
            async move { concurrency.acquire().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        drop(first);
        let second = waiter.await.unwrap();
        assert!(concurrency.try_acquire().is_none());
        drop(second);
        assert!(concurrency.try_acquire().is_some());
    }
}
