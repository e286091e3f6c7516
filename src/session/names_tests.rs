//! Unit tests of what a client's names may carry into a session: HELO and EHLO names, local
//! parts and domains with unsafe characters are refused, and whatever is accepted reaches the
//! trace headers (`mbox::header`) without a character that could start or hide a header line.

use super::*;
use crate::directory::Directory;
use crate::escape::has_unsafe;
use crate::framer::Frame;
use crate::mbox::{self, Trace};

fn session() -> Session {
    let directory = Directory::new(&["mx.test".into()], None, &[]);
    Session::new(
        Arc::new(SessionConfig {
            max_recipients: 10,
            max_errors: 1000,
            ..SessionConfig::for_tests("mx.test", directory)
        }),
        "test".into(),
    )
}

fn feed(s: &mut Session, line: &str) -> Action {
    let line = format!("{line}\r\n");
    match s.mode() {
        Mode::Text => s.handle(Frame::Text(line.as_bytes())),
        _ => s.handle(Frame::Command(line.as_bytes())),
    }
}

fn reply(s: &mut Session, line: &str) -> Reply {
    match feed(s, line) {
        Action::Reply(r) | Action::Close(r) => r,
        other => panic!("{line:?}: {other:?}"),
    }
}

/// The code and enhanced code of the reply to `line`, as in `553 5.1.3`.
fn answer(s: &mut Session, line: &str) -> String {
    reply(s, line).code_text()
}

#[test]
fn helo_and_ehlo_with_unsafe_characters_are_501_and_change_nothing() {
    let mut s = session();
    for line in [
        "EHLO ok\u{2028}X-Injected-Helo:yes",
        "HELO a\u{85}b",
        "EHLO \u{202e}tset.elpmaxe",
    ] {
        assert_eq!(reply(&mut s, line).code, 501, "{line:?}");
        assert!(matches!(s.state(), State::Greeted));
    }
    assert_eq!(reply(&mut s, "EHLO client.test").code, 250);
    assert_eq!(answer(&mut s, "MAIL FROM:<a@b.test>"), "250 2.1.0");
    assert_eq!(answer(&mut s, "EHLO ok\u{2029}x"), "501 5.5.4");
    // The transaction and the name given before are untouched.
    let State::Mail(hello, _) = s.state() else {
        panic!("{:?}", s.state())
    };
    assert_eq!(hello.name, "client.test");
}

#[test]
fn addresses_with_unsafe_characters_are_553_whatever_the_encoding() {
    let mut s = session();
    reply(&mut s, "EHLO client.test");
    for from in [
        "<\"x\u{2028}Bcc: victim@example.test\"@attacker.test> SMTPUTF8",
        "<\"x\u{2028}Bcc: victim@example.test\"@attacker.test>",
        "<a@exa\u{85}mple.test> SMTPUTF8",
        "<a@exa\u{9b}mple.test> SMTPUTF8",
        "<a@\u{202e}tset.elpmaxe> SMTPUTF8",
        "<a\u{200b}@example.test> SMTPUTF8",
        "<a\u{1}@example.test>",
    ] {
        // X.1.7 for a sender, X.1.3 (below) for a recipient (RFC 3463 §3.2).
        assert_eq!(
            answer(&mut s, &format!("MAIL FROM:{from}")),
            "553 5.1.7",
            "{from:?}"
        );
    }
    // Without SMTPUTF8, a clean non-ASCII address is an encoding matter: 5.6.7, with 550 for a
    // sender (RFC 6531 §3.5).
    assert_eq!(answer(&mut s, "MAIL FROM:<jörg@b.test>"), "550 5.6.7");
    assert_eq!(
        answer(&mut s, "MAIL FROM:<jörg@b.test> SMTPUTF8"),
        "250 2.1.0"
    );
    for to in [
        "alice\u{200b}@mx.test",
        "\u{feff}alice@mx.test",
        "a\u{180e}lice@mx.test",
        "\u{202e}ecila@mx.test",
        "a@exa\u{85}mple.test",
        "a@exa\u{9b}mple.test",
        "a@mx\u{202e}.test",
        "\"x\u{2028}y\"@mx.test",
    ] {
        assert_eq!(
            answer(&mut s, &format!("RCPT TO:<{to}>")),
            "553 5.1.3",
            "{to:?}"
        );
    }
    assert_eq!(
        answer(&mut s, "RCPT TO:<alice@evil.test@mx.test>"),
        "501 5.1.3"
    );
    let State::Mail(_, tx) = s.state() else {
        panic!("{:?}", s.state())
    };
    assert!(tx.recipients.is_empty());
}

/// Hostile names in every client-supplied position: each is refused, or, if a message gets
/// through, the header mboxd writes has exactly its five lines and no unsafe character.
#[test]
fn no_client_string_reaching_a_header_can_break_or_hide_a_line() {
    let hostile = [
        "\r",
        "\n",
        "\r\n",
        "\t",
        "\u{b}",
        "\u{c}",
        "\u{85}",
        "\u{9b}",
        "\u{2028}",
        "\u{2029}",
        "\u{202e}",
        "\u{2066}",
        "\u{200b}",
        "\u{feff}",
        "\u{180e}",
        "\u{ad}",
        "\u{e0041}",
        "\u{600}",
        "\u{13430}",
        " ",
        "@",
        "\"",
        "é",
    ];
    let mut delivered = 0;
    for h in hostile {
        let attempts = [
            [
                format!("EHLO ok{h}x"),
                "MAIL FROM:<a@b.test> SMTPUTF8".into(),
                "RCPT TO:<jones@mx.test>".into(),
            ],
            [
                "EHLO c.test".into(),
                format!("MAIL FROM:<\"a{h}b\"@b.test> SMTPUTF8"),
                "RCPT TO:<jones@mx.test>".into(),
            ],
            [
                "EHLO c.test".into(),
                format!("MAIL FROM:<a{h}b@b.test> SMTPUTF8"),
                "RCPT TO:<jones@mx.test>".into(),
            ],
            [
                "EHLO c.test".into(),
                format!("MAIL FROM:<a@b{h}c.test> SMTPUTF8"),
                "RCPT TO:<jones@mx.test>".into(),
            ],
            [
                "EHLO c.test".into(),
                "MAIL FROM:<a@b.test> SMTPUTF8".into(),
                format!("RCPT TO:<jo{h}nes@mx.test>"),
            ],
            [
                "EHLO c.test".into(),
                "MAIL FROM:<a@b.test> SMTPUTF8".into(),
                format!("RCPT TO:<\"jo{h}nes\"@mx.test>"),
            ],
        ];
        for lines in attempts {
            let mut s = session();
            let codes: Vec<u16> = lines.iter().map(|l| reply(&mut s, l).code).collect();
            if codes != [250, 250, 250] {
                continue;
            }
            reply(&mut s, "DATA");
            feed(&mut s, "Subject: x");
            let Action::Deliver(env) = feed(&mut s, ".") else {
                panic!("{lines:?}: no delivery")
            };
            delivered += 1;
            let trace = Trace {
                sender: env.sender.as_deref(),
                helo: &env.helo,
                peer: "127.0.0.1",
                hostname: "mx.test",
                protocol: env.protocol.as_str(),
                id: "1",
                time: 0,
            };
            for (_, rcpt) in &env.recipients {
                let header = String::from_utf8(mbox::header(&trace, rcpt)).unwrap();
                let lines: Vec<&str> = header.split_terminator('\n').collect();
                assert_eq!(lines.len(), 5, "{header:?}");
                for line in lines {
                    let line = line.strip_prefix('\t').unwrap_or(line);
                    assert!(!has_unsafe(line), "{header:?}");
                }
            }
        }
    }
    // The harmless ones get through (é everywhere, `@` and a space in a quoted sender...).
    assert!(delivered >= 6, "{delivered}");
}

/// A name that begins with a combining mark would draw it on the `<`, `"` or space mboxd
/// writes before it (U+0338 makes a `<` a `≮`): refused wherever a client gives one, while a
/// mark inside a name is a letter's accent.
#[test]
fn no_client_name_begins_with_a_combining_mark() {
    let mut s = session();
    assert_eq!(reply(&mut s, "EHLO \u{338}x.test").code, 501);
    assert_eq!(reply(&mut s, "HELO  \u{301}x.test").code, 501);
    assert_eq!(reply(&mut s, "EHLO c.test").code, 250);
    for (line, expected) in [
        ("MAIL FROM:<\u{338}x@b.test> SMTPUTF8", "553 5.1.7"),
        ("MAIL FROM:<\"\u{338}x\"@b.test> SMTPUTF8", "553 5.1.7"),
        ("MAIL FROM:<x@\u{338}b.test> SMTPUTF8", "501 5.1.7"),
        ("MAIL FROM:<x@b.\u{301}test> SMTPUTF8", "501 5.1.7"),
        ("VRFY \u{338}jones", "501 5.5.4"),
    ] {
        assert_eq!(answer(&mut s, line), expected, "{line}");
    }
    assert_eq!(
        answer(&mut s, "MAIL FROM:<jose\u{301}@b\u{301}.test> SMTPUTF8"),
        "250 2.1.0"
    );
    for (line, expected) in [
        ("RCPT TO:<\u{338}jones@mx.test>", "553 5.1.3"),
        ("RCPT TO:<\"\u{338}jones\"@mx.test>", "553 5.1.3"),
        ("RCPT TO:<jones@\u{338}mx.test>", "501 5.1.3"),
    ] {
        assert_eq!(answer(&mut s, line), expected, "{line}");
    }
}
