//! Postfix's own load generator, `smtp-source`, as a second opinion on the cases: the same
//! sessions, message counts and sizes, sent by a program this repository did not write, against
//! mboxd and smtp-sink alternately, each whole run timed.
//!
//! It exists because a generator written alongside the server could share its blind spots;
//! `smtp-source` also sends without pipelining (it has none), one command per round trip.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use std::net::SocketAddr;

/// One `smtp-source` run: what it was asked to send.
#[derive(Clone, Debug)]
pub struct SourceRun {
    /// Parallel sessions (`-s`), each sending over one connection (`-d`).
    pub sessions: usize,
    /// Messages in total (`-m`).
    pub messages: usize,
    /// Octets of body (`-l`); smtp-source adds its own headers (From, To, Date, Message-Id).
    pub size: usize,
    /// Local part of the one recipient, at `localhost` (`-t`).
    pub user: String,
    /// Longest the whole run may take before smtp-source is killed and the run fails.
    pub timeout: Duration,
}

/// Runs `binary -d -s N -m M -l SIZE -f bench@localhost -t USER@localhost 127.0.0.1:PORT` and
/// returns how long it took, from the spawn to its exit. A non-zero exit status (smtp-source
/// stops at the first reply that is not the expected one) or the timeout fails the run.
pub fn run_source(binary: &Path, addr: SocketAddr, run: &SourceRun) -> Result<Duration, String> {
    let start = Instant::now();
    let child = Command::new(binary)
        .args(["-d", "-s", &run.sessions.to_string()])
        .args(["-m", &run.messages.to_string()])
        .args(["-l", &run.size.to_string()])
        .args(["-f", "bench@localhost"])
        .args(["-t", &format!("{}@localhost", run.user)])
        .arg(addr.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    let waiter = thread::Builder::new()
        .name("bench-smtp-source".into())
        .spawn(move || {
            let out = child.wait_with_output();
            let _ = tx.send((out, Instant::now()));
        })
        .map_err(|e| format!("cannot start a thread: {e}"))?;
    let (out, end) = match rx.recv_timeout(run.timeout) {
        Ok(done) => done,
        Err(_) => {
            // Ends the one process this function started, by its id; the waiter then reaps it.
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            let _ = waiter.join();
            return Err(format!(
                "smtp-source did not finish within {} s (killed)",
                run.timeout.as_secs()
            ));
        }
    };
    let _ = waiter.join();
    let out = out.map_err(|e| format!("waiting for smtp-source: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "smtp-source failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(end.duration_since(start))
}

/// How many messages `dir/user` holds; a missing mailbox is an error.
pub fn count_mbox(dir: &Path, user: &str) -> Result<usize, String> {
    Ok(super::open_mbox(&dir.join(user))?.messages().len())
}

/// Runs `run` against mboxd and checks that `mail_dir/USER` then holds exactly `run.messages`
/// messages (the user must be new to this run). Returns msg/s.
pub fn run_checked(
    binary: &Path,
    addr: SocketAddr,
    mail_dir: &Path,
    run: &SourceRun,
) -> Result<f64, String> {
    let elapsed = run_source(binary, addr, run)?;
    let stored = count_mbox(mail_dir, &run.user)?;
    if stored != run.messages {
        return Err(format!(
            "mbox check FAILED: {}: {stored} messages, smtp-source sent {}",
            mail_dir.join(&run.user).display(),
            run.messages
        ));
    }
    Ok(run.messages as f64 / elapsed.as_secs_f64())
}
