//! `guestcomm shutdown TARGET [--reboot] [--force] [--reason TEXT]`.

use std::process::ExitCode;

use clap::Args;
use guestcomm_api::ShutdownRequest;
use guestcomm_protocol::text::Escaped;

use super::GuestTarget;
use crate::context::Context;
use crate::exit::Failure;
use crate::guest;

/// Power off (or reboot) the guest through its init system (systemctl,
/// shutdown or poweroff); --force powers off at once, without stopping
/// services. Returns when the guest acknowledged; `guestcomm status VM`
/// then shows the agent going away.
#[derive(Debug, Args)]
#[command(
    after_help = "Exit status: 0 when the guest acknowledged, 1 on error (unreachable VM, service disabled, no shutdown program in the guest)."
)]
pub(crate) struct ShutdownArgs {
    /// Target and key.
    #[command(flatten)]
    pub(crate) to: GuestTarget,
    /// Reboot instead of powering off.
    #[arg(long)]
    pub(crate) reboot: bool,
    /// Immediately, without the init system's orderly stop.
    #[arg(long)]
    pub(crate) force: bool,
    /// Why, for the guest's logs (up to 2,048 bytes).
    #[arg(long, value_name = "TEXT", default_value = "")]
    pub(crate) reason: String,
}

async fn request(args: &ShutdownArgs, ctx: &Context) -> anyhow::Result<String> {
    let req = ShutdownRequest {
        reboot: args.reboot,
        force: args.force,
        reason: args.reason.clone(),
    };
    req.check().map_err(anyhow::Error::msg)?;
    guest::connect(&args.to.target, ctx)?.shutdown(req).await
}

/// Runs `guestcomm shutdown`.
pub(crate) async fn run(args: ShutdownArgs, ctx: &Context) -> Result<ExitCode, Failure> {
    let ack = request(&args, ctx).await.map_err(|e| Failure::failed(&e))?;
    println!("The guest acknowledged: {}.", Escaped(&ack));
    Ok(ExitCode::SUCCESS)
}
