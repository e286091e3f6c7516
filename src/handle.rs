//! The running server as a library user holds it: start, addresses, mail directory, reading the
//! mail back, waiting for it, and stopping.
//!
//! It exists so a test needs one call to get a server ([`Server::for_tests`]) and no polling or
//! sleeping to see what arrived ([`Server::wait_for`] wakes on the writer's commit signal), and
//! so the temporary mail directory of such a server lives exactly as long as the server.

use std::fmt;
use std::fs;
use std::io::{self, Read};
use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::commits::{Commits, Plan};
use crate::config::Config;
use crate::mbox::{Mailbox, Message, open_regular};
use crate::names::mailbox_name;
use crate::os;
use crate::server::{self, StartError};

/// How often a read of a mailbox another program has locked tries the lock again.
const LOCK_POLL: Duration = Duration::from_millis(10);

/// A running server. [`Server::shutdown`], or dropping it, stops it in order and joins every
/// thread; a temporary mail directory ([`Config::for_tests`]) is then removed unless it was
/// kept with [`Config::keep_mail_dir`].
///
/// ```
/// use std::time::Duration;
///
/// let server = mboxd::Server::for_tests()?;
/// // ... the application under test sends to `server.local_addr()` ...
/// # send(server.local_addr());
/// let mail = server.wait_for("jones", 1, Duration::from_secs(10))?;
/// assert_eq!(mail[0].subject(), Some("hello"));
/// assert_eq!(mail[0].sender(), Some("app@example.com"));
/// server.shutdown();
/// # fn send(addr: std::net::SocketAddr) {
/// #     use std::io::{BufRead, BufReader, Write};
/// #     let mut s = std::net::TcpStream::connect(addr).unwrap();
/// #     s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
/// #     let mut r = BufReader::new(s.try_clone().unwrap());
/// #     let mut line = String::new();
/// #     for cmd in ["HELO app.test", "MAIL FROM:<app@example.com>", "RCPT TO:<jones@localhost>",
/// #                 "DATA", "Subject: hello\r\n\r\nhi\r\n.", "QUIT"] {
/// #         line.clear(); r.read_line(&mut line).unwrap();
/// #         write!(s, "{cmd}\r\n").unwrap();
/// #     }
/// #     line.clear(); r.read_line(&mut line).unwrap();
/// # }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Server {
    running: server::Running,
    local_addr: SocketAddr,
    mail_dir: PathBuf,
    /// The temporary mail directory to remove when the server stops.
    remove: Option<PathBuf>,
    commits: Arc<Commits>,
    /// How long [`Server::messages`] waits for another program's lock ([`Config::lock_timeout`]).
    lock_timeout: Duration,
}

impl Server {
    /// Binds every address of `config`, creates the mail directory and starts serving. Raises
    /// this process's soft limit of open files to its hard limit, for many sessions; processes
    /// started afterwards inherit it. Sets SIGXFSZ to be ignored unless something was set for it
    /// already, so an append past a file-size limit (`ulimit -f`) is refused with `452 4.2.2`
    /// instead of killing the process; that lasts after the server is dropped, and processes
    /// started afterwards inherit it too.
    ///
    /// Fails with [`StartError::Config`] for an unusable setting (no address, no worker, a
    /// limit of 0 (recipients, message size, errors, mailboxes, sessions per peer, data rate), a
    /// host name [`Config::hostname`] refuses, `auth_required` without
    /// AUTH, a zero socket timeout or any time of 10^9 s or more, a `max_inflight_bytes` under
    /// 65 536), before anything is created; and with the other variants when the mail
    /// directory, an address, a thread or the ready file cannot be had.
    pub fn start(mut config: Config) -> Result<Server, StartError> {
        config.check().map_err(|e| StartError::Config(e.0))?;
        let temp = if config.temp_mail_dir {
            let dir =
                create_temp_dir().map_err(|e| StartError::MailDir(std::env::temp_dir(), e))?;
            config.mail_dir = dir.clone();
            Some(dir)
        } else {
            None
        };
        let commits = Arc::new(Commits::default());
        let started = server::start(&config, Arc::clone(&commits)).and_then(|running| {
            // Cannot fail: `Config::check` refused an empty `listen`, and `server::start`
            // binds every address or fails. A guard, as the library may not `expect`.
            let local_addr =
                running.addrs().first().copied().ok_or_else(|| {
                    StartError::Config("at least one address is needed".to_string())
                })?;
            Ok((running, local_addr))
        });
        let (running, local_addr) = match started {
            Ok(started) => started,
            Err(e) => {
                if let Some(dir) = &temp {
                    remove_temp_dir(dir);
                }
                return Err(e);
            }
        };
        Ok(Server {
            running,
            local_addr,
            mail_dir: config.mail_dir,
            remove: temp.filter(|_| !config.keep_mail_dir),
            commits,
            lock_timeout: config.lock_timeout,
        })
    }

    /// A server for a test: [`Config::for_tests`], started. It listens on a free port of
    /// 127.0.0.1, accepts mail for every safe name at `localhost` and the host name, and
    /// delivers into a temporary directory removed when the server stops.
    ///
    /// ```
    /// let server = mboxd::Server::for_tests()?;
    /// assert_eq!(server.local_addr().ip().to_string(), "127.0.0.1");
    /// assert!(server.mail_dir().is_dir());
    /// let dir = server.mail_dir().to_path_buf();
    /// drop(server);
    /// assert!(!dir.exists());
    /// # Ok::<(), mboxd::StartError>(())
    /// ```
    pub fn for_tests() -> Result<Server, StartError> {
        Server::start(Config::for_tests())
    }

    /// The first address bound (port 0 replaced by the port the system chose).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Every address bound, in the order of [`Config::listen`].
    pub fn local_addrs(&self) -> &[SocketAddr] {
        self.running.addrs()
    }

    /// The directory the mbox files are in (the temporary one, for [`Config::for_tests`]).
    pub fn mail_dir(&self) -> &Path {
        &self.mail_dir
    }

    /// The sessions' shared context, for tests that look at a live session's flags.
    #[cfg(test)]
    pub(crate) fn context(&self) -> &crate::connection::Context {
        self.running.context()
    }

    /// Sessions in progress now. A session counts until its worker has let go of it, which can
    /// be a moment after its client saw the connection close.
    pub fn live_connections(&self) -> usize {
        self.running.live_connections()
    }

    /// The messages in `user`'s mailbox now, oldest first; none if it does not exist yet.
    ///
    /// `user` is a local name or an address (its local part is used), with or without angle
    /// brackets; it is normalised as a recipient is (lower-cased, NFKC, quotes it does not need
    /// dropped, a source route ignored), so `Jones`, `jones@localhost`, `<jones@localhost>`,
    /// `"jones"` and `<@relay.test:jones@localhost>` name one mailbox.
    /// An alias is not expanded: ask for its targets.
    ///
    /// A mailbox this server's writer has opened is read up to the end of its last commit to
    /// it (or to where the file ended when the writer last opened it, if that is later),
    /// without a lock, while it is the file the writer opened and at least that long (another
    /// program may rename a new file over it, or cut it): a message being appended is never seen, whole or in part, before it is
    /// on disk; every message whose `250` a client has received is seen (the writer records a
    /// commit before it acknowledges it); and the read never holds up the writer. Any other
    /// mailbox is read whole under its shared fcntl lock, waited for up to
    /// [`Config::lock_timeout`] (or, once the writer is about to open it for the first time,
    /// the open is waited for instead). A program that appends with a dotlock alone can still
    /// be seen in the middle of its append there. Another server's deliveries to a mailbox
    /// this one's writer has opened are seen only up to this writer's last commit to it.
    /// Fails for a name that cannot be a mailbox, a file that cannot be read or is not a
    /// regular file, one that is not an mbox, and one another program kept locked
    /// ([`io::ErrorKind::WouldBlock`]).
    pub fn messages(&self, user: &str) -> io::Result<Vec<Message>> {
        let (name, path) = self.locate(user)?;
        self.read(&name, &path, Instant::now() + self.lock_timeout)
    }

    /// Waits until `user`'s mailbox holds at least `count` messages and returns them all, or
    /// fails with [`WaitError::Timeout`] (which holds what did arrive) after `timeout`. The
    /// mailbox is read as [`Server::messages`] reads it; a wait for another program's lock
    /// ends at `timeout` too, with [`WaitError::Read`].
    ///
    /// It returns as soon as the count is reached: it sleeps on the writer's signal, sent
    /// after each commit, and reads the mailbox again only when a commit changed its committed
    /// length, never on a timer.
    pub fn wait_for(
        &self,
        user: &str,
        count: usize,
        timeout: Duration,
    ) -> Result<Vec<Message>, WaitError> {
        let began = Instant::now();
        // `Duration::MAX` is a fair way to say "no limit": a deadline past any test's life.
        let deadline = began
            .checked_add(timeout)
            .unwrap_or_else(|| began + crate::config::MAX_DURATION);
        let (name, path) = self.locate(user).map_err(WaitError::Read)?;
        // The committed length last read, and what it held.
        let mut last: Option<(u64, Vec<Message>)> = None;
        loop {
            // The count first: a commit after it wakes the wait below at once.
            let (seen, committed) = self.committed(&name, &path);
            let messages = match last {
                // A commit to another mailbox: nothing new here, nothing to read.
                Some((read, messages)) if read == committed => messages,
                _ => self.read(&name, &path, deadline).map_err(WaitError::Read)?,
            };
            if messages.len() >= count {
                return Ok(messages);
            }
            if Instant::now() >= deadline {
                return Err(WaitError::Timeout {
                    user: user.to_string(),
                    wanted: count,
                    waited: began.elapsed(),
                    arrived: messages,
                });
            }
            last = Some((committed, messages));
            self.commits.wait_past(seen, deadline);
        }
    }

    /// The mailbox name of `user` (its local part, normalised), and its file.
    fn locate(&self, user: &str) -> io::Result<(String, PathBuf)> {
        // As a RCPT path may be written: `<jones@localhost>`, `"jones"@localhost`, and with a
        // source route, which RFC 5321 §4.1.2 says to ignore: `<@relay.test:jones@localhost>`.
        let path = user
            .strip_prefix('<')
            .and_then(|inner| inner.strip_suffix('>'))
            .unwrap_or(user);
        let address = match path.strip_prefix('@') {
            Some(routed) => routed.split_once(':').map_or(path, |(_, address)| address),
            None => path,
        };
        let local = address.rsplit_once('@').map_or(address, |(local, _)| local);
        let name = mailbox_name(&crate::command::unquoted(local)).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{user:?} is not a mailbox name"),
            )
        })?;
        let path = self.mail_dir.join(&name);
        Ok((name, path))
    }

    /// The change count, and how much of mailbox `name` (at `path`) is committed. The length of
    /// a mailbox the writer has not opened follows a symbolic link, as `read` does (the
    /// writer never delivers through one).
    fn committed(&self, name: &str, path: &Path) -> (u64, u64) {
        self.commits
            .committed(name, || fs::metadata(path).map_or(0, |m| m.len()))
    }

    /// The messages of mailbox `name` (at `path`), read as [`Commits::plan`] says: up to the
    /// length this server's writer recorded, or whole under the mailbox's shared fcntl lock,
    /// waited for (with the writer's first open) until `deadline`.
    fn read(&self, name: &str, path: &Path, deadline: Instant) -> io::Result<Vec<Message>> {
        let file = match open_regular(path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let end = loop {
            // Asked again each time round: the writer may have opened the mailbox meanwhile,
            // and only a length it recorded is safe to cut at.
            let meta = file.metadata()?;
            let (seen, plan) = self
                .commits
                .plan(name, ((meta.dev(), meta.ino()), meta.len()));
            match plan {
                Plan::Cut(len) => break len,
                Plan::Lock if os::try_lock_shared(&file)? => break u64::MAX,
                Plan::Lock | Plan::Wait => {}
            }
            if Instant::now() >= deadline {
                return Err(io::Error::new(
                    io::ErrorKind::WouldBlock,
                    format!("mailbox {name:?} stayed locked by another program"),
                ));
            }
            // Woken by the writer's open (or its giving up); fcntl has no wait with a timeout,
            // so another program's lock is tried again every LOCK_POLL.
            self.commits
                .wait_past(seen, deadline.min(Instant::now() + LOCK_POLL));
        };
        let mut bytes = Vec::new();
        (&file).take(end).read_to_end(&mut bytes)?;
        // Closing the file releases the lock at once, before the parse.
        drop(file);
        let mailbox = Mailbox::parse(&bytes).map_err(|e| {
            io::Error::new(io::ErrorKind::InvalidData, format!("mailbox {name:?}: {e}"))
        })?;
        Ok(mailbox.into_messages())
    }

    /// Stops accepting, answers idle sessions `421`, lets sessions inside a message finish it
    /// within [`Config::shutdown_grace`] (then answers them `421` too), waits for every queued
    /// message to be written and synced, returns when every thread is joined, and removes a
    /// temporary mail directory that was not kept. Dropping the server does the same.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        self.running.shutdown();
        if let Some(dir) = self.remove.take() {
            remove_temp_dir(&dir);
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("local_addrs", &self.local_addrs())
            .field("mail_dir", &self.mail_dir)
            .finish_non_exhaustive()
    }
}

/// Why [`Server::wait_for`] returned without the messages.
///
/// Its `Debug` is its `Display` text, so a test that returns `Result` and uses `?`, or calls
/// `unwrap()`, reports `waited 5.0s for 3 message(s) for "jones"; 1 arrived: ...`, not every
/// octet of the messages that arrived (they are in `arrived`).
pub enum WaitError {
    /// Fewer messages than wanted arrived in time.
    Timeout {
        /// The user waited for, as given.
        user: String,
        /// How many messages were wanted.
        wanted: usize,
        /// How long it waited.
        waited: Duration,
        /// The messages that did arrive.
        arrived: Vec<Message>,
    },
    /// The mailbox could not be read (see [`Server::messages`]).
    Read(io::Error),
}

/// How many of the messages that arrived a [`WaitError::Timeout`] names, and how many characters
/// of each subject.
const SUBJECTS_LISTED: usize = 10;
const SUBJECT_CHARS: usize = 100;

impl fmt::Display for WaitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WaitError::Timeout {
                user,
                wanted,
                waited,
                arrived,
            } => {
                write!(
                    f,
                    "waited {waited:.1?} for {wanted} message(s) for {user:?}; {} arrived",
                    arrived.len()
                )?;
                // A test's failure message, not a dump: the first subjects, each cut short.
                for (i, m) in arrived.iter().take(SUBJECTS_LISTED).enumerate() {
                    let sep = if i == 0 { ": " } else { ", " };
                    match m.subject() {
                        Some(subject) if subject.chars().count() > SUBJECT_CHARS => {
                            let cut: String = subject.chars().take(SUBJECT_CHARS).collect();
                            write!(f, "{sep}{cut:?}…")?
                        }
                        Some(subject) => write!(f, "{sep}{subject:?}")?,
                        None => write!(f, "{sep}(no subject)")?,
                    }
                }
                match arrived.len().checked_sub(SUBJECTS_LISTED) {
                    Some(more) if more > 0 => write!(f, ", and {more} more"),
                    _ => Ok(()),
                }
            }
            WaitError::Read(e) => write!(f, "cannot read the mailbox: {e}"),
        }
    }
}

impl fmt::Debug for WaitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::error::Error for WaitError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            WaitError::Read(e) => Some(e),
            WaitError::Timeout { .. } => None,
        }
    }
}

/// Creates a fresh directory `mboxd-<pid>-<nanoseconds>-<counter>` under the system's
/// temporary directory, mode 0700 (only this user may read the mail). `create_dir` fails if the
/// name exists, so a directory is never shared; a clash is retried with the next counter.
fn create_temp_dir() -> io::Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let base = std::env::temp_dir();
    let mut last = None;
    for _ in 0..16 {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = base.join(format!("mboxd-{}-{nanos}-{n}", std::process::id()));
        match fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("no unique temporary directory name")))
}

/// Removes a temporary mail directory; a failure is logged, not fatal.
fn remove_temp_dir(dir: &Path) {
    if let Err(e) = fs::remove_dir_all(dir) {
        log::warn!(
            "cannot remove the temporary mail directory {}: {e}",
            dir.display()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This process's temporary mail directories now. No other test of the library's own
    /// test binary creates them, so the count is exact here.
    fn temp_dirs() -> usize {
        let prefix = format!("mboxd-{}-", std::process::id());
        fs::read_dir(std::env::temp_dir())
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.starts_with(&prefix))
            .count()
    }

    #[test]
    fn a_failed_start_removes_its_temporary_directory_and_says_why() {
        let before = temp_dirs();
        let err = Server::start(Config::for_tests().workers(0)).unwrap_err();
        assert!(matches!(err, StartError::Config(_)), "{err}");
        for bad in [
            "two words".to_string(),
            "h".repeat(256),
            "h\u{f6}st.test".to_string(),
            "mx.test;x(".to_string(),
            "a\u{7}b".to_string(),
        ] {
            let err = Server::start(Config::for_tests().hostname(bad)).unwrap_err();
            assert!(err.to_string().contains("hostname"), "{err}");
        }
        Server::start(Config::for_tests().hostname("h".repeat(255))).unwrap();
        // Times that would overflow an `Instant`, or make a socket timeout of zero.
        let forever = Duration::MAX;
        for config in [
            Config::for_tests().shutdown_grace(forever),
            Config::for_tests().lock_timeout(forever),
            Config::for_tests().data_timeout(forever),
            Config::for_tests().min_data_rate_grace(Duration::ZERO),
            Config::for_tests().timeout(Duration::ZERO),
            // Less than one step of the message budget: every message would be refused.
            Config::for_tests().max_inflight_bytes(0),
            Config::for_tests().max_inflight_bytes(64 * 1024 - 1),
        ] {
            let err = Server::start(config).unwrap_err();
            assert!(matches!(err, StartError::Config(_)), "{err}");
        }
        // Binding a port already bound fails after the temporary directory was made.
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let err =
            Server::start(Config::for_tests().listen(taken.local_addr().unwrap())).unwrap_err();
        assert!(matches!(err, StartError::Bind(..)), "{err}");
        let cause = std::error::Error::source(&err).expect("the bind error is the source");
        assert_eq!(
            cause.downcast_ref::<std::io::Error>().map(|e| e.kind()),
            Some(std::io::ErrorKind::AddrInUse)
        );
        assert_eq!(temp_dirs(), before);
    }
}
