//! The SMTP state machine: one plain `enum State` and one transition function, no I/O.
//!
//! It exists so the whole protocol (which command is legal when, what each answer is, when a
//! message is complete) can be read in one place and tested by feeding it frames such as
//! `Frame::Command(b"helo a.domain\r\n")`. Every piece of per-session protocol state lives in
//! [`State`]; [`Session::handle`] turns one frame into an input and makes one `match` on
//! (state, input) that yields the next state and an [`Action`]: a reply to write, a reply after
//! which to close, or an envelope to deliver (or, for a `--fail` rule, a close without a reply or
//! a delay before the action; see `fault.rs`). An illegal command gets its error reply and leaves
//! the state exactly as it was, unless it is the `max_errors`-th refusal: then 421 and close. A command refused by a `--fail` rule is treated as the same
//! command refused for a real reason: a refused RCPT counts as a rejected recipient, a message
//! refused at its end (`data-end`) is not stored and ends its transaction, a refused first BDAT
//! chunk is read and discarded, and any other refusal leaves the state as it was.

mod auth;
#[cfg(test)]
mod auth_tests;
#[cfg(test)]
mod bdat_tests;
mod config;
mod fault;
mod hello;
mod help;
mod message;
#[cfg(test)]
mod message_tests;
#[cfg(test)]
mod names_tests;
mod params;

#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use crate::budget::Reservation;
use crate::command::{self, Address, Command, MailVerb, ParseError};
use crate::data::DataDecoder;
use crate::fail::{Fault, Stage};
use crate::framer::{Frame, Mode};
use crate::mbox::Encoder;
pub(crate) use auth::Policy;
use auth::Sasl;
pub(crate) use config::SessionConfig;
#[cfg(test)]
pub(crate) use message::Protocol;
pub(crate) use message::{Chunk, Discard, Envelope};

use crate::reply::{self, Reply};

/// What the client said in HELO or EHLO.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Hello {
    /// The name it gave.
    name: String,
    /// True after EHLO (not after a later HELO): extensions and enhanced status codes are on.
    extended: bool,
    /// The user a successful AUTH named (RFC 4954). A later HELO or EHLO keeps it: RFC 4954
    /// forgets it only when a security layer starts, and this server negotiates none.
    user: Option<String>,
}

/// A mail transaction between MAIL and the end of the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Transaction {
    from: Option<Address>,
    recipients: Vec<Recipient>,
    /// RCPTs refused so far: DATA then says 554 rather than 503 (RFC 5321 §3.3 allows either;
    /// this is mboxd's choice).
    rejected: usize,
    /// Of those, the 452s (too many recipients or mailboxes): only the first is logged, as a
    /// client may send any number of them, none counted toward `max_errors`.
    deferred: usize,
    /// The client said SMTPUTF8 on MAIL (RFC 6531).
    utf8: bool,
}

impl Transaction {
    /// The recipients' addresses, for `--fail` patterns.
    fn addresses(&self) -> Vec<&str> {
        self.recipients.iter().map(|r| r.address.as_str()).collect()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Recipient {
    /// As given (what `--fail` patterns match).
    address: String,
    /// With the first local domain if it was given without one (see `Address::qualified`).
    qualified: String,
    mailboxes: Vec<String>,
}

/// Where a session is in the protocol: everything it knows.
#[derive(Debug)]
pub(crate) enum State {
    /// Greeted; no HELO or EHLO yet.
    Greeted,
    /// Introduced, no mail transaction open.
    Ready(Hello),
    /// MAIL accepted; collecting recipients.
    Mail(Hello, Box<Transaction>),
    /// 354 sent; reading the message text.
    Data(Hello, Box<Transaction>, Box<DataDecoder>),
    /// Reading an accepted BDAT chunk.
    Chunk(Box<Chunk>),
    /// Between BDAT chunks: at least one accepted, LAST not yet seen; the message so far.
    Chunked(Hello, Box<Transaction>, Box<Encoder>),
    /// Reading and dropping a refused BDAT chunk.
    Discard(Discard),
    /// An AUTH exchange in progress: a 334 challenge sent, the client's response is next. The
    /// session was in `Ready` and returns there, authenticated or not (`auth.rs`).
    Auth(Hello, Sasl),
    /// The greeting was a refusal other than 421: only QUIT is answered, every other command
    /// gets 503 (RFC 5321 §3.1), until the `max_errors`-th, which gets 421 and a close.
    Rejected,
    /// QUIT answered, or the session was closed for too many errors or by a `--fail` rule.
    Closed,
}

/// What the caller must do after a frame.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Action {
    /// Nothing yet (inside a message).
    Continue,
    /// Write this reply.
    Reply(Reply),
    /// Write this reply, then close the connection.
    Close(Reply),
    /// Deliver this message, then write the writer's verdict on it.
    Deliver(Box<Envelope>),
    /// Close the connection without a reply (a `--fail` drop).
    Drop,
    /// Wait this long (a `--fail` delay), then carry out the action.
    Delayed(Duration, Box<Action>),
}

/// A frame turned into what the transition function matches on.
enum Input<'a> {
    /// A well-formed command.
    Command(Command),
    /// A line that is not a command (unknown verb, bad syntax, too long, bare LF): its reply.
    Invalid(Reply),
    /// Message text after 354.
    Text(&'a [u8]),
    /// BDAT chunk octets.
    Octets(&'a [u8]),
    /// A line inside an AUTH exchange (RFC 4954 §4), with its line ending: never a command.
    Response(&'a [u8]),
}

/// One SMTP session, from greeting to close.
#[derive(Debug)]
pub(crate) struct Session {
    config: Arc<SessionConfig>,
    state: State,
    /// Commands refused so far. A budget checked against `max_errors`, not protocol state: it
    /// never decides which command is legal.
    errors: usize,
    /// Names the connection in log lines (its id and peer).
    label: String,
    /// `--fail` delays fired by the current frame, put before its action.
    delay: Duration,
}

impl Session {
    /// A new session; the caller carries out [`Session::open`] (the greeting) first. `label`
    /// names the connection in log lines.
    pub(crate) fn new(config: Arc<SessionConfig>, label: String) -> Self {
        Session {
            config,
            state: State::Greeted,
            errors: 0,
            label,
            delay: Duration::ZERO,
        }
    }

    /// The 220 greeting (RFC 5321 §4.3.1).
    pub(crate) fn greeting(&self) -> Reply {
        // Without `format!`, as the EHLO reply (see `Session::hello`).
        const READY: &str = " ESMTP mboxd Service ready";
        let mut text = String::with_capacity(self.config.hostname.len() + READY.len());
        text.push_str(&self.config.hostname);
        text.push_str(READY);
        Reply::plain(220, text)
    }

    /// True while the latest HELO or EHLO was EHLO: replies then carry enhanced status codes
    /// (RFC 2034, which mboxd offers after EHLO only).
    pub(crate) fn enhanced(&self) -> bool {
        extended(&self.state)
    }

    /// What the next input is: a command line, message text, or chunk octets.
    pub(crate) fn mode(&self) -> Mode {
        match &self.state {
            State::Data(..) => Mode::Text,
            State::Chunk(c) => Mode::Chunk(c.remaining),
            State::Discard(d) => Mode::Chunk(d.remaining),
            State::Auth(..) => Mode::Response,
            _ => Mode::Command,
        }
    }

    /// True while a message is being received: after 354, or from the first BDAT chunk to the
    /// last (between chunks too), or while a refused chunk is read. Shutdown gives such a session
    /// its grace, and reads then use the data timeout.
    pub(crate) fn in_message(&self) -> bool {
        matches!(
            self.state,
            State::Data(..) | State::Chunk(_) | State::Chunked(..) | State::Discard(_)
        )
    }

    /// True once the session has ended (QUIT, too many errors, or a `--fail` close or drop).
    pub(crate) fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed)
    }

    /// The current state, for tests.
    #[cfg(test)]
    pub(crate) fn state(&self) -> &State {
        &self.state
    }

    /// Takes one frame, cut by the framer in this session's [`Session::mode`].
    // Not inlined into the connection loop: the transition function's locals would then stay
    // in the loop's frame while it delivers and logs, one page deeper (see `pool::WORKER_STACK`).
    #[inline(never)]
    pub(crate) fn handle(&mut self, frame: Frame<'_>) -> Action {
        let input = match frame {
            Frame::Command(line) if matches!(self.state, State::Auth(..)) => Input::Response(line),
            Frame::Command(line) => parse_line(line),
            Frame::TooLong if matches!(self.state, State::Auth(..)) => {
                Input::Invalid(reply::AUTH_LINE_TOO_LONG)
            }
            Frame::TooLong => Input::Invalid(reply::LINE_TOO_LONG),
            Frame::Text(text) => Input::Text(text),
            Frame::Chunk(octets) => Input::Octets(octets),
        };
        // `transition` returns a state on every path, so `Closed` is only ever seen here while
        // the old state is being moved into it.
        let state = std::mem::replace(&mut self.state, State::Closed);
        let (state, action) = self.transition(state, input);
        self.state = state;
        self.delayed(action)
    }

    /// The transition function: every input in every state, in one match.
    fn transition(&mut self, state: State, input: Input<'_>) -> (State, Action) {
        use Command as C;
        use State as S;
        match (state, input) {
            // RFC 5321 §3.1: after a refused greeting, QUIT or 503.
            (S::Rejected, Input::Command(C::Quit)) => self.quit(),
            // RFC 3030 §2: a refused chunk's octets are still read, never taken for commands.
            (S::Rejected, Input::Command(C::Bdat { size, .. })) => {
                self.start_discard(S::Rejected, size, reply::BAD_SEQUENCE_REFUSED)
            }
            (state @ S::Rejected, _) => self.refuse(state, reply::BAD_SEQUENCE_REFUSED),
            // Message text and chunk octets, in the states whose mode asks for them.
            (S::Data(hello, tx, decoder), Input::Text(text)) => self.text(hello, tx, decoder, text),
            (S::Chunk(chunk), Input::Octets(octets)) => self.octets(chunk, octets),
            (S::Discard(discard), Input::Octets(octets)) => self.discard(discard, octets),
            // The framer cuts by this state's mode, so no other input reaches these states, and
            // text or octets never reach a command state; either would be ignored.
            (state @ (S::Data(..) | S::Chunk(_) | S::Discard(_) | S::Closed), _)
            | (state, Input::Text(_) | Input::Octets(_)) => (state, Action::Continue),

            // The AUTH exchange (`auth.rs`): every line is a response; a line too long or
            // without CRLF ends it. `handle` sends no command and no response elsewhere.
            (S::Auth(h, sasl), Input::Response(line)) => self.sasl_response(h, sasl, line),
            (S::Auth(h, sasl), Input::Invalid(r)) => self.sasl_abort(h, sasl, r),
            (S::Auth(h, sasl), Input::Command(_)) => {
                self.sasl_abort(h, sasl, reply::AUTH_MALFORMED)
            }
            (state, Input::Response(_)) => (state, Action::Continue),

            // Lines that are not commands.
            (state, Input::Invalid(r)) => self.refuse(state, r),

            // RFC 4954 §6: under --auth-required, 530 "SHOULD be returned by any command other
            // than AUTH, EHLO, HELO, NOOP, RSET, or QUIT" until AUTH succeeds: VRFY, EXPN and
            // HELP here, MAIL below (RCPT, DATA and BDAT cannot come before MAIL).
            (
                state @ (S::Greeted | S::Ready(Hello { user: None, .. })),
                Input::Command(C::Vrfy { .. } | C::Expn { .. } | C::Help(_)),
            ) if self.config.auth.required => self.refuse(state, reply::AUTH_REQUIRED),

            // Commands legal in every state.
            (state, Input::Command(C::Noop)) => (state, Action::Reply(reply::OK_NOOP)),
            (state, Input::Command(C::Help(topic))) => {
                let r = help::help(topic.as_deref());
                self.answer(state, r)
            }
            // RFC 6531 §3.7.4.2: SMTPUTF8 on VRFY and EXPN, as on MAIL, only once EHLO has
            // offered it; before that a UTF-8 answer is refused as without it.
            (state, Input::Command(C::Vrfy { arg, utf8 })) => {
                let utf8 = utf8 && extended(&state);
                let r = ascii_unless(utf8, self.config.directory.vrfy(&arg));
                self.answer(state, r)
            }
            (state, Input::Command(C::Expn { arg, utf8 })) => {
                let utf8 = utf8 && extended(&state);
                let r = ascii_unless(utf8, self.config.directory.expn(&arg));
                self.answer(state, r)
            }
            (_, Input::Command(C::Quit)) => self.quit(),
            (state, Input::Command(C::Turn)) => self.refuse(state, reply::NO_TURN),
            (
                state,
                Input::Command(C::Mail {
                    verb: MailVerb::Send,
                    ..
                }),
            ) => self.refuse(state, reply::NO_SEND),
            // RFC 5321 §4.1.4: HELO or EHLO resets any transaction, like RSET.
            (state, Input::Command(C::Helo(name))) => self.hello(state, name, false),
            (state, Input::Command(C::Ehlo(name))) => self.hello(state, name, true),
            // RFC 5321 §4.1.1.5: RSET clears the transaction, not the HELO.
            (S::Greeted, Input::Command(C::Rset)) => (S::Greeted, Action::Reply(reply::OK_RESET)),
            (S::Ready(h) | S::Mail(h, _) | S::Chunked(h, ..), Input::Command(C::Rset)) => {
                (S::Ready(h), Action::Reply(reply::OK_RESET))
            }

            // AUTH (RFC 4954 §4): offered only when configured; after EHLO, outside a
            // transaction, and once.
            (state, Input::Command(C::Auth { .. })) if !self.config.auth.accounts.enabled() => {
                self.refuse(state, reply::NO_AUTH)
            }
            (
                state @ (S::Greeted
                | S::Ready(Hello {
                    extended: false, ..
                })),
                Input::Command(C::Auth { .. }),
            ) => self.refuse(state, reply::BAD_SEQUENCE_AUTH_EHLO),
            (state @ S::Ready(Hello { user: Some(_), .. }), Input::Command(C::Auth { .. })) => {
                self.refuse(state, reply::BAD_SEQUENCE_AUTH_TWICE)
            }
            (S::Ready(h), Input::Command(C::Auth { mechanism, initial })) => {
                self.auth(h, mechanism, initial)
            }
            (state @ (S::Mail(..) | S::Chunked(..)), Input::Command(C::Auth { .. })) => {
                self.refuse(state, reply::BAD_SEQUENCE_AUTH_MAIL)
            }
            // RFC 4954 §6: with --auth-required, no transaction before a successful AUTH.
            (state @ S::Ready(Hello { user: None, .. }), Input::Command(C::Mail { from, .. }))
                if self.config.auth.required =>
            {
                self.refuse_logged(state, "MAIL", from.as_ref(), reply::AUTH_REQUIRED)
            }

            // MAIL (and SOML, SAML: no user is ever at a terminal here, so they deliver to the
            // mailbox as RFC 821 §4.1.1 allows).
            (S::Greeted, Input::Command(C::Mail { from, .. })) => {
                self.refuse_logged(S::Greeted, "MAIL", from.as_ref(), reply::BAD_SEQUENCE_HELO)
            }
            (S::Ready(h), Input::Command(C::Mail { from, params, .. })) => {
                self.mail(h, from, params)
            }
            (state @ (S::Mail(..) | S::Chunked(..)), Input::Command(C::Mail { from, .. })) => {
                self.refuse_logged(state, "MAIL", from.as_ref(), reply::BAD_SEQUENCE_NESTED)
            }

            // RCPT.
            (S::Greeted, Input::Command(C::Rcpt { to, .. })) => {
                self.refuse_logged(S::Greeted, "RCPT", Some(&to), reply::BAD_SEQUENCE_HELO)
            }
            (state @ S::Ready(_), Input::Command(C::Rcpt { to, .. })) => {
                self.refuse_logged(state, "RCPT", Some(&to), reply::BAD_SEQUENCE_MAIL)
            }
            (S::Mail(h, tx), Input::Command(C::Rcpt { to, params })) => {
                self.recipient(h, tx, to, params)
            }
            (state @ S::Chunked(..), Input::Command(C::Rcpt { to, .. })) => {
                self.refuse_logged(state, "RCPT", Some(&to), reply::BAD_SEQUENCE_CHUNKING)
            }

            // DATA.
            (S::Greeted, Input::Command(C::Data)) => {
                self.refuse(S::Greeted, reply::BAD_SEQUENCE_HELO)
            }
            (state @ S::Ready(_), Input::Command(C::Data)) => {
                self.refuse(state, reply::BAD_SEQUENCE_MAIL)
            }
            (S::Mail(h, tx), Input::Command(C::Data)) => match not_ready_for_message(&tx) {
                Some(r) => self.refuse_message(S::Mail(h, tx), r),
                None => match self.fault(Stage::Data, || tx.addresses()) {
                    Some(Fault::Refuse(r)) => self.refuse_message(S::Mail(h, tx), r),
                    Some(f) => self.faulted(S::Mail(h, tx), f),
                    None => {
                        let decoder = Box::new(DataDecoder::new(
                            self.encoder(),
                            self.config.max_message_size,
                        ));
                        (S::Data(h, tx, decoder), Action::Reply(reply::START_DATA))
                    }
                },
            },
            // RFC 3030 §2: BDAT and DATA cannot be mixed in one transaction.
            (state @ S::Chunked(..), Input::Command(C::Data)) => {
                self.refuse(state, reply::BAD_SEQUENCE_MIXED)
            }

            // BDAT: a chunk's octets are read even when the command is refused (RFC 3030 §2).
            (S::Greeted, Input::Command(C::Bdat { size, .. })) => {
                self.start_discard(S::Greeted, size, reply::BAD_SEQUENCE_HELO)
            }
            (
                state @ (S::Ready(Hello {
                    extended: false, ..
                })
                | S::Mail(
                    Hello {
                        extended: false, ..
                    },
                    _,
                )),
                Input::Command(C::Bdat { size, .. }),
            ) => self.start_discard(state, size, reply::BAD_SEQUENCE_EHLO),
            (state @ S::Ready(_), Input::Command(C::Bdat { size, .. })) => {
                self.start_discard(state, size, reply::BAD_SEQUENCE_MAIL)
            }
            (S::Mail(h, tx), Input::Command(C::Bdat { size, last })) => {
                match not_ready_for_message(&tx) {
                    Some(r) => self.start_discard(S::Mail(h, tx), size, r),
                    None => match self.fault(Stage::Data, || tx.addresses()) {
                        // RFC 3030 §2: a refused chunk is still read.
                        Some(Fault::Refuse(r)) => self.start_discard(S::Mail(h, tx), size, r),
                        Some(f) => self.faulted(S::Mail(h, tx), f),
                        None => {
                            let encoder = Box::new(self.encoder());
                            self.start_chunk(h, tx, encoder, size, last)
                        }
                    },
                }
            }
            (S::Chunked(h, tx, message), Input::Command(C::Bdat { size, last })) => {
                self.start_chunk(h, tx, message, size, last)
            }
        }
    }

    /// A new message's encoder, holding nothing of the budget yet.
    fn encoder(&self) -> Encoder {
        Encoder::new(
            self.config.bare_newline,
            Reservation::new(&self.config.budget),
        )
    }

    /// Answers `r`, counting it as an error if it is one.
    fn answer(&mut self, state: State, r: Reply) -> (State, Action) {
        if r.is_error() {
            self.refuse(state, r)
        } else {
            (state, Action::Reply(r))
        }
    }

    /// Refuses with `r`, keeping `state`, or closes once `max_errors` refusals were made.
    fn refuse(&mut self, state: State, r: Reply) -> (State, Action) {
        self.errors += 1;
        if self.errors >= self.config.max_errors {
            log::info!(
                "{}: {} refused commands; closing with 421",
                self.label,
                self.errors
            );
            return (State::Closed, Action::Close(reply::TOO_MANY_ERRORS));
        }
        (state, Action::Reply(r))
    }

    /// [`Session::refuse`] for a message (DATA, BDAT or its end), with a log line.
    fn refuse_message(&mut self, state: State, r: Reply) -> (State, Action) {
        log::info!("{}: message refused: {}", self.label, r.code_text());
        self.refuse(state, r)
    }
}

/// The HELO or EHLO a state carries, if any.
fn hello_of(state: &State) -> Option<&Hello> {
    match state {
        State::Greeted | State::Rejected | State::Closed => None,
        State::Ready(h)
        | State::Mail(h, _)
        | State::Data(h, ..)
        | State::Chunked(h, ..)
        | State::Auth(h, _) => Some(h),
        State::Chunk(c) => Some(&c.hello),
        State::Discard(d) => hello_of(&d.after),
    }
}

/// The user a state's successful AUTH named, if any.
fn user_of(state: State) -> Option<String> {
    match state {
        State::Ready(h) | State::Mail(h, _) | State::Chunked(h, ..) => h.user,
        _ => None,
    }
}

/// Why the message text cannot start now, if it cannot.
fn not_ready_for_message(tx: &Transaction) -> Option<Reply> {
    if !tx.recipients.is_empty() {
        None
    } else if tx.rejected > 0 {
        // No valid recipient after some were tried is 554, none tried at all a bad sequence
        // (RFC 5321 §3.3 allows 503 or 554 for either; this split is mboxd's).
        Some(reply::NO_VALID_RECIPIENTS)
    } else {
        Some(reply::BAD_SEQUENCE_RCPT)
    }
}

/// A command line (with its line ending) as an input.
// Not inlined into `handle`: the parser's locals would then stay in its frame below every
// command's handler, and an idle worker's stack would reach one page deeper (see
// `pool::WORKER_STACK`).
#[inline(never)]
fn parse_line(line: &[u8]) -> Input<'_> {
    // RFC 5321 §2.3.8: only CRLF ends a command line.
    let Some(text) = line.strip_suffix(b"\r\n") else {
        return Input::Invalid(reply::BARE_LF);
    };
    match command::parse(text) {
        Ok(cmd) => Input::Command(cmd),
        Err(ParseError::Unrecognized) => Input::Invalid(reply::UNKNOWN_COMMAND),
        Err(ParseError::Syntax(why)) => {
            Input::Invalid(Reply::new(501, "5.5.4", format!("Syntax error: {why}")))
        }
        Err(ParseError::Address { sender, why }) => {
            let enhanced = if sender { "5.1.7" } else { "5.1.3" };
            Input::Invalid(Reply::new(
                501,
                enhanced,
                format!("Syntax error in address: {why}"),
            ))
        }
    }
}

/// Whether the session said EHLO (not HELO, or nothing yet): extensions are in effect.
fn extended(state: &State) -> bool {
    hello_of(state).is_some_and(|h| h.extended)
}

/// RFC 6531 §3.7.4.2: a VRFY or EXPN reply holds UTF-8 only if the client allowed it with
/// `SMTPUTF8`; otherwise the answer, known but not sendable, is `550 5.6.8`.
fn ascii_unless(utf8: bool, r: Reply) -> Reply {
    if utf8 || r.text.is_ascii() {
        r
    } else {
        reply::UTF8_REPLY_NOT_ALLOWED
    }
}
