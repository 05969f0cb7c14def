//! `guestcomm info TARGET [--json]`: everything the guest says about itself.

use std::process::ExitCode;

use clap::Args;
use guestcomm_api::GuestInfo;
use guestcomm_protocol::text::Escaped;

use super::GuestTarget;
use crate::context::Context;
use crate::exit::Failure;
use crate::guest;
use crate::output::{self, human_bytes, render_table};

/// Show the guest's OS, kernel, host name, uptime, CPUs, memory,
/// filesystems with usage, network interfaces, logged-in users, and the
/// agent's version and services.
#[derive(Debug, Args)]
#[command(after_help = "Exit status: 0 on success, 1 on error.")]
pub(crate) struct InfoArgs {
    /// Target and key.
    #[command(flatten)]
    pub(crate) to: GuestTarget,
    /// Print JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

/// Runs `guestcomm info`.
pub(crate) async fn run(args: InfoArgs, ctx: &Context) -> Result<ExitCode, Failure> {
    let info = async { guest::connect(&args.to.target, ctx)?.info().await }
        .await
        .map_err(|e| Failure::failed(&e))?;
    if ctx.json() {
        return output::print_json(&info);
    }
    output::write_out(&render(&info))
}

/// The human-readable report; every text the guest chose is escaped
/// (here and in [`render_table`]).
fn render(i: &GuestInfo) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let os = if i.os.pretty_name.is_empty() {
        &i.os.name
    } else {
        &i.os.pretty_name
    };
    let _ = writeln!(
        out,
        "Hostname:  {} ({})",
        Escaped(&i.hostname),
        Escaped(&i.fqdn)
    );
    let _ = writeln!(out, "OS:        {}", Escaped(os));
    let _ = writeln!(
        out,
        "Kernel:    {} {} {}",
        Escaped(&i.kernel.sysname),
        Escaped(&i.kernel.release),
        Escaped(&i.kernel.machine)
    );
    let (d, h, m) = (
        i.uptime_s / 86_400,
        i.uptime_s % 86_400 / 3600,
        i.uptime_s % 3600 / 60,
    );
    let _ = writeln!(out, "Uptime:    {d}d {h}h {m}m");
    let _ = writeln!(out, "CPUs:      {}", i.cpus);
    let _ = writeln!(
        out,
        "Memory:    {} total, {} available",
        human_bytes(i.memory.total_bytes),
        human_bytes(i.memory.available_bytes)
    );
    let _ = writeln!(
        out,
        "Agent:     {} ({})",
        Escaped(&i.agent),
        Escaped(&i.services.join(", "))
    );
    let _ = writeln!(out);
    let rows: Vec<Vec<String>> = i
        .filesystems
        .iter()
        .map(|f| {
            vec![
                f.mountpoint.clone(),
                f.fstype.clone(),
                human_bytes(f.total_bytes),
                human_bytes(f.used_bytes),
                human_bytes(f.available_bytes),
                f.device.clone(),
            ]
        })
        .collect();
    out += &render_table(
        &["MOUNTPOINT", "TYPE", "SIZE", "USED", "AVAIL", "DEVICE"],
        &rows,
    );
    let _ = writeln!(out);
    let rows: Vec<Vec<String>> = i
        .interfaces
        .iter()
        .map(|n| {
            vec![
                n.name.clone(),
                if n.up { "up" } else { "down" }.into(),
                n.mac.clone().unwrap_or_default(),
                n.addresses.join(" "),
            ]
        })
        .collect();
    out += &render_table(&["INTERFACE", "STATE", "MAC", "ADDRESSES"], &rows);
    let _ = writeln!(out);
    match &i.users {
        Some(users) => {
            let rows: Vec<Vec<String>> = users
                .iter()
                .map(|u| vec![u.user.clone(), u.terminal.clone(), u.host.clone()])
                .collect();
            out += &render_table(&["USER", "TERMINAL", "FROM"], &rows);
        }
        None => out += "Users:     unknown (no utmp in the guest)\n",
    }
    out
}
