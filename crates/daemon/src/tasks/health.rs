//! The health monitor: probes every VM's agent at a fixed interval and
//! records the answers in [`crate::health::HealthMap`].
//!
//! A probe ([`crate::agent::probe`]) is a connection and a handshake (the
//! agent's Welcome gives its version; the time it takes is the round-trip
//! time). Each round waits for its probes (so rounds never pile up), and a
//! semaphore bounds how many run at once. When an agent answers after not answering (or while its
//! key-value pool waits for delivery), the pool is pushed to it.

use std::sync::Arc;
use std::time::Duration;

use guestcomm_protocol::error_chain;
use tokio::sync::Semaphore;
use tracing::warn;

use crate::limits::AGENT_COUNTERS_EVERY_ROUNDS;
use crate::model::VmRow;
use crate::state::State;

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

/// Runs the monitor until the task is dropped.
pub(crate) async fn monitor(state: Arc<State>, interval: Duration, max_concurrent: usize) {
    let slots = Arc::new(Semaphore::new(max_concurrent.max(1)));
    let mut rounds = Rounds::new(interval, "health monitor");
    let mut rounds_started: u64 = 0;
    let mut previous: Option<Arc<Vec<VmRow>>> = None;
    loop {
        let vms = rounds.next(&state).await;
        rounds_started += 1;
        let counters =
            rounds_started % AGENT_COUNTERS_EVERY_ROUNDS == 1 && state.metrics.read_recently();
        // The same inventory as last round (the configuration did not
        // change): no VM went, nothing to forget.
        if !previous.as_ref().is_some_and(|p| Arc::ptr_eq(p, &vms)) {
            state.health.retain(&vms.iter().map(|v| v.id).collect());
            previous = Some(vms.clone());
        }
        let delivery = match state.db(|s| s.kvp_delivery_state()).await {
            Ok(delivery) => Arc::new(delivery),
            Err(e) => {
                warn!(error = %error_chain(&e), "cannot read the key-value state; no delivery this round");
                Arc::default()
            }
        };
        let mut round = tokio::task::JoinSet::new();
        // A VM its hypervisor reports paused or off is not probed.
        for (at, vm) in vms.iter().enumerate() {
            if !state.health.probed(vm.id) {
                continue;
            }
            let Ok(permit) = slots.clone().acquire_owned().await else {
                return;
            };
            // Finished probes are reaped as the round goes, so the set holds
            // about as many tasks as run at once, not one per VM.
            while round.try_join_next().is_some() {}
            let state = state.clone();
            let delivery = delivery.clone();
            // The task borrows its VM from the shared inventory: no copy of
            // each row every heartbeat.
            let vms = vms.clone();
            round.spawn(async move {
                let vm = &vms[at];
                let result = crate::agent::probe(&vm.endpoint, vm.psk.as_ref(), counters)
                    .await
                    .map(|probed| {
                        if let Some(counters) = &probed.counters {
                            state.metrics.agent_counters(&vm.name, counters);
                        }
                        (probed.rtt, probed.agent)
                    });
                let answered = result.is_ok();
                let came_back = state.health.record(vm, result);
                if answered {
                    // Deliver what the agent missed.
                    crate::ops::integration::push_if_needed(&state, vm, came_back, &delivery).await;
                }
                drop(permit);
            });
        }
        while round.join_next().await.is_some() {}
    }
}
