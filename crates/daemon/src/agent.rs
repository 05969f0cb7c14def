//! The one way to reach a VM's agent: connect to the VM's endpoint and
//! handshake with its key, as `guestcommd <version>`.
//!
//! ```text
//! connect   a session for one integration call or daemon-made copy   (502)
//! take      a relay's session: a warm spare (module `spare`) if one is
//!           waiting, else a new one; `send` connects once more if the
//!           agent closed the spare meanwhile
//! refill    the VM's next spare, made in the background
//! probe     the health monitor's heartbeat on the VM's kept connection,
//!           or connect and handshake (offering reuse, to keep this one),
//!           within PROBE_TIMEOUT_MS, its failure classed by where it
//!           happened
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::SinkExt;
use guestcomm_api::HealthDetail;
use guestcomm_client::integration::CallError;
use guestcomm_client::{ClientError, Session};
use guestcomm_protocol::auth::Psk;
use guestcomm_protocol::error_chain;
use guestcomm_protocol::handshake::HandshakeError;
use guestcomm_protocol::integration::AgentCounters;
use guestcomm_protocol::{Call, Control, ErrorCode, ErrorFrame, Frame, FramedConn, Request};
use guestcomm_transport::hybrid::HybridError;
use guestcomm_transport::{Address, ConnectError, Stream};
use tracing::debug;

use crate::error::Error;
use crate::health::ProbeFailure;
use crate::limits::PROBE_TIMEOUT_MS;
use crate::model::VmRow;
use crate::state::State;

/// Connects to the agent at `addr` and handshakes with `psk`: the one call
/// that reaches an agent.
async fn open(addr: &Address, psk: Option<&Psk>) -> Result<Session<Stream>, ClientError> {
    guestcomm_client::connect_with(addr, crate::DAEMON_NAME, psk).await
}

/// A session with `vm`'s agent.
pub(crate) async fn connect(vm: &VmRow) -> Result<Session<Stream>, Error> {
    open(&vm.endpoint, vm.psk.as_ref())
        .await
        .map_err(|source| Error::Agent {
            vm: vm.name.clone(),
            source,
        })
}

/// The agent session a relay starts with.
pub(crate) struct Agent {
    session: Session<Stream>,
    /// A warm spare (module `spare`): the agent may have closed it since it
    /// was checked.
    warm: bool,
}

/// `vm`'s warm spare if one is open, else a new session.
pub(crate) async fn take(state: &State, vm: &VmRow) -> Result<Agent, Error> {
    if let Some(session) = state.spares.take(vm) {
        return Ok(Agent {
            session,
            warm: true,
        });
    }
    let session = connect(vm).await?;
    Ok(Agent {
        session,
        warm: false,
    })
}

/// Makes `vm`'s next spare in the background (module `spare` says when).
pub(crate) fn refill(state: &State, vm: &VmRow) {
    let target = vm.clone();
    let made = async move { open(&target.endpoint, target.psk.as_ref()).await.ok() };
    state.spares.refill(vm.clone(), made);
}

impl Agent {
    /// The session, handshake done.
    pub(crate) fn session(&self) -> &Session<Stream> {
        &self.session
    }

    /// Sends the admitted request to `vm`'s agent. A spare that the agent
    /// closed since it was checked (a restart) fails the write at once:
    /// then one fresh connection is tried, so a warm spare never costs an
    /// operation.
    pub(crate) async fn send(
        self,
        vm: &VmRow,
        request: Request,
    ) -> Result<FramedConn<Stream>, ErrorFrame> {
        let failed = |e: &dyn std::error::Error| {
            let message = format!("the agent of VM {} failed: {}", vm.name, error_chain(e));
            ErrorFrame::new(ErrorCode::Io, message)
        };
        let mut conn = self.session.conn;
        // Only a spare may need the request a second time.
        let (request, again) = if self.warm {
            (request.clone(), Some(request))
        } else {
            (request, None)
        };
        let sent = conn.send(Frame::Control(Control::Request(request))).await;
        match (sent, again) {
            (Ok(()), _) => Ok(conn),
            (Err(e), None) => Err(failed(&e)),
            (Err(e), Some(request)) => {
                debug!(error = %error_chain(&e), "spare connection was closed; connecting anew");
                let session = open(&vm.endpoint, vm.psk.as_ref())
                    .await
                    .map_err(|e| failed(&e))?;
                let fresh = Agent {
                    session,
                    warm: false,
                };
                Box::pin(fresh.send(vm, request)).await
            }
        }
    }
}

/// What an answered probe learnt: the round trip (connect and handshake,
/// or the heartbeat on a kept connection), the agent's name, and its own
/// counters when asked for and given (an older agent has none).
#[derive(Debug)]
pub(crate) struct Probed {
    pub(crate) rtt: Duration,
    pub(crate) agent: Arc<str>,
    pub(crate) counters: Option<AgentCounters>,
}

/// A probe's connection kept open for the VM's next probe: the agent
/// agreed to reuse, so the next heartbeat is one request and one answer
/// (docs/PROTOCOL.md 2.6). It serves only the VM whose endpoint and key it
/// was opened with.
pub(crate) struct KeptProbe {
    conn: FramedConn<Stream>,
    endpoint: Address,
    psk: Option<Psk>,
    /// The agent's name from its welcome, shared with every probe's answer.
    agent: Arc<str>,
}

impl KeptProbe {
    /// Where it is connected: the agents' share of kept connections is
    /// counted by it.
    pub(crate) fn endpoint(&self) -> &Address {
        &self.endpoint
    }

    /// Whether it was opened to `endpoint`. Paths are compared byte for
    /// byte, not component by component as `Path`'s equality does: this
    /// runs on every heartbeat, and a path written differently only costs
    /// a new connection.
    pub(crate) fn is_for(&self, endpoint: &Address) -> bool {
        match (&self.endpoint, endpoint) {
            (Address::Unix(a), Address::Unix(b)) => a.as_os_str() == b.as_os_str(),
            (
                Address::HybridVsock { path: a, port: p },
                Address::HybridVsock { path: b, port: q },
            ) => p == q && a.as_os_str() == b.as_os_str(),
            (a, b) => a == b,
        }
    }

    /// Trims the idle connection's buffers to [`KEPT_BUFFER_BYTES`]:
    /// thousands of kept connections must not hold a bulk-sized read and
    /// write buffer each between heartbeats. (Not to nothing: reading into
    /// an empty buffer takes a read per doubling of its size.)
    fn idle(mut self) -> Self {
        if self.conn.read_buffer().is_empty()
            && self.conn.read_buffer().capacity() > KEPT_BUFFER_BYTES
        {
            *self.conn.read_buffer_mut() = bytes::BytesMut::with_capacity(KEPT_BUFFER_BYTES);
        }
        if self.conn.write_buffer().is_empty()
            && self.conn.write_buffer().capacity() > KEPT_BUFFER_BYTES
        {
            *self.conn.write_buffer_mut() = bytes::BytesMut::with_capacity(KEPT_BUFFER_BYTES);
        }
        self
    }
}

/// What a kept probe connection's buffers hold between heartbeats: a
/// heartbeat's request and its answer (the agent's counters) fit.
const KEPT_BUFFER_BYTES: usize = 1024;

#[cfg(test)]
impl KeptProbe {
    /// A kept connection to `endpoint` whose far end is already closed.
    pub(crate) fn for_test(endpoint: &str) -> Self {
        let (ours, _) = std::os::unix::net::UnixStream::pair().expect("a socket pair");
        ours.set_nonblocking(true).expect("non-blocking");
        let stream = Stream::Unix(tokio::net::UnixStream::from_std(ours).expect("in a runtime"));
        Self {
            conn: tokio_util::codec::Framed::new(stream, guestcomm_protocol::FrameCodec::default()),
            endpoint: endpoint.parse().expect("an address"),
            psk: None,
            agent: "guestcomm-agent test".into(),
        }
    }
}

/// Probes `vm`'s agent within [`PROBE_TIMEOUT_MS`]. On `kept`, the
/// connection a previous probe kept, it asks `heartbeat`; a kept
/// connection that the agent closed meanwhile (a restart, its idle bound)
/// is no failure: a new connection is tried at once. A new connection is
/// connect and handshake; with `keep`, it offers reuse and, when the agent
/// agrees, asks `heartbeat` and is given back to be kept. Otherwise, with
/// `counters`, it asks `heartbeat` too (whose failure fails nothing: it is
/// logged at debug). The agent's counters are returned only with
/// `counters`.
pub(crate) async fn probe(
    vm: &VmRow,
    counters: bool,
    kept: Option<KeptProbe>,
    keep: bool,
) -> (Result<Probed, ProbeFailure>, Option<KeptProbe>) {
    let bound = Duration::from_millis(PROBE_TIMEOUT_MS);
    let addr = &vm.endpoint;
    let psk = vm.psk.as_ref();
    let kept = kept.filter(|k| k.is_for(addr) && k.psk.as_ref() == psk);
    if let Some(kept) = kept {
        let start = Instant::now();
        let heartbeat = Call::Heartbeat { counters };
        let asked = guestcomm_client::integration::call_on_within(kept.conn, heartbeat, bound);
        match asked.await {
            Ok((answer @ (Control::AgentCounters(_) | Control::Done), conn)) => {
                let probed = Probed {
                    rtt: start.elapsed(),
                    agent: kept.agent.clone(),
                    counters: asked_counters(counters, answer),
                };
                let kept = KeptProbe { conn, ..kept }.idle();
                return (Ok(probed), Some(kept));
            }
            Ok((other, _)) => {
                debug!(%addr, answer = other.kind(), "kept probe connection: not a heartbeat's answer; connecting anew");
            }
            Err(CallError::Timeout(_)) => {
                let failure = ProbeFailure {
                    detail: HealthDetail::AgentNotAnswering,
                    error: format!("no answer to a heartbeat within {PROBE_TIMEOUT_MS} ms"),
                };
                return (Err(failure), None);
            }
            Err(e) => {
                debug!(%addr, error = %error_chain(&e), "kept probe connection closed; connecting anew");
            }
        }
    }
    // Boxed: the common probe (a kept connection) stays a small future.
    Box::pin(probe_anew(addr, psk, counters, keep)).await
}

/// [`probe`] on a new connection.
async fn probe_anew(
    addr: &Address,
    psk: Option<&Psk>,
    counters: bool,
    keep: bool,
) -> (Result<Probed, ProbeFailure>, Option<KeptProbe>) {
    let bound = Duration::from_millis(PROBE_TIMEOUT_MS);
    let start = Instant::now();
    let attempt = async {
        if keep {
            guestcomm_client::connect_reusable(addr, crate::DAEMON_NAME, psk).await
        } else {
            open(addr, psk).await
        }
    };
    let session = match tokio::time::timeout(bound, attempt).await {
        Ok(Ok(session)) => session,
        Ok(Err(e)) => {
            let failure = ProbeFailure {
                detail: classify(addr, &e),
                error: error_chain(&e),
            };
            return (Err(failure), None);
        }
        Err(_) => {
            let failure = ProbeFailure {
                detail: HealthDetail::AgentNotAnswering,
                error: format!("no answer within {PROBE_TIMEOUT_MS} ms"),
            };
            return (Err(failure), None);
        }
    };
    let rtt = start.elapsed();
    let agent: Arc<str> = session.welcome.agent.as_str().into();
    let reusable = keep && session.reusable();
    if !reusable && !counters {
        let probed = Probed {
            rtt,
            agent,
            counters: None,
        };
        return (Ok(probed), None);
    }
    let heartbeat = Call::Heartbeat { counters };
    let asked = guestcomm_client::integration::call_on_within(session.conn, heartbeat, bound);
    let (answer, conn) = match asked.await {
        Ok((answer @ (Control::AgentCounters(_) | Control::Done), conn)) => {
            (asked_counters(counters, answer), Some(conn))
        }
        Ok((other, _)) => {
            debug!(%addr, answer = other.kind(), "heartbeat: not its answer");
            (None, None)
        }
        Err(e) => {
            debug!(%addr, error = %error_chain(&e), "heartbeat: not answered (an older agent?)");
            (None, None)
        }
    };
    let kept = conn.filter(|_| reusable).map(|conn| {
        KeptProbe {
            conn,
            endpoint: addr.clone(),
            psk: psk.cloned(),
            agent: agent.clone(),
        }
        .idle()
    });
    let probed = Probed {
        rtt,
        agent,
        counters: answer,
    };
    (Ok(probed), kept)
}

/// The counters in a heartbeat's `answer`, when they were asked for (an
/// agent older than the question's `counters` member answers them always).
fn asked_counters(asked: bool, answer: Control) -> Option<AgentCounters> {
    match answer {
        Control::AgentCounters(counters) if asked => Some(counters),
        _ => None,
    }
}

/// Where on the path to the agent at `addr` the failure `e` happened.
fn classify(addr: &Address, e: &ClientError) -> HealthDetail {
    use std::io::ErrorKind;
    match e {
        ClientError::Connect(ConnectError::Timeout { .. }) => HealthDetail::AgentNotAnswering,
        ClientError::Connect(ConnectError::Io { source, .. }) => match addr {
            // The socket is the agent's own, or the guest kernel answered
            // that nothing listens on the port (a reset).
            Address::Unix(_) | Address::Tcp(_) => HealthDetail::AgentNotListening,
            Address::Vsock { .. } if source.kind() == ErrorKind::ConnectionReset => {
                HealthDetail::AgentNotListening
            }
            Address::Vsock { .. } | Address::HybridVsock { .. } => {
                HealthDetail::TransportUnreachable
            }
        },
        ClientError::Connect(ConnectError::Hybrid { source, .. }) => match source {
            HybridError::Refused { .. } | HybridError::Closed { .. } => {
                HealthDetail::AgentNotListening
            }
            HybridError::TooLong { .. } | HybridError::Io(_) => HealthDetail::TransportUnreachable,
        },
        ClientError::Handshake { source, .. } => match source {
            HandshakeError::Timeout(_) => HealthDetail::AgentNotAnswering,
            HandshakeError::AuthFailed(_) | HandshakeError::NoCommonAuth { .. } => {
                HealthDetail::AgentRefusing
            }
            HandshakeError::Rejected(frame)
                if matches!(frame.code, ErrorCode::AuthRequired | ErrorCode::AuthFailed) =>
            {
                HealthDetail::AgentRefusing
            }
            HandshakeError::Closed
            | HandshakeError::Frame(_)
            | HandshakeError::Rejected(_)
            | HandshakeError::Unexpected { .. }
            | HandshakeError::NotGuestcomm(_)
            | HandshakeError::UnsupportedVersion { .. }
            | HandshakeError::Refused(_) => HealthDetail::AgentError,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vm_at(endpoint: &str) -> VmRow {
        VmRow::for_test("vm", endpoint)
    }

    async fn detail_of(endpoint: &str) -> HealthDetail {
        let (result, kept) = probe(&vm_at(endpoint), false, None, true).await;
        assert!(kept.is_none(), "a failed probe keeps nothing");
        result.expect_err("the probe must fail").detail
    }

    /// A kept connection to `endpoint` whose far end is `peer`.
    fn kept_to(endpoint: &str) -> (KeptProbe, std::os::unix::net::UnixStream) {
        let (ours, peer) = std::os::unix::net::UnixStream::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        let mut kept = KeptProbe::for_test(endpoint);
        kept.conn = tokio_util::codec::Framed::new(
            Stream::Unix(tokio::net::UnixStream::from_std(ours).unwrap()),
            guestcomm_protocol::FrameCodec::default(),
        );
        (kept, peer)
    }

    #[tokio::test(start_paused = true)]
    async fn a_kept_connection_that_stays_silent_is_an_agent_not_answering() {
        let dir = tempfile::tempdir().expect("tempdir");
        let endpoint = format!("unix://{}", dir.path().join("agent.sock").display());
        let (kept, _silent_peer) = kept_to(&endpoint);
        let (result, again) = probe(&vm_at(&endpoint), false, Some(kept), true).await;
        assert!(again.is_none());
        let failure = result.expect_err("no answer");
        assert_eq!(failure.detail, HealthDetail::AgentNotAnswering);
        assert!(failure.error.contains("heartbeat"), "{}", failure.error);
    }

    #[tokio::test]
    async fn a_kept_connection_the_agent_closed_is_no_failure_of_its_own() {
        let dir = tempfile::tempdir().expect("tempdir");
        let endpoint = format!("unix://{}", dir.path().join("agent.sock").display());
        // Closed, and no agent listening any more: the probe connects anew
        // and says what that found.
        let (kept, peer) = kept_to(&endpoint);
        drop(peer);
        let (result, again) = probe(&vm_at(&endpoint), false, Some(kept), true).await;
        assert!(again.is_none());
        assert_eq!(
            result.expect_err("nothing listens").detail,
            HealthDetail::AgentNotListening
        );
        // Kept for another endpoint or key (the VM was changed): not used.
        let (kept, _peer) = kept_to("unix:///elsewhere.sock");
        let (result, again) = probe(&vm_at(&endpoint), false, Some(kept), true).await;
        assert!(again.is_none());
        assert_eq!(
            result.expect_err("nothing listens").detail,
            HealthDetail::AgentNotListening
        );
    }

    #[tokio::test]
    async fn probe_failures_are_classed_by_where_they_happen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("missing.sock");
        // No agent socket at all: the agent is not running.
        let unix = format!("unix://{}", missing.display());
        assert_eq!(detail_of(&unix).await, HealthDetail::AgentNotListening);
        // No VMM socket: the VM (or its vsock backend) is not running.
        let hybrid = format!("hvsock-uds://{}", missing.display());
        assert_eq!(detail_of(&hybrid).await, HealthDetail::TransportUnreachable);

        // A VMM whose guest has nothing on the port: it closes after CONNECT.
        let vmm = dir.path().join("vmm.sock");
        let listener = tokio::net::UnixListener::bind(&vmm).expect("bind");
        let refusing = tokio::spawn(async move {
            use tokio::io::AsyncReadExt;
            let (mut stream, _) = listener.accept().await.expect("accept");
            let mut line = [0u8; 64];
            let _ = stream.read(&mut line).await;
            listener
        });
        let hybrid = format!("hvsock-uds://{}", vmm.display());
        assert_eq!(detail_of(&hybrid).await, HealthDetail::AgentNotListening);

        // A VMM that accepts and then says nothing: a paused guest.
        let listener = refusing.await.expect("the fake VMM");
        let silent = tokio::spawn(async move { listener.accept().await.map(|(s, _)| s) });
        assert_eq!(detail_of(&hybrid).await, HealthDetail::AgentNotAnswering);
        drop(silent.await);
    }
}
