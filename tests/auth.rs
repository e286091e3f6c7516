//! AUTH for tests (RFC 4954) over real sockets: each mode (off, accept-any, a users file,
//! required), PLAIN with an initial response and after `334`, LOGIN, every refusal, what the
//! `Received:` header and the log say, and real clients (Python's smtplib, lettre) logging in.

mod support;

use std::process::Command;
use std::time::Duration;

use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::{Message, SmtpTransport, Transport};
use mboxd::Config;
use support::{
    Client, TestServer, delivered_line, mbox_entries, output_within, spawn_logged, stop_logged,
};

/// base64 of "\0jones\0s3cret".
const JONES_PLAIN: &str = "AGpvbmVzAHMzY3JldA==";
/// base64 of "\0jones\0wrong".
const JONES_WRONG: &str = "AGpvbmVzAHdyb25n";

fn accept_any() -> TestServer {
    TestServer::with(|c| *c = std::mem::take(c).auth_accept_any())
}

fn with_users(required: bool) -> TestServer {
    TestServer::with(|c| {
        *c = std::mem::take(c)
            .auth_user("jones", "s3cret")
            .auth_required(required)
    })
}

fn ehlo(server: &TestServer) -> Client {
    let mut c = server.client();
    let ehlo = c.expect("EHLO client.test", 250);
    assert!(
        ehlo.lines.iter().any(|l| l == "AUTH PLAIN LOGIN"),
        "{ehlo:?}"
    );
    c
}

fn send(c: &mut Client, from: &str) {
    let r = c.send_mail(from, &["jones@mx.test"], "Subject: auth\r\n\r\nhello\r\n");
    assert_eq!(r.code, 250, "{r:?}");
}

#[test]
fn without_flags_auth_is_neither_offered_nor_accepted() {
    let server = TestServer::start();
    let mut c = server.client();
    let ehlo = c.expect("EHLO client.test", 250);
    assert!(!ehlo.text().contains("AUTH"), "{ehlo:?}");
    let r = c.expect(&format!("AUTH PLAIN {JONES_PLAIN}"), 502);
    assert!(r.lines[0].starts_with("5.5.1 "), "{r:?}");
    send(&mut c, "a@b.test");
    assert!(server.mbox_text("jones").contains("with ESMTP id"));
    // Not offered, so not known.
    c.expect("MAIL FROM:<a@b.test> AUTH=<>", 555);
}

/// RFC 4954 §5: a server that offers AUTH takes MAIL's AUTH parameter even from a client that
/// has not authenticated; it checks its syntax (xtext) and uses nothing of it.
#[test]
fn the_auth_parameter_of_mail_is_taken_when_auth_is_offered() {
    let server = with_users(false);
    let mut c = ehlo(&server);
    c.expect("MAIL FROM:<a@b.test> AUTH=<>", 250);
    c.expect("RSET", 250);
    c.expect("MAIL FROM:<a@b.test> AUTH=a+2Bb@b.test", 250);
    c.expect("RSET", 250);
    // RFC 4954 §8's hex digits are ABNF's HEXDIG, which takes either case.
    c.expect("MAIL FROM:<a@b.test> AUTH=e+3dmc2@b.test", 250);
    c.expect("RSET", 250);
    // An empty value is refused by the command parser already, as for any parameter.
    c.expect("MAIL FROM:<a@b.test> AUTH=", 501);
    for bad in ["AUTH", "AUTH=a+2g", "AUTH=a+", "AUTH=a+4", "AUTH=a\u{e9}"] {
        let r = c.expect(&format!("MAIL FROM:<a@b.test> {bad}"), 501);
        assert_eq!(r.text(), "5.5.4 Syntax error: bad value for AUTH", "{bad}");
    }
    let r = c.send_mail("a@b.test", &["jones@mx.test"], "Subject: x\r\n\r\nx\r\n");
    assert_eq!(r.code, 250, "{r:?}");
}

/// A MAIL line may be 536 octets longer than the 512 of RFC 5321 §4.5.3.1.4: 26 for SIZE= (RFC
/// 1870 §3), 10 for SMTPUTF8 (RFC 6531 §3.1) and 500 for AUTH= (RFC 4954 §3); it was 500 only, so
/// a client using all three was refused. Longer is too long, and other commands keep 512.
#[test]
fn a_mail_line_may_be_536_octets_longer_for_its_parameters() {
    let server = with_users(false);
    let mut c = ehlo(&server);
    let line = |total: usize| {
        let mut l = String::from("MAIL FROM:<a@b.test> AUTH=");
        while l.len() < total - 2 {
            l.push_str("+2B");
        }
        l.truncate(total - 2);
        l
    };
    // 1 048 octets with CRLF; the xtext ends on a whole "+2B" here.
    assert_eq!((1048 - 2 - "MAIL FROM:<a@b.test> AUTH=".len()) % 3, 0);
    c.expect(&line(1048), 250);
    c.expect("RSET", 250);
    let r = c.expect(&format!("{}B", line(1048)), 500);
    assert_eq!(r.text(), "5.5.2 Line too long", "{r:?}");
    let mut rcpt = String::from("RCPT TO:<jones@mx.test> X=");
    rcpt.push_str(&"y".repeat(513 - 2 - rcpt.len()));
    c.expect(&rcpt, 500);
    // An AUTH response line has its own limit, also one that begins with the letters MAIL.
    c.expect("AUTH PLAIN", 334);
    let r = c.expect(&format!("MAIL{}", "A".repeat(1026 - 2 - 4 + 1)), 500);
    assert_eq!(
        r.text(),
        "5.5.6 Authentication Exchange line is too long",
        "{r:?}"
    );
    let r = c.send_mail("a@b.test", &["jones@mx.test"], "Subject: x\r\n\r\nx\r\n");
    assert_eq!(r.code, 250, "{r:?}");
}

#[test]
fn accept_any_plain_with_initial_response_then_received_says_esmtpa() {
    let server = accept_any();
    let mut c = ehlo(&server);
    // base64 of "\0anyone\0anything"
    let r = c.expect("AUTH PLAIN AGFueW9uZQBhbnl0aGluZw==", 235);
    assert_eq!(r.lines, ["2.7.0 Authentication successful"]);
    send(&mut c, "a@b.test");
    c.expect("MAIL FROM:<b@b.test> SMTPUTF8", 250);
    c.expect("RCPT TO:<jones@mx.test>", 250);
    c.expect("DATA", 354);
    c.send(b"Subject: utf8\r\n\r\nhi\r\n.\r\n");
    assert_eq!(c.read_reply().code, 250);
    c.expect("QUIT", 221);
    let entries = mbox_entries(&server.mbox_text("jones"));
    assert_eq!(entries.len(), 2);
    assert!(
        entries[0].contains("(mboxd) with ESMTPA id"),
        "{}",
        entries[0]
    );
    // RFC 6531 §3.7.7: SMTPUTF8 with AUTH.
    assert!(
        entries[1].contains("(mboxd) with UTF8SMTPA id"),
        "{}",
        entries[1]
    );
    // Neither the user nor the password is written into the message.
    assert!(!entries[0].contains("anyone") && !entries[0].contains("anything"));
}

#[test]
fn plain_after_334_and_login() {
    let server = with_users(false);
    let mut c = ehlo(&server);
    let r = c.expect("AUTH PLAIN", 334);
    assert_eq!(r.lines, [""], "an empty challenge: `334 `");
    c.expect(JONES_PLAIN, 235);
    send(&mut c, "a@b.test");

    let mut c = ehlo(&server);
    assert_eq!(c.expect("AUTH LOGIN", 334).lines, ["VXNlcm5hbWU6"]);
    assert_eq!(c.expect("am9uZXM=", 334).lines, ["UGFzc3dvcmQ6"]);
    c.expect("czNjcmV0", 235);
    send(&mut c, "a@b.test");

    // LOGIN with the user name on the AUTH line, as smtplib sends it.
    let mut c = ehlo(&server);
    assert_eq!(c.expect("AUTH LOGIN am9uZXM=", 334).lines, ["UGFzc3dvcmQ6"]);
    c.expect("czNjcmV0", 235);
    let entries = mbox_entries(&server.mbox_text("jones"));
    assert_eq!(entries.len(), 2);
    assert!(entries.iter().all(|e| e.contains("with ESMTPA id")));
}

#[test]
fn wrong_credentials_get_535_and_the_session_goes_on() {
    let server = with_users(false);
    let mut c = ehlo(&server);
    let r = c.expect(&format!("AUTH PLAIN {JONES_WRONG}"), 535);
    assert_eq!(r.lines, ["5.7.8 Authentication credentials invalid"]);
    c.expect("AUTH LOGIN", 334);
    c.expect("am9uZXM=", 334);
    c.expect("d3Jvbmc=", 535);
    // Unauthenticated mail is still taken when AUTH is not required.
    send(&mut c, "a@b.test");
    assert!(server.mbox_text("jones").contains("with ESMTP id"));
    c.expect(&format!("AUTH PLAIN {JONES_PLAIN}"), 235);
}

/// Every AUTH refusal counts toward `--max-errors` (here 3): a wrong password, a cancelled
/// exchange, then an AUTH line too long for its initial response (RFC 4954 §4 sends a long one
/// after the `334`), which is the third and closes the session.
#[test]
fn auth_refusals_count_toward_max_errors() {
    let server = TestServer::with(|c| {
        let mut config = std::mem::take(c).auth_user("jones", "s3cret");
        config.max_errors = 3;
        *c = config;
    });
    let mut c = ehlo(&server);
    c.expect(&format!("AUTH PLAIN {JONES_WRONG}"), 535);
    c.expect("AUTH LOGIN", 334);
    let r = c.expect("*", 501);
    assert_eq!(
        r.text(),
        "5.7.0 Authentication cancelled by the client",
        "{r:?}"
    );
    let r = c.expect(&format!("AUTH PLAIN {}", "A".repeat(600)), 421);
    assert_eq!(
        r.line(),
        "421 4.7.0 Too many errors; closing transmission channel"
    );
    c.expect_closed();
    // With room for it, the long line gets its own reply, and the session goes on.
    let server = with_users(false);
    let mut c = ehlo(&server);
    let r = c.expect(&format!("AUTH PLAIN {}", "A".repeat(600)), 500);
    assert_eq!(r.text(), "5.5.2 Line too long", "{r:?}");
    c.expect(&format!("AUTH PLAIN {JONES_PLAIN}"), 235);
}

#[test]
fn required_refuses_mail_with_530_until_auth() {
    let server = with_users(true);
    let mut c = ehlo(&server);
    let r = c.expect("MAIL FROM:<a@b.test>", 530);
    assert_eq!(r.lines, ["5.7.0 Authentication required"]);
    // RFC 4954 §6: every command but AUTH, EHLO, HELO, NOOP, RSET and QUIT.
    for line in ["VRFY jones", "EXPN jones", "HELP"] {
        let r = c.expect(line, 530);
        assert_eq!(r.lines, ["5.7.0 Authentication required"], "{line}");
    }
    c.expect("NOOP", 250);
    c.expect("RSET", 250);
    c.expect(&format!("AUTH PLAIN {JONES_WRONG}"), 535);
    c.expect("MAIL FROM:<a@b.test>", 530);
    c.expect(&format!("AUTH PLAIN {JONES_PLAIN}"), 235);
    // After AUTH, VRFY answers (252: this server is catch-all).
    c.expect("VRFY jones", 252);
    send(&mut c, "a@b.test");
    // HELO then MAIL: no AUTH is possible, so no mail.
    let mut c = server.client();
    c.expect("HELO client.test", 250);
    c.expect("MAIL FROM:<a@b.test>", 530);
    assert_eq!(mbox_entries(&server.mbox_text("jones")).len(), 1);
}

#[test]
fn cancelled_malformed_and_out_of_sequence_auth_is_refused() {
    let server = with_users(false);
    let mut c = server.client();
    c.expect(&format!("AUTH PLAIN {JONES_PLAIN}"), 503);
    c.expect("HELO client.test", 250);
    c.expect(&format!("AUTH PLAIN {JONES_PLAIN}"), 503);
    c.expect("EHLO client.test", 250);

    // RFC 4954 §4: `*` cancels with 501.
    c.expect("AUTH PLAIN", 334);
    assert_eq!(c.expect("*", 501).lines[0].get(..6), Some("5.7.0 "));
    c.expect("AUTH LOGIN", 334);
    c.expect("am9uZXM=", 334);
    c.expect("*", 501);
    c.expect("AUTH PLAIN *", 501);
    // Not base64, and base64 with bits under the padding.
    c.expect("AUTH PLAIN", 334);
    let not_base64 = "501 5.5.2 Cannot decode the response: it is not base64";
    assert_eq!(c.expect("not base64", 501).line(), not_base64);
    assert_eq!(c.cmd("AUTH PLAIN AGpvbmVzAHMzY3JldA=").line(), not_base64);
    assert_eq!(c.cmd("AUTH PLAIN Zh==").line(), not_base64);
    // A line too long in the exchange ends it with 500 5.5.6.
    c.expect("AUTH PLAIN", 334);
    let r = c.cmd(&"A".repeat(1100));
    assert_eq!((r.code, r.lines[0].get(..6)), (500, Some("5.5.6 ")));
    // Commands are commands again after each of these.
    c.expect("NOOP", 250);
    assert_eq!(
        c.expect("AUTH CRAM-MD5", 504).lines[0].get(..6),
        Some("5.5.4 ")
    );
    c.expect("MAIL FROM:<a@b.test>", 250);
    c.expect(&format!("AUTH PLAIN {JONES_PLAIN}"), 503);
    c.expect("RSET", 250);
    c.expect(&format!("AUTH PLAIN {JONES_PLAIN}"), 235);
    let r = c.expect(&format!("AUTH PLAIN {JONES_PLAIN}"), 503);
    assert!(r.text().contains("already authenticated"), "{r:?}");
    c.expect("AUTH LOGIN", 503);
    c.expect("QUIT", 221);
}

#[test]
fn accept_any_takes_any_utf8_password_but_not_other_octets() {
    let server = accept_any();
    let mut c = ehlo(&server);
    let malformed = "501 5.5.2 Malformed authentication response";
    // "\0jones\0caf\xe9" and, by LOGIN, "caf\xe9": not UTF-8.
    assert_eq!(c.cmd("AUTH PLAIN AGpvbmVzAGNhZuk=").line(), malformed);
    c.expect("AUTH LOGIN am9uZXM=", 334);
    assert_eq!(c.cmd("Y2Fm6Q==").line(), malformed);
    // "\0jones\0caf\u{e9}" in UTF-8.
    c.expect("AUTH PLAIN AGpvbmVzAGNhZsOp", 235);
}

#[test]
fn log_names_the_user_escaped_and_never_the_password() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("auth");
    std::fs::write(&file, "# accounts\njones:pw-Zebra-42\n").unwrap();
    let mail = dir.path().join("mail");
    let (child, addrs, log) = spawn_logged(
        &[
            "--listen",
            "127.0.0.1:0",
            "--mail-dir",
            mail.to_str().unwrap(),
            "--hostname",
            "mx.test",
            "--domain",
            "mx.test",
            "--auth-file",
            file.to_str().unwrap(),
            "--auth-required",
        ],
        1,
    );
    let mut c = Client::connect(addrs[0]);
    assert_eq!(c.read_reply().code, 220);
    let port = c.stream.local_addr().unwrap().port();
    let ehlo = c.expect("EHLO client.test", 250);
    assert!(ehlo.lines.iter().any(|l| l == "AUTH PLAIN LOGIN"));
    c.expect("MAIL FROM:<a@b.test>", 530);
    // "\0jones\0wrong-Yak-17", then LOGIN as "bad\u{2028}user" (refused, escaped in the log).
    c.expect("AUTH PLAIN AGpvbmVzAHdyb25nLVlhay0xNw==", 535);
    c.expect("AUTH LOGIN YmFk4oCodXNlcg==", 501);
    // "\0jones> accepted\0wrong": the name's `>` must not close its field in the log line, or
    // the line would read as an accepted login.
    c.expect("AUTH PLAIN AGpvbmVzPiBhY2NlcHRlZAB3cm9uZw==", 535);
    // "\0jones\0pw-Zebra-42"
    c.expect("AUTH PLAIN AGpvbmVzAHB3LVplYnJhLTQy", 235);
    send(&mut c, "a@b.test");
    c.expect("QUIT", 221);
    let log = stop_logged(child, log);
    // The one login accepted is the one line that reads so: the forged name's `>` is escaped.
    assert_eq!(log.matches("user=<jones> accepted").count(), 1, "{log}");
    let conn = format!("conn 1 [127.0.0.1:{port}]");
    for line in [
        format!("{conn}: MAIL <a@b.test> refused: 530 5.7.0"),
        format!("{conn}: AUTH PLAIN user=<jones> refused: 535 5.7.8"),
        format!("{conn}: AUTH LOGIN user=<bad\\u{{2028}}user> refused: 501 5.5.2"),
        format!("{conn}: AUTH PLAIN user=<jones\\u{{003e}} accepted> refused: 535 5.7.8"),
        format!("{conn}: AUTH PLAIN user=<jones> accepted"),
    ] {
        assert!(log.contains(&line), "missing {line:?} in:\n{log}");
    }
    let delivered = delivered_line(&log);
    assert!(
        delivered.ends_with("from=<a@b.test> to=<jones> bytes=24 auth=<jones>"),
        "{delivered}"
    );
    for secret in [
        "pw-Zebra-42",
        "wrong-Yak-17",
        "AGpvbmVzAHB3LVplYnJhLTQy",
        "cHctWmVicmEtNDI=",
        "\u{2028}",
    ] {
        assert!(!log.contains(secret), "{secret:?} in the log:\n{log}");
    }
    let mbox = std::fs::read_to_string(mail.join("jones")).unwrap();
    assert!(
        mbox.contains("with ESMTPA id") && !mbox.contains("Zebra"),
        "{mbox}"
    );
}

fn lettre_send(
    server: &TestServer,
    user: &str,
    password: &str,
    mechanism: Mechanism,
) -> Result<(), String> {
    let mailer = SmtpTransport::builder_dangerous("127.0.0.1")
        .port(server.addr.port())
        .timeout(Some(Duration::from_secs(10)))
        .credentials(Credentials::new(user.into(), password.into()))
        .authentication(vec![mechanism])
        .build();
    let email = Message::builder()
        .from("Sender <sender@b.test>".parse().unwrap())
        .to("jones@mx.test".parse().unwrap())
        .subject("from lettre with AUTH")
        .body("hello\n".to_string())
        .unwrap();
    mailer.send(&email).map(|_| ()).map_err(|e| e.to_string())
}

#[test]
fn lettre_logs_in_with_plain_and_login() {
    for server in [accept_any(), with_users(true)] {
        for mechanism in [Mechanism::Plain, Mechanism::Login] {
            lettre_send(&server, "jones", "s3cret", mechanism)
                .unwrap_or_else(|e| panic!("{mechanism:?}: {e}"));
        }
        let entries = mbox_entries(&server.mbox_text("jones"));
        assert_eq!(entries.len(), 2);
        assert!(entries.iter().all(|e| e.contains("with ESMTPA id")));
    }
    let server = with_users(true);
    for mechanism in [Mechanism::Plain, Mechanism::Login] {
        let e = lettre_send(&server, "jones", "wrong", mechanism).unwrap_err();
        assert!(e.contains("535"), "{mechanism:?}: {e}");
    }
    assert!(server.mbox_text("jones").is_empty());
}

const PYTHON: &str = r#"
import smtplib, sys
port, user, password, expect = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
for mechanism in ("default", "LOGIN"):
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as s:
        s.ehlo("python.test")
        assert s.has_extn("auth"), s.esmtp_features
        try:
            if mechanism == "default":
                s.login(user, password)
            else:
                # What login() does for the mechanism it picks, with LOGIN forced.
                s.user, s.password = user, password
                s.auth("LOGIN", s.auth_login)
        except smtplib.SMTPAuthenticationError as e:
            assert expect == "refused" and e.smtp_code == 535, (mechanism, e)
            continue
        assert expect == "accepted", mechanism
        s.sendmail("py@b.test", ["jones@mx.test"], b"Subject: smtplib auth\r\n\r\nhi\r\n")
print("ok")
"#;

fn smtplib(server: &TestServer, user: &str, password: &str, expect: &str) {
    let mut cmd = Command::new("python3");
    cmd.args([
        "-c",
        PYTHON,
        &server.addr.port().to_string(),
        user,
        password,
        expect,
    ]);
    let out = output_within(&mut cmd, Duration::from_secs(60));
    assert!(
        out.status.success(),
        "smtplib {user}/{expect}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn python_smtplib_logs_in() {
    if Command::new("python3").arg("--version").output().is_err() {
        println!("skipped: python3 not found, so smtplib's login() is not tested");
        return;
    }
    let server = accept_any();
    smtplib(&server, "anyone", "anything", "accepted");
    let server = with_users(true);
    smtplib(&server, "jones", "s3cret", "accepted");
    smtplib(&server, "jones", "wrong", "refused");
    let entries = mbox_entries(&server.mbox_text("jones"));
    // login() (PLAIN, smtplib's choice) and LOGIN, once each with the right password.
    assert_eq!(entries.len(), 2, "{entries:?}");
    assert!(entries.iter().all(|e| e.contains("with ESMTPA id")));
}

#[test]
fn builder_and_config_fields_agree() {
    let c = Config::default()
        .auth_user("jones", "s3cret")
        .auth_required(true);
    assert!(c.auth.enabled() && c.auth_required);
    assert!(!format!("{c:?}").contains("s3cret"));
}

#[test]
fn swaks_logs_in_with_plain_and_login() {
    if Command::new("swaks").arg("--version").output().is_err() {
        println!("skipped: swaks not found (make deps installs it), so its AUTH is not tested");
        return;
    }
    let server = with_users(true);
    let port = server.addr.port().to_string();
    let swaks = |mechanism: &str, password: &str| {
        let mut cmd = Command::new("swaks");
        cmd.args([
            "--server",
            "127.0.0.1",
            "--port",
            &port,
            "--from",
            "app@b.test",
        ])
        .args([
            "--to",
            "jones@mx.test",
            "--auth",
            mechanism,
            "--auth-user",
            "jones",
        ])
        .args(["--auth-password", password, "--timeout", "10"]);
        output_within(&mut cmd, Duration::from_secs(60))
    };
    for mechanism in ["PLAIN", "LOGIN"] {
        let out = swaks(mechanism, "s3cret");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
        let out = swaks(mechanism, "wrong");
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stdout).contains("535 5.7.8"));
    }
    let entries = mbox_entries(&server.mbox_text("jones"));
    assert_eq!(entries.len(), 2);
    assert!(entries.iter().all(|e| e.contains("with ESMTPA id")));
}

/// Standard base64 with padding (RFC 4648 §4), for building responses.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for group in bytes.chunks(3) {
        let n = group
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            let c = ALPHABET[(n >> (18 - 6 * i) & 63) as usize];
            out.push(if i <= group.len() { char::from(c) } else { '=' });
        }
    }
    out
}

/// RFC 4616 §2: a server MUST take 255 octets each of authorization identity, user name and
/// password; RFC 4954 §4: it MUST handle the longest response of a mechanism it offers. That
/// PLAIN response is 1 024 base64 characters, a line of 1 026 octets; one more is too long.
#[test]
fn plain_takes_the_longest_response_its_rfc_allows() {
    let server = accept_any();
    let mut c = ehlo(&server);
    let user = "u".repeat(255);
    let message = format!("{user}\0{user}\0{}", "p".repeat(255));
    let response = base64(message.as_bytes());
    assert_eq!(response.len(), 1024);
    c.expect("AUTH PLAIN", 334);
    c.expect(&response, 235);
    // One octet more is a line too long, and ends the exchange (here: a fresh session).
    let mut c = ehlo(&server);
    c.expect("AUTH PLAIN", 334);
    let r = c.expect(&format!("{response}A"), 500);
    assert_eq!(
        r.text(),
        "5.5.6 Authentication Exchange line is too long",
        "{r:?}"
    );
    c.expect("NOOP", 250);
}

/// A user name with a character of the unsafe set (README, "Unsafe characters") is refused as a
/// malformed response, with PLAIN and LOGIN, even by a server that accepts any credentials.
#[test]
fn a_user_name_with_an_unsafe_character_is_refused() {
    let server = accept_any();
    let mut c = ehlo(&server);
    for name in ["x\u{2028}Bcc: v", "\u{202e}evil", "a\u{200b}b", "a\u{85}b"] {
        let plain = base64(format!("\0{name}\0pw").as_bytes());
        let r = c.expect(&format!("AUTH PLAIN {plain}"), 501);
        assert_eq!(
            r.text(),
            "5.5.2 Malformed authentication response",
            "{name:?}"
        );
        c.expect("AUTH LOGIN", 334);
        let r = c.expect(&base64(name.as_bytes()), 501);
        assert_eq!(
            r.text(),
            "5.5.2 Malformed authentication response",
            "{name:?}"
        );
    }
    // A plain name still logs in.
    c.expect(&format!("AUTH PLAIN {}", base64(b"\0jones\0pw")), 235);
}
