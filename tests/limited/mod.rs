//! Running the binary under a small `RLIMIT_NOFILE` and watching its descriptors and CPU time
//! through `/proc`, for the tests of issue 8's item 3 (`tests/descriptors.rs`,
//! `tests/exhaustion.rs`).
//!
//! The binary is started as `sh -c 'ulimit -n N || exit 97; exec mboxd ...'`, so the limit is
//! both soft and hard and mboxd cannot raise it; or with `ulimit -S -n N`, which sets only the
//! soft limit, for a test that mboxd raises it. Where the shell cannot set the limit, the
//! helpers print `skipped:` and return `None`, and the test passes.
#![allow(dead_code)]

use std::fs;
use std::io::Read;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::support::{BIN, ChildGuard, read_lines_within, signal, wait_bounded};

/// The binary under `ulimit -n nofile` (soft and hard), logging at info to a captured stderr;
/// `None` (after printing `skipped:`) when the shell cannot set that limit.
pub fn spawn_limited(
    nofile: u64,
    args: &[&str],
) -> Option<(ChildGuard, SocketAddr, JoinHandle<String>)> {
    spawn_ulimit(&format!("-n {nofile}"), args)
}

/// The binary under `ulimit <limit>` (`-n 64`, `-S -n 256`), as [`spawn_limited`].
pub fn spawn_ulimit(
    limit: &str,
    args: &[&str],
) -> Option<(ChildGuard, SocketAddr, JoinHandle<String>)> {
    // `$0` unquoted: the limit's words are the arguments of `ulimit`.
    let script = "ulimit $0 || exit 97; exec \"$@\"";
    let probe = Command::new("sh")
        .args(["-c", script, limit, "true"])
        .status();
    if !probe.is_ok_and(|s| s.success()) {
        println!("skipped: sh cannot set `ulimit {limit}` here");
        return None;
    }
    let mut child = ChildGuard(
        Command::new("sh")
            .args(["-c", script, limit, BIN])
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
    let addr = listening_addr(&mut child);
    Some((child, addr, log))
}

/// The address of the binary's first `listening on` line on its stdout (within 10 s).
pub fn listening_addr(child: &mut ChildGuard) -> SocketAddr {
    let stdout = child.stdout.take().expect("stdout");
    let line = read_lines_within(stdout, 1, Duration::from_secs(10)).remove(0);
    line.trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected line {line:?}"))
        .parse()
        .expect("an address")
}

/// Sends SIGTERM and checks the binary exits 0 within `limit`.
pub fn stop_cleanly(child: &mut ChildGuard, limit: Duration) {
    signal(child, "TERM");
    assert_eq!(wait_bounded(child, limit).code(), Some(0));
}

/// Descriptors `pid` has open now (0 once it is gone; any other error fails).
pub fn open_descriptors(pid: u32) -> usize {
    match fs::read_dir(format!("/proc/{pid}/fd")) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        dir => dir.expect("/proc/PID/fd").count(),
    }
}

/// CPU time `pid` has used, in clock ticks (utime + stime, fields 14 and 15 of its stat line,
/// counted after the command name's closing parenthesis).
pub fn cpu_ticks(pid: u32) -> u64 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let (_, rest) = stat.rsplit_once(')').expect("a stat line");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    fields[14 - 3].parse::<u64>().unwrap() + fields[15 - 3].parse::<u64>().unwrap()
}

/// Waits until `pid` holds `n` descriptors, for at most `limit`; false if it never does.
pub fn wait_for_descriptors(pid: u32, n: usize, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if open_descriptors(pid) >= n {
            return true;
        }
        thread::sleep(Duration::from_millis(5));
    }
    false
}

/// The limits on open files of process `pid`: (soft, hard), from `/proc/<pid>/limits`.
pub fn nofile_limits(pid: &str) -> (String, String) {
    let limits = fs::read_to_string(format!("/proc/{pid}/limits")).expect("limits");
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("a Max open files line");
    let fields: Vec<&str> = line.split_whitespace().collect();
    (fields[3].to_string(), fields[4].to_string())
}
