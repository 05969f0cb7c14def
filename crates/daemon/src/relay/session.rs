//! A guestcomm connection to a VM's agent, through the daemon: what
//! `POST /v1/vms/{name}/connect` (`http/relay.rs`) starts once the caller's
//! connection is upgraded.
//!
//! ```text
//! CLI                        guestcommd                         agent
//!  | POST .../connect  ------> VM known? (404)                    |
//!  |  Upgrade: guestcomm       connect + handshake --------------> |  (502 if unreachable;
//!  |                           (or a warm spare, module agent)     |   spare refilled)
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

use std::fmt::Display;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::SinkExt;
use guestcomm_protocol::closing::linger;
use guestcomm_protocol::handshake::{self, HandshakeError, ServerOffer, AUTH_NONE, FEATURE_REUSE};
use guestcomm_protocol::{Call, ErrorCode, ErrorFrame, Request as GcRequest};
use guestcomm_protocol::{Control, Frame, FrameCodec, FramedConn};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::codec::Framed;
use tracing::{debug, info, warn, Instrument};

use crate::admission::{self, Admitted};
use crate::agent::{self, Agent};
use crate::audit::{self, Outcome};
use crate::cache::VmView;
use crate::caller::Caller;
use crate::error::{Error, ErrorKind};
use crate::model::VmRow;
use crate::state::State;

use super::copy::copy_both_ways;
use super::slots::acquire_relay;
use super::tap::{Tap, TapStats};

/// A session ready to relay: its VM known, a relay slot held, its agent
/// reached; what is left is the caller's stream.
pub(crate) struct Session {
    state: Arc<State>,
    view: Arc<VmView>,
    agent: Agent,
    caller: Caller,
    permit: OwnedSemaphorePermit,
}

/// Opens `caller`'s session to VM `name`'s agent: the VM known (404), a
/// relay slot (503), the agent reached (502; a warm spare or a new session).
pub(crate) async fn open(state: Arc<State>, name: &str, caller: Caller) -> Result<Session, Error> {
    let view = state.vm_view(name).await?;
    let permit = acquire_relay(&state, &view.row.name)?;
    let agent = agent::take(&state, &view.row).await?;
    Ok(Session {
        state,
        view,
        agent,
        caller,
        permit,
    })
}

impl Session {
    /// Relays, in a task of its own, the caller's stream once `upgraded`
    /// (the switch of its connection to the guestcomm protocol) gives it;
    /// a switch that fails is audited.
    pub(crate) fn start<S, E>(self, upgraded: impl Future<Output = Result<S, E>> + Send + 'static)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        E: Display + Send + 'static,
    {
        let span = tracing::info_span!("relay", vm = %self.view.row.name);
        tokio::spawn(self.run(upgraded).instrument(span));
    }

    async fn run<S, E>(self, upgraded: impl Future<Output = Result<S, E>>)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send,
        E: Display,
    {
        match upgraded.await {
            Ok(client) => {
                relay(
                    self.state,
                    self.view,
                    self.agent,
                    self.permit,
                    client,
                    self.caller,
                )
                .await
            }
            Err(e) => {
                drop(self.permit);
                warn!(error = %e, "HTTP upgrade failed");
                let error = format!("HTTP upgrade failed: {e}");
                audit_broken_session(&self.state, self.caller, &self.view.row, error).await;
            }
        }
    }
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

/// Handshake with the CLI, policy check of its request, then the byte
/// relay; the request is audited when it starts and when it ends. The
/// relay slot `permit` goes back once the connections are closed.
async fn relay<T>(
    state: Arc<State>,
    view: Arc<VmView>,
    agent: Agent,
    permit: OwnedSemaphorePermit,
    client: T,
    caller: Caller,
) where
    T: AsyncRead + AsyncWrite + Unpin + Send,
{
    let vm = &view.row;
    let welcome = &agent.session().welcome;
    let mut client = Framed::new(client, FrameCodec::new());
    let offer = ServerOffer {
        // Not `reuse`: the relay checks, audits and forwards one request
        // per connection (and its own sessions with agents never offer it,
        // so an agent does not serve a second request sent down a relay).
        features: welcome
            .features
            .iter()
            .filter(|f| *f != FEATURE_REUSE)
            .cloned()
            .collect(),
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
    let mut record = audit_record(caller, vm, &request);
    let Admitted { request, passed } =
        match admission::request(&state, &vm.name, request, &welcome.features).await {
            Ok(admitted) => admitted,
            Err(e) => {
                let frame =
                    ErrorFrame::new(ErrorCode::Internal, guestcomm_protocol::error_chain(&e));
                return refuse(&mut client, frame).await;
            }
        };
    if let Err(frame) = &passed {
        audit::finish(
            &mut record,
            Outcome::Refused,
            Some(frame.to_string()),
            started,
        );
    }
    // The audit record, written before the request can reach the agent (the
    // one store call on the path of every exec and cp); a refusal is
    // complete: chained and logged now.
    let id = match &passed {
        Err(frame) => {
            state
                .audit_refusal(record.clone(), refusal_kind(frame))
                .await
        }
        Ok(_) => state.audit_start(&record).await,
    };
    record.id = id.unwrap_or(0);
    if let Err(frame) = passed {
        info!(service = %request.service, error = %frame.message, "request refused");
        return refuse(&mut client, frame).await;
    }
    let service = request.service;
    // Copies have an idle bound; an exec may rightly be silent for hours.
    let idle = matches!(request.call, Call::CopyToGuest(_) | Call::CopyFromGuest(_))
        .then_some(state.relay_copy_idle);
    let agent_conn = match agent.send(vm, request).await {
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
    // Both connections are closed: the slot goes back before the audit
    // record is written. Held through the write, slots ran out under load
    // while the store's queue was long (the exec itself long over).
    drop(permit);
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
    agent::refill(&state, vm);
}

/// Who refused a relayed request, by the code of its refusal: the
/// service's enablement, or (any other) the VM's policy.
fn refusal_kind(frame: &ErrorFrame) -> ErrorKind {
    match frame.code {
        ErrorCode::ServiceDisabled | ErrorCode::UnknownService => ErrorKind::ServiceDisabled,
        _ => ErrorKind::PolicyDenied,
    }
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
