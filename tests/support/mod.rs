//! Test support: a server on 127.0.0.1:0 writing into a temporary directory, and a tiny line
//! client that reads whole (multi-line) replies with a timeout, so no test can hang.
//!
//! Every helper that waits (for a reply, a close, a line of a child's output, a child's exit)
//! waits a bounded time and fails the test when that time runs out: a timeout is never taken
//! for a reply, an end of file or a close. `tests/support_selftest.rs` shows each one failing
//! on a silent, open peer.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mboxd::{Config, Server};

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

    fn from_stream(stream: TcpStream, timeout: Duration) -> Client {
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

/// Waits for a child process with a deadline, killing it and failing the test if it overruns.
/// Polling `try_wait` is the only portable way to wait with a limit.
pub fn wait_bounded(child: &mut Child, limit: Duration) -> ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("child process did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The server binary built for these tests.
pub const BIN: &str = env!("CARGO_BIN_EXE_mboxd");

/// Starts the binary with `args` and reads its `listening on` lines (a missing line within
/// [`REPLY_TIMEOUT`] fails the test); the guard kills it if the test ends without stopping it.
pub fn spawn(args: &[&str], listeners: usize) -> (ChildGuard, Vec<SocketAddr>) {
    let child = Command::new(BIN)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn mboxd");
    listening(ChildGuard(child), listeners)
}

/// [`spawn`] with `RUST_LOG=info` and stderr captured by a thread, whose handle yields all of
/// it once the child has exited.
pub fn spawn_logged(
    args: &[&str],
    listeners: usize,
) -> (ChildGuard, Vec<SocketAddr>, std::thread::JoinHandle<String>) {
    let mut child = ChildGuard(
        Command::new(BIN)
            .args(args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn mboxd"),
    );
    let mut stderr = child.stderr.take().expect("stderr");
    let log = std::thread::spawn(move || {
        let mut text = Vec::new();
        let _ = stderr.read_to_end(&mut text);
        String::from_utf8_lossy(&text).into_owned()
    });
    let (child, addrs) = listening(child, listeners);
    (child, addrs, log)
}

fn listening(mut child: ChildGuard, listeners: usize) -> (ChildGuard, Vec<SocketAddr>) {
    let stdout = child.stdout.take().expect("stdout");
    let addrs = read_lines_within(stdout, listeners, REPLY_TIMEOUT)
        .into_iter()
        .map(|line| {
            line.strip_prefix("listening on ")
                .unwrap_or_else(|| panic!("unexpected line {line:?}"))
                .trim()
                .parse()
                .expect("an address")
        })
        .collect();
    (child, addrs)
}

/// Sends `sig` (`TERM`, `INT`, `KILL`) to a child process.
pub fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{sig}"), &child.id().to_string()])
        .status()
        .expect("kill")
        .success();
    assert!(ok, "kill -{sig} failed");
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

/// Reads the first `n` lines a child process writes to `out` (its stdout, say), waiting at most
/// `limit` in all. Fails the test when the output ends first or stays silent past the limit.
/// The reading happens on a named thread, which ends with the output or after `n` lines.
pub fn read_lines_within(
    out: impl Read + Send + 'static,
    n: usize,
    limit: Duration,
) -> Vec<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("test-read-lines".into())
        .spawn(move || {
            let mut reader = BufReader::new(out);
            for _ in 0..n {
                let mut line = String::new();
                match reader.read_line(&mut line) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {
                        if tx.send(line).is_err() {
                            return;
                        }
                    }
                }
            }
        })
        .expect("spawn a reader thread");
    let deadline = Instant::now() + limit;
    let mut lines = Vec::new();
    while lines.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => lines.push(line),
            Err(RecvTimeoutError::Timeout) => {
                panic!("no line of output within {limit:?}; got {lines:?} of {n} lines")
            }
            Err(RecvTimeoutError::Disconnected) => {
                panic!("the output ended (or could not be read) after {lines:?}, before {n} lines")
            }
        }
    }
    lines
}

/// Runs `cmd` to its end, like `Command::output`, but fails the test when it runs past `limit`,
/// with the output gathered so far. The child runs in a process group of its own, and the whole
/// group is killed once the child has exited or at the deadline, so nothing it started (a server
/// an example left running, say) outlives it or holds its output open. Its stdout and stderr are
/// read on threads, so output of any size is fine.
pub fn output_within(cmd: &mut Command, limit: Duration) -> Output {
    use std::os::unix::process::CommandExt;
    let deadline = Instant::now() + limit;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .expect("spawn");
    let (done_tx, done) = mpsc::channel();
    let stdout = gather(child.stdout.take().unwrap(), done_tx.clone());
    let stderr = gather(child.stderr.take().unwrap(), done_tx);
    // Polled, as `wait_bounded` does: std has no wait with a timeout.
    let exited = loop {
        match child.try_wait().expect("try_wait") {
            Some(status) => break Some(status),
            None if Instant::now() >= deadline => break None,
            None => std::thread::sleep(Duration::from_millis(10)),
        }
    };
    // The child's group id is its pid; whatever it started goes with the group.
    let group = format!("-{}", child.id());
    let killed = Command::new("kill").args(["-KILL", "--", &group]).output();
    if killed.is_err() {
        // No kill(1): the child at least, so the wait below is bounded; the assert below fails.
        let _ = child.kill();
    }
    let status = exited.unwrap_or_else(|| child.wait().expect("wait"));
    // With the group gone the pipes are closed, unless a process left the group (setsid). The
    // readers get the rest of the limit, or a second after a kill at the deadline.
    let readers = deadline.max(Instant::now() + Duration::from_secs(1));
    let closed = (0..2).all(|_| {
        done.recv_timeout(readers.saturating_duration_since(Instant::now()))
            .is_ok()
    });
    let take = |out: &Arc<Mutex<Vec<u8>>>| {
        std::mem::take(&mut *out.lock().unwrap_or_else(|e| e.into_inner()))
    };
    let (stdout, stderr) = (take(&stdout), take(&stderr));
    let so_far = || {
        format!(
            "stdout so far:\n{}\nstderr so far:\n{}",
            String::from_utf8_lossy(&stdout),
            String::from_utf8_lossy(&stderr)
        )
    };
    assert!(
        exited.is_some(),
        "child process did not exit within {limit:?}; {}",
        so_far()
    );
    assert!(killed.is_ok(), "cannot run kill(1): {killed:?}");
    assert!(
        closed,
        "the child's output stayed open after its process group was killed; {}",
        so_far()
    );
    Output {
        status,
        stdout,
        stderr,
    }
}

/// Reads `from` to its end on a thread, into the buffer it returns, and then sends on `done`.
fn gather(mut from: impl Read + Send + 'static, done: mpsc::Sender<()>) -> Arc<Mutex<Vec<u8>>> {
    let out = Arc::new(Mutex::new(Vec::new()));
    let buf = out.clone();
    std::thread::Builder::new()
        .name("test-gather".into())
        .spawn(move || {
            let mut chunk = [0; 8192];
            loop {
                match from.read(&mut chunk) {
                    Ok(0) => break,
                    Ok(n) => buf.lock().unwrap().extend_from_slice(&chunk[..n]),
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
            let _ = done.send(());
        })
        .expect("spawn a reader thread");
    out
}

/// A child process that is killed and reaped when the guard is dropped, so a test that fails
/// half-way leaves no process behind.
pub struct ChildGuard(pub Child);

impl std::ops::Deref for ChildGuard {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for ChildGuard {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
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
