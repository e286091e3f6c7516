//! One session's blocking loop: socket bytes into the protocol core, replies back out,
//! deliveries handed to the writer.
//!
//! It exists to keep all socket handling of a session in one place, around a [`Protocol`] that
//! knows nothing of sockets: it reads into the core's fixed buffer, writes the replies the core
//! has gathered when the core needs more input (one `write` per pipelined group), and carries out
//! deliveries, answering only after the writer has acknowledged. The socket's read timeout is set
//! once, to the shorter of the idle and data timeouts; a read allowed longer waits out the rest,
//! so no timeout is set per line or per message.
//! Shutdown is bounded: sessions waiting for a command are woken at once and answer 421; a
//! session inside a message may go on for the shutdown grace in total, then its reading side is
//! shut and it answers 421 too.

use std::collections::HashMap;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;

use crate::escape::Escaped;
use crate::mbox::{self, Trace};
use crate::protocol::{Event, Protocol};
use crate::reply::{self, Reply, write_reply};
use crate::session::{Envelope, Session, SessionConfig};
use crate::writer::{Entry, Job, Outcome};

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
    /// Set once shutdown has begun.
    shutting_down: AtomicBool,
    /// Live connections, so shutdown can wake them.
    live: Mutex<HashMap<u64, Live>>,
    /// Signalled whenever a connection ends.
    ended: Condvar,
    next_connection: AtomicU64,
    next_message: AtomicU64,
    started: u64,
}

struct Live {
    stream: TcpStream,
    in_message: Arc<AtomicBool>,
}

impl Context {
    pub(crate) fn new(
        session: Arc<SessionConfig>,
        deliveries: Sender<Job>,
        timeout: Duration,
        data_timeout: Duration,
    ) -> Self {
        Context {
            session,
            deliveries,
            timeout,
            data_timeout,
            shutting_down: AtomicBool::new(false),
            live: Mutex::new(HashMap::new()),
            ended: Condvar::new(),
            next_connection: AtomicU64::new(1),
            next_message: AtomicU64::new(1),
            started: mbox::now() as u64,
        }
    }

    fn live(&self) -> MutexGuard<'_, HashMap<u64, Live>> {
        self.live.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// True once shutdown has begun.
    pub(crate) fn shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }

    /// Begins shutdown: sessions waiting for a command are woken (their reads see end of file)
    /// and answer 421; sessions inside a message may finish it first.
    pub(crate) fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
        for conn in self.live().values() {
            if !conn.in_message.load(Ordering::SeqCst) {
                let _ = conn.stream.shutdown(Shutdown::Read);
            }
        }
    }

    /// Waits until no session is live or `deadline` passes; true if none is left.
    pub(crate) fn wait_for_sessions(&self, deadline: Instant) -> bool {
        let mut live = self.live();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if live.is_empty() {
                return true;
            }
            if left.is_zero() {
                return false;
            }
            live = self
                .ended
                .wait_timeout(live, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Ends the shutdown grace: every session still reading, inside a message or not, sees end
    /// of file, answers 421 and closes.
    pub(crate) fn end_grace(&self) {
        let live = self.live();
        if !live.is_empty() {
            log::warn!(
                "shutdown grace over: closing {} session(s) still inside a message",
                live.len()
            );
        }
        for conn in live.values() {
            let _ = conn.stream.shutdown(Shutdown::Read);
        }
    }

    /// Sessions in progress now.
    pub(crate) fn live_connections(&self) -> usize {
        self.live().len()
    }

    fn message_id(&self) -> String {
        let n = self.next_message.fetch_add(1, Ordering::Relaxed);
        format!("{:x}.{n:x}", self.started)
    }
}

/// Removes a connection from the live set when its session ends, however it ends.
struct Registration<'a> {
    ctx: &'a Context,
    id: u64,
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        self.ctx.live().remove(&self.id);
        self.ctx.ended.notify_all();
    }
}

/// Serves one connection to its end. Never panics: a panic inside the session is caught,
/// logged and answered with 421 on this connection only.
pub(crate) fn serve(stream: TcpStream, ctx: &Context) {
    let id = ctx.next_connection.fetch_add(1, Ordering::Relaxed);
    let peer = match stream.peer_addr() {
        Ok(peer) => peer,
        Err(e) => {
            log::debug!("connection {id}: gone before it was served: {e}");
            return;
        }
    };
    let in_message = Arc::new(AtomicBool::new(false));
    match stream.try_clone() {
        Ok(clone) => {
            ctx.live().insert(
                id,
                Live {
                    stream: clone,
                    in_message: Arc::clone(&in_message),
                },
            );
        }
        Err(e) => {
            log::error!("connection {id}: cannot clone socket: {e}");
            return;
        }
    }
    let _registration = Registration { ctx, id };
    let label = format!("conn {id} [{peer}]");
    log::info!("{label}: opened");
    let result = panic::catch_unwind(AssertUnwindSafe(|| {
        run(&stream, peer, &label, ctx, &in_message)
    }));
    match result {
        Ok(Ok(())) => {}
        Ok(Err(e)) => log::info!("{label}: {e}"),
        Err(_) => {
            log::error!("{label}: session panicked; answering 421");
            let mut out = Vec::new();
            write_reply(&mut out, &reply::INTERNAL_ERROR, false);
            let _ = (&stream).write_all(&out);
        }
    }
    log::info!("{label}: closed");
}

fn run(
    stream: &TcpStream,
    peer: SocketAddr,
    label: &str,
    ctx: &Context,
    in_message: &AtomicBool,
) -> io::Result<()> {
    stream.set_write_timeout(Some(ctx.timeout))?;
    // One socket timeout, the shorter of the two, set once: a read that needs longer (inside a
    // message) waits out the rest in `read_within`, so no timeout is set per line or message.
    let base_timeout = ctx.timeout.min(ctx.data_timeout);
    stream.set_read_timeout(Some(base_timeout))?;
    let session = Session::new(Arc::clone(&ctx.session), label.to_string());
    if ctx.shutting_down() {
        let mut out = Vec::new();
        write_reply(&mut out, &reply::SHUTTING_DOWN, false);
        return write_out(stream, &out);
    }
    let mut core = Protocol::new(session);
    loop {
        match core.poll() {
            Event::NeedInput => {}
            Event::Close => return flush(stream, &mut core),
            Event::Deliver(envelope) => {
                let id = ctx.message_id();
                let outcome = deliver(ctx, &envelope, &id, peer, label);
                core.reply(&outcome.reply(&id));
                continue;
            }
        }
        // The core waits for the client: answer what is pending, then read.
        let message = core.in_message();
        // Before the 354 can reach the client, so shutdown never takes a session that is about
        // to receive a message for an idle one.
        in_message.store(message, Ordering::SeqCst);
        if !message && ctx.shutting_down() {
            return close_with(stream, &mut core, &reply::SHUTTING_DOWN);
        }
        flush(stream, &mut core)?;
        let wanted = if message {
            ctx.data_timeout
        } else {
            ctx.timeout
        };
        let n = match read_within(stream, core.space(), wanted, base_timeout) {
            Ok(n) => n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                log::info!(
                    "{label}: timeout{}; 421",
                    if message { " inside a message" } else { "" }
                );
                return close_with(stream, &mut core, &reply::TIMEOUT);
            }
            Err(e) => return Err(e),
        };
        if n == 0 {
            // End of file: the client went away, or shutdown closed our reading side.
            if ctx.shutting_down() {
                if message {
                    log::info!("{label}: shutting down inside a message; it is discarded; 421");
                }
                return close_with(stream, &mut core, &reply::SHUTTING_DOWN);
            }
            if message {
                log::info!("{label}: disconnected inside a message; it is discarded");
            }
            return Ok(());
        }
        core.received(n);
    }
}

/// Reads into `buf`, waiting at most `limit` for the first byte. The socket's timeout is `base`;
/// when `limit` is longer, the rest is waited out with a temporary timeout, set back after.
fn read_within(
    mut stream: &TcpStream,
    buf: &mut [u8],
    limit: Duration,
    base: Duration,
) -> io::Result<usize> {
    let started = Instant::now();
    let mut changed = false;
    let result = loop {
        match stream.read(buf) {
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                let left = limit.saturating_sub(started.elapsed());
                if left.is_zero() {
                    break Err(e);
                }
                stream.set_read_timeout(Some(left))?;
                changed = true;
            }
            other => break other,
        }
    };
    if changed {
        stream.set_read_timeout(Some(base))?;
    }
    result
}

fn flush(stream: &TcpStream, core: &mut Protocol) -> io::Result<()> {
    let result = write_out(stream, core.output());
    core.clear_output();
    result
}

fn write_out(mut stream: &TcpStream, bytes: &[u8]) -> io::Result<()> {
    if bytes.is_empty() {
        return Ok(());
    }
    stream.write_all(bytes)
}

fn close_with(stream: &TcpStream, core: &mut Protocol, r: &Reply) -> io::Result<()> {
    core.reply(r);
    flush(stream, core)
}

/// Hands a message to the writer and waits for its outcome.
fn deliver(ctx: &Context, envelope: &Envelope, id: &str, peer: SocketAddr, label: &str) -> Outcome {
    let peer_ip = peer.ip().to_string();
    let trace = Trace {
        sender: envelope.sender.as_deref(),
        helo: &envelope.helo,
        peer: &peer_ip,
        hostname: &ctx.session.hostname,
        protocol: envelope.protocol.as_str(),
        id,
        time: mbox::now(),
    };
    let entries = envelope
        .recipients
        .iter()
        .map(|(mailbox, rcpt)| Entry {
            mailbox: mailbox.clone(),
            header: mbox::header(&trace, rcpt),
            // The one stored copy, shared: its budget is given back when the last one drops.
            body: Arc::clone(&envelope.body),
        })
        .collect();
    let (ack, outcome) = crossbeam_channel::bounded(1);
    let outcome = match ctx.deliveries.send(Job {
        id: id.to_string(),
        entries,
        ack,
    }) {
        Ok(()) => outcome.recv().unwrap_or(Outcome::Failed),
        Err(_) => Outcome::Failed,
    };
    let to: Vec<String> = envelope
        .recipients
        .iter()
        .map(|(m, _)| Escaped(m).to_string())
        .collect();
    let sender = Escaped(envelope.sender.as_deref().unwrap_or(""));
    let bytes = envelope.size;
    let to = to.join(",");
    match outcome {
        Outcome::Delivered => {
            log::info!("{label}: {id} delivered: from=<{sender}> to={to} bytes={bytes}")
        }
        refused => log::info!(
            "{label}: {id} message refused: {}: from=<{sender}> to={to} bytes={bytes}",
            refused.reply(id).code_text()
        ),
    }
    outcome
}
