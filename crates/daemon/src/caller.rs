//! Who called: the identity of a caller on the API, by `SO_PEERCRED` on
//! the Unix socket or by client certificate on the TCP API. A leaf that the
//! audit log, the listeners and the authorization all name.

use axum::serve::IncomingStream;
use guestcomm_api::tls::{digest, format_fingerprint};
use tokio::net::{TcpStream, UnixListener};
use tokio_rustls::server::TlsStream;

/// Who called: `SO_PEERCRED` on the API socket, or the client certificate
/// on the TCP API.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Caller {
    /// User id.
    pub(crate) uid: Option<u32>,
    /// Group id.
    pub(crate) gid: Option<u32>,
    /// Process id.
    pub(crate) pid: Option<i32>,
    /// SHA-256 of the client certificate (TCP API).
    pub(crate) certificate: Option<[u8; 32]>,
}

impl Caller {
    /// The certificate's fingerprint, `sha256:...`.
    pub(crate) fn fingerprint(&self) -> Option<String> {
        self.certificate.as_ref().map(format_fingerprint)
    }
}

impl Caller {
    /// The caller on the API socket, by `SO_PEERCRED`.
    pub(crate) fn of_unix(stream: &tokio::net::UnixStream) -> Self {
        let cred = stream.peer_cred().ok();
        Self {
            uid: cred.map(|c| c.uid()),
            gid: cred.map(|c| c.gid()),
            pid: cred.and_then(|c| c.pid()),
            certificate: None,
        }
    }

    /// The caller on the TCP API, by its client certificate.
    pub(crate) fn of_tls(stream: &TlsStream<TcpStream>) -> Self {
        let (_, session) = stream.get_ref();
        Self {
            certificate: session
                .peer_certificates()
                .and_then(|chain| chain.first())
                .map(|cert| digest(cert)),
            ..Self::default()
        }
    }
}

impl axum::extract::connect_info::Connected<IncomingStream<'_, UnixListener>> for Caller {
    fn connect_info(stream: IncomingStream<'_, UnixListener>) -> Self {
        Self::of_unix(stream.io())
    }
}
