//! The `guestcommd` binary's command line. Having an integration test here
//! also makes `cargo test --workspace` rebuild the binary, which the CLI's
//! integration tests start (cargo builds a package's binaries for tests only
//! when that package has integration tests).

use std::process::Command;

#[test]
fn help_documents_the_interface_contract_flags() {
    let out = Command::new(env!("CARGO_BIN_EXE_guestcommd"))
        .arg("--help")
        .output()
        .expect("run guestcommd --help");
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--state",
        "--api",
        "--heartbeat-interval",
        "--max-concurrent-probes",
        "--time-sync-interval",
    ] {
        assert!(help.contains(flag), "{flag} missing from --help");
    }
}

#[test]
fn a_bad_heartbeat_interval_is_refused_before_starting() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(env!("CARGO_BIN_EXE_guestcommd"))
        .args([
            "--state",
            &dir.path().display().to_string(),
            "--heartbeat-interval",
            "5",
        ])
        .output()
        .expect("run guestcommd");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("5s, 200ms or off"));
}
