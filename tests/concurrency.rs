//! Many clients at once: every message intact, none interleaved with another, none lost, through
//! the one writer thread; and through two servers of one test process sharing a mail directory.

mod support;

use std::thread;

use support::{Client, TestServer, mbox_entries};

const CLIENTS: usize = 16;
const MESSAGES: usize = 25;

/// The message a client sends: an id, a `From ` line and a leading dot to exercise quoting and
/// dot-stuffing, and lines long enough that an interleaved write would show.
fn message(id: &str) -> String {
    let filler = format!("{id} ").repeat(40);
    format!(
        "Subject: {id}\n\nFrom the start of {id}\n.leading dot of {id}\n{filler}\nlast line of {id}"
    )
}

/// The same message as the mbox must hold it.
fn stored(id: &str) -> String {
    let filler = format!("{id} ").repeat(40);
    format!(
        "Subject: {id}\n\n>From the start of {id}\n.leading dot of {id}\n{filler}\nlast line of {id}\n\n"
    )
}

/// Each entry's id (its Subject) with the entry, after checking that no id comes twice and that
/// every entry holds its message intact.
fn each_once_and_intact(entries: &[String]) -> Vec<(&str, &str)> {
    let mut seen = std::collections::HashSet::new();
    entries
        .iter()
        .map(|entry| {
            let id = entry
                .lines()
                .find_map(|l| l.strip_prefix("Subject: "))
                .expect("a Subject line");
            assert!(seen.insert(id), "{id} twice");
            assert!(entry.ends_with(&stored(id)), "{id} is not intact:\n{entry}");
            (id, entry.as_str())
        })
        .collect()
}

#[test]
fn sixteen_clients_times_twenty_five_messages_into_one_mbox() {
    let server = TestServer::with(|c| c.workers = CLIENTS);
    let addr = server.addr;
    let clients: Vec<_> = (0..CLIENTS)
        .map(|n| {
            thread::spawn(move || {
                let mut c = Client::connect(addr);
                assert_eq!(c.read_reply().code, 220);
                c.expect(&format!("EHLO client{n}.test"), 250);
                for m in 0..MESSAGES {
                    let id = format!("c{n}m{m}");
                    let r = c.send_mail(
                        &format!("{id}@clients.test"),
                        &["jones@mx.test"],
                        &message(&id),
                    );
                    assert_eq!(r.code, 250, "{id}: {r:?}");
                }
                c.expect("QUIT", 221);
            })
        })
        .collect();
    for c in clients {
        c.join().expect("client thread");
    }
    let entries = mbox_entries(&server.mbox_text("jones"));
    assert_eq!(entries.len(), CLIENTS * MESSAGES);
    for (id, entry) in each_once_and_intact(&entries) {
        let lines: Vec<&str> = entry.lines().collect();
        assert!(
            lines[0].starts_with(&format!("From {id}@clients.test ")),
            "{}",
            lines[0]
        );
        assert_eq!(lines[1], format!("Return-Path: <{id}@clients.test>"));
        assert!(lines[2].starts_with("Received: from client"));
    }
}

#[test]
fn clients_for_different_mailboxes_are_all_delivered() {
    let server = TestServer::start();
    let addr = server.addr;
    let clients: Vec<_> = (0..8)
        .map(|n| {
            thread::spawn(move || {
                let mut c = Client::connect(addr);
                assert_eq!(c.read_reply().code, 220);
                c.expect("EHLO many.test", 250);
                for m in 0..10 {
                    let id = format!("u{n}m{m}");
                    let to = [format!("user{n}@mx.test"), "all@mx.test".to_string()];
                    let to: Vec<&str> = to.iter().map(String::as_str).collect();
                    assert_eq!(c.send_mail("a@b.test", &to, &message(&id)).code, 250);
                }
            })
        })
        .collect();
    for c in clients {
        c.join().expect("client thread");
    }
    for n in 0..8 {
        assert_eq!(
            mbox_entries(&server.mbox_text(&format!("user{n}"))).len(),
            10
        );
    }
    assert_eq!(mbox_entries(&server.mbox_text("all")).len(), 80);
}

#[test]
fn two_servers_of_one_process_on_one_mail_directory_exclude_each_other() {
    // A test suite's servers are threads of one process. Their writers took the same private
    // dotlock name, judged each other's lock "left by this process" and broke it, and a classic
    // fcntl lock does not exclude within a process: some messages got 451, and one was stored
    // with two extra lines. Each writer now has its own number and takes an OFD lock.
    let dir = tempfile::tempdir().unwrap();
    let start = || mboxd::Server::start(mboxd::Config::for_tests().mail_dir(dir.path())).unwrap();
    let servers = [start(), start()];
    let addrs: Vec<_> = servers.iter().map(mboxd::Server::local_addr).collect();
    thread::scope(|scope| {
        for (s, addr) in addrs.iter().enumerate() {
            for n in 0..4 {
                let addr = *addr;
                scope.spawn(move || {
                    let mut c = Client::connect(addr);
                    assert_eq!(c.read_reply().code, 220);
                    c.expect("EHLO twin.test", 250);
                    for m in 0..25 {
                        let id = format!("s{s}c{n}m{m}");
                        let from = format!("{id}@clients.test");
                        let r = c.send_mail(&from, &["shared@localhost"], &message(&id));
                        assert_eq!(r.code, 250, "{id}: {r:?}");
                    }
                });
            }
        }
        // Readers in the same process, as a test's assertions are.
        for server in &servers {
            scope.spawn(move || {
                for _ in 0..50 {
                    server.messages("shared").unwrap();
                }
            });
        }
    });
    let entries = mbox_entries(&std::fs::read_to_string(dir.path().join("shared")).unwrap());
    assert_eq!(entries.len(), 200);
    each_once_and_intact(&entries);
    // No lock file is left.
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|name| name != "shared")
        .collect();
    assert!(left.is_empty(), "{left:?}");
}
