//! Entry points for fuzzing the protocol core without sockets, compiled only for fuzzing
//! (`cargo fuzz` sets `cfg(fuzzing)`; the `fuzzing` feature does the same for other tools) and
//! for this crate's own tests.
//!
//! It exists so a fuzz crash is a production crash: [`session`] drives the same `Protocol`
//! (input buffer, framer, session) that `connection.rs` drives, splitting the input into reads of
//! fuzzer-chosen sizes as a socket would; [`message`] runs the same DATA decoding and streaming
//! mbox encoding a session runs, on input split at fuzzer-chosen places; [`command`] the command
//! parser. Each checks the invariants the rest of the server relies on and panics only if the
//! core has a bug.
//!
//! Like the tests, and unlike the rest of the library, it may index, slice and `expect`: it is a
//! harness whose panics are its findings, and it is never compiled into the server.
#![allow(
    clippy::indexing_slicing,
    clippy::string_slice,
    clippy::unwrap_used,
    clippy::expect_used
)]

use std::sync::Arc;

use crate::budget::{Budget, Reservation};
use crate::config::BareNewline;
use crate::data::{DataDecoder, DataStatus};
use crate::directory::Directory;
use crate::fail::{FailRule, Faults};
use crate::framer::{Frame, Framer, Mode, Status};
use crate::mbox::{Encoder, Refusal};
use crate::protocol::{Event, Protocol};
use crate::session::{Session, SessionConfig};
use crate::writer::Outcome;

/// `--fail` rules that fire only on names ordinary input rarely makes, so the fuzzer reaches
/// every fault path (a drop, a delay, refusals, a 421 close, a refused message) without every
/// session being refused. With `refused`, a `connect` rule also refuses about half the
/// sessions' greetings, by the seed.
fn fail_rules(refused: bool) -> Vec<FailRule> {
    let mut rules = vec![
        "helo:drop*=drop",
        "mail:slow*=delay:1ms",
        "rcpt:busy*=450",
        "rcpt:full*=452,count=2",
        "data:xx*=421",
        "data-end:yy*=552 too big",
    ];
    if refused {
        rules.push("connect=554,p=0.5");
    }
    rules
        .iter()
        .map(|r| FailRule::parse(r).expect("the rules above are valid"))
        .collect()
}

/// A catch-all session configuration for `mx.test` with small limits, one alias, `list`, and
/// AUTH accepting any password (so the SASL exchange is fuzzed too); and the `--fail` rules
/// of [`fail_rules`], their generator seeded with `seed`.
pub(crate) fn config(seed: u8) -> Arc<SessionConfig> {
    let directory = Directory::new(
        &["mx.test".to_string()],
        None,
        &[(
            "list".to_string(),
            vec!["a".to_string(), "b@mx.test".to_string()],
        )],
    );
    Arc::new(SessionConfig {
        auth: crate::session::Policy {
            accounts: crate::config::Auth::AcceptAny,
            required: false,
        },
        faults: Faults::with(&fail_rules(seed & 2 != 0), u64::from(seed), "mx.test"),
        ..SessionConfig::for_tests("mx.test", directory)
    })
}

/// Feeds arbitrary bytes to a session exactly as a connection does. The first byte seeds the
/// sizes of the reads the rest is split into and the `--fail` rules (see `config`); every
/// delivery is accepted.
pub fn session(data: &[u8]) {
    let Some((&seed, mut rest)) = data.split_first() else {
        return;
    };
    let mut split = u32::from(seed) | 1;
    let mut core = Protocol::new(Session::new(config(seed), "fuzz".into()));
    loop {
        match core.poll() {
            Event::NeedInput => {}
            Event::Delay(_) => continue,
            Event::Flush => {
                check_replies(core.output());
                core.clear_output();
                continue;
            }
            Event::Close => {
                check_replies(core.output());
                return;
            }
            Event::Deliver(envelope) => {
                assert!(!envelope.recipients.is_empty());
                check_entry(&envelope.body);
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

/// Encodes arbitrary bytes as a BDAT message and decodes them as DATA text (through the framer,
/// as a session does), under both bare-newline policies, the input split where the first byte
/// says. Checks that the stored bytes do not depend on the split; that the DATA result is the
/// encoding of the text a reference unstuffer finds; and `check_stored` on every result.
pub fn message(data: &[u8]) {
    let Some((&seed, data)) = data.split_first() else {
        return;
    };
    for policy in [BareNewline::Normalize, BareNewline::Reject] {
        let whole = encode(policy, &[data]);
        assert_eq!(
            encode(policy, &split(data, seed)),
            whole,
            "split changed the body"
        );
        check_stored(policy, data, &whole);
        let decoded = decode_data(policy, data);
        match unstuff(data) {
            Some(text) => {
                let expected = encode(policy, &[&text]);
                assert_eq!(decoded, Some(expected.clone()));
                check_stored(policy, &text, &expected);
            }
            None => assert_eq!(decoded, None, "DATA ended where the reference did not"),
        }
    }
}

/// Runs `pieces` through one encoder with an unlimited budget.
pub(crate) fn encode(policy: BareNewline, pieces: &[&[u8]]) -> Result<Vec<u8>, Refusal> {
    let mut encoder = Encoder::new(policy, Reservation::new(&Budget::unlimited()));
    for piece in pieces {
        encoder.push(piece);
    }
    encoder.finish().map(|body| body.to_vec())
}

/// `data` cut into pieces of 0 to 63 bytes, sizes drawn from `seed`.
pub(crate) fn split(data: &[u8], seed: u8) -> Vec<&[u8]> {
    let mut state = u32::from(seed) | 1;
    let mut pieces = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        state = state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        let n = rest.len().min((state >> 16) as usize % 64);
        let (piece, tail) = rest.split_at(n);
        pieces.push(piece);
        rest = tail;
    }
    pieces
}

/// DATA text through the framer and the decoder: the result once the end-of-data line is
/// seen, `None` if the input ends first.
fn decode_data(policy: BareNewline, data: &[u8]) -> Option<Result<Vec<u8>, Refusal>> {
    let mut framer = Framer::default();
    let encoder = Encoder::new(policy, Reservation::new(&Budget::unlimited()));
    let mut decoder = DataDecoder::new(encoder, 1 << 20);
    let mut rest = data;
    while let Status::Complete { frame, used } = framer.frame(rest, Mode::Text) {
        let Frame::Text(piece) = frame else {
            panic!("text mode gave {frame:?}")
        };
        assert!(used > 0 && used <= rest.len());
        rest = &rest[used..];
        if decoder.push(piece) == DataStatus::Done {
            return Some(decoder.finish().map(|body| body.to_vec()));
        }
    }
    None
}

/// The reference unstuffer (RFC 5321 §4.5.2), byte by byte: the message text before the first
/// `.` line after a CRLF (or the start), a leading dot removed from every other such line.
/// `None` if there is no end-of-data line.
pub(crate) fn unstuff(data: &[u8]) -> Option<Vec<u8>> {
    let mut text = Vec::new();
    let mut i = 0;
    let line_start = |i: usize| i == 0 || (i >= 2 && data.get(i - 2..i) == Some(b"\r\n"));
    while i < data.len() {
        if line_start(i) && data.get(i..i + 3) == Some(b".\r\n") {
            return Some(text);
        }
        if !(line_start(i) && data[i] == b'.') {
            text.push(data[i]);
        }
        i += 1;
    }
    None
}

/// A CR not followed by LF or a LF not preceded by CR anywhere in `text`.
pub(crate) fn has_bare_newline(text: &[u8]) -> bool {
    text.iter().enumerate().any(|(i, &b)| {
        (b == b'\r' && text.get(i + 1) != Some(&b'\n'))
            || (b == b'\n' && (i == 0 || text[i - 1] != b'\r'))
    })
}

/// Undoes mboxrd storage: one `>` off every line matching `^>+From `, one `X-Original-` off
/// every header line renamed for mbox readers, LF back to CRLF, and the entry's closing blank
/// line dropped.
pub(crate) fn unquote(stored: &[u8]) -> Vec<u8> {
    let stored = stored.strip_suffix(b"\n").unwrap_or(stored);
    let mut text = Vec::new();
    let mut header = true;
    for line in stored.split_inclusive(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        let quotes = line.iter().take_while(|&&b| b == b'>').count();
        let quoted = quotes > 0 && line[quotes..].starts_with(b"From ");
        let line = if quoted { &line[1..] } else { line };
        text.extend_from_slice(if header {
            crate::mbox::unrenamed(line)
        } else {
            line
        });
        text.extend_from_slice(b"\r\n");
        header &= !line.is_empty();
    }
    text
}

/// What the stored form of `input` must be under `policy`, whatever the split.
pub(crate) fn check_stored(policy: BareNewline, input: &[u8], stored: &Result<Vec<u8>, Refusal>) {
    let folds = match input {
        [b' ' | b'\t', ..] => true,
        // Under normalize, a bare CR or LF first becomes a space.
        [b'\n', ..] | [b'\r'] => policy == BareNewline::Normalize,
        [b'\r', next, ..] => *next != b'\n' && policy == BareNewline::Normalize,
        [] => false,
        [_, ..] => false,
    };
    let bare = has_bare_newline(input);
    let stored = match stored {
        Ok(stored) => stored,
        Err(Refusal::Folds) => return assert!(folds, "refused as folding: {input:?}"),
        Err(Refusal::BareNewline) => {
            return assert!(policy == BareNewline::Reject && bare, "{input:?}");
        }
        Err(why) => panic!("unexpected refusal {why:?}"),
    };
    assert!(!folds, "a folding first line was stored: {input:?}");
    assert!(policy == BareNewline::Normalize || !bare);
    check_entry(stored);
    if !bare {
        // Quoting then unquoting is the identity; the last line gains its CRLF.
        let mut canonical = input.to_vec();
        if !canonical.is_empty() && !canonical.ends_with(b"\r\n") {
            canonical.extend_from_slice(b"\r\n");
        }
        assert_eq!(unquote(stored), canonical);
    }
    // The header lines as sent on the wire (only CRLF ends one), a bare CR or LF a space.
    let mut lines = stored.split(|&b| b == b'\n');
    for sent in crlf_lines(input) {
        let expected: Vec<u8> = sent
            .iter()
            .map(|&b| if b == b'\r' || b == b'\n' { b' ' } else { b })
            .collect();
        let got = lines.next().expect("a stored line per header line");
        // No stored field is one a mbox reader would take as the mailbox's framing or flags.
        if let Some(colon) = got.iter().position(|&b| b == b':') {
            let name = crate::mbox::field_name(&got[..colon]);
            assert!(
                !crate::mbox::is_readers_field(name),
                "{got:?} stored as it came"
            );
        }
        let quotes = got.iter().take_while(|&&b| b == b'>').count();
        let got = if quotes > 0 && got[quotes..].starts_with(b"From ") {
            &got[1..]
        } else {
            crate::mbox::unrenamed(got)
        };
        assert_eq!(got, &expected[..], "header line changed");
        if sent.is_empty() {
            break;
        }
    }
}

/// The lines of `text` as the wire cuts them (at CRLF only), up to and including the first
/// empty one: the header section. An unterminated last line counts.
fn crlf_lines(text: &[u8]) -> Vec<&[u8]> {
    let mut lines = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let end = rest.windows(2).position(|w| w == b"\r\n");
        let (line, next) = match end {
            Some(i) => (&rest[..i], &rest[i + 2..]),
            None => (rest, &rest[rest.len()..]),
        };
        lines.push(line);
        if line.is_empty() {
            break;
        }
        rest = next;
    }
    lines
}

/// A stored body ends the entry cleanly and holds no line a reader could take for a `From `
/// separator, whether it splits lines at CR, LF or CRLF: it has no CR at all.
fn check_entry(entry: &[u8]) {
    assert!(entry.ends_with(b"\n\n") || entry == b"\n");
    assert!(!entry.contains(&b'\r'), "a CR was stored");
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
        b"MAIL FROM:<a@b> AUTH=<>\r\n",
        b"MAIL FROM:<a@b> AUTH=a+2Bb\r\n",
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
        b"AUTH PLAIN\r\n",
        b"AUTH PLAIN AGEAYg==\r\n",
        b"AUTH LOGIN YQ==\r\n",
        b"AUTH LOGIN\r\n",
        b"*\r\n",
        b"AGEAYg==\r\n",
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
        // What the `--fail` rules of `config` fire on.
        b"EHLO drop.x\r\n",
        b"MAIL FROM:<slow@b>\r\n",
        b"RCPT TO:<busy@mx.test>\r\n",
        b"RCPT TO:<full@mx.test>\r\n",
        b"RCPT TO:<xx@mx.test>\r\n",
        b"RCPT TO:<yy@mx.test>\r\n",
    ];

    /// Runs `input` through a core with the fuzz configuration of `seed`: everything written,
    /// whether the session closed, and whether a delay fired.
    fn run(seed: u8, input: &[u8]) -> (String, bool, bool) {
        let answer = crate::writer::Outcome::Delivered.reply("t");
        let driven = crate::protocol::drive(seed, input, &[usize::MAX], &answer);
        let out = String::from_utf8_lossy(&driven.replies).into();
        (out, driven.closed, driven.delayed)
    }

    /// The fuzz configuration's `--fail` rules fire on their names, so the fuzzer reaches every
    /// fault path, and ordinary names pass.
    #[test]
    fn the_fuzz_fail_rules_fire_on_their_names() {
        let (out, closed, _) = run(0, b"EHLO drop.x\r\nNOOP\r\n");
        assert!(closed && out.starts_with("220 ") && out.matches("\r\n").count() == 1);
        let (out, closed, delayed) = run(0, b"EHLO a\r\nMAIL FROM:<slow@b>\r\n");
        assert!(
            delayed && !closed && out.ends_with("250 2.1.0 Sender OK\r\n"),
            "{out}"
        );
        let tx = "EHLO a\r\nMAIL FROM:<a@b>\r\nRCPT TO:<a@mx.test>\r\n";
        let (out, ..) = run(0, format!("{tx}RCPT TO:<busy@mx.test>\r\n").as_bytes());
        assert!(
            out.ends_with("\r\n450 4.2.1 Requested mail action not taken: mailbox unavailable\r\n"),
            "{out}"
        );
        // `count=2`: the first two tries get 452, the third is taken.
        let full = "RCPT TO:<full@mx.test>\r\n".repeat(3);
        let (out, ..) = run(0, format!("{tx}{full}").as_bytes());
        let codes: Vec<&str> = out.lines().rev().take(3).map(|l| &l[..3]).collect();
        assert_eq!(codes, ["250", "452", "452"], "{out}");
        let (out, closed, _) = run(
            0,
            format!("{tx}RCPT TO:<xx@mx.test>\r\nDATA\r\n").as_bytes(),
        );
        assert!(
            closed
                && out.ends_with(
                    "\r\n421 4.3.2 mx.test Service not available, closing transmission channel\r\n"
                ),
            "{out}"
        );
        let (out, closed, _) = run(
            0,
            format!("{tx}RCPT TO:<yy@mx.test>\r\nDATA\r\nx\r\n.\r\n").as_bytes(),
        );
        assert!(
            !closed && out.ends_with("\r\n552 5.3.4 too big\r\n"),
            "{out}"
        );
        let (out, ..) = run(0, format!("{tx}DATA\r\nx\r\n.\r\n").as_bytes());
        assert!(
            out.ends_with("\r\n250 2.0.0 OK: delivered as t\r\n"),
            "{out}"
        );
        // With the second bit of the seed, about half the greetings are refused.
        let greetings: Vec<String> = (0..=255u8)
            .filter(|s| s & 2 != 0)
            .map(|s| run(s, b"").0)
            .collect();
        assert!(greetings.iter().any(|g| g.starts_with("554 ")));
        assert!(greetings.iter().any(|g| g.starts_with("220 ")));
    }

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
