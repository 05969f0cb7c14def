//! The guestcomm wire protocol, shared by the host and the guest agent.
//!
//! One connection carries one operation, as Hyper-V sockets do:
//!
//! ```text
//! 1. client connects (vsock, hybrid vsock, unix, tcp)
//! 2. client -> Hello      server -> Welcome | Error      (handshake)
//! 3. client -> Request {service GUID, call}               (names the operation)
//! 4. operation frames: control messages and raw data frames, both directions
//! 5. one side -> the operation's last frame (Exited, an answer, CopySummary
//!    or Error); its reader closes, then its sender ([`closing`])
//! ```
//!
//! Modules: [`frame`] (length-prefixed frames and their codec), [`message`]
//! (typed control messages), [`handshake`] (steps 2 and its checks),
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
pub mod entropy;
pub mod files;
pub mod frame;
pub mod handshake;
pub mod integration;
pub mod limits;
pub mod message;
pub mod nonce;
pub mod service;
pub mod split;
pub mod text;

pub use frame::{Frame, FrameCodec, FrameError, StreamId};
pub use handshake::{FramedConn, HandshakeError};
pub use message::{Call, Control, ErrorCode, ErrorFrame, ExecRequest, ExitStatus, WindowSize};
pub use service::{BuiltinService, ServiceId};
