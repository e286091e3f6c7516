//! A complete message's way from a session to the writer and back: the writer's job built from
//! the envelope (a trace header per mailbox, the log summary), handed over, its outcome awaited
//! and answered.
//!
//! It exists apart from the connection loop so each step has a frame of its own: the job's
//! formatting and the channel's send are siblings, not nested below each other, and neither is
//! in the loop's frame below every command. An idle worker that delivered before then keeps two
//! stack pages resident, not three (see `pool::WORKER_STACK`).

use std::net::SocketAddr;
use std::sync::Arc;

use crate::connection::Context;
use crate::escape::Escaped;
use crate::mbox::{self, Trace};
use crate::protocol::Protocol;
use crate::session::Envelope;
use crate::writer::ack::{self, Ack, Awaited};
use crate::writer::{Entry, Job, Outcome};

/// Hands a message to the writer, waits for its outcome and answers it.
#[inline(never)]
pub(crate) fn deliver(
    ctx: &Context,
    core: &mut Protocol,
    envelope: &Envelope,
    peer: SocketAddr,
    label: &str,
) {
    let id = &ctx.message_id();
    let (ack, awaited) = ack::pair();
    let job = job(ctx, envelope, id, peer, label, ack);
    let outcome = hand_over(ctx, job, awaited);
    core.reply(&outcome.reply(id));
}

/// Sends `job` to the writer and waits for its outcome. The writer logs it (`delivered` or
/// `message refused`) as it answers.
#[inline(never)]
fn hand_over(ctx: &Context, job: Job, awaited: Awaited) -> Outcome {
    match ctx.deliveries.send(job) {
        Ok(()) => awaited.wait(),
        Err(crossbeam_channel::SendError(job)) => {
            let failed = Outcome::Failed;
            log::info!(
                "{}: {} message refused: {}: {} (the writer has stopped)",
                job.label,
                job.id,
                failed.reply(&job.id).code_text(),
                job.summary
            );
            failed
        }
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
    let to: Vec<String> = envelope
        .recipients
        .iter()
        .map(|(m, _)| Escaped(m).to_string())
        .collect();
    let sender = Escaped(envelope.sender.as_deref().unwrap_or(""));
    let bytes = envelope.size;
    let to = to.join(",");
    // The user a successful AUTH named, never a password (none is kept past AUTH).
    let auth = envelope
        .user
        .as_deref()
        .map(|user| format!(" auth=<{}>", Escaped(user)))
        .unwrap_or_default();
    Job {
        id: id.to_string(),
        label: label.to_string(),
        summary: format!("from=<{sender}> to={to} bytes={bytes}{auth}"),
        entries,
        ack,
    }
}
