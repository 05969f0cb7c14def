//! Ansible in a real virtual machine: the collection's connection plugin
//! runs a playbook (`tests/ansible/vm.yml`: facts, file, copy, stat,
//! command with a handled and an ignored failure, standard input,
//! template, fetch, become) in the test VM through guestcommd. The VM is
//! `scripts/vm/build-image --with-python` (target/vm-python, or
//! GUESTCOMM_VM_PYTHON_DIR): the VM tests' busybox guest with Debian's
//! python3 and an unprivileged user `guest`, booted as crates/cli/tests/vm.rs
//! boots its VM (crates/vmtest).
//!
//! Without ansible-core, the image, QEMU or vhost-device-vsock the test says
//! SKIPPED loudly; it fails instead when GUESTCOMM_ANSIBLE_REQUIRED or
//! GUESTCOMM_VM_REQUIRED (CI) is set. Each playbook has a deadline, and the
//! VM one for the whole test.

mod util;

use std::path::PathBuf;
use std::time::Duration;

use guestcomm_vmtest::{GuestEntropy, Vm, VmSpec};
use serde_json::Value;
use util::ansible::{fixtures, Ansible};
use util::daemon::Daemon;

/// The whole test, boot included: two plays of Python modules under TCG
/// (about three minutes on two busy cores), so only a stall reaches it.
const VM_TEST_DEADLINE: Duration = Duration::from_secs(1500);

/// Where the guest finds Python (build-image --with-python).
const GUEST_PYTHON: &str = "/usr/bin/python3";

/// The payload the play copies in: bigger than one chunk of `guestcomm cp`.
const PAYLOAD_BYTES: usize = 3_000_000;

/// Boots the Python image; without it (or QEMU, or the vsock backend) says
/// SKIPPED loudly, or fails when GUESTCOMM_VM_REQUIRED is set.
fn boot_or_skip(name: &str) -> Option<Vm> {
    let images = std::env::var_os("GUESTCOMM_VM_PYTHON_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| util::bin_dir().join("../vm-python"));
    let required = std::env::var_os("GUESTCOMM_VM_REQUIRED").is_some();
    let manifest = std::fs::read_to_string(images.join("image.txt")).unwrap_or_default();
    if !manifest
        .lines()
        .any(|l| l == format!("python-path={GUEST_PYTHON}"))
    {
        let why = format!(
            "no VM image with Python in {} (run scripts/vm/build-image --with-python)",
            images.display()
        );
        assert!(!required, "VM tests required but cannot run: {why}");
        eprintln!("\n*** SKIPPED {name}: {why} ***\n");
        return None;
    }
    let mut spec = VmSpec::new(images);
    spec.tool_dirs = vec![util::bin_dir().join("../tools/bin")];
    spec.deadline = Some(VM_TEST_DEADLINE);
    // Python's os.urandom() waits for the kernel's random pool: RDRAND
    // fills it during boot (the VM tests check the agent needs none).
    spec.entropy = GuestEntropy::Rdrand;
    match Vm::boot(&spec) {
        Ok(vm) => Some(vm),
        Err(why) if why.is_unavailable() => {
            assert!(!required, "VM tests required but cannot run: {why}");
            eprintln!("\n*** SKIPPED {name}: {why} ***\n");
            None
        }
        Err(why) => panic!("the VM did not boot: {why}"),
    }
}

#[test]
fn a_playbook_runs_in_a_real_vm_through_the_daemon() {
    let Some(ansible) = Ansible::install() else {
        return;
    };
    let Some(vm) = boot_or_skip("a_playbook_runs_in_a_real_vm_through_the_daemon") else {
        return;
    };
    eprintln!("VM up; logs in {}", vm.log_dir().display());
    let daemon = Daemon::start("1s");
    daemon.ok(&[
        "vm",
        "add",
        "ansvm",
        "--endpoint",
        &vm.addr().to_string(),
        "--credentials",
        vm.identity().to_str().expect("utf-8 path"),
    ]);
    // What the guest itself says, for the play to compare its facts with.
    let uname = daemon.ok(&["exec", "ansvm", "--", "uname", "-rn"]);
    let (guest_hostname, guest_kernel) = uname
        .trim()
        .split_once(' ')
        .unwrap_or_else(|| panic!("uname -rn in the guest: {uname:?}"));
    assert_eq!(guest_hostname, "guestcomm-test-vm");

    let payload = ansible.path("payload.bin");
    std::fs::write(&payload, util::pseudo_random(PAYLOAD_BYTES, 7)).expect("write the payload");
    let fetched = ansible.path("fetched");
    let inventory = ansible.path("hosts.ini");
    std::fs::write(
        &inventory,
        format!(
            "ansvm ansible_connection=guestcomm.guestcomm.guestcomm ansible_guestcomm_api={} \
             ansible_python_interpreter={GUEST_PYTHON}\n",
            daemon.api()
        ),
    )
    .expect("write the inventory");
    let extra = serde_json::json!({
        "guest_kernel": guest_kernel,
        "guest_hostname": guest_hostname,
        "fetched": fetched,
        "payload": payload,
    })
    .to_string();
    let playbook = fixtures().join("vm.yml");
    for pipelining in [false, true] {
        let out = ansible.run(
            "ansible-playbook",
            &[
                "-v".as_ref(),
                "-i".as_ref(),
                inventory.as_os_str(),
                "-e".as_ref(),
                extra.as_ref(),
                playbook.as_os_str(),
            ],
            &[
                ("ANSIBLE_PYTHON_INTERPRETER", GUEST_PYTHON),
                (
                    "ANSIBLE_PIPELINING",
                    if pipelining { "True" } else { "False" },
                ),
            ],
        );
        assert!(
            out.status.success(),
            "the playbook failed in the VM (pipelining {pipelining}):\n{}\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            vm.report()
        );
        assert_eq!(
            std::fs::read_to_string(fetched.join("ansvm.txt")).expect("the fetched file"),
            "rendered for ansvm on Linux\n"
        );
        std::fs::remove_file(fetched.join("ansvm.txt")).expect("remove the fetched file");
    }

    // Every module ran in the guest through guestcommd: in its audit log.
    let audited: Vec<Value> = daemon
        .audit_settled(&["--vm", "ansvm"])
        .into_iter()
        .filter(|r| r["operation"] == "exec")
        .collect();
    assert!(
        audited.iter().any(|r| r["arguments"]
            .as_str()
            .is_some_and(|a| a.contains(GUEST_PYTHON))),
        "no Python run in the audit log: {audited:#?}"
    );
}
