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
//! the commit and the 250. What the socket does not take at once (its send buffer is full: the
//! client is not reading), the worker sends, so a client that does not read never stalls the
//! writer.

use std::net::TcpStream;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use super::Outcome;
use crate::reply::write_reply;

/// What the slot holds.
#[derive(Debug, Default)]
struct State {
    outcome: Option<Outcome>,
    /// Bytes of the reply the writer sent to the client itself.
    sent: usize,
    /// Whether that was the whole reply.
    whole: bool,
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
    /// Gives the worker its outcome, having sent the reply to the client first where it can.
    ///
    /// The send never waits (a client that does not read cannot stall the writer): what the
    /// socket does not take at once, the worker sends, before anything else it has to say.
    pub(crate) fn send(mut self, outcome: Outcome) {
        if let Some(slot) = self.0.take() {
            let (sent, whole) = match &slot.direct {
                Some(direct) => {
                    let bytes = direct.bytes(outcome);
                    let sent = crate::os::send_now(&direct.stream, &bytes).unwrap_or(0);
                    (sent, sent == bytes.len())
                }
                None => (0, false),
            };
            fill(&slot, outcome, sent, whole);
        }
    }
}

fn fill(slot: &Slot, outcome: Outcome, sent: usize, whole: bool) {
    let waiting = {
        let mut state = slot.state();
        state.outcome = Some(outcome);
        state.sent = sent;
        state.whole = whole;
        state.at = Some(Instant::now());
        state.waiting
    };
    // Woken after the lock is released, so the worker does not wake into a held mutex; and only
    // if it is parked, which it is not while it reads the client's next command.
    if waiting {
        slot.filled.notify_one();
    }
}

impl Drop for Ack {
    fn drop(&mut self) {
        if let Some(slot) = self.0.take() {
            fill(&slot, Outcome::Failed, 0, false);
        }
    }
}

impl Awaited {
    /// Blocks until the writer answers. The writer answers every job it takes, within the lock
    /// timeout of taking it, or drops it (which answers [`Outcome::Failed`]).
    pub(crate) fn settle(self) -> Answered {
        let mut state = self.0.state();
        let (outcome, sent, whole) = loop {
            if let Some(outcome) = state.outcome {
                break (outcome, state.sent, state.whole);
            }
            state.waiting = true;
            state = self
                .0
                .filled
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        };
        drop(state);
        let unsent = match &self.0.direct {
            Some(direct) if !whole => direct.bytes(outcome).split_off(sent),
            _ => Vec::new(),
        };
        Answered { outcome, unsent }
    }

    /// When the writer answered, if it has.
    pub(crate) fn answered_at(&self) -> Option<Instant> {
        self.0.state().at
    }

    /// Blocks until the writer answers, and says what became of the message.
    #[cfg(test)]
    pub(crate) fn wait(self) -> Outcome {
        self.settle().outcome
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
        }
    }

    #[test]
    fn the_writer_sends_the_reply_itself_when_the_socket_takes_it() {
        let (server, mut client) = connected();
        let (ack, awaited) = pair(Some(direct(&server)));
        assert_eq!(awaited.answered_at(), None);
        ack.send(Outcome::Delivered);
        let expected = b"250 2.0.0 OK: delivered as 5f.1\r\n";
        let mut got = vec![0; expected.len()];
        client.read_exact(&mut got).unwrap();
        assert_eq!(got, expected);
        let answered = awaited.clone().settle();
        assert_eq!(answered.outcome, Outcome::Delivered);
        assert!(answered.unsent.is_empty());
        assert!(awaited.answered_at().is_some());
    }

    #[test]
    fn a_full_socket_is_not_waited_for_and_leaves_the_reply_to_the_worker() {
        let (server, _client) = connected();
        fill(&server);
        let (ack, awaited) = pair(Some(direct(&server)));
        // Returns although the client reads nothing: the writer never waits on a client.
        ack.send(Outcome::Busy);
        let answered = awaited.settle();
        assert_eq!(answered.outcome, Outcome::Busy);
        let whole = direct(&server).bytes(Outcome::Busy);
        assert!(!answered.unsent.is_empty());
        assert!(whole.ends_with(&answered.unsent), "{:?}", answered.unsent);
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
