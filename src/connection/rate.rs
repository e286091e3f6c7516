//! The minimum data rate, as a deadline: a session's first message starts with `grace` of
//! time; each octet of it that arrives moves the deadline later by `1/rate` of a second, but
//! never more than `cap` (the data timeout) past the moment it arrived; a read still waiting at
//! the deadline ends the session (`421 4.4.2`). What a message leaves of its time is carried to
//! the session's next message; a pause of the server's own (a `--fail` delay) is not counted.
//!
//! It exists apart from the session loop (`connection.rs`) so that its arithmetic can be read,
//! and tested with chosen instants, on its own. The cap is Postfix's rule for its
//! `smtpd_min_data_rate` (capped by `smtpd_timeout`): without it, a client that sends a large
//! message's first part at once earns hours in which to trickle the rest, one octet a read,
//! holding its worker and its part of the in-flight budget all that time; with it, no more
//! than one data timeout. The carry is mboxd's own: were each message given a
//! fresh `grace`, a client could hold its worker for ever by ending a nearly empty message
//! and beginning the next every few seconds, each message within its own rate.

use std::time::{Duration, Instant};

/// A session's data clock.
#[derive(Debug)]
pub(super) struct DataClock {
    /// Octets per second (at least 1).
    rate: u64,
    /// The most octets can move the deadline past the moment they arrive.
    cap: Duration,
    /// The time a message begun now would have: `grace` at the start, then what the session's
    /// last message left.
    credit: Duration,
    current: Option<Current>,
    /// The number of the last message whose clock started, ended or not.
    started: Option<u32>,
}

/// The message being received.
#[derive(Debug)]
struct Current {
    /// The core's count of messages begun when this one began (each message has a number, also
    /// one pipelined right behind the last).
    number: u32,
    deadline: Instant,
    /// Octets read since it began, commands between BDAT chunks included.
    read: u64,
    /// The core's count of command octets inside messages when it began: the commands between
    /// BDAT chunks are not the message's octets.
    commands_before: u64,
    /// The message's octets the deadline has been moved for.
    credited: u64,
}

impl DataClock {
    /// A clock with `grace` for the session's first message, whose octets buy time up to `cap`
    /// ahead.
    pub(super) fn new(rate: u64, grace: Duration, cap: Duration) -> Self {
        DataClock {
            rate: rate.max(1),
            cap,
            credit: grace,
            current: None,
            started: None,
        }
    }

    /// Brings the clock up to `now`, before a wait: credits the octets read since the last
    /// update, and starts or ends a message. `message` is the number of the message being
    /// received, if one is (see [`Current::number`]), and `commands` the core's count of command
    /// octets inside messages.
    pub(super) fn update(&mut self, now: Instant, message: Option<u32>, commands: u64) {
        let cap = now.checked_add(self.cap);
        if let Some(c) = &mut self.current {
            let octets = c
                .read
                .saturating_sub(commands.wrapping_sub(c.commands_before));
            let new = octets.saturating_sub(c.credited);
            c.credited = c.credited.max(octets);
            let earned =
                Duration::try_from_secs_f64(new as f64 / self.rate as f64).unwrap_or(Duration::MAX);
            let later = c.deadline.checked_add(earned);
            c.deadline = match (later, cap) {
                (Some(later), Some(cap)) => later.min(cap),
                (Some(later), None) => later,
                (None, cap) => cap.unwrap_or(c.deadline),
            };
        }
        match (self.current.take(), message) {
            (Some(c), Some(n)) if c.number == n => self.current = Some(c),
            (ended, next) => {
                if let Some(c) = ended {
                    self.credit = c.deadline.saturating_duration_since(now);
                }
                self.started = next.or(self.started);
                self.current = next.map(|number| Current {
                    number,
                    deadline: now.checked_add(self.credit).unwrap_or(now),
                    read: 0,
                    commands_before: commands,
                    credited: 0,
                });
            }
        }
    }

    /// Before a pause of the server's own (`--fail` delays), at `now`: a message that ended
    /// (`message` is not its number) is ended now, and one still being received gets `pause`
    /// more. No message is begun here: its clock starts once its 354 is written.
    pub(super) fn pause(
        &mut self,
        now: Instant,
        message: Option<u32>,
        commands: u64,
        pause: Duration,
    ) {
        if self
            .current
            .as_ref()
            .is_some_and(|c| Some(c.number) != message)
        {
            self.update(now, None, commands);
        }
        if let Some(c) = &mut self.current {
            c.deadline = c.deadline.checked_add(pause).unwrap_or(c.deadline);
        }
    }

    /// Takes message `n`, the core's latest, as announced to the client, whether or not its
    /// clock started.
    pub(super) fn announce(&mut self, n: u32) {
        self.started = Some(n);
    }

    /// Counts `n` octets read while a message is being received.
    pub(super) fn read(&mut self, n: usize) {
        if let Some(c) = &mut self.current {
            c.read = c.read.saturating_add(n as u64);
        }
    }

    /// The number of the last message whose clock started (once its 354 or first chunk's reply
    /// was written), though it may have ended since (before a `--fail` delay of its end, say).
    pub(super) fn message(&self) -> Option<u32> {
        self.started
    }

    /// When the message being received falls below the rate, if one is.
    pub(super) fn deadline(&self) -> Option<Instant> {
        self.current.as_ref().map(|c| c.deadline)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    /// A clock of 100 octets/s, 30 s of grace and a cap of 60 s, and its start.
    fn clock() -> (DataClock, Instant) {
        (DataClock::new(100, 30 * S, 60 * S), Instant::now())
    }

    #[test]
    fn a_message_has_the_grace_then_an_octet_buys_a_hundredth_of_a_second() {
        let (mut c, t) = clock();
        assert_eq!(c.deadline(), None);
        c.update(t, Some(1), 0);
        assert_eq!((c.message(), c.deadline()), (Some(1), Some(t + 30 * S)));
        c.read(500);
        c.update(t + 10 * S, Some(1), 0);
        assert_eq!(c.deadline(), Some(t + 35 * S));
        // The same octets are not counted twice.
        c.update(t + 11 * S, Some(1), 0);
        assert_eq!(c.deadline(), Some(t + 35 * S));
    }

    #[test]
    fn octets_sent_at_once_buy_no_more_than_the_cap() {
        let (mut c, t) = clock();
        c.update(t, Some(1), 0);
        // A megabyte at once would be 10 000 s at 100 octets/s: it buys 60 s from now.
        c.read(1_000_000);
        c.update(t + S, Some(1), 0);
        assert_eq!(c.deadline(), Some(t + 61 * S));
        // Then one octet a read: a hundredth of a second each.
        for k in 2..=30 {
            c.read(1);
            c.update(t + k * S, Some(1), 0);
        }
        assert_eq!(c.deadline(), Some(t + 61 * S + 290 * S / 1000));
    }

    #[test]
    fn a_pause_of_the_servers_own_is_not_counted() {
        let (mut c, t) = clock();
        c.update(t, Some(1), 0);
        c.pause(t + 10 * S, Some(1), 0, 5 * S);
        assert_eq!(c.deadline(), Some(t + 35 * S));
        // A message that ended before the pause leaves what it had then.
        c.pause(t + 20 * S, None, 0, 100 * S);
        assert_eq!(c.deadline(), None);
        c.update(t + 120 * S, Some(2), 0);
        assert_eq!(c.deadline(), Some(t + 135 * S));
        // Nor does a pause begin a message.
        let (mut d, t) = clock();
        d.pause(t, Some(1), 0, S);
        assert_eq!(d.deadline(), None);
    }

    #[test]
    fn commands_between_chunks_are_not_the_messages_octets() {
        let (mut c, t) = clock();
        c.update(t, Some(1), 40);
        // 120 octets read, of which a 20-octet BDAT line: 100 octets of message, 1 s.
        c.read(120);
        c.update(t + S, Some(1), 60);
        assert_eq!(c.deadline(), Some(t + 31 * S));
    }

    #[test]
    fn what_a_message_leaves_is_carried_to_the_next() {
        let (mut c, t) = clock();
        c.update(t, Some(1), 0);
        // 25 s in the message for 100 octets: 6 s left at its end.
        c.read(100);
        c.update(t + 25 * S, None, 0);
        assert_eq!(c.deadline(), None);
        // The time between messages is not counted; the next message has those 6 s.
        c.update(t + 100 * S, Some(2), 0);
        assert_eq!(c.deadline(), Some(t + 106 * S));
        // Ended and followed at once (pipelined): the same.
        c.read(200);
        c.update(t + 101 * S, Some(3), 0);
        assert_eq!((c.message(), c.deadline()), (Some(3), Some(t + 108 * S)));
        // A message that ran out leaves nothing: the next one is late at once.
        c.update(t + 120 * S, Some(4), 0);
        assert_eq!(c.deadline(), Some(t + 120 * S));
    }

    #[test]
    fn huge_numbers_do_not_overflow() {
        let mut c = DataClock::new(1, S, Duration::from_secs(999_999_999));
        let t = Instant::now();
        c.update(t, Some(1), 0);
        c.read(usize::MAX);
        c.read(usize::MAX);
        c.update(t + S, Some(1), 0);
        assert!(c.deadline().is_some_and(|d| d > t));
        let mut zero = DataClock::new(0, S, S);
        zero.update(t, Some(1), 0);
        zero.read(1);
        zero.update(t, Some(1), 0);
        assert_eq!(zero.deadline(), Some(t + S));
    }
}
