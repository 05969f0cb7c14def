//! A real guest booted by a real libvirtd, answered by guestcomm-agent on
//! both of its channels: the test VM's image (`scripts/vm/build-image`) as a
//! `type='qemu'` (TCG) domain of a private session libvirtd (module
//! `util::libvirtd`), its vsock device a vhost-user-vsock-pci served by
//! vhost-device-vsock (added with `<qemu:commandline>`: this host has no
//! /dev/vhost-vsock for libvirt's `<vsock>`), and libvirt's QEMU guest agent
//! channel (`org.qemu.guest_agent.0`), where the image's init points the
//! agent's `--qga`.
//!
//! guestcommd follows the domain (`--libvirt`, the endpoint in its
//! metadata), hands the guest its key by fw_cfg (`vm credentials
//! --libvirt-xml`) and relays exec to it, while libvirt's own agent commands
//! (`virsh guestinfo`, `domfsinfo`, `domfsfreeze`/`domfsthaw`, `domtime`,
//! `domifaddr --source agent`, `set-user-password`, `qemu-agent-command`,
//! `shutdown --mode agent`) are answered by the same agent.
//!
//! Needs what the VM tests need (the image, QEMU, vhost-device-vsock,
//! mkfs.ext4), libvirt and a guestcommd built with the `libvirt` feature.
//! Without them the test says SKIPPED loudly; with both
//! GUESTCOMM_VM_REQUIRED and GUESTCOMM_LIBVIRT_REQUIRED set it fails.

#![allow(clippy::unwrap_used)]

mod util;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use base64::Engine;
use guestcomm_vmtest::{find_tool, ChildGuard};
use util::daemon::Daemon;
use util::libvirtd::{guestcommd_has_libvirt, listed, wait_for_status, Libvirtd, LIBVIRTD, VIRSH};
use util::{bin_dir, wait_until, STARTUP_DEADLINE};

const QEMU: &str = "/usr/bin/qemu-system-x86_64";
const METADATA_NAMESPACE: &str = "https://guestcomm.dev/xmlns/libvirt/1";
/// The image's agent listens on this guest vsock port (the default).
const AGENT_PORT: u32 = 18243;
/// TCG boots in seconds, but a loaded CI machine can be much slower.
const BOOT_DEADLINE: Duration = guestcomm_vmtest::DEFAULT_BOOT_DEADLINE;
/// Any one command in the guest through the daemon.
const COMMAND_DEADLINE: Duration = Duration::from_secs(180);
/// The guest's ext4 disk (/dev/vda), for a real filesystem freeze.
const DISK_MIB: u32 = 16;
/// The image's hostname (its init sets it).
const GUEST_HOSTNAME: &str = "guestcomm-test-vm";

/// Says SKIPPED with `why`, or fails when both VM and libvirt tests are
/// required (CI with the image and libvirt installed).
fn skip(why: &str) {
    assert!(
        std::env::var_os("GUESTCOMM_VM_REQUIRED").is_none()
            || std::env::var_os("GUESTCOMM_LIBVIRT_REQUIRED").is_none(),
        "libvirt guest: {why}"
    );
    eprintln!("\n*** SKIPPED libvirt guest: {why} ***\n");
}

/// What the test needs on this machine: the image's directory and the
/// vsock backend, or why not.
fn ready() -> Result<(PathBuf, PathBuf, PathBuf), String> {
    for tool in [LIBVIRTD, VIRSH, QEMU] {
        if !Path::new(tool).exists() {
            return Err(format!("no {tool} (apt-get install libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients qemu-system-x86)"));
        }
    }
    let images = std::env::var_os("GUESTCOMM_VM_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| bin_dir().join("../vm"));
    if !images.join("vmlinuz").is_file() || !images.join("initramfs.cpio.gz").is_file() {
        return Err(format!(
            "no VM image in {} (run scripts/vm/build-image)",
            images.display()
        ));
    }
    let tools = [bin_dir().join("../tools/bin")];
    let backend = find_tool("vhost-device-vsock", &tools)
        .ok_or("vhost-device-vsock not installed (scripts/vm/build-backend)")?;
    let mkfs = find_tool("mkfs.ext4", &tools).ok_or("mkfs.ext4 not installed")?;
    if !guestcommd_has_libvirt() {
        return Err("guestcommd was built without the libvirt feature (cargo build --features guestcommd/libvirt)".into());
    }
    Ok((images, backend, mkfs))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The domain: direct kernel boot of the test image under TCG, its memory a
/// shared memfd (vhost-user needs the guest's memory shared with the
/// backend), RDRAND for the guest's entropy, ACPI (without it libvirt
/// passes -no-acpi, and the guest kernel finds no fw_cfg device), the key by
/// fw_cfg from `guest.key`, an ext4 disk, the QEMU guest agent channel, the console in a
/// file, and vhost-user-vsock-pci on `vhost` (a fixed PCI address on q35's
/// root bus, away from the slots libvirt hands out).
struct DomainSpec<'a> {
    name: &'a str,
    uuid: &'a str,
    vm_dir: &'a Path,
    endpoint: &'a str,
}

impl DomainSpec<'_> {
    fn xml(&self) -> String {
        let DomainSpec {
            name,
            uuid,
            vm_dir,
            endpoint,
        } = self;
        let vm = vm_dir.display();
        format!(
            "<domain type='qemu' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>
  <name>{name}</name>
  <uuid>{uuid}</uuid>
  <metadata>
    <guestcomm:agent xmlns:guestcomm='{METADATA_NAMESPACE}' endpoint='{endpoint}'/>
  </metadata>
  <memory unit='MiB'>256</memory>
  <vcpu>1</vcpu>
  <sysinfo type='fwcfg'>
    <entry name='opt/io.systemd.credentials/guestcomm.key' file='{vm}/guest.key'/>
  </sysinfo>
  <os>
    <type arch='x86_64' machine='q35'>hvm</type>
    <kernel>{vm}/vmlinuz</kernel>
    <initrd>{vm}/initramfs.cpio.gz</initrd>
    <cmdline>console=ttyS0 quiet panic=-1</cmdline>
  </os>
  <features>
    <acpi/>
  </features>
  <cpu mode='custom' match='exact'>
    <model fallback='forbid'>qemu64</model>
    <feature policy='require' name='rdrand'/>
  </cpu>
  <memoryBacking>
    <source type='memfd'/>
    <access mode='shared'/>
  </memoryBacking>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <devices>
    <emulator>{QEMU}</emulator>
    <disk type='file' device='disk'>
      <driver name='qemu' type='raw'/>
      <source file='{vm}/disk.img'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <serial type='file'>
      <source path='{vm}/console.log'/>
      <target port='0'/>
    </serial>
    <channel type='unix'>
      <source mode='bind' path='{vm}/qga.sock'/>
      <target type='virtio' name='org.qemu.guest_agent.0'/>
    </channel>
    <video><model type='none'/></video>
    <memballoon model='none'/>
  </devices>
  <qemu:commandline>
    <qemu:arg value='-chardev'/>
    <qemu:arg value='socket,id=vsock0,path={vm}/vhost.sock'/>
    <qemu:arg value='-device'/>
    <qemu:arg value='vhost-user-vsock-pci,chardev=vsock0,bus=pcie.0,addr=0x10'/>
  </qemu:commandline>
</domain>"
        )
    }
}

/// The guest, for failure messages: its console and QEMU's log.
fn guest_report(libvirt: &Libvirtd, vm_dir: &Path, name: &str) -> String {
    let console = std::fs::read_to_string(vm_dir.join("console.log")).unwrap_or_default();
    let qemu_log = std::fs::read_to_string(
        libvirt
            .dir
            .join(format!("cache/libvirt/qemu/log/{name}.log")),
    )
    .unwrap_or_default();
    let tail = |s: &str| {
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    };
    format!(
        "--- console ---\n{}\n--- QEMU ---\n{}",
        tail(&console),
        tail(&qemu_log)
    )
}

/// `guestcomm ARGS...` through the daemon with a deadline.
fn cli(d: &Daemon, args: &[&str]) -> Output {
    let out = guestcomm_vmtest::run_with_deadline(d.cli(args), None, COMMAND_DEADLINE).unwrap();
    assert!(
        out.status.signal().is_none(),
        "guestcomm {args:?} ran past {COMMAND_DEADLINE:?}"
    );
    out
}

/// `guestcomm exec NAME -- CMD...`, which must succeed; its stdout.
fn exec_ok(d: &Daemon, name: &str, cmd: &[&str]) -> String {
    let args = [&["exec", name, "--"], cmd].concat();
    let out = cli(d, &args);
    assert!(
        out.status.success(),
        "guestcomm {args:?}: {}",
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// `virsh qemu-agent-command NAME JSON`: the reply's `return`.
fn agent_command(libvirt: &Libvirtd, name: &str, command: serde_json::Value) -> serde_json::Value {
    let reply = libvirt.ok(&["qemu-agent-command", name, &command.to_string()]);
    let reply: serde_json::Value = serde_json::from_str(&reply).unwrap();
    reply["return"].clone()
}

/// `KEY : VALUE` lines (virsh guestinfo, domtime) as pairs.
fn fields(out: &str) -> Vec<(String, String)> {
    out.lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

fn field<'a>(fields: &'a [(String, String)], key: &str) -> &'a str {
    fields
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("no {key} in {fields:#?}"))
}

/// Starts the domain and waits until guestcommd reaches its agent (status
/// OK) and libvirt's agent channel answers (guest-ping).
fn start_and_wait(libvirt: &Libvirtd, d: &Daemon, name: &str, vm_dir: &Path) {
    libvirt.ok(&["start", name]);
    let mut last = None;
    let mut stopped = false;
    let up = wait_until(BOOT_DEADLINE, || {
        last = listed(d, name);
        // A guest that powered off during its boot never answers.
        stopped = libvirt.ok(&["domstate", name]) == "shut off";
        stopped || last.as_ref().is_some_and(|v| v["health"]["status"] == "OK")
    });
    assert!(
        up && !stopped,
        "the guest's agent never answered guestcommd: {last:#?}\n{}\n{}",
        guest_report(libvirt, vm_dir, name),
        d.log()
    );
    let ping = r#"{"execute":"guest-ping"}"#;
    let answered = wait_until(BOOT_DEADLINE, || {
        libvirt
            .virsh(&["qemu-agent-command", name, ping])
            .status
            .success()
    });
    assert!(
        answered,
        "the agent channel never answered: {}",
        guest_report(libvirt, vm_dir, name)
    );
}

#[test]
fn a_libvirt_domain_is_followed_by_guestcommd_and_its_agent_answers_libvirts_agent_commands() {
    let (images, backend_bin, mkfs) = match ready() {
        Ok(found) => found,
        Err(why) => return skip(&why),
    };
    let dir = tempfile::tempdir().unwrap();
    // The test user (libvirtd, QEMU, the backend) walks through it.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let Some(libvirt) = Libvirtd::start(dir.path()) else {
        return skip("a session libvirtd needs a test user (root, useradd)");
    };
    let owner = format!("{}:{}", libvirt.user.uid, libvirt.user.gid);
    let chown = |path: &Path| {
        let done = Command::new("chown")
            .arg(&owner)
            .arg(path)
            .status()
            .unwrap();
        assert!(done.success(), "chown {}", path.display());
    };
    let vm_dir = dir.path().join("vm");
    std::fs::create_dir(&vm_dir).unwrap();
    chown(&vm_dir);
    // The test user (QEMU, the backend) may not reach the workspace (a
    // checkout under a private home): the image and the backend are copied.
    for file in ["vmlinuz", "initramfs.cpio.gz"] {
        std::fs::copy(images.join(file), vm_dir.join(file)).unwrap();
    }
    let backend_bin = {
        let copy = vm_dir.join("vhost-device-vsock");
        std::fs::copy(&backend_bin, &copy).unwrap();
        copy
    };
    let disk = vm_dir.join("disk.img");
    let made = Command::new(mkfs)
        .args(["-q", "-F", "-L", "guestdata"])
        .arg(&disk)
        .arg(format!("{DISK_MIB}M"))
        .output()
        .unwrap();
    assert!(made.status.success(), "mkfs.ext4: {}", text(&made.stderr));
    chown(&disk);

    // vhost-device-vsock as the test user, so that QEMU (the same user)
    // may connect to the socket it makes (and makes again after each
    // disconnect); guestcommd, root, reaches the hybrid socket.
    let vhost = vm_dir.join("vhost.sock");
    let uds = vm_dir.join("vm.vsock");
    let backend_log = std::fs::File::create(vm_dir.join("backend.log")).unwrap();
    let backend = ChildGuard::new(
        libvirt
            .user
            .command(
                &backend_bin,
                &[
                    "--guest-cid",
                    &guestcomm_vmtest::GUEST_CID.to_string(),
                    "--socket",
                    &vhost.display().to_string(),
                    "--uds-path",
                    &uds.display().to_string(),
                ],
                &[("RUST_LOG", "warn")],
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(backend_log)
            .spawn()
            .expect("start vhost-device-vsock"),
    );
    assert!(
        wait_until(STARTUP_DEADLINE, || vhost.exists()),
        "vhost-device-vsock made no socket: {}",
        std::fs::read_to_string(vm_dir.join("backend.log")).unwrap_or_default()
    );

    let d = Daemon::start_logging_with("200ms", &["--libvirt", &libvirt.uri()]);
    let name = format!("gclvguest{}", std::process::id());
    let uuid = std::fs::read_to_string("/proc/sys/kernel/random/uuid")
        .unwrap()
        .trim()
        .to_string();
    let endpoint = format!("hvsock-uds://{}?port={AGENT_PORT}", uds.display());
    let xml = DomainSpec {
        name: &name,
        uuid: &uuid,
        vm_dir: &vm_dir,
        endpoint: &endpoint,
    }
    .xml();
    let xml_path = dir.path().join(format!("{name}.xml"));
    std::fs::write(&xml_path, xml).unwrap();
    libvirt.ok(&["define", &xml_path.display().to_string()]);

    // Defined: listed with the domain's UUID; its key written where the
    // domain's fw_cfg entry reads it, in the form `--libvirt-xml` prints.
    let vm = wait_for_status(&d, &name, "Off", STARTUP_DEADLINE);
    assert_eq!(vm["id"], uuid.as_str(), "{vm:#?}");
    assert_eq!(vm["endpoint"], endpoint.as_str());
    let key_file = vm_dir.join("guest.key");
    let snippet = d.ok(&[
        "vm",
        "credentials",
        &name,
        "--libvirt-xml",
        "--guest-file",
        key_file.to_str().unwrap(),
    ]);
    assert!(
        snippet.contains(&format!(
            "<entry name='opt/io.systemd.credentials/guestcomm.key' file='{}'/>",
            key_file.display()
        )),
        "{snippet}"
    );
    chown(&key_file);

    // Running: guestcommd reaches the agent over vsock with the key.
    start_and_wait(&libvirt, &d, &name, &vm_dir);
    let release = exec_ok(&d, &name, &["uname", "-r"]).trim().to_string();
    assert!(release.contains("cloud-amd64"), "{release}");
    libvirt.ok(&["guest-agent-timeout", &name, "--timeout", "60"]);

    // The guest's ext4 disk, mounted: a filesystem for guestinfo, domfsinfo
    // and a real freeze.
    exec_ok(
        &d,
        &name,
        &[
            "sh",
            "-c",
            "mkdir -p /mnt/data && mount -t ext4 /dev/vda /mnt/data",
        ],
    );

    // guestinfo: the guest's own kernel, hostname, time zone and disk.
    let out = libvirt.ok(&["guestinfo", &name]);
    eprintln!("virsh guestinfo:\n{out}");
    let info = fields(&out);
    assert_eq!(field(&info, "os.kernel-release"), release, "{info:#?}");
    assert_eq!(field(&info, "os.machine"), "x86_64");
    assert_eq!(field(&info, "hostname"), GUEST_HOSTNAME);
    assert_eq!(field(&info, "timezone.name"), "UTC");
    assert_eq!(field(&info, "fs.count"), "1", "{info:#?}");
    assert_eq!(field(&info, "fs.0.mountpoint"), "/mnt/data");
    assert_eq!(field(&info, "fs.0.fstype"), "ext4");
    // libvirt matched the agent's PCI address of the disk to its <disk>.
    assert_eq!(field(&info, "fs.0.disk.0.alias"), "vda");

    let fsinfo = libvirt.ok(&["domfsinfo", &name]);
    let data = fsinfo
        .lines()
        .find(|l| l.split_whitespace().next() == Some("/mnt/data"))
        .unwrap_or_else(|| panic!("no /mnt/data in domfsinfo:\n{fsinfo}"));
    assert!(data.contains("ext4"), "{data}");
    // (virsh -q does not print its "Froze N filesystem(s)"; the agent's
    // status tells.)
    libvirt.ok(&["domfsfreeze", &name, "--mountpoint", "/mnt/data"]);
    let status = agent_command(
        &libvirt,
        &name,
        serde_json::json!({"execute": "guest-fsfreeze-status"}),
    );
    assert_eq!(status, "frozen");
    libvirt.ok(&["domfsthaw", &name]);
    let status = agent_command(
        &libvirt,
        &name,
        serde_json::json!({"execute": "guest-fsfreeze-status"}),
    );
    assert_eq!(status, "thawed");
    exec_ok(&d, &name, &["umount", "/mnt/data"]);

    // domtime: the guest's clock, on the host's day (give or take the
    // midnight between the two readings); --now sets it from the host.
    let day = |secs: u64| secs / 86_400;
    let host_now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    };
    libvirt.ok(&["domtime", &name, "--now"]);
    let before = host_now();
    let time = fields(&libvirt.ok(&["domtime", &name]));
    let guest: u64 = field(&time, "Time").parse().unwrap();
    let after = host_now();
    assert!(
        (day(before)..=day(after)).contains(&day(guest)),
        "guest time {guest}, host {before}..{after}"
    );

    // domifaddr from the agent: the guest's loopback, once it is up.
    exec_ok(&d, &name, &["ip", "link", "set", "lo", "up"]);
    let addrs = libvirt.ok(&["domifaddr", &name, "--source", "agent", "--full"]);
    assert!(
        addrs
            .lines()
            .any(|l| l.starts_with("lo") && l.contains("127.0.0.1/8")),
        "{addrs}"
    );

    // set-user-password: the image's busybox has no chpasswd, so the agent
    // says so, and libvirt passes it on.
    let out = libvirt.virsh(&["set-user-password", &name, "root", "s3cret"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("cannot run chpasswd"),
        "{}",
        text(&out.stderr)
    );
    let out = libvirt.virsh(&["set-user-password", &name, "nosuchuser", "s3cret"]);
    assert!(
        text(&out.stderr).contains("user 'nosuchuser' does not exist"),
        "{}",
        text(&out.stderr)
    );

    // guest-exec and guest-exec-status through libvirt's passthrough.
    let started = agent_command(
        &libvirt,
        &name,
        serde_json::json!({"execute": "guest-exec", "arguments": {
            "path": "/bin/uname", "arg": ["-r"], "capture-output": true}}),
    );
    let pid = started["pid"].as_i64().unwrap();
    let mut status = serde_json::Value::Null;
    let exited = wait_until(COMMAND_DEADLINE, || {
        status = agent_command(
            &libvirt,
            &name,
            serde_json::json!({"execute": "guest-exec-status", "arguments": {"pid": pid}}),
        );
        status["exited"] == true
    });
    assert!(exited, "{status:#?}");
    assert_eq!(status["exitcode"], 0, "{status:#?}");
    let out = base64::engine::general_purpose::STANDARD
        .decode(status["out-data"].as_str().unwrap())
        .unwrap();
    assert_eq!(text(&out).trim(), release);

    // suspend and resume: the daemon follows.
    libvirt.ok(&["suspend", &name]);
    wait_for_status(&d, &name, "Paused", STARTUP_DEADLINE);
    libvirt.ok(&["resume", &name]);
    wait_for_status(&d, &name, "OK", BOOT_DEADLINE);

    // shutdown through the agent channel: the guest powers off, the domain
    // stops, the VM is Off.
    libvirt.ok(&["shutdown", &name, "--mode", "agent"]);
    let stopped = wait_until(BOOT_DEADLINE, || {
        libvirt.ok(&["domstate", &name]) == "shut off"
    });
    assert!(
        stopped,
        "the guest did not power off: {}",
        guest_report(&libvirt, &vm_dir, &name)
    );
    assert!(
        std::fs::read_to_string(vm_dir.join("console.log"))
            .unwrap_or_default()
            .contains("guestcomm-vm: poweroff requested"),
        "{}",
        guest_report(&libvirt, &vm_dir, &name)
    );
    wait_for_status(&d, &name, "Off", STARTUP_DEADLINE);

    // Started again (the key delivered again by fw_cfg), then destroyed.
    start_and_wait(&libvirt, &d, &name, &vm_dir);
    libvirt.ok(&["destroy", &name]);
    wait_for_status(&d, &name, "Off", STARTUP_DEADLINE);
    libvirt.ok(&["undefine", &name]);
    // Everything of the test user ends before libvirtd's guard removes it.
    drop(d);
    drop(backend);
    drop(libvirt);
}
