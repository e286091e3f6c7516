//! Unit tests of the command parser, fed byte literals.

use super::*;

fn addr(local: &str, domain: Option<&str>) -> Address {
    Address {
        local: local.into(),
        domain: domain.map(Into::into),
    }
}

#[test]
fn helo_and_ehlo() {
    assert_eq!(
        parse(b"helo a.domain"),
        Ok(Command::Helo("a.domain".into()))
    );
    assert_eq!(
        parse(b"EHLO [127.0.0.1]"),
        Ok(Command::Ehlo("[127.0.0.1]".into()))
    );
    assert_eq!(
        parse(b"HELO"),
        Err(ParseError::Syntax("expected a domain name"))
    );
    assert!(matches!(parse(b"HELO a b"), Err(ParseError::Syntax(_))));
}

#[test]
fn mail_forms() {
    let want = Ok(Command::Mail {
        verb: MailVerb::Mail,
        from: Some(addr("Smith", Some("USC-ISIF.ARPA"))),
        params: vec![],
    });
    assert_eq!(parse(b"MAIL FROM:<Smith@USC-ISIF.ARPA>"), want);
    assert_eq!(parse(b"mail from: <Smith@USC-ISIF.ARPA>"), want);
    assert_eq!(parse(b"MAIL FROM:Smith@USC-ISIF.ARPA"), want);
    assert_eq!(
        parse(b"MAIL FROM:<>"),
        Ok(Command::Mail {
            verb: MailVerb::Mail,
            from: None,
            params: vec![]
        })
    );
    // No path at all is not the null path (RFC 5321 §4.1.2), nor is a bare RCPT TO:.
    for bare in [&b"MAIL FROM:"[..], b"MAIL FROM:   ", b"RCPT TO:"] {
        assert!(
            matches!(parse(bare), Err(ParseError::Syntax(_))),
            "{:?}",
            String::from_utf8_lossy(bare)
        );
    }
    assert!(matches!(
        parse(b"SOML FROM:<a@b>"),
        Ok(Command::Mail {
            verb: MailVerb::Soml,
            ..
        })
    ));
    assert!(matches!(
        parse(b"SAML FROM:<a@b>"),
        Ok(Command::Mail {
            verb: MailVerb::Saml,
            ..
        })
    ));
    assert!(matches!(
        parse(b"SEND FROM:<a@b>"),
        Ok(Command::Mail {
            verb: MailVerb::Send,
            ..
        })
    ));
}

#[test]
fn mail_params() {
    assert_eq!(
        parse(b"MAIL FROM:<a@b.c> SIZE=100 body=8BITMIME"),
        Ok(Command::Mail {
            verb: MailVerb::Mail,
            from: Some(addr("a", Some("b.c"))),
            params: vec![
                Param {
                    key: "SIZE".into(),
                    value: Some("100".into())
                },
                Param {
                    key: "BODY".into(),
                    value: Some("8BITMIME".into())
                },
            ],
        })
    );
    assert!(matches!(
        parse(b"MAIL FROM:<a@b.c> =x"),
        Err(ParseError::Syntax(_))
    ));
    assert!(matches!(
        parse(b"MAIL FROM:<a@b.c>SIZE=1"),
        Err(ParseError::Syntax(_))
    ));
}

#[test]
fn a_quoted_local_part_that_needs_no_quotes_loses_them() {
    for (path, local, domain) in [
        ("\"jones\"@x.test", "jones", Some("x.test")),
        ("\"postmaster\"", "postmaster", None),
        (
            "\"first.last+tag\"@x.test",
            "first.last+tag",
            Some("x.test"),
        ),
        ("\"j\u{f6}rg\"@x.test", "j\u{f6}rg", Some("x.test")),
        // RFC 5321 §4.1.2: all quoted forms are one; a quoted-pair is the character it quotes.
        ("\"jo\\nes\"@x.test", "jones", Some("x.test")),
        ("\"post\\master\"", "postmaster", None),
        ("\"\\a\\.b\"@x.test", "a.b", Some("x.test")),
        // Not dot-atoms, but taken unquoted too: one mailbox whichever way it is written.
        ("\"a..b\"@x.test", "a..b", Some("x.test")),
        ("\".a\"@x.test", ".a", Some("x.test")),
        ("\"a(b\"@x.test", "a(b", Some("x.test")),
        // These need their quotes, and keep them as written.
        ("\"a\\ b\"@x.test", "\"a\\ b\"", Some("x.test")),
        ("\"a b\"@x.test", "\"a b\"", Some("x.test")),
        ("\"a@b\"@x.test", "\"a@b\"", Some("x.test")),
        ("\"a<b\"@x.test", "\"a<b\"", Some("x.test")),
        ("\"a\\\"b\"@x.test", "\"a\\\"b\"", Some("x.test")),
        ("\"\"@x.test", "\"\"", Some("x.test")),
    ] {
        let line = format!("RCPT TO:<{path}>");
        assert_eq!(
            parse(line.as_bytes()),
            Ok(Command::Rcpt {
                to: addr(local, domain),
                params: vec![]
            }),
            "{path}"
        );
    }
}

#[test]
fn rcpt_forms() {
    assert_eq!(
        parse(b"RCPT TO:<Jones@BBN-UNIX.ARPA>"),
        Ok(Command::Rcpt {
            to: addr("Jones", Some("BBN-UNIX.ARPA")),
            params: vec![]
        })
    );
    assert_eq!(
        parse(b"RCPT TO:<postmaster>"),
        Ok(Command::Rcpt {
            to: addr("postmaster", None),
            params: vec![]
        })
    );
    // Source routes are accepted and ignored (RFC 5321 §4.1.2).
    assert_eq!(
        parse(b"RCPT TO:<@hosta.int,@jkl.org:userc@d.bar.org>"),
        Ok(Command::Rcpt {
            to: addr("userc", Some("d.bar.org")),
            params: vec![]
        })
    );
    assert_eq!(
        parse(b"RCPT TO:<\"a>b\"@x.org>"),
        Ok(Command::Rcpt {
            to: addr("\"a>b\"", Some("x.org")),
            params: vec![]
        })
    );
    let recipient = |why| Err(ParseError::Address { sender: false, why });
    assert_eq!(
        parse(b"RCPT TO:<>"),
        recipient("a recipient cannot be the null path")
    );
    assert!(matches!(parse(b"RCPT <a@b>"), Err(ParseError::Syntax(_))));
    assert_eq!(parse(b"RCPT TO:<a@b"), recipient("unterminated <path>"));
    assert!(matches!(
        parse(b"RCPT TO:<a@-b>"),
        Err(ParseError::Address { sender: false, .. })
    ));
    assert!(matches!(
        parse(b"MAIL FROM:<a@b@c>"),
        Err(ParseError::Address { sender: true, .. })
    ));
    assert!(matches!(
        parse(b"MAIL FROM:<@x,a@b>"),
        Err(ParseError::Address { sender: true, .. })
    ));
    assert!(matches!(
        parse(b"RCPT TO:<@b>"),
        Err(ParseError::Address { sender: false, .. })
    ));
}

#[test]
fn simple_verbs() {
    assert_eq!(parse(b"data"), Ok(Command::Data));
    assert_eq!(parse(b"RSET"), Ok(Command::Rset));
    assert_eq!(parse(b"QUIT"), Ok(Command::Quit));
    assert_eq!(parse(b"TURN"), Ok(Command::Turn));
    assert_eq!(parse(b"NOOP anything"), Ok(Command::Noop));
    assert_eq!(parse(b"HELP"), Ok(Command::Help(None)));
    assert_eq!(parse(b"HELP mail"), Ok(Command::Help(Some("mail".into()))));
    let vrfy = |arg: &str, utf8| {
        Ok(Command::Vrfy {
            arg: arg.into(),
            utf8,
        })
    };
    assert_eq!(parse(b"VRFY Smith"), vrfy("Smith", false));
    // RFC 6531 §3.7.4.2: an optional SMTPUTF8 after the string.
    assert_eq!(parse(b"VRFY Smith smtputf8"), vrfy("Smith", true));
    assert_eq!(parse(b"VRFY J. Smith SMTPUTF8"), vrfy("J. Smith", true));
    assert_eq!(parse(b"VRFY SMTPUTF8"), vrfy("SMTPUTF8", false));
    assert_eq!(
        parse(b"EXPN staff SMTPUTF8"),
        Ok(Command::Expn {
            arg: "staff".into(),
            utf8: true
        })
    );
    assert!(matches!(parse(b"VRFY"), Err(ParseError::Syntax(_))));
    assert!(matches!(parse(b"DATA now"), Err(ParseError::Syntax(_))));
    assert!(matches!(parse(b"QUIT now"), Err(ParseError::Syntax(_))));
}

#[test]
fn auth_forms() {
    let auth = |m: &str, i: Option<&str>| {
        Ok(Command::Auth {
            mechanism: m.into(),
            initial: i.map(str::to_string),
        })
    };
    assert_eq!(parse(b"AUTH PLAIN"), auth("PLAIN", None));
    assert_eq!(parse(b"auth login"), auth("LOGIN", None));
    assert_eq!(
        parse(b"AUTH PLAIN AGEAYg=="),
        auth("PLAIN", Some("AGEAYg=="))
    );
    assert_eq!(parse(b"AUTH PLAIN ="), auth("PLAIN", Some("=")));
    assert_eq!(
        parse(b"AUTH X-SOME_MECH  x"),
        auth("X-SOME_MECH", Some("x"))
    );
    for bad in [
        &b"AUTH"[..],
        b"AUTH ",
        b"AUTH PLAIN a b",
        b"AUTH PL:AIN",
        b"AUTH ABCDEFGHIJKLMNOPQRSTU",
        b"AUTH PLAIN a\x01",
    ] {
        assert!(
            matches!(parse(bad), Err(ParseError::Syntax(_))),
            "{:?}",
            String::from_utf8_lossy(bad)
        );
    }
}

#[test]
fn bdat_forms() {
    assert_eq!(
        parse(b"BDAT 100 LAST"),
        Ok(Command::Bdat {
            size: 100,
            last: true
        })
    );
    assert_eq!(
        parse(b"bdat 0"),
        Ok(Command::Bdat {
            size: 0,
            last: false
        })
    );
    assert!(matches!(parse(b"BDAT"), Err(ParseError::Syntax(_))));
    assert!(matches!(parse(b"BDAT -1"), Err(ParseError::Syntax(_))));
    assert!(matches!(parse(b"BDAT 1 FIRST"), Err(ParseError::Syntax(_))));
    // RFC 3030 §2's 1*DIGIT: leading zeros, and sizes past a u64 (taken as its maximum).
    assert_eq!(
        parse(b"BDAT 0000000000000000006 LAST"),
        Ok(Command::Bdat {
            size: 6,
            last: true
        })
    );
    assert_eq!(
        parse(b"BDAT 99999999999999999999999"),
        Ok(Command::Bdat {
            size: u64::MAX,
            last: false
        })
    );
    assert!(matches!(parse(b"BDAT +1"), Err(ParseError::Syntax(_))));
}

#[test]
fn garbage() {
    assert_eq!(parse(b""), Err(ParseError::Unrecognized));
    assert_eq!(parse(b"XYZZY"), Err(ParseError::Unrecognized));
    assert_eq!(parse(b"\xff\xfe"), Err(ParseError::Unrecognized));
    assert!(matches!(
        parse(b"MAIL FROM:<\xff@b>"),
        Err(ParseError::Address { sender: true, .. })
    ));
    assert!(matches!(
        parse(b"RCPT TO:<a@\xff>"),
        Err(ParseError::Address { sender: false, .. })
    ));
    // After the path, the octet is a parameter's; in the verb's keyword, the command's.
    for line in [
        &b"MAIL FROM:<a@b> X=\xff"[..],
        b"MAIL FR\xffOM:<a@b>",
        b"RCPT T\xff:<b@c>",
    ] {
        assert!(
            matches!(parse(line), Err(ParseError::Syntax(_))),
            "{line:?}"
        );
    }
    // A quoted `>` does not end the path.
    assert!(matches!(
        parse(b"MAIL FROM:<\"a>\xff\"@c.test>"),
        Err(ParseError::Address { sender: true, .. })
    ));
    assert!(matches!(
        parse(b"RCPT TO:a\xff@c.test SIZE=1"),
        Err(ParseError::Address { sender: false, .. })
    ));
    assert!(matches!(parse(b"VRFY a\x00b"), Err(ParseError::Syntax(_))));
    // A tab inside is refused as any control; at either end it is trimmed.
    for line in [
        &b"VRFY a\tb"[..],
        b"EXPN a\tb",
        b"HELP a\tb",
        b"VRFY a\tSMTPUTF8",
    ] {
        assert!(
            matches!(parse(line), Err(ParseError::Syntax(_))),
            "{line:?}"
        );
    }
    assert!(matches!(parse(b"VRFY \tSmith\t"), Ok(Command::Vrfy { arg, .. }) if arg == "Smith"));
    assert!(matches!(
        parse(b"MAIL FROM:<a@b\x01>"),
        Err(ParseError::Address { sender: true, .. })
    ));
    // A control character in a local part parses; the directory refuses it as a name.
    assert!(matches!(
        parse(b"MAIL FROM:<a\x00@b>"),
        Ok(Command::Mail { .. })
    ));
}

#[test]
fn an_unquoted_local_part_cannot_contain_at() {
    // RFC 5321 §4.1.2: Dot-string has no `@`; before, the last `@` split the address and
    // `alice@evil.test` became a local part (and a mailbox file in catch-all mode).
    for line in [
        "RCPT TO:<alice@evil.test@example.com>",
        "RCPT TO:alice@evil.test@example.com",
        "MAIL FROM:<a@b@c.test>",
        "RCPT TO:<@hop.test:a@b@c.test>",
        "RCPT TO:<a@@c.test>",
    ] {
        assert_eq!(
            parse(line.as_bytes()),
            Err(ParseError::Address {
                sender: line.starts_with("MAIL"),
                why: "an unquoted local part cannot contain @"
            }),
            "{line}"
        );
    }
    // Quoted, `@` is part of the local part.
    assert_eq!(
        parse(b"RCPT TO:<\"a@b\"@x.org>"),
        Ok(Command::Rcpt {
            to: addr("\"a@b\"", Some("x.org")),
            params: vec![]
        })
    );
    assert_eq!(
        parse(b"RCPT TO:<\"a@b\">"),
        Ok(Command::Rcpt {
            to: addr("\"a@b\"", None),
            params: vec![]
        })
    );
    // A quoted local part ends at its closing quote: what follows must be `@domain`.
    assert_eq!(
        parse(b"RCPT TO:<\"a\"b@x.org>"),
        Err(ParseError::Address {
            sender: false,
            why: "text after a quoted local part"
        })
    );
    assert!(matches!(
        parse(b"RCPT TO:<\"a\"@b@x.org>"),
        Err(ParseError::Address { sender: false, .. })
    ));
}

#[test]
fn helo_names_with_unsafe_characters_are_syntax_errors() {
    for name in [
        "ok\u{2028}X-Injected-Helo:yes",
        "ok\u{2029}x",
        "a\u{85}b",
        "a\u{9b}31m",
        "\u{202e}tset.elpmaxe",
        "exa\u{200b}mple.test",
        "\u{feff}example.test",
        "a\u{e0041}b",
        "a\u{1b}[2Jb",
    ] {
        for verb in ["HELO", "EHLO"] {
            let line = format!("{verb} {name}");
            assert!(
                matches!(parse(line.as_bytes()), Err(ParseError::Syntax(_))),
                "{line:?}"
            );
        }
    }
    // Non-ASCII names without such characters are taken as given (RFC 5321 §4.1.4).
    assert_eq!(
        parse("EHLO bücher.example".as_bytes()),
        Ok(Command::Ehlo("bücher.example".into()))
    );
    // So are the arguments of the other commands that are not paths.
    assert!(matches!(
        parse("VRFY ali\u{200b}ce".as_bytes()),
        Err(ParseError::Syntax(_))
    ));
    assert!(matches!(
        parse("HELP \u{2028}".as_bytes()),
        Err(ParseError::Syntax(_))
    ));
    // NOOP's string is ignored (RFC 5321 §4.1.1.9), whatever it holds: it goes nowhere.
    for line in [
        &b"NOOP \xe2\x80\xa8"[..],
        b"NOOP \xff\xfe",
        b"noop a\x1b[2J",
    ] {
        assert_eq!(parse(line), Ok(Command::Noop), "{line:?}");
    }
}

#[test]
fn paths_with_unsafe_characters_parse_for_the_session_to_refuse() {
    // The session answers 553 5.1.3 for these (session/params.rs): the parser decides syntax.
    assert_eq!(
        parse(
            "MAIL FROM:<\"x\u{2028}Bcc: victim@example.test\"@attacker.test> SMTPUTF8".as_bytes()
        ),
        Ok(Command::Mail {
            verb: MailVerb::Mail,
            from: Some(addr(
                "\"x\u{2028}Bcc: victim@example.test\"",
                Some("attacker.test")
            )),
            params: vec![Param {
                key: "SMTPUTF8".into(),
                value: None
            }],
        })
    );
    assert!(matches!(
        parse("RCPT TO:<a@exa\u{85}mple.test>".as_bytes()),
        Ok(Command::Rcpt { .. })
    ));
    // An ASCII control in a domain is outside the domain grammar: 501.
    assert!(matches!(
        parse(b"RCPT TO:<a@exa\x1bmple.test>"),
        Err(ParseError::Address {
            sender: false,
            why: "malformed domain"
        })
    ));
}

#[test]
fn address_literals_follow_rfc_5321_4_1_3() {
    for good in [
        "[192.0.2.1]",
        "[000.00.0.255]",
        "[IPv6:2001:db8::1]",
        "[ipv6:::ffff:192.0.2.1]",
        // Snum allows leading zeros in an IPv6 address's IPv4 tail too.
        "[IPv6:::ffff:192.000.002.001]",
        "[IPv6:::192.0.2.1]",
        "[IPv6:1:2:3:4:5:6:192.0.2.1]",
        "[IPv6:1:2:3:4::192.0.2.1]",
        "[IPv6:1:2:3:4:5:6:7:8]",
        "[IPv6:1:2:3:4:5:6::]",
        "[IPv6:::]",
        "[IPv6:ABCD::ef01]",
        "[x-tag:any!printable~]",
    ] {
        let line = format!("MAIL FROM:<a@{good}>");
        assert!(parse(line.as_bytes()).is_ok(), "{good}");
    }
    for bad in [
        "[not-an-ip]",
        "[1.2.3]",
        "[1.2.3.256]",
        "[1.2.3.+4]",
        "[1.2.3.0004]",
        "[IPv6:1.2.3.4]",
        "[IPv6:2001:db8::g]",
        // `::` stands for two groups or more, and an IPv4 tail for two.
        "[IPv6:1:2:3:4:5:6:7::]",
        "[IPv6:1:2:3:4:5::192.0.2.1]",
        "[IPv6:1:2:3:4:5:6:7:192.0.2.1]",
        "[IPv6:1:2:3:4:5:6:7]",
        "[IPv6:1::2::3]",
        "[IPv6::::1]",
        "[IPv6:::1.2.3.256]",
        "[IPv6:12345::1]",
        "[IPv6:1:2:3:4:5:6:7:8:9]",
        "[tag-:x]",
        "[tag:]",
        "[tag:a b]",
        "[tag:a\\b]",
        "[]",
    ] {
        let line = format!("RCPT TO:<a@{bad}>");
        assert!(
            matches!(parse(line.as_bytes()), Err(ParseError::Address { .. })),
            "{bad}"
        );
    }
}
