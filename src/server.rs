//! Binding, accepting, handing connections to the pool, and the ordered shutdown.
//!
//! It exists to own every thread of a running server and the order they stop in. One acceptor
//! thread per listener passes each new connection to one dispatcher thread, which hands it to a
//! free worker or, after `queue_wait`, answers `421` and closes it, so no client is left hanging
//! with no answer. Shutdown wakes each acceptor with a flag plus a connection to itself (as
//! tiny_http does; shutdown(2) of its socket where no descriptor is free to connect with), then:
//! stop accepting, stop dispatching, wake idle sessions, close the workers' connection channel
//! and join the workers, drop the last delivery sender so the writer drains, join it.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, SendTimeoutError, Sender, TrySendError};

use crate::admission::{Arrival, Peers};
use crate::backoff::AcceptBackoff;
use crate::budget::Budget;
use crate::commits::Commits;
use crate::config::Config;
use crate::connection::{self, Context};
use crate::directory::Directory;
use crate::fail::Faults;
use crate::mailboxes::Mailboxes;
use crate::os;
use crate::pool::Pool;
use crate::reply::{self, Reply};
use crate::session::{Policy, SessionConfig};
use crate::writer::{self, Job};

/// Connections accepted and waiting in the queue for a worker, at most (the dispatcher holds one
/// more while it waits for a free worker, and each acceptor one for a moment).
const WAITING_ROOM: usize = 1024;
/// Messages queued for the writer, at most; a full queue makes workers wait.
const DELIVERY_QUEUE: usize = 1024;

/// The threads and state of a running server.
pub(crate) struct Running {
    addrs: Vec<SocketAddr>,
    /// The listening sockets, shared with their acceptors, for [`os::stop_accepting`].
    listeners: Vec<Arc<TcpListener>>,
    ctx: Option<Arc<Context>>,
    acceptors: Vec<JoinHandle<()>>,
    dispatcher: Option<JoinHandle<()>>,
    pool: Option<Pool<Arrival>>,
    writer: Option<JoinHandle<()>>,
    shutdown_grace: Duration,
    /// The ready file written at start, and its text: removed at stop if it still holds it.
    ready_file: Option<(std::path::PathBuf, String)>,
}

/// Why a server could not start.
#[derive(Debug)]
pub enum StartError {
    /// The mail directory cannot be created or used.
    MailDir(std::path::PathBuf, io::Error),
    /// An address cannot be bound.
    Bind(SocketAddr, io::Error),
    /// A thread cannot be started.
    Thread(io::Error),
    /// The configuration is not usable.
    Config(String),
    /// The ready file cannot be written.
    ReadyFile(std::path::PathBuf, io::Error),
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::MailDir(dir, e) => write!(f, "mail directory {}: {e}", dir.display()),
            StartError::Bind(addr, e) => write!(f, "cannot listen on {addr}: {e}"),
            StartError::Thread(e) => write!(f, "cannot start a thread: {e}"),
            StartError::Config(why) => f.write_str(why),
            StartError::ReadyFile(path, e) => write!(f, "ready file {}: {e}", path.display()),
        }
    }
}

impl std::error::Error for StartError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StartError::MailDir(_, e)
            | StartError::Bind(_, e)
            | StartError::Thread(e)
            | StartError::ReadyFile(_, e) => Some(e),
            StartError::Config(_) => None,
        }
    }
}

/// Binds every address of a checked configuration ([`Config::check`]) and starts every thread.
/// The writer records each commit in `commits`.
pub(crate) fn start(config: &Config, commits: Arc<Commits>) -> Result<Running, StartError> {
    // First, before anything is logged: a log on stderr appended to a file that is over the
    // file-size limit would raise the signal too.
    if let Err(e) = os::ignore_file_size_signal() {
        log::warn!("cannot ignore SIGXFSZ: an append past a file-size limit will kill mboxd: {e}");
    }
    raise_descriptor_limit(config);
    // Bound first, so a start refused for a taken port leaves no new mail directory behind.
    let listeners = config
        .listen
        .iter()
        .map(|addr| TcpListener::bind(addr).map_err(|e| StartError::Bind(*addr, e)))
        .collect::<Result<Vec<_>, _>>()?;
    let file_owner = prepare_mail_dir(&config.mail_dir)
        .map_err(|e| StartError::MailDir(config.mail_dir.clone(), e))?;
    let addrs = listeners
        .iter()
        .map(TcpListener::local_addr)
        .collect::<io::Result<Vec<_>>>()
        .map_err(StartError::Thread)?;
    let listening: Vec<String> = addrs.iter().map(SocketAddr::to_string).collect();
    // Catch-all mode: the mailbox files there are now, under the bound on how many may be.
    let (bound, who) = match &config.users {
        Some(users) => (None, format!("{} user(s)", users.len())),
        None => {
            let bound = Mailboxes::scan(&config.mail_dir, config.max_mailboxes)
                .map_err(|e| StartError::MailDir(config.mail_dir.clone(), e))?;
            let who = format!(
                "catch-all: every safe name is accepted up to {} mailboxes ({} now)",
                bound.limit(),
                bound.len()
            );
            (Some(Arc::new(bound)), who)
        }
    };
    log::info!(
        "listening on {}; domains {}; {who}; {} alias(es); mail in {}",
        listening.join(", "),
        config.local_domains().join(", "),
        config.aliases.len(),
        config.mail_dir.display()
    );
    for rule in &config.fail {
        log::warn!("failing on purpose: --fail {:?}", rule.to_string());
    }
    // Growing past its first step, a message leaves an eighth of the budget free (budget.rs).
    let largest = config.max_inflight_bytes - config.max_inflight_bytes / 8;
    if largest < config.max_message_size {
        log::warn!(
            "--max-inflight-bytes {} lets a message's buffer reach about {largest} octets, less \
             than --max-message-size {}: a message larger than that gets 452 4.3.1 (a \
             temporary failure) however often it is sent",
            config.max_inflight_bytes,
            config.max_message_size
        );
    }
    let mut directory = Directory::new(
        &config.local_domains(),
        config.users.as_ref(),
        &config.aliases,
    );
    if let Some(bound) = bound {
        directory = directory.with_mailbox_bound(bound);
    }
    let session = Arc::new(SessionConfig {
        hostname: config.hostname.clone(),
        max_message_size: config.max_message_size,
        max_recipients: config.max_recipients,
        max_errors: config.max_errors,
        directory,
        budget: Budget::new(config.max_inflight_bytes),
        bare_newline: config.bare_newline,
        auth: Policy {
            accounts: config.auth.clone(),
            required: config.auth_required,
        },
        faults: Faults::new(config),
    });
    let (deliveries, jobs) = crossbeam_channel::bounded::<Job>(DELIVERY_QUEUE);
    let mut running = Running {
        addrs: addrs.clone(),
        listeners: Vec::new(),
        ctx: None,
        acceptors: Vec::new(),
        dispatcher: None,
        pool: None,
        writer: None,
        shutdown_grace: config.shutdown_grace,
        ready_file: None,
    };
    // From here on, an error drops `running`, which shuts down what was started.
    running.writer = Some(
        writer::spawn(
            config.mail_dir.clone(),
            config.lock_timeout,
            file_owner,
            jobs,
            Arc::new(writer::RealDisk),
            commits,
        )
        .map_err(StartError::Thread)?,
    );
    let ctx = Arc::new(Context::new(session, deliveries, config));
    running.ctx = Some(Arc::clone(&ctx));
    let handler_ctx = Arc::clone(&ctx);
    let pool = Pool::new(
        config.workers,
        Arc::new(move |arrival| connection::serve(arrival, &handler_ctx)),
    )
    .map_err(StartError::Thread)?;
    let to_workers = pool.sender();
    running.pool = Some(pool);
    let (waiting_tx, waiting_rx) = crossbeam_channel::bounded(WAITING_ROOM);
    if let Some(to_workers) = to_workers {
        let queue_wait = config.queue_wait;
        let dispatch_ctx = Arc::clone(&ctx);
        running.dispatcher = Some(
            thread::Builder::new()
                .name("mboxd-dispatcher".into())
                .spawn(move || dispatch(&waiting_rx, &to_workers, &dispatch_ctx, queue_wait))
                .map_err(StartError::Thread)?,
        );
    }
    // Before any connection is accepted: a start that fails here has served no one (a client
    // that read the file and connected waits in the listen backlog for the acceptor).
    if let Some(path) = &config.ready_file {
        if in_dir(path, &config.mail_dir) {
            let e = io::Error::new(
                io::ErrorKind::InvalidInput,
                "in the mail directory, where its name is a mailbox's",
            );
            return Err(StartError::ReadyFile(path.clone(), e));
        }
        let text = write_ready_file(path, running.addrs())
            .map_err(|e| StartError::ReadyFile(path.clone(), e))?;
        running.ready_file = Some((path.clone(), text));
    }
    let peers = Peers::new(config.peer_limit());
    for (listener, addr) in listeners.into_iter().zip(addrs) {
        let listener = Arc::new(listener);
        running.listeners.push(Arc::clone(&listener));
        let waiting = waiting_tx.clone();
        let accept_ctx = Arc::clone(&ctx);
        let peers = Arc::clone(&peers);
        running.acceptors.push(
            thread::Builder::new()
                .name(format!("mboxd-accept-{addr}"))
                .spawn(move || accept(&listener, addr, &waiting, &accept_ctx, &peers))
                .map_err(StartError::Thread)?,
        );
    }
    Ok(running)
}

/// A number no other call in this process has had. A temporary file named with it and the
/// process id is one start's alone: servers of one process (a test suite's) may start at once
/// on one directory or with one ready file, and one must not remove or rename the other's.
fn start_number() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// Creates a file of this start's own at `path`, a name no one else should use. Whatever is
/// there already (planted: the name is predictable) has its name removed, never opened: a symbolic
/// link would be followed to a file outside and truncated, and a FIFO no one writes would block
/// the start for good (`O_EXCL` follows and waits for neither).
fn create_own(path: &std::path::Path) -> io::Result<std::fs::File> {
    let create = || std::fs::File::create_new(path);
    create().or_else(|e| {
        if e.kind() != io::ErrorKind::AlreadyExists {
            return Err(e);
        }
        std::fs::remove_file(path)?;
        create()
    })
}

/// Writes the bound addresses, one per line, to `path` atomically: a temporary file beside it,
/// then rename(2), so a reader sees either no file or the whole list. Returns the text written.
fn write_ready_file(path: &std::path::Path, addrs: &[SocketAddr]) -> io::Result<String> {
    use std::io::Write;
    let mut text = String::new();
    for addr in addrs {
        text.push_str(&format!("{addr}\n"));
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp-{}-{}", std::process::id(), start_number()));
    let tmp = std::path::PathBuf::from(tmp);
    let written = create_own(&tmp)
        .and_then(|mut file| file.write_all(text.as_bytes()))
        .and_then(|()| std::fs::rename(&tmp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written.map(|()| text)
}

/// Whether `path` names a file in the directory `dir`: a ready file there would replace a
/// mailbox of its name, or take its mail.
fn in_dir(path: &std::path::Path, dir: &std::path::Path) -> bool {
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    matches!((parent.canonicalize(), dir.canonicalize()), (Ok(a), Ok(b)) if a == b)
}

/// Whether the file at `path` holds `text` and no more. It is opened without following a link
/// and without waiting (a FIFO put there would block), and read no further than `text` is long.
fn holds(path: &std::path::Path, text: &str) -> bool {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let opened = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path);
    let mut now = String::new();
    opened.is_ok_and(|file| {
        file.take(text.len() as u64 + 1)
            .read_to_string(&mut now)
            .is_ok()
            && now == text
    })
}

/// Raises the soft limit on open descriptors to the hard one (best effort) and logs it, with a
/// warning when it is below what this configuration can hold open at once: the socket and its
/// clone (kept so shutdown can wake the session) per worker, a socket per connection waiting for
/// a worker, the writer's mailboxes (a single job may hold `max_recipients` times what an alias
/// expands to; this estimate counts `max_recipients` only) and two more, and
/// a few for the listeners, standard streams and the mail directory.
fn raise_descriptor_limit(config: &Config) {
    // Saturating: a limit set as high as a usize goes (`--max-recipients 18446744073709551615`)
    // is no reason to panic, and still asks for more descriptors than any system has.
    let needed = config
        .workers
        .saturating_mul(2)
        .saturating_add(WAITING_ROOM)
        .saturating_add(writer::MAX_OPEN_MAILBOXES.max(config.max_recipients))
        .saturating_add(config.listen.len())
        .saturating_add(2 + 8);
    match os::raise_nofile_limit() {
        Ok(limit) => {
            if limit.soft > limit.was {
                log::info!(
                    "descriptor limit raised from {} to {} (the hard limit)",
                    limit.was,
                    limit.soft
                );
            } else {
                log::info!(
                    "descriptor limit {} (hard limit {})",
                    limit.soft,
                    limit.hard
                );
            }
            if limit.soft < needed as u64 {
                log::warn!(
                    "descriptor limit {} is below the {needed} this configuration may hold open \
                     at once; a flood of connections can exhaust it (accept then backs off)",
                    limit.soft
                );
            }
        }
        Err(e) => log::warn!("cannot read or raise the descriptor limit: {e}"),
    }
}

/// Creates the mail directory if needed and checks it is a writable directory. Returns the owner
/// the file system gives a file this process creates there: its own user, or another (NFS with
/// `root_squash`, a FUSE file system, vfat's `uid=`); the writer takes no mailbox owned by anyone
/// else.
fn prepare_mail_dir(dir: &std::path::Path) -> io::Result<u32> {
    // A file there makes create_dir_all say only "File exists": say what is wrong instead.
    let made = std::fs::create_dir_all(dir);
    if std::fs::metadata(dir).is_ok_and(|m| !m.is_dir()) {
        return Err(io::Error::new(
            io::ErrorKind::NotADirectory,
            "not a directory",
        ));
    }
    made?;
    let probe = dir.join(format!(
        ".mboxd-probe-{}-{}",
        std::process::id(),
        start_number()
    ));
    let owner = create_own(&probe)?.metadata();
    std::fs::remove_file(&probe)?;
    owner.map(|meta| std::os::unix::fs::MetadataExt::uid(&meta))
}

impl Running {
    /// The bound addresses.
    pub(crate) fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// Sessions in progress now.
    pub(crate) fn live_connections(&self) -> usize {
        self.ctx.as_ref().map_or(0, |ctx| ctx.live_connections())
    }

    /// The sessions' shared context, for tests that look at a live session's flags.
    #[cfg(test)]
    pub(crate) fn context(&self) -> &Context {
        self.ctx.as_ref().expect("set by a start that succeeded")
    }

    /// Stops everything in order and returns when every thread is joined. Idempotent. A session
    /// inside a message may finish it within the shutdown grace; then it is closed with 421.
    pub(crate) fn shutdown(&mut self) {
        let grace_ends = Instant::now() + self.shutdown_grace;
        if let Some(ctx) = &self.ctx {
            // 1. Stop accepting: raise the flag, wake each acceptor with a connection to itself.
            //    That needs a descriptor: with none free (a flood of connections took them, and
            //    the acceptor waiting in accept(2) holds the number of the next), shutdown(2) of
            //    the listening socket wakes it instead.
            ctx.begin_shutdown();
            for (addr, listener) in self.addrs.iter().zip(&self.listeners) {
                if let Err(e) =
                    TcpStream::connect_timeout(&wake_address(*addr), Duration::from_secs(1))
                {
                    log::warn!("cannot connect to {addr} to stop accepting ({e}); shutting it");
                    if let Err(e) = os::stop_accepting(listener) {
                        log::error!("cannot shut {addr}: {e}");
                    }
                }
            }
        }
        for acceptor in self.acceptors.drain(..) {
            let _ = acceptor.join();
        }
        // The last handles: the listening sockets close, and new connections are refused.
        self.listeners.clear();
        // Nothing listens any more: the ready file goes, unless something else has replaced it
        // since (another server started with the same path).
        if let Some((path, text)) = self.ready_file.take()
            && holds(&path, &text)
        {
            let _ = std::fs::remove_file(&path);
        }
        // 2. The acceptors' senders are gone: the dispatcher drains the waiting room and exits.
        if let Some(dispatcher) = self.dispatcher.take() {
            let _ = dispatcher.join();
        }
        // 3. Wake the sessions that started meanwhile; give those inside a message the rest of
        //    the grace, then shut their reading side too, and half a second later both sides of
        //    any still there. Then close the workers' connection channel and join the workers.
        if let Some(ctx) = &self.ctx {
            ctx.begin_shutdown();
            // Half a second for the 421s; then no session can hold the stop, even one blocked
            // writing to a client that does not read. A cut spares a session waiting for the
            // writer (its message is being stored): it is cut in a later round, half a second
            // at most after the writer has answered it.
            if !ctx.wait_for_sessions(grace_ends) {
                ctx.end_grace();
                while !ctx.wait_for_sessions(Instant::now() + Duration::from_millis(500)) {
                    ctx.cut();
                }
            }
        }
        drop(self.pool.take());
        // 4. The last delivery sender goes with the context: the writer drains, syncs and exits.
        drop(self.ctx.take());
        if let Some(writer) = self.writer.take()
            && writer.join().is_err()
        {
            log::error!("the writer thread panicked");
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Where to connect to wake an acceptor: a wildcard address is reached through loopback.
fn wake_address(addr: SocketAddr) -> SocketAddr {
    let ip = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, addr.port())
}

fn accept(
    listener: &TcpListener,
    addr: SocketAddr,
    waiting: &Sender<Arrival>,
    ctx: &Context,
    peers: &Arc<Peers>,
) {
    let mut backoff = AcceptBackoff::new(addr);
    loop {
        let (stream, peer) = match listener.accept() {
            Ok(accepted) => {
                backoff.succeeded();
                accepted
            }
            Err(e) => {
                if ctx.shutting_down() {
                    return;
                }
                // Out of descriptors (EMFILE) and the like: wait, logged once, never spin.
                thread::sleep(backoff.failed(&e));
                continue;
            }
        };
        if ctx.shutting_down() {
            refuse(stream, &reply::SHUTTING_DOWN);
            return;
        }
        let Some(slot) = peers.admit(peer.ip()) else {
            log::info!("{peer}: at its limit of sessions; 421");
            refuse(stream, &reply::TOO_MANY_FROM_PEER);
            continue;
        };
        let arrival = Arrival {
            stream,
            accepted: Instant::now(),
            slot,
        };
        match waiting.try_send(arrival) {
            Ok(()) => {}
            Err(TrySendError::Full(arrival)) => refuse(arrival.stream, &reply::TOO_BUSY),
            Err(TrySendError::Disconnected(_)) => return,
        }
    }
}

fn dispatch(
    waiting: &Receiver<Arrival>,
    workers: &Sender<Arrival>,
    ctx: &Context,
    queue_wait: Duration,
) {
    for arrival in waiting.iter() {
        if ctx.shutting_down() {
            refuse(arrival.stream, &reply::SHUTTING_DOWN);
            continue;
        }
        let arrival = match workers.try_send(arrival) {
            Ok(()) => continue,
            Err(TrySendError::Full(arrival)) => arrival,
            Err(TrySendError::Disconnected(arrival)) => {
                refuse(arrival.stream, &reply::SHUTTING_DOWN);
                continue;
            }
        };
        wait_for_a_worker(arrival, workers, ctx, queue_wait);
    }
}

/// How often a newcomer waiting for a worker looks for shutdown.
const DISPATCH_STEP: Duration = Duration::from_millis(50);

/// Every worker is busy: the newcomer waits for one until `queue_wait` after its arrival, then
/// gets 421. Idle sessions lose first: the session waiting longest for a command, if it has
/// waited long enough, is closed with 421 to make room. One is closed per newcomer, looked for
/// again at each step while none is (a session may become idle enough meanwhile), and none for
/// a newcomer whose wait is over. Shutdown ends the wait within a step.
fn wait_for_a_worker(
    mut arrival: Arrival,
    workers: &Sender<Arrival>,
    ctx: &Context,
    queue_wait: Duration,
) {
    let deadline = arrival.accepted + queue_wait;
    let mut evicted = false;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if ctx.shutting_down() {
            return refuse(arrival.stream, &reply::SHUTTING_DOWN);
        }
        if left.is_zero() {
            log::warn!("no worker free within {queue_wait:?}; answering 421");
            return refuse(arrival.stream, &reply::TOO_BUSY);
        }
        if !evicted {
            evicted = ctx.evict_idlest();
        }
        match workers.send_timeout(arrival, left.min(DISPATCH_STEP)) {
            Ok(()) => return,
            Err(SendTimeoutError::Timeout(back)) => arrival = back,
            Err(SendTimeoutError::Disconnected(back)) => {
                return refuse(back.stream, &reply::SHUTTING_DOWN);
            }
        }
    }
}

/// Answers a connection no worker will serve, and closes it (by dropping it).
fn refuse(stream: TcpStream, r: &Reply) {
    crate::socket::refuse(&stream, r);
}
