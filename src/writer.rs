//! The single writer thread: the only code that opens, locks, appends to or syncs an mbox file.
//!
//! It exists so that no two threads ever append to one file and so that the promise behind a
//! 250 (RFC 5321 §6.1: the message is ours to keep) is kept in one place. It takes every job
//! queued (group commit), locks each mailbox as mail tools do (a `<mbox>.lock` dotlock, then an
//! fcntl write lock), appends each message, syncs each touched file once, unlocks, and only then
//! acknowledges. A job is all-or-nothing: if any of its appends fails, what it already wrote is
//! truncated back and it is answered with a failure. A mailbox locked by another program does not
//! stall the others: its job waits in a retry list until the lock timeout.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use crate::os;
use crate::reply::{self, Reply};

/// How many queued jobs one group commit takes at most.
const MAX_BATCH: usize = 256;
/// How often a job waiting for a locked mailbox tries again.
const LOCK_RETRY: Duration = Duration::from_millis(50);
/// A dotlock older than this is left over from a crashed program and is removed (Postfix's
/// `stale_lock_time` is 500 s).
const STALE_DOTLOCK: Duration = Duration::from_secs(500);
/// How far back the torn-tail repair looks at a time.
const SCAN_BLOCK: u64 = 64 * 1024;

/// What the writer made of a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Appended to every mailbox and flushed to stable storage.
    Delivered,
    /// A mailbox stayed locked by another program past the lock timeout: 450.
    Busy,
    /// The disk or quota is full: 452.
    NoSpace,
    /// Any other local error: 451.
    Failed,
}

impl Outcome {
    /// The reply to the end of the message (RFC 5321 §6.1: 250 only once it is safely stored).
    pub(crate) fn reply(self, id: &str) -> Reply {
        match self {
            Outcome::Delivered => Reply::new(250, "2.0.0", format!("OK: delivered as {id}")),
            Outcome::Busy => reply::MAILBOX_BUSY,
            Outcome::NoSpace => reply::INSUFFICIENT_STORAGE,
            Outcome::Failed => reply::LOCAL_ERROR,
        }
    }
}

/// One message for one mailbox.
#[derive(Debug)]
pub(crate) struct Entry {
    /// The mailbox file name, already checked safe by the directory.
    pub mailbox: String,
    /// The `From ` line and trace headers for this recipient.
    pub header: Vec<u8>,
    /// The stored message text, shared by all recipients.
    pub body: Arc<[u8]>,
}

/// A message to deliver, all-or-nothing, and where to send the outcome.
#[derive(Debug)]
pub(crate) struct Job {
    /// The message id, for logs.
    pub id: String,
    /// One entry per mailbox.
    pub entries: Vec<Entry>,
    /// Receives exactly one outcome.
    pub ack: Sender<Outcome>,
}

/// Starts the writer thread over `mail_dir`. It runs until every sender of `jobs` is dropped,
/// then finishes the jobs it holds and exits.
pub(crate) fn spawn(
    mail_dir: PathBuf,
    lock_timeout: Duration,
    jobs: Receiver<Job>,
) -> io::Result<JoinHandle<()>> {
    spawn_with(
        mail_dir,
        lock_timeout,
        jobs,
        Arc::new(|file, _| Box::new(file)),
    )
}

/// The file operations the writer does on an open, locked mailbox: the seam where tests inject
/// write and sync failures without needing a full disk.
pub(crate) trait MboxFile: Send {
    /// Appends all of `bytes`, or fails having appended a part of them.
    fn append(&mut self, bytes: &[u8]) -> io::Result<()>;
    /// Cuts the file back to `len` bytes.
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// Flushes the file's data to stable storage.
    fn sync(&self) -> io::Result<()>;
}

impl MboxFile for File {
    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.write_all(bytes)
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        File::set_len(self, len)
    }
    fn sync(&self) -> io::Result<()> {
        self.sync_data()
    }
}

/// Wraps each opened mailbox file (given with its mailbox name) for the writer.
pub(crate) type Files = Arc<dyn Fn(File, &str) -> Box<dyn MboxFile> + Send + Sync>;

/// [`spawn`] with a chosen way of wrapping mailbox files.
pub(crate) fn spawn_with(
    mail_dir: PathBuf,
    lock_timeout: Duration,
    jobs: Receiver<Job>,
    files: Files,
) -> io::Result<JoinHandle<()>> {
    thread::Builder::new()
        .name("mboxd-writer".into())
        .spawn(move || {
            Writer {
                mail_dir,
                lock_timeout,
                files,
            }
            .run(&jobs)
        })
}

struct Writer {
    mail_dir: PathBuf,
    lock_timeout: Duration,
    files: Files,
}

/// A job whose mailbox was locked by someone else, and until when it may wait.
struct Waiting {
    job: Job,
    deadline: Instant,
}

/// A mailbox opened and locked for one group commit.
struct Mailbox {
    file: Box<dyn MboxFile>,
    dotlock: PathBuf,
    /// The length before this commit, where a failed commit truncates back to.
    start: u64,
    /// The length after the appends so far.
    len: u64,
}

impl Drop for Mailbox {
    fn drop(&mut self) {
        // The fcntl lock goes with the descriptor; the dotlock is ours to remove.
        if let Err(e) = fs::remove_file(&self.dotlock) {
            log::error!("cannot remove dotlock {}: {e}", self.dotlock.display());
        }
    }
}

enum OpenError {
    Busy,
    Io(io::Error),
}

impl Writer {
    fn run(&self, jobs: &Receiver<Job>) {
        let mut waiting: Vec<Waiting> = Vec::new();
        let mut open = true;
        loop {
            let first = if waiting.is_empty() {
                // Queued jobs come out before the disconnection does: this drains the channel.
                match jobs.recv() {
                    Ok(job) => Some(job),
                    Err(_) => break,
                }
            } else if open {
                match jobs.recv_timeout(LOCK_RETRY) {
                    Ok(job) => Some(job),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => {
                        open = false;
                        None
                    }
                }
            } else {
                // Shutting down with jobs still waiting for a lock: they wait out their timeout.
                thread::sleep(LOCK_RETRY);
                None
            };
            let now = Instant::now();
            let mut batch = std::mem::take(&mut waiting);
            batch.extend(
                first
                    .into_iter()
                    .chain(jobs.try_iter().take(MAX_BATCH))
                    .map(|job| Waiting {
                        job,
                        deadline: now + self.lock_timeout,
                    }),
            );
            waiting = self.commit(batch);
        }
        log::debug!("writer: job channel closed and drained; exiting");
    }

    /// Writes a batch; returns the jobs that must wait for a lock.
    fn commit(&self, batch: Vec<Waiting>) -> Vec<Waiting> {
        let mut boxes: HashMap<String, Mailbox> = HashMap::new();
        let mut written: Vec<Job> = Vec::new();
        let mut waiting = Vec::new();
        'jobs: for item in batch {
            for entry in &item.job.entries {
                if boxes.contains_key(&entry.mailbox) {
                    continue;
                }
                match self.open(&entry.mailbox) {
                    Ok(mailbox) => {
                        boxes.insert(entry.mailbox.clone(), mailbox);
                    }
                    Err(OpenError::Busy) if Instant::now() < item.deadline => {
                        waiting.push(item);
                        continue 'jobs;
                    }
                    Err(OpenError::Busy) => {
                        log::warn!(
                            "{}: mailbox {} stayed locked; 450",
                            item.job.id,
                            entry.mailbox
                        );
                        answer(&item.job, Outcome::Busy);
                        continue 'jobs;
                    }
                    Err(OpenError::Io(e)) => {
                        log::error!(
                            "{}: cannot open mailbox {}: {e}",
                            item.job.id,
                            entry.mailbox
                        );
                        answer(&item.job, classify(&e));
                        continue 'jobs;
                    }
                }
            }
            match append(&item.job, &mut boxes) {
                Ok(()) => written.push(item.job),
                Err(e) => {
                    log::error!("{}: append failed: {e}", item.job.id);
                    answer(&item.job, classify(&e));
                }
            }
        }
        // One sync per touched file covers every job of the batch (group commit).
        let mut failure = None;
        for (name, mailbox) in &boxes {
            if mailbox.len != mailbox.start
                && let Err(e) = mailbox.file.sync()
            {
                log::error!("cannot sync mailbox {name}: {e}");
                failure = Some(classify(&e));
            }
        }
        if failure.is_some() {
            // What reached the disk is unknown: take the whole batch back.
            for (name, mailbox) in &boxes {
                if let Err(e) = mailbox.file.set_len(mailbox.start) {
                    log::error!("cannot truncate mailbox {name} back: {e}");
                }
            }
        }
        // Unlock before acknowledging: once a client has its 250, the mailbox is free.
        drop(boxes);
        for job in &written {
            answer(job, failure.unwrap_or(Outcome::Delivered));
        }
        waiting
    }

    /// Opens a mailbox under both locks and makes sure it ends with a whole message.
    fn open(&self, name: &str) -> Result<Mailbox, OpenError> {
        let path = self.mail_dir.join(name);
        let dotlock = dotlock_path(&path);
        take_dotlock(&dotlock)?;
        let unlock = |e: OpenError| {
            let _ = fs::remove_file(&dotlock);
            e
        };
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(0o600)
            // Never follow a link planted in the mail directory.
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .map_err(|e| unlock(OpenError::Io(e)))?;
        match os::try_lock_exclusive(&file) {
            Ok(true) => {}
            Ok(false) => return Err(unlock(OpenError::Busy)),
            Err(e) => return Err(unlock(OpenError::Io(e))),
        }
        let mut file = file;
        let len = match repair_torn_tail(&mut file, &path) {
            Ok(len) => len,
            Err(e) => return Err(unlock(OpenError::Io(e))),
        };
        Ok(Mailbox {
            file: (self.files)(file, name),
            dotlock,
            start: len,
            len,
        })
    }
}

/// Appends every entry of `job`; on failure truncates its own appends back.
fn append(job: &Job, boxes: &mut HashMap<String, Mailbox>) -> io::Result<()> {
    let mut done: Vec<(&str, u64)> = Vec::new();
    let mut result = Ok(());
    for entry in &job.entries {
        let Some(mailbox) = boxes.get_mut(&entry.mailbox) else {
            result = Err(io::Error::other("mailbox not open"));
            break;
        };
        let before = mailbox.len;
        let wrote = mailbox
            .file
            .append(&entry.header)
            .and_then(|()| mailbox.file.append(&entry.body));
        // Whatever happened, the file is exactly as long as it was plus what this entry adds.
        done.push((&entry.mailbox, before));
        if let Err(e) = wrote {
            result = Err(e);
            break;
        }
        mailbox.len = before + (entry.header.len() + entry.body.len()) as u64;
    }
    if result.is_err() {
        for (name, before) in done.into_iter().rev() {
            if let Some(mailbox) = boxes.get_mut(name) {
                if let Err(e) = mailbox.file.set_len(before) {
                    log::error!("{}: cannot truncate {name} back: {e}", job.id);
                }
                mailbox.len = before;
            }
        }
    }
    result
}

fn answer(job: &Job, outcome: Outcome) {
    // A worker that gave up waiting is no error of the writer's.
    let _ = job.ack.send(outcome);
}

/// ENOSPC and EDQUOT mean insufficient storage (452); anything else is a local error (451).
fn classify(e: &io::Error) -> Outcome {
    match e.raw_os_error() {
        Some(libc::ENOSPC) | Some(libc::EDQUOT) => Outcome::NoSpace,
        _ => Outcome::Failed,
    }
}

fn dotlock_path(mbox: &Path) -> PathBuf {
    let mut name = mbox.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

/// Creates `<mbox>.lock` exclusively, with our process id in it as liblockfile does, removing
/// a stale one first: one older than [`STALE_DOTLOCK`], or one whose process is gone (left by a
/// crash, ours included: a killed server must not lock itself out after a restart).
fn take_dotlock(path: &Path) -> Result<(), OpenError> {
    for _ in 0..2 {
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
        {
            Ok(mut file) => {
                // The id is a courtesy to other tools; the lock is the file's existence.
                let _ = writeln!(file, "{}", std::process::id());
                return Ok(());
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                if !dotlock_is_stale(path) {
                    return Err(OpenError::Busy);
                }
                log::warn!("removing stale dotlock {}", path.display());
                let _ = fs::remove_file(path);
            }
            Err(e) => return Err(OpenError::Io(e)),
        }
    }
    Err(OpenError::Busy)
}

fn dotlock_is_stale(path: &Path) -> bool {
    let age = fs::symlink_metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| SystemTime::now().duration_since(t).ok());
    if age.is_some_and(|age| age > STALE_DOTLOCK) {
        return true;
    }
    let owner = fs::read_to_string(path)
        .ok()
        .and_then(|text| text.trim().parse::<u32>().ok());
    match owner {
        // Our own id: this process holds a mailbox's locks only inside one commit and removes
        // them after, so this is a leftover of an earlier process that had the same id.
        Some(pid) if pid == std::process::id() => true,
        Some(pid) => !Path::new("/proc").join(pid.to_string()).exists(),
        // Empty or foreign contents: only age can tell.
        None => false,
    }
}

/// Makes sure the file ends with a whole entry (in `\n\n`) and returns its length.
///
/// A crash in the middle of an append can leave a torn entry at the end; the next append must not
/// merge with it. The torn tail is cut back to the end of the last whole entry, found as the last
/// `\n\nFrom ` (a `From ` at the start of a line inside a message is always quoted), or a
/// `\n\n` followed by the start of `From ` cut short, and logged.
fn repair_torn_tail(file: &mut File, path: &Path) -> io::Result<u64> {
    let len = file.metadata()?.len();
    let tail = read_tail(file, len)?;
    if len == 0 || tail.ends_with(b"\n\n") {
        return Ok(len);
    }
    let cut_in_separator = (1..5).find(|&k| tail.ends_with(&[b"\n\n", &b"From "[..k]].concat()));
    let keep = match cut_in_separator {
        Some(k) => len - k as u64,
        None => last_entry_start(file, len)?,
    };
    log::warn!(
        "{}: torn tail of {} bytes after a crash; truncating back to {keep}",
        path.display(),
        len - keep
    );
    file.set_len(keep)?;
    Ok(keep)
}

/// The last few bytes of the file (up to 6).
fn read_tail(file: &mut File, len: u64) -> io::Result<Vec<u8>> {
    let mut tail = vec![0u8; len.min(6) as usize];
    file.seek(SeekFrom::Start(len - tail.len() as u64))?;
    file.read_exact(&mut tail)?;
    Ok(tail)
}

/// The offset just after the last `\n\n` that is followed by `From `, or 0.
fn last_entry_start(file: &mut File, len: u64) -> io::Result<u64> {
    const MARK: &[u8] = b"\n\nFrom ";
    let mut end = len;
    while end > 0 {
        // Overlap blocks by the marker's length so a marker across a boundary is found.
        let start = end.saturating_sub(SCAN_BLOCK);
        let stop = (end + MARK.len() as u64 - 1).min(len);
        let mut block = vec![0u8; (stop - start) as usize];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(&mut block)?;
        if let Some(i) = block.windows(MARK.len()).rposition(|w| w == MARK) {
            return Ok(start + i as u64 + 2);
        }
        end = start;
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn deliver_with_fault(
        dir: &Path,
        budget: i64,
        errno: i32,
        fail_sync: bool,
        text: &str,
    ) -> Outcome {
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
}
