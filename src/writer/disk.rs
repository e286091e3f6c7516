//! The writer's seam to the disk: the few file operations its promise rests on (append, cut
//! back, sync a file, sync a directory), as traits the tests replace to inject a full disk, a
//! failing sync, or to watch which syncs come before an answer.
//!
//! It exists apart from the group commit (`mod.rs`) so that what is I/O and what is bookkeeping
//! can be read separately.

use std::fs::File;
use std::io::{self, IoSlice, Write};
use std::path::Path;

/// The file operations the writer does on an open, locked mailbox, as [`Disk::mailbox`] wraps
/// it.
pub(crate) trait MboxFile: Send {
    /// Appends all of `parts`, one after the other, or fails having appended a prefix of them.
    fn append(&mut self, parts: &[&[u8]]) -> io::Result<()>;
    /// Cuts the file back to `len` bytes.
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// Flushes the file's data to stable storage.
    fn sync(&self) -> io::Result<()>;
}

impl MboxFile for File {
    fn append(&mut self, parts: &[&[u8]]) -> io::Result<()> {
        write_all_parts(self, parts)
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        File::set_len(self, len)
    }
    fn sync(&self) -> io::Result<()> {
        self.sync_data()
    }
}

/// Writes every byte of `parts` in as few calls as the kernel allows: one `writev(2)` for an
/// entry's padding, header and body together, instead of one `write(2)` each. Like `write_all`,
/// it retries after a short write or `EINTR` and fails on a write of zero bytes.
pub(crate) fn write_all_parts(out: &mut impl Write, parts: &[&[u8]]) -> io::Result<()> {
    let mut slices: Vec<IoSlice<'_>> = parts
        .iter()
        .filter(|p| !p.is_empty())
        .map(|p| IoSlice::new(p))
        .collect();
    let mut rest = &mut slices[..];
    while !rest.is_empty() {
        match out.write_vectored(rest) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut rest, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The operations the writer's promise rests on, apart from opening and locking: the seam where
/// tests inject write and sync failures without needing a full disk, and watch which syncs happen
/// before an acknowledgement.
pub(crate) trait Disk: Send + Sync {
    /// Wraps a mailbox file, opened and locked for one commit, given with its mailbox name.
    fn mailbox(&self, file: File, name: &str) -> Box<dyn MboxFile>;
    /// Flushes the directory `dir`, and so the names of the files created in it, to stable
    /// storage (fsync(2): syncing a file does not sync its directory entry).
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
}

/// The disk as it is.
pub(crate) struct RealDisk;

impl Disk for RealDisk {
    fn mailbox(&self, file: File, _name: &str) -> Box<dyn MboxFile> {
        Box::new(file)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }
}
