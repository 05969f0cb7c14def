//! A VM's host policy document (`GET` and `PUT /v1/vms/{name}/policy`):
//! decode, call [`crate::ops::policy`], encode.

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State as AxumState};
use axum::{Extension, Json};
use guestcomm_api::SetVmPolicy;
use guestcomm_policy::PolicyDocument;

use crate::audit;
use crate::error::Error;
use crate::ops::policy;
use crate::state::State;

/// `GET /v1/vms/{name}/policy`: the VM's document (empty: no restriction).
pub(super) async fn show(
    AxumState(state): AxumState<Arc<State>>,
    Path(name): Path<String>,
) -> Result<Json<PolicyDocument>, Error> {
    Ok(Json(policy::show(&state, name).await?))
}

/// `PUT /v1/vms/{name}/policy`: validates and stores a new document.
pub(super) async fn set(
    AxumState(state): AxumState<Arc<State>>,
    Extension(note): Extension<audit::Note>,
    Path(name): Path<String>,
    body: Result<Json<SetVmPolicy>, JsonRejection>,
) -> Result<Json<PolicyDocument>, Error> {
    let Json(req) = body?;
    note.arguments(&req.document);
    Ok(Json(policy::set(&state, name, &req.document).await?))
}
