//! The builder methods of `Config` for addresses, names, limits and times take effect: each
//! test starts a server with `Config::for_tests()` and one or two settings, and observes them
//! over a real socket (the last checks that `Config::new` is the default, starting nothing).
//! The others are tested where their feature is: `keep_mail_dir` and `ready_file` in
//! `tests/library.rs`, the AUTH methods in `tests/auth.rs`, `fail` and `fail_seed` in
//! `tests/fail.rs`.

mod support;

use std::io::Write;
use std::net::IpAddr;
use std::thread;
use std::time::{Duration, Instant};

use mboxd::{BareNewline, Config, Server};
use support::Client;

fn start(config: Config) -> Server {
    Server::start(config).expect("server starts")
}

/// A client that has read the greeting and said EHLO.
fn client(server: &Server) -> Client {
    let mut c = Client::connect(server.local_addr());
    assert_eq!(c.read_reply().code, 220);
    c.expect("EHLO client.test", 250);
    c
}

/// MAIL, RCPT and DATA for `to`, ready for the message.
fn begin_data(c: &mut Client, to: &str) {
    c.expect("MAIL FROM:<a@b.test>", 250);
    c.expect(&format!("RCPT TO:<{to}>"), 250);
    c.expect("DATA", 354);
}

fn within(took: Duration, min_ms: u64, max_ms: u64) {
    assert!(
        took >= Duration::from_millis(min_ms) && took < Duration::from_millis(max_ms),
        "{took:?} not within {min_ms}..{max_ms} ms"
    );
}

#[test]
fn listen_and_also_listen() {
    let server = start(
        Config::for_tests()
            .listen(([127, 0, 0, 1], 0))
            .also_listen(([127, 0, 0, 2], 0)),
    );
    let addrs = server.local_addrs().to_vec();
    assert_eq!(addrs.len(), 2);
    assert_eq!(server.local_addr(), addrs[0]);
    assert_eq!(addrs[1].ip().to_string(), "127.0.0.2");
    for addr in addrs {
        let mut c = Client::connect(addr);
        assert_eq!(c.read_reply().code, 220);
    }
}

#[test]
fn hostname_domain_user_and_alias() {
    let server = start(
        Config::for_tests()
            .hostname("mx.example")
            .domain("app.test")
            .unwrap()
            .user("jones")
            .unwrap()
            .user("smith")
            .unwrap()
            .alias("staff", ["jones", "smith"])
            .unwrap(),
    );
    let mut c = Client::connect(server.local_addr());
    let greeting = c.read_reply();
    assert!(greeting.text().starts_with("mx.example "), "{greeting:?}");
    c.expect("EHLO client.test", 250);
    c.expect("MAIL FROM:<a@b.test>", 250);
    // Only the domain given, and only known users.
    assert_eq!(c.cmd("RCPT TO:<jones@localhost>").code, 550);
    assert_eq!(c.cmd("RCPT TO:<other@app.test>").code, 550);
    c.expect("RCPT TO:<staff@app.test>", 250);
    c.expect("DATA", 354);
    c.send(b"Subject: to staff\r\n\r\nhi\r\n.\r\n");
    assert_eq!(c.read_reply().code, 250);
    for user in ["jones", "smith"] {
        let m = &server.messages(user).unwrap()[0];
        assert_eq!(m.subject(), Some("to staff"));
        assert!(
            m.header("Received")
                .unwrap()
                .contains("by mx.example (mboxd)")
        );
    }
    assert!(Config::new().alias("x", ["|/bin/sh"]).is_err());
}

#[test]
fn mail_dir() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(Config::for_tests().mail_dir(dir.path()));
    let mut c = client(&server);
    assert_eq!(
        c.send_mail("a@b.test", &["jones@localhost"], "S: x\r\n\r\nx\r\n")
            .code,
        250
    );
    assert!(dir.path().join("jones").is_file());
}

#[test]
fn workers_and_queue_wait() {
    let server = start(
        Config::for_tests()
            .workers(1)
            .queue_wait(Duration::from_millis(2500)),
    );
    // Inside a message, so not an idle session the newcomer could evict after 1 s.
    let mut busy = client(&server);
    begin_data(&mut busy, "jones@localhost");
    let began = Instant::now();
    let mut c = Client::connect(server.local_addr());
    let r = c.read_reply();
    assert_eq!(r.code, 421, "{r:?}");
    // Not the default's 1 s.
    within(began.elapsed(), 2300, 6000);
}

#[test]
fn max_message_size_and_max_recipients() {
    let server = start(Config::for_tests().max_message_size(100).max_recipients(2));
    let mut c = Client::connect(server.local_addr());
    assert_eq!(c.read_reply().code, 220);
    let ehlo = c.expect("EHLO client.test", 250);
    assert!(ehlo.lines.contains(&"SIZE 100".to_string()), "{ehlo:?}");
    c.expect("MAIL FROM:<a@b.test>", 250);
    c.expect("RCPT TO:<a@localhost>", 250);
    c.expect("RCPT TO:<b@localhost>", 250);
    assert_eq!(c.cmd("RCPT TO:<c@localhost>").code, 452);
    c.expect("DATA", 354);
    c.send(&support::dot_stuff(&"x".repeat(200)));
    assert_eq!(c.read_reply().code, 552);
}

#[test]
fn timeout_and_data_timeout() {
    let server = start(
        Config::for_tests()
            .timeout(Duration::from_millis(300))
            .data_timeout(Duration::from_millis(900)),
    );
    let mut c = client(&server);
    let began = Instant::now();
    assert_eq!(c.read_reply().code, 421);
    within(began.elapsed(), 250, 2000);
    let mut c = client(&server);
    begin_data(&mut c, "jones@localhost");
    let began = Instant::now();
    assert_eq!(c.read_reply().code, 421);
    within(began.elapsed(), 800, 3000);
}

#[test]
fn lock_timeout() {
    let server = start(Config::for_tests().lock_timeout(Duration::from_millis(300)));
    // A dotlock of a live process (init) is respected until the lock timeout.
    std::fs::write(server.mail_dir().join("jones.lock"), "1\n").unwrap();
    let mut c = client(&server);
    let began = Instant::now();
    assert_eq!(c.send_mail("a@b.test", &["jones@localhost"], "x").code, 450);
    within(began.elapsed(), 250, 5000);
}

#[test]
fn max_errors() {
    let server = start(Config::for_tests().max_errors(2));
    let mut c = client(&server);
    assert_eq!(c.cmd("XYZZY").code, 500);
    let r = c.cmd("XYZZY");
    assert_eq!(r.code, 421, "{r:?}");
    c.expect_closed();
}

#[test]
fn shutdown_grace() {
    let server = start(Config::for_tests().shutdown_grace(Duration::from_millis(2500)));
    let mut c = client(&server);
    begin_data(&mut c, "jones@localhost");
    c.send(b"Subject: unfinished\r\n");
    let began = Instant::now();
    let stopper = thread::spawn(move || server.shutdown());
    let r = c.read_reply();
    assert_eq!(r.code, 421, "{r:?}");
    // Not `for_tests`'s 1 s.
    within(began.elapsed(), 2300, 8000);
    stopper.join().unwrap();
}

#[test]
fn for_tests_gives_a_one_second_grace_so_a_dropped_server_stops_soon() {
    // With the command line's 30 s, a test that failed while its client was inside a message
    // waited half a minute in the server's drop.
    let server = start(Config::for_tests());
    let mut c = client(&server);
    begin_data(&mut c, "jones@localhost");
    c.send(b"Subject: unfinished\r\n");
    let began = Instant::now();
    let dropper = thread::spawn(move || drop(server));
    let r = c.read_reply();
    assert_eq!(r.code, 421, "{r:?}");
    within(began.elapsed(), 900, 5000);
    dropper.join().unwrap();
}

#[test]
fn max_per_peer() {
    let server = start(Config::for_tests().max_per_peer(1));
    let peer: IpAddr = "127.0.0.2".parse().unwrap();
    let mut first = Client::connect_from(peer, server.local_addr());
    assert_eq!(first.read_reply().code, 220);
    let mut second = Client::connect_from(peer, server.local_addr());
    let r = second.read_reply();
    assert_eq!(r.code, 421, "{r:?}");
    assert!(
        r.text()
            .starts_with("Too many connections from your address"),
        "{r:?}"
    );
}

#[test]
fn min_data_rate_and_its_grace() {
    let server = start(
        Config::for_tests()
            .min_data_rate(1000)
            .min_data_rate_grace(Duration::from_millis(500)),
    );
    let mut c = client(&server);
    begin_data(&mut c, "jones@localhost");
    let mut trickle = c.stream.try_clone().unwrap();
    let began = Instant::now();
    // About 700 octets a second: under the 1 000 set, over the default's 512 (which would let
    // it go on until it stops, 5 s in).
    let trickler = thread::spawn(move || {
        for _ in 0..50 {
            if trickle.write_all(&[b'x'; 70]).is_err() {
                return;
            }
            thread::sleep(Duration::from_millis(100));
        }
    });
    let r = c.read_reply();
    assert_eq!(r.code, 421, "{r:?}");
    within(began.elapsed(), 400, 3000);
    drop(c);
    trickler.join().unwrap();
}

#[test]
fn max_mailboxes() {
    let server = start(Config::for_tests().max_mailboxes(1));
    let mut c = client(&server);
    assert_eq!(c.send_mail("a@b.test", &["first@localhost"], "x").code, 250);
    c.expect("MAIL FROM:<a@b.test>", 250);
    let r = c.cmd("RCPT TO:<second@localhost>");
    assert_eq!(r.code, 452, "{r:?}");
    c.expect("RCPT TO:<first@localhost>", 250);
}

#[test]
fn max_inflight_bytes() {
    let server = start(Config::for_tests().max_inflight_bytes(64 * 1024));
    let mut c = client(&server);
    begin_data(&mut c, "jones@localhost");
    c.send(&support::dot_stuff(&"y".repeat(70).repeat(2000)));
    let r = c.read_reply();
    assert_eq!(
        (r.code, r.lines[0].starts_with("4.3.1")),
        (452, true),
        "{r:?}"
    );
    assert!(server.messages("jones").unwrap().is_empty());
}

#[test]
fn bare_newline() {
    for (policy, code) in [(BareNewline::Reject, 550), (BareNewline::Normalize, 250)] {
        let server = start(Config::for_tests().bare_newline(policy));
        let mut c = client(&server);
        begin_data(&mut c, "jones@localhost");
        c.send(b"Subject: bare\r\n\r\none\ntwo\r\n.\r\n");
        assert_eq!(c.read_reply().code, code, "{policy:?}");
    }
}

#[test]
fn new_is_the_default() {
    let (new, default) = (Config::new(), Config::default());
    assert_eq!(format!("{new:?}"), format!("{default:?}"));
    assert!(!new.temp_mail_dir);
    let tests = Config::for_tests();
    assert!(tests.temp_mail_dir && !tests.keep_mail_dir);
    assert_eq!(tests.listen, ["127.0.0.1:0".parse().unwrap()]);
}

#[test]
fn a_limit_of_zero_is_refused_at_start() {
    let zeros = [
        ("max_message_size", Config::for_tests().max_message_size(0)),
        ("max_errors", Config::for_tests().max_errors(0)),
        ("max_mailboxes", Config::for_tests().max_mailboxes(0)),
        ("max_per_peer", Config::for_tests().max_per_peer(0)),
        ("min_data_rate", Config::for_tests().min_data_rate(0)),
        ("recipient", Config::for_tests().max_recipients(0)),
    ];
    for (name, config) in zeros {
        match Server::start(config) {
            Err(mboxd::StartError::Config(why)) => assert!(why.contains(name), "{name}: {why}"),
            Err(e) => panic!("{name}: {e}"),
            Ok(_) => panic!("{name} 0 was taken"),
        }
    }
    // As high as a usize goes is a limit too (the descriptor estimate saturates, no overflow).
    drop(start(Config::for_tests().max_recipients(usize::MAX)));
    // One is a limit like any other: SIZE 1 is advertised.
    let server = start(Config::for_tests().max_message_size(1));
    let mut c = Client::connect(server.local_addr());
    assert_eq!(c.read_reply().code, 220);
    assert!(
        c.expect("EHLO client.test", 250)
            .lines
            .contains(&"SIZE 1".to_string())
    );
}
