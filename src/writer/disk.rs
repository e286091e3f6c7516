//! The writer's seam to the disk: the few file operations its promise rests on (append, cut
//! back, sync a file, sync a directory), as traits the tests replace to inject a full disk, a
//! failing sync, or to watch which syncs come before an answer; and the mail directory, which
//! the writer holds open to sync it.
//!
//! It exists apart from the group commit (`mod.rs`) so that what is I/O and what is bookkeeping
//! can be read separately.

use std::fs::{self, File};
use std::io::{self, IoSlice, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The file operations the writer does on an open, locked mailbox, as [`Disk::mailbox`] wraps
/// it.
pub(crate) trait MboxFile: Send {
    /// Appends all of `parts`, one after the other, or fails having appended a prefix of them,
    /// whose length the error carries.
    fn append(&mut self, parts: &[&[u8]]) -> Result<(), Torn>;
    /// Cuts the file back to `len` bytes, taking back this writer's own appends, unless bytes
    /// another program appended since (one that takes no lock, or flock(2) only) would go with
    /// them: then the file is left as it is, and an error says so. `end` is where this writer's
    /// appends left the file (a failed one's as far as it got, see [`Torn`]): the file must end
    /// exactly there (bytes another program wrote between two of them make it longer).
    fn cut_back(&self, len: u64, end: u64) -> io::Result<()>;
    /// Flushes the file's data to stable storage.
    fn sync(&self) -> io::Result<()>;
}

impl MboxFile for File {
    fn append(&mut self, parts: &[&[u8]]) -> Result<(), Torn> {
        write_all_parts(self, parts)
    }
    fn cut_back(&self, len: u64, end: u64) -> io::Result<()> {
        // The file is opened with O_APPEND, so each write that writes something leaves the
        // offset where it ended: the file must still end there, or someone wrote after it. A
        // cut does not move the offset, so it is moved here, to where the file then ends (a
        // commit may cut a mailbox twice: a job's own append, then the whole commit).
        let ours = io::Seek::stream_position(&mut &*self)?;
        match self.metadata()?.len() {
            size if size == len => Ok(()),
            size if size == ours && size == end && size > len => {
                File::set_len(self, len)?;
                io::Seek::seek(&mut &*self, io::SeekFrom::Start(len)).map(drop)
            }
            size if size != ours => Err(io::Error::other(format!(
                "another program appended after mboxd's last write (the file ends at {size}, \
                 mboxd's write at {ours}); not cut back to {len}"
            ))),
            size => Err(io::Error::other(format!(
                "another program wrote {} bytes between mboxd's appends (the file ends at \
                 {size}, mboxd's appends at {end}); not cut back to {len}",
                size.abs_diff(end)
            ))),
        }
    }
    fn sync(&self) -> io::Result<()> {
        self.sync_data()
    }
}

/// A failed append: why, and how many of its bytes reached the file before it failed (so that
/// the writer knows where its own bytes end, and can tell another program's after them).
#[derive(Debug)]
pub(crate) struct Torn {
    pub(crate) error: io::Error,
    pub(crate) written: u64,
}

/// Writes every byte of `parts` in as few calls as the kernel allows: one `writev(2)` for an
/// entry's padding, header and body together, instead of one `write(2)` each. Like `write_all`,
/// it retries after a short write or `EINTR` and fails on a write of zero bytes.
pub(crate) fn write_all_parts(out: &mut impl Write, parts: &[&[u8]]) -> Result<(), Torn> {
    let mut written = 0;
    let mut slices: Vec<IoSlice<'_>> = parts
        .iter()
        .filter(|p| !p.is_empty())
        .map(|p| IoSlice::new(p))
        .collect();
    let mut rest = &mut slices[..];
    while !rest.is_empty() {
        let error = match out.write_vectored(rest) {
            Ok(0) => io::ErrorKind::WriteZero.into(),
            Ok(n) => {
                IoSlice::advance_slices(&mut rest, n);
                written += n as u64;
                continue;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => e,
        };
        return Err(Torn { error, written });
    }
    Ok(())
}

/// The operations the writer's promise rests on, apart from opening and locking: the seam where
/// tests inject write and sync failures without needing a full disk, and watch which syncs happen
/// before an acknowledgement.
pub(crate) trait Disk: Send + Sync {
    /// Wraps a mailbox file, opened and locked for one commit, given with its mailbox name.
    fn mailbox(&self, file: File, name: &str) -> Box<dyn MboxFile>;
    /// Flushes the directory `dir`, open as `path`, and so the names of the files created in
    /// it, to stable storage (fsync(2): syncing a file does not sync its directory entry).
    fn sync_dir(&self, dir: &File, path: &Path) -> io::Result<()>;
}

/// The disk as it is.
pub(crate) struct RealDisk;

impl Disk for RealDisk {
    fn mailbox(&self, file: File, _name: &str) -> Box<dyn MboxFile> {
        Box::new(file)
    }
    fn sync_dir(&self, dir: &File, _path: &Path) -> io::Result<()> {
        dir.sync_all()
    }
}

/// The mail directory, held open for the writer's life, so that syncing it after a mailbox file
/// was created needs no descriptor of its own. When other threads hold every descriptor the
/// process may have (a flood of connections), the writer waits for one to open a new mailbox,
/// up to the lock timeout; a second one for the directory would fail the commit with `451`.
/// Before each sync the path is looked up again (stat(2), no descriptor needed): a directory
/// replaced meanwhile is opened afresh, with the descriptor the old one frees.
pub(crate) struct MailDir {
    path: PathBuf,
    held: Option<File>,
}

impl MailDir {
    /// Opens the directory at `path`; if it cannot be opened now, the first sync tries again.
    pub(crate) fn open(path: PathBuf) -> MailDir {
        let held = open_dir(&path).ok();
        MailDir { path, held }
    }

    /// The mail directory's path, under which mailboxes are opened.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Syncs the directory the path names now, through `disk`.
    pub(crate) fn sync(&mut self, disk: &dyn Disk) -> io::Result<()> {
        let named = fs::metadata(&self.path)?;
        let file = match self.held.take() {
            Some(f)
                if f.metadata()
                    .is_ok_and(|m| (m.dev(), m.ino()) == (named.dev(), named.ino())) =>
            {
                f
            }
            old => {
                drop(old);
                open_dir(&self.path)?
            }
        };
        let synced = disk.sync_dir(&file, &self.path);
        self.held = Some(file);
        synced
    }

    /// Syncs, through `disk`, every directory on the way to the mail directory, nearest first:
    /// a directory's name is durable only once the directory holding it is synced. The server
    /// may just have created the mail directory and any missing levels above it
    /// (`create_dir_all`), or an earlier process may have and died before syncing them, so the
    /// writer calls this once at start, before its first commit. Best effort, each failure
    /// logged: a directory above may not be readable.
    pub(crate) fn sync_ancestors(&self, disk: &dyn Disk) {
        let dirs = match ancestors(&self.path) {
            Ok(dirs) => dirs,
            Err(e) => {
                log::warn!(
                    "cannot find the directories above the mail directory {:?}: {e}",
                    self.path
                );
                return;
            }
        };
        for dir in dirs {
            if let Err(e) = open_dir(&dir).and_then(|f| disk.sync_dir(&f, &dir)) {
                log::warn!("cannot sync {dir:?}, a directory above the mail directory: {e}");
            }
        }
    }
}

/// The directories that hold `dir` and each other, from its parent up to the root of the file
/// system `dir` is on, symbolic links and `..` resolved. Above that root, names belong to
/// another file system: its mount point is set up by the administrator, not by mboxd.
fn ancestors(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let real = fs::canonicalize(dir)?;
    let dev = fs::metadata(&real)?.dev();
    Ok(real
        .ancestors()
        .skip(1)
        .map_while(|a| {
            fs::metadata(a)
                .is_ok_and(|m| m.dev() == dev)
                .then(|| a.to_path_buf())
        })
        .collect())
}

/// Opens a directory to sync it: only a directory (`O_DIRECTORY`), and never waiting on what
/// another program may have put under its name (`O_NONBLOCK`: a FIFO would block the open).
fn open_dir(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NONBLOCK)
        .open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The held directory is the one its path names at each sync: replaced, it is opened afresh;
    /// gone, the sync fails.
    #[test]
    fn the_mail_directory_synced_is_the_one_its_path_names() {
        let root = tempfile::tempdir().unwrap();
        let path = root.path().join("mail");
        fs::create_dir(&path).unwrap();
        let named = |p: &Path| {
            let m = fs::metadata(p).unwrap();
            (m.dev(), m.ino())
        };
        let held = |d: &MailDir| {
            let m = d.held.as_ref().expect("held").metadata().unwrap();
            (m.dev(), m.ino())
        };
        let mut dir = MailDir::open(path.clone());
        let first = named(&path);
        assert_eq!(held(&dir), first);
        dir.sync(&RealDisk).unwrap();
        assert_eq!(held(&dir), first);
        fs::rename(&path, root.path().join("old")).unwrap();
        fs::create_dir(&path).unwrap();
        dir.sync(&RealDisk).unwrap();
        assert_eq!(held(&dir), named(&path));
        assert_ne!(held(&dir), first);
        fs::remove_dir(&path).unwrap();
        assert!(dir.sync(&RealDisk).is_err());
    }

    /// Every directory above, up to the root of the file system, and no further: a tmpfs at
    /// /dev/shm is a file system of its own, whose root is /dev/shm, not /.
    #[test]
    fn the_directories_above_stop_at_the_root_of_the_file_system() {
        let root = tempfile::tempdir().unwrap();
        let mail = root.path().join("a/b/mail");
        fs::create_dir_all(&mail).unwrap();
        let real = fs::canonicalize(root.path()).unwrap();
        let found = ancestors(&mail.join("../mail")).unwrap();
        assert_eq!(found[..3], [real.join("a/b"), real.join("a"), real.clone()]);
        let last = found.last().unwrap();
        assert_eq!(
            fs::metadata(last).unwrap().dev(),
            fs::metadata(&real).unwrap().dev()
        );
        let dev = |p: &Path| fs::metadata(p).map(|m| m.dev()).ok();
        let shm = match fs::canonicalize("/dev/shm") {
            Ok(shm) if dev(&shm).is_some() && dev(&shm) != shm.parent().and_then(dev) => shm,
            _ => {
                println!("skipped: the stop at a mount point: no /dev/shm of its own");
                return;
            }
        };
        let there = tempfile::tempdir_in(&shm).unwrap();
        assert_eq!(ancestors(there.path()).unwrap(), [shm]);
    }

    /// A writer that takes at most 3 bytes per call and is interrupted every other call.
    struct Dribble {
        out: Vec<u8>,
        calls: usize,
    }

    impl Write for Dribble {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.write_vectored(&[io::IoSlice::new(buf)])
        }
        fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
            self.calls += 1;
            if self.calls % 2 == 1 {
                return Err(io::ErrorKind::Interrupted.into());
            }
            let first = bufs
                .iter()
                .find(|b| !b.is_empty())
                .map_or(&[][..], |b| &b[..]);
            let n = first.len().min(3);
            self.out.extend_from_slice(&first[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn parts_are_written_whole_and_in_order_across_short_writes_and_interruptions() {
        let mut out = Dribble {
            out: Vec::new(),
            calls: 0,
        };
        write_all_parts(&mut out, &[b"\n", b"", b"From a\n", b"body\n\n"]).unwrap();
        assert_eq!(out.out, b"\nFrom a\nbody\n\n");
    }

    #[test]
    fn a_write_of_nothing_is_an_error_not_a_loop() {
        struct Full;
        impl Write for Full {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Ok(0)
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let e = write_all_parts(&mut Full, &[b"x"]).unwrap_err().error;
        assert_eq!(e.kind(), io::ErrorKind::WriteZero);
    }

    /// A cut takes back this writer's own appends only: not when the file does not end where its
    /// last write did (a program appending without the fcntl lock wrote after it).
    #[test]
    fn a_cut_back_never_takes_what_another_program_appended() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("box");
        fs::write(&path, "old\n").unwrap();
        let mut ours = fs::OpenOptions::new().append(true).open(&path).unwrap();
        ours.write_all(b"ours\n").unwrap();
        MboxFile::cut_back(&ours, 4, 9).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"old\n");
        // Nothing to take back: nothing changes.
        MboxFile::cut_back(&ours, 4, 4).unwrap();
        ours.write_all(b"ours\n").unwrap();
        let mut theirs = fs::OpenOptions::new().append(true).open(&path).unwrap();
        theirs.write_all(b"theirs\n").unwrap();
        assert!(MboxFile::cut_back(&ours, 4, 9).is_err());
        assert_eq!(fs::read(&path).unwrap(), b"old\nours\ntheirs\n");
        // Cut twice, as a commit does when a job's append failed and then the commit did: the
        // first cut leaves the offset where the file ends, so the second is not refused.
        fs::write(&path, "old\n").unwrap();
        let mut ours = fs::OpenOptions::new().append(true).open(&path).unwrap();
        ours.write_all(b"one\n").unwrap();
        ours.write_all(b"two\n").unwrap();
        MboxFile::cut_back(&ours, 8, 12).unwrap();
        MboxFile::cut_back(&ours, 4, 8).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"old\n");
        // Another program's bytes between two of this writer's appends: the file does not end
        // where this writer's appends alone would have left it.
        ours.write_all(b"one\n").unwrap();
        theirs.write_all(b"theirs\n").unwrap();
        ours.write_all(b"two\n").unwrap();
        assert!(MboxFile::cut_back(&ours, 4, 12).is_err());
        assert_eq!(fs::read(&path).unwrap(), b"old\none\ntheirs\ntwo\n");
    }
}
