//! Unit tests of the bound on open mailboxes: how a batch is split into group commits, and that
//! a real writer never holds more mailbox files open than [`MAX_OPEN_MAILBOXES`], except for a
//! single job that alone names more, which is committed whole.

use super::tests::{job, run_writer};
use super::*;
use std::fs;
use std::fs::File;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

fn waiting(mailboxes: &[&str]) -> Waiting {
    Waiting {
        job: job(mailboxes, "m\n\n").0,
        deadline: Instant::now(),
    }
}

/// The mailboxes of each group, for comparing.
fn names(groups: &[Vec<Waiting>]) -> Vec<Vec<Vec<String>>> {
    groups
        .iter()
        .map(|group| {
            group
                .iter()
                .map(|w| w.job.entries.iter().map(|e| e.mailbox.clone()).collect())
                .collect()
        })
        .collect()
}

#[test]
fn a_batch_is_split_in_order_and_a_job_never() {
    let batch = vec![
        waiting(&["a", "b"]),
        waiting(&["b", "c"]),
        waiting(&["a"]),
        waiting(&["d"]),
        waiting(&["e", "f", "g", "h"]),
        waiting(&["i"]),
        waiting(&["i", "i", "j", "k"]),
    ];
    let split = groups(batch, 3);
    assert_eq!(
        names(&split),
        [
            // a, b, c: the bound; `a` again is already open.
            vec![vec!["a", "b"], vec!["b", "c"], vec!["a"]],
            vec![vec!["d"]],
            // Four alone: more than the bound, committed whole.
            vec![vec!["e", "f", "g", "h"]],
            // A name twice in one job is one mailbox: i, j, k.
            vec![vec!["i"], vec!["i", "i", "j", "k"]],
        ]
    );
    assert!(groups(Vec::new(), 3).is_empty());
}

/// A disk that counts the mailbox files open at once (each wrapper lives as long as its file).
#[derive(Default)]
struct Counting {
    open: Arc<AtomicUsize>,
    peak: Arc<AtomicUsize>,
}

struct Counted {
    file: File,
    open: Arc<AtomicUsize>,
}

impl MboxFile for Counted {
    fn append(&mut self, parts: &[&[u8]]) -> Result<(), disk::Torn> {
        super::write_all_parts(&mut self.file, parts)
    }
    fn cut_back(&self, len: u64, end: u64) -> io::Result<()> {
        MboxFile::cut_back(&self.file, len, end)
    }
    fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Disk for Counting {
    fn mailbox(&self, file: File, _name: &str) -> Box<dyn MboxFile> {
        let now = self.open.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(now, Ordering::SeqCst);
        Box::new(Counted {
            file,
            open: Arc::clone(&self.open),
        })
    }
    fn sync_dir(&self, dir: &File, path: &Path) -> io::Result<()> {
        RealDisk.sync_dir(dir, path)
    }
}

/// Runs `jobs` (each a list of mailbox names) as one batch; the most mailboxes open at once.
fn peak_open(dir: &Path, jobs: &[Vec<String>]) -> usize {
    let disk = Arc::new(Counting::default());
    let mut outcomes = Vec::new();
    let jobs = jobs
        .iter()
        .map(|names| {
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            let (job, outcome) = job(&names, "m\n\n");
            outcomes.push(outcome);
            job
        })
        .collect();
    run_writer(dir, disk.clone(), jobs);
    for outcome in outcomes {
        assert_eq!(outcome.wait(), Outcome::Delivered);
    }
    assert_eq!(disk.open.load(Ordering::SeqCst), 0);
    disk.peak.load(Ordering::SeqCst)
}

#[test]
fn a_batch_over_many_mailboxes_never_holds_more_than_the_bound_open() {
    let dir = tempfile::tempdir().unwrap();
    // Twenty jobs of twenty new mailboxes each: 400 mailboxes in one batch.
    let jobs: Vec<Vec<String>> = (0..20)
        .map(|j| (0..20).map(|m| format!("j{j}m{m}")).collect())
        .collect();
    let peak = peak_open(dir.path(), &jobs);
    assert!(
        peak <= MAX_OPEN_MAILBOXES,
        "{peak} mailboxes open at once, over {MAX_OPEN_MAILBOXES}"
    );
    // Three jobs of twenty fit in one commit; the fourth would not.
    assert_eq!(peak, 60);
    // Every message is stored once, in its own mailboxes.
    for names in &jobs {
        for name in names {
            let text = fs::read_to_string(dir.path().join(name)).unwrap();
            assert_eq!(text.matches("From x ").count(), 1, "{name}");
        }
    }
    // No dotlock of any kind is left.
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 400);
}

#[test]
fn one_job_over_the_bound_is_committed_whole_alone() {
    let dir = tempfile::tempdir().unwrap();
    let big: Vec<String> = (0..100).map(|m| format!("r{m}")).collect();
    let jobs = vec![vec!["small".to_string()], big.clone(), vec!["small".into()]];
    assert_eq!(peak_open(dir.path(), &jobs), 100);
    for name in &big {
        assert!(dir.path().join(name).exists());
    }
    let small = fs::read_to_string(dir.path().join("small")).unwrap();
    assert_eq!(small.matches("From x ").count(), 2);
}

#[test]
fn running_out_of_descriptors_is_told_apart() {
    assert!(out_of_descriptors(&io::Error::from_raw_os_error(
        libc::EMFILE
    )));
    assert!(out_of_descriptors(&io::Error::from_raw_os_error(
        libc::ENFILE
    )));
    assert!(!out_of_descriptors(&io::Error::from_raw_os_error(
        libc::EIO
    )));
}
