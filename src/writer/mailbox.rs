//! Opening a mailbox for one group commit: both locks, the file, and the state of its end.
//!
//! It exists to keep what is true of one open mailbox (where this commit started, how far it has
//! written, which lock it holds) in one value that releases its locks when dropped.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

use super::MboxFile;
use super::lock::{self, DotLock, Refused};
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
pub(super) fn open(
    dir: &Path,
    name: &str,
    wrap: &dyn Fn(File, &str) -> Box<dyn MboxFile>,
) -> Result<Mailbox, OpenError> {
    let path = dir.join(name);
    let dotlock = lock::take(&path)?;
    let file = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .mode(0o600)
        // Never follow a link planted in the mail directory.
        .custom_flags(libc::O_NOFOLLOW)
        .open(&path)
        .map_err(OpenError::Io)?;
    match os::try_lock_exclusive(&file) {
        Ok(true) => {}
        Ok(false) => return Err(OpenError::Busy),
        Err(e) => return Err(OpenError::Io(e)),
    }
    let len = file.metadata().map_err(OpenError::Io)?.len();
    let pad = padding(&read_tail(&file, len).map_err(OpenError::Io)?);
    Ok(Mailbox {
        file: wrap(file, name),
        _dotlock: dotlock,
        start: len,
        len,
        pad,
    })
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
