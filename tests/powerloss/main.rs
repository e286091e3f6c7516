//! Power loss, simulated with LazyFS: the mail directory sits on a FUSE file system that keeps
//! every write in its own cache until it is fsynced and drops the unsynced part on command. A
//! plain SIGKILL (tests/faults.rs) cannot show this, because the kernel's page cache survives the
//! process; a power cut does not.
//!
//! Each round mounts a fresh LazyFS, starts the `mboxd` binary on it, lets several clients deliver
//! to a handful of mailboxes (most of them created during the round), and at a random moment
//! SIGKILLs the server and clears LazyFS's cache. Then every message that got 250 must be in each
//! of its mailboxes, whole, exactly once; every mbox must parse; and a restarted server must
//! deliver at once to every mailbox, including those whose commit was cut off, and leave no lock
//! file behind.
//!
//! It needs root, `/dev/fuse`, `fusermount3` and a LazyFS binary (`LAZYFS=/path`, or the one
//! `../shared/tools/lazyfs/build.sh` builds by default, which `make test` runs); without them it
//! prints `skipped: <reason>` and passes. `POWERLOSS_SEED` repeats a run's random choices and
//! `POWERLOSS_ROUNDS` changes the number of rounds (default 5).
//!
//! The modules: `lazyfs` (the prerequisites and one LazyFS mount), `peers` (the `mboxd` process
//! and a tiny SMTP client) and `mbox` (the messages' bodies and reading the mboxes back).

#[path = "../support/mod.rs"]
mod support;

mod lazyfs;
mod mbox;
mod peers;

use std::fs;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use lazyfs::{LazyFs, prerequisites};
use mbox::{lock_files, read_mailboxes};
use peers::{Broken, Mboxd, Smtp};
use support::wait_bounded;

const MAILBOXES: usize = 6;
const CLIENTS: usize = 4;
/// How long anything the test waits for may take before the test fails.
const WAIT: Duration = Duration::from_secs(10);
/// How long the restarted server may take to deliver to one mailbox.
const AT_ONCE: Duration = Duration::from_secs(2);

// ---------------------------------------------------------------------------------------------
// A seeded PRNG (splitmix64), so a round's choices can be repeated.

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `lo..=hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

// ---------------------------------------------------------------------------------------------
// One round

struct Round {
    number: u64,
    seed: u64,
    lazyfs: PathBuf,
}

struct Outcome {
    cut: Duration,
    /// From SIGKILL to LazyFS confirming its cache is cleared.
    power_off: Duration,
    sent: usize,
    acked: usize,
    checked: usize,
    leftover_locks: Vec<String>,
    /// Mailboxes the restarted server did not deliver to at once, with what it answered.
    not_at_once: Vec<String>,
    /// The restarted server's log lines about locks.
    lock_log: Vec<String>,
    took: Duration,
}

/// What the clients of a round share.
struct Shared {
    start: Instant,
    cut: Duration,
    killed: AtomicBool,
    /// Every message sent, with its mailboxes, and whether it got 250.
    sent: Mutex<Vec<(String, Vec<usize>, bool)>>,
}

/// A client's loop: messages to 1-3 of the mailboxes open so far, until the server dies.
fn client(addr: SocketAddr, round: u64, t: usize, seed: u64, shared: &Shared) {
    let mut rng = Rng(seed);
    // A closed connection is what the kill looks like; before it, anything broken is a failure.
    let after_kill = |b: Broken| match b {
        Broken::Closed(_) if shared.killed.load(Ordering::SeqCst) => {}
        Broken::Closed(why) => panic!("client {t}: connection closed ({why}) before the kill"),
        Broken::Timeout => panic!("client {t}: no reply within {WAIT:?}"),
    };
    let mut c = match Smtp::connect(addr).and_then(|mut c| c.greet().map(|()| c)) {
        Ok(c) => c,
        Err(b) => return after_kill(b),
    };
    for n in 0.. {
        // box0 and box1 exist from the start; box2..box5 open one by one during the round, so
        // some are created close to the cut.
        let elapsed = shared.start.elapsed();
        let open = (2..MAILBOXES)
            .filter(|&b| elapsed >= shared.cut * (b as u32 - 1) / (MAILBOXES as u32 - 1))
            .count()
            + 2;
        let mut boxes: Vec<usize> = Vec::new();
        let want = rng.range(1, 3) as usize;
        while boxes.len() < want.min(open) {
            let b = rng.range(0, open as u64 - 1) as usize;
            if !boxes.contains(&b) {
                boxes.push(b);
            }
        }
        let id = format!("r{round}-c{t}-m{n}");
        let index = {
            let mut sent = shared.sent.lock().unwrap();
            sent.push((id.clone(), boxes.clone(), false));
            sent.len() - 1
        };
        match c.deliver(&id, &boxes) {
            Ok(r) if r.code == 250 => shared.sent.lock().unwrap()[index].2 = true,
            Ok(r) => panic!("client {t}: {id} got {} {}", r.code, r.text),
            Err(b) => return after_kill(b),
        }
    }
}

impl Round {
    fn run(&self) -> Outcome {
        let started = Instant::now();
        let mut rng = Rng(self.seed);
        let cut = Duration::from_millis(rng.range(50, 400));
        let tmp = tempfile::tempdir().unwrap();
        // The mount table names the canonical path.
        let dir = tmp.path().canonicalize().unwrap();
        let backing = dir.join("backing");
        let mnt = dir.join("mnt");
        fs::create_dir(&backing).unwrap();
        fs::create_dir(&mnt).unwrap();
        // Declared after the directory, so it is unmounted before the directory is removed.
        let mut lazyfs = LazyFs::mount(&self.lazyfs, &dir, &backing, &mnt);
        let mail = mnt.join("mail");
        let mut server = Some(Mboxd::start(&mail, &dir.join("mboxd.log"), &[]));
        let addr = server.as_ref().unwrap().addr;

        // Two mailboxes that exist before the load starts.
        let mut seeded = Vec::new();
        let mut c = Smtp::connect(addr).unwrap();
        c.greet().unwrap();
        for b in 0..2 {
            let id = format!("r{}-seed-box{b}", self.number);
            let r = c.deliver(&id, &[b]).unwrap();
            assert_eq!(r.code, 250, "{id}: {}", r.text);
            seeded.push((id, vec![b], true));
        }
        c.command("QUIT", 221).unwrap();
        let shared = Arc::new(Shared {
            start: Instant::now(),
            cut,
            killed: AtomicBool::new(false),
            sent: Mutex::new(seeded),
        });
        let clients: Vec<JoinHandle<()>> = (0..CLIENTS)
            .map(|t| {
                let shared = Arc::clone(&shared);
                let (round, seed) = (self.number, rng.next());
                thread::Builder::new()
                    .name(format!("power-client-{t}"))
                    .spawn(move || client(addr, round, t, seed, &shared))
                    .unwrap()
            })
            .collect();

        // The cut: a timer, not a synchronisation.
        thread::sleep(cut.saturating_sub(shared.start.elapsed()));
        shared.killed.store(true, Ordering::SeqCst);
        let mut dead = server.take().unwrap();
        let killed = Instant::now();
        dead.child.kill().unwrap();
        wait_bounded(&mut dead.child, WAIT);
        lazyfs.clear_cache();
        let power_off = killed.elapsed();
        drop(dead);
        for c in clients {
            if let Err(panic) = c.join() {
                std::panic::resume_unwind(panic);
            }
        }

        // Every message that got 250 is in each of its mailboxes, whole, exactly once; nothing
        // else is there but whole messages sent to that mailbox, at most once.
        let sent = shared.sent.lock().unwrap().clone();
        let acked = sent.iter().filter(|(_, _, ok)| *ok).count();
        let boxes = read_mailboxes(&mail);
        let mut checked = 0;
        for (b, count) in boxes.iter().enumerate() {
            for (id, n) in count {
                let addressed = sent.iter().any(|(s, to, _)| s == id && to.contains(&b));
                assert!(addressed, "box{b} holds {id}, which was not sent to it");
                assert_eq!(*n, 1, "box{b} holds {id} {n} times");
                checked += 1;
            }
        }
        for (id, to, ok) in &sent {
            for b in to.iter().filter(|_| *ok) {
                assert!(
                    boxes[*b].contains_key(id),
                    "{id} got 250 but is missing from box{b} after the power cut"
                );
            }
        }

        // A restarted server delivers at once to every mailbox of the round.
        let leftover_locks = lock_files(&mail);
        let log = dir.join("restart.log");
        let restarted = Mboxd::start(&mail, &log, &["--lock-timeout", "1"]);
        let mut c = Smtp::connect(restarted.addr).unwrap();
        c.greet().unwrap();
        let mut not_at_once = Vec::new();
        let mut delivered_after = Vec::new();
        for b in 0..MAILBOXES {
            let id = format!("r{}-after-box{b}", self.number);
            let asked = Instant::now();
            let r = c.deliver(&id, &[b]).unwrap();
            let took = asked.elapsed();
            if r.code == 250 {
                delivered_after.push((b, id));
            }
            if r.code != 250 || took > AT_ONCE {
                not_at_once.push(format!("box{b}: {} {} after {took:.1?}", r.code, r.text));
            }
        }
        c.command("QUIT", 221).unwrap();
        restarted.stop();
        let still_locked = lock_files(&mail);
        if !still_locked.is_empty() {
            not_at_once.push(format!("still there after it stopped: {still_locked:?}"));
        }
        let lock_log = fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("lock"))
            .map(str::to_string)
            .collect();
        let boxes = read_mailboxes(&mail);
        for (b, id) in &delivered_after {
            assert_eq!(boxes[*b].get(id), Some(&1), "{id} after the restart");
        }

        lazyfs.unmount();
        Outcome {
            cut,
            power_off,
            sent: sent.len(),
            acked,
            checked,
            leftover_locks,
            not_at_once,
            lock_log,
            took: started.elapsed(),
        }
    }
}

#[test]
fn a_power_cut_loses_no_acknowledged_message_and_locks_no_mailbox() {
    let lazyfs = match prerequisites() {
        Ok(path) => path,
        Err(reason) => {
            println!("skipped: {reason}");
            return;
        }
    };
    let seed = std::env::var("POWERLOSS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    let rounds: u64 = std::env::var("POWERLOSS_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    println!(
        "power loss: {rounds} rounds, LazyFS {}, POWERLOSS_SEED={seed}",
        lazyfs.display()
    );
    let started = Instant::now();
    let mut failures = Vec::new();
    let (mut total_acked, mut total_checked) = (0, 0);
    for number in 0..rounds {
        let round = Round {
            number,
            seed: Rng(seed ^ number).next(),
            lazyfs: lazyfs.clone(),
        };
        let o = round.run();
        total_acked += o.acked;
        total_checked += o.checked;
        println!(
            "round {number}: seed {}, cut at {} ms (kill to cache cleared {:.1?}), {} sent, \
             {} acked, {} mbox entries checked, lock files left {:?}, restart {}, {:.1?}",
            round.seed,
            o.cut.as_millis(),
            o.power_off,
            o.sent,
            o.acked,
            o.checked,
            o.leftover_locks,
            if o.not_at_once.is_empty() {
                "delivered at once to every mailbox".to_string()
            } else {
                format!("NOT at once: {}", o.not_at_once.join("; "))
            },
            o.took
        );
        if !o.not_at_once.is_empty() {
            failures.push(format!(
                "round {number}: {}\n  its log: {}",
                o.not_at_once.join("; "),
                o.lock_log.join("\n  its log: ")
            ));
        }
    }
    println!(
        "power loss: {rounds} rounds, {total_acked} messages acked, \
         {total_checked} mbox entries checked, {:.1?}",
        started.elapsed()
    );
    assert!(
        failures.is_empty(),
        "after the power cut, the restarted server did not deliver at once:\n{}",
        failures.join("\n")
    );
}
