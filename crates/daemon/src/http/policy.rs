//! A VM's host policy document (`GET` and `PUT /v1/vms/{name}/policy`):
//! decode, read or validate and store, encode. The document type and its
//! checks are `guestcomm_policy`'s; its enforcement is admission's.

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State as AxumState};
use axum::{Extension, Json};
use guestcomm_api::SetVmPolicy;
use guestcomm_policy::PolicyDocument;

use crate::audit;
use crate::error::Error;
use crate::state::State;

/// `GET /v1/vms/{name}/policy`: the VM's document (empty: no restriction).
pub(super) async fn show(
    AxumState(state): AxumState<Arc<State>>,
    Path(name): Path<String>,
) -> Result<Json<PolicyDocument>, Error> {
    let doc = state
        .db(move |s| {
            let vm = s.vm(&name)?;
            s.policy_document(vm.id)
        })
        .await?;
    Ok(Json(doc.unwrap_or_default()))
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
    let doc = PolicyDocument::parse(&req.document)
        .map_err(|e| Error::BadRequest(format!("invalid policy for VM {name}: {e}")))?;
    let stored = doc.clone();
    let logged = name.clone();
    state
        .db(move |s| s.set_policy_document(&name, &stored))
        .await?;
    tracing::info!(vm = %logged, read_only = doc.read_only, "VM policy changed");
    Ok(Json(doc))
}
