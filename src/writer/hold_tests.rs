//! Unit tests of keeping a mailbox locked from one commit to the next (`Writer::held`): it is
//! kept only while more jobs are queued, opened once for back-to-back commits, released when
//! the queue empties, and opened afresh if anything changed it meanwhile.

use super::tests::{LiveWriter, file_owner, job};
use super::*;
use std::fs::File;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A disk that counts opened mailboxes and can stop the first sync until the test says go,
/// running `during` (the test's meddling) at that moment.
struct Gated {
    opened: AtomicUsize,
    /// Told when a sync is waiting.
    at_sync: crossbeam_channel::Sender<()>,
    /// Each sync waits for one message here.
    go: crossbeam_channel::Receiver<()>,
}

struct GatedFile {
    file: File,
    at_sync: crossbeam_channel::Sender<()>,
    go: crossbeam_channel::Receiver<()>,
}

impl MboxFile for GatedFile {
    fn append(&mut self, parts: &[&[u8]]) -> Result<(), disk::Torn> {
        write_all_parts(&mut self.file, parts)
    }
    fn cut_back(&self, len: u64, end: u64) -> io::Result<()> {
        MboxFile::cut_back(&self.file, len, end)
    }
    fn sync(&self) -> io::Result<()> {
        self.at_sync.send(()).unwrap();
        self.go.recv_timeout(Duration::from_secs(10)).unwrap();
        self.file.sync_data()
    }
}

impl Disk for Gated {
    fn mailbox(&self, file: File, _name: &str) -> Box<dyn MboxFile> {
        self.opened.fetch_add(1, Ordering::SeqCst);
        Box::new(GatedFile {
            file,
            at_sync: self.at_sync.clone(),
            go: self.go.clone(),
        })
    }
    fn sync_dir(&self, dir: &File, path: &Path) -> io::Result<()> {
        RealDisk.sync_dir(dir, path)
    }
}

/// A running writer over a [`Gated`] disk.
struct Rig {
    disk: Arc<Gated>,
    at_sync: crossbeam_channel::Receiver<()>,
    go: crossbeam_channel::Sender<()>,
    // Dropped before `dir`: the writer is joined before its directory goes.
    writer: LiveWriter,
    dir: tempfile::TempDir,
}

impl Rig {
    fn start() -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let (at_sync_tx, at_sync) = crossbeam_channel::unbounded();
        let (go, go_rx) = crossbeam_channel::unbounded();
        let disk = Arc::new(Gated {
            opened: AtomicUsize::new(0),
            at_sync: at_sync_tx,
            go: go_rx,
        });
        let writer = LiveWriter::start(dir.path(), disk.clone(), 16);
        Rig {
            disk,
            at_sync,
            go,
            writer,
            dir,
        }
    }

    fn send(&self, text: &str) -> ack::Awaited {
        let (job, outcome) = job(&["box"], text);
        self.writer.send(job);
        outcome
    }

    /// Waits until the writer is syncing, runs `meddle`, and lets the sync go on.
    fn at_sync(&self, meddle: impl FnOnce()) {
        self.at_sync.recv_timeout(Duration::from_secs(10)).unwrap();
        meddle();
        self.go.send(()).unwrap();
    }

    fn mailbox(&self) -> String {
        fs::read_to_string(self.dir.path().join("box")).unwrap()
    }

    fn dotlock_exists(&self) -> bool {
        self.dir.path().join("box.lock").exists()
    }
}

#[test]
fn back_to_back_commits_open_a_mailbox_once_and_release_it_when_the_queue_empties() {
    let rig = Rig::start();
    let first = rig.send("one");
    let second = Mutex::new(None);
    // While the first commit syncs, the second job is queued: the mailbox stays locked for it.
    rig.at_sync(|| *second.lock().unwrap() = Some(rig.send("two")));
    assert_eq!(first.wait(), Outcome::Delivered);
    // The second commit now waits at its sync, holding the mailbox it never let go of.
    assert!(
        rig.dotlock_exists(),
        "more was queued: the mailbox stays locked"
    );
    rig.at_sync(|| {});
    let second = second.lock().unwrap().take().unwrap();
    assert_eq!(second.wait(), Outcome::Delivered);
    assert!(
        !rig.dotlock_exists(),
        "queue empty: released before the answer"
    );
    assert_eq!(rig.disk.opened.load(Ordering::SeqCst), 1, "opened once");
    let text = rig.mailbox();
    let one = text.find("Subject: one").unwrap();
    let two = text.find("Subject: two").unwrap();
    assert!(one < two, "{text:?}");
    assert_eq!(text.matches("From x ").count(), 2, "{text:?}");
}

/// Delivers "one" and, while its commit syncs, queues "two" and runs `meddle` on the mail
/// directory; returns the mailbox's text once both are delivered and how often it was opened.
fn meddle_between_commits(meddle: impl FnOnce(&Path)) -> (String, usize) {
    let rig = Rig::start();
    let first = rig.send("one");
    let second = Mutex::new(None);
    rig.at_sync(|| {
        *second.lock().unwrap() = Some(rig.send("two"));
        meddle(rig.dir.path());
    });
    assert_eq!(first.wait(), Outcome::Delivered);
    rig.at_sync(|| {});
    let second = second.lock().unwrap().take().unwrap();
    assert_eq!(second.wait(), Outcome::Delivered);
    (rig.mailbox(), rig.disk.opened.load(Ordering::SeqCst))
}

#[test]
fn a_held_mailbox_written_by_another_program_is_opened_again_and_padded() {
    let (text, opened) = meddle_between_commits(|dir| {
        // A program that ignores locks appends a torn line.
        let mut file = OpenOptions::new()
            .append(true)
            .open(dir.join("box"))
            .unwrap();
        file.write_all(b"X").unwrap();
    });
    assert_eq!(opened, 2, "opened afresh");
    assert!(
        text.contains("Subject: one\noneX\n\nFrom x "),
        "the foreign byte is kept and the next entry padded: {text:?}"
    );
}

#[test]
fn a_held_mailbox_replaced_by_another_file_is_opened_again() {
    let (text, opened) = meddle_between_commits(|dir| {
        let fresh = dir.join("box.new");
        fs::write(&fresh, "From y Sun Nov 22 07:33:49 2026\n\nold\n\n").unwrap();
        fs::rename(&fresh, dir.join("box")).unwrap();
    });
    assert_eq!(opened, 2, "opened afresh");
    assert!(text.starts_with("From y "), "{text:?}");
    assert!(text.contains("Subject: two"), "{text:?}");
    assert!(!text.contains("Subject: one"), "{text:?}");
}

/// A reader of a mailbox (`Server::messages`) cuts it at its committed length. During the
/// first commit this writer makes to a mailbox, the entry is in the file before it is synced,
/// and the committed length is where the file ended when the writer opened it.
#[test]
fn a_mailbox_in_its_first_commit_is_committed_up_to_where_it_was_opened() {
    let rig = Rig::start();
    let old = "From y Sun Nov 22 07:33:49 2026\n\nold\n\n";
    let path = rig.dir.path().join("box");
    fs::write(&path, old).unwrap();
    let length = || fs::metadata(&path).unwrap().len();
    let old_len = u64::try_from(old.len()).unwrap();
    assert_eq!(rig.writer.commits.committed("box", length), (0, old_len));
    let first = rig.send("one");
    let mut during = None;
    rig.at_sync(|| during = Some((length(), rig.writer.commits.committed("box", length))));
    assert_eq!(first.wait(), Outcome::Delivered);
    let (in_file, committed) = during.unwrap();
    assert!(in_file > old_len, "the entry is in the file at the sync");
    // The first open of a mailbox counts as a change (readers waiting for it wake), the
    // commit as another.
    assert_eq!(committed, (1, old_len), "but not committed");
    assert_eq!(rig.writer.commits.committed("box", || 0), (2, length()));
}

#[test]
fn only_a_mailbox_written_and_held_briefly_is_worth_holding() {
    let dir = tempfile::tempdir().unwrap();
    let mut created = false;
    let Ok(mut mailbox) = mailbox::open(
        dir.path(),
        "box",
        (lock::Owner::current(), file_owner(dir.path())),
        &RealDisk,
        &mut created,
    ) else {
        panic!("cannot open a mailbox in a fresh directory");
    };
    let long = Duration::from_secs(3600);
    assert!(!mailbox.worth_holding(long), "nothing written");
    mailbox.appended(&[b"From x\n", b"m\n\n"]);
    assert!(mailbox.worth_holding(long));
    assert!(!mailbox.worth_holding(Duration::ZERO), "held too long");
    mailbox.truncated(7);
    assert!(!mailbox.worth_holding(long), "cut back");
}
