//! Descriptors stay bounded (issue 8, item 3), over real sockets against the binary run under a
//! small `RLIMIT_NOFILE`: a catch-all flood spreading mail over many new mailboxes neither runs
//! the writer out of descriptors nor makes an unrelated delivery fail, and creates no more
//! mailbox files than `--max-mailboxes` allows.
//!
//! The binary is started as `sh -c 'ulimit -n N && exec mboxd ...'`, so the limit is both soft
//! and hard and mboxd cannot raise it. Where the shell cannot set the limit, the tests print
//! `skipped:` and pass.

mod support;

use std::fs;
use std::io::Read;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use support::{BIN, ChildGuard, Client, read_lines_within, signal, wait_bounded};

/// The binary under `ulimit -n nofile`, logging at info to a captured stderr; `None` (after
/// printing `skipped:`) when the shell cannot set that limit.
fn spawn_limited(
    nofile: u64,
    args: &[&str],
) -> Option<(ChildGuard, SocketAddr, JoinHandle<String>)> {
    let script = "ulimit -n \"$0\" || exit 97; exec \"$@\"";
    let probe = Command::new("sh")
        .args(["-c", script, &nofile.to_string(), "true"])
        .status();
    if !probe.is_ok_and(|s| s.success()) {
        println!("skipped: sh cannot set `ulimit -n {nofile}` here");
        return None;
    }
    let mut child = ChildGuard(
        Command::new("sh")
            .args(["-c", script, &nofile.to_string(), BIN])
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn sh"),
    );
    let mut stderr = child.stderr.take().expect("stderr");
    let log = thread::spawn(move || {
        let mut text = Vec::new();
        let _ = stderr.read_to_end(&mut text);
        String::from_utf8_lossy(&text).into_owned()
    });
    let stdout = child.stdout.take().expect("stdout");
    let line = read_lines_within(stdout, 1, Duration::from_secs(10)).remove(0);
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected line {line:?}"))
        .parse()
        .expect("an address");
    Some((child, addr, log))
}

/// Descriptors `pid` has open now (0 once it is gone).
fn open_descriptors(pid: u32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// CPU time `pid` has used, in clock ticks (utime + stime, fields 14 and 15 of its stat line,
/// counted after the command name's closing parenthesis).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let (_, rest) = stat.rsplit_once(')').expect("a stat line");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    fields[14 - 3].parse::<u64>().unwrap() + fields[15 - 3].parse::<u64>().unwrap()
}

/// Waits until `pid` holds `n` descriptors, for at most `limit`; false if it never does.
fn wait_for_descriptors(pid: u32, n: usize, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if open_descriptors(pid) >= n {
            return true;
        }
        thread::sleep(Duration::from_millis(5));
    }
    false
}

/// A flood of connections takes every descriptor the server may have. accept backs off (one
/// log line per episode, no spinning), a delivery in progress waits for a descriptor instead of
/// failing, and once the flood ends the server serves again.
#[test]
fn a_connection_flood_that_takes_every_descriptor_is_waited_out() {
    const LIMIT: usize = 64;
    let dir = tempfile::tempdir().unwrap();
    let mail = dir.path().join("mail");
    let Some((mut child, addr, log)) = spawn_limited(
        LIMIT as u64,
        &[
            "--listen",
            "127.0.0.1:0",
            "--hostname",
            "mx.test",
            "--domain",
            "mx.test",
            "--mail-dir",
            mail.to_str().unwrap(),
            "--workers",
            "2",
            // Connections waiting for a worker hold their descriptor this long before 421.
            "--queue-wait",
            "3",
        ],
    ) else {
        return;
    };
    let pid = child.id();
    // A client inside a message to a new mailbox, before the flood.
    let mut good = Client::connect_with_timeout(addr, Duration::from_secs(60));
    assert_eq!(good.read_reply().code, 220);
    good.expect("EHLO good.test", 250);
    good.expect("MAIL FROM:<friend@good.test>", 250);
    good.expect("RCPT TO:<fresh@mx.test>", 250);
    good.expect("DATA", 354);
    good.send(b"Subject: through the flood\r\n\r\nstill here\r\n");
    // The flood: more connections than the server has descriptors (the rest wait in the
    // listen backlog).
    let flood: Vec<std::net::TcpStream> = (0..100)
        .map(|_| std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5)))
        .collect::<Result<_, _>>()
        .expect("the backlog takes the flood");
    assert!(
        wait_for_descriptors(pid, LIMIT, Duration::from_secs(10)),
        "the server never used its {LIMIT} descriptors: {}",
        open_descriptors(pid)
    );
    // No descriptor is free for the mailbox: the writer must wait, not fail.
    let (ticks, since) = (cpu_ticks(pid), Instant::now());
    good.send(b".\r\n");
    let end = good.read_reply();
    let waited = since.elapsed();
    let used = cpu_ticks(pid) - ticks;
    assert_eq!(end.code, 250, "the delivery failed: {end:?}");
    good.expect("QUIT", 221);
    // The flood ends; a newcomer is served.
    drop(flood);
    let mut late = Client::connect_with_timeout(addr, Duration::from_secs(10));
    assert_eq!(late.read_reply().code, 220);
    late.expect("EHLO late.test", 250);
    let r = late.send_mail("a@late.test", &["fresh@mx.test"], "Subject: after\n\nafter");
    assert_eq!(r.code, 250);
    late.expect("QUIT", 221);
    signal(&child, "TERM");
    assert_eq!(
        wait_bounded(&mut child, Duration::from_secs(20)).code(),
        Some(0)
    );
    let log = log.join().expect("log");
    let episodes = log
        .lines()
        .filter(|l| l.contains("accept") && l.contains("failed"))
        .count();
    let recoveries = log.lines().filter(|l| l.contains("works again")).count();
    println!(
        "flood under RLIMIT_NOFILE {LIMIT}: the delivery waited {} ms for a descriptor, the server \
         used {used} CPU ticks meanwhile; {episodes} accept back-off episode(s) logged, \
         {recoveries} recover(ies)",
        waited.as_millis()
    );
    assert!(
        log.contains("out of descriptors opening mailbox"),
        "the writer never ran short: the test did not test it"
    );
    assert!(
        (1..=5).contains(&episodes),
        "{episodes} accept warnings: one per episode is expected"
    );
    assert!(recoveries >= 1, "accept never logged its recovery");
    // Clock ticks are 1/100 s: waiting must not spin a core (a spinning acceptor uses them all).
    let allowed = waited.as_millis() as u64 / 10 / 4 + 5;
    assert!(
        used <= allowed,
        "{used} ticks of CPU in {waited:?}: more than {allowed}"
    );
    let stored = fs::read_to_string(mail.join("fresh")).unwrap();
    assert!(stored.contains("still here") && stored.contains("\nafter\n"));
}
