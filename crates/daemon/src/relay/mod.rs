//! Byte streams between a caller and a guest, through the daemon: each is
//! admitted (module `admission`), audited when it starts and when it ends,
//! bounded, and relayed both ways without half-closing.
//!
//! None of it knows HTTP: the routes (`http/relay.rs`) open a session or a
//! service stream (its refusals, before the `101`, are `Error`s), answer `101`,
//! and hand over the upgraded connection as any `AsyncRead + AsyncWrite`.
//!
//! ```text
//! session   a guestcomm connection to the VM's agent (exec, cp), its
//!           request admitted and audited
//! broker    raw bytes to a guest program's vsock port
//! guest     guest-initiated connections over hybrid vsock, relayed to the
//!           service's host endpoint
//! slots     the operators' relay slots, at most `MAX_RELAYS`
//! copy      the byte relay both ways, growing bounded buffers
//! tap       counts the bytes and watches the frames, for the audit log
//! ```

mod broker;
mod copy;
mod guest;
mod session;
mod slots;
mod tap;

pub(crate) use broker::{open as open_service_stream, Framing};
pub(crate) use guest::reconcile as reconcile_guest_listeners;
pub(crate) use session::open as open_session;
