//! The health monitor: probes every VM's agent at a fixed interval.
//!
//! A probe is a connection and a handshake (the agent's Welcome gives its
//! version; the time it takes is the round-trip time). Statuses follow
//! Msvm_GuestService.Status: "No Contact" until the first answer, "OK"
//! while the agent answers, "Lost Comm" once it stops. Each round waits for
//! its probes (so rounds never pile up), and a semaphore bounds how many
//! run at once. Transitions are logged. When an agent answers after not
//! answering (or while its key-value pool waits for delivery), the pool is
//! pushed to it.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use guestcomm_api::Health;
use guestcomm_protocol::auth::Psk;
use guestcomm_protocol::handshake::error_chain;
use guestcomm_transport::Address;
use tokio::sync::Semaphore;
use tracing::{info, warn};
use uuid::Uuid;

use crate::limits::PROBE_TIMEOUT_MS;
use crate::store::VmRow;
use crate::State;

/// CIM status: the agent answers.
pub const OK: &str = "OK";
/// CIM status: the agent answered before and has stopped.
pub const LOST_COMM: &str = "Lost Comm";
/// CIM status: the agent has not answered yet.
pub const NO_CONTACT: &str = "No Contact";

/// Health by VM id.
#[derive(Default)]
pub struct HealthMap(RwLock<HashMap<Uuid, Health>>);

impl HealthMap {
    /// What is known about `vm` ("No Contact" if nothing yet).
    pub fn get(&self, vm: Uuid) -> Health {
        let map = self.0.read().unwrap_or_else(|e| e.into_inner());
        map.get(&vm).cloned().unwrap_or_else(no_contact)
    }

    /// Records a probe result and logs a change of status; true when the
    /// agent answered after not answering (or for the first time).
    pub fn record(&self, vm: &VmRow, result: Result<(Duration, String), String>) -> bool {
        let mut map = self.0.write().unwrap_or_else(|e| e.into_inner());
        let entry = map.entry(vm.id).or_insert_with(no_contact);
        let before = entry.status.clone();
        match result {
            Ok((rtt, agent)) => {
                entry.status = OK.into();
                entry.rtt_us = Some(rtt.as_micros() as u64);
                entry.agent_version = Some(agent);
                entry.last_contact_ms = Some(now_ms());
                entry.last_error = None;
            }
            Err(error) => {
                if entry.last_contact_ms.is_some() {
                    entry.status = LOST_COMM.into();
                }
                entry.last_error = Some(error);
            }
        }
        if entry.status != before {
            let error = entry.last_error.as_deref().unwrap_or("");
            if entry.status == OK {
                info!(vm = %vm.name, from = %before, to = %entry.status, "agent health changed");
            } else {
                warn!(vm = %vm.name, from = %before, to = %entry.status, error, "agent health changed");
            }
        }
        entry.status != before && entry.status == OK
    }

    /// Forgets VMs that are no longer in the inventory.
    fn retain(&self, ids: &[Uuid]) {
        let mut map = self.0.write().unwrap_or_else(|e| e.into_inner());
        map.retain(|id, _| ids.contains(id));
    }
}

fn no_contact() -> Health {
    Health {
        status: NO_CONTACT.into(),
        ..Health::default()
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Probes one VM: connect and handshake, within [`PROBE_TIMEOUT_MS`].
pub async fn probe(endpoint: &str, psk: Option<&Psk>) -> Result<(Duration, String), String> {
    let addr: Address = endpoint.parse().map_err(|e| error_chain(&e))?;
    let start = Instant::now();
    let attempt = guestcomm_client::connect_with(&addr, crate::DAEMON_NAME, psk);
    match tokio::time::timeout(Duration::from_millis(PROBE_TIMEOUT_MS), attempt).await {
        Ok(Ok(session)) => Ok((start.elapsed(), session.welcome.agent)),
        Ok(Err(e)) => Err(error_chain(&e)),
        Err(_) => Err(format!("no answer within {PROBE_TIMEOUT_MS} ms")),
    }
}

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
    pub(crate) async fn next(&mut self, state: &State) -> Vec<VmRow> {
        loop {
            self.ticks.tick().await;
            match state.db(|s| s.vms()).await {
                Ok(vms) => return vms,
                Err(e) => warn!(error = %error_chain(&e), task = self.what, "cannot list VMs"),
            }
        }
    }
}

/// Runs the monitor until the task is dropped.
pub async fn monitor(state: Arc<State>, interval: Duration, max_concurrent: usize) {
    let slots = Arc::new(Semaphore::new(max_concurrent.max(1)));
    let mut rounds = Rounds::new(interval, "health monitor");
    loop {
        let vms = rounds.next(&state).await;
        state
            .health
            .retain(&vms.iter().map(|v| v.id).collect::<Vec<_>>());
        let delivery = match state.db(|s| s.kvp_delivery_state()).await {
            Ok(delivery) => Arc::new(delivery),
            Err(e) => {
                warn!(error = %error_chain(&e), "cannot read the key-value state; no delivery this round");
                Arc::default()
            }
        };
        let mut round = tokio::task::JoinSet::new();
        for vm in vms {
            let Ok(permit) = slots.clone().acquire_owned().await else {
                return;
            };
            let state = state.clone();
            let delivery = delivery.clone();
            round.spawn(async move {
                let result = probe(&vm.endpoint, vm.psk.as_ref()).await;
                let answered = result.is_ok();
                let came_back = state.health.record(&vm, result);
                if answered {
                    // Deliver what the agent missed.
                    crate::integration::push_if_needed(&state, &vm, came_back, &delivery).await;
                }
                drop(permit);
            });
        }
        while round.join_next().await.is_some() {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Policy;

    fn vm() -> VmRow {
        VmRow {
            id: Uuid::new_v4(),
            name: "v".into(),
            endpoint: "unix:///x".into(),
            interface_enabled: true,
            default_policy: Policy::Enabled,
            created_at: 0,
            psk: None,
        }
    }

    #[test]
    fn status_goes_no_contact_ok_lost_comm_ok() {
        let map = HealthMap::default();
        let vm = vm();
        assert_eq!(map.get(vm.id).status, NO_CONTACT);
        map.record(&vm, Err("refused".into()));
        assert_eq!(map.get(vm.id).status, NO_CONTACT);
        map.record(&vm, Ok((Duration::from_micros(50), "agent 1".into())));
        let h = map.get(vm.id);
        assert_eq!((h.status.as_str(), h.rtt_us), (OK, Some(50)));
        map.record(&vm, Err("refused".into()));
        let h = map.get(vm.id);
        assert_eq!(h.status, LOST_COMM);
        assert_eq!(h.agent_version.as_deref(), Some("agent 1"));
        map.record(&vm, Ok((Duration::from_micros(60), "agent 1".into())));
        assert_eq!(map.get(vm.id).status, OK);
    }
}
