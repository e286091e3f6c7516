//! One session's blocking loop: bounded reads from the socket into the state machine, replies
//! back out, deliveries handed to the writer.
//!
//! It exists to keep all socket handling of a session in one place, around a [`Session`] that
//! knows nothing of sockets. Every read goes through `take()`, so no line can grow past its
//! bound; every read has a timeout; replies are collected and written with one `write_all` when
//! no further complete command waits in the buffer (RFC 2920 batching); a message is answered only
//! after the writer has acknowledged it.

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crossbeam_channel::Sender;

use crate::mbox::{self, Trace};
use crate::reply::{self, Reply, write_reply};
use crate::session::{Action, Envelope, Session, SessionConfig};
use crate::writer::{Entry, Job, Outcome};

/// RFC 5321 §4.5.3.1.4: a command line is at most 512 octets with its CRLF.
pub(crate) const MAX_COMMAND_LINE: u64 = 512;
/// The longest piece of message text read at once; longer lines are read in pieces.
const DATA_PIECE: u64 = 64 * 1024;

/// What every connection of a server shares.
pub(crate) struct Context {
    /// The session limits and directory.
    pub session: Arc<SessionConfig>,
    /// Where accepted messages go.
    pub deliveries: Sender<Job>,
    /// Idle timeout between commands.
    pub timeout: Duration,
    /// Timeout of each read inside DATA.
    pub data_timeout: Duration,
    /// Set once shutdown has begun.
    shutting_down: AtomicBool,
    /// Live connections, so shutdown can wake the idle ones.
    live: Mutex<HashMap<u64, Live>>,
    next_connection: AtomicU64,
    next_message: AtomicU64,
    started: u64,
}

struct Live {
    stream: TcpStream,
    in_data: Arc<AtomicBool>,
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
            next_connection: AtomicU64::new(1),
            next_message: AtomicU64::new(1),
            started: mbox::now() as u64,
        }
    }

    /// True once shutdown has begun.
    pub(crate) fn shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }

    /// Begins shutdown: sessions waiting for a command are woken (their reads see end of file)
    /// and answer 421; sessions inside DATA may finish their message first.
    pub(crate) fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
        let live = self.live.lock().unwrap_or_else(PoisonError::into_inner);
        for conn in live.values() {
            if !conn.in_data.load(Ordering::SeqCst) {
                let _ = conn.stream.shutdown(Shutdown::Read);
            }
        }
    }

    /// Sessions in progress now.
    pub(crate) fn live_connections(&self) -> usize {
        self.live
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
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
        self.ctx
            .live
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.id);
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
    let in_data = Arc::new(AtomicBool::new(false));
    match stream.try_clone() {
        Ok(clone) => {
            ctx.live
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(
                    id,
                    Live {
                        stream: clone,
                        in_data: Arc::clone(&in_data),
                    },
                );
        }
        Err(e) => {
            log::error!("connection {id}: cannot clone socket: {e}");
            return;
        }
    }
    let _registration = Registration { ctx, id };
    log::info!("connection {id} from {peer} opened");
    let result = panic::catch_unwind(AssertUnwindSafe(|| run(&stream, peer, ctx, &in_data)));
    match result {
        Ok(Ok(())) => {}
        Ok(Err(e)) => log::info!("connection {id} from {peer}: {e}"),
        Err(_) => {
            log::error!("connection {id} from {peer}: session panicked; answering 421");
            let mut out = Vec::new();
            write_reply(&mut out, &reply::INTERNAL_ERROR, false);
            let _ = (&stream).write_all(&out);
        }
    }
    log::info!("connection {id} from {peer} closed");
}

fn run(
    stream: &TcpStream,
    peer: SocketAddr,
    ctx: &Context,
    in_data: &AtomicBool,
) -> io::Result<()> {
    stream.set_write_timeout(Some(ctx.timeout))?;
    let mut reader = BufReader::with_capacity(16 * 1024, stream);
    let mut out: Vec<u8> = Vec::with_capacity(512);
    let mut session = Session::new(Arc::clone(&ctx.session));
    let mut line: Vec<u8> = Vec::with_capacity(MAX_COMMAND_LINE as usize);
    if ctx.shutting_down() {
        return close_with(stream, &mut out, &reply::SHUTTING_DOWN, false);
    }
    write_reply(&mut out, &session.greeting(), false);
    flush(stream, &mut out)?;
    loop {
        let data = session.in_data();
        in_data.store(data, Ordering::SeqCst);
        if !data && ctx.shutting_down() {
            return close_with(stream, &mut out, &reply::SHUTTING_DOWN, session.enhanced());
        }
        stream.set_read_timeout(Some(if data { ctx.data_timeout } else { ctx.timeout }))?;
        let step = match session.chunk_remaining() {
            Some(remaining) => read_chunk(&mut reader, &mut session, remaining),
            None => read_line(&mut reader, &mut session, &mut line),
        };
        let action = match step {
            Ok(Some(action)) => action,
            Ok(None) => {
                // End of file: the client went away, or shutdown closed our reading side.
                if ctx.shutting_down() {
                    return close_with(stream, &mut out, &reply::SHUTTING_DOWN, session.enhanced());
                }
                if data {
                    log::info!("{peer}: disconnected inside a message; it is discarded");
                }
                return flush(stream, &mut out);
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                log::info!(
                    "{peer}: timeout{}",
                    if data { " inside a message" } else { "" }
                );
                return close_with(stream, &mut out, &reply::TIMEOUT, session.enhanced());
            }
            Err(e) => return Err(e),
        };
        match action {
            Action::Continue => {}
            Action::Reply(r) => write_reply(&mut out, &r, session.enhanced()),
            Action::Close(r) => return close_with(stream, &mut out, &r, session.enhanced()),
            Action::Deliver(envelope) => {
                let id = ctx.message_id();
                let outcome = deliver(ctx, &envelope, &id, peer);
                let r = outcome.reply(&id);
                write_reply(&mut out, &r, session.enhanced());
            }
        }
        // Before the 354 can reach the client, so shutdown never mistakes a session that is
        // about to receive a message for an idle one.
        in_data.store(session.in_data(), Ordering::SeqCst);
        // RFC 2920 §3.1: answer a pipelined group in one write, but never hold replies while
        // the next step would have to wait for the client.
        let buffered = reader.buffer();
        let next_step_waits = match session.chunk_remaining() {
            Some(remaining) => (buffered.len() as u64) < remaining,
            None => !buffered.contains(&b'\n'),
        };
        if next_step_waits {
            flush(stream, &mut out)?;
        }
    }
}

/// Reads one line (or, inside DATA, one bounded piece of a line) into the session.
/// `Ok(None)` is end of file.
fn read_line(
    reader: &mut BufReader<&TcpStream>,
    session: &mut Session,
    line: &mut Vec<u8>,
) -> io::Result<Option<Action>> {
    let data = session.in_data();
    let limit = if data { DATA_PIECE } else { MAX_COMMAND_LINE };
    line.clear();
    reader.take(limit).read_until(b'\n', line)?;
    let complete = line.last() == Some(&b'\n');
    if !complete && (line.len() as u64) < limit {
        return Ok(None);
    }
    if !complete && !data {
        discard_line(reader)?;
        return Ok(Some(session.line_too_long()));
    }
    Ok(Some(session.feed(line)))
}

/// Feeds the session what is buffered of the current BDAT chunk, reading more if needed.
fn read_chunk(
    reader: &mut BufReader<&TcpStream>,
    session: &mut Session,
    remaining: u64,
) -> io::Result<Option<Action>> {
    let available = reader.fill_buf()?;
    if available.is_empty() {
        return Ok(None);
    }
    let n = available
        .len()
        .min(usize::try_from(remaining).unwrap_or(usize::MAX));
    let action = session.feed_chunk(&available[..n]);
    reader.consume(n);
    Ok(Some(action))
}

/// Reads and drops the rest of an over-long line, in bounded pieces.
fn discard_line(reader: &mut BufReader<&TcpStream>) -> io::Result<()> {
    let mut sink = Vec::with_capacity(MAX_COMMAND_LINE as usize);
    loop {
        sink.clear();
        let n = reader.take(MAX_COMMAND_LINE).read_until(b'\n', &mut sink)?;
        if n == 0 || sink.last() == Some(&b'\n') {
            return Ok(());
        }
    }
}

fn flush(mut stream: &TcpStream, out: &mut Vec<u8>) -> io::Result<()> {
    if !out.is_empty() {
        stream.write_all(out)?;
        out.clear();
    }
    Ok(())
}

fn close_with(stream: &TcpStream, out: &mut Vec<u8>, r: &Reply, enhanced: bool) -> io::Result<()> {
    write_reply(out, r, enhanced);
    flush(stream, out)
}

/// Hands a message to the writer and waits for its outcome.
fn deliver(ctx: &Context, envelope: &Envelope, id: &str, peer: SocketAddr) -> Outcome {
    let peer_ip = peer.ip().to_string();
    let trace = Trace {
        sender: envelope.sender.as_deref(),
        helo: &envelope.helo,
        peer: &peer_ip,
        hostname: &ctx.session.hostname,
        protocol: envelope.protocol,
        id,
        time: mbox::now(),
    };
    let body: Arc<[u8]> = mbox::body(&envelope.message).into();
    let entries = envelope
        .recipients
        .iter()
        .map(|(mailbox, rcpt)| Entry {
            mailbox: mailbox.clone(),
            header: mbox::header(&trace, rcpt),
            body: Arc::clone(&body),
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
    let to: Vec<&str> = envelope
        .recipients
        .iter()
        .map(|(m, _)| m.as_str())
        .collect();
    log::info!(
        "{id}: from=<{}> to={} bytes={} {:?}",
        envelope.sender.as_deref().unwrap_or(""),
        to.join(","),
        envelope.message.len(),
        outcome
    );
    outcome
}
