//! Budgets of connections that have not proved anything yet: who gets a
//! place, and whose place goes when the budget is full.
//!
//! ```text
//! admit(peer) -> peer at its own cap?   evict that peer's oldest
//!             -> budget full?           evict the oldest of the peer that
//!                                       holds the most places
//!             -> a Ticket (its place, until dropped or evicted)
//! ```
//!
//! A newcomer is never refused: a place is taken from whoever holds the
//! most, so a flood of silent connections from one peer only ever evicts
//! its own, and a client that finishes its handshake in milliseconds gets
//! through while the flood holds nothing for long. [`Admission::try_admit`]
//! is the refusing kind, for connections that have proved who they are
//! (the per-user and per-address caps of an HTTP API): a peer at its cap is
//! refused, and only peers not `exempt` count against the total.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::oneshot;

/// A budget of places, `per_peer` at most for any one peer and `total` in all.
#[derive(Debug)]
pub struct Admission<K> {
    inner: Arc<Mutex<Places<K>>>,
    per_peer: usize,
    total: usize,
}

impl<K> Clone for Admission<K> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            per_peer: self.per_peer,
            total: self.total,
        }
    }
}

#[derive(Debug)]
struct Place<K> {
    peer: K,
    counted: bool,
    /// Tells the holder its place is gone.
    evict: oneshot::Sender<()>,
}

#[derive(Debug)]
struct Places<K> {
    next_id: u64,
    /// By age: the smallest id is the oldest place.
    held: BTreeMap<u64, Place<K>>,
    per_peer: HashMap<K, usize>,
    /// Places that count against the total.
    counted: usize,
}

impl<K: Eq + Hash + Clone> Places<K> {
    /// Frees place `id` and tells its holder.
    fn evict(&mut self, id: u64) {
        if let Some(place) = self.remove(id) {
            // The holder may be gone already (its ticket being dropped).
            let _ = place.evict.send(());
        }
    }

    fn remove(&mut self, id: u64) -> Option<Place<K>> {
        let place = self.held.remove(&id)?;
        if place.counted {
            self.counted -= 1;
        }
        if let Some(n) = self.per_peer.get_mut(&place.peer) {
            *n -= 1;
            if *n == 0 {
                self.per_peer.remove(&place.peer);
            }
        }
        Some(place)
    }

    fn oldest_of(&self, peer: &K) -> Option<u64> {
        self.held
            .iter()
            .find(|(_, p)| &p.peer == peer)
            .map(|(id, _)| *id)
    }

    /// The oldest place of the peer holding the most counted places.
    fn oldest_of_heaviest(&self) -> Option<u64> {
        let heaviest = self
            .held
            .values()
            .filter(|p| p.counted)
            .map(|p| (self.per_peer.get(&p.peer).copied().unwrap_or(0), &p.peer))
            .max_by_key(|(n, _)| *n)?
            .1;
        self.oldest_of(heaviest)
    }

    fn insert(&mut self, peer: K, counted: bool) -> (u64, oneshot::Receiver<()>) {
        let (evict, evicted) = oneshot::channel();
        let id = self.next_id;
        self.next_id += 1;
        *self.per_peer.entry(peer.clone()).or_default() += 1;
        if counted {
            self.counted += 1;
        }
        self.held.insert(
            id,
            Place {
                peer,
                counted,
                evict,
            },
        );
        (id, evicted)
    }
}

/// One admitted connection's place; dropping it frees the place.
#[derive(Debug)]
pub struct Ticket<K: Eq + Hash + Clone> {
    id: u64,
    evicted: oneshot::Receiver<()>,
    places: Arc<Mutex<Places<K>>>,
}

impl<K: Eq + Hash + Clone> Ticket<K> {
    /// Resolves when a newcomer took this place ([`Admission::admit`]).
    pub async fn evicted(&mut self) {
        let _ = (&mut self.evicted).await;
    }
}

impl<K: Eq + Hash + Clone> Drop for Ticket<K> {
    fn drop(&mut self) {
        lock(&self.places).remove(self.id);
    }
}

fn lock<K>(places: &Mutex<Places<K>>) -> MutexGuard<'_, Places<K>> {
    places.lock().unwrap_or_else(|e| e.into_inner())
}

impl<K: Eq + Hash + Clone> Admission<K> {
    /// A budget of `total` places, at most `per_peer` for one peer (both
    /// at least 1).
    pub fn new(per_peer: usize, total: usize) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Places {
                next_id: 0,
                held: BTreeMap::new(),
                per_peer: HashMap::new(),
                counted: 0,
            })),
            per_peer: per_peer.max(1),
            total: total.max(1),
        }
    }

    /// Admits a connection of `peer`, evicting another when the budget is
    /// full (see the module doc): always succeeds.
    pub fn admit(&self, peer: K) -> Ticket<K> {
        let mut places = lock(&self.inner);
        let own = places.per_peer.get(&peer).copied().unwrap_or(0);
        let victim = if own >= self.per_peer {
            places.oldest_of(&peer)
        } else if places.counted >= self.total {
            places.oldest_of_heaviest()
        } else {
            None
        };
        if let Some(id) = victim {
            places.evict(id);
        }
        let (id, evicted) = places.insert(peer, true);
        drop(places);
        Ticket {
            id,
            evicted,
            places: self.inner.clone(),
        }
    }

    /// Admits a connection of `peer` if it is below its cap and, unless
    /// `exempt`, the total is not reached; never evicts.
    pub fn try_admit(&self, peer: K, exempt: bool) -> Option<Ticket<K>> {
        let mut places = lock(&self.inner);
        let own = places.per_peer.get(&peer).copied().unwrap_or(0);
        if own >= self.per_peer || (!exempt && places.counted >= self.total) {
            return None;
        }
        let (id, evicted) = places.insert(peer, !exempt);
        drop(places);
        Some(Ticket {
            id,
            evicted,
            places: self.inner.clone(),
        })
    }

    /// Places held now (tests, logs).
    pub fn held(&self) -> usize {
        lock(&self.inner).held.len()
    }
}

/// The peer a TCP address counts as: the whole loopback range (127.0.0.0/8
/// and ::1) is one peer, since any local user can connect from any of its
/// 16 million addresses; an IPv6 address counts by its /64 (what one host
/// is usually given); an IPv4 address (IPv4-mapped too) by itself.
pub fn address_peer(ip: IpAddr) -> IpAddr {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    match ip {
        ip if ip.is_loopback() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(Ipv6Addr::from(prefix))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_evicted<K: Eq + Hash + Clone>(ticket: &mut Ticket<K>) -> bool {
        !matches!(
            ticket.evicted.try_recv(),
            Err(oneshot::error::TryRecvError::Empty)
        )
    }

    #[test]
    fn a_peer_at_its_cap_evicts_its_own_oldest() {
        let budget = Admission::new(2, 10);
        let mut a1 = budget.admit("a");
        let mut a2 = budget.admit("a");
        let mut b = budget.admit("b");
        let mut a3 = budget.admit("a");
        assert!(is_evicted(&mut a1));
        assert!(!is_evicted(&mut a2));
        assert!(!is_evicted(&mut a3));
        assert!(!is_evicted(&mut b));
        assert_eq!(budget.held(), 3);
    }

    #[test]
    fn a_full_budget_evicts_from_the_heaviest_peer() {
        let budget = Admission::new(3, 4);
        let mut b = budget.admit("b");
        let mut a: Vec<_> = (0..3).map(|_| budget.admit("a")).collect();
        let mut c = budget.admit("c");
        assert!(is_evicted(&mut a[0]), "the flood's oldest goes");
        assert!(!is_evicted(&mut b), "the lone older peer stays");
        assert!(!is_evicted(&mut c));
        assert_eq!(budget.held(), 4);
    }

    #[test]
    fn dropped_tickets_free_their_places() {
        let budget = Admission::new(1, 1);
        let first = budget.try_admit("a", false);
        assert!(first.is_some());
        assert!(budget.try_admit("a", false).is_none());
        assert!(budget.try_admit("b", false).is_none(), "total reached");
        assert!(budget.try_admit("root", true).is_some(), "exempt");
        drop(first);
        assert!(budget.try_admit("b", false).is_some());
    }

    #[test]
    fn loopback_addresses_are_one_peer_and_ipv6_counts_by_its_64() {
        let peer = |s: &str| address_peer(s.parse().unwrap());
        assert_eq!(peer("127.0.0.9"), peer("127.1.2.3"));
        assert_eq!(peer("::1"), peer("127.0.0.1"));
        assert_eq!(peer("::ffff:10.0.0.1"), peer("10.0.0.1"));
        assert_ne!(peer("10.0.0.1"), peer("10.0.0.2"));
        assert_eq!(peer("2001:db8::1"), peer("2001:db8::ffff:1"));
        assert_ne!(peer("2001:db8::1"), peer("2001:db8:0:1::1"));
    }
}
