//! Serving HTTP on the API's listeners with bounds on what idle or slow
//! connections hold.
//!
//! ```text
//! accept -> peer: uid (SO_PEERCRED, Unix socket) or address (TCP, the
//!           loopback range as one peer)
//!        -> at most per_peer connections of one peer, at most total of
//!           all peers: a connection past either is closed at once; the
//!           admins of the Unix socket (root and the daemon's user) are
//!           not counted
//!        -> HTTP/1.1: each request's header must have arrived within
//!           header_timeout of the daemon starting to wait for it (a new
//!           connection, or a kept-alive one between requests)
//!        -> upgraded (exec, cp): the connection leaves these caps; the
//!           relay's own cap (MAX_RELAYS) holds it
//! ```

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use guestcomm_transport::admission::{address_peer, Admission, Ticket};
use hyper::body::Incoming;
use hyper::Request;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};

use crate::caller::Caller;
use crate::http::tls_listener::TlsListener;
use crate::limits::{
    ACCEPT_ERROR_PAUSE_MS, DEFAULT_HTTP_HEADER_TIMEOUT_MS, DEFAULT_MAX_HTTP_CONNECTIONS,
    DEFAULT_MAX_HTTP_CONNECTIONS_PER_PEER,
};
use crate::metrics::{Cap, Metrics};

/// Bounds of the HTTP connections of one listener.
#[derive(Clone, Copy, Debug)]
pub struct HttpLimits {
    /// Longest wait for a request's whole header (idle time included).
    pub header_timeout: Duration,
    /// Most connections of one peer (a uid, or an address).
    pub per_peer: usize,
    /// Most connections of all peers but the admins of the Unix socket.
    pub total: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_millis(DEFAULT_HTTP_HEADER_TIMEOUT_MS),
            per_peer: DEFAULT_MAX_HTTP_CONNECTIONS_PER_PEER,
            total: DEFAULT_MAX_HTTP_CONNECTIONS,
        }
    }
}

/// Who a connection counts against.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Peer {
    Uid(Option<u32>),
    Address(std::net::IpAddr),
}

/// Serves `app` on the API's Unix socket; callers by `SO_PEERCRED`.
pub(crate) async fn serve_unix(
    listener: UnixListener,
    app: Router,
    limits: HttpLimits,
    metrics: Arc<Metrics>,
) {
    let budget = Admission::new(limits.per_peer, limits.total);
    let daemon_uid = nix::unistd::geteuid().as_raw();
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "API accept failed");
                tokio::time::sleep(Duration::from_millis(ACCEPT_ERROR_PAUSE_MS)).await;
                continue;
            }
        };
        let caller = Caller::of_unix(&stream);
        // root and the daemon's user are admin whatever the configuration
        // says, and could stop the daemon: no cap holds them.
        let admin = matches!(caller.uid, Some(uid) if uid == 0 || uid == daemon_uid);
        let ticket = if admin {
            None
        } else {
            let Some(ticket) = budget.try_admit(Peer::Uid(caller.uid), false) else {
                metrics.refused_at(Cap::HttpConnections);
                tracing::warn!(uid = ?caller.uid, pid = ?caller.pid, "too many API connections from this user (or in all), closing one");
                continue;
            };
            Some(ticket)
        };
        spawn_connection(stream, app.clone(), caller, limits, ticket);
    }
}

/// Serves `app` on the mutual-TLS API; callers by client certificate.
pub(crate) async fn serve_tls(
    mut listener: TlsListener,
    app: Router,
    limits: HttpLimits,
    metrics: Arc<Metrics>,
) {
    let budget = Admission::new(limits.per_peer, limits.total);
    loop {
        let (stream, addr) = axum::serve::Listener::accept(&mut listener).await;
        let Some(ticket) = budget.try_admit(Peer::Address(address_peer(addr.ip())), false) else {
            metrics.refused_at(Cap::HttpConnections);
            tracing::warn!(peer = %addr, "too many API connections from this address (or in all), closing one");
            continue;
        };
        let caller = Caller::of_tls(&stream);
        spawn_connection(stream, app.clone(), caller, limits, Some(ticket));
    }
}

/// Serves `app` on plain TCP (`--wbem`, `--metrics`); callers by address.
pub(crate) async fn serve_tcp(
    listener: TcpListener,
    app: Router,
    limits: HttpLimits,
    metrics: Arc<Metrics>,
) {
    let budget = Admission::new(limits.per_peer, limits.total);
    loop {
        let (stream, addr) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, "HTTP accept failed");
                tokio::time::sleep(Duration::from_millis(ACCEPT_ERROR_PAUSE_MS)).await;
                continue;
            }
        };
        let Some(ticket) = budget.try_admit(Peer::Address(address_peer(addr.ip())), false) else {
            metrics.refused_at(Cap::HttpConnections);
            tracing::warn!(peer = %addr, "too many plain HTTP (WBEM, metrics) connections from this address (or in all), closing one");
            continue;
        };
        spawn_connection(stream, app.clone(), addr, limits, Some(ticket));
    }
}

/// Serves one connection in its own task, `info` as its `ConnectInfo`,
/// holding `ticket` (none for an admin of the Unix socket) until it ends
/// or is upgraded.
fn spawn_connection<I, C>(
    io: I,
    app: Router,
    info: C,
    limits: HttpLimits,
    ticket: Option<Ticket<Peer>>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    C: Clone + Send + Sync + 'static,
{
    let service = TowerToHyperService::new(app);
    let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
        req.extensions_mut().insert(ConnectInfo(info.clone()));
        hyper::service::Service::call(&service, req)
    });
    tokio::spawn(async move {
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_timeout);
        let served = builder
            .serve_connection(TokioIo::new(io), service)
            .with_upgrades()
            .await;
        if let Err(e) = served {
            tracing::debug!(error = %e, "API connection ended");
        }
        drop(ticket);
    });
}
