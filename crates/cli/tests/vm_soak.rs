//! A soak of the stream that stalled vhost-device-vsock 0.3.0 for good: a
//! 20 MB echo through `cat` in a real VM (stdin and stdout busy at once),
//! repeated with a CPU hog beside it, each round with a deadline. It counts
//! the rounds that completed, stalled (killed at the deadline) or came back
//! different, and fails on any stall or difference. With the backend of
//! `scripts/vm/build-backend` (patched) none of 300 rounds stalled; with a
//! plain `cargo install vhost-device-vsock` 11 of 90 did.
//!
//! Ignored by default (CI keeps one such echo in `vm.rs`). Run it with
//! `GUESTCOMM_SOAK_ROUNDS=100 cargo test -p guestcomm-cli --test vm_soak --
//! --ignored --nocapture`; `GUESTCOMM_VM_TOOLS=DIR` puts DIR first when
//! looking for vhost-device-vsock (e.g. an unpatched build, to see the
//! stall), `GUESTCOMM_VM_DIR` picks the image as for `vm.rs`.

// Helpers here are test code too: a panic is a failed test.
#![allow(clippy::unwrap_used)]

mod util;

use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use guestcomm_vmtest::{run_with_deadline, ChildGuard, Vm, VmSpec};

/// Rounds when GUESTCOMM_SOAK_ROUNDS does not say.
const DEFAULT_ROUNDS: u32 = 20;
/// Bytes echoed per round: what `vm.rs` echoes, and what stalled.
const ECHO_BYTES: usize = 20_000_000;
/// One round; a healthy one takes seconds, a stalled one never ends.
const ROUND_DEADLINE: Duration = Duration::from_secs(90);

/// How one round ended.
#[derive(Debug, Default)]
struct Tally {
    completed: u32,
    stalled: u32,
    different: u32,
}

#[test]
#[ignore = "a soak of minutes: run it by hand (see the module doc)"]
fn two_way_bulk_echo_never_stalls_beside_a_cpu_hog() {
    let rounds: u32 = std::env::var("GUESTCOMM_SOAK_ROUNDS")
        .map(|n| n.parse().expect("GUESTCOMM_SOAK_ROUNDS is a number"))
        .unwrap_or(DEFAULT_ROUNDS);
    let images = std::env::var_os("GUESTCOMM_VM_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| util::bin_dir().join("../vm"));
    let mut spec = VmSpec::new(images);
    spec.tool_dirs = std::env::var_os("GUESTCOMM_VM_TOOLS")
        .map(PathBuf::from)
        .into_iter()
        .chain([util::bin_dir().join("../tools/bin")])
        .collect();
    spec.deadline = Some(spec.boot_deadline + ROUND_DEADLINE * (rounds + 1));
    let vm = Vm::boot(&spec).unwrap_or_else(|why| panic!("the VM did not boot: {why}"));

    // Lowest priority, on whichever core: the host side of the stream lags.
    let _hog = ChildGuard::new(
        Command::new("nice")
            .args(["-n", "19", "sh", "-c", "while :; do :; done"])
            .spawn()
            .unwrap(),
    );
    let input = util::pseudo_random(ECHO_BYTES, 5);
    let mut tally = Tally::default();
    for round in 1..=rounds {
        let mut cmd = Command::new(util::bin("guestcomm"));
        cmd.arg("exec")
            .arg("--identity")
            .arg(vm.identity())
            .arg(vm.addr().to_string())
            .args(["--", "cat"]);
        let start = Instant::now();
        let out = run_with_deadline(cmd, Some(input.clone()), ROUND_DEADLINE).unwrap();
        let outcome = if out.status.signal() == Some(libc::SIGKILL) {
            tally.stalled += 1;
            format!("STALLED ({} of {ECHO_BYTES} bytes back)", out.stdout.len())
        } else if out.status.success() && out.stdout == input {
            tally.completed += 1;
            "ok".to_string()
        } else {
            tally.different += 1;
            format!(
                "DIFFERENT ({}, {} bytes back): {}",
                out.status,
                out.stdout.len(),
                String::from_utf8_lossy(&out.stderr).trim()
            )
        };
        eprintln!(
            "round {round}/{rounds}: {outcome} in {:.1?}",
            start.elapsed()
        );
    }
    eprintln!("two-way soak, {rounds} rounds of {ECHO_BYTES} bytes: {tally:?}");
    assert!(
        tally.stalled == 0 && tally.different == 0,
        "{tally:?}\n{}",
        vm.report()
    );
}
