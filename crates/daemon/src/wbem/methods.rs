//! InvokeMethod (extrinsic methods): RequestStateChange, StartService and
//! StopService of the guest services (the JSON API's functions, so both
//! behave alike), RequestStateChange of a VM's interface and integration
//! components, Msvm_ShutdownComponent's InitiateShutdown and InitiateReboot
//! (the JSON API's shutdown), Msvm_GuestFileService.CopyFilesToGuest (a
//! job, module `jobs`) and the methods of Msvm_VirtualSystemManagementService
//! (module `management`).
//!
//! ```text
//! class known (CIM_ERR_INVALID_CLASS) -> method of the class (CIM_ERR_METHOD_NOT_FOUND)
//!   -> called on an instance (CIM_ERR_METHOD_NOT_AVAILABLE on a class)
//!   -> parameters are inputs of the method (CIM_ERR_INVALID_PARAMETER)
//!   -> admin (else ReturnValue 32769 Access Denied, as Hyper-V answers)
//!   -> the instance exists (CIM_ERR_NOT_FOUND)
//!   -> run; audited as `wbem.invoke` (a refusal for the role: outcome refused)
//! ```

use std::sync::Arc;

use guestcomm_api::{Role, ShutdownRequest};
use guestcomm_cim::value::{CimValue, InstanceName};
use guestcomm_cim::xml::request::{parse_embedded_instance, Call, CallKind, ParamValue};
use guestcomm_cim::xml::response::{self, MethodReturn, Shape};
use guestcomm_cim::{CimError, CimStatus, CimType, Repository, ReturnValue, NAMESPACE};
use guestcomm_protocol::files::CopyToGuest;
use guestcomm_protocol::ServiceId;

use super::components::{self, INTERFACE};
use super::jobs::{self, CopyFile};
use super::management;
use super::objects::{vm_of, Snapshot, MANAGEMENT_SERVICE};
use super::refusal::{cim_error, require, return_code};
use crate::access::Authorized;
use crate::audit::{self, Outcome};
use crate::error::ErrorKind;
use crate::limits::MAX_COPY_FILES_PER_CALL;
use crate::state::State;

fn invalid(message: String) -> CimError {
    CimError::new(CimStatus::InvalidParameter, message)
}

fn returned(code: ReturnValue) -> MethodReturn {
    returned_code(code.code())
}

fn returned_code(code: u32) -> MethodReturn {
    MethodReturn {
        value: CimValue::Uint(code.into()),
        value_type: CimType::Uint(32),
        outputs: Vec::new(),
    }
}

/// Runs method `call` for `auth`, and audits it.
pub(super) async fn invoke(
    state: &Arc<State>,
    repo: &Repository,
    auth: &Authorized,
    call: &Call,
) -> Result<MethodReturn, CimError> {
    let started = std::time::Instant::now();
    let mut record = audit::record(auth.caller, "wbem.invoke");
    let target = match &call.kind {
        CallKind::InstanceMethod(name) => {
            record.arguments = audit::arguments(&format!("{} on {}", call.name, describe(name)));
            record.service = name.key_text("Name").map(str::to_string);
            Some(name)
        }
        CallKind::ClassMethod(class) => {
            record.arguments = audit::arguments(&format!("{} on class {class}", call.name));
            None
        }
        CallKind::Intrinsic => None,
    };
    let result = run(state, repo, auth, call, target, &mut record).await;
    let (outcome, error) = match &result {
        // A method that returned a failure code says why in the record.
        Ok(_) if record.error.is_some() => (Outcome::Failed, record.error.take()),
        Ok(_) => (Outcome::Ok, None),
        Err(e) if e.status == CimStatus::AccessDenied => (Outcome::Refused, Some(e.to_string())),
        Err(e) => (Outcome::Failed, Some(e.to_string())),
    };
    audit::finish(&mut record, outcome, error, started);
    // A caller without the role gets Hyper-V's Access Denied as the
    // method's return value, as every Msvm_* method documents it.
    let result = match result {
        Err(e) if e.status == CimStatus::AccessDenied => Ok(returned(ReturnValue::AccessDenied)),
        other => other,
    };
    // A peer of the WBEM port is nobody in particular (plain HTTP on
    // loopback): its refusals are recorded apart and counted past a bound,
    // as those of a caller without a role (module `refusals`).
    let unidentified = auth.caller.uid.is_none() && auth.caller.certificate.is_none();
    // Only the role refuses a method outright (the rest answer with a
    // ReturnValue): counted as refused_role in the metrics.
    if outcome == Outcome::Refused && unidentified {
        state.audit_unaccountable_refusal(auth.caller, record).await;
    } else if outcome == Outcome::Refused {
        state.audit_refusal(record, ErrorKind::Forbidden).await;
    } else {
        state.audit(record).await;
    }
    result
}

fn describe(name: &InstanceName) -> String {
    let keys: Vec<String> = name
        .keys
        .iter()
        .filter_map(|(k, v)| Some(format!("{k}={}", v.text()?)))
        .collect();
    format!("{}.{}", name.class, keys.join(","))
}

async fn run(
    state: &Arc<State>,
    repo: &Repository,
    auth: &Authorized,
    call: &Call,
    target: Option<&InstanceName>,
    record: &mut audit::Record,
) -> Result<MethodReturn, CimError> {
    let class_name = match &call.kind {
        CallKind::InstanceMethod(n) => n.class.as_str(),
        CallKind::ClassMethod(c) => c.as_str(),
        CallKind::Intrinsic => return Err(CimError::new(CimStatus::Failed, "not a method call")),
    };
    let class = repo
        .class(class_name)
        .ok_or_else(|| CimError::new(CimStatus::InvalidClass, format!("no class {class_name}")))?;
    let method = repo
        .methods(&class.name)
        .into_iter()
        .find(|m| m.name.eq_ignore_ascii_case(&call.name))
        .ok_or_else(|| {
            CimError::new(
                CimStatus::MethodNotFound,
                format!("class {} has no method {}", class.name, call.name),
            )
        })?;
    let Some(target) = target else {
        return Err(CimError::new(
            CimStatus::MethodNotAvailable,
            format!(
                "{} is a method of instances: call it on an instance of {}",
                method.name, class.name
            ),
        ));
    };
    for p in &call.params {
        if !method
            .parameters
            .iter()
            .any(|q| q.input && q.name.eq_ignore_ascii_case(&p.name))
        {
            return Err(invalid(format!(
                "{} takes no input parameter {}",
                method.name, p.name
            )));
        }
    }
    require(
        auth,
        Role::Admin,
        &format!("{}.{}", class.name, method.name),
    )?;
    let snapshot = Snapshot::read(state).await.map_err(|e| cim_error(&e))?;
    let Some(instance) = snapshot.find(repo, target) else {
        return Err(CimError::new(
            CimStatus::NotFound,
            format!("no instance {}", describe(target)),
        ));
    };
    if instance.class.eq_ignore_ascii_case(MANAGEMENT_SERVICE) {
        return Ok(management::run(state, call, &method.name, &snapshot, record).await);
    }
    let vm = vm_of(&snapshot, target).cloned();
    if let Some(vm) = &vm {
        record.vm = Some(vm.name.clone());
    }
    let service = || -> Result<ServiceId, CimError> {
        target
            .key_text("Name")
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| CimError::new(CimStatus::Failed, "the service's Name is not a GUID"))
    };
    let vm_name = || {
        vm.as_ref()
            .map(|v| v.name.clone())
            .ok_or_else(|| CimError::new(CimStatus::NotFound, "the instance's VM is gone"))
    };
    let is_service = repo.is_a(&instance.class, "Msvm_GuestService");
    match method.name.as_str() {
        "RequestStateChange" => {
            let requested = requested_state(call)?;
            if !no_timeout(call) {
                return Ok(returned(ReturnValue::TimeoutNotSupported));
            }
            if instance.class.eq_ignore_ascii_case(jobs::JOB_CLASS) {
                let id = target.key_text("InstanceID").unwrap_or_default();
                return Ok(returned(jobs::request_state_change(
                    &state.wbem_jobs,
                    id,
                    requested,
                )));
            }
            if is_service {
                let code =
                    crate::ops::services::change_state(state, vm_name()?, service()?, requested)
                        .await
                        .map_err(|e| cim_error(&e))?;
                return Ok(returned_code(code));
            }
            if instance.class.eq_ignore_ascii_case(INTERFACE) {
                return interface_state(state, vm_name()?, requested).await;
            }
            // An integration component: the policy of its service on the VM.
            if let Some(service) = components::device(&instance.class).and_then(|d| d.service) {
                let code =
                    crate::ops::services::change_state(state, vm_name()?, service.id(), requested)
                        .await
                        .map_err(|e| cim_error(&e))?;
                return Ok(returned_code(code));
            }
            Ok(returned(ReturnValue::NotSupported))
        }
        "StartService" | "StopService" => {
            let code = crate::ops::services::start_stop(state, vm_name()?, service()?)
                .await
                .map_err(|e| cim_error(&e))?;
            Ok(returned_code(code))
        }
        "InitiateShutdown" | "InitiateReboot" => {
            let request = ShutdownRequest {
                reboot: method.name == "InitiateReboot",
                force: boolean(call, "Force")?,
                reason: string(call, "Reason")?,
            };
            shutdown(state, vm_name()?, request, record).await
        }
        "CopyFilesToGuest" => {
            let vm =
                vm.ok_or_else(|| CimError::new(CimStatus::NotFound, "the instance's VM is gone"))?;
            // Hyper-V's codes: bad setting data 32773, the interface off
            // or the service disabled 32775, a host policy's refusal 32769.
            let files = match copy_files(call) {
                Ok(files) => files,
                Err(e) => {
                    return Ok(refused(
                        record,
                        ReturnValue::InvalidParameter,
                        e.description,
                    ))
                }
            };
            if !vm.interface_enabled {
                let reason = format!(
                    "the Guest Service Interface of VM {} is off (turn it on with ModifyResourceSettings or `guestcomm vm set {} --interface on`)",
                    vm.name, vm.name
                );
                return Ok(refused(record, ReturnValue::InvalidState, reason));
            }
            if let Err(e) =
                crate::admission::copy_to_guest(state, &vm, files.iter().map(|f| &f.request)).await
            {
                let reason = guestcomm_protocol::error_chain(&e);
                return Ok(refused(record, return_code(e.kind()), reason));
            }
            let job = jobs::start(state, vm, files, auth.caller)?;
            Ok(MethodReturn {
                value: CimValue::Uint(ReturnValue::JobStarted.code().into()),
                value_type: CimType::Uint(32),
                outputs: vec![(
                    "Job".into(),
                    CimValue::Reference(job),
                    CimType::Reference("CIM_ConcreteJob".into()),
                )],
            })
        }
        "GetError" | "GetErrorEx" => {
            // A job's error, as CIM_Error embedded in CIM-XML text.
            let embedded = target
                .key_text("InstanceID")
                .and_then(|id| jobs::error_of(&state.wbem_jobs, id))
                .map(|error| response::instance(repo, &error, NAMESPACE, &Shape::default()));
            let output = if method.name == "GetError" {
                ("Error", embedded.map_or(CimValue::Null, CimValue::String))
            } else {
                (
                    "Errors",
                    CimValue::Array(embedded.into_iter().map(CimValue::String).collect()),
                )
            };
            Ok(MethodReturn {
                value: CimValue::Uint(ReturnValue::Completed.code().into()),
                value_type: CimType::Uint(32),
                outputs: vec![(output.0.into(), output.1, CimType::String)],
            })
        }
        other => Err(CimError::new(
            CimStatus::MethodNotAvailable,
            format!("{other} is not available on {}", instance.class),
        )),
    }
}

/// A method that did not do what it was asked: `code`, with the reason in
/// the audit record.
fn refused(record: &mut audit::Record, code: ReturnValue, reason: String) -> MethodReturn {
    tracing::info!(code = code.code(), %reason, "WBEM method refused");
    record.error = Some(reason);
    returned(code)
}

/// RequestStateChange's TimeoutPeriod is absent, NULL or 0 (a zero
/// interval, `00000000000000.000000:000`): "no time requirements".
fn no_timeout(call: &Call) -> bool {
    match call.param("TimeoutPeriod").map(|p| &p.value) {
        None | Some(ParamValue::Null) => true,
        Some(ParamValue::Value(v)) => {
            let v = v.trim();
            !v.is_empty() && v.chars().all(|c| matches!(c, '0' | '.' | ':'))
        }
        Some(_) => false,
    }
}

/// Boolean input `name`: FALSE when absent or NULL.
fn boolean(call: &Call, name: &str) -> Result<bool, CimError> {
    match call.param(name).map(|p| &p.value) {
        None | Some(ParamValue::Null) => Ok(false),
        Some(ParamValue::Value(v)) if v.trim().eq_ignore_ascii_case("true") => Ok(true),
        Some(ParamValue::Value(v)) if v.trim().eq_ignore_ascii_case("false") => Ok(false),
        Some(other) => Err(invalid(format!(
            "{name} must be a boolean (TRUE or FALSE), not {other:?}"
        ))),
    }
}

/// String input `name`: empty when absent or NULL.
fn string(call: &Call, name: &str) -> Result<String, CimError> {
    match call.param(name).map(|p| &p.value) {
        None | Some(ParamValue::Null) => Ok(String::new()),
        Some(ParamValue::Value(v)) => Ok(v.clone()),
        Some(other) => Err(invalid(format!("{name} must be a string, not {other:?}"))),
    }
}

/// InitiateShutdown and InitiateReboot: the JSON API's shutdown (`POST
/// /v1/vms/{name}/shutdown`, with its checks), after the read-only check
/// and in one of the VM's agent-call slots, as `http/authorize` gives
/// them. 0 when the guest acknowledged (what, in the record's arguments);
/// a failure is Hyper-V's code for it ([`return_code`]), its reason in the
/// `wbem.invoke` record.
async fn shutdown(
    state: &Arc<State>,
    vm: String,
    request: ShutdownRequest,
    record: &mut audit::Record,
) -> Result<MethodReturn, CimError> {
    let result = async {
        crate::admission::writable(state, vm.clone()).await?;
        let _slot = state.agent_calls.take(&vm)?;
        crate::ops::integration::shutdown(state, vm.clone(), request).await
    }
    .await;
    match result {
        Ok(answer) => {
            record.arguments = audit::arguments(&format!(
                "{}; acknowledged: {}",
                record.arguments, answer.acknowledged
            ));
            Ok(returned(ReturnValue::Completed))
        }
        Err(e) => {
            let reason = guestcomm_protocol::error_chain(&e);
            tracing::info!(%vm, %reason, "WBEM shutdown failed");
            record.error = Some(reason);
            Ok(returned(return_code(e.kind())))
        }
    }
}

/// RequestStateChange's RequestedState (uint16, required).
fn requested_state(call: &Call) -> Result<u16, CimError> {
    match call.param("RequestedState").map(|p| &p.value) {
        Some(ParamValue::Value(v)) => v.trim().parse().map_err(|_| {
            invalid(format!(
                "RequestedState must be a uint16 (2 enabled, 3 disabled), not {v:?}"
            ))
        }),
        _ => Err(invalid(
            "RequestStateChange needs RequestedState (2 enabled, 3 disabled)".into(),
        )),
    }
}

/// RequestStateChange of a VM's guest service interface: 2 turns it on,
/// 3 off (as `guestcomm vm set VM --interface`); others are not supported.
async fn interface_state(
    state: &Arc<State>,
    vm: String,
    requested: u16,
) -> Result<MethodReturn, CimError> {
    let on = match requested {
        2 => true,
        3 => false,
        _ => return Ok(returned(ReturnValue::NotSupported)),
    };
    crate::ops::vms::update(state, vm, Some(on), None)
        .await
        .map_err(|e| cim_error(&e))?;
    Ok(returned(ReturnValue::Completed))
}

/// The files of CopyFilesToGuest, from its embedded setting data.
fn copy_files(call: &Call) -> Result<Vec<CopyFile>, CimError> {
    let texts: Vec<&str> = match call.param("CopyFileToGuestSettings").map(|p| &p.value) {
        Some(ParamValue::Array(items)) => items.iter().flatten().map(String::as_str).collect(),
        Some(ParamValue::Value(one)) => vec![one.as_str()],
        _ => {
            return Err(invalid(
                "CopyFilesToGuest needs CopyFileToGuestSettings: Msvm_CopyFileToGuestSettingData instances embedded as CIM-XML".into(),
            ))
        }
    };
    if texts.is_empty() || texts.len() > MAX_COPY_FILES_PER_CALL {
        return Err(invalid(format!(
            "CopyFileToGuestSettings holds {} entries: 1 to {MAX_COPY_FILES_PER_CALL} files per call",
            texts.len()
        )));
    }
    texts
        .into_iter()
        .enumerate()
        .map(|(i, text)| {
            let at = |m: String| invalid(format!("CopyFileToGuestSettings[{i}]: {m}"));
            let inst = parse_embedded_instance(text).map_err(|e| at(e.to_string()))?;
            if !inst
                .class
                .eq_ignore_ascii_case("Msvm_CopyFileToGuestSettingData")
            {
                return Err(at(format!(
                    "an {} is not an Msvm_CopyFileToGuestSettingData",
                    inst.class
                )));
            }
            let path = |name: &str| match inst.get(name) {
                Some(CimValue::String(s)) if !s.is_empty() => Ok(s.clone()),
                _ => Err(at(format!("{name} must be a non-empty string"))),
            };
            let flag = |name: &str| match inst.get(name) {
                None | Some(CimValue::Null) => Ok(false),
                Some(&CimValue::Boolean(b)) => Ok(b),
                Some(_) => Err(at(format!("{name} must be a boolean"))),
            };
            let source = std::path::PathBuf::from(path("SourcePath")?);
            if !source.is_absolute() {
                return Err(at(format!(
                    "SourcePath {} must be an absolute path on the host",
                    source.display()
                )));
            }
            Ok(CopyFile {
                source,
                request: CopyToGuest {
                    dst: path("DestinationPath")?,
                    overwrite: flag("OverwriteExisting")?,
                    create_full_path: flag("CreateFullPath")?,
                    ..CopyToGuest::default()
                },
                embedded: text.to_string(),
            })
        })
        .collect()
}
