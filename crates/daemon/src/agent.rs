//! The one way to reach a VM's agent: connect to the VM's endpoint and
//! handshake with its key, as `guestcommd <version>`.
//!
//! ```text
//! connect   a session for one integration call or daemon-made copy   (502)
//! take      a relay's session: a warm spare (module `spare`) if one is
//!           waiting, else a new one; `send` connects once more if the
//!           agent closed the spare meanwhile
//! refill    the VM's next spare, made in the background
//! probe     the health monitor's connect and handshake, within
//!           PROBE_TIMEOUT_MS, its failure classed by where it happened
//! ```

use std::time::{Duration, Instant};

use futures::SinkExt;
use guestcomm_api::HealthDetail;
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

/// What an answered probe learnt: the round trip of connect and
/// handshake, the agent's name, and its own counters when asked for and
/// given (an older agent has none).
#[derive(Debug)]
pub(crate) struct Probed {
    pub(crate) rtt: Duration,
    pub(crate) agent: String,
    pub(crate) counters: Option<AgentCounters>,
}

/// Probes the agent at `addr`: connect and handshake, within
/// [`PROBE_TIMEOUT_MS`]; then, with `counters`, its `heartbeat` (whose
/// failure fails nothing: it is logged at debug).
pub(crate) async fn probe(
    addr: &Address,
    psk: Option<&Psk>,
    counters: bool,
) -> Result<Probed, ProbeFailure> {
    let start = Instant::now();
    let attempt = open(addr, psk);
    let bound = Duration::from_millis(PROBE_TIMEOUT_MS);
    match tokio::time::timeout(bound, attempt).await {
        Ok(Ok(session)) => {
            let rtt = start.elapsed();
            let agent = session.welcome.agent.clone();
            let counters = if counters {
                let asked = guestcomm_client::integration::call(session, Call::Heartbeat);
                match tokio::time::timeout(bound, asked).await {
                    Ok(Ok(Control::AgentCounters(counters))) => Some(counters),
                    Ok(Ok(other)) => {
                        debug!(%addr, answer = other.kind(), "heartbeat: not the agent's counters");
                        None
                    }
                    Ok(Err(e)) => {
                        debug!(%addr, error = %error_chain(&e), "heartbeat: no counters (an older agent?)");
                        None
                    }
                    Err(_) => {
                        debug!(%addr, "heartbeat: no answer within {PROBE_TIMEOUT_MS} ms");
                        None
                    }
                }
            } else {
                None
            };
            Ok(Probed {
                rtt,
                agent,
                counters,
            })
        }
        Ok(Err(e)) => Err(ProbeFailure {
            detail: classify(addr, &e),
            error: error_chain(&e),
        }),
        Err(_) => Err(ProbeFailure {
            detail: HealthDetail::AgentNotAnswering,
            error: format!("no answer within {PROBE_TIMEOUT_MS} ms"),
        }),
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

    async fn detail_of(endpoint: &str) -> HealthDetail {
        probe(&endpoint.parse().unwrap(), None, false)
            .await
            .expect_err("the probe must fail")
            .detail
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
