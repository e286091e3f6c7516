//! Opening a mailbox for one group commit: both locks, the file, and the state of its end; and
//! appending a job's entries to the mailboxes open, all or nothing.
//!
//! It exists to keep what is true of one open mailbox (where this commit started, how far it has
//! written, which lock it holds) in one value that releases its locks when dropped.

use std::collections::HashMap;
use std::fs::{File, Metadata, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::time::{Duration, Instant};

use super::lock::{self, DotLock, Owner, Refused};
use super::{Disk, Job, MboxFile};
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
    /// The last (at most two) bytes of the file, as this commit leaves it so far.
    tail: Vec<u8>,
    /// The file's device and inode, to tell whether the name still names it.
    identity: (u64, u64),
    /// When the file was made (statx(2)'s birth time), where the file system keeps it: a file
    /// removed and made again may get the inode number back, not the birth time.
    born: Option<std::time::SystemTime>,
    /// When both locks were taken: how long the writer has held them.
    locked_at: Instant,
    /// A cut back was refused (another program wrote without the lock): the file's end is not
    /// known, so nothing more is appended to it, or cut from it, in this commit.
    pub torn: bool,
}

/// A file as [`Mailbox::entry`] tells it apart.
pub(super) type Entry = (u64, u64, Option<std::time::SystemTime>);

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

/// Opens a mailbox under both locks, checks that its name still names the file locked, and
/// finds what must precede the first new entry.
///
/// `created` is set as soon as this call creates the file, even if it then fails: the new
/// directory entry must be synced before anything in the file is acknowledged.
pub(super) fn open(
    dir: &Path,
    name: &str,
    (owner, file_owner): (Owner, u32),
    disk: &dyn Disk,
    created: &mut bool,
) -> Result<Mailbox, OpenError> {
    let path = dir.join(name);
    let dotlock = lock::take(dir, name, owner)?;
    let mut opened = None;
    for _ in 0..3 {
        let (file, new) = open_or_create(&path).map_err(OpenError::Io)?;
        *created |= new;
        opened = lock_opened(file, &path, file_owner)?;
        if opened.is_some() {
            break;
        }
    }
    // Replaced three times over in a moment: try again later, as for a lock held.
    let Some((file, meta)) = opened else {
        return Err(OpenError::Busy);
    };
    let len = meta.len();
    let tail = read_tail(&file, len).map_err(OpenError::Io)?;
    let pad = padding(&tail);
    Ok(Mailbox {
        file: disk.mailbox(file, name),
        _dotlock: dotlock,
        start: len,
        len,
        pad,
        tail,
        identity: (meta.dev(), meta.ino()),
        born: meta.created().ok(),
        locked_at: Instant::now(),
        torn: false,
    })
}

impl Mailbox {
    /// Readies a mailbox the writer kept locked since its last commit for the next one, if the
    /// file is still what that commit left: the same file under `name` in `dir`, of the length
    /// the writer made it. Anything else (the file removed, renamed or replaced, or written by a
    /// program that ignores locks) returns `false` and the mailbox must be opened afresh. One
    /// `lstat(2)` instead of the dozen calls of a fresh open.
    pub(super) fn reuse(&mut self, dir: &Path, name: &str) -> bool {
        let same =
            naming(&dir.join(name), self.identity).is_some_and(|meta| meta.len() == self.len);
        if same {
            self.start = self.len;
            self.pad = padding(&self.tail);
        }
        same
    }

    /// The file's device and inode.
    pub(super) fn identity(&self) -> (u64, u64) {
        self.identity
    }

    /// What tells this file from another under its name for the directory's sake: device,
    /// inode and, where the file system keeps it, birth time.
    pub(super) fn entry(&self) -> Entry {
        (self.identity.0, self.identity.1, self.born)
    }

    /// Records that `parts` were appended, in order, after the first `self.len` bytes.
    pub(super) fn appended(&mut self, parts: &[&[u8]]) {
        for part in parts {
            self.len += part.len() as u64;
            let end = part.get(part.len().saturating_sub(2)..).unwrap_or_default();
            self.tail.extend_from_slice(end);
            let cut = self.tail.len().saturating_sub(2);
            self.tail.drain(..cut);
        }
    }

    /// Whether to keep this mailbox locked for the next commit: it was written by this one, its
    /// last bytes are known (not cut back since its last append), and it has been held for less
    /// than `max`.
    pub(super) fn worth_holding(&self, max: Duration) -> bool {
        self.len != self.start && !self.tail.is_empty() && self.locked_at.elapsed() < max
    }

    /// Records that the file was cut back to `len`, whose last bytes are no longer known: the
    /// mailbox is not worth holding, only releasing.
    pub(super) fn truncated(&mut self, len: u64) {
        self.len = len;
        self.tail.clear();
    }

    /// Records that a cut back was refused: see [`Mailbox::torn`]. Not worth holding either.
    pub(super) fn left_torn(&mut self) {
        self.torn = true;
        self.tail.clear();
    }
}

/// Takes the fcntl lock on `file`, just opened as `path`, and checks what it is; `None` if `path`
/// no longer names it. Between the open and the lock, a program that locks with fcntl alone may
/// have renamed a new mailbox over the old one (as a rewrite does), or any program may have
/// removed it: a message appended to a file that no name leads to would be acknowledged and lost.
/// Checked once the lock is held, so a program that honours the locks cannot change it again
/// before the commit ends.
fn lock_opened(
    file: File,
    path: &Path,
    file_owner: u32,
) -> Result<Option<(File, Metadata)>, OpenError> {
    match os::try_lock_exclusive(&file) {
        Ok(true) => {}
        Ok(false) => return Err(OpenError::Busy),
        Err(e) => return Err(OpenError::Io(e)),
    }
    let meta = file.metadata().map_err(OpenError::Io)?;
    // A FIFO or a device where a mailbox was would take writes without end (a pipe no one
    // reads blocks the writer, and every delivery behind it) and cannot be synced. A second name
    // (a hard link) or an owner other than this server means someone else made the file: a link
    // to a file outside the mail directory would have mail written there, and a file another
    // user made would give them the mail (Postfix's safe_open refuses both). The owner is the
    // one files made here get (`file_owner`), not always this process's user. No name at all is a
    // file removed meanwhile: `naming` below has it opened again.
    let refused = if !meta.file_type().is_file() {
        Some("not a regular file")
    } else if meta.nlink() > 1 {
        Some("a file with other names (hard links)")
    } else if meta.uid() != file_owner {
        Some("a file another user owns")
    } else {
        None
    };
    if let Some(why) = refused {
        return Err(OpenError::Io(io::Error::new(
            io::ErrorKind::InvalidInput,
            why,
        )));
    }
    let named = naming(path, (meta.dev(), meta.ino())).is_some();
    Ok(named.then_some((file, meta)))
}

/// What lstat(2) says of `path`, if `path` names the file `identity` (device, inode) itself, not
/// a file renamed over it, nor a symbolic link to it, nor nothing.
fn naming(path: &Path, identity: (u64, u64)) -> Option<Metadata> {
    std::fs::symlink_metadata(path)
        .ok()
        .filter(|meta| (meta.dev(), meta.ino()) == identity)
}

/// Opens the mailbox file for appending, creating it (mode 0600) if it does not exist; says
/// whether this call created it. Opening without `O_CREAT` first and creating with `O_EXCL`
/// makes that answer exact even if another program creates the file at the same moment.
fn open_or_create(path: &Path) -> io::Result<(File, bool)> {
    let mut existing = OpenOptions::new();
    // Never follow a link planted in the mail directory; never wait in `open` for a FIFO or a
    // device planted there (`open` refuses what is not a regular file once it has it).
    existing
        .read(true)
        .append(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK);
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

/// Appends every entry of `job`; on failure truncates its own appends back.
///
/// Only offsets this commit reached are ever truncated to: each entry's `before` is at least the
/// mailbox's length when it was opened, so no byte another program wrote is cut.
pub(super) fn append(job: &Job, boxes: &mut HashMap<String, Mailbox>) -> io::Result<()> {
    let mut done: Vec<(&str, u64, u64)> = Vec::new();
    let mut result = Ok(());
    for entry in &job.entries {
        let Some(mailbox) = boxes.get_mut(&entry.mailbox) else {
            result = Err(io::Error::other("mailbox not open"));
            break;
        };
        if mailbox.torn {
            // Its end, and so the padding a new entry needs, is not known: the next commit
            // opens it afresh.
            result = Err(io::Error::other(
                "mailbox left torn by a refused cut back in this commit",
            ));
            break;
        }
        let before = mailbox.len;
        // The first entry of this commit starts a clean `From ` line (see `mailbox::padding`).
        let pad = if before == mailbox.start {
            mailbox.pad
        } else {
            b""
        };
        if !pad.is_empty() {
            log::warn!(
                "{}: mailbox {:?} does not end in a blank line; appending {} newline(s) before the new entry",
                job.id,
                entry.mailbox,
                pad.len()
            );
        }
        let parts: [&[u8]; 3] = [pad, &entry.header, &entry.body];
        if let Err(torn) = mailbox.file.append(&parts) {
            // It may have appended part of its bytes, from `before`.
            done.push((&entry.mailbox, before, before + torn.written));
            result = Err(torn.error);
            break;
        }
        mailbox.appended(&parts);
        done.push((&entry.mailbox, before, mailbox.len));
    }
    if result.is_err() {
        for (name, before, end) in done.into_iter().rev() {
            if let Some(mailbox) = boxes.get_mut(name) {
                match mailbox.file.cut_back(before, end) {
                    Ok(()) => mailbox.truncated(before),
                    Err(e) => {
                        log::error!("{}: cannot truncate {name:?} back: {e}", job.id);
                        mailbox.left_torn();
                    }
                }
            }
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A mailbox `box` in a fresh directory, opened as the writer opens it, not yet locked, and
    /// the owner files made there get.
    fn opened() -> (tempfile::TempDir, std::path::PathBuf, File, u32) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("box");
        std::fs::write(&path, "From a\n\n").unwrap();
        let (file, new) = open_or_create(&path).unwrap();
        assert!(!new);
        let owner = file.metadata().unwrap().uid();
        (dir, path, file, owner)
    }

    #[test]
    fn a_file_still_named_is_locked_and_kept() {
        let (_dir, path, file, owner) = opened();
        let Ok(Some((_file, meta))) = lock_opened(file, &path, owner) else {
            panic!("the file under its name was not kept");
        };
        assert_eq!(meta.len(), 8);
    }

    #[test]
    fn the_owner_checked_is_the_one_files_made_here_get() {
        // Not this process's user: on NFS with root_squash or a FUSE file system, a mailbox the
        // writer had just made was refused for good.
        let (_dir, path, file, _) = opened();
        if std::os::unix::fs::chown(&path, Some(65534), None).is_err() {
            println!("skipped: cannot give a file to another user (needs root)");
            return;
        }
        assert!(matches!(lock_opened(file, &path, 65534), Ok(Some(_))));
        let (file, _) = open_or_create(&path).unwrap();
        match lock_opened(file, &path, 0) {
            Err(OpenError::Io(e)) => assert_eq!(e.to_string(), "a file another user owns"),
            _ => panic!("a file another user owns was kept"),
        }
    }

    #[test]
    fn a_file_renamed_over_before_the_lock_is_not_kept() {
        let (dir, path, file, owner) = opened();
        let new = dir.path().join("box.new");
        std::fs::write(&new, "From a\n\nFrom b\n\n").unwrap();
        std::fs::rename(&new, &path).unwrap();
        assert!(matches!(lock_opened(file, &path, owner), Ok(None)));
    }

    #[test]
    fn a_file_removed_before_the_lock_is_not_kept() {
        let (_dir, path, file, owner) = opened();
        std::fs::remove_file(&path).unwrap();
        assert!(matches!(lock_opened(file, &path, owner), Ok(None)));
    }
}
