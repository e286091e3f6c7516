//! The single writer thread: the only code that opens for writing, locks, appends to or syncs
//! an mbox file (`Server::messages` only reads one).
//!
//! It exists so that no two threads ever append to one file and so that the promise behind a
//! 250 (RFC 5321 §6.1: the message is ours to keep) is kept in one place. It takes every job
//! queued (group commit), locks each mailbox as mail tools do (a `<mbox>.lock` dotlock taken with
//! liblockfile's link(2) method, then an fcntl write lock), appends each message, syncs each
//! touched file once, syncs the mail directory if a file was created in it, unlocks, and only then
//! acknowledges (sending the client its 250 itself where the socket takes it at once, see
//! `ack`). Under load (more jobs already queued when a commit ends) the mailboxes it wrote
//! stay locked for the next commit instead of being unlocked and locked again at once (see
//! `Writer::held`). A job is all-or-nothing: if any of its appends fails, what it already wrote
//! is truncated back and it is answered with a failure. The writer never cuts a byte it did not
//! write: a failed commit truncates only back to the length the file had when this commit locked
//! it, and a mailbox that does not end in a blank line (CRLF line ends, a last message ending in a
//! single newline, a torn tail) is kept as it is and gets the missing newlines appended, as part
//! of this commit, before the new entry. A mailbox locked by another program does not stall the
//! others: its job waits in a retry list until the lock timeout. Nor does one whose sync fails:
//! the commit is taken back whole, its jobs are refused, and the others of the commit are
//! written again at once, on their own, unless their lock timeout has run out.
//!
//! The writer's descriptors are bounded: one group commit holds at most [`MAX_OPEN_MAILBOXES`]
//! mailboxes open, so a batch that touches more is split, in order, into several commits, each
//! one whole (lock, append, sync, directory sync, unlock, acknowledge). A job is never split: one
//! whose own mailboxes number more than the bound is committed alone with all of them open, so
//! it stays all-or-nothing; its size is bounded by the configuration (`--max-recipients`, 100 by
//! default, times what aliases expand to). Running out of descriptors while opening a mailbox
//! (other threads hold them: sessions, connections waiting for a worker) is waited out like a
//! lock held by another program, until the lock timeout, instead of failing the job at once.
//!
//! This file holds the thread and the group commit; `mailbox` opens one mailbox under its locks
//! and appends a job's entries to the mailboxes open; `lock` takes dotlocks and judges the ones
//! it finds.

use std::collections::{HashMap, HashSet};
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};

use crate::commits::Commits;
use crate::mbox::Body;
use crate::reply::{self, Reply};

pub(crate) mod ack;
mod disk;
mod lock;
mod mailbox;

use ack::Ack;
use disk::MailDir;
#[cfg(test)]
use disk::write_all_parts;
pub(crate) use disk::{Disk, MboxFile, RealDisk};

use mailbox::{Mailbox, OpenError, append};

/// How many queued jobs one batch takes at most.
const MAX_BATCH: usize = 256;
/// How many mailboxes one group commit holds open at most (a single job with more is committed
/// alone). Each open mailbox is one descriptor, its file: its dotlock is a name, created,
/// written, closed and linked, and its fcntl lock belongs to that file. Opening the next mailbox
/// uses at most two more for a moment (the dotlock's private file, or a dotlock being judged),
/// and the directory sync one, so the writer holds at most this many plus two, or, for a
/// single job with more mailboxes, that many plus two.
pub(crate) const MAX_OPEN_MAILBOXES: usize = 64;
/// How long a mailbox may have been locked across back-to-back commits and still be kept for
/// one more (see [`Writer::held`]); after that the writer lets go, as between any two commits,
/// which wakes a program blocked in `fcntl(F_SETLKW)` for it.
const MAX_HOLD: Duration = Duration::from_millis(200);
/// How often a job waiting for a locked mailbox, or a reply waiting for room in its socket, tries
/// again.
const LOCK_RETRY: Duration = Duration::from_millis(50);

/// What the writer made of a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Appended to every mailbox and flushed to stable storage.
    Delivered,
    /// A mailbox stayed locked by another program past the lock timeout: 450.
    Busy,
    /// The disk or quota is full: 452.
    NoSpace,
    /// A mailbox may not grow past the process's file-size limit (`EFBIG`): 452 4.2.2.
    MailboxFull,
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
            Outcome::MailboxFull => reply::MAILBOX_FULL,
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
    /// The stored message text, shared by all recipients (and holding its in-flight budget).
    pub body: Arc<Body>,
}

/// A message to deliver, all-or-nothing, and where to send the outcome.
#[derive(Debug)]
pub(crate) struct Job {
    /// The message id, for logs.
    pub id: String,
    /// The session's log prefix (`conn N [peer]`).
    pub label: String,
    /// The rest of the log line about this message, its fields already escaped:
    /// `from=<...> to=<...>,<...> bytes=...`.
    pub summary: String,
    /// One entry per mailbox.
    pub entries: Vec<Entry>,
    /// Receives exactly one outcome.
    pub ack: Ack,
}

/// Starts the writer thread over `mail_dir`, where the files it creates get `file_owner` as their
/// owner (a mailbox another owns is refused), writing through `disk` (`RealDisk`, but in tests).
/// It runs until every sender of `jobs` is dropped, then finishes the jobs it holds and exits.
/// Each successful commit is recorded in `commits` once its files are synced (and unlocked,
/// unless held for the next commit), just before its jobs are acknowledged.
pub(crate) fn spawn(
    mail_dir: PathBuf,
    lock_timeout: Duration,
    file_owner: u32,
    jobs: Receiver<Job>,
    disk: Arc<dyn Disk>,
    commits: Arc<Commits>,
) -> io::Result<JoinHandle<()>> {
    // Before the server accepts any connection, not in the thread: a private lock file that appears once the
    // server runs is a live commit's (or one that dies later), never an orphan of this start.
    lock::remove_orphans(&mail_dir);
    thread::Builder::new()
        .name("mboxd-writer".into())
        .spawn(move || {
            // Like the workers (`pool.rs`): its wake-ups wait for the running thread's turn.
            if let Err(e) = crate::os::batch_scheduling() {
                log::debug!("writer: SCHED_BATCH refused ({e}); default policy kept");
            }
            Writer {
                mail_dir: MailDir::open(mail_dir),
                lock_timeout,
                disk,
                owner: lock::Owner::current(),
                file_owner,
                // An earlier process may have created a file and died before syncing the
                // directory: the first commit syncs it before any message is acknowledged as
                // delivered.
                dir_unsynced: true,
                durable: HashMap::new(),
                starved: false,
                commits,
                held: HashMap::new(),
                late: Vec::new(),
            }
            .run(&jobs)
        })
}

struct Writer {
    mail_dir: MailDir,
    lock_timeout: Duration,
    disk: Arc<dyn Disk>,
    /// This process, as the owner of the dotlocks it takes.
    owner: lock::Owner,
    /// The user owning the files this process creates in the mail directory.
    file_owner: u32,
    /// A file may have been created in the mail directory since its last successful sync.
    dir_unsynced: bool,
    /// The file (device, inode, birth time) each mailbox name named at the last successful sync
    /// of the mail directory: a fresh open that finds another file there (another program
    /// renamed a new file over it, as Python's `mailbox` does, or removed it and made it again,
    /// syncing no directory) makes the directory unsynced too. Forgotten whole past [`DURABLE_NAMES`] names, which costs a sync.
    durable: HashMap<String, mailbox::Entry>,
    /// Opening a mailbox last failed for want of descriptors: logged once until one opens.
    starved: bool,
    /// Told of every fresh open of a mailbox and every successful commit, for readers of the
    /// mailboxes (`Server::messages`, `Server::wait_for`).
    commits: Arc<Commits>,
    /// Replies to clients whose sockets did not take them whole: tried again each time round
    /// the loop, at least every [`LOCK_RETRY`] while any is left (see `ack::Late`).
    late: Vec<ack::Late>,
    /// Mailboxes kept open and locked from one commit to the next. Under load, when more jobs
    /// are already queued as a commit ends, the next commit starts at once and usually writes
    /// the same mailboxes: keeping them saves each a dozen system calls (two dotlock files
    /// created, linked and removed, an open, an fcntl lock, a stat, a read, a close), and keeps
    /// the directory free of that churn, which the next fsync would otherwise have to write.
    /// Other programs' locking stays correct because the writer never touches a mailbox without
    /// holding both its locks: a held mailbox keeps its dotlock and its fcntl lock, so another
    /// program waits exactly as it would for one long commit. Nothing is held while the queue
    /// is empty, nothing into a further commit once locked for [`MAX_HOLD`], nothing after a
    /// failed commit, and a mailbox is reused only if its name still names the same file at the
    /// length the writer left (see `Mailbox::reuse`); anything else releases it and opens it
    /// afresh.
    held: HashMap<String, Mailbox>,
}

/// How many mailbox names [`Writer::durable`] remembers.
const DURABLE_NAMES: usize = 65_536;

/// A job whose mailbox was locked by someone else, and until when it may wait.
pub(super) struct Waiting {
    job: Job,
    deadline: Instant,
}

impl Writer {
    fn run(&mut self, jobs: &Receiver<Job>) {
        self.mail_dir.sync_ancestors(&*self.disk);
        let mut waiting: Vec<Waiting> = Vec::new();
        let mut open = true;
        loop {
            let first = if waiting.is_empty() && self.late.is_empty() {
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
            let groups = groups(batch, MAX_OPEN_MAILBOXES);
            let count = groups.len();
            for (i, mut group) in groups.into_iter().enumerate() {
                let more = || i + 1 < count || !jobs.is_empty();
                // Jobs taken back with a sync that failed for another mailbox are committed
                // again at once, on their own: new jobs for a broken mailbox cannot join them.
                while !group.is_empty() {
                    let (locked, again) = self.commit(group, &more);
                    waiting.extend(locked);
                    group = again;
                }
            }
            self.late.retain(|late| !late.retry());
            // A claim lasts while a job that names the mailbox waits; one refused for another
            // of its mailboxes, or written, leaves it.
            self.commits.keep_claims(|name| {
                waiting
                    .iter()
                    .any(|w| w.job.entries.iter().any(|e| e.mailbox == name))
            });
        }
        self.held.clear();
        log::debug!("writer: job channel closed and drained; exiting");
    }

    /// Writes a batch; returns the jobs that must wait for a lock, and those to write again
    /// because a sync failed for a mailbox they did not write (each time at least one job is
    /// refused, so this ends). `more` says whether another commit will start at once, so the
    /// mailboxes written may stay locked for it.
    fn commit(
        &mut self,
        batch: Vec<Waiting>,
        more: &dyn Fn() -> bool,
    ) -> (Vec<Waiting>, Vec<Waiting>) {
        let mut boxes: HashMap<String, Mailbox> = HashMap::new();
        let mut written: Vec<Waiting> = Vec::new();
        let mut waiting = Vec::new();
        // Held mailboxes this batch does not write are released now, which keeps the writer
        // within its bound of open mailboxes.
        let needed: HashSet<&str> = batch
            .iter()
            .flat_map(|item| item.job.entries.iter().map(|e| e.mailbox.as_str()))
            .collect();
        let mut held = std::mem::take(&mut self.held);
        held.retain(|name, _| needed.contains(name.as_str()));
        drop(needed);
        'jobs: for item in batch {
            for entry in &item.job.entries {
                if boxes.contains_key(&entry.mailbox) {
                    continue;
                }
                if let Some(mut kept) = held.remove(&entry.mailbox) {
                    if kept.reuse(self.mail_dir.path(), &entry.mailbox) {
                        boxes.insert(entry.mailbox.clone(), kept);
                        continue;
                    }
                    log::warn!(
                        "mailbox {:?} changed while mboxd held its locks; opening it again",
                        entry.mailbox
                    );
                }
                // Readers stop taking this mailbox's lock before the first try at it.
                self.commits.claim(&entry.mailbox);
                match mailbox::open(
                    self.mail_dir.path(),
                    &entry.mailbox,
                    (self.owner, self.file_owner),
                    &*self.disk,
                    &mut self.dir_unsynced,
                ) {
                    Ok(mailbox) => {
                        if self.durable.get(&entry.mailbox) != Some(&mailbox.entry()) {
                            self.dir_unsynced = true;
                        }
                        // Before anything is appended: a reader cuts the file here until
                        // the commit is recorded.
                        self.commits
                            .opened(&entry.mailbox, mailbox.start, mailbox.identity());
                        if self.starved {
                            log::info!("descriptors available again: mailboxes open");
                            self.starved = false;
                        }
                        boxes.insert(entry.mailbox.clone(), mailbox);
                    }
                    Err(OpenError::Busy) if Instant::now() < item.deadline => {
                        waiting.push(item);
                        continue 'jobs;
                    }
                    Err(OpenError::Busy) => {
                        log::warn!(
                            "{}: mailbox {:?} stayed locked; 450",
                            item.job.id,
                            entry.mailbox
                        );
                        self.answer(item.job, Outcome::Busy);
                        continue 'jobs;
                    }
                    Err(OpenError::Io(e))
                        if out_of_descriptors(&e) && Instant::now() < item.deadline =>
                    {
                        if !self.starved {
                            log::warn!(
                                "{}: out of descriptors opening mailbox {:?} ({e}): deliveries wait \
                                 until some are free, for up to the lock timeout",
                                item.job.id,
                                entry.mailbox
                            );
                            self.starved = true;
                        }
                        waiting.push(item);
                        continue 'jobs;
                    }
                    Err(OpenError::Io(e)) => {
                        log::error!(
                            "{}: cannot open mailbox {:?}: {e}",
                            item.job.id,
                            entry.mailbox
                        );
                        self.answer(item.job, classify(&e));
                        continue 'jobs;
                    }
                }
            }
            match append(&item.job, &mut boxes) {
                Ok(()) => written.push(item),
                Err(e) => {
                    log::error!("{}: append failed: {e}", item.job.id);
                    self.answer(item.job, classify(&e));
                }
            }
        }
        // One sync per touched file covers every job of the batch (group commit).
        let mut failure = None;
        // The mailboxes whose sync failed; `None` once the directory's did, which fails all.
        let mut failed = Some(HashSet::new());
        for (name, mailbox) in &boxes {
            if mailbox.len != mailbox.start
                && let Err(e) = mailbox.file.sync()
            {
                log::error!("cannot sync mailbox {name:?}: {e}");
                failure = Some(classify(&e));
                if let Some(failed) = failed.as_mut() {
                    failed.insert(name.clone());
                }
            }
        }
        // A file created in this batch (or before a failed directory sync, or by an earlier
        // process: the first batch) is not there after a power cut until its directory entry is
        // synced: once for the batch, before any 250 (a refusal may be answered earlier).
        if failure.is_none() && self.dir_unsynced {
            match self.mail_dir.sync(&*self.disk) {
                Ok(()) => {
                    self.dir_unsynced = false;
                    if self.durable.len() + boxes.len() > DURABLE_NAMES {
                        self.durable.clear();
                    }
                    for (name, mailbox) in &boxes {
                        self.durable.insert(name.clone(), mailbox.entry());
                    }
                }
                Err(e) => {
                    log::error!(
                        "cannot sync the mail directory {:?}: {e}",
                        self.mail_dir.path()
                    );
                    failure = Some(classify(&e));
                    failed = None;
                }
            }
        }
        if failure.is_some() {
            // What reached the disk is unknown: take the whole batch back. A mailbox that cannot
            // be cut back keeps its jobs' entries: they are refused with the rest, not written
            // again (which would store them twice).
            for (name, mailbox) in &boxes {
                let cut = if mailbox.torn {
                    Err(io::Error::other(
                        "a cut back was refused earlier in this commit",
                    ))
                } else {
                    mailbox.file.cut_back(mailbox.start, mailbox.len)
                };
                if let Err(e) = cut {
                    log::error!("cannot truncate mailbox {name:?} back: {e}");
                    if let Some(failed) = failed.as_mut() {
                        failed.insert(name.clone());
                    }
                }
            }
        }
        // Unlock before acknowledging: once a client has its 250, the mailbox is free, unless
        // another commit is about to start (see `held`), which releases it first if it does
        // not write it.
        let lengths: Vec<(String, u64)> = boxes
            .iter()
            .filter(|(_, mailbox)| mailbox.len != mailbox.start)
            .map(|(name, mailbox)| (name.clone(), mailbox.len))
            .collect();
        if failure.is_none() && more() {
            self.held = boxes
                .into_iter()
                .filter(|(_, mailbox)| mailbox.worth_holding(MAX_HOLD))
                .collect();
        } else {
            drop(boxes);
        }
        // Recorded before the acknowledgements: a reader that starts after a client has its
        // 250 must be given the new length, or it would cut the new entry off.
        if failure.is_none() && !written.is_empty() {
            self.commits
                .record(lengths.iter().map(|(name, len)| (name.as_str(), *len)));
        }
        // Every client of the jobs written here is answered first; their lines are logged
        // after, so those lines never delay one of this commit's 250s (refusals and warnings
        // met earlier in the commit were logged as they happened).
        let outcome = failure.unwrap_or(Outcome::Delivered);
        let mut told = Vec::with_capacity(written.len());
        let mut again = Vec::new();
        for item in written {
            // A job whose own mailboxes all synced was taken back only with the rest of the
            // batch: it is written again, not failed for another's fault, unless its lock
            // timeout has run out (then it gets the commit's failure).
            let innocent = |failed: &HashSet<String>| {
                !item.job.entries.iter().any(|e| failed.contains(&e.mailbox))
            };
            if failure.is_some()
                && failed.as_ref().is_some_and(innocent)
                && Instant::now() < item.deadline
            {
                again.push(item);
                continue;
            }
            told.push(self.answer_quietly(item.job, outcome));
        }
        for job in told {
            job.log(outcome);
        }
        (waiting, again)
    }
}

/// EMFILE (this process) or ENFILE (the system): no descriptor to open a file with, for now.
fn out_of_descriptors(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE))
}

/// What the log line about an answered job needs.
struct Told {
    id: String,
    label: String,
    summary: String,
}

impl Told {
    /// Logs the outcome of a job. The line is written by the one writer thread rather than by
    /// each worker once answered: a group commit answers many workers at once, and as many
    /// threads logging at the same moment would queue on the lock of stderr, each wait a futex(2)
    /// call and a context switch.
    fn log(&self, outcome: Outcome) {
        let Told { id, label, summary } = self;
        match outcome {
            Outcome::Delivered => log::info!("{label}: {id} delivered: {summary}"),
            refused => log_refused(label, id, refused, summary, ""),
        }
    }
}

/// The log line of a message refused with `outcome`: `why` (empty, or a note that begins with a
/// space) follows the summary.
pub(crate) fn log_refused(label: &str, id: &str, outcome: Outcome, summary: &str, why: &str) {
    log::info!(
        "{label}: {id} message refused: {}: {summary}{why}",
        outcome.reply(id).code_text()
    );
}

impl Writer {
    /// Answers a job that is not part of a commit (refused, or failed alone) and logs it.
    fn answer(&mut self, job: Job, outcome: Outcome) {
        self.answer_quietly(job, outcome).log(outcome);
    }

    /// Answers a job, and returns what its log line needs. The message's entries are dropped
    /// first, so its share of the in-flight budget is back before its client can read the reply
    /// and send the next message, which may need that share.
    fn answer_quietly(&mut self, job: Job, outcome: Outcome) -> Told {
        let Job {
            id,
            label,
            summary,
            entries,
            ack,
        } = job;
        drop(entries);
        self.late.extend(ack.send(outcome));
        Told { id, label, summary }
    }
}

/// ENOSPC and EDQUOT mean insufficient storage (452); anything else is a local error (451).
fn classify(e: &io::Error) -> Outcome {
    match e.raw_os_error() {
        Some(libc::ENOSPC) | Some(libc::EDQUOT) => Outcome::NoSpace,
        Some(libc::EFBIG) => Outcome::MailboxFull,
        _ => Outcome::Failed,
    }
}

mod groups;
use groups::groups;

#[cfg(test)]
mod bound_tests;
#[cfg(test)]
mod hold_tests;
#[cfg(test)]
mod isolation_tests;
#[cfg(test)]
mod lock_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod torn_tests;
