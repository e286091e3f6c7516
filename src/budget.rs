//! The global budget for message bytes in flight: what every message being received or waiting
//! for the writer holds in memory, counted in one shared, lock-free total.
//!
//! It exists so the server's memory is bounded by design rather than by the number of sessions
//! times the largest message (issue 8: 64 sessions of 10 MiB each once took 1.6 GB). A message
//! reserves from the [`Budget`] as the buffer holding its stored form grows, in steps of
//! [`STEP`] bytes, never per byte; the [`Reservation`] travels with the buffer (into the writer's
//! job) and gives its bytes back when the last copy of the message is dropped. A message that
//! cannot reserve is refused (`452 4.3.1`, RFC 5321 §4.2.5 and RFC 3463: insufficient system
//! storage, a transient failure) while smaller ones keep flowing: a message's first step may use
//! the whole budget, but growing past it must leave an eighth of the budget free, so a few large
//! (or slow) messages can never fill it up to the last byte and starve the small ones.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Reservations are made in multiples of this many bytes.
pub(crate) const STEP: u64 = 64 * 1024;

/// The share of the budget (one part in this many) that only a message's first step may use.
const HEADROOM: u64 = 8;

/// A shared limit on bytes held by messages, and what is held now.
#[derive(Debug)]
pub(crate) struct Budget {
    limit: u64,
    used: AtomicU64,
}

impl Budget {
    /// A budget of `limit` bytes, none used.
    pub(crate) fn new(limit: u64) -> Arc<Budget> {
        Arc::new(Budget {
            limit,
            used: AtomicU64::new(0),
        })
    }

    /// A budget that never runs out, for tests and the fuzz targets.
    #[cfg(any(test, fuzzing, feature = "fuzzing"))]
    pub(crate) fn unlimited() -> Arc<Budget> {
        Budget::new(u64::MAX)
    }

    /// Bytes reserved now.
    #[cfg(test)]
    pub(crate) fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// Takes `n` bytes if they fit under the limit (under the limit less the headroom unless
    /// `first`); false, taking nothing, if not.
    fn take(&self, n: u64, first: bool) -> bool {
        let ceiling = if first {
            self.limit
        } else {
            self.limit - self.limit / HEADROOM
        };
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(n).filter(|&total| total <= ceiling)
            })
            .is_ok()
    }

    fn give_back(&self, n: u64) {
        // Never below zero: a reservation gives back only what it took.
        let _ = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                Some(used.saturating_sub(n))
            });
    }
}

/// Bytes one message holds from a [`Budget`], given back when it is dropped.
#[derive(Debug)]
pub(crate) struct Reservation {
    budget: Arc<Budget>,
    bytes: u64,
}

impl Reservation {
    /// An empty reservation against `budget`.
    pub(crate) fn new(budget: &Arc<Budget>) -> Reservation {
        Reservation {
            budget: Arc::clone(budget),
            bytes: 0,
        }
    }

    /// Bytes held.
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Makes the reservation cover at least `n` bytes, taking whole [`STEP`]s from the budget.
    /// False if the budget cannot give them; the reservation is then as it was.
    pub(crate) fn cover(&mut self, n: u64) -> bool {
        if n <= self.bytes {
            return true;
        }
        let target = n.div_ceil(STEP).saturating_mul(STEP);
        let more = target - self.bytes;
        if !self.budget.take(more, target <= STEP) {
            return false;
        }
        self.bytes = target;
        true
    }

    /// Gives every byte back now.
    pub(crate) fn release(&mut self) {
        self.budget.give_back(self.bytes);
        self.bytes = 0;
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserves_in_steps_and_gives_back_on_drop() {
        let budget = Budget::new(8 * STEP);
        let mut a = Reservation::new(&budget);
        assert!(a.cover(1));
        assert_eq!((a.bytes(), budget.used()), (STEP, STEP));
        // Within the step: nothing more is taken.
        assert!(a.cover(STEP));
        assert_eq!(budget.used(), STEP);
        assert!(a.cover(STEP + 1));
        assert_eq!(budget.used(), 2 * STEP);
        let mut b = Reservation::new(&budget);
        assert!(b.cover(5 * STEP));
        // Growth stops an eighth short of the limit; a refusal takes nothing, changes nothing.
        assert!(!b.cover(5 * STEP + 1));
        assert!(!a.cover(3 * STEP));
        assert_eq!(
            (a.bytes(), b.bytes(), budget.used()),
            (2 * STEP, 5 * STEP, 7 * STEP)
        );
        // A new message's first step may use that last eighth; then nothing fits.
        let mut c = Reservation::new(&budget);
        assert!(c.cover(100));
        assert!(!Reservation::new(&budget).cover(1));
        drop(a);
        assert_eq!(budget.used(), 6 * STEP);
        assert!(b.cover(6 * STEP));
        b.release();
        c.release();
        assert_eq!((b.bytes(), budget.used()), (0, 0));
        drop(b);
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn a_request_past_the_limit_or_overflowing_fails() {
        let budget = Budget::new(STEP);
        let mut r = Reservation::new(&budget);
        assert!(!r.cover(STEP + 1));
        assert!(!r.cover(u64::MAX));
        assert_eq!(budget.used(), 0);
        assert!(r.cover(STEP));
        let unlimited = Budget::unlimited();
        let mut r = Reservation::new(&unlimited);
        assert!(r.cover(1 << 40));
    }

    #[test]
    fn many_threads_never_take_more_than_the_limit() {
        let budget = Budget::new(10 * STEP);
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let budget = Arc::clone(&budget);
                std::thread::spawn(move || {
                    let mut won = 0;
                    for _ in 0..1000 {
                        let mut r = Reservation::new(&budget);
                        if r.cover(1) && r.cover(3 * STEP) {
                            won += 1;
                            assert!(budget.used() <= 10 * STEP);
                        }
                    }
                    won
                })
            })
            .collect();
        let won: u32 = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert!(won > 0);
        assert_eq!(budget.used(), 0);
    }
}
