//! Availability under one greedy peer: with default flags, a peer opening twice `--workers`
//! connections that stay idle, trickle a command or trickle DATA cannot stop a second peer, whose
//! every message gets its 250 within 2 s of its connect. Also: a command line is bounded in
//! total time, not per read; a message must keep a minimum rate once its grace has passed (one
//! fast enough is never cut, however long; more in `timeouts.rs`); and under pressure the idlest session
//! makes room, also one that becomes idle enough while the newcomer waits or one kept only with
//! NOOPs, but not for a newcomer whose wait is over.
//! Peers are played from distinct loopback addresses (all of 127/8 is this machine).

mod support;

use std::io::Write;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use mboxd::Config;
use support::{Client, TestServer};

const ATTACKER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 2));
const GOOD: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 3));

/// How an attacking connection behaves once greeted.
#[derive(Clone, Copy, Debug)]
enum Attack {
    Idle,
    TrickleCommand,
    TrickleData,
}

/// Opens `n` connections from `from` (or from 127.0.0.10 onwards, two per address, when `from`
/// is `None`) that behave as `attack`; returns how many were served (220) and refused (421,
/// before any EHLO), and a guard that keeps them open and trickling until dropped.
fn attack(
    addr: SocketAddr,
    from: Option<IpAddr>,
    n: usize,
    attack: Attack,
) -> (usize, usize, Trickler) {
    let mut served = Vec::new();
    let mut refused = 0;
    for i in 0..n {
        let ip = from
            .unwrap_or_else(|| IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 10 + (i / 2) as u8)));
        let mut c = Client::connect_from(ip, addr);
        let r = c.read_reply();
        match r.code {
            220 => {}
            421 => {
                assert_eq!(
                    r.line(),
                    "421 Too many connections from your address; closing transmission channel"
                );
                refused += 1;
                continue;
            }
            other => panic!("attacker got {other}: {r:?}"),
        }
        match attack {
            Attack::Idle => {}
            Attack::TrickleCommand => c.send(b"NO"),
            Attack::TrickleData => {
                c.expect("EHLO attacker.test", 250);
                c.expect("MAIL FROM:<a@attacker.test>", 250);
                c.expect("RCPT TO:<victim@mx.test>", 250);
                c.expect("DATA", 354);
            }
        }
        served.push(c.stream.try_clone().unwrap());
    }
    let count = served.len();
    (count, refused, Trickler::start(served, attack))
}

/// Sends one byte every 0.5 s on every socket (none when idle) until dropped.
struct Trickler {
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Trickler {
    fn start(mut sockets: Vec<TcpStream>, attack: Attack) -> Trickler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = thread::spawn(move || {
            let until = Instant::now() + Duration::from_secs(60);
            while !flag.load(Ordering::SeqCst) && Instant::now() < until {
                if !matches!(attack, Attack::Idle) {
                    for s in &mut sockets {
                        let _ = s.write_all(b"O");
                    }
                }
                thread::sleep(Duration::from_millis(500));
            }
        });
        Trickler {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Trickler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The good peer sends 20 messages, each on a new connection; returns the slowest time from
/// connect to 250, failing if any takes 2 s or more.
fn good_peer_sends_20(addr: SocketAddr) -> Duration {
    let mut slowest = Duration::ZERO;
    for i in 0..20 {
        let began = Instant::now();
        let mut c = Client::connect_from(GOOD, addr);
        assert_eq!(c.read_reply().code, 220, "message {i}");
        c.expect("EHLO good.test", 250);
        let r = c.send_mail(
            "g@good.test",
            &["jones@mx.test"],
            &format!("Subject: {i}\r\n\r\nok\r\n"),
        );
        assert_eq!(r.code, 250, "message {i}: {r:?}");
        let took = began.elapsed();
        assert!(took < Duration::from_secs(2), "message {i} took {took:?}");
        slowest = slowest.max(took);
        c.expect("QUIT", 221);
    }
    slowest
}

fn defaults() -> TestServer {
    TestServer::with(|_| {})
}

fn one_greedy_peer(kind: Attack) {
    let server = defaults();
    let workers = Config::default().workers;
    let (served, refused, trickler) = attack(server.addr, Some(ATTACKER), 2 * workers, kind);
    assert_eq!(
        (served, refused),
        (workers / 2, 2 * workers - workers / 2),
        "{kind:?}"
    );
    let slowest = good_peer_sends_20(server.addr);
    println!(
        "{kind:?}: attacker {served} served, {refused} refused (421); good peer's slowest 250 {slowest:?}"
    );
    drop(trickler);
    assert_eq!(server.mbox_text("jones").matches("\nok\n").count(), 20);
}

#[test]
fn one_peer_holding_idle_connections_cannot_stop_another() {
    one_greedy_peer(Attack::Idle);
}

#[test]
fn one_peer_trickling_commands_cannot_stop_another() {
    one_greedy_peer(Attack::TrickleCommand);
}

#[test]
fn one_peer_trickling_data_cannot_stop_another() {
    one_greedy_peer(Attack::TrickleData);
}

#[test]
fn under_pressure_the_idlest_session_makes_room() {
    // Many addresses, two connections each: the per-peer limit does not bite, every worker is
    // taken by an idle session, and each newcomer closes the one idle longest.
    let server = TestServer::with(|c| c.workers = 16);
    let (served, refused, idle) = attack(server.addr, None, 16, Attack::Idle);
    assert_eq!((served, refused), (16, 0));
    thread::sleep(Duration::from_millis(1100)); // past the 1 s an idle session is spared
    let slowest = good_peer_sends_20(server.addr);
    println!("pressure: good peer's slowest 250 {slowest:?}");
    drop(idle);
}

#[test]
fn the_session_idle_longest_gets_421_4_3_2_and_its_worker_serves_the_newcomer() {
    let server = TestServer::with(|c| c.workers = 2);
    let mut first = server.client();
    first.expect("EHLO first.test", 250);
    let mut second = server.client();
    second.expect("EHLO second.test", 250);
    // Past the 1 s an idle session is spared; `first` has waited longest for a command.
    thread::sleep(Duration::from_millis(1100));
    let mut newcomer = server.client();
    let r = first.read_reply();
    assert_eq!(r.code, 421, "{r:?}");
    assert_eq!(
        r.text(),
        "4.3.2 Busy; closing idle session to make room; closing transmission channel"
    );
    first.expect_closed();
    newcomer.expect("NOOP", 250);
    second.expect("NOOP", 250);
}

/// A newcomer that arrives while every session has waited under the 1 s that spares it is not
/// refused at once: the dispatcher looks again while the newcomer waits, and closes the session
/// that becomes idle enough first.
#[test]
fn a_session_that_becomes_evictable_while_a_newcomer_waits_makes_room() {
    let server = TestServer::with(|c| {
        c.workers = 2;
        c.queue_wait = Duration::from_secs(5);
    });
    let mut first = server.client();
    first.expect("EHLO first.test", 250);
    let mut second = server.client();
    second.expect("EHLO second.test", 250);
    let since = Instant::now();
    let mut newcomer = Client::connect_with_timeout(server.addr, Duration::from_secs(10));
    let greeting = newcomer.read_reply();
    let waited = since.elapsed();
    assert_eq!(greeting.code, 220, "after {waited:?}: {greeting:?}");
    assert!(waited < Duration::from_secs(3), "greeted after {waited:?}");
    let r = first.read_reply();
    assert_eq!(r.code, 421, "{r:?}");
    first.expect_closed();
    newcomer.expect("NOOP", 250);
    second.expect("NOOP", 250);
}

/// A session kept with commands that move no mail (NOOP, EHLO, and a MAIL each reset), and
/// nothing else, is idle for eviction: it does not hold a worker against a newcomer. (Before, a
/// NOOP every 0.3 s kept it from ever being idle a second, and the newcomer got `421` after
/// `--queue-wait`; later an EHLO did, then a MAIL and RSET in turn.)
#[test]
fn commands_that_move_no_mail_do_not_spare_a_session_from_eviction() {
    let server = TestServer::with(|c| {
        c.workers = 1;
        c.queue_wait = Duration::from_secs(3);
    });
    let mut first = server.client();
    first.expect("EHLO first.test", 250);
    let addr = server.addr;
    let newcomer = thread::spawn(move || {
        let mut c = Client::connect_with_timeout(addr, Duration::from_secs(10));
        let greeting = c.read_reply();
        (greeting, c)
    });
    let since = Instant::now();
    // A MAIL every 0.9 s, as often as the old rule (idle from the last command but NOOP, RSET,
    // VRFY, EXPN, HELP, HELO, EHLO) needed to keep it from ever being idle a second.
    let mut verbs = [
        "MAIL FROM:<a@b.test>",
        "RSET",
        "NOOP",
        "MAIL FROM:<a@b.test>",
        "RSET",
        "EHLO first.test",
    ]
    .into_iter()
    .cycle();
    let closed = loop {
        thread::sleep(Duration::from_millis(300)); // the client's pace, not a synchronisation
        let r = first.cmd(verbs.next().unwrap());
        if r.code != 250 {
            break r;
        }
        assert!(
            since.elapsed() < Duration::from_secs(5),
            "the session kept with NOOP, EHLO, MAIL and RSET was never closed"
        );
    };
    assert_eq!(
        closed.line(),
        "421 4.3.2 Busy; closing idle session to make room; closing transmission channel"
    );
    let (greeting, mut newcomer) = newcomer.join().unwrap();
    assert_eq!(greeting.code, 220, "{greeting:?}");
    newcomer.expect("NOOP", 250);
}

/// A session that eviction picks just as its client speaks again answers with the 421 and
/// nothing more: it never answers DATA with 354 and then, its reading side shut, 421 inside the
/// message (as about one try in four did: the flag eviction set was looked at only when a read
/// found nothing). Eight tries, on eight servers at once; in each the newcomer must be served,
/// so the eviction did happen, before the message or after it.
#[test]
fn a_session_evicted_as_its_client_sends_data_never_gets_354_then_421() {
    let tries: Vec<_> = (0..8)
        .map(|_| {
            thread::spawn(|| {
                let server = TestServer::with(|c| {
                    c.workers = 1;
                    c.queue_wait = Duration::from_secs(3);
                });
                let mut c = server.client();
                c.expect("EHLO a.test", 250);
                c.expect("MAIL FROM:<a@b.test>", 250);
                c.expect("RCPT TO:<jones@mx.test>", 250);
                thread::sleep(Duration::from_millis(1100)); // past the 1 s an idle session is spared
                c.send(&[b"NOOP\r\n".repeat(300), b"DATA\r\n".to_vec()].concat());
                let mut newcomer =
                    Client::connect_with_timeout(server.addr, Duration::from_secs(10));
                let mut r = c.read_reply();
                while r.code == 250 {
                    r = c.read_reply();
                }
                let outcome = match r.code {
                    354 => {
                        let _ = c.stream.write_all(b"Subject: t\r\n\r\nbody\r\n.\r\n");
                        format!("354 then {}", c.read_reply().line())
                    }
                    _ => r.line(),
                };
                // Evicted now or, once its message is done and it has waited 1 s, later: the
                // newcomer gets the worker either way (without eviction it would get 421 after
                // the 3 s queue wait).
                assert_eq!(newcomer.read_reply().code, 220, "after {outcome}");
                outcome
            })
        })
        .collect();
    for t in tries {
        let outcome = t.join().unwrap();
        assert!(
            outcome.starts_with("354 then 250 ")
                || outcome
                    == "421 4.3.2 Busy; closing idle session to make room; closing transmission channel",
            "{outcome}"
        );
    }
}

/// A session that has read something is busy until it waits again, also while it writes a long
/// answer to a client that does not read: eviction used to pick such a session while it was
/// still answering the commands before a message (its flag said idle until its next read), so
/// no idle session was closed, and the newcomer was refused after `--queue-wait`.
#[test]
fn a_session_writing_to_a_slow_reader_is_not_taken_for_idle() {
    let server = TestServer::with(|c| {
        c.workers = 2;
        c.queue_wait = Duration::from_secs(3);
        c.aliases = vec![("big".into(), (0..8000).map(|i| format!("u{i}")).collect())];
    });
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(&server.addr.into()).unwrap();
    let mut busy = Client::from_stream(socket.into(), Duration::from_secs(10));
    assert_eq!(busy.read_reply().code, 220);
    busy.expect("EHLO busy.test", 250);
    busy.expect("MAIL FROM:<a@b.test>", 250);
    busy.expect("RCPT TO:<jones@mx.test>", 250);
    let mut idle = server.client();
    idle.expect("EHLO idle.test", 250);
    thread::sleep(Duration::from_millis(1100)); // past the 1 s an idle session is spared
    // Megabytes of answers before a message, never read: the worker blocks writing them.
    busy.send(
        &[
            b"EXPN big\r\n".repeat(49),
            b"BDAT 7 LAST\r\nsecond\n".to_vec(),
        ]
        .concat(),
    );
    // Time for the server to read them (no signal says it has): until then it is idle.
    thread::sleep(Duration::from_millis(300));
    let mut newcomer = Client::connect_with_timeout(server.addr, Duration::from_secs(10));
    assert_eq!(newcomer.read_reply().code, 220);
    assert_eq!(
        idle.read_reply().line(),
        "421 4.3.2 Busy; closing idle session to make room; closing transmission channel"
    );
}

/// A client that pipelines commands and never reads their replies is closed for a newcomer once
/// it has left them unread for 1 s, when no session is idle: its worker was held for the whole
/// `--timeout` its write may take, and every newcomer meanwhile was refused after `--queue-wait`.
/// Also when its group ends in QUIT or in a message (there the replies are written on the way
/// out, or before the message is handed over), and when it was read inside a message.
#[test]
fn a_client_that_does_not_read_its_replies_is_closed_for_a_newcomer() {
    // Each group fits the 512-octet buffer of a session before its first message, so it is
    // read whole, and its end decides where its replies are written.
    for group in [
        b"EXPN big\r\n".repeat(49),
        [b"EXPN big\r\n".repeat(49), b"QUIT\r\n".to_vec()].concat(),
        [b"EXPN big\r\n".repeat(45), b"BDAT 1 LAST\r\nx".to_vec()].concat(),
        // Read inside a message (after its 354): the session is no longer in it once it has
        // ended, though it was at its last read.
        [
            b"x\r\n.\r\n".to_vec(),
            b"EXPN big\r\n".repeat(40),
            b"QUIT\r\n".to_vec(),
        ]
        .concat(),
    ] {
        let server = TestServer::with(|c| {
            c.workers = 1;
            c.queue_wait = Duration::from_secs(5);
            c.timeout = Duration::from_secs(60);
            c.aliases = vec![("big".into(), (0..8000).map(|i| format!("u{i}")).collect())];
        });
        let socket =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        socket.connect(&server.addr.into()).unwrap();
        let mut stuck = Client::from_stream(socket.into(), Duration::from_secs(10));
        assert_eq!(stuck.read_reply().code, 220);
        stuck.expect("EHLO stuck.test", 250);
        stuck.expect("MAIL FROM:<a@b.test>", 250);
        stuck.expect("RCPT TO:<jones@mx.test>", 250);
        if group.starts_with(b"x\r\n") {
            stuck.expect("DATA", 354);
        }
        // Megabytes of answers, never read: the worker blocks writing them.
        stuck.send(&group);
        let began = Instant::now();
        let mut newcomer = Client::connect_with_timeout(server.addr, Duration::from_secs(10));
        let r = newcomer.read_reply();
        let end = String::from_utf8_lossy(&group[group.len() - 14..]).into_owned();
        assert_eq!(r.code, 220, "group ending {end:?}: {r:?}");
        let took = began.elapsed();
        assert!(
            took < Duration::from_secs(4),
            "group ending {end:?}: {took:?}"
        );
        newcomer.expect("NOOP", 250);
    }
}

/// A newcomer whose wait is over when it reaches the dispatcher (`--queue-wait 0`) gets `421`
/// and closes no session: an eviction would free a worker for no one.
#[test]
fn a_newcomer_whose_wait_is_over_closes_no_idle_session() {
    let server = TestServer::with(|c| {
        c.workers = 1;
        c.queue_wait = Duration::ZERO;
    });
    // With no wait at all, a connection is served only if the worker already waits for one,
    // and its thread may still be starting: try until it is.
    let mut first = (0..100)
        .find_map(|_| {
            let mut c = Client::connect(server.addr);
            if c.read_reply().code == 220 {
                return Some(c);
            }
            thread::sleep(Duration::from_millis(20));
            None
        })
        .expect("the worker never took a connection");
    first.expect("EHLO first.test", 250);
    thread::sleep(Duration::from_millis(1100)); // past the 1 s an idle session is spared
    let mut newcomer = Client::connect(server.addr);
    let r = newcomer.read_reply();
    assert_eq!(
        r.line(),
        "421 Too busy; try again later; closing transmission channel"
    );
    newcomer.expect_closed();
    first.expect("NOOP", 250);
}

#[test]
fn a_local_test_suite_is_never_refused_by_the_per_peer_limit() {
    // 127.0.0.1 is not limited: 48 parallel sessions (more than half of 64 workers) all served.
    let server = defaults();
    let clients: Vec<Client> = (0..48).map(|_| server.client()).collect();
    assert_eq!(clients.len(), 48);
    assert_eq!(server.live_connections(), 48);
}

#[test]
fn a_command_line_must_arrive_whole_within_the_timeout() {
    let server = TestServer::with(|c| c.timeout = Duration::from_millis(800));
    let mut c = server.client();
    let (_trickle, began) = (
        Trickler::start(vec![c.stream.try_clone().unwrap()], Attack::TrickleCommand),
        Instant::now(),
    );
    let r = c.read_reply();
    let took = began.elapsed();
    assert_eq!(r.code, 421, "{r:?}");
    // No EHLO yet, so no enhanced code.
    assert_eq!(
        r.text(),
        "Timeout waiting for client input; closing connection"
    );
    assert!(
        took >= Duration::from_millis(700) && took < Duration::from_millis(1600),
        "{took:?}"
    );
}

/// A server whose messages must keep 1 000 octets a second once 0.8 s have passed (and whose
/// reads inside a message may wait 1 s, which caps what octets buy ahead), and a client of it
/// inside a message to jones.
fn rate_limited_in_message() -> (TestServer, Client) {
    let (server, mut c) = rate_limited_in_transaction();
    c.expect("DATA", 354);
    (server, c)
}

/// The same server, and a client of it with a transaction to jones open.
fn rate_limited_in_transaction() -> (TestServer, Client) {
    let server = TestServer::with(|c| {
        c.min_data_rate = 1000;
        c.min_data_rate_grace = Duration::from_millis(800);
        c.data_timeout = Duration::from_secs(1);
    });
    let mut c = server.client();
    c.expect("EHLO x.test", 250);
    c.expect("MAIL FROM:<a@b.test>", 250);
    c.expect("RCPT TO:<jones@mx.test>", 250);
    (server, c)
}

/// Trickles into the message `c` has just been told to send, and checks that it is cut for its
/// rate when the grace ends.
fn cut_for_rate(c: &mut Client) {
    let began = Instant::now();
    let _trickle = Trickler::start(vec![c.stream.try_clone().unwrap()], Attack::TrickleData);
    let r = c.read_reply();
    let took = began.elapsed();
    assert_eq!(
        r.line(),
        "421 4.4.2 Message data arriving too slowly; closing connection"
    );
    assert!(
        took >= Duration::from_millis(700) && took < Duration::from_millis(1600),
        "{took:?}"
    );
}

#[test]
fn a_message_below_the_minimum_rate_is_cut_after_its_grace() {
    let (server, mut c) = rate_limited_in_message();
    cut_for_rate(&mut c);
    assert!(server.mbox("jones").is_empty());
    // A message fast enough is never cut, however long it is.
    let mut c = server.client();
    c.expect("EHLO x.test", 250);
    let body = "x".repeat(70) + "\r\n";
    let r = c.send_mail("a@b.test", &["jones@mx.test"], &body.repeat(20_000));
    assert_eq!(r.code, 250, "{r:?}");
}

/// The octets of a fast message pipelined right up to the next one's DATA used to count for
/// that next message too, so a client could bank time (100 000 octets here: 100 s at 1 000 a
/// second) and trickle the next one. Now what a message leaves is at most the data timeout (1 s
/// here), and that is all the next one has.
#[test]
fn a_fast_message_buys_no_time_for_the_next_one_pipelined_behind_it() {
    let (server, mut c) = rate_limited_in_message();
    // Many reads for the server; the last holds the end and the next transaction's commands.
    let fast = ("x".repeat(98) + "\r\n").repeat(1000);
    c.send(
        format!("{fast}.\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<brown@mx.test>\r\nDATA\r\n")
            .as_bytes(),
    );
    for code in [250, 250, 250, 354] {
        assert_eq!(c.read_reply().code, code);
    }
    cut_for_rate(&mut c);
    assert!(server.mbox("brown").is_empty());
}

/// Commands between BDAT chunks are not the message's octets: a client that sent one octet of
/// chunk, then a 300-octet NOOP every 100 ms (3 000 octets a second, all answered 250), kept
/// the message open, and its worker, for as long as it went on. It is cut for its rate once the
/// grace ends, as a message trickled with DATA is.
#[test]
fn noops_between_chunks_do_not_keep_a_message_at_its_rate() {
    let (server, mut c) = rate_limited_in_transaction();
    c.send(b"BDAT 1\r\nx");
    assert_eq!(c.read_reply().code, 250);
    let noop = format!("NOOP {}\r\n", "n".repeat(293));
    let began = Instant::now();
    let cut = loop {
        assert!(
            began.elapsed() < Duration::from_secs(5),
            "NOOPs kept the message open"
        );
        c.send(noop.as_bytes());
        let r = c.read_reply();
        if r.code != 250 {
            break r;
        }
        thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(
        cut.line(),
        "421 4.4.2 Message data arriving too slowly; closing connection"
    );
    assert!(began.elapsed() >= Duration::from_millis(700));
    assert!(server.mbox("jones").is_empty());
}
