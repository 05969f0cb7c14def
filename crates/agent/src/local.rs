//! `guestcomm-agent kvp get|set|rm|list`: guest programs' side of the
//! key-value pools, through the running agent's local socket.
//!
//! The command connects to the socket (default
//! [`DEFAULT_KVP_SOCKET`]), runs the ordinary handshake without
//! credentials (the socket's file mode decides who may connect) and sends
//! one key-value request. Guest programs read every pool and write only the
//! guest pool; the agent enforces it.

use std::path::Path;

use guestcomm_client::integration::{self as ops, CallError};
use guestcomm_client::ClientError;
use guestcomm_protocol::integration::{KvpEntries, KvpPool};
use guestcomm_protocol::message::Call;
use guestcomm_transport::Address;

/// Where the agent serves guest programs unless told otherwise.
pub const DEFAULT_KVP_SOCKET: &str = "/run/guestcomm/kvp.sock";

/// One key-value request of a guest program (also its command line).
#[derive(Clone, Debug, PartialEq, Eq, clap::Subcommand)]
pub enum LocalKvp {
    /// Print one value.
    Get {
        /// Pool: external (0, written by the host), guest (1) or auto (2).
        #[arg(long, default_value = "external")]
        pool: KvpPool,
        /// The key.
        key: String,
    },
    /// Write a key of the guest pool (key up to 512 bytes, value up to 2,048).
    Set {
        /// The key.
        key: String,
        /// The value.
        value: String,
    },
    /// Remove a key of the guest pool.
    Rm {
        /// The key.
        key: String,
    },
    /// Print every key of a pool, KEY=VALUE per line (--json for JSON).
    List {
        /// Pool: external (0), guest (1) or auto (2).
        #[arg(long, default_value = "external")]
        pool: KvpPool,
    },
}

/// Why a local key-value command failed.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    /// The agent could not be reached.
    #[error("cannot reach the agent's key-value socket {path} (is guestcomm-agent running with --kvp-socket?)")]
    Connect {
        /// The socket.
        path: String,
        /// Why.
        #[source]
        source: ClientError,
    },
    /// The agent refused or failed.
    #[error(transparent)]
    Call(#[from] CallError),
}

/// What a command prints on success.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LocalOutput {
    /// A value.
    Value(String),
    /// A pool.
    Entries(KvpEntries),
    /// Nothing.
    Done,
}

/// Runs `cmd` against the agent listening on `socket`.
pub async fn run(socket: &Path, cmd: LocalKvp) -> Result<LocalOutput, LocalError> {
    let addr = Address::Unix(socket.to_path_buf());
    let name = format!("guestcomm-agent kvp {}", env!("CARGO_PKG_VERSION"));
    let session = guestcomm_client::connect(&addr, &name)
        .await
        .map_err(|source| LocalError::Connect {
            path: socket.display().to_string(),
            source,
        })?;
    Ok(match cmd {
        LocalKvp::Get { pool, key } => LocalOutput::Value(ops::kvp_get(session, pool, &key).await?),
        LocalKvp::List { pool } => LocalOutput::Entries(ops::kvp_list(session, pool).await?),
        LocalKvp::Set { key, value } => {
            let call = Call::KvpSet {
                pool: KvpPool::Guest,
                key,
                value,
            };
            ops::kvp_change(session, call).await?;
            LocalOutput::Done
        }
        LocalKvp::Rm { key } => {
            let call = Call::KvpDelete {
                pool: KvpPool::Guest,
                key,
            };
            ops::kvp_change(session, call).await?;
            LocalOutput::Done
        }
    })
}
