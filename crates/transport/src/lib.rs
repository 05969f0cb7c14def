//! guestcomm transports: one byte-stream interface over AF_VSOCK, hybrid
//! vsock (a VMM's Unix socket plus `CONNECT <port>`), Unix sockets and
//! loopback TCP, selected by an [`Address`].
//!
//! [`address`] parses `scheme://` strings, [`stream`] connects, [`listener`]
//! accepts and filters vsock peers, [`hybrid`] is the hybrid vsock handshake,
//! [`admission`] budgets connections that have not authenticated yet.

pub mod address;
pub mod admission;
pub mod hybrid;
pub mod limits;
pub mod listener;
pub mod stream;

pub use address::{Address, AddressError};
pub use listener::{ListenError, Listener, Peer, PeerCidFilter};
pub use stream::{connect, ConnectError, Stream};
