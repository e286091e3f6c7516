//! Opening a mailbox for one group commit: both locks, the file, and the state of its end.
//!
//! It exists to keep what is true of one open mailbox (where this commit started, how far it has
//! written, which lock it holds) in one value that releases its locks when dropped.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

use super::lock::{self, DotLock, Owner, Refused};
use super::{Disk, MboxFile};
use crate::os;

/// A mailbox opened and locked for one group commit.
pub(super) struct Mailbox {
    /// The file; closing it releases the fcntl lock.
    pub file: Box<dyn MboxFile>,
    /// The dotlock, removed after the file is closed.
    _dotlock: DotLock,
    /// The length before this commit, where a failed commit truncates back to.
    pub start: u64,
    /// The length after the appends so far.
    pub len: u64,
    /// What goes before the first entry appended at `start` (see [`padding`]).
    pub pad: &'static [u8],
}

/// Why a mailbox could not be opened.
pub(super) enum OpenError {
    /// Another program holds one of its locks.
    Busy,
    /// The file system failed.
    Io(io::Error),
}

impl From<Refused> for OpenError {
    fn from(refused: Refused) -> OpenError {
        match refused {
            Refused::Held => OpenError::Busy,
            Refused::Io(e) => OpenError::Io(e),
        }
    }
}

/// Opens a mailbox under both locks and finds what must precede the first new entry.
///
/// `created` is set as soon as this call creates the file, even if it then fails: the new
/// directory entry must be synced before anything in the file is acknowledged.
pub(super) fn open(
    dir: &Path,
    name: &str,
    owner: Owner,
    disk: &dyn Disk,
    created: &mut bool,
) -> Result<Mailbox, OpenError> {
    let path = dir.join(name);
    let dotlock = lock::take(dir, name, owner)?;
    let (file, new) = open_or_create(&path).map_err(OpenError::Io)?;
    *created |= new;
    match os::try_lock_exclusive(&file) {
        Ok(true) => {}
        Ok(false) => return Err(OpenError::Busy),
        Err(e) => return Err(OpenError::Io(e)),
    }
    let len = file.metadata().map_err(OpenError::Io)?.len();
    let pad = padding(&read_tail(&file, len).map_err(OpenError::Io)?);
    Ok(Mailbox {
        file: disk.mailbox(file, name),
        _dotlock: dotlock,
        start: len,
        len,
        pad,
    })
}

/// Opens the mailbox file for appending, creating it (mode 0600) if it does not exist; says
/// whether this call created it. Opening without `O_CREAT` first and creating with `O_EXCL`
/// makes that answer exact even if another program creates the file at the same moment.
fn open_or_create(path: &Path) -> io::Result<(File, bool)> {
    let mut existing = OpenOptions::new();
    // Never follow a link planted in the mail directory.
    existing
        .read(true)
        .append(true)
        .custom_flags(libc::O_NOFOLLOW);
    let mut fresh = existing.clone();
    fresh.create_new(true).mode(0o600);
    let mut rounds = 0;
    loop {
        match existing.open(path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            opened => return opened.map(|file| (file, false)),
        }
        match fresh.open(path) {
            // Another program created it between the two calls: open what it made.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && rounds < 2 => rounds += 1,
            created => return created.map(|file| (file, true)),
        }
    }
}

/// What must be appended to a mailbox ending in `tail` so that a new entry starts a `From ` line
/// after a blank line, as procmail does: nothing for an empty file or one ending in `\n\n`, one
/// `\n` after a single `\n` (a CRLF mbox ends in `\r\n`), two otherwise (a torn or foreign last
/// line). Nothing already in the file is ever changed.
pub(super) fn padding(tail: &[u8]) -> &'static [u8] {
    if tail.is_empty() || tail.ends_with(b"\n\n") {
        b""
    } else if tail.ends_with(b"\n") {
        b"\n"
    } else {
        b"\n\n"
    }
}

/// The last two bytes of a file `len` bytes long (fewer if it is shorter).
fn read_tail(file: &File, len: u64) -> io::Result<Vec<u8>> {
    let n = len.min(2);
    let mut tail = vec![0u8; n as usize];
    file.read_exact_at(&mut tail, len - n)?;
    Ok(tail)
}
