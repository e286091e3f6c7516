//! The only module with `unsafe`: the POSIX and glibc calls std does not wrap.
//!
//! It exists so every other module can do without `unsafe` (both crate roots deny it and only
//! this module allows it). Each public function is a thin, documented wrapper over a few libc calls
//! with plain Rust arguments and results, used by the library: an fcntl(2) write lock on a whole
//! file (the lock Postfix and mail readers use on Linux), asking whether a process exists with
//! kill(2) and signal 0, and sending a reply without waiting with send(2), for the writer;
//! raising the soft limit on open descriptors to the hard one with getrlimit(2) and
//! setrlimit(2), for the server at start; waking an acceptor with shutdown(2) of its listening
//! socket, for the server at stop; choosing the `SCHED_BATCH` policy with sched_setscheduler(2),
//! for the workers and the writer; and, used by the binary,
//! blocking then waiting for SIGINT and SIGTERM with sigwait(3) so that signals arrive in an
//! ordinary thread instead of an async-signal handler, and fixing glibc's mmap threshold with
//! mallopt(3) so message buffers go back to the system when freed. The binary compiles this same
//! file as its own module (`mod os;` in src/main.rs), so the signal and allocator functions are
//! not part of the library's API.
#![allow(unsafe_code)]

use std::fs::File;
use std::io;
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;

/// Tries to take an fcntl(2) write lock on the whole of `file` without waiting: an open file
/// description lock (`F_OFD_SETLK`, Linux 3.15). It conflicts with other processes' classic
/// fcntl locks (Postfix, procmail, mutt) as a classic lock does, and besides:
/// - with this process's other open files, so a second server's writer in the same process (a
///   test suite's) is excluded too;
/// - it is not dropped when this process closes another descriptor of the file (as a test does
///   reading the mailbox through `Server::messages`), which releases a classic lock.
///
/// `Ok(false)` means a conflicting lock is held. The lock is released when `file` is closed.
pub(crate) fn try_lock_exclusive(file: &File) -> io::Result<bool> {
    try_lock(file, libc::F_WRLCK)
}

/// Tries to take an fcntl(2) read lock on the whole of `file` without waiting, an open file
/// description lock as [`try_lock_exclusive`] takes: it keeps out every writer that locks
/// (this process's own writer included) while a reader reads. `Ok(false)` means a write lock
/// is held. The lock is released when `file` is closed.
pub(crate) fn try_lock_shared(file: &File) -> io::Result<bool> {
    try_lock(file, libc::F_RDLCK)
}

fn try_lock(file: &File, kind: libc::c_int) -> io::Result<bool> {
    // SAFETY: `flock` is a plain C struct for which all-zero bytes are a valid value.
    let mut lock: libc::flock = unsafe { std::mem::zeroed() };
    lock.l_type = kind as libc::c_short;
    lock.l_whence = libc::SEEK_SET as libc::c_short;
    lock.l_start = 0;
    lock.l_len = 0; // to the end of the file, however it grows
    // SAFETY: the descriptor is open for as long as `file` is borrowed, and `lock` is a valid
    // `flock` that F_OFD_SETLK only reads.
    // `l_pid` stays 0, as F_OFD_SETLK requires.
    let rc = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &lock) };
    if rc == 0 {
        return Ok(true);
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::EAGAIN) | Some(libc::EACCES) => Ok(false),
        _ => Err(err),
    }
}

/// Sends what of `bytes` fits in the socket's send buffer now, without waiting and without
/// SIGPIPE (send(2) with `MSG_DONTWAIT | MSG_NOSIGNAL`): the number of bytes sent, 0 when the
/// buffer is full. Other threads' blocking reads and writes on the same socket are unaffected,
/// unlike setting `O_NONBLOCK`, which every clone of the descriptor shares.
pub(crate) fn send_now(stream: &TcpStream, bytes: &[u8]) -> io::Result<usize> {
    loop {
        // SAFETY: the descriptor is open while `stream` is borrowed, and `bytes` is valid for
        // reads of its length.
        let rc = unsafe {
            libc::send(
                stream.as_raw_fd(),
                bytes.as_ptr().cast(),
                bytes.len(),
                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            )
        };
        if let Ok(sent) = usize::try_from(rc) {
            return Ok(sent);
        }
        let err = io::Error::last_os_error();
        match err.kind() {
            io::ErrorKind::Interrupted => {}
            io::ErrorKind::WouldBlock => return Ok(0),
            _ => return Err(err),
        }
    }
}

/// Whether a process with id `pid` exists, asked with kill(2) and signal 0, which sends nothing.
/// `EPERM` means it exists but belongs to someone else; only `ESRCH` means there is none. Unlike
/// `/proc`, this sees processes that a `hidepid` mount hides.
pub(crate) fn process_exists(pid: u32) -> bool {
    // 0 and negative ids name process groups, not a process.
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    if pid <= 0 {
        return false;
    }
    // SAFETY: kill with signal 0 only checks that the target exists and may be signalled; `pid`
    // is positive, so it names one process.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

/// Wakes every thread waiting in accept(2) on `listener`, which then fails (`EINVAL`), as does
/// every later accept: shutdown(2) of a listening socket, on Linux. Unlike a connection to the
/// listener, it needs no descriptor.
pub(crate) fn stop_accepting(listener: &TcpListener) -> io::Result<()> {
    // SAFETY: shutdown(2) of a descriptor the borrowed listener owns and keeps open for the call.
    if unsafe { libc::shutdown(listener.as_raw_fd(), libc::SHUT_RDWR) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Puts the calling thread, and the threads it starts later, under `SCHED_BATCH` (sched(7)):
/// the same share of the CPU and the same nice value as under the default policy, but a wake-up
/// of the thread does not preempt the thread that is running; the woken one waits its turn. Any
/// thread may choose it for itself, without privilege. On Linux the policy is a thread's, not
/// the process's.
pub(crate) fn batch_scheduling() -> io::Result<()> {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: pid 0 names the calling thread, and `param` is a valid sched_param (priority 0,
    // the only one SCHED_BATCH takes) that the call only reads.
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The calling thread's scheduling policy (`libc::SCHED_OTHER`, `libc::SCHED_BATCH`...).
#[cfg(test)]
pub(crate) fn scheduling_policy() -> io::Result<i32> {
    // SAFETY: sched_getscheduler only reads the policy of the thread pid 0 names, the caller.
    match unsafe { libc::sched_getscheduler(0) } {
        -1 => Err(io::Error::last_os_error()),
        policy => Ok(policy),
    }
}

/// The limit on open descriptors (`RLIMIT_NOFILE`), soft and hard, after [`raise_nofile_limit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NofileLimit {
    /// The soft limit before the call.
    pub was: u64,
    /// The soft limit now: what this process may open.
    pub soft: u64,
    /// The hard limit, the most the soft one can be raised to without privilege.
    pub hard: u64,
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit and says what the limits are. The soft
/// limit is often 1024 for the sake of select(2), which mboxd does not use, while the hard one
/// is far higher. Where setrlimit refuses the hard limit (a hard limit of `RLIM_INFINITY`, which
/// Linux refuses above `fs.nr_open`), the soft limit is left as it was and the error returned
/// (nothing lower is tried).
pub(crate) fn raise_nofile_limit() -> io::Result<NofileLimit> {
    // SAFETY: `rlimit` is a plain C struct for which all-zero bytes are a valid value.
    let mut limit: libc::rlimit = unsafe { std::mem::zeroed() };
    // SAFETY: `limit` is a valid, writable `rlimit` that getrlimit fills in.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let was = limit.rlim_cur;
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: `raised` is a valid `rlimit` that setrlimit only reads; a soft limit equal to
        // the hard one needs no privilege.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
            return Err(io::Error::last_os_error());
        }
        limit.rlim_cur = limit.rlim_max;
    }
    Ok(NofileLimit {
        was,
        soft: limit.rlim_cur,
        hard: limit.rlim_max,
    })
}

/// Ignores SIGXFSZ if nothing else was set for it, so that an append past a file-size limit
/// (`ulimit -f`, systemd's `LimitFSIZE=`) fails with `EFBIG`, which the writer answers and cuts
/// back, instead of the signal's default action killing the whole process. A handler or
/// disposition someone else set is left alone. True when the disposition was changed.
pub(crate) fn ignore_file_size_signal() -> io::Result<bool> {
    // SAFETY: `sigaction` is a plain C struct for which all-zero bytes are a valid value.
    let mut current: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: with a null new action, sigaction only writes the current one into `current`.
    if unsafe { libc::sigaction(libc::SIGXFSZ, std::ptr::null(), &mut current) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if current.sa_sigaction != libc::SIG_DFL {
        return Ok(false);
    }
    // SAFETY: as above; SIG_IGN runs no code in the signal's context, and an empty mask and no
    // flags are valid.
    let mut ignore: libc::sigaction = unsafe { std::mem::zeroed() };
    ignore.sa_sigaction = libc::SIG_IGN;
    // SAFETY: `ignore` is a valid action that sigaction only reads; the old one is not wanted.
    if unsafe { libc::sigaction(libc::SIGXFSZ, &ignore, std::ptr::null_mut()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(true)
}

/// The set of the two signals that stop the server, SIGINT and SIGTERM.
fn shutdown_signals() -> libc::sigset_t {
    // SAFETY: sigemptyset initialises the set it is given; sigaddset adds valid signal numbers.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        set
    }
}

/// Blocks SIGINT and SIGTERM in the calling thread and in every thread it starts later, so that
/// [`wait_for_shutdown_signal`] receives them. Call it before starting any thread.
// The library never calls it; the binary, which compiles this file too, does.
#[allow(dead_code)]
pub(crate) fn block_shutdown_signals() -> io::Result<()> {
    let set = shutdown_signals();
    // SAFETY: `set` is initialised; a null old-set pointer is allowed.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(rc))
    }
}

/// Waits until SIGINT or SIGTERM is pending and returns its number.
// The library never calls it; the binary, which compiles this file too, does.
#[allow(dead_code)]
pub(crate) fn wait_for_shutdown_signal() -> io::Result<i32> {
    let set = shutdown_signals();
    let mut signal: libc::c_int = 0;
    // SAFETY: `set` is initialised and `signal` is a valid place for the result.
    let rc = unsafe { libc::sigwait(&set, &mut signal) };
    if rc == 0 {
        Ok(signal)
    } else {
        Err(io::Error::from_raw_os_error(rc))
    }
}

/// Fixes glibc's mmap threshold at `bytes`: every allocation at least that large then gets a
/// mapping of its own, which realloc(3) grows with mremap(2) (no copy) and free(3) gives back to
/// the system at once. Left alone, glibc raises the threshold after each large free (up to 32 MiB)
/// and then serves message buffers from per-thread heaps, whose freed memory stays resident: the
/// peak resident size then overshoots the in-flight budget. False where it cannot be set (not
/// glibc), which costs only that overshoot.
// The library never calls it; the binary, which compiles this file too, does.
#[allow(dead_code)]
pub(crate) fn fix_mmap_threshold(bytes: usize) -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let Ok(bytes) = libc::c_int::try_from(bytes) else {
            return false;
        };
        // SAFETY: mallopt only sets one malloc parameter; M_MMAP_THRESHOLD takes a byte count,
        // and glibc allows it to be set at any time.
        unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, bytes) == 1 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        let _ = bytes;
        false
    }
}
