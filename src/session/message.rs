//! Receiving a message: DATA text, accepted and refused BDAT chunks, and the envelope at the end.
//!
//! It exists to keep the message phase of the state machine (RFC 5321 §4.1.1.4 for DATA,
//! RFC 3030 for BDAT) apart from the command half in `mod.rs`. These are the helpers the one
//! transition function calls for the states that read a message; they decide nothing about
//! which command is legal. The message goes into an mbox [`Encoder`] as it arrives, so what a
//! session holds is already the stored form, the one copy that is handed to the writer. A message
//! the encoder refuses (too big, no room in the in-flight budget, a bare CR or LF under
//! `--bare-newline reject`, a first line that would fold into `Received:`) is still read to its
//! end (DATA) or to the end of its chunk (BDAT, RFC 3030 §2: the transaction then fails), and
//! nothing of it is stored.

use std::sync::Arc;

use super::{Action, Hello, Session, State, Transaction};
use crate::data::{DataDecoder, DataStatus};
use crate::fail::{Fault, Stage};
use crate::mbox::{Body, Encoder, Refusal};
use crate::reply::{self, Reply};

/// An accepted BDAT chunk being read into the message (RFC 3030).
#[derive(Debug)]
pub(crate) struct Chunk {
    pub(super) hello: Hello,
    pub(super) tx: Box<Transaction>,
    /// The message so far, this chunk's bytes included.
    pub(super) message: Box<Encoder>,
    /// Octets of this chunk still to come; never 0.
    pub(super) remaining: u64,
    /// The chunk's announced size, for its 250.
    pub(super) size: u64,
    /// `BDAT n LAST`: the message ends with this chunk.
    pub(super) last: bool,
}

/// A refused BDAT chunk being read and dropped: its octets are never commands (RFC 3030 §2).
#[derive(Debug)]
pub(crate) struct Discard {
    /// The state to return to once the chunk is consumed.
    pub(super) after: Box<State>,
    /// Octets of the chunk still to come; never 0.
    pub(super) remaining: u64,
    /// The reply sent once the chunk is consumed.
    pub(super) refusal: Reply,
}

/// Which protocol carried a message, for the `Received:` header (RFC 3848, RFC 6531).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Protocol {
    /// After HELO.
    Smtp,
    /// After EHLO.
    Esmtp,
    /// After EHLO, with `MAIL ... SMTPUTF8`.
    Utf8Smtp,
    /// After EHLO and a successful AUTH (RFC 3848 §2).
    EsmtpA,
    /// After EHLO and a successful AUTH, with `MAIL ... SMTPUTF8` (RFC 6531 §4.3).
    Utf8SmtpA,
}

impl Protocol {
    /// The name written after `with` in `Received:`.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Protocol::Smtp => "SMTP",
            Protocol::Esmtp => "ESMTP",
            Protocol::Utf8Smtp => "UTF8SMTP",
            Protocol::EsmtpA => "ESMTPA",
            Protocol::Utf8SmtpA => "UTF8SMTPA",
        }
    }
}

/// A complete message ready for delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Envelope {
    /// The reverse path; `None` for the null sender.
    pub sender: Option<String>,
    /// Each mailbox once, with the recipient address that led to it.
    pub recipients: Vec<(String, String)>,
    /// The message in its stored form, shared with the writer's entries without a copy; it
    /// holds its part of the in-flight budget until the last copy is dropped.
    pub body: Arc<Body>,
    /// Octets the client sent (dot-unstuffed for DATA), as the size limit counts them.
    pub size: u64,
    /// The name the client gave in HELO or EHLO.
    pub helo: String,
    /// How the message came.
    pub protocol: Protocol,
    /// The user a successful AUTH named, for the log (never in the stored message).
    pub user: Option<String>,
}

impl Session {
    pub(super) fn text(
        &mut self,
        hello: Hello,
        tx: Box<Transaction>,
        mut decoder: Box<DataDecoder>,
        text: &[u8],
    ) -> (State, Action) {
        if decoder.push(text) == DataStatus::Partial {
            if decoder.received() > self.discard_limit() {
                return self.far_too_big();
            }
            return (State::Data(hello, tx, decoder), Action::Continue);
        }
        let size = decoder.received();
        match decoder.finish() {
            Ok(body) => self.envelope(hello, *tx, body, size),
            Err(why) => self.refuse_message(State::Ready(hello), refusal(why)),
        }
    }

    pub(super) fn start_chunk(
        &mut self,
        hello: Hello,
        tx: Box<Transaction>,
        message: Box<Encoder>,
        size: u64,
        last: bool,
    ) -> (State, Action) {
        if message.received().saturating_add(size) > self.config.max_message_size {
            // RFC 3030 §2 and RFC 1870: over the limit the transaction fails; the chunk is
            // still read (unless over twice the limit), and nothing of the message is kept.
            return self.start_discard(State::Ready(hello), size, reply::MESSAGE_TOO_BIG);
        }
        let chunk = Chunk {
            hello,
            tx,
            message,
            remaining: size,
            size,
            last,
        };
        if size == 0 {
            self.end_of_chunk(chunk)
        } else {
            (State::Chunk(Box::new(chunk)), Action::Continue)
        }
    }

    pub(super) fn octets(&mut self, mut chunk: Box<Chunk>, octets: &[u8]) -> (State, Action) {
        let n = octets
            .len()
            .min(usize::try_from(chunk.remaining).unwrap_or(usize::MAX));
        chunk.message.push(octets.get(..n).unwrap_or(octets));
        chunk.remaining -= n as u64;
        if chunk.remaining == 0 {
            self.end_of_chunk(*chunk)
        } else {
            (State::Chunk(chunk), Action::Continue)
        }
    }

    pub(super) fn end_of_chunk(&mut self, chunk: Chunk) -> (State, Action) {
        if let Some(why) = chunk.message.refused() {
            // RFC 3030 §2: a refused chunk ends the transaction; later chunks get 503.
            return self.refuse_message(State::Ready(chunk.hello), refusal(why));
        }
        if chunk.last {
            let size = chunk.message.received();
            return match chunk.message.finish() {
                Ok(body) => self.envelope(chunk.hello, *chunk.tx, body, size),
                Err(why) => self.refuse_message(State::Ready(chunk.hello), refusal(why)),
            };
        }
        let r = Reply::new(250, "2.0.0", format!("{} octets received", chunk.size));
        (
            State::Chunked(chunk.hello, chunk.tx, chunk.message),
            Action::Reply(r),
        )
    }

    pub(super) fn start_discard(
        &mut self,
        after: State,
        size: u64,
        refusal: Reply,
    ) -> (State, Action) {
        if size == 0 {
            return self.refuse_message(after, refusal);
        }
        if size > self.discard_limit() {
            return self.far_too_big();
        }
        let discard = Discard {
            after: Box::new(after),
            remaining: size,
            refusal,
        };
        (State::Discard(discard), Action::Continue)
    }

    /// The most octets of one message, or of one refused BDAT chunk, read only to be thrown
    /// away: twice the size limit. A client that sends a message a little over the limit
    /// without heeding SIZE gets its 552 after the end (RFC 1870 §6.3); one that goes on past
    /// this (or declares a chunk larger, up to `u64::MAX`) would otherwise keep a worker
    /// reading for as long as it sends fast enough for the minimum rate.
    fn discard_limit(&self) -> u64 {
        self.config.max_message_size.saturating_mul(2)
    }

    /// Ends the session over a message past [`Session::discard_limit`]: `552` (it would never
    /// fit, so retrying is pointless) and the connection closed.
    fn far_too_big(&mut self) -> (State, Action) {
        log::info!(
            "{}: message over twice the size limit; closing with 552",
            self.label
        );
        (State::Closed, Action::Close(reply::MESSAGE_FAR_TOO_BIG))
    }

    pub(super) fn discard(&mut self, mut discard: Discard, octets: &[u8]) -> (State, Action) {
        discard.remaining = discard.remaining.saturating_sub(octets.len() as u64);
        if discard.remaining == 0 {
            self.refuse_message(*discard.after, discard.refusal)
        } else {
            (State::Discard(discard), Action::Continue)
        }
    }

    pub(super) fn envelope(
        &mut self,
        hello: Hello,
        tx: Transaction,
        body: Body,
        size: u64,
    ) -> (State, Action) {
        // A fault here fires instead of the delivery: nothing is stored.
        match self.fault(Stage::DataEnd, || tx.addresses()) {
            Some(Fault::Refuse(r)) => return self.refuse_message(State::Ready(hello), r),
            Some(f) => return self.faulted(State::Ready(hello), f),
            None => {}
        }
        let mut recipients: Vec<(String, String)> = Vec::new();
        for rcpt in tx.recipients {
            // RFC 5321 §4.4: `Received:`'s `for` names a mailbox, with a domain. A recipient
            // given without one (`<postmaster>`, §4.1.1.3, or any local part, taken as local)
            // is written with the first local domain, as VRFY answers.
            for mailbox in rcpt.mailboxes {
                if !recipients.iter().any(|(m, _)| *m == mailbox) {
                    recipients.push((mailbox, rcpt.qualified.clone()));
                }
            }
        }
        // RFC 3848 has no authenticated form of plain SMTP: AUTH needs EHLO, and a HELO after
        // it is SMTP again.
        let protocol = match (tx.utf8, hello.extended, hello.user.is_some()) {
            (true, _, false) => Protocol::Utf8Smtp,
            (true, _, true) => Protocol::Utf8SmtpA,
            (false, true, false) => Protocol::Esmtp,
            (false, true, true) => Protocol::EsmtpA,
            (false, false, _) => Protocol::Smtp,
        };
        let envelope = Envelope {
            // `Return-Path:` too holds a mailbox (RFC 5322 §3.6.7's angle-addr): a sender given
            // without a domain is qualified like a recipient, as Postfix qualifies it.
            sender: tx.from.map(|a| a.qualified(self.config.home_for(tx.utf8))),
            recipients,
            // Moves the buffer into the Arc: no copy.
            body: Arc::new(body),
            size,
            helo: hello.name.clone(),
            protocol,
            user: hello.user.clone(),
        };
        (State::Ready(hello), Action::Deliver(Box::new(envelope)))
    }
}

/// The reply to a message the encoder refused.
fn refusal(why: Refusal) -> Reply {
    match why {
        Refusal::TooBig => reply::MESSAGE_TOO_BIG,
        Refusal::NoRoom => reply::INSUFFICIENT_STORAGE,
        Refusal::BareNewline => reply::BARE_NEWLINE_IN_MESSAGE,
        Refusal::Folds => reply::FIRST_LINE_FOLDS,
    }
}
