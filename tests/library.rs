//! The library as a test suite uses it: one call for a server in a temporary directory that
//! goes away with it, reading the mail back through the public mbox reader, and waiting for
//! mail without polling.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::thread;
use std::time::{Duration, Instant};

use mboxd::mbox::Mailbox;
use mboxd::{Config, Server, WaitError};
use support::Client;

const WAIT: Duration = Duration::from_secs(10);

/// A client that has read the greeting and said EHLO.
fn client(server: &Server) -> Client {
    let mut c = Client::connect(server.local_addr());
    assert_eq!(c.read_reply().code, 220);
    c.expect("EHLO client.test", 250);
    c
}

fn send(server: &Server, from: &str, to: &[&str], message: &str) {
    let mut c = client(server);
    let r = c.send_mail(from, to, message);
    assert_eq!(r.code, 250, "{r:?}");
    c.expect("QUIT", 221);
}

#[test]
fn the_temporary_mail_dir_is_private_and_removed_on_drop_and_on_shutdown() {
    let server = Server::for_tests().unwrap();
    let dir = server.mail_dir().to_path_buf();
    assert!(dir.starts_with(std::env::temp_dir()), "{dir:?}");
    let name = dir.file_name().unwrap().to_str().unwrap().to_string();
    assert!(
        name.starts_with(&format!("mboxd-{}-", std::process::id())),
        "{name}"
    );
    let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
    assert_eq!(server.local_addr().ip().to_string(), "127.0.0.1");
    assert_ne!(server.local_addr().port(), 0);
    send(
        &server,
        "a@b.test",
        &["jones@localhost"],
        "Subject: x\r\n\r\nhi\r\n",
    );
    assert!(dir.join("jones").is_file());
    drop(server);
    assert!(!dir.exists(), "{dir:?} is still there after drop");

    // Two servers at once get two directories; shutdown removes one too.
    let (one, two) = (Server::for_tests().unwrap(), Server::for_tests().unwrap());
    assert_ne!(one.mail_dir(), two.mail_dir());
    let dir = one.mail_dir().to_path_buf();
    one.shutdown();
    assert!(!dir.exists());
    assert!(two.mail_dir().is_dir());
}

#[test]
fn a_kept_or_chosen_mail_dir_stays() {
    let server = Server::start(Config::for_tests().keep_mail_dir()).unwrap();
    let kept = server.mail_dir().to_path_buf();
    send(
        &server,
        "a@b.test",
        &["jones@localhost"],
        "Subject: kept\r\n\r\nhi\r\n",
    );
    drop(server);
    let mailbox = Mailbox::open(kept.join("jones")).unwrap();
    assert_eq!(mailbox.messages()[0].subject(), Some("kept"));
    std::fs::remove_dir_all(&kept).unwrap();

    let chosen = tempfile::tempdir().unwrap();
    let server = Server::start(Config::for_tests().mail_dir(chosen.path().join("mail"))).unwrap();
    assert_eq!(server.mail_dir(), chosen.path().join("mail"));
    drop(server);
    assert!(chosen.path().join("mail").is_dir());
}

#[test]
fn wait_for_returns_as_soon_as_the_mail_is_there() {
    let server = Server::for_tests().unwrap();
    let addr = server.local_addr();
    let sender = thread::spawn(move || {
        thread::sleep(Duration::from_millis(300));
        let mut c = Client::connect(addr);
        assert_eq!(c.read_reply().code, 220);
        c.expect("HELO app.test", 250);
        for n in 1..=2 {
            let message = format!("Subject: background {n}\r\n\r\nhi\r\n");
            assert_eq!(
                c.send_mail("app@b.test", &["Jones@localhost"], &message)
                    .code,
                250
            );
        }
        Instant::now()
    });
    let mail = server
        .wait_for("jones", 2, Duration::from_secs(60))
        .unwrap();
    let returned = Instant::now();
    let acknowledged = sender.join().unwrap();
    assert_eq!(mail.len(), 2);
    assert_eq!(mail[1].subject(), Some("background 2"));
    // Woken by the commit (the second 250 follows it), not by a timer: within moments of the
    // 250, if not before the client read it (100 ms allows a loaded machine's scheduling, and
    // would catch a poll of that period or longer).
    let late = returned.saturating_duration_since(acknowledged);
    assert!(late < Duration::from_millis(100), "{late:?} after the 250");
    // Already there: at once.
    let began = Instant::now();
    assert_eq!(
        server.wait_for("JONES@localhost", 1, WAIT).unwrap().len(),
        2
    );
    assert!(began.elapsed() < Duration::from_secs(1));
}

#[test]
fn wait_for_times_out_with_what_arrived() {
    let server = Server::for_tests().unwrap();
    send(
        &server,
        "a@b.test",
        &["jones@localhost"],
        "Subject: the only one\r\n\r\nhi\r\n",
    );
    let began = Instant::now();
    let err = server
        .wait_for("jones", 3, Duration::from_millis(400))
        .unwrap_err();
    let waited = began.elapsed();
    assert!(waited >= Duration::from_millis(400), "{waited:?}");
    assert!(waited < Duration::from_secs(5), "{waited:?}");
    let text = err.to_string();
    assert!(
        text.contains("3 message(s) for \"jones\"; 1 arrived: \"the only one\""),
        "{text}"
    );
    // What `?` in a test returning Result and `unwrap()` print: the same text, no octets.
    assert_eq!(format!("{err:?}"), text);
    match err {
        WaitError::Timeout {
            wanted, arrived, ..
        } => {
            assert_eq!(wanted, 3);
            assert_eq!(arrived.len(), 1);
            let debug = format!("{:?}", arrived[0]);
            assert!(
                debug.starts_with("Message { from_line: \"From a@b.test "),
                "{debug}"
            );
            assert!(
                debug.contains("Subject: the only one\\n\\nhi\\n\" }"),
                "{debug}"
            );
        }
        other => panic!("{other:?}"),
    }
    // Many, or a long subject: the first ten subjects, each cut to 100 characters (a timed-out
    // wait for 10 000 messages had printed every subject).
    let long = "s".repeat(300);
    for n in 0..11 {
        let subject = if n == 0 {
            long.clone()
        } else {
            format!("m{n}")
        };
        let message = format!("Subject: {subject}\r\n\r\nhi\r\n");
        send(&server, "a@b.test", &["many@localhost"], &message);
    }
    let text = server
        .wait_for("many", 12, Duration::from_millis(50))
        .unwrap_err()
        .to_string();
    let cut = format!("11 arrived: \"{}\"…, \"m1\"", &long[..100]);
    assert!(text.contains(&cut), "{text}");
    assert!(text.ends_with(", \"m9\", and 1 more"), "{text}");
    // Nothing at all, and a name that cannot be a mailbox.
    let err = server
        .wait_for("nobody", 1, Duration::from_millis(50))
        .unwrap_err();
    assert!(err.to_string().contains("0 arrived"), "{err}");
    assert!(matches!(
        server.wait_for("../x", 1, Duration::ZERO),
        Err(WaitError::Read(_))
    ));
    assert!(server.messages("nobody").unwrap().is_empty());
    // No time limit at all, and the count is there already.
    assert!(
        server
            .wait_for("nobody", 0, Duration::MAX)
            .unwrap()
            .is_empty()
    );
}

#[test]
fn from_lines_come_back_byte_for_byte() {
    let server = Server::for_tests().unwrap();
    let message = "Subject: quoting\r\n\r\nFrom the start\r\n>From once\r\n>>From twice\r\n\
                   From\r\n>From\r\n.leading dot\r\nFrom \r\n\r\nFrom after an empty line\r\n";
    send(&server, "a@b.test", &["jones@localhost"], message);
    send(
        &server,
        "a@b.test",
        &["jones@localhost"],
        "Subject: next\r\n\r\nFrom x\r\n",
    );
    let mail = server.messages("jones").unwrap();
    assert_eq!(mail.len(), 2);
    assert_eq!(mail[0].as_sent_crlf(), message.as_bytes());
    assert_eq!(mail[0].as_sent(), message.replace("\r\n", "\n").as_bytes());
    assert_eq!(mail[1].body(), b"From x\n");
    // The file itself holds them quoted.
    let file = std::fs::read_to_string(server.mail_dir().join("jones")).unwrap();
    assert!(
        file.contains("\n>From the start\n>>From once\n>>>From twice\n"),
        "{file}"
    );
}

#[test]
fn multi_recipient_8bit_folded_and_null_sender() {
    let server = Server::start(
        Config::for_tests()
            .user("jones")
            .unwrap()
            .user("smith")
            .unwrap(),
    )
    .unwrap();
    let message = "Subject: =?utf-8?q?caf=C3=A9?= and\r\n more\r\nX-Name: Jos\u{e9}\r\n\
                   \tM\u{fc}ller\r\n\r\nCaf\u{e9} cr\u{e8}me \u{2603}\r\n";
    let mut c = client(&server);
    c.expect("MAIL FROM:<a@b.test> BODY=8BITMIME", 250);
    for to in ["jones@localhost", "smith@localhost"] {
        c.expect(&format!("RCPT TO:<{to}>"), 250);
    }
    c.expect("DATA", 354);
    c.send(&support::dot_stuff(message));
    assert_eq!(c.read_reply().code, 250);
    c.expect("MAIL FROM:<>", 250);
    c.expect("RCPT TO:<smith@localhost>", 250);
    c.expect("DATA", 354);
    c.send(b"Subject: bounce\r\n\r\n\xff\xfe raw octets\r\n.\r\n");
    assert_eq!(c.read_reply().code, 250);
    for user in ["jones", "smith"] {
        let m = &server.messages(user).unwrap()[0];
        assert_eq!(m.sender(), Some("a@b.test"));
        assert_eq!(m.as_sent_crlf(), message.as_bytes());
        assert_eq!(m.subject(), Some("=?utf-8?q?caf=C3=A9?= and more"));
        assert_eq!(m.header("x-name"), Some("Jos\u{e9}\tM\u{fc}ller"));
        assert_eq!(m.body_text(), "Caf\u{e9} cr\u{e8}me \u{2603}\n");
        assert_eq!(m.header("Return-Path"), Some("<a@b.test>"));
        let received = m.header("Received").unwrap();
        assert!(
            received.contains(&format!("for <{user}@localhost>")),
            "{received}"
        );
    }
    // Any way a RCPT path may name the mailbox names it here too: `<...>` read a mailbox
    // named `<jones` (none), `"jones"` was no mailbox name, and a source route was part of one.
    for user in [
        "Jones",
        "<jones@localhost>",
        "\"jones\"@localhost",
        "<\"jones\">",
        "<\"jo\\nes\">",
        "<@relay.test,@b.test:jones@localhost>",
    ] {
        assert_eq!(server.messages(user).unwrap().len(), 1, "{user}");
    }
    let bounce = &server.messages("smith").unwrap()[1];
    assert_eq!(bounce.sender(), None);
    assert_eq!(bounce.header("Return-Path"), Some("<>"));
    assert_eq!(bounce.body(), b"\xff\xfe raw octets\n");
    // A sender really named MAILER-DAEMON, without a domain, is qualified as any is: neither
    // its `From ` line nor its sender is the null sender's.
    c.expect("MAIL FROM:<MAILER-DAEMON>", 250);
    c.expect("RCPT TO:<smith@localhost>", 250);
    c.expect("DATA", 354);
    c.send(b"Subject: daemon\r\n\r\nx\r\n.\r\n");
    assert_eq!(c.read_reply().code, 250);
    let daemon = &server.messages("smith").unwrap()[2];
    assert!(
        daemon
            .from_line()
            .starts_with("From MAILER-DAEMON@localhost ")
    );
    assert_eq!(daemon.sender(), Some("MAILER-DAEMON@localhost"));
}

#[test]
fn a_thousand_messages_in_one_file() {
    const SENDERS: usize = 4;
    const EACH: usize = 250;
    let server = Server::for_tests().unwrap();
    let addr = server.local_addr();
    let senders: Vec<_> = (0..SENDERS)
        .map(|s| {
            thread::spawn(move || {
                let mut c = Client::connect(addr);
                assert_eq!(c.read_reply().code, 220);
                c.expect("HELO app.test", 250);
                for n in 0..EACH {
                    let message = format!("Subject: {s}-{n}\r\n\r\nFrom {s}\r\n>From {n}\r\n");
                    assert_eq!(
                        c.send_mail("a@b.test", &["bulk@localhost"], &message).code,
                        250
                    );
                }
            })
        })
        .collect();
    let began = Instant::now();
    let mail = server
        .wait_for("bulk", SENDERS * EACH, Duration::from_secs(120))
        .unwrap();
    let took = began.elapsed();
    for s in senders {
        s.join().unwrap();
    }
    assert_eq!(mail.len(), SENDERS * EACH);
    let mut subjects: Vec<&str> = mail.iter().map(|m| m.subject().unwrap()).collect();
    subjects.sort_unstable();
    subjects.dedup();
    assert_eq!(subjects.len(), SENDERS * EACH);
    for m in &mail {
        let (s, n) = m.subject().unwrap().split_once('-').unwrap();
        assert_eq!(m.body_text(), format!("From {s}\n>From {n}\n"));
    }
    // The file parsed on its own says the same.
    let file = Mailbox::open(server.mail_dir().join("bulk")).unwrap();
    assert_eq!(file.messages(), &mail[..]);
    println!("1000 messages from {SENDERS} sessions delivered and read back in {took:?}");
}

#[test]
fn a_message_is_readable_as_soon_as_its_250_is() {
    let server = Server::for_tests().unwrap();
    let mut c = client(&server);
    for n in 1..=50 {
        let message = format!("Subject: {n}\r\n\r\nx\r\n");
        assert_eq!(
            c.send_mail("a@b.test", &["jones@localhost"], &message).code,
            250
        );
        let mail = server.messages("jones").unwrap();
        assert_eq!(mail.len(), n, "after the 250 of message {n}");
    }
}

/// A mailbox the writer has not opened is read whole, also through a symbolic link: its length
/// and its bytes are both taken from the link's target.
#[test]
fn a_mailbox_never_written_is_read_whole_through_a_link() {
    let server = Server::for_tests().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("elsewhere");
    let entry =
        |n: u32| format!("From x@y.test Sun Nov 22 07:33:49 2026\nSubject: {n}\n\nbody\n\n");
    std::fs::write(&target, (1..=3).map(entry).collect::<String>()).unwrap();
    std::os::unix::fs::symlink(&target, server.mail_dir().join("jones")).unwrap();
    let mail = server.messages("jones").unwrap();
    let subjects: Vec<_> = mail.iter().map(|m| m.subject()).collect();
    assert_eq!(subjects, [Some("1"), Some("2"), Some("3")]);
}

#[test]
fn servers_started_at_once_on_one_mail_dir_all_start() {
    // A suite's tests are threads of one process and may share a mail directory. Each start
    // writes and removes a probe file there; with one probe name per process, one start could
    // remove another's probe, which then failed to start with "No such file or directory".
    let dir = tempfile::tempdir().unwrap();
    for round in 0..20 {
        let barrier = std::sync::Barrier::new(8);
        thread::scope(|scope| {
            let starts: Vec<_> = (0..8)
                .map(|_| {
                    scope.spawn(|| {
                        barrier.wait();
                        Server::start(Config::for_tests().mail_dir(dir.path()))
                    })
                })
                .collect();
            for start in starts {
                let server = start.join().unwrap();
                assert!(server.is_ok(), "round {round}: {:?}", server.err());
            }
        });
    }
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn the_ready_file_goes_with_the_server_that_wrote_it() {
    let dir = tempfile::tempdir().unwrap();
    let ready = dir.path().join("ready");
    let start = || Server::start(Config::for_tests().ready_file(&ready)).unwrap();
    let first = start();
    let listed = |server: &Server| format!("{}\n", server.local_addr());
    assert_eq!(std::fs::read_to_string(&ready).unwrap(), listed(&first));
    // A second server with the same path replaces the file; the first one's stop leaves it.
    let second = start();
    assert_eq!(std::fs::read_to_string(&ready).unwrap(), listed(&second));
    drop(first);
    assert_eq!(std::fs::read_to_string(&ready).unwrap(), listed(&second));
    drop(second);
    assert!(!ready.exists(), "the ready file outlived its server");
}

#[test]
fn a_ready_file_in_the_mail_dir_is_refused() {
    // It was renamed over the mailbox of its name (the mail in it lost), or took that name's
    // mail; the path need not be spelled as the mail directory is.
    let dir = tempfile::tempdir().unwrap();
    let mail = dir.path().join("mail");
    std::fs::create_dir(&mail).unwrap();
    std::fs::write(
        mail.join("jones"),
        "From a@b Mon Jan  1 00:00:00 2024\n\nkeep\n\n",
    )
    .unwrap();
    for ready in [mail.join("jones"), dir.path().join("mail/./ready")] {
        let config = Config::for_tests().mail_dir(&mail).ready_file(&ready);
        let Err(e) = Server::start(config) else {
            panic!("started")
        };
        assert!(e.to_string().contains("in the mail directory"), "{e}");
    }
    assert_eq!(
        std::fs::read_to_string(mail.join("jones")).unwrap(),
        "From a@b Mon Jan  1 00:00:00 2024\n\nkeep\n\n"
    );
    assert!(!mail.join("ready").exists());
}

#[test]
fn servers_started_at_once_with_one_ready_file_all_start() {
    let dir = tempfile::tempdir().unwrap();
    let ready = dir.path().join("ready");
    for round in 0..30 {
        let gate = std::sync::Barrier::new(8);
        let started: Vec<_> = thread::scope(|s| {
            let starts: Vec<_> = (0..8)
                .map(|_| {
                    s.spawn(|| {
                        gate.wait();
                        Server::start(Config::for_tests().ready_file(&ready))
                    })
                })
                .collect();
            starts.into_iter().map(|t| t.join().unwrap()).collect()
        });
        for server in started {
            if let Err(e) = server {
                panic!("round {round}: {e}");
            }
        }
    }
}

#[test]
fn servers_started_together_on_one_mail_dir_give_distinct_message_ids() {
    // Two servers of one process on one directory, started in the same second (a pair that
    // straddles a second is started again): the id in each 250 is in the Received: of its
    // message, and the two differ though their start times are the same.
    for _ in 0..5 {
        let dir = tempfile::tempdir().unwrap();
        let servers: Vec<Server> = (0..2)
            .map(|_| Server::start(Config::for_tests().mail_dir(dir.path())).unwrap())
            .collect();
        let mut ids = Vec::new();
        for server in &servers {
            let mut c = client(server);
            let r = c.send_mail("a@b.test", &["jones@localhost"], "Subject: x\r\n\r\nx\r\n");
            let text = r.text();
            let id = text.strip_prefix("2.0.0 OK: delivered as ").unwrap();
            ids.push(id.to_string());
            c.expect("QUIT", 221);
        }
        let started = |id: &str| id.split('-').next().unwrap().to_string();
        if started(&ids[0]) != started(&ids[1]) {
            continue;
        }
        assert_ne!(ids[0], ids[1]);
        // The second server wrote last: what it reads goes to the end of its commit.
        let mail = servers[1].messages("jones").unwrap();
        assert_eq!(mail.len(), 2);
        for (m, id) in mail.iter().zip(&ids) {
            let received: Vec<&str> = m.header("received").unwrap().split_whitespace().collect();
            let at = received.iter().position(|&w| w == "id").unwrap();
            assert_eq!(received[at + 1], id, "{received:?}");
        }
        return;
    }
    panic!("five pairs of servers each straddled a second");
}
