//! The writer's answer to one job: a one-shot slot the writer fills and the worker waits on.
//!
//! It exists because the answer crosses threads once per message, and a general channel costs
//! more than the answer is worth there: crossbeam's blocking receive spins and calls
//! `sched_yield` a few times before it parks, about four system calls per message that a worker
//! which will wait a whole fsync anyway gains nothing from. A mutex and a condition variable
//! park at once: one futex wait on the worker's side, one futex wake on the writer's.

use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

use super::Outcome;

/// The slot both halves share.
#[derive(Debug, Default)]
struct Slot {
    outcome: Mutex<Option<Outcome>>,
    filled: Condvar,
}

impl Slot {
    fn outcome(&self) -> MutexGuard<'_, Option<Outcome>> {
        // An `Option` set in one step cannot be left half written by a panic: a poisoned lock
        // is still sound to use.
        self.outcome.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The writer's half: answers once, by [`Ack::send`], or with [`Outcome::Failed`] if dropped
/// unanswered (the writer gave up on the job), so a worker never waits for an answer that
/// cannot come.
#[derive(Debug)]
pub(crate) struct Ack(Option<Arc<Slot>>);

/// The worker's half: [`Awaited::wait`] blocks until the writer answers.
#[derive(Debug)]
#[cfg_attr(test, derive(Clone))]
pub(crate) struct Awaited(Arc<Slot>);

/// A new, empty answer slot.
pub(crate) fn pair() -> (Ack, Awaited) {
    let slot = Arc::new(Slot::default());
    (Ack(Some(Arc::clone(&slot))), Awaited(slot))
}

impl Ack {
    /// Gives the worker its outcome and wakes it.
    pub(crate) fn send(mut self, outcome: Outcome) {
        if let Some(slot) = self.0.take() {
            fill(&slot, outcome);
        }
    }
}

fn fill(slot: &Slot, outcome: Outcome) {
    *slot.outcome() = Some(outcome);
    // Woken after the lock is released, so the worker does not wake into a held mutex.
    slot.filled.notify_one();
}

impl Drop for Ack {
    fn drop(&mut self) {
        if let Some(slot) = self.0.take() {
            fill(&slot, Outcome::Failed);
        }
    }
}

impl Awaited {
    /// Blocks until the writer answers. The writer answers every job it takes, within the lock
    /// timeout of taking it, or drops it (which answers [`Outcome::Failed`]).
    pub(crate) fn wait(self) -> Outcome {
        let mut outcome = self.0.outcome();
        loop {
            if let Some(answer) = *outcome {
                return answer;
            }
            outcome = self
                .0
                .filled
                .wait(outcome)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Whether the writer has answered yet (tests watch the order of syncs and answers).
    #[cfg(test)]
    pub(crate) fn is_answered(&self) -> bool {
        self.0.outcome().is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::thread;

    #[test]
    fn the_worker_gets_what_the_writer_sent_from_another_thread() {
        for outcome in [Outcome::Delivered, Outcome::Busy, Outcome::NoSpace] {
            let (ack, awaited) = pair();
            let writer = thread::spawn(move || ack.send(outcome));
            assert_eq!(awaited.wait(), outcome);
            writer.join().unwrap();
        }
    }

    #[test]
    fn an_answer_sent_before_the_wait_is_not_lost() {
        let (ack, awaited) = pair();
        ack.send(Outcome::Delivered);
        assert_eq!(awaited.wait(), Outcome::Delivered);
    }

    #[test]
    fn a_dropped_job_answers_failed_instead_of_hanging() {
        let (ack, awaited) = pair();
        let writer = thread::spawn(move || drop(ack));
        assert_eq!(awaited.wait(), Outcome::Failed);
        writer.join().unwrap();
    }
}
