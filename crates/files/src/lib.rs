//! The file service of guestcomm, shared by the guest agent and the host:
//! one implementation of "send a tree" and one of "receive a tree safely",
//! whichever side holds the files.
//!
//! - [`send`] walks a source (a file, or a tree with `recursive`) and streams
//!   it as `Entry`, file data, `EntryEnd` and `CopyEnd` frames;
//! - [`receive`] stores such a stream under a destination (module `store`,
//!   on a blocking thread), treating the sender as hostile ([`path`]
//!   validates every name; files land through a temporary file (module
//!   `temp`), BLAKE3 check, fsync and rename, with writeback started while
//!   the data arrives (module `writeback`));
//! - module `idle` bounds every wait on the peer and ends a copy by the
//!   closing rule;
//! - [`error`] is the one error type, and how it maps to error frames;
//! - [`parse_size`] reads the byte bounds both sides take on their command
//!   lines.
//!
//! The wire sequence is in `guestcomm_protocol::files` and `docs/PROTOCOL.md`.

mod beneath;
pub mod error;
mod hashing;
mod idle;
pub mod path;
pub mod receive;
pub mod send;
mod size;
mod store;
mod temp;
mod writeback;

pub use beneath::Confine;
pub use error::{CopyError, Stall};
pub use receive::{check_destination, receive_copy};
pub use send::send_copy;
pub use size::parse_size;
pub use store::ReceiveOptions;

use std::time::Duration;

use guestcomm_protocol::files::Entry;
use guestcomm_protocol::limits::DEFAULT_COPY_IDLE_TIMEOUT_MS;

/// How long a copy waits on its peer before failing as stalled, unless its
/// caller chose otherwise ([`DEFAULT_COPY_IDLE_TIMEOUT_MS`]).
pub const DEFAULT_COPY_IDLE_TIMEOUT: Duration = Duration::from_millis(DEFAULT_COPY_IDLE_TIMEOUT_MS);

/// Told about a copy's progress, from the task that moves the frames.
pub trait Progress: Send {
    /// An entry starts (the root first).
    fn entry(&mut self, _entry: &Entry) {}
    /// `n` more bytes of file content moved.
    fn bytes(&mut self, _n: u64) {}
}

/// Progress that nobody watches.
pub struct NoProgress;

impl Progress for NoProgress {}
