//! `guestcomm status VM`: the health of a VM's agent, from guestcommd's monitor.

use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use clap::Args;
use guestcomm_api::Vm;
use guestcomm_protocol::text::Escaped;

use crate::api;
use crate::context::Context;
use crate::exit::Failure;
use crate::output;

/// Show the health of a VM's agent: status, what failed when it does not
/// answer (transport unreachable, agent not listening, not answering,
/// refusing), last contact, round-trip time and agent version.
#[derive(Debug, Args)]
pub(crate) struct StatusArgs {
    /// The VM.
    pub(crate) vm: String,
    /// Print JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

/// Runs `guestcomm status`.
pub(crate) async fn run(args: StatusArgs, ctx: &Context) -> Result<ExitCode, Failure> {
    let vm: Vm = ctx.api()?.get(&api::vm_path(&args.vm)?).await?;
    if ctx.json() {
        return output::print_json(&vm.health);
    }
    let h = &vm.health;
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    println!("VM:            {} ({})", Escaped(&vm.name), vm.id);
    println!("Status:        {}", Escaped(h.status.as_str()));
    if let Some(detail) = h.detail {
        println!("Detail:        {}", detail.describe());
    }
    match h.last_contact_ms {
        Some(t) => println!(
            "Last contact:  {:.1} s ago",
            now_ms.saturating_sub(t) as f64 / 1000.0
        ),
        None => println!("Last contact:  never"),
    }
    if let Some(rtt) = h.rtt_us {
        println!("Round trip:    {:.3} ms", rtt as f64 / 1000.0);
    }
    if let Some(agent) = &h.agent_version {
        println!("Agent:         {}", Escaped(agent));
    }
    if let Some(error) = &h.last_error {
        println!("Last error:    {}", Escaped(error));
    }
    Ok(ExitCode::SUCCESS)
}
