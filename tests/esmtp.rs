//! The ESMTP extensions over a real socket: PIPELINING however the bytes are split, SIZE,
//! 8BITMIME, ENHANCEDSTATUSCODES, SMTPUTF8, CHUNKING, and 555 for parameters not offered.

mod support;

use std::io::Write;
use std::time::{Duration, Instant};

use support::{Client, Reply, TestServer, mbox_entries};

/// One session that sends everything without waiting: two transactions, one by DATA and one
/// by BDAT, a refused recipient, and QUIT.
const SCRIPT: &[u8] = b"EHLO pipe.test\r\n\
MAIL FROM:<a@b.test>\r\n\
RCPT TO:<jones@mx.test>\r\n\
RCPT TO:<x@example.com>\r\n\
DATA\r\n\
Subject: one\r\n\r\n..dotted\r\nbody\r\n.\r\n\
MAIL FROM:<c@d.test> BODY=8BITMIME\r\n\
RCPT TO:<brown@mx.test>\r\n\
BDAT 11\r\n\
two\r\n.\r\nxyzBDAT 4 LAST\r\n\
end\nNOOP\r\n\
QUIT\r\n";

/// Every reply of a session until the server closes it, with message ids blanked. A session
/// that stays open and silent fails the test (see `Client::replies_until_close`).
fn replies_until_close(c: &mut Client) -> Vec<Reply> {
    let mut replies = c.replies_until_close();
    for r in &mut replies {
        for line in &mut r.lines {
            if let Some(at) = line.find("delivered as ") {
                line.truncate(at + "delivered as ".len());
            }
        }
    }
    replies
}

fn run_split(server: &TestServer, cuts: &[usize]) -> Vec<Reply> {
    let mut c = Client::connect(server.addr);
    c.stream.set_nodelay(true).unwrap();
    let mut start = 0;
    for &cut in cuts.iter().chain(std::iter::once(&SCRIPT.len())) {
        c.stream.write_all(&SCRIPT[start..cut]).unwrap();
        start = cut;
    }
    replies_until_close(&mut c)
}

#[test]
fn pipelined_input_split_at_every_byte_boundary_gives_the_same_replies() {
    let server = TestServer::start();
    let whole = run_split(&server, &[]);
    let codes: Vec<u16> = whole.iter().map(|r| r.code).collect();
    assert_eq!(
        codes,
        [
            220, 250, 250, 250, 550, 354, 250, 250, 250, 250, 250, 250, 221
        ],
        "{whole:?}"
    );
    let mut runs = 1;
    for cut in 1..SCRIPT.len() {
        assert_eq!(run_split(&server, &[cut]), whole, "split at {cut}");
        runs += 1;
    }
    // Three pieces, a sample of pairs of boundaries.
    for first in (1..SCRIPT.len()).step_by(7) {
        let second = (first + 13).min(SCRIPT.len());
        assert_eq!(
            run_split(&server, &[first, second]),
            whole,
            "split at {first},{second}"
        );
        runs += 1;
    }
    let jones = server.mbox_text("jones");
    let brown = server.mbox_text("brown");
    assert_eq!(mbox_entries(&jones).len(), runs);
    assert_eq!(mbox_entries(&brown).len(), runs);
    for entry in mbox_entries(&jones) {
        assert!(
            entry.ends_with("Subject: one\n\n.dotted\nbody\n\n"),
            "{entry:?}"
        );
    }
    for entry in mbox_entries(&brown) {
        // BDAT bytes are not dot-unstuffed; CRLF becomes LF on disk; the bare LF, inside the
        // header section (no empty line came), becomes a space.
        assert!(entry.ends_with("\ntwo\n.\nxyzend \n\n"), "{entry:?}");
    }
}

#[test]
fn replies_to_a_pipelined_group_come_in_one_write() {
    let server = TestServer::start();
    let mut c = server.client();
    c.expect("EHLO pipe.test", 250);
    // The four replies of a group are written with one write, so the first read sees them all.
    // Four separate writes let it return after the first, though often (seven times in ten, on
    // a 2-core machine) the other three are there by then: so the group goes twenty times.
    let mut buf = [0u8; 4096];
    for round in 0..20 {
        let end: &[u8] = if round < 19 { b"RSET\r\n" } else { b"DATA\r\n" };
        c.send(
            &[
                &b"MAIL FROM:<a@b.test>\r\nRCPT TO:<jones@mx.test>\r\nRCPT TO:<brown@mx.test>\r\n"
                    [..],
                end,
            ]
            .concat(),
        );
        let n = std::io::Read::read(&mut c.stream, &mut buf).unwrap();
        let text = String::from_utf8_lossy(&buf[..n]);
        assert_eq!(text.matches("\r\n").count(), 4, "round {round}: {text:?}");
    }
    assert!(String::from_utf8_lossy(&buf).contains("\r\n354 "));
}

/// A client that pipelines its next transaction behind a message's final dot (RFC 2920 §3.1)
/// gets the replies to it without waiting for its own delayed ACK: the writer sends the 250 as
/// a segment of its own, and with Nagle's algorithm on, the 250 250 354 written after it would
/// be held until the client acknowledged the 250 (about 40 ms on Linux, every time).
#[test]
fn replies_after_a_pipelined_dot_are_not_held_for_an_ack() {
    let server = TestServer::start();
    let mut c = server.client();
    c.expect("EHLO pipe.test", 250);
    c.send(b"MAIL FROM:<a@b.test>\r\nRCPT TO:<jones@mx.test>\r\nDATA\r\n");
    assert_eq!(c.read_reply().code, 250);
    assert_eq!(c.read_reply().code, 250);
    assert_eq!(c.read_reply().code, 354);
    let mut fastest = Duration::MAX;
    for _ in 0..5 {
        let began = Instant::now();
        c.send(b"Subject: x\r\n\r\nbody\r\n.\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<jones@mx.test>\r\nDATA\r\n");
        for code in [250, 250, 250, 354] {
            assert_eq!(c.read_reply().code, code);
        }
        fastest = fastest.min(began.elapsed());
    }
    // Held for an ACK, every round takes 40 ms or more; the fastest of five shows it even on a
    // loaded machine.
    assert!(fastest < Duration::from_millis(30), "{fastest:?}");
}

#[test]
fn enhanced_status_codes_after_ehlo_only() {
    let server = TestServer::with(|c| {
        c.max_recipients = 2;
        c.max_message_size = 100;
        c.users = Some(
            ["jones", "brown", "smith"]
                .iter()
                .map(|s| s.to_string())
                .collect(),
        );
    });
    let mut c = server.client();
    c.expect("HELO plain.test", 250);
    assert_eq!(c.expect("MAIL FROM:<a@b.test>", 250).text(), "Sender OK");
    assert_eq!(
        c.expect("RCPT TO:<green@mx.test>", 550).text(),
        "No such user here"
    );
    let mut c = server.client();
    c.expect("EHLO rich.test", 250);
    assert_eq!(
        c.expect("MAIL FROM:<a@b.test> SIZE=101", 552).text(),
        "5.3.4 Requested mail action aborted: message exceeds fixed maximum message size"
    );
    assert_eq!(
        c.expect("MAIL FROM:<a@b.test>", 250).text(),
        "2.1.0 Sender OK"
    );
    assert_eq!(
        c.expect("RCPT TO:<green@mx.test>", 550).text(),
        "5.1.1 No such user here"
    );
    assert_eq!(
        c.expect("RCPT TO:<green@example.com>", 550).text(),
        "5.7.1 Relaying denied"
    );
    assert_eq!(
        c.expect("RCPT TO:<jones@mx.test>", 250).text(),
        "2.1.5 Recipient OK"
    );
    c.expect("RCPT TO:<brown@mx.test>", 250);
    assert_eq!(
        c.expect("RCPT TO:<smith@mx.test>", 452).text(),
        "4.5.3 Too many recipients"
    );
    assert_eq!(
        c.expect("DATA", 354).text(),
        "Start mail input; end with <CRLF>.<CRLF>"
    );
    c.send(b"x\r\n.\r\n");
    assert!(c.read_reply().text().starts_with("2.0.0 OK: delivered as "));
    assert_eq!(c.expect("NOOP", 250).text(), "2.0.0 OK");
    assert_eq!(
        c.expect("FROB", 500).text(),
        "5.5.1 Syntax error, command unrecognized"
    );
    assert_eq!(c.expect("TURN", 502).lines[0].get(..6), Some("5.5.1 "));
    assert_eq!(
        c.expect("HELP nothing", 504).text(),
        "5.5.4 HELP topic not recognized"
    );
    assert!(c.expect("QUIT", 221).text().starts_with("2.0.0 "));
}

#[test]
fn parameters_not_offered_are_555_and_bad_values_501() {
    let server = TestServer::start();
    let mut c = server.client();
    c.expect("HELO plain.test", 250);
    // After HELO there are no extensions at all.
    c.expect("MAIL FROM:<a@b.test> SIZE=10", 555);
    c.expect("MAIL FROM:<a@b.test> BODY=8BITMIME", 555);
    c.expect("EHLO rich.test", 250);
    // DSN is not advertised, so its parameters are unknown (RFC 5321 §4.1.1.11).
    c.expect("MAIL FROM:<a@b.test> RET=HDRS", 555);
    c.expect("MAIL FROM:<a@b.test> ENVID=x", 555);
    // RFC 3030 §3: BINARYMIME is not offered, so a BODY naming it cannot be implemented.
    assert_eq!(
        c.expect("MAIL FROM:<a@b.test> BODY=BINARYMIME", 555).text(),
        "5.5.4 BODY=BINARYMIME not implemented"
    );
    c.expect("MAIL FROM:<a@b.test> BODY=8-BIT", 501);
    // A known parameter given twice is a syntax error, whichever values it carries; an unknown
    // one given twice is still unknown.
    assert_eq!(
        c.expect("MAIL FROM:<a@b.test> SIZE=10 SIZE=99", 501).text(),
        "5.5.4 Syntax error: SIZE given twice"
    );
    c.expect("MAIL FROM:<a@b.test> BODY=7BIT size=5 BODY=7BIT", 501);
    // Whatever the values: not the 552 or 555 one of them alone would get.
    c.expect("MAIL FROM:<a@b.test> SIZE=10 SIZE=99999999999", 501);
    c.expect("MAIL FROM:<a@b.test> BODY=7BIT BODY=BINARYMIME", 501);
    c.expect("MAIL FROM:<a@b.test> SMTPUTF8 SMTPUTF8", 501);
    c.expect("MAIL FROM:<a@b.test> RET=HDRS RET=HDRS", 555);
    c.expect("MAIL FROM:<a@b.test> SIZE=-1", 501);
    c.expect("MAIL FROM:<a@b.test> SIZE=+1", 501);
    // RFC 1870 §3: size-value ::= 1*20DIGIT; one past a u64 is a size over the limit.
    c.expect("MAIL FROM:<a@b.test> SIZE=99999999999999999999", 552);
    c.expect("MAIL FROM:<a@b.test> SIZE=00000000000000000005", 250);
    c.expect("RSET", 250);
    c.expect("MAIL FROM:<a@b.test> SMTPUTF8=1", 501);
    c.expect("MAIL FROM:<a@b.test> BODY=7BIT SIZE=5", 250);
    assert_eq!(
        c.expect("RCPT TO:<jones@mx.test> NOTIFY=SUCCESS", 555)
            .text(),
        "5.5.4 Parameter NOTIFY not recognized"
    );
    c.expect("RCPT TO:<jones@mx.test> ORCPT=rfc822;jones@mx.test", 555);
    c.expect("RCPT TO:<jones@mx.test>", 250);
    // A name too long to repeat within a 512-octet reply line (RFC 5321 §4.5.3.1.5): a
    // 1 012-octet MAIL line made a 1 026-octet reply (a MAIL line may now be 1 048).
    c.expect("RSET", 250);
    let long = format!("MAIL FROM:<a@b.test> {}", "X".repeat(1025));
    assert_eq!(
        c.expect(&long, 555).text(),
        "5.5.4 Parameter not recognized"
    );
}

#[test]
fn smtputf8_addresses() {
    let server = TestServer::start();
    let mut c = server.client();
    c.expect("EHLO utf8.test", 250);
    // RFC 6531 §3.5: 550 for a sender, 553 for a recipient, both with 5.6.7.
    assert_eq!(
        c.expect("MAIL FROM:<josé@b.test>", 550).line(),
        "550 5.6.7 Non-ASCII address requires the SMTPUTF8 parameter"
    );
    c.expect("MAIL FROM:<a@b.test>", 250);
    assert_eq!(
        c.expect("RCPT TO:<jörg@mx.test>", 553).line(),
        "553 5.6.7 Non-ASCII address requires the SMTPUTF8 parameter"
    );
    c.expect("RSET", 250);
    c.expect("MAIL FROM:<josé@b.test> SMTPUTF8", 250);
    c.expect("RCPT TO:<Jörg@mx.test>", 250);
    c.expect("RCPT TO:<../jörg@mx.test>", 553);
    c.expect("DATA", 354);
    c.send("Subject: grüße\r\n\r\nñ\r\n.\r\n".as_bytes());
    assert_eq!(c.read_reply().code, 250);
    let mbox = server.mbox_text("jörg");
    // The From line is ASCII (Python's mailbox decodes it so): RFC 6533's \x{HEX}.
    assert!(mbox.starts_with("From jos\\x{E9}@b.test "), "{mbox}");
    assert!(mbox.contains("\nReturn-Path: <josé@b.test>\n"), "{mbox}");
    let read = mboxd::mbox::Mailbox::parse(mbox.as_bytes()).unwrap();
    assert_eq!(read.messages()[0].sender(), Some("josé@b.test"));
    assert!(mbox.contains("with UTF8SMTP id"), "{mbox}");
    assert!(mbox.ends_with("Subject: grüße\n\nñ\n\n"), "{mbox}");
}

#[test]
fn bdat_cases() {
    let server = TestServer::with(|c| c.max_message_size = 50);
    let mut c = server.client();
    c.expect("EHLO chunk.test", 250);
    c.expect("MAIL FROM:<a@b.test>", 250);
    c.expect("RCPT TO:<jones@mx.test>", 250);
    c.send(b"BDAT 9\r\n\x00bin\r\n.\r\n");
    assert_eq!(c.read_reply().text(), "2.0.0 9 octets received");
    assert_eq!(
        c.expect("DATA", 503).text(),
        "5.5.1 Bad sequence of commands: BDAT and DATA cannot be mixed"
    );
    c.send(b"BDAT 0 LAST\r\n");
    assert_eq!(c.read_reply().code, 250);
    assert!(server.mbox("jones").ends_with(b"\x00bin\n.\n\n"));
    // Over the limit across chunks: 552, and the rest of the chunk is still consumed.
    c.expect("MAIL FROM:<a@b.test>", 250);
    c.expect("RCPT TO:<brown@mx.test>", 250);
    c.send(&[b"BDAT 30\r\n".as_slice(), &[b'a'; 30]].concat());
    assert_eq!(c.read_reply().code, 250);
    c.send(&[b"BDAT 30 LAST\r\n".as_slice(), &[b'b'; 30]].concat());
    assert_eq!(c.read_reply().code, 552);
    assert!(server.mbox("brown").is_empty());
    // A BDAT with no transaction is refused but its bytes never become commands.
    c.send(b"BDAT 6 LAST\r\nQUIT\r\n");
    assert_eq!(c.read_reply().code, 503);
    c.expect("NOOP", 250);
    // Nor those of a size written with leading zeros (RFC 3030 §2: 1*DIGIT), however many.
    c.send(b"BDAT 0000000000000000006 LAST\r\nQUIT\r\n");
    assert_eq!(c.read_reply().code, 503);
    c.expect("NOOP", 250);
    // DATA first, then BDAT in the same transaction is impossible: DATA consumed it.
    c.expect("MAIL FROM:<a@b.test>", 250);
    c.expect("RCPT TO:<brown@mx.test>", 250);
    c.expect("DATA", 354);
    c.send(b"BDAT 3 LAST\r\n.\r\n");
    assert_eq!(c.read_reply().code, 250);
    assert!(server.mbox_text("brown").ends_with("\nBDAT 3 LAST\n\n"));
    // Between chunks no other transaction command is taken (RFC 3030 §2); the chunk so far
    // stays, and BDAT LAST ends the message.
    c.expect("MAIL FROM:<a@b.test>", 250);
    c.expect("RCPT TO:<green@mx.test>", 250);
    c.send(b"BDAT 3\r\nabc");
    assert_eq!(c.read_reply().code, 250);
    assert_eq!(
        c.expect("RCPT TO:<jones@mx.test>", 503).line(),
        "503 5.5.1 Bad sequence of commands: finish the message with BDAT LAST, or RSET"
    );
    c.send(b"BDAT 0 LAST\r\n");
    assert_eq!(c.read_reply().code, 250);
    assert!(server.mbox_text("green").ends_with("\nabc\n\n"));
    // BDAT after HELO, with or without a transaction: refused, as CHUNKING was not offered
    // (no enhanced code after HELO), its bytes consumed, and the transaction left open.
    let needs_ehlo = "503 Bad sequence of commands: BDAT needs EHLO";
    c.expect("HELO plain.test", 250);
    c.send(b"BDAT 4\r\nNOOP");
    assert_eq!(c.read_reply().line(), needs_ehlo);
    c.expect("MAIL FROM:<a@b.test>", 250);
    c.expect("RCPT TO:<smith@mx.test>", 250);
    c.send(b"BDAT 4 LAST\r\nabcd");
    assert_eq!(c.read_reply().line(), needs_ehlo);
    assert!(!server.mail_dir().join("smith").exists());
    c.expect("DATA", 354);
    c.send(b"by DATA\r\n.\r\n");
    assert_eq!(c.read_reply().code, 250);
    assert!(server.mbox_text("smith").ends_with("\nby DATA\n\n"));
    c.expect("QUIT", 221);
}

#[test]
fn only_crlf_dot_crlf_ends_data() {
    let server = TestServer::start();
    let mut c = server.client();
    c.expect("EHLO lf.test", 250);
    c.expect("MAIL FROM:<a@b.test>", 250);
    c.expect("RCPT TO:<jones@mx.test>", 250);
    c.expect("DATA", 354);
    c.send(b"one\n.\ntwo\r.\r\nthree\r\n.\n.\r\r\n.\r\n");
    assert_eq!(c.read_reply().code, 250);
    let mbox = server.mbox("jones");
    // A leading dot after CRLF is transparency even before a bare LF; CRLF becomes LF on disk;
    // the bare CRs and LFs, all in the header section (no empty line came), become spaces.
    assert!(
        mbox.ends_with(b"\none . two .\nthree\n . \n\n"),
        "{:?}",
        String::from_utf8_lossy(&mbox)
    );
}

/// A malformed path is a syntax error with RFC 3463 §3.2's code for bad address syntax: X.1.7
/// for the sender's, X.1.3 for a recipient's (both were 5.5.4, while the same addresses refused
/// for an unsafe character got 553 5.1.7 and 5.1.3). Other argument errors stay 5.5.4.
#[test]
fn a_malformed_path_gets_the_enhanced_code_of_bad_address_syntax() {
    let server = TestServer::start();
    let mut c = server.client();
    c.expect("EHLO paths.test", 250);
    for (line, code) in [
        ("MAIL FROM:<a@-bad-.test>", "5.1.7"),
        ("MAIL FROM:<a@b@c.test>", "5.1.7"),
        // RFC 5321 §4.1.3: an address literal is an IPv4 or IPv6 address, or tag:content.
        ("MAIL FROM:<a@[not-an-ip]>", "5.1.7"),
        ("MAIL FROM:<a@[1.2.3]>", "5.1.7"),
        ("MAIL FROM:<a@b.test", "5.1.7"),
        ("MAIL <a@b.test>", "5.5.4"),
        ("MAIL FROM:<a@b.test> =x", "5.5.4"),
    ] {
        let r = c.expect(line, 501);
        assert_eq!(
            r.text().get(..6),
            Some(&*format!("{code} ")),
            "{line}: {r:?}"
        );
    }
    // An octet that is not UTF-8: in the path, the address's syntax; after it, the argument's.
    for (line, code) in [
        (&b"MAIL FROM:<a\xff@b.test>\r\n"[..], "5.1.7"),
        (b"MAIL FROM:<a@b.test> X=\xff\r\n", "5.5.4"),
    ] {
        c.send(line);
        let r = c.read_reply();
        assert_eq!(r.code, 501, "{r:?}");
        assert_eq!(r.text().get(..6), Some(&*format!("{code} ")), "{r:?}");
    }
    c.expect("MAIL FROM:<a@b.test>", 250);
    for (line, code) in [
        ("RCPT TO:<alice@evil.test@mx.test>", "5.1.3"),
        ("RCPT TO:<postmaster@[IPv6:2001:db8::g]>", "5.1.3"),
        ("RCPT TO:<>", "5.1.3"),
        ("RCPT TO:<@hop.test>", "5.1.3"),
        ("RCPT TO:<\"a\"b@mx.test>", "5.1.3"),
        ("RCPT <jones@mx.test>", "5.5.4"),
    ] {
        let r = c.expect(line, 501);
        assert_eq!(
            r.text().get(..6),
            Some(&*format!("{code} ")),
            "{line}: {r:?}"
        );
    }
    c.send(b"RCPT TO:<a\xff@mx.test>\r\n");
    assert_eq!(c.read_reply().text().get(..6), Some("5.1.3 "));
    // Refused, the transaction is as it was.
    c.expect("RCPT TO:<jones@mx.test>", 250);
}
