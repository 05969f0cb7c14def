//! The guestcomm wire protocol, shared by the host and the guest agent.
//!
//! One connection carries one operation at a time, as Hyper-V sockets do:
//!
//! ```text
//! 1. client connects (vsock, hybrid vsock, unix, tcp)
//! 2. client -> Hello      server -> Welcome | Error      (handshake)
//! 3. client -> Request {service GUID, call}               (names the operation)
//! 4. operation frames: control messages and raw data frames, both directions
//! 5. one side -> the operation's last frame (Exited, an answer, CopySummary
//!    or Error); its reader closes, then its sender ([`closing`]); or, after
//!    an exec's Exited on a connection that negotiated
//!    [`handshake::FEATURE_REUSE`], the client's next Request (back to 3)
//! ```
//!
//! Modules: [`frame`] (length-prefixed frames and their codec), [`stream`]
//! (which byte stream a data frame carries), [`message`] (typed control
//! messages), [`error_code`] (error frames and their codes), [`handshake`] (steps 2 and its checks),
//! [`service`] (service GUIDs and their vsock ports), [`limits`] (every bound),
//! [`split`] (a connection as a frame reader and a copy-free frame writer),
//! [`files`] (the file service's copy messages), [`integration`] (guest
//! info, time, key-value exchange, shutdown, filesystem freeze),
//! [`auth`] (the pre-shared key and its proofs), [`nonce`] (handshake nonces
//! that never wait for the kernel's random pool), [`entropy`] (the kernel's
//! generator, asked without blocking), [`closing`] (who closes a connection
//! first), [`text`] (peer text made safe for terminals and logs).
//! `docs/PROTOCOL.md` is the full specification.

pub mod auth;
pub mod closing;
pub mod duration;
pub mod entropy;
pub mod error_code;
pub mod files;
pub mod frame;
pub mod handshake;
pub mod integration;
pub mod limits;
pub mod message;
pub mod nonce;
pub mod service;
pub mod split;
pub mod stream;
pub mod text;

pub use error_code::{ErrorCode, ErrorFrame};
pub use frame::{Frame, FrameCodec, FrameError, FramedConn};
pub use handshake::HandshakeError;
pub use message::{Call, Control, ExecRequest, ExitStatus, Request, WindowSize};
pub use service::{BuiltinService, ServiceId};
pub use stream::StreamId;

/// Formats an error and its sources on one line, joined by ": ".
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
