//! The host side of guestcomm: open a connection to a guest agent, run the
//! handshake, and carry out one operation on it (or, with [`exec_reusing`],
//! one exec after another).
//!
//! [`connect`] gives a [`Session`] (a connection past its handshake);
//! [`exec`] runs a command through it, pumping stdin, stdout and stderr
//! between async readers/writers and the agent; [`files`] copies files and
//! trees into and out of the guest; [`integration`] asks the integration
//! services (guest info, time, key-value exchange, shutdown, freeze);
//! [`provision`] writes the options that deliver a VM's key at boot. The CLI's direct mode, the
//! daemon and the benchmarks all use this crate, so the host side of the
//! protocol lives in one place.

pub mod exec;
pub mod files;
pub mod integration;
pub mod provision;
mod session;

pub use exec::{exec, exec_reusing, exec_sent, ExecError, ExecInput, ExecIo};
pub use files::{copy_from_guest, copy_to_guest};
pub use guestcomm_files::{
    check_destination, parse_size, CopyError, NoProgress, Progress, ReceiveOptions,
    DEFAULT_COPY_IDLE_TIMEOUT,
};
pub use guestcomm_protocol::handshake::Early;
pub use session::{
    connect, connect_reusable, connect_with, handshake, handshake_then, ClientError, Session,
};
