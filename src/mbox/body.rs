//! The streaming body encoder: message octets in, in any split, the stored mboxrd text out, into
//! one buffer that becomes the body every recipient's entry shares.
//!
//! It exists so a message is held in memory once, in the form it is stored in, while it arrives:
//! DATA text (dot-unstuffed) and BDAT octets are converted as they come, and the buffer grows
//! against the in-flight [`Budget`](crate::budget::Budget), so the converted copy is the only one.
//! Converting needs the start of every line (for `^>*From ` quoting) and the byte after every CR
//! (is it CRLF?), so the encoder keeps that little state between pieces and gives the same bytes
//! however its input is split. It also decides what no later stage can: whether the message may
//! be stored at all (a bare CR or LF under `--bare-newline reject`, a first line that would fold
//! into mboxd's `Received:` header, no room in the budget).
//!
//! On the wire only CRLF ends a line (RFC 5321 §2.3.8). Stored, CRLF becomes LF. A bare CR or
//! bare LF is, under [`BareNewline::Normalize`], a space inside the header section (so a reader
//! that breaks lines at CR, LF or CRLF sees exactly the header lines sent on the wire) and a line
//! end in the body (as Postfix's `smtpd_forbid_bare_newline = normalize` does), the new line being
//! quoted like any other. No CR is ever stored, so no splitting of the stored text at CR, LF or
//! CRLF can meet an unquoted `From ` line. The header section ends at the first empty line on the
//! wire (RFC 5322 §2.1).
//!
//! mboxrd frames a message by its `From ` lines alone, but readers also act on header fields
//! that mbox software writes itself: `Content-Length:` (mutt, formail and Dovecot skip that many
//! octets, so a client's value could swallow the messages after its own), and the flags and IMAP
//! ids of `Status:`, `X-Status:`, `X-Keywords:`, `X-UID:`, `X-IMAP:`, `X-IMAPbase:` and
//! Thunderbird's `X-Mozilla-Status:`, `X-Mozilla-Status2:`, `X-Mozilla-Keys:` (a message could
//! arrive marked read or deleted). Such a field in the header section is stored renamed, with
//! `X-Original-` before its name (Dovecot's delivery drops them), and so is one already named
//! with `X-Original-` once or more before such a name, as mboxrd quotes `>From `: removing one
//! `X-Original-` from each gives the message back.

use std::fmt;
use std::ops::Deref;

use crate::budget::{Reservation, STEP};
use crate::config::BareNewline;
use crate::scan::find2;

const FROM: &[u8] = b"From ";

/// Header fields that mbox readers take as the mailbox's own framing or flags, not the sender's.
const READERS_FIELDS: &[&[u8]] = &[
    b"content-length",
    b"status",
    b"x-status",
    b"x-keywords",
    b"x-uid",
    b"x-imap",
    b"x-imapbase",
    b"x-mozilla-status",
    b"x-mozilla-status2",
    b"x-mozilla-keys",
];

/// What such a field's name is stored behind.
const RENAMED: &[u8] = b"X-Original-";

/// The name of a header field as readers compare it, from the octets before its `:`: up to the
/// first NUL (Dovecot copies the name and compares it as a C string, so `Status\0x:` is
/// `Status` there), without the white space before the `:`.
pub(crate) fn field_name(before_colon: &[u8]) -> &[u8] {
    let name = before_colon.split(|&b| b == 0).next().unwrap_or_default();
    name.trim_ascii_end()
}

/// Whether a field of this name ([`field_name`]) is one of [`READERS_FIELDS`].
pub(crate) fn is_readers_field(name: &[u8]) -> bool {
    READERS_FIELDS.iter().any(|f| f.eq_ignore_ascii_case(name))
}

/// `s` without a leading [`RENAMED`] (in any case), if it has one.
pub(crate) fn strip_renamed(s: &[u8]) -> Option<&[u8]> {
    let (prefix, rest) = s.split_at_checked(RENAMED.len())?;
    prefix.eq_ignore_ascii_case(RENAMED).then_some(rest)
}

/// Why a message is not stored. Once refused, an encoder keeps nothing more.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Larger than the size limit (RFC 1870 §6.3).
    TooBig,
    /// The in-flight budget had no room for it.
    NoRoom,
    /// A bare CR or bare LF, under [`BareNewline::Reject`].
    BareNewline,
    /// Its first line starts with a space or tab, so it would continue mboxd's `Received:`
    /// header (RFC 5322 §2.2.3 folding).
    Folds,
}

/// A message in its stored form, shared by the entries of every recipient. It holds its part of
/// the in-flight budget until the last copy is dropped.
pub(crate) struct Body {
    text: Vec<u8>,
    _reservation: Reservation,
}

impl Body {
    /// A body from text already in stored form, holding no budget: for tests.
    #[cfg(test)]
    pub(crate) fn stored(text: &[u8]) -> Body {
        Body {
            text: text.to_vec(),
            _reservation: Reservation::new(&crate::budget::Budget::unlimited()),
        }
    }
}

impl Deref for Body {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.text
    }
}

impl PartialEq for Body {
    fn eq(&self, other: &Body) -> bool {
        self.text == other.text
    }
}

impl Eq for Body {}

impl fmt::Debug for Body {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const SHOWN: usize = 256;
        let shown = self.text.get(..SHOWN).unwrap_or(&self.text);
        write!(
            f,
            "Body({} bytes: {:?}{})",
            self.text.len(),
            String::from_utf8_lossy(shown),
            if shown.len() < self.text.len() {
                "..."
            } else {
                ""
            }
        )
    }
}

/// One unit of the message after line ends are recognised.
#[derive(Clone, Copy)]
enum Event {
    /// An octet that is neither CR nor LF.
    Octet(u8),
    /// CRLF.
    LineEnd,
    /// A CR not followed by LF, or a LF not preceded by CR.
    Bare,
}

/// Where the current stored line is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Line {
    /// Quoting is not decided yet: `quotes` `>` were seen, then the first `matched` octets of
    /// `From `. Nothing of the line has been written.
    Start { quotes: u64, matched: usize },
    /// Quoting is decided and what came so far is written.
    Middle,
}

const EMPTY_LINE: Line = Line::Start {
    quotes: 0,
    matched: 0,
};

/// The push encoder from message octets to the stored mboxrd body.
#[derive(Debug)]
pub(crate) struct Encoder {
    out: Vec<u8>,
    /// Covers `out`'s capacity.
    reservation: Reservation,
    policy: BareNewline,
    /// Octets pushed, kept or not.
    received: u64,
    refused: Option<Refusal>,
    /// The last octet was a CR whose LF may come next.
    cr: bool,
    /// Some event has been seen: the first line has begun.
    started: bool,
    /// No empty line yet: still in the header section.
    header: bool,
    /// A line of the header section whose `:` has not come yet: its octets so far may be a
    /// field name of [`READERS_FIELDS`].
    name_open: bool,
    /// Where the current line starts in `out`.
    line_start: usize,
    line: Line,
}

impl Encoder {
    /// An encoder applying `policy`, growing its buffer against `reservation`.
    pub(crate) fn new(policy: BareNewline, reservation: Reservation) -> Encoder {
        Encoder {
            out: Vec::new(),
            reservation,
            policy,
            received: 0,
            refused: None,
            cr: false,
            started: false,
            header: true,
            name_open: true,
            line_start: 0,
            line: EMPTY_LINE,
        }
    }

    /// Octets pushed so far, counted as sent (after dot-unstuffing for DATA), whether or not
    /// they were kept: what the size limit counts.
    pub(crate) fn received(&self) -> u64 {
        self.received
    }

    /// Why the message will not be stored, once that is known.
    pub(crate) fn refused(&self) -> Option<Refusal> {
        self.refused
    }

    /// Refuses the message: what was kept is dropped, and its budget given back. The first
    /// refusal is the one reported.
    pub(crate) fn refuse(&mut self, why: Refusal) {
        if self.refused.is_none() {
            self.refused = Some(why);
        }
        self.out = Vec::new();
        self.reservation.release();
    }

    /// Takes the next octets of the message, split anywhere.
    pub(crate) fn push(&mut self, mut input: &[u8]) {
        self.received = self.received.saturating_add(input.len() as u64);
        while self.refused.is_none() {
            if !self.cr && self.line == Line::Middle {
                // The common case: copy up to the next CR or LF at once, or in a header field's
                // name up to its `:`, which decides whether the name is renamed.
                let n = if self.name_open {
                    input
                        .iter()
                        .position(|&b| matches!(b, b'\r' | b'\n' | b':'))
                } else {
                    find2(input, b'\r', b'\n')
                };
                let n = n.unwrap_or(input.len());
                if let Some((run, rest)) = input.split_at_checked(n).filter(|_| n > 0) {
                    self.write(run);
                    input = rest;
                    continue;
                }
            }
            let Some((&b, rest)) = input.split_first() else {
                return;
            };
            input = rest;
            self.octet(b);
        }
    }

    /// The stored body: the last line terminated, then the blank line that ends an entry. Or
    /// why the message is refused.
    pub(crate) fn finish(mut self) -> Result<Body, Refusal> {
        if self.cr {
            self.cr = false;
            self.event(Event::Bare);
        }
        if self.line != EMPTY_LINE {
            self.end_line();
        }
        self.write(b"\n");
        match self.refused {
            Some(why) => Err(why),
            None => Ok(Body {
                text: self.out,
                _reservation: self.reservation,
            }),
        }
    }

    fn octet(&mut self, b: u8) {
        match (self.cr, b) {
            (true, b'\n') => {
                self.cr = false;
                self.event(Event::LineEnd);
            }
            // The earlier CR was bare; this one may still start a CRLF.
            (true, b'\r') => self.event(Event::Bare),
            (true, _) => {
                self.cr = false;
                self.event(Event::Bare);
                self.event(Event::Octet(b));
            }
            (false, b'\r') => self.cr = true,
            (false, b'\n') => self.event(Event::Bare),
            (false, _) => self.event(Event::Octet(b)),
        }
    }

    fn event(&mut self, event: Event) {
        if self.refused.is_some() {
            return;
        }
        let event = match (event, self.policy) {
            (Event::Bare, BareNewline::Reject) => return self.refuse(Refusal::BareNewline),
            // Inside the header section only CRLF may end a line: what the client sent as one
            // line stays one line.
            (Event::Bare, BareNewline::Normalize) if self.header => Event::Octet(b' '),
            (Event::Bare, BareNewline::Normalize) => Event::LineEnd,
            (event, _) => event,
        };
        let first = !self.started;
        self.started = true;
        match event {
            Event::Octet(b' ' | b'\t') if first => self.refuse(Refusal::Folds),
            Event::Octet(b':') if self.name_open => {
                self.text(b':');
                self.name_open = false;
                self.rename_readers_field();
            }
            Event::Octet(b) => self.text(b),
            Event::LineEnd | Event::Bare => {
                if self.line == EMPTY_LINE {
                    // RFC 5322 §2.1: the first empty line ends the header section.
                    self.header = false;
                }
                self.end_line();
            }
        }
    }

    /// One octet of line content.
    fn text(&mut self, b: u8) {
        let Line::Start { quotes, matched } = self.line else {
            return self.write(&[b]);
        };
        if matched == 0 && b == b'>' {
            self.line = Line::Start {
                quotes: quotes.saturating_add(1),
                matched,
            };
        } else if FROM.get(matched) == Some(&b) {
            if matched + 1 < FROM.len() {
                self.line = Line::Start {
                    quotes,
                    matched: matched + 1,
                };
            } else {
                // RFC 4155 mboxrd: a line matching `^>*From ` gets one more `>`.
                self.write(b">");
                self.write_start(quotes, FROM.len());
                self.line = Line::Middle;
            }
        } else {
            self.write_start(quotes, matched);
            self.write(&[b]);
            self.line = Line::Middle;
        }
    }

    /// Ends the current line, writing what its start held back.
    fn end_line(&mut self) {
        if let Line::Start { quotes, matched } = self.line {
            self.write_start(quotes, matched);
        }
        self.write(b"\n");
        self.line = EMPTY_LINE;
        self.line_start = self.out.len();
        self.name_open = self.header;
    }

    /// The current line's name and `:` were just written: if the name is one of
    /// [`READERS_FIELDS`] (white space before the `:` allowed, as RFC 5322 §4.5's obsolete
    /// syntax does), after any number of [`RENAMED`], one more [`RENAMED`] goes before it. The
    /// name ends at a NUL ([`field_name`]), as Dovecot reads it.
    fn rename_readers_field(&mut self) {
        let end = self.out.len().saturating_sub(1);
        let Some(name) = self.out.get(self.line_start..end) else {
            return;
        };
        if self.refused.is_some() {
            return;
        }
        let mut name = field_name(name);
        while let Some(rest) = strip_renamed(name) {
            name = rest;
        }
        if is_readers_field(name) && self.room(RENAMED.len()) {
            let at = self.line_start;
            self.out.splice(at..at, RENAMED.iter().copied());
        }
    }

    /// Writes `quotes` `>` and the first `matched` octets of `From `.
    fn write_start(&mut self, quotes: u64, matched: usize) {
        if quotes == 0 && matched == 0 {
            // Nothing held back: the start of almost every line.
            return;
        }
        let quotes = usize::try_from(quotes).unwrap_or(usize::MAX);
        if quotes > 0 && self.room(quotes) {
            self.out.resize(self.out.len() + quotes, b'>');
        }
        self.write(FROM.get(..matched).unwrap_or(FROM));
    }

    fn write(&mut self, bytes: &[u8]) {
        if self.room(bytes.len()) {
            self.out.extend_from_slice(bytes);
        }
    }

    /// Makes room for `n` more bytes, reserving the grown capacity from the budget first; false
    /// (having refused the message) if the budget has no room.
    fn room(&mut self, n: usize) -> bool {
        if self.refused.is_some() {
            return false;
        }
        let len = self.out.len();
        let needed = len.saturating_add(n);
        if needed <= self.out.capacity() {
            return true;
        }
        // Grow by an eighth (at least a step): few reallocations, little unused capacity. When
        // the budget cannot give that much, what is needed now may still fit.
        let wanted = needed.max(len.saturating_add((len / 8).max(STEP as usize)));
        if !self.reservation.cover(wanted as u64) && !self.reservation.cover(needed as u64) {
            self.refuse(Refusal::NoRoom);
            return false;
        }
        // The reservation is whole steps; the buffer may use all of it.
        let capacity = usize::try_from(self.reservation.bytes()).unwrap_or(wanted);
        self.out.reserve_exact(capacity - len);
        true
    }
}

#[cfg(test)]
#[path = "body_tests.rs"]
mod tests;
