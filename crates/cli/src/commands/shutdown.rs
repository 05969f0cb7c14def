//! `guestcomm shutdown TARGET [--reboot] [--force] [--reason TEXT]`.

use std::process::ExitCode;

use clap::Args;
use guestcomm_api::{Method, ShutdownAnswer, ShutdownRequest};
use guestcomm_protocol::text::Escaped;

use super::guest::{self, GuestTarget, Via};

/// Power off (or reboot) the guest through its init system (systemctl,
/// shutdown or poweroff); --force powers off at once, without stopping
/// services. Returns when the guest acknowledged; `guestcomm status VM`
/// then shows the agent going away.
#[derive(Debug, Args)]
#[command(
    after_help = "Exit status: 0 when the guest acknowledged, 1 on error (unreachable VM, service disabled, no shutdown program in the guest)."
)]
pub struct ShutdownArgs {
    /// Target and key.
    #[command(flatten)]
    pub to: GuestTarget,
    /// Reboot instead of powering off.
    #[arg(long)]
    pub reboot: bool,
    /// Immediately, without the init system's orderly stop.
    #[arg(long)]
    pub force: bool,
    /// Why, for the guest's logs (up to 2,048 bytes).
    #[arg(long, value_name = "TEXT", default_value = "")]
    pub reason: String,
}

async fn request(args: &ShutdownArgs, api: Option<&str>) -> anyhow::Result<String> {
    let req = ShutdownRequest {
        reboot: args.reboot,
        force: args.force,
        reason: args.reason.clone(),
    };
    req.check().map_err(anyhow::Error::msg)?;
    match guest::via(&args.to.target, api, args.to.identity.as_deref())? {
        Via::Direct(addr) => {
            let session = guest::direct(addr, args.to.identity.as_deref()).await?;
            Ok(guestcomm_client::integration::shutdown(session, req).await?)
        }
        Via::Daemon { client, vm_path } => client
            .send::<_, ShutdownAnswer>(Method::POST, &format!("{vm_path}/shutdown"), &req)
            .await
            .map(|a| a.acknowledged)
            .map_err(guest::api_error),
    }
}

/// Runs `guestcomm shutdown`.
pub async fn run(args: ShutdownArgs, api: Option<&str>) -> ExitCode {
    match request(&args, api).await {
        Ok(ack) => {
            println!("The guest acknowledged: {}.", Escaped(&ack));
            ExitCode::SUCCESS
        }
        Err(e) => guest::fail(&e),
    }
}
