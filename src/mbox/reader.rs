//! The mbox reader: an mbox file's bytes in, its messages out, each with its envelope sender,
//! its header fields unfolded, its body, and its text with the mboxrd quoting undone.
//!
//! It exists so a test reads back what mboxd stored with the exact inverse of what the writer
//! does (`body.rs` quotes every line matching `^>*From ` with one more `>`, and puts
//! `X-Original-` before a header field mbox readers act on, such as `Content-Length:`; this
//! removes one of each), so a message comes back byte for byte, line ends aside: the writer
//! stores CRLF as LF.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use super::body::{field_name, is_readers_field, strip_renamed};

const FROM: &[u8] = b"From ";

/// The messages of one mbox file, in file order.
///
/// An entry begins with a `From ` line at the start of the file or after an empty line, as
/// mboxd writes them (RFC 4155); the empty line before the next entry belongs to neither.
///
/// ```
/// use mboxd::mbox::Mailbox;
///
/// let file = b"From a@b.test Sun Nov 22 07:33:49 2026\n\
///     Subject: one\n\nhello\n>From here\n\n\
///     From MAILER-DAEMON Sun Nov 22 07:33:50 2026\n\
///     Subject: two\n\nbounce\n\n";
/// let mailbox = Mailbox::parse(file)?;
/// assert_eq!(mailbox.len(), 2);
/// assert_eq!(mailbox.messages()[0].sender(), Some("a@b.test"));
/// assert_eq!(mailbox.messages()[0].body(), b"hello\nFrom here\n");
/// assert_eq!(mailbox.messages()[1].sender(), None);
/// # Ok::<(), mboxd::mbox::ParseError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Mailbox {
    messages: Vec<Message>,
}

/// Why bytes are not an mbox file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    /// The file is not empty and does not begin with a `From ` line.
    NoFromLine,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::NoFromLine => {
                f.write_str("not an mbox file: it does not begin with a From line")
            }
        }
    }
}

impl std::error::Error for ParseError {}

impl Mailbox {
    /// Parses the bytes of an mbox file. Empty bytes are an empty mailbox.
    pub fn parse(bytes: &[u8]) -> Result<Mailbox, ParseError> {
        if bytes.is_empty() {
            return Ok(Mailbox::default());
        }
        if !bytes.starts_with(FROM) {
            return Err(ParseError::NoFromLine);
        }
        let mut messages = Vec::new();
        let mut rest = bytes;
        while !rest.is_empty() {
            let end = next_entry(rest);
            let (entry, next) = rest.split_at_checked(end).unwrap_or((rest, &[]));
            messages.push(Message::from_entry(entry));
            rest = next;
        }
        Ok(Mailbox { messages })
    }

    /// Reads and parses an mbox file; a file that is not an mbox is an
    /// [`io::ErrorKind::InvalidData`] error.
    ///
    /// ```
    /// let dir = std::env::temp_dir().join(format!("mboxd-doc-open-{}", std::process::id()));
    /// std::fs::create_dir_all(&dir)?;
    /// std::fs::write(dir.join("jones"), "From a@b.test Sun Nov 22 07:33:49 2026\n\nhi\n\n")?;
    /// let mailbox = mboxd::mbox::Mailbox::open(dir.join("jones"))?;
    /// assert_eq!(mailbox.messages()[0].body(), b"hi\n");
    /// # std::fs::remove_dir_all(&dir)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    ///
    /// The file is read as it is, without taking a lock: a message another program is
    /// appending at that moment may be seen in part ([`crate::Server::messages`] takes a lock).
    /// Anything but a regular file (a FIFO, a device, a directory) is an
    /// [`io::ErrorKind::InvalidInput`] error, never waited on.
    pub fn open(path: impl AsRef<Path>) -> io::Result<Mailbox> {
        let mut bytes = Vec::new();
        open_regular(path.as_ref())?.read_to_end(&mut bytes)?;
        Mailbox::parse(&bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }

    /// The messages, in file order.
    pub fn messages(&self) -> &[Message] {
        &self.messages
    }

    /// The messages, owned.
    pub fn into_messages(self) -> Vec<Message> {
        self.messages
    }

    /// How many messages there are.
    pub fn len(&self) -> usize {
        self.messages.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }
}

/// Opens `path` for reading if it is a regular file. `O_NONBLOCK`: opening a FIFO no one writes
/// would otherwise wait for a writer (on a regular file the flag changes nothing).
pub(crate) fn open_regular(path: &Path) -> io::Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    if !file.metadata()?.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{}: not a regular file", path.display()),
        ));
    }
    Ok(file)
}

/// Where the entry that `bytes` begins with ends: at the next `From ` line that follows an
/// empty line, or at the end. The empty line may be a CRLF: another program may have written
/// the mailbox with CRLF line ends, which mboxd keeps (it only appends).
fn next_entry(bytes: &[u8]) -> usize {
    // Each `From ` after a newline, in order, until one whose line before is empty (a newline,
    // or a CR, right after the newline that ends the line before that). One pass: the file is
    // not searched to its end for every entry.
    let mut from = 0;
    while let Some(found) = bytes.get(from..).and_then(|rest| find(rest, b"\nFrom ")) {
        let newline = from + found;
        let before = bytes.get(..newline).unwrap_or_default();
        if before.ends_with(b"\n") || before.ends_with(b"\n\r") {
            return newline + 1;
        }
        from = newline + 1;
    }
    bytes.len()
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// One header field, unfolded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The field name as written (compare it case-insensitively).
    pub name: String,
    /// The value: the folded lines joined (each line break before white space removed, RFC
    /// 5322 §2.2.3), with the white space around it trimmed. Invalid UTF-8 is replaced by
    /// U+FFFD.
    pub value: String,
}

/// One message of an mbox file. Its `Debug` shows the `From ` line, the sender and the raw
/// message as text (invalid UTF-8 replaced), not as a list of octets.
#[derive(Clone, PartialEq, Eq)]
pub struct Message {
    from_line: String,
    sender: Option<String>,
    raw: Vec<u8>,
    headers: Vec<Header>,
    /// Where the body starts in `raw`.
    body: usize,
    /// Where the message starts in `raw` without the delivering server's trace fields.
    sent: usize,
}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Message")
            .field("from_line", &self.from_line)
            .field("sender", &self.sender)
            .field("raw", &String::from_utf8_lossy(&self.raw))
            .finish()
    }
}

impl Message {
    fn from_entry(entry: &[u8]) -> Message {
        let (first, content) = match find(entry, b"\n") {
            Some(nl) => (
                entry.get(..nl).unwrap_or_default(),
                entry.get(nl + 1..).unwrap_or_default(),
            ),
            None => (entry, &[][..]),
        };
        let first = first.strip_suffix(b"\r").unwrap_or(first);
        // The empty line that separates this entry from the next, or ends the file.
        let content = if content == b"\r\n" || content.ends_with(b"\n\r\n") {
            content.get(..content.len() - 2).unwrap_or(content)
        } else if content == b"\n" || content.ends_with(b"\n\n") {
            let content = content.get(..content.len() - 1).unwrap_or(content);
            // mboxd's padding after another program's CRLF empty line: together they separate.
            match content.strip_suffix(b"\r\n") {
                Some(rest) if rest.ends_with(b"\n") => rest,
                _ => content,
            }
        } else {
            content
        };
        let raw = unquote(content);
        let from_line = String::from_utf8_lossy(first).into_owned();
        let (headers, body, sent) = parse_headers(&raw);
        let sender = first
            .strip_prefix(FROM)
            .and_then(|s| s.split(|&b| b == b' ').next())
            .filter(|s| !s.is_empty())
            .map(|s| decoded_sender(&String::from_utf8_lossy(s)))
            .filter(|s| s != "MAILER-DAEMON" || real_mailer_daemon(&headers));
        Message {
            from_line,
            sender,
            raw,
            headers,
            body,
            sent,
        }
    }

    /// The envelope sender from the `From ` line (RFC 5321 reverse path; mboxd writes spaces
    /// in it as `_`, which stays, and `\`, `"` and non-ASCII characters as `\x{HEX}`, undone
    /// here), or `None` for the null sender, written `MAILER-DAEMON`. mboxd writes a sender
    /// given as `<MAILER-DAEMON>` qualified with a domain, as any sender without one; in a
    /// file an older mboxd wrote, such a sender is told apart by the `Return-Path:` above the
    /// message (`<MAILER-DAEMON>`, not `<>`).
    pub fn sender(&self) -> Option<&str> {
        self.sender.as_deref()
    }

    /// The `From ` line that begins the entry, without its newline.
    pub fn from_line(&self) -> &str {
        &self.from_line
    }

    /// The message as stored after its `From ` line, with the mboxrd quoting undone (a line
    /// `>From ` in the file is `From ` here, `>>From ` is `>From `), and mboxd's renaming of
    /// header fields mbox readers act on (`X-Original-Content-Length:` in the file is
    /// `Content-Length:` here): the trace fields the
    /// delivering server put on top (`Return-Path:`, `Received:`), then the message as sent,
    /// lines ending in LF. Without the empty line that separates entries.
    pub fn raw(&self) -> &[u8] {
        &self.raw
    }

    /// The message as the client sent it: [`Message::raw`] without the `Return-Path:` field
    /// and the one `Received:` field after it that mboxd puts on top, lines ending in LF.
    pub fn as_sent(&self) -> &[u8] {
        self.raw.get(self.sent..).unwrap_or_default()
    }

    /// [`Message::as_sent`] with every LF turned into CRLF: for a message sent with CRLF line
    /// ends only (as SMTP requires), exactly the octets sent (after DATA's dot-unstuffing; a BDAT
    /// message that did not end in CRLF gains one).
    pub fn as_sent_crlf(&self) -> Vec<u8> {
        let sent = self.as_sent();
        let mut out = Vec::with_capacity(sent.len() + sent.len() / 32);
        for &b in sent {
            if b == b'\n' {
                out.push(b'\r');
            }
            out.push(b);
        }
        out
    }

    /// Every header field in order, trace fields included, unfolded.
    pub fn headers(&self) -> &[Header] {
        &self.headers
    }

    /// The value of the first field named `name` (case-insensitively).
    ///
    /// ```
    /// let m = &mboxd::mbox::Mailbox::parse(
    ///     b"From a@b Sun Nov 22 07:33:49 2026\nSUBJECT: a\n  long one\n\nbody\n\n",
    /// )?.into_messages()[0];
    /// assert_eq!(m.header("subject"), Some("a  long one"));
    /// # Ok::<(), mboxd::mbox::ParseError>(())
    /// ```
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value.as_str())
    }

    /// The values of every field named `name` (case-insensitively), in order.
    pub fn header_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value.as_str())
    }

    /// The `Subject:` value, if there is one, as [`Message::header`] gives it: unfolded but not
    /// decoded, so a subject a client wrote as RFC 2047 encoded words (as most do for
    /// non-ASCII text) is `=?utf-8?b?...?=` here.
    pub fn subject(&self) -> Option<&str> {
        self.header("Subject")
    }

    /// The body: what follows the first empty line (empty if there is none).
    pub fn body(&self) -> &[u8] {
        self.raw.get(self.body..).unwrap_or_default()
    }

    /// The body as text, invalid UTF-8 replaced by U+FFFD. It is the body as stored: a
    /// `Content-Transfer-Encoding` (quoted-printable, base64) or a MIME structure is not undone.
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(self.body()).into_owned()
    }
}

/// Undoes mboxrd quoting: one `>` less on every line matching `^>+From `; and in the header
/// section, one `X-Original-` less on a field mboxd renamed ([`unrenamed`]).
fn unquote(content: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(content.len());
    let mut header = true;
    for line in content.split_inclusive(|&b| b == b'\n') {
        let quotes = line.iter().take_while(|&&b| b == b'>').count();
        let after = line.get(quotes..).unwrap_or_default();
        match line.split_first() {
            Some((b'>', unquoted)) if after.starts_with(FROM) => out.extend_from_slice(unquoted),
            _ if header => out.extend_from_slice(unrenamed(line)),
            _ => out.extend_from_slice(line),
        }
        // The header section ends at the empty line, which a CRLF file writes `\r\n`.
        header &= !matches!(line, b"\n" | b"\r\n");
    }
    out
}

/// A stored header line without the one `X-Original-` mboxd put before a field name that mbox
/// readers act on (`body.rs`): the line is `(X-Original-)+NAME WSP* :...` with NAME one of
/// those fields ([`is_readers_field`]). Any other line as it is.
pub(crate) fn unrenamed(line: &[u8]) -> &[u8] {
    let name = line
        .iter()
        .position(|&b| b == b':')
        .and_then(|colon| line.get(..colon))
        .map(field_name);
    let Some(mut name) = name.and_then(strip_renamed) else {
        return line;
    };
    while let Some(rest) = strip_renamed(name) {
        name = rest;
    }
    if is_readers_field(name) {
        strip_renamed(line).unwrap_or(line)
    } else {
        line
    }
}

/// The header fields of `raw`, where its body starts, and where it starts without mboxd's
/// trace fields.
fn parse_headers(raw: &[u8]) -> (Vec<Header>, usize, usize) {
    let mut headers: Vec<Header> = Vec::new();
    // Each field with the offset just past its last line.
    let mut ends: Vec<usize> = Vec::new();
    let mut at = 0;
    let mut body = raw.len();
    // The last line was a field or its continuation: a folded line continues it.
    let mut open = false;
    for line in raw.split_inclusive(|&b| b == b'\n') {
        let next = at + line.len();
        let text = line.strip_suffix(b"\n".as_slice()).unwrap_or(line);
        // A header section with CRLF line ends (a mailbox another program wrote).
        let text = text.strip_suffix(b"\r".as_slice()).unwrap_or(text);
        if text.is_empty() {
            body = next;
            break;
        }
        match (text.first(), headers.last_mut(), ends.last_mut()) {
            (Some(b' ' | b'\t'), Some(last), Some(end)) if open => {
                // RFC 5322 §2.2.3: unfolding removes the line break, keeping the white space.
                last.value.push_str(&String::from_utf8_lossy(text));
                *end = next;
            }
            // A folded line after a line that is no field continues nothing: skipped.
            (Some(b' ' | b'\t'), _, _) => {}
            _ => {
                let colon = text.iter().position(|&b| b == b':');
                if let Some((name, value)) = colon.and_then(|c| text.split_at_checked(c)) {
                    headers.push(Header {
                        name: String::from_utf8_lossy(name).trim_end().to_string(),
                        value: String::from_utf8_lossy(value.get(1..).unwrap_or_default())
                            .into_owned(),
                    });
                    ends.push(next);
                    open = true;
                } else {
                    // A line that is neither a field nor a continuation is skipped, and so
                    // are the folded lines after it.
                    open = false;
                }
            }
        }
        at = next;
    }
    for h in &mut headers {
        let trimmed = h.value.trim_matches([' ', '\t']);
        if trimmed.len() != h.value.len() {
            h.value = trimmed.to_string();
        }
    }
    let is = |i: usize, name: &str| {
        headers
            .get(i)
            .is_some_and(|h| h.name.eq_ignore_ascii_case(name))
    };
    let sent = if is(0, "Return-Path") && is(1, "Received") {
        ends.get(1).copied().unwrap_or(0)
    } else {
        0
    };
    (headers, body, sent)
}

/// The `From ` line's sender with each RFC 6533 `\x{HEX}` (how mboxd writes `\`, `"` and
/// non-ASCII characters there) turned back into its character; anything else is kept as it is.
fn decoded_sender(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some((before, escape)) = rest.find("\\x{").and_then(|at| rest.split_at_checked(at)) {
        out.push_str(before);
        let hex = escape.get(3..).and_then(|h| h.split_once('}'));
        let decoded = hex.and_then(|(digits, after)| {
            let valid =
                (1..=6).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_hexdigit());
            let c = u32::from_str_radix(digits, 16)
                .ok()
                .and_then(char::from_u32);
            c.filter(|_| valid).map(|c| (c, after))
        });
        match decoded {
            Some((c, after)) => {
                out.push(c);
                rest = after;
            }
            None => {
                out.push('\\');
                rest = escape.get(1..).unwrap_or_default();
            }
        }
    }
    out.push_str(rest);
    out
}

/// Whether an entry whose `From ` line names `MAILER-DAEMON` had that sender, not the null one:
/// its first header is the `Return-Path: <MAILER-DAEMON>` that mboxd wrote for it before it
/// qualified senders without a domain (it now writes `MAILER-DAEMON@DOMAIN` in both places). Any other
/// `Return-Path:` is no evidence: another program may write the null sender's `From ` line above
/// a message that keeps its original `Return-Path:`.
fn real_mailer_daemon(headers: &[Header]) -> bool {
    headers
        .first()
        .is_some_and(|h| h.name.eq_ignore_ascii_case("Return-Path") && h.value == "<MAILER-DAEMON>")
}

#[cfg(test)]
#[path = "reader_tests.rs"]
mod tests;
