//! The test helpers themselves can fail: each one that waits is shown failing (panicking, with
//! a message that says why) on a silent peer that keeps its socket or pipe open, and succeeding
//! on a real close. Without this, a helper that took a timeout for a close would let a hung
//! server pass every test.
//!
//! The peers are plain sockets on 127.0.0.1 port 0 and short-lived child processes; the
//! timeouts are short so a deliberate failure costs a fraction of a second.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::{
    ChildGuard, Client, output_within, read_lines_within, refuses_connections, wait_bounded,
};

/// Long enough for loopback, short enough that the deliberate timeouts stay cheap.
const SHORT: Duration = Duration::from_millis(200);

/// Runs `f`, asserts it panicked, and returns the panic message.
fn panic_message(f: impl FnOnce()) -> String {
    let err = catch_unwind(AssertUnwindSafe(f)).expect_err("the helper did not fail");
    err.downcast_ref::<String>()
        .cloned()
        .or_else(|| err.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

/// A client connected to a fresh listener, and the server's end of the connection, which the
/// test holds open, writes to, or closes.
fn pair() -> (Client, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let client = Client::connect_with_timeout(listener.local_addr().unwrap(), SHORT);
    let (server, _) = listener.accept().unwrap();
    (client, server)
}

/// Makes the server end reset the connection: closing a socket with unread input sends RST.
fn reset(mut client: Client, server: TcpStream) -> Client {
    client.send(b"never read\r\n");
    // The bytes must have arrived, unread, when the server end closes for the kernel to
    // answer with a reset: wait (bounded) until they can be peeked.
    server
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    server.peek(&mut [0u8; 1]).expect("the bytes arrive");
    drop(server);
    client
}

#[test]
fn read_reply_fails_on_a_silent_open_socket() {
    let (mut c, _open) = pair();
    let started = Instant::now();
    let message = panic_message(|| {
        c.read_reply();
    });
    assert!(message.contains("open but silent"), "{message}");
    assert!(started.elapsed() >= SHORT);
}

#[test]
fn try_read_reply_fails_on_a_silent_open_socket() {
    let (mut c, _open) = pair();
    let message = panic_message(|| {
        c.try_read_reply();
    });
    assert!(message.contains("open but silent"), "{message}");
}

#[test]
fn try_read_reply_fails_on_half_a_reply_then_silence() {
    let (mut c, mut server) = pair();
    server.write_all(b"250-first line\r\n250 sec").unwrap();
    let message = panic_message(|| {
        c.try_read_reply();
    });
    assert!(message.contains("open but silent"), "{message}");
    assert!(message.contains("first line"), "{message}");
}

#[test]
fn try_read_reply_reads_a_reply_and_sees_a_close() {
    let (mut c, mut server) = pair();
    server.write_all(b"250-one\r\n250 two\r\n").unwrap();
    drop(server);
    let r = c.try_read_reply().expect("a reply");
    assert_eq!((r.code, r.lines), (250, vec!["one".into(), "two".into()]));
    assert_eq!(c.try_read_reply(), None);
}

#[test]
fn try_read_reply_sees_a_reset_as_a_close() {
    let (c, server) = pair();
    let mut c = reset(c, server);
    assert_eq!(c.try_read_reply(), None);
}

#[test]
fn read_reply_fails_on_a_close() {
    let (mut c, server) = pair();
    drop(server);
    let message = panic_message(|| {
        c.read_reply();
    });
    assert!(message.contains("closed the connection"), "{message}");
}

#[test]
fn try_read_reply_fails_on_a_close_inside_a_reply() {
    let (mut c, mut server) = pair();
    server.write_all(b"250-first line\r\n").unwrap();
    drop(server);
    let message = panic_message(|| {
        c.try_read_reply();
    });
    assert!(message.contains("inside a multi-line reply"), "{message}");
}

#[test]
fn cmd_and_expect_fail_when_no_reply_comes() {
    let (mut c, _open) = pair();
    let message = panic_message(|| {
        c.expect("NOOP", 250);
    });
    assert!(message.contains("open but silent"), "{message}");
}

#[test]
fn expect_closed_fails_on_a_silent_open_socket() {
    let (mut c, _open) = pair();
    let started = Instant::now();
    let message = panic_message(|| c.expect_closed());
    assert!(message.contains("still open"), "{message}");
    assert!(started.elapsed() >= SHORT);
}

#[test]
fn expect_closed_fails_when_data_arrives_instead() {
    let (mut c, mut server) = pair();
    server.write_all(b"250 still talking\r\n").unwrap();
    let message = panic_message(|| c.expect_closed());
    assert!(message.contains("still talking"), "{message}");
}

#[test]
fn expect_closed_accepts_end_of_file_and_a_reset() {
    let (mut c, server) = pair();
    drop(server);
    c.expect_closed();
    let (c, server) = pair();
    reset(c, server).expect_closed();
}

#[test]
fn replies_until_close_fails_on_a_silent_open_socket() {
    let (mut c, mut server) = pair();
    server.write_all(b"220 hello\r\n").unwrap();
    let message = panic_message(|| {
        c.replies_until_close();
    });
    assert!(message.contains("open but silent"), "{message}");
}

#[test]
fn replies_until_close_returns_the_replies_before_a_close() {
    let (mut c, mut server) = pair();
    server.write_all(b"220 hello\r\n221 bye\r\n").unwrap();
    drop(server);
    let codes: Vec<u16> = c.replies_until_close().iter().map(|r| r.code).collect();
    assert_eq!(codes, [220, 221]);
}

/// A listener whose connections get `answer` (then a close), or are held open and silent
/// when `answer` is `None`. Returns its address; the thread ends after one connection.
fn one_shot_server(answer: Option<&'static [u8]>) -> (SocketAddr, std::thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let handle = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        match answer {
            Some(bytes) => stream.write_all(bytes).unwrap(),
            // Silent: hold the connection until the client gives up and closes it.
            None => {
                let _ = stream.read(&mut [0u8; 1]);
            }
        }
    });
    (addr, handle)
}

#[test]
fn refuses_connections_fails_on_a_silent_open_socket() {
    let (addr, handle) = one_shot_server(None);
    let message = panic_message(|| {
        refuses_connections(addr, SHORT);
    });
    assert!(message.contains("open but silent"), "{message}");
    handle.join().unwrap();
}

#[test]
fn refuses_connections_tells_refusal_from_service() {
    let (addr, handle) = one_shot_server(Some(b"421 shutting down\r\n"));
    assert!(refuses_connections(addr, SHORT));
    handle.join().unwrap();
    let (addr, handle) = one_shot_server(Some(b""));
    assert!(refuses_connections(addr, SHORT));
    handle.join().unwrap();
    let (addr, handle) = one_shot_server(Some(b"220 welcome\r\n"));
    assert!(!refuses_connections(addr, SHORT));
    handle.join().unwrap();
    // Nothing listening: the connection is refused.
    let closed = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = closed.local_addr().unwrap();
    drop(closed);
    assert!(refuses_connections(addr, SHORT));
}

/// A child that writes `script`'s output to a pipe; `sleep` keeps the pipe open and silent.
fn sh(script: &str) -> ChildGuard {
    ChildGuard(
        Command::new("sh")
            .args(["-c", script])
            .stdout(Stdio::piped())
            .spawn()
            .expect("sh"),
    )
}

#[test]
fn read_lines_within_fails_on_silent_open_output() {
    let mut child = sh("echo one; exec sleep 30");
    let out = child.stdout.take().unwrap();
    let message = panic_message(|| {
        read_lines_within(out, 2, SHORT);
    });
    assert!(message.contains("no line of output within"), "{message}");
    assert!(message.contains("one"), "{message}");
}

#[test]
fn read_lines_within_fails_when_the_output_ends_early() {
    let mut child = sh("echo one");
    let out = child.stdout.take().unwrap();
    let message = panic_message(|| {
        read_lines_within(out, 2, Duration::from_secs(5));
    });
    assert!(message.contains("ended"), "{message}");
}

#[test]
fn read_lines_within_reads_lines() {
    let mut child = sh("echo one; echo two; exec sleep 30");
    let out = child.stdout.take().unwrap();
    assert_eq!(
        read_lines_within(out, 2, Duration::from_secs(5)),
        ["one\n", "two\n"]
    );
}

#[test]
fn wait_bounded_fails_on_a_child_that_does_not_exit_and_kills_it() {
    let mut child = sh("exec sleep 30");
    let message = panic_message(|| {
        wait_bounded(&mut child, SHORT);
    });
    assert!(message.contains("did not exit"), "{message}");
    // It was killed and reaped: there is nothing left to wait for.
    assert!(child.try_wait().unwrap().is_some());
}

#[test]
fn output_within_fails_on_a_command_that_does_not_exit() {
    let message = panic_message(|| {
        output_within(Command::new("sleep").arg("30"), SHORT);
    });
    assert!(message.contains("did not exit"), "{message}");
    let out = output_within(
        Command::new("sh").args(["-c", "echo out; echo err >&2; exit 3"]),
        Duration::from_secs(5),
    );
    assert_eq!(
        (out.status.code(), &out.stdout[..], &out.stderr[..]),
        (Some(3), &b"out\n"[..], &b"err\n"[..])
    );
}

#[test]
fn output_within_returns_when_the_child_exits_leaving_a_process_that_holds_its_output() {
    // The shape of an example that fails with its server still running: a grandchild that
    // inherits stdout and stderr outlives the child. Without the kill of the child's process
    // group, its output would stay open for the grandchild's minute.
    let started = Instant::now();
    let out = output_within(
        Command::new("sh").args(["-c", "sleep 60 & echo started; exit 1"]),
        Duration::from_secs(30),
    );
    assert_eq!(
        (out.status.code(), &out.stdout[..]),
        (Some(1), &b"started\n"[..])
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn output_within_fails_at_its_deadline_with_the_output_so_far() {
    let message = panic_message(|| {
        output_within(
            Command::new("sh").args([
                "-c",
                "echo before; echo stderr-before >&2; sleep 30 & exec sleep 30",
            ]),
            SHORT,
        );
    });
    assert!(message.contains("did not exit"), "{message}");
    assert!(
        message.contains("stdout so far:\nbefore\n")
            && message.contains("stderr so far:\nstderr-before\n"),
        "{message}"
    );
}
