//! The agent's own counters, answered to `heartbeat` (the daemon's health
//! probe asks for them and exports them as Prometheus metrics): relaxed
//! atomic adds where connections are accepted, handshakes refused,
//! requests dispatched or refused and files copied; nothing else is
//! counted, and nothing here allocates but the answer.

use std::sync::atomic::{AtomicU64, Ordering};

use guestcomm_protocol::integration::AgentCounters;
use guestcomm_protocol::BuiltinService;

/// One counter per built-in service, in [`BuiltinService::ALL`]'s order.
const SERVICES: usize = BuiltinService::ALL.len();

struct Counters {
    connections: AtomicU64,
    auth_failures: AtomicU64,
    requests: [AtomicU64; SERVICES],
    refused: AtomicU64,
    copied_to_guest: AtomicU64,
    copied_from_guest: AtomicU64,
}

static COUNTERS: Counters = Counters {
    connections: AtomicU64::new(0),
    auth_failures: AtomicU64::new(0),
    requests: [const { AtomicU64::new(0) }; SERVICES],
    refused: AtomicU64::new(0),
    copied_to_guest: AtomicU64::new(0),
    copied_from_guest: AtomicU64::new(0),
};

fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

/// A connection was accepted.
pub(crate) fn connection() {
    add(&COUNTERS.connections, 1);
}

/// A handshake was refused for its authentication.
pub(crate) fn auth_failure() {
    add(&COUNTERS.auth_failures, 1);
}

/// A request went to `service`.
pub(crate) fn request(service: BuiltinService) {
    if let Some(i) = BuiltinService::ALL.iter().position(|s| *s == service) {
        add(&COUNTERS.requests[i], 1);
    }
}

/// A request was refused before any service ran it.
pub(crate) fn refused() {
    add(&COUNTERS.refused, 1);
}

/// `bytes` of files were copied into (`to_guest`) or out of the guest.
pub(crate) fn copied(to_guest: bool, bytes: u64) {
    let counter = if to_guest {
        &COUNTERS.copied_to_guest
    } else {
        &COUNTERS.copied_from_guest
    };
    add(counter, bytes);
}

/// Every counter now.
pub(crate) fn snapshot() -> AgentCounters {
    let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
    AgentCounters {
        connections: load(&COUNTERS.connections),
        auth_failures: load(&COUNTERS.auth_failures),
        requests: BuiltinService::ALL
            .iter()
            .zip(&COUNTERS.requests)
            .map(|(s, c)| (s.name().to_string(), load(c)))
            .filter(|(_, n)| *n > 0)
            .collect(),
        refused: load(&COUNTERS.refused),
        copied_to_guest_bytes: load(&COUNTERS.copied_to_guest),
        copied_from_guest_bytes: load(&COUNTERS.copied_from_guest),
    }
}
