//! Shutdown is bounded: a client inside a message that keeps sending one byte at a time cannot
//! hold a stopping server past `--shutdown-grace`, whether it is in DATA, in an accepted BDAT
//! chunk or in a refused chunk being discarded; nor can one that never reads its replies, nor a
//! newcomer waiting for a worker.

mod support;

use std::io::{ErrorKind, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use support::{Client, TestServer, signal, spawn_logged, wait_bounded};

const GRACE: Duration = Duration::from_secs(1);

/// Writes one byte every 100 ms until told to stop, the socket fails, or 30 s pass.
fn trickle(stream: &TcpStream) -> (Arc<AtomicBool>, thread::JoinHandle<()>) {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    let mut stream = stream.try_clone().unwrap();
    let handle = thread::spawn(move || {
        let until = Instant::now() + Duration::from_secs(30);
        while !flag.load(Ordering::SeqCst) && Instant::now() < until {
            if stream.write_all(b"x").is_err() {
                return;
            }
            thread::sleep(Duration::from_millis(100));
        }
    });
    (stop, handle)
}

/// Puts a client into a message by `setup`, trickles bytes, stops the server, and checks that the
/// client gets 421 4.3.2 and the stop returns after the grace but within it plus one second.
/// The last reply of `setup` must come once the session is inside the message, so the stop
/// cannot overtake it.
fn trickler_is_cut_at_the_grace(setup: &[(&str, u16)], then_send: &[u8]) {
    let server = TestServer::with(|c| {
        c.shutdown_grace = GRACE;
        c.max_message_size = 1000;
    });
    let mut c = server.client();
    for (line, code) in setup {
        if let Some(chunk) = line.strip_prefix("chunk ") {
            c.send(chunk.as_bytes());
            assert_eq!(c.read_reply().code, *code, "{line}");
        } else {
            c.expect(line, *code);
        }
    }
    c.send(then_send);
    let (stop, trickler) = trickle(&c.stream);
    let stopper = thread::spawn(move || {
        let mut server = server;
        let began = Instant::now();
        server.stop();
        (began.elapsed(), server)
    });
    let reply = c.read_reply();
    assert_eq!(reply.code, 421, "{reply:?}");
    assert_eq!(
        reply.text(),
        "4.3.2 Service shutting down; closing transmission channel"
    );
    let (took, server) = stopper.join().unwrap();
    stop.store(true, Ordering::SeqCst);
    trickler.join().unwrap();
    assert!(
        took >= GRACE - Duration::from_millis(100),
        "cut before the grace: {took:?}"
    );
    assert!(
        took < GRACE + Duration::from_secs(1),
        "shutdown took {took:?}"
    );
    assert!(server.mbox("jones").is_empty(), "a cut message was stored");
}

#[test]
fn a_trickle_inside_data_is_cut_at_the_grace() {
    trickler_is_cut_at_the_grace(
        &[
            ("EHLO x.test", 250),
            ("MAIL FROM:<a@b.test>", 250),
            ("RCPT TO:<jones@mx.test>", 250),
            ("DATA", 354),
        ],
        b"Subject: slow\r\n\r\n",
    );
}

#[test]
fn a_trickle_inside_an_accepted_bdat_chunk_is_cut_at_the_grace() {
    trickler_is_cut_at_the_grace(
        &[
            ("EHLO x.test", 250),
            ("MAIL FROM:<a@b.test>", 250),
            ("RCPT TO:<jones@mx.test>", 250),
            ("chunk BDAT 3\r\nabc", 250),
        ],
        b"BDAT 900 LAST\r\n",
    );
}

#[test]
fn a_trickle_inside_a_refused_bdat_chunk_is_cut_at_the_grace() {
    // Over --max-message-size (but not twice it): the chunk is refused, but its octets must
    // still be read (RFC 3030 §2).
    trickler_is_cut_at_the_grace(
        &[
            ("EHLO x.test", 250),
            ("MAIL FROM:<a@b.test>", 250),
            ("RCPT TO:<jones@mx.test>", 250),
            ("chunk BDAT 3\r\nabc", 250),
        ],
        b"BDAT 1500\r\n",
    );
}

/// A newcomer waiting for the one worker (busy with a message) under a long `queue_wait` gets
/// the shutdown 421 at once, and cannot hold the stop past the grace (it held it for the whole
/// `queue_wait`, 20 s here, before).
#[test]
fn a_newcomer_waiting_for_a_worker_cannot_hold_the_stop() {
    let server = TestServer::with(|c| {
        c.shutdown_grace = GRACE;
        c.workers = 1;
        c.queue_wait = Duration::from_secs(20);
    });
    let mut c = server.client();
    for (line, code) in [
        ("EHLO a.test", 250),
        ("MAIL FROM:<a@b.test>", 250),
        ("RCPT TO:<jones@mx.test>", 250),
        ("DATA", 354),
    ] {
        c.expect(line, code);
    }
    let (stop, trickler) = trickle(&c.stream);
    let mut waiting = Client::connect(server.addr);
    // Nothing signals that the dispatcher holds the newcomer; it takes it within microseconds.
    thread::sleep(Duration::from_millis(300));
    let stopper = thread::spawn(move || {
        let mut server = server;
        let began = Instant::now();
        server.stop();
        began.elapsed()
    });
    assert_eq!(
        waiting.read_reply().line(),
        "421 Service shutting down; closing transmission channel"
    );
    assert_eq!(
        c.read_reply().line(),
        "421 4.3.2 Service shutting down; closing transmission channel"
    );
    let took = stopper.join().unwrap();
    stop.store(true, Ordering::SeqCst);
    trickler.join().unwrap();
    assert!(
        took < GRACE + Duration::from_secs(1),
        "shutdown took {took:?}"
    );
}

#[test]
fn sigterm_with_a_trickling_client_exits_within_the_grace_plus_one_second() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, addrs, log) = spawn_logged(
        &[
            "--listen",
            "127.0.0.1:0",
            "--mail-dir",
            dir.path().to_str().unwrap(),
            "--shutdown-grace",
            "1",
        ],
        1,
    );
    let mut c = Client::connect(addrs[0]);
    assert_eq!(c.read_reply().code, 220);
    c.expect("EHLO cli.test", 250);
    c.expect("MAIL FROM:<a@b.test>", 250);
    c.expect("RCPT TO:<jones@localhost>", 250);
    c.expect("DATA", 354);
    let (stop, trickler) = trickle(&c.stream);
    let began = Instant::now();
    signal(&child, "TERM");
    let status = wait_bounded(&mut child, GRACE + Duration::from_secs(5));
    let took = began.elapsed();
    stop.store(true, Ordering::SeqCst);
    trickler.join().unwrap();
    assert_eq!(status.code(), Some(0));
    assert!(took < GRACE + Duration::from_secs(1), "exit took {took:?}");
    assert_eq!(c.read_reply().code, 421);
    let log = log.join().unwrap();
    assert!(log.contains("shutting down inside a message"), "{log}");
}

#[test]
fn a_session_stuck_writing_to_a_client_that_never_reads_cannot_hold_the_stop() {
    // The client, with a small receive buffer, pipelines one-octet BDAT chunks and reads
    // nothing: the replies fill the buffers and the worker blocks in a write, which shutting the
    // reading side does not wake. It waited out `--timeout` (20 s here), twice (the reply, then
    // the 421); the stop now cuts it half a second after the grace.
    let mut server = TestServer::with(|c| {
        c.shutdown_grace = GRACE;
        c.timeout = Duration::from_secs(20);
    });
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(&server.addr.into()).unwrap();
    let mut stream: TcpStream = socket.into();
    stream
        .set_write_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    stream
        .write_all(b"EHLO x.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<jones@mx.test>\r\n")
        .unwrap();
    let chunks = b"BDAT 1\r\nx".repeat(2000);
    let until = Instant::now() + Duration::from_secs(20);
    // Until the server stops reading, because its own writes are blocked.
    loop {
        match stream.write(&chunks) {
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => break,
            Err(e) => panic!("writing chunks: {e}"),
        }
        assert!(Instant::now() < until, "the server never stopped reading");
    }
    let began = Instant::now();
    server.stop();
    let took = began.elapsed();
    assert!(took < GRACE + Duration::from_secs(2), "{took:?}");
}

#[test]
fn a_message_waiting_for_a_locked_mailbox_at_the_stop_still_gets_its_250() {
    // The cut half a second after the grace must spare a session waiting for the writer: its
    // message is stored once the lock goes, and a client that saw no 250 would send it again.
    let mut server = TestServer::with(|c| {
        c.shutdown_grace = Duration::from_millis(200);
        c.lock_timeout = Duration::from_secs(5);
    });
    let lock = server.mail_dir().join("jones.lock");
    std::fs::write(&lock, b"").unwrap();
    let mut c = server.client();
    c.expect("EHLO x.test", 250);
    c.expect("MAIL FROM:<a@b.test>", 250);
    c.expect("RCPT TO:<jones@mx.test>", 250);
    c.expect("DATA", 354);
    c.send(b"Subject: late\r\n\r\nx\r\n.\r\n");
    // Another program holds the lock until well after the cut (at the grace plus 0.5 s).
    let holder = thread::spawn(move || {
        thread::sleep(Duration::from_millis(1500));
        std::fs::remove_file(lock).unwrap();
    });
    server.stop();
    holder.join().unwrap();
    assert_eq!(c.read_reply().code, 250);
    assert_eq!(c.read_reply().code, 421);
    assert!(server.mbox_text("jones").contains("Subject: late\n"));
}

#[test]
fn transactions_pipelined_behind_a_message_are_not_begun_after_the_stop() {
    // Thirty one-chunk messages to a locked mailbox in one write: each waits for the writer (up
    // to the lock timeout, then 450) before the next is read. Once the stop has begun, the
    // message in hand is the last: the stop took one lock timeout per message left.
    let mut server = TestServer::with(|c| {
        c.shutdown_grace = Duration::from_millis(200);
        c.lock_timeout = Duration::from_secs(1);
    });
    std::fs::write(server.mail_dir().join("jones.lock"), b"").unwrap();
    let mut c = server.client();
    c.expect("EHLO x.test", 250);
    let one = b"MAIL FROM:<a@b.test>\r\nRCPT TO:<jones@mx.test>\r\nBDAT 1 LAST\r\nx";
    c.send(&one.repeat(30));
    // The first message is with the writer once its MAIL is answered.
    assert_eq!(c.read_reply().code, 250);
    let began = Instant::now();
    server.stop();
    let took = began.elapsed();
    // One lock timeout (the message in hand), not two.
    assert!(took < Duration::from_millis(1900), "{took:?}");
    // Only the first message was handed to the writer (one 450); the answer to each command
    // read before the 421, and then the end.
    let codes = codes_until_421(&mut c, 200);
    assert_eq!(codes.iter().filter(|&&c| c == 450).count(), 1, "{codes:?}");
}

#[test]
fn a_transaction_read_before_the_stop_but_reached_after_it_is_not_begun() {
    // A `--fail` delay on MAIL holds the session once it has written what it answered before
    // (the NOOP's 250), so the client knows the session is in the pause when it stops the
    // server. The transaction behind the NOOP was read before the stop, in the same read, but
    // never announced to the client (no chunk reply): it gets 421 and nothing is stored.
    let mut server = TestServer::with(|c| {
        let config = std::mem::take(c).fail("mail=delay:5s".parse().unwrap());
        *c = config;
    });
    let mut c = server.client();
    c.expect("EHLO x.test", 250);
    c.send(b"NOOP\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<jones@mx.test>\r\nBDAT 1 LAST\r\nx");
    assert_eq!(c.read_reply().code, 250);
    let began = Instant::now();
    server.stop();
    assert!(
        began.elapsed() < Duration::from_secs(4),
        "the pause was not cut short"
    );
    let codes = codes_until_421(&mut c, 4);
    assert_eq!(codes, [250, 250, 421], "MAIL's and RCPT's, then the stop's");
    assert_eq!(server.mbox_text("jones"), "");
}

/// The codes of the replies up to the 421 that ends the session (at most `most` of them), which
/// must then be closed.
fn codes_until_421(c: &mut Client, most: usize) -> Vec<u16> {
    let mut codes = Vec::new();
    loop {
        let r = c.read_reply();
        codes.push(r.code);
        if r.code == 421 {
            break;
        }
        assert!(codes.len() < most, "{codes:?}");
    }
    c.expect_closed();
    codes
}
