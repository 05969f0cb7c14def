//! What the integration-service commands (`info`, `time`, `kvp`,
//! `shutdown`, `fs`) share: a TARGET that is an agent address (asked
//! directly, with `--identity`) or a VM name (asked through guestcommd's
//! API, which checks the VM's policy), and one-line errors with exit 1.

use std::path::Path;
use std::process::ExitCode;

use guestcomm_api::{ApiClient, ApiError};
use guestcomm_client::Session;
use guestcomm_protocol::text::Escaped;
use guestcomm_transport::Address;

use super::api::{self, FAILED};
use crate::session::AgentStream;
use crate::target::Target;

/// The TARGET of an integration-service command and its key.
#[derive(Debug, clap::Args)]
pub struct GuestTarget {
    /// The guest agent's address (see `guestcomm --help`) or a VM name.
    #[arg(value_name = "TARGET")]
    pub target: Target,
    /// Key file shared with the agent (agent addresses only; guestcommd
    /// holds the keys of its VMs).
    #[arg(long, env = "GUESTCOMM_IDENTITY", value_name = "FILE")]
    pub identity: Option<std::path::PathBuf>,
}

/// Where a command goes.
pub enum Via<'a> {
    /// An agent's address.
    Direct(&'a Address),
    /// A VM name, through guestcommd.
    Daemon {
        /// The API client.
        client: ApiClient,
        /// `/v1/vms/{name}`.
        vm_path: String,
    },
}

/// Resolves TARGET; `--identity` is refused for VM names.
pub fn via<'a>(
    target: &'a Target,
    api_addr: Option<&str>,
    identity: Option<&Path>,
) -> anyhow::Result<Via<'a>> {
    match target {
        Target::Direct(addr) => Ok(Via::Direct(addr)),
        Target::Vm(name) => {
            if identity.is_some() {
                anyhow::bail!(
                    "--identity is for agent addresses; for VM {name:?} guestcommd holds the key"
                );
            }
            let client = api::client(api_addr).map_err(|e| anyhow::anyhow!(api::one_line(&e)))?;
            let vm_path = api::vm_path(name).map_err(|e| anyhow::anyhow!(api::one_line(&e)))?;
            Ok(Via::Daemon { client, vm_path })
        }
    }
}

/// A session straight to the agent at `addr`.
pub async fn direct(
    addr: &Address,
    identity: Option<&Path>,
) -> anyhow::Result<Session<AgentStream>> {
    crate::session::open(&Target::Direct(addr.clone()), None, identity).await
}

/// An API error as an anyhow error (one line).
pub fn api_error(e: ApiError) -> anyhow::Error {
    anyhow::anyhow!(api::one_line(&e))
}

/// Prints `err` on one line and returns exit code 1.
pub fn fail(err: &anyhow::Error) -> ExitCode {
    eprintln!("guestcomm: {}", Escaped(&format!("{err:#}")));
    ExitCode::from(FAILED)
}

/// Writes `text` to stdout; a closed pipe (`| head`) is not an error.
pub fn write_out(text: &str) -> ExitCode {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => fail(&anyhow::Error::new(e).context("failed to write the output")),
    }
}

/// Formats a byte count for people (binary units).
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_read_in_binary_units() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 * 1024 * 1024 * 1024), "3.0 GiB");
    }
}
