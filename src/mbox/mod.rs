//! The mbox format (mboxrd: RFC 4155's mbox with every `^>*From ` line given one more `>`; mutt,
//! s-nail and Python's `mailbox` read it as mbox, and Python's gives the added `>` back): the
//! public reader, [`Mailbox`], and, private to the server, how one accepted message becomes the
//! bytes appended to one mailbox.
//!
//! An entry is a `From ` separator line (`From <sender> <date>`, the null sender written
//! `MAILER-DAEMON`), the trace fields RFC 5321 §4.4 requires of a delivering server
//! (`Return-Path:` and `Received:`), the message with CRLF turned into LF and every line
//! matching `^>*From ` quoted with one more `>`, and one empty line. Every entry therefore ends
//! in `\n\n`, so the next entry starts a `From ` line after an empty line (the writer pads a
//! mailbox that ends otherwise). The reader (`reader.rs`) undoes exactly this,
//! and the `X-Original-` renaming of header fields readers act on (`body.rs`). The writer side
//! is kept apart from the I/O as pure functions: this file writes the per-recipient header;
//! `body` converts the message as it arrives, once for all recipients.

mod body;
mod reader;

pub(crate) use body::{Body, Encoder, Refusal};
pub(crate) use reader::open_regular;
pub use reader::{Header, Mailbox, Message, ParseError};
/// For the reference unquoting the fuzz targets and tests check the encoder against.
#[cfg(any(test, fuzzing, feature = "fuzzing"))]
pub(crate) use {
    body::{field_name, is_readers_field},
    reader::unrenamed,
};

use std::borrow::Cow;
use std::fmt::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::command;

/// What the trace headers of one entry say.
#[derive(Debug, Clone)]
pub(crate) struct Trace<'a> {
    /// The reverse path, `None` for the null sender `<>`.
    pub sender: Option<&'a str>,
    /// The name the client gave in HELO or EHLO.
    pub helo: &'a str,
    /// The client's IP address as an address literal (RFC 5321 §4.1.3): `[192.0.2.1]`, `[IPv6:::1]`.
    pub peer: &'a str,
    /// This server's name.
    pub hostname: &'a str,
    /// `SMTP`, `ESMTP`, `ESMTPA` (RFC 3848), `UTF8SMTP` or `UTF8SMTPA` (RFC 6531 §4.3).
    pub protocol: &'a str,
    /// The message id used in logs.
    pub id: &'a str,
    /// Seconds since the Unix epoch.
    pub time: i64,
}

/// Seconds since the Unix epoch, now.
pub(crate) fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// The sender as the `From ` line holds it: ASCII, as readers such as Python's `mailbox`
/// decode that line as ASCII. A space or tab is written `_` (RFC 4155: no spaces), and `\`, `"`
/// and every non-ASCII character of an SMTPUTF8 address as RFC 6533's `\x{HEX}`, which the
/// reader (`reader::decoded_sender`) undoes: `josé@x.test` is `jos\x{E9}@x.test`. A quote is
/// escaped too: mutt takes `\` and `"` on that line as quoting, and a line whose quotes do
/// not pair up (`"a\"b"@x.test`) as no separator, merging two messages.
fn from_line_address(sender: &str) -> String {
    let mut out = String::with_capacity(sender.len());
    for c in sender.chars() {
        match c {
            ' ' | '\t' => out.push('_'),
            '\\' => out.push_str("\\x{5C}"),
            '"' => out.push_str("\\x{22}"),
            c if c.is_ascii() => out.push(c),
            c => out.push_str(&format!("\\x{{{:X}}}", u32::from(c))),
        }
    }
    out
}

/// The entry header for one recipient: `From ` line, `Return-Path:` and `Received:`.
///
/// The client's strings (the sender, the HELO name, the recipient) were refused by the parser
/// and the session if they held an unsafe character (`escape::is_unsafe`: CR, LF, NEL, U+2028,
/// bidi and invisible characters...), so none can start, fold or hide a header line here.
/// The HELO name may still hold header syntax; [`from_name`] neuters it.
pub(crate) fn header(trace: &Trace<'_>, recipient: &str) -> Vec<u8> {
    debug_assert!(
        ![trace.sender.unwrap_or(""), trace.helo, recipient]
            .iter()
            .any(|s| crate::escape::has_unsafe(s)),
        "an unsafe character reached a trace header: {trace:?} {recipient:?}"
    );
    let t = Civil::from_unix(trace.time);
    // RFC 4155: the separator's address has no spaces; the null sender is MAILER-DAEMON.
    let from = trace.sender.map_or(Cow::Borrowed("MAILER-DAEMON"), |s| {
        Cow::Owned(from_line_address(s))
    });
    let sender = trace.sender.map_or(Cow::Borrowed(""), header_address);
    let helo = from_name(trace.helo, trace.protocol.starts_with("UTF8"));
    let recipient = header_address(recipient);
    // One buffer, sized for the whole header (the fixed text and the dates take 129 octets in
    // years of four digits), that the three lines are formatted into: a header is made for
    // every mailbox of every message.
    let variable = [&from, &sender, &helo, &recipient]
        .iter()
        .map(|s| s.len())
        .chain([trace.peer, trace.hostname, trace.protocol, trace.id].map(str::len))
        .sum::<usize>();
    let mut out = String::with_capacity(160 + variable);
    let (weekday, month, year) = (t.weekday_name(), t.month_name(), t.year);
    let (hour, minute, second) = (t.hour, t.minute, t.second);
    // Formatting into a String cannot fail.
    let _ = write!(
        out,
        "From {from} {weekday} {month} {:2} {hour:02}:{minute:02}:{second:02} {year}\n\
         Return-Path: <{sender}>\n\
         Received: from {helo} ({})\n\tby {} (mboxd) with {} id {}\n\
         \tfor <{recipient}>; {weekday}, {:02} {month} {year} {hour:02}:{minute:02}:{second:02} +0000\n",
        t.day, trace.peer, trace.hostname, trace.protocol, trace.id, t.day,
    );
    out.into_bytes()
}

/// The characters that carry structure in a `Received:` field's tokens: a comment, a quoted
/// string or pair, an address, the `;` before the date, a list. Neither a HELO name
/// ([`from_name`]) nor the server's own name (`config.rs`) may bring one in.
pub(crate) const HEADER_SYNTAX: &[char] = &['(', ')', '<', '>', '\\', '"', ';', '@', ','];

/// The HELO name as the `from` clause of `Received:` can hold it. The session takes any one
/// word as the name (RFC 5321 §4.1.4: a server must not refuse a client for its name), but in
/// an RFC 5322 header some characters carry structure: an unbalanced `(` would turn the rest of
/// the header, its `by` clause and date included, into a comment; a `;` would end the tokens
/// early, so the date read would be the client's; `"`, `<` and `\` open a quoted string, an
/// address or a quoted pair; `,` and `:` belong to address lists and groups. Each of
/// `( ) < > \ " ; @ ,`, and `[`, `]` or `:` unless the name is one bracketed address literal
/// (`[IPv6:::1]`), is written as `?` (as Postfix's smtpd does with most of them). A
/// domain or address literal (RFC 5321 §4.1.3) holds none of them and is written as presented.
/// A non-ASCII character is written as `?` too unless the message came with SMTPUTF8 (`utf8`):
/// only such a message may have UTF-8 in its header (RFC 6532 §3, RFC 6531 §3.7.3).
fn from_name(helo: &str, utf8: bool) -> Cow<'_, str> {
    const BRACKETS: &[char] = &['[', ']', ':'];
    let literal = helo
        .strip_prefix('[')
        .and_then(|rest| rest.strip_suffix(']'))
        .is_some_and(|inner| !inner.contains(['[', ']']));
    let mut name = Cow::Borrowed(helo);
    if name.contains(HEADER_SYNTAX) {
        name = Cow::Owned(name.replace(HEADER_SYNTAX, "?"));
    }
    if !literal && name.contains(BRACKETS) {
        name = Cow::Owned(name.replace(BRACKETS, "?"));
    }
    if !utf8 && !name.is_ascii() {
        name = Cow::Owned(name.replace(|c: char| !c.is_ascii(), "?"));
    }
    name
}

/// An address as `Return-Path:` and `Received:` can hold it. The session takes an unquoted local
/// part with any character but space, `<`, `>` and a second `@` (inside brackets, a `"` must also
/// be one of a pair, or the closing `>` counts as quoted), but RFC 5321 §4.1.2 allows only
/// a dot-atom there (RFC 5322 §3.2.3: atext runs joined by single dots): other characters carry
/// structure in a header (`(` opens a comment, `;` ends `Received:`'s tokens before its date),
/// and a dot at either end or next to another is not the syntax. A local part that is not a
/// dot-atom is written
/// as the quoted string RFC 5321 asks for (`"a(b"@example.com`, each `"` and `\` escaped); any
/// other address, a quoted local part included, as given. (A recipient's local part here never
/// holds a `"`: the parser drops the quotes of one it would also take unquoted, `"a(b"` being
/// `a(b`, and a mailbox name holds none.)
fn header_address(address: &str) -> Cow<'_, str> {
    if address.starts_with('"') {
        return Cow::Borrowed(address);
    }
    let at = address.rfind('@').unwrap_or(address.len());
    let (local, domain) = address.split_at_checked(at).unwrap_or((address, ""));
    if command::is_dot_atom(local) {
        return Cow::Borrowed(address);
    }
    // RFC 5321 §4.1.2's quoted-pairSMTP: `\` and `"` are escaped with a `\`.
    let local = local.replace('\\', "\\\\").replace('"', "\\\"");
    Cow::Owned(format!("\"{local}\"{domain}"))
}

/// A UTC calendar time, computed without a date library.
struct Civil {
    year: i64,
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
    weekday: u32,
}

impl Civil {
    fn from_unix(t: i64) -> Civil {
        let days = t.div_euclid(86_400);
        let secs = t.rem_euclid(86_400) as u32;
        // Howard Hinnant's days-to-civil algorithm.
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        let year = yoe + era * 400 + i64::from(month <= 2);
        Civil {
            year,
            month,
            day,
            hour: secs / 3600,
            minute: secs / 60 % 60,
            second: secs % 60,
            // 1970-01-01 was a Thursday.
            weekday: (days + 4).rem_euclid(7) as u32,
        }
    }

    fn weekday_name(&self) -> &'static str {
        const DAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
        DAYS.get(self.weekday as usize).copied().unwrap_or("???")
    }

    fn month_name(&self) -> &'static str {
        const MONTHS: [&str; 12] = [
            "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
        ];
        (self.month as usize)
            .checked_sub(1)
            .and_then(|i| MONTHS.get(i))
            .copied()
            .unwrap_or("???")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trace(sender: Option<&str>) -> Trace<'_> {
        Trace {
            sender,
            helo: "USC-ISIF.ARPA",
            peer: "[127.0.0.1]",
            hostname: "BBN-UNIX.ARPA",
            protocol: "SMTP",
            id: "1a",
            // Sun Nov 22 07:33:49 2026 UTC
            time: 1_795_332_829,
        }
    }

    #[test]
    fn from_line_and_trace_headers() {
        let h = String::from_utf8(header(
            &trace(Some("Smith@USC-ISIF.ARPA")),
            "Jones@BBN-UNIX.ARPA",
        ))
        .unwrap();
        assert_eq!(
            h,
            "From Smith@USC-ISIF.ARPA Sun Nov 22 07:33:49 2026\n\
             Return-Path: <Smith@USC-ISIF.ARPA>\n\
             Received: from USC-ISIF.ARPA ([127.0.0.1])\n\
             \tby BBN-UNIX.ARPA (mboxd) with SMTP id 1a\n\
             \tfor <Jones@BBN-UNIX.ARPA>; Sun, 22 Nov 2026 07:33:49 +0000\n"
        );
    }

    #[test]
    fn the_from_line_is_ascii_and_the_reader_gives_the_sender_back() {
        for (sender, written) in [
            ("a@b.test", "a@b.test"),
            ("\"a b\"@b.test", "\\x{22}a_b\\x{22}@b.test"),
            ("\"a\\\"b\"@b.test", "\\x{22}a\\x{5C}\\x{22}b\\x{22}@b.test"),
            ("josé@bücher.test", "jos\\x{E9}@b\\x{FC}cher.test"),
            ("\"a\\\\b\"@b.test", "\\x{22}a\\x{5C}\\x{5C}b\\x{22}@b.test"),
            ("\"\\x{41}\"@b.test", "\\x{22}\\x{5C}x{41}\\x{22}@b.test"),
            ("😀@b.test", "\\x{1F600}@b.test"),
        ] {
            let h = String::from_utf8(header(&trace(Some(sender)), "j@x.test")).unwrap();
            let line = h.lines().next().unwrap();
            assert_eq!(line.split(' ').nth(1), Some(written), "{sender}");
            assert!(line.is_ascii(), "{line}");
            let entry = format!("{h}\nbody\n\n");
            let read = Mailbox::parse(entry.as_bytes()).unwrap();
            let back = sender.replace(' ', "_");
            assert_eq!(read.messages()[0].sender(), Some(back.as_str()));
        }
    }

    #[test]
    fn a_helo_name_cannot_change_the_structure_of_received() {
        for (helo, written) in [
            ("client.test", "client.test"),
            ("[127.0.0.1]", "[127.0.0.1]"),
            ("[IPv6:::1]", "[IPv6:::1]"),
            ("my_host-1", "my_host-1"),
            // Not sent with SMTPUTF8: no UTF-8 in the header (below, with it).
            ("b\u{fc}cher.test", "b?cher.test"),
            // A comment never closed: the `by` clause and the date would be in it.
            ("a(", "a?"),
            ("a)(b", "a??b"),
            // A `;` ends the tokens: what follows would be read as the date.
            ("x;Mon,1Jan2001", "x?Mon?1Jan2001"),
            ("\"q", "?q"),
            ("<a@b>", "?a?b?"),
            ("a\\", "a?"),
            ("[1.2.3.4", "?1.2.3.4"),
            ("a]", "a?"),
            ("[a][b]", "?a??b?"),
            ("[]", "[]"),
            // An address list's and a group's separators.
            ("a,b", "a?b"),
            ("a:b", "a?b"),
        ] {
            let mut t = trace(None);
            t.helo = helo;
            let h = String::from_utf8(header(&t, "a@b")).unwrap();
            let line = h.lines().nth(2).unwrap();
            assert_eq!(
                line,
                format!("Received: from {written} ([127.0.0.1])"),
                "{helo:?}"
            );
        }
        let mut t = trace(None);
        t.helo = "b\u{fc}cher.test";
        t.protocol = "UTF8SMTP";
        let h = String::from_utf8(header(&t, "a@b")).unwrap();
        assert_eq!(
            h.lines().nth(2),
            Some("Received: from b\u{fc}cher.test ([127.0.0.1])")
        );
    }

    #[test]
    fn a_local_part_with_header_syntax_is_written_quoted() {
        for (address, written) in [
            ("jones@mx.test", "jones@mx.test"),
            ("first.last+tag@mx.test", "first.last+tag@mx.test"),
            // Dots only between atoms (RFC 5322 §3.2.3).
            ("a..b@mx.test", "\"a..b\"@mx.test"),
            (".a@mx.test", "\".a\"@mx.test"),
            ("a.@mx.test", "\"a.\"@mx.test"),
            ("j\u{f6}rg@mx.test", "j\u{f6}rg@mx.test"),
            ("\"a b\"@mx.test", "\"a b\"@mx.test"),
            ("jo(n;es@mx.test", "\"jo(n;es\"@mx.test"),
            ("a\\b\"c@mx.test", "\"a\\\\b\\\"c\"@mx.test"),
            ("x;y@b", "\"x;y\"@b"),
            ("a,b:c[d]@[127.0.0.1]", "\"a,b:c[d]\"@[127.0.0.1]"),
        ] {
            let h = String::from_utf8(header(&trace(Some(address)), address)).unwrap();
            let lines: Vec<&str> = h.lines().collect();
            assert_eq!(lines[1], format!("Return-Path: <{written}>"), "{address:?}");
            assert!(
                lines[4].starts_with(&format!("\tfor <{written}>; ")),
                "{address:?}"
            );
        }
    }

    #[test]
    fn null_sender_is_mailer_daemon() {
        let h = String::from_utf8(header(&trace(None), "a@b")).unwrap();
        assert!(h.starts_with("From MAILER-DAEMON Sun Nov 22 07:33:49 2026\nReturn-Path: <>\n"));
    }

    #[test]
    fn calendar_edges() {
        let c = Civil::from_unix(0);
        assert_eq!(
            (c.year, c.month, c.day, c.weekday_name()),
            (1970, 1, 1, "Thu")
        );
        let c = Civil::from_unix(951_782_400); // 2000-02-29
        assert_eq!(
            (c.year, c.month, c.day, c.weekday_name()),
            (2000, 2, 29, "Tue")
        );
        let c = Civil::from_unix(-1);
        assert_eq!((c.year, c.month, c.day, c.hour), (1969, 12, 31, 23));
    }
}
