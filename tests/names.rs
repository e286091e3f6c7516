//! Forged headers and look-alike mailboxes, over real TCP sockets on 127.0.0.1: the rows of
//! issue 8's attack table about names. A HELO name, a local part or a domain holding a line
//! separator, NEL, a C1 control, a bidi override or an invisible character is refused (501 for
//! HELO/EHLO, 553 5.1.3 for an address), so nothing of it reaches `Received:`, `Return-Path:`
//! or a file name; in catch-all mode the spellings of one name reach one mailbox file or are
//! refused, never several files; an unquoted local part holding `@` is a syntax error (501). A
//! HELO name or unquoted local part with header syntax in it (`(`, `;`...) is taken, but written
//! in a header with `?` for it, or quoted.
//! Each test checks the mail directory holds exactly the files it should.

mod support;

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use support::{Client, TestServer, mbox_entries, output_within};

/// Every file in the mail directory (none when it was never created; any other error fails).
fn files(server: &TestServer) -> BTreeSet<String> {
    match std::fs::read_dir(server.mail_dir()) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeSet::new(),
        dir => dir
            .expect("the mail directory")
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
    }
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

/// The reply's code and enhanced code, as in `553 5.1.3`.
fn code(c: &mut Client, line: &str) -> String {
    let r = c.cmd(line);
    let enhanced = r.text().split(' ').next().unwrap_or_default().to_string();
    format!("{} {enhanced}", r.code)
}

/// Ends a transaction: DATA with a small message if some recipient was accepted, else RSET.
fn finish(c: &mut Client, accepted: bool) {
    if accepted {
        c.expect("DATA", 354);
        c.send(b"Subject: t\r\n\r\nbody\r\n.\r\n");
        assert_eq!(c.read_reply().code, 250);
    } else {
        c.expect("RSET", 250);
    }
}

#[test]
fn ehlo_with_a_line_separator_is_501_and_cannot_reach_received() {
    let server = TestServer::start();
    let mut c = server.client();
    for line in [
        "EHLO ok\u{2028}X-Injected-Helo:yes",
        "HELO ok\u{2029}X-Injected-Helo:yes",
        "EHLO ok\u{85}X-Injected-Helo:yes",
        "EHLO ok\u{9b}31mX",
        "EHLO \u{202e}tset.tneilc",
    ] {
        assert_eq!(c.cmd(line).code, 501, "{line:?}");
    }
    // No name was taken: the session still wants HELO or EHLO.
    assert_eq!(c.cmd("MAIL FROM:<a@b.test>").code, 503);
    c.expect("EHLO client.test", 250);
    assert_eq!(c.cmd("EHLO ok\u{2028}X-Injected-Helo:yes").code, 501);
    let r = c.send_mail("a@b.test", &["jones@mx.test"], "Subject: s\r\n\r\nhi\r\n");
    assert_eq!(r.code, 250);
    let text = server.mbox_text("jones");
    let [entry] = &mbox_entries(&text)[..] else {
        panic!("{text:?}")
    };
    assert!(
        entry.contains("Received: from client.test ([127.0.0.1])\n"),
        "{entry}"
    );
    assert!(
        !entry.contains("Injected") && !entry.contains('\u{2028}'),
        "{entry}"
    );
    python_sees_only_mboxd_headers(&server, "jones", &["Return-Path", "Received", "Subject"]);
    assert_eq!(files(&server), set(&["jones"]));
}

#[test]
fn header_syntax_in_a_helo_name_or_local_part_cannot_hide_the_date_of_received() {
    let server = TestServer::start();
    // Each name is taken (250), but its `(`, `;`, `"` or `<` would open a comment that never
    // closes, end the tokens before mboxd's date, or open a quoted string or an address.
    for (helo, written) in [
        ("a(", "a?"),
        ("x;Mon,1Jan2001", "x?Mon?1Jan2001"),
        ("\"q<r>", "?q?r?"),
        ("[127.0.0.1]", "[127.0.0.1]"),
        // UTF-8 in the header of a message sent without SMTPUTF8 (RFC 6532 §3).
        ("b\u{fc}cher.test", "b?cher.test"),
        ("a,b:c", "a?b?c"),
        ("[IPv6:::1]", "[IPv6:::1]"),
    ] {
        let mut c = server.client();
        c.expect(&format!("EHLO {helo}"), 250);
        let r = c.send_mail("a@b.test", &["jones@mx.test"], "Subject: s\r\n\r\nhi\r\n");
        assert_eq!(r.code, 250, "{helo:?}");
        c.expect("QUIT", 221);
        let text = server.mbox_text("jones");
        let entries = mbox_entries(&text);
        let entry = entries.last().unwrap();
        assert!(
            entry.contains(&format!("Received: from {written} ([127.0.0.1])\n\tby ")),
            "{helo:?}: {entry}"
        );
    }
    // With SMTPUTF8 the header may hold the name as given.
    let mut c = server.client();
    c.expect("EHLO b\u{fc}cher.test", 250);
    c.expect("MAIL FROM:<a@b.test> SMTPUTF8", 250);
    c.expect("RCPT TO:<jones@mx.test>", 250);
    c.expect("DATA", 354);
    c.send(b"Subject: s\r\n\r\nhi\r\n.\r\n");
    assert_eq!(c.read_reply().code, 250);
    c.expect("QUIT", 221);
    let text = server.mbox_text("jones");
    let entry = mbox_entries(&text).pop().unwrap();
    assert!(
        entry.contains("Received: from b\u{fc}cher.test ([127.0.0.1])\n\tby "),
        "{entry}"
    );
    // The same characters in an unquoted local part: taken, and written as a quoted string,
    // which RFC 5321 §4.1.2 asks for. The file is named by the local part as given.
    let mut c = server.client();
    c.expect("EHLO client.test", 250);
    let r = c.send_mail(
        "a(b;c@b.test",
        &["jo(n;es@mx.test"],
        "Subject: s\r\n\r\nhi\r\n",
    );
    assert_eq!(r.code, 250);
    let text = server.mbox_text("jo(n;es");
    let [entry] = &mbox_entries(&text)[..] else {
        panic!("{text:?}")
    };
    assert!(entry.starts_with("From a(b;c@b.test "), "{entry}");
    assert!(
        entry.contains("Return-Path: <\"a(b;c\"@b.test>\n")
            && entry.contains("\tfor <\"jo(n;es\"@mx.test>; "),
        "{entry}"
    );
    // Dots only between atoms; and `for` names a mailbox, with a domain (RFC 5321 §4.4).
    let r = c.send_mail(".a@b.test", &["postmaster"], "Subject: s\r\n\r\nhi\r\n");
    assert_eq!(r.code, 250);
    let entry = mbox_entries(&server.mbox_text("postmaster")).pop().unwrap();
    assert!(
        entry.contains("Return-Path: <\".a\"@b.test>\n")
            && entry.contains("\tfor <postmaster@mx.test>; "),
        "{entry}"
    );
    assert_eq!(files(&server), set(&["jones", "jo(n;es", "postmaster"]));
}

#[test]
fn return_path_and_for_hold_mailboxes_with_their_domains_relative() {
    let server = TestServer::start();
    let mut c = server.client();
    c.expect("EHLO client.test", 250);
    // A sender without a domain is qualified as a recipient is (`Return-Path:` holds a
    // mailbox, RFC 5322 §3.6.7); a domain written absolute, `x.test.`, loses its last dot in
    // the From_ line and the headers (RFC 5321 §4.1.2's Domain has none); two are refused.
    let r = c.send_mail("bob", &["jones@mx.test."], "Subject: s\r\n\r\nhi\r\n");
    assert_eq!(r.code, 250);
    let r = c.send_mail("a@b.test.", &["jones"], "Subject: s\r\n\r\nhi\r\n");
    assert_eq!(r.code, 250);
    let text = server.mbox_text("jones");
    let [bare, dotted] = &mbox_entries(&text)[..] else {
        panic!("{text:?}")
    };
    assert!(
        bare.starts_with("From bob@mx.test ")
            && bare.contains("Return-Path: <bob@mx.test>\n")
            && bare.contains("\tfor <jones@mx.test>; "),
        "{bare}"
    );
    assert!(
        dotted.starts_with("From a@b.test ")
            && dotted.contains("Return-Path: <a@b.test>\n")
            && dotted.contains("\tfor <jones@mx.test>; "),
        "{dotted}"
    );
    c.expect("MAIL FROM:<a@b.test..>", 501);
    c.expect("MAIL FROM:<a@b.test>", 250);
    c.expect("RCPT TO:<jones@mx.test..>", 501);
    c.expect("QUIT", 221);
}

#[test]
fn an_address_without_a_domain_gets_an_ascii_one_unless_the_message_is_smtputf8() {
    // The first local domain is not ASCII: a message without SMTPUTF8 may not carry it in its
    // header (RFC 6532 §3), so the first ASCII local domain qualifies instead (not the host
    // name, mx.test, which is not a local domain here: a bounce to it would be refused).
    let server = TestServer::with(|c| {
        c.domains = vec!["b\u{fc}cher.test".into(), "mail.test".into()];
    });
    let mut c = server.client();
    c.expect("EHLO client.test", 250);
    let r = c.send_mail("bob", &["jones"], "Subject: s\r\n\r\nhi\r\n");
    assert_eq!(r.code, 250);
    c.expect("MAIL FROM:<bob> SMTPUTF8", 250);
    c.expect("RCPT TO:<jones>", 250);
    c.expect("DATA", 354);
    c.send(b"Subject: u\r\n\r\nhi\r\n.\r\n");
    assert_eq!(c.read_reply().code, 250);
    c.expect("QUIT", 221);
    let text = server.mbox_text("jones");
    let [ascii, utf8] = &mbox_entries(&text)[..] else {
        panic!("{text:?}")
    };
    assert!(
        ascii.starts_with("From bob@mail.test ")
            && ascii.contains("Return-Path: <bob@mail.test>\n")
            && ascii.contains("\tfor <jones@mail.test>; ")
            && ascii.is_ascii(),
        "{ascii}"
    );
    assert!(
        utf8.contains("Return-Path: <bob@b\u{fc}cher.test>\n")
            && utf8.contains("\tfor <jones@b\u{fc}cher.test>; "),
        "{utf8}"
    );
}

/// Python's email package (which re-serialises U+2028 as a line break) sees exactly `headers`
/// in every message of the mailbox.
fn python_sees_only_mboxd_headers(server: &TestServer, user: &str, headers: &[&str]) {
    let script = "import mailbox, sys\n\
                  for m in mailbox.mbox(sys.argv[1], create=False):\n    \
                  print('|'.join(m.keys()))\n";
    let have_python = Command::new("python3")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !have_python {
        println!("skipped: python3 not found, so Python's email package cannot read the mbox");
        return;
    }
    let out = output_within(
        Command::new("python3")
            .args(["-c", script])
            .arg(server.mail_dir().join(user)),
        Duration::from_secs(30),
    );
    assert!(out.status.success(), "{out:?}");
    let lines: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    // One line a message: Python found every message mboxd stored, not fewer.
    let stored = mbox_entries(&server.mbox_text(user)).len();
    assert!(stored > 0, "no message in {user}'s mailbox");
    assert_eq!(lines, vec![headers.join("|"); stored]);
}

#[test]
fn mail_from_with_a_forged_header_in_a_quoted_local_part_is_553() {
    let server = TestServer::start();
    let mut c = server.client();
    c.expect("EHLO attacker.test", 250);
    assert_eq!(
        code(
            &mut c,
            "MAIL FROM:<\"x\u{2028}Bcc: victim@example.test\"@attacker.test> SMTPUTF8"
        ),
        "553 5.1.7"
    );
    // Not an encoding matter: without SMTPUTF8 it is 5.1.7 too (a sender's X.1.7, RFC 3463
    // §3.2), not 5.6.7.
    assert_eq!(
        code(
            &mut c,
            "MAIL FROM:<\"x\u{2028}Bcc: victim@example.test\"@attacker.test>"
        ),
        "553 5.1.7"
    );
    assert_eq!(c.cmd("RCPT TO:<jones@mx.test>").code, 503);
    assert_eq!(c.cmd("DATA").code, 503);
    assert_eq!(files(&server), set(&[]));
}

#[test]
fn nel_csi_and_bidi_overrides_in_domains_are_553() {
    let server = TestServer::start();
    let mut c = server.client();
    c.expect("EHLO client.test", 250);
    for domain in [
        "exa\u{85}mple.test",
        "exa\u{9b}mple.test",
        "\u{202e}tset.elpmaxe",
        "exa\u{2066}mple\u{2069}.test",
        "exa\u{200b}mple.test",
    ] {
        assert_eq!(
            code(&mut c, &format!("MAIL FROM:<a@{domain}> SMTPUTF8")),
            "553 5.1.7",
            "{domain:?}"
        );
    }
    c.expect("MAIL FROM:<a@b.test> SMTPUTF8", 250);
    for domain in ["mx.test\u{85}", "mx\u{9b}.test", "\u{202e}mx.test"] {
        assert_eq!(
            code(&mut c, &format!("RCPT TO:<jones@{domain}>")),
            "553 5.1.3",
            "{domain:?}"
        );
    }
    // In an address literal the grammar has no place for them: a syntax error, as a control is.
    assert_eq!(
        code(&mut c, "RCPT TO:<jones@[127.0.0.1\u{2028}]>"),
        "501 5.1.3"
    );
    assert_eq!(code(&mut c, "RCPT TO:<jones@mx\u{1}.test>"), "501 5.1.3");
    assert_eq!(c.cmd("DATA").code, 554);
    assert_eq!(files(&server), set(&[]));
}

#[test]
fn invisible_spellings_of_alice_reach_one_mailbox_or_none() {
    let server = TestServer::start();
    let mut c = server.client();
    c.expect("EHLO client.test", 250);
    for local in [
        "alice",
        "alice\u{200b}",
        "\u{feff}alice",
        "a\u{180e}lice",
        "ALICE",
    ] {
        c.expect("MAIL FROM:<a@b.test> SMTPUTF8", 250);
        let r = code(&mut c, &format!("RCPT TO:<{local}@mx.test>"));
        let accepted = r == "250 2.1.5";
        assert!(accepted || r == "553 5.1.3", "{local:?}: {r}");
        // The plain spellings are accepted, the invisible ones refused.
        assert_eq!(accepted, local.is_ascii(), "{local:?}: {r}");
        finish(&mut c, accepted);
    }
    assert_eq!(files(&server), set(&["alice"]));
    assert_eq!(mbox_entries(&server.mbox_text("alice")).len(), 2);
}

#[test]
fn composed_and_decomposed_jose_are_one_mailbox() {
    let server = TestServer::start();
    let mut c = server.client();
    c.expect("EHLO client.test", 250);
    for local in ["jos\u{e9}", "jose\u{301}", "JOSE\u{301}"] {
        c.expect("MAIL FROM:<a@b.test> SMTPUTF8", 250);
        assert_eq!(
            code(&mut c, &format!("RCPT TO:<{local}@mx.test>")),
            "250 2.1.5",
            "{local:?}"
        );
        finish(&mut c, true);
    }
    assert_eq!(files(&server), set(&["jos\u{e9}"]));
    assert_eq!(mbox_entries(&server.mbox_text("jos\u{e9}")).len(), 3);
}

#[test]
fn a_configured_user_meets_every_spelling_of_its_name() {
    let server = TestServer::with(|c| {
        c.add_user("Jos\u{e9}").unwrap();
        c.add_alias("team", ["jos\u{e9}"]).unwrap();
    });
    let mut c = server.client();
    c.expect("EHLO client.test", 250);
    assert_eq!(
        c.cmd("EXPN team SMTPUTF8").line(),
        "250 2.1.5 <jos\u{e9}@mx.test>"
    );
    for local in ["jos\u{e9}", "jose\u{301}"] {
        c.expect("MAIL FROM:<a@b.test> SMTPUTF8", 250);
        assert_eq!(
            code(&mut c, &format!("RCPT TO:<{local}@mx.test>")),
            "250 2.1.5",
            "{local:?}"
        );
        finish(&mut c, true);
    }
    assert_eq!(
        c.cmd("VRFY jose\u{301} SMTPUTF8").text(),
        "2.1.5 <jos\u{e9}@mx.test>"
    );
    // Without SMTPUTF8 the client did not allow UTF-8 in the reply (RFC 6531 §3.7.4.2).
    let r = c.cmd("VRFY jose\u{301}");
    assert_eq!((r.code, r.text().get(..6)), (550, Some("5.6.8 ")), "{r:?}");
    assert_eq!(files(&server), set(&["jos\u{e9}"]));
    // SMTPUTF8 is in effect only after EHLO offered it: before any hello, and after HELO, a
    // UTF-8 answer is refused as without it (RFC 6531 §3.7.4.2), in ASCII.
    let mut c = server.client();
    for hello in [None, Some("HELO client.test")] {
        if let Some(hello) = hello {
            c.expect(hello, 250);
        }
        for line in ["VRFY jose\u{301} SMTPUTF8", "EXPN team SMTPUTF8"] {
            let r = c.cmd(line);
            assert_eq!(r.code, 550, "{hello:?} {line:?}: {r:?}");
            assert!(r.line().is_ascii(), "{hello:?} {line:?}: {r:?}");
        }
    }
}

#[test]
fn a_name_that_displays_reversed_is_refused() {
    let server = TestServer::start();
    let mut c = server.client();
    c.expect("EHLO client.test", 250);
    c.expect("MAIL FROM:<a@b.test> SMTPUTF8", 250);
    assert_eq!(code(&mut c, "RCPT TO:<\u{202e}ecila@mx.test>"), "553 5.1.3");
    assert_eq!(c.cmd("DATA").code, 554);
    assert_eq!(files(&server), set(&[]));
}

#[test]
fn an_unquoted_local_part_with_at_is_501_and_makes_no_file() {
    let server = TestServer::with(|c| c.add_domain("example.com").unwrap());
    let mut c = server.client();
    c.expect("EHLO client.test", 250);
    c.expect("MAIL FROM:<a@b.test>", 250);
    assert_eq!(
        code(&mut c, "RCPT TO:<alice@evil.test@example.com>"),
        "501 5.1.3"
    );
    assert_eq!(c.cmd("DATA").code, 503);
    // The same local part, quoted, is a name, and not a safe file name: 553.
    assert_eq!(
        code(&mut c, "RCPT TO:<\"alice@evil.test\"@example.com>"),
        "553 5.1.3"
    );
    c.expect("RSET", 250);
    assert_eq!(files(&server), set(&[]));
}

#[test]
fn a_recipient_without_a_domain_is_written_with_the_first_local_domain() {
    // RFC 5321 §4.4: `for` names a mailbox. The host's name is not a domain delivered here.
    let server = TestServer::with(|c| c.domains = vec!["example.org".into()]);
    let mut c = server.client();
    c.expect("EHLO client.test", 250);
    let r = c.send_mail("a@b.test", &["jones"], "Subject: s\r\n\r\nhi\r\n");
    assert_eq!(r.code, 250);
    let entry = mbox_entries(&server.mbox_text("jones")).pop().unwrap();
    assert!(
        entry.contains("\tfor <jones@example.org>; ") && entry.contains("\tby mx.test (mboxd)"),
        "{entry}"
    );
    assert_eq!(files(&server), set(&["jones"]));
}

#[test]
fn a_local_part_taken_unquoted_is_the_same_mailbox_quoted() {
    // `a(b)` is no dot-atom, so RFC 5321 §4.1.2 wants it quoted; mboxd takes it unquoted too.
    // The quoted form, the only one the RFC allows, was refused (553) for its quotes, and the
    // `Return-Path:` written for the unquoted one then named a sender this server refused.
    let server = TestServer::start();
    let mut c = server.client();
    c.expect("EHLO client.test", 250);
    for to in ["\"a(b)\"@mx.test", "a(b)@mx.test", "\"a\\(b)\"@mx.test"] {
        assert_eq!(c.send_mail("x@b.test", &[to], "hi").code, 250, "{to}");
    }
    let text = server.mbox_text("a(b)");
    assert_eq!(mbox_entries(&text).len(), 3);
    assert!(text.contains("\tfor <\"a(b)\"@mx.test>; "), "{text}");
    assert_eq!(files(&server), set(&["a(b)"]));
}
