//! Opening a mailbox for one group commit: both locks, the file, and the state of its end.
//!
//! It exists to keep what is true of one open mailbox (where this commit started, how far it has
//! written, which lock it holds) in one value that releases its locks when dropped.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use super::MboxFile;
use super::lock::{self, DotLock, Refused};
use crate::os;

/// How far back the torn-tail repair looks at a time.
pub(super) const SCAN_BLOCK: u64 = 64 * 1024;

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

/// Opens a mailbox under both locks and makes sure it ends with a whole message.
pub(super) fn open(
    dir: &Path,
    name: &str,
    wrap: &dyn Fn(File, &str) -> Box<dyn MboxFile>,
) -> Result<Mailbox, OpenError> {
    let path = dir.join(name);
    let dotlock = lock::take(&path)?;
    let mut file = OpenOptions::new()
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
    let len = repair_torn_tail(&mut file, &path).map_err(OpenError::Io)?;
    Ok(Mailbox {
        file: wrap(file, name),
        _dotlock: dotlock,
        start: len,
        len,
    })
}

/// Makes sure the file ends with a whole entry (in `\n\n`) and returns its length.
///
/// A crash in the middle of an append can leave a torn entry at the end; the next append must not
/// merge with it. The torn tail is cut back to the end of the last whole entry, found as the last
/// `\n\nFrom ` (a `From ` at the start of a line inside a message is always quoted), or a
/// `\n\n` followed by the start of `From ` cut short, and logged.
pub(super) fn repair_torn_tail(file: &mut File, path: &Path) -> io::Result<u64> {
    let len = file.metadata()?.len();
    let tail = read_tail(file, len)?;
    if len == 0 || tail.ends_with(b"\n\n") {
        return Ok(len);
    }
    let cut_in_separator = (1..5).find(|&k| tail.ends_with(&[b"\n\n", &b"From "[..k]].concat()));
    let keep = match cut_in_separator {
        Some(k) => len - k as u64,
        None => last_entry_start(file, len)?,
    };
    log::warn!(
        "{}: torn tail of {} bytes after a crash; truncating back to {keep}",
        path.display(),
        len - keep
    );
    file.set_len(keep)?;
    Ok(keep)
}

/// The last few bytes of the file (up to 6).
fn read_tail(file: &mut File, len: u64) -> io::Result<Vec<u8>> {
    let mut tail = vec![0u8; len.min(6) as usize];
    file.seek(SeekFrom::Start(len - tail.len() as u64))?;
    file.read_exact(&mut tail)?;
    Ok(tail)
}

/// The offset just after the last `\n\n` that is followed by `From `, or 0.
fn last_entry_start(file: &mut File, len: u64) -> io::Result<u64> {
    const MARK: &[u8] = b"\n\nFrom ";
    let mut end = len;
    while end > 0 {
        // Overlap blocks by the marker's length so a marker across a boundary is found.
        let start = end.saturating_sub(SCAN_BLOCK);
        let stop = (end + MARK.len() as u64 - 1).min(len);
        let mut block = vec![0u8; (stop - start) as usize];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(&mut block)?;
        if let Some(i) = block.windows(MARK.len()).rposition(|w| w == MARK) {
            return Ok(start + i as u64 + 2);
        }
        end = start;
    }
    Ok(0)
}
