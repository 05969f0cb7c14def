//! The instances WBEM serves, built from the daemon's state at each call:
//!
//! ```text
//! Msvm_ComputerSystem                  the host (Name = its host name) and each VM (Name = its id)
//! Msvm_GuestServiceInterfaceComponent  each VM's devices (module components): the interface
//! Msvm_*Component                      and the integration components, one of each per VM
//! Msvm_SystemDevice                    each VM -> each of its devices
//! Msvm_GuestCommunicationService       each registered service on each VM (ops::services::instances)
//! Msvm_GuestFileService, Guestcomm_*   the built-in integration services as their own class
//!                                      (policy::integration_instance)
//! Msvm_RegisteredGuestService          interface component -> each of the above on its VM
//! Msvm_VirtualSystemSettingData       each VM's settings, and under them (module settings)
//! Msvm_*ComponentSettingData           the settings of each of its devices (the interface's:
//!                                      its switch and default policy; the key-value
//!                                      exchange's: the host's items)
//! Msvm_GuestCommunicationServiceSettingData       each service's policy on each VM
//! Msvm_SettingsDefineState, Msvm_VirtualSystemSettingDataComponent,
//! Msvm_GuestServiceInterfaceSettingDataComponent  the links between them
//! Msvm_CopyFileToGuestJob              the CopyFilesToGuest jobs (module jobs)
//! Msvm_VirtualSystemManagementService  one, on the host (its methods: module management)
//! Msvm_HostedService                   the host -> that service
//! ```
//!
//! The service objects are those of the JSON API, turned into CIM values by
//! the types of their class in the repository ([`from_api`]): one mapping.
//! A built-in integration service is an Msvm_GuestCommunicationService and
//! also an object of its own class; where an answer would hold both, it
//! holds only the latter ([`one_per_service`]), so a query on
//! Msvm_GuestService has one object per service and VM.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use guestcomm_api::{GuestCommunicationService, HealthStatus};
use guestcomm_cim::value::{CimValue, Instance, InstanceName};
use guestcomm_cim::{CimType, Repository};
use guestcomm_protocol::integration::KvpEntries;
use uuid::Uuid;

use super::components::{
    self, available_states, DeviceState, GuestItems, INTERFACE, KVP_COMPONENT, SYSTEM_DEVICE,
};
use super::settings::{self, KVP_SETTINGS};
use crate::error::Error;
use crate::model::VmRow;
use crate::policy::{self, cim_datetime};
use crate::state::State;

/// Class of the VMs and the host.
pub(crate) const COMPUTER_SYSTEM: &str = "Msvm_ComputerSystem";
/// Class of the guest services' common base.
const GUEST_SERVICE: &str = "Msvm_GuestService";
/// Class of every service on every VM.
const COMMUNICATION_SERVICE: &str = "Msvm_GuestCommunicationService";
/// The association of an interface and its services.
pub(crate) const REGISTERED: &str = "Msvm_RegisteredGuestService";
/// The host's management service.
pub(crate) const MANAGEMENT_SERVICE: &str = "Msvm_VirtualSystemManagementService";
/// The association of the host and its management service.
const HOSTED_SERVICE: &str = "Msvm_HostedService";
/// The start of the InstanceID of guestcomm's own setting data (each
/// service's on each VM): `guestcomm:VM-ID\...`; Hyper-V's device setting
/// data have their DeviceID, `Microsoft:VM-ID\...`.
const SETTING_ID_PREFIX: &str = "guestcomm:";
/// The start of the InstanceID of setting data named as Hyper-V names them.
const MICROSOFT_ID_PREFIX: &str = "Microsoft:";

/// Everything the instances are made of, read once per operation.
pub(crate) struct Snapshot {
    /// The host's name.
    pub(crate) host: String,
    /// The VMs.
    pub(crate) vms: Vec<(VmRow, HealthStatus)>,
    /// The service objects of the JSON API, each service on each VM.
    pub(crate) services: Vec<GuestCommunicationService>,
    /// The jobs.
    pub(crate) jobs: Vec<Instance>,
    /// The guest's key-value items of each VM, once read
    /// ([`Snapshot::read_items`]).
    guest_items: HashMap<Uuid, GuestItems>,
    /// The host's key-value items of each VM, once read
    /// ([`Snapshot::read_items`]).
    host_items: HashMap<Uuid, KvpEntries>,
}

impl Snapshot {
    /// Reads the state.
    pub(crate) async fn read(state: &Arc<State>) -> Result<Self, Error> {
        let vms = state.db(|s| s.vms()).await?;
        let vms = vms
            .into_iter()
            .map(|vm| {
                let status = state.health.get(vm.id).status;
                (vm, status)
            })
            .collect();
        Ok(Self {
            host: crate::ops::integration::host_name(),
            vms,
            services: crate::ops::services::instances(state, None).await?,
            jobs: super::jobs::instances(&state.wbem_jobs),
            guest_items: HashMap::new(),
            host_items: HashMap::new(),
        })
    }

    /// Reads the key-value items of the VM whose id is `vm`, or of all,
    /// when an answer about `class` (`None`: any class) may hold key-value
    /// components or their setting data: the guest's from the agents
    /// (bounded: see [`components::read_guest_items`]), the host's from the
    /// database. Without this their item arrays are NULL.
    pub(crate) async fn read_items(
        &mut self,
        state: &Arc<State>,
        repo: &Repository,
        class: Option<&str>,
        vm: Option<&str>,
    ) {
        let may_hold = |c: &str| class.is_none_or(|class| repo.is_a(c, class));
        let vms: Vec<&VmRow> = self
            .vms
            .iter()
            .map(|(vm, _)| vm)
            .filter(|v| vm.is_none_or(|id| v.id.to_string().eq_ignore_ascii_case(id)))
            .collect();
        if may_hold(KVP_SETTINGS) {
            let ids: Vec<Uuid> = vms.iter().map(|vm| vm.id).collect();
            let read = state
                .db(move |s| {
                    ids.into_iter()
                        .map(|id| Ok((id, s.kvp_entries(id)?)))
                        .collect::<Result<HashMap<_, _>, crate::store::StoreError>>()
                })
                .await;
            match read {
                Ok(items) => self.host_items = items,
                Err(e) => {
                    tracing::debug!(error = %guestcomm_protocol::error_chain(&e), "WBEM: host key-value pools not read")
                }
            }
        }
        if may_hold(KVP_COMPONENT) {
            self.guest_items = components::read_guest_items(state, repo, vms.into_iter()).await;
        }
    }

    /// Each device of the VM whose id is `vm` (or of every VM).
    fn devices(&self, vm: Option<&str>) -> Vec<Instance> {
        let mut out = Vec::new();
        for (row, health) in self
            .vms
            .iter()
            .filter(|(row, _)| vm.is_none_or(|id| row.id.to_string().eq_ignore_ascii_case(id)))
        {
            for device in &components::DEVICES {
                let state = DeviceState {
                    enabled: self.device_state(row, device),
                    health: health.clone(),
                    items: self.guest_items.get(&row.id),
                };
                out.push(components::instance(device, row, &state));
            }
        }
        out
    }

    /// The EnabledState of `device` of `vm`: the interface switch, or the
    /// effective state of the component's service.
    fn device_state(&self, vm: &VmRow, device: &components::Device) -> u16 {
        match device.service {
            None => interface_state(vm),
            Some(service) => self.enabled_state(vm, &service.id().to_string()),
        }
    }

    /// Each VM's settings, its devices' and its services' setting data,
    /// and the links between them and to the VM and its devices (of the
    /// VM whose id is `vm`, or of all).
    fn settings(&self, repo: &Repository, vm: Option<&str>) -> (Vec<Instance>, Vec<Instance>) {
        let (mut objects, mut links) = (Vec::new(), Vec::new());
        for (row, _) in self
            .vms
            .iter()
            .filter(|(row, _)| vm.is_none_or(|id| row.id.to_string().eq_ignore_ascii_case(id)))
        {
            let id = row.id.to_string();
            let system = settings::system_settings(row);
            let devices = self.devices(Some(&id));
            let device_settings: Vec<Instance> = components::DEVICES
                .iter()
                .filter_map(|d| {
                    let enabled = self.device_state(row, d);
                    settings::device_settings(repo, d, row, enabled, self.host_items.get(&row.id))
                })
                .collect();
            let services: Vec<Instance> = self
                .services
                .iter()
                .filter(|s| s.system_name.eq_ignore_ascii_case(&id))
                .map(settings::service_settings)
                .collect();
            links.extend(settings::links(
                repo,
                row,
                &system,
                &devices,
                &device_settings,
                &services,
            ));
            objects.push(system);
            objects.extend(device_settings);
            objects.extend(services);
        }
        (objects, links)
    }

    /// The effective state of service `guid` on `vm` (3 when unknown).
    fn enabled_state(&self, vm: &VmRow, guid: &str) -> u16 {
        let id = vm.id.to_string();
        self.services
            .iter()
            .find(|s| s.system_name.eq_ignore_ascii_case(&id) && s.name.eq_ignore_ascii_case(guid))
            .map_or(crate::model::DISABLED, |s| s.enabled_state)
    }

    /// Msvm_SystemDevice: each VM and each of its devices (of the VM `vm`,
    /// or of all).
    fn system_devices(&self, repo: &Repository, vm: Option<&str>) -> Vec<Instance> {
        self.devices(vm)
            .iter()
            .filter_map(|d| {
                let vm_id = d.get("SystemName").and_then(CimValue::text)?;
                Some(components::system_device(repo, &vm_id, d))
            })
            .collect()
    }

    /// Every instance of `class` and its subclasses, one object per
    /// service and VM ([`one_per_service`]).
    pub(crate) fn instances_of(&self, repo: &Repository, class: &str) -> Vec<Instance> {
        one_per_service(repo, self.all_of(repo, class))
    }

    /// Every instance of `class` and its subclasses, a built-in
    /// integration service both as Msvm_GuestCommunicationService and as
    /// its own class where both are.
    fn all_of(&self, repo: &Repository, class: &str) -> Vec<Instance> {
        let wants = |c: &str| repo.is_a(c, class);
        let mut out = Vec::new();
        if wants(COMPUTER_SYSTEM) {
            out.push(host_system(&self.host));
            out.extend(self.vms.iter().map(|(vm, status)| vm_system(vm, status)));
        }
        if wants(MANAGEMENT_SERVICE) {
            out.push(management_service(&self.host));
        }
        if wants(HOSTED_SERVICE) {
            out.push(hosted_service(repo, &self.host));
        }
        if components::DEVICES.iter().any(|d| wants(d.class)) {
            out.extend(self.devices(None).into_iter().filter(|d| wants(&d.class)));
        }
        if wants(SYSTEM_DEVICE) {
            out.extend(self.system_devices(repo, None));
        }
        out.extend(
            self.guest_services(None)
                .into_iter()
                .filter(|s| wants(&s.creation_class_name))
                .map(|s| from_api(repo, &s)),
        );
        if wants(REGISTERED) {
            out.extend(self.registrations(repo, None));
        }
        if settings::classes().any(wants) {
            let (objects, links) = self.settings(repo, None);
            out.extend(objects.into_iter().chain(links).filter(|i| wants(&i.class)));
        }
        out.extend(self.jobs.iter().filter(|j| wants(&j.class)).cloned());
        out
    }

    /// The instance named `name`, if it exists.
    pub(crate) fn find(&self, repo: &Repository, name: &InstanceName) -> Option<Instance> {
        self.all_of(repo, &name.class)
            .into_iter()
            .find(|i| i.path(repo).same(name))
    }

    /// The associations that may involve `source` (those of its VM: the
    /// VM itself, or what names it by its SystemName key), and the
    /// instances at their ends: per-VM work whatever the number of VMs.
    pub(crate) fn links_of(
        &self,
        repo: &Repository,
        source: &InstanceName,
    ) -> (Vec<Instance>, Vec<Instance>) {
        let Some(vm_id) = vm_id_of(repo, source) else {
            return (Vec::new(), Vec::new());
        };
        if vm_id.eq_ignore_ascii_case(&self.host) {
            // The host and its management service.
            return (
                vec![hosted_service(repo, &self.host)],
                vec![host_system(&self.host), management_service(&self.host)],
            );
        }
        let mut links = self.registrations(repo, Some(vm_id));
        links.extend(self.system_devices(repo, Some(vm_id)));
        let (settings, settings_links) = self.settings(repo, Some(vm_id));
        links.extend(settings_links);
        let mut ends: Vec<Instance> = self
            .vms
            .iter()
            .filter(|(vm, _)| vm.id.to_string().eq_ignore_ascii_case(vm_id))
            .map(|(vm, status)| vm_system(vm, status))
            .collect();
        ends.extend(self.devices(Some(vm_id)));
        ends.extend(
            self.guest_services(Some(vm_id))
                .iter()
                .map(|s| from_api(repo, s)),
        );
        ends.extend(settings);
        (links, ends)
    }

    /// Each guest service object (of the VM whose id is `vm`, or of all):
    /// every service as Msvm_GuestCommunicationService, the built-in
    /// integration services also as their own class.
    fn guest_services(&self, vm: Option<&str>) -> Vec<GuestCommunicationService> {
        let on_vm = |s: &&GuestCommunicationService| {
            vm.is_none_or(|id| s.system_name.eq_ignore_ascii_case(id))
        };
        let mut all: Vec<GuestCommunicationService> =
            self.services.iter().filter(on_vm).cloned().collect();
        all.extend(
            self.services
                .iter()
                .filter(on_vm)
                .cloned()
                .filter_map(policy::integration_instance),
        );
        all
    }

    /// Msvm_RegisteredGuestService: each VM's interface component and each
    /// guest service object on that VM (of the VM `vm`, or of all).
    fn registrations(&self, repo: &Repository, vm: Option<&str>) -> Vec<Instance> {
        self.guest_services(vm)
            .iter()
            .map(|s| {
                let antecedent = InstanceName::new(
                    INTERFACE,
                    components::device_keys(&components::INTERFACE_DEVICE, &s.system_name),
                );
                let dependent = from_api(repo, s).path(repo);
                Instance {
                    class: REGISTERED.into(),
                    properties: vec![
                        ("Antecedent".into(), CimValue::Reference(antecedent)),
                        ("Dependent".into(), CimValue::Reference(dependent)),
                    ],
                }
            })
            .collect()
    }
}

fn key(name: &str, value: &str) -> (String, CimValue) {
    (name.into(), CimValue::String(value.into()))
}

fn text(value: &str) -> CimValue {
    CimValue::String(value.into())
}

/// The host as an Msvm_ComputerSystem, as Hyper-V lists it.
fn host_system(host: &str) -> Instance {
    Instance {
        class: COMPUTER_SYSTEM.into(),
        properties: vec![
            key("CreationClassName", COMPUTER_SYSTEM),
            key("Name", host),
            ("ElementName".into(), text(host)),
            ("Caption".into(), text("Hosting Computer System")),
            ("Description".into(), text("The host running guestcommd")),
            ("EnabledState".into(), CimValue::Uint(2)),
            ("Status".into(), text("OK")),
            (
                "OperationalStatus".into(),
                CimValue::Array(vec![CimValue::Uint(2)]),
            ),
            ("HealthState".into(), CimValue::Uint(5)),
            // guestcomm does not start or stop hosts.
            available_states(&[]),
        ],
    }
}

/// The host's Msvm_VirtualSystemManagementService, as Hyper-V names it.
fn management_service(host: &str) -> Instance {
    Instance {
        class: MANAGEMENT_SERVICE.into(),
        properties: vec![
            key("SystemCreationClassName", COMPUTER_SYSTEM),
            key("SystemName", host),
            key("CreationClassName", MANAGEMENT_SERVICE),
            key("Name", "vmms"),
            (
                "ElementName".into(),
                text("Virtual System Management Service"),
            ),
            ("EnabledState".into(), CimValue::Uint(2)),
            ("HealthState".into(), CimValue::Uint(5)),
            ("Started".into(), CimValue::Boolean(true)),
            ("Status".into(), text("OK")),
            (
                "OperationalStatus".into(),
                CimValue::Array(vec![CimValue::Uint(2)]),
            ),
            // It runs while guestcommd does.
            available_states(&[]),
        ],
    }
}

/// Msvm_HostedService: the host and its management service.
fn hosted_service(repo: &Repository, host: &str) -> Instance {
    Instance {
        class: HOSTED_SERVICE.into(),
        properties: vec![
            (
                "Antecedent".into(),
                CimValue::Reference(host_system(host).path(repo)),
            ),
            (
                "Dependent".into(),
                CimValue::Reference(management_service(host).path(repo)),
            ),
        ],
    }
}

/// The InstanceID of a setting data of the VM whose id is `vm_id`:
/// `guestcomm:VM-ID\what`.
pub(crate) fn setting_id(vm_id: &str, what: &str) -> String {
    format!("{SETTING_ID_PREFIX}{vm_id}\\{what}")
}

/// The VM id and the rest of a setting data's InstanceID
/// ([`setting_id`]'s inverse; also Hyper-V's `Microsoft:VM-ID\\DEVICE`).
pub(crate) fn setting_owner(instance_id: &str) -> Option<(&str, &str)> {
    [SETTING_ID_PREFIX, MICROSOFT_ID_PREFIX]
        .iter()
        .find_map(|prefix| {
            instance_id
                .get(..prefix.len())
                .filter(|p| p.eq_ignore_ascii_case(prefix))?;
            instance_id[prefix.len()..].split_once('\\')
        })
}

/// A VM as an Msvm_ComputerSystem: Name is its id, EnabledState 2 while
/// its agent answers (guestcomm does not run VMs: it only knows that), or,
/// as Hyper-V's, 3 when its hypervisor reports it off and 32768 paused.
fn vm_system(vm: &VmRow, status: &HealthStatus) -> Instance {
    let enabled = match status {
        HealthStatus::Ok => 2,
        HealthStatus::Off => 3,
        HealthStatus::Paused => 32768,
        _ => 0,
    };
    let (code, description, health_state) = components::operational(status);
    Instance {
        class: COMPUTER_SYSTEM.into(),
        properties: vec![
            key("CreationClassName", COMPUTER_SYSTEM),
            key("Name", &vm.id.to_string()),
            ("ElementName".into(), text(&vm.name)),
            ("Caption".into(), text("Virtual Machine")),
            (
                "Description".into(),
                text("A virtual machine managed by guestcommd"),
            ),
            (
                "InstallDate".into(),
                CimValue::Datetime(cim_datetime(vm.created_at)),
            ),
            ("EnabledState".into(), CimValue::Uint(enabled)),
            ("Status".into(), text(status.as_str())),
            (
                "OperationalStatus".into(),
                CimValue::Array(vec![CimValue::Uint(code)]),
            ),
            (
                "StatusDescriptions".into(),
                CimValue::Array(vec![text(description)]),
            ),
            ("HealthState".into(), CimValue::Uint(health_state)),
            // guestcomm does not start or stop VMs: their hypervisor does.
            available_states(&[]),
        ],
    }
}

/// The EnabledState of a VM's interface: 2 on, 3 off.
fn interface_state(vm: &VmRow) -> u16 {
    if vm.interface_enabled {
        crate::model::ENABLED
    } else {
        crate::model::DISABLED
    }
}

/// A service object of the JSON API as an instance of its
/// CreationClassName: each of the class's properties from the JSON field
/// of the same name, typed by the class (fields that are no CIM property,
/// such as `guestcomm_vm_name`, are left out).
pub(crate) fn from_api(repo: &Repository, object: &GuestCommunicationService) -> Instance {
    let class = object.creation_class_name.clone();
    let json = serde_json::to_value(object).unwrap_or_default();
    let mut properties: Vec<(String, CimValue)> = repo
        .properties(&class)
        .into_iter()
        .filter_map(|p| {
            let v = json.get(&p.name)?;
            let value = match (&p.cim_type, v) {
                (_, serde_json::Value::Null) => CimValue::Null,
                (CimType::Boolean, v) => CimValue::Boolean(v.as_bool()?),
                (CimType::Uint(_), v) => CimValue::Uint(v.as_u64()?),
                (CimType::Sint(_), v) => CimValue::Sint(v.as_i64()?),
                (CimType::Datetime, v) => CimValue::Datetime(v.as_str()?.into()),
                (CimType::String, v) => CimValue::String(v.as_str()?.into()),
                _ => return None,
            };
            Some((p.name.clone(), value))
        })
        .collect();
    if repo.is_a(&class, GUEST_SERVICE) {
        properties.push(components::available_states(&components::POLICY_STATES));
    }
    Instance { class, properties }
}

/// The id of the VM `name` is or belongs to: the Name of an
/// Msvm_ComputerSystem, the VM in a setting data's InstanceID, else the
/// SystemName key.
pub(crate) fn vm_id_of<'a>(repo: &Repository, name: &'a InstanceName) -> Option<&'a str> {
    if repo.is_a(&name.class, COMPUTER_SYSTEM) {
        name.key_text("Name")
    } else if repo.is_a(&name.class, "CIM_SettingData") {
        settings::vm_id_of(repo, name)
    } else {
        name.key_text("SystemName")
    }
}

/// The (VM, service GUID) of a guest service object, or of the Dependent
/// of an Msvm_RegisteredGuestService, and whether that object is the
/// plain Msvm_GuestCommunicationService.
fn service_of(repo: &Repository, item: &Instance) -> Option<((String, String), bool)> {
    let name = if item.class.eq_ignore_ascii_case(REGISTERED) {
        match item.get("Dependent") {
            Some(CimValue::Reference(n)) => n.clone(),
            _ => return None,
        }
    } else if repo.is_a(&item.class, GUEST_SERVICE) {
        item.path(repo)
    } else {
        return None;
    };
    let key = (
        name.key_text("SystemName")?.to_ascii_lowercase(),
        name.key_text("Name")?.to_ascii_lowercase(),
    );
    Some((key, name.class.eq_ignore_ascii_case(COMMUNICATION_SERVICE)))
}

/// `items` with one object per service and VM: where a built-in
/// integration service is there both as Msvm_GuestCommunicationService
/// and as its own class (or so are two links to it), only the latter.
pub(crate) fn one_per_service(repo: &Repository, items: Vec<Instance>) -> Vec<Instance> {
    let own_class: HashSet<(String, String)> = items
        .iter()
        .filter_map(|i| service_of(repo, i))
        .filter(|(_, plain)| !plain)
        .map(|(key, _)| key)
        .collect();
    items
        .into_iter()
        .filter(|i| match service_of(repo, i) {
            Some((key, true)) => !own_class.contains(&key),
            _ => true,
        })
        .collect()
}

/// The VM named by an instance's `SystemName` key (a VM id), for methods.
pub(crate) fn vm_of<'a>(snapshot: &'a Snapshot, name: &InstanceName) -> Option<&'a VmRow> {
    let id = name.key_text("SystemName")?;
    snapshot
        .vms
        .iter()
        .map(|(vm, _)| vm)
        .find(|vm| vm.id.to_string().eq_ignore_ascii_case(id))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(class: &str, vm: &str, guid: &str) -> Instance {
        Instance {
            class: class.into(),
            properties: vec![
                key("SystemCreationClassName", COMPUTER_SYSTEM),
                key("SystemName", vm),
                key("CreationClassName", class),
                key("Name", guid),
            ],
        }
    }

    #[test]
    fn an_answer_holds_one_object_per_service_and_vm() {
        let repo = Repository::builtin().unwrap();
        let kvp = "00004746-facb-11e6-bd58-64006a7986d3";
        let exec = "00004744-facb-11e6-bd58-64006a7986d3";
        let items = vec![
            service(COMMUNICATION_SERVICE, "vm-a", kvp),
            service(COMMUNICATION_SERVICE, "vm-a", exec),
            service(COMMUNICATION_SERVICE, "vm-b", kvp),
            service("Guestcomm_KvpExchangeService", "vm-a", kvp),
        ];
        let kept: Vec<(String, String)> = one_per_service(&repo, items)
            .iter()
            .map(|i| {
                (
                    i.class.clone(),
                    i.get("SystemName").unwrap().text().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            kept,
            [
                (COMMUNICATION_SERVICE.to_string(), "vm-a".to_string()),
                (COMMUNICATION_SERVICE.to_string(), "vm-b".to_string()),
                (
                    "Guestcomm_KvpExchangeService".to_string(),
                    "vm-a".to_string()
                ),
            ],
            "vm-a's kvp only as its own class; exec and vm-b's kvp kept"
        );
    }

    #[test]
    fn the_vm_of_a_name_is_its_own_name_or_its_system_name() {
        let repo = Repository::builtin().unwrap();
        let vm = InstanceName::new(COMPUTER_SYSTEM, vec![key("Name", "vm-a")]);
        assert_eq!(vm_id_of(&repo, &vm), Some("vm-a"));
        let device = service(COMMUNICATION_SERVICE, "vm-b", "x").path(&repo);
        assert_eq!(vm_id_of(&repo, &device), Some("vm-b"));
    }

    #[test]
    fn api_objects_become_instances_typed_by_their_class() {
        let repo = Repository::builtin().unwrap();
        let object = GuestCommunicationService {
            caption: "guestcomm Shutdown".into(),
            creation_class_name: "Guestcomm_ShutdownService".into(),
            description: String::new(),
            element_name: "guestcomm Shutdown".into(),
            install_date: None,
            name: "00004747-facb-11e6-bd58-64006a7986d3".into(),
            started: false,
            start_mode: "Automatic".into(),
            status: "OK".into(),
            system_creation_class_name: COMPUTER_SYSTEM.into(),
            system_name: "vm-id".into(),
            enabled_state: 3,
            requested_state: 8,
            vm_name: "web1".into(),
        };
        let inst = from_api(&repo, &object);
        assert_eq!(inst.class, "Guestcomm_ShutdownService");
        assert_eq!(inst.get("EnabledState"), Some(&CimValue::Uint(3)));
        assert_eq!(inst.get("Started"), Some(&CimValue::Boolean(false)));
        assert_eq!(inst.get("InstallDate"), Some(&CimValue::Null));
        assert_eq!(inst.get("guestcomm_vm_name"), None, "not a CIM property");
        let path = inst.path(&repo);
        assert_eq!(path.keys.len(), 4);
        assert_eq!(path.key_text("SystemName"), Some("vm-id"));
        assert_eq!(
            path.key_text("CreationClassName"),
            Some("Guestcomm_ShutdownService")
        );
    }
}
