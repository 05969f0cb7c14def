//! What is known of each VM's agent: its Msvm_GuestService.Status and the
//! details of the last probe, as the health monitor (`tasks::health`)
//! records them.
//!
//! Statuses: "No Contact" until the first answer, "OK" while the agent
//! answers, "Lost Comm" once it stops; but "No Contact" again while the
//! guest does not answer at all (connected, no handshake in time: a paused
//! or hung VM, which Hyper-V's heartbeat shows as No Contact too). Each
//! failure is classed ([`HealthDetail`]) by where on the path to the agent
//! it happened. Transitions are logged.
//!
//! A VM whose hypervisor reports its power state (`--libvirt`) is "Paused"
//! or "Off" while it is, whatever the last probe said, and is not probed
//! ([`HealthMap::probed`]); a start begins again at "No Contact". Beside
//! it, whether such a VM's domain carries its key ([`DomainKeys`]).

use std::collections::{HashMap, HashSet};
use std::sync::RwLock;
use std::time::Duration;

use guestcomm_api::{DomainKey, Health, HealthDetail, HealthStatus};
use tracing::{info, warn};
use uuid::Uuid;

use crate::clock::now_ms;
use crate::model::VmRow;

/// Health by VM id, and the power state of the VMs whose hypervisor
/// reports it.
#[derive(Default)]
pub(crate) struct HealthMap(RwLock<HashMap<Uuid, Health>>, RwLock<HashMap<Uuid, Power>>);

/// A VM's power state, as its hypervisor reports it.
// Reported only by `libvirt/` (feature libvirt).
#[cfg_attr(not(feature = "libvirt"), allow(dead_code))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Power {
    /// Running (or shutting down): its agent is probed.
    Running,
    /// Paused or suspended to memory.
    Paused,
    /// Not running.
    Off,
}

impl HealthMap {
    /// What is known about `vm` ("No Contact" if nothing yet; "Paused" or
    /// "Off" while its hypervisor says so).
    pub(crate) fn get(&self, vm: Uuid) -> Health {
        let map = self.0.read().unwrap_or_else(|e| e.into_inner());
        let mut health = map.get(&vm).cloned().unwrap_or_else(no_contact);
        match self.power(vm) {
            Some(Power::Paused) => health.status = HealthStatus::Paused,
            Some(Power::Off) => health.status = HealthStatus::Off,
            Some(Power::Running) | None => {}
        }
        health
    }

    /// `vm`'s power state, if its hypervisor reports it.
    fn power(&self, vm: Uuid) -> Option<Power> {
        let power = self.1.read().unwrap_or_else(|e| e.into_inner());
        power.get(&vm).copied()
    }

    /// Whether the health monitor probes `vm`: not while it is paused or off.
    pub(crate) fn probed(&self, vm: Uuid) -> bool {
        matches!(self.power(vm), Some(Power::Running) | None)
    }

    /// Records `vm`'s power state, as its hypervisor reports it, and logs a
    /// change; a VM that starts begins again at "No Contact".
    #[cfg_attr(not(feature = "libvirt"), allow(dead_code))]
    pub(crate) fn set_power(&self, vm: &VmRow, now: Power) {
        let mut power = self.1.write().unwrap_or_else(|e| e.into_inner());
        let before = power.insert(vm.id, now);
        if before == Some(now) {
            return;
        }
        info!(vm = %vm.name, from = ?before, to = ?now, "VM power state changed");
        if now == Power::Running && before != Some(Power::Paused) {
            let mut map = self.0.write().unwrap_or_else(|e| e.into_inner());
            map.insert(vm.id, no_contact());
        }
    }

    /// Records a probe result and logs a change of status; true when the
    /// agent answered after not answering (or for the first time).
    pub(crate) fn record(
        &self,
        vm: &VmRow,
        result: Result<(Duration, &str), ProbeFailure>,
    ) -> bool {
        let mut map = self.0.write().unwrap_or_else(|e| e.into_inner());
        let entry = map.entry(vm.id).or_insert_with(no_contact);
        let before = entry.status.clone();
        match result {
            Ok((rtt, agent)) => {
                entry.status = HealthStatus::Ok;
                entry.rtt_us = Some(rtt.as_micros() as u64);
                // The same agent as last time, most often: no new string.
                if entry.agent_version.as_deref() != Some(agent) {
                    entry.agent_version = Some(agent.to_owned());
                }
                entry.last_contact_ms = Some(u64::try_from(now_ms()).unwrap_or(0));
                entry.last_error = None;
                entry.detail = None;
            }
            Err(failure) => {
                entry.status = match failure.detail {
                    HealthDetail::AgentNotAnswering => HealthStatus::NoContact,
                    _ if entry.last_contact_ms.is_some() => HealthStatus::LostComm,
                    _ => HealthStatus::NoContact,
                };
                entry.last_error = Some(failure.error);
                entry.detail = Some(failure.detail);
            }
        }
        if entry.status != before {
            let error = entry.last_error.as_deref().unwrap_or("");
            if entry.status == HealthStatus::Ok {
                info!(vm = %vm.name, from = %before, to = %entry.status, "agent health changed");
            } else {
                warn!(vm = %vm.name, from = %before, to = %entry.status, error, "agent health changed");
            }
        }
        entry.status != before && entry.status == HealthStatus::Ok
    }

    /// Forgets VMs that are no longer in the inventory (a set: the
    /// inventory may hold tens of thousands, looked up once per entry).
    pub(crate) fn retain(&self, ids: &HashSet<Uuid>) {
        let mut map = self.0.write().unwrap_or_else(|e| e.into_inner());
        map.retain(|id, _| ids.contains(id));
        let mut power = self.1.write().unwrap_or_else(|e| e.into_inner());
        power.retain(|id, _| ids.contains(id));
    }
}

fn no_contact() -> Health {
    Health {
        status: HealthStatus::NoContact,
        ..Health::default()
    }
}

/// Why a probe failed: its class and the error chain.
#[derive(Debug)]
pub(crate) struct ProbeFailure {
    /// Where on the path to the agent.
    pub(crate) detail: HealthDetail,
    /// What happened, for people.
    pub(crate) error: String,
}

/// Whether each followed domain carries its VM's key, by VM id.
#[derive(Default)]
pub(crate) struct DomainKeys(RwLock<HashMap<Uuid, DomainKey>>);

impl DomainKeys {
    /// Whether VM `vm`'s domain carries its key; `None` for a VM that
    /// follows no domain.
    pub(crate) fn get(&self, vm: Uuid) -> Option<DomainKey> {
        let keys = self.0.read().unwrap_or_else(|e| e.into_inner());
        keys.get(&vm).cloned()
    }

    /// Records whether VM `vm`'s domain carries its key.
    #[cfg_attr(not(any(test, feature = "libvirt")), allow(dead_code))]
    pub(crate) fn set(&self, vm: Uuid, key: DomainKey) {
        let mut keys = self.0.write().unwrap_or_else(|e| e.into_inner());
        keys.insert(vm, key);
    }

    /// Forgets VM `vm` (removed).
    #[cfg_attr(not(any(test, feature = "libvirt")), allow(dead_code))]
    pub(crate) fn forget(&self, vm: Uuid) {
        let mut keys = self.0.write().unwrap_or_else(|e| e.into_inner());
        keys.remove(&vm);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Policy;

    fn vm() -> VmRow {
        VmRow {
            id: Uuid::new_v4(),
            name: "v".into(),
            endpoint: "unix:///x".parse().unwrap(),
            interface_enabled: true,
            default_policy: Policy::Enabled,
            created_at: 0,
            psk: None,
        }
    }

    fn failed(detail: HealthDetail) -> Result<(Duration, &'static str), ProbeFailure> {
        Err(ProbeFailure {
            detail,
            error: "failed".into(),
        })
    }

    #[test]
    fn status_goes_no_contact_ok_lost_comm_ok() {
        let map = HealthMap::default();
        let vm = vm();
        assert_eq!(map.get(vm.id).status, HealthStatus::NoContact);
        map.record(&vm, failed(HealthDetail::AgentNotListening));
        assert_eq!(map.get(vm.id).status, HealthStatus::NoContact);
        map.record(&vm, Ok((Duration::from_micros(50), "agent 1")));
        let h = map.get(vm.id);
        assert_eq!(
            (&h.status, h.rtt_us, h.detail),
            (&HealthStatus::Ok, Some(50), None)
        );
        map.record(&vm, failed(HealthDetail::TransportUnreachable));
        let h = map.get(vm.id);
        assert_eq!(h.status, HealthStatus::LostComm);
        assert_eq!(h.detail, Some(HealthDetail::TransportUnreachable));
        assert_eq!(h.agent_version.as_deref(), Some("agent 1"));
        map.record(&vm, Ok((Duration::from_micros(60), "agent 1")));
        assert_eq!(map.get(vm.id).status, HealthStatus::Ok);
    }

    #[test]
    fn paused_and_off_override_the_probes_and_a_start_begins_at_no_contact() {
        let map = HealthMap::default();
        let vm = vm();
        assert!(map.probed(vm.id), "a VM without a reported power state");
        map.record(&vm, Ok((Duration::from_micros(50), "agent 1")));
        map.set_power(&vm, Power::Paused);
        assert_eq!(map.get(vm.id).status, HealthStatus::Paused);
        assert!(!map.probed(vm.id));
        map.record(&vm, failed(HealthDetail::AgentNotAnswering));
        assert_eq!(map.get(vm.id).status, HealthStatus::Paused);
        map.set_power(&vm, Power::Running);
        assert!(map.probed(vm.id));
        assert_eq!(
            map.get(vm.id).status,
            HealthStatus::NoContact,
            "a resume keeps what the probes knew"
        );
        map.set_power(&vm, Power::Off);
        assert_eq!(map.get(vm.id).status, HealthStatus::Off);
        assert!(!map.probed(vm.id));
        map.set_power(&vm, Power::Running);
        let h = map.get(vm.id);
        assert_eq!(
            (h.status, h.last_contact_ms),
            (HealthStatus::NoContact, None),
            "a start begins again"
        );
        map.retain(&HashSet::new());
        assert!(map.probed(vm.id), "forgotten with the VM");
    }

    #[test]
    fn a_guest_that_does_not_answer_at_all_is_no_contact_even_after_contact() {
        let map = HealthMap::default();
        let vm = vm();
        map.record(&vm, Ok((Duration::from_micros(50), "agent 1")));
        map.record(&vm, failed(HealthDetail::AgentNotAnswering));
        let h = map.get(vm.id);
        assert_eq!(h.status, HealthStatus::NoContact);
        assert_eq!(h.detail, Some(HealthDetail::AgentNotAnswering));
        assert!(h.last_contact_ms.is_some());
    }
}
