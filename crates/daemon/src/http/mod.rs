//! The HTTP/JSON API on the Unix socket (routes in [`router`]).
//!
//! Every handler decodes its request, calls an operation of [`crate::ops`]
//! and encodes the answer; it returns `Result<_, Error>`, and [`status`] is
//! the one place where an error's kind becomes an HTTP status, and the body
//! is always an [`ErrorBody`] with the whole error chain. Every route passes
//! through [`authorize::authorize`] first: the caller's role, then the
//! audit log.

mod authorize;
mod integration;
pub(crate) mod server;
pub(crate) mod tls_listener;

use std::sync::Arc;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State as AxumState};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Extension, Json, Router};
use guestcomm_api::{
    AddVm, ApiErrorCode, AuditRecord, AuditVerification, Credentials, ErrorBody,
    GuestCommunicationService, MethodResult, RegisterService, RequestStateChange,
    ServiceRegistration, SetPolicy, UpdateVm, Vm,
};
use guestcomm_protocol::error_chain;
use serde::Deserialize;

use crate::access::Authorized;
use crate::audit;
use crate::error::{Error, ErrorKind, ErrorText};
use crate::ops::{self, services, vms};
use crate::state::State;

/// The OpenAPI document of this API, hand-written.
const OPENAPI: &str = include_str!("../openapi.json");

/// The HTTP status and stable code of every kind of error: the one mapping.
pub(crate) fn status(kind: ErrorKind) -> (StatusCode, ApiErrorCode) {
    match kind {
        ErrorKind::NotFound => (StatusCode::NOT_FOUND, ApiErrorCode::NotFound),
        ErrorKind::Conflict => (StatusCode::CONFLICT, ApiErrorCode::Conflict),
        ErrorKind::Builtin => (StatusCode::CONFLICT, ApiErrorCode::BuiltinService),
        ErrorKind::InvalidArgument => (StatusCode::BAD_REQUEST, ApiErrorCode::InvalidArgument),
        ErrorKind::Forbidden => (StatusCode::FORBIDDEN, ApiErrorCode::PermissionDenied),
        ErrorKind::PolicyDenied => (StatusCode::FORBIDDEN, ApiErrorCode::PolicyDenied),
        ErrorKind::ServiceDisabled => (StatusCode::FORBIDDEN, ApiErrorCode::ServiceDisabled),
        ErrorKind::AgentUnreachable => (StatusCode::BAD_GATEWAY, ApiErrorCode::AgentUnreachable),
        ErrorKind::GuestUnreachable => (StatusCode::BAD_GATEWAY, ApiErrorCode::GuestUnreachable),
        ErrorKind::AgentFailed => (StatusCode::BAD_GATEWAY, ApiErrorCode::AgentFailed),
        ErrorKind::Unsupported => (
            StatusCode::NOT_IMPLEMENTED,
            ApiErrorCode::UnsupportedRequest,
        ),
        ErrorKind::LimitReached => (StatusCode::CONFLICT, ApiErrorCode::ResourceLimit),
        ErrorKind::Busy => (StatusCode::SERVICE_UNAVAILABLE, ApiErrorCode::ResourceLimit),
        ErrorKind::Internal => (StatusCode::INTERNAL_SERVER_ERROR, ApiErrorCode::Internal),
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
        let (status, code) = status(self.kind());
        let mut chain = vec![self.to_string()];
        let mut source = std::error::Error::source(&self);
        while let Some(cause) = source {
            chain.push(cause.to_string());
            source = cause.source();
        }
        if status.is_server_error() {
            tracing::warn!(error = %error_chain(&self), "API call failed");
        }
        let required_role = self.required_role();
        let body = ErrorBody {
            code,
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
pub(crate) fn router(state: Arc<State>) -> Router {
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
            post(crate::relay::connect_service),
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
        .route("/v1/audit", get(audit_records))
        .route("/v1/audit/verify", get(audit_verify))
        .route("/cimom", post(crate::wbem::cimom))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            authorize::authorize,
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

async fn vm_credentials(
    AxumState(state): AxumState<Arc<State>>,
    Path(name): Path<String>,
) -> Result<Json<Credentials>, Error> {
    Ok(Json(vms::credentials(&state, name).await?))
}

async fn list_vms(
    AxumState(state): AxumState<Arc<State>>,
    Extension(auth): Extension<Authorized>,
) -> Result<Json<Vec<Vm>>, Error> {
    Ok(Json(vms::list(&state, |vm| auth.grants.sees_vm(vm)).await?))
}

async fn add_vm(
    AxumState(state): AxumState<Arc<State>>,
    Extension(note): Extension<audit::Note>,
    body: Result<Json<AddVm>, JsonRejection>,
) -> Result<(StatusCode, Json<Vm>), Error> {
    let Json(add) = body?;
    note.vm(&add.name);
    note.arguments(&format!("--endpoint {}", add.endpoint));
    let vm = vms::add(&state, add.name, &add.endpoint, add.credentials).await?;
    Ok((StatusCode::CREATED, Json(vm)))
}

async fn show_vm(
    AxumState(state): AxumState<Arc<State>>,
    Path(name): Path<String>,
) -> Result<Json<Vm>, Error> {
    Ok(Json(vms::show(&state, name).await?))
}

async fn update_vm(
    AxumState(state): AxumState<Arc<State>>,
    Extension(note): Extension<audit::Note>,
    Path(name): Path<String>,
    body: Result<Json<UpdateVm>, JsonRejection>,
) -> Result<Json<Vm>, Error> {
    let Json(update) = body?;
    note.arguments(&serde_json::to_string(&update).unwrap_or_default());
    let vm = vms::update(
        &state,
        name,
        update.interface_enabled,
        update.default_enabled_state_policy,
    )
    .await?;
    Ok(Json(vm))
}

async fn remove_vm(
    AxumState(state): AxumState<Arc<State>>,
    Path(name): Path<String>,
) -> Result<StatusCode, Error> {
    vms::remove(&state, name).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn list_services(
    AxumState(state): AxumState<Arc<State>>,
) -> Result<Json<Vec<ServiceRegistration>>, Error> {
    Ok(Json(services::list(&state).await?))
}

async fn register(
    AxumState(state): AxumState<Arc<State>>,
    Extension(note): Extension<audit::Note>,
    body: Result<Json<RegisterService>, JsonRejection>,
) -> Result<(StatusCode, Json<ServiceRegistration>), Error> {
    let Json(req) = body?;
    note.service(&req.id);
    note.arguments(&format!("--name {:?}", req.element_name));
    let id = services::parse_id(&req.id)?;
    let row = services::register(
        &state,
        id,
        &req.element_name,
        req.description,
        req.host_endpoint.as_deref(),
    )
    .await?;
    Ok((StatusCode::CREATED, Json(row)))
}

async fn unregister(
    AxumState(state): AxumState<Arc<State>>,
    Path(id): Path<String>,
) -> Result<StatusCode, Error> {
    let id = services::parse_id(&id)?;
    services::unregister(&state, id).await?;
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
    let id = services::parse_id(&id)?;
    services::set_policy(&state, id, req.vm, req.policy).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn vm_services(
    AxumState(state): AxumState<Arc<State>>,
    Path(name): Path<String>,
) -> Result<Json<Vec<GuestCommunicationService>>, Error> {
    Ok(Json(services::instances(&state, Some(name)).await?))
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
    Ok(Json(services::instances(&state, q.vm).await?))
}

async fn request_state_change(
    AxumState(state): AxumState<Arc<State>>,
    Path((name, id)): Path<(String, String)>,
    body: Result<Json<RequestStateChange>, JsonRejection>,
) -> Result<Json<MethodResult>, Error> {
    let Json(req) = body?;
    let id = services::parse_id(&id)?;
    let return_value = services::change_state(&state, name, id, req.requested_state).await?;
    Ok(Json(MethodResult { return_value }))
}

/// `StartService` and `StopService` (see [`services::start_stop`]); unknown
/// VMs and services are 404.
async fn start_stop_service(
    AxumState(state): AxumState<Arc<State>>,
    Path((name, id, method)): Path<(String, String, String)>,
) -> Result<Json<MethodResult>, Error> {
    if method != "StartService" && method != "StopService" {
        return Err(Error::BadRequest(format!(
            "unknown method {method:?}: expected RequestStateChange, StartService or StopService"
        )));
    }
    let id = services::parse_id(&id)?;
    let return_value = services::start_stop(&state, name, id).await?;
    Ok(Json(MethodResult { return_value }))
}

/// Query of `GET /v1/audit`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    /// Only this VM's records.
    vm: Option<String>,
    /// Only records from this time on, milliseconds since the Unix epoch.
    since_ms: Option<i64>,
    /// At most this many (the newest); capped at
    /// [`crate::limits::MAX_AUDIT_QUERY_RECORDS`].
    limit: Option<u32>,
}

/// `GET /v1/audit`.
async fn audit_records(
    AxumState(state): AxumState<Arc<State>>,
    Extension(auth): Extension<Authorized>,
    query: Result<Query<AuditQuery>, QueryRejection>,
) -> Result<Json<Vec<AuditRecord>>, Error> {
    let Query(q) = query?;
    // Roles on some VMs only: the records of one of those VMs at a time.
    if auth.grants.vms_only() && !q.vm.as_deref().is_some_and(|vm| auth.grants.sees_vm(vm)) {
        return Err(Error::OutOfScope(
            "your roles hold on some VMs only: read their audit records one VM at a time (guestcomm audit --vm VM)".into(),
        ));
    }
    Ok(Json(
        ops::audit::records(&state, q.vm, q.since_ms, q.limit).await?,
    ))
}

/// `GET /v1/audit/verify`.
async fn audit_verify(
    AxumState(state): AxumState<Arc<State>>,
) -> Result<Json<AuditVerification>, Error> {
    Ok(Json(ops::audit::verify(&state).await?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreError;
    use guestcomm_protocol::integration::{KvpPool, KvpSide};
    use guestcomm_protocol::{ErrorCode, ErrorFrame};

    #[test]
    fn every_kind_of_error_has_its_status_and_code() {
        let cases = [
            (ErrorKind::NotFound, 404, "not_found"),
            (ErrorKind::Conflict, 409, "conflict"),
            (ErrorKind::Builtin, 409, "builtin_service"),
            (ErrorKind::InvalidArgument, 400, "invalid_argument"),
            (ErrorKind::Forbidden, 403, "permission_denied"),
            (ErrorKind::PolicyDenied, 403, "policy_denied"),
            (ErrorKind::ServiceDisabled, 403, "service_disabled"),
            (ErrorKind::AgentUnreachable, 502, "agent_unreachable"),
            (ErrorKind::GuestUnreachable, 502, "guest_unreachable"),
            (ErrorKind::AgentFailed, 502, "agent_failed"),
            (ErrorKind::Unsupported, 501, "unsupported_request"),
            (ErrorKind::LimitReached, 409, "resource_limit"),
            (ErrorKind::Busy, 503, "resource_limit"),
            (ErrorKind::Internal, 500, "internal"),
        ];
        for (kind, code, name) in cases {
            let (status, wire) = status(kind);
            assert_eq!((status.as_u16(), wire.as_str()), (code, name), "{kind:?}");
        }
        // openapi.json lists exactly the codes the daemon sends.
        let doc: serde_json::Value = serde_json::from_str(OPENAPI).unwrap();
        let listed = &doc["components"]["schemas"]["ErrorBody"]["properties"]["code"]["enum"];
        let mut documented: Vec<&str> = listed
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap())
            .collect();
        let mut sent: Vec<&str> = cases.iter().map(|(_, _, name)| *name).collect();
        documented.sort_unstable();
        sent.sort_unstable();
        sent.dedup();
        assert_eq!(documented, sent);
    }

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
            assert_eq!(
                super::status(refused(code).kind()).0.as_u16(),
                status,
                "{code}"
            );
        }
        let read_only = Error::from(StoreError::Kvp(
            guestcomm_protocol::integration::KvpError::ReadOnly {
                pool: KvpPool::Guest,
                side: KvpSide::Host,
            },
        ));
        assert_eq!(
            status(read_only.kind()),
            (StatusCode::FORBIDDEN, ApiErrorCode::PermissionDenied)
        );
        assert_eq!(refused(ErrorCode::NotFound).to_string(), "VM web1: x");
    }
}
