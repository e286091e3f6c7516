//! Failing on purpose (`--fail`), over real sockets: every stage, reply codes with their
//! enhanced codes, drop, delay, count=, p= with a seed, nothing stored after a `data-end` fault,
//! each of the examples, and the binary's exit 2 for a malformed rule.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use support::{
    BIN, Client, TestServer, output_within, refuses_connections, spawn_logged, stop_logged,
};

/// A test server with these rules, `--fail-seed seed`, and room for many refusals.
fn seeded(rules: &[&str], seed: u64) -> TestServer {
    TestServer::with(|c| {
        let mut config = std::mem::take(c).fail_seed(seed);
        for r in rules {
            config = config.fail(r.parse().unwrap_or_else(|e| panic!("{r}: {e}")));
        }
        config.max_errors = 1000;
        *c = config;
    })
}

fn server(rules: &[&str]) -> TestServer {
    seeded(rules, 0)
}

/// A client that has said EHLO, with a transaction from `a@b.test` open.
fn in_transaction(s: &TestServer) -> Client {
    let mut c = s.client();
    c.expect("EHLO client.test", 250);
    c.expect("MAIL FROM:<a@b.test>", 250);
    c
}

/// The first line of a reply, as `CODE TEXT` (the enhanced code is part of the text).
fn line(r: &support::Reply) -> String {
    format!("{} {}", r.code, r.lines[0])
}

#[test]
fn connect_421_replaces_the_greeting_and_closes() {
    let s = server(&["connect=421"]);
    let mut c = Client::connect(s.addr);
    let r = c.read_reply();
    assert_eq!(
        line(&r),
        "421 mx.test Service not available, closing transmission channel"
    );
    c.expect_closed();
}

#[test]
fn connect_554_waits_for_quit_and_answers_503_meanwhile() {
    // RFC 5321 §3.1.
    let s = server(&["connect=554 go away"]);
    let mut c = Client::connect(s.addr);
    assert_eq!(line(&c.read_reply()), "554 go away");
    for cmd in ["EHLO client.test", "MAIL FROM:<a@b.test>", "NOOP", "FROB"] {
        c.expect(cmd, 503);
    }
    // A BDAT chunk is read and thrown away (RFC 3030 §2): its octets are not commands.
    c.send(b"BDAT 12\r\nQUIT\r\nNOOP\r\n");
    assert_eq!(c.read_reply().code, 503);
    c.expect("NOOP", 503);
    c.expect("QUIT", 221);
    c.expect_closed();
    // Without text: the default text, and no enhanced code before EHLO.
    let s = server(&["connect=554"]);
    let mut c = Client::connect(s.addr);
    assert_eq!(line(&c.read_reply()), "554 No SMTP service here");
}

#[test]
fn connect_drop_closes_without_a_word() {
    let s = server(&["connect=drop"]);
    Client::connect(s.addr).expect_closed();
}

#[test]
fn connect_delay_delays_the_greeting() {
    let s = server(&["connect=delay:300ms"]);
    let start = Instant::now();
    let mut c = Client::connect(s.addr);
    assert_eq!(c.read_reply().code, 220);
    assert!(start.elapsed() >= Duration::from_millis(300));
}

#[test]
fn helo_by_name_refused_then_another_name_accepted() {
    let s = server(&["helo:*.bad.test=550 not you"]);
    let mut c = s.client();
    assert_eq!(line(&c.cmd("EHLO Host.BAD.test")), "550 not you");
    // Still not introduced: the state did not change.
    c.expect("MAIL FROM:<a@b.test>", 503);
    c.expect("EHLO good.test", 250);
    c.expect("MAIL FROM:<a@b.test>", 250);
    // After an accepted EHLO, the refusal carries its enhanced code.
    assert_eq!(line(&c.cmd("EHLO Host.BAD.test")), "550 5.7.1 not you");
}

#[test]
fn mail_slow_example_delays_five_seconds_then_carries_on() {
    let s = server(&["mail:slow@*=delay:5s"]);
    let mut c = s.client();
    c.expect("EHLO client.test", 250);
    let start = Instant::now();
    c.expect("MAIL FROM:<Slow@app.test>", 250);
    assert!(
        start.elapsed() >= Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    c.expect("RSET", 250);
    let start = Instant::now();
    c.expect("MAIL FROM:<fast@app.test>", 250);
    assert!(start.elapsed() < Duration::from_secs(5));
    c.expect("RSET", 250);
    assert_eq!(
        c.send_mail("slowly@app.test", &["jones@mx.test"], "hi")
            .code,
        250
    );
}

#[test]
fn rcpt_busy_example_refuses_only_matching_recipients() {
    let s = server(&["rcpt:busy-*@*=450"]);
    let mut c = in_transaction(&s);
    assert_eq!(
        line(&c.cmd("RCPT TO:<busy-1@mx.test>")),
        "450 4.2.1 Requested mail action not taken: mailbox unavailable"
    );
    c.expect("RCPT TO:<jones@mx.test>", 250);
    c.expect("DATA", 354);
    c.send(b"Subject: x\r\n\r\nhello\r\n.\r\n");
    assert_eq!(c.read_reply().code, 250);
    assert!(s.mbox_text("jones").contains("hello"));
    assert!(s.mbox("busy-1").is_empty());
}

#[test]
fn a_code_with_text_and_the_enhanced_code_only_after_ehlo() {
    let s = server(&["rcpt=552 mailbox full"]);
    let mut c = in_transaction(&s);
    assert_eq!(
        line(&c.cmd("RCPT TO:<jones@mx.test>")),
        "552 5.2.2 mailbox full"
    );
    // Every recipient refused: DATA is 554 (RFC 5321 §3.3).
    c.expect("DATA", 554);
    let mut c = s.client();
    c.expect("HELO client.test", 250);
    c.expect("MAIL FROM:<a@b.test>", 250);
    assert_eq!(line(&c.cmd("RCPT TO:<jones@mx.test>")), "552 mailbox full");
}

#[test]
fn data_refuses_data_and_bdat_by_recipient() {
    let s = server(&["data:*@blocked.test=451"]);
    let mut c = in_transaction(&s);
    // Not a local domain: refused, so not a recipient of the transaction.
    c.expect("RCPT TO:<x@blocked.test>", 550);
    c.expect("RCPT TO:<jones@mx.test>", 250);
    c.expect("DATA", 354);
    c.send(b"a\r\n.\r\n");
    assert_eq!(c.read_reply().code, 250);

    let s = server(&["data:jones@*=451"]);
    let mut c = in_transaction(&s);
    c.expect("RCPT TO:<jones@mx.test>", 250);
    assert_eq!(
        line(&c.cmd("DATA")),
        "451 4.3.0 Requested action aborted: local error in processing"
    );
    // BDAT: the refused chunk is read and dropped, never taken for commands.
    c.send(b"BDAT 6 LAST\r\nNOOP\r\n");
    assert_eq!(c.read_reply().code, 451);
    c.expect("NOOP", 250);
    c.expect("RSET", 250);
    assert!(s.mbox("jones").is_empty());
}

#[test]
fn data_end_example_stores_nothing() {
    let s = server(&["data-end:*=452"]);
    let mut c = s.client();
    c.expect("EHLO client.test", 250);
    let r = c.send_mail("a@b.test", &["jones@mx.test", "smith@mx.test"], "hi");
    assert_eq!(
        line(&r),
        "452 4.3.1 Requested action not taken: insufficient system storage"
    );
    // BDAT too; the session goes on.
    c.expect("MAIL FROM:<a@b.test>", 250);
    c.expect("RCPT TO:<jones@mx.test>", 250);
    c.send(b"BDAT 4 LAST\r\nhi\r\n");
    assert_eq!(c.read_reply().code, 452);
    c.expect("NOOP", 250);
    assert!(s.mbox("jones").is_empty() && s.mbox("smith").is_empty());
    assert!(!s.mail_dir().join("jones").exists());
}

#[test]
fn data_end_delay_delivers_after_the_delay() {
    let s = server(&["data-end=delay:300ms"]);
    let mut c = s.client();
    c.expect("EHLO client.test", 250);
    let start = Instant::now();
    assert_eq!(c.send_mail("a@b.test", &["jones@mx.test"], "x").code, 250);
    assert!(start.elapsed() >= Duration::from_millis(300));
    assert!(s.mbox_text("jones").contains("\nx\n"));
}

#[test]
fn drop_closes_without_a_reply_at_each_stage() {
    for (rule, to_close) in [
        ("helo=drop", &["EHLO c.test"][..]),
        ("mail=drop", &["EHLO c.test", "MAIL FROM:<a@b.test>"]),
        (
            "rcpt=drop",
            &[
                "EHLO c.test",
                "MAIL FROM:<a@b.test>",
                "RCPT TO:<jones@mx.test>",
            ],
        ),
        (
            "data=drop",
            &[
                "EHLO c.test",
                "MAIL FROM:<a@b.test>",
                "RCPT TO:<jones@mx.test>",
                "DATA",
            ],
        ),
    ] {
        let s = server(&[rule]);
        let mut c = s.client();
        let (last, before) = to_close.split_last().unwrap();
        for cmd in before {
            assert!(c.cmd(cmd).code < 400, "{rule}: {cmd}");
        }
        c.send(format!("{last}\r\n").as_bytes());
        c.expect_closed();
    }
    let s = server(&["data-end=drop"]);
    let mut c = in_transaction(&s);
    c.expect("RCPT TO:<jones@mx.test>", 250);
    c.expect("DATA", 354);
    c.send(b"hello\r\n.\r\n");
    c.expect_closed();
    assert!(s.mbox("jones").is_empty());
}

#[test]
fn a_421_in_a_session_closes_it() {
    let s = server(&["mail=421"]);
    let mut c = s.client();
    c.expect("EHLO c.test", 250);
    assert_eq!(
        line(&c.cmd("MAIL FROM:<a@b.test>")),
        "421 4.3.2 mx.test Service not available, closing transmission channel"
    );
    c.expect_closed();
}

#[test]
fn shutdown_cuts_a_delay_short() {
    let mut s = server(&["rcpt=delay:60s"]);
    let mut c = s.client();
    c.expect("EHLO c.test", 250);
    c.send(b"MAIL FROM:<a@b.test>\r\nRCPT TO:<jones@mx.test>\r\n");
    // The replies due are sent before the delay begins.
    assert_eq!(c.read_reply().code, 250);
    let start = Instant::now();
    s.stop();
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "{:?}",
        start.elapsed()
    );
    let codes: Vec<u16> = c.replies_until_close().iter().map(|r| r.code).collect();
    assert_eq!(codes, [250, 421]);
}

/// A DATA answered during a stop (here, once its delay is cut short) is refused with the 421
/// alone: it got 354, then, its reading side shut by the stop, 421 inside the message.
#[test]
fn a_data_answered_during_a_stop_gets_421_not_354() {
    let mut s = server(&["data=delay:60s"]);
    let mut c = s.client();
    c.expect("EHLO client.test", 250);
    // The replies before the delay are written before it begins; the 354 after it.
    c.send(b"MAIL FROM:<a@b.test>\r\nRCPT TO:<jones@mx.test>\r\nDATA\r\n");
    // Written as the delay begins, so the stop comes during it (a stop just before it gives
    // 421 too).
    assert_eq!(line(&c.read_reply()), "250 2.1.0 Sender OK");
    assert_eq!(line(&c.read_reply()), "250 2.1.5 Recipient OK");
    s.stop();
    let lines: Vec<String> = c.replies_until_close().iter().map(line).collect();
    assert_eq!(
        lines,
        ["421 4.3.2 Service shutting down; closing transmission channel"]
    );
}

/// When a stop comes as a message ends and the next is asked for in the same group, only the
/// new DATA gets the 421: the replies before it stay, the ended message's verdict among them.
/// They were all replaced by the 421, so a refusal that a retry cannot change (a 452 here, a 550
/// for a bare newline) reached the client as a 421 it would retry.
#[test]
fn a_stop_keeps_the_verdict_written_before_the_next_data() {
    let s = server(&["data-end=452"]);
    let mut c = in_transaction(&s);
    c.expect("RCPT TO:<jones@mx.test>", 250);
    c.expect("DATA", 354);
    c.send(b"Subject: x\r\n\r\nbody\r\n");
    let addr = s.addr;
    let stopper = std::thread::spawn(move || {
        let mut s = s;
        s.stop();
    });
    // The stop has begun once new connections are refused; the session has its grace.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !refuses_connections(addr, Duration::from_secs(5)) {
        assert!(Instant::now() < deadline, "the server kept accepting");
    }
    c.send(b".\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<jones@mx.test>\r\nDATA\r\n");
    let codes: Vec<u16> = c.replies_until_close().iter().map(|r| r.code).collect();
    assert_eq!(codes, [452, 250, 250, 421]);
    stopper.join().unwrap();
}

#[test]
fn count_example_fires_once_per_server() {
    let s = server(&["rcpt:*=451,count=1"]);
    let mut c = in_transaction(&s);
    c.expect("RCPT TO:<jones@mx.test>", 451);
    c.expect("RCPT TO:<jones@mx.test>", 250);
    // Shared by every session of the server.
    let mut c = in_transaction(&s);
    c.expect("RCPT TO:<jones@mx.test>", 250);
}

/// The codes of 32 RCPTs in one session of a server with `rule` and `seed`.
fn rcpt_codes(rule: &str, seed: u64) -> Vec<u16> {
    let s = seeded(&[rule], seed);
    let mut c = in_transaction(&s);
    (0..32)
        .map(|_| c.cmd("RCPT TO:<jones@mx.test>").code)
        .collect()
}

#[test]
fn p_with_a_seed_repeats() {
    let first = rcpt_codes("rcpt=450,p=0.5", 7);
    assert_eq!(
        first,
        rcpt_codes("rcpt=450,p=0.5", 7),
        "same seed, same pattern"
    );
    assert!(first.contains(&450) && first.contains(&250), "{first:?}");
    assert_ne!(first, rcpt_codes("rcpt=450,p=0.5", 8));
    assert!(rcpt_codes("rcpt=450,p=0", 7).iter().all(|c| *c == 250));
    assert!(rcpt_codes("rcpt=450,p=1", 7).iter().all(|c| *c == 450));
}

/// Sends 20 messages, each on a new connection; true for each that was dropped.
fn drops(s: &TestServer) -> Vec<bool> {
    (0..20)
        .map(|i| {
            let mut c = in_transaction(s);
            c.expect("RCPT TO:<jones@mx.test>", 250);
            c.expect("DATA", 354);
            c.send(format!("message {i}\r\n.\r\n").as_bytes());
            match c.try_read_reply() {
                None => true,
                Some(r) => {
                    assert_eq!(r.code, 250);
                    false
                }
            }
        })
        .collect()
}

#[test]
fn drop_with_p_example_repeats_and_stores_only_the_rest() {
    let rule = "data-end:*=drop,p=0.1";
    let s = seeded(&[rule], 3);
    let first = drops(&s);
    let dropped = first.iter().filter(|d| **d).count();
    assert!((1..20).contains(&dropped), "{first:?}");
    let stored = support::mbox_entries(&s.mbox_text("jones"));
    assert_eq!(stored.len(), 20 - dropped);
    assert_eq!(drops(&seeded(&[rule], 3)), first);
}

/// The failure codes of the seeds' reply table (and README's 455, 521 and 555, and two codes
/// no RFC names), with the enhanced code each gets at RCPT and at MAIL.
const CODES: &[(u16, &str, &str)] = &[
    (450, "4.2.1", "4.2.1"),
    (451, "4.3.0", "4.3.0"),
    (452, "4.5.3", "4.3.1"),
    (455, "4.5.4", "4.5.4"),
    (499, "4.0.0", "4.0.0"),
    (500, "5.5.1", "5.5.1"),
    (501, "5.5.4", "5.5.4"),
    (502, "5.5.1", "5.5.1"),
    (503, "5.5.1", "5.5.1"),
    (504, "5.5.4", "5.5.4"),
    (521, "5.3.2", "5.3.2"),
    (550, "5.1.1", "5.7.1"),
    (551, "5.1.6", "5.1.6"),
    (552, "5.2.2", "5.3.4"),
    (553, "5.1.3", "5.1.7"),
    (554, "5.3.0", "5.3.0"),
    (555, "5.5.4", "5.5.4"),
    (599, "5.0.0", "5.0.0"),
];

#[test]
fn every_seed_code_with_its_enhanced_code() {
    let mut rules: Vec<String> = Vec::new();
    for (code, _, _) in CODES.iter().chain([&(421, "", "")]) {
        rules.push(format!("rcpt:c{code}@*={code}"));
        rules.push(format!("mail:c{code}@*={code}"));
    }
    let s = server(&rules.iter().map(String::as_str).collect::<Vec<_>>());
    let mut c = in_transaction(&s);
    for (code, at_rcpt, _) in CODES {
        let r = c.cmd(&format!("RCPT TO:<c{code}@mx.test>"));
        assert_eq!(r.code, *code, "{r:?}");
        assert!(r.lines[0].starts_with(&format!("{at_rcpt} ")), "{r:?}");
    }
    let mut c = s.client();
    c.expect("EHLO client.test", 250);
    for (code, _, at_mail) in CODES {
        let r = c.cmd(&format!("MAIL FROM:<c{code}@app.test>"));
        assert_eq!(r.code, *code, "{r:?}");
        assert!(r.lines[0].starts_with(&format!("{at_mail} ")), "{r:?}");
    }
    let r = c.cmd("MAIL FROM:<c421@app.test>");
    assert!(line(&r).starts_with("421 4.3.2 "), "{r:?}");
    c.expect_closed();
}

#[test]
fn the_binary_refuses_a_malformed_rule_with_exit_2() {
    for (rule, why) in [
        ("rcpt", "expected STAGE[:PATTERN]=ACTION"),
        ("rcpt=250", "code 250 is not a failure"),
        ("send:*=450", "unknown stage \"send\""),
        ("rcpt=451,count=0", "count=0"),
    ] {
        let out = output_within(
            Command::new(BIN).args(["--listen", "127.0.0.1:0", "--fail", rule]),
            Duration::from_secs(10),
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{rule}: {stderr}");
        assert!(
            stderr.contains(&format!("mboxd: --fail {rule:?}: ")),
            "{stderr}"
        );
        assert!(stderr.contains(why), "{rule}: {stderr}");
    }
}

#[test]
fn the_binary_fails_on_purpose_and_logs_each_firing() {
    let dir = tempfile::tempdir().unwrap();
    let (child, addrs, log) = spawn_logged(
        &[
            "--listen",
            "127.0.0.1:0",
            "--mail-dir",
            dir.path().to_str().unwrap(),
            "--fail",
            "connect=421,count=1",
            "--fail",
            "mail:x*=550",
            "--fail",
            "data:*d1*=451",
            "--fail",
            "data-end:*d2*=452",
            "--fail-seed",
            "9",
        ],
        1,
    );
    let mut c = Client::connect(addrs[0]);
    assert_eq!(c.read_reply().code, 421);
    c.expect_closed();
    // A refusal by a rule is logged as the same refusal without one would be, after `fired`.
    let mut c = Client::connect(addrs[0]);
    assert_eq!(c.read_reply().code, 220);
    c.expect("EHLO client.test", 250);
    let mail = c.expect("MAIL FROM:<x@b.test>", 550).line();
    c.expect("MAIL FROM:<a@b.test>", 250);
    c.expect("RCPT TO:<d1@localhost>", 250);
    let data = c.expect("DATA", 451).line();
    c.expect("RSET", 250);
    c.expect("MAIL FROM:<a@b.test>", 250);
    c.expect("RCPT TO:<d2@localhost>", 250);
    c.expect("DATA", 354);
    c.send(b"Subject: x\r\n\r\nbody\r\n.\r\n");
    let end = c.read_reply().line();
    assert!(end.starts_with("452 "), "{end}");
    c.expect("QUIT", 221);
    let log = stop_logged(child, log);
    let code = |line: &str| line.split(' ').take(2).collect::<Vec<_>>().join(" ");
    for (conn, wanted) in [
        (1, "--fail \"connect=421,count=1\" fired".to_string()),
        (2, "--fail \"mail:x*=550\" fired".to_string()),
        (2, format!("MAIL <x@b.test> refused: {}", code(&mail))),
        (2, "--fail \"data:*d1*=451\" fired".to_string()),
        (2, format!("message refused: {}", code(&data))),
        (2, "--fail \"data-end:*d2*=452\" fired".to_string()),
        (2, format!("message refused: {}", code(&end))),
    ] {
        let conn = format!("conn {conn} [127.0.0.1:");
        assert!(
            log.lines()
                .any(|l| l.contains(&conn) && l.ends_with(&wanted)),
            "{wanted}: {log}"
        );
    }
    assert_eq!(
        log.matches("message refused: ").count(),
        2,
        "a message line for DATA and one for its end: {log}"
    );
}
