//! Dotlocks: the `<mbox>.lock` files mail programs create to say "I am writing this mailbox".
//!
//! They exist because Postfix, procmail and mail readers on a shared spool take a dotlock as
//! well as (or instead of) an fcntl(2) lock, so the writer must take one too before it touches a
//! mailbox, and must decide when a dotlock left behind by a crash may be broken. mboxd takes its
//! dotlocks with liblockfile's link(2) method so that the owner is in a file name, which survives
//! a power cut, not in file contents, which may not: it creates a private file
//! `.<mbox>.lock.mboxd-<pid>-<starttime>-<writer>` (mailbox names never start with `.`, so it
//! cannot be a mailbox), writes its process id into it, and hard-links it to `<mbox>.lock`. The
//! start time (clock ticks since boot, field 22 of `/proc/<pid>/stat`) makes the name name one
//! process, not a process id that may since have been reused; the writer's number tells apart
//! the writers of several servers in one process. [`judge`] says when a dotlock is stale.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::os;

/// A dotlock whose holder cannot be known (empty or foreign contents), or whose process still
/// lives, is respected until it is this old, then broken (rule 4 of [`judge`]; Postfix's
/// `stale_lock_time` is 500 s). One that no living process can hold is broken at once.
pub(super) const STALE_DOTLOCK: Duration = Duration::from_secs(500);

/// What sits between a mailbox name and the owner in the name of mboxd's private lock file.
const MARK: &str = ".lock.mboxd-";

/// One writer, for as long as the system runs: its process's id and start time in clock ticks
/// since boot, and its number in that process (a test suite may run several servers, each with
/// its writer, in one process, even on one mail directory).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Owner {
    /// The process id.
    pub pid: u32,
    /// Field 22 of `/proc/<pid>/stat`; 0 if `/proc` could not be read.
    pub start: u64,
    /// The writer's number in its process, from 1; 0 in a name without one (mboxd before
    /// 2026-11-24).
    pub writer: u32,
}

/// The number the next writer of this process takes.
static NEXT_WRITER: AtomicU32 = AtomicU32::new(1);

impl Owner {
    /// A new writer of this process.
    pub(super) fn current() -> Owner {
        let pid = std::process::id();
        let start = match process(pid) {
            Process::Started(start) => start,
            _ => {
                log::warn!("cannot read /proc/self/stat: dotlocks are named with start time 0");
                0
            }
        };
        let writer = NEXT_WRITER.fetch_add(1, Ordering::Relaxed);
        Owner { pid, start, writer }
    }

    /// Whether `other` is another writer this process has started, which may hold a lock now;
    /// one whose number this process never gave (an older mboxd's name has none, 0) is not.
    fn sibling(self, other: Owner) -> bool {
        (self.pid, self.start) == (other.pid, other.start)
            && other.writer != self.writer
            && (1..NEXT_WRITER.load(Ordering::Relaxed)).contains(&other.writer)
    }
}

/// The name of `owner`'s private lock file for `mailbox`.
pub(super) fn temp_name(mailbox: &str, owner: Owner) -> String {
    format!(
        ".{mailbox}{MARK}{}-{}-{}",
        owner.pid, owner.start, owner.writer
    )
}

/// The mailbox and owner a private lock file name encodes, if it is one.
pub(super) fn parse_temp_name(name: &str) -> Option<(&str, Owner)> {
    // `rsplit`: a mailbox name may itself contain the mark.
    let (mailbox, owner) = name.strip_prefix('.')?.rsplit_once(MARK)?;
    let mut parts = owner.split('-');
    let (pid, start, writer) = (parts.next()?, parts.next()?, parts.next().unwrap_or("0"));
    if parts.next().is_some() {
        return None;
    }
    let owner = Owner {
        pid: pid.parse().ok()?,
        start: start.parse().ok()?,
        writer: writer.parse().ok()?,
    };
    (!mailbox.is_empty() && owner.pid > 0).then_some((mailbox, owner))
}

/// Whether a process lives, as far as `/proc` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Process {
    /// No process has this id.
    Gone,
    /// A process with this id started this many clock ticks after boot.
    Started(u64),
    /// It exists, but `/proc` cannot say when it started: assume it is the one named.
    Unknown,
}

/// Looks process `pid` up in `/proc`, and asks kill(2) whether it exists when `/proc` does not
/// show it (not mounted, or mounted with `hidepid`).
pub(super) fn process(pid: u32) -> Process {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => parse_start_time(&stat).map_or(Process::Unknown, Process::Started),
        Err(_) if !os::process_exists(pid) => Process::Gone,
        Err(_) => Process::Unknown,
    }
}

/// Field 22 (starttime) of a `/proc/<pid>/stat` line. Field 2 is the command name in
/// parentheses, which may itself contain spaces and parentheses: fields are counted after the
/// last `)`, where field 3 begins.
pub(super) fn parse_start_time(stat: &str) -> Option<u64> {
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(22 - 3)?.parse().ok()
}

/// When the system booted (`btime` in `/proc/stat`).
pub(super) fn boot_time() -> Option<SystemTime> {
    let stat = fs::read_to_string("/proc/stat").ok()?;
    let secs = stat
        .lines()
        .find_map(|line| line.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    Some(UNIX_EPOCH + Duration::from_secs(secs))
}

/// Why a dotlock could not be taken.
pub(super) enum Refused {
    /// Another program may hold it.
    Held,
    /// The file system failed.
    Io(io::Error),
}

/// A dotlock this process holds: `<mbox>.lock` and the private name linked to it. Dropping it
/// removes `<mbox>.lock` first (which frees the mailbox), then the private name.
pub(super) struct DotLock {
    lock: PathBuf,
    temp: PathBuf,
}

impl Drop for DotLock {
    fn drop(&mut self) {
        for path in [&self.lock, &self.temp] {
            if let Err(e) = fs::remove_file(path) {
                log::error!("cannot remove dotlock {path:?}: {e}");
            }
        }
    }
}

/// Takes `<mailbox>.lock` in `dir` for `me`, breaking it first if [`judge`] finds it stale.
///
/// Postfix (`mailbox_delivery_lock = dotlock`) creates `<mbox>.lock` with `O_CREAT|O_EXCL`,
/// which fails while our link exists, and our link(2) fails with `EEXIST` while Postfix's file
/// exists: the two methods exclude each other, as liblockfile's does with both.
///
/// Never inlined: it runs once per mailbox and batch, not per message, and inlined into the
/// commit it took 1.6 KB more of the binary (which must stay under 1 MiB).
#[inline(never)]
pub(super) fn take(dir: &Path, mailbox: &str, me: Owner) -> Result<DotLock, Refused> {
    let lock = dir.join(format!("{mailbox}.lock"));
    let temp = dir.join(temp_name(mailbox, me));
    create_temp(&temp, &lock, me.pid).map_err(Refused::Io)?;
    let give_up = |refused: Refused| {
        let _ = fs::remove_file(&temp);
        refused
    };
    for _ in 0..2 {
        match fs::hard_link(&temp, &lock) {
            Ok(()) => return Ok(DotLock { lock, temp }),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                match judge(dir, mailbox, &lock, me) {
                    Verdict::Held => break,
                    // Nothing to remove: removing the name now could remove a lock another
                    // program has just taken. Link again.
                    Verdict::Gone => {}
                    Verdict::Stale {
                        reason,
                        temp: theirs,
                    } => {
                        // One that cannot be removed (a directory, say) is an error now, not
                        // a lock held till the timeout, judged and logged every 50 ms meanwhile.
                        match fs::remove_file(&lock) {
                            Ok(()) => log::warn!("removed stale dotlock {lock:?}: {reason}"),
                            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                            Err(e) => {
                                log::error!("cannot remove stale dotlock {lock:?} ({reason}): {e}");
                                return Err(give_up(Refused::Io(e)));
                            }
                        }
                        if let Some(theirs) = theirs.filter(|theirs| *theirs != temp) {
                            let _ = fs::remove_file(theirs);
                        }
                    }
                }
            }
            Err(e) => return Err(give_up(Refused::Io(e))),
        }
    }
    Err(give_up(Refused::Held))
}

/// Creates this writer's private lock file with its process id in it. The id is a courtesy to
/// tools that read dotlocks; it is never synced, so after a power cut it may be gone, which is
/// why the owner is also in the name.
///
/// A file already of this name is this writer's own, left by a failed removal, only if it is a
/// regular file linked nowhere else but perhaps at `lock`: it is then reused, so a lock still
/// linked to it is known as ours (rule 2). Anything else was put there by another program, whose
/// name is predictable (the start time is in `/proc`): a FIFO, whose open would block the writer
/// for good, or a hard link to a mailbox, which truncating would empty. Its name is removed,
/// never its contents touched, and the file made afresh. A name that cannot be removed (a
/// directory, or another user's file in a sticky directory) fails the delivery with an error
/// that names it, as a directory at `<mbox>.lock` keeps the mailbox locked.
fn create_temp(path: &Path, lock: &Path, pid: u32) -> io::Result<()> {
    let fresh = || {
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(path)
    };
    let mut file = match fresh() {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => match left_by_us(path, lock) {
            Some(file) => file,
            None => {
                log::warn!("removing {path:?}, which is not a lock file mboxd left");
                fs::remove_file(path).map_err(|e| {
                    io::Error::new(e.kind(), format!("cannot remove {path:?}: {e}"))
                })?;
                fresh()?
            }
        },
        Err(e) => return Err(e),
    };
    // One write(2) for the whole line (`writeln!` on a file makes one per piece).
    if let Err(e) = file.write_all(format!("{pid}\n").as_bytes()) {
        let _ = fs::remove_file(path);
        return Err(e);
    }
    Ok(())
}

/// The private lock file at `path`, emptied, if it is one this writer left: a regular file with
/// no other name but perhaps `lock`, and still the file opened.
fn left_by_us(path: &Path, lock: &Path) -> Option<File> {
    let id = |m: &fs::Metadata| (m.dev(), m.ino());
    let named = fs::symlink_metadata(path).ok()?;
    let linked = match named.nlink() {
        1 => true,
        2 => fs::symlink_metadata(lock).is_ok_and(|l| id(&l) == id(&named)),
        _ => false,
    };
    if !named.file_type().is_file() || !linked {
        return None;
    }
    let file = OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .ok()?;
    let opened = file.metadata().ok()?;
    (id(&opened) == id(&named) && file.set_len(0).is_ok()).then_some(file)
}

/// What a dotlock found in place is.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Verdict {
    /// A living process may hold it: respect it.
    Held,
    /// It was removed before it could be looked at: there is nothing to break.
    Gone,
    /// No living process can hold it.
    Stale {
        /// Why, for the log.
        reason: String,
        /// The private name linked to it, if mboxd made it: removed with it.
        temp: Option<PathBuf>,
    },
}

fn stale(reason: impl Into<String>) -> Verdict {
    Verdict::Stale {
        reason: reason.into(),
        temp: None,
    }
}

/// Decides whether the dotlock `lock` (for `mailbox` in `dir`) is stale, by these rules in order:
///
/// 1. modified before the system booted: stale (no process from before boot lives);
/// 2. linked to a private name `.<mailbox>.lock.mboxd-<pid>-<starttime>-<writer>` (same device
///    and inode): mboxd's. Held if it names another writer this process has started (a second
///    server's); stale if no process `<pid>` with that start time exists, or if it names this
///    process otherwise: this very writer (which never asks about a lock it holds: a mailbox
///    it keeps across commits is reused or released before it is opened again) or a number this process never gave (0 for an
///    older mboxd's name without one); held otherwise;
/// 3. its contents are a process id, and no such process exists, or it is this process's id
///    (whose own locks are linked to a private name, rule 2): stale;
/// 4. otherwise (empty or foreign contents, or a process that lives): stale only once it is
///    older than [`STALE_DOTLOCK`].
///
/// A process `/proc` does not show is asked after with kill(2); one that exists but whose start
/// time `/proc` cannot give is taken to be the one named.
pub(super) fn judge(dir: &Path, mailbox: &str, lock: &Path, me: Owner) -> Verdict {
    let meta = match fs::symlink_metadata(lock) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Verdict::Gone,
        Err(_) => return Verdict::Held,
    };
    let modified = meta.modified().ok();
    if let (Some(modified), Some(boot)) = (modified, boot_time())
        && modified < boot
    {
        return stale("made before the system booted");
    }
    if meta.nlink() > 1
        && let Some((temp, owner)) = mboxd_name(dir, mailbox, &meta)
    {
        let reason = if me.sibling(owner) {
            // Another server's writer in this process: it holds its lock for a commit, or
            // across back-to-back commits.
            return Verdict::Held;
        } else if (owner.pid, owner.start) == (me.pid, me.start) {
            "left by this process".to_string()
        } else {
            match process(owner.pid) {
                Process::Gone => format!("its mboxd process {} is gone", owner.pid),
                Process::Started(start) if start != owner.start => format!(
                    "its mboxd process {} is gone (the id now names a process started at tick {start}, not {})",
                    owner.pid, owner.start
                ),
                Process::Started(_) | Process::Unknown => return Verdict::Held,
            }
        };
        return Verdict::Stale {
            reason,
            temp: Some(temp),
        };
    }
    if let Some(pid) = read_pid(lock) {
        if pid == me.pid {
            return stale("it names this process, which holds no such lock");
        }
        if process(pid) == Process::Gone {
            return stale(format!("process {pid} is gone"));
        }
    }
    let age = modified.and_then(|t| SystemTime::now().duration_since(t).ok());
    if age.is_some_and(|age| age > STALE_DOTLOCK) {
        return stale(format!("older than {} s", STALE_DOTLOCK.as_secs()));
    }
    Verdict::Held
}

/// The private name of mboxd's for `mailbox` in `dir` that is the same file as `lock`, and the
/// owner it names.
fn mboxd_name(dir: &Path, mailbox: &str, lock: &fs::Metadata) -> Option<(PathBuf, Owner)> {
    let prefix = format!(".{mailbox}{MARK}");
    fs::read_dir(dir).ok()?.flatten().find_map(|entry| {
        let name = entry.file_name();
        let name = name.to_str()?;
        if !name.starts_with(&prefix) {
            return None;
        }
        let (named, owner) = parse_temp_name(name)?;
        let meta = fs::symlink_metadata(entry.path()).ok()?;
        (named == mailbox && meta.dev() == lock.dev() && meta.ino() == lock.ino())
            .then(|| (entry.path(), owner))
    })
}

/// The process id a dotlock holds, if its contents are one: a positive number, as text, on one
/// line.
fn read_pid(lock: &Path) -> Option<u32> {
    let file = OpenOptions::new()
        .read(true)
        // A FIFO planted as a lock must not block the writer.
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(lock)
        .ok()?;
    if !file.metadata().ok()?.is_file() {
        return None;
    }
    let mut text = String::new();
    File::take(file, 32).read_to_string(&mut text).ok()?;
    text.trim().parse().ok().filter(|&pid| pid > 0)
}

/// Removes the private lock files in `dir` whose owner is gone, and the `<mbox>.lock` linked to
/// one: left by a crash between creating and linking the file, or while holding the lock.
pub(super) fn remove_orphans(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some((mailbox, owner)) = name.to_str().and_then(parse_temp_name) else {
            continue;
        };
        let gone = match process(owner.pid) {
            Process::Gone => true,
            Process::Started(start) => start != owner.start,
            Process::Unknown => false,
        };
        if !gone {
            continue;
        }
        let temp = entry.path();
        let lock = dir.join(format!("{mailbox}.lock"));
        if let (Ok(t), Ok(l)) = (fs::symlink_metadata(&temp), fs::symlink_metadata(&lock))
            && (t.dev(), t.ino()) == (l.dev(), l.ino())
        {
            log::warn!(
                "removing stale dotlock {lock:?}: its mboxd process {} is gone",
                owner.pid
            );
            let _ = fs::remove_file(&lock);
        }
        log::info!("removing {temp:?}: its mboxd process {} is gone", owner.pid);
        let _ = fs::remove_file(&temp);
    }
}
