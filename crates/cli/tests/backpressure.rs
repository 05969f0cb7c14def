//! Back-pressure, end to end: a fast producer on one side and a consumer
//! that does not read on the other must not grow the agent's memory.

// Helpers here are test code too: a panic is a failed test.
#![allow(clippy::unwrap_used)]

mod util;

use std::process::Stdio;
use std::time::{Duration, Instant};

use util::Agent;

/// Resident memory of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// The highest RSS of `pid` seen while polling for `period`.
fn peak_rss_kib(pid: u32, period: Duration) -> u64 {
    let end = Instant::now() + period;
    let mut peak = 0;
    while Instant::now() < end {
        peak = peak.max(rss_kib(pid));
        std::thread::sleep(Duration::from_millis(50));
    }
    peak
}

/// Well above the agent's working set (a few MiB), far below what either
/// producer would have pushed in the polling period without back-pressure.
const BOUND_KIB: u64 = 64 * 1024;

#[test]
fn unread_output_blocks_the_guest_process_instead_of_filling_memory() {
    let agent = Agent::start();
    let baseline = rss_kib(agent.child.id());
    // stdout is piped but never read: the CLI blocks, then the agent, then `head`.
    let mut cli = agent
        .exec_cmd(&[], &["head", "-c", "20G", "/dev/zero"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let peak = peak_rss_kib(agent.child.id(), Duration::from_secs(3));
    let cli_peak = rss_kib(cli.id());
    cli.kill().unwrap();
    cli.wait().unwrap();
    assert!(
        peak < baseline + BOUND_KIB,
        "agent RSS grew from {baseline} to {peak} KiB"
    );
    assert!(cli_peak < BOUND_KIB, "CLI RSS grew to {cli_peak} KiB");
}

#[test]
fn unread_stdin_stops_the_sender_instead_of_filling_memory() {
    let agent = Agent::start();
    let baseline = rss_kib(agent.child.id());
    let zero = std::fs::File::open("/dev/zero").unwrap();
    // `sleep` never reads its stdin, and the CLI has endless input.
    let mut cli = agent
        .exec_cmd(&[], &["sleep", "600"])
        .stdin(zero)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let peak = peak_rss_kib(agent.child.id(), Duration::from_secs(3));
    let cli_peak = rss_kib(cli.id());
    cli.kill().unwrap();
    cli.wait().unwrap();
    assert!(
        peak < baseline + BOUND_KIB,
        "agent RSS grew from {baseline} to {peak} KiB"
    );
    assert!(cli_peak < BOUND_KIB, "CLI RSS grew to {cli_peak} KiB");
}
