//! The writer's answer to one job: a one-shot slot the writer fills and the worker settles, and
//! the reply the writer sends to the client itself.
//!
//! It exists because the answer crosses threads once per message, and a general channel costs
//! more than the answer is worth there: crossbeam's blocking receive spins and calls
//! `sched_yield` a few times before it parks, about four system calls per message that a worker
//! which will wait a whole fsync anyway gains nothing from. A mutex and a condition variable
//! park at once, and the writer wakes the worker only if it is parked on the slot.
//!
//! Usually it is not: the writer sends the reply to the end of the message (the 250) to the
//! client itself, without waiting (`MSG_DONTWAIT`), as soon as the message is synced, and the
//! worker meanwhile reads the client's next command (see `crate::handoff`). That saves each
//! message a park and a wake-up of its worker (a context switch, and two futex calls) between
//! the commit and the 250.
//!
//! A client that does not read never stalls the writer. What its socket does not take at once
//! (the send buffer is full) stays in the slot: the writer tries it again each time round its
//! loop (see [`Late`]), so a client that starts reading gets its reply although its worker is
//! waiting for the next command; and the worker, when it settles the answer before writing
//! anything else, takes whatever is still unsent and writes it itself. The writer sends only
//! under the slot's lock; the worker takes the rest under it, leaving nothing for the writer to
//! send (the writer fills the rest once, under the same lock as the outcome the worker waits for). So the
//! reply's bytes go out once and in order.

use std::net::TcpStream;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant};

use super::Outcome;
use crate::os::send_now;
use crate::reply::write_reply;

/// What the slot holds.
#[derive(Debug, Default)]
struct State {
    outcome: Option<Outcome>,
    /// The part of the reply not sent yet, in order; empty once the worker has taken it to write
    /// itself.
    rest: Vec<u8>,
    /// Whether the worker is parked on `filled`: the writer wakes it only then.
    waiting: bool,
    /// When the writer answered.
    at: Option<Instant>,
}

/// The slot both halves share.
#[derive(Debug, Default)]
struct Slot {
    state: Mutex<State>,
    filled: Condvar,
    /// Where the writer may send the reply itself.
    direct: Option<Direct>,
}

impl Slot {
    fn state(&self) -> MutexGuard<'_, State> {
        // Fields set together under the lock, never half written by a panic: a poisoned lock is
        // still sound to use.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records the outcome, sends what of `reply` the socket takes at once, keeps the rest for
    /// a later try or the worker, and wakes the worker if it is parked. True if some is left.
    fn answer(&self, outcome: Outcome, reply: Vec<u8>) -> bool {
        let (waiting, left) = {
            let mut state = self.state();
            state.outcome = Some(outcome);
            state.rest = reply;
            self.send_rest(&mut state);
            state.at = Some(Instant::now());
            (state.waiting, !state.rest.is_empty())
        };
        // Woken after the lock is released, so the worker does not wake into a held mutex; and
        // only if it is parked, which it is not while it reads the client's next command.
        if waiting {
            self.filled.notify_one();
        }
        left
    }

    /// Sends what the socket takes now of the unsent rest; false when the socket failed (the
    /// rest is then left for the worker, whose own write will see the same error).
    fn send_rest(&self, state: &mut State) -> bool {
        let Some(direct) = &self.direct else {
            return true;
        };
        if state.rest.is_empty() {
            return true;
        }
        match send_now(&direct.stream, &state.rest) {
            Ok(sent) => {
                state.rest.drain(..sent);
                true
            }
            Err(_) => false,
        }
    }
}

/// Where the writer may send the reply to the end of a message itself, as soon as the message
/// is safely stored, instead of waking the worker to send it.
#[derive(Debug)]
pub(crate) struct Direct {
    /// The session's socket.
    pub stream: Arc<TcpStream>,
    /// The message id the 250 names.
    pub id: String,
    /// Whether the reply carries enhanced status codes (the session began with EHLO).
    pub enhanced: bool,
    /// How long the writer keeps trying to send a reply the socket did not take at once (the
    /// session's timeout: its worker, waiting for a command, gives up as late).
    pub patience: Duration,
}

impl Direct {
    /// The reply's bytes for `outcome`, exactly as the worker would write them.
    fn bytes(&self, outcome: Outcome) -> Vec<u8> {
        let mut out = Vec::new();
        write_reply(&mut out, &outcome.reply(&self.id), self.enhanced);
        out
    }
}

/// The writer's half: answers once, by [`Ack::send`], or with [`Outcome::Failed`] if dropped
/// unanswered (the writer gave up on the job), so a worker never waits for an answer that
/// cannot come.
#[derive(Debug)]
pub(crate) struct Ack(Option<Arc<Slot>>);

/// The worker's half: [`Awaited::settle`] blocks until the writer answers. A clone watches the
/// same slot.
#[derive(Debug, Clone)]
pub(crate) struct Awaited(Arc<Slot>);

/// A reply the socket did not take whole: the writer tries the rest again, without waiting, each
/// time round its loop, until it is sent, the worker has taken it, the socket fails, or the
/// session's patience runs out.
///
/// It does not keep the slot alive: the worker's halves do, the session's until it settles it
/// and the watching clone in the session's flags (for eviction) until the next message or the
/// session's end. So the writer never holds a finished session's socket open (its descriptor,
/// and the client's wait for the close).
#[derive(Debug)]
pub(crate) struct Late {
    slot: Weak<Slot>,
    until: Instant,
}

impl Late {
    /// Sends what the socket takes now; true once there is nothing more for the writer to do.
    pub(crate) fn retry(&self) -> bool {
        let Some(slot) = self.slot.upgrade() else {
            return true;
        };
        let mut state = slot.state();
        !slot.send_rest(&mut state) || state.rest.is_empty() || Instant::now() >= self.until
    }
}

/// The writer's answer as the worker finds it.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Answered {
    /// What became of the message.
    pub outcome: Outcome,
    /// What of the reply the writer did not send, for the worker to send; empty when the writer
    /// sent it all, or when the slot has no [`Direct`] (there is then nothing to send).
    pub unsent: Vec<u8>,
}

/// A new, empty answer slot. With `direct`, the writer sends the reply itself when the socket
/// takes it at once.
pub(crate) fn pair(direct: Option<Direct>) -> (Ack, Awaited) {
    let slot = Arc::new(Slot {
        direct,
        ..Slot::default()
    });
    (Ack(Some(Arc::clone(&slot))), Awaited(slot))
}

impl Ack {
    /// Gives the worker its outcome, having sent the reply to the client first where the socket
    /// takes it at once. The send never waits: a reply not sent whole comes back as a [`Late`]
    /// for the writer to try again.
    pub(crate) fn send(mut self, outcome: Outcome) -> Option<Late> {
        let slot = self.0.take()?;
        let (reply, patience) = match &slot.direct {
            Some(direct) => (direct.bytes(outcome), direct.patience),
            None => (Vec::new(), Duration::ZERO),
        };
        slot.answer(outcome, reply).then(|| Late {
            until: Instant::now() + patience,
            slot: Arc::downgrade(&slot),
        })
    }
}

impl Drop for Ack {
    /// An unanswered job fails, and its reply is sent at once where the socket takes it (the
    /// worker sends the rest).
    fn drop(&mut self) {
        if let Some(slot) = self.0.take() {
            let reply = slot
                .direct
                .as_ref()
                .map(|direct| direct.bytes(Outcome::Failed))
                .unwrap_or_default();
            slot.answer(Outcome::Failed, reply);
        }
    }
}

impl Awaited {
    /// Blocks until the writer answers, and takes over whatever of the reply is still unsent.
    /// The writer answers every job it takes, about the lock timeout after taking it at the
    /// latest (plus the commit's own writes and syncs), or drops it
    /// (which answers [`Outcome::Failed`]).
    pub(crate) fn settle(self) -> Answered {
        let mut state = self.0.state();
        loop {
            if let Some(outcome) = state.outcome {
                let unsent = std::mem::take(&mut state.rest);
                return Answered { outcome, unsent };
            }
            state.waiting = true;
            state = self
                .0
                .filled
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// When the writer answered, if it has.
    pub(crate) fn answered_at(&self) -> Option<Instant> {
        self.0.state().at
    }

    /// [`settle`](Self::settle) for tests: a writer that never answers fails the test after
    /// 10 s instead of hanging it.
    #[cfg(test)]
    pub(crate) fn settled(self) -> Answered {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut state = self.0.state();
        loop {
            if let Some(outcome) = state.outcome {
                let unsent = std::mem::take(&mut state.rest);
                return Answered { outcome, unsent };
            }
            let left = deadline
                .checked_duration_since(Instant::now())
                .expect("the writer did not answer within 10 s");
            state.waiting = true;
            state = self
                .0
                .filled
                .wait_timeout(state, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Waits (at most 10 s, or the test fails) until the writer answers, and says what became
    /// of the message.
    #[cfg(test)]
    pub(crate) fn wait(self) -> Outcome {
        self.settled().outcome
    }

    /// Whether the writer has answered yet (tests watch the order of syncs and answers).
    #[cfg(test)]
    pub(crate) fn is_answered(&self) -> bool {
        self.0.state().outcome.is_some()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::io::{ErrorKind, Read, Write};
    use std::net::TcpListener;
    use std::thread;
    use std::time::Duration;

    /// A connected pair over 127.0.0.1: the server's end, shared as a session shares it, and the
    /// client's end, whose reads fail after 5 s instead of hanging.
    pub(crate) fn connected() -> (Arc<TcpStream>, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let (server, _) = listener.accept().unwrap();
        (Arc::new(server), client)
    }

    /// Fills the send buffer of `stream` (a socket no one else uses) until it takes no more;
    /// returns how many bytes that took.
    pub(crate) fn fill(stream: &TcpStream) -> usize {
        stream.set_nonblocking(true).unwrap();
        let chunk = [b'x'; 65536];
        let mut total = 0;
        loop {
            match (&*stream).write(&chunk) {
                Ok(n) => total += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) => panic!("filling the socket: {e}"),
            }
        }
        stream.set_nonblocking(false).unwrap();
        total
    }

    fn direct(stream: &Arc<TcpStream>) -> Direct {
        Direct {
            stream: Arc::clone(stream),
            id: "5f.1".into(),
            enhanced: true,
            patience: Duration::from_secs(5),
        }
    }

    #[test]
    fn the_writer_sends_the_reply_itself_when_the_socket_takes_it() {
        let (server, mut client) = connected();
        let (ack, awaited) = pair(Some(direct(&server)));
        assert_eq!(awaited.answered_at(), None);
        assert!(ack.send(Outcome::Delivered).is_none(), "sent whole");
        let expected = b"250 2.0.0 OK: delivered as 5f.1\r\n";
        let mut got = vec![0; expected.len()];
        client.read_exact(&mut got).unwrap();
        assert_eq!(got, expected);
        let answered = awaited.clone().settled();
        assert_eq!(answered.outcome, Outcome::Delivered);
        assert!(answered.unsent.is_empty());
        assert!(awaited.answered_at().is_some());
    }

    #[test]
    fn a_full_socket_is_not_waited_for_and_the_worker_takes_over_the_reply() {
        let (server, _client) = connected();
        fill(&server);
        let (ack, awaited) = pair(Some(direct(&server)));
        // Returns although the client reads nothing: the writer never waits on a client.
        let late = ack.send(Outcome::Busy).expect("the reply did not fit");
        // A watching clone keeps the slot alive past the settle, as a session's flags do.
        let watch = awaited.clone();
        let answered = awaited.settled();
        assert_eq!(answered.outcome, Outcome::Busy);
        let whole = direct(&server).bytes(Outcome::Busy);
        assert!(!answered.unsent.is_empty());
        assert!(whole.ends_with(&answered.unsent), "{:?}", answered.unsent);
        // Taken over: the writer is done with it.
        assert!(late.retry());
        drop(watch);
    }

    #[test]
    fn a_late_reply_goes_out_once_the_client_reads() {
        let (server, mut client) = connected();
        let filled = fill(&server);
        let (ack, awaited) = pair(Some(direct(&server)));
        let late = ack.send(Outcome::Delivered).expect("the reply did not fit");
        assert!(
            !late.retry(),
            "nothing was read: the reply is still waiting"
        );
        let mut junk = vec![0; filled];
        client.read_exact(&mut junk).unwrap();
        // Room again: the writer's next tries send the rest, with no help from the worker.
        let deadline = Instant::now() + Duration::from_secs(5);
        while !late.retry() {
            assert!(Instant::now() < deadline, "the late reply was never sent");
            thread::sleep(Duration::from_millis(1));
        }
        let expected = b"250 2.0.0 OK: delivered as 5f.1\r\n";
        let mut got = vec![0; expected.len()];
        client.read_exact(&mut got).unwrap();
        assert_eq!(got, expected);
        assert_eq!(awaited.settled().unsent, b"");
    }

    #[test]
    fn a_dropped_ack_sends_451_itself() {
        let (server, mut client) = connected();
        let (ack, awaited) = pair(Some(direct(&server)));
        drop(ack);
        let expected = b"451 4.3.0 Requested action aborted: local error in processing\r\n";
        let mut got = vec![0; expected.len()];
        client.read_exact(&mut got).unwrap();
        assert_eq!(got, expected);
        let answered = awaited.settled();
        assert_eq!(answered.outcome, Outcome::Failed);
        assert!(answered.unsent.is_empty());
    }

    #[test]
    fn the_worker_gets_what_the_writer_sent_from_another_thread() {
        for outcome in [Outcome::Delivered, Outcome::Busy, Outcome::NoSpace] {
            let (ack, awaited) = pair(None);
            let writer = thread::spawn(move || ack.send(outcome));
            assert_eq!(awaited.wait(), outcome);
            writer.join().unwrap();
        }
    }

    #[test]
    fn an_answer_sent_before_the_wait_is_not_lost() {
        let (ack, awaited) = pair(None);
        ack.send(Outcome::Delivered);
        assert_eq!(awaited.wait(), Outcome::Delivered);
    }

    #[test]
    fn a_dropped_job_answers_failed_instead_of_hanging() {
        let (ack, awaited) = pair(None);
        let writer = thread::spawn(move || drop(ack));
        assert_eq!(awaited.wait(), Outcome::Failed);
        writer.join().unwrap();
    }
}
