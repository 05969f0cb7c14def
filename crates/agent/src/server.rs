//! Accepting connections and dispatching their one request.
//!
//! ```text
//! accept -> peer filter (vsock: host only by default)
//!        -> connection cap (refuse with resource_limit, keep serving)
//!        -> handshake (version, auth) -> Request -> guest policy (--policy)
//!        -> service by GUID
//! ```
//!
//! Each connection runs in its own task; a failing or hostile connection
//! ends only itself.

use std::sync::Arc;
use std::time::Duration;

use futures::SinkExt;
use guestcomm_protocol::auth::{Psk, AUTH_PSK};
use guestcomm_protocol::handshake::{self, ServerOffer, AUTH_NONE};
use guestcomm_protocol::message::{Call, ErrorCode, ErrorFrame};
use guestcomm_protocol::policy::PolicyDocument;
use guestcomm_protocol::{BuiltinService, Control, Frame, FrameCodec, FramedConn};
use guestcomm_transport::{Address, ListenError, Listener, Peer, PeerCidFilter, Stream};
use tokio::sync::Semaphore;
use tokio_util::codec::Framed;
use tracing::{debug, info, info_span, warn, Instrument};

use crate::exec;
use crate::files;
use crate::limits::MAX_CONNECTIONS;

/// How long to pause accepting after an accept error (e.g. out of file
/// descriptors), so the loop does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// What the agent serves and to whom.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// Addresses to listen on.
    pub listen: Vec<Address>,
    /// Which vsock peers may connect.
    pub peer_filter: PeerCidFilter,
    /// Most connections served at once.
    pub max_connections: usize,
    /// The VM's key: when set, every client must prove it holds it.
    pub psk: Option<Psk>,
    /// The guest owner's policy (`--policy`): requests it refuses never
    /// reach a service.
    pub policy: Option<PolicyDocument>,
}

/// Why a configuration is refused before anything is opened.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// vsock without credentials would let any host user in.
    #[error("refusing to listen on {0} without --credentials: on a KVM host any local user can connect to a guest's vsock; give --credentials FILE (create one with `guestcomm identity new FILE`), or listen on unix:// or tcp://127.0.0.1 only")]
    VsockWithoutCredentials(String),
}

impl AgentConfig {
    /// A configuration with default limits for `listen`.
    pub fn new(listen: Vec<Address>) -> Self {
        Self {
            listen,
            peer_filter: PeerCidFilter::default(),
            max_connections: MAX_CONNECTIONS,
            psk: None,
            policy: None,
        }
    }

    /// Checks the configuration before any socket is opened: vsock needs
    /// credentials (Unix sockets have file modes, TCP is loopback only).
    pub fn check(&self) -> Result<(), ConfigError> {
        if self.psk.is_none() {
            if let Some(addr) = self
                .listen
                .iter()
                .find(|a| matches!(a, Address::Vsock { .. }))
            {
                return Err(ConfigError::VsockWithoutCredentials(addr.to_string()));
            }
        }
        Ok(())
    }
}

/// Why the agent could not start serving.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// The configuration is refused.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A listen address could not be opened.
    #[error(transparent)]
    Listen(#[from] ListenError),
}

/// A bound agent, ready to serve.
pub struct Agent {
    listeners: Vec<Listener>,
    config: AgentConfig,
}

/// The agent's name and version, as sent in `Welcome`.
pub fn agent_name() -> String {
    format!("guestcomm-agent {}", env!("CARGO_PKG_VERSION"))
}

impl Agent {
    /// Checks the configuration, then opens every listen address; fails on
    /// the first that cannot be opened.
    pub async fn bind(config: AgentConfig) -> Result<Self, BindError> {
        config.check()?;
        let mut listeners = Vec::with_capacity(config.listen.len());
        for addr in &config.listen {
            listeners.push(Listener::bind(addr).await?);
        }
        Ok(Self { listeners, config })
    }

    /// The addresses actually bound.
    pub fn local_addresses(&self) -> Vec<Address> {
        self.listeners
            .iter()
            .filter_map(|l| l.local_address().ok())
            .collect()
    }

    /// Serves until the task is dropped.
    pub async fn run(self) {
        let slots = Arc::new(Semaphore::new(self.config.max_connections));
        let auth = if self.config.psk.is_some() {
            AUTH_PSK
        } else {
            AUTH_NONE
        };
        let offer = Arc::new(ServerOffer {
            features: vec!["exec".into(), "pty".into(), "files".into()],
            auth: vec![auth.into()],
            agent: agent_name(),
            psk: self.config.psk.clone(),
        });
        let filter = Arc::new(self.config.peer_filter.clone());
        let policy = Arc::new(self.config.policy.clone());
        let mut loops = tokio::task::JoinSet::new();
        for listener in self.listeners {
            loops.spawn(accept_loop(
                listener,
                slots.clone(),
                offer.clone(),
                filter.clone(),
                policy.clone(),
            ));
        }
        while loops.join_next().await.is_some() {}
    }
}

async fn accept_loop(
    listener: Listener,
    slots: Arc<Semaphore>,
    offer: Arc<ServerOffer>,
    filter: Arc<PeerCidFilter>,
    policy: Arc<Option<PolicyDocument>>,
) {
    let local = listener
        .local_address()
        .map_or_else(|_| "?".into(), |a| a.to_string());
    info!(listen = %local, "listening");
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                warn!(listen = %local, error = %e, "accept failed");
                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                continue;
            }
        };
        if !filter.allows(&peer) {
            warn!(%peer, "refused a connection from a vsock peer that is not allowed (see --allow-peer-cid)");
            continue;
        }
        let mut conn = Framed::new(stream, FrameCodec::new());
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            warn!(%peer, "connection limit reached, refusing a connection");
            tokio::spawn(async move {
                let frame = ErrorFrame::new(
                    ErrorCode::ResourceLimit,
                    "the agent is serving its maximum number of connections; retry later",
                );
                let _ = conn.send(Frame::Control(Control::Error(frame))).await;
            });
            continue;
        };
        let offer = offer.clone();
        let policy = policy.clone();
        let span = info_span!("conn", %peer);
        tokio::spawn(
            async move {
                handle(conn, &peer, &offer, policy.as_ref().as_ref()).await;
                drop(permit);
            }
            .instrument(span),
        );
    }
}

/// Runs one connection: handshake, request, service.
async fn handle(
    mut conn: FramedConn<Stream>,
    peer: &Peer,
    offer: &ServerOffer,
    policy: Option<&PolicyDocument>,
) {
    let hello = match handshake::server_handshake(&mut conn, offer).await {
        Ok((hello, _)) => hello,
        // A connection closed without a byte is a liveness probe, not a problem.
        Err(handshake::HandshakeError::Closed) => {
            debug!("connection closed before the handshake");
            return;
        }
        Err(e) => {
            warn!(error = %handshake::error_chain(&e), "handshake failed");
            return;
        }
    };
    debug!(client = %hello.client, "handshake done");
    let mut request = match handshake::read_request(&mut conn).await {
        Ok(request) => request,
        // A client that hangs up after the handshake (a health probe) is not a problem.
        Err(frame)
            if frame.code == ErrorCode::UnexpectedMessage
                && frame.message == handshake::CLOSED_BEFORE_REQUEST =>
        {
            debug!("connection closed after the handshake");
            return;
        }
        Err(frame) => {
            warn!(error = %frame, "bad request");
            let _ = conn.send(Frame::Control(Control::Error(frame))).await;
            return;
        }
    };
    if let Some(Err(frame)) = policy.map(|p| crate::policy::check(p, &mut request)) {
        warn!(%peer, error = %frame.message, "request refused by the guest policy");
        let _ = conn.send(Frame::Control(Control::Error(frame))).await;
        return;
    }
    let service = request.service;
    match (service.builtin(), request.call) {
        (Some(BuiltinService::Exec), Call::Exec(req)) => {
            if let Err(e) = exec::serve(conn, req).await {
                info!(%peer, error = %handshake::error_chain(&e), "exec ended early");
            }
        }
        (Some(BuiltinService::Files), Call::CopyToGuest(req)) => {
            let dst = req.dst.clone();
            match files::serve_to_guest(conn, req).await {
                Ok(s) => info!(%dst, files = s.files, bytes = s.bytes, "copy into the guest done"),
                Err(e) => {
                    info!(%dst, error = %handshake::error_chain(&e), "copy into the guest failed")
                }
            }
        }
        (Some(BuiltinService::Files), Call::CopyFromGuest(req)) => {
            let src = req.src.clone();
            match files::serve_from_guest(conn, req).await {
                Ok(s) => {
                    info!(%src, files = s.files, bytes = s.bytes, "copy out of the guest done")
                }
                Err(e) => {
                    info!(%src, error = %handshake::error_chain(&e), "copy out of the guest failed")
                }
            }
        }
        (Some(builtin), _) => {
            let frame = ErrorFrame::new(
                ErrorCode::UnsupportedRequest,
                format!(
                    "service {} ({service}) does not support this request in this agent version",
                    builtin.name()
                ),
            );
            let _ = conn.send(Frame::Control(Control::Error(frame))).await;
        }
        (None, _) => {
            let frame = ErrorFrame::new(
                ErrorCode::UnknownService,
                format!("no service {service} in this agent"),
            );
            let _ = conn.send(Frame::Control(Control::Error(frame))).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vsock_without_credentials_is_refused_before_binding() {
        let config = AgentConfig::new(vec!["vsock://any:18243".parse().unwrap()]);
        let err = config.check().unwrap_err().to_string();
        assert!(
            err.contains("--credentials") && err.contains("vsock://any:18243"),
            "{err}"
        );
        let mut keyed = config.clone();
        keyed.psk = Some(Psk::generate().unwrap());
        assert!(keyed.check().is_ok());
    }

    #[test]
    fn unix_and_loopback_tcp_work_without_credentials() {
        let config = AgentConfig::new(vec![
            "unix:///run/a.sock".parse().unwrap(),
            "tcp://127.0.0.1:1".parse().unwrap(),
        ]);
        assert!(config.check().is_ok());
    }
}
