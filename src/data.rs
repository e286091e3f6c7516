//! The DATA decoder: the message text between `354` and `<CRLF>.<CRLF>`, dot-unstuffed and bounded.
//!
//! It exists to keep the one subtle framing rule of SMTP in one pure, fuzzed place: only a line
//! that is exactly `.` after a CRLF ends the message (RFC 5321 §4.1.1.4), a leading dot is removed
//! from every other line (§4.5.2), and a message that grows past the size limit is read to its end
//! without being kept, so the client gets a 552 instead of a broken connection (RFC 1870 §6.3;
//! the session ends one that passes twice the limit, see `Session::discard_limit`).
//! A bare LF or a bare CR never ends the message: it goes on, with the rest of the unstuffed
//! text, to the mbox [`Encoder`], which stores the message as it arrives and applies the
//! bare-newline policy.

use crate::mbox::{Body, Encoder, Refusal};

/// What [`DataDecoder::push`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DataStatus {
    /// More input is needed.
    Partial,
    /// The end-of-data line was seen; call [`DataDecoder::finish`].
    Done,
}

/// A push decoder for the DATA phase.
///
/// Feed it the input in pieces that never join two lines: each piece ends at a LF or is cut short
/// by the framer's piece limit. The piece after a CRLF starts a new line.
#[derive(Debug)]
pub(crate) struct DataDecoder {
    encoder: Encoder,
    limit: u64,
    /// The last two bytes of input; the text starts after the CRLF that ended the DATA command.
    tail: [u8; 2],
}

impl DataDecoder {
    /// A decoder that hands the text to `encoder` and refuses a message of more than `limit`
    /// octets (counted after unstuffing).
    pub(crate) fn new(encoder: Encoder, limit: u64) -> Self {
        DataDecoder {
            encoder,
            limit,
            tail: *b"\r\n",
        }
    }

    /// Takes the next piece of input.
    pub(crate) fn push(&mut self, piece: &[u8]) -> DataStatus {
        let line_start = self.tail == *b"\r\n";
        if line_start && piece == b".\r\n" {
            return DataStatus::Done;
        }
        let text = match piece {
            [b'.', rest @ ..] if line_start => rest,
            _ => piece,
        };
        if self.encoder.received().saturating_add(text.len() as u64) > self.limit {
            self.encoder.refuse(Refusal::TooBig);
        }
        self.encoder.push(text);
        match piece {
            [.., a, b] => self.tail = [*a, *b],
            [b] => self.tail = [self.tail[1], *b],
            [] => {}
        }
        DataStatus::Partial
    }

    /// Octets of message text so far, after unstuffing: what the size limit counts.
    pub(crate) fn received(&self) -> u64 {
        self.encoder.received()
    }

    /// The stored message, or why it is refused.
    pub(crate) fn finish(self) -> Result<Body, Refusal> {
        self.encoder.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::budget::{Budget, Reservation};
    use crate::config::BareNewline;
    use crate::framer::{Frame, Framer, Mode, Status};
    use proptest::prelude::*;

    fn decoder(limit: u64) -> DataDecoder {
        let encoder = Encoder::new(
            BareNewline::Normalize,
            Reservation::new(&Budget::unlimited()),
        );
        DataDecoder::new(encoder, limit)
    }

    fn decode(pieces: &[&[u8]], limit: u64) -> (Vec<DataStatus>, Result<Vec<u8>, Refusal>) {
        let mut d = decoder(limit);
        let statuses = pieces.iter().map(|p| d.push(p)).collect();
        (statuses, d.finish().map(|b| b.to_vec()))
    }

    #[test]
    fn ends_at_dot_line_and_stores_lf() {
        let (st, body) = decode(&[b"Blah blah\r\n", b"etc.\r\n", b".\r\n"], 100);
        assert_eq!(st.last(), Some(&DataStatus::Done));
        assert_eq!(body.unwrap(), b"Blah blah\netc.\n\n");
    }

    #[test]
    fn empty_message() {
        let (st, body) = decode(&[b".\r\n"], 100);
        assert_eq!(st, vec![DataStatus::Done]);
        assert_eq!(body.unwrap(), b"\n");
    }

    #[test]
    fn dot_unstuffing_including_first_line() {
        let (_, body) = decode(&[b"..first\r\n", b"..\r\n", b"a.b\r\n", b".\r\n"], 100);
        assert_eq!(body.unwrap(), b".first\n.\na.b\n\n");
    }

    #[test]
    fn bare_lf_and_bare_cr_never_end_data() {
        let mut d = decoder(100);
        assert_eq!(d.push(b"a\n"), DataStatus::Partial);
        assert_eq!(d.push(b".\n"), DataStatus::Partial);
        assert_eq!(d.push(b"b\r\n"), DataStatus::Partial);
        assert_eq!(d.push(b"\r\n"), DataStatus::Partial);
        assert_eq!(d.push(b".\r\r\n"), DataStatus::Partial);
        assert_eq!(d.push(b".\r\n"), DataStatus::Done);
        // After a bare LF a leading dot is not stuffing, so it is kept. In the header section
        // the bare LFs are spaces; in the body the bare CR ends a line.
        assert_eq!(d.received(), 12);
        assert_eq!(d.finish().unwrap().to_vec(), b"a . b\n\n\n\n\n");
    }

    #[test]
    fn piece_cut_by_buffer_limit_is_not_a_line_start() {
        let mut d = decoder(100);
        d.push(b"abc");
        d.push(b".\r\n");
        d.push(b".\r\n");
        assert_eq!(d.finish().unwrap().to_vec(), b"abc.\n\n");
        // A CRLF split across two pieces still ends the line.
        let mut d = decoder(100);
        d.push(b"abc\r");
        d.push(b"\n");
        assert_eq!(d.push(b".\r\n"), DataStatus::Done);
        assert_eq!(d.finish().unwrap().to_vec(), b"abc\n\n");
    }

    #[test]
    fn oversize_is_counted_not_kept() {
        let (st, body) = decode(&[b"0123456789\r\n", b"0123456789\r\n", b".\r\n"], 15);
        assert_eq!(st.last(), Some(&DataStatus::Done));
        assert_eq!(body, Err(Refusal::TooBig));
        // The limit counts octets as sent (CRLF included), not as stored.
        let (_, body) = decode(&[b"0123456789\r\n", b".\r\n"], 12);
        assert_eq!(body.unwrap(), b"0123456789\n\n");
        let (_, body) = decode(&[b"0123456789\r\n", b".\r\n"], 11);
        assert_eq!(body, Err(Refusal::TooBig));
    }

    /// Dot-stuffs `message` as a client does (RFC 5321 §4.5.2) and appends the end-of-data
    /// line: `dot_stuff` in tests/support.
    fn dot_stuff(message: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        for line in message.split_inclusive(|&b| b == b'\n') {
            if line.starts_with(b".") {
                out.push(b'.');
            }
            out.extend_from_slice(line);
        }
        out.extend_from_slice(b".\r\n");
        out
    }

    /// The DATA input through the framer and the decoder as a session reads it: into a buffer
    /// of the protocol's size, `reads` bytes at a time. The stored body, and how much input
    /// was left after the end-of-data line.
    fn receive(input: &[u8], reads: &[usize]) -> (Result<Vec<u8>, Refusal>, usize) {
        let mut framer = Framer::default();
        let mut d = decoder(1 << 20);
        let mut buffer: Vec<u8> = Vec::new();
        let mut rest = input;
        let mut sizes = reads.iter().cycle();
        loop {
            let n = rest
                .len()
                .min(crate::protocol::INPUT_BUFFER - buffer.len())
                .min(sizes.next().map_or(usize::MAX, |&n| n.max(1)));
            buffer.extend_from_slice(&rest[..n]);
            rest = &rest[n..];
            let mut start = 0;
            while let Status::Complete { frame, used } = framer.frame(&buffer[start..], Mode::Text)
            {
                let Frame::Text(piece) = frame else {
                    panic!("{frame:?}")
                };
                start += used;
                if d.push(piece) == DataStatus::Done {
                    let left = buffer.len() - start + rest.len();
                    return (d.finish().map(|b| b.to_vec()), left);
                }
            }
            buffer.drain(..start);
            assert!(
                !rest.is_empty(),
                "the input ended before the end-of-data line"
            );
        }
    }

    /// Lines without CR or LF, often starting with `.` or `From `, long ones too, with CRLF.
    fn message() -> impl Strategy<Value = Vec<u8>> {
        let line = (
            prop_oneof![
                Just(&b""[..]),
                Just(&b"."[..]),
                Just(&b".."[..]),
                Just(&b">From "[..])
            ],
            prop::collection::vec(
                any::<u8>().prop_filter("no CR/LF", |b| *b != b'\r' && *b != b'\n'),
                0..8,
            ),
            prop_oneof![4 => Just(0usize), 1 => 1usize..9000],
        )
            .prop_map(|(start, rest, long)| {
                let mut line = start.to_vec();
                line.extend_from_slice(&rest);
                line.resize(line.len() + long, b'.');
                line.extend_from_slice(b"\r\n");
                line
            });
        prop::collection::vec(line, 0..10).prop_map(|lines| lines.concat())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        /// Dot-stuffing then decoding through the framer gives the message back (as stored:
        /// quoted, LF line ends), however the reads split it; nothing after the end is taken.
        #[test]
        fn dot_stuffing_then_decoding_is_the_identity(
            message in message(),
            reads in prop::collection::vec(1usize..5000, 1..6),
            after in prop::collection::vec(any::<u8>(), 0..20),
        ) {
            prop_assume!(!message.starts_with(b" ") && !message.starts_with(b"\t"));
            let mut input = dot_stuff(&message);
            input.extend_from_slice(&after);
            let (body, left) = receive(&input, &reads);
            prop_assert_eq!(left, after.len());
            prop_assert_eq!(crate::fuzz::unquote(&body.unwrap()), message);
        }
    }
}
