//! The audit log's routes (`/v1/audit`, `/v1/audit/verify`): decode, call
//! [`crate::ops::audit`], encode.

use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State as AxumState};
use axum::{Extension, Json};
use guestcomm_api::{AuditRecord, AuditVerification};
use serde::Deserialize;

use crate::access::Authorized;
use crate::error::Error;
use crate::ops;
use crate::state::State;

/// Query of `GET /v1/audit`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AuditQuery {
    /// Only this VM's records.
    vm: Option<String>,
    /// Only records from this time on, milliseconds since the Unix epoch.
    since_ms: Option<i64>,
    /// At most this many (the newest); capped at
    /// [`crate::limits::MAX_AUDIT_QUERY_RECORDS`].
    limit: Option<u32>,
}

/// `GET /v1/audit`.
pub(super) async fn audit_records(
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
pub(super) async fn audit_verify(
    AxumState(state): AxumState<Arc<State>>,
) -> Result<Json<AuditVerification>, Error> {
    Ok(Json(ops::audit::verify(&state).await?))
}
