//! A thin HTTP/1 client for the daemon's API on a Unix socket.
//!
//! One connection per call, as `curl --unix-socket` does: the API is local
//! and calls are rare, so there is no pool to keep correct. Every non-2xx
//! answer carries an [`ErrorBody`], surfaced as [`ApiError::Status`].

use std::path::PathBuf;

use bytes::Bytes;
use guestcomm_transport::Address;
use http_body_util::{BodyExt, Full};
use hyper::header::{CONNECTION, CONTENT_TYPE, HOST, UPGRADE};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::net::UnixStream;

use crate::types::ErrorBody;
use crate::UPGRADE_PROTOCOL;

/// A byte stream obtained by an HTTP upgrade (for `connect`).
pub type Upgraded = TokioIo<hyper::upgrade::Upgraded>;

/// Why an API call failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The API address is not a Unix socket address.
    #[error("invalid API address {0:?}: expected unix:///PATH (set --api or GUESTCOMM_API)")]
    Address(String),
    /// Nothing listens on the socket.
    #[error(
        "cannot reach guestcommd at unix://{path} (is it running? set --api or GUESTCOMM_API)"
    )]
    Connect {
        /// The socket.
        path: String,
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

/// A client of one daemon.
#[derive(Clone, Debug)]
pub struct ApiClient {
    socket: PathBuf,
}

impl ApiClient {
    /// A client for the API at `addr` (`unix:///PATH`).
    pub fn new(addr: &str) -> Result<Self, ApiError> {
        match addr.parse::<Address>() {
            Ok(Address::Unix(socket)) => Ok(Self { socket }),
            _ => Err(ApiError::Address(addr.into())),
        }
    }

    /// `GET path`, decoding JSON.
    pub async fn get<R: DeserializeOwned>(&self, path: &str) -> Result<R, ApiError> {
        let body = self.call(Method::GET, path, None).await?;
        Ok(serde_json::from_slice(&body)?)
    }

    /// `POST path` (or another method) with a JSON body, decoding JSON.
    pub async fn send<B: Serialize, R: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: &B,
    ) -> Result<R, ApiError> {
        let body = serde_json::to_vec(body)?;
        let answer = self.call(method, path, Some(body)).await?;
        Ok(serde_json::from_slice(&answer)?)
    }

    /// `DELETE path`, expecting no body.
    pub async fn delete(&self, path: &str) -> Result<(), ApiError> {
        self.call(Method::DELETE, path, None).await.map(drop)
    }

    async fn open(&self) -> Result<hyper::client::conn::http1::SendRequest<Full<Bytes>>, ApiError> {
        let stream =
            UnixStream::connect(&self.socket)
                .await
                .map_err(|source| ApiError::Connect {
                    path: self.socket.display().to_string(),
                    source,
                })?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn.with_upgrades());
        Ok(sender)
    }

    fn request(
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Request<Full<Bytes>>, ApiError> {
        let mut builder = Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, "guestcommd");
        if body.is_some() {
            builder = builder.header(CONTENT_TYPE, "application/json");
        }
        Ok(builder.body(Full::new(Bytes::from(body.unwrap_or_default())))?)
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Bytes, ApiError> {
        let mut sender = self.open().await?;
        let response = sender
            .send_request(Self::request(method, path, body)?)
            .await?;
        let status = response.status();
        let bytes = response.into_body().collect().await?.to_bytes();
        if status.is_success() {
            Ok(bytes)
        } else {
            Err(error_from(status, &bytes))
        }
    }

    /// `POST path` with `Connection: Upgrade`: on 101 the connection becomes
    /// a guestcomm frame stream to the VM's agent, relayed by the daemon.
    pub async fn upgrade(&self, path: &str) -> Result<Upgraded, ApiError> {
        let mut sender = self.open().await?;
        let mut request = Self::request(Method::POST, path, None)?;
        let headers = request.headers_mut();
        headers.insert(
            CONNECTION,
            hyper::header::HeaderValue::from_static("upgrade"),
        );
        headers.insert(
            UPGRADE,
            hyper::header::HeaderValue::from_static(UPGRADE_PROTOCOL),
        );
        let response = sender.send_request(request).await?;
        let status = response.status();
        if status == StatusCode::SWITCHING_PROTOCOLS {
            return Ok(TokioIo::new(hyper::upgrade::on(response).await?));
        }
        let bytes = response.into_body().collect().await?.to_bytes();
        Err(error_from(status, &bytes))
    }
}

/// An error answer; a body that is not an [`ErrorBody`] is reported as text.
fn error_from(status: StatusCode, bytes: &[u8]) -> ApiError {
    let body = serde_json::from_slice::<ErrorBody>(bytes).unwrap_or_else(|_| {
        let text = String::from_utf8_lossy(bytes).trim().to_string();
        let error = format!("guestcommd answered {status}: {text}");
        ErrorBody {
            code: "http".into(),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_unix_addresses_are_accepted() {
        assert!(ApiClient::new("unix:///run/x.sock").is_ok());
        let err = ApiClient::new("tcp://127.0.0.1:1").unwrap_err().to_string();
        assert!(err.contains("unix:///PATH"), "{err}");
    }

    #[test]
    fn non_json_error_bodies_keep_status_and_text() {
        let ApiError::Status { status, body } = error_from(StatusCode::BAD_GATEWAY, b"oops") else {
            panic!()
        };
        assert_eq!(status, 502);
        assert!(body.error.contains("oops"));
    }
}
