//! Unit tests of the writer: group commit, fault injection through the file seam, and what
//! happens to the end of a mailbox before an append.

use super::mailbox;
use super::*;
use std::fs;
use std::io::Write;
use std::path::Path;

#[test]
fn padding_is_what_a_clean_from_line_needs() {
    assert_eq!(mailbox::padding(b""), b"");
    assert_eq!(mailbox::padding(b"\n\n"), b"");
    assert_eq!(mailbox::padding(b"x\n"), b"\n");
    assert_eq!(mailbox::padding(b"\r\n"), b"\n");
    assert_eq!(mailbox::padding(b"\n"), b"\n");
    assert_eq!(mailbox::padding(b"li"), b"\n\n");
    assert_eq!(mailbox::padding(b"x"), b"\n\n");
    assert_eq!(mailbox::padding(b"\n\r"), b"\n\n");
}

/// Writes `old` into mailbox `m`, delivers one message to it, and returns the new contents.
fn deliver_after(old: &[u8]) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("m"), old).unwrap();
    let (job, outcome) = job(&["m"], "new\n\n");
    run_writer(dir.path(), Arc::new(|file, _| Box::new(file)), vec![job]);
    assert_eq!(outcome.recv().unwrap(), Outcome::Delivered);
    fs::read(dir.path().join("m")).unwrap()
}

/// Asserts that `new` is `old`, then `pad`, then a whole new entry.
fn assert_kept_and_padded(old: &[u8], pad: &[u8], new: &[u8]) {
    assert!(new.starts_with(old), "earlier bytes changed: {new:?}");
    let added = &new[old.len()..];
    assert!(added.starts_with(pad), "{added:?}");
    assert_eq!(
        &added[pad.len()..],
        b"From x Sun Nov 22 07:33:49 2026\nSubject: new\n\n\nnew\n\n"
    );
    // The new entry starts a line after a blank line, whatever came before.
    assert!(
        new[..old.len() + pad.len()].is_empty() || new[..old.len() + pad.len()].ends_with(b"\n\n")
    );
}

#[test]
fn a_crlf_mbox_keeps_every_byte() {
    let old = b"From a@b.test Sun Nov 22 07:33:49 2026\r\nSubject: one\r\n\r\nfirst\r\n\r\n\
                From a@b.test Sun Nov 22 07:33:50 2026\r\nSubject: two\r\n\r\nsecond\r\n";
    assert_kept_and_padded(old, b"\n", &deliver_after(old));
    let old = b"From a@b.test Sun Nov 22 07:33:49 2026\r\nSubject: one\r\n\r\nfirst\r\n\r\n";
    assert_kept_and_padded(old, b"\n", &deliver_after(old));
}

#[test]
fn a_last_message_ending_in_one_newline_gets_one_more() {
    let old = b"From a Sun Nov 22 07:33:49 2026\n\nx\n";
    assert_kept_and_padded(old, b"\n", &deliver_after(old));
}

#[test]
fn a_torn_tail_is_kept_and_padded() {
    let old = b"From a Sun Nov 22 07:33:49 2026\n\nx\n\nFrom b\nhalf a li";
    assert_kept_and_padded(old, b"\n\n", &deliver_after(old));
    let old = b"From a Sun Nov 22 07:33:49 2026\n\nx\n\nFr";
    assert_kept_and_padded(old, b"\n\n", &deliver_after(old));
}

#[test]
fn whole_and_empty_mailboxes_get_no_padding() {
    assert_kept_and_padded(b"", b"", &deliver_after(b""));
    let old = b"From a Sun Nov 22 07:33:49 2026\n\nx\n\n";
    assert_kept_and_padded(old, b"", &deliver_after(old));
}

/// A mailbox file that fails like a full or broken disk once its byte budget is spent.
struct Faulty {
    file: File,
    budget: Arc<std::sync::atomic::AtomicI64>,
    errno: i32,
    fail_sync: bool,
}

impl MboxFile for Faulty {
    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        use std::sync::atomic::Ordering;
        let left = self.budget.fetch_sub(bytes.len() as i64, Ordering::SeqCst);
        if left >= bytes.len() as i64 {
            return self.file.write_all(bytes);
        }
        // A short write, then the error: the worst case for truncation.
        self.file.write_all(&bytes[..left.max(0) as usize])?;
        Err(io::Error::from_raw_os_error(self.errno))
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }
    fn sync(&self) -> io::Result<()> {
        if self.fail_sync {
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        self.file.sync_data()
    }
}

fn job(mailboxes: &[&str], text: &str) -> (Job, crossbeam_channel::Receiver<Outcome>) {
    let (ack, outcome) = crossbeam_channel::bounded(1);
    let body: Arc<[u8]> = text.as_bytes().into();
    let entries = mailboxes
        .iter()
        .map(|m| Entry {
            mailbox: m.to_string(),
            header: format!("From x Sun Nov 22 07:33:49 2026\nSubject: {text}\n").into_bytes(),
            body: Arc::clone(&body),
        })
        .collect();
    (
        Job {
            id: "t".into(),
            entries,
            ack,
        },
        outcome,
    )
}

/// Queues `jobs` (so that they form one group commit), runs a writer over `dir` until it has
/// answered them all, and stops it.
fn run_writer(dir: &Path, files: Files, jobs: Vec<Job>) {
    let (tx, rx) = crossbeam_channel::bounded(jobs.len());
    for job in jobs {
        tx.send(job).unwrap();
    }
    drop(tx);
    let writer = spawn_with(dir.to_path_buf(), Duration::from_secs(1), rx, files).unwrap();
    writer.join().unwrap();
}

/// Files that fail as configured once `budget` bytes have been appended (all files together).
fn faulty(budget: i64, errno: i32, fail_sync: bool) -> Files {
    let budget = Arc::new(std::sync::atomic::AtomicI64::new(budget));
    Arc::new(move |file, _name| {
        Box::new(Faulty {
            file,
            budget: Arc::clone(&budget),
            errno,
            fail_sync,
        })
    })
}

/// Runs one job for mailboxes `a` and `b` through a writer whose files fail as configured.
fn deliver_with_fault(dir: &Path, budget: i64, errno: i32, fail_sync: bool, text: &str) -> Outcome {
    let (job, outcome) = job(&["a", "b"], text);
    run_writer(dir, faulty(budget, errno, fail_sync), vec![job]);
    outcome.recv().unwrap()
}

#[test]
fn outcomes_map_to_replies() {
    assert_eq!(Outcome::Delivered.reply("x").code, 250);
    assert_eq!(Outcome::Busy.reply("x").code, 450);
    assert_eq!(Outcome::NoSpace.reply("x").code, 452);
    assert_eq!(Outcome::Failed.reply("x").code, 451);
}

#[test]
fn injected_faults_map_to_outcomes_and_leave_no_partial_message() {
    let dir = tempfile::tempdir().unwrap();
    let first = "From x Sun Nov 22 07:33:49 2026\n\nfirst\n\n";
    fs::write(dir.path().join("a"), first).unwrap();
    fs::write(dir.path().join("b"), first).unwrap();
    let unchanged = || {
        assert_eq!(fs::read_to_string(dir.path().join("a")).unwrap(), first);
        assert_eq!(fs::read_to_string(dir.path().join("b")).unwrap(), first);
        assert!(!dir.path().join("a.lock").exists() && !dir.path().join("b.lock").exists());
    };
    // The disk fills in the middle of the second mailbox's copy: 452, both taken back.
    assert_eq!(
        deliver_with_fault(dir.path(), 60, libc::ENOSPC, false, "m\n\n"),
        Outcome::NoSpace
    );
    unchanged();
    assert_eq!(
        deliver_with_fault(dir.path(), 10, libc::EDQUOT, false, "m\n\n"),
        Outcome::NoSpace
    );
    unchanged();
    // Any other write error is a local error: 451.
    assert_eq!(
        deliver_with_fault(dir.path(), 0, libc::EIO, false, "m\n\n"),
        Outcome::Failed
    );
    unchanged();
    // Written but not synced: nothing is promised, everything is taken back.
    assert_eq!(
        deliver_with_fault(dir.path(), i64::MAX, libc::EIO, true, "m\n\n"),
        Outcome::Failed
    );
    unchanged();
    // Once the fault is gone, delivery works again.
    assert_eq!(
        deliver_with_fault(dir.path(), i64::MAX, libc::EIO, false, "ok\n\n"),
        Outcome::Delivered
    );
    assert!(
        fs::read_to_string(dir.path().join("b"))
            .unwrap()
            .ends_with("Subject: ok\n\n\nok\n\n")
    );
}

#[test]
fn a_failed_commit_takes_back_its_padding_and_nothing_more() {
    let dir = tempfile::tempdir().unwrap();
    let old = b"From a Sun Nov 22 07:33:49 2026\r\n\r\nkept\r\n";
    fs::write(dir.path().join("a"), old).unwrap();
    fs::write(dir.path().join("b"), b"From a\nhalf a li").unwrap();
    // The padding of `a` is written, then the disk fills: the file is as it was.
    assert_eq!(
        deliver_with_fault(dir.path(), 5, libc::ENOSPC, false, "m\n\n"),
        Outcome::NoSpace
    );
    assert_eq!(fs::read(dir.path().join("a")).unwrap(), old);
    assert_eq!(
        fs::read(dir.path().join("b")).unwrap(),
        b"From a\nhalf a li"
    );
    // Everything written, then the sync fails: all taken back, to the length before padding.
    assert_eq!(
        deliver_with_fault(dir.path(), i64::MAX, libc::EIO, true, "m\n\n"),
        Outcome::Failed
    );
    assert_eq!(fs::read(dir.path().join("a")).unwrap(), old);
    assert_eq!(
        fs::read(dir.path().join("b")).unwrap(),
        b"From a\nhalf a li"
    );
}

#[test]
fn a_failed_job_truncates_to_its_own_start_not_the_commits() {
    let dir = tempfile::tempdir().unwrap();
    let old = b"From a Sun Nov 22 07:33:49 2026\n\nx\n";
    fs::write(dir.path().join("m"), old).unwrap();
    let (first, first_outcome) = job(&["m"], "one\n\n");
    let (second, second_outcome) = job(&["m"], "two\n\n");
    let one = b"\nFrom x Sun Nov 22 07:33:49 2026\nSubject: one\n\n\none\n\n";
    // Room for the padding and the first entry, and a few bytes of the second.
    run_writer(
        dir.path(),
        faulty(one.len() as i64 + 10, libc::ENOSPC, false),
        vec![first, second],
    );
    assert_eq!(first_outcome.recv().unwrap(), Outcome::Delivered);
    assert_eq!(second_outcome.recv().unwrap(), Outcome::NoSpace);
    // The second job's bytes are gone; the first job's padding and entry stay, once.
    assert_eq!(
        fs::read(dir.path().join("m")).unwrap(),
        [&old[..], one].concat()
    );
}
