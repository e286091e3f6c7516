//! Unit tests of a session's end over real sockets on 127.0.0.1: the 421 after a panic, and the flag
//! that says whether its replies carry enhanced codes.

use super::*;
use std::io::Read;
use std::net::TcpListener;

/// What a client reads when its session panicked: `ended` answers over the session's own
/// socket, with enhanced codes or not, before it is closed. The client has pipelined a
/// command the session never read: closed at once, the socket would be reset and the
/// client's read would fail.
fn answer_after_panic(enhanced: bool) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (server, _) = listener.accept().unwrap();
    client
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    client.write_all(b"NOOP\r\n").unwrap();
    client.shutdown(std::net::Shutdown::Write).unwrap();
    ended(&server, "conn 1 [test]", Err(Box::new("a bug")), enhanced);
    drop(server);
    let mut got = String::new();
    client.read_to_string(&mut got).unwrap();
    got
}

/// The one reply path a client cannot reach from outside: a session that panicked is
/// answered 421; after EHLO with its enhanced code, as every other reply (RFC 2034 §3).
#[test]
fn a_session_that_panicked_is_answered_421() {
    assert_eq!(
        answer_after_panic(false),
        "421 Internal error; closing transmission channel\r\n"
    );
    assert_eq!(
        answer_after_panic(true),
        "421 4.3.0 Internal error; closing transmission channel\r\n"
    );
}

/// The flag `ended` is given: the worker records in the session's flags, which outlive a
/// panic, whether the session has negotiated enhanced codes, before it answers.
#[test]
fn a_session_records_whether_its_replies_carry_enhanced_codes() {
    let server = crate::Server::start(crate::Config::for_tests()).unwrap();
    let flags = || -> Vec<bool> {
        let live = server.context().live();
        live.values()
            .map(|l| l.flags.enhanced.load(Ordering::Relaxed))
            .collect()
    };
    let mut c = TcpStream::connect(server.local_addr()).unwrap();
    c.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let mut r = std::io::BufReader::new(c.try_clone().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut r, &mut line).unwrap();
    assert!(line.starts_with("220 "), "{line}");
    assert_eq!(flags(), [false]);
    c.write_all(b"EHLO a.test\r\n").unwrap();
    loop {
        line.clear();
        std::io::BufRead::read_line(&mut r, &mut line).unwrap();
        assert!(line.starts_with("250"), "{line}");
        if line.starts_with("250 ") {
            break;
        }
    }
    assert_eq!(flags(), [true]);
    c.write_all(b"HELO a.test\r\n").unwrap();
    line.clear();
    std::io::BufRead::read_line(&mut r, &mut line).unwrap();
    assert!(line.starts_with("250 "), "{line}");
    assert_eq!(flags(), [false]);
}
