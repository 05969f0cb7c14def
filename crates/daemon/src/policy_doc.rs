//! The host side of argument-level policy: each VM's policy document
//! (`guestcomm policy show|set VM`, kept by `store/policy_docs.rs`)
//! and its enforcement on relayed requests and operator routes.
//!
//! The document type and its checks live in `guestcomm_policy`,
//! shared with the agent's `--policy`. A document that does not parse or
//! validate is refused with its line, and the VM keeps its old one.

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State as AxumState};
use axum::{Extension, Json};
use guestcomm_api::SetVmPolicy;
use guestcomm_policy::{Direction, PolicyDocument};
use guestcomm_protocol::files::FEATURE_COPY_BENEATH;
use guestcomm_protocol::Call;
use guestcomm_protocol::{ErrorCode, ErrorFrame};

use crate::error::Error;
use crate::model::VmRow;
use crate::state::State;
use crate::store::StoreError;

/// Checks a relayed request against the VM's host policy `doc`, rewriting
/// a bare program name to its allowed path; a refusal is the error frame
/// to send.
pub(crate) fn check_with(
    doc: Option<&PolicyDocument>,
    vm: &VmRow,
    call: &mut Call,
) -> Result<(), ErrorFrame> {
    match doc {
        Some(doc) => doc.check(call).map_err(|reason| {
            ErrorFrame::new(
                ErrorCode::PolicyDenied,
                format!("refused by the host policy of VM {}: {reason}", vm.name),
            )
        }),
        None => Ok(()),
    }
}

/// Puts the host policy's allowed prefixes for a copy's direction into the
/// copy's request (`host_prefixes`, see [`relayed_prefixes`]); other calls
/// pass unchanged.
pub(crate) fn confine_copy(
    doc: Option<&PolicyDocument>,
    vm: &VmRow,
    call: &mut Call,
    agent_features: &[String],
) -> Result<(), ErrorFrame> {
    let (direction, host_prefixes) = match call {
        Call::CopyToGuest(c) => (Direction::ToGuest, &mut c.host_prefixes),
        Call::CopyFromGuest(c) => (Direction::FromGuest, &mut c.host_prefixes),
        _ => return Ok(()),
    };
    *host_prefixes = relayed_prefixes(doc, vm, direction, agent_features)?;
    Ok(())
}

/// The host policy's allowed prefixes for a copy in `direction`, to relay
/// in its request for the agent to open the guest path beneath them at the
/// moment of use: the path as written was checked here, but a symbolic link
/// in the guest could lead it elsewhere. An agent that does not advertise
/// [`FEATURE_COPY_BENEATH`] cannot do that, so such a copy is refused
/// (fail closed).
pub(crate) fn relayed_prefixes(
    doc: Option<&PolicyDocument>,
    vm: &VmRow,
    direction: Direction,
    agent_features: &[String],
) -> Result<Option<Vec<String>>, ErrorFrame> {
    let Some(prefixes) = doc.and_then(|doc| doc.copy_prefixes(direction)) else {
        return Ok(None);
    };
    if agent_features.iter().any(|f| f == FEATURE_COPY_BENEATH) {
        return Ok(Some(prefixes.to_vec()));
    }
    Err(ErrorFrame::new(
        ErrorCode::PolicyDenied,
        format!(
            "refused by the host policy of VM {}: it restricts copy paths, and the VM's agent does not advertise {FEATURE_COPY_BENEATH:?}, so it cannot keep the copy beneath the allowed paths when a symbolic link is on the way; upgrade guestcomm-agent in the guest",
            vm.name
        ),
    ))
}

/// Refuses an operator call on a read-only VM (HTTP 403 policy_denied).
pub(crate) async fn require_writable(state: &State, name: String) -> Result<(), Error> {
    match state.vm_view(&name).await {
        Ok(view) if view.document.as_ref().is_some_and(|doc| doc.read_only) => {
            Err(Error::PolicyDenied(format!(
                "refused by the host policy of VM {name}: the VM is read-only: only reads pass"
            )))
        }
        // An unknown VM is the handler's 404 to give.
        Ok(_) | Err(StoreError::UnknownVm(_)) => Ok(()),
        Err(e) => Err(e.into()),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;
    use guestcomm_protocol::message::ExecRequest;

    #[tokio::test]
    async fn a_vm_policy_is_enforced_on_requests_and_follows_the_vm() {
        let mut store = Store::in_memory().unwrap();
        let vm = store
            .add_vm("web1", &"unix:///a".parse().unwrap(), None)
            .unwrap();
        let doc =
            PolicyDocument::parse("[exec]\nallow = [{ program = \"/usr/bin/uptime\" }]").unwrap();
        store.set_policy_document("web1", &doc).unwrap();
        let state = State::new(store);
        let mut call = Call::Exec(ExecRequest {
            program: "sh".into(),
            ..ExecRequest::default()
        });
        let view = state.vm_view("web1").await.unwrap();
        let err = check_with(view.document.as_ref(), &vm, &mut call).unwrap_err();
        assert_eq!(err.code, ErrorCode::PolicyDenied);
        assert!(
            err.message.contains("host policy of VM web1"),
            "{}",
            err.message
        );
        assert!(require_writable(&state, "web1".into()).await.is_ok());

        state
            .db(|s| {
                s.set_policy_document("web1", &PolicyDocument::parse("read_only = true").unwrap())
            })
            .await
            .unwrap();
        assert!(require_writable(&state, "web1".into()).await.is_err());
        state.db(|s| s.remove_vm("web1")).await.unwrap();
        let left = state.db(move |s| s.policy_document(vm.id)).await.unwrap();
        assert_eq!(left, None, "removing the VM removes its policy");
    }
}
