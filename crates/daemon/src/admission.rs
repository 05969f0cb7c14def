//! May this request pass: the one answer, asked by the HTTP front end, WBEM,
//! the relays and the integration services alike.
//!
//! ```text
//! service(s)     each service registered, and Enabled on the VM     404 / 403
//! request        a relayed request: the agent's service and its own,
//!                then the VM's host policy (which may rewrite the call)
//!                and the copy confinement the agent must enforce      error frame
//! writable       an operator call on a read-only VM                   403 policy_denied
//! copy_to_guest  WBEM CopyFilesToGuest: what `guestcomm cp` passes
//! ```
//!
//! Every answer is read through the cache (module `cache`, via
//! [`State::vm_view`] and [`State::services`]), so the common case reads
//! nothing from the store.

use guestcomm_policy::{Direction, PolicyDocument};
use guestcomm_protocol::files::{CopyToGuest, FEATURE_COPY_BENEATH};
use guestcomm_protocol::{BuiltinService, Call, ErrorCode, ErrorFrame, Request, ServiceId};

use crate::cache::{Services, VmView};
use crate::error::Error;
use crate::model::{effective_on, Policy, VmRow};
use crate::state::State;
use crate::store::StoreError;

/// Why a service may not pass to a VM.
#[derive(Debug)]
pub(crate) enum Refusal {
    /// The GUID is not registered.
    Unknown,
    /// Registered, but its effective state on the VM is Disabled.
    Disabled {
        /// The service's ElementName.
        element_name: String,
    },
    /// The state store failed.
    Store(StoreError),
}

impl Refusal {
    /// One line naming the service and the VM, with what to do.
    pub(crate) fn message(&self, id: ServiceId, vm: &str) -> String {
        match self {
            Self::Unknown => format!(
                "service {id} is not registered on this host, so VM {vm} cannot be reached through it (see `guestcomm service list`)"
            ),
            Self::Disabled { element_name } => format!(
                "service {element_name} ({id}) is disabled for VM {vm} (enable it with `guestcomm service enable {id} --vm {vm}`)"
            ),
            Self::Store(e) => guestcomm_protocol::error_chain(e),
        }
    }

    /// The refusal as the API's error (404, 403).
    fn into_error(self, id: ServiceId, vm: &str) -> Error {
        match self {
            Self::Unknown => StoreError::UnknownService(id).into(),
            Self::Disabled { .. } => Error::ServiceDisabled(self.message(id, vm)),
            Self::Store(e) => e.into(),
        }
    }

    /// The refusal of a relayed request, as the error frame to send back.
    fn into_frame(self, id: ServiceId, vm: &str) -> ErrorFrame {
        let code = match self {
            Self::Unknown => ErrorCode::UnknownService,
            Self::Disabled { .. } => ErrorCode::ServiceDisabled,
            Self::Store(_) => ErrorCode::Internal,
        };
        ErrorFrame::new(code, self.message(id, vm))
    }
}

/// Passes when service `id` is registered and its effective state on `vm`
/// is Enabled: the check of every connection a guest listener accepts.
pub(crate) async fn verdict(state: &State, vm: &VmRow, id: ServiceId) -> Result<(), Refusal> {
    first_refusal(state, vm, &[id]).await.map_err(|(r, _)| r)
}

/// [`verdict`] for an API call: a refusal as the API's error (404, 403).
pub(crate) async fn service(state: &State, vm: &VmRow, id: ServiceId) -> Result<(), Error> {
    services(state, vm, &[id]).await
}

/// An integration service: the agent's own service, then `service`, may
/// reach `vm`.
pub(crate) async fn integration(
    state: &State,
    vm: &VmRow,
    service: BuiltinService,
) -> Result<(), Error> {
    services(state, vm, &[BuiltinService::Agent.id(), service.id()]).await
}

/// Each of `ids` may reach `vm`; the first refusal, in order, as the API's
/// error.
async fn services(state: &State, vm: &VmRow, ids: &[ServiceId]) -> Result<(), Error> {
    first_refusal(state, vm, ids)
        .await
        .map_err(|(refusal, id)| refusal.into_error(id, &vm.name))
}

/// The first of `ids` refused on `vm`, with the service it concerns. Read
/// from memory (module `cache`) unless the configuration changed since the
/// last request.
async fn first_refusal(
    state: &State,
    vm: &VmRow,
    ids: &[ServiceId],
) -> Result<(), (Refusal, ServiceId)> {
    let Some(&first) = ids.first() else {
        return Ok(());
    };
    let store_failed = |e| (Refusal::Store(e), first);
    let view = state.vm_view(&vm.name).await.map_err(store_failed)?;
    let services = state.services().await.map_err(store_failed)?;
    enabled(&view, &services, ids)
}

/// The check itself: the first of `ids` that is unknown or disabled on the
/// VM of `view`.
fn enabled(
    view: &VmView,
    services: &Services,
    ids: &[ServiceId],
) -> Result<(), (Refusal, ServiceId)> {
    for &id in ids {
        let Some(service) = services.get(&id) else {
            return Err((Refusal::Unknown, id));
        };
        if effective_on(&view.row, service, view.policy(id)) == Policy::Disabled {
            let element_name = service.element_name.clone();
            return Err((Refusal::Disabled { element_name }, id));
        }
    }
    Ok(())
}

/// A relayed request after admission.
pub(crate) struct Admitted {
    /// The request, its call as the host policy left it.
    pub(crate) request: Request,
    /// Passed, or the frame that refuses it.
    pub(crate) passed: Result<(), ErrorFrame>,
}

/// Everything a relayed request needs: admission of the agent's service
/// and the request's (the connection goes through the agent's own port, so
/// that one must be enabled too) and the VM's host policy (which may rewrite
/// the call, and puts a copy's allowed prefixes in it for the agent with
/// `agent_features` to enforce), all from memory in the common case.
pub(crate) async fn request(
    state: &State,
    vm: &str,
    mut request: Request,
    agent_features: &[String],
) -> Result<Admitted, StoreError> {
    // Read again, not the view of the upgrade: a service disabled while the
    // client was in its handshake refuses this request. From memory unless
    // the configuration changed meanwhile.
    let view = state.vm_view(vm).await?;
    let vm = &view.row;
    let services = state.services().await?;
    let ids = [BuiltinService::Agent.id(), request.service];
    let doc = view.document.as_ref();
    let passed = enabled(&view, &services, &ids)
        .map_err(|(refusal, id)| refusal.into_frame(id, &vm.name))
        .and_then(|()| check_policy(doc, vm, &mut request.call))
        .and_then(|()| confine_copy(doc, vm, &mut request.call, agent_features));
    Ok(Admitted { request, passed })
}

/// Refuses an operator call on a read-only VM (HTTP 403 policy_denied).
pub(crate) async fn writable(state: &State, name: String) -> Result<(), Error> {
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

/// The checks `guestcomm cp` passes through the relay, for copies made by
/// the daemon itself (WBEM CopyFilesToGuest): the agent's and the files
/// service enabled on the VM, then the VM's host policy for each copy.
pub(crate) async fn copy_to_guest(
    state: &State,
    vm: &VmRow,
    copies: impl IntoIterator<Item = &CopyToGuest>,
) -> Result<(), Error> {
    services(
        state,
        vm,
        &[BuiltinService::Agent.id(), BuiltinService::Files.id()],
    )
    .await?;
    let view = state.vm_view(&vm.name).await?;
    for copy in copies {
        let mut call = Call::CopyToGuest(copy.clone());
        check_policy(view.document.as_ref(), vm, &mut call)
            .map_err(|frame| Error::PolicyDenied(frame.message))?;
    }
    Ok(())
}

/// The host policy's allowed prefixes for a copy in `direction` that the
/// daemon makes itself, to send in its request to the agent with
/// `agent_features` (see [`relayed_prefixes`]).
pub(crate) async fn copy_prefixes(
    state: &State,
    vm: &VmRow,
    direction: Direction,
    agent_features: &[String],
) -> Result<Option<Vec<String>>, Error> {
    let view = state.vm_view(&vm.name).await?;
    relayed_prefixes(view.document.as_ref(), vm, direction, agent_features)
        .map_err(|frame| Error::PolicyDenied(frame.message))
}

/// Checks a request against the VM's host policy `doc`, rewriting a bare
/// program name to its allowed path; a refusal is the error frame to send.
fn check_policy(
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
fn confine_copy(
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
fn relayed_prefixes(
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;
    use guestcomm_protocol::message::ExecRequest;

    async fn set(state: &State, id: ServiceId, policy: Policy) {
        state
            .db(move |s| s.set_vm_policy(id, "web1", policy))
            .await
            .unwrap();
    }

    fn exec_of(service: ServiceId) -> Request {
        Request {
            service,
            call: Call::Exec(ExecRequest::default()),
        }
    }

    /// The verdict on a relayed request alone.
    async fn check(state: &State, vm: &VmRow, req: &Request) -> Result<(), ErrorFrame> {
        request(state, &vm.name, req.clone(), &[])
            .await
            .unwrap()
            .passed
    }

    #[tokio::test]
    async fn requests_pass_only_for_registered_enabled_services_and_errors_name_both() {
        let mut store = Store::in_memory().unwrap();
        let vm = store
            .add_vm("web1", &"unix:///a".parse().unwrap(), None)
            .unwrap();
        let exec = BuiltinService::Exec.id();
        let state = State::new(store);
        assert!(check(&state, &vm, &exec_of(exec)).await.is_ok());

        let stranger = "0e0b6031-5213-4934-818b-38d90ced39db".parse().unwrap();
        let err = check(&state, &vm, &exec_of(stranger)).await.unwrap_err();
        assert_eq!(err.code, ErrorCode::UnknownService);
        assert!(
            err.message.contains("0e0b6031") && err.message.contains("web1"),
            "{}",
            err.message
        );

        set(&state, exec, Policy::Disabled).await;
        let err = check(&state, &vm, &exec_of(exec)).await.unwrap_err();
        assert_eq!(err.code, ErrorCode::ServiceDisabled);
        assert!(err.message.contains("00004744"), "{}", err.message);

        // Disabling the agent's own service closes every relayed request.
        let agent = BuiltinService::Agent.id();
        set(&state, exec, Policy::Deferred).await;
        set(&state, agent, Policy::Disabled).await;
        let err = check(&state, &vm, &exec_of(exec)).await.unwrap_err();
        assert_eq!(err.code, ErrorCode::ServiceDisabled);
        assert!(err.message.contains("00004743"), "{}", err.message);
        set(&state, agent, Policy::Deferred).await;
        let err = check(&state, &vm, &exec_of(exec)).await;
        assert!(err.is_ok());
        set(&state, exec, Policy::Disabled).await;
        let err = check(&state, &vm, &exec_of(exec)).await.unwrap_err();
        assert_eq!(err.code, ErrorCode::ServiceDisabled);
        assert!(
            err.message.contains("00004744") && err.message.contains("web1"),
            "{}",
            err.message
        );
    }

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
        let err = check_policy(view.document.as_ref(), &vm, &mut call).unwrap_err();
        assert_eq!(err.code, ErrorCode::PolicyDenied);
        assert!(
            err.message.contains("host policy of VM web1"),
            "{}",
            err.message
        );
        assert!(writable(&state, "web1".into()).await.is_ok());

        state
            .db(|s| {
                s.set_policy_document("web1", &PolicyDocument::parse("read_only = true").unwrap())
            })
            .await
            .unwrap();
        assert!(writable(&state, "web1".into()).await.is_err());
        state.db(|s| s.remove_vm("web1")).await.unwrap();
        let left = state.db(move |s| s.policy_document(vm.id)).await.unwrap();
        assert_eq!(left, None, "removing the VM removes its policy");
    }
}
