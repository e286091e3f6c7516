//! Unit tests of the AUTH arms of the state machine and the SASL exchange (`auth.rs`).

use super::message::Protocol;
use super::*;
use crate::config::Auth;
use crate::directory::Directory;
use crate::framer::Frame;

fn session(accounts: Auth, required: bool) -> Session {
    let directory = Directory::new(&["mx.test".into()], None, &[]);
    Session::new(
        Arc::new(SessionConfig {
            auth: Policy { accounts, required },
            ..SessionConfig::for_tests("mx.test", directory)
        }),
        "test".into(),
    )
}

fn users() -> Auth {
    Auth::Users([("jones".to_string(), "s3cret".to_string())].into())
}

/// Feeds one line (CRLF added) and returns the reply's code, enhanced code and text.
fn say(s: &mut Session, line: &str) -> (u16, &'static str, String) {
    let line = format!("{line}\r\n");
    match s.handle(Frame::Command(line.as_bytes())) {
        Action::Reply(r) | Action::Close(r) => (r.code, r.enhanced.unwrap_or(""), r.text.into()),
        other => panic!("{other:?}"),
    }
}

fn code(s: &mut Session, line: &str) -> u16 {
    say(s, line).0
}

fn user(s: &Session) -> Option<&str> {
    match s.state() {
        State::Ready(h) | State::Mail(h, _) => h.user.as_deref(),
        other => panic!("{other:?}"),
    }
}

/// Sends a message and returns its protocol and user.
fn deliver(s: &mut Session, mail: &str) -> (Protocol, Option<String>) {
    assert_eq!(code(s, mail), 250);
    assert_eq!(code(s, "RCPT TO:<a@mx.test>"), 250);
    assert_eq!(code(s, "DATA"), 354);
    assert_eq!(s.handle(Frame::Text(b"x\r\n")), Action::Continue);
    match s.handle(Frame::Text(b".\r\n")) {
        Action::Deliver(env) => (env.protocol, env.user),
        other => panic!("{other:?}"),
    }
}

#[test]
fn ehlo_offers_auth_only_when_configured() {
    let mut s = session(Auth::Off, false);
    assert!(!say(&mut s, "EHLO c.test").2.contains("AUTH"));
    assert_eq!(
        say(&mut s, "AUTH PLAIN AGpvbmVzAHMzY3JldA=="),
        (502, "5.5.1", reply::NO_AUTH.text.into())
    );
    for accounts in [Auth::AcceptAny, users()] {
        let mut s = session(accounts, false);
        let ehlo = say(&mut s, "EHLO c.test").2;
        assert!(ehlo.lines().any(|l| l == "AUTH PLAIN LOGIN"), "{ehlo}");
        // HELO lists no extensions.
        assert!(!say(&mut s, "HELO c.test").2.contains("AUTH"));
    }
}

#[test]
fn plain_with_initial_response_and_with_continuation() {
    let mut s = session(users(), false);
    code(&mut s, "EHLO c.test");
    // "\0jones\0s3cret"
    assert_eq!(say(&mut s, "AUTH PLAIN AGpvbmVzAHMzY3JldA==").0, 235);
    assert_eq!(user(&s), Some("jones"));

    let mut s = session(users(), false);
    code(&mut s, "EHLO c.test");
    assert_eq!(say(&mut s, "AUTH PLAIN"), (334, "", String::new()));
    assert!(matches!(s.state(), State::Auth(_, Sasl::Plain)));
    assert_eq!(s.mode(), Mode::Response);
    assert!(!s.in_message());
    // authzid equal to authcid: "jones\0jones\0s3cret"
    assert_eq!(
        say(&mut s, "am9uZXMAam9uZXMAczNjcmV0"),
        (235, "2.7.0", "Authentication successful".into())
    );
    assert_eq!(user(&s), Some("jones"));
}

#[test]
fn login_with_and_without_initial_response() {
    let mut s = session(users(), false);
    code(&mut s, "EHLO c.test");
    assert_eq!(say(&mut s, "AUTH LOGIN"), (334, "", "VXNlcm5hbWU6".into()));
    assert_eq!(say(&mut s, "am9uZXM="), (334, "", "UGFzc3dvcmQ6".into()));
    assert!(matches!(s.state(), State::Auth(_, Sasl::LoginPassword(u)) if u == "jones"));
    assert_eq!(code(&mut s, "czNjcmV0"), 235);
    assert_eq!(user(&s), Some("jones"));

    // Python's smtplib sends the user name on the AUTH line.
    let mut s = session(users(), false);
    code(&mut s, "EHLO c.test");
    assert_eq!(say(&mut s, "AUTH LOGIN am9uZXM=").2, "UGFzc3dvcmQ6");
    assert_eq!(say(&mut s, "d3Jvbmc=").0, 535);
    assert_eq!(user(&s), None);
}

#[test]
fn wrong_credentials_and_accept_any() {
    let mut s = session(users(), false);
    code(&mut s, "EHLO c.test");
    // "\0jones\0wrong", "\0nobody\0s3cret", "other\0jones\0s3cret" (another authzid)
    for line in [
        "AUTH PLAIN AGpvbmVzAHdyb25n",
        "AUTH PLAIN AG5vYm9keQBzM2NyZXQ=",
        "AUTH PLAIN b3RoZXIAam9uZXMAczNjcmV0",
    ] {
        let r = say(&mut s, line);
        assert_eq!((r.0, r.1), (535, "5.7.8"), "{line}");
        assert!(matches!(s.state(), State::Ready(Hello { user: None, .. })));
    }
    let mut s = session(Auth::AcceptAny, false);
    code(&mut s, "EHLO c.test");
    assert_eq!(code(&mut s, "AUTH PLAIN AG5vYm9keQBhbnl0aGluZw=="), 235);
    assert_eq!(user(&s), Some("nobody"));
}

#[test]
fn cancelled_malformed_and_illegal_exchanges_return_to_ready() {
    for (start, response, expected) in [
        ("AUTH PLAIN", "*", (501, "5.7.0")),
        ("AUTH LOGIN", "*", (501, "5.7.0")),
        ("AUTH PLAIN", "not base64!", (501, "5.5.2")),
        ("AUTH PLAIN", "Zh==", (501, "5.5.2")),
        // A command inside the exchange is a response, and not base64.
        ("AUTH PLAIN", "MAIL FROM:<a@b.test>", (501, "5.5.2")),
        ("AUTH LOGIN", "RSET", (501, "5.5.2")),
        // Base64, but not a PLAIN message: no NULs.
        ("AUTH PLAIN", "am9uZXM=", (501, "5.5.2")),
        // LOGIN: an empty user name, a user name that is not UTF-8.
        ("AUTH LOGIN", "", (501, "5.5.2")),
        ("AUTH LOGIN", "/w==", (501, "5.5.2")),
        // A user name that begins with a combining mark (U+0338, which makes a `<` a `≮`).
        ("AUTH LOGIN", "zLhqb25lcw==", (501, "5.5.2")),
    ] {
        let mut s = session(users(), false);
        code(&mut s, "EHLO c.test");
        assert_eq!(code(&mut s, start), 334);
        let r = say(&mut s, response);
        assert_eq!((r.0, r.1), expected, "{start} / {response}");
        assert!(
            matches!(
                s.state(),
                State::Ready(Hello {
                    user: None,
                    extended: true,
                    ..
                })
            ),
            "{start} / {response}: {:?}",
            s.state()
        );
        // The session goes on: commands are commands again.
        assert_eq!(code(&mut s, "NOOP"), 250);
        assert_eq!(code(&mut s, "AUTH PLAIN AGpvbmVzAHMzY3JldA=="), 235);
    }
    // Initial responses: "*", bad base64, "=" (empty: not a PLAIN message).
    let mut s = session(users(), false);
    code(&mut s, "EHLO c.test");
    for (line, expected) in [
        ("AUTH PLAIN *", (501, "5.7.0")),
        ("AUTH PLAIN AGpvbmVz=AHMzY3JldA==", (501, "5.5.2")),
        ("AUTH PLAIN =", (501, "5.5.2")),
        ("AUTH CRAM-MD5", (504, "5.5.4")),
        ("AUTH", (501, "5.5.4")),
    ] {
        let r = say(&mut s, line);
        assert_eq!((r.0, r.1), expected, "{line}");
        assert!(matches!(s.state(), State::Ready(Hello { user: None, .. })));
    }
}

#[test]
fn too_long_or_bare_lf_response_ends_the_exchange() {
    let mut s = session(users(), false);
    code(&mut s, "EHLO c.test");
    code(&mut s, "AUTH LOGIN");
    let Action::Reply(r) = s.handle(Frame::TooLong) else {
        panic!()
    };
    assert_eq!((r.code, r.enhanced), (500, Some("5.5.6")));
    assert!(matches!(s.state(), State::Ready(_)));
    code(&mut s, "AUTH LOGIN");
    let Action::Reply(r) = s.handle(Frame::Command(b"am9uZXM=\n")) else {
        panic!()
    };
    assert_eq!(r.code, 500);
    assert!(matches!(s.state(), State::Ready(_)));
}

#[test]
fn auth_is_legal_after_ehlo_outside_a_transaction_once() {
    let mut s = session(Auth::AcceptAny, false);
    let plain = "AUTH PLAIN AGEAYg==";
    assert_eq!(say(&mut s, plain).0, 503, "before EHLO");
    code(&mut s, "HELO c.test");
    assert_eq!(say(&mut s, plain).2, reply::BAD_SEQUENCE_AUTH_EHLO.text);
    code(&mut s, "EHLO c.test");
    code(&mut s, "MAIL FROM:<a@b.test>");
    assert_eq!(say(&mut s, plain).2, reply::BAD_SEQUENCE_AUTH_MAIL.text);
    code(&mut s, "RSET");
    assert_eq!(code(&mut s, plain), 235);
    assert_eq!(say(&mut s, plain).2, reply::BAD_SEQUENCE_AUTH_TWICE.text);
    assert_eq!(say(&mut s, "AUTH LOGIN").0, 503);
    // RSET and a new EHLO keep the authentication.
    code(&mut s, "RSET");
    code(&mut s, "EHLO again.test");
    assert_eq!(user(&s), Some("a"));
    assert_eq!(code(&mut s, plain), 503);
}

#[test]
fn auth_required_refuses_mail_until_auth() {
    let mut s = session(users(), true);
    // RFC 4954 §6: VRFY, EXPN and HELP too, before EHLO as after it; NOOP and RSET pass.
    for line in ["HELP", "VRFY jones", "EXPN staff"] {
        assert_eq!(code(&mut s, line), 530, "{line}");
    }
    code(&mut s, "EHLO c.test");
    for line in ["HELP MAIL", "VRFY jones", "EXPN staff"] {
        assert_eq!(code(&mut s, line), 530, "{line}");
    }
    assert_eq!(code(&mut s, "NOOP"), 250);
    assert_eq!(code(&mut s, "RSET"), 250);
    assert_eq!(
        say(&mut s, "MAIL FROM:<a@b.test>"),
        (530, "5.7.0", "Authentication required".into())
    );
    assert_eq!(code(&mut s, "AUTH PLAIN AGpvbmVzAHdyb25n"), 535);
    assert_eq!(code(&mut s, "MAIL FROM:<a@b.test>"), 530);
    assert_eq!(code(&mut s, "AUTH PLAIN AGpvbmVzAHMzY3JldA=="), 235);
    assert_eq!(code(&mut s, "HELP"), 211);
    assert_eq!(
        deliver(&mut s, "MAIL FROM:<a@b.test>"),
        (Protocol::EsmtpA, Some("jones".into()))
    );
}

#[test]
fn protocol_names_the_authentication() {
    let mut s = session(Auth::AcceptAny, false);
    code(&mut s, "EHLO c.test");
    assert_eq!(
        deliver(&mut s, "MAIL FROM:<a@b.test>"),
        (Protocol::Esmtp, None)
    );
    code(&mut s, "AUTH PLAIN AGpvbmVzAHB3");
    let jones = Some("jones".to_string());
    assert_eq!(
        deliver(&mut s, "MAIL FROM:<a@b.test>"),
        (Protocol::EsmtpA, jones.clone())
    );
    assert_eq!(
        deliver(&mut s, "MAIL FROM:<a@b.test> SMTPUTF8"),
        (Protocol::Utf8SmtpA, jones.clone())
    );
    assert_eq!(Protocol::EsmtpA.as_str(), "ESMTPA");
    assert_eq!(Protocol::Utf8SmtpA.as_str(), "UTF8SMTPA");
    // After HELO there is no authenticated form of SMTP (RFC 3848).
    code(&mut s, "HELO c.test");
    assert_eq!(
        deliver(&mut s, "MAIL FROM:<a@b.test>"),
        (Protocol::Smtp, jones)
    );
}
