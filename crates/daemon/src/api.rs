//! The HTTP/JSON API on the Unix socket (routes in [`router`]).
//!
//! Every handler returns `Result<_, Error>`; [`Error::status`] is the one
//! place where an error becomes an HTTP status, and the body is always an
//! [`ErrorBody`] with the whole error chain. Every route passes through
//! [`crate::access::authorize`] first: the caller's role, then the audit log.

use std::sync::Arc;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State as AxumState};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Extension, Json, Router};
use guestcomm_api::{
    validate_vm_name, AddVm, Credentials, ErrorBody, GuestCommunicationService, MethodResult,
    NewCredentials, RegisterService, RequestStateChange, Role, ServiceRegistration, SetPolicy,
    UpdateVm, Vm,
};
use guestcomm_protocol::auth::{Psk, AUTH_PSK};
use guestcomm_protocol::handshake::error_chain;
use guestcomm_protocol::{ErrorCode, ServiceId};
use guestcomm_transport::Address;
use serde::Deserialize;

use crate::access::Authorized;
use crate::audit;
use crate::integration;
use crate::policy::{self, Policy};
use crate::store::{ServiceRow, StoreError, VmRow};
use crate::State;

/// The OpenAPI document of this API, hand-written.
const OPENAPI: &str = include_str!("openapi.json");

/// Why an API call failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The state store refused or failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The request is malformed or a parameter is invalid.
    #[error("{0}")]
    BadRequest(String),
    /// The VM's agent could not be reached.
    #[error("cannot reach the agent of VM {vm}")]
    Agent {
        /// The VM.
        vm: String,
        /// Why.
        #[source]
        source: guestcomm_client::ClientError,
    },
    /// The service is disabled for the VM.
    #[error("{0}")]
    ServiceDisabled(String),
    /// A guest port could not be reached.
    #[error("cannot reach service {service} in VM {vm}")]
    Guest {
        /// The VM.
        vm: String,
        /// The service.
        service: ServiceId,
        /// Why.
        #[source]
        source: guestcomm_transport::ConnectError,
    },
    /// No such endpoint (or not with this method).
    #[error("no API endpoint {method} {path} (see /openapi.json)")]
    NoRoute {
        /// The method asked for.
        method: String,
        /// The path asked for.
        path: String,
    },
    /// A limit was reached; retry later.
    #[error("{0}")]
    Busy(String),
    /// The VM's agent refused a request (its error frame).
    #[error("VM {vm}: {}", .frame.message)]
    Refused {
        /// The VM.
        vm: String,
        /// What the agent said.
        frame: guestcomm_protocol::ErrorFrame,
    },
    /// A request to the VM's agent failed after connecting.
    #[error("VM {vm}: the request to its agent failed")]
    AgentCall {
        /// The VM.
        vm: String,
        /// Why.
        #[source]
        source: guestcomm_client::integration::CallError,
    },
    /// A bug or an unexpected state.
    #[error("internal error: {0}")]
    Internal(String),
    /// The caller's role is not enough for this call.
    #[error("permission denied: {operation} needs the {required} role, and {who} {} (roles are set in {config})", has_role(*.has))]
    Forbidden {
        /// The operation asked for.
        operation: &'static str,
        /// The role it needs.
        required: Role,
        /// The caller, described.
        who: String,
        /// The caller's role, if any.
        has: Option<Role>,
        /// The configuration file holding the roles.
        config: String,
    },
    /// The VM's policy refuses the operation.
    #[error("{0}")]
    PolicyDenied(String),
    /// The caller's roles hold on some VMs only, and the call reaches past them.
    #[error("permission denied: {0}")]
    OutOfScope(String),
}

fn has_role(role: Option<Role>) -> String {
    match role {
        Some(role) => format!("is only a {role}"),
        None => "has no role".into(),
    }
}

/// The one-line error of a failed call, attached to its response so the
/// audit log can record it.
#[derive(Clone, Debug)]
pub struct ErrorText(pub String);

/// The HTTP status and stable code of an agent's error frame.
fn refused_status(code: ErrorCode) -> (StatusCode, &'static str) {
    match code {
        ErrorCode::InvalidArgument => (StatusCode::BAD_REQUEST, "invalid_argument"),
        ErrorCode::NotFound => (StatusCode::NOT_FOUND, "not_found"),
        ErrorCode::PermissionDenied => (StatusCode::FORBIDDEN, "permission_denied"),
        ErrorCode::PolicyDenied => (StatusCode::FORBIDDEN, "policy_denied"),
        ErrorCode::ResourceLimit => (StatusCode::CONFLICT, "resource_limit"),
        ErrorCode::UnsupportedRequest | ErrorCode::UnknownService => {
            (StatusCode::NOT_IMPLEMENTED, "unsupported_request")
        }
        _ => (StatusCode::BAD_GATEWAY, "agent_failed"),
    }
}

impl Error {
    /// The HTTP status and stable code of every error: the one mapping.
    pub fn status(&self) -> (StatusCode, &'static str) {
        match self {
            Self::Store(StoreError::UnknownVm(_) | StoreError::UnknownService(_))
            | Self::NoRoute { .. } => (StatusCode::NOT_FOUND, "not_found"),
            Self::Store(StoreError::DuplicateVm(_) | StoreError::DuplicateService(_)) => {
                (StatusCode::CONFLICT, "conflict")
            }
            Self::Store(StoreError::Builtin(_)) => (StatusCode::CONFLICT, "builtin_service"),
            Self::Store(StoreError::Kvp(e)) => refused_status(e.code()),
            Self::Refused { frame, .. } => refused_status(frame.code),
            Self::AgentCall { .. } => (StatusCode::BAD_GATEWAY, "agent_failed"),
            Self::Store(
                StoreError::TooNew { .. }
                | StoreError::Sqlite(_)
                | StoreError::File(..)
                | StoreError::InUse(_),
            )
            | Self::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
            Self::BadRequest(_) => (StatusCode::BAD_REQUEST, "invalid_argument"),
            Self::Agent { .. } => (StatusCode::BAD_GATEWAY, "agent_unreachable"),
            Self::Guest { .. } => (StatusCode::BAD_GATEWAY, "guest_unreachable"),
            Self::ServiceDisabled(_) => (StatusCode::FORBIDDEN, "service_disabled"),
            Self::Forbidden { .. } | Self::OutOfScope(_) => {
                (StatusCode::FORBIDDEN, "permission_denied")
            }
            Self::PolicyDenied(_) => (StatusCode::FORBIDDEN, "policy_denied"),
            Self::Busy(_) => (StatusCode::SERVICE_UNAVAILABLE, "resource_limit"),
        }
    }
}

impl From<JsonRejection> for Error {
    fn from(e: JsonRejection) -> Self {
        Self::BadRequest(e.body_text())
    }
}

impl From<QueryRejection> for Error {
    fn from(e: QueryRejection) -> Self {
        Self::BadRequest(e.body_text())
    }
}

/// Unknown paths, and known paths with another method.
async fn no_route(method: axum::http::Method, uri: axum::http::Uri) -> Error {
    Error::NoRoute {
        method: method.to_string(),
        path: uri.path().to_string(),
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let (status, code) = self.status();
        let mut chain = vec![self.to_string()];
        let mut source = std::error::Error::source(&self);
        while let Some(cause) = source {
            chain.push(cause.to_string());
            source = cause.source();
        }
        if status.is_server_error() {
            tracing::warn!(error = %error_chain(&self), "API call failed");
        }
        let required_role = match &self {
            Self::Forbidden { required, .. } => Some(*required),
            _ => None,
        };
        let body = ErrorBody {
            code: code.into(),
            error: error_chain(&self),
            chain,
            required_role,
        };
        let mut response = (status, Json(body.clone())).into_response();
        response.extensions_mut().insert(ErrorText(body.error));
        response
    }
}

/// Every route of the API.
pub fn router(state: Arc<State>) -> Router {
    Router::new()
        .route("/openapi.json", get(openapi))
        .route("/v1/vms", get(list_vms).post(add_vm))
        .route(
            "/v1/vms/{name}",
            get(show_vm).delete(remove_vm).patch(update_vm),
        )
        .route("/v1/vms/{name}/connect", post(crate::relay::connect))
        .route("/v1/vms/{name}/credentials", get(vm_credentials))
        .route("/v1/vms/{name}/services", get(vm_services))
        .route(
            "/v1/vms/{name}/integration-services",
            get(integration::integration_services),
        )
        .route("/v1/vms/{name}/info", get(integration::info))
        .route("/v1/vms/{name}/time", get(integration::time))
        .route("/v1/vms/{name}/time/sync", post(integration::time_sync))
        .route("/v1/vms/{name}/kvp/{pool}", get(integration::kvp_list))
        .route(
            "/v1/vms/{name}/kvp/{pool}/{key}",
            get(integration::kvp_get)
                .put(integration::kvp_put)
                .delete(integration::kvp_delete),
        )
        .route("/v1/vms/{name}/shutdown", post(integration::shutdown))
        .route("/v1/vms/{name}/fs", get(integration::fs_status))
        .route("/v1/vms/{name}/fs/freeze", post(integration::fs_freeze))
        .route("/v1/vms/{name}/fs/thaw", post(integration::fs_thaw))
        .route(
            "/v1/vms/{name}/services/{id}/RequestStateChange",
            post(request_state_change),
        )
        .route(
            "/v1/vms/{name}/services/{id}/connect",
            post(crate::broker::connect),
        )
        .route(
            "/v1/vms/{name}/services/{id}/{method}",
            post(start_stop_service),
        )
        .route("/v1/services", get(list_services).post(register))
        .route("/v1/services/{id}", axum::routing::delete(unregister))
        .route("/v1/services/{id}/policy", put(set_policy))
        .route("/v1/services/instances", get(all_instances))
        .route(
            "/v1/vms/{name}/policy",
            get(crate::policy_doc::show).put(crate::policy_doc::set),
        )
        .route("/v1/audit", get(crate::audit::list))
        .route("/v1/audit/verify", get(crate::audit::verify))
        .route("/cimom", post(crate::wbem::cimom))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::access::authorize,
        ))
        .fallback(no_route)
        .method_not_allowed_fallback(no_route)
        .with_state(state)
}

async fn openapi() -> impl IntoResponse {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        OPENAPI,
    )
}

fn vm_view(state: &State, row: VmRow) -> Vm {
    Vm {
        health: state.health.get(row.id),
        id: row.id,
        name: row.name,
        endpoint: row.endpoint,
        interface_enabled: row.interface_enabled,
        default_enabled_state_policy: row.default_policy.value(),
        created_at: row.created_at,
        authenticated: row.psk.is_some(),
    }
}

/// The key a new VM gets, from the request and the endpoint's kind.
fn new_vm_key(choice: NewCredentials, endpoint: &Address) -> Result<Option<Psk>, Error> {
    let needs_key = matches!(
        endpoint,
        Address::Vsock { .. } | Address::HybridVsock { .. }
    );
    let generate = || {
        // Never blocks: a host whose random pool is not initialized yet
        // gets the error that says so and what to do.
        Psk::generate()
            .map(Some)
            .map_err(|e| Error::Internal(error_chain(&e)))
    };
    match choice {
        NewCredentials::Auto if needs_key => generate(),
        NewCredentials::Auto => Ok(None),
        NewCredentials::Generate => generate(),
        NewCredentials::Import { key } => Psk::from_hex(&key)
            .map(Some)
            .map_err(|e| Error::BadRequest(format!("invalid key: {e}"))),
        NewCredentials::None if needs_key => Err(Error::BadRequest(format!(
            "{endpoint} is a vsock endpoint: its agent must have credentials, so the VM needs a key (drop --no-credentials)"
        ))),
        NewCredentials::None => Ok(None),
    }
}

async fn vm_credentials(
    AxumState(state): AxumState<Arc<State>>,
    Path(name): Path<String>,
) -> Result<Json<Credentials>, Error> {
    let row = state.db(move |s| s.vm(&name)).await?;
    let Some(psk) = row.psk else {
        return Err(Error::BadRequest(format!(
            "VM {:?} has no key: add it with credentials (vm add --generate-credentials or --credentials FILE)",
            row.name
        )));
    };
    tracing::info!(vm = %row.name, "guest credentials read");
    Ok(Json(Credentials {
        method: AUTH_PSK.into(),
        key: psk.secret_hex(),
    }))
}

async fn list_vms(
    AxumState(state): AxumState<Arc<State>>,
    Extension(auth): Extension<Authorized>,
) -> Result<Json<Vec<Vm>>, Error> {
    let rows = state.db(|s| s.vms()).await?;
    Ok(Json(
        rows.into_iter()
            .filter(|r| auth.grants.sees_vm(&r.name))
            .map(|r| vm_view(&state, r))
            .collect(),
    ))
}

async fn add_vm(
    AxumState(state): AxumState<Arc<State>>,
    Extension(note): Extension<audit::Note>,
    body: Result<Json<AddVm>, JsonRejection>,
) -> Result<(StatusCode, Json<Vm>), Error> {
    let Json(add) = body?;
    note.vm(&add.name);
    note.arguments(&format!("--endpoint {}", add.endpoint));
    validate_vm_name(&add.name).map_err(Error::BadRequest)?;
    let endpoint: Address = add
        .endpoint
        .parse()
        .map_err(|e| Error::BadRequest(error_chain(&e)))?;
    let psk = new_vm_key(add.credentials, &endpoint)?;
    // Stored in its canonical form (defaults made explicit).
    let endpoint = endpoint.to_string();
    let row = state
        .db(move |s| s.add_vm(&add.name, &endpoint, psk))
        .await?;
    tracing::info!(vm = %row.name, id = %row.id, endpoint = %row.endpoint, "VM added");
    state.changed.notify_one();
    Ok((StatusCode::CREATED, Json(vm_view(&state, row))))
}

async fn show_vm(
    AxumState(state): AxumState<Arc<State>>,
    Path(name): Path<String>,
) -> Result<Json<Vm>, Error> {
    let row = state.db(move |s| s.vm(&name)).await?;
    Ok(Json(vm_view(&state, row)))
}

async fn update_vm(
    AxumState(state): AxumState<Arc<State>>,
    Extension(note): Extension<audit::Note>,
    Path(name): Path<String>,
    body: Result<Json<UpdateVm>, JsonRejection>,
) -> Result<Json<Vm>, Error> {
    let Json(update) = body?;
    note.arguments(&serde_json::to_string(&update).unwrap_or_default());
    let default = match update.default_enabled_state_policy {
        None => None,
        Some(v) => match Policy::from_value(v) {
            Some(p @ (Policy::Enabled | Policy::Disabled)) => Some(p),
            _ => {
                return Err(Error::BadRequest(format!(
                    "invalid DefaultEnabledStatePolicy {v}: expected 2 (enabled) or 3 (disabled)"
                )))
            }
        },
    };
    let row = state
        .db(move |s| s.update_vm(&name, update.interface_enabled, default))
        .await?;
    tracing::info!(vm = %row.name, interface_enabled = row.interface_enabled, default_policy = row.default_policy.value(), "VM settings changed");
    state.changed.notify_one();
    Ok(Json(vm_view(&state, row)))
}

async fn remove_vm(
    AxumState(state): AxumState<Arc<State>>,
    Path(name): Path<String>,
) -> Result<StatusCode, Error> {
    let logged = name.clone();
    state.db(move |s| s.remove_vm(&name)).await?;
    tracing::info!(vm = %logged, "VM removed");
    state.changed.notify_one();
    Ok(StatusCode::NO_CONTENT)
}

fn parse_service(text: &str) -> Result<ServiceId, Error> {
    text.parse().map_err(|e| Error::BadRequest(error_chain(&e)))
}

fn registration(row: ServiceRow) -> ServiceRegistration {
    ServiceRegistration {
        id: row.id.to_string(),
        element_name: row.element_name,
        description: row.description,
        builtin: row.builtin,
        enabled: row.enabled,
        installed_at: row.installed_at,
        host_endpoint: row.host_endpoint,
    }
}

async fn list_services(
    AxumState(state): AxumState<Arc<State>>,
) -> Result<Json<Vec<ServiceRegistration>>, Error> {
    let rows = state.db(|s| s.services()).await?;
    Ok(Json(rows.into_iter().map(registration).collect()))
}

/// Longest ElementName accepted (CIM's Caption is limited to 64 characters;
/// names longer than that do not display anywhere).
const MAX_ELEMENT_NAME_CHARS: usize = 256;

async fn register(
    AxumState(state): AxumState<Arc<State>>,
    Extension(note): Extension<audit::Note>,
    body: Result<Json<RegisterService>, JsonRejection>,
) -> Result<(StatusCode, Json<ServiceRegistration>), Error> {
    let Json(req) = body?;
    note.service(&req.id);
    note.arguments(&format!("--name {:?}", req.element_name));
    let id = parse_service(&req.id)?;
    let name = req.element_name.trim().to_string();
    if name.is_empty() || name.chars().count() > MAX_ELEMENT_NAME_CHARS || name.contains('\n') {
        return Err(Error::BadRequest(format!(
            "invalid service name {:?}: must be one line of 1 to {MAX_ELEMENT_NAME_CHARS} characters",
            req.element_name
        )));
    }
    let host_endpoint = match req.host_endpoint.as_deref().map(str::parse::<Address>) {
        None => None,
        Some(Ok(addr @ (Address::Unix(_) | Address::Tcp(_)))) => Some(addr.to_string()),
        Some(Ok(other)) => {
            return Err(Error::BadRequest(format!(
                "invalid host endpoint {other}: guest-initiated connections are relayed to unix:///PATH or tcp://IP:PORT on the host"
            )))
        }
        Some(Err(e)) => return Err(Error::BadRequest(error_chain(&e))),
    };
    let row = state
        .db(move |s| s.register(id, &name, &req.description, host_endpoint.as_deref()))
        .await?;
    state.changed.notify_one();
    tracing::info!(service = %row.id, name = %row.element_name, "service registered");
    Ok((StatusCode::CREATED, Json(registration(row))))
}

async fn unregister(
    AxumState(state): AxumState<Arc<State>>,
    Path(id): Path<String>,
) -> Result<StatusCode, Error> {
    let id = parse_service(&id)?;
    state.db(move |s| s.unregister(id)).await?;
    tracing::info!(service = %id, "service unregistered");
    state.changed.notify_one();
    Ok(StatusCode::NO_CONTENT)
}

async fn set_policy(
    AxumState(state): AxumState<Arc<State>>,
    Extension(note): Extension<audit::Note>,
    Path(id): Path<String>,
    body: Result<Json<SetPolicy>, JsonRejection>,
) -> Result<StatusCode, Error> {
    let Json(req) = body?;
    if let Some(vm) = &req.vm {
        note.vm(vm);
    }
    note.arguments(&format!("policy {}", req.policy));
    let id = parse_service(&id)?;
    let policy = Policy::from_value(req.policy).ok_or_else(|| {
        Error::BadRequest(format!(
            "invalid policy {}: expected 2 (enabled), 3 (disabled) or 8 (deferred)",
            req.policy
        ))
    })?;
    match req.vm {
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
    Ok(StatusCode::NO_CONTENT)
}

/// The instances of every service on each VM in `vms`.
pub(crate) async fn instances(
    state: &Arc<State>,
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

async fn vm_services(
    AxumState(state): AxumState<Arc<State>>,
    Path(name): Path<String>,
) -> Result<Json<Vec<GuestCommunicationService>>, Error> {
    Ok(Json(instances(&state, Some(name)).await?))
}

/// Query of `/v1/services/instances`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InstancesQuery {
    vm: Option<String>,
}

async fn all_instances(
    AxumState(state): AxumState<Arc<State>>,
    query: Result<Query<InstancesQuery>, QueryRejection>,
) -> Result<Json<Vec<GuestCommunicationService>>, Error> {
    let Query(q) = query?;
    Ok(Json(instances(&state, q.vm).await?))
}

/// CIM return codes of RequestStateChange.
const RSC_COMPLETED: u32 = 0;
const RSC_NOT_SUPPORTED: u32 = 1;
const RSC_INVALID_STATE: u32 = 32775;

async fn request_state_change(
    AxumState(state): AxumState<Arc<State>>,
    Path((name, id)): Path<(String, String)>,
    body: Result<Json<RequestStateChange>, JsonRejection>,
) -> Result<Json<MethodResult>, Error> {
    let Json(req) = body?;
    let id = parse_service(&id)?;
    let return_value = change_state(&state, name, id, req.requested_state).await?;
    Ok(Json(MethodResult { return_value }))
}

/// RequestStateChange of service `id` on VM `name`, for the JSON API and
/// WBEM alike: 2 and 3 set the VM's policy (0; 32775 when enabling cannot
/// succeed), anything else is "not supported" (1).
pub(crate) async fn change_state(
    state: &State,
    name: String,
    id: ServiceId,
    requested: u16,
) -> Result<u32, Error> {
    let Some(policy @ (Policy::Enabled | Policy::Disabled)) = Policy::from_value(requested) else {
        return Ok(RSC_NOT_SUPPORTED);
    };
    let return_value = state
        .db(move |s| {
            let vm = s.vm(&name)?;
            let service = s.service(id)?;
            // Enabling cannot succeed while the interface or the host-wide
            // switch holds the service disabled.
            if policy == Policy::Enabled && !(vm.interface_enabled && service.enabled) {
                return Ok(RSC_INVALID_STATE);
            }
            s.set_vm_policy(id, &name, policy)?;
            Ok(RSC_COMPLETED)
        })
        .await?;
    state.changed.notify_one();
    Ok(return_value)
}

/// `StartService` and `StopService`: a guest communication service runs in
/// the guest, not on the host, so neither is supported (CIM return code 1),
/// as for Hyper-V's own guest services; unknown VMs and services are 404.
async fn start_stop_service(
    AxumState(state): AxumState<Arc<State>>,
    Path((name, id, method)): Path<(String, String, String)>,
) -> Result<Json<MethodResult>, Error> {
    if method != "StartService" && method != "StopService" {
        return Err(Error::BadRequest(format!(
            "unknown method {method:?}: expected RequestStateChange, StartService or StopService"
        )));
    }
    let id = parse_service(&id)?;
    let return_value = start_stop(&state, name, id).await?;
    Ok(Json(MethodResult { return_value }))
}

/// StartService or StopService of service `id` on VM `name` (JSON API and
/// WBEM): "not supported" (1) once both are known.
pub(crate) async fn start_stop(state: &State, name: String, id: ServiceId) -> Result<u32, Error> {
    state
        .db(move |s| {
            s.vm(&name)?;
            s.service(id)
        })
        .await?;
    Ok(RSC_NOT_SUPPORTED)
}

#[cfg(test)]
mod tests {
    use super::*;
    use guestcomm_protocol::integration::{KvpPool, KvpSide};
    use guestcomm_protocol::ErrorFrame;

    #[test]
    fn agent_refusals_keep_their_meaning_as_http_statuses() {
        let refused = |code| Error::Refused {
            vm: "web1".into(),
            frame: ErrorFrame::new(code, "x"),
        };
        let cases = [
            (ErrorCode::InvalidArgument, 400),
            (ErrorCode::NotFound, 404),
            (ErrorCode::PermissionDenied, 403),
            (ErrorCode::ResourceLimit, 409),
            (ErrorCode::UnsupportedRequest, 501),
            (ErrorCode::Io, 502),
        ];
        for (code, status) in cases {
            assert_eq!(refused(code).status().0.as_u16(), status, "{code}");
        }
        let read_only = Error::Store(StoreError::Kvp(
            guestcomm_protocol::integration::KvpError::ReadOnly {
                pool: KvpPool::Guest,
                side: KvpSide::Host,
            },
        ));
        assert_eq!(
            read_only.status(),
            (StatusCode::FORBIDDEN, "permission_denied")
        );
        assert_eq!(refused(ErrorCode::NotFound).to_string(), "VM web1: x");
    }
}
