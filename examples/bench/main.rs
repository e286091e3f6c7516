//! `make bench`: the load generator the performance figures in the README come from.
//!
//! It exists so the repository owns its measurement: N sessions send M messages in total of a
//! given size and recipient count, with or without pipelining (RFC 2920), every reply is checked
//! (an unexpected reply or a timeout fails the run, exit status 1, with the reason), and the
//! result is msg/s, MB/s (10^6 octets) and the p50/p99 latency from sending the final `.` of a
//! message to receiving its 250. With `--check-mbox DIR --user NAME` it then reads the mbox back
//! and fails if any message of this run is missing or stored twice.
//!
//! `bench suite --mboxd PATH` runs the cases of issue 10 against a fresh `mboxd` and, when
//! Postfix's `smtp-sink` is installed, against `smtp-sink` too, alternating, and prints a table
//! with the ratio mboxd/smtp-sink; the same cases sent by Postfix's `smtp-source` (`source.rs`);
//! throughput as message size and sessions grow (`growth.rs`); resident memory with 1000 idle
//! sessions and at the peak of case C, and the start-up time (`memory.rs`).
//! `tests/bench_smoke.rs` includes this file to keep it working.

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub mod growth;
pub mod memory;
pub mod procs;
pub mod source;
pub mod suite;

const USAGE: &str = "\
usage: bench [options]          one load run against a running server
  --addr HOST:PORT        server address (default 127.0.0.1:2525)
  --sessions N            concurrent sessions (default 1)
  --messages M            messages in total, spread over the sessions (default 1000)
  --size BYTES            message size, headers included; suffix k = 1024 (default 1k)
  --recipients R          recipients per message: NAME, NAME2, ... NAMER @localhost (default 1)
  --pipelining on|off     on: MAIL, RCPT and DATA in one write (RFC 2920); off: one command
                          per round trip (default on)
  --timeout SECS          longest wait for any reply (default 30)
  --user NAME             first recipient's mailbox (default bench)
  --check-mbox DIR        afterwards, check every message of this run is in DIR/NAME once
       bench suite --mboxd PATH [options]   what `make bench` runs
  --rounds N              rounds of the cases (default 5)
  --growth-rounds N       rounds of the growth curves (default: rounds, at most 3)
  --smtp-sink PATH|none   Postfix's smtp-sink to compare with (default: found in PATH, /usr/sbin)
  --smtp-source PATH|none Postfix's smtp-source as a second generator (default: found likewise)
  --parts LIST            any of cases,source,growth,memory (default all)
  --idle-sessions N       idle sessions for the memory table, with --workers N (default 1000)
  --starts N              mboxd start-ups timed (default 20)";

/// One load run's settings.
#[derive(Clone, Debug)]
pub struct Options {
    /// The server to send to.
    pub addr: SocketAddr,
    /// Concurrent sessions.
    pub sessions: usize,
    /// Messages in total, spread over the sessions.
    pub messages: usize,
    /// Size of each message in octets, headers included: exact unless the headers alone are
    /// longer (see [`Messages::write`]).
    pub size: usize,
    /// Recipients per message.
    pub recipients: usize,
    /// Send MAIL, RCPT and DATA in one write (RFC 2920) instead of one per round trip.
    pub pipelining: bool,
    /// Longest wait for any reply.
    pub timeout: Duration,
    /// The first recipient's local part; further ones are NAME2, NAME3, ...
    pub user: String,
    /// Where to look for the mbox files afterwards, if at all.
    pub check_mbox: Option<PathBuf>,
}

impl Options {
    /// One session, 1000 messages of 1 KiB to `bench@localhost` at `addr`, pipelined.
    pub fn new(addr: SocketAddr) -> Options {
        Options {
            addr,
            sessions: 1,
            messages: 1000,
            size: 1024,
            recipients: 1,
            pipelining: true,
            timeout: Duration::from_secs(30),
            user: "bench".to_string(),
            check_mbox: None,
        }
    }

    /// The local part of recipient `i` (0-based).
    pub fn recipient(&self, i: usize) -> String {
        if i == 0 {
            self.user.clone()
        } else {
            format!("{}{}", self.user, i + 1)
        }
    }
}

/// What one run measured.
#[derive(Clone, Debug)]
pub struct Report {
    /// Messages acknowledged with 250.
    pub messages: usize,
    /// Octets of message content sent (without the final `.` line).
    pub bytes: u64,
    /// From the first connect to the last QUIT reply.
    pub elapsed: Duration,
    /// Final `.` sent → 250 received, one per message, sorted.
    pub latencies: Vec<Duration>,
    /// The tag in every message's `X-Bench-Id` header, to tell this run's mail from others'.
    pub tag: String,
}

impl Report {
    /// Messages per second.
    pub fn msg_per_s(&self) -> f64 {
        self.messages as f64 / self.elapsed.as_secs_f64()
    }

    /// Megabytes (10^6 octets) of message content per second.
    pub fn mb_per_s(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.elapsed.as_secs_f64()
    }

    /// The `p`-quantile latency (nearest rank), `p` in (0, 1].
    pub fn percentile(&self, p: f64) -> Duration {
        let n = self.latencies.len();
        if n == 0 {
            return Duration::ZERO;
        }
        let rank = ((p * n as f64).ceil() as usize).clamp(1, n);
        self.latencies[rank - 1]
    }

    /// One line for humans.
    pub fn summary(&self) -> String {
        format!(
            "{} msgs in {:.2} s: {:.0} msg/s, {:.2} MB/s, p50 {:.3} ms, p99 {:.3} ms",
            self.messages,
            self.elapsed.as_secs_f64(),
            self.msg_per_s(),
            self.mb_per_s(),
            ms(self.percentile(0.50)),
            ms(self.percentile(0.99)),
        )
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// A client connection that reads whole replies and treats a timeout as a failure.
pub struct Client {
    stream: TcpStream,
    reader: BufReader<TcpStream>,
    line: String,
    label: String,
}

impl Client {
    fn connect(addr: SocketAddr, timeout: Duration, label: String) -> Result<Client, String> {
        let stream = TcpStream::connect_timeout(&addr, timeout)
            .map_err(|e| format!("{label}: cannot connect to {addr}: {e}"))?;
        let setup = |s: &TcpStream| -> std::io::Result<BufReader<TcpStream>> {
            s.set_read_timeout(Some(timeout))?;
            s.set_write_timeout(Some(timeout))?;
            // The final `.` must leave at once, not wait for an ACK (Nagle).
            s.set_nodelay(true)?;
            Ok(BufReader::new(s.try_clone()?))
        };
        let reader = setup(&stream).map_err(|e| format!("{label}: socket setup: {e}"))?;
        Ok(Client {
            stream,
            reader,
            line: String::new(),
            label,
        })
    }

    fn send(&mut self, bytes: &[u8], what: &str) -> Result<(), String> {
        self.stream
            .write_all(bytes)
            .map_err(|e| format!("{}: sending {what}: {e}", self.label))
    }

    /// Reads one reply (all its lines, each at most 4096 octets and with the same code) and
    /// returns its code and text.
    fn reply(&mut self, what: &str) -> Result<(u16, String), String> {
        let mut text = String::new();
        let mut first = None;
        for _ in 0..1000 {
            self.line.clear();
            match (&mut self.reader).take(4096).read_line(&mut self.line) {
                Ok(0) => {
                    return Err(format!(
                        "{}: connection closed waiting for the reply to {what}",
                        self.label
                    ));
                }
                Ok(_) => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return Err(format!(
                        "{}: timeout waiting for the reply to {what}",
                        self.label
                    ));
                }
                Err(e) => return Err(format!("{}: reading the reply to {what}: {e}", self.label)),
            }
            if !self.line.ends_with('\n') {
                return Err(format!(
                    "{}: a line of the reply to {what} is unterminated or over 4096 octets: {text}{:?}",
                    self.label, self.line
                ));
            }
            let line = self.line.trim_end_matches(['\r', '\n']);
            text.push_str(line);
            text.push('\n');
            let code = line.get(..3).and_then(|c| c.parse::<u16>().ok());
            if let (Some(first), Some(code)) = (first, code)
                && first != code
            {
                return Err(format!(
                    "{}: the code changed inside the reply to {what}: {text:?}",
                    self.label
                ));
            }
            first = first.or(code);
            match (code, line.as_bytes().get(3)) {
                (Some(code), Some(b' ') | None) => return Ok((code, text)),
                (Some(_), Some(b'-')) => continue,
                _ => {
                    return Err(format!(
                        "{}: malformed reply to {what}: {line:?}",
                        self.label
                    ));
                }
            }
        }
        Err(format!("{}: endless reply to {what}", self.label))
    }

    fn expect(&mut self, code: u16, what: &str) -> Result<String, String> {
        let (got, text) = self.reply(what)?;
        if got == code {
            Ok(text)
        } else {
            Err(format!(
                "{}: {what}: expected {code}, got {:?}",
                self.label,
                text.trim_end()
            ))
        }
    }
}

/// The head of a message: its headers, with the run's id, and the blank line.
fn message_head(opts: &Options, id: &str) -> Vec<u8> {
    format!(
        "From: <bench@localhost>\r\nTo: <{}@localhost>\r\nSubject: bench\r\nX-Bench-Id: {id}\r\n\r\n",
        opts.user
    )
    .into_bytes()
}

/// A body of exactly `n` octets in CRLF lines of at most 78 (`n` = 1 gives 2: no line is one
/// octet long), then the final `.` line.
fn filler(n: usize) -> Vec<u8> {
    let mut body = Vec::with_capacity(n + 3);
    let mut left = n;
    while left > 0 {
        // From 79, a full line would leave one octet, too few for a line: leave two.
        let line = if left == 79 { 77 } else { left.clamp(2, 78) };
        body.extend(std::iter::repeat_n(b'x', line - 2));
        body.extend_from_slice(b"\r\n");
        left = left.saturating_sub(line);
    }
    body.extend_from_slice(b".\r\n");
    body
}

/// The id of message `seq` of session `index`: fixed width, so every head of a run has one
/// length and one body fits them all.
fn message_id(tag: &str, index: usize, seq: usize) -> String {
    format!("{tag}.{index:05}.{seq:09}")
}

/// Makes the messages a session sends. The body is made once (a 10 MiB one costs time to fill)
/// and again only if the head's length changes (ids of one run have one length); only the head
/// changes from message to message.
pub struct Messages<'a> {
    opts: &'a Options,
    /// The body, with the length of the head it was made for.
    body: Option<(usize, Vec<u8>)>,
}

impl<'a> Messages<'a> {
    /// Messages for the run `opts` describes.
    pub fn new(opts: &'a Options) -> Messages<'a> {
        Messages { opts, body: None }
    }

    /// Puts the message `id` into `buffer`, in place of what was there: `opts.size` octets
    /// (whole CRLF lines, headers included), then `.` CRLF; where the headers alone are that
    /// long, just the headers, and one octet short of it, an empty line more.
    pub fn write(&mut self, id: &str, buffer: &mut Vec<u8>) {
        let head = message_head(self.opts, id);
        if self
            .body
            .as_ref()
            .is_none_or(|(made_for, _)| *made_for != head.len())
        {
            let body = filler(self.opts.size.saturating_sub(head.len()));
            self.body = Some((head.len(), body));
        }
        let (_, body) = self.body.as_ref().expect("made above");
        buffer.clear();
        buffer.extend_from_slice(&head);
        buffer.extend_from_slice(body);
    }
}

/// How a session stopped by another's failure ends; never reported as the cause.
const STOPPED: &str = "stopped because another session failed";

/// What one session sent: octets of content and one latency per message.
type SessionResult = Result<(u64, Vec<Duration>), String>;

fn session(
    opts: &Options,
    index: usize,
    count: usize,
    tag: &str,
    abort: &AtomicBool,
) -> SessionResult {
    let mut c = Client::connect(opts.addr, opts.timeout, format!("session {index}"))?;
    c.expect(220, "the greeting")?;
    c.send(b"EHLO bench.localhost\r\n", "EHLO")?;
    let ehlo = c.expect(250, "EHLO")?;
    if opts.pipelining && !ehlo.lines().any(|l| l.get(4..) == Some("PIPELINING")) {
        return Err(format!(
            "session {index}: the server does not offer PIPELINING"
        ));
    }
    let mut envelope = Vec::new();
    let mail = b"MAIL FROM:<bench@localhost>\r\n";
    let rcpts: Vec<String> = (0..opts.recipients)
        .map(|i| format!("RCPT TO:<{}@localhost>\r\n", opts.recipient(i)))
        .collect();
    if opts.pipelining {
        envelope.extend_from_slice(mail);
        for r in &rcpts {
            envelope.extend_from_slice(r.as_bytes());
        }
        envelope.extend_from_slice(b"DATA\r\n");
    }
    let mut bytes = 0;
    let mut latencies = Vec::with_capacity(count);
    let mut messages = Messages::new(opts);
    let mut buffer = Vec::new();
    for seq in 0..count {
        if abort.load(Ordering::Relaxed) {
            return Err(format!("session {index}: {STOPPED}"));
        }
        messages.write(&message_id(tag, index, seq), &mut buffer);
        if opts.pipelining {
            c.send(&envelope, "MAIL, RCPT and DATA")?;
            c.expect(250, "MAIL")?;
            for _ in &rcpts {
                c.expect(250, "RCPT")?;
            }
            c.expect(354, "DATA")?;
        } else {
            c.send(mail, "MAIL")?;
            c.expect(250, "MAIL")?;
            for r in &rcpts {
                c.send(r.as_bytes(), "RCPT")?;
                c.expect(250, "RCPT")?;
            }
            c.send(b"DATA\r\n", "DATA")?;
            c.expect(354, "DATA")?;
        }
        c.send(&buffer, "the message")?;
        let sent = Instant::now();
        c.expect(250, "the final .")?;
        latencies.push(sent.elapsed());
        bytes += (buffer.len() - 3) as u64;
    }
    c.send(b"QUIT\r\n", "QUIT")?;
    c.expect(221, "QUIT")?;
    Ok((bytes, latencies))
}

/// A tag unique enough to tell this run's messages from earlier ones in the same mbox.
fn new_tag() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{}-{nanos:x}", std::process::id())
}

/// Runs the load `opts` describes; an error names the first failure.
pub fn run(opts: &Options) -> Result<Report, String> {
    if opts.sessions == 0 || opts.recipients == 0 {
        return Err("--sessions and --recipients must be at least 1".to_string());
    }
    let tag = new_tag();
    let abort = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let mut handles = Vec::new();
    for index in 0..opts.sessions {
        let count =
            opts.messages / opts.sessions + usize::from(index < opts.messages % opts.sessions);
        let (opts, tag, abort) = (opts.clone(), tag.clone(), Arc::clone(&abort));
        let handle = thread::Builder::new()
            .name(format!("bench-session-{index}"))
            .spawn(move || {
                let result = session(&opts, index, count, &tag, &abort);
                if result.is_err() {
                    abort.store(true, Ordering::Relaxed);
                }
                result
            })
            .map_err(|e| format!("cannot start a session thread: {e}"))?;
        handles.push(handle);
    }
    let mut bytes = 0;
    let mut latencies = Vec::with_capacity(opts.messages);
    let mut first_error: Option<String> = None;
    for handle in handles {
        match handle.join() {
            Ok(Ok((b, l))) => {
                bytes += b;
                latencies.extend(l);
            }
            Ok(Err(e)) => {
                // The first real cause, not a session it stopped.
                let stopped = |e: &str| e.contains(STOPPED);
                let replace = match &first_error {
                    None => true,
                    Some(f) => stopped(f) && !stopped(&e),
                };
                if replace {
                    first_error = Some(e);
                }
            }
            Err(_) => {
                first_error.get_or_insert("a session thread panicked".to_string());
            }
        }
    }
    let elapsed = start.elapsed();
    if let Some(e) = first_error {
        return Err(e);
    }
    latencies.sort_unstable();
    let report = Report {
        messages: latencies.len(),
        bytes,
        elapsed,
        latencies,
        tag,
    };
    if let Some(dir) = &opts.check_mbox {
        for i in 0..opts.recipients {
            check_mbox(dir, &opts.recipient(i), &report.tag, opts.messages)?;
        }
    }
    Ok(report)
}

/// Reads the mbox at `path`; a missing or unreadable one is an error.
pub fn open_mbox(path: &Path) -> Result<mboxd::mbox::Mailbox, String> {
    mboxd::mbox::Mailbox::open(path)
        .map_err(|e| format!("mbox check: cannot read {}: {e}", path.display()))
}

/// Checks that `dir/user` holds exactly the messages `0..expected` of run `tag`, each once.
pub fn check_mbox(dir: &Path, user: &str, tag: &str, expected: usize) -> Result<(), String> {
    let path = dir.join(user);
    let mbox = open_mbox(&path)?;
    let prefix = format!("{tag}.");
    let mut ids: Vec<&str> = mbox
        .messages()
        .iter()
        .filter_map(|m| m.header("X-Bench-Id"))
        .filter(|id| id.starts_with(&prefix))
        .collect();
    let stored = ids.len();
    ids.sort_unstable();
    ids.dedup();
    if ids.len() != stored {
        return Err(format!(
            "mbox check FAILED: {}: {} messages of this run stored more than once",
            path.display(),
            stored - ids.len()
        ));
    }
    if stored != expected {
        return Err(format!(
            "mbox check FAILED: {}: {stored} of {expected} acknowledged messages are there",
            path.display()
        ));
    }
    Ok(())
}

fn parse_args(argv: &[String]) -> Result<Options, String> {
    let mut opts = Options::new(SocketAddr::from(([127, 0, 0, 1], 2525)));
    let mut it = argv.iter();
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        let number = || -> Result<usize, String> {
            let (digits, unit) = match value.strip_suffix(['k', 'K']) {
                Some(d) => (d, 1024),
                None => (value.as_str(), 1),
            };
            digits
                .parse::<usize>()
                .map(|n| n * unit)
                .map_err(|_| format!("{flag}: not a number: {value}"))
        };
        match flag.as_str() {
            "--addr" => {
                opts.addr = value
                    .to_socket_addrs()
                    .ok()
                    .and_then(|mut a| a.next())
                    .ok_or(format!("--addr: not an address: {value}"))?;
            }
            "--sessions" => opts.sessions = number()?,
            "--messages" => opts.messages = number()?,
            "--size" => opts.size = number()?,
            "--recipients" => opts.recipients = number()?,
            "--timeout" => opts.timeout = Duration::from_secs(number()? as u64),
            "--pipelining" => {
                opts.pipelining = match value.as_str() {
                    "on" => true,
                    "off" => false,
                    _ => return Err(format!("--pipelining: on or off, not {value}")),
                }
            }
            "--user" => opts.user = value.clone(),
            "--check-mbox" => opts.check_mbox = Some(PathBuf::from(value)),
            _ => return Err(format!("unknown option {flag}")),
        }
    }
    Ok(opts)
}

fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    if argv.iter().any(|a| a == "-h" || a == "--help") {
        println!("{USAGE}");
        return;
    }
    let result = match argv.split_first() {
        Some((first, rest)) if first == "suite" => suite::suite(rest),
        _ => parse_args(&argv)
            .and_then(|opts| run(&opts))
            .map(|r| println!("{}", r.summary())),
    };
    if let Err(e) = result {
        eprintln!("bench: FAILED: {e}");
        std::process::exit(1);
    }
}
