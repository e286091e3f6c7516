//! VRFY, EXPN and aliases over a real TCP socket on 127.0.0.1: VRFY answers an address RCPT
//! accepts, or RCPT's refusal; EXPN lists an alias's members; an alias forwards within the
//! local domains (251) or points elsewhere (551), and no 251 or 551 names a non-ASCII mailbox
//! without SMTPUTF8.

mod support;

use std::collections::BTreeSet;

use support::TestServer;

fn users(names: &[&str]) -> Option<BTreeSet<String>> {
    Some(names.iter().map(|s| s.to_string()).collect())
}

#[test]
fn vrfy_and_expn() {
    let server = TestServer::with(|c| {
        c.users = users(&["jones", "brown"]);
        c.add_alias("staff", ["jones", "brown"]).unwrap();
    });
    let mut c = server.client();
    assert_eq!(c.expect("VRFY Jones", 250).text(), "<jones@mx.test>");
    c.expect("VRFY <brown@mx.test>", 250);
    // Quotes that are not needed change nothing, as for RCPT (RFC 5322 §3.2.4).
    c.expect("VRFY \"jones\"", 250);
    c.expect("VRFY <\"brown\"@mx.test>", 250);
    c.expect("VRFY <\"br\\own\"@mx.test>", 250);
    // One trailing dot is the domain written absolute; two are no domain, as RCPT says (501).
    c.expect("VRFY <brown@mx.test.>", 250);
    c.expect("VRFY <brown@mx.test..>", 550);
    c.expect("EXPN staff@mx.test..", 550);
    // A tab inside an argument is refused as any control (a space separates); at the ends it is
    // trimmed.
    for line in ["VRFY jo\tnes", "EXPN st\taff", "HELP MA\tIL"] {
        c.expect(line, 501);
    }
    c.expect("VRFY \tjones\t", 250);
    c.expect("EXPN \"staff\"", 250);
    c.expect("VRFY green", 550);
    c.expect("VRFY", 501);
    let expn = c.expect("EXPN staff", 250);
    assert_eq!(expn.lines, ["<jones@mx.test>", "<brown@mx.test>"]);
    assert_eq!(
        c.expect("EXPN jones", 550).line(),
        "550 Not a mailing list here"
    );
    // RFC 6531 §3.7.4.2: the SMTPUTF8 a client such as curl adds changes nothing for ASCII.
    let r = c.expect("VRFY Jones SMTPUTF8", 250);
    assert_eq!(r.text(), "<jones@mx.test>");
    let expn = c.expect("EXPN staff SMTPUTF8", 250);
    assert_eq!(expn.lines, ["<jones@mx.test>", "<brown@mx.test>"]);
    c.expect("VRFY green SMTPUTF8", 550);

    let catch_all = TestServer::start();
    let mut c = catch_all.client();
    c.expect("VRFY anybody", 252);
    c.expect("VRFY ../etc", 550);
}

#[test]
fn vrfy_answers_an_address_that_rcpt_accepts() {
    // The hostname is not among the local domains, so an address at it would be refused.
    let server = TestServer::with(|c| {
        c.hostname = "mx.test".into();
        c.domains = vec!["a.test".into()];
        c.users = users(&["jones"]);
        c.aliases = vec![("staff".into(), vec!["jones".into()])];
    });
    let mut c = server.client();
    // HELO: no enhanced status codes in front of the addresses.
    c.expect("HELO client.test", 250);
    c.expect("RCPT TO:<jones@mx.test>", 503);
    c.expect("MAIL FROM:<a@b.test>", 250);
    c.expect("RCPT TO:<jones@mx.test>", 550);
    for name in ["jones", "Jones", "staff", "postmaster"] {
        let answer = c.expect(&format!("VRFY {name}"), 250).text();
        assert!(answer.ends_with("@a.test>"), "{answer}");
        c.expect(&format!("RCPT TO:{answer}"), 250);
    }
    for member in c.expect("EXPN staff", 250).lines {
        c.expect(&format!("RCPT TO:{member}"), 250);
    }
    c.expect("DATA", 354);
    c.send(b"Subject: verified\r\n\r\nx\r\n.\r\n");
    assert_eq!(c.read_reply().code, 250);
    assert!(server.mbox_text("jones").contains("Subject: verified\n"));
}

/// A local domain given with its trailing dot (a fully qualified name) is the same domain: mail
/// for `a.test` and `a.test.` alike was refused as relaying, and VRFY answered with an address
/// RCPT refused.
#[test]
fn a_local_domain_given_with_a_trailing_dot_is_the_same_domain() {
    let server = TestServer::with(|c| c.domains = vec!["A.test.".into()]);
    let mut c = server.client();
    c.expect("EHLO client.test", 250);
    c.expect("MAIL FROM:<a@b.test>", 250);
    c.expect("RCPT TO:<x@a.test>", 250);
    c.expect("RCPT TO:<y@A.TEST.>", 250);
    let answer = c.expect("VRFY postmaster", 250).text();
    assert_eq!(answer, "2.1.5 <postmaster@a.test>");
    c.expect("RCPT TO:<postmaster@a.test>", 250);
    // With no domain given, the hostname is the local domain, dot or no dot.
    let server = TestServer::with(|c| {
        c.hostname = "mx.test.".into();
        c.domains = Vec::new();
    });
    let mut c = server.client();
    c.expect("EHLO client.test", 250);
    c.expect("MAIL FROM:<a@b.test>", 250);
    c.expect("RCPT TO:<x@mx.test>", 250);
}

#[test]
fn aliases_251_forward_and_551_not_local() {
    let server = TestServer::with(|c| {
        c.domains = vec!["mx.test".into(), "other.test".into()];
        c.users = users(&["jones", "brown"]);
        c.aliases = vec![
            ("fwd".into(), vec!["brown@other.test".into()]),
            ("away".into(), vec!["green@elsewhere.example".into()]),
            ("loop".into(), vec!["loop2".into()]),
            ("loop2".into(), vec!["loop".into()]),
            ("quoted".into(), vec!["\"jo\\nes\"@other.test".into()]),
        ];
    });
    let mut c = server.client();
    c.expect("EHLO client.test", 250);
    // A quoted target is the name it quotes, as in RCPT.
    c.expect("VRFY quoted", 250);
    // VRFY answers as RCPT routes (RFC 5321 §3.5.3), never 250 for an alias RCPT refuses.
    c.expect("VRFY fwd", 250);
    assert_eq!(
        c.expect("VRFY away", 551).line(),
        "551 5.1.6 User not local; please try <green@elsewhere.example>"
    );
    c.expect("VRFY loop", 550);
    c.expect("MAIL FROM:<a@b.test>", 250);
    c.expect("RCPT TO:<loop@mx.test>", 550);
    assert_eq!(
        c.expect("RCPT TO:<fwd@mx.test>", 251).text(),
        "2.1.5 User not local; will forward to <brown@other.test>"
    );
    assert_eq!(
        c.expect("RCPT TO:<away@mx.test>", 551).text(),
        "5.1.6 User not local; please try <green@elsewhere.example>"
    );
    c.expect("DATA", 354);
    c.send(b"forwarded\r\n.\r\n");
    assert_eq!(c.read_reply().code, 250);
    assert!(server.mbox_text("brown").contains("\tfor <fwd@mx.test>; "));
}

/// RFC 6531 §3.7.4.1: without SMTPUTF8, no 251 or 551 names a non-ASCII mailbox; they become
/// 250 and 550. With it, they name it.
#[test]
fn a_251_or_551_names_a_non_ascii_mailbox_only_under_smtputf8() {
    let server = TestServer::with(|c| {
        c.domains = vec!["mx.test".into(), "other.test".into()];
        c.aliases = vec![
            ("fwd".into(), vec!["j\u{f6}rg@other.test".into()]),
            ("away".into(), vec!["j\u{f6}rg@elsewhere.example".into()]),
        ];
    });
    let mut c = server.client();
    c.expect("EHLO client.test", 250);
    c.expect("MAIL FROM:<a@b.test>", 250);
    assert_eq!(
        c.expect("RCPT TO:<fwd@mx.test>", 250).text(),
        "2.1.5 Recipient OK"
    );
    let r = c.expect("RCPT TO:<away@mx.test>", 550);
    assert_eq!(r.text(), "5.1.6 User not local");
    c.expect("RSET", 250);
    c.expect("MAIL FROM:<a@b.test> SMTPUTF8", 250);
    let r = c.expect("RCPT TO:<fwd@mx.test>", 251);
    assert_eq!(
        r.text(),
        "2.1.5 User not local; will forward to <j\u{f6}rg@other.test>"
    );
    let r = c.expect("RCPT TO:<away@mx.test>", 551);
    assert_eq!(
        r.text(),
        "5.1.6 User not local; please try <j\u{f6}rg@elsewhere.example>"
    );
}
