//! The registry of guest communication services, their enablement (the
//! host-wide switch and each VM's policy), and their instances, one per
//! service and VM, with the CIM methods RequestStateChange, StartService
//! and StopService.

use guestcomm_api::{GuestCommunicationService, ServiceRegistration};
use guestcomm_cim::ReturnValue;
use guestcomm_protocol::ServiceId;
use guestcomm_transport::Address;

use crate::error::Error;
use crate::limits::MAX_ELEMENT_NAME_CHARS;
use crate::model::Policy;
use crate::model::ServiceRow;
use crate::policy;
use crate::state::State;

/// A service's GUID, as text from a caller.
pub(crate) fn parse_id(text: &str) -> Result<ServiceId, Error> {
    Ok(text.parse()?)
}

fn registration(row: ServiceRow) -> ServiceRegistration {
    ServiceRegistration {
        id: row.id,
        element_name: row.element_name,
        description: row.description,
        builtin: row.builtin,
        enabled: row.enabled,
        installed_at: row.installed_at,
        host_endpoint: row.host_endpoint,
    }
}

/// Every registered service.
pub(crate) async fn list(state: &State) -> Result<Vec<ServiceRegistration>, Error> {
    let rows = state.db(|s| s.services()).await?;
    Ok(rows.into_iter().map(registration).collect())
}

/// Registers service `id` named `element_name`; guest-initiated connections
/// to it are relayed to `host_endpoint` (a Unix or TCP address) if given.
pub(crate) async fn register(
    state: &State,
    id: ServiceId,
    element_name: &str,
    description: String,
    host_endpoint: Option<&str>,
) -> Result<ServiceRegistration, Error> {
    let name = element_name.trim().to_string();
    if name.is_empty() || name.chars().count() > MAX_ELEMENT_NAME_CHARS || name.contains('\n') {
        return Err(Error::BadRequest(format!(
            "invalid service name {element_name:?}: must be one line of 1 to {MAX_ELEMENT_NAME_CHARS} characters"
        )));
    }
    let host_endpoint = match host_endpoint.map(str::parse::<Address>) {
        None => None,
        Some(Ok(addr @ (Address::Unix(_) | Address::Tcp(_)))) => Some(addr.to_string()),
        Some(Ok(other)) => {
            return Err(Error::BadRequest(format!(
                "invalid host endpoint {other}: guest-initiated connections are relayed to unix:///PATH or tcp://IP:PORT on the host"
            )))
        }
        Some(Err(e)) => return Err(e.into()),
    };
    let row = state
        .db(move |s| s.register(id, &name, &description, host_endpoint.as_deref()))
        .await?;
    state.changed.notify_one();
    tracing::info!(service = %row.id, name = %row.element_name, "service registered");
    Ok(registration(row))
}

/// Unregisters service `id`.
pub(crate) async fn unregister(state: &State, id: ServiceId) -> Result<(), Error> {
    state.db(move |s| s.unregister(id)).await?;
    tracing::info!(service = %id, "service unregistered");
    state.changed.notify_one();
    Ok(())
}

/// Sets service `id`'s policy on `vm` (2, 3 or 8), or its host-wide switch
/// (2 or 3) without a VM.
pub(crate) async fn set_policy(
    state: &State,
    id: ServiceId,
    vm: Option<String>,
    value: u16,
) -> Result<(), Error> {
    let policy = Policy::from_value(value).ok_or_else(|| {
        Error::BadRequest(format!(
            "invalid policy {value}: expected 2 (enabled), 3 (disabled) or 8 (deferred)"
        ))
    })?;
    match vm {
        Some(vm) => state.db(move |s| s.set_vm_policy(id, &vm, policy)).await?,
        None if policy == Policy::Deferred => {
            return Err(Error::BadRequest(
                "the host-wide switch is enabled (2) or disabled (3); deferred (8) needs a VM"
                    .into(),
            ))
        }
        None => {
            state
                .db(move |s| s.set_global(id, policy == Policy::Enabled))
                .await?
        }
    }
    tracing::info!(service = %id, policy = policy.value(), "service policy changed");
    state.changed.notify_one();
    Ok(())
}

/// The instances of every service on VM `vm`, or on every VM.
pub(crate) async fn instances(
    state: &State,
    vm: Option<String>,
) -> Result<Vec<GuestCommunicationService>, Error> {
    let rows = state
        .db(move |s| {
            let vms = match vm {
                Some(name) => vec![s.vm(&name)?],
                None => s.vms()?,
            };
            let services = s.services()?;
            let mut out = Vec::with_capacity(vms.len() * services.len());
            for vm in vms {
                for service in &services {
                    let policy = s.vm_policy(service.id, vm.id)?;
                    out.push((service.clone(), vm.clone(), policy));
                }
            }
            Ok(out)
        })
        .await?;
    Ok(rows
        .into_iter()
        .map(|(service, vm, policy)| {
            policy::instance(&service, &vm, policy, &state.health.get(vm.id))
        })
        .collect())
}

/// RequestStateChange of service `id` on VM `name`: 2, 3 and 8 (Defer: the
/// VM's DefaultEnabledStatePolicy decides) set the VM's policy (0; 32775
/// when enabling cannot succeed); any other state is 32775 too, as Hyper-V
/// documents for Msvm_GuestService ("the value specified in RequestedState
/// is not supported").
pub(crate) async fn change_state(
    state: &State,
    name: String,
    id: ServiceId,
    requested: u16,
) -> Result<u32, Error> {
    let Some(policy) = Policy::from_value(requested) else {
        state
            .db(move |s| {
                s.vm(&name)?;
                s.service(id)
            })
            .await?;
        return Ok(ReturnValue::InvalidState.code());
    };
    let return_value = state
        .db(move |s| {
            let vm = s.vm(&name)?;
            let service = s.service(id)?;
            // Enabling cannot succeed while the interface or the host-wide
            // switch holds the service disabled.
            if policy == Policy::Enabled && !(vm.interface_enabled && service.enabled) {
                return Ok(ReturnValue::InvalidState.code());
            }
            s.set_vm_policy(id, &name, policy)?;
            Ok(ReturnValue::Completed.code())
        })
        .await?;
    state.changed.notify_one();
    Ok(return_value)
}

/// StartService or StopService of service `id` on VM `name`: a guest
/// communication service runs in the guest, not on the host, so neither is
/// supported (1) once both are known, as for Hyper-V's own guest services.
pub(crate) async fn start_stop(state: &State, name: String, id: ServiceId) -> Result<u32, Error> {
    state
        .db(move |s| {
            s.vm(&name)?;
            s.service(id)
        })
        .await?;
    Ok(ReturnValue::NotSupported.code())
}
