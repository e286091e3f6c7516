//! The session's side of failing on purpose: asking the `--fail` rules at each stage and turning
//! what fires into the stage's state and action.
//!
//! It exists to keep the hooks in the transition function to one call each: an arm asks
//! [`Session::fault`] and, when a fault fires, hands it to [`Session::faulted`]; delays are kept
//! aside and put before the frame's action by [`Session::delayed`], so the connection (which
//! owns the clock and the socket) carries them out, as it does a drop.

use std::time::Duration;

use super::{Action, Session, State};
use crate::fail::{Fault, Stage};

impl Session {
    /// The first action of a session: the greeting, or what a `connect` rule makes of it.
    pub(crate) fn open(&mut self) -> Action {
        let action = match self.fault(Stage::Connect, Vec::<&str>::new) {
            None => Action::Reply(self.greeting()),
            // RFC 5321 §3.1: a refusal instead of the greeting; wait for QUIT.
            Some(Fault::Refuse(r)) => {
                self.state = State::Rejected;
                Action::Reply(r)
            }
            Some(f) => {
                let (state, action) = self.faulted(State::Greeted, f);
                self.state = state;
                action
            }
        };
        self.delayed(action)
    }

    /// `action`, after the delays that `--fail` rules fired, if any.
    pub(super) fn delayed(&mut self, action: Action) -> Action {
        match std::mem::take(&mut self.delay) {
            Duration::ZERO => action,
            d => Action::Delayed(d, Box::new(action)),
        }
    }

    /// Consults the `--fail` rules of `stage` against the subjects `subjects` makes (only if
    /// some rule is for this stage: the usual session pays nothing for them): a delay is kept
    /// for [`Session::delayed`], a refusal, close or drop returned for [`Session::faulted`].
    pub(super) fn fault<S: AsRef<str>>(
        &mut self,
        stage: Stage,
        subjects: impl FnOnce() -> Vec<S>,
    ) -> Option<Fault> {
        if !self.config.faults.armed(stage) {
            return None;
        }
        let subjects = subjects();
        let subjects: Vec<&str> = subjects.iter().map(AsRef::as_ref).collect();
        let (delay, fault) = self.config.faults.check(stage, &subjects, &self.label);
        self.delay += delay;
        fault
    }

    /// Carries out a fault: a refusal keeps the `state` it is given, as an illegal command keeps
    /// the session's. The caller chooses that state: the one before the command at every stage
    /// but `data-end`, where it is `Ready` (the message is over, and nothing was stored).
    pub(super) fn faulted(&mut self, state: State, fault: Fault) -> (State, Action) {
        match fault {
            Fault::Refuse(r) => self.refuse(state, r),
            Fault::Close(r) => (State::Closed, Action::Close(r)),
            Fault::Drop => (State::Closed, Action::Drop),
        }
    }
}
