//! The `guestcomm-agent` binary's command line. Having an integration test
//! here also makes `cargo test --workspace` rebuild the binary, which the
//! CLI's integration tests start (cargo builds a package's binaries for tests
//! only when that package has integration tests).

#[test]
fn help_names_the_listen_flag() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_guestcomm-agent"))
        .arg("--help")
        .output()
        .expect("run guestcomm-agent --help");
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("--listen"));
}
