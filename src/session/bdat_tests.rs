//! BDAT (RFC 3030) in the state machine: chunks make one message, refused chunks are read and
//! dropped, and the size limit ends the transaction. Apart from `tests.rs` to keep each file
//! short; it uses that file's helpers.

use super::tests::{code, codes, feed, session};
use super::*;
use crate::framer::Frame;

fn chunk(s: &mut Session, bytes: &[u8]) -> Action {
    let mut last = Action::Continue;
    for piece in bytes.chunks(3) {
        assert!(matches!(s.mode(), Mode::Chunk(_)));
        last = s.handle(Frame::Chunk(piece));
    }
    last
}

#[test]
fn bdat_chunks_make_one_message() {
    let mut s = session(None);
    codes(
        &mut s,
        &[
            b"EHLO x\r\n",
            b"MAIL FROM:<a@b>\r\n",
            b"RCPT TO:<a@bbn-unix.arpa>\r\n",
        ],
    );
    assert_eq!(feed(&mut s, b"BDAT 7\r\n"), Action::Continue);
    assert!(s.in_message());
    assert_eq!(code(&chunk(&mut s, b"line\r\n.")), 250);
    assert_eq!(s.mode(), Mode::Command);
    assert_eq!(code(&feed(&mut s, b"DATA\r\n")), 503);
    assert_eq!(feed(&mut s, b"BDAT 4 LAST\r\n"), Action::Continue);
    let Action::Deliver(env) = chunk(&mut s, b"\r\n\r\n") else {
        panic!("no delivery")
    };
    // No dot-stuffing in BDAT: the bytes are exactly what was counted.
    assert_eq!((&env.body[..], env.size), (&b"line\n.\n\n\n"[..], 11));
    assert!(matches!(s.state(), State::Ready(_)));
}

#[test]
fn bdat_zero_last_and_refused_chunks_are_consumed() {
    let mut s = session(None);
    // Refused BDATs still consume their bytes, which never become commands.
    assert_eq!(feed(&mut s, b"BDAT 6\r\n"), Action::Continue);
    assert_eq!(code(&chunk(&mut s, b"QUIT\r\n")), 503);
    codes(&mut s, &[b"HELO x\r\n"]);
    assert_eq!(feed(&mut s, b"BDAT 1\r\n"), Action::Continue);
    assert_eq!(code(&chunk(&mut s, b"x")), 503);
    codes(&mut s, &[b"EHLO x\r\n", b"MAIL FROM:<a@b>\r\n"]);
    assert_eq!(feed(&mut s, b"BDAT 1\r\n"), Action::Continue);
    assert_eq!(code(&chunk(&mut s, b"x")), 503);
    codes(&mut s, &[b"RCPT TO:<a@bbn-unix.arpa>\r\n"]);
    let Action::Deliver(env) = feed(&mut s, b"BDAT 0 LAST\r\n") else {
        panic!("no delivery")
    };
    assert_eq!((&env.body[..], env.size), (&b"\n"[..], 0));
}

#[test]
fn bdat_over_the_size_limit_is_552_and_ends_the_transaction() {
    let mut s = session(None);
    codes(
        &mut s,
        &[
            b"EHLO x\r\n",
            b"MAIL FROM:<a@b>\r\n",
            b"RCPT TO:<a@bbn-unix.arpa>\r\n",
        ],
    );
    assert_eq!(feed(&mut s, b"BDAT 60\r\n"), Action::Continue);
    assert_eq!(code(&chunk(&mut s, &[b'x'; 60])), 250);
    assert_eq!(feed(&mut s, b"BDAT 60 LAST\r\n"), Action::Continue);
    assert_eq!(code(&chunk(&mut s, &[b'y'; 60])), 552);
    assert!(matches!(s.state(), State::Ready(_)));
    assert_eq!(feed(&mut s, b"BDAT 2 LAST\r\n"), Action::Continue);
    assert_eq!(code(&chunk(&mut s, b"zz")), 503);
}

/// Octets read only to be thrown away are bounded: a message or refused chunk over twice the
/// size limit (100 here) ends the session with 552, at once for a chunk declared that large.
#[test]
fn a_discard_over_twice_the_size_limit_ends_the_session() {
    let closed = |a: &Action| matches!(a, Action::Close(r) if r.code == 552);
    // Before HELO, a chunk as large as a u64 can say.
    let mut s = session(None);
    assert!(closed(&feed(
        &mut s,
        b"BDAT 99999999999999999999999 LAST\r\n"
    )));
    assert!(s.is_closed());
    // Up to twice the limit, a refused chunk is read and the session goes on.
    let mut s = session(None);
    assert_eq!(feed(&mut s, b"BDAT 200\r\n"), Action::Continue);
    assert_eq!(code(&chunk(&mut s, &[b'q'; 200])), 503);
    assert!(closed(&feed(&mut s, b"BDAT 201\r\n")));
    // DATA text past twice the limit, before its end.
    let mut s = session(None);
    let tx: [&[u8]; 4] = [
        b"HELO x\r\n",
        b"MAIL FROM:<a@b>\r\n",
        b"RCPT TO:<a@bbn-unix.arpa>\r\n",
        b"DATA\r\n",
    ];
    codes(&mut s, &tx);
    assert_eq!(feed(&mut s, &[b'x'; 198]), Action::Continue);
    assert_eq!(feed(&mut s, b"\r\n"), Action::Continue);
    assert!(closed(&feed(&mut s, b"y\r\n")));
    assert!(s.is_closed());
}
