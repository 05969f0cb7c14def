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
//! metadata), gives the domain's definition the VM's key as a fwcfg entry
//! (`--libvirt-key-dir`), which the guest reads at its start, and relays
//! exec to it, while libvirt's own agent commands
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
/// Where the image's agent also answers QGA, unauthenticated, when told so
/// on the kernel command line (`guestcomm.qga-vsock=PORT`).
const QGA_VSOCK_PORT: u32 = 18245;
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
/// passes -no-acpi, and the guest kernel finds no fw_cfg device), no key
/// (guestcommd adds its fwcfg entry), an ext4 disk, the QEMU guest agent channel, the console in a
/// file, and vhost-user-vsock-pci on `vhost` (a fixed PCI address on q35's
/// root bus, away from the slots libvirt hands out).
struct DomainSpec<'a> {
    name: &'a str,
    uuid: &'a str,
    vm_dir: &'a Path,
    endpoint: &'a str,
    /// Added to the guest kernel's command line.
    cmdline: &'a str,
}

impl DomainSpec<'_> {
    fn xml(&self) -> String {
        let DomainSpec {
            name,
            uuid,
            vm_dir,
            endpoint,
            cmdline,
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
  <os>
    <type arch='x86_64' machine='q35'>hvm</type>
    <kernel>{vm}/vmlinuz</kernel>
    <initrd>{vm}/initramfs.cpio.gz</initrd>
    <cmdline>console=ttyS0 quiet panic=-1 {cmdline}</cmdline>
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

/// One QGA `request` to the guest's vsock port [`QGA_VSOCK_PORT`] through
/// the backend's hybrid socket (`CONNECT PORT`, `OK ...`); the reply. Tried
/// again until [`BOOT_DEADLINE`]: the agent opens that port on a task of
/// its own, after the native listener the daemon already reached, and the
/// backend drops a connection to a port nobody listens on.
fn qga_over_vsock(vm_dir: &Path, request: &str) -> serde_json::Value {
    use std::io::{BufRead, BufReader, Write};
    let once = || -> Result<serde_json::Value, String> {
        let e = |e: std::io::Error| e.to_string();
        let stream = std::os::unix::net::UnixStream::connect(vm_dir.join("vm.vsock")).map_err(e)?;
        stream.set_read_timeout(Some(COMMAND_DEADLINE)).map_err(e)?;
        stream
            .set_write_timeout(Some(COMMAND_DEADLINE))
            .map_err(e)?;
        let mut reader = BufReader::new(stream.try_clone().map_err(e)?);
        let mut writer = stream;
        writeln!(writer, "CONNECT {QGA_VSOCK_PORT}").map_err(e)?;
        let mut line = String::new();
        reader.read_line(&mut line).map_err(e)?;
        if !line.starts_with("OK ") {
            return Err(format!("hybrid vsock: {line:?}"));
        }
        writeln!(writer, "{request}").map_err(e)?;
        line.clear();
        reader.read_line(&mut line).map_err(e)?;
        serde_json::from_str(&line).map_err(|err| format!("{err}: {line:?}"))
    };
    let mut last = Err("not tried".to_string());
    let answered = wait_until(BOOT_DEADLINE, || {
        last = once();
        last.is_ok()
    });
    assert!(
        answered,
        "QGA on guest vsock port {QGA_VSOCK_PORT}: {last:?}"
    );
    last.unwrap()
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

/// What the test needs from [`ready`] and the private libvirtd and daemon.
struct Setup<'a> {
    libvirt: &'a Libvirtd,
    d: &'a Daemon,
    /// guestcommd's `--libvirt-key-dir`.
    keys: &'a Path,
    parent: &'a Path,
    backend_bin: &'a Path,
    mkfs: &'a Path,
}

/// One domain of the test, defined and followed by guestcommd (Off), its
/// key written: its directory (image, disk, key, sockets, console) and its
/// vsock backend, killed by PID when dropped.
struct Domain {
    name: String,
    dir: PathBuf,
    _backend: ChildGuard,
}

impl Setup<'_> {
    fn chown(&self, path: &Path) {
        let owner = format!("{}:{}", self.libvirt.user.uid, self.libvirt.user.gid);
        let done = Command::new("chown")
            .arg(&owner)
            .arg(path)
            .status()
            .unwrap();
        assert!(done.success(), "chown {}", path.display());
    }

    /// Domain `name` booting the image in `images` with `cmdline` added.
    fn domain(&self, name: &str, images: &Path, cmdline: &str) -> Domain {
        let vm_dir = self.parent.join(name);
        std::fs::create_dir(&vm_dir).unwrap();
        self.chown(&vm_dir);
        // The test user (QEMU, the backend) may not reach the workspace (a
        // checkout under a private home): the image and the backend are copied.
        for file in ["vmlinuz", "initramfs.cpio.gz"] {
            std::fs::copy(images.join(file), vm_dir.join(file)).unwrap();
        }
        let backend_bin = vm_dir.join("vhost-device-vsock");
        std::fs::copy(self.backend_bin, &backend_bin).unwrap();
        let disk = vm_dir.join("disk.img");
        let made = Command::new(self.mkfs)
            .args(["-q", "-F", "-L", "guestdata"])
            .arg(&disk)
            .arg(format!("{DISK_MIB}M"))
            .output()
            .unwrap();
        assert!(made.status.success(), "mkfs.ext4: {}", text(&made.stderr));
        self.chown(&disk);

        // vhost-device-vsock as the test user, so that QEMU (the same user)
        // may connect to the socket it makes (and makes again after each
        // disconnect); guestcommd, root, reaches the hybrid socket.
        let vhost = vm_dir.join("vhost.sock");
        let uds = vm_dir.join("vm.vsock");
        let backend_log = std::fs::File::create(vm_dir.join("backend.log")).unwrap();
        let backend = ChildGuard::new(
            self.libvirt
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

        let uuid = std::fs::read_to_string("/proc/sys/kernel/random/uuid")
            .unwrap()
            .trim()
            .to_string();
        let endpoint = format!("hvsock-uds://{}?port={AGENT_PORT}", uds.display());
        let xml = DomainSpec {
            name,
            uuid: &uuid,
            vm_dir: &vm_dir,
            endpoint: &endpoint,
            cmdline,
        }
        .xml();
        let xml_path = vm_dir.join("domain.xml");
        std::fs::write(&xml_path, xml).unwrap();
        self.libvirt
            .ok(&["define", &xml_path.display().to_string()]);

        // Defined: listed with the domain's UUID, and guestcommd gives the
        // definition its key (`--libvirt-key-dir`): the fwcfg entry naming
        // the file it wrote, which QEMU reads at the domain's next start.
        let vm = wait_for_status(self.d, name, "Off", STARTUP_DEADLINE);
        assert_eq!(vm["id"], uuid.as_str(), "{vm:#?}");
        assert_eq!(vm["endpoint"], endpoint.as_str());
        let mut shown = serde_json::Value::Null;
        let keyed = wait_until(STARTUP_DEADLINE, || {
            shown = self.d.json(&["vm", "show", name]);
            shown["domain_key"] == "at-next-start"
        });
        assert!(
            keyed,
            "guestcommd gave the domain no key: {shown:#?}\n{}",
            self.d.log()
        );
        let key_file = self.keys.join(format!("{uuid}.key"));
        let inactive = self.libvirt.ok(&["dumpxml", "--inactive", name]);
        assert!(
            inactive.contains(&format!(
                "<entry name='opt/io.systemd.credentials/guestcomm.key' file='{}'/>",
                key_file.display()
            )),
            "{inactive}"
        );
        Domain {
            name: name.to_string(),
            dir: vm_dir,
            _backend: backend,
        }
    }
}

/// What libvirt's agent commands showed of a guest, for the comparison of
/// guestcomm-agent with qemu-ga.
struct AgentAnswers {
    guestinfo: Vec<(String, String)>,
    fsinfo: String,
    ifaddr: String,
    exec_status: serde_json::Value,
}

/// libvirt's agent commands against running `dom`, with what must hold
/// whichever agent answers: the guest's own kernel, hostname, disk, freeze
/// state, clock, loopback address and command output.
fn agent_answers(libvirt: &Libvirtd, d: &Daemon, dom: &Domain) -> AgentAnswers {
    let name = dom.name.as_str();
    let release = exec_ok(d, name, &["uname", "-r"]).trim().to_string();
    assert!(release.contains("cloud-amd64"), "{release}");
    libvirt.ok(&["guest-agent-timeout", name, "--timeout", "60"]);

    // The guest's ext4 disk, mounted: a filesystem for guestinfo, domfsinfo
    // and a real freeze.
    exec_ok(
        d,
        name,
        &[
            "sh",
            "-c",
            "mkdir -p /mnt/data && mount -t ext4 /dev/vda /mnt/data",
        ],
    );

    // guestinfo: the guest's own kernel, hostname, time zone and disk.
    let out = libvirt.ok(&["guestinfo", name]);
    eprintln!("virsh guestinfo {name}:\n{out}");
    let guestinfo = fields(&out);
    assert_eq!(
        field(&guestinfo, "os.kernel-release"),
        release,
        "{guestinfo:#?}"
    );
    assert_eq!(field(&guestinfo, "os.machine"), "x86_64");
    assert_eq!(field(&guestinfo, "hostname"), GUEST_HOSTNAME);
    assert_eq!(field(&guestinfo, "fs.count"), "1", "{guestinfo:#?}");
    assert_eq!(field(&guestinfo, "fs.0.mountpoint"), "/mnt/data");
    assert_eq!(field(&guestinfo, "fs.0.fstype"), "ext4");
    // libvirt matched the agent's PCI address of the disk to its <disk>.
    assert_eq!(field(&guestinfo, "fs.0.disk.0.alias"), "vda");

    let fsinfo = libvirt.ok(&["domfsinfo", name]);
    eprintln!("virsh domfsinfo {name}:\n{fsinfo}");
    let data = fsinfo
        .lines()
        .find(|l| l.split_whitespace().next() == Some("/mnt/data"))
        .unwrap_or_else(|| panic!("no /mnt/data in domfsinfo:\n{fsinfo}"));
    assert!(data.contains("ext4") && data.contains("vda"), "{data}");
    // (virsh -q does not print its "Froze N filesystem(s)"; the agent's
    // status tells.)
    let freeze_status = serde_json::json!({"execute": "guest-fsfreeze-status"});
    libvirt.ok(&["domfsfreeze", name, "--mountpoint", "/mnt/data"]);
    assert_eq!(
        agent_command(libvirt, name, freeze_status.clone()),
        "frozen"
    );
    libvirt.ok(&["domfsthaw", name]);
    assert_eq!(agent_command(libvirt, name, freeze_status), "thawed");
    exec_ok(d, name, &["umount", "/mnt/data"]);

    // domtime: the guest's clock, on the host's day (give or take the
    // midnight between the two readings); --now sets it from the host.
    let day = |secs: u64| secs / 86_400;
    let host_now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    };
    // (qemu-ga sets the time only where /sbin/hwclock is: busybox's.)
    exec_ok(d, name, &["ln", "-sf", "/bin/busybox", "/sbin/hwclock"]);
    libvirt.ok(&["domtime", name, "--now"]);
    let before = host_now();
    let time = fields(&libvirt.ok(&["domtime", name]));
    let guest: u64 = field(&time, "Time").parse().unwrap();
    let after = host_now();
    assert!(
        (day(before)..=day(after)).contains(&day(guest)),
        "guest time {guest}, host {before}..{after}"
    );

    // domifaddr from the agent: the guest's loopback, once it is up.
    exec_ok(d, name, &["ip", "link", "set", "lo", "up"]);
    let ifaddr = libvirt.ok(&["domifaddr", name, "--source", "agent", "--full"]);
    eprintln!("virsh domifaddr {name}:\n{ifaddr}");
    assert!(
        ifaddr
            .lines()
            .any(|l| l.starts_with("lo") && l.contains("127.0.0.1/8")),
        "{ifaddr}"
    );

    // guest-exec and guest-exec-status through libvirt's passthrough.
    let started = agent_command(
        libvirt,
        name,
        serde_json::json!({"execute": "guest-exec", "arguments": {
            "path": "/bin/uname", "arg": ["-r"], "capture-output": true}}),
    );
    let pid = started["pid"].as_i64().unwrap();
    let mut exec_status = serde_json::Value::Null;
    let exited = wait_until(COMMAND_DEADLINE, || {
        exec_status = agent_command(
            libvirt,
            name,
            serde_json::json!({"execute": "guest-exec-status", "arguments": {"pid": pid}}),
        );
        exec_status["exited"] == true
    });
    assert!(exited, "{exec_status:#?}");
    assert_eq!(exec_status["exitcode"], 0, "{exec_status:#?}");
    let out = base64::engine::general_purpose::STANDARD
        .decode(exec_status["out-data"].as_str().unwrap())
        .unwrap();
    assert_eq!(text(&out).trim(), release);
    AgentAnswers {
        guestinfo,
        fsinfo,
        ifaddr,
        exec_status,
    }
}

/// The image with Debian's qemu-ga (`scripts/vm/build-image --with-qemu-ga`),
/// if built.
fn qemu_ga_image() -> Option<PathBuf> {
    let images = std::env::var_os("GUESTCOMM_VM_COMPARE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| bin_dir().join("../vm-compare"));
    let manifest = std::fs::read_to_string(images.join("image.txt")).ok()?;
    manifest
        .lines()
        .any(|l| l.starts_with("qemu-ga="))
        .then_some(images)
}

/// `virsh guestinfo` of guestcomm-agent (`ours`) against qemu-ga's in the
/// same image: the same fields with the same values, sizes aside (the
/// tests write beside).
fn compare_guestinfo(ours: &[(String, String)], theirs: &[(String, String)]) {
    for (key, value) in theirs {
        let mine = ours.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str());
        match mine {
            Some(_) if key.ends_with("-bytes") => {}
            mine => assert_eq!(mine, Some(value.as_str()), "guestinfo {key}"),
        }
    }
    for (key, _) in ours {
        assert!(
            theirs.iter().any(|(k, _)| k == key),
            "guestinfo {key}: ours only"
        );
    }
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
    let Some(libvirt) = Libvirtd::start(dir.path(), "lv") else {
        return skip("a session libvirtd needs a test user (root, useradd)");
    };
    // The key directory: root's, the test user's group (QEMU's), 0750.
    let keys = dir.path().join("keys");
    std::fs::create_dir(&keys).unwrap();
    std::os::unix::fs::chown(&keys, Some(0), Some(libvirt.user.gid)).unwrap();
    std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o750)).unwrap();
    let d = Daemon::start_logging_with(
        "200ms",
        &[
            "--libvirt",
            &libvirt.uri(),
            "--libvirt-key-dir",
            keys.to_str().unwrap(),
        ],
    );
    let setup = Setup {
        libvirt: &libvirt,
        d: &d,
        keys: &keys,
        parent: dir.path(),
        backend_bin: &backend_bin,
        mkfs: &mkfs,
    };
    let dom = setup.domain(
        &format!("gclvguest{}", std::process::id()),
        &images,
        &format!("guestcomm.qga-vsock={QGA_VSOCK_PORT}"),
    );
    let name = dom.name.as_str();

    // Running: guestcommd reaches the agent over vsock with the key, and
    // libvirt the same agent on its QGA channel.
    start_and_wait(&libvirt, &d, name, &dom.dir);
    assert_eq!(
        d.json(&["vm", "show", name])["domain_key"],
        "in-running-domain"
    );
    // QGA on vsock too, as `qemu-ga -m vsock-listen` (the image's agent has
    // --qga-allow-unauthenticated-vsock): reached through the hybrid socket.
    let hostname = qga_over_vsock(&dom.dir, r#"{"execute":"guest-get-host-name"}"#);
    assert_eq!(
        hostname["return"]["host-name"], GUEST_HOSTNAME,
        "{hostname}"
    );
    let ours = agent_answers(&libvirt, &d, &dom);

    // set-user-password: the image's busybox has no chpasswd, so the agent
    // says so, and libvirt passes it on.
    let out = libvirt.virsh(&["set-user-password", name, "root", "s3cret"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("cannot run chpasswd"),
        "{}",
        text(&out.stderr)
    );
    let out = libvirt.virsh(&["set-user-password", name, "nosuchuser", "s3cret"]);
    assert!(
        text(&out.stderr).contains("user 'nosuchuser' does not exist"),
        "{}",
        text(&out.stderr)
    );

    // suspend and resume: the daemon follows.
    libvirt.ok(&["suspend", name]);
    wait_for_status(&d, name, "Paused", STARTUP_DEADLINE);
    libvirt.ok(&["resume", name]);
    wait_for_status(&d, name, "OK", BOOT_DEADLINE);

    // shutdown through the agent channel: the guest powers off, the domain
    // stops, the VM is Off.
    libvirt.ok(&["shutdown", name, "--mode", "agent"]);
    let stopped = wait_until(BOOT_DEADLINE, || {
        libvirt.ok(&["domstate", name]) == "shut off"
    });
    assert!(
        stopped,
        "the guest did not power off: {}",
        guest_report(&libvirt, &dom.dir, name)
    );
    assert!(
        std::fs::read_to_string(dom.dir.join("console.log"))
            .unwrap_or_default()
            .contains("guestcomm-vm: poweroff requested"),
        "{}",
        guest_report(&libvirt, &dom.dir, name)
    );
    wait_for_status(&d, name, "Off", STARTUP_DEADLINE);

    // Started again (the key delivered again by fw_cfg), then destroyed.
    start_and_wait(&libvirt, &d, name, &dom.dir);
    libvirt.ok(&["destroy", name]);
    wait_for_status(&d, name, "Off", STARTUP_DEADLINE);
    let uuid = libvirt.ok(&["domuuid", name]);
    libvirt.ok(&["undefine", name]);
    // Undefined: its key file goes with it.
    let key_file = keys.join(format!("{uuid}.key"));
    assert!(
        wait_until(STARTUP_DEADLINE, || !key_file.exists()),
        "{} left after undefine",
        key_file.display()
    );

    // The same commands answered by Debian's qemu-ga on the channel (an
    // image that has it, told so on the kernel command line): the same
    // fields, the same values where both read the same guest.
    match qemu_ga_image() {
        None => {
            let why =
                "no image with qemu-ga (scripts/vm/build-image --with-qemu-ga target/vm-compare)";
            assert!(
                std::env::var_os("GUESTCOMM_QGA_REQUIRED").is_none(),
                "the qemu-ga comparison: {why}"
            );
            eprintln!("\n*** SKIPPED the qemu-ga comparison: {why} ***\n");
        }
        Some(compare) => {
            let qga = setup.domain(
                &format!("gclvqemuga{}", std::process::id()),
                &compare,
                "guestcomm.qga=qemu-ga",
            );
            start_and_wait(&libvirt, &d, &qga.name, &qga.dir);
            assert!(
                std::fs::read_to_string(qga.dir.join("console.log"))
                    .unwrap_or_default()
                    .contains("starting qemu-ga on org.qemu.guest_agent.0"),
                "{}",
                guest_report(&libvirt, &qga.dir, &qga.name)
            );
            let theirs = agent_answers(&libvirt, &d, &qga);
            compare_guestinfo(&ours.guestinfo, &theirs.guestinfo);
            assert_eq!(ours.fsinfo, theirs.fsinfo, "domfsinfo");
            // The loopback's all-zero hardware address included.
            assert_eq!(ours.ifaddr, theirs.ifaddr, "domifaddr --source agent");
            // `"out-truncated": false` beside the output, as qemu-ga.
            assert_eq!(ours.exec_status, theirs.exec_status, "guest-exec-status");
            // Neither image has chpasswd: qemu-ga fails as well.
            let out = libvirt.virsh(&["set-user-password", &qga.name, "root", "s3cret"]);
            assert!(!out.status.success());
            eprintln!("set-user-password, qemu-ga: {}", text(&out.stderr).trim());
            libvirt.ok(&["destroy", &qga.name]);
            libvirt.ok(&["undefine", &qga.name]);
            drop(qga);
        }
    }
    // Everything of the test user ends before libvirtd's guard removes it.
    drop(d);
    drop(dom);
    drop(libvirt);
}
