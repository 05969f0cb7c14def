//! The host side of argument-level policy: each VM's policy document
//! (`guestcomm policy show|set VM`, table `vm_policies`, schema migration 6)
//! and its routes. Its enforcement on relayed requests and operator routes
//! is admission's (module `admission`).
//!
//! The document type and its checks live in `guestcomm_policy`,
//! shared with the agent's `--policy`. A document that does not parse or
//! validate is refused with its line, and the VM keeps its old one.

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State as AxumState};
use axum::{Extension, Json};
use guestcomm_api::SetVmPolicy;
use guestcomm_policy::PolicyDocument;
use rusqlite::{params, OptionalExtension};
use uuid::Uuid;

use crate::error::Error;
use crate::state::State;
use crate::store::{now_secs, Store, StoreError};

impl Store {
    /// The policy document of VM `vm` (none: everything passes).
    pub(crate) fn policy_document(&self, vm: Uuid) -> Result<Option<PolicyDocument>, StoreError> {
        let text: Option<String> = self
            .conn()
            .query_row(
                "SELECT document FROM vm_policies WHERE vm = ?1",
                [vm.to_string()],
                |r| r.get(0),
            )
            .optional()?;
        // Stored as validated JSON; a row that no longer parses refuses
        // everything rather than nothing.
        Ok(text.map(|t| {
            serde_json::from_str(&t).unwrap_or(PolicyDocument {
                read_only: true,
                ..PolicyDocument::default()
            })
        }))
    }

    /// Replaces the policy document of the VM named `name`.
    pub(crate) fn set_policy_document(
        &mut self,
        name: &str,
        doc: &PolicyDocument,
    ) -> Result<(), StoreError> {
        let vm = self.vm(name)?;
        let json = serde_json::to_string(doc).map_err(|e| {
            StoreError::Sqlite(rusqlite::Error::ToSqlConversionFailure(Box::new(e)))
        })?;
        self.conn().execute(
            "INSERT INTO vm_policies (vm, document, updated_at) VALUES (?1, ?2, ?3)
             ON CONFLICT(vm) DO UPDATE SET document = excluded.document, updated_at = excluded.updated_at",
            params![vm.id.to_string(), json, now_secs()],
        )?;
        Ok(())
    }
}

/// `GET /v1/vms/{name}/policy`: the VM's document (empty: no restriction).
pub(crate) async fn show(
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
pub(crate) async fn set(
    AxumState(state): AxumState<Arc<State>>,
    Extension(note): Extension<crate::audit::Note>,
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
