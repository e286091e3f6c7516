//! Dotlocks: the `<mbox>.lock` files mail programs create to say "I am writing this mailbox".
//!
//! They exist because Postfix, procmail and mail readers on a shared spool take a dotlock as
//! well as (or instead of) an fcntl(2) lock, so the writer must take one too before it touches a
//! mailbox, and must decide when a dotlock left behind by a crash may be broken.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// A dotlock older than this is left over from a crashed program and is removed (Postfix's
/// `stale_lock_time` is 500 s).
const STALE_DOTLOCK: Duration = Duration::from_secs(500);

/// Why a dotlock could not be taken.
pub(super) enum Refused {
    /// Another program holds it.
    Held,
    /// The file system failed.
    Io(io::Error),
}

/// A dotlock this process holds; removed when dropped.
pub(super) struct DotLock {
    path: PathBuf,
}

impl Drop for DotLock {
    fn drop(&mut self) {
        if let Err(e) = fs::remove_file(&self.path) {
            log::error!("cannot remove dotlock {:?}: {e}", self.path);
        }
    }
}

/// Creates `<mbox>.lock` exclusively, with our process id in it as liblockfile does, removing
/// a stale one first: one older than [`STALE_DOTLOCK`], or one whose process is gone (left by a
/// crash, ours included: a killed server must not lock itself out after a restart).
pub(super) fn take(mbox: &Path) -> Result<DotLock, Refused> {
    let path = dotlock_path(mbox);
    for _ in 0..2 {
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
        {
            Ok(mut file) => {
                // The id is a courtesy to other tools; the lock is the file's existence.
                let _ = writeln!(file, "{}", std::process::id());
                return Ok(DotLock { path });
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                if !is_stale(&path) {
                    return Err(Refused::Held);
                }
                log::warn!("removing stale dotlock {:?}", path);
                let _ = fs::remove_file(&path);
            }
            Err(e) => return Err(Refused::Io(e)),
        }
    }
    Err(Refused::Held)
}

fn dotlock_path(mbox: &Path) -> PathBuf {
    let mut name = mbox.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

fn is_stale(path: &Path) -> bool {
    let age = fs::symlink_metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| SystemTime::now().duration_since(t).ok());
    if age.is_some_and(|age| age > STALE_DOTLOCK) {
        return true;
    }
    let owner = fs::read_to_string(path)
        .ok()
        .and_then(|text| text.trim().parse::<u32>().ok());
    match owner {
        // Our own id: this process holds a mailbox's locks only inside one commit and removes
        // them after, so this is a leftover of an earlier process that had the same id.
        Some(pid) if pid == std::process::id() => true,
        Some(pid) => !Path::new("/proc").join(pid.to_string()).exists(),
        // Empty or foreign contents: only age can tell.
        None => false,
    }
}
