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

mod support;

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use support::{dot_stuff, wait_bounded};

const BIN: &str = env!("CARGO_BIN_EXE_mboxd");
const MAILBOXES: usize = 6;
const CLIENTS: usize = 4;
/// How long anything the test waits for may take before the test fails.
const WAIT: Duration = Duration::from_secs(10);
/// How long the restarted server may take to deliver to one mailbox.
const AT_ONCE: Duration = Duration::from_secs(2);

// ---------------------------------------------------------------------------------------------
// Prerequisites

/// The LazyFS binary, or why the test cannot run here.
fn prerequisites() -> Result<PathBuf, String> {
    let status = fs::read_to_string("/proc/self/status")
        .map_err(|e| format!("cannot read /proc/self/status ({e}), so cannot tell if root"))?;
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|uids| uids.split_whitespace().nth(1))
        .ok_or("no Uid line in /proc/self/status")?;
    if euid != "0" {
        return Err(format!("not root (uid {euid}); LazyFS needs root to mount"));
    }
    if !Path::new("/dev/fuse").exists() {
        return Err("/dev/fuse does not exist".into());
    }
    if find_in_path("fusermount3").is_none() {
        return Err("fusermount3 not found (Debian package fuse3)".into());
    }
    if let Some(named) = std::env::var_os("LAZYFS").filter(|v| !v.is_empty()) {
        let named = PathBuf::from(named);
        return if is_executable(&named) {
            Ok(named)
        } else {
            Err(format!(
                "LAZYFS={} is not an executable file",
                named.display()
            ))
        };
    }
    let build = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/tools/lazyfs/build.sh");
    let script = fs::read_to_string(&build).map_err(|e| {
        format!(
            "LAZYFS is not set and {} cannot be read ({e})",
            build.display()
        )
    })?;
    // build.sh's default destination, from its `DEST=${1:-...}` line.
    let dest = script
        .lines()
        .find_map(|l| l.trim().strip_prefix("DEST=${1:-"))
        .and_then(|rest| rest.strip_suffix('}'))
        .ok_or_else(|| format!("no DEST=${{1:-...}} line in {}", build.display()))?;
    let binary = Path::new(dest).join("lazyfs/build/lazyfs");
    if is_executable(&binary) {
        Ok(binary)
    } else {
        Err(format!(
            "LazyFS is not built ({} missing): `make test` builds it, or set LAZYFS=",
            binary.display()
        ))
    }
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
}

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
// LazyFS

/// One LazyFS mount, unmounted and its process ended when dropped, also when the test fails.
struct LazyFs {
    child: Child,
    mnt: PathBuf,
    log: PathBuf,
    done_path: PathBuf,
    /// The faults FIFO, opened read-write for the whole mount so a command written to it is
    /// never lost, and opening it never blocks.
    faults: Option<File>,
    /// Lines LazyFS writes to its completion FIFO.
    done: Option<Receiver<io::Result<String>>>,
    reader: Option<JoinHandle<()>>,
}

impl LazyFs {
    /// Mounts `backing` at `mnt` with LazyFS in the foreground and waits until the mount is live.
    fn mount(binary: &Path, dir: &Path, backing: &Path, mnt: &Path) -> LazyFs {
        let faults_path = dir.join("faults.fifo");
        let done_path = dir.join("done.fifo");
        // LazyFS logs to its stdout when `logfile` is empty; both streams go to one file.
        let log = dir.join("lazyfs.out");
        let config = dir.join("lazyfs.toml");
        // The cache is allocated up front (1 GiB takes seconds); a round writes a few MiB.
        fs::write(
            &config,
            format!(
                "[faults]\nfifo_path=\"{}\"\nfifo_path_completed=\"{}\"\n\
                 [cache]\napply_eviction=false\n\
                 [cache.simple]\ncustom_size=\"128mb\"\nblocks_per_page=1\n\
                 [filesystem]\nlog_all_operations=false\nlogfile=\"\"\n",
                faults_path.display(),
                done_path.display(),
            ),
        )
        .unwrap();
        let output = File::create(&log).unwrap();
        let child = Command::new(binary)
            .arg(mnt)
            .arg("--config-path")
            .arg(&config)
            .args(["-o", "allow_other", "-o", "modules=subdir", "-o"])
            .arg(format!("subdir={}", backing.display()))
            .arg("-f")
            .stdin(Stdio::null())
            .stdout(output.try_clone().unwrap())
            .stderr(output)
            .spawn()
            .expect("start lazyfs");
        let mut fs = LazyFs {
            child,
            mnt: mnt.to_path_buf(),
            log,
            done_path: done_path.clone(),
            faults: None,
            done: None,
            reader: None,
        };
        // No signal tells when a FUSE mount is live: poll the mount table, with a deadline.
        let deadline = Instant::now() + WAIT;
        while !is_mounted(mnt) {
            if let Some(status) = fs.child.try_wait().unwrap() {
                panic!("lazyfs exited before mounting: {status}");
            }
            assert!(
                Instant::now() < deadline,
                "lazyfs did not mount within {WAIT:?}"
            );
            thread::sleep(Duration::from_millis(20));
        }
        // LazyFS creates both FIFOs before it mounts.
        fs.faults = Some(
            OpenOptions::new()
                .read(true)
                .write(true)
                .open(&faults_path)
                .expect("open the faults FIFO"),
        );
        // Opening a FIFO to read blocks until LazyFS opens it to write, so a thread does it.
        let (tx, rx) = mpsc::channel();
        fs.done = Some(rx);
        fs.reader = Some(
            thread::Builder::new()
                .name("lazyfs-done-fifo".into())
                .spawn(move || {
                    let fifo = match File::open(&done_path) {
                        Ok(f) => f,
                        Err(e) => {
                            let _ = tx.send(Err(e));
                            return;
                        }
                    };
                    for line in BufReader::new(fifo).lines() {
                        let end = line.is_err();
                        if tx.send(line).is_err() || end {
                            return;
                        }
                    }
                })
                .unwrap(),
        );
        fs
    }

    /// Drops every unsynced write, as a power cut would, and waits until LazyFS says it is done.
    fn clear_cache(&mut self) {
        let faults = self.faults.as_mut().unwrap();
        faults.write_all(b"lazyfs::clear-cache\n").unwrap();
        match self.done.as_ref().unwrap().recv_timeout(WAIT) {
            Ok(Ok(line)) => assert_eq!(line.trim(), "finished::clear-cache"),
            Ok(Err(e)) => panic!("reading LazyFS's completion FIFO: {e}"),
            Err(e) => panic!("LazyFS did not confirm clear-cache within {WAIT:?}: {e}"),
        }
    }

    /// Unmounts and waits for LazyFS to exit, failing the test if either does not happen.
    fn unmount(&mut self) {
        let mut umount = Command::new("fusermount3")
            .arg("-u")
            .arg(&self.mnt)
            .spawn()
            .unwrap();
        let status = wait_bounded(&mut umount, WAIT);
        assert!(status.success(), "fusermount3 -u failed: {status}");
        assert!(!is_mounted(&self.mnt), "still mounted after fusermount3 -u");
        // LazyFS (a47a5ba) never joins its fault thread, so it ends in std::terminate (SIGABRT)
        // after every unmount: that it exits is checked, not how.
        wait_bounded(&mut self.child, WAIT);
    }
}

impl Drop for LazyFs {
    fn drop(&mut self) {
        // After a clean `unmount` both are no-ops. Otherwise the daemon goes first, so that
        // unmounting cannot wait on it; a dead daemon's mount unmounts at once.
        let _ = self.child.kill();
        let _ = self.child.wait();
        if is_mounted(&self.mnt) {
            let quiet = |args: &[&str]| {
                Command::new("fusermount3")
                    .args(args)
                    .arg(&self.mnt)
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success())
            };
            // A lazy unmount if something still holds a file open on it.
            if !quiet(&["-u"]) {
                quiet(&["-u", "-z"]);
            }
        }
        self.faults = None;
        // If the reader still waits to open the completion FIFO, a writer that comes and goes
        // lets it open and then read end of file.
        drop(
            OpenOptions::new()
                .read(true)
                .write(true)
                .open(&self.done_path),
        );
        if let Some(reader) = self.reader.take() {
            let deadline = Instant::now() + Duration::from_secs(2);
            while !reader.is_finished() && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(10));
            }
            if reader.is_finished() {
                let _ = reader.join();
            }
        }
        if thread::panicking() {
            eprintln!("--- end of {}:", self.log.display());
            eprintln!("{}", tail(&self.log, 20));
        }
    }
}

fn is_mounted(mnt: &Path) -> bool {
    let Ok(table) = fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let Some(want) = mnt.to_str() else {
        return false;
    };
    // The fifth field is the mount point.
    table.lines().any(|l| l.split(' ').nth(4) == Some(want))
}

fn tail(path: &Path, lines: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

// ---------------------------------------------------------------------------------------------
// The server under test, as a process

/// An `mboxd` process, killed when dropped; its log is shown if the test fails meanwhile.
struct Mboxd {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
}

impl Mboxd {
    fn start(mail: &Path, log: &Path, extra: &[&str]) -> Mboxd {
        let mut child = Command::new(BIN)
            .args(["--listen", "127.0.0.1:0", "--mail-dir"])
            .arg(mail)
            .args(["--hostname", "mx.test", "--domain", "mx.test"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(File::create(log).unwrap())
            .spawn()
            .expect("start mboxd");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        thread::Builder::new()
            .name("mboxd-stdout".into())
            .spawn(move || {
                let mut line = String::new();
                let _ = tx.send(BufReader::new(stdout).read_line(&mut line).map(|_| line));
            })
            .unwrap();
        let mut server = Mboxd {
            child,
            addr: "127.0.0.1:0".parse().unwrap(),
            log: log.to_path_buf(),
        };
        let line = match rx.recv_timeout(WAIT) {
            Ok(Ok(line)) => line,
            Ok(Err(e)) => panic!("reading mboxd's stdout: {e}"),
            Err(_) => panic!(
                "mboxd printed no `listening on` line within {WAIT:?}; log:\n{}",
                tail(log, 10)
            ),
        };
        server.addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}; log:\n{}", tail(log, 10)))
            .parse()
            .unwrap();
        server
    }

    /// SIGTERM, then a clean exit within the deadline.
    fn stop(mut self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let status = wait_bounded(&mut self.child, WAIT);
        assert_eq!(status.code(), Some(0), "mboxd exited with {status}");
    }
}

impl Drop for Mboxd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if thread::panicking() {
            eprintln!("--- end of {}:", self.log.display());
            eprintln!("{}", tail(&self.log, 20));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// A tiny SMTP client where a timeout is always a failure and a closed connection is reported

#[derive(Debug)]
enum Broken {
    /// No reply within the timeout: always a failure of the test.
    Timeout,
    /// End of file or a reset: expected only once the server was killed.
    Closed(String),
}

fn broken(e: io::Error) -> Broken {
    match e.kind() {
        ErrorKind::WouldBlock | ErrorKind::TimedOut => Broken::Timeout,
        _ => Broken::Closed(e.to_string()),
    }
}

/// A reply's code and the text of its last line.
struct Reply {
    code: u16,
    text: String,
}

struct Smtp {
    stream: TcpStream,
    reader: BufReader<TcpStream>,
}

impl Smtp {
    fn connect(addr: SocketAddr) -> Result<Smtp, Broken> {
        let stream = TcpStream::connect_timeout(&addr, WAIT).map_err(broken)?;
        stream.set_read_timeout(Some(WAIT)).unwrap();
        stream.set_write_timeout(Some(WAIT)).unwrap();
        let reader = BufReader::new(stream.try_clone().unwrap());
        Ok(Smtp { stream, reader })
    }

    /// One whole reply; every line must be `DDD-` or `DDD ` and end in CRLF.
    fn reply(&mut self) -> Result<Reply, Broken> {
        loop {
            let mut line = Vec::new();
            let n = (&mut self.reader)
                .take(1024)
                .read_until(b'\n', &mut line)
                .map_err(broken)?;
            if n == 0 {
                return Err(Broken::Closed("end of file".into()));
            }
            let line = String::from_utf8(line).expect("replies are ASCII");
            assert!(
                line.len() >= 6 && line.ends_with("\r\n"),
                "bad reply line {line:?}"
            );
            let code: u16 = line[..3].parse().expect("a reply code");
            match &line[3..4] {
                " " => {
                    let text = line[4..line.len() - 2].to_string();
                    return Ok(Reply { code, text });
                }
                "-" => continue,
                _ => panic!("bad reply line {line:?}"),
            }
        }
    }

    fn send(&mut self, bytes: &[u8]) -> Result<(), Broken> {
        self.stream.write_all(bytes).map_err(broken)
    }

    fn command(&mut self, line: &str, want: u16) -> Result<(), Broken> {
        self.send(format!("{line}\r\n").as_bytes())?;
        let r = self.reply()?;
        assert_eq!(r.code, want, "{line:?} got {} {}", r.code, r.text);
        Ok(())
    }

    fn greet(&mut self) -> Result<(), Broken> {
        let r = self.reply()?;
        assert_eq!(r.code, 220, "greeting: {}", r.text);
        self.command("EHLO power.test", 250)
    }

    /// One message to `boxes`; the reply to the end of data.
    fn deliver(&mut self, id: &str, boxes: &[usize]) -> Result<Reply, Broken> {
        self.command("MAIL FROM:<a@b.test>", 250)?;
        for b in boxes {
            self.command(&format!("RCPT TO:<box{b}@mx.test>"), 250)?;
        }
        self.command("DATA", 354)?;
        self.send(&dot_stuff(&body_of(id)))?;
        self.reply()
    }
}

/// A message whose every byte follows from its id, 1 to 10 KiB long.
fn body_of(id: &str) -> String {
    let hash = id.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    });
    let lines = 20 + hash % 300;
    format!(
        "Subject: {id}\n\n{}end of {id}",
        format!("{id} payload line\n").repeat(lines as usize)
    )
}

// ---------------------------------------------------------------------------------------------
// Reading the mboxes back

/// Splits an mbox into entries: each starts with a `From ` line at the start of the file or
/// after a blank line, and each, the last included, ends with a blank line (`\n\n`).
fn parse_mbox(text: &str) -> Result<Vec<&str>, String> {
    if text.is_empty() {
        return Ok(Vec::new());
    }
    if !text.starts_with("From ") {
        return Err(format!("does not start with a From line: {:?}", head(text)));
    }
    let mut starts = vec![0];
    let mut pos = 0;
    for line in text.split_inclusive('\n') {
        if pos > 0 && line.starts_with("From ") && text[..pos].ends_with("\n\n") {
            starts.push(pos);
        }
        pos += line.len();
    }
    starts.push(text.len());
    let entries: Vec<&str> = starts.windows(2).map(|w| &text[w[0]..w[1]]).collect();
    let last = entries[entries.len() - 1];
    if !last.ends_with("\n\n") {
        return Err(format!("the last entry is torn: ends {:?}", end(last)));
    }
    Ok(entries)
}

/// At most the first 80 bytes of `s`, cut at a character boundary.
fn head(s: &str) -> &str {
    let mut i = s.len().min(80);
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    &s[..i]
}

/// At most the last 80 bytes of `s`, cut at a character boundary.
fn end(s: &str) -> &str {
    let mut i = s.len().saturating_sub(80);
    while !s.is_char_boundary(i) {
        i += 1;
    }
    &s[i..]
}

/// The id of a whole entry written by this test, or what is wrong with it.
fn whole_message(entry: &str) -> Result<&str, String> {
    if !entry.starts_with("From a@b.test ") {
        return Err(format!("unexpected From line: {:?}", head(entry)));
    }
    let id = entry
        .lines()
        .find_map(|l| l.strip_prefix("Subject: "))
        .ok_or_else(|| format!("no Subject in {:?}", head(entry)))?;
    if !entry.ends_with(&format!("\n{}\n\n", body_of(id))) {
        return Err(format!("{id} is not whole: ends {:?}", end(entry)));
    }
    Ok(id)
}

/// Every mailbox's entries by id, counted; fails the test if an mbox does not parse or holds
/// anything but whole messages of this test.
fn read_mailboxes(mail: &Path) -> Vec<HashMap<String, usize>> {
    (0..MAILBOXES)
        .map(|b| {
            let path = mail.join(format!("box{b}"));
            let bytes = match fs::read(&path) {
                Ok(bytes) => bytes,
                Err(e) if e.kind() == ErrorKind::NotFound => Vec::new(),
                Err(e) => panic!("reading {}: {e}", path.display()),
            };
            let text =
                String::from_utf8(bytes).unwrap_or_else(|e| panic!("box{b} is not UTF-8: {e}"));
            let entries = parse_mbox(&text).unwrap_or_else(|e| panic!("box{b} is no mbox: {e}"));
            let mut count = HashMap::new();
            for entry in entries {
                let id = whole_message(entry).unwrap_or_else(|e| panic!("box{b}: {e}"));
                *count.entry(id.to_string()).or_insert(0) += 1;
            }
            count
        })
        .collect()
}

/// Every lock file in the mail directory, with its size: `<mbox>.lock` and any other name with
/// `.lock` in it (mboxd's own `.<mbox>.lock.mboxd-...` names).
fn lock_files(mail: &Path) -> Vec<String> {
    let mut locks: Vec<String> = fs::read_dir(mail)
        .map(|dir| {
            dir.filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().contains(".lock"))
                .map(|e| {
                    let len = e.metadata().map_or(0, |m| m.len());
                    format!("{} ({len} bytes)", e.file_name().to_string_lossy())
                })
                .collect()
        })
        .unwrap_or_default();
    locks.sort();
    locks
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
