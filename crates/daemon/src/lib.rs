//! guestcommd, the host daemon: VM inventory, the registry of guest
//! communication services, per-VM enablement, health, and the HTTP/JSON API.
//!
//! The modules are layers, each importing only from those below it
//! (docs/ARCHITECTURE.md):
//!
//! ```text
//! http/  wbem/                    front ends: decode, call, encode (HTTP, CIM-XML)
//! tasks/  libvirt/                health monitor, time sync, audit pruning;
//!                                 the inventory in step with libvirt's domains
//! ops/  relay/                    operations, relays to and from guests
//! admission  agent                may this request pass; the one way to reach an agent
//! state  cache  audit  refusals  copy_jobs  access
//!                                 shared state, audit records, role tables
//! store/                          SQLite (and the audit hash chain)
//! error  model  limits  caller  clock  config  policy  health  spare  metrics ...
//!                                 leaves
//! ```
//!
//! [`config`] reads the configuration file (roles, socket group, audit retention).
//!
//! [`Daemon::bind`] opens the state and the API socket; [`Daemon::run`]
//! serves until dropped.

mod access;
mod activity;
mod admission;
mod agent;
mod agent_calls;
mod audit;
mod cache;
mod caller;
mod clock;
mod config;
mod copy_jobs;
mod error;
mod health;
mod http;
mod libvirt;
mod limits;
mod metrics;
mod model;
mod ops;
mod policy;
mod refusals;
mod relay;
mod spare;
mod state;
mod store;
mod tasks;
mod wbem;

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use guestcomm_protocol::error_chain;
use tokio::net::UnixListener;

// What the binary (`main.rs`) uses; everything else stays inside the crate.
pub use crate::config::{FileConfig, DEFAULT_CONFIG_PATH};
pub use crate::http::server::HttpLimits;
pub use crate::limits::{
    DEFAULT_HEARTBEAT_INTERVAL_MS, DEFAULT_HTTP_HEADER_TIMEOUT_MS, DEFAULT_MAX_CONCURRENT_PROBES,
    DEFAULT_MAX_HTTP_CONNECTIONS, DEFAULT_MAX_HTTP_CONNECTIONS_PER_PEER,
    DEFAULT_RELAY_COPY_IDLE_TIMEOUT_MS, OPEN_FILES_WANTED,
};
use crate::state::State;
use crate::store::{Store, StoreError};

/// The daemon's name and version, as sent in `Hello` to agents.
pub const DAEMON_NAME: &str = concat!("guestcommd ", env!("CARGO_PKG_VERSION"));

/// What the daemon needs to start.
#[derive(Clone, Debug)]
pub struct Config {
    /// State directory (the SQLite database).
    pub state_dir: PathBuf,
    /// Where the API is served.
    pub api: ApiEndpoint,
    /// Interval between health probes of one VM; `None`: no monitor.
    pub heartbeat_interval: Option<Duration>,
    /// Health probes in flight at once.
    pub max_concurrent_probes: usize,
    /// Keep a warm agent connection for recently used VMs (module `spare`).
    pub warm_connections: bool,
    /// Interval of the periodic guest clock sync; `None`: off (the default).
    pub time_sync_interval: Option<Duration>,
    /// The configuration file's content.
    pub file: config::FileConfig,
    /// Where it was read from (named in refusals).
    pub config_path: PathBuf,
    /// Also serve WBEM (`/cimom`, plain HTTP) on this loopback address.
    pub wbem: Option<std::net::SocketAddr>,
    /// The role of every caller on the `wbem` listener (it identifies nobody).
    pub wbem_role: guestcomm_api::Role,
    /// The idle bound of relayed copies.
    pub relay_copy_idle: Duration,
    /// Bounds of idle and slow API connections (each listener).
    pub http: HttpLimits,
    /// Follow the domains of libvirt at this URI (`--libvirt`).
    pub libvirt: Option<String>,
    /// Also serve `GET /metrics` over plain HTTP on this address (`--metrics`).
    pub metrics: Option<std::net::SocketAddr>,
    /// Record metrics at all (`--no-metrics`: no).
    pub metrics_enabled: bool,
}

/// Where the API is served.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ApiEndpoint {
    /// A Unix socket (mode 0660): callers by `SO_PEERCRED`.
    Unix(PathBuf),
    /// TCP with mutual TLS (`[api.tls]`): callers by client certificate.
    Tcp(std::net::SocketAddr),
}

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The state directory could not be created.
    #[error("cannot create the state directory {0}")]
    StateDir(String, #[source] std::io::Error),
    /// The state database could not be opened.
    #[error("cannot open the state database")]
    Store(#[from] StoreError),
    /// Another daemon serves this socket.
    #[error("another guestcommd is listening on {0}")]
    InUse(String),
    /// The API socket could not be opened.
    #[error("cannot listen on {0}")]
    Listen(String, #[source] std::io::Error),
    /// `--api tcp://` without `[api.tls]`, or TLS material that does not load.
    #[error("cannot serve the API over TCP: {0}")]
    Tls(String),
    /// The API socket's group does not exist or cannot be set.
    #[error("cannot give the API socket to group {0}")]
    SocketGroup(String, #[source] std::io::Error),
    /// A `--wbem` address that is not loopback.
    #[error("{0}")]
    Wbem(String),
    /// `--libvirt` cannot be followed (a build without libvirt).
    #[error("{0}")]
    Libvirt(String),
}

/// A daemon with its state open and its socket bound.
pub struct Daemon {
    state: Arc<State>,
    listener: Bound,
    config: Config,
    /// The `--wbem` listener, if any.
    wbem: Option<tokio::net::TcpListener>,
    /// Following `--libvirt`, if given.
    libvirt: Option<libvirt::Follower>,
    /// The `--metrics` listener, if any.
    metrics: Option<tokio::net::TcpListener>,
}

/// The API's listener.
enum Bound {
    Unix(UnixListener, SocketFile),
    Tls(http::tls_listener::TlsListener),
}

/// Removes the API socket file when the daemon stops.
struct SocketFile(PathBuf);

impl Drop for SocketFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

impl Daemon {
    /// Opens the state and binds the API: a Unix socket (mode 0660), or TCP
    /// with mutual TLS.
    pub async fn bind(config: Config) -> Result<Self, StartError> {
        if let Some(uri) = &config.libvirt {
            libvirt::supported(uri).map_err(StartError::Libvirt)?;
        }
        let dir = &config.state_dir;
        // Owner only: the state holds per-VM credentials.
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| StartError::StateDir(dir.display().to_string(), e))?;
        let mut store = Store::open(dir)?;
        let interrupted = store.interrupt_running_audit()?;
        if interrupted > 0 {
            tracing::warn!(
                records = interrupted,
                "audited operations were interrupted by the last stop"
            );
        }
        let access = access::Access::new(
            config.file.roles.clone(),
            config.config_path.display().to_string(),
        );
        let mut state = State::with_access(store, access);
        if !config.warm_connections {
            state.spares = Arc::new(spare::Spares::disabled());
        }
        state.relay_copy_idle = config.relay_copy_idle;
        if !config.metrics_enabled {
            state.metrics = Arc::new(metrics::Metrics::disabled());
        }
        let state = Arc::new(state);
        state.inventory_to_metrics().await;
        let listener = match &config.api {
            ApiEndpoint::Unix(path) => {
                let (listener, file) = bind_unix(path, &config.file).await?;
                Bound::Unix(listener, file)
            }
            ApiEndpoint::Tcp(addr) => {
                let Some(tls) = &config.file.api.tls else {
                    return Err(StartError::Tls(format!(
                        "--api tcp://{addr} needs mutual TLS: set cert, key and client_ca in [api.tls] of {}",
                        config.config_path.display()
                    )));
                };
                let server = http::tls_listener::server_config(tls)
                    .map_err(|e| StartError::Tls(error_chain(&e)))?;
                let name = format!("tcp://{addr}");
                let tcp = tokio::net::TcpListener::bind(addr)
                    .await
                    .map_err(|e| StartError::Listen(name.clone(), e))?;
                let listener = http::tls_listener::TlsListener::new(tcp, server, state.clone())
                    .map_err(|e| StartError::Listen(name, e))?;
                Bound::Tls(listener)
            }
        };
        let wbem = match config.wbem {
            Some(addr) => {
                wbem::check_listen_address(&addr).map_err(StartError::Wbem)?;
                let tcp = tokio::net::TcpListener::bind(addr)
                    .await
                    .map_err(|e| StartError::Listen(format!("tcp://{addr}"), e))?;
                Some(tcp)
            }
            None => None,
        };
        let metrics = match config.metrics {
            Some(addr) => Some(
                tokio::net::TcpListener::bind(addr)
                    .await
                    .map_err(|e| StartError::Listen(format!("tcp://{addr}"), e))?,
            ),
            None => None,
        };
        let libvirt = match &config.libvirt {
            Some(uri) => {
                let key_dir = config.file.libvirt.key_dir.clone();
                Some(libvirt::follow(state.clone(), uri, key_dir).map_err(StartError::Libvirt)?)
            }
            None => None,
        };
        Ok(Self {
            state,
            listener,
            config,
            wbem,
            libvirt,
            metrics,
        })
    }

    /// The address of the `--metrics` listener (with the port chosen for `:0`).
    pub fn metrics_address(&self) -> Option<std::net::SocketAddr> {
        self.metrics.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The address of the `--wbem` listener (with the port chosen for `:0`).
    pub fn wbem_address(&self) -> Option<std::net::SocketAddr> {
        self.wbem.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The address the API listens on (with the port chosen for `:0`).
    pub fn api_address(&self) -> String {
        match &self.listener {
            Bound::Unix(_, SocketFile(path)) => format!("unix://{}", path.display()),
            Bound::Tls(l) => match axum::serve::Listener::local_addr(l) {
                Ok(addr) => format!("tcp://{addr}"),
                Err(_) => "tcp://?".into(),
            },
        }
    }

    /// Serves the API and runs the health monitor until dropped.
    pub async fn run(self) -> std::io::Result<()> {
        let api = self.api_address();
        let Self {
            state,
            listener,
            config,
            wbem,
            // Followed until the API server stops.
            libvirt: _libvirt,
            metrics,
        } = self;
        let wbem = wbem.map(|tcp| {
            if let Ok(addr) = tcp.local_addr() {
                tracing::info!(wbem = %format!("http://{addr}/cimom"), role = %config.wbem_role, "serving WBEM");
            }
            let app = wbem::tcp_router(state.clone(), config.wbem_role);
            tokio::spawn(http::server::serve_tcp(
                tcp,
                app,
                config.http,
                state.metrics.clone(),
            ))
        });
        let metrics = metrics.map(|tcp| {
            if let Ok(addr) = tcp.local_addr() {
                tracing::info!(metrics = %format!("http://{addr}/metrics"), "serving metrics");
            }
            let app = http::metrics::listener_router(state.clone());
            tokio::spawn(http::server::serve_tcp(
                tcp,
                app,
                config.http,
                state.metrics.clone(),
            ))
        });
        let monitor = config.heartbeat_interval.map(|interval| {
            tokio::spawn(tasks::health::monitor(
                state.clone(),
                interval,
                config.max_concurrent_probes,
            ))
        });
        let time_sync = config.time_sync_interval.map(|interval| {
            tokio::spawn(tasks::time_sync::time_sync_loop(state.clone(), interval))
        });
        let listeners = tokio::spawn(relay::reconcile_guest_listeners(state.clone()));
        let pruner = tokio::spawn(tasks::audit_prune::prune_task(
            state.clone(),
            config.file.audit,
        ));
        let refusal_counter = tokio::spawn(tasks::refusals_flush::flush_task(state.clone()));
        tracing::info!(%api, state = %config.state_dir.display(), "serving");
        let counters = state.metrics.clone();
        let app = http::router(state);
        match listener {
            Bound::Unix(listener, _socket) => {
                http::server::serve_unix(listener, app, config.http, counters).await
            }
            Bound::Tls(listener) => {
                http::server::serve_tls(listener, app, config.http, counters).await
            }
        };
        if let Some(monitor) = monitor {
            monitor.abort();
        }
        if let Some(time_sync) = time_sync {
            time_sync.abort();
        }
        listeners.abort();
        pruner.abort();
        refusal_counter.abort();
        if let Some(wbem) = wbem {
            wbem.abort();
        }
        if let Some(metrics) = metrics {
            metrics.abort();
        }
        Ok(())
    }
}

/// Binds the API's Unix socket (mode 0660, and `[api] socket_group`),
/// replacing a stale one left by a crash. The socket appears at `path` only
/// once its mode and group are set.
async fn bind_unix(
    path: &std::path::Path,
    file: &config::FileConfig,
) -> Result<(UnixListener, SocketFile), StartError> {
    let name = format!("unix://{}", path.display());
    if path.exists() && tokio::net::UnixStream::connect(path).await.is_ok() {
        // A live socket answers; a stale one from a crash is replaced.
        return Err(StartError::InUse(name));
    }
    let group = match &file.api.socket_group {
        Some(group) => Some(socket_gid(group)?),
        None => None,
    };
    let mut group_failed = None;
    let prepare = |private: &std::path::Path| {
        std::fs::set_permissions(
            private,
            std::fs::Permissions::from_mode(limits::API_SOCKET_MODE),
        )?;
        if let Some((name, gid)) = &group {
            nix::unistd::chown(private, None, Some(*gid)).map_err(|e| {
                group_failed = Some(name.clone());
                std::io::Error::from(e)
            })?;
        }
        Ok(())
    };
    let listener =
        guestcomm_transport::listener::bind_unix_published(path, prepare).map_err(|e| {
            match group_failed.take() {
                Some(group) => StartError::SocketGroup(group, e),
                None => StartError::Listen(name, e),
            }
        })?;
    Ok((listener, SocketFile(path.to_path_buf())))
}

/// The group (name or gid) the API socket is given, with its gid.
fn socket_gid(group: &config::Principal) -> Result<(String, nix::unistd::Gid), StartError> {
    use nix::unistd::{Gid, Group};
    let name = match group {
        config::Principal::Id(id) => id.to_string(),
        config::Principal::Name(n) => n.clone(),
    };
    let gid = match name.parse::<u32>() {
        Ok(id) => Gid::from_raw(id),
        Err(_) => {
            Group::from_name(&name)
                .map_err(|e| StartError::SocketGroup(name.clone(), e.into()))?
                .ok_or_else(|| {
                    StartError::SocketGroup(
                        name.clone(),
                        std::io::Error::new(std::io::ErrorKind::NotFound, "no such group"),
                    )
                })?
                .gid
        }
    };
    Ok((name, gid))
}
