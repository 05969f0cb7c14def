//! What the Debian package ships for guestcommd: the hidden `--generate man`
//! writes guestcommd.8 (the default configuration file is checked beside the
//! loader, in config.rs).

use std::process::Command;

#[test]
fn generate_man_writes_the_section_8_page() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(env!("CARGO_BIN_EXE_guestcommd"))
        .args(["--generate", "man"])
        .arg(dir.path())
        .output()
        .expect("run guestcommd --generate man");
    assert!(out.status.success(), "{out:?}");
    let page_path = dir.path().join("guestcommd.8");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        page_path.display().to_string()
    );
    let page = std::fs::read_to_string(&page_path).expect("guestcommd.8");
    assert!(page.contains(".TH guestcommd 8"), "{page}");
    assert!(page.contains("state"), "{page}");
}
