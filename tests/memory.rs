//! The memory figure of issue 8, over real sockets against the `mboxd` binary with default flags:
//! 64 sessions each send a 10 MiB message at once. Every message is stored whole (250) or not at
//! all (452 4.3.1), and the server's peak resident memory (VmHWM) stays under the in-flight
//! budget (`--max-inflight-bytes`, 128 MiB by default) plus 32 MiB.

mod support;

use std::fs;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use support::{Client, mbox_entries, signal, spawn, wait_bounded};

const SESSIONS: usize = 64;
/// Each message: a Subject line, a blank line and this many 1000-octet lines: just under the
/// default `--max-message-size` of 10 MiB.
const LINES: usize = 10_470;
const MIB: u64 = 1024 * 1024;
/// The default budget and the allowance the issue gives on top of it.
const BUDGET: u64 = 128 * MIB;
const ALLOWANCE: u64 = 32 * MIB;

/// The body all sessions send: numbered lines, so a misplaced or lost piece shows.
fn body() -> Vec<u8> {
    let mut body = Vec::with_capacity(LINES * 1000);
    for i in 0..LINES {
        let start = body.len();
        body.extend_from_slice(format!("{i:08} ").as_bytes());
        body.resize(start + 998, b'a' + (i % 26) as u8);
        body.extend_from_slice(b"\r\n");
    }
    body
}

/// The kernel's record of a process's peak resident set, in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("a VmHWM line")
}

#[test]
fn sixty_four_sessions_of_ten_mib_at_once_stay_within_the_budget() {
    if !std::path::Path::new("/proc/self/status").exists() {
        println!("skipped: no /proc to read the peak RSS from");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mail = dir.path().join("mail");
    let (mut child, addrs) = spawn(
        &[
            "--listen",
            "127.0.0.1:0",
            "--mail-dir",
            mail.to_str().unwrap(),
        ],
        1,
    );
    let addr = addrs[0];
    let body = Arc::new(body());
    assert!(body.len() + 32 < 10 * MIB as usize);
    // Every session is inside DATA before any sends its message.
    let barrier = Arc::new(Barrier::new(SESSIONS));
    let started = Instant::now();
    let clients: Vec<_> = (0..SESSIONS)
        .map(|n| {
            let body = Arc::clone(&body);
            let barrier = Arc::clone(&barrier);
            thread::Builder::new()
                .name(format!("client-{n}"))
                .spawn(move || {
                    let mut c = Client::connect_with_timeout(addr, Duration::from_secs(120));
                    assert_eq!(c.read_reply().code, 220);
                    c.expect("EHLO big.test", 250);
                    c.expect("MAIL FROM:<a@b.test>", 250);
                    c.expect(&format!("RCPT TO:<user{n}@localhost>"), 250);
                    c.expect("DATA", 354);
                    barrier.wait();
                    c.send(format!("Subject: m{n}\r\n\r\n").as_bytes());
                    c.send(&body);
                    c.send(b".\r\n");
                    let r = c.read_reply();
                    c.expect("QUIT", 221);
                    (r.code, r.text())
                })
                .unwrap()
        })
        .collect();
    let replies: Vec<(u16, String)> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    let elapsed = started.elapsed();
    let peak = peak_rss_kib(child.id());
    signal(&child, "TERM");
    assert!(wait_bounded(&mut child, Duration::from_secs(30)).success());

    let accepted = replies.iter().filter(|(code, _)| *code == 250).count();
    let refused = replies.iter().filter(|(code, _)| *code == 452).count();
    println!(
        "{SESSIONS} sessions x {} bytes at once: {accepted} got 250, {refused} got 452; \
         peak RSS (VmHWM) {} KiB = {:.1} MiB (limit {} MiB); {:.1} s",
        body.len() + 18,
        peak,
        peak as f64 / 1024.0,
        (BUDGET + ALLOWANCE) / MIB,
        elapsed.as_secs_f64()
    );
    for (n, (code, text)) in replies.iter().enumerate() {
        assert!(*code == 250 || *code == 452, "session {n}: {code} {text}");
        if *code == 452 {
            assert!(text.starts_with("4.3.1 "), "session {n}: {text}");
        }
    }
    assert!(accepted > 0, "no message fitted the budget");
    // The stored form: CRLF becomes LF; no line needs quoting.
    let mut stored = Vec::with_capacity(body.len());
    for line in body.split_inclusive(|&b| b == b'\n') {
        stored.extend_from_slice(&line[..line.len() - 2]);
        stored.push(b'\n');
    }
    for (n, (code, _)) in replies.iter().enumerate() {
        let path = mail.join(format!("user{n}"));
        if *code != 250 {
            assert!(!path.exists(), "session {n} got 452 but {path:?} exists");
            continue;
        }
        let mbox = fs::read(&path).unwrap();
        let text = String::from_utf8(mbox).unwrap();
        let entries = mbox_entries(&text);
        assert_eq!(entries.len(), 1, "session {n}");
        let subject = format!("\nSubject: m{n}\n\n");
        let at = entries[0].find(&subject).expect("the Subject line") + subject.len();
        let rest = &entries[0].as_bytes()[at..];
        assert!(
            rest.len() == stored.len() + 1 && rest.starts_with(&stored) && rest.ends_with(b"\n\n"),
            "session {n}: the stored message is not whole ({} bytes after the header)",
            rest.len()
        );
    }
    assert!(
        peak * 1024 < BUDGET + ALLOWANCE,
        "peak RSS {peak} KiB is over the budget plus 32 MiB"
    );
}
