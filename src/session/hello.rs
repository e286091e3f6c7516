//! The introductions and endings of a session: HELO and EHLO (with the extension list), QUIT,
//! and the envelope: MAIL, RCPT and checking one recipient.
//!
//! It exists to keep `mod.rs` to the state machine itself: these are the helpers its one
//! transition function calls for those commands; they decide nothing about which command is
//! legal when.

use super::{Action, Hello, Recipient, Session, State, Transaction, params, user_of};
use crate::command::{self, Address};
use crate::escape::Escaped;
use crate::fail::{Fault, Stage};
use crate::reply::{self, MAX_REPLY_LINE, Reply, decimal};

/// The longest HELO/EHLO name repeated in the reply: a domain's 255 octets.
const MAX_ECHOED_NAME: usize = 255;

impl Session {
    /// The 221 to QUIT, and the end of the session.
    pub(super) fn quit(&self) -> (State, Action) {
        let text = format!(
            "{} Service closing transmission channel",
            self.config.hostname
        );
        (State::Closed, Action::Close(Reply::new(221, "2.0.0", text)))
    }

    pub(super) fn hello(&mut self, state: State, name: String, extended: bool) -> (State, Action) {
        if let Some(f) = self.fault(Stage::Helo, || vec![name.as_str()]) {
            return self.faulted(state, f);
        }
        // RSET, HELO and EHLO keep an authentication (RFC 4954 §4).
        let user = user_of(state);
        // RFC 5321 §4.1.1.1: the EHLO reply lists the extensions, one per line, and a keyword
        // for every command implemented that §4.5.1 does not require: HELP, EXPN, and SOML and
        // SAML (which act as MAIL here; SEND and TURN are not implemented). Built in one
        // String of the right size, with no `format!`: one allocation, and a shallower stack on
        // the path every session takes (`core::fmt` and a reallocation were the deepest frames
        // of an idle session; see `pool::WORKER_STACK`).
        const EXTENSIONS: [&str; 3] = [
            "\nPIPELINING\nSIZE ",
            "\n8BITMIME\nENHANCEDSTATUSCODES\nSMTPUTF8\nCHUNKING\nHELP\nEXPN\nSOML\nSAML",
            // RFC 4954 §3, for tests only: without TLS the password crosses in the clear.
            "\nAUTH PLAIN LOGIN",
        ];
        let hostname = &self.config.hostname;
        let mut text = String::with_capacity(
            hostname.len()
                + name.len()
                + 7
                + EXTENSIONS.iter().map(|e| e.len() + 20).sum::<usize>(),
        );
        text.push_str(hostname);
        // The client's name is echoed only as a domain can be: ASCII (RFC 6531 §3.7.4.2: no
        // UTF-8 in replies) and at most 255 octets (RFC 1035 §2.3.4), and only if the line
        // `250-<host> Hello <name>` with its CRLF keeps to RFC 5321 §4.5.3.1.5's 512. Any
        // other name is taken, but not repeated.
        let line = "250-".len() + hostname.len() + " Hello ".len() + name.len() + "\r\n".len();
        if name.is_ascii() && name.len() <= MAX_ECHOED_NAME && line <= MAX_REPLY_LINE {
            text.push_str(" Hello ");
            text.push_str(&name);
        } else {
            text.push_str(" Hello");
        }
        if extended {
            text.push_str(EXTENSIONS[0]);
            text.push_str(decimal(self.config.max_message_size, 1, &mut [0; 20]));
            text.push_str(EXTENSIONS[1]);
            if self.config.auth.accounts.enabled() {
                text.push_str(EXTENSIONS[2]);
            }
        }
        let hello = Hello {
            name,
            extended,
            user,
        };
        (State::Ready(hello), Action::Reply(Reply::plain(250, text)))
    }

    /// MAIL in the `Ready` state: a transaction opens, or the command is refused.
    // This and `recipient` are not inlined into the transition function, so their locals are not
    // in its frame below every command (see `pool::WORKER_STACK`).
    #[inline(never)]
    pub(super) fn mail(
        &mut self,
        h: Hello,
        from: Option<Address>,
        params: Vec<command::Param>,
    ) -> (State, Action) {
        let sender = || vec![from.as_ref().map(Address::to_string).unwrap_or_default()];
        match self.fault(Stage::Mail, sender) {
            Some(Fault::Refuse(r)) => {
                return self.refuse_logged(State::Ready(h), "MAIL", from.as_ref(), r);
            }
            Some(f) => return self.faulted(State::Ready(h), f),
            None => {}
        }
        let max = self.config.max_message_size;
        let auth = self.config.auth.accounts.enabled();
        match params::mail(h.extended, auth, max, from.as_ref(), &params) {
            Ok(p) => {
                let tx = Box::new(Transaction {
                    from,
                    recipients: Vec::new(),
                    rejected: 0,
                    deferred: 0,
                    utf8: p.utf8,
                });
                (State::Mail(h, tx), Action::Reply(reply::OK_SENDER))
            }
            Err(r) => self.refuse_logged(State::Ready(h), "MAIL", from.as_ref(), r),
        }
    }

    /// RCPT in the `Mail` state: the recipient is added, or refused.
    #[inline(never)]
    pub(super) fn recipient(
        &mut self,
        h: Hello,
        mut tx: Box<Transaction>,
        to: Address,
        params: Vec<command::Param>,
    ) -> (State, Action) {
        let result = match self.fault(Stage::Rcpt, || vec![to.to_string()]) {
            Some(Fault::Refuse(r)) => Err(r),
            Some(f) => return self.faulted(State::Mail(h, tx), f),
            None => self.rcpt(&mut tx, &to, &params),
        };
        match result {
            Ok(r) => (State::Mail(h, tx), Action::Reply(r)),
            Err(r) => {
                tx.rejected += 1;
                if r.code == 452 {
                    tx.deferred += 1;
                    if tx.deferred > 1 {
                        // Not logged: a log line per RCPT past the limit would let a client
                        // write the log without bound (see `refuse_logged`).
                        return (State::Mail(h, tx), Action::Reply(r));
                    }
                }
                self.refuse_logged(State::Mail(h, tx), "RCPT", Some(&to), r)
            }
        }
    }

    /// [`Session::refuse`] for MAIL and RCPT, with a log line naming the address. A RCPT's 452
    /// (too many recipients or mailboxes, or a `--fail` rule's) is not counted toward
    /// `max_errors`: RFC 5321 §4.5.3.1.10 expects a client to send more recipients than a server
    /// takes, deliver to those accepted, and send the rest later. Hence only a transaction's
    /// first 452 comes here to be logged (the RCPT handler answers the others unlogged).
    pub(super) fn refuse_logged(
        &mut self,
        state: State,
        verb: &str,
        address: Option<&Address>,
        r: Reply,
    ) -> (State, Action) {
        let address = address.map(Address::to_string).unwrap_or_default();
        log::info!(
            "{}: {verb} <{}> refused: {}",
            self.label,
            Escaped(&address),
            r.code_text()
        );
        if verb == "RCPT" && r.code == 452 {
            return (state, Action::Reply(r));
        }
        self.refuse(state, r)
    }

    /// Checks a recipient and adds it to `tx`; the RCPT reply, or the refusal.
    pub(super) fn rcpt(
        &self,
        tx: &mut Transaction,
        to: &Address,
        params: &[command::Param],
    ) -> Result<Reply, Reply> {
        params::rcpt(tx.utf8, to, params)?;
        if tx.recipients.len() >= self.config.max_recipients {
            // RFC 5321 §4.5.3.1.10: too many recipients is a temporary 452.
            return Err(reply::TOO_MANY_RECIPIENTS);
        }
        let route = self
            .config
            .directory
            .route(to)
            .map_err(|r| ascii(r, tx.utf8))?;
        tx.recipients.push(Recipient {
            address: to.to_string(),
            qualified: to.qualified(self.config.home_for(tx.utf8)),
            mailboxes: route.mailboxes,
        });
        Ok(ascii(route.reply, tx.utf8))
    }
}

/// RFC 6531 §3.7.4.1: a server "MUST NOT return a 251 or 551 response containing a non-ASCII
/// mailbox" to a transaction without SMTPUTF8; it turns them into 250 and 550, which name no
/// mailbox. Every other reply passes unchanged.
fn ascii(reply: Reply, utf8: bool) -> Reply {
    match reply.code {
        _ if utf8 || reply.text.is_ascii() => reply,
        251 => reply::OK_RECIPIENT,
        551 => Reply::new(550, "5.1.6", "User not local"),
        _ => reply,
    }
}
