//! The writer's commit signal: a counter of successful commits (and of the other changes
//! readers wait for), and the committed length of each mailbox the writer has opened (where it
//! ended at the writer's last commit to it, or when the writer opened it, whichever came later),
//! behind a mutex with a condition variable.
//!
//! It exists so a test can wait for mail without polling ([`crate::Server::wait_for`] sleeps on
//! the condition variable until the writer reports a commit) and can read a mailbox without
//! racing the writer, and without ever holding it up: a reader cuts a mailbox the writer has
//! opened at the length recorded here, so an entry being appended at that moment is never seen,
//! whole or in part, before it is committed. The writer records a mailbox's length when it
//! opens it, before it appends anything, and again after each commit. A mailbox it has never
//! opened is read under the mailbox's fcntl lock (another program may be appending), but not
//! once the writer has claimed it ([`Commits::claim`], before its first try at the lock): the
//! reader then waits for the open to be recorded, so a reader polling a mailbox can make the
//! writer's first try fail at most once, never every try until its lock timeout.

use std::collections::{HashMap, HashSet};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

/// How a reader may read a mailbox (see [`Commits::plan`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Plan {
    /// Up to this length, without a lock: what the writer last recorded.
    Cut(u64),
    /// Whole, under the mailbox's fcntl lock: the writer has never opened it.
    Lock,
    /// Not yet: the writer is trying to open it for the first time.
    Wait,
}

/// Successful commits so far and the committed length of each mailbox the writer opened.
#[derive(Debug, Default)]
pub(crate) struct Commits {
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct State {
    /// Successful commits, and claimed mailboxes opened or given up: what a reader waits for.
    count: u64,
    lengths: HashMap<String, u64>,
    /// The file (device, inode) each mailbox in `lengths` named when the writer last opened it.
    files: HashMap<String, (u64, u64)>,
    /// Mailboxes the writer is trying to open for the first time (see [`Commits::claim`]).
    claimed: HashSet<String>,
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
    pub(crate) fn opened(&self, mailbox: &str, start: u64, file: (u64, u64)) {
        let mut state = self.state();
        state.files.insert(mailbox.to_string(), file);
        match state.lengths.get_mut(mailbox) {
            Some(len) => *len = start,
            None => {
                state.lengths.insert(mailbox.to_string(), start);
            }
        }
        // A reader may be waiting for this first open (see `plan`).
        if state.claimed.remove(mailbox) {
            self.changed_locked(&mut state);
        }
    }

    /// The change count (see [`Commits::wait_past`]), and how many bytes of `mailbox` are
    /// committed: the length the writer
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

    /// How a reader may read `mailbox` now: up to the length the writer recorded, under the
    /// mailbox's fcntl lock if the writer has never opened it, or not yet, as the writer is
    /// about to open it for the first time.
    /// `file` is what the reader opened: its (device, inode) and length. A record is only
    /// good for the file it was made of, whole: one another program renamed over the mailbox
    /// (as Python's `mailbox` does) or cut shorter is read under the lock, as a mailbox the
    /// writer never opened. Returned with the change count, for [`Commits::wait_past`].
    pub(crate) fn plan(&self, mailbox: &str, file: ((u64, u64), u64)) -> (u64, Plan) {
        let state = self.state();
        let (id, len) = file;
        let plan = match state.lengths.get(mailbox) {
            Some(&committed) if state.files.get(mailbox) == Some(&id) && len >= committed => {
                Plan::Cut(committed)
            }
            _ if state.claimed.contains(mailbox) => Plan::Wait,
            _ => Plan::Lock,
        };
        (state.count, plan)
    }

    /// Records that the writer is about to try the locks of `mailbox`, unless it has opened it
    /// before: readers stop taking its fcntl lock until the open is recorded
    /// ([`Commits::opened`]) or no job waits for it any more ([`Commits::keep_claims`]).
    pub(crate) fn claim(&self, mailbox: &str) {
        let mut state = self.state();
        if !state.lengths.contains_key(mailbox) && !state.claimed.contains(mailbox) {
            state.claimed.insert(mailbox.to_string());
        }
    }

    /// Drops the claims on every mailbox `keep` says no longer waits for the writer (the jobs
    /// that named it were written or refused, for whatever mailbox): readers may take its lock
    /// again.
    pub(crate) fn keep_claims(&self, keep: impl Fn(&str) -> bool) {
        let mut state = self.state();
        let before = state.claimed.len();
        state.claimed.retain(|name| keep(name));
        if state.claimed.len() != before {
            self.changed_locked(&mut state);
        }
    }

    /// Counts a change readers wait for and wakes them (the mutex is held).
    fn changed_locked(&self, state: &mut MutexGuard<'_, State>) {
        state.count = state.count.wrapping_add(1);
        if state.waiters > 0 {
            self.changed.notify_all();
        }
    }

    /// Waits until the change count (successful commits, and first opens of claimed mailboxes
    /// or the writer giving them up) differs from `seen` or `deadline` passes; returns the
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
    fn a_claimed_mailbox_is_waited_for_until_opened_or_given_up() {
        let commits = Commits::default();
        // The file a reader opened: (device, inode) and length.
        let file = |ino, len| ((1, ino), len);
        assert_eq!(commits.plan("jones", file(7, 50)).1, Plan::Lock);
        commits.claim("jones");
        let (seen, plan) = commits.plan("jones", file(7, 50));
        assert_eq!(plan, Plan::Wait);
        // Giving up is a change a waiting reader wakes for; then it may lock again.
        commits.keep_claims(|name| name != "jones");
        assert_eq!(commits.plan("jones", file(7, 50)), (seen + 1, Plan::Lock));
        commits.claim("jones");
        commits.opened("jones", 42, (1, 7));
        assert_eq!(
            commits.plan("jones", file(7, 50)),
            (seen + 2, Plan::Cut(42))
        );
        // Once opened, never claimed again: readers cut it at the writer's record.
        commits.claim("jones");
        assert_eq!(commits.plan("jones", file(7, 42)).1, Plan::Cut(42));
        commits.keep_claims(|_| false);
        assert_eq!(
            commits.plan("jones", file(7, 42)),
            (seen + 2, Plan::Cut(42))
        );
        // But the record is only good for its file, whole: another file renamed over the
        // mailbox, or the file cut shorter, is read under the lock.
        assert_eq!(commits.plan("jones", file(8, 90)).1, Plan::Lock);
        assert_eq!(commits.plan("jones", file(7, 41)).1, Plan::Lock);
    }

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
        // Woken by the record, not by its 10 s deadline nor by a timer of its own (100 ms
        // allows a loaded machine's scheduling).
        let late = woke.duration_since(recorded);
        assert!(late < Duration::from_millis(100), "{late:?}");
        assert_eq!(commits.committed("jones", || 7), (1, 120));
        // Opened again (say after the file was replaced): its length then is what counts.
        commits.opened("jones", 40, (1, 1));
        commits.opened("brown", 0, (1, 2));
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
