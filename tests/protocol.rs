//! Every command of the seed table and every reply code of the seed's reply table but the 4xx
//! refusals (those are in `tests/refusals.rs`) and those of VRFY, EXPN and aliases (in
//! `tests/directory.rs`), reached over a real TCP socket on 127.0.0.1, with the mbox contents
//! checked where mail is delivered.

mod support;

use std::collections::BTreeSet;
use std::io::Write;
use std::time::Duration;

use support::{Client, TestServer, mbox_entries};

fn users(names: &[&str]) -> Option<BTreeSet<String>> {
    Some(names.iter().map(|s| s.to_string()).collect())
}

#[test]
fn seed_conversation_replayed_verbatim() {
    let server = TestServer::with(|c| {
        c.hostname = "BBN-UNIX.ARPA".into();
        c.domains = vec![];
        c.users = users(&["jones", "brown"]);
    });
    let mut c = Client::connect(server.addr);
    let greeting = c.read_reply();
    assert_eq!(greeting.code, 220);
    assert!(
        greeting.text().starts_with("BBN-UNIX.ARPA "),
        "{greeting:?}"
    );
    assert_eq!(
        c.expect("HELO USC-ISIF.ARPA", 250).text(),
        "BBN-UNIX.ARPA Hello USC-ISIF.ARPA"
    );
    c.expect("MAIL FROM:<Smith@USC-ISIF.ARPA>", 250);
    c.expect("RCPT TO:<Jones@BBN-UNIX.ARPA>", 250);
    assert_eq!(
        c.expect("RCPT TO:<Green@BBN-UNIX.ARPA>", 550).text(),
        "No such user here"
    );
    c.expect("RCPT TO:<Brown@BBN-UNIX.ARPA>", 250);
    assert_eq!(
        c.expect("DATA", 354).text(),
        "Start mail input; end with <CRLF>.<CRLF>"
    );
    c.send(b"Blah blah blah...\r\n...etc. etc. etc.\r\n.\r\n");
    assert_eq!(c.read_reply().code, 250);
    assert!(
        c.expect("QUIT", 221)
            .text()
            .starts_with("BBN-UNIX.ARPA Service closing transmission channel")
    );
    c.expect_closed();

    for (user, rcpt) in [("jones", "Jones"), ("brown", "Brown")] {
        let mbox = server.mbox_text(user);
        let entries = mbox_entries(&mbox);
        assert_eq!(entries.len(), 1, "{mbox}");
        let lines: Vec<&str> = entries[0].lines().collect();
        assert!(
            lines[0].starts_with("From Smith@USC-ISIF.ARPA "),
            "{}",
            lines[0]
        );
        assert_eq!(lines[1], "Return-Path: <Smith@USC-ISIF.ARPA>");
        assert_eq!(lines[2], "Received: from USC-ISIF.ARPA ([127.0.0.1])");
        let id = lines[3]
            .strip_prefix("\tby BBN-UNIX.ARPA (mboxd) with SMTP id ")
            .unwrap_or_else(|| panic!("{}", lines[3]));
        // RFC 5321 §4.4: the id is an atom, atext only (RFC 5322 §3.2.3): no dot.
        assert!(
            !id.is_empty() && id.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-'),
            "{id}"
        );
        assert!(
            lines[4].starts_with(&format!("\tfor <{rcpt}@BBN-UNIX.ARPA>; ")),
            "{}",
            lines[4]
        );
        assert!(lines[4].ends_with(" +0000"), "{}", lines[4]);
        // The second line was sent as "...etc": the first dot is transparency (RFC 5321 §4.5.2).
        assert_eq!(&lines[5..], ["Blah blah blah...", "..etc. etc. etc.", ""]);
        assert!(mbox.ends_with("etc.\n\n"));
    }
    assert!(!server.mail_dir().join("green").exists());
}

#[test]
fn helo_ehlo_noop_rset_quit() {
    let server = TestServer::start();
    let mut c = server.client();
    assert_eq!(c.expect("HELO client.test", 250).lines.len(), 1);
    let ehlo = c.expect("EHLO client.test", 250);
    assert_eq!(
        ehlo.lines,
        [
            "mx.test Hello client.test",
            "PIPELINING",
            "SIZE 10485760",
            "8BITMIME",
            "ENHANCEDSTATUSCODES",
            "SMTPUTF8",
            "CHUNKING",
            "HELP",
            // RFC 5321 §4.1.1.1: every command implemented but not required by §4.5.1.
            "EXPN",
            "SOML",
            "SAML"
        ]
    );
    assert_eq!(c.expect("NOOP", 250).text(), "2.0.0 OK");
    assert_eq!(c.expect("noop with an argument", 250).text(), "2.0.0 OK");
    // RFC 5321 §4.1.1.9: the string is ignored whatever it holds, a line separator or octets
    // that are not UTF-8 included.
    c.expect("NOOP a\u{2028}b", 250);
    c.send(b"NOOP \xff\xfe\r\n");
    assert_eq!(c.read_reply().code, 250);
    // A name is echoed only as a domain could be: ASCII (RFC 6531 §3.7.4.2) and at most 255
    // octets, so the reply line stays within RFC 5321 §4.5.3.1.5's 512. Either is still taken.
    let long = "a".repeat(505);
    for name in ["h\u{e9}.test", long.as_str()] {
        let ehlo = c.expect(&format!("EHLO {name}"), 250);
        assert_eq!(ehlo.lines[0], "mx.test Hello", "{name}");
        let helo = c.expect(&format!("HELO {name}"), 250);
        assert_eq!(helo.lines, ["mx.test Hello"], "{name}");
    }
    let name = "a".repeat(255);
    let helo = c.expect(&format!("HELO {name}"), 250);
    assert_eq!(helo.lines, [format!("mx.test Hello {name}")]);
    c.expect("EHLO client.test", 250);
    c.expect("MAIL FROM:<a@b.test>", 250);
    c.expect("RSET", 250);
    // RSET ended the transaction but kept the EHLO.
    c.expect("RCPT TO:<jones@mx.test>", 503);
    c.expect("MAIL FROM:<a@b.test>", 250);
    assert_eq!(
        c.expect("QUIT", 221).text(),
        "2.0.0 mx.test Service closing transmission channel"
    );
    c.expect_closed();
}

#[test]
fn help_211_214_504() {
    let server = TestServer::start();
    let mut c = server.client();
    let all = c.expect("HELP", 211);
    for verb in [
        "HELO", "EHLO", "MAIL", "RCPT", "DATA", "RSET", "VRFY", "EXPN", "HELP", "NOOP", "QUIT",
        "SOML", "SAML", "SEND", "TURN",
    ] {
        assert!(all.text().contains(verb), "{verb} missing from {all:?}");
    }
    assert!(
        c.expect("HELP rcpt", 214)
            .text()
            .contains("RCPT TO:<recipient>")
    );
    c.expect("HELP FROBNICATE", 504);
}

#[test]
fn soml_saml_deliver_send_and_turn_are_502() {
    let server = TestServer::start();
    let mut c = server.client();
    c.expect("HELO client.test", 250);
    assert!(
        c.expect("SEND FROM:<a@b.test>", 502)
            .text()
            .contains("MAIL")
    );
    assert!(c.expect("TURN", 502).text().contains("unsafe"));
    for verb in ["SOML", "SAML"] {
        c.expect(&format!("{verb} FROM:<a@b.test>"), 250);
        c.expect("RCPT TO:<jones@mx.test>", 250);
        c.expect("DATA", 354);
        c.send(format!("Subject: {verb}\r\n\r\nvia {verb}\r\n.\r\n").as_bytes());
        assert_eq!(c.read_reply().code, 250);
    }
    let mbox = server.mbox_text("jones");
    assert_eq!(mbox_entries(&mbox).len(), 2);
    assert!(mbox.contains("via SOML\n") && mbox.contains("via SAML\n"));
}

#[test]
fn bad_sequences_are_503_and_change_nothing() {
    let server = TestServer::start();
    let mut c = server.client();
    assert!(
        c.expect("MAIL FROM:<a@b.test>", 503)
            .text()
            .contains("HELO")
    );
    c.expect("RCPT TO:<jones@mx.test>", 503);
    c.expect("DATA", 503);
    c.expect("EHLO client.test", 250);
    assert_eq!(
        c.expect("RCPT TO:<jones@mx.test>", 503).text(),
        "5.5.1 Bad sequence of commands: send MAIL first"
    );
    c.expect("DATA", 503);
    c.expect("MAIL FROM:<a@b.test>", 250);
    assert!(c.expect("DATA", 503).text().contains("RCPT"));
    assert!(
        c.expect("MAIL FROM:<c@d.test>", 503)
            .text()
            .contains("already")
    );
    // The first sender is still the transaction's.
    c.expect("RCPT TO:<jones@mx.test>", 250);
    c.expect("DATA", 354);
    c.send(b"hi\r\n.\r\n");
    assert_eq!(c.read_reply().code, 250);
    assert!(server.mbox_text("jones").starts_with("From a@b.test "));
}

#[test]
fn data_with_no_valid_recipients_is_554() {
    let server = TestServer::with(|c| c.users = users(&["jones"]));
    let mut c = server.client();
    c.expect("HELO client.test", 250);
    c.expect("MAIL FROM:<a@b.test>", 250);
    c.expect("RCPT TO:<green@mx.test>", 550);
    c.expect("RCPT TO:<x@elsewhere.test>", 550);
    c.expect("DATA", 554);
    // Still in the transaction: a good recipient makes DATA work.
    c.expect("RCPT TO:<jones@mx.test>", 250);
    c.expect("DATA", 354);
}

#[test]
fn syntax_errors_500_501_and_unknown_parameters_555() {
    let server = TestServer::start();
    let mut c = server.client();
    c.expect("FROBNICATE", 500);
    c.expect("", 500);
    c.expect("HELO", 501);
    c.expect("EHLO client.test", 250);
    c.expect("MAIL FROM:<a@b.test>junk", 501);
    c.expect("MAIL FROM:<a@b.test> =junk", 501);
    c.expect("MAIL TO:<a@b.test>", 501);
    c.expect("MAIL FROM:<a@b.test", 501);
    c.expect("MAIL FROM:<a@-bad-.test>", 501);
    c.expect("DATA now", 501);
    assert_eq!(
        c.expect("MAIL FROM:<a@b.test> FROB=1", 555).text(),
        "5.5.4 Parameter FROB not recognized"
    );
    c.expect("MAIL FROM:<a@b.test> BODY=8BITMIME SIZE=10", 250);
    c.expect("RCPT TO:jones@mx.test", 250);
    c.expect("RCPT TO:<jones@mx.test> NOTIFY=NEVER", 555);
    // A command line must end in CRLF (RFC 5321 §2.3.8): one ending in a bare LF is refused at
    // once, not run, and what follows is the next line.
    let bare_lf = "500 5.5.2 Syntax error, command lines must end with <CRLF>";
    c.send(b"NOOP\n");
    assert_eq!(c.read_reply().line(), bare_lf);
    c.send(b"MAIL FROM:<x@b.test>\nNOOP\r\n");
    assert_eq!(c.read_reply().line(), bare_lf);
    assert_eq!(c.read_reply().code, 250);
    c.send(b"\xff\xfe\r\n");
    assert_eq!(c.read_reply().code, 500);
    c.expect("NOOP", 250);
}

#[test]
fn a_line_over_512_octets_is_500_and_the_session_goes_on() {
    let server = TestServer::start();
    let mut c = server.client();
    c.expect("EHLO client.test", 250);
    let long = format!("NOOP {}", "x".repeat(5000));
    assert_eq!(c.expect(&long, 500).text(), "5.5.2 Line too long");
    // Exactly at the limit (510 + CRLF) is still a command.
    let edge = format!("NOOP {}", "y".repeat(505));
    assert_eq!(edge.len() + 2, 512);
    c.expect(&edge, 250);
    c.expect("MAIL FROM:<a@b.test>", 250);
}

#[test]
fn recipients_550_relay_553_unsafe_and_postmaster() {
    let server = TestServer::with(|c| c.users = users(&["jones"]));
    let mut c = server.client();
    c.expect("EHLO client.test", 250);
    // No path at all is a syntax error, not the null path (RFC 5321 §4.1.2), and starts nothing.
    c.expect("MAIL FROM:", 501);
    c.expect("RCPT TO:<jones@mx.test>", 503);
    c.expect("MAIL FROM:<>", 250);
    assert_eq!(
        c.expect("RCPT TO:<green@mx.test>", 550).text(),
        "5.1.1 No such user here"
    );
    assert_eq!(
        c.expect("RCPT TO:<jones@example.com>", 550).text(),
        "5.7.1 Relaying denied"
    );
    c.expect("RCPT TO:<jones%example.com@mx.test>", 550);
    c.expect("RCPT TO:<@mx.test:jones@example.com>", 550);
    for bad in [
        "../../etc/passwd",
        ".hidden",
        "-rf",
        "a..b",
        "a/b",
        "a\\b",
        "jones.lock",
        &"x".repeat(65),
    ] {
        assert_eq!(
            c.expect(&format!("RCPT TO:<{bad}@mx.test>"), 553).text(),
            "5.1.3 Requested action not taken: mailbox name not allowed",
            "{bad}"
        );
    }
    c.send(b"RCPT TO:<a\x01b@mx.test>\r\n");
    assert_eq!(c.read_reply().code, 553);
    c.expect("RCPT TO:<postmaster>", 250);
    // A quoted string means what it quotes (RFC 5322 §3.2.4): 553 before.
    c.expect("RCPT TO:<\"postmaster\">", 250);
    c.expect("RCPT TO:<\"jones\"@mx.test>", 250);
    // So does a quoted-pair (RFC 5321 §4.1.2: all quoted forms are one), and §4.5.1's
    // postmaster in any of them.
    c.expect("RCPT TO:<\"post\\master\">", 250);
    c.expect("RCPT TO:<\"jo\\nes\"@mx.test>", 250);
    c.expect("RCPT TO:<@relay.example:Jones@MX.TEST>", 250);
    c.expect("DATA", 354);
    c.send(b"Subject: bounce\r\n\r\nnull sender\r\n.\r\n");
    assert_eq!(c.read_reply().code, 250);
    assert!(
        server
            .mbox_text("postmaster")
            .starts_with("From MAILER-DAEMON ")
    );
    assert!(server.mbox_text("jones").contains("Return-Path: <>\n"));
    // Nothing was written anywhere but the two mailboxes.
    let mut files: Vec<String> = std::fs::read_dir(server.mail_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    files.sort();
    assert_eq!(files, ["jones", "postmaster"]);
}

#[test]
fn message_too_big_552_declared_and_during_data() {
    let server = TestServer::with(|c| c.max_message_size = 1000);
    let mut c = server.client();
    assert!(
        c.expect("EHLO client.test", 250)
            .lines
            .contains(&"SIZE 1000".to_string())
    );
    assert_eq!(
        c.expect("MAIL FROM:<a@b.test> SIZE=1001", 552).text(),
        "5.3.4 Requested mail action aborted: message exceeds fixed maximum message size"
    );
    c.expect("MAIL FROM:<a@b.test> SIZE=1000", 250);
    c.expect("RCPT TO:<jones@mx.test>", 250);
    c.expect("DATA", 354);
    for _ in 0..40 {
        c.send(b"0123456789012345678901234567890123456789\r\n");
    }
    c.send(b".\r\n");
    assert_eq!(c.read_reply().code, 552);
    assert!(server.mbox("jones").is_empty());
    // The session goes on and a message within the limit is delivered.
    let r = c.send_mail("a@b.test", &["jones@mx.test"], "small");
    assert_eq!(r.code, 250);
    // Past twice the limit the session ends, before the message does: what is read only to be
    // thrown away is bounded too.
    c.expect("MAIL FROM:<a@b.test>", 250);
    c.expect("RCPT TO:<jones@mx.test>", 250);
    c.expect("DATA", 354);
    for _ in 0..60 {
        c.send(b"0123456789012345678901234567890123456789\r\n");
    }
    assert_eq!(
        c.read_reply().line(),
        "552 5.3.4 Message exceeds fixed maximum message size; closing transmission channel"
    );
    c.expect_closed();
    // A BDAT chunk declared that large, even before EHLO, is answered at once.
    let mut c = server.client();
    c.send(b"BDAT 99999999999999999999999 LAST\r\n");
    assert_eq!(c.read_reply().code, 552);
    c.expect_closed();
    assert!(server.mbox("jones").ends_with(b"small\n\n"));
}

#[test]
fn pipelined_transaction_in_one_write() {
    let server = TestServer::start();
    let mut c = server.client();
    c.send(b"EHLO client.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<jones@mx.test>\r\nRCPT TO:<nobody@example.com>\r\nRCPT TO:<brown@mx.test>\r\nDATA\r\n");
    let codes: Vec<u16> = (0..6).map(|_| c.read_reply().code).collect();
    assert_eq!(codes, [250, 250, 250, 550, 250, 354]);
    c.send(b"Subject: piped\r\n\r\nbody\r\n.\r\nQUIT\r\n");
    assert_eq!(c.read_reply().code, 250);
    assert_eq!(c.read_reply().code, 221);
    assert!(
        server
            .mbox_text("brown")
            .ends_with("Subject: piped\n\nbody\n\n")
    );
}

#[test]
fn a_client_that_stops_sending_after_the_dot_still_gets_its_250() {
    let server = TestServer::start();
    let mut c = server.client();
    c.expect("EHLO client.test", 250);
    c.expect("MAIL FROM:<a@b.test>", 250);
    c.expect("RCPT TO:<jones@mx.test>", 250);
    c.expect("DATA", 354);
    c.send(b"Subject: last words\r\n\r\nbye\r\n.\r\n");
    // The client's end of file reaches the session while the writer may still be at work.
    c.stream.shutdown(std::net::Shutdown::Write).unwrap();
    let r = c.read_reply();
    assert_eq!(r.code, 250, "{r:?}");
    assert!(r.text().contains("delivered as"), "{r:?}");
    // Exactly one reply, then the server closes.
    c.expect_closed();
    assert!(
        server
            .mbox_text("jones")
            .contains("Subject: last words\n\nbye\n")
    );
}

#[test]
fn slow_dribbling_client_is_served() {
    let server = TestServer::start();
    let mut c = server.client();
    c.stream.set_nodelay(true).unwrap();
    let script = b"HELO slow.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<jones@mx.test>\r\nDATA\r\n";
    for &byte in script {
        c.stream.write_all(&[byte]).unwrap();
        // Pacing, not synchronisation: the bytes arrive one by one.
        std::thread::sleep(Duration::from_millis(1));
    }
    let codes: Vec<u16> = (0..4).map(|_| c.read_reply().code).collect();
    assert_eq!(codes, [250, 250, 250, 354]);
    for &byte in b"..dribbled\r\nline two\r\n.\r\n" {
        c.stream.write_all(&[byte]).unwrap();
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(c.read_reply().code, 250);
    assert!(
        server
            .mbox_text("jones")
            .ends_with("\n.dribbled\nline two\n\n")
    );
}

#[test]
fn eight_bit_and_from_lines_are_stored_exactly() {
    let server = TestServer::start();
    let mut c = server.client();
    c.expect("EHLO client.test", 250);
    c.expect("MAIL FROM:<a@b.test> BODY=8BITMIME", 250);
    c.expect("RCPT TO:<jones@mx.test>", 250);
    c.expect("DATA", 354);
    c.send(b"Subject: 8bit\r\n\r\ncaf\xc3\xa9 \xff\xfe\r\nFrom here\r\n>From there\r\nbare\rcr\r\n..leading dot\r\n.\r\n");
    assert_eq!(c.read_reply().code, 250);
    let mbox = server.mbox("jones");
    let needle = b"Subject: 8bit\n\n";
    let body_at = mbox
        .windows(needle.len())
        .position(|w| w == needle)
        .unwrap();
    // In the body a bare CR ends a line (`--bare-newline normalize`, the default).
    assert_eq!(&mbox[body_at..], b"Subject: 8bit\n\ncaf\xc3\xa9 \xff\xfe\n>From here\n>>From there\nbare\ncr\n.leading dot\n\n");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(server.mail_dir().join("jones"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn client_disconnecting_mid_data_stores_nothing() {
    let server = TestServer::start();
    {
        let mut c = server.client();
        c.expect("HELO client.test", 250);
        c.expect("MAIL FROM:<a@b.test>", 250);
        c.expect("RCPT TO:<jones@mx.test>", 250);
        c.expect("DATA", 354);
        c.send(b"half a message\r\n");
    }
    let mut c = server.client();
    c.expect("HELO client.test", 250);
    assert_eq!(
        c.send_mail("a@b.test", &["jones@mx.test"], "whole").code,
        250
    );
    let mbox = server.mbox_text("jones");
    assert_eq!(mbox_entries(&mbox).len(), 1);
    assert!(!mbox.contains("half"));
}

/// A pipelined group whose replies are long (written in parts of about 4 KiB, each before the
/// next commands are handled: `protocol::tests`) is answered whole, in order, none lost.
#[test]
fn a_long_pipelined_group_of_long_replies_is_answered_whole() {
    let server = TestServer::start();
    let mut c = server.client();
    c.expect("EHLO client.test", 250);
    // A message first, so the input buffer has grown to 8 KiB.
    assert_eq!(c.send_mail("a@b.test", &["jones@mx.test"], "x").code, 250);
    c.send(&b"HELP\r\n".repeat(1300));
    c.send(b"NOOP\r\n");
    for _ in 0..1300 {
        let r = c.read_reply();
        assert_eq!((r.code, r.lines.len()), (211, 3), "{r:?}");
    }
    assert_eq!(c.read_reply().code, 250, "the NOOP's");
    c.expect("QUIT", 221);
}
