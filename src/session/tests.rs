//! Unit tests of the state machine, fed frames as the framer cuts them.

use super::message::Protocol;
use super::*;
use crate::directory::Directory;
use crate::framer::Frame;
use std::collections::BTreeSet;

/// Feeds one line as the framer would: a command line, or text inside DATA.
pub(super) fn feed(s: &mut Session, line: &[u8]) -> Action {
    match s.mode() {
        Mode::Text => s.handle(Frame::Text(line)),
        _ => s.handle(Frame::Command(line)),
    }
}

pub(super) fn session(users: Option<&[&str]>) -> Session {
    let users: Option<BTreeSet<String>> = users.map(|u| u.iter().map(|s| s.to_string()).collect());
    let directory = Directory::new(
        &["bbn-unix.arpa".into()],
        users.as_ref(),
        &[("fwd".into(), vec!["x@elsewhere.example".into()])],
    );
    Session::new(
        Arc::new(SessionConfig {
            max_message_size: 100,
            max_recipients: 3,
            max_errors: 10,
            ..SessionConfig::for_tests("BBN-UNIX.ARPA", directory)
        }),
        "test".into(),
    )
}

pub(super) fn code(action: &Action) -> u16 {
    match action {
        Action::Reply(r) | Action::Close(r) => r.code,
        Action::Continue => 0,
        Action::Deliver(_) => 1,
        Action::Drop | Action::Delayed(..) => 2,
    }
}

pub(super) fn codes(s: &mut Session, lines: &[&[u8]]) -> Vec<u16> {
    lines.iter().map(|l| code(&feed(s, l))).collect()
}

#[test]
fn rfc_821_conversation() {
    let mut s = session(Some(&["jones", "brown"]));
    assert_eq!(s.greeting().code, 220);
    assert_eq!(
        codes(
            &mut s,
            &[
                b"HELO USC-ISIF.ARPA\r\n",
                b"MAIL FROM:<Smith@USC-ISIF.ARPA>\r\n",
                b"RCPT TO:<Jones@BBN-UNIX.ARPA>\r\n",
                b"RCPT TO:<Green@BBN-UNIX.ARPA>\r\n",
                b"RCPT TO:<Brown@BBN-UNIX.ARPA>\r\n",
                b"DATA\r\n",
                b"Blah blah blah...\r\n",
                b"...etc. etc. etc.\r\n",
            ]
        ),
        [250, 250, 250, 550, 250, 354, 0, 0]
    );
    let Action::Deliver(env) = feed(&mut s, b".\r\n") else {
        panic!("no delivery")
    };
    assert_eq!(env.sender.as_deref(), Some("Smith@USC-ISIF.ARPA"));
    assert_eq!(
        env.recipients,
        [
            ("jones".to_string(), "Jones@BBN-UNIX.ARPA".to_string()),
            ("brown".to_string(), "Brown@BBN-UNIX.ARPA".to_string())
        ]
    );
    assert_eq!(&env.body[..], b"Blah blah blah...\n..etc. etc. etc.\n\n");
    assert_eq!(env.protocol, Protocol::Smtp);
    assert!(matches!(s.state(), State::Ready(_)));
    assert_eq!(
        feed(&mut s, b"QUIT\r\n"),
        Action::Close(Reply::new(
            221,
            "2.0.0",
            "BBN-UNIX.ARPA Service closing transmission channel"
        ))
    );
}

#[test]
fn bad_sequences_leave_state_unchanged() {
    let mut s = session(None);
    assert_eq!(
        codes(
            &mut s,
            &[
                b"MAIL FROM:<a@b>\r\n",
                b"RCPT TO:<a@bbn-unix.arpa>\r\n",
                b"DATA\r\n"
            ]
        ),
        [503, 503, 503]
    );
    assert!(matches!(s.state(), State::Greeted));
    assert_eq!(
        codes(
            &mut s,
            &[
                b"helo a.domain\r\n",
                b"RCPT TO:<a@bbn-unix.arpa>\r\n",
                b"DATA\r\n"
            ]
        ),
        [250, 503, 503]
    );
    assert!(matches!(s.state(), State::Ready(_)));
    assert_eq!(
        codes(
            &mut s,
            &[b"MAIL FROM:<a@b>\r\n", b"DATA\r\n", b"MAIL FROM:<c@d>\r\n"]
        ),
        [250, 503, 503]
    );
    let State::Mail(_, tx) = s.state() else {
        panic!()
    };
    assert_eq!(tx.from.as_ref().map(|a| a.local.as_str()), Some("a"));
}

#[test]
fn data_with_only_rejected_recipients_is_554() {
    let mut s = session(Some(&["jones"]));
    assert_eq!(
        codes(
            &mut s,
            &[
                b"HELO x\r\n",
                b"MAIL FROM:<>\r\n",
                b"RCPT TO:<green@bbn-unix.arpa>\r\n",
                b"DATA\r\n"
            ]
        ),
        [250, 250, 550, 554]
    );
    assert!(matches!(s.state(), State::Mail(..)));
}

#[test]
fn rset_and_helo_reset_the_transaction() {
    let mut s = session(None);
    assert_eq!(
        codes(
            &mut s,
            &[
                b"EHLO x\r\n",
                b"MAIL FROM:<a@b>\r\n",
                b"RSET\r\n",
                b"RCPT TO:<a@bbn-unix.arpa>\r\n"
            ]
        ),
        [250, 250, 250, 503]
    );
    assert_eq!(
        codes(
            &mut s,
            &[
                b"MAIL FROM:<a@b>\r\n",
                b"HELO y\r\n",
                b"RCPT TO:<a@bbn-unix.arpa>\r\n"
            ]
        ),
        [250, 250, 503]
    );
    assert!(!s.enhanced());
}

#[test]
fn ehlo_lists_extensions_and_turns_on_enhanced_codes() {
    let mut s = session(None);
    let Action::Reply(r) = feed(&mut s, b"EHLO client.example\r\n") else {
        panic!()
    };
    assert_eq!(
        r.text,
        "BBN-UNIX.ARPA Hello client.example\nPIPELINING\nSIZE 100\n8BITMIME\nENHANCEDSTATUSCODES\nSMTPUTF8\nCHUNKING\nHELP\nEXPN\nSOML\nSAML"
    );
    assert!(s.enhanced());
}

/// The client's name is repeated only while `250-<host> Hello <name>` keeps to 512 octets with
/// its CRLF (RFC 5321 §4.5.3.1.5), whatever the configured hostname's length.
#[test]
fn the_hello_line_never_passes_512_octets() {
    let directory = Directory::new(&["mx.test".into()], None, &[]);
    // 4 + host + 7 + 255 + 2 octets: 244 is the longest host that leaves room for the name.
    for host_len in [7, 244, 245, 600] {
        let host = "h".repeat(host_len);
        let mut s = Session::new(
            Arc::new(SessionConfig::for_tests(&host, directory.clone())),
            "test".into(),
        );
        let name = "n".repeat(255);
        let Action::Reply(r) = feed(&mut s, format!("EHLO {name}\r\n").as_bytes()) else {
            panic!()
        };
        let first = r.text.lines().next().unwrap_or_default();
        let echoed = first.ends_with(&name);
        assert_eq!(echoed, host_len <= 244, "host of {host_len}");
        if echoed {
            assert_eq!(
                "250-".len() + first.len() + "\r\n".len(),
                512 - (244 - host_len)
            );
        }
    }
}

#[test]
fn mail_parameters() {
    let mut s = session(None);
    assert_eq!(
        codes(&mut s, &[b"HELO x\r\n", b"MAIL FROM:<a@b> SIZE=10\r\n"]),
        [250, 555]
    );
    assert_eq!(
        codes(
            &mut s,
            &[
                b"EHLO x\r\n",
                b"MAIL FROM:<a@b> SIZE=101\r\n",
                b"MAIL FROM:<a@b> SIZE=x\r\n",
                b"MAIL FROM:<a@b> BODY=BINARY\r\n",
                b"MAIL FROM:<a@b> FOO=1\r\n",
                b"MAIL FROM:<a@b> SIZE=100 BODY=8bitmime\r\n",
                b"RCPT TO:<a@bbn-unix.arpa> NOTIFY=NEVER\r\n",
            ]
        ),
        [250, 552, 501, 501, 555, 250, 555]
    );
}

#[test]
fn soml_saml_send_turn() {
    let mut s = session(None);
    assert_eq!(
        codes(
            &mut s,
            &[
                b"HELO x\r\n",
                b"SEND FROM:<a@b>\r\n",
                b"TURN\r\n",
                b"SOML FROM:<a@b>\r\n",
                b"RSET\r\n",
                b"SAML FROM:<a@b>\r\n"
            ]
        ),
        [250, 502, 502, 250, 250, 250]
    );
}

#[test]
fn recipients_limits_and_routing() {
    let mut s = session(None);
    assert_eq!(
        codes(
            &mut s,
            &[
                b"HELO x\r\n",
                b"MAIL FROM:<a@b>\r\n",
                b"RCPT TO:<a@example.com>\r\n",
                b"RCPT TO:<../etc@bbn-unix.arpa>\r\n",
                b"RCPT TO:<fwd@bbn-unix.arpa>\r\n",
                b"RCPT TO:<postmaster>\r\n",
                b"RCPT TO:<b@bbn-unix.arpa>\r\n",
                b"RCPT TO:<c@bbn-unix.arpa>\r\n",
                b"RCPT TO:<d@bbn-unix.arpa>\r\n",
            ]
        ),
        [250, 250, 550, 553, 551, 250, 250, 250, 452]
    );
}

#[test]
fn help_vrfy_expn_noop_work_before_helo() {
    let mut s = session(Some(&["jones"]));
    assert_eq!(
        codes(
            &mut s,
            &[
                b"HELP\r\n",
                b"HELP mail\r\n",
                b"HELP frob\r\n",
                b"VRFY jones\r\n",
                b"VRFY green\r\n",
                b"EXPN jones\r\n",
                b"NOOP\r\n"
            ]
        ),
        [211, 214, 504, 250, 550, 550, 250]
    );
}

#[test]
fn syntax_errors_and_line_endings() {
    let mut s = session(None);
    assert_eq!(
        codes(&mut s, &[b"FROB\r\n", b"HELO\r\n", b"HELO x\n", b"\r\n"]),
        [500, 501, 500, 500]
    );
    assert_eq!(code(&s.handle(Frame::TooLong)), 500);
    assert!(matches!(s.state(), State::Greeted));
}

#[test]
fn oversize_message_is_refused_after_its_end() {
    let mut s = session(None);
    codes(
        &mut s,
        &[
            b"HELO x\r\n",
            b"MAIL FROM:<a@b>\r\n",
            b"RCPT TO:<a@bbn-unix.arpa>\r\n",
            b"DATA\r\n",
        ],
    );
    let long = [b'x'; 98];
    assert_eq!(code(&feed(&mut s, &long)), 0);
    assert_eq!(code(&feed(&mut s, b"\r\n")), 0);
    assert_eq!(code(&feed(&mut s, b"more\r\n")), 0);
    assert_eq!(code(&feed(&mut s, b".\r\n")), 552);
    assert!(matches!(s.state(), State::Ready(_)));
}

#[test]
fn too_many_errors_close_the_session() {
    let mut s = session(None);
    for _ in 0..9 {
        assert_eq!(code(&feed(&mut s, b"FROB\r\n")), 500);
    }
    assert_eq!(
        feed(&mut s, b"FROB\r\n"),
        Action::Close(reply::TOO_MANY_ERRORS)
    );
}

#[test]
fn smtputf8_is_needed_for_non_ascii_addresses() {
    let mut s = session(None);
    assert_eq!(
        codes(
            &mut s,
            &[
                "EHLO x\r\n".as_bytes(),
                "MAIL FROM:<jos\u{e9}@b.example>\r\n".as_bytes(),
                b"MAIL FROM:<a@b> SMTPUTF8=yes\r\n",
                b"MAIL FROM:<a@b>\r\n",
                "RCPT TO:<j\u{f6}rg@bbn-unix.arpa>\r\n".as_bytes(),
                b"RSET\r\n",
                "MAIL FROM:<jos\u{e9}@b.example> SMTPUTF8\r\n".as_bytes(),
                "RCPT TO:<J\u{d6}RG@bbn-unix.arpa>\r\n".as_bytes(),
                b"DATA\r\n",
            ]
        ),
        [250, 550, 501, 250, 553, 250, 250, 250, 354]
    );
    let Action::Deliver(env) = feed(&mut s, b".\r\n") else {
        panic!("no delivery")
    };
    assert_eq!(env.recipients[0].0, "j\u{f6}rg");
    assert_eq!(env.protocol, Protocol::Utf8Smtp);
}

/// Drives a fresh session into each state that takes commands, by a script of lines.
fn states() -> Vec<(&'static str, Session)> {
    let scripts: &[(&str, &[&[u8]])] = &[
        ("greeted", &[]),
        ("ready after HELO", &[b"HELO x\r\n"]),
        ("ready after EHLO", &[b"EHLO x\r\n"]),
        ("mail", &[b"EHLO x\r\n", b"MAIL FROM:<a@b>\r\n"]),
        (
            "mail with a recipient",
            &[
                b"EHLO x\r\n",
                b"MAIL FROM:<a@b>\r\n",
                b"RCPT TO:<a@bbn-unix.arpa>\r\n",
            ],
        ),
        (
            "mail with a recipient after HELO",
            &[
                b"HELO x\r\n",
                b"MAIL FROM:<a@b>\r\n",
                b"RCPT TO:<a@bbn-unix.arpa>\r\n",
            ],
        ),
        (
            "chunked",
            &[
                b"EHLO x\r\n",
                b"MAIL FROM:<a@b>\r\n",
                b"RCPT TO:<a@bbn-unix.arpa>\r\n",
                b"BDAT 0\r\n",
            ],
        ),
    ];
    scripts
        .iter()
        .map(|(name, lines)| {
            let mut s = session(None);
            for line in *lines {
                let action = feed(&mut s, line);
                assert!(
                    !matches!(action, Action::Reply(ref r) if r.is_error()),
                    "{name}: {line:?}"
                );
            }
            (*name, s)
        })
        .collect()
}

#[test]
fn an_illegal_command_leaves_every_state_unchanged() {
    let illegal: &[&[u8]] = &[
        b"FROB\r\n",
        b"NOOP\n",
        b"HELO\r\n",
        b"MAIL FROM:<a@b> FOO=1\r\n",
        b"MAIL FROM:<a@b\r\n",
        b"RCPT TO:<a@elsewhere.example>\r\n",
        b"RCPT TO:<../x@bbn-unix.arpa>\r\n",
        b"VRFY\r\n",
        b"HELP frob\r\n",
        b"TURN\r\n",
        b"SEND FROM:<a@b>\r\n",
    ];
    for (name, mut s) in states() {
        for line in illegal {
            s.errors = 0;
            let before = format!("{:?}", s.state());
            let action = feed(&mut s, line);
            let Action::Reply(r) = action else {
                panic!("{name}: {line:?} gave {action:?}")
            };
            assert!(r.is_error(), "{name}: {line:?} gave {r:?}");
            // A refused RCPT only counts the refusal, which DATA needs (554 vs 503).
            let after = format!("{:?}", s.state()).replace("rejected: 1", "rejected: 0");
            assert_eq!(after, before, "{name}: {line:?}");
            if let State::Mail(_, tx) = &mut s.state {
                tx.rejected = 0;
            }
        }
        let before = format!("{:?}", s.state());
        assert_eq!(code(&s.handle(Frame::TooLong)), 500);
        assert_eq!(format!("{:?}", s.state()), before, "{name}: too long");
    }
}

#[test]
fn out_of_sequence_commands_leave_every_state_unchanged() {
    for (name, mut s) in states() {
        let out_of_sequence: &[&[u8]] = match s.state() {
            State::Greeted => &[
                b"MAIL FROM:<a@b>\r\n",
                b"RCPT TO:<a@bbn-unix.arpa>\r\n",
                b"DATA\r\n",
            ],
            State::Ready(_) => &[b"RCPT TO:<a@bbn-unix.arpa>\r\n", b"DATA\r\n"],
            State::Mail(_, tx) if tx.recipients.is_empty() => {
                &[b"MAIL FROM:<c@d>\r\n", b"DATA\r\n"]
            }
            State::Mail(..) => &[b"MAIL FROM:<c@d>\r\n"],
            State::Chunked(..) => &[
                b"MAIL FROM:<c@d>\r\n",
                b"RCPT TO:<b@bbn-unix.arpa>\r\n",
                b"DATA\r\n",
            ],
            other => panic!("unexpected {other:?}"),
        };
        for line in out_of_sequence {
            let before = format!("{:?}", s.state());
            assert_eq!(code(&feed(&mut s, line)), 503, "{name}: {line:?}");
            assert_eq!(format!("{:?}", s.state()), before, "{name}: {line:?}");
        }
    }
}

#[test]
fn a_refused_bdat_chunk_is_consumed_and_then_the_state_is_as_before() {
    for (name, mut s) in states() {
        let legal = match s.state() {
            State::Mail(hello, tx) => hello.extended && !tx.recipients.is_empty(),
            State::Chunked(..) => true,
            _ => false,
        };
        if legal {
            continue; // BDAT is legal there
        }
        let before = format!("{:?}", s.state());
        assert_eq!(feed(&mut s, b"BDAT 6\r\n"), Action::Continue, "{name}");
        assert!(
            s.in_message() && matches!(s.state(), State::Discard(_)),
            "{name}"
        );
        assert_eq!(s.mode(), Mode::Chunk(6));
        assert_eq!(s.handle(Frame::Chunk(b"QUI")), Action::Continue);
        assert_eq!(code(&s.handle(Frame::Chunk(b"T\r\n"))), 503, "{name}");
        assert_eq!(format!("{:?}", s.state()), before, "{name}");
    }
}

#[test]
fn inside_a_message_command_lookalikes_are_text() {
    let mut s = session(None);
    codes(
        &mut s,
        &[
            b"EHLO x\r\n",
            b"MAIL FROM:<a@b>\r\n",
            b"RCPT TO:<a@bbn-unix.arpa>\r\n",
            b"DATA\r\n",
        ],
    );
    for line in [&b"QUIT\r\n"[..], b"RSET\r\n", b"MAIL FROM:<x@y>\r\n"] {
        assert_eq!(s.mode(), Mode::Text);
        assert_eq!(feed(&mut s, line), Action::Continue);
    }
    let Action::Deliver(env) = feed(&mut s, b".\r\n") else {
        panic!("no delivery")
    };
    assert_eq!(&env.body[..], b"QUIT\nRSET\nMAIL FROM:<x@y>\n\n");
    assert_eq!(env.protocol, Protocol::Esmtp);
    // Inside a chunk, likewise.
    codes(
        &mut s,
        &[b"MAIL FROM:<a@b>\r\n", b"RCPT TO:<a@bbn-unix.arpa>\r\n"],
    );
    assert_eq!(feed(&mut s, b"BDAT 6 LAST\r\n"), Action::Continue);
    let Action::Deliver(env) = s.handle(Frame::Chunk(b"QUIT\r\n")) else {
        panic!("no delivery")
    };
    assert_eq!(&env.body[..], b"QUIT\n\n");
}

#[test]
fn quit_closes_from_every_state() {
    for (name, mut s) in states() {
        assert_eq!(code(&feed(&mut s, b"QUIT\r\n")), 221, "{name}");
        assert!(s.is_closed());
    }
}
