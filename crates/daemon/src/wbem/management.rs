//! Msvm_VirtualSystemManagementService's methods, as a Hyper-V script calls
//! them on the host's one instance: a VM's host key-value pairs
//! (AddKvpItems, ModifyKvpItems, RemoveKvpItems), the guest communication
//! services (AddGuestServiceSettings registers, ModifyGuestServiceSettings
//! sets a VM's policy, RemoveGuestServiceSettings unregisters) and a VM's
//! Guest Service Interface (ModifyResourceSettings). Each calls the JSON
//! API's operation (`ops`), so both behave alike.
//!
//! ```text
//! parameters read and checked, every item   -> 32773 Invalid parameter, nothing changed
//! the operation (one store transaction for the pairs)
//!   -> 0, or Hyper-V's code for its error (refusal::return_code), the reason in the audit record
//! ```
//!
//! Every method runs to completion before it answers: none starts a job.

use std::sync::Arc;

use guestcomm_cim::value::{CimValue, Instance, InstanceName};
use guestcomm_cim::xml::request::{parse_embedded_instance, Call, ParamValue};
use guestcomm_cim::xml::response::MethodReturn;
use guestcomm_cim::{CimType, ReturnValue};
use guestcomm_protocol::ServiceId;

use super::components::INTERFACE_DEVICE;
use super::objects::{self, Snapshot};
use super::refusal::return_code;
use super::settings::{INTERFACE_SETTINGS, SERVICE_SETTINGS};
use crate::audit;
use crate::error::Error;
use crate::limits::MAX_WBEM_ITEMS_PER_CALL;
use crate::model::VmRow;
use crate::state::State;
use crate::store::KvpBatch;

/// The class of the key-value items in DataItems.
const KVP_ITEM: &str = "Msvm_KvpExchangeDataItem";

/// Why a method did not do what it was asked: its return value and the
/// reason, for the audit record.
struct Refusal {
    code: ReturnValue,
    reason: String,
}

impl Refusal {
    fn invalid(reason: String) -> Self {
        Self {
            code: ReturnValue::InvalidParameter,
            reason,
        }
    }

    fn of(e: &Error) -> Self {
        Self {
            code: return_code(e.kind()),
            reason: guestcomm_protocol::error_chain(e),
        }
    }
}

/// The outputs of a method that completed.
type Outputs = Vec<(String, CimValue, CimType)>;

/// Runs `method` of the management service; a failure is its code, with
/// the reason in `record`.
pub(super) async fn run(
    state: &Arc<State>,
    call: &Call,
    method: &str,
    snapshot: &Snapshot,
    record: &mut audit::Record,
) -> MethodReturn {
    let result = match method {
        "AddKvpItems" => kvp_items(state, call, snapshot, KvpBatch::Add, record).await,
        "ModifyKvpItems" => kvp_items(state, call, snapshot, KvpBatch::Modify, record).await,
        "RemoveKvpItems" => kvp_items(state, call, snapshot, KvpBatch::Remove, record).await,
        "AddGuestServiceSettings" => add_services(state, call, snapshot, record).await,
        "ModifyGuestServiceSettings" => modify_services(state, call, snapshot, record).await,
        "RemoveGuestServiceSettings" => remove_services(state, call, snapshot, record).await,
        "ModifyResourceSettings" => modify_interfaces(state, call, snapshot, record).await,
        other => Err(Refusal {
            code: ReturnValue::Unsupported,
            reason: format!("{other} is not supported on the management service"),
        }),
    };
    let (code, outputs) = match result {
        Ok(outputs) => (ReturnValue::Completed, outputs),
        Err(refusal) => {
            tracing::info!(method, reason = %refusal.reason, "WBEM management method refused");
            record.error = Some(refusal.reason);
            (refusal.code, Vec::new())
        }
    };
    MethodReturn {
        value: CimValue::Uint(code.code().into()),
        value_type: CimType::Uint(32),
        outputs,
    }
}

/// The embedded instances of array parameter `name`: 1 to
/// [`MAX_WBEM_ITEMS_PER_CALL`], each of class `class`.
fn embedded(call: &Call, name: &str, class: &str) -> Result<Vec<Instance>, Refusal> {
    let texts: Vec<&str> = match call.param(name).map(|p| &p.value) {
        Some(ParamValue::Array(items)) => items.iter().flatten().map(String::as_str).collect(),
        Some(ParamValue::Value(one)) => vec![one.as_str()],
        _ => {
            return Err(Refusal::invalid(format!(
                "{name} must hold {class} instances embedded as CIM-XML text"
            )))
        }
    };
    if texts.is_empty() || texts.len() > MAX_WBEM_ITEMS_PER_CALL {
        return Err(Refusal::invalid(format!(
            "{name} holds {} items: 1 to {MAX_WBEM_ITEMS_PER_CALL} per call",
            texts.len()
        )));
    }
    texts
        .into_iter()
        .enumerate()
        .map(|(i, text)| {
            let inst = parse_embedded_instance(text)
                .map_err(|e| Refusal::invalid(format!("{name}[{i}]: {e}")))?;
            if inst.class.eq_ignore_ascii_case(class) {
                Ok(inst)
            } else {
                Err(Refusal::invalid(format!(
                    "{name}[{i}]: an {} is not an {class}",
                    inst.class
                )))
            }
        })
        .collect()
}

/// String property `name` of `inst`: `None` when absent or NULL.
fn text_of(inst: &Instance, name: &str) -> Result<Option<String>, Refusal> {
    match inst.get(name) {
        None | Some(CimValue::Null) => Ok(None),
        Some(CimValue::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(Refusal::invalid(format!(
            "{} {name} must be a string",
            inst.class
        ))),
    }
}

/// Unsigned property `name` of `inst`: `None` when absent or NULL.
fn number_of(inst: &Instance, name: &str) -> Result<Option<u16>, Refusal> {
    match inst.get(name) {
        None | Some(CimValue::Null) => Ok(None),
        Some(&CimValue::Uint(n)) => u16::try_from(n)
            .map(Some)
            .map_err(|_| Refusal::invalid(format!("{} {name} {n} is out of range", inst.class))),
        Some(_) => Err(Refusal::invalid(format!(
            "{} {name} must be an unsigned number",
            inst.class
        ))),
    }
}

/// The VM whose id is `id`.
fn vm_by_id<'s>(snapshot: &'s Snapshot, id: &str) -> Option<&'s VmRow> {
    snapshot
        .vms
        .iter()
        .map(|(vm, _)| vm)
        .find(|vm| vm.id.to_string().eq_ignore_ascii_case(id))
}

/// The VM that setting data `instance_id` (`guestcomm:VM-ID\\what`) belongs
/// to, and its `what`.
fn setting_vm<'s>(
    snapshot: &'s Snapshot,
    instance_id: &str,
) -> Result<(&'s VmRow, String), Refusal> {
    let (vm_id, what) = objects::setting_owner(instance_id).ok_or_else(|| {
        Refusal::invalid(format!(
            "InstanceID {instance_id:?} names no setting data of guestcomm (guestcomm:VM-ID\\...)"
        ))
    })?;
    let vm = vm_by_id(snapshot, vm_id)
        .ok_or_else(|| Refusal::invalid(format!("InstanceID {instance_id:?} names no VM")))?;
    Ok((vm, what.to_string()))
}

/// The embedded setting data of parameter `name`, each with its
/// InstanceID, its VM and the rest of its InstanceID ([`setting_vm`]).
fn settings_of_vms<'s>(
    call: &Call,
    snapshot: &'s Snapshot,
    name: &str,
    class: &str,
) -> Result<Vec<(Instance, String, &'s VmRow, String)>, Refusal> {
    embedded(call, name, class)?
        .into_iter()
        .map(|inst| {
            let instance_id = text_of(&inst, "InstanceID")?.unwrap_or_default();
            let (vm, what) = setting_vm(snapshot, &instance_id)?;
            Ok((inst, instance_id, vm, what))
        })
        .collect()
}

/// A reference to setting data `class` with `instance_id`.
fn setting_ref(class: &str, instance_id: String) -> CimValue {
    CimValue::Reference(InstanceName::new(
        class,
        vec![("InstanceID".into(), CimValue::String(instance_id))],
    ))
}

/// An output array of references to setting data.
fn resulting(name: &str, refs: Vec<CimValue>) -> Outputs {
    vec![(
        name.into(),
        CimValue::Array(refs),
        CimType::Reference("CIM_SettingData".into()),
    )]
}

/// Notes `what` after the method and its target in the audit record.
fn note(record: &mut audit::Record, what: &str) {
    record.arguments = audit::arguments(&format!("{}; {what}", record.arguments));
}

/// Notes each change (its VM, what) in the audit record, and the VM when
/// all concern one.
fn note_changes<'a>(
    record: &mut audit::Record,
    changes: impl Iterator<Item = (&'a String, String)>,
) {
    let (vms, what): (Vec<&String>, Vec<String>) = changes.unzip();
    note(record, &what.join(", "));
    if let Some(first) = vms.first() {
        if vms.iter().all(|vm| vm == first) {
            record.vm = Some((*first).clone());
        }
    }
}

/// EnabledStatePolicy of a service's setting data: 2, 3 or 8 (Deferred).
fn policy_of(inst: &Instance, id: &str) -> Result<Option<u16>, Refusal> {
    match number_of(inst, "EnabledStatePolicy")? {
        p @ (None | Some(2 | 3 | 8)) => Ok(p),
        Some(other) => Err(Refusal::invalid(format!(
            "service {id}: EnabledStatePolicy {other}: expected 2 (enabled), 3 (disabled) or 8 (deferred)"
        ))),
    }
}

/// AddKvpItems, ModifyKvpItems, RemoveKvpItems: the VM's external (host)
/// pool, all items or none ([`crate::ops::integration::kvp_batch`]).
async fn kvp_items(
    state: &Arc<State>,
    call: &Call,
    snapshot: &Snapshot,
    batch: KvpBatch,
    record: &mut audit::Record,
) -> Result<Outputs, Refusal> {
    let vm = match call.param("TargetSystem").map(|p| &p.value) {
        Some(ParamValue::InstanceName(target)) => {
            let id = target.key_text("Name").unwrap_or_default();
            vm_by_id(snapshot, id).ok_or_else(|| {
                Refusal::invalid(format!(
                    "TargetSystem {id:?} is no VM of this host (its Name is the VM's id)"
                ))
            })?
        }
        _ => {
            return Err(Refusal::invalid(
                "TargetSystem must be a reference to the VM's Msvm_ComputerSystem".into(),
            ))
        }
    };
    record.vm = Some(vm.name.clone());
    let mut items = Vec::new();
    for (i, inst) in embedded(call, "DataItems", KVP_ITEM)?.iter().enumerate() {
        let at = |r: Refusal| Refusal::invalid(format!("DataItems[{i}]: {}", r.reason));
        let key = text_of(inst, "Name")
            .map_err(at)?
            .filter(|k| !k.is_empty())
            .ok_or_else(|| Refusal::invalid(format!("DataItems[{i}]: Name is empty")))?;
        let data = text_of(inst, "Data").map_err(at)?;
        let data = match (batch, data) {
            (KvpBatch::Remove, data) => data.unwrap_or_default(),
            (_, Some(data)) => data,
            (_, None) => return Err(Refusal::invalid(format!("DataItems[{i}]: Data is missing"))),
        };
        match number_of(inst, "Source").map_err(at)? {
            None | Some(0) => {}
            Some(other) => {
                return Err(Refusal::invalid(format!(
                    "DataItems[{i}]: Source {other}: the host writes only its own pool (Source 0)"
                )))
            }
        }
        items.push((key, data));
    }
    let keys: Vec<&str> = items.iter().map(|(k, _)| k.as_str()).collect();
    note(record, &format!("keys: {}", keys.join(", ")));
    let written = crate::ops::integration::kvp_batch(state, vm.name.clone(), batch, items)
        .await
        .map_err(|e| Refusal::of(&e))?;
    if !written.delivered {
        note(record, "stored; delivered at the agent's next contact");
    }
    Ok(Vec::new())
}

/// A guest communication service's setting data as a Hyper-V script sends
/// it: the service's GUID (Name), and what the method needs of the rest.
struct ServiceSetting {
    id: ServiceId,
    element_name: Option<String>,
    description: Option<String>,
    policy: Option<u16>,
}

fn service_setting(inst: &Instance) -> Result<ServiceSetting, Refusal> {
    let name = text_of(inst, "Name")?.unwrap_or_default();
    let id = crate::ops::services::parse_id(&name).map_err(|e| Refusal::of(&e))?;
    Ok(ServiceSetting {
        id,
        element_name: text_of(inst, "ElementName")?,
        description: text_of(inst, "Description")?,
        policy: policy_of(inst, &name)?,
    })
}

/// The VM named by AddGuestServiceSettings' AffectedConfiguration: its
/// Msvm_ComputerSystem (Name), a setting data whose InstanceID is
/// `Microsoft:VM-ID` (Hyper-V's Msvm_VirtualSystemSettingData) or one of
/// guestcomm's (`guestcomm:VM-ID\\...`); none when NULL.
fn affected_vm<'s>(snapshot: &'s Snapshot, call: &Call) -> Result<Option<&'s VmRow>, Refusal> {
    let target = match call.param("AffectedConfiguration").map(|p| &p.value) {
        None | Some(ParamValue::Null) => return Ok(None),
        Some(ParamValue::InstanceName(target)) => target,
        Some(_) => {
            return Err(Refusal::invalid(
                "AffectedConfiguration must be a reference to the VM".into(),
            ))
        }
    };
    let id = match (target.key_text("Name"), target.key_text("InstanceID")) {
        (Some(name), _) => Some(name),
        (None, Some(id)) => id
            .strip_prefix("Microsoft:")
            .or_else(|| objects::setting_owner(id).map(|(vm, _)| vm)),
        (None, None) => None,
    };
    id.and_then(|id| vm_by_id(snapshot, id))
        .map(Some)
        .ok_or_else(|| Refusal::invalid(format!("AffectedConfiguration {target} names no VM")))
}

/// AddGuestServiceSettings: registers each service (host-wide, as
/// `guestcomm service register`), then sets its EnabledStatePolicy on the
/// affected VM, if any. None may be registered yet.
async fn add_services(
    state: &Arc<State>,
    call: &Call,
    snapshot: &Snapshot,
    record: &mut audit::Record,
) -> Result<Outputs, Refusal> {
    let vm = affected_vm(snapshot, call)?;
    if let Some(vm) = vm {
        record.vm = Some(vm.name.clone());
    }
    let settings = embedded(call, "GuestServiceSettings", SERVICE_SETTINGS)?
        .iter()
        .map(service_setting)
        .collect::<Result<Vec<_>, _>>()?;
    let registered = crate::ops::services::list(state)
        .await
        .map_err(|e| Refusal::of(&e))?;
    for s in &settings {
        if registered.iter().any(|r| r.id == s.id) {
            return Err(Refusal {
                code: ReturnValue::Failed,
                reason: format!("guest communication service {} is already registered (ModifyGuestServiceSettings changes its policy)", s.id),
            });
        }
        if s.element_name.as_deref().is_none_or(str::is_empty) {
            return Err(Refusal::invalid(format!(
                "service {}: ElementName (its name) is missing",
                s.id
            )));
        }
    }
    let ids: Vec<String> = settings.iter().map(|s| s.id.to_string()).collect();
    note(record, &format!("register: {}", ids.join(", ")));
    let mut refs = Vec::new();
    for s in settings {
        crate::ops::services::register(
            state,
            s.id,
            s.element_name.as_deref().unwrap_or_default(),
            s.description.unwrap_or_default(),
            None,
        )
        .await
        .map_err(|e| Refusal::of(&e))?;
        if let Some(vm) = vm {
            if let Some(policy) = s.policy {
                crate::ops::services::set_policy(state, s.id, Some(vm.name.clone()), policy)
                    .await
                    .map_err(|e| Refusal::of(&e))?;
            }
            refs.push(setting_ref(
                SERVICE_SETTINGS,
                objects::setting_id(&vm.id.to_string(), &s.id.to_string()),
            ));
        }
    }
    Ok(if refs.is_empty() {
        Vec::new()
    } else {
        resulting("ResultingGuestServiceSettings", refs)
    })
}

/// ModifyGuestServiceSettings: each setting data (by its InstanceID) gets
/// its EnabledStatePolicy on its VM (2, 3 or 8), as `guestcomm service
/// enable|disable|defer ID --vm VM`.
async fn modify_services(
    state: &Arc<State>,
    call: &Call,
    snapshot: &Snapshot,
    record: &mut audit::Record,
) -> Result<Outputs, Refusal> {
    let mut changes = Vec::new();
    for (inst, instance_id, vm, guid) in
        settings_of_vms(call, snapshot, "GuestServiceSettings", SERVICE_SETTINGS)?
    {
        let id = crate::ops::services::parse_id(&guid).map_err(|e| Refusal::of(&e))?;
        let known = snapshot.services.iter().any(|s| {
            s.name.eq_ignore_ascii_case(&guid)
                && s.system_name.eq_ignore_ascii_case(&vm.id.to_string())
        });
        if !known {
            return Err(Refusal::invalid(format!(
                "InstanceID {instance_id:?}: no service {guid} is registered"
            )));
        }
        let policy = policy_of(&inst, &guid)?.ok_or_else(|| {
            Refusal::invalid(format!(
                "InstanceID {instance_id:?}: EnabledStatePolicy is missing"
            ))
        })?;
        changes.push((vm.name.clone(), id, policy, instance_id));
    }
    note_changes(
        record,
        changes
            .iter()
            .map(|(vm, id, policy, _)| (vm, format!("{id} on {vm}: policy {policy}"))),
    );
    let mut refs = Vec::new();
    for (vm, id, policy, instance_id) in changes {
        crate::ops::services::set_policy(state, id, Some(vm), policy)
            .await
            .map_err(|e| Refusal::of(&e))?;
        refs.push(setting_ref(SERVICE_SETTINGS, instance_id));
    }
    Ok(resulting("ResultingGuestServiceSettings", refs))
}

/// RemoveGuestServiceSettings: unregisters the service of each setting
/// data (host-wide: guestcomm registers a service once for every VM), as
/// `guestcomm service unregister`. A built-in service cannot go.
async fn remove_services(
    state: &Arc<State>,
    call: &Call,
    snapshot: &Snapshot,
    record: &mut audit::Record,
) -> Result<Outputs, Refusal> {
    let names: Vec<&InstanceName> = match call.param("GuestServiceSettings").map(|p| &p.value) {
        Some(ParamValue::References(items)) => items.iter().flatten().collect(),
        Some(ParamValue::InstanceName(one)) => vec![one],
        _ => {
            return Err(Refusal::invalid(
                "GuestServiceSettings must hold references to Msvm_GuestCommunicationServiceSettingData".into(),
            ))
        }
    };
    if names.is_empty() || names.len() > MAX_WBEM_ITEMS_PER_CALL {
        return Err(Refusal::invalid(format!(
            "GuestServiceSettings holds {} references: 1 to {MAX_WBEM_ITEMS_PER_CALL} per call",
            names.len()
        )));
    }
    let registered = crate::ops::services::list(state)
        .await
        .map_err(|e| Refusal::of(&e))?;
    let mut ids = Vec::new();
    for name in names {
        let instance_id = name.key_text("InstanceID").unwrap_or_default();
        let (_, guid) = setting_vm(snapshot, instance_id)?;
        let id = crate::ops::services::parse_id(&guid).map_err(|e| Refusal::of(&e))?;
        match registered.iter().find(|r| r.id == id) {
            None => {
                return Err(Refusal::invalid(format!(
                    "{instance_id:?}: no service {id} is registered"
                )))
            }
            Some(r) if r.builtin => {
                return Err(Refusal {
                    code: ReturnValue::InvalidState,
                    reason: format!(
                        "service {id} is built into guestcomm and cannot be unregistered; ModifyGuestServiceSettings disables it"
                    ),
                })
            }
            Some(_) if !ids.contains(&id) => ids.push(id),
            Some(_) => {}
        }
    }
    let text: Vec<String> = ids.iter().map(ToString::to_string).collect();
    note(record, &format!("unregister: {}", text.join(", ")));
    for id in ids {
        crate::ops::services::unregister(state, id)
            .await
            .map_err(|e| Refusal::of(&e))?;
    }
    Ok(Vec::new())
}

/// ModifyResourceSettings of Msvm_GuestServiceInterfaceComponentSettingData:
/// the VM's interface on (EnabledState 2) or off (3) and its
/// DefaultEnabledStatePolicy (2 or 3), as `guestcomm vm set`.
async fn modify_interfaces(
    state: &Arc<State>,
    call: &Call,
    snapshot: &Snapshot,
    record: &mut audit::Record,
) -> Result<Outputs, Refusal> {
    let mut changes = Vec::new();
    for (inst, instance_id, vm, what) in
        settings_of_vms(call, snapshot, "ResourceSettings", INTERFACE_SETTINGS)?
    {
        if !what.eq_ignore_ascii_case(INTERFACE_DEVICE.guid) {
            return Err(Refusal::invalid(format!(
                "InstanceID {instance_id:?} is not a Guest Service Interface's"
            )));
        }
        let on = match number_of(&inst, "EnabledState")? {
            None => None,
            Some(2) => Some(true),
            Some(3) => Some(false),
            Some(other) => {
                return Err(Refusal::invalid(format!(
                    "EnabledState {other}: the interface is enabled (2) or disabled (3)"
                )))
            }
        };
        let default = number_of(&inst, "DefaultEnabledStatePolicy")?;
        if default.is_some_and(|d| d != 2 && d != 3) {
            return Err(Refusal::invalid(format!(
                "DefaultEnabledStatePolicy {default:?}: expected 2 (enabled) or 3 (disabled)"
            )));
        }
        changes.push((vm.name.clone(), on, default, instance_id));
    }
    note_changes(
        record,
        changes.iter().map(|(vm, on, default, _)| {
            (
                vm,
                format!("{vm}: interface {on:?}, default policy {default:?}"),
            )
        }),
    );
    let mut refs = Vec::new();
    for (vm, on, default, instance_id) in changes {
        crate::ops::vms::update(state, vm, on, default)
            .await
            .map_err(|e| Refusal::of(&e))?;
        refs.push(setting_ref(INTERFACE_SETTINGS, instance_id));
    }
    Ok(resulting("ResultingResourceSettings", refs))
}
