//! Has the linker place the agent's start-up, idle and exec code side by
//! side (`hot-code.ld`, written by scripts/agent-hot-code, which says why):
//! the kernel maps code 64 KiB around each page a program touches, so
//! scattered, that code kept nearly all of the agent's resident.

use std::path::Path;

fn main() {
    println!("cargo:rerun-if-changed=hot-code.ld");
    // GNU ld and LLD read the script's INSERT as an addition to their own
    // layout; other platforms link as they always did.
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() != Ok("linux") {
        return;
    }
    let Ok(dir) = std::env::var("CARGO_MANIFEST_DIR") else {
        return;
    };
    let script = Path::new(&dir).join("hot-code.ld");
    println!(
        "cargo:rustc-link-arg-bin=guestcomm-agent=-Wl,-T,{}",
        script.display()
    );
}
