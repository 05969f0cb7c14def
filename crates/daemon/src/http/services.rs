//! The service registry's routes (`/v1/services`, their policy and
//! instances) and the per-VM service instances' methods
//! (`/v1/vms/{name}/services`): decode, call [`crate::ops::services`], encode.

use std::sync::Arc;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State as AxumState};
use axum::http::StatusCode;
use axum::{Extension, Json};
use guestcomm_api::{
    GuestCommunicationService, MethodResult, RegisterService, RequestStateChange,
    ServiceRegistration, SetPolicy,
};
use serde::Deserialize;

use crate::audit;
use crate::error::Error;
use crate::ops::services;
use crate::state::State;

/// `GET /v1/services`.
pub(super) async fn list_services(
    AxumState(state): AxumState<Arc<State>>,
) -> Result<Json<Vec<ServiceRegistration>>, Error> {
    Ok(Json(services::list(&state).await?))
}

/// `POST /v1/services`.
pub(super) async fn register(
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

/// `DELETE /v1/services/{id}`.
pub(super) async fn unregister(
    AxumState(state): AxumState<Arc<State>>,
    Path(id): Path<String>,
) -> Result<StatusCode, Error> {
    let id = services::parse_id(&id)?;
    services::unregister(&state, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `PUT /v1/services/{id}/policy`: host-wide, or on one VM.
pub(super) async fn set_policy(
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

/// `GET /v1/vms/{name}/services`: the service instances on one VM.
pub(super) async fn vm_services(
    AxumState(state): AxumState<Arc<State>>,
    Path(name): Path<String>,
) -> Result<Json<Vec<GuestCommunicationService>>, Error> {
    Ok(Json(services::instances(&state, Some(name)).await?))
}

/// Query of `/v1/services/instances`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct InstancesQuery {
    vm: Option<String>,
}

/// `GET /v1/services/instances`.
pub(super) async fn all_instances(
    AxumState(state): AxumState<Arc<State>>,
    query: Result<Query<InstancesQuery>, QueryRejection>,
) -> Result<Json<Vec<GuestCommunicationService>>, Error> {
    let Query(q) = query?;
    Ok(Json(services::instances(&state, q.vm).await?))
}

/// `POST /v1/vms/{name}/services/{id}/RequestStateChange`.
pub(super) async fn request_state_change(
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
pub(super) async fn start_stop_service(
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
