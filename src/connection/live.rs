//! The live set: every session in progress, with what shutdown and eviction need to know of it
//! ([`Flags`]), and the operations on all of them at once: begin shutdown, evict the idlest,
//! wait for the sessions to end, end the grace, cut what is left.
//!
//! It exists apart from the session loop (`connection.rs`) because these run on other threads
//! (the dispatcher evicts, `Server::shutdown` stops) and touch a session only through its flags
//! and a clone of its socket.

use std::collections::HashMap;
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use super::Context;
use crate::writer::ack::Awaited;

/// A session in the live set: a clone of its socket, which shutdown and eviction shut, and its
/// flags.
pub(super) struct Live {
    pub(super) stream: TcpStream,
    pub(super) flags: Arc<Flags>,
}

/// What shutdown and eviction need to know of a live session, shared with its worker.
#[derive(Debug, Default)]
pub(super) struct Flags {
    /// Inside a message: shutdown gives it its grace, eviction leaves it alone.
    pub(super) in_message: AtomicBool,
    /// Milliseconds after the context's epoch, plus one, since when the session has been
    /// waiting for a command, counted from the wait after its last message began (or from its
    /// start): only a message moves mail; 0 while it is not waiting for one; [`EVICTED`] once
    /// eviction has picked it. Eviction takes a session by a compare-and-swap of the value that made it
    /// idle, and its worker swaps in 0 as soon as a read returns something, before it handles
    /// it: so either the worker sees [`EVICTED`] and answers only the 421, or eviction
    /// sees the session busy and leaves it. (With a flag apart, a session picked just as its
    /// client sent DATA answered 354, then found its reading side shut and answered 421 inside
    /// the message; and one picked while it wrote a long answer went on, so no idle session was
    /// closed for the newcomer.)
    pub(super) waiting_since: AtomicU64,
    /// Milliseconds after the context's epoch, plus one, since when the session has been writing
    /// a group of replies; 0 while it is not. A client that has not taken its replies for
    /// [`EVICTABLE_AFTER`] may be closed for a newcomer when no session is idle: such a client
    /// held its worker for the whole `--timeout` the write may take.
    pub(super) writing_since: AtomicU64,
    /// Set when the session was closed to make room; it then answers 421 (one closed while it
    /// wrote answers nothing more: its client does not read).
    pub(super) evicted: AtomicBool,
    /// Whether the session's replies carry enhanced status codes (after EHLO): a 421 after a
    /// panic, when the session's state is gone, follows it.
    pub(super) enhanced: AtomicBool,
    /// The answer to the session's last message: until the writer has given it, the session
    /// waits for the server, not the client, and is not idle.
    pub(super) delivery: Mutex<Option<Awaited>>,
}

impl Flags {
    /// Whether the writer has yet to answer the session's last message.
    pub(super) fn awaits_writer(&self) -> bool {
        let delivery = self.delivery.lock().unwrap_or_else(PoisonError::into_inner);
        delivery.as_ref().is_some_and(|d| d.answered_at().is_none())
    }

    /// How long the session has been idle, waiting for its client's next command, if it is,
    /// and the value of [`Flags::waiting_since`] that says so.
    fn idle_for(&self, now: u64) -> Option<(u64, u64)> {
        let seen = self.waiting_since.load(Ordering::SeqCst);
        let since = match seen {
            0 | EVICTED => return None,
            since => now.saturating_sub(since),
        };
        let delivery = self.delivery.lock().unwrap_or_else(PoisonError::into_inner);
        let idle = match delivery.as_ref().map(Awaited::answered_at) {
            None => since,
            Some(None) => return None,
            Some(Some(answered)) => since.min(answered.elapsed().as_millis() as u64),
        };
        Some((idle, seen))
    }
}

/// [`Flags::waiting_since`] of a session eviction has picked.
pub(super) const EVICTED: u64 = u64::MAX;

/// How long a session must have waited for a command before it may be evicted: a client
/// between two pipelined commands is not idle.
const EVICTABLE_AFTER: Duration = Duration::from_secs(1);

impl Context {
    pub(super) fn live(&self) -> MutexGuard<'_, HashMap<u64, Live>> {
        self.live.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Begins shutdown: sessions waiting for a command are woken (their reads see end of file)
    /// and answer 421; sessions inside a message may finish it first.
    pub(crate) fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
        let live = self.live();
        // Wakes sessions in a `--fail` delay (see `pause`: it checks the flag under this lock).
        self.ended.notify_all();
        for conn in live.values() {
            if !conn.flags.in_message.load(Ordering::SeqCst) {
                let _ = conn.stream.shutdown(Shutdown::Read);
            }
        }
    }

    /// Closes the session that has waited longest for a command (the oldest connection of those
    /// tied), if one has waited at least [`EVICTABLE_AFTER`]: it answers `421 4.3.2` and its
    /// worker is free for a newcomer. True if it closed one.
    pub(crate) fn evict_idlest(&self) -> bool {
        let now = self.clock();
        let limit = EVICTABLE_AFTER.as_millis() as u64;
        let live = self.live();
        // A session that turns busy between the pick and the swap is left, and another picked;
        // a few tries, as one picked again and again is one that keeps answering at once.
        for _ in 0..3 {
            // Idle times are in whole milliseconds, so two sessions can tie: the older
            // connection (the lower number) goes first, not whichever the map yields last.
            let idlest = live
                .iter()
                .filter_map(|(&id, conn)| Some((conn.flags.idle_for(now)?, id, conn)))
                .filter(|((idle, _), ..)| *idle >= limit)
                .max_by_key(|&((idle, _), id, _)| (idle, std::cmp::Reverse(id)));
            let Some(((idle, seen), _, conn)) = idlest else {
                return self.evict_a_stuck_writer(&live, now, limit);
            };
            let flags = &conn.flags;
            if (flags.waiting_since)
                .compare_exchange(seen, EVICTED, Ordering::SeqCst, Ordering::SeqCst)
                .is_err()
            {
                continue;
            }
            log::info!("every worker busy: closing a session idle for {idle} ms to make room");
            flags.evicted.store(true, Ordering::SeqCst);
            let _ = conn.stream.shutdown(Shutdown::Read);
            return true;
        }
        false
    }

    /// Closes, when no session is idle enough, the session that has been writing replies its
    /// client does not take for longest, if for at least `limit` ms and not inside a message:
    /// both its sides are shut, which ends its write (it has nobody to tell). True if it closed
    /// one.
    fn evict_a_stuck_writer(&self, live: &HashMap<u64, Live>, now: u64, limit: u64) -> bool {
        let stuck = live
            .iter()
            .filter(|(_, conn)| !conn.flags.in_message.load(Ordering::SeqCst))
            .filter_map(|(&id, conn)| {
                let since = conn.flags.writing_since.load(Ordering::SeqCst);
                (since != 0).then(|| (now.saturating_sub(since), id, conn))
            })
            .filter(|&(stuck, ..)| stuck >= limit)
            .max_by_key(|&(stuck, id, _)| (stuck, std::cmp::Reverse(id)));
        let Some((stuck, _, conn)) = stuck else {
            return false;
        };
        log::info!(
            "every worker busy: closing a session whose client has not read its replies for \
             {stuck} ms to make room"
        );
        conn.flags.evicted.store(true, Ordering::SeqCst);
        let _ = conn.stream.shutdown(Shutdown::Both);
        true
    }

    /// Milliseconds since the epoch, plus one (so 0 can mean "never").
    pub(super) fn clock(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64 + 1
    }

    /// Waits until no session is live or `deadline` passes; true if none is left.
    pub(crate) fn wait_for_sessions(&self, deadline: Instant) -> bool {
        let mut live = self.live();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if live.is_empty() {
                return true;
            }
            if left.is_zero() {
                return false;
            }
            live = self
                .ended
                .wait_timeout(live, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Ends the shutdown grace: every session still reading, inside a message or not, sees end
    /// of file, answers 421 and closes.
    pub(crate) fn end_grace(&self) {
        let live = self.live();
        if !live.is_empty() {
            log::warn!(
                "shutdown grace over: closing {} session(s) still open",
                live.len()
            );
        }
        for conn in live.values() {
            let _ = conn.stream.shutdown(Shutdown::Read);
        }
    }

    /// The last step of shutdown, repeated every half second until no session is left: shuts
    /// both directions of every live session but one waiting for the writer (about the lock
    /// timeout at most, plus the commit's syncs; cutting it would lose a stored message's 250),
    /// which a later round cuts once it has its answer. A write blocked on a client that reads nothing is not woken by the reading side
    /// being shut, and could wait out `--timeout` twice (reply, then 421); now it fails at once.
    pub(crate) fn cut(&self) {
        let live = self.live();
        let stuck: Vec<&Live> = live
            .values()
            .filter(|conn| !conn.flags.awaits_writer())
            .collect();
        if !stuck.is_empty() {
            log::warn!("shutdown: cutting {} session(s) still open", stuck.len());
        }
        for conn in stuck {
            let _ = conn.stream.shutdown(Shutdown::Both);
        }
    }

    /// Waits `pause` (a `--fail` delay), or until shutdown begins.
    pub(super) fn pause(&self, pause: Duration) {
        let deadline = Instant::now() + pause;
        let mut live = self.live();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || self.shutting_down() {
                return;
            }
            live = self
                .ended
                .wait_timeout(live, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Sessions in progress now.
    pub(crate) fn live_connections(&self) -> usize {
        self.live().len()
    }
}

/// Removes a connection from the live set when its session ends, however it ends.
pub(super) struct Registration<'a> {
    pub(super) ctx: &'a Context,
    pub(super) id: u64,
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        self.ctx.live().remove(&self.id);
        self.ctx.ended.notify_all();
    }
}
