//! Test support: a server on 127.0.0.1:0 writing into a temporary directory, and a tiny line
//! client that reads whole (multi-line) replies with a timeout, so no test can hang; the
//! binary run as a child process is in `process.rs`.
//!
//! Every helper that waits (for a reply, a close, a line of a child's output, a child's exit)
//! waits a bounded time and fails the test when that time runs out: a timeout is never taken
//! for a reply, an end of file or a close. `tests/support_selftest.rs` shows each one failing
//! on a silent, open peer.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::Duration;

use mboxd::{Config, Server};

mod process;
#[allow(unused_imports)] // not every test uses a child process
pub use process::*;

/// How long a test client waits for any reply before failing.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// A running server and its mail directory; stopped when dropped.
pub struct TestServer {
    server: Option<Server>,
    pub dir: tempfile::TempDir,
    pub addr: SocketAddr,
}

impl TestServer {
    /// A catch-all server for `mx.test` and `localhost`.
    pub fn start() -> TestServer {
        TestServer::with(|_| {})
    }

    /// A server configured by `f` on top of the test defaults.
    pub fn with(f: impl FnOnce(&mut Config)) -> TestServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = Config {
            listen: vec!["127.0.0.1:0".parse().unwrap()],
            hostname: "mx.test".into(),
            mail_dir: dir.path().join("mail"),
            domains: vec!["mx.test".into(), "localhost".into()],
            ..Config::default()
        };
        f(&mut config);
        let server = Server::start(config).expect("server starts");
        let addr = server.local_addrs()[0];
        TestServer {
            server: Some(server),
            dir,
            addr,
        }
    }

    /// A client connected to this server that has read the 220 greeting.
    pub fn client(&self) -> Client {
        let mut c = Client::connect(self.addr);
        let greeting = c.read_reply();
        assert_eq!(greeting.code, 220, "{greeting:?}");
        c
    }

    /// The mail directory.
    pub fn mail_dir(&self) -> PathBuf {
        self.dir.path().join("mail")
    }

    /// The bytes of a user's mbox, or empty if it does not exist; any other error fails.
    pub fn mbox(&self, user: &str) -> Vec<u8> {
        match std::fs::read(self.mail_dir().join(user)) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            read => read.unwrap_or_else(|e| panic!("reading the mbox of {user}: {e}")),
        }
    }

    /// The mbox as text.
    pub fn mbox_text(&self, user: &str) -> String {
        String::from_utf8_lossy(&self.mbox(user)).into_owned()
    }

    /// Sessions in progress.
    pub fn live_connections(&self) -> usize {
        self.server.as_ref().map_or(0, Server::live_connections)
    }

    /// Stops the server and waits for every thread.
    pub fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown();
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One reply: its code and the text of each line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub lines: Vec<String>,
}

impl Reply {
    /// The text of all lines joined with newlines.
    pub fn text(&self) -> String {
        self.lines.join("\n")
    }

    /// The code and text of a one-line reply as sent, without CRLF: `451 4.3.0 ...`.
    pub fn line(&self) -> String {
        format!("{} {}", self.code, self.text())
    }
}

/// A minimal SMTP client over a real socket. Every wait is bounded by its timeout, and a
/// timeout fails the test: a silent, open connection is a hang, never a reply or a close.
pub struct Client {
    pub stream: TcpStream,
    reader: BufReader<TcpStream>,
    timeout: Duration,
}

impl Client {
    /// Connects, with [`REPLY_TIMEOUT`] for every read and write.
    pub fn connect(addr: SocketAddr) -> Client {
        Client::connect_with_timeout(addr, REPLY_TIMEOUT)
    }

    /// Connects, with `timeout` for every read and write.
    pub fn connect_with_timeout(addr: SocketAddr, timeout: Duration) -> Client {
        let stream = TcpStream::connect(addr).expect("connect");
        Client::from_stream(stream, timeout)
    }

    /// Connects from the source address `from` (see [`connect_from`]), with [`REPLY_TIMEOUT`].
    pub fn connect_from(from: std::net::IpAddr, addr: SocketAddr) -> Client {
        Client::from_stream(connect_from(from, addr), REPLY_TIMEOUT)
    }

    pub fn from_stream(stream: TcpStream, timeout: Duration) -> Client {
        stream.set_read_timeout(Some(timeout)).unwrap();
        stream.set_write_timeout(Some(timeout)).unwrap();
        let reader = BufReader::new(stream.try_clone().unwrap());
        Client {
            stream,
            reader,
            timeout,
        }
    }

    /// Reads one whole reply, checking its framing: every line ends in CRLF and carries the
    /// same code, with `-` on every line but the last. Fails the test if the server closes the
    /// connection instead, or sends nothing within the timeout.
    pub fn read_reply(&mut self) -> Reply {
        match self.try_read_reply() {
            Some(reply) => reply,
            None => panic!("expected a reply, but the server closed the connection"),
        }
    }

    /// Reads one reply, or `None` when the server has closed the connection (end of file, or a
    /// reset) before the reply's first byte. Fails the test when nothing arrives within the
    /// timeout, and when the connection ends inside a reply.
    pub fn try_read_reply(&mut self) -> Option<Reply> {
        let mut lines = Vec::new();
        let mut code = None;
        for _ in 0..1000 {
            let mut line = Vec::new();
            match (&mut self.reader).take(4096).read_until(b'\n', &mut line) {
                Ok(0) => {
                    assert!(
                        lines.is_empty(),
                        "connection closed inside a multi-line reply after {lines:?}"
                    );
                    return None;
                }
                Ok(_) => {}
                Err(e) if is_reset(&e) && lines.is_empty() && line.is_empty() => return None,
                Err(e) if is_timeout(&e) => panic!(
                    "no reply within {:?}: the connection is open but silent (read so far: {lines:?} {:?})",
                    self.timeout,
                    String::from_utf8_lossy(&line)
                ),
                Err(e) => panic!(
                    "reading a reply: {e} (read so far: {lines:?} {:?})",
                    String::from_utf8_lossy(&line)
                ),
            }
            let line = String::from_utf8(line).expect("replies are UTF-8");
            assert!(
                line.ends_with("\r\n") && !line[..line.len() - 2].contains(['\r', '\n']),
                "bad framing: {line:?}"
            );
            let this: u16 = line[..3].parse().expect("a three-digit code");
            assert!(
                code.is_none_or(|c| c == this),
                "code changed inside a reply: {line:?}"
            );
            code = Some(this);
            lines.push(line[4..line.len() - 2].to_string());
            match line.as_bytes()[3] {
                b' ' => return Some(Reply { code: this, lines }),
                b'-' => continue,
                _ => panic!("bad separator in {line:?}"),
            }
        }
        panic!("reply of more than 1000 lines");
    }

    /// Every reply until the server closes the connection. Fails the test when the connection
    /// stays open and silent for the timeout.
    pub fn replies_until_close(&mut self) -> Vec<Reply> {
        let mut replies = Vec::new();
        for _ in 0..100 {
            match self.try_read_reply() {
                Some(r) => replies.push(r),
                None => return replies,
            }
        }
        panic!("more than 100 replies: {replies:?}");
    }

    /// Sends raw bytes.
    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send");
    }

    /// Sends a command line (CRLF added) and reads its reply.
    pub fn cmd(&mut self, line: &str) -> Reply {
        self.send(format!("{line}\r\n").as_bytes());
        self.read_reply()
    }

    /// Sends a command and asserts the reply code.
    pub fn expect(&mut self, line: &str, code: u16) -> Reply {
        let r = self.cmd(line);
        assert_eq!(r.code, code, "{line:?} got {r:?}");
        r
    }

    /// Asserts that the server closes the connection: waits up to the timeout for end of file
    /// or a reset. Fails the test when bytes arrive instead, or the connection stays open.
    pub fn expect_closed(&mut self) {
        let mut buf = [0u8; 1024];
        match self.reader.read(&mut buf) {
            Ok(0) => {}
            Ok(n) => panic!(
                "expected the server to close the connection, but read {:?}",
                String::from_utf8_lossy(&buf[..n])
            ),
            Err(e) if is_reset(&e) => {}
            Err(e) if is_timeout(&e) => panic!(
                "expected the server to close the connection, but it is still open after {:?}",
                self.timeout
            ),
            Err(e) => {
                panic!("expected the server to close the connection, but reading failed: {e}")
            }
        }
    }

    /// EHLO or HELO, MAIL, each RCPT, DATA and the message (dot-stuffed here); returns the reply
    /// to the end of data.
    pub fn send_mail(&mut self, from: &str, to: &[&str], message: &str) -> Reply {
        self.expect(&format!("MAIL FROM:<{from}>"), 250);
        for rcpt in to {
            let r = self.cmd(&format!("RCPT TO:<{rcpt}>"));
            assert!(r.code == 250 || r.code == 251, "RCPT {rcpt}: {r:?}");
        }
        self.expect("DATA", 354);
        self.send(&dot_stuff(message));
        self.read_reply()
    }
}

/// Dot-stuffs a message, ends it with CRLF, and appends the end-of-data line.
pub fn dot_stuff(message: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for line in message.split_inclusive('\n') {
        let line = line.strip_suffix('\n').unwrap_or(line);
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.starts_with('.') {
            out.push(b'.');
        }
        out.extend_from_slice(line.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

/// Splits an mbox into its entries (each starting with `From `).
pub fn mbox_entries(mbox: &str) -> Vec<String> {
    let mut entries: Vec<String> = Vec::new();
    for line in mbox.split_inclusive('\n') {
        if line.starts_with("From ")
            && (entries.is_empty() || entries.last().unwrap().ends_with("\n\n"))
        {
            entries.push(String::new());
        }
        match entries.last_mut() {
            Some(e) => e.push_str(line),
            None => panic!("mbox does not start with a From line: {line:?}"),
        }
    }
    entries
}

/// A read timed out (SO_RCVTIMEO reports EAGAIN, which std calls `WouldBlock`).
fn is_timeout(e: &std::io::Error) -> bool {
    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
}

/// The peer reset the connection: as much a close as end of file.
fn is_reset(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted
    )
}

/// True when a new connection to `addr` is not served: refused, closed or reset before a word,
/// or answered 421. False when it is greeted with any other reply. Fails the test when the
/// connection is accepted but nothing arrives within `timeout`.
pub fn refuses_connections(addr: SocketAddr, timeout: Duration) -> bool {
    let stream = match TcpStream::connect_timeout(&addr, timeout) {
        Ok(stream) => stream,
        Err(e) if e.kind() == ErrorKind::ConnectionRefused => return true,
        Err(e) => panic!("connecting to {addr}: {e}"),
    };
    match Client::from_stream(stream, timeout).try_read_reply() {
        None => true,
        Some(r) => r.code == 421,
    }
}

/// A TCP connection to `addr` from the source address `from` (any 127/8 address is this
/// machine), so a test can play distinct peers. Fails the test if it cannot connect within
/// [`REPLY_TIMEOUT`].
pub fn connect_from(from: std::net::IpAddr, addr: SocketAddr) -> TcpStream {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None).expect("socket");
    socket
        .bind(&SocketAddr::new(from, 0).into())
        .unwrap_or_else(|e| panic!("bind {from}: {e}"));
    socket
        .connect_timeout(&addr.into(), REPLY_TIMEOUT)
        .unwrap_or_else(|e| panic!("connect {addr} from {from}: {e}"));
    socket.into()
}
