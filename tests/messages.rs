//! Hostile message content over a real socket (issue 8): a first line that would fold into
//! mboxd's own `Received:` header, bare CR and bare LF under `--bare-newline normalize` and
//! `reject`, by DATA and by BDAT; and messages that do not fit the in-flight budget
//! (`--max-inflight-bytes`), which are read to their end and refused with `452 4.3.1` while small
//! ones keep flowing; and header fields that mbox readers act on (`Content-Length:`, `Status:`),
//! which are stored renamed.

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use mboxd::BareNewline;
use support::{Client, Reply, TestServer, mbox_entries, output_within};

/// The issue's example: a first line that continues the `Received:` header mboxd writes above
/// it, so that its date would be read as 2001.
const FOLDING: &[u8] =
    b"\tfrom trusted.example ([10.0.0.1]) by mx.test; Mon, 1 Jan 2001 00:00:00 +0000\r\n\
Subject: forged\r\n\r\nhi\r\n";
/// One header line on the wire; split at the bare CR it would be two.
const INJECTED_CR: &[u8] = b"Subject: hello\rX-Injected-CR: yes\r\n\r\nbody\r\n";

/// MAIL and RCPT for `to`, then the message by DATA (it must need no dot-stuffing); the reply
/// to its end.
fn by_data(c: &mut Client, to: &str, message: &[u8]) -> Reply {
    c.expect("MAIL FROM:<a@b.test>", 250);
    c.expect(&format!("RCPT TO:<{to}>"), 250);
    c.expect("DATA", 354);
    c.send(message);
    c.send(b".\r\n");
    c.read_reply()
}

/// MAIL and RCPT for `to`, then the message as one `BDAT n LAST` chunk; the reply to it.
fn by_bdat(c: &mut Client, to: &str, message: &[u8]) -> Reply {
    c.expect("MAIL FROM:<a@b.test>", 250);
    c.expect(&format!("RCPT TO:<{to}>"), 250);
    c.send(format!("BDAT {} LAST\r\n", message.len()).as_bytes());
    c.send(message);
    c.read_reply()
}

fn assert_refused(r: &Reply, code: u16, enhanced: &str) {
    assert_eq!(r.code, code, "{r:?}");
    assert!(r.text().starts_with(enhanced), "{r:?}");
}

fn have_python() -> bool {
    Command::new("python3")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Parses an mbox with Python's `mailbox` (whose `email` parser breaks lines at CR, LF and
/// CRLF) and prints, per message, its header names and the Subject and Received values.
const PYTHON_HEADERS: &str = r#"
import mailbox, sys
for m in mailbox.mbox(sys.argv[1], create=False):
    print(repr(m.keys()))
    print(repr(m.get_all("Subject")))
    print(repr(m.get_all("Received")))
"#;

#[test]
fn a_first_line_starting_with_white_space_is_refused_by_data_and_bdat() {
    let server = TestServer::start();
    let mut c = server.client();
    c.expect("EHLO fold.test", 250);
    assert_refused(&by_data(&mut c, "jones@mx.test", FOLDING), 550, "5.6.0");
    assert_refused(&by_bdat(&mut c, "jones@mx.test", FOLDING), 550, "5.6.0");
    assert_refused(
        &by_data(&mut c, "jones@mx.test", b" X-Space: first\r\n\r\nhi\r\n"),
        550,
        "5.6.0",
    );
    assert!(!server.mail_dir().join("jones").exists());
    // The session goes on; a later line may be folded as usual.
    let ok = b"Subject: fine\r\n\tfolded\r\n\r\nhi\r\n";
    assert_eq!(by_data(&mut c, "jones@mx.test", ok).code, 250);
    c.expect("QUIT", 221);
    let mbox = server.mbox_text("jones");
    assert_eq!(mbox_entries(&mbox).len(), 1);
    assert!(!mbox.contains("trusted.example"), "{mbox}");
    assert!(
        mbox.contains("\nSubject: fine\n\tfolded\n\nhi\n\n"),
        "{mbox}"
    );
}

#[test]
fn a_bare_cr_in_the_header_stays_inside_one_header_line_under_normalize() {
    let server = TestServer::start();
    let mut c = server.client();
    c.expect("EHLO cr.test", 250);
    assert_eq!(by_data(&mut c, "jones@mx.test", INJECTED_CR).code, 250);
    assert_eq!(by_bdat(&mut c, "jones@mx.test", INJECTED_CR).code, 250);
    // In the body, a bare CR or LF ends a line, and that line is quoted like any other.
    let body = b"Subject: body\r\n\r\nhello\rFrom evil\r\nbye\nFrom evil2\r\n";
    assert_eq!(by_data(&mut c, "jones@mx.test", body).code, 250);
    c.expect("QUIT", 221);
    let mbox = server.mbox("jones");
    assert!(!mbox.contains(&b'\r'), "a CR was stored");
    let text = String::from_utf8(mbox).unwrap();
    let entries = mbox_entries(&text);
    assert_eq!(entries.len(), 3, "{text}");
    for entry in &entries[..2] {
        assert!(
            entry.contains("\nSubject: hello X-Injected-CR: yes\n\nbody\n\n"),
            "{entry}"
        );
    }
    assert!(
        entries[2].ends_with("\nSubject: body\n\nhello\n>From evil\nbye\n>From evil2\n\n"),
        "{}",
        entries[2]
    );
    if !have_python() {
        println!("skipped: python3 not found (the bytes were checked)");
        return;
    }
    let out = output_within(
        Command::new("python3")
            .args(["-c", PYTHON_HEADERS])
            .arg(server.mail_dir().join("jones")),
        Duration::from_secs(30),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = seen.lines().collect();
    assert_eq!(lines.len(), 9, "three messages, three lines each:\n{seen}");
    for message in lines.chunks(3).take(2) {
        assert_eq!(
            message[0], "['Return-Path', 'Received', 'Subject']",
            "{seen}"
        );
        assert_eq!(message[1], "['hello X-Injected-CR: yes']", "{seen}");
        assert!(
            message[2].contains("by mx.test (mboxd) with ESMTP") && message[2].contains("+0000"),
            "{seen}"
        );
    }
}

#[test]
fn a_bare_cr_or_lf_is_refused_under_reject() {
    let server = TestServer::with(|c| c.bare_newline = BareNewline::Reject);
    let mut c = server.client();
    c.expect("EHLO reject.test", 250);
    assert_refused(&by_data(&mut c, "jones@mx.test", INJECTED_CR), 550, "5.5.2");
    assert_refused(&by_bdat(&mut c, "jones@mx.test", INJECTED_CR), 550, "5.5.2");
    let bare_lf = b"Subject: x\r\n\r\nbody\nFrom evil\r\n";
    assert_refused(&by_data(&mut c, "jones@mx.test", bare_lf), 550, "5.5.2");
    // A CRLF split across two BDAT chunks is not bare.
    c.expect("MAIL FROM:<a@b.test>", 250);
    c.expect("RCPT TO:<jones@mx.test>", 250);
    c.send(b"BDAT 13\r\nSubject: x\r\n\r");
    assert_eq!(c.read_reply().code, 250);
    c.send(b"BDAT 4 LAST\r\n\nhi\n");
    // ... but a LF alone at the end is.
    assert_refused(&c.read_reply(), 550, "5.5.2");
    assert!(!server.mail_dir().join("jones").exists());
    let clean = b"Subject: clean\r\n\r\nbody\r\n";
    assert_eq!(by_data(&mut c, "jones@mx.test", clean).code, 250);
    c.expect("QUIT", 221);
    let mbox = server.mbox_text("jones");
    assert_eq!(mbox_entries(&mbox).len(), 1);
    assert!(mbox.ends_with("\nSubject: clean\n\nbody\n\n"), "{mbox}");
}

/// A message of `n` lines of 1000 octets.
fn big(n: usize) -> Vec<u8> {
    let mut line = vec![b'b'; 998];
    line.extend_from_slice(b"\r\n");
    let mut message = b"Subject: big\r\n\r\n".to_vec();
    for _ in 0..n {
        message.extend_from_slice(&line);
    }
    message
}

#[test]
fn a_message_that_does_not_fit_the_budget_is_read_to_its_end_and_refused_with_452() {
    // Eight 64 KiB steps; a message may grow to seven of them.
    let server = TestServer::with(|c| c.max_inflight_bytes = 512 * 1024);
    let mut c = server.client();
    c.expect("EHLO budget.test", 250);
    let message = big(1000);
    assert_refused(&by_data(&mut c, "jones@mx.test", &message), 452, "4.3.1");
    // The rest of the message was read, not taken for commands: the session goes on.
    let small = b"Subject: small\r\n\r\nhi\r\n";
    assert_eq!(by_data(&mut c, "jones@mx.test", small).code, 250);
    // By BDAT the chunk is read to its end and refused; the transaction is over.
    c.expect("MAIL FROM:<a@b.test>", 250);
    c.expect("RCPT TO:<jones@mx.test>", 250);
    c.send(format!("BDAT {}\r\n", message.len()).as_bytes());
    c.send(&message);
    assert_refused(&c.read_reply(), 452, "4.3.1");
    c.send(b"BDAT 2 LAST\r\nhi");
    assert_eq!(c.read_reply().code, 503);
    assert_eq!(by_bdat(&mut c, "jones@mx.test", small).code, 250);
    c.expect("QUIT", 221);
    let mbox = server.mbox_text("jones");
    assert_eq!(mbox_entries(&mbox).len(), 2, "{mbox}");
    assert!(!mbox.contains("Subject: big"));
}

#[test]
fn small_messages_keep_flowing_while_a_large_one_is_received_and_refused() {
    // Eight 64 KiB steps of budget; a message may grow to seven, and the eighth is left for
    // other messages' first steps.
    let server = TestServer::with(|c| c.max_inflight_bytes = 512 * 1024);
    let mut large = server.client();
    large.expect("EHLO large.test", 250);
    large.expect("MAIL FROM:<a@b.test>", 250);
    large.expect("RCPT TO:<jones@mx.test>", 250);
    // A chunk's reply says it was read: the large message now holds seven steps.
    let message = big(1000);
    let (first, rest) = message.split_at(440 * 1024);
    large.send(format!("BDAT {}\r\n", first.len()).as_bytes());
    large.send(first);
    assert_eq!(large.read_reply().code, 250);
    // While it is in progress, small ones are delivered in the eighth left.
    let mut small = server.client();
    small.expect("EHLO small.test", 250);
    for n in 0..5 {
        let m = format!("Subject: small {n}\r\n\r\nhi\r\n");
        let r = by_data(&mut small, "brown@mx.test", m.as_bytes());
        assert_eq!(r.code, 250, "{n}: {r:?}");
    }
    small.expect("QUIT", 221);
    // Growing into that eighth is refused; the chunk is read to its end.
    let (more, _) = rest.split_at(40 * 1024);
    large.send(format!("BDAT {}\r\n", more.len()).as_bytes());
    large.send(more);
    assert_refused(&large.read_reply(), 452, "4.3.1");
    large.expect("QUIT", 221);
    assert_eq!(mbox_entries(&server.mbox_text("brown")).len(), 5);
    assert!(!server.mail_dir().join("jones").exists());
}

#[test]
fn a_clients_content_length_or_status_cannot_reframe_or_flag_the_mailbox() {
    // formail, mutt and Dovecot skip `Content-Length:` octets from the header's end, so a
    // client's value swallowed the messages stored after its own (formail saw 1 message here,
    // not 3); `Status:` and its kin are read as the mailbox's flags (read, deleted) and IMAP
    // ids. They are stored renamed.
    let server = TestServer::start();
    let mut c = server.client();
    c.expect("EHLO reader.test", 250);
    // Dovecot reads a field name up to a NUL: `X-Status\0x:` is `X-Status` there.
    let attacker = b"Content-Length: 100000\r\nStatus: RO\r\nX-Status: D\r\nX-UID: 4000000000\r\n\
        X-Status\0x: F\r\nSubject: first\r\n\r\nhi\r\n";
    assert_eq!(by_data(&mut c, "jones@mx.test", attacker).code, 250);
    for n in 0..2 {
        let victim = format!("Subject: victim {n}\r\n\r\nhello\r\n");
        assert_eq!(
            by_bdat(&mut c, "jones@mx.test", victim.as_bytes()).code,
            250
        );
    }
    c.expect("QUIT", 221);
    let entries = mbox_entries(&server.mbox_text("jones"));
    assert_eq!(entries.len(), 3);
    assert!(
        entries[0].contains(
            "\nX-Original-Content-Length: 100000\nX-Original-Status: RO\nX-Original-X-Status: D\n\
             X-Original-X-UID: 4000000000\nX-Original-X-Status\0x: F\nSubject: first\n"
        ),
        "{}",
        entries[0]
    );
    // The library's reader gives the message back as sent, and its fields by their own names.
    let mailbox = mboxd::mbox::Mailbox::open(server.mail_dir().join("jones")).unwrap();
    let first = &mailbox.messages()[0];
    assert_eq!(first.as_sent_crlf(), attacker);
    assert_eq!(first.header("content-length"), Some("100000"));
    // And a reader that honours Content-Length splits the file where mboxd framed it.
    if Command::new("formail").arg("-v").output().is_err() {
        println!("skipped: formail not found (apt-get install procmail); the bytes were checked");
        return;
    }
    let split = "formail -s sh -c 'cat >/dev/null; echo message' < \"$1\"";
    let out = output_within(
        Command::new("sh")
            .args(["-c", split, "sh"])
            .arg(server.mail_dir().join("jones")),
        Duration::from_secs(30),
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 3);
}
