//! End to end in a real virtual machine: QEMU (TCG) with a virtio-vsock
//! device served by vhost-device-vsock, the guest running the real
//! `guestcomm-agent` on AF_VSOCK inside it, reached from the host through
//! hybrid vsock (`hvsock-uds://`). The machine's own vsock is never used.
//! The boot and the clean-up by PID are `guestcomm-vmtest`'s (shared with
//! the in-VM bench); this file holds what the tests check.
//!
//! Needs `scripts/vm/build-image` (target/vm), `qemu-system-x86_64`,
//! `vhost-device-vsock` (PATH or target/tools/bin) and `mkfs.ext4` (the
//! guest's disk, for a real filesystem freeze). Without them the test says
//! SKIPPED loudly; with GUESTCOMM_VM_REQUIRED=1 (set by CI) it fails.
//!
//! Nothing here can hang CI: every command in the guest has a deadline, and
//! each test's VM has one for the whole test ([`VM_TEST_DEADLINE`]); past
//! either, the test fails with the VM's state (backend, the guest's entropy,
//! console and logs).

// Helpers here are test code too: a panic is a failed test.
#![allow(clippy::unwrap_used)]

mod util;

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use guestcomm_vmtest::{GuestEntropy, KeyDelivery, Vm, VmSpec};

/// TCG boots in seconds, but a loaded CI machine can be much slower.
const BOOT_DEADLINE: Duration = guestcomm_vmtest::DEFAULT_BOOT_DEADLINE;
/// Any single command in the guest; generous for TCG under load.
const COMMAND_DEADLINE: Duration = Duration::from_secs(180);
/// A whole test, boot included: about 4 times the longest measured on two
/// busy cores, so only a stall reaches it.
const VM_TEST_DEADLINE: Duration = Duration::from_secs(900);
/// The guest's ext4 disk (/dev/vda), for a real filesystem freeze.
const DISK_MIB: u32 = 16;

/// The test's view of the VM: the CLI run against it, with a deadline.
trait CliVm {
    /// `hvsock-uds://…` for the CLI.
    fn addr_text(&self) -> String;
    /// `guestcomm exec --identity KEY [opts] ADDR -- cmd…`, not yet run.
    fn exec_cmd(&self, opts: &[&str], cmd: &[&str]) -> Command;
    /// Runs `cmd` with a deadline; past it the test fails with the VM's
    /// state (an unpatched vhost-device-vsock stalls two-way bulk streams
    /// under load: scripts/vm/build-backend).
    fn run_with(&self, cmd: Command, stdin: Option<Vec<u8>>) -> Output;
    /// `guestcomm exec` of `cmd` with stdin closed.
    fn run(&self, opts: &[&str], cmd: &[&str]) -> Output;
}

impl CliVm for Vm {
    fn addr_text(&self) -> String {
        self.addr().to_string()
    }

    fn exec_cmd(&self, opts: &[&str], cmd: &[&str]) -> Command {
        let mut c = Command::new(util::bin("guestcomm"));
        c.arg("exec").arg("--identity").arg(self.identity());
        c.args(opts).arg(self.addr_text()).arg("--").args(cmd);
        c
    }

    fn run_with(&self, cmd: Command, stdin: Option<Vec<u8>>) -> Output {
        let shown = format!("{cmd:?}");
        let out = guestcomm_vmtest::run_with_deadline(cmd, stdin, COMMAND_DEADLINE).unwrap();
        // SIGKILL is how the deadline ends a command (nothing else here sends it).
        if out.status.signal() == Some(libc::SIGKILL) {
            panic!(
                "{shown} ran past its deadline of {COMMAND_DEADLINE:?}; stderr: {}\n{}",
                text(&out.stderr),
                self.report()
            );
        }
        out
    }

    fn run(&self, opts: &[&str], cmd: &[&str]) -> Output {
        self.run_with(self.exec_cmd(opts, cmd), None)
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Boots a VM for test `name`, its key handed over by fw_cfg; without what
/// that needs, says SKIPPED loudly, or fails when GUESTCOMM_VM_REQUIRED is
/// set (CI).
fn boot_or_skip(name: &str) -> Option<Vm> {
    boot_with_key_or_skip(name, KeyDelivery::FwCfg)
}

/// Same, the key handed over by `key_delivery` (never on the guest's image).
fn boot_with_key_or_skip(name: &str, key_delivery: KeyDelivery) -> Option<Vm> {
    let images = std::env::var_os("GUESTCOMM_VM_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| util::bin_dir().join("../vm"));
    let mut spec = VmSpec::new(images);
    spec.tool_dirs = vec![util::bin_dir().join("../tools/bin")];
    spec.disk_mib = Some(DISK_MIB);
    spec.boot_deadline = BOOT_DEADLINE;
    spec.deadline = Some(VM_TEST_DEADLINE);
    // No virtio-rng, no RDRAND: nothing of ours may wait for the guest's
    // random pool (the first test checks it really is uninitialized).
    spec.entropy = GuestEntropy::None;
    spec.key_delivery = key_delivery;
    match Vm::boot(&spec) {
        Ok(vm) => Some(vm),
        Err(why) if why.is_unavailable() => {
            if std::env::var_os("GUESTCOMM_VM_REQUIRED").is_some() {
                panic!("VM tests required but cannot run: {why}");
            }
            eprintln!("\n*** SKIPPED {name}: {why} ***\n");
            None
        }
        Err(why) => panic!("the VM did not boot: {why}"),
    }
}

#[test]
fn a_real_vm_over_virtio_vsock_direct_and_through_the_daemon() {
    let Some(mut vm) = boot_or_skip("a_real_vm_over_virtio_vsock_direct_and_through_the_daemon")
    else {
        return;
    };
    let show = |p: &Path| p.display().to_string();
    eprintln!("VM up; logs in {}", show(vm.log_dir()));
    // The image holds no key: the agent took it from QEMU's fw_cfg entry.
    let line = key_source_line(&vm);
    assert!(line.contains("QEMU firmware configuration"), "{line}");

    // This guest has no entropy source (GuestEntropy::None). Its kernel's
    // random pool was still uninitialized when this first exec ran, so the
    // handshakes of the boot probe and of this exec did without it; the
    // agent found it so at its start and said so on the console.
    let pool = vm.run(
        &["-n"],
        &[
            "sh",
            "-c",
            "echo entropy_avail=$(cat /proc/sys/kernel/random/entropy_avail); \
             dmesg | grep -m1 'crng init done' || echo 'no crng init done yet'",
        ],
    );
    eprintln!(
        "guest random pool at the first exec: {}",
        text(&pool.stdout)
    );
    assert!(
        text(&pool.stdout).contains("no crng init done yet"),
        "the guest's random pool was initialized: {}",
        text(&pool.stdout)
    );
    assert!(
        util::wait_until(COMMAND_DEADLINE, || vm
            .console()
            .contains("random pool is not initialized yet")),
        "the agent did not report an uninitialized random pool; console:\n{}",
        vm.console()
    );

    // The agent is on vsock, so it requires the VM's key.
    let mut anonymous = Command::new(util::bin("guestcomm"));
    anonymous.args(["exec", "-n", &vm.addr_text(), "--", "true"]);
    let refused = vm.run_with(anonymous, None);
    assert_eq!(refused.status.code(), Some(125));
    assert!(
        text(&refused.stderr).contains("auth_required"),
        "{}",
        text(&refused.stderr)
    );

    // It is the guest: its own kernel and hostname.
    let uname = vm.run(&["-n"], &["uname", "-nr"]);
    assert_eq!(uname.status.code(), Some(0), "{}", text(&uname.stderr));
    assert!(
        text(&uname.stdout).starts_with("guestcomm-test-vm "),
        "{}",
        text(&uname.stdout)
    );

    // Exit codes, signals, missing commands.
    for code in [0, 1, 7] {
        let out = vm.run(&["-n"], &["sh", "-c", &format!("exit {code}")]);
        assert_eq!(out.status.code(), Some(code));
    }
    assert_eq!(
        vm.run(&["-n"], &["sh", "-c", "kill -TERM $$"])
            .status
            .code(),
        Some(143)
    );
    let missing = vm.run(&["-n"], &["no-such-command"]);
    assert_eq!(
        missing.status.code(),
        Some(127),
        "{}",
        text(&missing.stderr)
    );

    // stdout and stderr apart and byte-exact, 20 MB of stdout.
    let script = "yes guestcomm-vsock | head -c 20000000; echo on-stderr >&2";
    let out = vm.run(&["-n"], &["sh", "-c", script]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let expected: Vec<u8> = b"guestcomm-vsock\n"
        .iter()
        .copied()
        .cycle()
        .take(20_000_000)
        .collect();
    assert!(
        out.stdout == expected,
        "stdout differs ({} bytes)",
        out.stdout.len()
    );
    assert_eq!(text(&out.stderr), "on-stderr\n");

    // stdin through, end of file included: 20 MB both ways at once, the
    // stream that stalls an unpatched vhost-device-vsock 0.3.0 under load
    // (crates/cli/tests/vm_soak.rs repeats it with a CPU hog beside it).
    let input = util::pseudo_random(20_000_000, 9);
    let cat = vm.run_with(
        vm.exec_cmd(&[], &["sh", "-c", "cat; echo END"]),
        Some(input.clone()),
    );
    let mut want = input;
    want.extend_from_slice(b"END\n");
    assert!(
        cat.stdout == want,
        "cat output differs ({} bytes)",
        cat.stdout.len()
    );

    // A terminal, another user, environment and working directory.
    let tty = vm.run(&["-n", "-t"], &["tty"]);
    assert!(
        text(&tty.stdout).trim().starts_with("/dev/pts/"),
        "{}",
        text(&tty.stdout)
    );
    let nobody = vm.run(&["-n", "-u", "nobody"], &["id", "-u"]);
    assert_eq!(text(&nobody.stdout), "65534\n");
    let env = vm.run(
        &["-n", "-e", "X=from-host", "-w", "/tmp"],
        &["sh", "-c", "echo $X $(pwd)"],
    );
    assert_eq!(text(&env.stdout), "from-host /tmp\n");

    concurrency(&vm);
    through_the_daemon(&mut vm);
}

/// The agent's line at start naming where its key came from.
fn key_source_line(vm: &Vm) -> String {
    vm.console()
        .lines()
        .find(|l| l.contains("using the VM's key"))
        .unwrap_or_else(|| {
            panic!(
                "the agent never said where its key came from\n{}",
                vm.report()
            )
        })
        .to_string()
}

#[test]
fn a_guest_given_its_key_only_by_smbios_is_reached_and_another_key_is_refused() {
    let Some(vm) = boot_with_key_or_skip(
        "a_guest_given_its_key_only_by_smbios_is_reached_and_another_key_is_refused",
        KeyDelivery::Smbios,
    ) else {
        return;
    };
    // Nothing on the image holds a key: the agent found it in the SMBIOS
    // tables (the boot already proved it is the VM's, by a handshake).
    let line = key_source_line(&vm);
    assert!(line.contains("SMBIOS type 11"), "{line}");
    let d = daemon_with(&vm, "smbios");
    assert_eq!(d.ok(&["exec", "smbios", "--", "echo", "up"]), "up\n");
    // A host holding another key is refused.
    let other = d.dir.path().join("other.key");
    let made = Command::new(util::bin("guestcomm"))
        .args(["identity", "new"])
        .arg(&other)
        .output()
        .unwrap();
    assert!(made.status.success(), "{made:?}");
    let mut cmd = Command::new(util::bin("guestcomm"));
    cmd.arg("exec")
        .arg("--identity")
        .arg(&other)
        .arg(vm.addr_text())
        .args(["--", "true"]);
    let out = vm.run_with(cmd, None);
    assert_eq!(out.status.code(), Some(125), "{out:?}");
    assert!(
        text(&out.stderr).contains("authentication failed"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn a_forced_shutdown_powers_a_real_guest_off_at_once() {
    let Some(mut vm) = boot_or_skip("a_forced_shutdown_powers_a_real_guest_off_at_once") else {
        return;
    };
    // Straight to the agent (no daemon): sync and reboot(2), no init.
    let mut cmd = Command::new(util::bin("guestcomm"));
    cmd.arg("shutdown")
        .arg("--identity")
        .arg(vm.identity())
        .arg(vm.addr_text())
        .arg("--force");
    let ack = vm.run_with(cmd, None);
    assert_eq!(ack.status.code(), Some(0), "{}", text(&ack.stderr));
    assert!(
        text(&ack.stdout).contains("poweroff (force)"),
        "{}",
        text(&ack.stdout)
    );
    assert!(
        util::wait_until(BOOT_DEADLINE, || vm.qemu_exited()),
        "the guest did not power off; console:\n{}",
        vm.console()
    );
    assert!(
        !vm.console().contains("poweroff requested"),
        "a forced shutdown went through init; console:\n{}",
        vm.console()
    );
}

#[test]
fn health_turns_lost_comm_when_qemu_is_killed() {
    let Some(mut vm) = boot_or_skip("health_turns_lost_comm_when_qemu_is_killed") else {
        return;
    };
    let d = daemon_with(&vm, "killed");
    let status = || {
        d.json(&["status", "killed"])["status"]
            .as_str()
            .unwrap_or("")
            .to_string()
    };
    assert!(
        util::wait_until(BOOT_DEADLINE, || status() == "OK"),
        "never OK: {}",
        status()
    );
    // SIGKILL: no shutdown, the guest just stops existing.
    vm.kill_qemu().unwrap();
    assert!(
        util::wait_until(BOOT_DEADLINE, || status() == "Lost Comm"),
        "not Lost Comm after QEMU was killed: {}",
        status()
    );
    // Where it fails: the VM's transport, not the agent.
    let health = d.json(&["status", "killed"]);
    assert_eq!(health["detail"], "transport_unreachable", "{health}");
}

#[test]
fn a_dead_vsock_backend_fails_that_vm_promptly_and_the_daemon_serves_the_others() {
    let Some(mut vm) = boot_or_skip(
        "a_dead_vsock_backend_fails_that_vm_promptly_and_the_daemon_serves_the_others",
    ) else {
        return;
    };
    let d = daemon_with(&vm, "cut");
    let (_other, _) = d.agent_vm("other");
    assert_eq!(d.ok(&["exec", "cut", "--", "echo", "up"]), "up\n");
    let mut health = serde_json::Value::Null;
    let ok = util::wait_until(BOOT_DEADLINE, || {
        health = d.json(&["status", "cut"]);
        health["status"] == "OK"
    });
    assert!(ok, "never OK: {health}");
    // SIGKILL the vhost-user backend under the running guest.
    vm.kill_backend().unwrap();
    for args in [
        &["exec", "cut", "--", "true"][..],
        &["info", "cut"][..],
        &[
            "cp",
            "cut:/etc/hostname",
            d.dir.path().join("h").to_str().unwrap(),
        ][..],
    ] {
        let out = vm.run_with(d.cli(args), None);
        let err = text(&out.stderr);
        assert_ne!(
            out.status.code(),
            Some(0),
            "{args:?} succeeded without a backend"
        );
        assert!(err.starts_with("guestcomm: "), "{args:?}: {err}");
    }
    // The daemon goes on serving its other VMs and its API.
    assert_eq!(d.ok(&["exec", "other", "--", "echo", "still"]), "still\n");
    assert_eq!(d.json(&["vm", "list"]).as_array().unwrap().len(), 2);
    let classed = util::wait_until(BOOT_DEADLINE, || {
        health = d.json(&["status", "cut"]);
        health["status"] == "Lost Comm"
    });
    assert!(classed, "{health}");
    assert_eq!(health["detail"], "transport_unreachable", "{health}");
}

/// guestcommd (heartbeat every second) with `vm` added as `name`, its key
/// imported.
fn daemon_with(vm: &Vm, name: &str) -> util::daemon::Daemon {
    let d = util::daemon::Daemon::start("1s");
    let identity = vm.identity().to_str().unwrap();
    d.ok(&[
        "vm",
        "add",
        name,
        "--endpoint",
        &vm.addr_text(),
        "--credentials",
        identity,
    ]);
    d
}

/// The same VM managed by guestcommd: keyed relay, cp both ways, health.
fn through_the_daemon(vm: &mut Vm) {
    let d = daemon_with(vm, "testvm");
    assert_eq!(
        d.ok(&["exec", "testvm", "--", "uname", "-n"]),
        "guestcomm-test-vm\n"
    );

    // cp of 50 MB host to guest and back, checked by BLAKE3 on each side and compared here.
    let data = util::pseudo_random(50_000_000, 21);
    let src = d.dir.path().join("payload.bin");
    std::fs::write(&src, &data).unwrap();
    d.ok(&["cp", src.to_str().unwrap(), "testvm:/tmp/payload.bin"]);
    let back = d.dir.path().join("back.bin");
    d.ok(&["cp", "testvm:/tmp/payload.bin", back.to_str().unwrap()]);
    assert!(
        std::fs::read(&back).unwrap() == data,
        "the round trip through the VM changed the file"
    );

    // A directory tree with a symlink, into the guest and back.
    let tree = d.dir.path().join("tree");
    std::fs::create_dir_all(tree.join("sub/empty")).unwrap();
    std::fs::write(tree.join("sub/a.txt"), b"alpha").unwrap();
    std::os::unix::fs::symlink("sub/a.txt", tree.join("link")).unwrap();
    d.ok(&["cp", "-r", tree.to_str().unwrap(), "testvm:/tmp/tree"]);
    let listing = d.ok(&[
        "exec",
        "testvm",
        "--",
        "sh",
        "-c",
        "cat /tmp/tree/link; ls -d /tmp/tree/sub/empty",
    ]);
    assert_eq!(listing, "alpha/tmp/tree/sub/empty\n");

    // A registered guest service through the broker (`connect`): the
    // agent's own, on vsock port 0x4743. A hello without the key gets the
    // agent's refusal back, from inside the guest, byte for byte.
    let agent_service = guestcomm_protocol::BuiltinService::Agent.id().to_string();
    let hello = util::wire::encode(vec![util::wire::hello()]);
    let out = d.run_with_stdin(&["connect", "testvm", &agent_service], hello);
    assert!(
        text(&out.stdout).contains("auth_required"),
        "stdout {:?} stderr {}",
        text(&out.stdout),
        text(&out.stderr)
    );

    guest_initiated(&d, vm);
    integration_services(&d, vm);
    guest_disk_full(&d);
    paused(&d, vm);

    // Health: OK while the VM runs, Lost Comm once the guest powered off.
    let status = |d: &util::daemon::Daemon| {
        d.json(&["status", "testvm"])["status"]
            .as_str()
            .unwrap_or("")
            .to_string()
    };
    assert!(
        util::wait_until(BOOT_DEADLINE, || status(&d) == "OK"),
        "never OK: {}",
        status(&d)
    );
    // Graceful shutdown: acknowledged, then the agent runs the guest's
    // `poweroff`, which asks init (the image's init script traps it) to stop;
    // the guest powers off and QEMU exits (-no-reboot).
    let ack = d.ok(&["shutdown", "testvm", "--reason", "end of the VM test"]);
    assert!(ack.contains("poweroff"), "{ack}");
    assert!(!ack.contains("force"), "{ack}");
    assert!(
        util::wait_until(BOOT_DEADLINE, || vm.qemu_exited()),
        "the guest did not power off; console:\n{}",
        vm.console()
    );
    assert!(
        vm.console().contains("guestcomm-vm: poweroff requested"),
        "init did not see a poweroff request; console:\n{}",
        vm.console()
    );
    assert!(
        util::wait_until(BOOT_DEADLINE, || status(&d) == "Lost Comm"),
        "not Lost Comm after the guest powered off: {}",
        status(&d)
    );
}

/// A copy into the guest whose disk fills up: "No space left", exit 1, the
/// old destination intact, no temporary file left (the host side of the
/// same is in tests/faults.rs).
fn guest_disk_full(d: &util::daemon::Daemon) {
    let before = d.ok(&[
        "exec",
        "testvm",
        "--",
        "sh",
        "-c",
        "mkdir -p /mnt/data && mount -t ext4 /dev/vda /mnt/data && \
         head -c 1048576 /dev/urandom > /mnt/data/dst && \
         { cat /dev/zero > /mnt/data/filler 2>/dev/null; md5sum /mnt/data/dst; }",
    ]);
    let src = d.dir.path().join("eight-mib.bin");
    std::fs::write(&src, util::pseudo_random(8 << 20, 23)).unwrap();
    let out = d.run(&[
        "cp",
        "--force",
        src.to_str().unwrap(),
        "testvm:/mnt/data/dst",
    ]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("No space left"), "{err}");
    let after = d.ok(&["exec", "testvm", "--", "md5sum", "/mnt/data/dst"]);
    assert_eq!(after, before, "the old destination changed");
    let listing = d.ok(&["exec", "testvm", "--", "ls", "-a", "/mnt/data"]);
    assert!(
        !listing.contains(".guestcomm-"),
        "a temporary file is left: {listing}"
    );
    d.ok(&[
        "exec",
        "testvm",
        "--",
        "sh",
        "-c",
        "rm /mnt/data/filler && umount /mnt/data",
    ]);
}

/// The guest paused as an operator pauses it (QMP `stop`, `virsh
/// suspend`): health turns No Contact with the agent not answering, an exec
/// through the daemon fails at its deadline (125, one line); after `cont`
/// the agent answers again, though connections were attempted meanwhile
/// (the probes, the exec), which an unpatched vhost-device-vsock 0.3.0 does
/// not survive.
fn paused(d: &util::daemon::Daemon, vm: &Vm) {
    vm.pause().unwrap();
    assert_eq!(vm.status().unwrap()["status"], "paused");
    let mut health = serde_json::Value::Null;
    let no_contact = util::wait_until(BOOT_DEADLINE, || {
        health = d.json(&["status", "testvm"]);
        health["status"] == "No Contact"
    });
    assert!(no_contact, "not No Contact while paused: {health}");
    assert_eq!(health["detail"], "agent_not_answering", "{health}");
    let out = vm.run_with(d.cli(&["exec", "testvm", "--", "true"]), None);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    vm.resume().unwrap();
    let ok = util::wait_until(BOOT_DEADLINE, || {
        health = d.json(&["status", "testvm"]);
        health["status"] == "OK"
    });
    assert!(ok, "not OK after cont: {health}\n{}", vm.report());
    assert_eq!(
        d.ok(&["exec", "testvm", "--", "echo", "resumed"]),
        "resumed\n"
    );
}

/// Guest info, key-value pools both ways, time and freeze in the real guest
/// (its clock and filesystems, never this machine's).
fn integration_services(d: &util::daemon::Daemon, vm: &Vm) {
    let info = d.json(&["info", "testvm"]);
    assert_eq!(info["hostname"], "guestcomm-test-vm");
    let release = d.ok(&["exec", "testvm", "--", "uname", "-r"]);
    assert_eq!(info["kernel"]["release"], release.trim());

    // The host writes, a guest program reads through the agent's local socket;
    // a guest program writes, the host reads.
    d.ok(&["kvp", "set", "testvm", "color", "blue"]);
    let got = d.ok(&[
        "exec",
        "testvm",
        "--",
        "guestcomm-agent",
        "kvp",
        "get",
        "color",
    ]);
    assert_eq!(got, "blue\n");
    d.ok(&[
        "exec",
        "testvm",
        "--",
        "guestcomm-agent",
        "kvp",
        "set",
        "build",
        "42",
    ]);
    assert_eq!(
        d.ok(&["kvp", "get", "testvm", "--pool", "guest", "build"]),
        "42\n"
    );
    let auto = d.ok(&[
        "kvp",
        "get",
        "testvm",
        "--pool",
        "auto",
        "IntegrationServicesVersion",
    ]);
    assert!(auto.starts_with("guestcomm-agent "), "{auto}");

    // The agent is root in the guest: it steps the guest's clock for real.
    let synced = d.json(&["time", "testvm", "--sync"]);
    assert_eq!(synced["synced"], true, "{synced}");

    real_freeze(d, vm);

    // The real FIFREEZE: tmpfs cannot freeze (skipped with the reason);
    // a directory that is not a mount point freezes nothing.
    let fs = d.json(&["fs", "freeze", "testvm", "--timeout", "30", "/tmp"]);
    assert_eq!(
        fs["skipped"][0]["reason"], "this filesystem cannot freeze",
        "{fs}"
    );
    assert!(fs["frozen"].as_array().unwrap().is_empty(), "{fs}");
    let out = d.run(&["fs", "freeze", "testvm", "/tmp/tree"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("is not a mount point"),
        "{}",
        text(&out.stderr)
    );
}

/// FIFREEZE and FITHAW on a real ext4 filesystem in the guest: while it is
/// frozen a new file cannot be written; after the thaw the blocked write
/// completes.
fn real_freeze(d: &util::daemon::Daemon, vm: &Vm) {
    d.ok(&[
        "exec",
        "testvm",
        "--",
        "sh",
        "-c",
        "mkdir -p /mnt/data && mount -t ext4 /dev/vda /mnt/data && echo before > /mnt/data/old",
    ]);
    let frozen = d.json(&["fs", "freeze", "testvm", "--timeout", "120", "/mnt/data"]);
    assert_eq!(
        frozen["frozen"],
        serde_json::json!(["/mnt/data"]),
        "{frozen}"
    );
    let status = d.json(&["fs", "status", "testvm"]);
    assert_eq!(
        status["frozen"],
        serde_json::json!(["/mnt/data"]),
        "{status}"
    );
    // A write started now blocks in the kernel (in the background, its
    // output detached, or the exec would wait for it); reading still works. (Were
    // the guest too slow to finish an unfrozen write in 2 s, this would pass
    // without proving the freeze; the write completing after the thaw below
    // is checked either way.)
    let during = d.ok(&[
        "exec",
        "testvm",
        "--",
        "sh",
        "-c",
        "(echo after > /mnt/data/new && touch /tmp/wrote) </dev/null >/dev/null 2>&1 & \
         sleep 2; cat /mnt/data/old; [ -e /tmp/wrote ] && echo written || echo blocked",
    ]);
    assert_eq!(
        during, "before\nblocked\n",
        "the write went through a frozen filesystem"
    );
    let thawed = d.json(&["fs", "thaw", "testvm", "/mnt/data"]);
    assert_eq!(
        thawed["thawed"],
        serde_json::json!(["/mnt/data"]),
        "{thawed}; console:\n{}",
        vm.console()
    );
    assert!(
        util::wait_until(COMMAND_DEADLINE, || {
            d.run(&["exec", "testvm", "--", "cat", "/mnt/data/new"])
                .stdout
                == b"after\n"
        }),
        "the blocked write did not complete after the thaw"
    );
    d.ok(&["exec", "testvm", "--", "umount", "/mnt/data"]);
}

/// A guest program reaches a registered host service: `guestcomm-agent
/// connect-host` in the guest connects to the host's vsock port of the
/// service, vhost-device-vsock hands it to `<vm.vsock>_<port>`, where
/// guestcommd listens and relays to the service's host endpoint.
fn guest_initiated(d: &util::daemon::Daemon, vm: &Vm) {
    use std::io::{BufRead, BufReader, Write};
    let host = d.dir.path().join("host-service.sock");
    let listener = std::os::unix::net::UnixListener::bind(&host).unwrap();
    // One line in, the same in capitals out, then close.
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let mut line = String::new();
            let mut writer = stream.try_clone().unwrap();
            if BufReader::new(stream).read_line(&mut line).is_ok() {
                let _ = writer.write_all(line.to_uppercase().as_bytes());
            }
        }
    });
    let service = "00000ac9-facb-11e6-bd58-64006a7986d3";
    d.ok(&[
        "service",
        "register",
        service,
        "--name",
        "HostUpper",
        "--host-endpoint",
        &format!("unix://{}", host.display()),
    ]);
    let guest_side = PathBuf::from(format!("{}_{}", vm.uds().display(), 0xac9));
    assert!(
        util::wait_until(COMMAND_DEADLINE, || guest_side.exists()),
        "guestcommd does not listen on {}",
        guest_side.display()
    );
    let script = format!("echo from-the-guest | guestcomm-agent connect-host {service}");
    let out = d.ok(&["exec", "testvm", "--", "sh", "-c", &script]);
    assert_eq!(out, "FROM-THE-GUEST\n");
    // Disabled for the VM: the guest's connection is refused.
    d.ok(&["service", "disable", service, "--vm", "testvm"]);
    assert!(util::wait_until(COMMAND_DEADLINE, || !guest_side.exists()));
    let refused = d.run(&["exec", "testvm", "--", "sh", "-c", &script]);
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused.stderr));
    assert!(
        text(&refused.stderr).contains("cannot reach the host"),
        "{}",
        text(&refused.stderr)
    );
}

/// Ten commands at once over one vsock device.
fn concurrency(vm: &Vm) {
    let children: Vec<_> = (0..10)
        .map(|i| {
            vm.exec_cmd(&["-n"], &["sh", "-c", &format!("echo vm-job-{i}")])
                .stdout(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for (i, child) in children.into_iter().enumerate() {
        assert_eq!(
            text(&child.wait_with_output().unwrap().stdout),
            format!("vm-job-{i}\n")
        );
    }
}
