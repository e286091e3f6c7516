//! The writer's commit signal: a counter of successful commits, and the committed length of each
//! mailbox the writer has opened (where it ended at the writer's last commit to it, or when the
//! writer opened it, whichever came later), behind a mutex with a condition variable.
//!
//! It exists so a test can wait for mail without polling ([`crate::Server::wait_for`] sleeps on
//! the condition variable until the writer reports a commit) and can read a mailbox without
//! racing the writer: a reader that finds the mailbox's fcntl lock held cuts the file at the
//! length recorded here, so an entry being appended at that moment is never seen, whole or in
//! part, before it is committed. The writer records a mailbox's length when it opens it, before
//! it appends anything, and again after each commit; for a mailbox it has not opened, the
//! reader takes the file's length under this lock (and waits for the fcntl lock instead of
//! cutting). The writer may open and lock the file meanwhile, but it appends only after
//! recording the open, which waits for this lock: so no entry can begin between the reader's
//! look at the length and its use.

use std::collections::HashMap;
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

/// Successful commits so far and the committed length of each mailbox the writer opened.
#[derive(Debug, Default)]
pub(crate) struct Commits {
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct State {
    count: u64,
    lengths: HashMap<String, u64>,
    /// Threads inside [`Commits::wait_past`]: with none, a commit wakes nobody, and saves the
    /// futex(2) call a notification always costs.
    waiters: usize,
}

impl Commits {
    fn state(&self) -> MutexGuard<'_, State> {
        // The state is a counter and a map, each updated in one step: a panic elsewhere
        // cannot leave it half changed, so a poisoned lock is still sound to use.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records a commit that left each named mailbox at the given length, then wakes every
    /// waiter. Called by the writer once the commit is synced, before it
    /// acknowledges the commit's jobs (so a read that follows a 250 sees the new length).
    pub(crate) fn record<'a>(&self, lengths: impl IntoIterator<Item = (&'a str, u64)>) {
        let mut state = self.state();
        state.count = state.count.wrapping_add(1);
        for (name, len) in lengths {
            state.lengths.insert(name.to_string(), len);
        }
        let waiters = state.waiters;
        drop(state);
        if waiters > 0 {
            self.changed.notify_all();
        }
    }

    /// Records that the writer has opened and locked `mailbox`, whose length is `start`, and has
    /// appended nothing yet: all of it is committed, by this server or by another program. Called
    /// before the first append of each fresh open (so also after the file was replaced).
    pub(crate) fn opened(&self, mailbox: &str, start: u64) {
        let mut state = self.state();
        match state.lengths.get_mut(mailbox) {
            Some(len) => *len = start,
            None => {
                state.lengths.insert(mailbox.to_string(), start);
            }
        }
    }

    /// The commits so far, and how many bytes of `mailbox` are committed: the length the writer
    /// recorded, or, for a mailbox it has not opened, `unopened()` (the file's length), taken
    /// under the lock [`Commits::opened`] needs.
    pub(crate) fn committed(&self, mailbox: &str, unopened: impl FnOnce() -> u64) -> (u64, u64) {
        let state = self.state();
        let len = match state.lengths.get(mailbox) {
            Some(len) => *len,
            None => unopened(),
        };
        (state.count, len)
    }

    /// Whether the writer has opened `mailbox`, so that [`Commits::committed`] is its record,
    /// not the file's length.
    pub(crate) fn opened_ever(&self, mailbox: &str) -> bool {
        self.state().lengths.contains_key(mailbox)
    }

    /// Waits until the commit count differs from `seen` or `deadline` passes; returns the
    /// count then.
    pub(crate) fn wait_past(&self, seen: u64, deadline: Instant) -> u64 {
        let mut state = self.state();
        state.waiters += 1;
        while state.count == seen {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                break;
            };
            state = self
                .changed
                .wait_timeout(state, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        state.waiters -= 1;
        state.count
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn a_record_wakes_a_waiter_and_lengths_are_kept() {
        let commits = Arc::new(Commits::default());
        assert_eq!(commits.committed("jones", || 7), (0, 7));
        let c = Arc::clone(&commits);
        let waiter = std::thread::spawn(move || {
            let n = c.wait_past(0, Instant::now() + Duration::from_secs(10));
            (n, Instant::now())
        });
        // The waiter must be asleep in `wait_past` before the record, or the record's wake-up
        // is not what ends its wait. Nothing signals that, so watch its count, for up to 10 s.
        let began = Instant::now();
        while commits.state().waiters == 0 {
            assert!(
                began.elapsed() < Duration::from_secs(10),
                "the waiter never waited"
            );
            std::thread::yield_now();
        }
        let recorded = Instant::now();
        commits.record([("jones", 120)]);
        let (n, woke) = waiter.join().unwrap();
        assert_eq!(n, 1);
        // Woken by the record, not by its 10 s deadline.
        assert!(woke.duration_since(recorded) < Duration::from_secs(1));
        assert_eq!(commits.committed("jones", || 7), (1, 120));
        // Opened again (say after the file was replaced): its length then is what counts.
        commits.opened("jones", 40);
        commits.opened("brown", 0);
        assert_eq!(commits.committed("jones", || 7), (1, 40));
        assert_eq!(commits.committed("brown", || 7), (1, 0));
        // Nothing new: the wait ends at its deadline.
        let began = Instant::now();
        assert_eq!(
            commits.wait_past(1, Instant::now() + Duration::from_millis(50)),
            1
        );
        assert!(began.elapsed() >= Duration::from_millis(50));
    }
}
