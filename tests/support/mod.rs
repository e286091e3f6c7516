//! Test support: a server on 127.0.0.1:0 writing into a temporary directory, and a tiny line
//! client that reads whole (multi-line) replies with a timeout, so no test can hang.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, ExitStatus};
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

    /// The bytes of a user's mbox, or empty if it does not exist.
    pub fn mbox(&self, user: &str) -> Vec<u8> {
        std::fs::read(self.mail_dir().join(user)).unwrap_or_default()
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
}

/// A minimal SMTP client over a real socket.
pub struct Client {
    pub stream: TcpStream,
    reader: BufReader<TcpStream>,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_read_timeout(Some(REPLY_TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(REPLY_TIMEOUT)).unwrap();
        let reader = BufReader::new(stream.try_clone().unwrap());
        Client { stream, reader }
    }

    /// Reads one whole reply, checking its framing: every line ends in CRLF and carries the
    /// same code, with `-` on every line but the last.
    pub fn read_reply(&mut self) -> Reply {
        self.try_read_reply().expect("a reply")
    }

    /// Reads one reply, or `None` at end of file.
    pub fn try_read_reply(&mut self) -> Option<Reply> {
        let mut lines = Vec::new();
        let mut code = None;
        for _ in 0..1000 {
            let mut line = Vec::new();
            let n = (&mut self.reader)
                .take(4096)
                .read_until(b'\n', &mut line)
                .ok()?;
            if n == 0 {
                assert!(
                    lines.is_empty(),
                    "connection closed inside a multi-line reply"
                );
                return None;
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

    /// True when the server has closed the connection (reads end of file, or a reset).
    pub fn is_closed(&mut self) -> bool {
        let mut byte = [0u8; 1];
        matches!(self.reader.read(&mut byte), Ok(0) | Err(_))
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

/// Starts the binary with `args` (and `RUST_LOG=info`), its stderr captured by a thread, and
/// reads its `listening on` lines, each within [`REPLY_TIMEOUT`] (a missing line fails the test).
/// Returns the child, the bound addresses and the handle that yields all of stderr once the
/// child has exited.
pub fn spawn_logged(
    args: &[&str],
    listeners: usize,
) -> (Child, Vec<SocketAddr>, std::thread::JoinHandle<String>) {
    use std::process::{Command, Stdio};
    let mut child = Command::new(BIN)
        .args(args)
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn mboxd");
    let mut stderr = child.stderr.take().expect("stderr");
    let log = std::thread::spawn(move || {
        let mut text = Vec::new();
        let _ = stderr.read_to_end(&mut text);
        String::from_utf8_lossy(&text).into_owned()
    });
    let stdout = child.stdout.take().expect("stdout");
    let (lines_tx, lines_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if lines_tx.send(line).is_err() {
                return;
            }
        }
    });
    let mut addrs = Vec::new();
    for _ in 0..listeners {
        let line = match lines_rx.recv_timeout(REPLY_TIMEOUT) {
            Ok(Ok(line)) => line,
            other => {
                let _ = child.kill();
                panic!("no `listening on` line within {REPLY_TIMEOUT:?}: {other:?}")
            }
        };
        let addr = line
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected line {line:?}"))
            .trim()
            .parse()
            .expect("an address");
        addrs.push(addr);
    }
    (child, addrs, log)
}

/// Sends `sig` (`TERM`, `INT`, `KILL`) to a child process.
pub fn signal(child: &Child, sig: &str) {
    let ok = std::process::Command::new("kill")
        .args([&format!("-{sig}"), &child.id().to_string()])
        .status()
        .expect("kill")
        .success();
    assert!(ok, "kill -{sig} failed");
}
