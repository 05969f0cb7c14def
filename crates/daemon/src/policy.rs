//! The enablement model, as Hyper-V's, and the CIM view of a service on a VM.
//!
//! ```text
//! effective state of service S on VM V =
//!   Disabled  if V's guest service interface is off
//!   Disabled  if S's host-wide switch is off (registration disabled)
//!   S's policy on V           if it is Enabled or Disabled
//!   V's DefaultEnabledStatePolicy   if S's policy on V is Deferred
//! ```
//!
//! [`effective_state`] is the one place this is computed; the relay and the
//! management objects both call it.

use guestcomm_api::{GuestCommunicationService, Health};
use guestcomm_protocol::BuiltinService;

use crate::model::{ServiceRow, VmRow};

/// CIM EnabledState: enabled.
pub(crate) const ENABLED: u16 = 2;
/// CIM EnabledState: disabled.
pub(crate) const DISABLED: u16 = 3;
/// CIM RequestedState / EnabledStatePolicy: deferred (follow the VM's default).
pub(crate) const DEFERRED: u16 = 8;

/// An EnabledStatePolicy value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Policy {
    /// 2: enabled.
    Enabled,
    /// 3: disabled.
    Disabled,
    /// 8: follow the VM's DefaultEnabledStatePolicy.
    Deferred,
}

impl Policy {
    /// The CIM value.
    pub(crate) const fn value(self) -> u16 {
        match self {
            Self::Enabled => ENABLED,
            Self::Disabled => DISABLED,
            Self::Deferred => DEFERRED,
        }
    }

    /// From a CIM value.
    pub(crate) const fn from_value(value: u16) -> Option<Self> {
        match value {
            ENABLED => Some(Self::Enabled),
            DISABLED => Some(Self::Disabled),
            DEFERRED => Some(Self::Deferred),
            _ => None,
        }
    }
}

/// The effective state (2 or 3) of a service on a VM: see the module doc.
pub(crate) fn effective_state(
    interface_enabled: bool,
    registration_enabled: bool,
    vm_policy: Policy,
    vm_default: Policy,
) -> Policy {
    if !interface_enabled || !registration_enabled {
        return Policy::Disabled;
    }
    match vm_policy {
        Policy::Deferred if vm_default == Policy::Disabled => Policy::Disabled,
        Policy::Deferred => Policy::Enabled,
        explicit => explicit,
    }
}

/// [`effective_state`] of `service` on `vm`, given its policy there.
pub(crate) fn effective_on(vm: &VmRow, service: &ServiceRow, vm_policy: Policy) -> Policy {
    effective_state(
        vm.interface_enabled,
        service.enabled,
        vm_policy,
        vm.default_policy,
    )
}

/// Formats seconds since the epoch as a CIM datetime, `yyyymmddhhmmss.mmmmmm+000` (UTC).
pub(crate) fn cim_datetime(secs: i64) -> String {
    let (year, month, day, h, m, s) = guestcomm_api::time::utc_fields(secs);
    format!("{year:04}{month:02}{day:02}{h:02}{m:02}{s:02}.000000+000")
}

/// guestcomm's Msvm_GuestService subclass for a built-in integration
/// service (docs/MANAGEMENT.md), as Msvm_GuestFileService is for file copy.
pub(crate) const fn integration_class(service: BuiltinService) -> Option<&'static str> {
    match service {
        BuiltinService::KeyValue => Some("Guestcomm_KvpExchangeService"),
        BuiltinService::Shutdown => Some("Guestcomm_ShutdownService"),
        BuiltinService::Time => Some("Guestcomm_TimeSyncService"),
        BuiltinService::Heartbeat => Some("Guestcomm_HeartbeatService"),
        BuiltinService::GuestInfo => Some("Guestcomm_GuestInfoService"),
        BuiltinService::FsFreeze => Some("Guestcomm_FsFreezeService"),
        BuiltinService::Files => Some("Msvm_GuestFileService"),
        BuiltinService::Agent | BuiltinService::Exec => None,
    }
}

/// The object of a built-in integration service as its own class
/// ([`integration_class`]), from its Msvm_GuestCommunicationService
/// [`instance`]; `None` for services without a class of their own.
pub(crate) fn integration_instance(
    mut instance: GuestCommunicationService,
) -> Option<GuestCommunicationService> {
    let builtin = instance
        .name
        .parse::<guestcomm_protocol::ServiceId>()
        .ok()?
        .builtin()?;
    instance.creation_class_name = integration_class(builtin)?.into();
    Some(instance)
}

/// The Msvm_GuestCommunicationService instance of `service` on `vm`.
pub(crate) fn instance(
    service: &ServiceRow,
    vm: &VmRow,
    vm_policy: Policy,
    health: &Health,
) -> GuestCommunicationService {
    let state = effective_on(vm, service, vm_policy);
    GuestCommunicationService {
        caption: service.element_name.clone(),
        creation_class_name: "Msvm_GuestCommunicationService".into(),
        description: service.description.clone(),
        element_name: service.element_name.clone(),
        install_date: Some(cim_datetime(service.installed_at)),
        name: service.id.to_string(),
        started: state == Policy::Enabled,
        start_mode: "Automatic".into(),
        status: health.status.clone(),
        system_creation_class_name: "Msvm_ComputerSystem".into(),
        system_name: vm.id.to_string(),
        enabled_state: state.value(),
        requested_state: vm_policy.value(),
        vm_name: vm.name.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Policy::*;

    #[test]
    fn explicit_vm_policy_wins_over_the_vm_default() {
        assert_eq!(effective_state(true, true, Enabled, Disabled), Enabled);
        assert_eq!(effective_state(true, true, Disabled, Enabled), Disabled);
    }

    #[test]
    fn deferred_follows_the_vm_default() {
        assert_eq!(effective_state(true, true, Deferred, Enabled), Enabled);
        assert_eq!(effective_state(true, true, Deferred, Disabled), Disabled);
    }

    #[test]
    fn interface_off_or_registration_off_disables_everything() {
        for policy in [Enabled, Disabled, Deferred] {
            for default in [Enabled, Disabled] {
                assert_eq!(effective_state(false, true, policy, default), Disabled);
                assert_eq!(effective_state(true, false, policy, default), Disabled);
            }
        }
    }

    #[test]
    fn policy_values_are_the_cim_ones() {
        for p in [Enabled, Disabled, Deferred] {
            assert_eq!(Policy::from_value(p.value()), Some(p));
        }
        assert_eq!(Policy::from_value(4), None);
    }

    #[test]
    fn cim_datetime_formats_utc() {
        assert_eq!(cim_datetime(0), "19700101000000.000000+000");
        // 2026-11-25 20:07:45 UTC
        assert_eq!(cim_datetime(1_795_637_265), "20261125200745.000000+000");
        assert_eq!(cim_datetime(951_782_400), "20000229000000.000000+000");
    }
}
