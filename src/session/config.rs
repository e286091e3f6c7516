//! The limits and names every session of a server shares, kept apart from the session's state
//! machine (`mod.rs`) because the server builds them once from its configuration and hands
//! them to every session, and because tests and fuzz targets build their own.

use std::sync::Arc;

use super::Policy;
use crate::budget::Budget;
use crate::config::BareNewline;
use crate::directory::Directory;
use crate::fail::Faults;

/// The limits and names a session needs, shared by all sessions of a server.
#[derive(Debug)]
pub(crate) struct SessionConfig {
    /// This server's name, in the greeting and the trace headers.
    pub hostname: String,
    /// Largest message accepted, in octets (RFC 1870).
    pub max_message_size: u64,
    /// Most recipients in one transaction (RFC 5321 §4.5.3.1.8 requires at least 100).
    pub max_recipients: usize,
    /// Rejected commands before the session is closed with 421 (a RCPT's 452 not counted).
    pub max_errors: usize,
    /// Local domains, users and aliases.
    pub directory: Directory,
    /// The server-wide budget for message bytes in flight; a message that cannot reserve from
    /// it is refused with `452 4.3.1`.
    pub budget: Arc<Budget>,
    /// What a bare CR or LF inside a message does.
    pub bare_newline: BareNewline,
    /// Whether AUTH is offered, whom it accepts, and whether MAIL needs it.
    pub auth: Policy,
    /// The `--fail` rules, consulted at each stage.
    pub faults: Faults,
}

impl SessionConfig {
    /// The domain an address given without one is written with in the headers (see
    /// `Address::qualified`): the first local domain, or, when that is not ASCII and the
    /// message is not SMTPUTF8 (whose header may not hold UTF-8, RFC 6532 §3), the first local
    /// domain that is ASCII, and the host name (always ASCII) only if none is.
    pub(crate) fn home_for(&self, utf8: bool) -> &str {
        match self.directory.home() {
            home if utf8 || home.is_ascii() => home,
            _ => self.directory.ascii_home().unwrap_or(&self.hostname),
        }
    }
}

#[cfg(any(test, fuzzing, feature = "fuzzing"))]
impl SessionConfig {
    /// A configuration for unit tests and fuzzing, named `hostname`: a 1000-octet message
    /// limit, 5 recipients, 50 errors, no budget, bare newlines normalised, no AUTH and no
    /// failure rules. Callers change what they test with struct update syntax, so a new field
    /// is added here once.
    pub(crate) fn for_tests(hostname: &str, directory: Directory) -> SessionConfig {
        SessionConfig {
            hostname: hostname.into(),
            max_message_size: 1000,
            max_recipients: 5,
            max_errors: 50,
            directory,
            budget: Budget::unlimited(),
            bare_newline: BareNewline::Normalize,
            auth: Policy::default(),
            faults: Faults::default(),
        }
    }
}
