//! The introductions and endings of a session: HELO and EHLO (with the extension list), QUIT,
//! and checking one RCPT.
//!
//! It exists to keep `mod.rs` to the state machine itself: these are the helpers its one
//! transition function calls for those commands; they decide nothing about which command is
//! legal when.

use super::{Action, Hello, Recipient, Session, State, Transaction, params, user_of};
use crate::command::{self, Address};
use crate::fail::Stage;
use crate::reply::{self, Reply};

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
        if let Some(f) = self.fault(Stage::Helo, &[&name]) {
            return self.faulted(state, f);
        }
        // RSET, HELO and EHLO keep an authentication (RFC 4954 §4).
        let user = user_of(state);
        let greeting = format!("{} Hello {}", self.config.hostname, name);
        let hello = Hello {
            name,
            extended,
            user,
        };
        if !extended {
            return (
                State::Ready(hello),
                Action::Reply(Reply::plain(250, greeting)),
            );
        }
        // RFC 5321 §4.1.1.1: the EHLO reply lists the extensions, one per line. Built in one
        // String (no list of Strings to join): fewer allocations, and a shallower stack on the
        // path every session takes (see `pool::WORKER_STACK`).
        let mut text = greeting;
        text.push_str("\nPIPELINING\nSIZE ");
        text.push_str(&self.config.max_message_size.to_string());
        text.push_str("\n8BITMIME\nENHANCEDSTATUSCODES\nSMTPUTF8\nCHUNKING\nHELP");
        if self.config.auth.accounts.enabled() {
            // RFC 4954 §3, for tests only: without TLS the password crosses in the clear.
            text.push_str("\nAUTH PLAIN LOGIN");
        }
        (State::Ready(hello), Action::Reply(Reply::plain(250, text)))
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
        let route = self.config.directory.route(to)?;
        tx.recipients.push(Recipient {
            address: to.to_string(),
            mailboxes: route.mailboxes,
        });
        Ok(route.reply)
    }
}
