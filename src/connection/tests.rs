//! Unit tests of a session's end over real sockets on 127.0.0.1: the 421 after a panic, the flag
//! that says whether its replies carry enhanced codes, and the shutdown's cut of a session
//! spared while it waited for the writer (which needs the session's own socket, to fill it).

use super::*;
use std::io::Read;
use std::net::TcpListener;

/// What a client reads when its session panicked: `ended` answers over the session's own
/// socket, with enhanced codes or not, before it is closed. The client has pipelined a
/// command the session never read, and closes its side only once it has read to the end:
/// closed at once, with that command unread, the socket would be reset.
fn answer_after_panic(enhanced: bool) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (server, _) = listener.accept().unwrap();
    client
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    client.write_all(b"NOOP\r\n").unwrap();
    // The session's thread: its socket is closed when it ends.
    let session = std::thread::spawn(move || {
        ended(&server, "conn 1 [test]", Err(Box::new("a bug")), enhanced);
    });
    let mut got = String::new();
    client.read_to_string(&mut got).unwrap();
    client.shutdown(std::net::Shutdown::Write).unwrap();
    session.join().unwrap();
    // The server's socket is closed: had it been reset, the error would be pending by now.
    assert!(
        client.take_error().unwrap().is_none(),
        "reset after {got:?}"
    );
    got
}

/// The one reply path a client cannot reach from outside: a session that panicked is
/// answered 421; after EHLO with its enhanced code, as every other reply (RFC 2034 §3).
#[test]
fn a_session_that_panicked_is_answered_421() {
    assert_eq!(
        answer_after_panic(false),
        "421 Internal error; closing transmission channel\r\n"
    );
    assert_eq!(
        answer_after_panic(true),
        "421 4.3.0 Internal error; closing transmission channel\r\n"
    );
}

/// The flag `ended` is given: the worker records in the session's flags, which outlive a
/// panic, whether the session has negotiated enhanced codes, before it answers.
#[test]
fn a_session_records_whether_its_replies_carry_enhanced_codes() {
    let server = crate::Server::start(crate::Config::for_tests()).unwrap();
    let flags = || -> Vec<bool> {
        let live = server.context().live();
        live.values()
            .map(|l| l.flags.enhanced.load(Ordering::Relaxed))
            .collect()
    };
    let mut c = TcpStream::connect(server.local_addr()).unwrap();
    c.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let mut r = std::io::BufReader::new(c.try_clone().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut r, &mut line).unwrap();
    assert!(line.starts_with("220 "), "{line}");
    assert_eq!(flags(), [false]);
    c.write_all(b"EHLO a.test\r\n").unwrap();
    loop {
        line.clear();
        std::io::BufRead::read_line(&mut r, &mut line).unwrap();
        assert!(line.starts_with("250"), "{line}");
        if line.starts_with("250 ") {
            break;
        }
    }
    assert_eq!(flags(), [true]);
    c.write_all(b"HELO a.test\r\n").unwrap();
    line.clear();
    std::io::BufRead::read_line(&mut r, &mut line).unwrap();
    assert!(line.starts_with("250 "), "{line}");
    assert_eq!(flags(), [false]);
}

/// A session spared by the shutdown cut because it waits for the writer (its mailbox locked by
/// another program) is cut in a later round once it has its answer: here the answer cannot be
/// written (the socket's send queue is full and its client reads nothing), and the worker's
/// blocking write used to hold the stop for the whole `--timeout` (20 s here).
#[test]
fn a_session_spared_for_its_answer_is_cut_once_it_has_it() {
    use std::sync::mpsc;
    use std::time::{Duration, Instant};
    let lock_held = Duration::from_millis(1500);
    let server = crate::Server::start(
        crate::Config::for_tests()
            .shutdown_grace(Duration::from_millis(200))
            .lock_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(20))
            .keep_mail_dir(),
    )
    .unwrap();
    let lock = server.mail_dir().join("jones.lock");
    std::fs::write(&lock, b"").unwrap();
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(&server.local_addr().into()).unwrap();
    let mut c: TcpStream = socket.into();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut r = std::io::BufReader::new(c.try_clone().unwrap());
    let mut expect = |send: &[u8], code: &str| {
        c.write_all(send).unwrap();
        let mut line = String::new();
        loop {
            line.clear();
            std::io::BufRead::read_line(&mut r, &mut line).unwrap();
            assert!(line.starts_with(code), "{line}");
            if line.as_bytes().get(3) == Some(&b' ') {
                break;
            }
        }
    };
    expect(b"", "220");
    expect(b"EHLO a.test\r\n", "250");
    expect(b"MAIL FROM:<a@b.test>\r\n", "250");
    expect(b"RCPT TO:<jones@localhost>\r\n", "250");
    expect(b"DATA\r\n", "354");
    // The session's socket, filled from here with octets its client will never read, so that
    // no reply can be written to it any more.
    let session = {
        let live = server.context().live();
        let [conn] = live.values().collect::<Vec<_>>()[..] else {
            panic!("one session expected")
        };
        (conn.stream.try_clone().unwrap(), Arc::clone(&conn.flags))
    };
    // A small fixed send buffer (no autotuning, which could grow it to take a blocked write).
    socket2::SockRef::from(&session.0)
        .set_send_buffer_size(4096)
        .unwrap();
    let until = Instant::now() + Duration::from_secs(40);
    // Filled until not one more octet fits, and kept so until the stop has ended: the client's
    // kernel, compacting what it holds, opens its window a little from time to time.
    let stuffing = Arc::new(AtomicBool::new(true));
    let stuffer = std::thread::spawn({
        let (stream, stuffing) = (session.0.try_clone().unwrap(), Arc::clone(&stuffing));
        move || {
            while stuffing.load(Ordering::SeqCst) && Instant::now() < until {
                if crate::os::send_now(&stream, &[b'x'; 64]).unwrap_or(0) == 0 {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
    });
    c.write_all(b"Subject: late\r\n\r\nx\r\n.\r\n").unwrap();
    // The message is with the writer, which waits for the lock.
    while !session.1.awaits_writer() {
        assert!(
            Instant::now() < until,
            "the message never reached the writer"
        );
        std::thread::yield_now();
    }
    let holder = std::thread::spawn(move || {
        std::thread::sleep(lock_held);
        std::fs::remove_file(lock).unwrap();
    });
    let mail_dir = server.mail_dir().to_path_buf();
    let (done, stopped) = mpsc::channel();
    let began = Instant::now();
    std::thread::spawn(move || {
        server.shutdown();
        let _ = done.send(began.elapsed());
    });
    let took = stopped
        .recv_timeout(Duration::from_secs(30))
        .expect("the stop never ended");
    stuffing.store(false, Ordering::SeqCst);
    stuffer.join().unwrap();
    holder.join().unwrap();
    assert!(took < lock_held + Duration::from_secs(2), "{took:?}");
    let stored = std::fs::read_to_string(mail_dir.join("jones")).unwrap_or_default();
    std::fs::remove_dir_all(&mail_dir).unwrap();
    assert!(stored.contains("Subject: late\n"), "{stored}");
}
