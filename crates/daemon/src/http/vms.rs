//! The VM inventory's routes (`/v1/vms`, `/v1/vms/{name}` and its
//! credentials): decode, call [`crate::ops::vms`], encode.

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State as AxumState};
use axum::http::StatusCode;
use axum::{Extension, Json};
use guestcomm_api::{AddVm, Credentials, UpdateVm, Vm};

use crate::access::Authorized;
use crate::audit;
use crate::error::Error;
use crate::ops::vms;
use crate::state::State;

/// `GET /v1/vms/{name}/credentials`: the key the guest's agent is given.
pub(super) async fn vm_credentials(
    AxumState(state): AxumState<Arc<State>>,
    Path(name): Path<String>,
) -> Result<Json<Credentials>, Error> {
    Ok(Json(vms::credentials(&state, name).await?))
}

/// `GET /v1/vms`: the VMs the caller's roles see.
pub(super) async fn list_vms(
    AxumState(state): AxumState<Arc<State>>,
    Extension(auth): Extension<Authorized>,
) -> Result<Json<Vec<Vm>>, Error> {
    Ok(Json(vms::list(&state, |vm| auth.grants.sees_vm(vm)).await?))
}

/// `POST /v1/vms`.
pub(super) async fn add_vm(
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

/// `GET /v1/vms/{name}`.
pub(super) async fn show_vm(
    AxumState(state): AxumState<Arc<State>>,
    Path(name): Path<String>,
) -> Result<Json<Vm>, Error> {
    Ok(Json(vms::show(&state, name).await?))
}

/// `PATCH /v1/vms/{name}`.
pub(super) async fn update_vm(
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

/// `DELETE /v1/vms/{name}`.
pub(super) async fn remove_vm(
    AxumState(state): AxumState<Arc<State>>,
    Path(name): Path<String>,
) -> Result<StatusCode, Error> {
    vms::remove(&state, name).await?;
    Ok(StatusCode::NO_CONTENT)
}
