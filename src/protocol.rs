//! The protocol core as one value: input bytes in, reply bytes and deliveries out, no I/O.
//!
//! It exists so the connection loop and the fuzz targets run exactly the same code. A
//! [`Protocol`] owns a bounded input buffer (512 bytes until the first message, refused BDAT
//! chunk, or longer MAIL line or AUTH response, then 8 KiB), the [`Framer`] and the [`Session`]; its caller only
//! copies socket bytes into [`Protocol::space`], calls [`Protocol::poll`], writes
//! [`Protocol::output`] when told, and carries out deliveries. Replies to a pipelined group of
//! commands pile up in the output until the next step needs more input: that is the moment
//! `poll` returns [`Event::NeedInput`], and so the moment replies are written (RFC 2920
//! §3.2: batch replies, but never hold them while waiting for input). A group longer than the
//! input buffer needs more input before its end, so it is answered a buffer-full at a time;
//! where a command comes next, replies past [`MAX_OUTPUT`] are written before the rest of the
//! group is handled ([`Event::Flush`]). The output is
//! also written before a `--fail` delay ([`Event::Delay`]), a wait of the server's own, and
//! before a message is handed over ([`Event::Deliver`]), whose verdict the writer then sends
//! itself.

use std::time::Duration;

use crate::framer::{Frame, Framer, MAX_COMMAND_LINE, Mode, Status, TEXT_PIECE};
use crate::reply::{Reply, write_reply};
use crate::session::{Action, Envelope, Session};

/// The input buffer's size inside a message. Every frame completes within [`TEXT_PIECE`] bytes,
/// so a buffer of twice that always has room to read into.
pub(crate) const INPUT_BUFFER: usize = 2 * TEXT_PIECE;
/// The input buffer's size until a session's first message, while only commands are read. A
/// command frame other than MAIL completes within [`MAX_COMMAND_LINE`] bytes, so a buffer that
/// size has room for the rest of a partial one; a partial MAIL line or AUTH response that fills
/// it (one longer than 512 octets, see [`MAX_MAIL_LINE`](crate::framer::MAX_MAIL_LINE) and
/// [`MAX_RESPONSE_LINE`](crate::framer::MAX_RESPONSE_LINE)) makes it grow to
/// [`INPUT_BUFFER`]. 1 000 idle sessions that have sent no message then hold half a MiB of
/// input buffers, not 8 MiB; a pipelined group longer than this before the first message takes
/// a read more per 512 bytes.
pub(crate) const COMMAND_BUFFER: usize = MAX_COMMAND_LINE;

/// The output capacity kept between replies: an EHLO reply with names of ordinary length fits
/// (a longer one grows it for that reply).
const KEPT_OUTPUT: usize = 512;

/// The replies held, where a command comes next, before the core stops for them to be written
/// ([`Event::Flush`]): a buffer-full of pipelined HELPs would otherwise be answered with over
/// 20 times as many octets, all held while a client that does not read keeps the write waiting.
pub(crate) const MAX_OUTPUT: usize = 4096;

/// What the caller must do next.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Event {
    /// Write the output, then read more input into [`Protocol::space`].
    NeedInput,
    /// Write the output, then deliver this message. In the server the writer sends the verdict's
    /// reply itself; the tests and the fuzz harness give it to [`Protocol::reply`].
    Deliver(Box<Envelope>),
    /// Write the output, then close the connection.
    Close,
    /// Write the output, wait this long (a `--fail` delay), then poll again.
    Delay(Duration),
    /// Write the output, then poll again: it reached [`MAX_OUTPUT`] with input still to handle.
    Flush,
}

/// One session's protocol core with its buffers.
#[derive(Debug)]
pub(crate) struct Protocol {
    session: Session,
    framer: Framer,
    /// Empty until the first read, then [`COMMAND_BUFFER`] bytes until the first message, then
    /// [`INPUT_BUFFER`] (see [`Protocol::space`]).
    input: Box<[u8]>,
    /// Unread input is `input[start..end]`.
    start: usize,
    end: usize,
    output: Vec<u8>,
    /// Frames handled so far (wrapping: only compared for a change).
    progress: u32,
    /// Messages begun so far (a 354, a first BDAT chunk, a refused chunk), wrapping.
    messages: u32,
    /// Where in the output the reply that began the latest message (its 354) starts.
    message_reply_at: usize,
    /// Octets of the command lines handled inside a message (between BDAT chunks: the next
    /// BDAT, a NOOP, the discarded rest of an over-long line), wrapping: they are not the
    /// message's octets.
    commands_in_message: u64,
    /// An action still to carry out (after a delay, or the session's first), and whether the
    /// session used EHLO when it was made.
    pending: Option<(Action, bool)>,
}

impl Protocol {
    /// A core for `session`; the first [`Protocol::poll`] puts its greeting in the output.
    pub(crate) fn new(mut session: Session) -> Self {
        let first = session.open();
        Protocol {
            session,
            framer: Framer::default(),
            input: Box::default(),
            start: 0,
            end: 0,
            output: Vec::new(),
            progress: 0,
            messages: 0,
            message_reply_at: 0,
            commands_in_message: 0,
            pending: Some((first, false)),
        }
    }

    /// Where to put the next input bytes; then call [`Protocol::received`]. Never empty.
    ///
    /// The buffer is allocated at the first read with [`COMMAND_BUFFER`] bytes, and grows to
    /// [`INPUT_BUFFER`] when the first message or BDAT chunk comes (large reads for large
    /// messages), refused or not, or a MAIL line or AUTH response fills it, where it stays: a session that never sends a message
    /// (most idle ones) keeps only the small one.
    /// It is not shrunk after each message: that would cost an allocation and the zeroing of
    /// 8 KiB per message (about 10% more instructions for 1 KiB messages, counted with
    /// callgrind).
    pub(crate) fn space(&mut self) -> &mut [u8] {
        let unread = self.end - self.start;
        let wanted = match self.session.mode() {
            Mode::Command | Mode::Response if unread < COMMAND_BUFFER => COMMAND_BUFFER,
            Mode::Command | Mode::Response | Mode::Text | Mode::Chunk(_) => INPUT_BUFFER,
        };
        if self.input.len() < wanted {
            let mut input = vec![0; wanted].into_boxed_slice();
            // The unread bytes are fewer than the old buffer's length, so they fit.
            if let (Some(to), Some(from)) = (
                input.get_mut(..unread),
                self.input.get(self.start..self.end),
            ) {
                to.copy_from_slice(from);
            }
            self.input = input;
            self.start = 0;
            self.end = unread;
        } else if self.start > 0 {
            self.input.copy_within(self.start..self.end, 0);
            self.end = unread;
            self.start = 0;
        }
        // `end` never passes the buffer's length (see `received`), and `poll` stops only when
        // the unread bytes make no whole frame: fewer than the buffer holds in every mode.
        self.input.get_mut(self.end..).unwrap_or_default()
    }

    /// Records that `n` bytes were written at the start of [`Protocol::space`].
    pub(crate) fn received(&mut self, n: usize) {
        self.end = (self.end + n).min(self.input.len());
    }

    /// Runs the framer and the session over the buffered input until a delivery, the close, or
    /// the need for more input.
    pub(crate) fn poll(&mut self) -> Event {
        if let Some((action, enhanced)) = self.pending.take()
            && let Some(event) = self.act(action, enhanced)
        {
            return event;
        }
        loop {
            if self.session.is_closed() {
                return Event::Close;
            }
            // Only where a command comes next (between BDAT chunks too): inside message text or
            // a chunk, replies are a few short lines a read.
            if self.output.len() >= MAX_OUTPUT && self.session.mode() == Mode::Command {
                return Event::Flush;
            }
            let mode = self.session.mode();
            let unread = self.input.get(self.start..self.end).unwrap_or_default();
            let was_discarding = self.framer.discarding();
            let status = self.framer.frame(unread, mode);
            // An over-long command line is one command for the clocks: its `TooLong` frame is
            // not progress, the end of its discarded rest is (else the rest got a whole
            // `--timeout` of its own). A `TooLong` found while discarding is the next line's,
            // so the last one ended.
            let too_long = matches!(
                status,
                Status::Complete {
                    frame: Frame::TooLong,
                    ..
                }
            );
            if was_discarding && (too_long || !self.framer.discarding()) {
                self.progress = self.progress.wrapping_add(1);
            }
            let (frame, used) = match status {
                Status::Partial { used } => {
                    // Only a discarded over-long command line is used without a frame: inside a
                    // message (between BDAT chunks), not the message's octets either.
                    if self.session.in_message() {
                        self.commands_in_message =
                            self.commands_in_message.wrapping_add(used as u64);
                    }
                    self.start += used;
                    return Event::NeedInput;
                }
                Status::Complete { frame, used } => (frame, used),
            };
            let enhanced = self.session.enhanced();
            let was_in_message = self.session.in_message();
            if was_in_message && matches!(frame, Frame::Command(_) | Frame::TooLong) {
                self.commands_in_message = self.commands_in_message.wrapping_add(used as u64);
            }
            let action = self.session.handle(frame);
            self.start += used;
            if !too_long {
                self.progress = self.progress.wrapping_add(1);
            }
            if !was_in_message && self.session.in_message() {
                self.messages = self.messages.wrapping_add(1);
                self.message_reply_at = self.output.len();
            }
            if let Some(event) = self.act(action, enhanced) {
                return event;
            }
        }
    }

    /// Carries out what the session asked for; the event for the caller, if there is one.
    /// `enhanced`: the session used EHLO before the frame that led to `action`.
    fn act(&mut self, action: Action, enhanced: bool) -> Option<Event> {
        match action {
            Action::Continue => None,
            Action::Reply(r) => {
                self.reply(&r);
                None
            }
            Action::Close(r) => {
                // The closed session has forgotten its EHLO; the last reply has not.
                write_reply(&mut self.output, &r, enhanced);
                Some(Event::Close)
            }
            Action::Deliver(envelope) => Some(Event::Deliver(envelope)),
            // The session is closed: no reply is added.
            Action::Drop => Some(Event::Close),
            Action::Delayed(pause, action) => {
                self.pending = Some((*action, enhanced));
                Some(Event::Delay(pause))
            }
        }
    }

    /// Adds a reply to the output, with enhanced codes if the session uses them.
    pub(crate) fn reply(&mut self, r: &Reply) {
        write_reply(&mut self.output, r, self.session.enhanced());
    }

    /// Whether replies carry enhanced status codes (the latest HELO or EHLO was EHLO).
    pub(crate) fn enhanced(&self) -> bool {
        self.session.enhanced()
    }

    /// The reply bytes waiting to be written.
    pub(crate) fn output(&self) -> &[u8] {
        &self.output
    }

    /// Forgets the output once it is written. A large output (a long pipelined group's
    /// replies) gives its memory back, so an idle session keeps at most [`KEPT_OUTPUT`] bytes.
    pub(crate) fn clear_output(&mut self) {
        self.output.clear();
        // A reply that begins a message and is not written yet comes after this.
        self.message_reply_at = 0;
        self.output.shrink_to(KEPT_OUTPUT);
    }

    /// How many frames (command lines, text pieces, chunk parts) were handled so far, an
    /// over-long command line counting once, when its end is read: when it has moved on, a wait
    /// for the next command has begun.
    pub(crate) fn progress(&self) -> u32 {
        self.progress
    }

    /// True while a message is being received: shutdown gives such a session its grace.
    pub(crate) fn in_message(&self) -> bool {
        self.session.in_message()
    }

    /// Takes back the reply that began the latest message (its 354) and any reply after it,
    /// while they are not yet written: the replies before it, the last message's verdict among
    /// them, stay.
    pub(crate) fn unannounce(&mut self) {
        self.output.truncate(self.message_reply_at);
    }

    /// How many octets of command lines were handled inside messages so far (wrapping: only
    /// differences count). A message's rate counts what it read less these: NOOPs sent between
    /// BDAT chunks kept a two-octet message open for as long as they came.
    pub(crate) fn commands_in_message(&self) -> u64 {
        self.commands_in_message
    }

    /// How many messages have begun so far (wrapping: only compared for a change). One ends
    /// and the next begins within one [`Protocol::poll`] when a client pipelines them, so
    /// [`Protocol::in_message`] alone cannot tell them apart.
    pub(crate) fn messages(&self) -> u32 {
        self.messages
    }
}

#[cfg(test)]
mod properties {
    //! Splitting the input at any byte boundaries never changes the replies or what is stored.

    use super::*;
    use proptest::prelude::*;

    /// A delivered message: its sender, mailboxes and text.
    type Stored = (Option<String>, Vec<String>, Vec<u8>);

    /// Runs `input` through a core in reads of the given sizes (cycled); returns every reply
    /// byte and every delivered message.
    fn run(input: &[u8], sizes: &[usize]) -> (Vec<u8>, Vec<Stored>) {
        let driven = drive(0, input, sizes, &Reply::new(250, "2.0.0", "stored"));
        let stored = driven.delivered.into_iter().map(|e| {
            let to = e.recipients.iter().map(|(m, _)| m.clone()).collect();
            (e.sender, to, e.body.to_vec())
        });
        (driven.replies, stored.collect())
    }

    const PIECES: &[&[u8]] = &[
        b"EHLO client.test\r\n",
        b"HELO client.test\r\n",
        b"MAIL FROM:<a@b.test>\r\n",
        b"MAIL FROM:<> BODY=8BITMIME\r\n",
        b"RCPT TO:<x@mx.test>\r\n",
        b"RCPT TO:<list@mx.test>\r\n",
        b"RCPT TO:<nobody@elsewhere.test>\r\n",
        b"DATA\r\n",
        b"Subject: s\r\n\r\nbody\r\n",
        b"..stuffed\r\nFrom here\r\n",
        b"bare\nlf and bare\rcr\r\n",
        b".\r\n",
        b"BDAT 7\r\nchunk\r\n",
        b"BDAT 5 LAST\r\nlast.",
        b"BDAT 0 LAST\r\n",
        b"RSET\r\n",
        b"NOOP\r\n",
        b"VRFY x\r\n",
        b"FROB\r\n",
        b"HELO x\n",
    ];

    fn script() -> impl Strategy<Value = Vec<u8>> {
        prop::collection::vec(prop::sample::select(PIECES), 0..40)
            .prop_map(|pieces| pieces.concat())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn any_split_gives_the_same_replies_and_messages(
            input in script(),
            sizes in prop::collection::vec(1usize..40, 1..16),
        ) {
            let whole = run(&input, &[usize::MAX]);
            prop_assert_eq!(run(&input, &sizes), whole);
        }

        #[test]
        fn any_split_of_arbitrary_bytes_gives_the_same_replies(
            input in prop::collection::vec(any::<u8>(), 0..2000),
            sizes in prop::collection::vec(1usize..600, 1..8),
        ) {
            let whole = run(&input, &[usize::MAX]);
            prop_assert_eq!(run(&input, &sizes), whole);
        }
    }
}

/// What [`drive`] saw of a session.
#[cfg(test)]
pub(crate) struct Driven {
    /// Every reply byte, in order.
    pub(crate) replies: Vec<u8>,
    /// Every message handed over for delivery.
    pub(crate) delivered: Vec<Envelope>,
    /// The session closed (rather than running out of input).
    pub(crate) closed: bool,
    /// A `--fail` delay fired (and was skipped).
    pub(crate) delayed: bool,
}

/// Runs `input` through a core with the fuzz configuration of `seed`, as a connection would
/// with no clock: reads of the given sizes (cycled), delays skipped, every delivery answered
/// with `answer`. The test driver of the core for most unit tests of this module and for the
/// fuzz module's (a few tests here drive it by hand).
#[cfg(test)]
pub(crate) fn drive(seed: u8, input: &[u8], sizes: &[usize], answer: &Reply) -> Driven {
    let mut core = Protocol::new(Session::new(crate::fuzz::config(seed), "t".into()));
    let mut driven = Driven {
        replies: Vec::new(),
        delivered: Vec::new(),
        closed: false,
        delayed: false,
    };
    let (mut rest, mut sizes) = (input, sizes.iter().cycle());
    loop {
        match core.poll() {
            Event::Deliver(envelope) => {
                driven.delivered.push(*envelope);
                core.reply(answer);
                continue;
            }
            Event::Close => {
                driven.closed = true;
                break;
            }
            Event::Delay(_) => {
                driven.delayed = true;
                continue;
            }
            Event::Flush => {
                driven.replies.extend_from_slice(core.output());
                core.clear_output();
                continue;
            }
            Event::NeedInput => {}
        }
        driven.replies.extend_from_slice(core.output());
        core.clear_output();
        if rest.is_empty() {
            break;
        }
        let space = core.space();
        let n = rest.len().min(space.len()).min(*sizes.next().unwrap_or(&1));
        space[..n].copy_from_slice(&rest[..n]);
        core.received(n);
        rest = &rest[n..];
    }
    driven.replies.extend_from_slice(core.output());
    driven
}

#[cfg(test)]
#[path = "protocol_tests.rs"]
mod tests;
