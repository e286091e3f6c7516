//! Unit tests of how far a failed sync reaches: only the jobs that wrote to the mailbox whose
//! sync failed are refused; the others of the same group commit are taken back with it and
//! written again at once, in a commit that new jobs cannot join.

use super::disk::write_all_parts;
use super::tests::{LiveWriter, job, run_writer};
use super::*;
use std::fs::{self, File};
use std::path::Path;
use std::thread;

/// A mailbox file whose sync fails with EIO if `fails`.
struct SyncFails {
    file: File,
    fails: bool,
}

impl MboxFile for SyncFails {
    fn append(&mut self, parts: &[&[u8]]) -> Result<(), disk::Torn> {
        write_all_parts(&mut self.file, parts)
    }
    fn cut_back(&self, len: u64, end: u64) -> io::Result<()> {
        MboxFile::cut_back(&self.file, len, end)
    }
    fn sync(&self) -> io::Result<()> {
        if self.fails {
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        self.file.sync_data()
    }
}

/// A disk on which only the mailbox `bad` cannot be synced.
struct OneBadMailbox;

impl Disk for OneBadMailbox {
    fn mailbox(&self, file: File, name: &str) -> Box<dyn MboxFile> {
        Box::new(SyncFails {
            file,
            fails: name == "bad",
        })
    }
    fn sync_dir(&self, dir: &File, path: &Path) -> io::Result<()> {
        RealDisk.sync_dir(dir, path)
    }
}

#[test]
fn a_failed_sync_refuses_only_the_jobs_that_wrote_to_that_mailbox() {
    let dir = tempfile::tempdir().unwrap();
    let (jobs, outcomes): (Vec<Job>, Vec<ack::Awaited>) = [
        (&["good"][..], "one"),
        (&["bad"][..], "two"),
        (&["good", "other"][..], "three"),
        (&["bad", "other"][..], "four"),
    ]
    .into_iter()
    .map(|(mailboxes, text)| job(mailboxes, text))
    .unzip();
    // Queued before the writer starts: one group commit.
    run_writer(dir.path(), Arc::new(OneBadMailbox), jobs);
    let outcomes: Vec<Outcome> = outcomes.into_iter().map(ack::Awaited::wait).collect();
    assert_eq!(
        outcomes,
        [
            Outcome::Delivered,
            Outcome::Failed,
            Outcome::Delivered,
            Outcome::Failed
        ]
    );
    let read = |name: &str| fs::read_to_string(dir.path().join(name)).unwrap_or_default();
    // Each delivered job once, nothing of a refused one.
    assert_eq!(read("good").matches("Subject: one\n").count(), 1);
    assert_eq!(read("good").matches("Subject: three\n").count(), 1);
    assert_eq!(read("good").matches("From x ").count(), 2);
    assert_eq!(read("other").matches("From x ").count(), 1);
    assert!(read("other").contains("Subject: three\n"));
    assert_eq!(read("bad"), "");
}

#[test]
fn jobs_for_a_broken_mailbox_arriving_all_the_time_do_not_refuse_the_others() {
    // The jobs taken back used to wait for the next commit, which new jobs for the broken
    // mailbox joined and failed again, until the lock timeout (1 s here) refused them too.
    let dir = tempfile::tempdir().unwrap();
    let writer = LiveWriter::start(dir.path(), Arc::new(OneBadMailbox), 64);
    let (good, answer) = job(&["good"], "good");
    let (bad, _) = job(&["bad"], "bad");
    writer.send(good);
    writer.send(bad);
    let until = Instant::now() + Duration::from_secs(3);
    while !answer.is_answered() && Instant::now() < until {
        writer.send(job(&["bad"], "bad").0);
        thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(answer.wait(), Outcome::Delivered);
}
