//! What follows a cut back that `File::cut_back` refuses, over real files: another program
//! wrote to the mailbox without the fcntl lock (procmail with flock only, say).

use super::disk::write_all_parts;
use super::tests::{job, run_writer};
use super::*;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

const FOREIGN: &[u8] = b"From f Sun Nov 22 07:33:49 2026\nSubject: foreign\n\nforeign\n\n";

/// Another program appending without the fcntl lock (procmail with flock only, say).
fn lockless_append(path: &Path) {
    OpenOptions::new()
        .append(true)
        .open(path)
        .unwrap()
        .write_all(FOREIGN)
        .unwrap();
}

/// The real mailbox file; cut_back is the real `File::cut_back`. Mailbox "x": the first append
/// is preceded by another program's append and torn after 40 bytes (ENOSPC), or, with
/// `foreign_at_sync`, another program appends while "x" is being synced. Mailbox "bad": its
/// sync fails.
struct Scripted {
    file: File,
    path: PathBuf,
    name: String,
    once: Arc<AtomicBool>,
    foreign_at_sync: bool,
}

impl MboxFile for Scripted {
    fn append(&mut self, parts: &[&[u8]]) -> Result<(), disk::Torn> {
        if self.name == "x" && !self.foreign_at_sync && !self.once.swap(true, Ordering::SeqCst) {
            lockless_append(&self.path);
            let all = parts.concat();
            write_all_parts(&mut self.file, &[&all[..40]])?;
            return Err(disk::Torn {
                error: io::Error::from_raw_os_error(libc::ENOSPC),
                written: 40,
            });
        }
        write_all_parts(&mut self.file, parts)
    }
    fn cut_back(&self, len: u64, end: u64) -> io::Result<()> {
        MboxFile::cut_back(&self.file, len, end)
    }
    fn sync(&self) -> io::Result<()> {
        if self.name == "bad" {
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        if self.name == "x" && self.foreign_at_sync && !self.once.swap(true, Ordering::SeqCst) {
            lockless_append(&self.path);
        }
        self.file.sync_data()
    }
}

struct ScriptedDisk {
    dir: PathBuf,
    once: Arc<AtomicBool>,
    foreign_at_sync: bool,
}

impl Disk for ScriptedDisk {
    fn mailbox(&self, file: File, name: &str) -> Box<dyn MboxFile> {
        Box::new(Scripted {
            file,
            path: self.dir.join(name),
            name: name.to_string(),
            once: Arc::clone(&self.once),
            foreign_at_sync: self.foreign_at_sync,
        })
    }
    fn sync_dir(&self, dir: &File, path: &Path) -> io::Result<()> {
        RealDisk.sync_dir(dir, path)
    }
}

fn disk(dir: &Path, foreign_at_sync: bool) -> Arc<dyn Disk> {
    Arc::new(ScriptedDisk {
        dir: dir.to_path_buf(),
        once: Arc::new(AtomicBool::new(false)),
        foreign_at_sync,
    })
}

const OLD: &str = "From a Sun Nov 22 07:33:49 2026\nSubject: old\n\nold\n\n";

/// Job A's append to "x" is torn after another program appended: the cut is rightly refused,
/// and the file's end is then not known. Job B of the same commit was appended with the padding
/// of the file as opened, right after A's torn bytes, and answered 250; now it is refused (the
/// next commit opens the file afresh and pads it).
#[test]
fn nothing_is_appended_after_a_refused_cut() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("x"), OLD).unwrap();
    let (a, a_out) = job(&["x"], "A");
    let (b, b_out) = job(&["x"], "B");
    run_writer(dir.path(), disk(dir.path(), false), vec![a, b]);
    let (a_out, b_out) = (a_out.wait(), b_out.wait());
    let text = fs::read_to_string(dir.path().join("x")).unwrap();
    assert_eq!(a_out, Outcome::NoSpace, "{text}");
    assert_ne!(b_out, Outcome::Delivered, "{text}");
    assert!(!text.contains("Subject: B"), "{text}");
    assert!(
        text.starts_with(OLD) && text.contains("\nforeign\n"),
        "{text}"
    );
}

/// Job J writes only "x", which syncs; job K's mailbox "bad" fails its sync. Another program
/// appended to "x" meanwhile, so the commit's cut of "x" is rightly refused and J's entry stays.
/// J was taken for innocent and written again: stored twice. Now it is refused with the rest.
#[test]
fn a_job_whose_mailbox_was_not_cut_back_is_not_written_again() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("x"), OLD).unwrap();
    let (j, j_out) = job(&["x"], "J");
    let (k, k_out) = job(&["bad"], "K");
    run_writer(dir.path(), disk(dir.path(), true), vec![j, k]);
    let (j_out, k_out) = (j_out.wait(), k_out.wait());
    let text = fs::read_to_string(dir.path().join("x")).unwrap();
    assert_ne!(k_out, Outcome::Delivered);
    assert_ne!(j_out, Outcome::Delivered);
    assert_eq!(text.matches("Subject: J\n").count(), 1, "{text}");
}

/// The refusal says which of the two things another program did.
#[test]
fn a_refused_cut_says_whether_the_bytes_came_after_or_between() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m");
    fs::write(&path, "old\n").unwrap();
    let mut ours = OpenOptions::new().append(true).open(&path).unwrap();
    ours.write_all(b"one\n").unwrap();
    lockless_append(&path);
    ours.write_all(b"two\n").unwrap();
    let between = MboxFile::cut_back(&ours, 4, 12).unwrap_err().to_string();
    assert!(between.contains("between mboxd's appends"), "{between}");
    lockless_append(&path);
    let after = MboxFile::cut_back(&ours, 4, 12).unwrap_err().to_string();
    assert!(after.contains("after mboxd's last write"), "{after}");
}
