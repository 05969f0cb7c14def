//! The API over TCP with mutual TLS 1.3 (`guestcommd --api tcp://IP:PORT`,
//! `[api.tls]` in the configuration file).
//!
//! ```text
//! accept TCP -> handshake task (at most MAX_TLS_HANDSHAKES at once and
//!               MAX_TLS_HANDSHAKES_PER_PEER of one peer: a newcomer
//!               closes the oldest of the peer holding the most; each
//!               bounded by TLS_HANDSHAKE_TIMEOUT_MS; a client
//!               certificate chaining to client_ca is required)
//!            -> channel -> TlsListener::accept -> axum (Caller: the
//!               certificate's fingerprint, mapped to a role by access)
//! ```
//!
//! Handshakes run in their own tasks so a client that stalls cannot hold
//! up the others; a failed one is logged and audited (`api.tls`, refused).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use guestcomm_api::tls::{load_certs, load_key, load_roots, provider, TlsError};
use guestcomm_transport::admission::{address_peer, Admission};
use rustls::server::WebPkiClientVerifier;
use rustls::ServerConfig;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::audit::{self, Outcome};
use crate::caller::Caller;
use crate::config::TlsSection;
use crate::limits::{
    ACCEPT_ERROR_PAUSE_MS, MAX_TLS_HANDSHAKES, MAX_TLS_HANDSHAKES_PER_PEER,
    TLS_HANDSHAKE_TIMEOUT_MS,
};
use crate::state::State;

/// The server side: TLS 1.3 only, the daemon's certificate, and client
/// certificates required and verified against `client_ca`.
pub(crate) fn server_config(tls: &TlsSection) -> Result<ServerConfig, TlsError> {
    let verifier = WebPkiClientVerifier::builder_with_provider(
        Arc::new(load_roots(&tls.client_ca)?),
        provider(),
    )
    .build()?;
    Ok(ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(load_certs(&tls.cert)?, load_key(&tls.key)?)?)
}

/// Accepted, authenticated TLS connections, for `axum::serve`.
pub(crate) struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
    acceptor: tokio::task::JoinHandle<()>,
}

impl TlsListener {
    /// Listens on `tcp` and completes handshakes with `config`; refusals
    /// go to `state`'s audit log.
    pub(crate) fn new(
        tcp: TcpListener,
        config: ServerConfig,
        state: Arc<State>,
    ) -> std::io::Result<Self> {
        let local = tcp.local_addr()?;
        let (tx, ready) = mpsc::channel(MAX_TLS_HANDSHAKES);
        let acceptor = tokio::spawn(accept_loop(
            tcp,
            TlsAcceptor::from(Arc::new(config)),
            tx,
            state,
        ));
        Ok(Self {
            ready,
            local,
            acceptor,
        })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.acceptor.abort();
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(conn) => conn,
            // The accept loop only ends when the listener is dropped.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

async fn accept_loop(
    tcp: TcpListener,
    acceptor: TlsAcceptor,
    ready: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
    state: Arc<State>,
) {
    let handshakes = Admission::new(MAX_TLS_HANDSHAKES_PER_PEER, MAX_TLS_HANDSHAKES);
    loop {
        let (stream, peer) = match tcp.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, "API accept failed");
                tokio::time::sleep(Duration::from_millis(ACCEPT_ERROR_PAUSE_MS)).await;
                continue;
            }
        };
        let mut ticket = handshakes.admit(address_peer(peer.ip()));
        let (acceptor, ready, state) = (acceptor.clone(), ready.clone(), state.clone());
        tokio::spawn(async move {
            let started = Instant::now();
            let limit = Duration::from_millis(TLS_HANDSHAKE_TIMEOUT_MS);
            let handshake = tokio::select! {
                () = ticket.evicted() => {
                    tracing::debug!(%peer, "TLS handshake closed: newer connections needed its place");
                    return;
                }
                done = tokio::time::timeout(limit, acceptor.accept(stream)) => done,
            };
            drop(ticket);
            let result = match handshake {
                Ok(Ok(tls)) => Ok(tls),
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                    // Closed before a ClientHello: a port probe, not a client.
                    tracing::debug!(%peer, "TCP connection closed before TLS");
                    return;
                }
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err(format!(
                    "no TLS handshake within {TLS_HANDSHAKE_TIMEOUT_MS} ms"
                )),
            };
            match result {
                Ok(tls) => {
                    let _ = ready.send((tls, peer)).await;
                }
                Err(error) => {
                    tracing::warn!(%peer, %error, "TLS handshake refused");
                    let mut record = audit::record(Caller::default(), "api.tls");
                    record.arguments = format!("from {peer}");
                    audit::finish(&mut record, Outcome::Refused, Some(error), started);
                    // An unauthenticated peer: recorded apart, counted past a bound.
                    state
                        .audit_unaccountable_refusal(Caller::default(), record)
                        .await;
                }
            }
        });
    }
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, TlsListener>>
    for Caller
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, TlsListener>) -> Self {
        Caller::of_tls(stream.io())
    }
}
