//! `guestcomm time TARGET [--sync]`: the guest clock against the host's.

use std::process::ExitCode;

use clap::Args;

use super::GuestTarget;
use crate::context::Context;
use crate::exit::Failure;
use crate::{guest, output};

/// Show how far the guest clock is from this host's (NTP-style: each
/// sample is corrected by half its round trip, the shortest round trip
/// wins); with --sync, step the guest clock to the host's (the agent needs
/// CAP_SYS_TIME).
#[derive(Debug, Args)]
#[command(after_help = "Exit status: 0 on success, 1 on error.")]
pub(crate) struct TimeArgs {
    /// Target and key.
    #[command(flatten)]
    pub(crate) to: GuestTarget,
    /// Step the guest clock to the host's, then measure again.
    #[arg(long)]
    pub(crate) sync: bool,
    /// Samples to take (1 to 32).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=32))]
    pub(crate) samples: u32,
    /// Print JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

/// Runs `guestcomm time`.
pub(crate) async fn run(args: TimeArgs, ctx: &Context) -> Result<ExitCode, Failure> {
    let report = async {
        guest::connect(&args.to.target, ctx)?
            .time(args.sync, args.samples)
            .await
    }
    .await
    .map_err(|e| Failure::failed(&e))?;
    if ctx.json() {
        return output::print_json(&report);
    }
    if report.synced {
        println!("Guest clock stepped to the host's.");
    }
    println!(
        "Offset:      {:+.6} s (guest minus host)",
        report.offset_ns as f64 / 1e9
    );
    println!(
        "Uncertainty: ±{:.6} s (half the round trip of the best of {} samples)",
        report.rtt_ns as f64 / 2e9,
        report.samples
    );
    Ok(ExitCode::SUCCESS)
}
