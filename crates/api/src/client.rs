//! A thin HTTP/1 client for the daemon's API on a Unix socket, or over TCP
//! with mutual TLS ([`crate::tls`]).
//!
//! One connection per call, as `curl --unix-socket` does: the API is local
//! and calls are rare, so there is no pool to keep correct. Every non-2xx
//! answer carries an [`ErrorBody`], surfaced as [`ApiError::Status`].
//! Connecting, and every wait for the daemon to say something, are bounded
//! ([`crate::limits`]): a daemon that accepts and never answers is an error,
//! not a hang.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use guestcomm_transport::Address;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{CONNECTION, CONTENT_TYPE, HOST, UPGRADE};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};
use tokio_rustls::TlsConnector;

use crate::error::{error_from, ApiError};
use crate::limits::{API_CONNECT_TIMEOUT_MS, API_IDLE_TIMEOUT_MS};
use crate::tls::ClientTlsFiles;
use crate::UPGRADE_PROTOCOL;

/// A byte stream obtained by an HTTP upgrade (for `connect`).
pub type Upgraded = TokioIo<hyper::upgrade::Upgraded>;

/// Any byte stream to the daemon.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Where the daemon is.
#[derive(Clone)]
enum Endpoint {
    Unix(PathBuf),
    Tls {
        addr: SocketAddr,
        config: Arc<rustls::ClientConfig>,
    },
}

/// A client of one daemon.
#[derive(Clone)]
pub struct ApiClient {
    endpoint: Endpoint,
    /// Bound of connecting, the TLS handshake included.
    connect_timeout: Duration,
    /// Bound of each wait for the daemon to say something.
    idle_timeout: Duration,
}

impl std::fmt::Debug for ApiClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.address())
    }
}

impl ApiClient {
    /// A client for the API at `addr` (`unix:///PATH`).
    pub fn new(addr: &str) -> Result<Self, ApiError> {
        Self::with_tls(addr, None)
    }

    /// A client for the API at `addr`: `unix:///PATH`, or `tcp://IP:PORT`
    /// with `tls` (mutual TLS; the daemon's certificate must name the IP).
    pub fn with_tls(addr: &str, tls: Option<&ClientTlsFiles>) -> Result<Self, ApiError> {
        let endpoint = match (addr.parse::<Address>(), tls) {
            (Ok(Address::Unix(socket)), _) => Endpoint::Unix(socket),
            (Ok(Address::Tcp(addr)), Some(files)) => Endpoint::Tls {
                addr,
                config: Arc::new(crate::tls::client_config(files)?),
            },
            (Ok(Address::Tcp(_)), None) => return Err(ApiError::TlsFilesMissing(addr.into())),
            _ => return Err(ApiError::Address(addr.into())),
        };
        Ok(Self {
            endpoint,
            connect_timeout: Duration::from_millis(API_CONNECT_TIMEOUT_MS),
            idle_timeout: Duration::from_millis(API_IDLE_TIMEOUT_MS),
        })
    }

    /// The same client with other bounds: `connect` for connecting (and
    /// the TLS handshake), `idle` for each wait on the daemon's answer.
    pub fn with_timeouts(mut self, connect: Duration, idle: Duration) -> Self {
        self.connect_timeout = connect;
        self.idle_timeout = idle;
        self
    }

    /// Whether the daemon is reached over its Unix socket (rather than TCP
    /// with TLS), where a peer that closes with bytes unread still delivers
    /// what it sent before.
    pub fn is_unix(&self) -> bool {
        matches!(self.endpoint, Endpoint::Unix(_))
    }

    /// The address, as given.
    pub fn address(&self) -> String {
        match &self.endpoint {
            Endpoint::Unix(path) => format!("unix://{}", path.display()),
            Endpoint::Tls { addr, .. } => format!("tcp://{addr}"),
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

    /// `POST path` with a CIM-XML request (DSP0200 headers: `CIMOperation:
    /// MethodCall`, `CIMMethod`, `CIMObject`); the CIM-XML answer. A refusal
    /// before any operation (HTTP 400, 413) is [`ApiError::Status`] with the
    /// `CIMError` header in its text.
    pub async fn post_cim(
        &self,
        path: &str,
        cim_method: &str,
        cim_object: &str,
        xml: String,
    ) -> Result<Bytes, ApiError> {
        let mut sender = self.open().await?;
        let request = Request::builder()
            .method(Method::POST)
            .uri(path)
            .header(HOST, "guestcommd")
            .header(CONTENT_TYPE, "application/xml; charset=\"utf-8\"")
            .header("CIMOperation", "MethodCall")
            .header("CIMMethod", cim_method)
            .header("CIMObject", cim_object)
            .body(Full::new(Bytes::from(xml)))?;
        let response = self.answer(sender.send_request(request)).await?;
        let status = response.status();
        let cim_error = response
            .headers()
            .get("CIMError")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let bytes = self.body(response.into_body()).await?;
        if status.is_success() {
            return Ok(bytes);
        }
        let mut err = error_from(status, &bytes);
        if let (ApiError::Status { body, .. }, Some(header)) = (&mut err, cim_error) {
            body.error = format!("{} (CIMError: {header})", body.error);
        }
        Err(err)
    }

    async fn connect(&self) -> Result<Box<dyn Io>, ApiError> {
        tokio::time::timeout(self.connect_timeout, self.connect_unbounded())
            .await
            .unwrap_or_else(|_| {
                Err(ApiError::ConnectTimeout {
                    addr: self.address(),
                    after: self.connect_timeout,
                })
            })
    }

    async fn connect_unbounded(&self) -> Result<Box<dyn Io>, ApiError> {
        let connect_error = |source| ApiError::Connect {
            addr: self.address(),
            source,
        };
        match &self.endpoint {
            Endpoint::Unix(path) => Ok(Box::new(
                UnixStream::connect(path).await.map_err(connect_error)?,
            )),
            Endpoint::Tls { addr, config } => {
                let tcp = TcpStream::connect(addr).await.map_err(connect_error)?;
                let name = ServerName::IpAddress(addr.ip().into());
                let tls = TlsConnector::from(config.clone())
                    .connect(name, tcp)
                    .await
                    .map_err(|source| ApiError::Handshake {
                        addr: self.address(),
                        source,
                    })?;
                Ok(Box::new(tls))
            }
        }
    }

    /// `fut`, the daemon's next word, within the idle bound.
    async fn answer<T, E>(&self, fut: impl Future<Output = Result<T, E>>) -> Result<T, ApiError>
    where
        E: Into<ApiError>,
    {
        match tokio::time::timeout(self.idle_timeout, fut).await {
            Ok(result) => result.map_err(Into::into),
            Err(_) => Err(ApiError::Idle {
                addr: self.address(),
                after: self.idle_timeout,
            }),
        }
    }

    /// A whole response body, each piece within the idle bound.
    async fn body(&self, mut body: Incoming) -> Result<Bytes, ApiError> {
        let mut bytes = BytesMut::new();
        while let Some(frame) = self
            .answer(async { Ok::<_, ApiError>(body.frame().await) })
            .await?
        {
            if let Ok(data) = frame?.into_data() {
                bytes.extend_from_slice(&data);
            }
        }
        Ok(bytes.freeze())
    }

    async fn open(&self) -> Result<hyper::client::conn::http1::SendRequest<Full<Bytes>>, ApiError> {
        let stream = self.connect().await?;
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
        let request = Self::request(method, path, body)?;
        let response = self.answer(sender.send_request(request)).await?;
        let status = response.status();
        let bytes = self.body(response.into_body()).await?;
        if status.is_success() {
            Ok(bytes)
        } else {
            Err(error_from(status, &bytes))
        }
    }

    /// [`upgrade`](Self::upgrade), but returning before the answer: on the
    /// Unix socket the caller may write at once (a round trip saved), and
    /// the answer is read with the stream's first read, a refusal failing
    /// that read (module [`early_upgrade`](crate::early_upgrade)). Over TLS
    /// this waits for the answer, as `upgrade` does.
    pub async fn upgrade_early(&self, path: &str) -> Result<Box<dyn Io>, ApiError> {
        match &self.endpoint {
            Endpoint::Unix(_) => {
                let mut stream = self.connect().await?;
                let request = crate::early_upgrade::request_bytes(path, UPGRADE_PROTOCOL);
                stream
                    .write_all(&request)
                    .await
                    .map_err(|source| ApiError::Connect {
                        addr: self.address(),
                        source,
                    })?;
                Ok(Box::new(crate::early_upgrade::EarlyUpgrade::new(stream)))
            }
            Endpoint::Tls { .. } => Ok(Box::new(self.upgrade(path).await?)),
        }
    }

    /// `POST path` with `Connection: Upgrade`: on 101 the connection becomes
    /// a guestcomm frame stream to the VM's agent, relayed by the daemon.
    pub async fn upgrade(&self, path: &str) -> Result<Upgraded, ApiError> {
        self.upgrade_to(path, UPGRADE_PROTOCOL).await
    }

    /// [`upgrade`](Self::upgrade) asking for `protocol` (for example
    /// [`FRAMED_STREAM_PROTOCOL`](crate::FRAMED_STREAM_PROTOCOL)).
    pub async fn upgrade_to(
        &self,
        path: &str,
        protocol: &'static str,
    ) -> Result<Upgraded, ApiError> {
        let mut sender = self.open().await?;
        let mut request = Self::request(Method::POST, path, None)?;
        let headers = request.headers_mut();
        headers.insert(
            CONNECTION,
            hyper::header::HeaderValue::from_static("upgrade"),
        );
        headers.insert(UPGRADE, hyper::header::HeaderValue::from_static(protocol));
        let response = self.answer(sender.send_request(request)).await?;
        let status = response.status();
        if status == StatusCode::SWITCHING_PROTOCOLS {
            let upgraded = self.answer(hyper::upgrade::on(response)).await?;
            return Ok(TokioIo::new(upgraded));
        }
        let bytes = self.body(response.into_body()).await?;
        Err(error_from(status, &bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcp_addresses_need_the_tls_files() {
        assert!(ApiClient::new("unix:///run/x.sock").is_ok());
        let err = ApiClient::new("tcp://127.0.0.1:1").unwrap_err().to_string();
        assert!(err.contains("--api-cert"), "{err}");
        let err = ApiClient::new("vsock://3:1").unwrap_err().to_string();
        assert!(err.contains("unix:///PATH or tcp://"), "{err}");
    }

    #[test]
    fn non_json_error_bodies_keep_status_and_text() {
        let ApiError::Status { status, body } = error_from(StatusCode::BAD_GATEWAY, b"oops") else {
            panic!()
        };
        assert_eq!(status, 502);
        assert!(body.error.contains("oops"));
    }

    /// Accepts connections on `$listener` and holds them open without a
    /// byte: a daemon that is stuck (or not a daemon at all).
    macro_rules! hold_connections {
        ($listener:expr) => {{
            let listener = $listener;
            tokio::spawn(async move {
                let mut held = Vec::new();
                while let Ok((stream, _)) = listener.accept().await {
                    held.push(stream);
                }
            })
        }};
    }

    #[tokio::test]
    async fn a_daemon_that_accepts_and_never_answers_is_an_idle_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("silent.sock");
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        let holder = hold_connections!(listener);
        let idle = Duration::from_millis(300);
        let client = ApiClient::new(&format!("unix://{}", path.display()))
            .unwrap()
            .with_timeouts(Duration::from_secs(5), idle);
        // Every kind of call, each with a deadline of its own so that a
        // regression fails here instead of hanging the suite.
        let deadline = Duration::from_secs(30);
        let get = tokio::time::timeout(deadline, client.get::<serde_json::Value>("/v1/vms"));
        let upgrade = tokio::time::timeout(deadline, client.upgrade("/v1/vms/a/connect"));
        let cim =
            tokio::time::timeout(deadline, client.post_cim("/cimom", "M", "o", "<x/>".into()));
        let errors = [
            get.await.expect("get hung").unwrap_err(),
            upgrade.await.expect("upgrade hung").unwrap_err(),
            cim.await.expect("post_cim hung").unwrap_err(),
        ];
        for err in errors {
            assert!(
                matches!(&err, ApiError::Idle { after, .. } if *after == idle),
                "{err:?}"
            );
            let text = err.to_string();
            assert!(
                text.contains("sent nothing for 300ms") && text.contains("silent.sock"),
                "{text}"
            );
        }
        holder.abort();
    }

    #[tokio::test]
    async fn a_tls_daemon_that_never_finishes_its_handshake_is_a_connect_timeout() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let holder = hold_connections!(listener);
        let config = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        let connect = Duration::from_millis(300);
        let client = ApiClient {
            endpoint: Endpoint::Tls {
                addr,
                config: Arc::new(config),
            },
            connect_timeout: connect,
            idle_timeout: Duration::from_secs(60),
        };
        let got = tokio::time::timeout(
            Duration::from_secs(30),
            client.get::<serde_json::Value>("/v1/vms"),
        )
        .await
        .expect("the TLS connect hung");
        let err = got.unwrap_err();
        assert!(
            matches!(&err, ApiError::ConnectTimeout { after, .. } if *after == connect),
            "{err:?}"
        );
        assert!(err.to_string().contains(&format!("tcp://{addr}")), "{err}");
        holder.abort();
    }
}
