//! What the log says: the start-up line, one line per refused MAIL, RCPT and message and per
//! delivery, each naming its connection, a message lost to a reset, and no client string that
//! could forge a log line.

mod support;

use std::time::Duration;

use support::{Client, delivered_line, spawn_logged, stop_logged};

/// mboxd with `extra` flags, listening on 127.0.0.1 and delivering into a new temporary
/// directory: the directory (removed when dropped), the process, its address, its log, and a
/// client it has greeted.
fn start(
    extra: &[&str],
) -> (
    tempfile::TempDir,
    support::ChildGuard,
    std::net::SocketAddr,
    std::thread::JoinHandle<String>,
    Client,
) {
    let dir = tempfile::tempdir().unwrap();
    let mail = dir.path().to_str().unwrap();
    let args = [&["--listen", "127.0.0.1:0", "--mail-dir", mail], extra].concat();
    let (child, addrs, log) = spawn_logged(&args, 1);
    let mut c = Client::connect(addrs[0]);
    assert_eq!(c.read_reply().code, 220);
    (dir, child, addrs[0], log, c)
}

#[test]
fn refusals_and_deliveries_are_logged_with_their_connection_and_escaped() {
    let (_dir, child, addr, log, mut c) = start(&[
        "--hostname",
        "mx.test",
        "--domain",
        "mx.test",
        "--user",
        "alice",
        "--max-message-size",
        "100",
    ]);
    let port = c.stream.local_addr().unwrap().port();
    c.expect("EHLO log.test", 250);
    c.expect("MAIL FROM:<a@b.test> SIZE=1000", 552);
    c.expect("MAIL FROM:<a@b.test>", 250);
    c.expect("RCPT TO:<bob@mx.test>", 550);
    c.expect("RCPT TO:<alice@elsewhere.test>", 550);
    c.expect("RCPT TO:<-rf@mx.test>", 553);
    c.expect(
        "RCPT TO:<\"bob\u{2028}X-Injected: yes\u{202e}\"@mx.test>",
        553,
    );
    c.expect("DATA", 554);
    c.expect("RSET", 250);
    c.expect("MAIL FROM:<a@b.test>", 250);
    c.expect("RCPT TO:<alice@mx.test>", 250);
    c.expect("DATA", 354);
    c.send(format!("{}\r\n.\r\n", "x".repeat(150)).as_bytes());
    assert_eq!(c.read_reply().code, 552);
    // A NEL (U+0085) is a control character: never a mailbox name.
    c.expect("MAIL FROM:<s\u{85}@b.test>", 553);
    // A combining mark at the start would draw itself on the `<` before it (`≮`).
    c.expect("MAIL FROM:<\u{338}s@b.test>", 553);
    c.expect("MAIL FROM:<sender@b.test>", 250);
    c.expect("RCPT TO:<alice@mx.test>", 250);
    c.expect("DATA", 354);
    c.send(b"Subject: hi\r\n\r\nhi\r\n.\r\n");
    assert_eq!(c.read_reply().code, 250);
    c.expect("QUIT", 221);
    // A client that resets its connection inside a message (SO_LINGER 0, then close).
    let mut reset = Client::connect(addr);
    assert_eq!(reset.read_reply().code, 220);
    let reset_port = reset.stream.local_addr().unwrap().port();
    reset.expect("EHLO log.test", 250);
    reset.expect("MAIL FROM:<a@b.test>", 250);
    reset.expect("RCPT TO:<alice@mx.test>", 250);
    reset.expect("DATA", 354);
    reset.send(b"Subject: cut\r\n\r\nhalf");
    socket2::SockRef::from(&reset.stream)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(reset);
    let log = stop_logged(child, log);
    let conn = format!("conn 1 [127.0.0.1:{port}]");
    let expect = [
        format!(
            "listening on {}; domains mx.test; 1 user(s); 0 alias(es)",
            addr
        ),
        format!("{conn}: MAIL <a@b.test> refused: 552 5.3.4"),
        format!("{conn}: RCPT <bob@mx.test> refused: 550 5.1.1"),
        format!("{conn}: RCPT <alice@elsewhere.test> refused: 550 5.7.1"),
        format!("{conn}: RCPT <-rf@mx.test> refused: 553 5.1.3"),
        format!("{conn}: RCPT <\"bob\\u{{2028}}X-Injected: yes\\u{{202e}}\"@mx.test> refused: 553"),
        format!("{conn}: message refused: 554 5.5.1"),
        format!("{conn}: message refused: 552 5.3.4"),
        format!("{conn}: MAIL <s\\u{{0085}}@b.test> refused: 553 5.1.7"),
        format!("{conn}: MAIL <\\u{{0338}}s@b.test> refused: 553 5.1.7"),
        format!(
            "conn 2 [127.0.0.1:{reset_port}]: Connection reset by peer (os error 104) inside a \
             message; it is discarded"
        ),
    ];
    for line in &expect {
        assert!(log.contains(line.as_str()), "missing {line:?} in:\n{log}");
    }
    let delivered = delivered_line(&log);
    assert!(
        delivered.contains(&conn) && delivered.contains("from=<sender@b.test> to=<alice> bytes=19"),
        "{delivered}"
    );
    // No client string reached the log raw.
    for forbidden in ['\u{2028}', '\u{202e}', '\u{85}', '\u{338}'] {
        assert!(
            !log.contains(forbidden),
            "raw {forbidden:?} in the log:\n{log}"
        );
    }
}

#[test]
fn a_client_string_cannot_close_a_field_or_hide_in_the_log() {
    // Catch-all mode: `jones,root` is one mailbox, whose name holds the list's separator.
    let (_dir, child, _, log, mut c) =
        start(&["--hostname", "mx.test", "--max-inflight-bytes", "1048576"]);
    let port = c.stream.local_addr().unwrap().port();
    // Blanks that are not ASCII's, and code points a font draws as it likes, are refused.
    c.expect("EHLO a\u{a0}b.test", 501);
    c.expect("EHLO log.test", 250);
    c.expect("MAIL FROM:<a@b.test>", 250);
    for hidden in [
        "jo\u{e000}nes",
        "jones\u{2800}",
        "jo\u{378}nes",
        "jo\u{3000}nes",
    ] {
        c.expect(&format!("RCPT TO:<{hidden}@localhost>"), 553);
    }
    c.expect("RSET", 250);
    // A quoted sender may hold `>` and spaces.
    c.expect("MAIL FROM:<\"x> to=root bytes=1\"@e.test>", 250);
    c.expect("RCPT TO:<jones,root@localhost>", 250);
    c.expect("DATA", 354);
    c.send(b"Subject: hi\r\n\r\nhi\r\n.\r\n");
    assert_eq!(c.read_reply().code, 250);
    c.expect("QUIT", 221);
    let log = stop_logged(child, log);
    let conn = format!("conn 1 [127.0.0.1:{port}]");
    for line in [
        // A budget too small for the largest message allowed is worth a warning at start.
        "--max-inflight-bytes 1048576 lets a message's buffer reach about 917504 octets, less \
         than --max-message-size 10485760"
            .to_string(),
        format!("{conn}: RCPT <jo\\u{{e000}}nes@localhost> refused: 553 5.1.3"),
        format!("{conn}: RCPT <jones\\u{{2800}}@localhost> refused: 553 5.1.3"),
        format!("{conn}: RCPT <jo\\u{{0378}}nes@localhost> refused: 553 5.1.3"),
        format!("{conn}: RCPT <jo\\u{{3000}}nes@localhost> refused: 553 5.1.3"),
    ] {
        assert!(log.contains(&line), "missing {line:?} in:\n{log}");
    }
    let delivered = delivered_line(&log);
    assert!(
        delivered
            .ends_with("from=<\"x\\u{003e} to=root bytes=1\"@e.test> to=<jones,root> bytes=19"),
        "{delivered}"
    );
    for hidden in ['\u{a0}', '\u{e000}', '\u{2800}', '\u{378}', '\u{3000}'] {
        assert!(!log.contains(hidden), "raw {hidden:?} in the log:\n{log}");
    }
}

/// RCPTs past `--max-recipients` get 452 without counting toward `--max-errors` (RFC 5321
/// §4.5.3.1.10), so a client may send any number: only a transaction's first is logged, or each
/// would cost a log line.
#[test]
fn only_a_transactions_first_452_is_logged() {
    let (_dir, child, _, log, mut c) = start(&["--max-recipients", "1", "--max-errors", "3"]);
    c.expect("EHLO log.test", 250);
    for round in 0..2 {
        c.expect("MAIL FROM:<a@b.test>", 250);
        c.expect("RCPT TO:<first@localhost>", 250);
        for n in 0..10 {
            c.expect(&format!("RCPT TO:<extra{round}x{n}@localhost>"), 452);
        }
        c.expect("RSET", 250);
    }
    c.expect("QUIT", 221);
    let log = stop_logged(child, log);
    let logged: Vec<&str> = log.lines().filter(|l| l.contains("refused: 452")).collect();
    assert_eq!(logged.len(), 2, "{log}");
    assert!(
        logged[0].contains("RCPT <extra0x0@localhost> refused: 452 4.5.3"),
        "{log}"
    );
    assert!(
        logged[1].contains("RCPT <extra1x0@localhost> refused: 452 4.5.3"),
        "{log}"
    );
}
