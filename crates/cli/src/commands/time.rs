//! `guestcomm time TARGET [--sync]`: the guest clock against the host's.

use std::process::ExitCode;

use clap::Args;
use guestcomm_protocol::limits::{DEFAULT_TIME_SAMPLES, MAX_TIME_SAMPLES};

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
    #[arg(long, default_value_t = DEFAULT_TIME_SAMPLES,
          value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_TIME_SAMPLES)))]
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

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::*;

    /// `time`'s arguments alone, as `guestcomm time` parses them.
    #[derive(Debug, Parser)]
    #[command(name = "time")]
    struct Time {
        #[command(flatten)]
        args: TimeArgs,
    }

    #[test]
    fn samples_default_and_bound_are_the_protocols() {
        let samples = |extra: &[&str]| {
            let argv = ["time", "web1"].iter().chain(extra).copied();
            Time::try_parse_from(argv).map(|t| t.args.samples)
        };
        assert_eq!(samples(&[]).unwrap(), DEFAULT_TIME_SAMPLES);
        let most = MAX_TIME_SAMPLES.to_string();
        assert_eq!(samples(&["--samples", &most]).unwrap(), MAX_TIME_SAMPLES);
        let past = (MAX_TIME_SAMPLES + 1).to_string();
        assert!(samples(&["--samples", &past]).is_err());
        assert!(samples(&["--samples", "0"]).is_err());
        // The help text names the bound literally; it must stay the same.
        let help = Time::command().render_help().to_string();
        assert!(
            help.contains(&format!("(1 to {MAX_TIME_SAMPLES})")),
            "{help}"
        );
    }
}
