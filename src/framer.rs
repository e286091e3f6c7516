//! The push framer: where one SMTP input unit ends, decided on bytes alone, without I/O.
//!
//! It exists so the byte-level boundaries of the protocol are decided in one pure place that
//! the server and the fuzz targets both run: a command line ends at LF and may be at most 512
//! octets (RFC 5321 §4.5.3.1.4), a MAIL line 1 048 (SIZE, SMTPUTF8, AUTH) and an AUTH response line
//! 1 026 (RFC 4954 §4), and the rest of a longer one is discarded; message text is handed on a
//! line at a time (or in bounded pieces of a longer line), and a BDAT chunk is exactly the
//! number of octets its command announced (RFC 3030 §2). In the style of httparse,
//! [`Framer::frame`] looks at the bytes buffered so far and answers [`Status::Complete`] with
//! one frame and the number of bytes it used, or [`Status::Partial`] when it needs more input.
//! What the next unit is (a command, an AUTH response line, text or chunk bytes) is the
//! session's state, passed in as a [`Mode`].

/// RFC 5321 §4.5.3.1.4: a command line is at most 512 octets, CRLF included.
pub(crate) const MAX_COMMAND_LINE: usize = 512;
/// A MAIL line may be longer by what each extension offered adds for its parameter (RFC 5321
/// §4.5.3.1.4 lets extensions raise the limit): 26 octets for `SIZE=` (RFC 1870 §3, item 5), 10
/// for `SMTPUTF8` (RFC 6531 §3.1, item 5) and 500 for `AUTH=` (RFC 4954 §3, item 5). It is taken
/// whether AUTH is offered or not: the framer looks at bytes only, and a longer line harms nothing.
pub(crate) const MAX_MAIL_LINE: usize = MAX_COMMAND_LINE + 26 + 10 + 500;
/// An AUTH response line may hold the longest response of each mechanism offered (RFC 4954
/// §4: a server "MUST be able to handle the maximum encoded size" of them). PLAIN's is the
/// longest: 767 octets (RFC 4616 §2: up to 255 each for the authorization identity, the user
/// name and the password, and two NULs), 1 024 base64 characters, 1 026 octets with CRLF.
pub(crate) const MAX_RESPONSE_LINE: usize = 4 * 767_usize.div_ceil(3) + 2;
/// The longest piece of message text handed on at once: a longer line arrives in pieces. The
/// DATA decoder needs every line shorter than this to arrive whole, so the end-of-data line is
/// never split.
pub(crate) const TEXT_PIECE: usize = 4096;

/// What the session expects next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// A command line.
    Command,
    /// A response line of an AUTH exchange (RFC 4954 §4): framed as a command line of at most
    /// [`MAX_RESPONSE_LINE`] octets, whatever its first bytes.
    Response,
    /// Message text after `354`, up to and including the end-of-data line.
    Text,
    /// This many more octets of a BDAT chunk (never 0).
    Chunk(u64),
}

/// One unit of input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Frame<'a> {
    /// A command line with its line ending (which the session checks is CRLF).
    Command(&'a [u8]),
    /// A command line passed [`MAX_COMMAND_LINE`] ([`MAX_MAIL_LINE`] for MAIL,
    /// [`MAX_RESPONSE_LINE`] for an AUTH response); what follows up to its LF is discarded.
    TooLong,
    /// A line of message text with its line ending, or a [`TEXT_PIECE`]-sized part of a longer
    /// line. A piece never holds bytes of two lines.
    Text(&'a [u8]),
    /// Octets of the current BDAT chunk, at most as many as it still lacks.
    Chunk(&'a [u8]),
}

/// What [`Framer::frame`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Status<'a> {
    /// A whole frame, made of the first `used` bytes of the input.
    Complete {
        /// The frame.
        frame: Frame<'a>,
        /// How many input bytes it took; the caller drops them.
        used: usize,
    },
    /// More input is needed. The first `used` bytes were discarded (the rest of an over-long
    /// line) and may be dropped; the others must be offered again with more after them.
    Partial {
        /// How many input bytes were discarded.
        used: usize,
    },
}

/// The framer's own state: whether the rest of an over-long command line is being discarded.
#[derive(Debug, Default)]
pub(crate) struct Framer {
    discarding: bool,
}

impl Framer {
    /// Whether the rest of an over-long command line is being discarded.
    pub(crate) fn discarding(&self) -> bool {
        self.discarding
    }

    /// Finds the next frame at the start of `input`, given what the session expects.
    ///
    /// Every mode completes within [`TEXT_PIECE`] bytes, so a caller whose buffer holds at least
    /// that many never has to grow it.
    pub(crate) fn frame<'a>(&mut self, input: &'a [u8], mode: Mode) -> Status<'a> {
        match mode {
            Mode::Command => self.command(input, line_limit),
            Mode::Response => self.command(input, |_| MAX_RESPONSE_LINE),
            Mode::Text => text(input),
            Mode::Chunk(remaining) => chunk(input, remaining),
        }
    }

    /// A command line, of at most `limit(line)` octets.
    fn command<'a>(&mut self, input: &'a [u8], limit: fn(&[u8]) -> usize) -> Status<'a> {
        let mut skipped = 0;
        if self.discarding {
            match find_lf(input) {
                Some(end) => {
                    self.discarding = false;
                    skipped = end;
                }
                None => return Status::Partial { used: input.len() },
            }
        }
        let rest = suffix(input, skipped);
        let limit = limit(rest);
        let window = prefix(rest, limit);
        match find_lf(window) {
            Some(end) => Status::Complete {
                frame: Frame::Command(prefix(window, end)),
                used: skipped + end,
            },
            None if rest.len() >= limit => {
                self.discarding = true;
                Status::Complete {
                    frame: Frame::TooLong,
                    used: skipped + limit,
                }
            }
            None => Status::Partial { used: skipped },
        }
    }
}

/// The longest command line that may start with `line`: [`MAX_MAIL_LINE`] when its verb is
/// MAIL (in any case), else [`MAX_COMMAND_LINE`]. A line of fewer than four bytes is far from
/// either limit.
fn line_limit(line: &[u8]) -> usize {
    match line.get(..4) {
        Some(verb) if verb.eq_ignore_ascii_case(b"MAIL") => MAX_MAIL_LINE,
        _ => MAX_COMMAND_LINE,
    }
}

fn text(input: &[u8]) -> Status<'_> {
    let window = prefix(input, TEXT_PIECE);
    let end = match find_lf(window) {
        Some(end) => end,
        None if input.len() >= TEXT_PIECE => TEXT_PIECE,
        None => return Status::Partial { used: 0 },
    };
    Status::Complete {
        frame: Frame::Text(prefix(input, end)),
        used: end,
    }
}

fn chunk(input: &[u8], remaining: u64) -> Status<'_> {
    if input.is_empty() {
        return Status::Partial { used: 0 };
    }
    let n = input
        .len()
        .min(usize::try_from(remaining).unwrap_or(usize::MAX));
    Status::Complete {
        frame: Frame::Chunk(prefix(input, n)),
        used: n,
    }
}

/// The first `n` bytes, or all of them if there are fewer.
fn prefix(bytes: &[u8], n: usize) -> &[u8] {
    bytes.get(..n).unwrap_or(bytes)
}

/// What follows the first `n` bytes (nothing if there are fewer).
fn suffix(bytes: &[u8], n: usize) -> &[u8] {
    bytes.get(n..).unwrap_or_default()
}

/// The offset just past the first LF, if there is one.
fn find_lf(bytes: &[u8]) -> Option<usize> {
    crate::scan::find2(bytes, b'\n', b'\n').map(|i| i + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn complete(status: Status<'_>) -> (Frame<'_>, usize) {
        match status {
            Status::Complete { frame, used } => (frame, used),
            Status::Partial { used } => panic!("partial, used {used}"),
        }
    }

    #[test]
    fn command_lines_end_at_lf() {
        let mut f = Framer::default();
        let input = b"helo a.domain\r\nMAIL FROM:<a@b>\r\nRC";
        let (frame, used) = complete(f.frame(input, Mode::Command));
        assert_eq!(frame, Frame::Command(b"helo a.domain\r\n"));
        let (frame, used2) = complete(f.frame(&input[used..], Mode::Command));
        assert_eq!(frame, Frame::Command(b"MAIL FROM:<a@b>\r\n"));
        assert_eq!(
            f.frame(&input[used + used2..], Mode::Command),
            Status::Partial { used: 0 }
        );
        // A bare LF ends the line too; the session refuses it (RFC 5321 §2.3.8).
        assert_eq!(
            complete(f.frame(b"NOOP\n", Mode::Command)).0,
            Frame::Command(b"NOOP\n")
        );
    }

    #[test]
    fn a_512_octet_line_is_whole_and_a_513_octet_one_is_too_long() {
        let mut f = Framer::default();
        let mut line = vec![b'x'; MAX_COMMAND_LINE - 2];
        line.extend_from_slice(b"\r\n");
        assert_eq!(
            complete(f.frame(&line, Mode::Command)),
            (Frame::Command(&line), MAX_COMMAND_LINE)
        );
        let mut long = vec![b'x'; MAX_COMMAND_LINE - 1];
        long.extend_from_slice(b"\r\nNOOP\r\n");
        assert_eq!(
            complete(f.frame(&long, Mode::Command)),
            (Frame::TooLong, MAX_COMMAND_LINE)
        );
        // The rest of the long line ("\n") is dropped, then the next line comes.
        assert_eq!(
            complete(f.frame(&long[MAX_COMMAND_LINE..], Mode::Command)),
            (Frame::Command(b"NOOP\r\n"), 7)
        );
    }

    #[test]
    fn a_mail_line_may_be_500_octets_longer() {
        let mut f = Framer::default();
        for verb in [&b"MAIL"[..], b"mail"] {
            let mut line = verb.to_vec();
            line.resize(MAX_MAIL_LINE - 2, b'x');
            line.extend_from_slice(b"\r\n");
            assert_eq!(
                complete(f.frame(&line, Mode::Command)),
                (Frame::Command(&line), MAX_MAIL_LINE)
            );
            // Short of its LF, it is partial up to its limit, not too long at 512.
            assert_eq!(
                f.frame(&line[..MAX_MAIL_LINE - 1], Mode::Command),
                Status::Partial { used: 0 }
            );
            let mut long = verb.to_vec();
            long.resize(MAX_MAIL_LINE, b'x');
            long.extend_from_slice(b"\r\nNOOP\r\n");
            assert_eq!(
                complete(f.frame(&long, Mode::Command)),
                (Frame::TooLong, MAX_MAIL_LINE)
            );
            assert_eq!(
                complete(f.frame(&long[MAX_MAIL_LINE..], Mode::Command)),
                (Frame::Command(b"NOOP\r\n"), 8)
            );
        }
        // Other verbs keep 512, RCPT included; an AUTH response line has its own limit, also
        // one that begins with the letters MAIL (they are base64 characters).
        for (first, mode, limit) in [
            (b"RCPT", Mode::Command, MAX_COMMAND_LINE),
            (b"MAIL", Mode::Response, MAX_RESPONSE_LINE),
            (b"QUJD", Mode::Response, MAX_RESPONSE_LINE),
        ] {
            let mut line = first.to_vec();
            line.resize(limit - 2, b'x');
            line.extend_from_slice(b"\r\n");
            assert_eq!(
                complete(f.frame(&line, mode)),
                (Frame::Command(&line), limit)
            );
            line.insert(0, b'x');
            assert_eq!(complete(f.frame(&line, mode)), (Frame::TooLong, limit));
            assert_eq!(f.frame(b"\n", mode), Status::Partial { used: 1 });
        }
    }

    #[test]
    fn discarding_spans_many_inputs() {
        let mut f = Framer::default();
        let junk = vec![b'y'; 2000];
        assert_eq!(
            complete(f.frame(&junk, Mode::Command)),
            (Frame::TooLong, MAX_COMMAND_LINE)
        );
        assert_eq!(
            f.frame(&junk[MAX_COMMAND_LINE..], Mode::Command),
            Status::Partial {
                used: 2000 - MAX_COMMAND_LINE
            }
        );
        assert_eq!(f.frame(b"yyyy", Mode::Command), Status::Partial { used: 4 });
        assert_eq!(
            f.frame(b"yy\r\nQU", Mode::Command),
            Status::Partial { used: 4 }
        );
        assert_eq!(
            complete(f.frame(b"QUIT\r\n", Mode::Command)).0,
            Frame::Command(b"QUIT\r\n")
        );
    }

    #[test]
    fn text_comes_a_line_at_a_time_and_long_lines_in_pieces() {
        let mut f = Framer::default();
        assert_eq!(
            complete(f.frame(b"Subject: x\r\n.\r\n", Mode::Text)),
            (Frame::Text(b"Subject: x\r\n"), 12)
        );
        assert_eq!(f.frame(b".\r", Mode::Text), Status::Partial { used: 0 });
        let long = vec![b'z'; TEXT_PIECE + 10];
        assert_eq!(
            complete(f.frame(&long, Mode::Text)),
            (Frame::Text(&long[..TEXT_PIECE]), TEXT_PIECE)
        );
        assert_eq!(
            f.frame(&long[TEXT_PIECE..], Mode::Text),
            Status::Partial { used: 0 }
        );
    }

    #[test]
    fn chunks_take_exactly_what_was_announced() {
        let mut f = Framer::default();
        assert_eq!(
            complete(f.frame(b"abcQUIT\r\n", Mode::Chunk(3))),
            (Frame::Chunk(b"abc"), 3)
        );
        assert_eq!(
            complete(f.frame(b"ab", Mode::Chunk(3))),
            (Frame::Chunk(b"ab"), 2)
        );
        assert_eq!(f.frame(b"", Mode::Chunk(3)), Status::Partial { used: 0 });
    }
}
