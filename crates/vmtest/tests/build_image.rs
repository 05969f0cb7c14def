//! `scripts/vm/build-image`'s options, checked where they fail before any
//! download or build: an unknown option, `--with-qemu-ga` without
//! qemu-ga, and `--with-sshd` without the agent as it ships. (The image it builds is exercised by the VM tests and the bench.)

use std::path::PathBuf;
use std::process::{Command, Output};

fn build_image(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/vm/build-image");
    Command::new("bash")
        .arg(script)
        .args(args)
        .envs(envs.iter().copied())
        .output()
        .expect("bash runs")
}

#[test]
fn an_unknown_option_is_refused_with_the_usage() {
    let out = build_image(&["--with-qemu-gaa"], &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown option --with-qemu-gaa"), "{err}");
    assert!(
        err.contains("[--with-qemu-ga] [--with-python] [--with-sshd] [OUT]"),
        "{err}"
    );
}

#[test]
fn with_qemu_ga_fails_clearly_when_qemu_ga_is_not_installed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out_dir = dir.path().join("out");
    let out = build_image(
        &["--with-qemu-ga", out_dir.to_str().expect("utf-8 path")],
        &[("QEMU_GA", "/nonexistent/qemu-ga")],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("/nonexistent/qemu-ga not found; install it (apt install qemu-guest-agent)"),
        "{err}"
    );
    assert!(!out_dir.exists(), "nothing is built");
}

#[test]
fn with_sshd_wants_the_agent_as_it_ships() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out_dir = dir.path().join("out");
    let out = build_image(
        &["--with-sshd", out_dir.to_str().expect("utf-8 path")],
        &[("AGENT", "/nonexistent/guestcomm-agent")],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "cargo build --profile agent --target x86_64-unknown-linux-gnu -p guestcomm-agent"
        ),
        "{err}"
    );
    assert!(!out_dir.exists(), "nothing is built");
}
