//! `guestcomm fs freeze|thaw|status TARGET [MOUNTPOINT...]`: filesystem
//! freeze for consistent backups (Hyper-V's VSS counterpart).

use std::process::ExitCode;

use clap::{Args, Subcommand};
use guestcomm_protocol::text::Escaped;

use super::GuestTarget;
use crate::context::Context;
use crate::exit::Failure;
use crate::guest::{self, FsOp};
use crate::output;

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
pub(crate) struct FsArgs {
    /// What to do.
    #[command(subcommand)]
    pub(crate) command: FsCommand,
}

/// Target and mount points of an `fs` subcommand.
#[derive(Debug, Args)]
pub(crate) struct FsTarget {
    /// Target and key.
    #[command(flatten)]
    pub(crate) to: GuestTarget,
    /// Print JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

/// The `fs` subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum FsCommand {
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

impl FsCommand {
    /// The target, mount points and `--json` of any `fs` subcommand.
    pub(crate) fn on(&self) -> &FsTarget {
        match self {
            FsCommand::Freeze { on, .. }
            | FsCommand::Thaw { on, .. }
            | FsCommand::Status { on } => on,
        }
    }

    fn op(&self) -> FsOp {
        match self {
            FsCommand::Freeze {
                timeout,
                mountpoints,
                ..
            } => FsOp::Freeze {
                mountpoints: mountpoints.clone(),
                timeout_s: *timeout,
            },
            FsCommand::Thaw { mountpoints, .. } => FsOp::Thaw {
                mountpoints: mountpoints.clone(),
            },
            FsCommand::Status { .. } => FsOp::Status,
        }
    }
}

/// Runs `guestcomm fs`.
pub(crate) async fn run(args: FsArgs, ctx: &Context) -> Result<ExitCode, Failure> {
    let cmd = &args.command;
    let status = async { guest::connect(&cmd.on().to.target, ctx)?.fs(cmd.op()).await }
        .await
        .map_err(|e| Failure::failed(&e))?;
    if ctx.json() {
        return output::print_json(&status);
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
    Ok(ExitCode::SUCCESS)
}
