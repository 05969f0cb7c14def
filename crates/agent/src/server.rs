//! Accepting connections and dispatching their requests: one, or one
//! after another on a connection that negotiated reuse.
//!
//! ```text
//! accept -> peer filter (vsock: host only by default)
//!        -> unauthenticated budget (MAX_UNAUTHENTICATED_CONNECTIONS; when
//!           full, the oldest connection still in its handshake is closed)
//!        -> handshake (version, auth; hello at most MAX_HANDSHAKE_FRAME_BYTES,
//!           done within UNAUTHENTICATED_TIMEOUT_MS)
//!        -> connection cap (--max-connections; refuse with resource_limit,
//!           keep serving) -> Request -> guest policy (--policy)
//!        -> service by GUID
//! ```
//!
//! Only authenticated connections take one of the `--max-connections`
//! slots, so host users without the VM's key, however many connections they
//! hold open, cannot keep the daemon out. Each connection runs in its own
//! task; a failing or hostile connection ends only itself. The local
//! key-value socket (for guest programs) goes through the same loop with
//! [`Origin::Local`], which admits key-value requests only, and a budget of
//! its own ([`MAX_LOCAL_CONNECTIONS`]).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::SinkExt;
use guestcomm_policy::PolicyDocument;
use guestcomm_protocol::auth::{Psk, AUTH_PSK};
use guestcomm_protocol::closing::linger;
use guestcomm_protocol::entropy::{self, PoolState};
use guestcomm_protocol::files::FEATURE_COPY_BENEATH;
use guestcomm_protocol::handshake::{self, ServerOffer, AUTH_NONE, FEATURE_REUSE};
use guestcomm_protocol::nonce::{self, EpochError};
use guestcomm_protocol::{BuiltinService, Control, Frame, FrameCodec, FramedConn};
use guestcomm_protocol::{Call, ErrorCode, ErrorFrame};
use guestcomm_transport::admission::{Admission, Ticket};
use guestcomm_transport::{Address, ListenError, Listener, Peer, PeerCidFilter, Stream};
use tokio::sync::Semaphore;
use tokio_util::codec::Framed;
use tracing::{debug, info, info_span, warn, Instrument};

use crate::clock::{Clock, SimulatedClock, SystemClock};
use crate::counters;
use crate::exec;
use crate::files::{self, CopyLimits};
use crate::freeze::{FreezeManager, IoctlFreezer, SimulatedFreezer};
use crate::hyperv_kvp::PoolFiles;
use crate::integration::{self, Origin, Services};
use crate::kvp::{KvpStore, KvpStoreError};
use crate::limits::{
    MAX_CONNECTIONS, MAX_LOCAL_CONNECTIONS, MAX_UNAUTHENTICATED_CONNECTIONS,
    MAX_UNAUTHENTICATED_LOCAL_CONNECTIONS, UNAUTHENTICATED_TIMEOUT_MS,
};
use crate::shutdown::ShutdownRunner;

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
    /// How long a file copy waits on the host before failing as stalled.
    pub copy_idle_timeout: Duration,
    /// Most bytes of file content one copy into the guest may write.
    pub max_copy_bytes: Option<u64>,
    /// The VM's key: when set, every client must prove it holds it.
    pub psk: Option<Psk>,
    /// Where guest programs reach the key-value pools (`None`: nowhere).
    pub kvp_socket: Option<PathBuf>,
    /// Where the key-value pools are kept (`None`: in memory only).
    pub state_dir: Option<PathBuf>,
    /// Where Hyper-V's KVP pool files are kept in step with the pools
    /// (`None`: nowhere).
    pub hyperv_kvp_dir: Option<PathBuf>,
    /// How to power off or reboot.
    pub shutdown: ShutdownRunner,
    /// Report and step a clock this many nanoseconds from the real one,
    /// never setting the system clock (tests, demos).
    pub simulated_clock_offset_ns: Option<i64>,
    /// Pretend to freeze filesystems, never issuing FIFREEZE (tests).
    pub simulate_fsfreeze: bool,
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
            copy_idle_timeout: guestcomm_files::DEFAULT_COPY_IDLE_TIMEOUT,
            max_copy_bytes: None,
            psk: None,
            kvp_socket: None,
            state_dir: None,
            hyperv_kvp_dir: None,
            shutdown: ShutdownRunner::System,
            simulated_clock_offset_ns: None,
            simulate_fsfreeze: false,
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
    /// The state directory could not be opened.
    #[error("cannot open the state directory {0}")]
    StateDir(String, #[source] std::io::Error),
    /// The state directory cannot record a nonce epoch.
    #[error(transparent)]
    NonceEpoch(EpochError),
    /// The local key-value socket could not be opened.
    #[error("cannot open the key-value socket {0}")]
    KvpSocket(String, #[source] std::io::Error),
    /// Hyper-V's KVP pool files cannot be used.
    #[error("cannot keep Hyper-V's key-value pool files")]
    PoolFiles(#[source] KvpStoreError),
}

/// A bound agent, ready to serve.
pub struct Agent {
    listeners: Vec<Listener>,
    local: Option<Listener>,
    config: AgentConfig,
    services: Arc<Services>,
    nonce_epoch: Option<u64>,
}

/// With a key and a state directory: this start's nonce epoch, on disk
/// before any nonce uses it. A malformed epoch file costs only the epoch
/// (nonces stay unique through the boot id and process identity), so it is
/// logged and the agent serves on; a state directory it cannot write stops it.
fn nonce_epoch(config: &AgentConfig) -> Result<Option<u64>, BindError> {
    let (Some(_), Some(dir)) = (&config.psk, &config.state_dir) else {
        return Ok(None);
    };
    match nonce::reserve_epoch(dir) {
        Ok(epoch) => Ok(Some(epoch)),
        Err(e @ EpochError::Malformed { .. }) => {
            warn!(error = %e, "serving without a nonce epoch");
            Ok(None)
        }
        Err(e) => Err(BindError::NonceEpoch(e)),
    }
}

/// Says once, at start, that the kernel's random pool is not initialized
/// (a guest without virtio-rng or RDRAND): handshakes are answered anyway,
/// but an operator looking at a slow guest should know.
fn warn_if_no_entropy() {
    match entropy::pool_state() {
        Ok(PoolState::Initialized) => {}
        Ok(PoolState::NotInitialized) => warn!(
            "the kernel's random pool is not initialized yet (no virtio-rng, no RDRAND?): \
             handshakes are answered anyway (nonces derive from the VM's key, docs/SECURITY.md), \
             but programs that wait for it will; give the VM a virtio-rng device (docs/DEPLOYMENT.md)"
        ),
        Err(e) => warn!(error = %e, "cannot tell whether the kernel's random pool is initialized"),
    }
}

/// The services this agent offers, by short name (in `Welcome` and guest info).
pub(crate) fn offered_services() -> Vec<String> {
    [
        BuiltinService::Exec,
        BuiltinService::Files,
        BuiltinService::KeyValue,
        BuiltinService::Shutdown,
        BuiltinService::Time,
        BuiltinService::GuestInfo,
        BuiltinService::FsFreeze,
    ]
    .iter()
    .map(|s| s.name().to_string())
    .collect()
}

/// The agent's name and version, as sent in `Welcome`.
pub(crate) fn agent_name() -> String {
    format!("guestcomm-agent {}", env!("CARGO_PKG_VERSION"))
}

impl Agent {
    /// Checks the configuration, then opens every listen address; fails on
    /// the first that cannot be opened.
    pub async fn bind(config: AgentConfig) -> Result<Self, BindError> {
        config.check()?;
        let kvp = match &config.state_dir {
            Some(dir) => KvpStore::open(dir)
                .map_err(|e| BindError::StateDir(dir.display().to_string(), e))?,
            None => KvpStore::in_memory(),
        };
        let kvp = match &config.hyperv_kvp_dir {
            Some(dir) => PoolFiles::create(dir)
                .map_err(KvpStoreError::from)
                .and_then(|files| kvp.with_pool_files(files))
                .map_err(BindError::PoolFiles)?,
            None => kvp,
        };
        let clock: Box<dyn Clock> = match config.simulated_clock_offset_ns {
            Some(offset) => Box::new(SimulatedClock::new(offset)),
            None => Box::new(SystemClock),
        };
        let freeze = if config.simulate_fsfreeze {
            FreezeManager::new(Box::new(SimulatedFreezer))
        } else {
            FreezeManager::new(Box::new(IoctlFreezer))
        };
        let services = Arc::new(Services {
            kvp,
            clock,
            shutdown: config.shutdown.clone(),
            freeze,
            agent: agent_name(),
            offered: offered_services(),
            policy: config.policy.clone(),
        });
        let nonce_epoch = nonce_epoch(&config)?;
        warn_if_no_entropy();
        let mut listeners = Vec::with_capacity(config.listen.len());
        for addr in &config.listen {
            listeners.push(Listener::bind(addr).await?);
        }
        // Guest programs lose only their socket if it cannot be opened
        // (e.g. an agent that is not root and cannot create /run/guestcomm).
        let local = match &config.kvp_socket {
            Some(path) => match bind_local(path).await {
                Ok(listener) => Some(listener),
                Err(e) => {
                    warn!(error = %guestcomm_protocol::error_chain(&e), "serving the host without the local key-value socket");
                    None
                }
            },
            None => None,
        };
        Ok(Self {
            listeners,
            local,
            config,
            services,
            nonce_epoch,
        })
    }

    /// The shared state of the integration services (to thaw at exit).
    pub fn services(&self) -> Arc<Services> {
        self.services.clone()
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
        let host = Budget::new(MAX_UNAUTHENTICATED_CONNECTIONS, self.config.max_connections);
        let auth = if self.config.psk.is_some() {
            AUTH_PSK
        } else {
            AUTH_NONE
        };
        let mut features = vec![
            "pty".to_string(),
            FEATURE_COPY_BENEATH.to_string(),
            FEATURE_REUSE.to_string(),
        ];
        features.extend(offered_services());
        let offer = Arc::new(ServerOffer {
            features: features.clone(),
            auth: vec![auth.into()],
            agent: agent_name(),
            psk: self.config.psk.clone(),
            nonce_epoch: self.nonce_epoch,
        });
        let filter = Arc::new(self.config.peer_filter.clone());
        let copy_limits = CopyLimits {
            idle: self.config.copy_idle_timeout,
            max_bytes: self.config.max_copy_bytes,
        };
        let mut loops = tokio::task::JoinSet::new();
        for listener in self.listeners {
            loops.spawn(accept_loop(
                listener,
                host.clone(),
                offer.clone(),
                filter.clone(),
                (self.services.clone(), Origin::Host, copy_limits),
            ));
        }
        if let Some(local) = self.local {
            // Guest programs: the socket's file mode admits them, no key.
            let local_offer = Arc::new(ServerOffer {
                features,
                auth: vec![AUTH_NONE.into()],
                agent: agent_name(),
                psk: None,
                nonce_epoch: None,
            });
            loops.spawn(accept_loop(
                local,
                Budget::new(MAX_UNAUTHENTICATED_LOCAL_CONNECTIONS, MAX_LOCAL_CONNECTIONS),
                local_offer,
                filter.clone(),
                (self.services.clone(), Origin::Local, copy_limits),
            ));
        }
        while loops.join_next().await.is_some() {}
    }
}

/// Mode of the local key-value socket: root and the socket's group.
const KVP_SOCKET_MODE: u32 = 0o660;

/// Opens the local key-value socket, creating its directory (a stale
/// socket from a crash is replaced, a live one is an error).
async fn bind_local(path: &Path) -> Result<Listener, BindError> {
    let err = |e| BindError::KvpSocket(path.display().to_string(), e);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    let mode = |private: &Path| {
        std::fs::set_permissions(private, std::fs::Permissions::from_mode(KVP_SOCKET_MODE))
    };
    Ok(Listener::bind_unix(path, mode).await?)
}

/// What the connections of one kind of listener may hold: the host's
/// listeners share one budget, the local key-value socket has its own.
#[derive(Clone)]
struct Budget {
    /// Connections still in their handshake; a newcomer evicts the oldest.
    unauthenticated: Admission<()>,
    /// Connections past it (`--max-connections` for the host).
    slots: Arc<Semaphore>,
}

impl Budget {
    fn new(unauthenticated: usize, slots: usize) -> Self {
        Self {
            unauthenticated: Admission::new(unauthenticated, unauthenticated),
            slots: Arc::new(Semaphore::new(slots)),
        }
    }
}

async fn accept_loop(
    listener: Listener,
    budget: Budget,
    offer: Arc<ServerOffer>,
    filter: Arc<PeerCidFilter>,
    (services, origin, copy_limits): (Arc<Services>, Origin, CopyLimits),
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
        counters::connection();
        let conn = Framed::new(stream, FrameCodec::new());
        let ticket = budget.unauthenticated.admit(());
        let offer = offer.clone();
        let services = services.clone();
        let slots = budget.slots.clone();
        let span = info_span!("conn", %peer);
        tokio::spawn(
            async move {
                let Some((conn, reuse, permit)) = authenticate(conn, &offer, ticket, slots).await
                else {
                    return;
                };
                handle(conn, reuse, &peer, services, origin, copy_limits).await;
                drop(permit);
            }
            .instrument(span),
        );
    }
}

/// Runs the handshake on the place `ticket` holds in the unauthenticated
/// budget, taking a connection slot once the client is authenticated (or
/// refusing it with `resource_limit` instead of the Welcome): `None` when
/// the connection ended (its error frame, if any, sent), else the
/// connection, whether it may carry several operations (the client listed
/// [`FEATURE_REUSE`] too), and its slot.
async fn authenticate(
    mut conn: FramedConn<Stream>,
    offer: &ServerOffer,
    mut ticket: Ticket<()>,
    slots: Arc<Semaphore>,
) -> Option<(FramedConn<Stream>, bool, tokio::sync::OwnedSemaphorePermit)> {
    let deadline = Duration::from_millis(UNAUTHENTICATED_TIMEOUT_MS);
    let admit = || {
        slots.try_acquire_owned().map_err(|_| {
            ErrorFrame::new(
                ErrorCode::ResourceLimit,
                "the agent is serving its maximum number of connections; retry later",
            )
        })
    };
    let handshake = tokio::select! {
        () = ticket.evicted() => {
            debug!("closed in its handshake: newer connections needed the place");
            return None;
        }
        done = tokio::time::timeout(deadline, handshake::server_handshake_admitting(&mut conn, offer, admit)) => done,
    };
    drop(ticket);
    match handshake {
        Ok(Ok((hello, _, permit))) => {
            debug!(client = %hello.client, "handshake done");
            let reuse = hello.features.iter().any(|f| f == FEATURE_REUSE)
                && offer.features.iter().any(|f| f == FEATURE_REUSE);
            Some((conn, reuse, permit))
        }
        // A connection closed without a byte is a liveness probe, not a problem.
        Ok(Err(handshake::HandshakeError::Closed)) => {
            debug!("connection closed before the handshake");
            None
        }
        // Load shedding: closed right after the error, without waiting for
        // the client (docs/PROTOCOL.md 2.5).
        Ok(Err(handshake::HandshakeError::Refused(_))) => {
            warn!("connection limit reached, refusing a connection");
            None
        }
        Ok(Err(e)) => {
            warn!(error = %guestcomm_protocol::error_chain(&e), "handshake failed");
            if e.is_authentication_failure() {
                counters::auth_failure();
            }
            // Its error frame was sent: the client closes first, unless it
            // is the silent kind that let the handshake time out.
            if !matches!(e, handshake::HandshakeError::Timeout(_)) {
                linger(&mut conn).await;
            }
            None
        }
        Err(_) => {
            info!("no handshake within {UNAUTHENTICATED_TIMEOUT_MS} ms, closing");
            let frame = ErrorFrame::new(
                ErrorCode::Timeout,
                format!("no handshake within {UNAUTHENTICATED_TIMEOUT_MS} ms"),
            );
            let _ = conn.send(Frame::Control(Control::Error(frame))).await;
            None
        }
    }
}

/// Sends `frame`, this connection's last, and closes as the closing rule
/// says: once the client has closed, or after the linger bound.
async fn refuse(mut conn: FramedConn<Stream>, frame: ErrorFrame) {
    if conn
        .send(Frame::Control(Control::Error(frame)))
        .await
        .is_ok()
    {
        linger(&mut conn).await;
    }
}

/// Runs one authenticated connection: request, service; and, when it may
/// carry several operations, the next request after an exec or a
/// heartbeat, until the client closes (docs/PROTOCOL.md, "Connection
/// reuse").
async fn handle(
    mut conn: FramedConn<Stream>,
    reuse: bool,
    peer: &Peer,
    services: Arc<Services>,
    origin: Origin,
    copy_limits: CopyLimits,
) {
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
            counters::refused();
            return refuse(conn, frame).await;
        }
    };
    loop {
        let Some(mut open) = serve(conn, request, peer, &services, origin, copy_limits).await
        else {
            return;
        };
        if !reuse {
            // The host closes first; anything it still sends is dropped.
            return linger(&mut open).await;
        }
        request = match handshake::read_next_request(&mut open).await {
            Ok(Some(request)) => request,
            Ok(None) => return,
            Err(frame) => {
                debug!(error = %frame, "no next request");
                return refuse(open, frame).await;
            }
        };
        conn = open;
    }
}

/// Serves one request: `Some(conn)` when the operation ended cleanly with
/// the connection able to carry another (an exec that sent `exited`, an
/// answered `heartbeat`; the caller lingers or reads the next request),
/// `None` when it is over.
async fn serve(
    conn: FramedConn<Stream>,
    mut request: guestcomm_protocol::Request,
    peer: &Peer,
    services: &Arc<Services>,
    origin: Origin,
    copy_limits: CopyLimits,
) -> Option<FramedConn<Stream>> {
    let guest_policy = services.policy.as_ref().filter(|_| origin == Origin::Host);
    if let Some(Err(frame)) = guest_policy.map(|p| crate::policy::check(p, &mut request)) {
        warn!(%peer, error = %frame.message, "request refused by the guest policy");
        counters::refused();
        refuse(conn, frame).await;
        return None;
    }
    let service = request.service;
    if let (Some(builtin), Some(_)) = (service.builtin(), integration::service_of(&request.call)) {
        counters::request(builtin);
        return integration::serve(conn, services.clone(), origin, builtin, request.call).await;
    }
    if origin == Origin::Local {
        let frame = ErrorFrame::new(
            ErrorCode::UnsupportedRequest,
            "the local socket serves key-value requests only",
        );
        refuse(conn, frame).await;
        return None;
    }
    match (service.builtin(), request.call) {
        (Some(BuiltinService::Exec), Call::Exec(req)) => {
            counters::request(BuiltinService::Exec);
            match exec::serve(conn, req).await {
                Ok((_, open)) => return open,
                Err(e) => {
                    info!(%peer, error = %guestcomm_protocol::error_chain(&e), "exec ended early")
                }
            }
        }
        (Some(BuiltinService::Files), Call::CopyToGuest(req)) => {
            let dst = req.dst.clone();
            counters::request(BuiltinService::Files);
            match files::serve_to_guest(conn, req, copy_limits, guest_policy).await {
                Ok(s) => {
                    counters::copied(true, s.bytes);
                    info!(%dst, files = s.files, bytes = s.bytes, "copy into the guest done")
                }
                Err(e) => {
                    info!(%dst, error = %guestcomm_protocol::error_chain(&e), "copy into the guest failed")
                }
            }
        }
        (Some(BuiltinService::Files), Call::CopyFromGuest(req)) => {
            let src = req.src.clone();
            counters::request(BuiltinService::Files);
            match files::serve_from_guest(conn, req, copy_limits, guest_policy).await {
                Ok(s) => {
                    counters::copied(false, s.bytes);
                    info!(%src, files = s.files, bytes = s.bytes, "copy out of the guest done")
                }
                Err(e) => {
                    info!(%src, error = %guestcomm_protocol::error_chain(&e), "copy out of the guest failed")
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
            counters::refused();
            refuse(conn, frame).await;
        }
        (None, _) => {
            let frame = ErrorFrame::new(
                ErrorCode::UnknownService,
                format!("no service {service} in this agent"),
            );
            counters::refused();
            refuse(conn, frame).await;
        }
    }
    None
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
