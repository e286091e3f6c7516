//! Replies: the numbered answers a server sends, named once and written by one function.
//!
//! Every reply the server can send is either one of the named constants below or is built with
//! [`Reply::new`] or [`Reply::plain`] around a computed text. [`write_reply`] is the only code that turns a reply into
//! bytes: it owns the CRLF line ending, the `250-` continuation framing of multi-line replies
//! (RFC 5321 §4.2.1) and the enhanced status code prefix of RFC 2034.

use std::borrow::Cow;

/// RFC 5321 §4.5.3.1.5: a reply line is at most 512 octets, code and CRLF included.
pub(crate) const MAX_REPLY_LINE: usize = 512;

/// One SMTP reply: a three-digit code, an optional enhanced status code and its text.
///
/// A text containing `\n` is sent as a multi-line reply, one line per `\n`-separated part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The three-digit reply code (RFC 5321 §4.2).
    pub code: u16,
    /// The enhanced status code (`x.y.z`, RFC 3463), sent only after EHLO.
    pub enhanced: Option<&'static str>,
    /// The text; `\n` separates the lines of a multi-line reply.
    pub text: Cow<'static, str>,
}

impl Reply {
    /// A reply with a computed text and its enhanced status code (RFC 3463).
    pub(crate) fn new(
        code: u16,
        enhanced: &'static str,
        text: impl Into<Cow<'static, str>>,
    ) -> Self {
        Reply {
            code,
            enhanced: Some(enhanced),
            text: text.into(),
        }
    }

    /// A reply without an enhanced status code: the greeting, the HELO and EHLO replies, 354 and
    /// the AUTH exchange's 334 (RFC 2034 §3 gives them none).
    pub(crate) fn plain(code: u16, text: impl Into<Cow<'static, str>>) -> Self {
        Reply {
            code,
            enhanced: None,
            text: text.into(),
        }
    }

    const fn fixed(code: u16, enhanced: &'static str, text: &'static str) -> Self {
        Reply {
            code,
            enhanced: Some(enhanced),
            text: Cow::Borrowed(text),
        }
    }

    const fn fixed_plain(code: u16, text: &'static str) -> Self {
        Reply {
            code,
            enhanced: None,
            text: Cow::Borrowed(text),
        }
    }

    /// The code and enhanced code, as in `550 5.1.1`, for log lines.
    pub(crate) fn code_text(&self) -> String {
        match self.enhanced {
            Some(e) => format!("{} {e}", self.code),
            None => self.code.to_string(),
        }
    }

    /// True for 4xx and 5xx replies: the command was refused.
    pub(crate) fn is_error(&self) -> bool {
        self.code >= 400
    }
}

// 2xx: positive completion.
pub(crate) const OK_SENDER: Reply = Reply::fixed(250, "2.1.0", "Sender OK");
pub(crate) const OK_RECIPIENT: Reply = Reply::fixed(250, "2.1.5", "Recipient OK");
pub(crate) const OK_RESET: Reply = Reply::fixed(250, "2.0.0", "Reset OK");
pub(crate) const OK_NOOP: Reply = Reply::fixed(250, "2.0.0", "OK");
pub(crate) const CANNOT_VRFY: Reply = Reply::fixed(
    252,
    "2.5.2",
    "Cannot VRFY user, but will accept message and attempt delivery",
);
/// RFC 4954 §6: the AUTH exchange succeeded.
pub(crate) const AUTH_OK: Reply = Reply::fixed(235, "2.7.0", "Authentication successful");
// 3xx: positive intermediate.
pub(crate) const START_DATA: Reply =
    Reply::fixed_plain(354, "Start mail input; end with <CRLF>.<CRLF>");
// 4xx: transient failures.
pub(crate) const TIMEOUT: Reply = Reply::fixed(
    421,
    "4.4.2",
    "Timeout waiting for client input; closing connection",
);
pub(crate) const SHUTTING_DOWN: Reply = Reply::fixed(
    421,
    "4.3.2",
    "Service shutting down; closing transmission channel",
);
pub(crate) const TOO_BUSY: Reply = Reply::fixed(
    421,
    "4.3.2",
    "Too busy; try again later; closing transmission channel",
);
pub(crate) const TOO_MANY_FROM_PEER: Reply = Reply::fixed(
    421,
    "4.7.0",
    "Too many connections from your address; closing transmission channel",
);
pub(crate) const EVICTED: Reply = Reply::fixed(
    421,
    "4.3.2",
    "Busy; closing idle session to make room; closing transmission channel",
);
pub(crate) const TOO_SLOW: Reply = Reply::fixed(
    421,
    "4.4.2",
    "Message data arriving too slowly; closing connection",
);
pub(crate) const TOO_MANY_ERRORS: Reply = Reply::fixed(
    421,
    "4.7.0",
    "Too many errors; closing transmission channel",
);
pub(crate) const INTERNAL_ERROR: Reply =
    Reply::fixed(421, "4.3.0", "Internal error; closing transmission channel");
pub(crate) const MAILBOX_BUSY: Reply = Reply::fixed(
    450,
    "4.2.1",
    "Requested mail action not taken: mailbox busy; try again later",
);
pub(crate) const LOCAL_ERROR: Reply = Reply::fixed(
    451,
    "4.3.0",
    "Requested action aborted: local error in processing",
);
pub(crate) const TOO_MANY_RECIPIENTS: Reply = Reply::fixed(452, "4.5.3", "Too many recipients");
/// Catch-all mode holds `--max-mailboxes` mailboxes: a new name is refused for now. A 4yz reply
/// is transient, so the client tries again later (RFC 5321 §4.2.1); 452 is "insufficient system
/// storage" (§4.2.3) and RFC 3463's 4.3.1 "mail system full".
pub(crate) const TOO_MANY_MAILBOXES: Reply =
    Reply::fixed(452, "4.3.1", "Too many mailboxes here; try again later");
/// RFC 3463 X.2.2: the mailbox cannot grow (a file-size limit, `EFBIG`); RFC 5321 §4.2.5's 452.
pub(crate) const MAILBOX_FULL: Reply = Reply::fixed(452, "4.2.2", "Mailbox full");
pub(crate) const INSUFFICIENT_STORAGE: Reply = Reply::fixed(
    452,
    "4.3.1",
    "Requested action not taken: insufficient system storage",
);
// 5xx: permanent failures.
pub(crate) const UNKNOWN_COMMAND: Reply =
    Reply::fixed(500, "5.5.1", "Syntax error, command unrecognized");
/// A command line over its limit: a syntax error (RFC 3463 X.5.2).
pub(crate) const LINE_TOO_LONG: Reply = Reply::fixed(500, "5.5.2", "Line too long");
/// An AUTH response line over its limit, as RFC 4954 §6 words it (X.5.6 is registered for it).
pub(crate) const AUTH_LINE_TOO_LONG: Reply =
    Reply::fixed(500, "5.5.6", "Authentication Exchange line is too long");
pub(crate) const BARE_LF: Reply = Reply::fixed(
    500,
    "5.5.2",
    "Syntax error, command lines must end with <CRLF>",
);
pub(crate) const NO_SEND: Reply = Reply::fixed(
    502,
    "5.5.1",
    "SEND not implemented: no user is at a terminal here; use MAIL",
);
pub(crate) const NO_TURN: Reply = Reply::fixed(
    502,
    "5.5.1",
    "TURN not implemented: it is unsafe without authentication (RFC 5321 Appendix F.1)",
);
pub(crate) const BAD_SEQUENCE_HELO: Reply = Reply::fixed(
    503,
    "5.5.1",
    "Bad sequence of commands: send HELO or EHLO first",
);
pub(crate) const BAD_SEQUENCE_MAIL: Reply =
    Reply::fixed(503, "5.5.1", "Bad sequence of commands: send MAIL first");
pub(crate) const BAD_SEQUENCE_NESTED: Reply = Reply::fixed(
    503,
    "5.5.1",
    "Bad sequence of commands: sender already given",
);
pub(crate) const BAD_SEQUENCE_EHLO: Reply =
    Reply::fixed(503, "5.5.1", "Bad sequence of commands: BDAT needs EHLO");
pub(crate) const BAD_SEQUENCE_MIXED: Reply = Reply::fixed(
    503,
    "5.5.1",
    "Bad sequence of commands: BDAT and DATA cannot be mixed",
);
pub(crate) const BAD_SEQUENCE_CHUNKING: Reply = Reply::fixed(
    503,
    "5.5.1",
    "Bad sequence of commands: finish the message with BDAT LAST, or RSET",
);
pub(crate) const BAD_SEQUENCE_REFUSED: Reply = Reply::fixed(
    503,
    "5.5.1",
    "Bad sequence of commands: service was refused at connection; send QUIT",
);
pub(crate) const BAD_SEQUENCE_RCPT: Reply =
    Reply::fixed(503, "5.5.1", "Bad sequence of commands: send RCPT first");
/// AUTH is not offered (no `--auth-accept-any` or `--auth-file`): the verb is known, the
/// command is not implemented here (RFC 5321 §4.2.4).
pub(crate) const NO_AUTH: Reply = Reply::fixed(
    502,
    "5.5.1",
    "AUTH not available: authentication is not enabled on this server",
);
/// RFC 4954 §4: AUTH is refused inside a transaction and after a successful AUTH; it needs EHLO,
/// which offers it (§3).
pub(crate) const BAD_SEQUENCE_AUTH_EHLO: Reply =
    Reply::fixed(503, "5.5.1", "Bad sequence of commands: AUTH needs EHLO");
pub(crate) const BAD_SEQUENCE_AUTH_TWICE: Reply = Reply::fixed(
    503,
    "5.5.1",
    "Bad sequence of commands: already authenticated",
);
pub(crate) const BAD_SEQUENCE_AUTH_MAIL: Reply = Reply::fixed(
    503,
    "5.5.1",
    "Bad sequence of commands: AUTH is not allowed inside a mail transaction",
);
/// RFC 4954 §4: a mechanism this server does not offer.
pub(crate) const UNKNOWN_MECHANISM: Reply = Reply::fixed(
    504,
    "5.5.4",
    "Unrecognized authentication type: use PLAIN or LOGIN",
);
/// RFC 4954 §4: a client response that is not base64 is 501 (§6: 5.5.2).
pub(crate) const AUTH_BAD_BASE64: Reply =
    Reply::fixed(501, "5.5.2", "Cannot decode the response: it is not base64");
/// A response that decodes but is not a PLAIN or LOGIN message (no NULs, not UTF-8, no name).
pub(crate) const AUTH_MALFORMED: Reply =
    Reply::fixed(501, "5.5.2", "Malformed authentication response");
/// RFC 4954 §4: the client cancelled the exchange with `*`.
pub(crate) const AUTH_CANCELLED: Reply =
    Reply::fixed(501, "5.7.0", "Authentication cancelled by the client");
/// RFC 4954 §6: MAIL (after HELO or EHLO), VRFY, EXPN or HELP before AUTH where authentication
/// is required.
pub(crate) const AUTH_REQUIRED: Reply = Reply::fixed(530, "5.7.0", "Authentication required");
/// RFC 4954 §6: wrong user name or password.
pub(crate) const AUTH_INVALID: Reply =
    Reply::fixed(535, "5.7.8", "Authentication credentials invalid");
pub(crate) const UNKNOWN_HELP_TOPIC: Reply =
    Reply::fixed(504, "5.5.4", "HELP topic not recognized");
pub(crate) const NO_SUCH_USER: Reply = Reply::fixed(550, "5.1.1", "No such user here");
pub(crate) const BARE_NEWLINE_IN_MESSAGE: Reply = Reply::fixed(
    550,
    "5.5.2",
    "Message refused: a bare CR or LF in the text; lines must end with <CRLF>",
);
pub(crate) const FIRST_LINE_FOLDS: Reply = Reply::fixed(
    550,
    "5.6.0",
    "Message refused: its first line starts with white space, which would continue a header",
);
pub(crate) const RELAY_DENIED: Reply = Reply::fixed(550, "5.7.1", "Relaying denied");
pub(crate) const NOT_A_LIST: Reply = Reply::fixed(550, "5.1.1", "Not a mailing list here");
/// RFC 6531 §3.7.4.2 and §4.2: a VRFY or EXPN answer that needs UTF-8, to a client that did not
/// give `SMTPUTF8`.
pub(crate) const UTF8_REPLY_NOT_ALLOWED: Reply = Reply::fixed(
    550,
    "5.6.8",
    "The answer needs UTF-8; ask again with SMTPUTF8",
);
pub(crate) const MESSAGE_TOO_BIG: Reply = Reply::fixed(
    552,
    "5.3.4",
    "Requested mail action aborted: message exceeds fixed maximum message size",
);
/// A message read and thrown away (over the size limit, or a refused BDAT chunk) that grows past
/// twice the size limit: the session ends, so no client can keep a worker reading for ever.
pub(crate) const MESSAGE_FAR_TOO_BIG: Reply = Reply::fixed(
    552,
    "5.3.4",
    "Message exceeds fixed maximum message size; closing transmission channel",
);
pub(crate) const NAME_NOT_ALLOWED: Reply = Reply::fixed(
    553,
    "5.1.3",
    "Requested action not taken: mailbox name not allowed",
);
/// A sender's address that is not allowed: RFC 3463 §3.2 gives X.1.7 ("bad sender's mailbox
/// address syntax") where X.1.3 is the destination's.
pub(crate) const SENDER_NOT_ALLOWED: Reply = Reply::fixed(
    553,
    "5.1.7",
    "Requested action not taken: mailbox name not allowed",
);
/// RFC 6531 §3.5: a recipient that needs SMTPUTF8 is 553 ("mailbox name not allowed").
pub(crate) const RECIPIENT_NEEDS_SMTPUTF8: Reply = Reply::fixed(
    553,
    "5.6.7",
    "Non-ASCII address requires the SMTPUTF8 parameter",
);
/// RFC 6531 §3.5: a sender that needs SMTPUTF8 is 550 ("mailbox unavailable").
pub(crate) const SENDER_NEEDS_SMTPUTF8: Reply = Reply::fixed(
    550,
    "5.6.7",
    "Non-ASCII address requires the SMTPUTF8 parameter",
);
pub(crate) const NO_VALID_RECIPIENTS: Reply =
    Reply::fixed(554, "5.5.1", "Transaction failed: no valid recipients");

/// Appends `reply` to `out` as wire bytes.
///
/// Each line ends in CRLF; every line but the last separates code and text with `-`
/// (RFC 5321 §4.2.1). With `enhanced`, each line carries the enhanced status code (RFC 2034 §4).
/// CR and other control characters in the text are replaced so a reply can never break its
/// framing.
pub(crate) fn write_reply(out: &mut Vec<u8>, reply: &Reply, enhanced: bool) {
    let mut lines = reply.text.split('\n').peekable();
    while let Some(line) = lines.next() {
        out.extend_from_slice(decimal(u64::from(reply.code), 3, &mut [0; 20]).as_bytes());
        out.push(if lines.peek().is_some() { b'-' } else { b' ' });
        let mut room = MAX_REPLY_LINE - "250 \r\n".len();
        if let (true, Some(code)) = (enhanced, reply.enhanced) {
            out.extend_from_slice(code.as_bytes());
            out.push(b' ');
            room -= code.len() + 1;
        }
        // A text that repeats a client's words could pass the limit: it is cut, on a character
        // boundary, rather than sent too long.
        let line = line.get(..line.floor_char_boundary(room)).unwrap_or(line);
        out.extend(
            line.bytes()
                .map(|b| if b.is_ascii_control() { b' ' } else { b }),
        );
        out.extend_from_slice(b"\r\n");
    }
}

/// `n` in decimal, zero-padded to at least `width` digits (at most 20, the room in `buf`: a
/// wider `width` pads to 20), written at the end of `buf`, as `format!("{n:0width$}")` would
/// but without the formatting machinery: every session writes replies and an EHLO reply, and
/// `core::fmt` took an idle worker's stack 600 bytes deeper (see `pool::WORKER_STACK`). A `u64`
/// has at most 20 digits, so `buf` always has room for `n`.
pub(crate) fn decimal(n: u64, width: usize, buf: &mut [u8; 20]) -> &str {
    let mut rest = n;
    let mut start = buf.len();
    for (i, slot) in buf.iter_mut().rev().enumerate() {
        *slot = b'0' + (rest % 10) as u8;
        rest /= 10;
        start -= 1;
        if rest == 0 && i + 1 >= width {
            break;
        }
    }
    std::str::from_utf8(buf.get(start..).unwrap_or_default()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_line_passes_512_octets() {
        // Cut on a character boundary: `wire` reads the bytes back as UTF-8.
        for text in [
            "x".repeat(600),
            "\u{e9}".repeat(300),
            format!("a\n{}", "b".repeat(700)),
        ] {
            for enhanced in [false, true] {
                let wire = wire(&Reply::new(555, "5.5.4", text.clone()), enhanced);
                for line in wire.split_inclusive("\r\n") {
                    assert!(
                        line.len() <= MAX_REPLY_LINE && line.ends_with("\r\n"),
                        "{line:?}"
                    );
                }
            }
        }
        let full = wire(&Reply::new(555, "5.5.4", "y".repeat(600)), true);
        assert_eq!(full.len(), MAX_REPLY_LINE);
    }

    fn wire(reply: &Reply, enhanced: bool) -> String {
        let mut out = Vec::new();
        write_reply(&mut out, reply, enhanced);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn single_line_plain_and_enhanced() {
        assert_eq!(wire(&OK_SENDER, false), "250 Sender OK\r\n");
        assert_eq!(wire(&OK_SENDER, true), "250 2.1.0 Sender OK\r\n");
    }

    #[test]
    fn multi_line_framing() {
        let r = Reply::plain(250, "host\nPIPELINING\nSIZE 10");
        assert_eq!(
            wire(&r, true),
            "250-host\r\n250-PIPELINING\r\n250 SIZE 10\r\n"
        );
    }

    #[test]
    fn control_characters_cannot_break_framing() {
        let r = Reply::new(501, "5.5.4", "bad\rthing\x00");
        assert_eq!(wire(&r, false), "501 bad thing \r\n");
    }

    #[test]
    fn codes_are_written_with_three_digits_or_more() {
        assert_eq!(wire(&Reply::plain(7, "x"), false), "007 x\r\n");
        assert_eq!(wire(&Reply::plain(421, "x"), false), "421 x\r\n");
        assert_eq!(wire(&Reply::plain(1234, "x"), false), "1234 x\r\n");
        let mut buf = [0; 20];
        assert_eq!(decimal(0, 1, &mut buf), "0");
        assert_eq!(decimal(10_485_760, 1, &mut buf), "10485760");
        assert_eq!(decimal(u64::MAX, 1, &mut buf), u64::MAX.to_string());
        assert_eq!(decimal(42, 5, &mut buf), "00042");
        // Padding stops at the buffer's 20 digits, as documented.
        assert_eq!(decimal(5, 25, &mut buf), "00000000000000000005");
    }

    #[test]
    fn reply_without_enhanced_code_never_prints_one() {
        assert_eq!(
            wire(&START_DATA, true),
            "354 Start mail input; end with <CRLF>.<CRLF>\r\n"
        );
    }
}
