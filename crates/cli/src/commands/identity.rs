//! `guestcomm identity new FILE`: create a key shared by host and guest.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use guestcomm_protocol::auth::{write_credentials, Psk};

use crate::exit::Failure;

/// Manage the keys that authenticate the host and an agent to each other.
///
/// One file per VM holds a random 256-bit key (mode 0600). The agent in the
/// guest reads it with `guestcomm-agent --credentials FILE`; the host gives
/// the same file to `guestcomm exec --identity FILE`. Each connection then
/// proves, both ways, that the other side holds the key (HMAC-SHA256 over
/// fresh nonces; docs/SECURITY.md).
#[derive(Debug, Args)]
pub(crate) struct IdentityArgs {
    /// What to do.
    #[command(subcommand)]
    pub(crate) command: IdentityCommand,
}

/// `identity` subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum IdentityCommand {
    /// Create a new key file (mode 0600); an existing file is never overwritten.
    New {
        /// Where to write it.
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
}

/// Runs `guestcomm identity` (no runtime, no context: it only writes a file).
pub(crate) fn run(args: IdentityArgs) -> Result<ExitCode, Failure> {
    match args.command {
        IdentityCommand::New { file } => {
            Psk::generate()
                .context("failed to generate a key")
                .and_then(|psk| write_credentials(&file, &psk).context("failed to write the key"))
                .map_err(|e| Failure::guestcomm(&e))?;
            eprintln!(
                "wrote a new key to {}: give it to the agent (--credentials) and to guestcomm (--identity)",
                file.display()
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}
