//! `guestcomm fs freeze|thaw|status TARGET [MOUNTPOINT...]`: filesystem
//! freeze for consistent backups (Hyper-V's VSS counterpart).

use std::process::ExitCode;

use clap::{Args, Subcommand};
use guestcomm_api::{FreezeStatus, FsRequest, Method};
use guestcomm_protocol::message::Call;
use guestcomm_protocol::text::Escaped;

use super::guest::{self, GuestTarget, Via};

const FS_HELP: &str = "\
freeze with no MOUNTPOINT freezes every filesystem that can freeze
(pseudo filesystems, tmpfs and read-only mounts are skipped, with the
reason); the agent thaws on its own after --timeout seconds if no thaw
comes. Snapshot the disks between freeze and thaw.

Exit status: 0 on success, 1 on error (not a mount point, freeze failed,
unreachable agent, service disabled).";

/// Freeze and thaw guest filesystems (FIFREEZE/FITHAW).
#[derive(Debug, Args)]
#[command(after_help = FS_HELP)]
pub struct FsArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: FsCommand,
}

/// Target and mount points of an `fs` subcommand.
#[derive(Debug, Args)]
pub struct FsTarget {
    /// Target and key.
    #[command(flatten)]
    pub to: GuestTarget,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// The `fs` subcommands.
#[derive(Debug, Subcommand)]
pub enum FsCommand {
    /// Freeze filesystems (all that can freeze when none is named).
    Freeze {
        /// Target.
        #[command(flatten)]
        on: FsTarget,
        /// Thaw automatically after this many seconds (1 to 600).
        #[arg(long, value_name = "SECONDS", default_value_t = 60)]
        timeout: u64,
        /// Mount points in the guest.
        mountpoints: Vec<String>,
    },
    /// Thaw filesystems (all frozen when none is named).
    Thaw {
        /// Target.
        #[command(flatten)]
        on: FsTarget,
        /// Mount points in the guest.
        mountpoints: Vec<String>,
    },
    /// Show what is frozen.
    Status {
        /// Target.
        #[command(flatten)]
        on: FsTarget,
    },
}

async fn execute(cmd: &FsCommand, api: Option<&str>) -> anyhow::Result<FreezeStatus> {
    let (on, call, path, body) = match cmd {
        FsCommand::Freeze {
            on,
            timeout,
            mountpoints,
        } => (
            on,
            Call::FsFreeze {
                mountpoints: mountpoints.clone(),
                timeout_s: Some(*timeout),
            },
            Some("freeze"),
            FsRequest {
                mountpoints: mountpoints.clone(),
                timeout_s: Some(*timeout),
            },
        ),
        FsCommand::Thaw { on, mountpoints } => (
            on,
            Call::FsThaw {
                mountpoints: mountpoints.clone(),
            },
            Some("thaw"),
            FsRequest {
                mountpoints: mountpoints.clone(),
                timeout_s: None,
            },
        ),
        FsCommand::Status { on } => (on, Call::FsStatus, None, FsRequest::default()),
    };
    match guest::via(&on.to.target, api, on.to.identity.as_deref())? {
        Via::Direct(addr) => {
            let session = guest::direct(addr, on.to.identity.as_deref()).await?;
            Ok(guestcomm_client::integration::fs(session, call).await?)
        }
        Via::Daemon { client, vm_path } => {
            let answer = match path {
                Some(op) => {
                    client
                        .send(Method::POST, &format!("{vm_path}/fs/{op}"), &body)
                        .await
                }
                None => client.get(&format!("{vm_path}/fs")).await,
            };
            answer.map_err(guest::api_error)
        }
    }
}

/// Runs `guestcomm fs`.
pub async fn run(args: FsArgs, api: Option<&str>) -> ExitCode {
    let json = match &args.command {
        FsCommand::Freeze { on, .. } | FsCommand::Thaw { on, .. } | FsCommand::Status { on } => {
            on.json
        }
    };
    let status = match execute(&args.command, api).await {
        Ok(s) => s,
        Err(e) => return guest::fail(&e),
    };
    if json {
        return super::api::print_json(&status);
    }
    for m in &status.thawed {
        println!("thawed   {}", Escaped(m));
    }
    for s in &status.skipped {
        println!(
            "skipped  {}: {}",
            Escaped(&s.mountpoint),
            Escaped(&s.reason)
        );
    }
    for m in &status.frozen {
        println!("frozen   {}", Escaped(m));
    }
    match status.auto_thaw_in_s {
        Some(s) => println!("The agent thaws everything in {s} s unless thawed before."),
        None if status.frozen.is_empty() => println!("Nothing is frozen."),
        None => {}
    }
    ExitCode::SUCCESS
}
