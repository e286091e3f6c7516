//! A session's socket, read against deadlines. [`ReadTimer`] reads with a deadline while changing
//! the socket's read timeout as rarely as it can (a `setsockopt` per line was once most of a
//! session's system calls), and [`Late`] says which deadline a client missed. [`linger`] closes a
//! session so that its client sees the last replies. [`write_within`] writes a reply within the
//! timeout in total. [`refuse`] answers a connection that will not be served.

use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

use crate::reply::{self, Reply};

/// How long a session the server closes waits for its client to close in turn (see [`linger`]).
const LINGER: Duration = Duration::from_secs(1);

/// At most this much of what a client sends after the server closed its session is read (and
/// thrown away) while lingering.
const LINGER_BYTES: usize = 1 << 20;

/// Which deadline a client missed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Late {
    /// A whole command line within `--timeout`.
    Command,
    /// Something inside a message within `--data-timeout`.
    Data,
    /// A message's average of `--min-data-rate`.
    Rate,
}

impl Late {
    /// The 421 that closes the session, and what the log says.
    pub(crate) fn reply(self) -> (Reply, &'static str) {
        match self {
            Late::Command => (reply::TIMEOUT, "no whole command within the timeout"),
            Late::Data => (reply::TIMEOUT, "timeout inside a message"),
            Late::Rate => (reply::TOO_SLOW, "message data below the minimum rate"),
        }
    }
}

/// A socket's read timeout, changed as rarely as possible: reads wait for a deadline, and the
/// timeout is lowered only when it would overshoot the deadline by more than an eighth, and
/// raised back (to at most the base) only when a read woke long before its deadline.
pub(crate) struct ReadTimer {
    base: Duration,
    setting: Duration,
}

impl ReadTimer {
    pub(crate) fn new(stream: &TcpStream, base: Duration) -> io::Result<ReadTimer> {
        stream.set_read_timeout(Some(base))?;
        Ok(ReadTimer {
            base,
            setting: base,
        })
    }

    /// Reads into `buf`; a `TimedOut` error once `deadline` passes with nothing read.
    pub(crate) fn read(
        &mut self,
        mut stream: &TcpStream,
        buf: &mut [u8],
        deadline: Instant,
    ) -> io::Result<usize> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::Error::from(ErrorKind::TimedOut));
            }
            if self.setting > left + left / 8 {
                self.set(stream, left)?;
            }
            match stream.read(buf) {
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if self.setting < self.base && left > self.setting * 2 {
                        self.set(stream, left.min(self.base))?;
                    }
                }
                other => return other,
            }
        }
    }

    fn set(&mut self, stream: &TcpStream, timeout: Duration) -> io::Result<()> {
        stream.set_read_timeout(Some(timeout))?;
        self.setting = timeout;
        Ok(())
    }
}

/// Writes all of `buf` within the socket's write timeout in total. The timeout bounds each
/// `write(2)`, and one that sent part of `buf` before it expired starts the next with the whole
/// timeout again: a client that reads a little now and then could hold a worker for many
/// timeouts on one reply. So once a write is partial (rare: a reply group fits the socket's
/// buffer), each further one gets only what is left of the timeout since the first began, and
/// the timeout is put back after. A `TimedOut` error once it has passed.
pub(crate) fn write_within(mut stream: &TcpStream, mut buf: &[u8]) -> io::Result<()> {
    let started = Instant::now();
    let mut limit = None;
    let result = loop {
        match stream.write(buf) {
            Ok(n) if n == buf.len() => break Ok(()),
            Ok(0) => break Err(io::Error::from(ErrorKind::WriteZero)),
            Ok(n) => buf = buf.get(n..).unwrap_or_default(),
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => break Err(e),
        }
        let standing = match limit {
            Some(standing) => standing,
            None => match stream.write_timeout() {
                Ok(Some(standing)) => *limit.insert(standing),
                // No timeout to keep to: write on as `write_all` would.
                Ok(None) => continue,
                Err(e) => break Err(e),
            },
        };
        let left = (started + standing).saturating_duration_since(Instant::now());
        if left.is_zero() {
            break Err(io::Error::from(ErrorKind::TimedOut));
        }
        if let Err(e) = stream.set_write_timeout(Some(left)) {
            break Err(e);
        }
    };
    if let Some(standing) = limit {
        let _ = stream.set_write_timeout(Some(standing));
    }
    result
}

/// Ends a session the server closes (after a 421, or the 221 to QUIT): shuts the sending side,
/// so the client reads the replies and then the end of file, and reads and throws away what the
/// client still sends until it closes too, for at most [`LINGER`] and [`LINGER_BYTES`].
///
/// Without this, a client that pipelined commands behind the one that closed the session (RFC
/// 2920 allows whole groups) lost the last replies: closing a socket whose unread input is not
/// empty, or that receives more input, makes the kernel send a reset instead of a FIN (RFC 1122
/// §4.2.2.13), and a reset makes the client's next read fail even with the replies waiting. RFC
/// 5321 §3.8 wants the client to see the 421. Not done when the client closed first: its end of
/// file has come, and a message's 250 may still be on its way from the writer.
#[inline(never)]
pub(crate) fn linger(stream: &TcpStream) {
    if stream.shutdown(Shutdown::Write).is_err() {
        return;
    }
    let deadline = Instant::now() + LINGER;
    let Ok(mut timer) = ReadTimer::new(stream, LINGER) else {
        return;
    };
    let mut buf = [0u8; 1024];
    let mut left = LINGER_BYTES;
    while left > 0 {
        match timer.read(stream, &mut buf, deadline) {
            Ok(0) | Err(_) => return,
            Ok(n) => left = left.saturating_sub(n),
        }
    }
}

/// How long a refusal (421) may take to write.
const REFUSAL_WRITE_TIMEOUT: Duration = Duration::from_millis(200);

/// Answers a connection that will not be served with `r` (RFC 5321 §3.8: a server that closes
/// says 421 first), without an enhanced code, as before a greeting; the caller then drops it.
/// The write may take [`REFUSAL_WRITE_TIMEOUT`], and its failure is nobody's to hear of.
pub(crate) fn refuse(stream: &TcpStream, r: &Reply) {
    let mut out = Vec::new();
    reply::write_reply(&mut out, r, false);
    let _ = stream.set_write_timeout(Some(REFUSAL_WRITE_TIMEOUT));
    let _ = (&*stream).write_all(&out);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_missed_deadline_has_its_own_reply_and_log_words() {
        // The log named a rate cut a plain timeout when this was told by comparing addresses.
        assert_eq!(Late::Rate.reply().0, reply::TOO_SLOW);
        assert_eq!(Late::Rate.reply().1, "message data below the minimum rate");
        assert_eq!(
            Late::Data.reply(),
            (reply::TIMEOUT, "timeout inside a message")
        );
        assert_eq!(Late::Command.reply().0, reply::TIMEOUT);
    }
}
