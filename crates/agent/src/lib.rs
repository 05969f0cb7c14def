//! The guestcomm guest agent: runs inside the guest and serves the built-in
//! guest communication services to the host.
//!
//! [`server`] accepts connections on every listen address, runs the handshake
//! and dispatches each connection's single request by service GUID.
//! [`exec`] runs a program with streamed stdin/stdout/stderr or a
//! pseudo-terminal ([`pty`]), as another user if asked ([`user`]).
//! [`files`] serves copies into and out of the guest.
//! [`integration`] serves guest information ([`info`]), time ([`clock`]),
//! key-value exchange ([`kvp`], also to guest programs on a local socket,
//! [`local`]), shutdown ([`shutdown`]) and filesystem freeze ([`freeze`]).
//! [`policy`] enforces the guest owner's `--policy`.
//! [`limits`] holds the agent's bounds.

mod clock;
mod counters;
mod credentials;
mod exec;
mod files;
mod freeze;
mod host_connect;
mod hyperv_kvp;
mod info;
mod integration;
mod kvp;
mod limits;
mod local;
mod policy;
mod pty;
mod qga;
mod server;
mod shutdown;
mod user;

// What the binary (`main.rs`) uses; everything else stays inside the crate.
pub use credentials::{find as find_credentials, Places as CredentialPlaces};
pub use host_connect::{host_port, run as connect_host, HostConnectError};
pub use hyperv_kvp::{DEFAULT_DIR as HYPERV_KVP_DEFAULT_DIR, HYPERV_KVP_DEVICE};
pub use limits::{MAX_CONNECTIONS, OPEN_FILES_WANTED};
pub use local::{run as local_kvp, LocalKvp, LocalOutput, DEFAULT_KVP_SOCKET};
pub use policy::load as load_policy;
pub use qga::{serve as serve_qga, Channel as QgaChannel, Qga, Rpcs as QgaRpcs};
pub use server::{Agent, AgentConfig, BindError, ConfigError};
pub use shutdown::ShutdownRunner;
