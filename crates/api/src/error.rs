//! Why an API call failed ([`ApiError`]) and how an error answer of the
//! daemon becomes one ([`error_from`]). A leaf of the crate: the client and
//! the early upgrade import it, it imports neither.

use std::time::Duration;

use hyper::StatusCode;

use crate::tls::TlsError;
use crate::types::ErrorBody;
use crate::vocabulary::ApiErrorCode;

/// Why an API call failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The API address is neither a Unix socket nor a TCP address.
    #[error("invalid API address {0:?}: expected unix:///PATH or tcp://IP:PORT (set --api or GUESTCOMM_API)")]
    Address(String),
    /// A TCP address without the files mutual TLS needs.
    #[error("the API at {0} is served over mutual TLS: give --api-cert, --api-key and --api-ca (or GUESTCOMM_API_CERT, _KEY, _CA)")]
    TlsFilesMissing(String),
    /// The TLS files could not be loaded.
    #[error("cannot set up TLS for the API")]
    Tls(#[from] TlsError),
    /// Nothing listens on the socket.
    #[error("cannot reach guestcommd at {addr} (is it running? set --api or GUESTCOMM_API)")]
    Connect {
        /// The API address.
        addr: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Connecting (with the TLS handshake, over TCP) took too long.
    #[error("cannot reach guestcommd at {addr}: not connected within {after:?} (is it overloaded or stuck? set --api or GUESTCOMM_API)")]
    ConnectTimeout {
        /// The API address.
        addr: String,
        /// How long the client tried.
        after: Duration,
    },
    /// The daemon accepted the connection, then said nothing for too long.
    #[error("guestcommd at {addr} sent nothing for {after:?} (is it overloaded or stuck?)")]
    Idle {
        /// The API address.
        addr: String,
        /// How long the client waited.
        after: Duration,
    },
    /// The TLS handshake with the daemon failed (its certificate, or ours).
    #[error("TLS handshake with guestcommd at {addr} failed")]
    Handshake {
        /// The API address.
        addr: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The HTTP exchange failed.
    #[error("API request failed")]
    Http(#[from] hyper::Error),
    /// The request could not be built (a bad path).
    #[error("invalid API request")]
    Request(#[from] hyper::http::Error),
    /// The daemon answered with an error.
    #[error("{}", .body.error)]
    Status {
        /// HTTP status.
        status: u16,
        /// What the daemon said.
        body: ErrorBody,
    },
    /// The answer is not the JSON expected.
    #[error("unexpected answer from guestcommd")]
    Decode(#[from] serde_json::Error),
}

/// An error answer; a body that is not an [`ErrorBody`] is reported as text.
pub(crate) fn error_from(status: StatusCode, bytes: &[u8]) -> ApiError {
    let body = serde_json::from_slice::<ErrorBody>(bytes).unwrap_or_else(|_| {
        let text = String::from_utf8_lossy(bytes).trim().to_string();
        let error = format!("guestcommd answered {status}: {text}");
        ErrorBody {
            code: ApiErrorCode::Http,
            chain: vec![error.clone()],
            error,
            required_role: None,
        }
    });
    ApiError::Status {
        status: status.as_u16(),
        body,
    }
}
