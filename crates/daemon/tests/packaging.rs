//! What the Debian package ships for guestcommd: the default configuration
//! file parses with the daemon's own loader and gives no role to anyone, and
//! the hidden `--generate man` writes guestcommd.8.

use std::path::Path;
use std::process::Command;

use guestcommd::config::{FileConfig, Principal};

#[test]
fn the_shipped_default_configuration_loads_and_names_no_role() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../contrib/guestcommd.toml");
    let config = FileConfig::load(&path, true).expect("contrib/guestcommd.toml loads");
    assert_eq!(
        config.api.socket_group,
        Some(Principal::Name("guestcomm".into()))
    );
    assert!(config.api.tls.is_none());
    let roles = &config.roles;
    for members in [&roles.admin, &roles.operator, &roles.viewer] {
        assert!(members.users.is_empty() && members.groups.is_empty());
        assert!(members.certificates.is_empty());
    }
    assert!(roles.vms.is_empty());
}

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
