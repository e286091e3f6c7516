//! Descriptors stay bounded (issue 8, item 3), over real sockets against the binary run under a
//! small `RLIMIT_NOFILE`: a catch-all flood spreading mail over many new mailboxes neither runs
//! the writer out of descriptors nor makes an unrelated delivery fail, and creates no more
//! mailbox files than `--max-mailboxes` allows.
//!
//! The binary runs under `ulimit -n 1024` (soft and hard; see `tests/limited/`); where the shell
//! cannot set it, the tests print `skipped:` and pass. One test, of the 452 past the bound, runs
//! an in-process server without a limit. A connection flood that takes every
//! descriptor is in `tests/exhaustion.rs`.

mod limited;
mod support;

use std::fs;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use limited::{open_descriptors, spawn_limited};
use support::{Client, signal, wait_bounded};

/// The limit of the issue's attack.
const NOFILE: u64 = 1024;
/// Attacking sessions, and new mailboxes each spreads its messages over.
const SESSIONS: usize = 20;
const SPREAD: usize = 100;
/// Messages the unrelated client delivers while the attack runs.
const GOOD_MESSAGES: usize = 20;

/// Samples a process's descriptor count until stopped; yields the highest seen. A measurement,
/// not a synchronisation: nothing waits on it.
struct Sampler {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<usize>,
}

impl Sampler {
    fn start(pid: u32) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let handle = thread::spawn(move || {
            let mut peak = 0;
            while !flag.load(Ordering::SeqCst) {
                peak = peak.max(open_descriptors(pid));
                thread::sleep(Duration::from_millis(2));
            }
            peak
        });
        Sampler { stop, handle }
    }

    fn peak(self) -> usize {
        self.stop.store(true, Ordering::SeqCst);
        let peak = self.handle.join().expect("sampler");
        assert!(peak > 0, "the sampler never saw the server's descriptors");
        peak
    }
}

/// What the attackers got, all sessions together.
#[derive(Default)]
struct Tally {
    accepted: AtomicUsize,
    refused_452: AtomicUsize,
    delivered: AtomicUsize,
    failed: AtomicUsize,
}

/// One attacking session: `rounds` messages, each to `SPREAD` names no one else uses (fewer when
/// a RCPT gets 452). A RCPT's 452 does not count toward the server's error limit, so the
/// session is never closed, and any reply but 250 or 452 to a RCPT fails the test.
fn attacker(addr: SocketAddr, t: usize, rounds: usize, tally: &Tally) {
    let mut c = Client::connect(addr);
    assert_eq!(c.read_reply().code, 220);
    c.expect(&format!("EHLO spread{t}.test"), 250);
    for round in 0..rounds {
        c.expect("MAIL FROM:<spam@spread.test>", 250);
        let mut accepted = 0;
        for r in 0..SPREAD {
            let reply = c.cmd(&format!("RCPT TO:<s{t}x{round}x{r}@mx.test>"));
            match reply.code {
                250 => {
                    accepted += 1;
                    tally.accepted.fetch_add(1, Ordering::Relaxed);
                }
                452 => {
                    // The bound: send what was accepted (a session that went on would only
                    // be closed for too many errors).
                    tally.refused_452.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                other => panic!("RCPT got {other}: {reply:?}"),
            }
        }
        if accepted == 0 {
            c.expect("RSET", 250);
            continue;
        }
        c.expect("DATA", 354);
        c.send(format!("Subject: spread {t} {round}\r\n\r\nhello\r\n.\r\n").as_bytes());
        let end = c.read_reply();
        assert!(
            end.code == 250 || end.code / 100 == 4,
            "end of data: {end:?}"
        );
        let count = if end.code == 250 {
            &tally.delivered
        } else {
            &tally.failed
        };
        count.fetch_add(1, Ordering::Relaxed);
    }
    c.expect("QUIT", 221);
}

/// The unrelated client: `GOOD_MESSAGES` messages to an existing mailbox; the reply code of each.
fn good_client(addr: SocketAddr) -> Vec<u16> {
    let mut c = Client::connect(addr);
    assert_eq!(c.read_reply().code, 220);
    c.expect("EHLO good.test", 250);
    let codes = (0..GOOD_MESSAGES)
        .map(|n| {
            c.send_mail(
                "friend@good.test",
                &["existing@mx.test"],
                &format!("Subject: good {n}\n\nnot spam {n}"),
            )
            .code
        })
        .collect();
    c.expect("QUIT", 221);
    codes
}

/// Mailbox files in `dir` (regular files, not dot files, not dotlocks), and lock files left.
fn census(dir: &Path) -> (usize, Vec<String>) {
    let mut mailboxes = 0;
    let mut locks = Vec::new();
    for entry in fs::read_dir(dir).expect("read the mail dir") {
        let entry = entry.expect("entry");
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".lock") || name.contains(".lock.mboxd-") {
            locks.push(name);
        } else if !name.starts_with('.') && entry.file_type().expect("type").is_file() {
            mailboxes += 1;
        }
    }
    (mailboxes, locks)
}

/// The figures of one attack.
struct Figures {
    pre_existing: usize,
    files_after: usize,
    peak_descriptors: usize,
    good_250s: usize,
    tally: Tally,
    log: String,
    elapsed: Duration,
}

/// Runs the issue's attack: `SESSIONS` sessions each spreading `rounds` messages over `SPREAD`
/// new names per round, and at the same time the unrelated client. `None` when skipped.
fn attack(bound: Option<usize>, rounds: usize) -> Option<Figures> {
    let dir = tempfile::tempdir().unwrap();
    let mail = dir.path().join("mail");
    fs::create_dir(&mail).unwrap();
    // The good client's mailbox, a few others, and files that are no mailbox a RCPT could name:
    // a dot file (not counted by `census` either), and an upper-case name (counted there).
    for name in ["existing", "alice", "bob", "carol", ".hidden", "README"] {
        fs::write(mail.join(name), b"").unwrap();
    }
    let (pre_existing, _) = census(&mail);
    let mut args = vec![
        "--listen",
        "127.0.0.1:0",
        "--hostname",
        "mx.test",
        "--domain",
        "mx.test",
        "--mail-dir",
        mail.to_str().unwrap(),
    ];
    let bound_text = bound.map(|b| b.to_string());
    if let Some(b) = &bound_text {
        args.extend(["--max-mailboxes", b]);
    }
    let (mut child, addr, log) = spawn_limited(NOFILE, &args)?;
    let pid = child.id();
    let sampler = Sampler::start(pid);
    let tally = Arc::new(Tally::default());
    let start = Arc::new(Barrier::new(SESSIONS + 1));
    let started = Instant::now();
    let attackers: Vec<_> = (0..SESSIONS)
        .map(|t| {
            let (tally, start) = (Arc::clone(&tally), Arc::clone(&start));
            thread::spawn(move || {
                start.wait();
                attacker(addr, t, rounds, &tally)
            })
        })
        .collect();
    start.wait();
    let codes = good_client(addr);
    for a in attackers {
        a.join().expect("an attacker failed");
    }
    let elapsed = started.elapsed();
    let peak_descriptors = sampler.peak();
    signal(&child, "TERM");
    assert_eq!(
        wait_bounded(&mut child, Duration::from_secs(20)).code(),
        Some(0)
    );
    let log = log.join().expect("log");
    let (files_after, locks) = census(&mail);
    assert!(locks.is_empty(), "lock files left: {locks:?}");
    let good = fs::read_to_string(mail.join("existing")).unwrap();
    let good_250s = codes.iter().filter(|&&c| c == 250).count();
    assert_eq!(
        good.matches("\nSubject: good ").count(),
        good_250s,
        "each 250 is stored once"
    );
    let tally = Arc::into_inner(tally).expect("attackers are done");
    Some(Figures {
        pre_existing,
        files_after,
        peak_descriptors,
        good_250s,
        tally,
        log,
        elapsed,
    })
}

fn report(what: &str, f: &Figures) {
    println!(
        "{what}: RLIMIT_NOFILE {NOFILE}; {} s; mailbox files {} before, {} after; peak descriptors \
         {}; attackers: {} RCPT accepted, {} refused 452, {} messages delivered, {} refused; \
         unrelated client: {}/{GOOD_MESSAGES} got 250",
        f.elapsed.as_secs_f64(),
        f.pre_existing,
        f.files_after,
        f.peak_descriptors,
        f.tally.accepted.load(Ordering::Relaxed),
        f.tally.refused_452.load(Ordering::Relaxed),
        f.tally.delivered.load(Ordering::Relaxed),
        f.tally.failed.load(Ordering::Relaxed),
        f.good_250s,
    );
}

/// The most descriptors the server may hold in these attacks: stdio and the listener, two per
/// session (the socket and the clone shutdown uses) for the 21 clients with room for sessions
/// being closed, the writer's open mailboxes (one job of `SPREAD` is committed alone) and the
/// two it may open briefly, and slack.
const DESCRIPTOR_CEILING: usize = 8 + 2 * (SESSIONS + 1 + 8) + SPREAD + 2 + 16;

#[test]
fn catch_all_spread_under_rlimit_1024_is_bounded() {
    let bound = 300;
    let Some(f) = attack(Some(bound), 3) else {
        return;
    };
    report("bounded catch-all attack (--max-mailboxes 300)", &f);
    assert_eq!(
        f.good_250s, GOOD_MESSAGES,
        "the unrelated client was refused"
    );
    // Four of the files there before count toward the bound (README, upper case, is no name a
    // RCPT can give): the attackers may create the rest of the bound, did, and no more.
    let counted = 4;
    assert_eq!(f.tally.accepted.load(Ordering::Relaxed), bound - counted);
    assert_eq!(
        f.files_after,
        f.pre_existing + bound - counted,
        "mailbox files with a bound of {bound}"
    );
    assert!(f.tally.refused_452.load(Ordering::Relaxed) > 0);
    assert_eq!(
        f.tally.failed.load(Ordering::Relaxed),
        0,
        "an attack message failed"
    );
    assert!(
        f.peak_descriptors <= DESCRIPTOR_CEILING,
        "peak {} descriptors, over {DESCRIPTOR_CEILING}",
        f.peak_descriptors
    );
    assert!(f.log.contains("descriptor limit"), "no limit logged");
    assert!(
        f.log.contains("--max-mailboxes"),
        "the bound being reached is not logged"
    );
    assert!(
        !f.log.contains("Too many open files"),
        "a descriptor ran out"
    );
}

/// The issue's figures with the default bound (20 × 100 = 2000 new mailboxes, under 10 000):
/// slow on a real disk (2000 files created and synced), so run by hand with `--ignored`.
#[test]
#[ignore]
fn catch_all_spread_default_bound_issue_figures() {
    let Some(f) = attack(None, 1) else {
        return;
    };
    report("issue 8 catch-all attack (default --max-mailboxes)", &f);
    assert_eq!(
        f.good_250s, GOOD_MESSAGES,
        "the unrelated client was refused"
    );
    assert_eq!(f.files_after, f.pre_existing + SESSIONS * SPREAD);
    assert_eq!(f.tally.delivered.load(Ordering::Relaxed), SESSIONS);
    assert!(
        f.peak_descriptors <= DESCRIPTOR_CEILING,
        "peak {} descriptors, over {DESCRIPTOR_CEILING}",
        f.peak_descriptors
    );
    assert!(
        !f.log.contains("Too many open files"),
        "a descriptor ran out"
    );
}

/// `--max-mailboxes` over a real socket: new names past the bound get 452 4.3.1, reserved and
/// configured names never do.
#[test]
fn new_mailboxes_past_the_bound_get_452() {
    let mut server = support::TestServer::with(|c| {
        c.max_mailboxes = 3;
        c.add_alias("staff", ["jones"]).unwrap();
    });
    let mut c = server.client();
    c.expect("EHLO bound.test", 250);
    c.expect("MAIL FROM:<a@b.test>", 250);
    for name in ["one", "two", "three"] {
        c.expect(&format!("RCPT TO:<{name}@mx.test>"), 250);
    }
    let refused = c.expect("RCPT TO:<four@mx.test>", 452);
    assert_eq!(
        refused.text(),
        "4.3.1 Too many mailboxes here; try again later"
    );
    // Reserved names (not yet files), postmaster and an alias's target pass.
    for name in ["ONE", "postmaster", "staff", "jones"] {
        c.expect(&format!("RCPT TO:<{name}@mx.test>"), 250);
    }
    c.expect("DATA", 354);
    c.send(b"Subject: bounded\r\n\r\nhi\r\n.\r\n");
    assert_eq!(c.read_reply().code, 250);
    // A reservation outlives its transaction: RSET does not free room.
    c.expect("MAIL FROM:<a@b.test>", 250);
    c.expect("RCPT TO:<five@mx.test>", 452);
    c.expect("RSET", 250);
    c.expect("MAIL FROM:<a@b.test>", 250);
    c.expect("RCPT TO:<five@mx.test>", 452);
    c.expect("QUIT", 221);
    let mail = server.mail_dir();
    let mut files: Vec<String> = fs::read_dir(&mail)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(files, ["jones", "one", "postmaster", "three", "two"]);
    server.stop();
}
