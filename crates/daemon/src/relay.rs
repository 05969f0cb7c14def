//! `POST /v1/vms/{name}/connect`: a guestcomm connection to a VM's agent,
//! through the daemon, over an HTTP upgrade.
//!
//! ```text
//! CLI                        guestcommd                         agent
//!  | POST .../connect  ------> VM known? (404)                    |
//!  |  Upgrade: guestcomm       connect + handshake --------------> |  (502 if unreachable;
//!  |                           (or a warm spare, module spare)     |   spare refilled)
//!  | <------ 101 Switching Protocols                               |
//!  | -- hello ---------------> | answered with the agent's         |
//!  | <- welcome -------------- |   features and name               |
//!  | -- request -------------> | service registered and enabled    |
//!  |                           |   for this VM? else error frame   |
//!  |                           |   unknown_service/service_disabled|
//!  |                           | -- request ---------------------> |
//!  | <======= bytes relayed both ways, bounded buffers ==========> |
//! ```
//!
//! After the request the relay copies bytes, never half-closing either side
//! (see docs/PROTOCOL.md 2.5): when the agent closes, its last bytes are
//! flushed to the CLI and both connections close; when the CLI goes away
//! the agent connection is dropped, and the agent kills the command. A copy
//! that moves no byte for `--copy-idle-timeout` is closed both ways and
//! audited `stalled` (module `activity`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Path, Request, State as AxumState};
use axum::response::Response;
use futures::SinkExt;
use guestcomm_client::Session;
use guestcomm_protocol::closing::linger;
use guestcomm_protocol::handshake::{self, HandshakeError, ServerOffer, AUTH_NONE};
use guestcomm_protocol::{BuiltinService, Control, Frame, FrameCodec, FramedConn, ServiceId};
use guestcomm_protocol::{Call, ErrorCode, ErrorFrame, Request as GcRequest};
use guestcomm_transport::{Address, Stream};
use hyper::header::{CONNECTION, UPGRADE};
use hyper::StatusCode;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::codec::Framed;
use tracing::{debug, info, warn, Instrument};

use crate::access::Authorized;
use crate::activity::Activity;
use crate::audit::{self, Outcome};
use crate::cache::{Services, VmView};
use crate::caller::Caller;
use crate::error::Error;
use crate::limits::{RELAY_BUFFER_BYTES, RELAY_BUFFER_START_BYTES};
use crate::model::VmRow;
use crate::model::{effective_on, Policy};
use crate::state::State;
use crate::store::StoreError;
use crate::tap::{Tap, TapStats};

/// The handler: checks the VM, reaches its agent, then upgrades.
pub(crate) async fn connect(
    AxumState(state): AxumState<Arc<State>>,
    Path(name): Path<String>,
    mut req: Request,
) -> Result<Response, Error> {
    require_upgrade(&req)?;
    let caller = caller_of(&req);
    let view = state.vm_view(&name).await?;
    let vm = view.row.clone();
    let permit = acquire_relay(&state, &vm.name)?;
    let addr = vm.endpoint.clone();
    let agent = match state.spares.take(&vm) {
        Some(spare) => AgentConn::Spare(spare, addr),
        None => AgentConn::Fresh(
            guestcomm_client::connect_with(&addr, crate::DAEMON_NAME, vm.psk.as_ref())
                .await
                .map_err(|source| Error::Agent {
                    vm: vm.name.clone(),
                    source,
                })?,
        ),
    };
    let upgrade = hyper::upgrade::on(&mut req);
    let span = tracing::info_span!("relay", vm = %vm.name);
    tokio::spawn(
        async move {
            match upgrade.await {
                Ok(upgraded) => relay(state, view, agent, TokioIo::new(upgraded), caller).await,
                Err(e) => {
                    warn!(error = %e, "HTTP upgrade failed");
                    let error = format!("HTTP upgrade failed: {e}");
                    audit_broken_session(&state, caller, &view.row, error).await;
                }
            }
            drop(permit);
        }
        .instrument(span),
    );
    switching_protocols()
}

/// The caller [`authorize`](crate::http) identified.
pub(crate) fn caller_of(req: &Request) -> Caller {
    req.extensions()
        .get::<Authorized>()
        .map(|a| a.caller)
        .unwrap_or_default()
}

/// The audit record of a relayed request: its operation and arguments.
fn audit_record(caller: Caller, vm: &VmRow, request: &GcRequest) -> audit::Record {
    let (operation, arguments) = match &request.call {
        Call::Exec(exec) => {
            let mut line = audit::command_line(&exec.program, &exec.args);
            if let Some(user) = &exec.user {
                line.push_str(&format!(" (user {user})"));
            }
            ("exec", line)
        }
        Call::CopyToGuest(copy) => ("cp.to_guest", copy.dst.clone()),
        Call::CopyFromGuest(copy) => ("cp.from_guest", copy.src.clone()),
        // Integration requests relayed as they are (the API's own routes
        // for them are audited by the access middleware).
        other => ("request", other.op().to_string()),
    };
    let mut record = audit::record(caller, operation);
    record.vm = Some(vm.name.clone());
    record.service = Some(request.service.to_string());
    record.arguments = audit::arguments(&arguments);
    if let Call::Exec(exec) = &request.call {
        record.environment = audit::environment(&exec.env);
    }
    record
}

/// Refuses a request that does not ask for the guestcomm upgrade.
pub(crate) fn require_upgrade(req: &Request) -> Result<(), Error> {
    require_upgrade_to(req, &[guestcomm_api::UPGRADE_PROTOCOL]).map(drop)
}

/// [`require_upgrade`] to one of `protocols`; returns the one asked for.
pub(crate) fn require_upgrade_to(
    req: &Request,
    protocols: &[&'static str],
) -> Result<&'static str, Error> {
    let asked = req.headers().get(UPGRADE).and_then(|v| v.to_str().ok());
    let chosen = asked.and_then(|v| {
        protocols
            .iter()
            .find(|p| v.eq_ignore_ascii_case(p))
            .copied()
    });
    if let Some(protocol) = chosen {
        Ok(protocol)
    } else {
        Err(Error::BadRequest(format!(
            "this endpoint needs `Connection: Upgrade` and `Upgrade: {}`",
            guestcomm_api::UPGRADE_PROTOCOL
        )))
    }
}

/// A relay slot, or 503 at [`MAX_RELAYS`](crate::limits::MAX_RELAYS).
pub(crate) fn acquire_relay(state: &State, vm: &str) -> Result<OwnedSemaphorePermit, Error> {
    state.relays.clone().try_acquire_owned().map_err(|_| {
        warn!(vm, "relay limit reached, refusing a connection");
        Error::Busy(format!(
            "guestcommd is relaying its maximum of {} connections; retry later",
            crate::limits::MAX_RELAYS
        ))
    })
}

/// The 101 answer that starts a relay.
pub(crate) fn switching_protocols() -> Result<Response, Error> {
    switching_to(guestcomm_api::UPGRADE_PROTOCOL)
}

/// The 101 answer to `protocol`.
pub(crate) fn switching_to(protocol: &'static str) -> Result<Response, Error> {
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(CONNECTION, "upgrade")
        .header(UPGRADE, protocol)
        .body(Body::empty())
        .map_err(|e| Error::Internal(e.to_string()))
}

/// The agent connection a relay starts with.
enum AgentConn {
    /// Made for this operation.
    Fresh(Session<Stream>),
    /// A warm spare (module `spare`) and the address to connect to anew if
    /// the agent turns out to have closed it meanwhile.
    Spare(Session<Stream>, Address),
}

impl AgentConn {
    fn session(&self) -> &Session<Stream> {
        match self {
            Self::Fresh(session) | Self::Spare(session, _) => session,
        }
    }
}

/// Sends the admitted request to the agent. A spare that the agent closed
/// since it was checked (a restart) fails the write at once: then one fresh
/// connection is tried, so a warm spare never costs an operation.
async fn forward(
    agent: AgentConn,
    vm: &VmRow,
    request: GcRequest,
) -> Result<FramedConn<Stream>, ErrorFrame> {
    let failed = |e: &dyn std::error::Error| {
        let message = format!(
            "the agent of VM {} failed: {}",
            vm.name,
            guestcomm_protocol::error_chain(e)
        );
        ErrorFrame::new(ErrorCode::Io, message)
    };
    let (mut conn, retry) = match agent {
        AgentConn::Fresh(session) => (session.conn, None),
        AgentConn::Spare(session, addr) => (session.conn, Some(addr)),
    };
    // Only a spare may need the request a second time.
    let (request, again) = match retry {
        Some(addr) => (request.clone(), Some((addr, request))),
        None => (request, None),
    };
    let sent = conn.send(Frame::Control(Control::Request(request))).await;
    match (sent, again) {
        (Ok(()), _) => Ok(conn),
        (Err(e), None) => Err(failed(&e)),
        (Err(e), Some((addr, request))) => {
            debug!(error = %guestcomm_protocol::error_chain(&e), "spare connection was closed; connecting anew");
            let session =
                guestcomm_client::connect_with(&addr, crate::DAEMON_NAME, vm.psk.as_ref())
                    .await
                    .map_err(|e| failed(&e))?;
            Box::pin(forward(AgentConn::Fresh(session), vm, request)).await
        }
    }
}

/// Handshake with the CLI, policy check of its request, then the byte
/// relay; the request is audited when it starts and when it ends.
async fn relay<T>(state: Arc<State>, view: Arc<VmView>, agent: AgentConn, client: T, caller: Caller)
where
    T: AsyncRead + AsyncWrite + Unpin + Send,
{
    let vm = &view.row;
    let welcome = &agent.session().welcome;
    let mut client = Framed::new(client, FrameCodec::new());
    let offer = ServerOffer {
        features: welcome.features.clone(),
        auth: vec![AUTH_NONE.into()],
        agent: welcome.agent.clone(),
        // The caller came through the API socket, identified by SO_PEERCRED;
        // keys are between the daemon and the agent.
        psk: None,
        nonce_epoch: None,
    };
    if let Err(e) = handshake::server_handshake(&mut client, &offer).await {
        let error = format!(
            "client handshake failed: {}",
            guestcomm_protocol::error_chain(&e)
        );
        debug!(%error);
        audit_broken_session(&state, caller, vm, error).await;
        // Its error frame was sent: the client closes first (PROTOCOL.md 2.5).
        if !matches!(e, HandshakeError::Closed | HandshakeError::Timeout(_)) {
            linger(&mut client).await;
        }
        return;
    }
    let request = match handshake::read_request(&mut client).await {
        Ok(request) => request,
        Err(frame) => {
            let error = format!("no valid request from the client: {frame}");
            audit_broken_session(&state, caller, vm, error).await;
            return refuse(&mut client, frame).await;
        }
    };
    let started = Instant::now();
    let record = audit_record(caller, vm, &request);
    let Verdict {
        request,
        passed,
        mut record,
        id,
    } = match admit_request(
        &state,
        &vm.name,
        request,
        &welcome.features,
        record,
        started,
    )
    .await
    {
        Ok(verdict) => verdict,
        Err(e) => {
            let frame = ErrorFrame::new(ErrorCode::Internal, guestcomm_protocol::error_chain(&e));
            return refuse(&mut client, frame).await;
        }
    };
    if let Err(frame) = passed {
        info!(service = %request.service, error = %frame.message, "request refused");
        return refuse(&mut client, frame).await;
    }
    let service = request.service;
    // Copies have an idle bound; an exec may rightly be silent for hours.
    let idle = matches!(request.call, Call::CopyToGuest(_) | Call::CopyFromGuest(_))
        .then_some(state.relay_copy_idle);
    let agent_conn = match forward(agent, vm, request).await {
        Ok(conn) => conn,
        Err(frame) => {
            audit::finish(
                &mut record,
                Outcome::Failed,
                Some(frame.to_string()),
                started,
            );
            state.audit_end(id, record).await;
            return refuse(&mut client, frame).await;
        }
    };
    debug!(%service, "relaying");
    let stats = Arc::new(TapStats::default());
    let pumped = pump(client, agent_conn, &stats, idle).await;
    if let Err(e) = &pumped {
        debug!(error = %e, "relay ended with an error");
    }
    let seen = stats.observed();
    record.exit_code = seen.exit_code;
    record.bytes = Some(stats.bytes());
    // Once the agent sent its last message, how the connection closed
    // (with or without TLS close_notify, say) does not change the outcome.
    let (outcome, error) = match (seen.error, pumped) {
        (_, Err(e)) if e.kind() == std::io::ErrorKind::TimedOut => {
            warn!(error = %e, "relayed copy stalled, closed");
            (Outcome::Stalled, Some(e.to_string()))
        }
        (Some(error), _) => (Outcome::Failed, Some(error)),
        (None, _) if seen.completed => (Outcome::Ok, None),
        (None, Err(e)) => (Outcome::Failed, Some(e.to_string())),
        (None, Ok(())) => (
            Outcome::Failed,
            Some("the connection ended before the operation completed".into()),
        ),
    };
    audit::finish(&mut record, outcome, error, started);
    state.audit_end(id, record).await;
    // The agent served this operation: the next one on this VM gets a warm
    // connection. Made now, not while relaying, so that it does not compete
    // with the operation for the CPU.
    state.spares.refill(vm.clone(), crate::DAEMON_NAME);
}

/// Audits a relay session that ended after its `101` without a request to
/// audit (`vm.connect`, failed): an upgrade that broke, a client handshake
/// that failed, a first frame that was not a valid request.
async fn audit_broken_session(state: &State, caller: Caller, vm: &VmRow, error: String) {
    let mut record = audit::record(caller, "vm.connect");
    record.vm = Some(vm.name.clone());
    audit::finish(&mut record, Outcome::Failed, Some(error), Instant::now());
    state.audit(record).await;
}

/// Sends a final error frame to the CLI (best effort), then waits for the
/// CLI to close first (PROTOCOL.md 2.5).
async fn refuse<T: AsyncRead + AsyncWrite + Unpin>(client: &mut FramedConn<T>, frame: ErrorFrame) {
    if client
        .send(Frame::Control(Control::Error(frame)))
        .await
        .is_ok()
    {
        linger(client).await;
    }
}

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
}

/// [`admit`] for an API call: a refusal as the API's error (404, 403).
pub(crate) async fn admit_api(state: &State, vm: &VmRow, id: ServiceId) -> Result<(), Error> {
    admit(state, vm, id).await.map_err(|refusal| match refusal {
        Refusal::Unknown => StoreError::UnknownService(id).into(),
        Refusal::Disabled { .. } => Error::ServiceDisabled(refusal.message(id, &vm.name)),
        Refusal::Store(e) => e.into(),
    })
}

/// Passes when service `id` is registered and its effective state on `vm`
/// is Enabled: the policy check of every relayed connection.
pub(crate) async fn admit(state: &State, vm: &VmRow, id: ServiceId) -> Result<(), Refusal> {
    admit_each(state, vm, vec![id]).await.map_err(|(r, _)| r)
}

/// [`admit`] for several services: the first refusal, in order, with the
/// service it concerns. Read from memory (module `cache`) unless the
/// configuration changed since the last request.
async fn admit_each(
    state: &State,
    vm: &VmRow,
    ids: Vec<ServiceId>,
) -> Result<(), (Refusal, ServiceId)> {
    let Some(&first) = ids.first() else {
        return Ok(());
    };
    let store_failed = |e| (Refusal::Store(e), first);
    let view = state.vm_view(&vm.name).await.map_err(store_failed)?;
    let services = state.services().await.map_err(store_failed)?;
    admission(&view, &services, &ids)
}

/// The admission check itself: the first of `ids` that is unknown or
/// disabled on the VM of `view`.
fn admission(
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

/// A refusal of a relayed request, as the error frame to send back.
fn refusal_frame(refusal: Refusal, service: ServiceId, vm: &str) -> ErrorFrame {
    let code = match refusal {
        Refusal::Unknown => ErrorCode::UnknownService,
        Refusal::Disabled { .. } => ErrorCode::ServiceDisabled,
        Refusal::Store(_) => ErrorCode::Internal,
    };
    ErrorFrame::new(code, refusal.message(service, vm))
}

/// The store's verdict on a relayed request, and its audit record.
struct Verdict {
    /// The request, its call as the host policy left it.
    request: GcRequest,
    /// Passed, or the frame that refuses it.
    passed: Result<(), ErrorFrame>,
    /// The audit record as written: `running` when it passed, `refused` when not.
    record: audit::Record,
    /// Its row, when the write succeeded.
    id: Option<i64>,
}

/// Everything a relayed request needs: admission of the agent's service
/// and the request's (the connection goes through the agent's own port, so
/// that one must be enabled too) and the VM's host policy (which may rewrite
/// the call), both from memory in the common case; then the audit record,
/// written before the request can reach the agent (the one store call on
/// the path of every exec and cp).
async fn admit_request(
    state: &State,
    vm: &str,
    mut request: GcRequest,
    agent_features: &[String],
    mut record: audit::Record,
    started: Instant,
) -> Result<Verdict, StoreError> {
    // Read again, not the view of the upgrade: a service disabled while the
    // client was in its handshake refuses this request. From memory unless
    // the configuration changed meanwhile.
    let view = state.vm_view(vm).await?;
    let vm = &view.row;
    let services = state.services().await?;
    let ids = [BuiltinService::Agent.id(), request.service];
    let passed = admission(&view, &services, &ids)
        .map_err(|(refusal, id)| refusal_frame(refusal, id, &vm.name))
        .and_then(|()| crate::policy_doc::check_with(view.document.as_ref(), vm, &mut request.call))
        .and_then(|()| {
            let doc = view.document.as_ref();
            crate::policy_doc::confine_copy(doc, vm, &mut request.call, agent_features)
        });
    if let Err(frame) = &passed {
        audit::finish(
            &mut record,
            Outcome::Refused,
            Some(frame.to_string()),
            started,
        );
    }
    // A refusal is complete: chained and logged now.
    let id = state
        .audit_in(record.clone(), crate::store::audit_chain::Chain::Operations)
        .await;
    record.id = id.unwrap_or(0);
    Ok(Verdict {
        request,
        passed,
        record,
        id,
    })
}

/// Copies bytes both ways until the agent closes (or the CLI goes away, or
/// nothing moves for `idle`), first the bytes each side's framing had
/// already read.
async fn pump<C, A>(
    client: FramedConn<C>,
    agent: FramedConn<A>,
    stats: &Arc<TapStats>,
    idle: Option<Duration>,
) -> std::io::Result<()>
where
    C: AsyncRead + AsyncWrite + Unpin,
    A: AsyncRead + AsyncWrite + Unpin,
{
    let client = client.into_parts();
    let agent = agent.into_parts();
    stats.saw(&agent.read_buf);
    let tapped = Tap::new(agent.io, stats.clone());
    copy_both_ways(client.io, &client.read_buf, tapped, &agent.read_buf, idle).await
}

/// The byte relay: `client_early` goes to the guest side and `guest_early`
/// to the client before anything else; ends when the guest side closes (its
/// last bytes flushed) or the client goes away, or with an error of kind
/// `TimedOut` when no byte has moved either way for `idle`. Never
/// half-closes.
pub(crate) async fn copy_both_ways<C, G>(
    client: C,
    client_early: &[u8],
    guest: G,
    guest_early: &[u8],
    idle: Option<Duration>,
) -> std::io::Result<()>
where
    C: AsyncRead + AsyncWrite,
    G: AsyncRead + AsyncWrite,
{
    let (client_read, mut client_write) = tokio::io::split(client);
    let (guest_read, mut guest_write) = tokio::io::split(guest);
    let activity = Activity::default();
    let up = async {
        guest_write.write_all(client_early).await?;
        guest_write.flush().await?;
        copy_growing(client_read, &mut guest_write, &activity).await
    };
    let down = async {
        client_write.write_all(guest_early).await?;
        client_write.flush().await?;
        let n = copy_growing(guest_read, &mut client_write, &activity).await?;
        client_write.flush().await?;
        Ok::<u64, std::io::Error>(n)
    };
    tokio::select! {
        r = down => r.map(drop),
        r = up => r.map(drop),
        stalled = activity.stalled(idle) => Err(stalled),
    }
}

/// Copies `from` to `to` until the end of `from`, through a buffer that
/// starts at [`RELAY_BUFFER_START_BYTES`] and doubles while reads fill it,
/// up to [`RELAY_BUFFER_BYTES`]: an exec of `true` moves a few hundred
/// bytes and should not pay for zeroing a bulk copy's buffer.
async fn copy_growing<R, W>(mut from: R, to: &mut W, activity: &Activity) -> std::io::Result<u64>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0; RELAY_BUFFER_START_BYTES];
    let mut total = 0u64;
    loop {
        let n = from.read(&mut buf).await?;
        if n == 0 {
            return Ok(total);
        }
        activity.touch();
        to.write_all(&buf[..n]).await?;
        activity.touch();
        total += n as u64;
        if n == buf.len() && buf.len() < RELAY_BUFFER_BYTES {
            buf.resize((buf.len() * 2).min(RELAY_BUFFER_BYTES), 0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;
    use guestcomm_protocol::BuiltinService;
    use guestcomm_protocol::{Call, ExecRequest};

    #[tokio::test]
    async fn the_growing_relay_buffer_loses_and_reorders_nothing() {
        let data: Vec<u8> = (0..3 * RELAY_BUFFER_BYTES + 17)
            .map(|i| (i % 251) as u8)
            .collect();
        let (mut feed, from) = tokio::io::duplex(64 * 1024);
        let sent = data.clone();
        let writer = tokio::spawn(async move {
            feed.write_all(&sent).await.unwrap();
        });
        let mut out = Vec::new();
        let n = copy_growing(from, &mut out, &Activity::default())
            .await
            .unwrap();
        writer.await.unwrap();
        assert_eq!(n as usize, data.len());
        assert_eq!(out, data);
    }

    async fn set(state: &State, id: guestcomm_protocol::ServiceId, policy: Policy) {
        state
            .db(move |s| s.set_vm_policy(id, "web1", policy))
            .await
            .unwrap();
    }

    fn request(service: guestcomm_protocol::ServiceId) -> GcRequest {
        GcRequest {
            service,
            call: Call::Exec(ExecRequest::default()),
        }
    }

    /// The admission verdict alone.
    async fn check(state: &State, vm: &VmRow, request: &GcRequest) -> Result<(), ErrorFrame> {
        let record = audit::Record::default();
        admit_request(
            state,
            &vm.name,
            request.clone(),
            &[],
            record,
            Instant::now(),
        )
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
        assert!(check(&state, &vm, &request(exec)).await.is_ok());

        let stranger = "0e0b6031-5213-4934-818b-38d90ced39db".parse().unwrap();
        let err = check(&state, &vm, &request(stranger)).await.unwrap_err();
        assert_eq!(err.code, ErrorCode::UnknownService);
        assert!(
            err.message.contains("0e0b6031") && err.message.contains("web1"),
            "{}",
            err.message
        );

        set(&state, exec, Policy::Disabled).await;
        let err = check(&state, &vm, &request(exec)).await.unwrap_err();
        assert_eq!(err.code, ErrorCode::ServiceDisabled);
        assert!(err.message.contains("00004744"), "{}", err.message);

        // Disabling the agent's own service closes every relayed request.
        let agent = BuiltinService::Agent.id();
        set(&state, exec, Policy::Deferred).await;
        set(&state, agent, Policy::Disabled).await;
        let err = check(&state, &vm, &request(exec)).await.unwrap_err();
        assert_eq!(err.code, ErrorCode::ServiceDisabled);
        assert!(err.message.contains("00004743"), "{}", err.message);
        set(&state, agent, Policy::Deferred).await;
        let err = check(&state, &vm, &request(exec)).await;
        assert!(err.is_ok());
        set(&state, exec, Policy::Disabled).await;
        let err = check(&state, &vm, &request(exec)).await.unwrap_err();
        assert_eq!(err.code, ErrorCode::ServiceDisabled);
        assert!(
            err.message.contains("00004744") && err.message.contains("web1"),
            "{}",
            err.message
        );
    }
}
