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

pub mod clock;
pub mod credentials;
pub mod exec;
pub mod files;
pub mod freeze;
pub mod host_connect;
pub mod hyperv_kvp;
pub mod info;
pub mod integration;
pub mod kvp;
pub mod limits;
pub mod local;
pub mod policy;
pub mod pty;
pub mod qga;
pub mod server;
pub mod shutdown;
pub mod user;

pub use server::{Agent, AgentConfig, BindError, ConfigError};
