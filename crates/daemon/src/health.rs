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
use std::collections::HashMap;
use std::sync::RwLock;
use std::time::Duration;

use guestcomm_api::{Health, HealthDetail, HealthStatus};
use tracing::{info, warn};
use uuid::Uuid;

use crate::clock::now_ms;
use crate::model::VmRow;

/// Health by VM id.
#[derive(Default)]
pub(crate) struct HealthMap(RwLock<HashMap<Uuid, Health>>);

impl HealthMap {
    /// What is known about `vm` ("No Contact" if nothing yet).
    pub(crate) fn get(&self, vm: Uuid) -> Health {
        let map = self.0.read().unwrap_or_else(|e| e.into_inner());
        map.get(&vm).cloned().unwrap_or_else(no_contact)
    }

    /// Records a probe result and logs a change of status; true when the
    /// agent answered after not answering (or for the first time).
    pub(crate) fn record(
        &self,
        vm: &VmRow,
        result: Result<(Duration, String), ProbeFailure>,
    ) -> bool {
        let mut map = self.0.write().unwrap_or_else(|e| e.into_inner());
        let entry = map.entry(vm.id).or_insert_with(no_contact);
        let before = entry.status.clone();
        match result {
            Ok((rtt, agent)) => {
                entry.status = HealthStatus::Ok;
                entry.rtt_us = Some(rtt.as_micros() as u64);
                entry.agent_version = Some(agent);
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

    /// Forgets VMs that are no longer in the inventory.
    pub(crate) fn retain(&self, ids: &[Uuid]) {
        let mut map = self.0.write().unwrap_or_else(|e| e.into_inner());
        map.retain(|id, _| ids.contains(id));
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

    fn failed(detail: HealthDetail) -> Result<(Duration, String), ProbeFailure> {
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
        map.record(&vm, Ok((Duration::from_micros(50), "agent 1".into())));
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
        map.record(&vm, Ok((Duration::from_micros(60), "agent 1".into())));
        assert_eq!(map.get(vm.id).status, HealthStatus::Ok);
    }

    #[test]
    fn a_guest_that_does_not_answer_at_all_is_no_contact_even_after_contact() {
        let map = HealthMap::default();
        let vm = vm();
        map.record(&vm, Ok((Duration::from_micros(50), "agent 1".into())));
        map.record(&vm, failed(HealthDetail::AgentNotAnswering));
        let h = map.get(vm.id);
        assert_eq!(h.status, HealthStatus::NoContact);
        assert_eq!(h.detail, Some(HealthDetail::AgentNotAnswering));
        assert!(h.last_contact_ms.is_some());
    }
}
