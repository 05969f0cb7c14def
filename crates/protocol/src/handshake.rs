//! The handshake that opens every connection.
//!
//! ```text
//! client                                   server (agent)
//!   | -- Hello {protocol, version, auth} -->  |  major versions must match
//!   | <-- AuthChallenge {nonce, proof} -----  |  only with psk-hmac-sha256
//!   | -- AuthResponse {proof} ------------->  |  (see crate::auth)
//!   | <-- Welcome {version, features} ------  |  or Error {code}, then close
//!   | -- Request {service, call} ---------->  |
//! ```
//!
//! Both sides bound the whole handshake by
//! [`HANDSHAKE_TIMEOUT_MS`](crate::limits::HANDSHAKE_TIMEOUT_MS). A client
//! holding a key offers only `psk-hmac-sha256`, so a server cannot downgrade
//! it to `"none"`. Both nonces come from [`crate::nonce`], which never waits
//! for the kernel's random pool, so a guest without entropy answers at once.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::auth::{self, Psk, Transcript, AUTH_PSK};
use crate::error_code::{ErrorCode, ErrorFrame};
use crate::frame::{Frame, FrameError, FramedConn};
use crate::limits::{HANDSHAKE_TIMEOUT_MS, MAX_HANDSHAKE_FRAME_BYTES};
use crate::message::{Control, Hello, ProtocolVersion, Request, Welcome};
use crate::nonce::{self, Role};
use crate::stream::StreamId;

/// The value of [`Hello::protocol`].
pub const PROTOCOL_NAME: &str = "guestcomm";

/// The authentication method that proves nothing (local, trusted transports).
pub const AUTH_NONE: &str = "none";

/// The feature that lets one connection carry one operation after another
/// (`docs/PROTOCOL.md`, "Connection reuse"): in effect when the `hello` and
/// the `welcome` both list it.
pub const FEATURE_REUSE: &str = "reuse";

/// Why a handshake failed.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// The peer sent no complete handshake message in time.
    #[error("no handshake from the peer within {0} ms")]
    Timeout(u64),
    /// The peer closed the connection before the handshake finished.
    #[error("the peer closed the connection during the handshake")]
    Closed,
    /// The peer's bytes are not frames.
    #[error("invalid handshake frame")]
    Frame(#[from] FrameError),
    /// The peer refused the handshake with an error frame.
    #[error("the peer refused the connection: {0}")]
    Rejected(ErrorFrame),
    /// A frame arrived that has no place in the handshake.
    #[error("expected {expected} during the handshake, got {got}")]
    Unexpected {
        /// What was expected.
        expected: &'static str,
        /// What came instead.
        got: String,
    },
    /// The peer is not a guestcomm client.
    #[error("the peer is not a guestcomm client (protocol {0:?})")]
    NotGuestcomm(String),
    /// The peer's major version differs from ours.
    #[error("the peer speaks protocol {theirs}; this side speaks {ours}")]
    UnsupportedVersion {
        /// Our version.
        ours: ProtocolVersion,
        /// The peer's version.
        theirs: ProtocolVersion,
    },
    /// The peer's proof of the key did not verify (or was missing).
    #[error("authentication failed: {0}")]
    AuthFailed(String),
    /// The server will not serve this client now (its connection cap):
    /// the frame it sent instead of the Welcome.
    #[error("refused after authentication: {0}")]
    Refused(ErrorFrame),
    /// No authentication method offered is accepted.
    #[error("no common authentication method: the client offered {offered:?}, this side accepts {accepted:?}")]
    NoCommonAuth {
        /// Offered by the client.
        offered: Vec<String>,
        /// Accepted by the server.
        accepted: Vec<String>,
    },
}

impl HandshakeError {
    /// Whether the handshake failed for its authentication, on either side:
    /// a proof that did not verify or no method in common here, or the
    /// peer saying so (`auth_failed`, `auth_required`).
    pub fn is_authentication_failure(&self) -> bool {
        match self {
            Self::AuthFailed(_) | Self::NoCommonAuth { .. } => true,
            Self::Rejected(frame) => {
                matches!(frame.code, ErrorCode::AuthFailed | ErrorCode::AuthRequired)
            }
            _ => false,
        }
    }

    /// The error frame the server sends before closing, if one fits.
    fn to_error_frame(&self) -> Option<ErrorFrame> {
        let code = match self {
            Self::Timeout(_) => ErrorCode::Timeout,
            Self::Frame(_) => ErrorCode::MalformedFrame,
            Self::Unexpected { .. } | Self::NotGuestcomm(_) => ErrorCode::UnexpectedMessage,
            Self::UnsupportedVersion { .. } => ErrorCode::UnsupportedVersion,
            Self::NoCommonAuth { .. } => ErrorCode::AuthRequired,
            Self::AuthFailed(_) => ErrorCode::AuthFailed,
            Self::Refused(frame) => return Some(frame.clone()),
            Self::Closed | Self::Rejected(_) => return None,
        };
        Some(ErrorFrame::new(code, error_chain(self)))
    }
}

use crate::error_chain;

/// What the server accepts and announces.
#[derive(Clone, Debug)]
pub struct ServerOffer {
    /// Features to announce in Welcome.
    pub features: Vec<String>,
    /// Authentication methods accepted, best first.
    pub auth: Vec<String>,
    /// Name and version for Welcome.
    pub agent: String,
    /// The key for `psk-hmac-sha256`, when the server has one.
    pub psk: Option<Psk>,
    /// This process's persistent nonce epoch
    /// ([`reserve_epoch`](crate::nonce::reserve_epoch)), when it keeps state.
    pub nonce_epoch: Option<u64>,
}

/// Receives one frame, turning end-of-stream into [`HandshakeError::Closed`].
async fn next_frame<T>(conn: &mut FramedConn<T>) -> Result<Frame, HandshakeError>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    match conn.next().await {
        Some(frame) => Ok(frame?),
        None => Err(HandshakeError::Closed),
    }
}

/// Client side: sends `hello`, authenticates with `psk` if given (offering
/// nothing else), waits for Welcome.
pub async fn client_handshake<T>(
    conn: &mut FramedConn<T>,
    hello: Hello,
    psk: Option<&Psk>,
) -> Result<Welcome, HandshakeError>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    client_handshake_then(conn, hello, psk, Early::None).await
}

/// A request the client sends during its handshake, before the Welcome
/// arrives, saving a round trip: the server reads frames in order, so the
/// request waits in its buffer until the handshake is done.
#[derive(Debug)]
pub enum Early {
    /// Nothing: the request follows the Welcome.
    None,
    /// Right after `AuthResponse` when authenticating (the agent has proved
    /// it holds the key, so it will accept), otherwise after the Welcome.
    AfterAuth(Request),
    /// Right after `AuthResponse`, or right after `Hello` when not
    /// authenticating. Only for streams where a server that refuses the
    /// hello and closes with the request unread still delivers its error
    /// frame (Unix sockets; TCP and vsock may reset instead).
    AfterHello(Request),
}

impl Early {
    /// The earliest safe point for `request`: right after the hello on a
    /// Unix socket (`unix_socket`), after the key exchange elsewhere.
    pub fn as_soon_as_safe(request: Request, unix_socket: bool) -> Self {
        if unix_socket {
            Self::AfterHello(request)
        } else {
            Self::AfterAuth(request)
        }
    }
}

/// [`client_handshake`] that also sends `early`, at the point it names.
/// When it returns `Ok`, the request has been sent.
pub async fn client_handshake_then<T>(
    conn: &mut FramedConn<T>,
    mut hello: Hello,
    psk: Option<&Psk>,
    early: Early,
) -> Result<Welcome, HandshakeError>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    let (mut after_hello, mut after_auth, mut after_welcome) = (None, None, None);
    match (early, psk) {
        (Early::None, _) => {}
        (Early::AfterHello(request), None) => after_hello = Some(request),
        (Early::AfterHello(request) | Early::AfterAuth(request), Some(_)) => {
            after_auth = Some(request)
        }
        (Early::AfterAuth(request), None) => after_welcome = Some(request),
    }
    let client_nonce = match psk {
        Some(psk) => {
            let nonce = nonce::nonce(psk, Role::Client, None);
            hello.auth = vec![AUTH_PSK.into()];
            hello.auth_nonce = Some(nonce.clone());
            Some(nonce)
        }
        None => None,
    };
    let offered = hello.auth.clone();
    let version = hello.version;
    let exchange = async {
        conn.feed(Frame::Control(Control::Hello(hello)))
            .await
            .map_err(HandshakeError::Frame)?;
        if let Some(request) = after_hello.take() {
            conn.feed(Frame::Control(Control::Request(request))).await?;
        }
        SinkExt::<Frame>::flush(conn).await?;
        let mut frame = next_frame(conn).await?;
        if let Frame::Control(Control::AuthChallenge { nonce, proof, .. }) = &frame {
            let (Some(psk), Some(client_nonce)) = (psk, &client_nonce) else {
                return Err(HandshakeError::Unexpected {
                    expected: "welcome",
                    got: "an authentication challenge (this client has no key)".into(),
                });
            };
            let transcript = Transcript {
                client_nonce,
                server_nonce: nonce,
                offered: &offered,
                version,
            };
            if auth::check_nonce(nonce).is_err() || !psk.verify_server(&transcript, proof) {
                let err = HandshakeError::AuthFailed(
                    "the agent could not prove it holds this VM's key (wrong credentials file?)"
                        .into(),
                );
                let frame = ErrorFrame::new(ErrorCode::AuthFailed, error_chain(&err));
                let _ = conn.send(Frame::Control(Control::Error(frame))).await;
                return Err(err);
            }
            let proof = psk.client_proof(&transcript);
            conn.feed(Frame::Control(Control::AuthResponse { proof }))
                .await?;
            if let Some(request) = after_auth.take() {
                conn.feed(Frame::Control(Control::Request(request))).await?;
            }
            SinkExt::<Frame>::flush(conn).await?;
            frame = next_frame(conn).await?;
        } else if psk.is_some() && matches!(frame, Frame::Control(Control::Welcome(_))) {
            return Err(HandshakeError::AuthFailed(
                "the agent accepted the connection without proving it holds the key".into(),
            ));
        }
        match frame {
            Frame::Control(Control::Welcome(welcome)) => {
                if welcome.version.major != ProtocolVersion::CURRENT.major {
                    return Err(HandshakeError::UnsupportedVersion {
                        ours: ProtocolVersion::CURRENT,
                        theirs: welcome.version,
                    });
                }
                if let Some(request) = after_welcome.take() {
                    conn.send(Frame::Control(Control::Request(request))).await?;
                }
                Ok(welcome)
            }
            Frame::Control(Control::Error(e)) => Err(HandshakeError::Rejected(e)),
            other => Err(HandshakeError::Unexpected {
                expected: "welcome",
                got: other.describe(),
            }),
        }
    };
    with_deadline(exchange).await
}

/// Server side of `psk-hmac-sha256`: challenge, then check the response.
async fn authenticate_client<T>(
    conn: &mut FramedConn<T>,
    hello: &Hello,
    psk: &Psk,
    nonce_epoch: Option<u64>,
) -> Result<(), HandshakeError>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    let Some(client_nonce) = hello.auth_nonce.as_deref() else {
        return Err(HandshakeError::AuthFailed(
            "the hello carries no auth_nonce".into(),
        ));
    };
    auth::check_nonce(client_nonce).map_err(|e| HandshakeError::AuthFailed(e.to_string()))?;
    let server_nonce = nonce::nonce(psk, Role::Server, nonce_epoch);
    let transcript = Transcript {
        client_nonce,
        server_nonce: &server_nonce,
        offered: &hello.auth,
        version: hello.version,
    };
    let challenge = Control::AuthChallenge {
        method: AUTH_PSK.into(),
        nonce: server_nonce.clone(),
        proof: psk.server_proof(&transcript),
    };
    conn.send(Frame::Control(challenge)).await?;
    match next_frame(conn).await? {
        Frame::Control(Control::AuthResponse { proof })
            if psk.verify_client(&transcript, &proof) =>
        {
            Ok(())
        }
        Frame::Control(Control::AuthResponse { .. }) => Err(HandshakeError::AuthFailed(
            "the client's proof does not match this agent's key (wrong credentials?)".into(),
        )),
        Frame::Control(Control::Error(e)) => Err(HandshakeError::Rejected(e)),
        other => Err(HandshakeError::Unexpected {
            expected: "auth_response",
            got: other.describe(),
        }),
    }
}

/// Server side: reads Hello, answers Welcome or an error frame.
///
/// Until the client has authenticated, frames from it may not exceed
/// [`MAX_HANDSHAKE_FRAME_BYTES`] (refused at the header, before anything is
/// buffered); the codec's own limit is back in force when this returns.
/// On failure the error frame (if any) has been sent; the caller just closes.
pub async fn server_handshake<T>(
    conn: &mut FramedConn<T>,
    offer: &ServerOffer,
) -> Result<(Hello, Welcome), HandshakeError>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    server_handshake_admitting(conn, offer, || Ok(()))
        .await
        .map(|(hello, welcome, ())| (hello, welcome))
}

/// [`server_handshake`] that calls `admit` once the client is
/// authenticated, before the Welcome: an `Err` is sent instead of the
/// Welcome ([`HandshakeError::Refused`]); an `Ok` (a connection slot) is
/// returned with the Hello.
pub async fn server_handshake_admitting<T, A>(
    conn: &mut FramedConn<T>,
    offer: &ServerOffer,
    admit: impl FnOnce() -> Result<A, ErrorFrame>,
) -> Result<(Hello, Welcome, A), HandshakeError>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    let codec = conn.codec().clone();
    let handshake_limit = codec.max_frame_bytes().min(MAX_HANDSHAKE_FRAME_BYTES);
    *conn.codec_mut() = codec.clone().with_max_frame_bytes(handshake_limit);
    let result = with_deadline(server_exchange(conn, offer, admit)).await;
    *conn.codec_mut() = codec;
    if let Err(err) = &result {
        if let Some(frame) = err.to_error_frame() {
            // Best effort: the peer may already be gone.
            let _ = conn.send(Frame::Control(Control::Error(frame))).await;
        }
    }
    result
}

/// [`server_handshake_admitting`] up to its answer.
async fn server_exchange<T: AsyncRead + AsyncWrite + Unpin, A>(
    conn: &mut FramedConn<T>,
    offer: &ServerOffer,
    admit: impl FnOnce() -> Result<A, ErrorFrame>,
) -> Result<(Hello, Welcome, A), HandshakeError> {
    {
        let hello = match next_frame(conn).await? {
            Frame::Control(Control::Hello(hello)) => hello,
            Frame::Control(Control::Error(e)) => return Err(HandshakeError::Rejected(e)),
            other => {
                return Err(HandshakeError::Unexpected {
                    expected: "hello",
                    got: other.describe(),
                })
            }
        };
        if hello.protocol != PROTOCOL_NAME {
            return Err(HandshakeError::NotGuestcomm(hello.protocol));
        }
        if hello.version.major != ProtocolVersion::CURRENT.major {
            return Err(HandshakeError::UnsupportedVersion {
                ours: ProtocolVersion::CURRENT,
                theirs: hello.version,
            });
        }
        let Some(auth) = offer.auth.iter().find(|m| hello.auth.contains(m)).cloned() else {
            return Err(HandshakeError::NoCommonAuth {
                offered: hello.auth,
                accepted: offer.auth.clone(),
            });
        };
        if auth == AUTH_PSK {
            let Some(psk) = &offer.psk else {
                return Err(HandshakeError::AuthFailed("this side has no key".into()));
            };
            authenticate_client(conn, &hello, psk, offer.nonce_epoch).await?;
        }
        let admitted = admit().map_err(HandshakeError::Refused)?;
        let welcome = Welcome {
            version: hello.version.min(ProtocolVersion::CURRENT),
            features: offer.features.clone(),
            auth,
            agent: offer.agent.clone(),
        };
        conn.send(Frame::Control(Control::Welcome(welcome.clone())))
            .await?;
        Ok((hello, welcome, admitted))
    }
}

async fn with_deadline<F, R>(fut: F) -> Result<R, HandshakeError>
where
    F: std::future::Future<Output = Result<R, HandshakeError>>,
{
    tokio::time::timeout(Duration::from_millis(HANDSHAKE_TIMEOUT_MS), fut)
        .await
        .unwrap_or(Err(HandshakeError::Timeout(HANDSHAKE_TIMEOUT_MS)))
}

/// The Hello this implementation sends, with no credentials.
pub fn default_hello(client: impl Into<String>) -> Hello {
    Hello {
        protocol: PROTOCOL_NAME.into(),
        version: ProtocolVersion::CURRENT,
        features: vec!["exec".into(), "pty".into()],
        auth: vec![AUTH_NONE.into()],
        client: client.into(),
        auth_nonce: None,
    }
}

/// [`default_hello`] offering [`FEATURE_REUSE`]: for a client that runs
/// one exec after another on the connection itself. A relay that checks
/// only a connection's first request (guestcommd's) must not offer it.
pub fn reusable_hello(client: impl Into<String>) -> Hello {
    let mut hello = default_hello(client);
    hello.features.push(FEATURE_REUSE.into());
    hello
}

/// The message of the error for a client that closed before its request.
pub const CLOSED_BEFORE_REQUEST: &str = "connection closed before a request";

/// Reads the frame after the handshake, which must be a `Request`.
///
/// The server bounds the wait by [`HANDSHAKE_TIMEOUT_MS`] too. The error is
/// the frame to send back before closing; a client that closed without a
/// request gets [`CLOSED_BEFORE_REQUEST`] (nobody is there to read it).
pub async fn read_request<T>(conn: &mut FramedConn<T>) -> Result<Request, ErrorFrame>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    let next = tokio::time::timeout(Duration::from_millis(HANDSHAKE_TIMEOUT_MS), conn.next()).await;
    match next {
        Err(_) => Err(ErrorFrame::new(
            ErrorCode::Timeout,
            format!("no request within {HANDSHAKE_TIMEOUT_MS} ms of the handshake"),
        )),
        Ok(None) => Err(ErrorFrame::new(
            ErrorCode::UnexpectedMessage,
            CLOSED_BEFORE_REQUEST,
        )),
        Ok(Some(Err(e))) => Err(ErrorFrame::new(ErrorCode::MalformedFrame, error_chain(&e))),
        Ok(Some(Ok(Frame::Control(Control::Request(request))))) => Ok(request),
        Ok(Some(Ok(other))) => Err(ErrorFrame::new(
            ErrorCode::UnexpectedMessage,
            format!("expected a request, got {}", other.describe()),
        )),
    }
}

/// Reads the next request on a reused connection, after an operation
/// ended (`docs/PROTOCOL.md`, "Connection reuse"): `Ok(None)` when the
/// client closed instead.
///
/// What the client sent for the operation that ended and this side had not
/// read yet (stdin data or its `eof`, `resize`, `signal`) is dropped. The
/// wait is bounded by [`HANDSHAKE_TIMEOUT_MS`], as for the first request;
/// the error is the frame to send back before closing.
pub async fn read_next_request<T>(conn: &mut FramedConn<T>) -> Result<Option<Request>, ErrorFrame>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    let next = async {
        loop {
            match conn.next().await {
                None => return Ok(None),
                Some(Err(e)) => {
                    return Err(ErrorFrame::new(ErrorCode::MalformedFrame, error_chain(&e)))
                }
                Some(Ok(Frame::Control(Control::Request(request)))) => return Ok(Some(request)),
                Some(Ok(
                    Frame::Data(StreamId::Stdin, _)
                    | Frame::Control(
                        Control::Eof {
                            stream: StreamId::Stdin,
                        }
                        | Control::Resize(_)
                        | Control::Signal { .. },
                    ),
                )) => {}
                Some(Ok(other)) => {
                    return Err(ErrorFrame::new(
                        ErrorCode::UnexpectedMessage,
                        format!("expected a request, got {}", other.describe()),
                    ))
                }
            }
        }
    };
    tokio::time::timeout(Duration::from_millis(HANDSHAKE_TIMEOUT_MS), next)
        .await
        .unwrap_or_else(|_| {
            Err(ErrorFrame::new(
                ErrorCode::Timeout,
                format!("no request within {HANDSHAKE_TIMEOUT_MS} ms of the last operation"),
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::FrameCodec;
    use tokio::io::{duplex, AsyncReadExt, AsyncWriteExt};
    use tokio_util::codec::Framed;

    fn offer() -> ServerOffer {
        ServerOffer {
            features: vec!["exec".into()],
            auth: vec![AUTH_NONE.into()],
            agent: "test-agent".into(),
            psk: None,
            nonce_epoch: None,
        }
    }

    fn psk_offer(psk: &Psk) -> ServerOffer {
        ServerOffer {
            auth: vec![AUTH_PSK.into()],
            psk: Some(psk.clone()),
            ..offer()
        }
    }

    /// Runs both sides over an in-memory pipe.
    async fn both(
        server_offer: ServerOffer,
        client_psk: Option<Psk>,
    ) -> (
        Result<Welcome, HandshakeError>,
        Result<(Hello, Welcome), HandshakeError>,
    ) {
        let (a, b) = duplex(4096);
        let server = tokio::spawn(async move {
            let mut conn = Framed::new(b, FrameCodec::new());
            server_handshake(&mut conn, &server_offer).await
        });
        let mut conn = Framed::new(a, FrameCodec::new());
        let client = client_handshake(&mut conn, default_hello("t"), client_psk.as_ref()).await;
        (client, server.await.unwrap())
    }

    fn ping_request() -> Request {
        Request {
            service: crate::BuiltinService::Exec.id(),
            call: crate::message::Call::Exec(crate::message::ExecRequest {
                program: "true".into(),
                ..Default::default()
            }),
        }
    }

    #[tokio::test]
    async fn an_early_request_arrives_before_the_server_answers_the_hello() {
        let (a, b) = duplex(4096);
        // This server answers only once the request is in: a client that
        // waited for the Welcome first would never finish.
        let server = tokio::spawn(async move {
            let mut conn = Framed::new(b, FrameCodec::new());
            let Some(Ok(Frame::Control(Control::Hello(_)))) = conn.next().await else {
                panic!("no hello")
            };
            let request = read_request(&mut conn).await.unwrap();
            let welcome = Welcome {
                version: ProtocolVersion::CURRENT,
                features: vec![],
                auth: AUTH_NONE.into(),
                agent: "t".into(),
            };
            conn.send(Frame::Control(Control::Welcome(welcome)))
                .await
                .unwrap();
            request
        });
        let mut conn = Framed::new(a, FrameCodec::new());
        let early = Early::AfterHello(ping_request());
        let welcome = client_handshake_then(&mut conn, default_hello("t"), None, early)
            .await
            .unwrap();
        assert_eq!(welcome.agent, "t");
        assert_eq!(server.await.unwrap(), ping_request());
    }

    #[tokio::test]
    async fn with_a_key_the_early_request_follows_the_auth_response_in_order() {
        for early in [
            Early::AfterHello(ping_request()),
            Early::AfterAuth(ping_request()),
        ] {
            let key = Psk::generate().unwrap();
            let (a, b) = duplex(4096);
            let server_offer = psk_offer(&key);
            let server = tokio::spawn(async move {
                let mut conn = Framed::new(b, FrameCodec::new());
                server_handshake(&mut conn, &server_offer).await.unwrap();
                read_request(&mut conn).await.unwrap()
            });
            let mut conn = Framed::new(a, FrameCodec::new());
            client_handshake_then(&mut conn, default_hello("t"), Some(&key), early)
                .await
                .unwrap();
            assert_eq!(server.await.unwrap(), ping_request());
        }
    }

    #[tokio::test]
    async fn a_refused_hello_is_reported_even_with_an_early_request_sent() {
        let (a, b) = duplex(4096);
        let server_offer = psk_offer(&Psk::generate().unwrap());
        let server = tokio::spawn(async move {
            let mut conn = Framed::new(b, FrameCodec::new());
            server_handshake(&mut conn, &server_offer).await
        });
        let mut conn = Framed::new(a, FrameCodec::new());
        let early = Early::AfterHello(ping_request());
        let client = client_handshake_then(&mut conn, default_hello("t"), None, early).await;
        let Err(HandshakeError::Rejected(frame)) = client else {
            panic!("expected a rejection, got {client:?}")
        };
        assert_eq!(frame.code, ErrorCode::AuthRequired);
        assert!(server.await.unwrap().is_err());
    }

    #[tokio::test]
    async fn both_sides_with_the_same_key_authenticate() {
        let key = Psk::generate().unwrap();
        let (client, server) = both(psk_offer(&key), Some(key)).await;
        assert_eq!(client.unwrap().auth, AUTH_PSK);
        assert_eq!(server.unwrap().1.auth, AUTH_PSK);
    }

    #[tokio::test]
    async fn a_client_with_the_wrong_key_is_refused_by_both_sides() {
        let (client, server) = both(
            psk_offer(&Psk::generate().unwrap()),
            Some(Psk::generate().unwrap()),
        )
        .await;
        // The client detects the agent's proof does not match its key first.
        assert!(
            matches!(client, Err(HandshakeError::AuthFailed(_))),
            "{client:?}"
        );
        assert!(server.is_err());
    }

    #[tokio::test]
    async fn a_client_without_a_key_gets_auth_required() {
        let (client, server) = both(psk_offer(&Psk::generate().unwrap()), None).await;
        let Err(HandshakeError::Rejected(frame)) = client else {
            panic!("expected a rejection, got {client:?}")
        };
        assert_eq!(frame.code, ErrorCode::AuthRequired);
        assert!(matches!(server, Err(HandshakeError::NoCommonAuth { .. })));
    }

    #[tokio::test]
    async fn a_client_with_a_key_refuses_an_agent_without_one() {
        let (client, _) = both(offer(), Some(Psk::generate().unwrap())).await;
        // The agent accepts only "none", which a keyed client never offers.
        let Err(HandshakeError::Rejected(frame)) = client else {
            panic!("expected a rejection, got {client:?}")
        };
        assert_eq!(frame.code, ErrorCode::AuthRequired);
    }

    #[tokio::test]
    async fn a_replayed_handshake_does_not_authenticate() {
        use tokio_util::codec::Encoder;
        let key = Psk::generate().unwrap();
        // Record what a genuine client sends to a genuine server.
        let (a, b) = duplex(4096);
        let offer_for_server = psk_offer(&key);
        let server = tokio::spawn(async move {
            let mut conn = Framed::new(b, FrameCodec::new());
            server_handshake(&mut conn, &offer_for_server).await
        });
        let mut recorded = Vec::new();
        let mut conn = Framed::new(a, FrameCodec::new());
        let mut hello = default_hello("t");
        let nonce = nonce::nonce(&key, Role::Client, None);
        hello.auth = vec![AUTH_PSK.into()];
        hello.auth_nonce = Some(nonce.clone());
        recorded.push(Frame::Control(Control::Hello(hello.clone())));
        conn.send(Frame::Control(Control::Hello(hello.clone())))
            .await
            .unwrap();
        let Some(Ok(Frame::Control(Control::AuthChallenge { nonce: ns, .. }))) = conn.next().await
        else {
            panic!("no challenge")
        };
        let t = Transcript {
            client_nonce: &nonce,
            server_nonce: &ns,
            offered: &hello.auth,
            version: hello.version,
        };
        let response = Frame::Control(Control::AuthResponse {
            proof: key.client_proof(&t),
        });
        recorded.push(response.clone());
        conn.send(response).await.unwrap();
        assert!(
            server.await.unwrap().is_ok(),
            "the genuine handshake must pass"
        );
        // Replay the recorded bytes to a new connection: a fresh server nonce defeats it.
        let (mut a, b) = duplex(4096);
        let offer_for_server = psk_offer(&key);
        let server = tokio::spawn(async move {
            let mut conn = Framed::new(b, FrameCodec::new());
            server_handshake(&mut conn, &offer_for_server).await
        });
        let mut wire = bytes::BytesMut::new();
        for frame in recorded {
            FrameCodec::new().encode(frame, &mut wire).unwrap();
        }
        a.write_all(&wire).await.unwrap();
        let err = server.await.unwrap().unwrap_err();
        assert!(matches!(err, HandshakeError::AuthFailed(_)), "{err}");
    }

    #[tokio::test]
    async fn matching_peers_agree_on_version_and_auth() {
        let (a, b) = duplex(4096);
        let server = tokio::spawn(async move {
            let mut conn = Framed::new(b, FrameCodec::new());
            server_handshake(&mut conn, &offer()).await
        });
        let mut conn = Framed::new(a, FrameCodec::new());
        let welcome = client_handshake(&mut conn, default_hello("t"), None)
            .await
            .unwrap();
        assert_eq!(welcome.version, ProtocolVersion::CURRENT);
        assert_eq!(welcome.auth, AUTH_NONE);
        let (hello, _) = server.await.unwrap().unwrap();
        assert_eq!(hello.client, "t");
    }

    #[tokio::test]
    async fn unknown_major_version_gets_an_error_frame_naming_both_versions() {
        let (a, b) = duplex(4096);
        let server = tokio::spawn(async move {
            let mut conn = Framed::new(b, FrameCodec::new());
            server_handshake(&mut conn, &offer()).await
        });
        let mut conn = Framed::new(a, FrameCodec::new());
        let mut hello = default_hello("t");
        hello.version = ProtocolVersion { major: 9, minor: 0 };
        let err = client_handshake(&mut conn, hello, None).await.unwrap_err();
        let HandshakeError::Rejected(frame) = err else {
            panic!("expected a rejection, got {err}")
        };
        assert_eq!(frame.code, ErrorCode::UnsupportedVersion);
        assert!(
            frame.message.contains("9.0") && frame.message.contains("1.0"),
            "{}",
            frame.message
        );
        assert!(matches!(
            server.await.unwrap(),
            Err(HandshakeError::UnsupportedVersion { .. })
        ));
    }

    #[tokio::test]
    async fn client_without_a_common_auth_method_is_refused() {
        let (a, b) = duplex(4096);
        tokio::spawn(async move {
            let mut conn = Framed::new(b, FrameCodec::new());
            let _ = server_handshake(&mut conn, &offer()).await;
        });
        let mut conn = Framed::new(a, FrameCodec::new());
        let mut hello = default_hello("t");
        hello.auth = vec!["psk-hmac-sha256".into()];
        let err = client_handshake(&mut conn, hello, None).await.unwrap_err();
        let HandshakeError::Rejected(frame) = err else {
            panic!("expected a rejection, got {err}")
        };
        assert_eq!(frame.code, ErrorCode::AuthRequired);
    }

    #[tokio::test]
    async fn garbage_gets_a_malformed_frame_error_back() {
        let (mut a, b) = duplex(4096);
        let server = tokio::spawn(async move {
            let mut conn = Framed::new(b, FrameCodec::new());
            server_handshake(&mut conn, &offer()).await
        });
        a.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        let err = server.await.unwrap().unwrap_err();
        assert!(err.to_string().contains("invalid handshake frame"), "{err}");
        let mut reply = Vec::new();
        a.read_to_end(&mut reply).await.unwrap();
        let mut codec = FrameCodec::new();
        let mut buf = bytes::BytesMut::from(&reply[..]);
        use tokio_util::codec::Decoder;
        let Some(Frame::Control(Control::Error(e))) = codec.decode(&mut buf).unwrap() else {
            panic!("no error frame in {reply:?}")
        };
        assert_eq!(e.code, ErrorCode::MalformedFrame);
        assert!(e.message.contains("exceeds"), "{}", e.message);
    }

    #[tokio::test]
    async fn an_oversized_hello_is_refused_at_its_header() {
        let (mut a, b) = duplex(4096);
        let server = tokio::spawn(async move {
            let mut conn = Framed::new(b, FrameCodec::new());
            let result = server_handshake(&mut conn, &offer()).await;
            (result, conn.codec().max_frame_bytes())
        });
        // A control frame header announcing 1 MiB, and no body.
        let mut header = (crate::limits::MAX_FRAME_BYTES as u32)
            .to_be_bytes()
            .to_vec();
        header.push(0);
        a.write_all(&header).await.unwrap();
        let (result, limit_after) = server.await.unwrap();
        let err = result.unwrap_err();
        assert!(
            err.to_string().contains("invalid handshake frame")
                && error_chain(&err).contains(&format!("{MAX_HANDSHAKE_FRAME_BYTES}-byte limit")),
            "{}",
            error_chain(&err)
        );
        assert_eq!(limit_after, crate::limits::MAX_FRAME_BYTES);
    }

    #[tokio::test]
    async fn after_the_handshake_the_full_frame_limit_is_back() {
        let (a, b) = duplex(4096);
        let server = tokio::spawn(async move {
            let mut conn = Framed::new(b, FrameCodec::new());
            server_handshake(&mut conn, &offer()).await.unwrap();
            conn.codec().max_frame_bytes()
        });
        let mut conn = Framed::new(a, FrameCodec::new());
        client_handshake(&mut conn, default_hello("t"), None)
            .await
            .unwrap();
        assert_eq!(server.await.unwrap(), crate::limits::MAX_FRAME_BYTES);
    }

    #[tokio::test(start_paused = true)]
    async fn silent_client_times_out() {
        let (_a, b) = duplex(4096);
        let mut conn = Framed::new(b, FrameCodec::new());
        let err = server_handshake(&mut conn, &offer()).await.unwrap_err();
        assert!(matches!(err, HandshakeError::Timeout(_)));
    }

    #[tokio::test]
    async fn the_next_request_comes_after_the_last_operations_leftovers() {
        let (a, b) = duplex(4096);
        let mut client = Framed::new(a, FrameCodec::new());
        let mut server = Framed::new(b, FrameCodec::new());
        let leftovers = [
            Frame::Data(StreamId::Stdin, "late stdin".into()),
            Frame::Control(Control::Eof {
                stream: StreamId::Stdin,
            }),
            Frame::Control(Control::Resize(crate::WindowSize { rows: 1, cols: 2 })),
            Frame::Control(Control::Signal { signal: 2 }),
        ];
        for frame in leftovers {
            client.send(frame).await.unwrap();
        }
        client
            .send(Frame::Control(Control::Request(ping_request())))
            .await
            .unwrap();
        let next = read_next_request(&mut server).await.unwrap();
        assert_eq!(next, Some(ping_request()));
        // Closing instead of asking again ends the connection quietly.
        drop(client);
        assert_eq!(read_next_request(&mut server).await.unwrap(), None);
    }

    #[tokio::test]
    async fn between_operations_anything_but_a_request_or_leftovers_is_refused() {
        let (a, b) = duplex(4096);
        let mut client = Framed::new(a, FrameCodec::new());
        let mut server = Framed::new(b, FrameCodec::new());
        client
            .send(Frame::Data(StreamId::Stdout, "not the client's".into()))
            .await
            .unwrap();
        let err = read_next_request(&mut server).await.unwrap_err();
        assert_eq!(err.code, ErrorCode::UnexpectedMessage);
        assert!(err.message.contains("expected a request"), "{err}");
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_reused_connection_times_out_like_the_first_request() {
        let (_a, b) = duplex(4096);
        let mut server = Framed::new(b, FrameCodec::new());
        let err = read_next_request(&mut server).await.unwrap_err();
        assert_eq!(err.code, ErrorCode::Timeout);
        assert!(err.message.contains("of the last operation"), "{err}");
    }
}
