//! Connecting to an agent: transport, then the handshake.

use guestcomm_protocol::auth::Psk;
use guestcomm_protocol::handshake::{self, HandshakeError};
use guestcomm_protocol::message::Welcome;
use guestcomm_protocol::{FrameCodec, FramedConn};
use guestcomm_transport::{Address, ConnectError, Stream};
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
pub struct Session {
    /// The framed connection.
    pub conn: FramedConn<Stream>,
    /// What the agent said about itself.
    pub welcome: Welcome,
}

/// Connects to the agent at `addr` and runs the handshake without credentials.
pub async fn connect(addr: &Address, client_name: &str) -> Result<Session, ClientError> {
    connect_with(addr, client_name, None).await
}

/// Connects to the agent at `addr` and runs the handshake, proving
/// knowledge of `psk` (and requiring the agent to) when given.
pub async fn connect_with(
    addr: &Address,
    client_name: &str,
    psk: Option<&Psk>,
) -> Result<Session, ClientError> {
    let stream = guestcomm_transport::connect(addr).await?;
    let mut conn = Framed::new(stream, FrameCodec::new());
    let welcome =
        handshake::client_handshake(&mut conn, handshake::default_hello(client_name), psk)
            .await
            .map_err(|source| ClientError::Handshake {
                addr: addr.to_string(),
                source,
            })?;
    Ok(Session { conn, welcome })
}
