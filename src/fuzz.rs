//! Entry points for fuzzing the protocol core without sockets, compiled only for fuzzing
//! (`cargo fuzz` sets `cfg(fuzzing)`; the `fuzzing` feature does the same for other tools) and
//! for this crate's own tests.
//!
//! It exists so a fuzz crash is a production crash: [`session`] drives the same [`Protocol`]
//! (input buffer, framer, session) that `connection.rs` drives, splitting the input into reads of
//! fuzzer-chosen sizes as a socket would; [`message`] runs the same DATA and BDAT decoding and mbox
//! formatting a delivery runs; [`command`] the command parser. Each checks the invariants the rest
//! of the server relies on and panics only if the core has a bug.

use std::sync::Arc;

use crate::directory::Directory;
use crate::framer::{Frame, Framer, Mode, Status};
use crate::protocol::{Event, Protocol};
use crate::session::{Session, SessionConfig};
use crate::writer::Outcome;
use crate::{data, mbox};

/// A catch-all session configuration for `mx.test` with small limits and one alias, `list`.
pub(crate) fn config() -> Arc<SessionConfig> {
    let directory = Directory::new(
        &["mx.test".to_string()],
        None,
        &[(
            "list".to_string(),
            vec!["a".to_string(), "b@mx.test".to_string()],
        )],
    );
    Arc::new(SessionConfig {
        hostname: "mx.test".into(),
        max_message_size: 1000,
        max_recipients: 5,
        max_errors: 50,
        directory,
    })
}

/// Feeds arbitrary bytes to a session exactly as a connection does. The first byte seeds the
/// sizes of the reads the rest is split into; every delivery is accepted.
pub fn session(data: &[u8]) {
    let Some((&seed, mut rest)) = data.split_first() else {
        return;
    };
    let mut split = u32::from(seed) | 1;
    let mut core = Protocol::new(Session::new(config(), "fuzz".into()));
    loop {
        match core.poll() {
            Event::NeedInput => {}
            Event::Close => {
                check_replies(core.output());
                return;
            }
            Event::Deliver(envelope) => {
                assert!(!envelope.recipients.is_empty());
                let body = mbox::body(&envelope.message);
                // After the header's last line, the body makes the entry end in a blank line.
                assert!(body == b"\n" || body.ends_with(b"\n\n"));
                core.reply(&Outcome::Delivered.reply("fuzz"));
                continue;
            }
        }
        check_replies(core.output());
        core.clear_output();
        if rest.is_empty() {
            return;
        }
        // A read of 1 to 64 bytes (or what is left), as a socket might deliver.
        split = split.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        let space = core.space();
        assert!(!space.is_empty(), "the input buffer filled up");
        let n = rest
            .len()
            .min(space.len())
            .min(1 + (split >> 16) as usize % 64);
        space[..n].copy_from_slice(&rest[..n]);
        core.received(n);
        rest = &rest[n..];
    }
}

/// Parses arbitrary bytes as one command line.
pub fn command(data: &[u8]) {
    let _ = crate::command::parse(data);
}

/// Decodes arbitrary bytes as DATA text (through the framer, as a session does) and as one BDAT
/// message, and formats each result as an mbox entry, checking that no stored line can be taken
/// for a `From ` separator and that the entry ends cleanly.
pub fn message(data: &[u8]) {
    let mut framer = Framer::default();
    let mut decoder = data::DataDecoder::new(1 << 20);
    let mut rest = data;
    let mut done = false;
    while let Status::Complete { frame, used } = framer.frame(rest, Mode::Text) {
        let Frame::Text(piece) = frame else {
            panic!("text mode gave {frame:?}")
        };
        assert!(used > 0 && used <= rest.len());
        rest = &rest[used..];
        if decoder.push(piece) == data::DataStatus::Done {
            done = true;
            break;
        }
    }
    if done && let Ok(text) = decoder.finish() {
        assert!(text.len() <= data.len());
        check_entry(&mbox::body(&text));
    }
    // BDAT: the octets are the message, as they are.
    check_entry(&mbox::body(data));
}

fn check_entry(entry: &[u8]) {
    assert!(entry.ends_with(b"\n\n") || entry == b"\n");
    for line in entry.split(|&b| b == b'\n') {
        assert!(!line.starts_with(b"From "), "unquoted From line");
    }
}

/// Every reply line ends in CRLF, starts with a three-digit code and `-` or space, and has no
/// other CR or LF.
fn check_replies(out: &[u8]) {
    if out.is_empty() {
        return;
    }
    assert!(out.ends_with(b"\r\n"));
    for line in out[..out.len() - 2].split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        assert!(line.len() >= 4, "short reply line {line:?}");
        assert!(line[..3].iter().all(u8::is_ascii_digit));
        assert!(line[3] == b' ' || line[3] == b'-');
        assert!(!line.contains(&b'\r'));
    }
}

#[cfg(test)]
mod tests {
    //! No input makes the protocol core panic: random bytes and random mixes of real commands go
    //! through the same entry points the fuzz targets use, with fixed seeds so a failure repeats.

    /// A small deterministic generator (xorshift64*).
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    const PIECES: &[&[u8]] = &[
        b"EHLO x\r\n",
        b"HELO x\r\n",
        b"MAIL FROM:<a@b>\r\n",
        b"MAIL FROM:<> SIZE=10 BODY=8BITMIME SMTPUTF8\r\n",
        b"RCPT TO:<a@mx.test>\r\n",
        b"RCPT TO:<list@mx.test>\r\n",
        b"RCPT TO:<postmaster>\r\n",
        b"DATA\r\n",
        b".\r\n",
        b"..x\r\n",
        b"BDAT 5\r\n",
        b"BDAT 0 LAST\r\n",
        b"BDAT 3 LAST\r\n",
        b"BDAT 2000\r\n",
        b"RSET\r\n",
        b"VRFY a\r\n",
        b"EXPN list\r\n",
        b"HELP\r\n",
        b"HELP mail\r\n",
        b"NOOP\r\n",
        b"TURN\r\n",
        b"SEND FROM:<a@b>\r\n",
        b"SOML FROM:<a@b>\r\n",
        b"\r\n",
        b"\n",
        b"\r",
        b"\x00",
        b"\xff\xfe",
        b"<",
        b">",
        b"@",
        b":",
        b"\"",
        b"From x\r\n",
        "RCPT TO:<jörg@mx.test>\r\n".as_bytes(),
    ];

    #[test]
    fn random_bytes_never_panic() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        for _ in 0..5_000 {
            let len = rng.below(1200);
            let data: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            super::session(&data);
            super::command(&data);
            super::message(&data);
        }
    }

    #[test]
    fn random_command_mixes_never_panic() {
        let mut rng = Rng(42);
        for _ in 0..20_000 {
            let mut data = vec![rng.next() as u8];
            for _ in 0..rng.below(30) {
                data.extend_from_slice(PIECES[rng.below(PIECES.len())]);
                if rng.below(10) == 0 {
                    data.push(rng.next() as u8);
                }
            }
            if rng.below(20) == 0 {
                data.extend(std::iter::repeat_n(b'x', rng.below(3000)));
            }
            super::session(&data);
            super::message(&data);
        }
    }
}
