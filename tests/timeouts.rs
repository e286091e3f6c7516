//! Timeouts over a real socket: the idle timeout between commands and the longer data timeout
//! inside a message, which the connection waits out across its shorter socket timeout; and no
//! client clock runs while the client waits for the server's answer to its last message, or
//! during a `--fail` delay; and a reply is written within the timeout in total.

mod support;

use std::io::Write;
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

use support::{Client, TestServer};

/// A client of `server` told to send a message to jones (its 354 read).
fn in_message(server: &TestServer) -> Client {
    let mut c = server.client();
    c.expect("EHLO x.test", 250);
    c.expect("MAIL FROM:<a@b.test>", 250);
    c.expect("RCPT TO:<jones@mx.test>", 250);
    c.expect("DATA", 354);
    c
}

#[test]
fn inside_a_message_the_longer_data_timeout_applies() {
    let server = TestServer::with(|c| {
        c.timeout = Duration::from_millis(300);
        c.data_timeout = Duration::from_millis(1500);
    });
    let mut c = in_message(&server);
    c.send(b"Subject: patient\r\n\r\n");
    // Longer than the idle timeout, shorter than the data timeout: the session waits.
    thread::sleep(Duration::from_millis(800));
    c.send(b"still here\r\n.\r\n");
    assert_eq!(c.read_reply().code, 250);
    // Between commands the idle timeout is back.
    let began = Instant::now();
    let r = c.read_reply();
    assert_eq!(r.code, 421, "{r:?}");
    assert_eq!(
        r.text(),
        "4.4.2 Timeout waiting for client input; closing connection"
    );
    assert!(
        began.elapsed() < Duration::from_millis(1200),
        "{:?}",
        began.elapsed()
    );
    // And past the data timeout inside a message, 421 too.
    let mut c = in_message(&server);
    let began = Instant::now();
    assert_eq!(c.read_reply().code, 421);
    let waited = began.elapsed();
    assert!(
        waited >= Duration::from_millis(1400) && waited < Duration::from_millis(2500),
        "{waited:?}"
    );
    assert!(server.mbox_text("jones").ends_with("still here\n\n"));
}

/// A server whose client clocks (command, data, rate grace) are 0.3 s, with jones's mailbox
/// locked by another program, so the writer waits a second for it before its 450.
fn jones_locked_for_a_second() -> TestServer {
    let server = TestServer::with(|c| {
        c.timeout = Duration::from_millis(300);
        c.data_timeout = Duration::from_millis(300);
        c.min_data_rate_grace = Duration::from_millis(300);
        c.lock_timeout = Duration::from_millis(1000);
    });
    std::fs::write(server.mail_dir().join("jones.lock"), b"").unwrap();
    server
}

/// Sends, a moment after its 354, the message `c` was told to send, and checks it is delivered
/// to brown.
fn second_message_is_delivered(server: &TestServer, c: &mut Client) {
    thread::sleep(Duration::from_millis(150));
    c.send(b"Subject: second\r\n\r\ny\r\n.\r\n");
    let r = c.read_reply();
    assert_eq!(r.code, 250, "{r:?}");
    assert!(server.mbox_text("brown").ends_with("y\n\n"));
}

#[test]
fn time_spent_waiting_for_the_servers_answer_is_not_the_clients() {
    // The writer waits a second for a mailbox another program has locked; the client's command
    // and data timeouts are shorter. Both used to run during that wait: the client waiting for
    // its 450 got a 421 right behind it, and a message begun after it was cut at once.
    let server = jones_locked_for_a_second();
    let mut c = server.client();
    c.expect("EHLO x.test", 250);
    // Waiting for the answer, sending nothing.
    assert_eq!(
        c.send_mail("a@b.test", &["jones@mx.test"], "locked").code,
        450
    );
    c.expect("NOOP", 250);
    // The next transaction pipelined behind the message: its 354 comes after the 450, and the
    // message it asks for may then take the data timeout.
    c.send(
        b"MAIL FROM:<a@b.test>\r\nRCPT TO:<jones@mx.test>\r\nDATA\r\nSubject: first\r\n\r\nx\r\n.\r\n\
          MAIL FROM:<a@b.test>\r\nRCPT TO:<brown@mx.test>\r\nDATA\r\n",
    );
    for code in [250, 250, 354, 450, 250, 250, 354] {
        assert_eq!(c.read_reply().code, code);
    }
    second_message_is_delivered(&server, &mut c);
}

/// A message pipelined right behind the end of one that took several reads gets clocks of its
/// own, started once its 354 is written: it kept the first message's, so the writer's wait on a
/// locked mailbox was charged to it and it was cut right behind its 354.
#[test]
fn a_message_pipelined_behind_one_of_several_reads_gets_clocks_of_its_own() {
    let server = jones_locked_for_a_second();
    let mut c = in_message(&server);
    // The message in two reads (the pause lets the server read the first part alone; no signal
    // says it has), the second with the next transaction's commands behind its end.
    c.send(b"Subject: first\r\n\r\n");
    thread::sleep(Duration::from_millis(100));
    c.send(b"x\r\n.\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<brown@mx.test>\r\nDATA\r\n");
    for code in [450, 250, 250, 354] {
        assert_eq!(c.read_reply().code, code);
    }
    second_message_is_delivered(&server, &mut c);
}

/// A reply is written within `--timeout` in total, not per `write(2)`: a client that pipelines
/// commands and never reads, while it keeps sending a little, held its worker for three
/// timeouts and more, as each write that sent part of a reply group started the next with a
/// whole timeout. The session now ends about one timeout after its writes block.
#[test]
fn a_client_that_never_reads_its_replies_is_closed_within_the_timeout() {
    let timeout = Duration::from_secs(2);
    let server = TestServer::with(|c| c.timeout = timeout);
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(2048).unwrap();
    socket.connect(&server.addr.into()).unwrap();
    let mut stream: TcpStream = socket.into();
    stream.set_nonblocking(true).unwrap();
    let noops = b"NOOP\r\n".repeat(2000);
    let began = Instant::now();
    // Pipelined commands until the server stops reading, then a little more now and then, as
    // a client that keeps sending would; never a read.
    while stream.write(&noops).is_ok() {}
    let until = began + Duration::from_secs(20);
    while server.live_connections() > 0 {
        assert!(Instant::now() < until, "the session is still open");
        let _ = stream.write(&noops[..600]);
        thread::sleep(Duration::from_millis(100));
    }
    let took = began.elapsed();
    assert!(
        took < timeout * 2,
        "the session held its worker for {took:?}"
    );
}

/// An over-long command line is one command for the clock: it must end within `--timeout` of
/// when the server began waiting for it. Its `500` came when 512 octets had, and the rest of the
/// line, being discarded, got a whole timeout of its own (twice the timeout for one line).
#[test]
fn an_over_long_line_must_end_within_one_timeout() {
    let server = TestServer::with(|c| c.timeout = Duration::from_secs(3));
    let mut c = server.client();
    c.expect("EHLO x.test", 250);
    let mut stream = c.stream.try_clone().unwrap();
    let began = Instant::now();
    // 100 octets every 300 ms, never a line end: 512 octets (and the 500) about 1.5 s in.
    let dribbler = thread::spawn(move || {
        for _ in 0..30 {
            if stream.write_all(&[b'x'; 100]).is_err() {
                return;
            }
            thread::sleep(Duration::from_millis(300));
        }
    });
    assert_eq!(c.read_reply().code, 500);
    let r = c.read_reply();
    let took = began.elapsed();
    assert_eq!(
        r.line(),
        "421 4.4.2 Timeout waiting for client input; closing connection"
    );
    assert!(
        took >= Duration::from_millis(2700) && took < Duration::from_millis(4000),
        "{took:?}"
    );
    drop(c);
    dribbler.join().unwrap();
}

/// A server whose messages must keep 1 000 octets a second, with 0.8 s of grace, and whose
/// reads inside a message may wait 1.2 s.
fn rate_limited() -> TestServer {
    TestServer::with(|c| {
        c.min_data_rate = 1000;
        c.min_data_rate_grace = Duration::from_millis(800);
        c.data_timeout = Duration::from_millis(1200);
    })
}

/// The octets of a message sent at once buy no more than the data timeout: 200 000 octets
/// bought 200 s at 1 000 a second, in which to trickle the rest one octet a read, holding the
/// worker and the in-flight budget.
#[test]
fn octets_sent_at_once_buy_no_more_than_the_data_timeout() {
    let server = rate_limited();
    let mut c = in_message(&server);
    c.send(("x".repeat(98) + "\r\n").repeat(2000).as_bytes());
    let began = Instant::now();
    c.stream
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut reply = Vec::new();
    // One octet each 100 ms (a hundredth of what the rate asks) until the server answers.
    while reply.is_empty() && began.elapsed() < Duration::from_secs(5) {
        let _ = c.stream.write_all(b"x");
        let mut buf = [0; 256];
        if let Ok(n) = std::io::Read::read(&mut c.stream, &mut buf) {
            reply.extend_from_slice(&buf[..n]);
        }
    }
    let took = began.elapsed();
    assert_eq!(
        String::from_utf8_lossy(&reply),
        "421 4.4.2 Message data arriving too slowly; closing connection\r\n"
    );
    assert!(
        took >= Duration::from_millis(1100) && took < Duration::from_millis(2000),
        "{took:?}"
    );
    assert!(server.mbox("jones").is_empty());
}

/// A `--fail` delay is the server's time: a delay at the end of each message used to be taken
/// out of the message's time, and what was left (nothing) carried to the next, which was cut
/// at once.
#[test]
fn a_fail_delay_is_not_the_clients_time() {
    let server = TestServer::with(|c| {
        c.min_data_rate_grace = Duration::from_millis(300);
        c.fail = vec!["data-end:*=delay:500ms".parse().unwrap()];
    });
    let mut c = server.client();
    c.expect("EHLO x.test", 250);
    for n in 0..3 {
        let r = c.send_mail(
            "a@b.test",
            &["jones@mx.test"],
            &format!("Subject: m{n}\r\n\r\nx"),
        );
        assert_eq!(r.code, 250, "message {n}: {r:?}");
    }
}

/// A `connect` delay is the server's time too: the wait for the first command was counted from
/// the connection, so a greeting delayed past the timeout was followed at once by `421`.
#[test]
fn a_greeting_delay_is_not_the_clients_time() {
    let server = TestServer::with(|c| {
        c.timeout = Duration::from_millis(500);
        c.fail = vec!["connect=delay:800ms".parse().unwrap()];
    });
    let mut c = server.client();
    c.expect("EHLO x.test", 250);
}

/// Nor is it idle time for eviction, which spares a session that has waited under a second:
/// a session greeted after a 1.5 s delay was closed at once for the next newcomer.
#[test]
fn a_greeting_delay_is_not_idle_time() {
    let server = TestServer::with(|c| {
        c.workers = 1;
        c.queue_wait = Duration::from_secs(5);
        c.fail = vec!["connect=delay:1500ms".parse().unwrap()];
    });
    let mut first = server.client();
    let arrived = Instant::now();
    let _newcomer = Client::connect(server.addr);
    let r = first.read_reply();
    assert_eq!(r.code, 421, "{r:?}");
    assert!(
        arrived.elapsed() >= Duration::from_millis(900),
        "closed {:?} after the greeting",
        arrived.elapsed()
    );
}

/// But only the delay's own time: a client whose every MAIL was delayed 10 ms, and which sent
/// MAIL and RSET every 0.3 s, was never idle (each delay reset its idle time), so it kept its
/// worker from every newcomer.
#[test]
fn a_short_delay_does_not_make_a_session_busy() {
    let server = TestServer::with(|c| {
        c.workers = 1;
        c.queue_wait = Duration::from_secs(5);
        c.fail = vec!["mail=delay:10ms".parse().unwrap()];
    });
    let mut first = server.client();
    first.expect("EHLO x.test", 250);
    let cycling = thread::spawn(move || {
        let began = Instant::now();
        while began.elapsed() < Duration::from_secs(8) {
            for command in ["MAIL FROM:<a@b.test>", "RSET"] {
                let r = first.cmd(command);
                if r.code == 421 {
                    return r;
                }
                assert_eq!(r.code, 250, "{r:?}");
            }
            thread::sleep(Duration::from_millis(300));
        }
        panic!("never closed for the newcomer");
    });
    // The time passing is what is tested: idle (but for the delays) for over a second.
    thread::sleep(Duration::from_millis(1200));
    let arrived = Instant::now();
    let mut newcomer = Client::connect(server.addr);
    let r = newcomer.read_reply();
    assert_eq!(r.code, 220, "{r:?}");
    assert!(
        arrived.elapsed() < Duration::from_secs(2),
        "{:?}",
        arrived.elapsed()
    );
    assert_eq!(cycling.join().unwrap().code, 421);
}

/// What a message leaves of its time is carried to the session's next: a client that ended a
/// nearly empty message and began the next every 0.5 s, each within a fresh grace, kept its
/// worker for ever at a few octets a second.
#[test]
fn a_new_message_does_not_renew_the_grace() {
    let server = rate_limited();
    let mut c = in_message(&server);
    let began = Instant::now();
    let cut = 'cycles: loop {
        assert!(began.elapsed() < Duration::from_secs(5), "never cut");
        thread::sleep(Duration::from_millis(500));
        c.send(b".\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<jones@mx.test>\r\nDATA\r\n");
        for code in [250, 250, 250, 354] {
            let r = c.read_reply();
            if r.code != code {
                break 'cycles r;
            }
        }
    };
    assert_eq!(
        cut.line(),
        "421 4.4.2 Message data arriving too slowly; closing connection"
    );
    // The first message had 0.8 s and used 0.5; the second has what was left.
    assert!(
        began.elapsed() < Duration::from_millis(1500),
        "{:?}",
        began.elapsed()
    );
    assert_eq!(support::mbox_entries(&server.mbox_text("jones")).len(), 1);
}
