//! The HELP command's text: one usage line per command this server knows.
//!
//! It exists apart from the state machine because it is data, not protocol: RFC 5321 §4.1.1.8
//! defines HELP, and §4.3.2 gives its replies: 211 (system help) or 214 (help on a command).

use crate::reply::{self, Reply};

/// The commands, with their usage, for HELP.
const HELP_TOPICS: &[(&str, &str)] = &[
    ("HELO", "HELO <domain>: introduce yourself"),
    (
        "EHLO",
        "EHLO <domain>: introduce yourself and list the extensions",
    ),
    (
        "MAIL",
        "MAIL FROM:<sender> [SIZE=n] [BODY=7BIT|8BITMIME] [SMTPUTF8] [AUTH=xtext]: start a mail transaction (AUTH= while AUTH is offered)",
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
    ("VRFY", "VRFY <user> [SMTPUTF8]: verify a user name"),
    ("EXPN", "EXPN <list> [SMTPUTF8]: expand a mailing list"),
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
    (
        "AUTH",
        "AUTH PLAIN|LOGIN [initial-response]: authenticate, where the server offers AUTH",
    ),
    ("SEND", "SEND FROM:<sender>: not implemented, use MAIL"),
    (
        "TURN",
        "TURN: not implemented, it is unsafe without authentication",
    ),
];

/// RFC 5321 §4.1.1.8 and §4.3.2: HELP alone is the system help reply (211), HELP with a command its usage
/// (214), and an unknown topic 504.
pub(crate) fn help(topic: Option<&str>) -> Reply {
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
