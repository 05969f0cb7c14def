//! The guestcommd HTTP/JSON API, shared by the daemon and its clients.
//!
//! [`types`] holds every request and response body (serde), [`client`] a
//! thin HTTP/1 client over the daemon's Unix socket, including the HTTP
//! upgrade that turns an API request into a guestcomm frame stream; [`time`]
//! turns epoch timestamps into UTC dates; [`tls`] loads the mutual-TLS
//! material of the API over TCP; [`limits`] the client's connect and idle
//! timeouts; [`vocabulary`] the closed sets of words (error codes, health
//! statuses). This crate links no server and no SQLite: the CLI depends on
//! it alone.

pub mod client;
pub mod early_upgrade;
mod error;
pub mod limits;
pub mod time;
pub mod tls;
pub mod types;
pub mod vocabulary;

pub use client::ApiClient;
pub use error::ApiError;
pub use hyper::Method;
pub use types::*;
pub use vocabulary::{ApiErrorCode, DomainKey, HealthStatus};

/// Where the daemon listens and the CLI connects when nothing else is said.
pub const DEFAULT_API_ADDRESS: &str = "unix:///run/guestcomm/api.sock";

/// The value of the `Upgrade` header for a guestcomm frame stream.
pub const UPGRADE_PROTOCOL: &str = "guestcomm";

/// The `Upgrade` token of `POST /v1/vms/{name}/services/{id}/connect` for a
/// client that wants the service's bytes in guestcomm frames: `data` frames
/// both ways, and from the daemon a last `eof` (the guest program closed) or
/// `error` frame. A stream that ends without either means the daemon went
/// away. With [`UPGRADE_PROTOCOL`] the same endpoint relays raw bytes.
pub const FRAMED_STREAM_PROTOCOL: &str = "guestcomm-framed";
