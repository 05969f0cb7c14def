//! The health monitor: probes every VM's agent at a fixed interval and
//! records the answers in [`crate::health::HealthMap`].
//!
//! A probe ([`crate::agent::probe`]) is a connection and a handshake (the
//! agent's Welcome gives its version; the time it takes is the round-trip
//! time). When the agent agrees to reuse, the probe's connection is kept
//! for the VM's next probe, which is then a `heartbeat` request and its
//! answer: at 10,000 VMs, opening a socket and authenticating every 5 s
//! was most of the daemon's idle CPU. Kept connections are bounded per
//! agent endpoint ([`MAX_KEPT_PROBES_PER_AGENT`]) and in all
//! ([`MAX_KEPT_PROBES`]), and kept only when the interval is well within
//! the agent's wait for a next request.
//!
//! Each round waits for its probes (so rounds never pile up), which run
//! inside the monitor's task, at most `--max-concurrent-probes` at once.
//! When an agent answers after not answering (or while its key-value pool
//! waits for delivery), the pool is pushed to it.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use guestcomm_protocol::error_chain;
use guestcomm_protocol::limits::HANDSHAKE_TIMEOUT_MS;
use guestcomm_transport::Address;
use tracing::warn;
use uuid::Uuid;

use crate::agent::KeptProbe;
use crate::limits::{AGENT_COUNTERS_EVERY_ROUNDS, MAX_KEPT_PROBES, MAX_KEPT_PROBES_PER_AGENT};
use crate::model::VmRow;
use crate::state::State;
use crate::store::KvpDeliveryState;

/// Rounds over every VM at a fixed interval (the monitor, the time sync);
/// a round that starts late is not made up for.
pub(crate) struct Rounds {
    ticks: tokio::time::Interval,
    what: &'static str,
}

impl Rounds {
    /// Rounds every `interval`; `what` names the task in logs.
    pub(crate) fn new(interval: Duration, what: &'static str) -> Self {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Self { ticks, what }
    }

    /// Waits for the next round and lists the VMs (skipping rounds in which
    /// the database cannot be read).
    pub(crate) async fn next(&mut self, state: &State) -> Arc<Vec<VmRow>> {
        loop {
            self.ticks.tick().await;
            match state.inventory().await {
                Ok(vms) => return vms,
                Err(e) => warn!(error = %error_chain(&e), task = self.what, "cannot list VMs"),
            }
        }
    }
}

/// The probes' kept connections, by VM, and how many each agent endpoint
/// holds. A VM's slot stays while its probe runs: a heartbeat on a kept
/// connection costs two lookups by VM id, and only a connection kept anew
/// or given up touches the count of its endpoint.
struct KeptProbes {
    inner: Mutex<Kept>,
    /// Most kept per agent endpoint, and in all: 0 when none are kept.
    cap_per_agent: usize,
    cap_total: usize,
}

#[derive(Default)]
struct Kept {
    by_vm: HashMap<Uuid, Slot>,
    per_agent: HashMap<Address, usize>,
}

/// A VM's kept connection, out (`None`) while its probe runs.
struct Slot {
    endpoint: Address,
    conn: Option<KeptProbe>,
}

impl Kept {
    fn remove(&mut self, vm: Uuid) {
        let Some(slot) = self.by_vm.remove(&vm) else {
            return;
        };
        if let Some(n) = self.per_agent.get_mut(&slot.endpoint) {
            *n -= 1;
            if *n == 0 {
                self.per_agent.remove(&slot.endpoint);
            }
        }
    }
}

impl KeptProbes {
    /// The kept connections of probes every `interval`: none when the next
    /// heartbeat would not come well before the agent stops waiting for a
    /// next request (`HANDSHAKE_TIMEOUT_MS`), even in a round that starts
    /// late.
    fn for_interval(interval: Duration) -> Self {
        let keeps = interval.as_millis() * 2 <= u128::from(HANDSHAKE_TIMEOUT_MS);
        Self {
            inner: Mutex::default(),
            cap_per_agent: if keeps { MAX_KEPT_PROBES_PER_AGENT } else { 0 },
            cap_total: if keeps { MAX_KEPT_PROBES } else { 0 },
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Kept> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `vm`'s kept connection, taken out for its probe ([`KeptProbes::put`]
    /// or [`KeptProbes::release`] after it).
    fn take(&self, vm: Uuid) -> Option<KeptProbe> {
        self.lock().by_vm.get_mut(&vm)?.conn.take()
    }

    /// Whether a new connection to `endpoint` may be kept.
    fn room_for(&self, endpoint: &Address) -> bool {
        let kept = self.lock();
        kept.by_vm.len() < self.cap_total
            && kept.per_agent.get(endpoint).copied().unwrap_or(0) < self.cap_per_agent
    }

    /// Keeps `conn` for `vm`'s next probe, if there is still room (it is
    /// closed otherwise).
    fn put(&self, vm: Uuid, conn: KeptProbe) {
        let mut kept = self.lock();
        match kept.by_vm.get_mut(&vm) {
            Some(slot) if conn.is_for(&slot.endpoint) => {
                slot.conn = Some(conn);
                return;
            }
            Some(_) => kept.remove(vm),
            None => {}
        }
        let n = kept.per_agent.get(conn.endpoint()).copied().unwrap_or(0);
        if kept.by_vm.len() >= self.cap_total || n >= self.cap_per_agent {
            return;
        }
        kept.per_agent.insert(conn.endpoint().clone(), n + 1);
        let slot = Slot {
            endpoint: conn.endpoint().clone(),
            conn: Some(conn),
        };
        kept.by_vm.insert(vm, slot);
    }

    /// Gives up `vm`'s slot: its probe kept no connection, or it is not
    /// probed.
    fn release(&self, vm: Uuid) {
        self.lock().remove(vm);
    }

    /// Closes the connections of VMs not in `vms`.
    fn retain(&self, vms: &HashSet<Uuid>) {
        let mut kept = self.lock();
        let gone: Vec<Uuid> = kept
            .by_vm
            .keys()
            .filter(|id| !vms.contains(id))
            .copied()
            .collect();
        for id in gone {
            kept.remove(id);
        }
    }
}

/// Runs the monitor until the task is dropped.
pub(crate) async fn monitor(state: Arc<State>, interval: Duration, max_concurrent: usize) {
    let mut rounds = Rounds::new(interval, "health monitor");
    let mut rounds_started: u64 = 0;
    let mut previous: Option<Arc<Vec<VmRow>>> = None;
    let kept = KeptProbes::for_interval(interval);
    loop {
        let vms = rounds.next(&state).await;
        rounds_started += 1;
        let counters =
            rounds_started % AGENT_COUNTERS_EVERY_ROUNDS == 1 && state.metrics.read_recently();
        // The same inventory as last round (the configuration did not
        // change): no VM went, nothing to forget.
        if !previous.as_ref().is_some_and(|p| Arc::ptr_eq(p, &vms)) {
            let ids = vms.iter().map(|v| v.id).collect();
            state.health.retain(&ids);
            kept.retain(&ids);
            previous = Some(vms.clone());
        }
        let delivery = match state.db(|s| s.kvp_delivery_state()).await {
            Ok(delivery) => delivery,
            Err(e) => {
                warn!(error = %error_chain(&e), "cannot read the key-value state; no delivery this round");
                KvpDeliveryState::default()
            }
        };
        // A VM its hypervisor reports paused or off is not probed (and its
        // agent cannot answer on a kept connection).
        let probed = vms.iter().filter(|vm| {
            let probed = state.health.probed(vm.id);
            if !probed {
                kept.release(vm.id);
            }
            probed
        });
        // The round's probes run inside this task, at most `max_concurrent`
        // at once: no task per probe to spawn and wake across threads, and
        // each borrows its VM from the shared inventory.
        let (state, kept, delivery) = (&state, &kept, &delivery);
        futures::stream::iter(probed)
            .for_each_concurrent(max_concurrent.max(1), |vm| async move {
                probe_one(state, vm, counters, kept, delivery).await;
            })
            .await;
    }
}

/// Probes `vm` on its kept connection (or a new one), records the answer,
/// and delivers the key-value pool the agent missed.
async fn probe_one(
    state: &Arc<State>,
    vm: &VmRow,
    counters: bool,
    kept: &KeptProbes,
    delivery: &KvpDeliveryState,
) {
    let previous = kept.take(vm.id);
    let keep_new = previous.is_some() || kept.room_for(&vm.endpoint);
    let (result, conn) = crate::agent::probe(vm, counters, previous, keep_new).await;
    match conn {
        Some(conn) => kept.put(vm.id, conn),
        None => kept.release(vm.id),
    }
    let answered = result.is_ok();
    let came_back = match result {
        Ok(probed) => {
            if let Some(counters) = &probed.counters {
                state.metrics.agent_counters(&vm.name, counters);
            }
            state.health.record(vm, Ok((probed.rtt, &probed.agent)))
        }
        Err(failure) => state.health.record(vm, Err(failure)),
    };
    if answered {
        // Deliver what the agent missed.
        crate::ops::integration::push_if_needed(state, vm, came_back, delivery).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn connections_are_kept_only_when_the_agent_waits_long_enough_for_the_next_probe() {
        let shared: Address = "unix:///shared.sock".parse().unwrap();
        for (interval_ms, keeps) in [(100, true), (5_000, true), (5_001, false), (60_000, false)] {
            let kept = KeptProbes::for_interval(Duration::from_millis(interval_ms));
            assert_eq!(kept.room_for(&shared), keeps, "{interval_ms} ms");
            let vm = Uuid::new_v4();
            kept.put(vm, KeptProbe::for_test("unix:///shared.sock"));
            assert_eq!(kept.take(vm).is_some(), keeps, "{interval_ms} ms");
        }
    }

    #[tokio::test]
    async fn kept_connections_are_bounded_per_agent_and_forgotten_with_their_vm() {
        let kept = KeptProbes::for_interval(Duration::from_secs(5));
        let shared: Address = "unix:///shared.sock".parse().unwrap();
        let vms: Vec<Uuid> = (0..=MAX_KEPT_PROBES_PER_AGENT)
            .map(|_| Uuid::new_v4())
            .collect();
        for (at, vm) in vms.iter().enumerate() {
            assert_eq!(kept.room_for(&shared), at < MAX_KEPT_PROBES_PER_AGENT);
            kept.put(*vm, KeptProbe::for_test("unix:///shared.sock"));
        }
        // The one past the bound was closed, not kept.
        assert!(kept.take(vms[MAX_KEPT_PROBES_PER_AGENT]).is_none());
        let other: Address = "unix:///other.sock".parse().unwrap();
        assert!(kept.room_for(&other), "the bound is per agent");
        // Taken out for a probe: the slot stays the VM's until it is put
        // back or released.
        let first = kept.take(vms[0]).expect("kept");
        assert!(kept.take(vms[0]).is_none(), "out while its probe runs");
        assert!(!kept.room_for(&shared));
        kept.put(vms[0], first);
        assert!(kept.take(vms[0]).is_some());
        kept.release(vms[0]);
        assert!(kept.room_for(&shared));
        kept.put(vms[0], KeptProbe::for_test("unix:///shared.sock"));
        assert!(!kept.room_for(&shared));
        // A VM moved to another endpoint counts there.
        kept.put(vms[0], KeptProbe::for_test("unix:///other.sock"));
        assert!(kept.room_for(&shared));
        assert!(kept.take(vms[0]).is_some());
        // VMs that left the inventory lose theirs.
        kept.retain(&vms[2..].iter().copied().collect());
        assert!(kept.take(vms[1]).is_none());
        assert!(kept.take(vms[2]).is_some());
    }
}
