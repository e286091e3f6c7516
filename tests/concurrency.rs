//! Many clients at once: every message intact, none interleaved with another, none lost, through
//! the one writer thread.

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
    let mbox = server.mbox_text("jones");
    let entries = mbox_entries(&mbox);
    assert_eq!(entries.len(), CLIENTS * MESSAGES);
    let mut seen = std::collections::HashSet::new();
    for entry in &entries {
        let id = entry
            .lines()
            .find_map(|l| l.strip_prefix("Subject: "))
            .expect("a Subject line");
        assert!(seen.insert(id.to_string()), "{id} twice");
        let lines: Vec<&str> = entry.lines().collect();
        assert!(
            lines[0].starts_with(&format!("From {id}@clients.test ")),
            "{}",
            lines[0]
        );
        assert_eq!(lines[1], format!("Return-Path: <{id}@clients.test>"));
        assert!(lines[2].starts_with("Received: from client"));
        assert!(entry.ends_with(&stored(id)), "{id} is not intact:\n{entry}");
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
