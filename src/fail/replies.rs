//! The enhanced status code (RFC 3463) and default text of each reply code a `--fail` rule can
//! give, by stage.
//!
//! It exists so that a failure made on purpose looks like the real one: a client that reads the
//! enhanced code after EHLO (RFC 2034) sees the one a real server would send for that code at
//! that stage. It covers every failure code of RFC 5321 §4.2.3 (and 521 of RFC 7504); any other
//! 4xx or 5xx gets the class's "other or undefined" code, `4.0.0` or `5.0.0`.

use super::Stage;

/// The enhanced status code and default text for `code` at `stage`.
///
/// | code | stage | enhanced | meaning (RFC 3463) |
/// |---|---|---|---|
/// | 421 | any | 4.3.2 | system not accepting network messages |
/// | 450 | any | 4.2.1 | mailbox disabled, not accepting messages |
/// | 451 | any | 4.3.0 | other or undefined mail system status |
/// | 452 | rcpt | 4.5.3 | too many recipients (RFC 5321 §4.5.3.1.10) |
/// | 452 | other | 4.3.1 | mail system full |
/// | 455 | any | 4.5.4 | invalid command arguments |
/// | 500 | any | 5.5.1 | invalid command |
/// | 501 | any | 5.5.4 | invalid command arguments |
/// | 502, 503 | any | 5.5.1 | invalid command |
/// | 504 | any | 5.5.4 | invalid command arguments |
/// | 521 | any | 5.3.2 | system not accepting network messages (RFC 7504) |
/// | 550 | rcpt | 5.1.1 | bad destination mailbox address |
/// | 550 | other | 5.7.1 | delivery not authorized, message refused |
/// | 551 | any | 5.1.6 | destination mailbox has moved |
/// | 552 | rcpt | 5.2.2 | mailbox full |
/// | 552 | other | 5.3.4 | message too big for system |
/// | 553 | mail | 5.1.7 | bad sender's mailbox address syntax |
/// | 553 | other | 5.1.3 | bad destination mailbox address syntax |
/// | 554 | any | 5.3.0 | other or undefined mail system status |
/// | 555 | any | 5.5.4 | invalid command arguments |
/// | other 4xx / 5xx | any | 4.0.0 / 5.0.0 | other undefined status |
pub(crate) fn default_reply(code: u16, stage: Stage) -> (&'static str, &'static str) {
    use Stage::{Connect, Mail, Rcpt};
    match (code, stage) {
        (421, _) => (
            "4.3.2",
            "Service not available, closing transmission channel",
        ),
        (450, _) => (
            "4.2.1",
            "Requested mail action not taken: mailbox unavailable",
        ),
        (451, _) => (
            "4.3.0",
            "Requested action aborted: local error in processing",
        ),
        (452, Rcpt) => ("4.5.3", "Too many recipients"),
        (452, _) => (
            "4.3.1",
            "Requested action not taken: insufficient system storage",
        ),
        (455, _) => ("4.5.4", "Server unable to accommodate parameters"),
        (500, _) => ("5.5.1", "Syntax error, command unrecognized"),
        (501, _) => ("5.5.4", "Syntax error in parameters or arguments"),
        (502, _) => ("5.5.1", "Command not implemented"),
        (503, _) => ("5.5.1", "Bad sequence of commands"),
        (504, _) => ("5.5.4", "Command parameter not implemented"),
        (521, _) => ("5.3.2", "Host does not accept mail"),
        (550, Rcpt) => ("5.1.1", "Requested action not taken: mailbox unavailable"),
        (550, _) => ("5.7.1", "Requested action not taken: refused"),
        (551, _) => ("5.1.6", "User not local"),
        (552, Rcpt) => ("5.2.2", "Requested mail action aborted: mailbox full"),
        (552, _) => (
            "5.3.4",
            "Requested mail action aborted: exceeded storage allocation",
        ),
        (553, Mail) => (
            "5.1.7",
            "Requested action not taken: mailbox name not allowed",
        ),
        (553, _) => (
            "5.1.3",
            "Requested action not taken: mailbox name not allowed",
        ),
        // RFC 5321 §3.1: 554 instead of the greeting.
        (554, Connect) => ("5.3.0", "No SMTP service here"),
        (554, _) => ("5.3.0", "Transaction failed"),
        (555, _) => (
            "5.5.4",
            "MAIL FROM/RCPT TO parameters not recognized or not implemented",
        ),
        (400..=499, _) => ("4.0.0", "Requested action not taken"),
        _ => ("5.0.0", "Requested action not taken"),
    }
}
