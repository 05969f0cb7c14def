//! The health monitor: probes every VM's agent at a fixed interval and
//! records the answers in [`crate::health::HealthMap`].
//!
//! A probe is a connection and a handshake (the agent's Welcome gives its
//! version; the time it takes is the round-trip time). Each round waits for
//! its probes (so rounds never pile up), and a semaphore bounds how many
//! run at once. When an agent answers after not answering (or while its
//! key-value pool waits for delivery), the pool is pushed to it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use guestcomm_api::HealthDetail;
use guestcomm_client::ClientError;
use guestcomm_protocol::auth::Psk;
use guestcomm_protocol::error_chain;
use guestcomm_protocol::handshake::HandshakeError;
use guestcomm_protocol::ErrorCode;
use guestcomm_transport::hybrid::HybridError;
use guestcomm_transport::{Address, ConnectError};
use tokio::sync::Semaphore;
use tracing::warn;

use crate::health::ProbeFailure;
use crate::limits::PROBE_TIMEOUT_MS;
use crate::model::VmRow;
use crate::state::State;

/// Probes one VM: connect and handshake, within [`PROBE_TIMEOUT_MS`].
pub(crate) async fn probe(
    addr: &Address,
    psk: Option<&Psk>,
) -> Result<(Duration, String), ProbeFailure> {
    let start = Instant::now();
    let attempt = guestcomm_client::connect_with(addr, crate::DAEMON_NAME, psk);
    match tokio::time::timeout(Duration::from_millis(PROBE_TIMEOUT_MS), attempt).await {
        Ok(Ok(session)) => Ok((start.elapsed(), session.welcome.agent)),
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
            _ => HealthDetail::AgentError,
        },
    }
}

/// Rounds over every VM at a fixed interval (the monitor, the time sync);
/// a round that starts late is not made up for.
pub(crate) struct Rounds {
    ticks: tokio::time::Interval,
    what: &'static str,
}

impl Rounds {
    /// Rounds every `interval`; `what` names the task in logs.
    pub(crate) fn new(interval: Duration, what: &'static str) -> Self {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Self { ticks, what }
    }

    /// Waits for the next round and lists the VMs (skipping rounds in which
    /// the database cannot be read).
    pub(crate) async fn next(&mut self, state: &State) -> Vec<VmRow> {
        loop {
            self.ticks.tick().await;
            match state.db(|s| s.vms()).await {
                Ok(vms) => return vms,
                Err(e) => warn!(error = %error_chain(&e), task = self.what, "cannot list VMs"),
            }
        }
    }
}

/// Runs the monitor until the task is dropped.
pub(crate) async fn monitor(state: Arc<State>, interval: Duration, max_concurrent: usize) {
    let slots = Arc::new(Semaphore::new(max_concurrent.max(1)));
    let mut rounds = Rounds::new(interval, "health monitor");
    loop {
        let vms = rounds.next(&state).await;
        state
            .health
            .retain(&vms.iter().map(|v| v.id).collect::<Vec<_>>());
        let delivery = match state.db(|s| s.kvp_delivery_state()).await {
            Ok(delivery) => Arc::new(delivery),
            Err(e) => {
                warn!(error = %error_chain(&e), "cannot read the key-value state; no delivery this round");
                Arc::default()
            }
        };
        let mut round = tokio::task::JoinSet::new();
        for vm in vms {
            let Ok(permit) = slots.clone().acquire_owned().await else {
                return;
            };
            let state = state.clone();
            let delivery = delivery.clone();
            round.spawn(async move {
                let result = probe(&vm.endpoint, vm.psk.as_ref()).await;
                let answered = result.is_ok();
                let came_back = state.health.record(&vm, result);
                if answered {
                    // Deliver what the agent missed.
                    crate::integration::push_if_needed(&state, &vm, came_back, &delivery).await;
                }
                drop(permit);
            });
        }
        while round.join_next().await.is_some() {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn detail_of(endpoint: &str) -> HealthDetail {
        probe(&endpoint.parse().unwrap(), None)
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
