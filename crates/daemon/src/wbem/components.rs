//! Each VM's devices, as Hyper-V lists them under its Msvm_ComputerSystem
//! through Msvm_SystemDevice: the integration components (heartbeat,
//! key-value exchange, shutdown, time synchronization, VSS) and the Guest
//! Service Interface, one of each per VM. EnabledState comes from the VM's
//! enablement (the service behind the component, or the interface switch),
//! OperationalStatus, StatusDescriptions, HealthState and Status from the
//! health monitor, and the key-value component's item arrays from the
//! agent, read with a bound ([`read_guest_items`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use guestcomm_api::HealthStatus;
use guestcomm_cim::value::{CimValue, Instance, InstanceName};
use guestcomm_cim::xml::response::{self as enc, Shape};
use guestcomm_cim::{Repository, NAMESPACE};
use guestcomm_protocol::integration::{KvpEntries, KvpPool};
use guestcomm_protocol::BuiltinService;
use uuid::Uuid;

use crate::limits::{MAX_WBEM_KVP_READS_AT_ONCE, WBEM_KVP_READ_TIMEOUT_MS};
use crate::model::VmRow;
use crate::policy::cim_datetime;
use crate::state::State;

/// Class of the VMs (the GroupComponent of every device).
pub(crate) const COMPUTER_SYSTEM: &str = "Msvm_ComputerSystem";
/// The association of a VM and each of its devices.
pub(crate) const SYSTEM_DEVICE: &str = "Msvm_SystemDevice";
/// Class of each VM's guest service interface.
pub(crate) const INTERFACE: &str = "Msvm_GuestServiceInterfaceComponent";
/// Class of each VM's key-value exchange, the one with guest data.
pub(crate) const KVP_COMPONENT: &str = "Msvm_KvpExchangeComponent";
/// Class of one key-value pair, embedded in the component's arrays.
const KVP_ITEM: &str = "Msvm_KvpExchangeDataItem";
/// Msvm_KvpExchangeDataItem.Source of a pair a guest program wrote.
const SOURCE_GUEST: u64 = 1;
/// Msvm_KvpExchangeDataItem.Source of a pair the guest fills itself.
const SOURCE_GUEST_INTRINSIC: u64 = 2;
/// RequestedState of the integration components: 12, Not Applicable.
const NOT_APPLICABLE: u64 = 12;
/// EnabledDefault of the devices: 7, No Default.
const NO_DEFAULT: u64 = 7;

/// One kind of device, with Hyper-V's names for it.
pub(crate) struct Device {
    /// Its class.
    pub(crate) class: &'static str,
    /// The GUID after the VM's in DeviceID: the VMBus device class of
    /// Hyper-V's service.
    pub(crate) guid: &'static str,
    /// Caption (and Name).
    caption: &'static str,
    /// Description.
    description: &'static str,
    /// ElementName (Hyper-V's spelling: "Key-Value pair Exchange").
    element_name: &'static str,
    /// The built-in service whose effective state on the VM is the
    /// device's EnabledState; `None`: the VM's interface switch.
    pub(crate) service: Option<BuiltinService>,
}

/// The Guest Service Interface, the device the guest services are
/// registered on (Msvm_RegisteredGuestService).
pub(crate) const INTERFACE_DEVICE: Device = Device {
    class: INTERFACE,
    guid: "34d14be3-dee4-41c8-9ae7-6b174977c192",
    caption: "Guest Service Interface",
    description: "Microsoft Guest Service Interface",
    element_name: "Guest Service Interface",
    service: None,
};

/// Every device of a VM.
pub(crate) const DEVICES: [Device; 6] = [
    INTERFACE_DEVICE,
    Device {
        class: "Msvm_HeartbeatComponent",
        guid: "57164f39-9115-4e78-ab55-382f3bd5422d",
        caption: "Heartbeat",
        description: "Microsoft Heartbeat Service",
        element_name: "Heartbeat",
        service: Some(BuiltinService::Heartbeat),
    },
    Device {
        class: KVP_COMPONENT,
        guid: "a9a0f4e7-5a45-4d96-b827-8a841e8c03e6",
        caption: "Key-Value Pair Exchange",
        description: "Microsoft Key-Value Pair Exchange Service",
        element_name: "Key-Value pair Exchange",
        service: Some(BuiltinService::KeyValue),
    },
    Device {
        class: "Msvm_ShutdownComponent",
        guid: "0e0b6031-5213-4934-818b-38d90ced39db",
        caption: "Shutdown",
        description: "Microsoft Shutdown Service",
        element_name: "Shutdown",
        service: Some(BuiltinService::Shutdown),
    },
    Device {
        class: "Msvm_TimeSyncComponent",
        guid: "9527e630-d0ae-497b-adce-e80ab0175caf",
        caption: "Time Synchronization",
        description: "Microsoft Time Synchronization Service",
        element_name: "Time Synchronization",
        service: Some(BuiltinService::Time),
    },
    Device {
        class: "Msvm_VssComponent",
        guid: "35fa2e29-ea23-4236-96ae-3a6ebacba440",
        caption: "VSS",
        description: "Microsoft VSS Service",
        element_name: "VSS",
        service: Some(BuiltinService::FsFreeze),
    },
];

/// The device of class `class`, if it is one.
pub(crate) fn device(class: &str) -> Option<&'static Device> {
    DEVICES.iter().find(|d| d.class.eq_ignore_ascii_case(class))
}

/// What a device is made of besides the VM: its EnabledState, the VM's
/// health, and (key-value exchange only) the guest's items.
pub(crate) struct DeviceState<'a> {
    /// 2 or 3.
    pub(crate) enabled: u16,
    /// The VM agent's health.
    pub(crate) health: HealthStatus,
    /// The guest's pools, when read.
    pub(crate) items: Option<&'a GuestItems>,
}

/// The guest and intrinsic pools of a VM, each pair an embedded
/// Msvm_KvpExchangeDataItem in CIM-XML text form.
#[derive(Clone, Debug, Default)]
pub(crate) struct GuestItems {
    /// GuestExchangeItems: the guest pool (guest programs write it).
    guest: Vec<CimValue>,
    /// GuestIntrinsicExchangeItems: the auto pool (the agent fills it).
    intrinsic: Vec<CimValue>,
}

fn text(value: &str) -> CimValue {
    CimValue::String(value.into())
}

/// DeviceID of device `guid` of the VM whose id is `vm_id`, as Hyper-V
/// names it: `Microsoft:<VM GUID>\<component GUID>`.
pub(crate) fn device_id(vm_id: &str, guid: &str) -> String {
    format!("Microsoft:{vm_id}\\{guid}")
}

/// The keys of `device` of the VM whose id is `vm_id`.
pub(crate) fn device_keys(device: &Device, vm_id: &str) -> Vec<(String, CimValue)> {
    vec![
        ("SystemCreationClassName".into(), text(COMPUTER_SYSTEM)),
        ("SystemName".into(), text(vm_id)),
        ("CreationClassName".into(), text(device.class)),
        ("DeviceID".into(), text(&device_id(vm_id, device.guid))),
    ]
}

/// The states RequestStateChange takes on an integration component or a
/// guest service (its policy on the VM: Enabled, Disabled, Deferred).
pub(crate) const POLICY_STATES: [u16; 3] = [
    crate::model::ENABLED,
    crate::model::DISABLED,
    crate::model::DEFERRED,
];
/// The states RequestStateChange takes on the interface (its switch).
const SWITCH_STATES: [u16; 2] = [crate::model::ENABLED, crate::model::DISABLED];

/// AvailableRequestedStates holding `states`.
pub(crate) fn available_states(states: &[u16]) -> (String, CimValue) {
    (
        "AvailableRequestedStates".into(),
        CimValue::Array(
            states
                .iter()
                .map(|s| CimValue::Uint(u64::from(*s)))
                .collect(),
        ),
    )
}

/// OperationalStatus[0], its description and HealthState for the agent's
/// health: 2 OK (5), 12 No Contact (0, unknown), 13 Lost Communication (20,
/// major failure), 15 Dormant for a paused VM and 10 Stopped for one that
/// is off (0, unknown: nothing is wrong); 0 Unknown for a word this daemon
/// does not know.
pub(crate) fn operational(health: &HealthStatus) -> (u64, &'static str, u64) {
    match health {
        HealthStatus::Ok => (2, "OK", 5),
        HealthStatus::NoContact => (12, "No Contact", 0),
        HealthStatus::LostComm => (13, "Lost Communication", 20),
        HealthStatus::Paused => (15, "Dormant", 0),
        HealthStatus::Off => (10, "Stopped", 0),
        HealthStatus::Other(_) => (0, "Unknown", 0),
    }
}

/// `device` of `vm` as an instance of its class.
pub(crate) fn instance(device: &Device, vm: &VmRow, state: &DeviceState) -> Instance {
    let (code, description, health_state) = operational(&state.health);
    let enabled = u64::from(state.enabled);
    // The interface keeps the RequestedState it always had: its switch.
    let requested = if device.service.is_none() {
        enabled
    } else {
        NOT_APPLICABLE
    };
    let mut properties = device_keys(device, &vm.id.to_string());
    properties.extend([
        ("Caption".into(), text(device.caption)),
        ("Description".into(), text(device.description)),
        ("ElementName".into(), text(device.element_name)),
        ("Name".into(), text(device.caption)),
        (
            "InstallDate".into(),
            CimValue::Datetime(cim_datetime(vm.created_at)),
        ),
        ("EnabledState".into(), CimValue::Uint(enabled)),
        ("RequestedState".into(), CimValue::Uint(requested)),
        ("EnabledDefault".into(), CimValue::Uint(NO_DEFAULT)),
        (
            "OperationalStatus".into(),
            CimValue::Array(vec![CimValue::Uint(code)]),
        ),
        (
            "StatusDescriptions".into(),
            CimValue::Array(vec![text(description)]),
        ),
        ("HealthState".into(), CimValue::Uint(health_state)),
        ("Status".into(), text(state.health.as_str())),
        available_states(if device.service.is_none() {
            &SWITCH_STATES
        } else {
            &POLICY_STATES
        }),
    ]);
    if device.class == KVP_COMPONENT {
        let (guest, intrinsic) = match state.items {
            Some(items) => (
                CimValue::Array(items.guest.clone()),
                CimValue::Array(items.intrinsic.clone()),
            ),
            None => (CimValue::Null, CimValue::Null),
        };
        properties.push(("GuestExchangeItems".into(), guest));
        properties.push(("GuestIntrinsicExchangeItems".into(), intrinsic));
    }
    Instance {
        class: device.class.into(),
        properties,
    }
}

/// The Msvm_SystemDevice of the VM whose id is `vm_id` and `device` (an
/// instance of a device class).
pub(crate) fn system_device(repo: &Repository, vm_id: &str, device: &Instance) -> Instance {
    let vm = InstanceName::new(
        COMPUTER_SYSTEM,
        vec![
            ("CreationClassName".into(), text(COMPUTER_SYSTEM)),
            ("Name".into(), text(vm_id)),
        ],
    );
    Instance {
        class: SYSTEM_DEVICE.into(),
        properties: vec![
            ("GroupComponent".into(), CimValue::Reference(vm)),
            (
                "PartComponent".into(),
                CimValue::Reference(device.path(repo)),
            ),
        ],
    }
}

/// The pairs of `entries` as embedded Msvm_KvpExchangeDataItem texts.
pub(crate) fn items(repo: &Repository, entries: KvpEntries, source: u64) -> Vec<CimValue> {
    entries
        .into_iter()
        .map(|(name, data)| {
            let item = Instance {
                class: KVP_ITEM.into(),
                properties: vec![
                    ("Caption".into(), text("Key-Value Pair Exchange Data Item")),
                    (
                        "Description".into(),
                        text("Microsoft Key-Value Pair Exchange Data Item"),
                    ),
                    (
                        "ElementName".into(),
                        text("Key-Value Pair Exchange Data Item"),
                    ),
                    ("Name".into(), CimValue::String(name)),
                    ("Data".into(), CimValue::String(data)),
                    ("Source".into(), CimValue::Uint(source)),
                ],
            };
            CimValue::String(enc::instance(repo, &item, NAMESPACE, &Shape::default()))
        })
        .collect()
}

/// Reads the guest and intrinsic pools of `vms` from their agents, through
/// the JSON API's own operation (`GET /v1/vms/{name}/kvp/{pool}`, with its
/// enablement checks), bounded: only VMs whose agent the health monitor
/// sees answering, each taking one of its VM's agent-call slots (a VM at
/// its bound is skipped), at most [`WBEM_KVP_READ_TIMEOUT_MS`] for both
/// pools, [`MAX_WBEM_KVP_READS_AT_ONCE`] VMs at a time. A VM left out or
/// whose read failed has no entry: its arrays are NULL.
pub(crate) async fn read_guest_items<'a>(
    state: &Arc<State>,
    repo: &Repository,
    vms: impl Iterator<Item = &'a VmRow>,
) -> HashMap<Uuid, GuestItems> {
    let answering: Vec<VmRow> = vms
        .filter(|vm| state.health.get(vm.id).status == HealthStatus::Ok)
        .cloned()
        .collect();
    futures::stream::iter(answering)
        .map(|vm| async move {
            let read = read_one(state, &vm);
            let limit = Duration::from_millis(WBEM_KVP_READ_TIMEOUT_MS);
            match tokio::time::timeout(limit, read).await {
                Ok(Ok((guest, auto))) => Some((
                    vm.id,
                    GuestItems {
                        guest: items(repo, guest, SOURCE_GUEST),
                        intrinsic: items(repo, auto, SOURCE_GUEST_INTRINSIC),
                    },
                )),
                Ok(Err(e)) => {
                    tracing::debug!(vm = %vm.name, error = %guestcomm_protocol::error_chain(&e), "WBEM: key-value pools not read");
                    None
                }
                Err(_) => {
                    tracing::debug!(vm = %vm.name, "WBEM: key-value pools not read in time");
                    None
                }
            }
        })
        .buffer_unordered(MAX_WBEM_KVP_READS_AT_ONCE)
        .filter_map(|read| async move { read })
        .collect()
        .await
}

/// The guest and auto pools of one VM, in one of its agent-call slots.
async fn read_one(
    state: &Arc<State>,
    vm: &VmRow,
) -> Result<(KvpEntries, KvpEntries), crate::error::Error> {
    let _slot = state.agent_calls.take(&vm.name)?;
    let list = |pool| crate::ops::integration::kvp_list(state, vm.name.clone(), pool);
    let guest = list(KvpPool::Guest).await?;
    let auto = list(KvpPool::Auto).await?;
    Ok((guest, auto))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_device_class_is_in_the_repository_as_a_logical_device() {
        let repo = Repository::builtin().unwrap();
        for d in &DEVICES {
            assert!(repo.is_a(d.class, "CIM_LogicalDevice"), "{}", d.class);
            let keys: Vec<String> = repo.keys(d.class).iter().map(|p| p.name.clone()).collect();
            assert_eq!(keys.len(), 4, "{}: {keys:?}", d.class);
        }
        assert!(repo.class(SYSTEM_DEVICE).unwrap().association);
        assert!(repo.is_a(KVP_ITEM, "CIM_ManagedElement"));
    }

    #[test]
    fn health_becomes_operational_status_and_health_state() {
        assert_eq!(operational(&HealthStatus::Ok), (2, "OK", 5));
        assert_eq!(operational(&HealthStatus::NoContact).0, 12);
        assert_eq!(operational(&HealthStatus::LostComm).0, 13);
        assert_eq!(operational(&HealthStatus::Paused).0, 15);
        assert_eq!(operational(&HealthStatus::Off).0, 10);
    }

    #[test]
    fn pairs_become_embedded_data_items() {
        let repo = Repository::builtin().unwrap();
        let entries = KvpEntries::from([("build".to_string(), "4<2".to_string())]);
        let made = items(&repo, entries, SOURCE_GUEST);
        let [CimValue::String(xml)] = made.as_slice() else {
            panic!("one string: {made:?}");
        };
        let back = guestcomm_cim::xml::request::parse_embedded_instance(xml).unwrap();
        assert_eq!(back.class, KVP_ITEM);
        assert_eq!(back.get("Name"), Some(&text("build")));
        assert_eq!(back.get("Data"), Some(&text("4<2")));
        assert_eq!(back.get("Source"), Some(&CimValue::Uint(1)));
    }
}
