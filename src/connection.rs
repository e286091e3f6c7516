//! One session's blocking loop: socket bytes into the protocol core, replies back out,
//! deliveries handed to the writer.
//!
//! It exists to keep all socket handling of a session in one place, around a [`Protocol`] that
//! knows nothing of sockets: it reads into the core's bounded buffer, writes the replies the core
//! has gathered when the core needs more input (one `write` per pipelined group, or per
//! buffer-full of a group longer than the core's input buffer; a message's own reply is a write
//! of its own, by the writer), and hands deliveries to the writer. The
//! writer sends a message's 250 itself once the message is on disk (see `crate::handoff`); the
//! session meanwhile reads on, and before it writes anything else it settles that answer, so
//! replies keep their order. A session whose answer is still with the writer is waiting for the
//! server, not idle, and is not evicted.
//!
//! Time is bounded per unit, not per read, so a client that trickles cannot hold a worker: a
//! command line must arrive whole within `--timeout` of the moment the server began waiting for
//! it, and a message must keep `--min-data-rate`, a deadline its octets move later by a bounded
//! amount, carried from message to message (`rate.rs`), as well as send something within
//! `--data-timeout`. A session waiting for a command is idle: when
//! every worker is busy, the one idle longest is closed to make room. Shutdown is bounded too:
//! sessions waiting for a command are woken at once and answer 421; a session inside a message
//! may go on for the shutdown grace in total, then its reading side is shut and it answers 421.
//! A session the server ends (after QUIT, too many errors, a timeout, eviction, shutdown, before
//! its greeting too, or a panic) ends in `socket::linger`, so a client that pipelined more
//! commands still reads the last replies.

use std::collections::HashMap;
use std::io::{self, ErrorKind, Write};
use std::net::{SocketAddr, TcpStream};
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;

use crate::admission::Arrival;
use crate::handoff::{Pending, deliver};
use crate::mbox;
use crate::protocol::{Event, Protocol};
use crate::reply::{self, Reply, write_reply};
use crate::session::{Session, SessionConfig};
use crate::socket::{Late, ReadTimer, linger, write_within};
use crate::writer::Job;

mod live;
mod rate;
use live::{EVICTED, Flags, Live, Registration};
use rate::DataClock;

/// What every connection of a server shares.
pub(crate) struct Context {
    /// The session limits and directory.
    pub session: Arc<SessionConfig>,
    /// Where accepted messages go.
    pub deliveries: Sender<Job>,
    /// Idle timeout between commands.
    pub timeout: Duration,
    /// Timeout of each read inside a message.
    pub data_timeout: Duration,
    /// Slowest rate of a session's messages, octets per second (see `rate.rs`).
    pub min_data_rate: u64,
    /// The time a session's first message starts with (see `rate.rs`).
    pub min_data_rate_grace: Duration,
    /// The clock that [`Flags::waiting_since`] counts from.
    epoch: Instant,
    /// Set once shutdown has begun.
    shutting_down: AtomicBool,
    /// Live connections, so shutdown can wake them.
    live: Mutex<HashMap<u64, Live>>,
    /// Signalled whenever a connection ends, and when shutdown begins (which wakes the `--fail`
    /// delays waiting in `pause`).
    ended: Condvar,
    next_connection: AtomicU64,
    next_message: AtomicU64,
    /// What every message id of this server starts with; see [`Context::message_id`].
    id_stem: String,
}

impl Context {
    pub(crate) fn new(
        session: Arc<SessionConfig>,
        deliveries: Sender<Job>,
        config: &crate::Config,
    ) -> Self {
        Context {
            session,
            deliveries,
            timeout: config.timeout,
            data_timeout: config.data_timeout,
            min_data_rate: config.min_data_rate,
            min_data_rate_grace: config.min_data_rate_grace,
            epoch: Instant::now(),
            shutting_down: AtomicBool::new(false),
            live: Mutex::new(HashMap::new()),
            ended: Condvar::new(),
            next_connection: AtomicU64::new(1),
            next_message: AtomicU64::new(1),
            id_stem: id_stem(),
        }
    }

    /// True once shutdown has begun.
    pub(crate) fn shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }

    /// A new message id, unique among the servers of one host (one PID namespace):
    /// `<start time>-<pid>-<server>-<counter>`, in hex (the server's number within its
    /// process, as a test suite may start many at once). Joined by `-`, not `.`: the id is
    /// written in `Received:`, whose `id` clause is an atom (RFC 5321 §4.4), and a dot is not
    /// atext (RFC 5322 §3.2.3).
    pub(crate) fn message_id(&self) -> String {
        let n = self.next_message.fetch_add(1, Ordering::Relaxed);
        format!("{}-{n:x}", self.id_stem)
    }
}

/// The start of a new server's message ids (see [`Context::message_id`]).
fn id_stem() -> String {
    static SERVERS: AtomicU64 = AtomicU64::new(0);
    let server = SERVERS.fetch_add(1, Ordering::Relaxed);
    let started = mbox::now() as u64;
    format!("{started:x}-{:x}-{server:x}", std::process::id())
}

/// Serves one connection to its end. Never panics: a panic inside the session is caught,
/// logged and answered with 421 on this connection only.
//
// What runs before and after the session is in functions of its own (`register`, `ended`,
// `start`, ...): inlined, their locals would sit in the frame below every step of the session,
// and an idle worker's stack would reach a page deeper (see `pool::WORKER_STACK`).
pub(crate) fn serve(arrival: Arrival, ctx: &Context) {
    // The peer's slot is held until the connection ends.
    let Arrival { stream, slot, .. } = arrival;
    // Shared with the writer, which may send the reply to the end of a message itself.
    let stream = Arc::new(stream);
    let Some((id, peer, flags, label)) = register(&stream, ctx) else {
        return;
    };
    let _registration = Registration { ctx, id };
    let result = panic::catch_unwind(AssertUnwindSafe(|| run(&stream, peer, &label, ctx, &flags)));
    ended(
        &stream,
        &label,
        result,
        flags.enhanced.load(Ordering::Relaxed),
    );
    drop(slot);
}

/// Enters a connection in the live set: its id, peer, flags and log label, or `None` if it is
/// already gone.
#[inline(never)]
fn register(stream: &TcpStream, ctx: &Context) -> Option<(u64, SocketAddr, Arc<Flags>, String)> {
    let id = ctx.next_connection.fetch_add(1, Ordering::Relaxed);
    let peer = match stream.peer_addr() {
        Ok(peer) => peer,
        Err(e) => {
            log::debug!("connection {id}: gone before it was served: {e}");
            return None;
        }
    };
    let flags = Arc::new(Flags::default());
    match stream.try_clone() {
        Ok(clone) => {
            let live = Live {
                stream: clone,
                flags: Arc::clone(&flags),
            };
            ctx.live().insert(id, live);
        }
        Err(e) => {
            // Out of descriptors, most likely: the client is told, as any it is not served.
            log::error!("connection {id}: cannot clone socket: {e}; answering 421");
            crate::socket::refuse(stream, &reply::TOO_BUSY);
            return None;
        }
    }
    let label = format!("conn {id} [{peer}]");
    log::info!("{label}: opened");
    Some((id, peer, flags, label))
}

/// Logs how a session ended; after a panic, answers 421 (with its enhanced code if the session
/// had negotiated them: RFC 2034 §3).
#[inline(never)]
fn ended(
    stream: &TcpStream,
    label: &str,
    result: std::thread::Result<io::Result<()>>,
    enhanced: bool,
) {
    match result {
        Ok(Ok(())) => {}
        Ok(Err(e)) => log::info!("{label}: {e}"),
        Err(_) => {
            log::error!("{label}: session panicked; answering 421");
            let _ = answer_and_close(stream, &reply::INTERNAL_ERROR, enhanced);
        }
    }
    log::info!("{label}: closed");
}

/// Writes `r` to a session that has no protocol core (not yet, or no longer), then lingers as
/// every close of a session does (`socket::linger`), so input the client already sent cannot
/// turn the close into a reset that loses the reply.
fn answer_and_close(mut stream: &TcpStream, r: &Reply, enhanced: bool) -> io::Result<()> {
    let mut out = Vec::new();
    write_reply(&mut out, r, enhanced);
    stream.write_all(&out)?;
    linger(stream);
    Ok(())
}

/// Where a session is in time: since when it has waited for its current command, and when its
/// message began and how much of it has come.
struct Clock {
    /// The core's progress count when the current command wait began.
    progress: u32,
    waiting_since: Instant,
    /// The core's count of messages begun, and when the wait after the last of them began (or
    /// the session's start): eviction counts a session idle from then. Only a message moves
    /// mail, so no round of other commands (NOOP, RSET, VRFY, EHLO, MAIL then RSET...) keeps a
    /// session it does not use from being closed for a newcomer.
    begun: u32,
    idle_since: Instant,
    /// The minimum rate of the message being received, whose clock starts once its 354 (or its
    /// first chunk's reply) and everything owed before it were written.
    data: DataClock,
}

fn run(
    stream: &Arc<TcpStream>,
    peer: SocketAddr,
    label: &str,
    ctx: &Context,
    flags: &Flags,
) -> io::Result<()> {
    stream.set_write_timeout(Some(ctx.timeout))?;
    // Nagle's algorithm off: the core already gathers each pipelined group into one write, so it
    // could only add delay. It would add it where the writer has just sent a message's 250 as a
    // segment of its own: the replies to the commands pipelined behind the dot would wait for the
    // client's delayed ACK of that 250 (about 40 ms on Linux).
    stream.set_nodelay(true)?;
    if ctx.shutting_down() {
        return answer_and_close(stream, &reply::SHUTTING_DOWN, false);
    }
    let mut timer = ReadTimer::new(
        stream,
        ctx.timeout
            .min(ctx.data_timeout)
            .min(ctx.min_data_rate_grace),
    )?;
    let mut core = start(ctx, label);
    let mut clock = Clock {
        progress: core.progress(),
        waiting_since: Instant::now(),
        begun: core.messages(),
        idle_since: Instant::now(),
        data: DataClock::new(ctx.min_data_rate, ctx.min_data_rate_grace, ctx.data_timeout),
    };
    // The last message handed to the writer, until its answer is settled.
    let mut pending: Option<Pending> = None;
    loop {
        match core.poll() {
            Event::NeedInput => {}
            Event::Close => {
                settle(&mut pending)?;
                if write_replies(stream, &mut core, &mut pending, ctx, flags, label)? {
                    linger(stream);
                }
                return Ok(());
            }
            Event::Delay(pause) => {
                // A `--fail` delay: what is answered so far goes out first; the session is not
                // idle meanwhile, so it is not evicted.
                if !write_replies(stream, &mut core, &mut pending, ctx, flags, label)? {
                    return Ok(());
                }
                // The server's time, not the client's (a message that ended is ended first).
                let began = Instant::now();
                clock.data.pause(
                    began,
                    core.in_message().then(|| core.messages()),
                    core.commands_in_message(),
                    pause,
                );
                // A message read to its end before a stop is begun, though its clock never
                // started (a BDAT LAST read with its command): one whose end is delayed is still
                // stored. Not one still open, whose 354 may wait for this delay.
                if !ctx.shutting_down() && !core.in_message() {
                    clock.data.announce(core.messages());
                }
                ctx.pause(pause);
                // Nor do the command and idle clocks run meanwhile.
                let paused = began.elapsed();
                clock.waiting_since += paused;
                clock.idle_since += paused;
                continue;
            }
            Event::Flush => {
                // Replies enough to write before handling more of what was read.
                if !write_replies(stream, &mut core, &mut pending, ctx, flags, label)? {
                    return Ok(());
                }
                continue;
            }
            Event::Deliver(envelope) => {
                // Everything answered before the end of this message reaches the client before
                // the writer can answer it: replies to pipelined commands, and the last
                // message's answer.
                settle(&mut pending)?;
                // A message the client began and ended within what was read while shutting
                // down (pipelined behind the last, or while its answer was awaited) was never
                // announced to it (no 354 or chunk reply written): it is not begun; its
                // replies before the 421 say no more than that the commands were taken.
                let announced = clock.data.message() == Some(core.messages());
                // The message ends here, not once the writer has answered it: what the writer
                // takes is not the client's time, and what the message leaves is carried to the
                // next (see `rate.rs`).
                clock
                    .data
                    .update(Instant::now(), None, core.commands_in_message());
                if ctx.shutting_down() && !announced {
                    core.unannounce();
                    return close_with(stream, &mut core, &mut pending, &reply::SHUTTING_DOWN);
                }
                if !write_replies(stream, &mut core, &mut pending, ctx, flags, label)? {
                    return Ok(());
                }
                let enhanced = core.enhanced();
                let handed = deliver(ctx, stream, enhanced, &envelope, peer, label);
                *flags
                    .delivery
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = handed.watch();
                pending = Some(handed);
                // Shutting down: the message the client finished is stored, but nothing more
                // is begun. Transactions pipelined behind it would each wait for the writer
                // (up to the lock timeout), and a session waiting for the writer is spared by
                // the shutdown's cut.
                if ctx.shutting_down() {
                    return close_with(stream, &mut core, &mut pending, &reply::SHUTTING_DOWN);
                }
                continue;
            }
        }
        // The core waits for the client: answer what is pending, then read.
        let message = core.in_message();
        // Before the 354 can reach the client, so shutdown never takes a session that is about
        // to receive a message for an idle one.
        flags.in_message.store(message, Ordering::SeqCst);
        flags.enhanced.store(core.enhanced(), Ordering::Relaxed);
        // A message whose 354 (or first chunk's reply) has not been written yet.
        let unannounced = message && clock.data.message() != Some(core.messages());
        // Shutdown lets a message in progress finish, but refuses one not yet begun for the
        // client: `in_message` is stored above before this looks at shutdown's flag, and
        // shutdown sets its flag before it looks at `in_message`, so either this sees the
        // shutdown, or the shutdown sees the message and leaves its reading side open. (A DATA
        // answered during a shutdown, after a `--fail` delay say, got 354 and then, its reading
        // side shut, 421 inside the message.)
        if ctx.shutting_down() && (!message || unannounced) {
            if unannounced {
                core.unannounce();
            }
            return close_with(stream, &mut core, &mut pending, &reply::SHUTTING_DOWN);
        }
        // Only when there is something to say: a message's answer is not waited for before
        // reading the client's next command. Writing may wait for the writer's answer to the last
        // message (about the lock timeout at most, plus the commit's syncs), so the client's
        // clocks start after it.
        if !write_replies(stream, &mut core, &mut pending, ctx, flags, label)? {
            return Ok(());
        }
        let now = Instant::now();
        if core.progress() != clock.progress {
            clock.progress = core.progress();
            clock.waiting_since = now;
        }
        if core.messages() != clock.begun {
            clock.begun = core.messages();
            clock.idle_since = now;
        }
        clock.data.update(
            now,
            message.then(|| core.messages()),
            core.commands_in_message(),
        );
        let waiting = if message {
            0
        } else {
            ctx.clock()
                .saturating_sub(clock.idle_since.elapsed().as_millis() as u64)
                .max(1)
        };
        // Idle again from here, if waiting for a command. Since the swap after the last read
        // (or the last timed-out one, or since the start) the flag was 0, which eviction never
        // picks: nothing is overwritten.
        flags.waiting_since.store(waiting, Ordering::SeqCst);
        // The deadline of what is awaited: a whole command line, or the message's next bytes
        // (within the data timeout, and soon enough to keep the minimum rate).
        let (deadline, late) = match clock.data.deadline() {
            None => (clock.waiting_since + ctx.timeout, Late::Command),
            Some(rate) => {
                let per_read = now + ctx.data_timeout;
                if rate < per_read {
                    (rate, Late::Rate)
                } else {
                    (per_read, Late::Data)
                }
            }
        };
        let n = match timer.read(stream, core.space(), deadline) {
            Ok(n) => n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                // A client that waits for the answer to its last message is waiting for the
                // server: its command clock starts when the answer came.
                if !message
                    && let Some(answered) = answer(&mut pending)?
                    && answered > clock.waiting_since
                {
                    clock.waiting_since = answered;
                    // Round again as after a read: the flag goes back to 0 until the next wait.
                    if flags.waiting_since.swap(0, Ordering::SeqCst) == EVICTED {
                        return evicted(stream, &mut core, &mut pending, label);
                    }
                    continue;
                }
                return timed_out(stream, &mut core, &mut pending, label, late);
            }
            // A reset inside a message: the log says the message is gone, as for an end of file.
            Err(e) if message => {
                let why = format!("{e} inside a message; it is discarded");
                return Err(io::Error::new(e.kind(), why));
            }
            Err(e) => return Err(e),
        };
        if n == 0 {
            return end_of_file(stream, &mut core, &mut pending, label, ctx, flags, message);
        }
        // Busy from here until it waits again (above, before the read). Picked for eviction
        // before this, the session handles nothing of what it read, and answers only the 421
        // (see `Flags::waiting_since`): no reply is lost after being made, and no `--fail` rule
        // fires for a command nobody gets the answer to.
        if flags.waiting_since.swap(0, Ordering::SeqCst) == EVICTED {
            return evicted(stream, &mut core, &mut pending, label);
        }
        clock.data.read(n);
        core.received(n);
    }
}

/// The session's core, on the heap: it is 288 bytes, and on the stack it would be in the frame
/// below every step of the session (see `pool::WORKER_STACK`).
#[inline(never)]
fn start(ctx: &Context, label: &str) -> Box<Protocol> {
    let session = Session::new(Arc::clone(&ctx.session), label.to_string());
    Box::new(Protocol::new(session))
}

/// Closes a session whose client sent too little in time (421).
#[cold]
#[inline(never)]
fn timed_out(
    stream: &TcpStream,
    core: &mut Protocol,
    pending: &mut Option<Pending>,
    label: &str,
    late: Late,
) -> io::Result<()> {
    let (reply, why) = late.reply();
    log::info!("{label}: {why}; {}", reply.code_text());
    close_with(stream, core, pending, &reply)
}

/// End of file: the client went away, or shutdown or eviction closed our reading side.
#[inline(never)]
fn end_of_file(
    stream: &TcpStream,
    core: &mut Protocol,
    pending: &mut Option<Pending>,
    label: &str,
    ctx: &Context,
    flags: &Flags,
    message: bool,
) -> io::Result<()> {
    if flags.evicted.load(Ordering::SeqCst) {
        return evicted(stream, core, pending, label);
    }
    if ctx.shutting_down() {
        if message {
            log::info!("{label}: shutting down inside a message; it is discarded; 421");
        }
        return close_with(stream, core, pending, &reply::SHUTTING_DOWN);
    }
    if message {
        log::info!("{label}: disconnected inside a message; it is discarded");
    }
    Ok(())
}

/// Writes the replies the core has gathered, if any, after settling the last message's answer,
/// as [`flush`] does, but marked for eviction while it writes (not while the writer's answer is
/// awaited: that is the server's time): a client that leaves them unread may be closed for a
/// newcomer (`Flags::writing_since`). False when it was: the session has nothing more to do.
fn write_replies(
    stream: &TcpStream,
    core: &mut Protocol,
    pending: &mut Option<Pending>,
    ctx: &Context,
    flags: &Flags,
    label: &str,
) -> io::Result<bool> {
    if core.output().is_empty() {
        return Ok(true);
    }
    settle(pending)?;
    // Where the session is now, not at its last read: a group read inside a message may end it
    // (and QUIT), and one closed while it writes is then not inside one.
    flags.in_message.store(core.in_message(), Ordering::SeqCst);
    // Stamped once: a group not taken whole within 1 s marks a client that leaves its replies
    // unread, or one that reads them more slowly than 1 s allows, whom eviction treats alike.
    flags.writing_since.store(ctx.clock(), Ordering::SeqCst);
    let flushed = flush(stream, core, pending);
    flags.writing_since.store(0, Ordering::SeqCst);
    match flushed {
        Err(_) if flags.evicted.load(Ordering::SeqCst) => {
            log::info!("{label}: not reading its replies; closed to make room for a newcomer");
            Ok(false)
        }
        result => result.map(|()| true),
    }
}

/// Writes the replies the core has gathered, if any, after settling the last message's answer.
fn flush(stream: &TcpStream, core: &mut Protocol, pending: &mut Option<Pending>) -> io::Result<()> {
    if core.output().is_empty() {
        return Ok(());
    }
    settle(pending)?;
    let result = write_within(stream, core.output());
    core.clear_output();
    result
}

/// Settles the last message's answer, if one is outstanding (waiting for the writer, about the
/// lock timeout at most, plus the commit's syncs), and says when the writer gave it.
#[cold]
fn answer(pending: &mut Option<Pending>) -> io::Result<Option<Instant>> {
    let Some(watch) = pending.as_ref().and_then(Pending::watch) else {
        return Ok(None);
    };
    settle(pending)?;
    Ok(watch.answered_at())
}

/// Waits for the writer's answer to the last message, if one is outstanding, and sends what of
/// its reply the writer did not.
fn settle(pending: &mut Option<Pending>) -> io::Result<()> {
    pending.take().map_or(Ok(()), Pending::settle)
}

/// Closes a session eviction picked, with `421 4.3.2`. It is called before anything read since
/// the session last waited is handled, so no reply of it is pending.
fn evicted(
    stream: &TcpStream,
    core: &mut Protocol,
    pending: &mut Option<Pending>,
    label: &str,
) -> io::Result<()> {
    log::info!("{label}: closed to make room for a newcomer; 421");
    close_with(stream, core, pending, &reply::EVICTED)
}

fn close_with(
    stream: &TcpStream,
    core: &mut Protocol,
    pending: &mut Option<Pending>,
    r: &Reply,
) -> io::Result<()> {
    core.reply(r);
    flush(stream, core, pending)?;
    linger(stream);
    Ok(())
}

#[cfg(test)]
mod tests;
