//! A complete message's way from a session to the writer and back: the writer's job built from
//! the envelope (a trace header per mailbox, the log summary), handed over, and its answer
//! settled.
//!
//! The writer sends the reply to the end of the message (250 once it is on disk) to the client
//! itself when the socket takes it at once, so a worker does not park until the commit and wake
//! again just to send it: it goes back to reading the client's next command, and settles the
//! answer (waits for it, and sends what of it the writer could not) before it writes anything
//! else, so replies stay in order.
//!
//! It exists apart from the connection loop so each step has a frame of its own: the job's
//! formatting and the channel's send are siblings, not nested below each other, and neither is
//! in the loop's frame below every command. An idle worker that delivered before then keeps two
//! stack pages resident, not three (see `pool::WORKER_STACK`).

use std::io::{self, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;

use crate::connection::Context;
use crate::escape::Escaped;
use crate::mbox::{self, Trace};
use crate::session::Envelope;
use crate::writer::ack::{self, Ack, Awaited, Direct};
use crate::writer::{self, Entry, Job, Outcome};

/// A message handed to the writer whose answer the session has not settled yet.
#[derive(Debug)]
pub(crate) struct Pending {
    /// `None` once settled.
    awaited: Option<Awaited>,
    /// Where the part of the reply the writer did not send goes.
    stream: Arc<TcpStream>,
}

impl Pending {
    /// A handle that watches for the writer's answer without waiting for it.
    pub(crate) fn watch(&self) -> Option<Awaited> {
        self.awaited.clone()
    }

    /// Waits for the writer's answer and sends the part of its reply the writer did not send.
    pub(crate) fn settle(mut self) -> io::Result<()> {
        self.finish()
    }

    fn finish(&mut self) -> io::Result<()> {
        match self.awaited.take() {
            Some(awaited) => (&*self.stream).write_all(&awaited.settle().unsent),
            None => Ok(()),
        }
    }
}

impl Drop for Pending {
    /// A session that ends without settling (its client went away, or it failed) still settles:
    /// it waits for the writer to be done with its message and tries to send the rest of the
    /// reply (within the socket's write timeout), so what the session's end writes (a 421 after
    /// a panic) never comes before the reply, or in the middle of it.
    fn drop(&mut self) {
        let _ = self.finish();
    }
}

/// Hands a message to the writer (waiting only if the writer's queue is full) and returns; the writer answers the client itself
/// where it can (see the module comment). `enhanced`: the reply carries enhanced status codes.
#[inline(never)]
pub(crate) fn deliver(
    ctx: &Context,
    stream: &Arc<TcpStream>,
    enhanced: bool,
    envelope: &Envelope,
    peer: SocketAddr,
    label: &str,
) -> Pending {
    let id = ctx.message_id();
    let direct = Direct {
        stream: Arc::clone(stream),
        id: id.clone(),
        enhanced,
        patience: ctx.timeout,
    };
    let (ack, awaited) = ack::pair(Some(direct));
    let job = job(ctx, envelope, &id, peer, label, ack);
    hand_over(ctx, job);
    Pending {
        awaited: Some(awaited),
        stream: Arc::clone(stream),
    }
}

/// Sends `job` to the writer, which logs it (`delivered` or `message refused`) as it answers.
/// If the writer has stopped, the job is dropped here, which answers it 451.
#[inline(never)]
fn hand_over(ctx: &Context, job: Job) {
    if let Err(crossbeam_channel::SendError(job)) = ctx.deliveries.send(job) {
        let why = " (the writer has stopped)";
        writer::log_refused(&job.label, &job.id, Outcome::Failed, &job.summary, why);
    }
}

/// `ip` as an address literal (RFC 5321 §4.1.3), as the TCP-info of a `Received:` field's from
/// clause is written (§4.4).
fn address_literal(ip: std::net::IpAddr) -> String {
    match ip {
        std::net::IpAddr::V4(ip) => format!("[{ip}]"),
        std::net::IpAddr::V6(ip) => format!("[IPv6:{ip}]"),
    }
}

/// The writer's job for a message: an entry per mailbox, each with its trace header.
#[inline(never)]
fn job(
    ctx: &Context,
    envelope: &Envelope,
    id: &str,
    peer: SocketAddr,
    label: &str,
    ack: Ack,
) -> Job {
    let peer_ip = address_literal(peer.ip());
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
    Job {
        id: id.to_string(),
        label: label.to_string(),
        summary: summary(envelope),
        entries,
        ack,
    }
}

/// The log's account of a message: `from=<...> to=<...>,<...> bytes=N`, and ` auth=<...>` when
/// a successful AUTH named a user (never a password: none is kept past AUTH).
fn summary(envelope: &Envelope) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(64);
    // Formatting into a String cannot fail.
    let sender = Escaped(envelope.sender.as_deref().unwrap_or(""));
    let _ = write!(out, "from=<{sender}> to=");
    for (i, (mailbox, _)) in envelope.recipients.iter().enumerate() {
        let comma = if i == 0 { "" } else { "," };
        let _ = write!(out, "{comma}<{}>", Escaped(mailbox));
    }
    let _ = write!(out, " bytes={}", envelope.size);
    if let Some(user) = &envelope.user {
        let _ = write!(out, " auth=<{}>", Escaped(user));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::writer::ack::tests::{connected, fill};
    use std::io::Read;
    use std::thread;

    #[test]
    fn the_peer_is_written_as_an_address_literal() {
        assert_eq!(address_literal("192.0.2.1".parse().unwrap()), "[192.0.2.1]");
        assert_eq!(address_literal("::1".parse().unwrap()), "[IPv6:::1]");
        assert_eq!(
            address_literal("2001:db8::7".parse().unwrap()),
            "[IPv6:2001:db8::7]"
        );
    }

    /// What the client reads until the server's end is closed.
    fn drain(mut client: TcpStream) -> thread::JoinHandle<Vec<u8>> {
        thread::spawn(move || {
            let mut all = Vec::new();
            client
                .read_to_end(&mut all)
                .expect("the server closed within 5 s");
            all
        })
    }

    fn pending(stream: &Arc<TcpStream>) -> (Ack, Pending) {
        let direct = Direct {
            stream: Arc::clone(stream),
            id: "5f.2".into(),
            enhanced: false,
            patience: std::time::Duration::from_secs(5),
        };
        let (ack, awaited) = ack::pair(Some(direct));
        let pending = Pending {
            awaited: Some(awaited),
            stream: Arc::clone(stream),
        };
        (ack, pending)
    }

    #[test]
    fn the_summary_names_every_mailbox_and_escapes_what_a_client_sent() {
        let mut envelope = Envelope {
            sender: Some("a>b@x.test".into()),
            recipients: vec![
                ("jones".into(), "jones@x".into()),
                ("ro\u{202e}ot".into(), "r@x".into()),
            ],
            body: Arc::new(crate::mbox::Body::stored(b"hi\n")),
            size: 19,
            helo: "x".into(),
            protocol: crate::session::Protocol::Esmtp,
            user: None,
        };
        assert_eq!(
            summary(&envelope),
            "from=<a\\u{003e}b@x.test> to=<jones>,<ro\\u{202e}ot> bytes=19"
        );
        envelope.sender = None;
        envelope.recipients.truncate(1);
        envelope.user = Some("u<".into());
        assert_eq!(
            summary(&envelope),
            "from=<> to=<jones> bytes=19 auth=<u\\u{003c}>"
        );
    }

    #[test]
    fn the_worker_sends_what_the_writer_could_not_exactly_once() {
        let (server, client) = connected();
        let filled = fill(&server);
        let (ack, pending) = pending(&server);
        // Not tried again: the worker takes it over.
        let late = ack.send(Outcome::Delivered).expect("the reply did not fit");
        let reader = drain(client);
        // As in a session, a watching clone outlives the settle, so the slot does too, and the
        // retry below sees that the reply was taken over (not a slot already gone).
        let watch = pending.watch();
        pending.settle().unwrap();
        assert!(late.retry(), "taken over");
        drop((late, watch, server));
        let all = reader.join().unwrap();
        assert_eq!(all.len(), filled + b"250 OK: delivered as 5f.2\r\n".len());
        assert!(all.ends_with(b"x250 OK: delivered as 5f.2\r\n"));
    }

    #[test]
    fn a_reply_the_writer_sent_is_not_sent_again() {
        let (server, client) = connected();
        let (ack, pending) = pending(&server);
        ack.send(Outcome::Failed);
        pending.settle().unwrap();
        drop(server);
        let all = drain(client).join().unwrap();
        assert_eq!(
            all,
            b"451 Requested action aborted: local error in processing\r\n"
        );
    }

    #[test]
    fn a_dropped_pending_answer_waits_for_the_writer() {
        let (server, _client) = connected();
        let (ack, pending) = pending(&server);
        let watch = pending.watch().unwrap();
        // The writer answers late; a drop that did not wait would return long before.
        let writer = thread::spawn(move || {
            thread::sleep(std::time::Duration::from_millis(100));
            ack.send(Outcome::Delivered)
        });
        drop(pending);
        assert!(watch.answered_at().is_some());
        writer.join().unwrap();
    }

    /// After a panic, the session's end writes a 421: the rest of the 250 must come first. And
    /// the writer's [`ack::Late`] does not keep the socket open once the session is done with it.
    #[test]
    fn a_dropped_pending_answer_sends_what_the_writer_could_not() {
        let (server, client) = connected();
        let filled = fill(&server);
        let (ack, pending) = pending(&server);
        let late = ack.send(Outcome::Delivered).expect("the reply did not fit");
        let reader = drain(client);
        drop(pending);
        (&*server).write_all(b"421 after\r\n").unwrap();
        drop(server);
        // The client sees the close while the writer still holds `late`.
        let all = reader.join().unwrap();
        assert!(late.retry(), "nothing left for the writer");
        assert!(
            all.ends_with(b"x250 OK: delivered as 5f.2\r\n421 after\r\n"),
            "{:?}",
            String::from_utf8_lossy(all.get(filled.saturating_sub(10)..).unwrap_or_default())
        );
    }
}
