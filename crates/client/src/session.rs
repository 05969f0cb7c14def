//! Connecting to an agent: transport, then the handshake.

use guestcomm_protocol::auth::Psk;
use guestcomm_protocol::handshake::{self, Early, HandshakeError, FEATURE_REUSE};
use guestcomm_protocol::message::{Hello, Welcome};
use guestcomm_protocol::{FrameCodec, FramedConn};
use guestcomm_transport::{Address, ConnectError, Stream};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::codec::Framed;

/// Why a session could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The transport could not connect.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// The agent did not complete the handshake.
    #[error("handshake with {addr} failed")]
    Handshake {
        /// The agent's address.
        addr: String,
        /// Why.
        #[source]
        source: HandshakeError,
    },
}

/// A connection to an agent whose handshake is done, ready for one request.
///
/// `T` is the byte stream: a transport [`Stream`] when connecting directly,
/// or any other stream that reaches an agent (the daemon's relay).
pub struct Session<T = Stream> {
    /// The framed connection.
    pub conn: FramedConn<T>,
    /// What the agent said about itself.
    pub welcome: Welcome,
    /// This side offered [`FEATURE_REUSE`] ([`connect_reusable`]).
    offered_reuse: bool,
}

impl<T> Session<T> {
    /// Whether the connection may carry one operation after another: it was
    /// opened with [`connect_reusable`] and the agent listed
    /// [`FEATURE_REUSE`] too, so [`exec_reusing`](crate::exec::exec_reusing)
    /// can give it back.
    pub fn reusable(&self) -> bool {
        self.offered_reuse && self.welcome.features.iter().any(|f| f == FEATURE_REUSE)
    }
}

/// Connects to the agent at `addr` and runs the handshake without credentials.
pub async fn connect(addr: &Address, client_name: &str) -> Result<Session, ClientError> {
    connect_with(addr, client_name, None).await
}

/// [`connect_with`] offering connection reuse: one exec after another on
/// the session (docs/PROTOCOL.md 2.6; see [`Session::reusable`]).
pub async fn connect_reusable(
    addr: &Address,
    client_name: &str,
    psk: Option<&Psk>,
) -> Result<Session, ClientError> {
    connect_saying(addr, handshake::reusable_hello(client_name), psk).await
}

/// Connects to the agent at `addr` and runs the handshake, proving
/// knowledge of `psk` (and requiring the agent to) when given.
pub async fn connect_with(
    addr: &Address,
    client_name: &str,
    psk: Option<&Psk>,
) -> Result<Session, ClientError> {
    connect_saying(addr, handshake::default_hello(client_name), psk).await
}

/// Connects to `addr` and runs the handshake that opens with `hello`.
async fn connect_saying(
    addr: &Address,
    hello: Hello,
    psk: Option<&Psk>,
) -> Result<Session, ClientError> {
    let stream = guestcomm_transport::connect(addr).await?;
    with_hello(stream, &addr.to_string(), hello, psk, Early::None).await
}

/// Runs the client handshake on an already connected `stream`; `peer`
/// names it in errors.
pub async fn handshake<T>(
    stream: T,
    peer: &str,
    client_name: &str,
    psk: Option<&Psk>,
) -> Result<Session<T>, ClientError>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    handshake_then(stream, peer, client_name, psk, Early::None).await
}

/// [`handshake`] that also sends the session's request, as early as
/// `early` allows (a round trip saved; see [`Early`]). When it returns
/// `Ok`, the request is on its way: continue with, say,
/// [`exec_sent`](crate::exec::exec_sent).
pub async fn handshake_then<T>(
    stream: T,
    peer: &str,
    client_name: &str,
    psk: Option<&Psk>,
    early: Early,
) -> Result<Session<T>, ClientError>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    let hello = handshake::default_hello(client_name);
    with_hello(stream, peer, hello, psk, early).await
}

async fn with_hello<T>(
    stream: T,
    peer: &str,
    hello: Hello,
    psk: Option<&Psk>,
    early: Early,
) -> Result<Session<T>, ClientError>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    let mut conn = Framed::new(stream, FrameCodec::new());
    let offered_reuse = hello.features.iter().any(|f| f == FEATURE_REUSE);
    let welcome = handshake::client_handshake_then(&mut conn, hello, psk, early)
        .await
        .map_err(|source| ClientError::Handshake {
            addr: peer.to_string(),
            source,
        })?;
    Ok(Session {
        conn,
        welcome,
        offered_reuse,
    })
}
