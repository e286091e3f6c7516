//! Unit tests of the message phase against the in-flight budget and the content refusals: a
//! message that cannot reserve is read to its end and refused with 452 4.3.1, holding nothing
//! afterwards; a small one fits while a large one holds all it may; the stored body holds its
//! budget until the last copy is dropped; bare CR/LF and a folding first line are refused by
//! DATA and by BDAT.

use super::*;
use crate::budget::{Budget, STEP};
use crate::config::BareNewline;
use crate::directory::Directory;
use crate::framer::Frame;

fn session(budget: &Arc<Budget>, bare_newline: BareNewline) -> Session {
    let directory = Directory::new(&["mx.test".into()], None, &[]);
    Session::new(
        Arc::new(SessionConfig {
            max_message_size: 10 << 20,
            max_recipients: 10,
            max_errors: 100,
            budget: Arc::clone(budget),
            bare_newline,
            ..SessionConfig::for_tests("mx.test", directory)
        }),
        "test".into(),
    )
}

/// Feeds input as the framer cuts it in the session's mode (lines, or the octets given).
fn feed(s: &mut Session, input: &[u8]) -> Action {
    match s.mode() {
        Mode::Command | Mode::Response => s.handle(Frame::Command(input)),
        Mode::Text => s.handle(Frame::Text(input)),
        Mode::Chunk(_) => s.handle(Frame::Chunk(input)),
    }
}

/// EHLO, MAIL and RCPT: a transaction ready for DATA or BDAT.
fn transaction(s: &mut Session) {
    for line in [
        &b"EHLO c.test\r\n"[..],
        b"MAIL FROM:<a@b.test>\r\n",
        b"RCPT TO:<x@mx.test>\r\n",
    ] {
        assert!(matches!(feed(s, line), Action::Reply(r) if r.code == 250));
    }
}

fn reply(action: Action) -> (u16, &'static str) {
    match action {
        Action::Reply(r) => (r.code, r.enhanced.unwrap_or("")),
        other => panic!("expected a reply, got {other:?}"),
    }
}

/// `lines` lines of 1000 octets by DATA; the action at the end of data.
fn data(s: &mut Session, lines: usize) -> Action {
    assert_eq!(reply(feed(s, b"DATA\r\n")).0, 354);
    feed(s, b"Subject: x\r\n");
    feed(s, b"\r\n");
    let mut line = vec![b'y'; 998];
    line.extend_from_slice(b"\r\n");
    for _ in 0..lines {
        assert_eq!(feed(s, &line), Action::Continue);
    }
    feed(s, b".\r\n")
}

#[test]
fn a_message_past_the_budget_is_read_to_its_end_and_refused_with_452() {
    let budget = Budget::new(8 * STEP);
    let mut s = session(&budget, BareNewline::Normalize);
    transaction(&mut s);
    // About 1 MB: more than the budget; no bytes are kept once it runs out.
    assert_eq!(reply(data(&mut s, 1000)), (452, "4.3.1"));
    assert_eq!(budget.used(), 0);
    assert!(matches!(s.state(), State::Ready(_)));
    // The next, small message is delivered.
    transaction(&mut s);
    let Action::Deliver(envelope) = data(&mut s, 3) else {
        panic!("not delivered")
    };
    assert_eq!(envelope.size, 12 + 2 + 3000);
    assert_eq!(budget.used(), STEP);
    // The body holds its budget while any copy of it is alive (the writer's, say).
    let body = Arc::clone(&envelope.body);
    drop(envelope);
    assert_eq!(budget.used(), STEP);
    drop(body);
    assert_eq!(budget.used(), 0);
}

#[test]
fn a_bdat_chunk_past_the_budget_is_refused_at_its_end_and_ends_the_transaction() {
    let budget = Budget::new(8 * STEP);
    let mut s = session(&budget, BareNewline::Normalize);
    transaction(&mut s);
    let size = 1_000_000;
    assert_eq!(
        feed(&mut s, format!("BDAT {size}\r\n").as_bytes()),
        Action::Continue
    );
    let piece = [b'z'; 1000];
    for _ in 0..size / 1000 - 1 {
        assert_eq!(feed(&mut s, &piece), Action::Continue);
    }
    assert_eq!(budget.used(), 0);
    assert_eq!(reply(feed(&mut s, &piece)), (452, "4.3.1"));
    // RFC 3030 §2: the transaction failed; a later chunk is read and refused.
    assert_eq!(feed(&mut s, b"BDAT 2 LAST\r\n"), Action::Continue);
    assert_eq!(reply(feed(&mut s, b"hi")), (503, "5.5.1"));
    assert_eq!(budget.used(), 0);
}

#[test]
fn a_small_message_fits_while_a_large_one_holds_all_it_may() {
    let budget = Budget::new(8 * STEP);
    let mut large = session(&budget, BareNewline::Normalize);
    transaction(&mut large);
    assert_eq!(reply(feed(&mut large, b"DATA\r\n")).0, 354);
    let mut line = vec![b'y'; 1022];
    line.extend_from_slice(b"\r\n");
    // 7 steps: all a message may grow to. Growing past its first step, a message must leave
    // the last eighth of the budget free.
    while budget.used() < 7 * STEP {
        assert_eq!(feed(&mut large, &line), Action::Continue);
    }
    let mut small = session(&budget, BareNewline::Normalize);
    transaction(&mut small);
    let Action::Deliver(envelope) = data(&mut small, 10) else {
        panic!("the small message was refused")
    };
    assert_eq!(budget.used(), 8 * STEP);
    drop(envelope);
    // The large one cannot grow further: refused at its end, and its steps given back.
    for _ in 0..100 {
        feed(&mut large, &line);
    }
    assert_eq!(budget.used(), 0);
    assert_eq!(reply(feed(&mut large, b".\r\n")), (452, "4.3.1"));
}

#[test]
fn bare_newlines_and_folding_first_lines_are_refused_by_data_and_bdat() {
    let budget = Budget::unlimited();
    let cases: [(BareNewline, &[u8], (u16, &str)); 4] = [
        (BareNewline::Reject, b"Subject: a\rB: c\r\n", (550, "5.5.2")),
        (
            BareNewline::Reject,
            b"\tfrom x; 1 Jan 2001\r\n",
            (550, "5.6.0"),
        ),
        (
            BareNewline::Normalize,
            b"\tfrom x; 1 Jan 2001\r\n",
            (550, "5.6.0"),
        ),
        (BareNewline::Normalize, b"\nX: y\r\n", (550, "5.6.0")),
    ];
    for (policy, text, refusal) in cases {
        let mut s = session(&budget, policy);
        transaction(&mut s);
        assert_eq!(reply(feed(&mut s, b"DATA\r\n")).0, 354);
        for line in text.split_inclusive(|&b| b == b'\n') {
            assert_eq!(feed(&mut s, line), Action::Continue);
        }
        assert_eq!(reply(feed(&mut s, b".\r\n")), refusal, "DATA {text:?}");
        transaction(&mut s);
        let bdat = format!("BDAT {} LAST\r\n", text.len());
        assert_eq!(feed(&mut s, bdat.as_bytes()), Action::Continue);
        assert_eq!(reply(feed(&mut s, text)), refusal, "BDAT {text:?}");
        assert!(matches!(s.state(), State::Ready(_)));
    }
    // Under normalize the bare CR is kept inside its header line, as a space.
    let mut s = session(&budget, BareNewline::Normalize);
    transaction(&mut s);
    feed(&mut s, b"BDAT 17 LAST\r\n");
    let Action::Deliver(envelope) = feed(&mut s, b"Subject: a\rB: c\r\n") else {
        panic!("not delivered")
    };
    assert_eq!(&envelope.body[..], b"Subject: a B: c\n\n");
}
