//! Unit tests of the writer: group commit, faults injected through the `Disk` seam, the order of
//! file syncs, directory syncs and acknowledgements, and what happens to the end of a mailbox
//! before an append.

use super::mailbox;
use super::*;
use std::fs;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

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
    run_writer(dir.path(), Arc::new(RealDisk), vec![job]);
    assert_eq!(outcome.wait(), Outcome::Delivered);
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
    budget: Arc<AtomicI64>,
    errno: i32,
    fail_sync: bool,
}

impl MboxFile for Faulty {
    fn append(&mut self, parts: &[&[u8]]) -> Result<(), disk::Torn> {
        let bytes = parts.concat();
        let left = self.budget.fetch_sub(bytes.len() as i64, Ordering::SeqCst);
        let torn = |error, written| disk::Torn { error, written };
        if left >= bytes.len() as i64 {
            return self.file.write_all(&bytes).map_err(|e| torn(e, 0));
        }
        // A short write, then the error: the worst case for truncation.
        let written = left.max(0) as usize;
        self.file
            .write_all(&bytes[..written])
            .map_err(|e| torn(e, 0))?;
        Err(torn(
            io::Error::from_raw_os_error(self.errno),
            written as u64,
        ))
    }
    fn cut_back(&self, len: u64, end: u64) -> io::Result<()> {
        MboxFile::cut_back(&self.file, len, end)
    }
    fn sync(&self) -> io::Result<()> {
        if self.fail_sync {
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        self.file.sync_data()
    }
}

pub(super) fn job(mailboxes: &[&str], text: &str) -> (Job, ack::Awaited) {
    let (ack, outcome) = ack::pair(None);
    let body = Arc::new(Body::stored(text.as_bytes()));
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
            label: "test".into(),
            summary: text.into(),
            entries,
            ack,
        },
        outcome,
    )
}

/// A writer thread fed through a queue of `queue` jobs; dropping it closes the queue and joins
/// the thread, so the writer has answered every job sent.
/// The owner of the files made in `dir`, a directory the test made: the directory's own.
pub(super) fn file_owner(dir: &Path) -> u32 {
    std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(dir).unwrap())
}

pub(super) struct LiveWriter {
    /// What the writer records of its commits.
    pub(super) commits: Arc<Commits>,
    jobs: Option<crossbeam_channel::Sender<Job>>,
    thread: Option<JoinHandle<()>>,
}

impl LiveWriter {
    pub(super) fn start(dir: &Path, disk: Arc<dyn Disk>, queue: usize) -> LiveWriter {
        LiveWriter::start_with(dir, disk, queue, Vec::new())
    }

    /// Starts a writer with `queued` already in its queue, so that they form one group commit.
    fn start_with(dir: &Path, disk: Arc<dyn Disk>, queue: usize, queued: Vec<Job>) -> LiveWriter {
        let (tx, rx) = crossbeam_channel::bounded(queue.max(queued.len()));
        for job in queued {
            tx.send(job).unwrap();
        }
        let commits = Arc::new(Commits::default());
        let thread = spawn(
            dir.to_path_buf(),
            Duration::from_secs(1),
            file_owner(dir),
            rx,
            disk,
            Arc::clone(&commits),
        )
        .unwrap();
        LiveWriter {
            commits,
            jobs: Some(tx),
            thread: Some(thread),
        }
    }

    pub(super) fn send(&self, job: Job) {
        self.jobs.as_ref().unwrap().send(job).unwrap();
    }
}

impl Drop for LiveWriter {
    /// Closes the queue and joins the writer, which must have answered and exited within 10 s:
    /// a writer that hangs fails the test instead of hanging it (unless the test already failed).
    fn drop(&mut self) {
        drop(self.jobs.take());
        if let Some(thread) = self.thread.take() {
            let deadline = Instant::now() + Duration::from_secs(10);
            // No signal says the thread has ended but `is_finished`: a bounded poll.
            while !thread.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            if thread.is_finished() {
                thread.join().unwrap();
            } else if !std::thread::panicking() {
                panic!("the writer did not exit within 10 s of its queue closing");
            }
        }
    }
}

/// Queues `jobs` (so that they form one group commit), runs a writer over `dir` until it has
/// answered them all, and stops it.
pub(super) fn run_writer(dir: &Path, disk: Arc<dyn Disk>, jobs: Vec<Job>) {
    drop(LiveWriter::start_with(dir, disk, 1, jobs));
}

/// A disk whose mailbox files fail as configured once `budget` bytes have been appended (all
/// files together).
struct FaultyDisk {
    budget: Arc<AtomicI64>,
    errno: i32,
    fail_sync: bool,
}

impl Disk for FaultyDisk {
    fn mailbox(&self, file: File, _name: &str) -> Box<dyn MboxFile> {
        Box::new(Faulty {
            file,
            budget: Arc::clone(&self.budget),
            errno: self.errno,
            fail_sync: self.fail_sync,
        })
    }
    fn sync_dir(&self, dir: &File, path: &Path) -> io::Result<()> {
        RealDisk.sync_dir(dir, path)
    }
}

fn faulty(budget: i64, errno: i32, fail_sync: bool) -> Arc<dyn Disk> {
    Arc::new(FaultyDisk {
        budget: Arc::new(AtomicI64::new(budget)),
        errno,
        fail_sync,
    })
}

/// Runs one job for mailboxes `a` and `b` through a writer whose files fail as configured.
fn deliver_with_fault(dir: &Path, budget: i64, errno: i32, fail_sync: bool, text: &str) -> Outcome {
    let (job, outcome) = job(&["a", "b"], text);
    run_writer(dir, faulty(budget, errno, fail_sync), vec![job]);
    outcome.wait()
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
        // No dotlock and no private lock file is left behind.
        let mut names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        assert_eq!(names, ["a", "b"]);
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
    assert_eq!(first_outcome.wait(), Outcome::Delivered);
    assert_eq!(second_outcome.wait(), Outcome::NoSpace);
    // The second job's bytes are gone; the first job's padding and entry stay, once.
    assert_eq!(
        fs::read(dir.path().join("m")).unwrap(),
        [&old[..], one].concat()
    );
}

/// A disk that records the syncs asked of it, and whether the job in flight had already been
/// answered when the mail directory was synced.
struct Watched {
    mail_dir: PathBuf,
    events: Arc<Mutex<Vec<String>>>,
    /// The directories above the mail directory synced, in order; the first is also an event.
    above: Mutex<Vec<PathBuf>>,
    in_flight: Mutex<Option<ack::Awaited>>,
    fail_dir: AtomicBool,
}

/// A real mailbox file whose syncs are recorded.
struct Recorded {
    file: File,
    name: String,
    events: Arc<Mutex<Vec<String>>>,
}

impl MboxFile for Recorded {
    fn append(&mut self, parts: &[&[u8]]) -> Result<(), disk::Torn> {
        write_all_parts(&mut self.file, parts)
    }
    fn cut_back(&self, len: u64, end: u64) -> io::Result<()> {
        MboxFile::cut_back(&self.file, len, end)
    }
    fn sync(&self) -> io::Result<()> {
        self.events
            .lock()
            .unwrap()
            .push(format!("sync {}", self.name));
        self.file.sync_data()
    }
}

impl Disk for Watched {
    fn mailbox(&self, file: File, name: &str) -> Box<dyn MboxFile> {
        Box::new(Recorded {
            file,
            name: name.to_string(),
            events: Arc::clone(&self.events),
        })
    }
    fn sync_dir(&self, dir: &File, path: &Path) -> io::Result<()> {
        let mut events = self.events.lock().unwrap();
        if path != self.mail_dir {
            let mut above = self.above.lock().unwrap();
            if above.is_empty() {
                events.push("sync parent".into());
            }
            above.push(path.to_path_buf());
            return RealDisk.sync_dir(dir, path);
        }
        let answered = self
            .in_flight
            .lock()
            .unwrap()
            .as_ref()
            .is_some_and(|outcome| outcome.is_answered());
        events.push(
            if answered {
                "sync dir after the ack"
            } else {
                "sync dir"
            }
            .into(),
        );
        if self.fail_dir.load(Ordering::SeqCst) {
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        RealDisk.sync_dir(dir, path)
    }
}

/// A writer over a [`Watched`] disk, fed one job at a time.
struct WatchedWriter {
    disk: Arc<Watched>,
    writer: LiveWriter,
}

impl WatchedWriter {
    fn start(dir: &Path) -> WatchedWriter {
        let disk = Arc::new(Watched {
            mail_dir: dir.to_path_buf(),
            events: Arc::default(),
            above: Mutex::default(),
            in_flight: Mutex::new(None),
            fail_dir: AtomicBool::new(false),
        });
        let writer = LiveWriter::start(dir, disk.clone(), 1);
        WatchedWriter { disk, writer }
    }

    /// Delivers one message; returns its outcome and the syncs done for it, in order.
    fn deliver(&self, mailboxes: &[&str]) -> (Outcome, Vec<String>) {
        let (job, outcome) = job(mailboxes, "m\n\n");
        *self.disk.in_flight.lock().unwrap() = Some(outcome.clone());
        self.writer.send(job);
        let outcome = outcome.wait();
        (
            outcome,
            std::mem::take(&mut *self.disk.events.lock().unwrap()),
        )
    }
}

#[test]
fn a_created_mailbox_is_in_a_synced_directory_before_its_ack() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(
        dir.path().join("old"),
        "From a Sun Nov 22 07:33:49 2026\n\nx\n\n",
    )
    .unwrap();
    let writer = WatchedWriter::start(dir.path());
    let delivered = |events: &[&str]| {
        (
            Outcome::Delivered,
            events.iter().map(|e| e.to_string()).collect(),
        )
    };
    // The first commit syncs the directory once: an earlier process may have created a file in
    // it and died before syncing it.
    assert_eq!(
        writer.deliver(&["old"]),
        delivered(&["sync parent", "sync old", "sync dir"])
    );
    // An existing file needs no directory sync.
    assert_eq!(writer.deliver(&["old"]), delivered(&["sync old"]));
    // A file this commit creates does, after the file's own sync and before the ack.
    assert_eq!(
        writer.deliver(&["new"]),
        delivered(&["sync new", "sync dir"])
    );
    let mode = fs::metadata(dir.path().join("new"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert_eq!(writer.deliver(&["new"]), delivered(&["sync new"]));
    // A file another program renamed over a mailbox (as Python's `mailbox` does, syncing no
    // directory) is a new directory entry too.
    let replacement = dir.path().join("old.tmp");
    fs::write(&replacement, "From a Sun Nov 22 07:33:49 2026\n\ny\n\n").unwrap();
    fs::rename(&replacement, dir.path().join("old")).unwrap();
    assert_eq!(
        writer.deliver(&["old"]),
        delivered(&["sync old", "sync dir"])
    );
    assert_eq!(writer.deliver(&["old"]), delivered(&["sync old"]));
    // Removed and made again, which on ext4 gives it its inode number back when it is the
    // lowest free one (the second time round here, at least): its birth time tells it apart,
    // where the file system keeps one.
    let old = dir.path().join("old");
    if fs::metadata(&old).and_then(|m| m.created()).is_err() {
        println!("skipped: the file system keeps no birth time");
        return;
    }
    for _ in 0..3 {
        fs::remove_file(&old).unwrap();
        fs::write(&old, "From a Sun Nov 22 07:33:49 2026\n\nz\n\n").unwrap();
        assert_eq!(
            writer.deliver(&["old"]),
            delivered(&["sync old", "sync dir"])
        );
    }
}

/// Every directory on the way to the mail directory is synced before the first ack: the server
/// may have just created several levels of it.
#[test]
fn the_directories_above_the_mail_directory_are_synced_before_the_first_ack() {
    let root = tempfile::tempdir().unwrap();
    let mail = root.path().join("new1/new2/mail");
    fs::create_dir_all(&mail).unwrap();
    let writer = WatchedWriter::start(&mail);
    let (outcome, events) = writer.deliver(&["a"]);
    assert_eq!(outcome, Outcome::Delivered);
    assert_eq!(events, ["sync parent", "sync a", "sync dir"]);
    let real = fs::canonicalize(root.path()).unwrap();
    let above = writer.disk.above.lock().unwrap();
    assert_eq!(
        above[..3],
        [real.join("new1/new2"), real.join("new1"), real]
    );
}

#[test]
fn a_failed_directory_sync_is_451_and_leaves_no_partial_message() {
    let dir = tempfile::tempdir().unwrap();
    let first = "From a Sun Nov 22 07:33:49 2026\n\nx\n\n";
    fs::write(dir.path().join("a"), first).unwrap();
    let writer = WatchedWriter::start(dir.path());
    writer.disk.fail_dir.store(true, Ordering::SeqCst);
    let (outcome, mut events) = writer.deliver(&["a", "fresh"]);
    assert_eq!(outcome.reply("x").code, 451);
    // Both files were synced (in either order), then the directory, before the answer.
    assert_eq!(events.pop().as_deref(), Some("sync dir"));
    events.sort();
    assert_eq!(events, ["sync a", "sync fresh", "sync parent"]);
    assert_eq!(fs::read_to_string(dir.path().join("a")).unwrap(), first);
    assert_eq!(fs::read(dir.path().join("fresh")).unwrap(), b"");
    // The directory is still unsynced: the next commit syncs it, although it creates nothing.
    writer.disk.fail_dir.store(false, Ordering::SeqCst);
    let (outcome, events) = writer.deliver(&["a"]);
    assert_eq!(outcome, Outcome::Delivered);
    assert_eq!(events, ["sync a", "sync dir"]);
}

#[test]
fn the_writer_removes_orphaned_lock_files_when_it_starts() {
    let dir = tempfile::tempdir().unwrap();
    // A dead mboxd's private lock file, linked to the mailbox's dotlock and empty, as after a
    // power cut in the middle of a commit; and one it never linked.
    let dead = ".jones.lock.mboxd-4194305-99";
    fs::write(dir.path().join(dead), "").unwrap();
    fs::hard_link(dir.path().join(dead), dir.path().join("jones.lock")).unwrap();
    fs::write(dir.path().join(".brown.lock.mboxd-4194305-99"), "").unwrap();
    let (job, outcome) = job(&["smith"], "m\n\n");
    run_writer(dir.path(), Arc::new(RealDisk), vec![job]);
    assert_eq!(outcome.wait(), Outcome::Delivered);
    let names: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["smith"]);
}
