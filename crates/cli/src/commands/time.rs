//! `guestcomm time TARGET [--sync]`: the guest clock against the host's.

use std::process::ExitCode;

use clap::Args;
use guestcomm_api::{Method, TimeReport};
use guestcomm_client::integration::{measure_time, sync_time};

use super::guest::{self, GuestTarget, Via};

/// Show how far the guest clock is from this host's (NTP-style: each
/// sample is corrected by half its round trip, the shortest round trip
/// wins); with --sync, step the guest clock to the host's (the agent needs
/// CAP_SYS_TIME).
#[derive(Debug, Args)]
#[command(after_help = "Exit status: 0 on success, 1 on error.")]
pub struct TimeArgs {
    /// Target and key.
    #[command(flatten)]
    pub to: GuestTarget,
    /// Step the guest clock to the host's, then measure again.
    #[arg(long)]
    pub sync: bool,
    /// Samples to take (1 to 32).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=32))]
    pub samples: u32,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

async fn fetch(args: &TimeArgs, api: Option<&str>) -> anyhow::Result<TimeReport> {
    match guest::via(&args.to.target, api, args.to.identity.as_deref())? {
        Via::Direct(addr) => {
            let identity = args.to.identity.as_deref();
            let open = || guest::direct(addr, identity);
            if args.sync {
                sync_time(open, args.samples).await
            } else {
                measure_time(open, args.samples).await
            }
        }
        Via::Daemon { client, vm_path } => {
            let query = format!("?samples={}", args.samples);
            let answer = if args.sync {
                client
                    .send(Method::POST, &format!("{vm_path}/time/sync{query}"), &())
                    .await
            } else {
                client.get(&format!("{vm_path}/time{query}")).await
            };
            answer.map_err(guest::api_error)
        }
    }
}

/// Runs `guestcomm time`.
pub async fn run(args: TimeArgs, api: Option<&str>) -> ExitCode {
    let report = match fetch(&args, api).await {
        Ok(r) => r,
        Err(e) => return guest::fail(&e),
    };
    if args.json {
        return super::api::print_json(&report);
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
    ExitCode::SUCCESS
}
