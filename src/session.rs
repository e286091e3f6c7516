//! The SMTP state machine: one plain `enum State` and one transition function, no I/O.
//!
//! It exists so the whole protocol (which command is legal when, what each answer is, when a
//! message is complete) can be read in one place and tested by feeding it byte literals such as
//! `b"helo a.domain\r\n"`. The connection module gives it lines and carries out what it returns:
//! a reply to write, a reply after which to close, or an envelope to deliver. An illegal command
//! gets its error reply and leaves the state exactly as it was.

use std::sync::Arc;

use crate::command::{self, Address, Command, MailVerb, Param, ParseError};
use crate::data::{DataDecoder, DataStatus};
use crate::directory::Directory;
use crate::reply::{self, Reply};

/// The limits and names a session needs, shared by all sessions of a server.
#[derive(Debug)]
pub(crate) struct SessionConfig {
    /// This server's name, in the greeting and the trace headers.
    pub hostname: String,
    /// Largest message accepted, in octets (RFC 1870).
    pub max_message_size: u64,
    /// Most recipients in one transaction (RFC 5321 §4.5.3.1.8 requires at least 100).
    pub max_recipients: usize,
    /// Rejected commands before the session is closed with 421.
    pub max_errors: usize,
    /// Local domains, users and aliases.
    pub directory: Directory,
}

/// Where a session is in the protocol.
#[derive(Debug)]
pub(crate) enum State {
    /// Greeted; no HELO or EHLO yet.
    Fresh,
    /// Introduced, no mail transaction open.
    Ready,
    /// MAIL accepted; collecting recipients.
    Mail(Transaction),
    /// 354 sent; reading the message text.
    Data(Transaction, DataDecoder),
    /// BDAT chunks accepted, LAST not yet seen (RFC 3030); the message so far.
    Chunking(Transaction, Vec<u8>),
    /// QUIT answered, or the session was closed for another reason.
    Closed,
}

/// A mail transaction between MAIL and the end of DATA.
#[derive(Debug, Default)]
pub(crate) struct Transaction {
    from: Option<Address>,
    recipients: Vec<Recipient>,
    rejected: usize,
    /// The client said SMTPUTF8 on MAIL (RFC 6531).
    utf8: bool,
}

#[derive(Debug)]
struct Recipient {
    address: String,
    mailboxes: Vec<String>,
}

/// A complete message ready for delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Envelope {
    /// The reverse path; `None` for the null sender.
    pub sender: Option<String>,
    /// Each mailbox once, with the recipient address that led to it.
    pub recipients: Vec<(String, String)>,
    /// The message text, dot-unstuffed, with its CRLF line endings.
    pub message: Vec<u8>,
    /// The name the client gave in HELO or EHLO.
    pub helo: String,
    /// `SMTP` after HELO, `ESMTP` after EHLO, `UTF8SMTP` with SMTPUTF8 (RFC 3848, RFC 6531).
    pub protocol: &'static str,
}

/// What the connection must do after feeding a line.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Action {
    /// Nothing yet (inside DATA).
    Continue,
    /// Write this reply.
    Reply(Reply),
    /// Write this reply, then close the connection.
    Close(Reply),
    /// Deliver this message, then write the writer's verdict on it.
    Deliver(Envelope),
}

/// A BDAT chunk being read: its bytes are consumed whatever the verdict (RFC 3030 §2).
#[derive(Debug)]
struct Chunk {
    remaining: u64,
    last: bool,
    size: u64,
    /// Set when the chunk is refused; its bytes are then read and dropped.
    refusal: Option<Reply>,
}

#[derive(Debug)]
struct Hello {
    name: String,
    extended: bool,
}

/// One SMTP session, from greeting to close.
#[derive(Debug)]
pub(crate) struct Session {
    config: Arc<SessionConfig>,
    state: State,
    hello: Option<Hello>,
    chunk: Option<Chunk>,
    errors: usize,
}

impl Session {
    /// A new session; the caller sends [`Session::greeting`] first.
    pub(crate) fn new(config: Arc<SessionConfig>) -> Self {
        Session {
            config,
            state: State::Fresh,
            hello: None,
            chunk: None,
            errors: 0,
        }
    }

    /// The 220 greeting (RFC 5321 §4.3.1).
    pub(crate) fn greeting(&self) -> Reply {
        Reply::new(
            220,
            "",
            format!("{} ESMTP mboxd Service ready", self.config.hostname),
        )
    }

    /// True once EHLO was used: replies then carry enhanced status codes (RFC 2034).
    pub(crate) fn enhanced(&self) -> bool {
        self.hello.as_ref().is_some_and(|h| h.extended)
    }

    /// True while message text is being read, after DATA or inside a BDAT chunk.
    pub(crate) fn in_data(&self) -> bool {
        matches!(self.state, State::Data(..)) || self.chunk.is_some()
    }

    /// The bytes of the current BDAT chunk still to be read raw with
    /// [`Session::feed_chunk`], if one is being read.
    pub(crate) fn chunk_remaining(&self) -> Option<u64> {
        self.chunk.as_ref().map(|c| c.remaining)
    }

    /// Feeds raw bytes of the current BDAT chunk, at most [`Session::chunk_remaining`] of them.
    pub(crate) fn feed_chunk(&mut self, bytes: &[u8]) -> Action {
        let Some(chunk) = &mut self.chunk else {
            return Action::Continue;
        };
        let n = bytes
            .len()
            .min(usize::try_from(chunk.remaining).unwrap_or(usize::MAX));
        chunk.remaining -= n as u64;
        if chunk.refusal.is_none()
            && let State::Chunking(_, body) = &mut self.state
        {
            if (body.len() + n) as u64 > self.config.max_message_size {
                // RFC 3030 §2 and RFC 1870: over the limit, the transaction fails; the rest
                // of the chunk is still read.
                chunk.refusal = Some(reply::MESSAGE_TOO_BIG);
                self.state = State::Ready;
            } else {
                body.extend_from_slice(&bytes[..n]);
            }
        }
        if chunk.remaining == 0 {
            self.end_of_chunk()
        } else {
            Action::Continue
        }
    }

    /// The current state, for tests and logs.
    #[cfg(test)]
    pub(crate) fn state(&self) -> &State {
        &self.state
    }

    /// Feeds one input line with its line ending. Inside DATA a piece may also be a line cut
    /// short by the reader's limit.
    pub(crate) fn feed(&mut self, line: &[u8]) -> Action {
        if let State::Data(_, decoder) = &mut self.state {
            if decoder.push(line) == DataStatus::Partial {
                return Action::Continue;
            }
            return self.end_of_data();
        }
        // RFC 5321 §2.3.8: only CRLF ends a command line.
        let Some(text) = line.strip_suffix(b"\r\n") else {
            return self.refuse(reply::BARE_LF);
        };
        match command::parse(text) {
            Ok(cmd) => self.transition(cmd),
            Err(ParseError::Unrecognized) => self.refuse(reply::UNKNOWN_COMMAND),
            Err(ParseError::Syntax(why)) => {
                self.refuse(Reply::new(501, "5.5.4", format!("Syntax error: {why}")))
            }
        }
    }

    /// A command line longer than the limit of RFC 5321 §4.5.3.1.4 was read and discarded.
    pub(crate) fn line_too_long(&mut self) -> Action {
        self.refuse(reply::LINE_TOO_LONG)
    }

    fn refuse(&mut self, reply: Reply) -> Action {
        self.errors += 1;
        if self.errors >= self.config.max_errors {
            self.state = State::Closed;
            return Action::Close(reply::TOO_MANY_ERRORS);
        }
        Action::Reply(reply)
    }

    fn answer(&mut self, reply: Reply) -> Action {
        if reply.is_error() {
            self.refuse(reply)
        } else {
            Action::Reply(reply)
        }
    }

    /// The transition function: every command in every state.
    fn transition(&mut self, cmd: Command) -> Action {
        match cmd {
            Command::Helo(name) => self.hello(name, false),
            Command::Ehlo(name) => self.hello(name, true),
            Command::Mail { verb, from, params } => {
                let reply = self.mail(verb, from, params);
                self.answer(reply)
            }
            Command::Rcpt { to, params } => {
                let reply = self.rcpt(to, params);
                self.answer(reply)
            }
            Command::Data => {
                let reply = self.data();
                self.answer(reply)
            }
            Command::Bdat { size, last } => self.bdat(size, last),
            Command::Rset => {
                // RFC 5321 §4.1.1.5: RSET clears the transaction, not the HELO.
                self.state = if self.hello.is_some() {
                    State::Ready
                } else {
                    State::Fresh
                };
                Action::Reply(reply::OK_RESET)
            }
            Command::Vrfy(arg) => {
                let reply = self.config.directory.vrfy(&arg);
                self.answer(reply)
            }
            Command::Expn(arg) => {
                let reply = self.config.directory.expn(&arg);
                self.answer(reply)
            }
            Command::Help(topic) => {
                let reply = help(topic.as_deref());
                self.answer(reply)
            }
            Command::Noop => Action::Reply(reply::OK_NOOP),
            Command::Quit => {
                self.state = State::Closed;
                Action::Close(Reply::new(
                    221,
                    "2.0.0",
                    format!(
                        "{} Service closing transmission channel",
                        self.config.hostname
                    ),
                ))
            }
            Command::Turn => self.refuse(reply::NO_TURN),
        }
    }

    fn hello(&mut self, name: String, extended: bool) -> Action {
        // RFC 5321 §4.1.4: a HELO or EHLO in a session resets any transaction, like RSET.
        self.state = State::Ready;
        let greeting = format!("{} Hello {}", self.config.hostname, name);
        self.hello = Some(Hello { name, extended });
        if !extended {
            return Action::Reply(Reply::new(250, "", greeting));
        }
        // RFC 5321 §4.1.1.1: the EHLO reply lists the extensions, one per line.
        let extensions = [
            greeting,
            "PIPELINING".to_string(),
            format!("SIZE {}", self.config.max_message_size),
            "8BITMIME".to_string(),
            "ENHANCEDSTATUSCODES".to_string(),
            "SMTPUTF8".to_string(),
            "CHUNKING".to_string(),
            "HELP".to_string(),
        ];
        Action::Reply(Reply::new(250, "", extensions.join("\n")))
    }

    fn mail(&mut self, verb: MailVerb, from: Option<Address>, params: Vec<Param>) -> Reply {
        if verb == MailVerb::Send {
            return reply::NO_SEND;
        }
        let Some(hello) = &self.hello else {
            return reply::BAD_SEQUENCE_HELO;
        };
        if !matches!(self.state, State::Ready) {
            return reply::BAD_SEQUENCE_NESTED;
        }
        let mut utf8 = false;
        for param in &params {
            if !hello.extended {
                // After HELO no service extension exists (RFC 5321 §4.1.1.1).
                return param_not_recognized(param);
            }
            match (param.key.as_str(), param.value.as_deref()) {
                ("SIZE", Some(v)) => match v.parse::<u64>() {
                    // RFC 1870 §6.2: a declared size over the limit is refused at once.
                    Ok(n) if n > self.config.max_message_size => return reply::MESSAGE_TOO_BIG,
                    Ok(_) => {}
                    Err(_) => return bad_value(param),
                },
                // RFC 6152: both bodies are stored byte for byte. BINARYMIME is not offered:
                // mbox cannot keep a binary body exactly.
                ("BODY", Some(v))
                    if v.eq_ignore_ascii_case("7BIT") || v.eq_ignore_ascii_case("8BITMIME") => {}
                ("SMTPUTF8", None) => utf8 = true,
                ("BODY" | "SIZE" | "SMTPUTF8", _) => return bad_value(param),
                _ => return param_not_recognized(param),
            }
        }
        if let Some(addr) = &from {
            if addr.local.chars().any(char::is_control) {
                return reply::NAME_NOT_ALLOWED;
            }
            if !utf8 && !addr.to_string().is_ascii() {
                return reply::NEEDS_SMTPUTF8;
            }
        }
        // SOML and SAML deliver to the mailbox: no user is ever at a terminal here (RFC 821
        // §4.1.1 lets SOML fall back to the mailbox; SAML's mailbox half is all there is).
        self.state = State::Mail(Transaction {
            from,
            utf8,
            ..Transaction::default()
        });
        reply::OK_SENDER
    }

    fn rcpt(&mut self, to: Address, params: Vec<Param>) -> Reply {
        if self.hello.is_none() {
            return reply::BAD_SEQUENCE_HELO;
        }
        let State::Mail(tx) = &mut self.state else {
            return reply::BAD_SEQUENCE_MAIL;
        };
        if let Some(param) = params.first() {
            // DSN (RFC 3461) is not offered, so NOTIFY and ORCPT are unknown here.
            return param_not_recognized(param);
        }
        if !tx.utf8 && !to.to_string().is_ascii() {
            return reply::NEEDS_SMTPUTF8;
        }
        if tx.recipients.len() >= self.config.max_recipients {
            // RFC 5321 §4.5.3.1.10: too many recipients is a temporary 452.
            return reply::TOO_MANY_RECIPIENTS;
        }
        match self.config.directory.route(&to) {
            Ok(route) => {
                tx.recipients.push(Recipient {
                    address: to.to_string(),
                    mailboxes: route.mailboxes,
                });
                route.reply
            }
            Err(reply) => {
                tx.rejected += 1;
                reply
            }
        }
    }

    fn data(&mut self) -> Reply {
        if self.hello.is_none() {
            return reply::BAD_SEQUENCE_HELO;
        }
        if matches!(self.state, State::Chunking(..)) {
            // RFC 3030 §2: BDAT and DATA cannot be mixed in one transaction.
            return reply::BAD_SEQUENCE_MIXED;
        }
        if let Some(refusal) = self.not_ready_for_message() {
            return refusal;
        }
        let State::Mail(tx) = std::mem::replace(&mut self.state, State::Closed) else {
            return reply::LOCAL_ERROR;
        };
        self.state = State::Data(tx, DataDecoder::new(self.config.max_message_size));
        reply::START_DATA
    }

    /// Why the message text cannot start now, if it cannot.
    fn not_ready_for_message(&self) -> Option<Reply> {
        match &self.state {
            State::Mail(tx) if !tx.recipients.is_empty() => None,
            // RFC 5321 §3.3: no valid recipient after some were tried is 554; none tried at all
            // is a bad sequence.
            State::Mail(tx) if tx.rejected > 0 => Some(reply::NO_VALID_RECIPIENTS),
            State::Mail(_) => Some(reply::BAD_SEQUENCE_RCPT),
            _ => Some(reply::BAD_SEQUENCE_MAIL),
        }
    }

    /// BDAT: the chunk's bytes are always read, even when the command is refused (RFC 3030 §2).
    fn bdat(&mut self, size: u64, last: bool) -> Action {
        let refusal = match (&self.hello, &self.state) {
            (None, _) => Some(reply::BAD_SEQUENCE_HELO),
            (Some(h), _) if !h.extended => Some(reply::BAD_SEQUENCE_EHLO),
            (_, State::Chunking(..)) => None,
            _ => self.not_ready_for_message(),
        };
        if refusal.is_none()
            && matches!(self.state, State::Mail(_))
            && let State::Mail(tx) = std::mem::replace(&mut self.state, State::Closed)
        {
            self.state = State::Chunking(tx, Vec::new());
        }
        self.chunk = Some(Chunk {
            remaining: size,
            last,
            size,
            refusal,
        });
        if size == 0 {
            self.end_of_chunk()
        } else {
            Action::Continue
        }
    }

    fn end_of_chunk(&mut self) -> Action {
        let Some(chunk) = self.chunk.take() else {
            return Action::Continue;
        };
        if let Some(refusal) = chunk.refusal {
            return self.refuse(refusal);
        }
        if !chunk.last {
            return Action::Reply(Reply::new(
                250,
                "2.0.0",
                format!("{} octets received", chunk.size),
            ));
        }
        match std::mem::replace(&mut self.state, State::Ready) {
            State::Chunking(tx, message) => self.envelope(tx, message),
            _ => Action::Reply(reply::LOCAL_ERROR),
        }
    }

    fn end_of_data(&mut self) -> Action {
        let State::Data(tx, decoder) = std::mem::replace(&mut self.state, State::Ready) else {
            return Action::Reply(reply::LOCAL_ERROR);
        };
        let Ok(message) = decoder.finish() else {
            return self.refuse(reply::MESSAGE_TOO_BIG);
        };
        self.envelope(tx, message)
    }

    fn envelope(&self, tx: Transaction, message: Vec<u8>) -> Action {
        let mut recipients: Vec<(String, String)> = Vec::new();
        for rcpt in tx.recipients {
            for mailbox in rcpt.mailboxes {
                if !recipients.iter().any(|(m, _)| *m == mailbox) {
                    recipients.push((mailbox, rcpt.address.clone()));
                }
            }
        }
        let (helo, protocol) = match &self.hello {
            Some(h) if tx.utf8 => (h.name.clone(), "UTF8SMTP"),
            Some(h) if h.extended => (h.name.clone(), "ESMTP"),
            Some(h) => (h.name.clone(), "SMTP"),
            None => (String::new(), "SMTP"),
        };
        Action::Deliver(Envelope {
            sender: tx.from.map(|a| a.to_string()),
            recipients,
            message,
            helo,
            protocol,
        })
    }
}

/// RFC 5321 §4.1.1.11: a parameter the server does not recognise is 555.
fn param_not_recognized(param: &Param) -> Reply {
    Reply::new(
        555,
        "5.5.4",
        format!("Parameter {} not recognized", param.key),
    )
}

/// A known parameter with a value it cannot take is a syntax error in the arguments.
fn bad_value(param: &Param) -> Reply {
    Reply::new(
        501,
        "5.5.4",
        format!("Syntax error: bad value for {}", param.key),
    )
}

/// The commands, with their usage, for HELP.
const HELP_TOPICS: &[(&str, &str)] = &[
    ("HELO", "HELO <domain>: introduce yourself"),
    (
        "EHLO",
        "EHLO <domain>: introduce yourself and list the extensions",
    ),
    (
        "MAIL",
        "MAIL FROM:<sender> [SIZE=n] [BODY=7BIT|8BITMIME] [SMTPUTF8]: start a mail transaction",
    ),
    ("RCPT", "RCPT TO:<recipient>: add a recipient"),
    (
        "DATA",
        "DATA: send the message, ended by a line holding only \".\"",
    ),
    (
        "BDAT",
        "BDAT <size> [LAST]: send the next <size> octets of the message",
    ),
    ("RSET", "RSET: abort the current mail transaction"),
    ("VRFY", "VRFY <user>: verify a user name"),
    ("EXPN", "EXPN <list>: expand a mailing list"),
    ("HELP", "HELP [command]: show help"),
    ("NOOP", "NOOP: do nothing"),
    ("QUIT", "QUIT: close the connection"),
    (
        "SOML",
        "SOML FROM:<sender>: as MAIL (no user is at a terminal here)",
    ),
    (
        "SAML",
        "SAML FROM:<sender>: as MAIL (no user is at a terminal here)",
    ),
    ("SEND", "SEND FROM:<sender>: not implemented, use MAIL"),
    (
        "TURN",
        "TURN: not implemented, it is unsafe without authentication",
    ),
];

/// RFC 5321 §4.1.1.8: HELP alone is the system help reply (211), HELP with a command its usage (214).
fn help(topic: Option<&str>) -> Reply {
    match topic {
        None => {
            let names: Vec<&str> = HELP_TOPICS.iter().map(|(name, _)| *name).collect();
            Reply::new(
                211,
                "2.0.0",
                format!(
                    "mboxd commands:\n{}\nHELP <command> for usage",
                    names.join(" ")
                ),
            )
        }
        Some(topic) => HELP_TOPICS
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(topic.trim()))
            .map_or(reply::UNKNOWN_HELP_TOPIC, |(_, usage)| {
                Reply::new(214, "2.0.0", *usage)
            }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn session(users: Option<&[&str]>) -> Session {
        let users: Option<BTreeSet<String>> =
            users.map(|u| u.iter().map(|s| s.to_string()).collect());
        let directory = Directory::new(
            "BBN-UNIX.ARPA",
            &["bbn-unix.arpa".into()],
            users.as_ref(),
            &[("fwd".into(), vec!["x@elsewhere.example".into()])],
        );
        Session::new(Arc::new(SessionConfig {
            hostname: "BBN-UNIX.ARPA".into(),
            max_message_size: 100,
            max_recipients: 3,
            max_errors: 10,
            directory,
        }))
    }

    fn code(action: &Action) -> u16 {
        match action {
            Action::Reply(r) | Action::Close(r) => r.code,
            Action::Continue => 0,
            Action::Deliver(_) => 1,
        }
    }

    fn codes(s: &mut Session, lines: &[&[u8]]) -> Vec<u16> {
        lines.iter().map(|l| code(&s.feed(l))).collect()
    }

    #[test]
    fn rfc_821_conversation() {
        let mut s = session(Some(&["jones", "brown"]));
        assert_eq!(s.greeting().code, 220);
        assert_eq!(
            codes(
                &mut s,
                &[
                    b"HELO USC-ISIF.ARPA\r\n",
                    b"MAIL FROM:<Smith@USC-ISIF.ARPA>\r\n",
                    b"RCPT TO:<Jones@BBN-UNIX.ARPA>\r\n",
                    b"RCPT TO:<Green@BBN-UNIX.ARPA>\r\n",
                    b"RCPT TO:<Brown@BBN-UNIX.ARPA>\r\n",
                    b"DATA\r\n",
                    b"Blah blah blah...\r\n",
                    b"...etc. etc. etc.\r\n",
                ]
            ),
            [250, 250, 250, 550, 250, 354, 0, 0]
        );
        let Action::Deliver(env) = s.feed(b".\r\n") else {
            panic!("no delivery")
        };
        assert_eq!(env.sender.as_deref(), Some("Smith@USC-ISIF.ARPA"));
        assert_eq!(
            env.recipients,
            [
                ("jones".to_string(), "Jones@BBN-UNIX.ARPA".to_string()),
                ("brown".to_string(), "Brown@BBN-UNIX.ARPA".to_string())
            ]
        );
        assert_eq!(env.message, b"Blah blah blah...\r\n..etc. etc. etc.\r\n");
        assert_eq!(env.protocol, "SMTP");
        assert!(matches!(s.state(), State::Ready));
        assert_eq!(
            s.feed(b"QUIT\r\n"),
            Action::Close(Reply::new(
                221,
                "2.0.0",
                "BBN-UNIX.ARPA Service closing transmission channel"
            ))
        );
    }

    #[test]
    fn bad_sequences_leave_state_unchanged() {
        let mut s = session(None);
        assert_eq!(
            codes(
                &mut s,
                &[
                    b"MAIL FROM:<a@b>\r\n",
                    b"RCPT TO:<a@bbn-unix.arpa>\r\n",
                    b"DATA\r\n"
                ]
            ),
            [503, 503, 503]
        );
        assert!(matches!(s.state(), State::Fresh));
        assert_eq!(
            codes(
                &mut s,
                &[
                    b"helo a.domain\r\n",
                    b"RCPT TO:<a@bbn-unix.arpa>\r\n",
                    b"DATA\r\n"
                ]
            ),
            [250, 503, 503]
        );
        assert!(matches!(s.state(), State::Ready));
        assert_eq!(
            codes(
                &mut s,
                &[b"MAIL FROM:<a@b>\r\n", b"DATA\r\n", b"MAIL FROM:<c@d>\r\n"]
            ),
            [250, 503, 503]
        );
        let State::Mail(tx) = s.state() else { panic!() };
        assert_eq!(tx.from.as_ref().map(|a| a.local.as_str()), Some("a"));
    }

    #[test]
    fn data_with_only_rejected_recipients_is_554() {
        let mut s = session(Some(&["jones"]));
        assert_eq!(
            codes(
                &mut s,
                &[
                    b"HELO x\r\n",
                    b"MAIL FROM:<>\r\n",
                    b"RCPT TO:<green@bbn-unix.arpa>\r\n",
                    b"DATA\r\n"
                ]
            ),
            [250, 250, 550, 554]
        );
        assert!(matches!(s.state(), State::Mail(_)));
    }

    #[test]
    fn rset_and_helo_reset_the_transaction() {
        let mut s = session(None);
        assert_eq!(
            codes(
                &mut s,
                &[
                    b"EHLO x\r\n",
                    b"MAIL FROM:<a@b>\r\n",
                    b"RSET\r\n",
                    b"RCPT TO:<a@bbn-unix.arpa>\r\n"
                ]
            ),
            [250, 250, 250, 503]
        );
        assert_eq!(
            codes(
                &mut s,
                &[
                    b"MAIL FROM:<a@b>\r\n",
                    b"HELO y\r\n",
                    b"RCPT TO:<a@bbn-unix.arpa>\r\n"
                ]
            ),
            [250, 250, 503]
        );
        assert!(!s.enhanced());
    }

    #[test]
    fn ehlo_lists_extensions_and_turns_on_enhanced_codes() {
        let mut s = session(None);
        let Action::Reply(r) = s.feed(b"EHLO client.example\r\n") else {
            panic!()
        };
        assert_eq!(
            r.text,
            "BBN-UNIX.ARPA Hello client.example\nPIPELINING\nSIZE 100\n8BITMIME\nENHANCEDSTATUSCODES\nSMTPUTF8\nCHUNKING\nHELP"
        );
        assert!(s.enhanced());
    }

    #[test]
    fn mail_parameters() {
        let mut s = session(None);
        assert_eq!(
            codes(&mut s, &[b"HELO x\r\n", b"MAIL FROM:<a@b> SIZE=10\r\n"]),
            [250, 555]
        );
        assert_eq!(
            codes(
                &mut s,
                &[
                    b"EHLO x\r\n",
                    b"MAIL FROM:<a@b> SIZE=101\r\n",
                    b"MAIL FROM:<a@b> SIZE=x\r\n",
                    b"MAIL FROM:<a@b> BODY=BINARY\r\n",
                    b"MAIL FROM:<a@b> FOO=1\r\n",
                    b"MAIL FROM:<a@b> SIZE=100 BODY=8bitmime\r\n",
                    b"RCPT TO:<a@bbn-unix.arpa> NOTIFY=NEVER\r\n",
                ]
            ),
            [250, 552, 501, 501, 555, 250, 555]
        );
    }

    #[test]
    fn soml_saml_send_turn() {
        let mut s = session(None);
        assert_eq!(
            codes(
                &mut s,
                &[
                    b"HELO x\r\n",
                    b"SEND FROM:<a@b>\r\n",
                    b"TURN\r\n",
                    b"SOML FROM:<a@b>\r\n",
                    b"RSET\r\n",
                    b"SAML FROM:<a@b>\r\n"
                ]
            ),
            [250, 502, 502, 250, 250, 250]
        );
    }

    #[test]
    fn recipients_limits_and_routing() {
        let mut s = session(None);
        assert_eq!(
            codes(
                &mut s,
                &[
                    b"HELO x\r\n",
                    b"MAIL FROM:<a@b>\r\n",
                    b"RCPT TO:<a@example.com>\r\n",
                    b"RCPT TO:<../etc@bbn-unix.arpa>\r\n",
                    b"RCPT TO:<fwd@bbn-unix.arpa>\r\n",
                    b"RCPT TO:<postmaster>\r\n",
                    b"RCPT TO:<b@bbn-unix.arpa>\r\n",
                    b"RCPT TO:<c@bbn-unix.arpa>\r\n",
                    b"RCPT TO:<d@bbn-unix.arpa>\r\n",
                ]
            ),
            [250, 250, 550, 553, 551, 250, 250, 250, 452]
        );
    }

    #[test]
    fn help_vrfy_expn_noop_work_before_helo() {
        let mut s = session(Some(&["jones"]));
        assert_eq!(
            codes(
                &mut s,
                &[
                    b"HELP\r\n",
                    b"HELP mail\r\n",
                    b"HELP frob\r\n",
                    b"VRFY jones\r\n",
                    b"VRFY green\r\n",
                    b"EXPN jones\r\n",
                    b"NOOP\r\n"
                ]
            ),
            [211, 214, 504, 250, 550, 550, 250]
        );
    }

    #[test]
    fn syntax_errors_and_line_endings() {
        let mut s = session(None);
        assert_eq!(
            codes(&mut s, &[b"FROB\r\n", b"HELO\r\n", b"HELO x\n", b"\r\n"]),
            [500, 501, 500, 500]
        );
        assert_eq!(code(&s.line_too_long()), 500);
        assert!(matches!(s.state(), State::Fresh));
    }

    #[test]
    fn oversize_message_is_refused_after_its_end() {
        let mut s = session(None);
        codes(
            &mut s,
            &[
                b"HELO x\r\n",
                b"MAIL FROM:<a@b>\r\n",
                b"RCPT TO:<a@bbn-unix.arpa>\r\n",
                b"DATA\r\n",
            ],
        );
        let long = [b'x'; 98];
        assert_eq!(code(&s.feed(&long)), 0);
        assert_eq!(code(&s.feed(b"\r\n")), 0);
        assert_eq!(code(&s.feed(b"more\r\n")), 0);
        assert_eq!(code(&s.feed(b".\r\n")), 552);
        assert!(matches!(s.state(), State::Ready));
    }

    #[test]
    fn too_many_errors_close_the_session() {
        let mut s = session(None);
        for _ in 0..9 {
            assert_eq!(code(&s.feed(b"FROB\r\n")), 500);
        }
        assert_eq!(s.feed(b"FROB\r\n"), Action::Close(reply::TOO_MANY_ERRORS));
    }

    #[test]
    fn smtputf8_is_needed_for_non_ascii_addresses() {
        let mut s = session(None);
        assert_eq!(
            codes(
                &mut s,
                &[
                    "EHLO x\r\n".as_bytes(),
                    "MAIL FROM:<jos\u{e9}@b.example>\r\n".as_bytes(),
                    b"MAIL FROM:<a@b> SMTPUTF8=yes\r\n",
                    b"MAIL FROM:<a@b>\r\n",
                    "RCPT TO:<j\u{f6}rg@bbn-unix.arpa>\r\n".as_bytes(),
                    b"RSET\r\n",
                    "MAIL FROM:<jos\u{e9}@b.example> SMTPUTF8\r\n".as_bytes(),
                    "RCPT TO:<J\u{d6}RG@bbn-unix.arpa>\r\n".as_bytes(),
                    b"DATA\r\n",
                ]
            ),
            [250, 553, 501, 250, 553, 250, 250, 250, 354]
        );
        let Action::Deliver(env) = s.feed(b".\r\n") else {
            panic!("no delivery")
        };
        assert_eq!(env.recipients[0].0, "j\u{f6}rg");
        assert_eq!(env.protocol, "UTF8SMTP");
    }

    fn chunk(s: &mut Session, bytes: &[u8]) -> Action {
        let mut last = Action::Continue;
        for piece in bytes.chunks(3) {
            assert!(s.chunk_remaining().is_some());
            last = s.feed_chunk(piece);
        }
        last
    }

    #[test]
    fn bdat_chunks_make_one_message() {
        let mut s = session(None);
        codes(
            &mut s,
            &[
                b"EHLO x\r\n",
                b"MAIL FROM:<a@b>\r\n",
                b"RCPT TO:<a@bbn-unix.arpa>\r\n",
            ],
        );
        assert_eq!(s.feed(b"BDAT 7\r\n"), Action::Continue);
        assert!(s.in_data());
        assert_eq!(code(&chunk(&mut s, b"line\r\n.")), 250);
        assert_eq!(s.chunk_remaining(), None);
        assert_eq!(code(&s.feed(b"DATA\r\n")), 503);
        assert_eq!(s.feed(b"BDAT 4 LAST\r\n"), Action::Continue);
        let Action::Deliver(env) = chunk(&mut s, b"\r\n\r\n") else {
            panic!("no delivery")
        };
        // No dot-stuffing in BDAT: the bytes are exactly what was counted.
        assert_eq!(env.message, b"line\r\n.\r\n\r\n");
        assert!(matches!(s.state(), State::Ready));
    }

    #[test]
    fn bdat_zero_last_and_refused_chunks_are_consumed() {
        let mut s = session(None);
        // Refused BDATs still consume their bytes, which never become commands.
        assert_eq!(s.feed(b"BDAT 6\r\n"), Action::Continue);
        assert_eq!(code(&chunk(&mut s, b"QUIT\r\n")), 503);
        codes(&mut s, &[b"HELO x\r\n"]);
        assert_eq!(s.feed(b"BDAT 1\r\n"), Action::Continue);
        assert_eq!(code(&chunk(&mut s, b"x")), 503);
        codes(&mut s, &[b"EHLO x\r\n", b"MAIL FROM:<a@b>\r\n"]);
        assert_eq!(s.feed(b"BDAT 1\r\n"), Action::Continue);
        assert_eq!(code(&chunk(&mut s, b"x")), 503);
        codes(&mut s, &[b"RCPT TO:<a@bbn-unix.arpa>\r\n"]);
        let Action::Deliver(env) = s.feed(b"BDAT 0 LAST\r\n") else {
            panic!("no delivery")
        };
        assert!(env.message.is_empty());
    }

    #[test]
    fn bdat_over_the_size_limit_is_552_and_ends_the_transaction() {
        let mut s = session(None);
        codes(
            &mut s,
            &[
                b"EHLO x\r\n",
                b"MAIL FROM:<a@b>\r\n",
                b"RCPT TO:<a@bbn-unix.arpa>\r\n",
            ],
        );
        assert_eq!(s.feed(b"BDAT 60\r\n"), Action::Continue);
        assert_eq!(code(&chunk(&mut s, &[b'x'; 60])), 250);
        assert_eq!(s.feed(b"BDAT 60 LAST\r\n"), Action::Continue);
        assert_eq!(code(&chunk(&mut s, &[b'y'; 60])), 552);
        assert!(matches!(s.state(), State::Ready));
        assert_eq!(s.feed(b"BDAT 2 LAST\r\n"), Action::Continue);
        assert_eq!(code(&chunk(&mut s, b"zz")), 503);
    }
}
