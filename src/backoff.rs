//! What an acceptor does when accept(2) fails: retry at once, or back off, and what it logs.
//!
//! It exists because a server out of descriptors (EMFILE, ENFILE) or kernel memory (ENOBUFS,
//! ENOMEM) cannot accept the connection waiting in its backlog, so accept fails again at once:
//! retrying in a loop would spin a core and write a log line per try while the sessions that
//! could free a descriptor get less CPU. An episode of such failures waits between tries, 10 ms
//! doubling to at most [`MAX_PAUSE`], and is logged twice: once when it starts, once when accept
//! works again, with the number of failed tries. Errors that belong to one connection, which
//! the kernel reports through accept (the peer reset it, a network error pending on it), are
//! retried at once: the next call takes the next connection, so nothing spins.

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// The first pause of an episode.
const FIRST_PAUSE: Duration = Duration::from_millis(10);
/// The longest pause between tries: once a descriptor is free, accept takes the next connection
/// within this, and shutdown, which the acceptor checks after each failed try, waits at most
/// this long for it.
pub(crate) const MAX_PAUSE: Duration = Duration::from_millis(500);

/// One acceptor's state between failed accepts.
#[derive(Debug)]
pub(crate) struct AcceptBackoff {
    addr: SocketAddr,
    /// The episode in progress: when it started and how many tries failed.
    episode: Option<(Instant, u64)>,
    pause: Duration,
}

impl AcceptBackoff {
    /// No episode yet, for the listener on `addr` (named in the log).
    pub(crate) fn new(addr: SocketAddr) -> AcceptBackoff {
        AcceptBackoff {
            addr,
            episode: None,
            pause: FIRST_PAUSE,
        }
    }

    /// Accept failed with `e`: how long to wait before the next try (zero: at once).
    pub(crate) fn failed(&mut self, e: &io::Error) -> Duration {
        if one_connection(e) {
            log::debug!("accept on {}: {e}; the next connection is taken", self.addr);
            return Duration::ZERO;
        }
        match &mut self.episode {
            Some((_, tries)) => {
                *tries += 1;
                self.pause = (self.pause * 2).min(MAX_PAUSE);
            }
            None => {
                let why = if exhausted(e) {
                    "out of descriptors or memory"
                } else {
                    "unexpected error"
                };
                log::warn!(
                    "accept on {} failed: {why} ({e}); waiting {} to {} ms between tries until \
                     it works again",
                    self.addr,
                    FIRST_PAUSE.as_millis(),
                    MAX_PAUSE.as_millis()
                );
                self.episode = Some((Instant::now(), 1));
                self.pause = FIRST_PAUSE;
            }
        }
        self.pause
    }

    /// Accept worked: ends the episode in progress, if any, with a log line.
    pub(crate) fn succeeded(&mut self) {
        if let Some((since, tries)) = self.episode.take() {
            log::info!(
                "accept on {} works again after {tries} failed tries in {} ms",
                self.addr,
                since.elapsed().as_millis()
            );
        }
    }
}

/// No descriptor or no kernel memory for a new socket: a condition that outlasts one try.
fn exhausted(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// An error of the connection being accepted, not of the listener: accept(2) on Linux reports
/// the peer's abort and the network errors pending on the new socket, and a firewall's refusal
/// (EPERM); a signal may interrupt it.
fn one_connection(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(
            libc::ECONNABORTED
                | libc::EINTR
                | libc::EPROTO
                | libc::EPERM
                | libc::ENETDOWN
                | libc::ENOPROTOOPT
                | libc::EHOSTDOWN
                | libc::ENONET
                | libc::EHOSTUNREACH
                | libc::EOPNOTSUPP
                | libc::ENETUNREACH
                | libc::ETIMEDOUT
        )
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(errno: i32) -> io::Error {
        io::Error::from_raw_os_error(errno)
    }

    #[test]
    fn exhaustion_backs_off_doubling_to_a_bound_then_starts_over() {
        let mut b = AcceptBackoff::new("127.0.0.1:25".parse().unwrap());
        let pauses: Vec<u128> = (0..9)
            .map(|_| b.failed(&err(libc::EMFILE)).as_millis())
            .collect();
        assert_eq!(pauses, [10, 20, 40, 80, 160, 320, 500, 500, 500]);
        assert_eq!(b.episode.map(|(_, tries)| tries), Some(9));
        b.succeeded();
        assert!(b.episode.is_none());
        // A new episode starts from the first pause.
        assert_eq!(b.failed(&err(libc::ENFILE)), FIRST_PAUSE);
    }

    #[test]
    fn an_error_of_one_connection_is_retried_at_once_and_starts_no_episode() {
        let mut b = AcceptBackoff::new("127.0.0.1:25".parse().unwrap());
        for errno in [
            libc::ECONNABORTED,
            libc::EINTR,
            libc::EPERM,
            libc::ENETUNREACH,
        ] {
            assert_eq!(b.failed(&err(errno)), Duration::ZERO);
        }
        assert!(b.episode.is_none());
        // Anything else backs off too, so that no unknown error can spin.
        assert_eq!(b.failed(&err(libc::EINVAL)), FIRST_PAUSE);
        assert!(b.episode.is_some());
    }
}
