//! Unit tests of the writer: group commit, fault injection through the file seam, and what
//! happens to the end of a mailbox before an append.

use super::mailbox::{SCAN_BLOCK, repair_torn_tail};
use super::*;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::Path;

fn torn(contents: &[u8]) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m");
    fs::write(&path, contents).unwrap();
    let mut file = OpenOptions::new()
        .read(true)
        .append(true)
        .open(&path)
        .unwrap();
    repair_torn_tail(&mut file, &path).unwrap();
    fs::read(&path).unwrap()
}

#[test]
fn whole_files_are_left_alone() {
    assert_eq!(torn(b""), b"");
    assert_eq!(torn(b"From a\nx\n\n"), b"From a\nx\n\n");
}

#[test]
fn torn_tails_are_cut_back() {
    assert_eq!(torn(b"From a\nx\n\nFrom b\ny"), b"From a\nx\n\n");
    assert_eq!(torn(b"From a\nx\n\nFrom b\ny\n"), b"From a\nx\n\n");
    assert_eq!(torn(b"From a\nx\n\nFr"), b"From a\nx\n\n");
    assert_eq!(torn(b"From a\nx\n\nFrom"), b"From a\nx\n\n");
    assert_eq!(torn(b"From a\nx"), b"");
    assert_eq!(torn(b"F"), b"");
}

#[test]
fn marker_across_scan_blocks_is_found() {
    let n = SCAN_BLOCK as usize - 9;
    let mut m = b"From a\n".to_vec();
    m.extend(std::iter::repeat_n(b'x', n));
    m.extend_from_slice(b"\n\nFrom b\n");
    m.extend(std::iter::repeat_n(b'y', SCAN_BLOCK as usize * 2));
    assert_eq!(torn(&m).len(), 7 + n + 2);
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

/// Runs one job through a writer whose files fail as configured; returns the outcome.
fn deliver_with_fault(dir: &Path, budget: i64, errno: i32, fail_sync: bool, text: &str) -> Outcome {
    let (tx, rx) = crossbeam_channel::bounded(4);
    let budget = Arc::new(std::sync::atomic::AtomicI64::new(budget));
    let files: Files = Arc::new(move |file, _name| {
        Box::new(Faulty {
            file,
            budget: Arc::clone(&budget),
            errno,
            fail_sync,
        })
    });
    let writer = spawn_with(dir.to_path_buf(), Duration::from_secs(1), rx, files).unwrap();
    let (job, outcome) = job(&["a", "b"], text);
    tx.send(job).unwrap();
    let outcome = outcome.recv().unwrap();
    drop(tx);
    writer.join().unwrap();
    outcome
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
