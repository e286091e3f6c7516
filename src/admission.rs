//! Who gets a session: at most so many per client address.
//!
//! It exists so that one greedy peer cannot take every worker of the fixed pool (the classic
//! weakness of a thread-per-connection server). Each accepted connection takes a [`PeerSlot`] for
//! its client address before it waits for a worker; the slot is given back when the connection
//! ends, however it ends. A peer at its limit is answered `421` at once (before any EHLO, so
//! without an enhanced code), as Postfix's
//! `smtpd_client_connection_count_limit` does. The local host's own addresses (127.0.0.1 and
//! ::1), from which test suites connect, often many at once, are never limited; other loopback
//! addresses are, so tests can play distinct peers from 127.0.0.2 and 127.0.0.3. An IPv6 peer is
//! counted by its /64 network, which a single host is commonly given whole: counted by address,
//! it could open as many sessions as it has addresses.

use std::collections::HashMap;
use std::net::{IpAddr, TcpStream};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

/// An accepted connection on its way to a worker, with its place in its peer's count.
#[derive(Debug)]
pub(crate) struct Arrival {
    /// The connection.
    pub stream: TcpStream,
    /// When it was accepted: it may wait `queue_wait` for a worker.
    pub accepted: Instant,
    /// Given back when the connection ends.
    pub slot: PeerSlot,
}

/// The per-address session counts of a server.
#[derive(Debug)]
pub(crate) struct Peers {
    limit: usize,
    counts: Mutex<HashMap<IpAddr, usize>>,
}

/// One session's place in its address's count, given back when dropped.
#[derive(Debug)]
pub(crate) struct PeerSlot {
    peers: Arc<Peers>,
    ip: IpAddr,
}

impl Peers {
    /// Counts with at most `limit` sessions per address.
    pub(crate) fn new(limit: usize) -> Arc<Peers> {
        Arc::new(Peers {
            limit,
            counts: Mutex::new(HashMap::new()),
        })
    }

    /// A slot for a connection from `ip`, or `None` when that address is at its limit. The local
    /// host's own addresses always get an uncounted slot.
    pub(crate) fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<PeerSlot> {
        let ip = ip.to_canonical();
        if is_local_host(ip) {
            return Some(PeerSlot {
                peers: Arc::clone(self),
                ip,
            });
        }
        let ip = counted_as(ip);
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        let count = counts.entry(ip).or_insert(0);
        if *count >= self.limit {
            return None;
        }
        *count += 1;
        Some(PeerSlot {
            peers: Arc::clone(self),
            ip,
        })
    }

    /// Sessions counted for `ip` now.
    #[cfg(test)]
    pub(crate) fn count(&self, ip: IpAddr) -> usize {
        let counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        counts
            .get(&counted_as(ip.to_canonical()))
            .copied()
            .unwrap_or(0)
    }
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        if is_local_host(self.ip) {
            return;
        }
        let mut counts = self
            .peers
            .counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = counts.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

/// What a (canonical) address is counted as: itself, or for IPv6 its /64 network.
fn counted_as(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => IpAddr::V6((u128::from(v6) & !u128::from(u64::MAX)).into()),
    }
}

/// 127.0.0.1 and ::1: the addresses this machine's own clients (test suites) connect from.
fn is_local_host(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.octets() == [127, 0, 0, 1],
        IpAddr::V6(v6) => v6.is_loopback(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_at_its_limit_is_refused_until_a_slot_is_given_back() {
        let peers = Peers::new(2);
        let a: IpAddr = "127.0.0.2".parse().unwrap();
        let b: IpAddr = "192.0.2.7".parse().unwrap();
        let first = peers.admit(a).unwrap();
        let _second = peers.admit(a).unwrap();
        assert!(peers.admit(a).is_none());
        // Another address is counted apart.
        let _other = peers.admit(b).unwrap();
        drop(first);
        assert_eq!(peers.count(a), 1);
        assert!(peers.admit(a).is_some());
    }

    #[test]
    fn the_local_host_is_never_limited() {
        let peers = Peers::new(1);
        let slots: Vec<PeerSlot> = ["127.0.0.1", "::1", "::ffff:127.0.0.1"]
            .iter()
            .cycle()
            .take(30)
            .map(|ip| peers.admit(ip.parse().unwrap()).expect("admitted"))
            .collect();
        assert_eq!(peers.count("127.0.0.1".parse().unwrap()), 0);
        drop(slots);
        // An IPv4-mapped address counts as its IPv4 address.
        let _slot = peers.admit("::ffff:127.0.0.9".parse().unwrap()).unwrap();
        assert!(peers.admit("127.0.0.9".parse().unwrap()).is_none());
    }

    #[test]
    fn an_ipv6_peer_is_counted_by_its_slash_64() {
        let peers = Peers::new(2);
        let _a = peers.admit("2001:db8::1".parse().unwrap()).unwrap();
        let b = peers.admit("2001:db8::ffff:2".parse().unwrap()).unwrap();
        assert!(peers.admit("2001:db8::3".parse().unwrap()).is_none());
        assert_eq!(peers.count("2001:db8::9".parse().unwrap()), 2);
        // The next /64 is another peer; a slot given back frees its network's place.
        let _c = peers.admit("2001:db8:0:1::1".parse().unwrap()).unwrap();
        drop(b);
        assert!(peers.admit("2001:db8::4".parse().unwrap()).is_some());
    }
}
