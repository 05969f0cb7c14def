//! Byte streams between a caller and a guest, through the daemon: each is
//! admitted (module `admission`), audited when it starts and when it ends,
//! bounded, and relayed both ways without half-closing.
//!
//! ```text
//! session   POST /v1/vms/{name}/connect: a guestcomm connection to the
//!           VM's agent (exec, cp), its request admitted and audited
//! broker    POST /v1/vms/{name}/services/{id}/connect: raw bytes to a
//!           guest program's vsock port
//! guest     guest-initiated connections over hybrid vsock, relayed to the
//!           service's host endpoint
//! upgrade   the caller, the `Upgrade` asked for, a relay slot, the `101`
//! copy      the byte relay both ways, growing bounded buffers
//! tap       counts the bytes and watches the frames, for the audit log
//! ```

mod broker;
mod copy;
mod guest;
mod session;
mod tap;
mod upgrade;

pub(crate) use broker::connect as connect_service;
pub(crate) use guest::reconcile as reconcile_guest_listeners;
pub(crate) use session::connect;
