//! Each VM's setting data, nested as Hyper-V nests it:
//!
//! ```text
//! Msvm_ComputerSystem (the VM)
//!   -> Msvm_SettingsDefineState -> Msvm_VirtualSystemSettingData (Microsoft:<VM id>)
//!        -> Msvm_VirtualSystemSettingDataComponent -> each device's setting data
//!             (Msvm_<Component>SettingData, Microsoft:<VM id>\<component GUID>)
//!             the interface's: -> Msvm_GuestServiceInterfaceSettingDataComponent
//!                  -> each service's Msvm_GuestCommunicationServiceSettingData
//! each device (Msvm_<Component>) -> Msvm_SettingsDefineState -> its setting data
//! ```
//!
//! A device's setting data has the InstanceID of the device's DeviceID and
//! its EnabledState; the key-value exchange's lists the host's pool (the
//! items `guestcomm vm kvp set` stores) in HostExchangeItems.

use guestcomm_api::GuestCommunicationService;
use guestcomm_cim::value::{CimValue, Instance, InstanceName};
use guestcomm_cim::Repository;
use guestcomm_protocol::integration::KvpEntries;

use super::components::{self, Device, COMPUTER_SYSTEM, KVP_COMPONENT};
use crate::model::VmRow;
use crate::policy::cim_datetime;

/// Class of each VM's settings.
pub(crate) const SYSTEM_SETTINGS: &str = "Msvm_VirtualSystemSettingData";
/// Setting data of each VM's interface.
pub(crate) const INTERFACE_SETTINGS: &str = "Msvm_GuestServiceInterfaceComponentSettingData";
/// Setting data of each service on each VM (its policy there).
pub(crate) const SERVICE_SETTINGS: &str = "Msvm_GuestCommunicationServiceSettingData";
/// The key-value exchange's setting data, with the host's items.
pub(crate) const KVP_SETTINGS: &str = "Msvm_KvpExchangeComponentSettingData";
/// A VM and its settings; a device and its settings.
pub(crate) const DEFINE_STATE: &str = "Msvm_SettingsDefineState";
/// A VM's settings and the settings of each of its devices.
pub(crate) const SYSTEM_SETTINGS_COMPONENT: &str = "Msvm_VirtualSystemSettingDataComponent";
/// The interface's settings and each service's settings on that VM.
pub(crate) const INTERFACE_SETTINGS_COMPONENT: &str =
    "Msvm_GuestServiceInterfaceSettingDataComponent";
/// The base of every setting data class.
const SETTING_DATA: &str = "CIM_SettingData";
/// Msvm_VirtualSystemSettingData.VirtualSystemType of a running VM's settings.
const REALIZED: &str = "Microsoft:Hyper-V:System:Realized";
/// Msvm_KvpExchangeDataItem.Source of an item the host wrote.
const SOURCE_HOST: u64 = 0;
/// ResourceType 1: Other (every integration component).
const RESOURCE_OTHER: u64 = 1;
/// ConsumerVisibility 3: Virtualized.
const VIRTUALIZED: u64 = 3;

/// One device's setting data class, with Hyper-V's values for it.
struct SettingsClass {
    /// The device's class.
    device: &'static str,
    /// The setting data's class.
    class: &'static str,
    /// Caption and ElementName.
    caption: &'static str,
    /// Description.
    description: &'static str,
    /// OtherResourceType.
    other_resource_type: &'static str,
    /// AllocationUnits.
    allocation_units: &'static str,
}

/// The setting data of every device of a VM (components::DEVICES).
const SETTINGS_CLASSES: [SettingsClass; 6] = [
    SettingsClass {
        device: components::INTERFACE,
        class: INTERFACE_SETTINGS,
        caption: "Guest Service Interface",
        description: "Microsoft Guest Service Interface Setting Data",
        other_resource_type: "Microsoft:Hyper-V:Guest Service Interface Component",
        allocation_units: "count",
    },
    SettingsClass {
        device: "Msvm_HeartbeatComponent",
        class: "Msvm_HeartbeatComponentSettingData",
        caption: "Heartbeat",
        description: "Microsoft Heartbeat Service Setting Data",
        other_resource_type: "Microsoft Heartbeat Component",
        allocation_units: "Integration Components",
    },
    SettingsClass {
        device: KVP_COMPONENT,
        class: KVP_SETTINGS,
        caption: "Key-Value Pair Exchange",
        description: "Microsoft Key-Value Pair Exchange Service Setting Data",
        other_resource_type: "Microsoft:Hyper-V:Key-Value Pair Exchange Component",
        allocation_units: "count",
    },
    SettingsClass {
        device: "Msvm_ShutdownComponent",
        class: "Msvm_ShutdownComponentSettingData",
        caption: "Shutdown",
        description: "Microsoft Shutdown Service Setting Data",
        other_resource_type: "Microsoft:Hyper-V:Shutdown Component",
        allocation_units: "count",
    },
    SettingsClass {
        device: "Msvm_TimeSyncComponent",
        class: "Msvm_TimeSyncComponentSettingData",
        caption: "Time Synchronization",
        description: "Microsoft Time Synchronization Service Setting Data",
        other_resource_type: "Microsoft:Hyper-V:Time Synchronization Component",
        allocation_units: "count",
    },
    SettingsClass {
        device: "Msvm_VssComponent",
        class: "Msvm_VssComponentSettingData",
        caption: "VSS",
        description: "Microsoft VSS Service Setting Data",
        other_resource_type: "Microsoft:Hyper-V:VSS Component",
        allocation_units: "count",
    },
];

/// Every class of instances this module makes.
pub(crate) fn classes() -> impl Iterator<Item = &'static str> {
    [
        SYSTEM_SETTINGS,
        SERVICE_SETTINGS,
        DEFINE_STATE,
        SYSTEM_SETTINGS_COMPONENT,
        INTERFACE_SETTINGS_COMPONENT,
    ]
    .into_iter()
    .chain(SETTINGS_CLASSES.iter().map(|c| c.class))
}

fn text(value: &str) -> CimValue {
    CimValue::String(value.into())
}

fn settings_class(device: &Device) -> Option<&'static SettingsClass> {
    SETTINGS_CLASSES
        .iter()
        .find(|c| c.device.eq_ignore_ascii_case(device.class))
}

/// The VM a setting data's InstanceID names (`Microsoft:<VM id>`,
/// `Microsoft:<VM id>\...`, `guestcomm:<VM id>\...`), if `name` is setting
/// data.
pub(crate) fn vm_id_of<'a>(repo: &Repository, name: &'a InstanceName) -> Option<&'a str> {
    if !repo.is_a(&name.class, SETTING_DATA) {
        return None;
    }
    let (_, local) = name.key_text("InstanceID")?.split_once(':')?;
    Some(local.split('\\').next().unwrap_or(local))
}

/// A VM's Msvm_VirtualSystemSettingData.
pub(crate) fn system_settings(vm: &VmRow) -> Instance {
    let id = vm.id.to_string();
    Instance {
        class: SYSTEM_SETTINGS.into(),
        properties: vec![
            ("InstanceID".into(), text(&format!("Microsoft:{id}"))),
            ("Caption".into(), text("Virtual Machine Settings")),
            ("ElementName".into(), text(&vm.name)),
            ("VirtualSystemIdentifier".into(), text(&id)),
            ("VirtualSystemType".into(), text(REALIZED)),
            ("ConfigurationID".into(), text(&id)),
            (
                "CreationTime".into(),
                CimValue::Datetime(cim_datetime(vm.created_at)),
            ),
        ],
    }
}

/// The setting data of `device` of `vm`, whose EnabledState is `enabled`;
/// the key-value exchange's with `host_items`, the host's pool (NULL when
/// not read).
pub(crate) fn device_settings(
    repo: &Repository,
    device: &Device,
    vm: &VmRow,
    enabled: u16,
    host_items: Option<&KvpEntries>,
) -> Option<Instance> {
    let class = settings_class(device)?;
    let id = components::device_id(&vm.id.to_string(), device.guid);
    let mut properties = vec![
        ("InstanceID".into(), text(&id)),
        ("Caption".into(), text(class.caption)),
        ("Description".into(), text(class.description)),
        ("ElementName".into(), text(class.caption)),
        ("ResourceType".into(), CimValue::Uint(RESOURCE_OTHER)),
        ("OtherResourceType".into(), text(class.other_resource_type)),
        ("ConsumerVisibility".into(), CimValue::Uint(VIRTUALIZED)),
        ("AllocationUnits".into(), text(class.allocation_units)),
        ("VirtualQuantity".into(), CimValue::Uint(1)),
        ("Reservation".into(), CimValue::Uint(1)),
        ("Limit".into(), CimValue::Uint(1)),
        ("Weight".into(), CimValue::Uint(0)),
        ("AutomaticAllocation".into(), CimValue::Boolean(true)),
        ("AutomaticDeallocation".into(), CimValue::Boolean(true)),
        ("VirtualQuantityUnits".into(), text("count")),
        ("EnabledState".into(), CimValue::Uint(u64::from(enabled))),
    ];
    if class.class == INTERFACE_SETTINGS {
        properties.push((
            "DefaultEnabledStatePolicy".into(),
            CimValue::Uint(u64::from(vm.default_policy.value())),
        ));
    }
    if class.class == KVP_SETTINGS {
        let host = host_items.map_or(CimValue::Null, |entries| {
            CimValue::Array(components::items(repo, entries.clone(), SOURCE_HOST))
        });
        properties.extend([
            ("HostExchangeItems".into(), host),
            ("HostOnlyItems".into(), CimValue::Array(Vec::new())),
            ("DisableHostKVPItems".into(), CimValue::Boolean(false)),
        ]);
    }
    Some(Instance {
        class: class.class.into(),
        properties,
    })
}

/// The Msvm_GuestCommunicationServiceSettingData of a service on a VM: its
/// EnabledStatePolicy there (2, 3 or 8), the RequestedState of its object.
pub(crate) fn service_settings(object: &GuestCommunicationService) -> Instance {
    Instance {
        class: SERVICE_SETTINGS.into(),
        properties: vec![
            (
                "InstanceID".into(),
                text(&format!(
                    "guestcomm:{}\\{}",
                    object.system_name, object.name
                )),
            ),
            ("ElementName".into(), text(&object.element_name)),
            ("Name".into(), text(&object.name)),
            (
                "EnabledStatePolicy".into(),
                CimValue::Uint(u64::from(object.requested_state)),
            ),
        ],
    }
}

fn link(class: &str, roles: [(&str, InstanceName); 2]) -> Instance {
    Instance {
        class: class.into(),
        properties: roles
            .into_iter()
            .map(|(role, name)| (role.to_string(), CimValue::Reference(name)))
            .collect(),
    }
}

/// The associations of one VM's settings: `system` (its
/// Msvm_VirtualSystemSettingData), `devices` (its device instances, in
/// the order of components::DEVICES), `settings` (their setting data) and
/// `services` (its services' setting data).
pub(crate) fn links(
    repo: &Repository,
    vm: &VmRow,
    system: &Instance,
    devices: &[Instance],
    settings: &[Instance],
    services: &[Instance],
) -> Vec<Instance> {
    let vm_name = InstanceName::new(
        COMPUTER_SYSTEM,
        vec![
            ("CreationClassName".into(), text(COMPUTER_SYSTEM)),
            ("Name".into(), text(&vm.id.to_string())),
        ],
    );
    let system = system.path(repo);
    let mut out = vec![link(
        DEFINE_STATE,
        [("ManagedElement", vm_name), ("SettingData", system.clone())],
    )];
    for setting in settings {
        let path = setting.path(repo);
        out.push(link(
            SYSTEM_SETTINGS_COMPONENT,
            [
                ("GroupComponent", system.clone()),
                ("PartComponent", path.clone()),
            ],
        ));
        let device = devices.iter().find(|d| {
            SETTINGS_CLASSES
                .iter()
                .any(|c| c.class == setting.class && c.device.eq_ignore_ascii_case(&d.class))
        });
        if let Some(device) = device {
            out.push(link(
                DEFINE_STATE,
                [("ManagedElement", device.path(repo)), ("SettingData", path)],
            ));
        }
    }
    if let Some(interface) = settings.iter().find(|s| s.class == INTERFACE_SETTINGS) {
        let group = interface.path(repo);
        out.extend(services.iter().map(|s| {
            link(
                INTERFACE_SETTINGS_COMPONENT,
                [
                    ("GroupComponent", group.clone()),
                    ("PartComponent", s.path(repo)),
                ],
            )
        }));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_class_is_in_the_repository_where_it_belongs() {
        let repo = Repository::builtin().unwrap();
        for c in classes() {
            assert!(repo.class(c).is_some(), "{c}");
        }
        for c in &SETTINGS_CLASSES {
            assert!(
                repo.is_a(c.class, "CIM_ResourceAllocationSettingData"),
                "{}",
                c.class
            );
            assert!(components::device(c.device).is_some(), "{}", c.device);
        }
        for assoc in [
            DEFINE_STATE,
            SYSTEM_SETTINGS_COMPONENT,
            INTERFACE_SETTINGS_COMPONENT,
        ] {
            assert!(repo.class(assoc).unwrap().association, "{assoc}");
        }
    }

    #[test]
    fn the_vm_of_a_setting_data_is_in_its_instance_id() {
        let repo = Repository::builtin().unwrap();
        let name =
            |class: &str, id: &str| InstanceName::new(class, vec![("InstanceID".into(), text(id))]);
        let vm = "0f0e0d0c-0b0a-0908-0706-050403020100";
        for id in [
            format!("Microsoft:{vm}"),
            format!("Microsoft:{vm}\\57164f39-9115-4e78-ab55-382f3bd5422d"),
            format!("guestcomm:{vm}\\00004746-facb-11e6-bd58-64006a7986d3"),
        ] {
            assert_eq!(
                vm_id_of(&repo, &name(SYSTEM_SETTINGS, &id)),
                Some(vm),
                "{id}"
            );
        }
        assert_eq!(vm_id_of(&repo, &name(SYSTEM_SETTINGS, "no-colon")), None);
        assert_eq!(
            vm_id_of(&repo, &name("CIM_ConcreteJob", "Microsoft:x")),
            None
        );
    }
}
