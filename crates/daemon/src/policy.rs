//! The CIM view of a service on a VM: its instance as the API and WBEM
//! show it, its class, and CIM datetimes. The enablement model it is built
//! from is in [`crate::model`].
use guestcomm_api::{GuestCommunicationService, Health};
use guestcomm_protocol::BuiltinService;

use crate::model::{effective_on, Policy, ServiceRow, VmRow};

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
        status: health.status.to_string(),
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

    #[test]
    fn cim_datetime_formats_utc() {
        assert_eq!(cim_datetime(0), "19700101000000.000000+000");
        // 2026-11-25 20:07:45 UTC
        assert_eq!(cim_datetime(1_795_637_265), "20261125200745.000000+000");
        assert_eq!(cim_datetime(951_782_400), "20000229000000.000000+000");
    }
}
