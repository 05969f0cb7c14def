//! The test VM, booted one way for the VM tests (`crates/cli/tests/vm.rs`)
//! and the in-VM bench (`guestcomm-bench --case compare-vm`): QEMU under TCG
//! with a virtio-vsock device served by vhost-device-vsock, the kernel and
//! initramfs built by `scripts/vm/build-image`. The host reaches the guest
//! only through vhost-device-vsock's hybrid vsock Unix socket; the machine's
//! own AF_VSOCK is never opened here. The guest gets no entropy source
//! unless [`VmSpec::entropy`] asks for one.
//!
//! Boot, in order: find the image and the tools, make the guest's disk (if
//! asked), start vhost-device-vsock and wait for its socket, start QEMU,
//! then connect and handshake with the agent (with the VM's key) until it
//! answers or the deadline passes. QEMU and the backend are killed by PID
//! and reaped when the [`Vm`] drops, also on an error path or a panic.
//!
//! A test gives its VM a deadline for its whole life ([`VmSpec::deadline`],
//! module `watchdog`): past it the VM's state is printed (module
//! `diagnostics`: backend, guest entropy, console and logs), the VM killed
//! and the test failed. Boot errors carry the same report.

mod diagnostics;
mod process;
mod qmp;
mod watchdog;

use std::os::unix::net::UnixStream as StdUnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use guestcomm_protocol::auth::{load_credentials, CredentialsError, Psk};
use guestcomm_protocol::service::AGENT_VSOCK_PORT;
use guestcomm_transport::hybrid::HybridError;
use guestcomm_transport::Address;

use diagnostics::VmLogs;
pub use process::{run_with_deadline, ChildGuard};
use watchdog::{lock, SharedChild, Watchdog};

/// The guest's vsock context id (vhost-device-vsock `--guest-cid`); the
/// image's init starts qemu-ga on `GUEST_CID:PORT` too.
pub const GUEST_CID: u32 = 3;

/// TCG boots in seconds, but a loaded CI machine can be much slower.
pub const DEFAULT_BOOT_DEADLINE: Duration = Duration::from_secs(240);

/// Guest memory when not asked otherwise: the test guest needs little.
pub const DEFAULT_MEMORY_MIB: u32 = 256;

/// How long vhost-device-vsock may take to create its socket.
const BACKEND_SOCKET_DEADLINE: Duration = Duration::from_secs(30);

/// One connection attempt to the agent while booting; vhost-device-vsock
/// answers or closes at once, but a guest mid-boot may be slow.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// Pause between connection attempts while booting.
const PROBE_INTERVAL: Duration = Duration::from_millis(250);

/// Name the boot probe gives itself in the handshake.
const CLIENT_NAME: &str = "guestcomm-vmtest";

/// Why a VM did not boot. [`VmError::is_unavailable`] tells a machine
/// without what a VM needs (a test skips) from a VM that failed.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    /// The kernel or initramfs is missing.
    #[error("no VM image in {0} (run scripts/vm/build-image)")]
    NoImage(PathBuf),
    /// A program the VM needs is not installed.
    #[error("{0} not installed")]
    MissingTool(&'static str),
    /// The image's key (OUT/credentials) cannot be read.
    #[error("cannot read the VM's key")]
    Credentials(#[from] CredentialsError),
    /// Setting up the VM's directory, runtime or a program failed.
    #[error("cannot {what}")]
    Io {
        /// What was being done.
        what: String,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
    /// mkfs.ext4 refused to make the guest's disk.
    #[error("mkfs.ext4 failed: {0}")]
    Mkfs(String),
    /// vhost-device-vsock did not create its vhost-user socket.
    #[error(
        "vhost-device-vsock did not create its socket within {BACKEND_SOCKET_DEADLINE:?}\n{report}"
    )]
    NoBackendSocket {
        /// The VM's state: the backend's logs.
        report: String,
    },
    /// QEMU exited before the agent answered.
    #[error("QEMU exited during boot ({status})\n{report}")]
    QemuExited {
        /// QEMU's exit status.
        status: std::process::ExitStatus,
        /// The VM's state: console, guest entropy, logs.
        report: String,
    },
    /// The agent did not complete a handshake in time.
    #[error("the guest agent did not answer within {deadline:?}\n{report}")]
    NoAgent {
        /// The boot deadline.
        deadline: Duration,
        /// The VM's state: console, guest entropy, logs.
        report: String,
    },
    /// A hybrid vsock connection to a guest port failed.
    #[error("cannot reach guest vsock port {port}")]
    Connect {
        /// The guest port.
        port: u32,
        /// Why.
        #[source]
        source: HybridError,
    },
}

impl VmError {
    /// True when this machine lacks the image or a program (skip, not fail).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::NoImage(_) | Self::MissingTool(_))
    }
}

fn io_error(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> VmError {
    let what = what.into();
    move |source| VmError::Io { what, source }
}

/// What to boot and how.
#[derive(Clone, Debug)]
pub struct VmSpec {
    /// Directory with `vmlinuz`, `initramfs.cpio.gz` and `credentials`.
    pub images: PathBuf,
    /// Directories searched for the tools before `PATH` (e.g. target/tools/bin).
    pub tool_dirs: Vec<PathBuf>,
    /// Guest memory in MiB.
    pub memory_mib: u32,
    /// An ext4 disk of this many MiB as /dev/vda (needs mkfs.ext4), or none.
    pub disk_mib: Option<u32>,
    /// How long the boot may take until the agent answers.
    pub boot_deadline: Duration,
    /// The whole life of the VM, boot included (a test's deadline): once it
    /// has passed, the VM's state is printed, QEMU and the backend are
    /// killed, and dropping the [`Vm`] panics. `None`: no limit.
    pub deadline: Option<Duration>,
    /// The guest's source of entropy, if any.
    pub entropy: GuestEntropy,
    /// QEMU's CPU model (`-cpu MODEL`, before the entropy's RDRAND flag):
    /// [`DEFAULT_CPU_MODEL`], or e.g. `max`, with which TCG also emulates
    /// SSE4.1 and AVX2. [`VmSpec::cpu_option`] is what QEMU is given.
    pub cpu_model: String,
    /// How the guest gets the VM's key (the image holds none).
    pub key_delivery: KeyDelivery,
}

/// How the VM's key reaches the guest: by the firmware, as systemd's
/// credential `guestcomm.key`, never on the guest's disk or initramfs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KeyDelivery {
    /// A QEMU firmware configuration entry,
    /// `-fw_cfg name=opt/io.systemd.credentials/guestcomm.key,file=...`.
    #[default]
    FwCfg,
    /// An SMBIOS type 11 OEM string read from a file,
    /// `-smbios type=11,path=...` (`io.systemd.credential.binary:guestcomm.key=BASE64`).
    Smbios,
}

/// What seeds the guest kernel's random pool.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum GuestEntropy {
    /// Nothing: a CPU without RDRAND (`-cpu qemu64,rdrand=off`) and no
    /// virtio-rng, so the pool stays uninitialized for minutes under TCG,
    /// as on many microVMs. Nothing of guestcomm may wait for it.
    #[default]
    None,
    /// RDRAND, emulated by TCG (`-cpu qemu64,+rdrand`): the kernel trusts
    /// it and the pool is initialized during boot.
    Rdrand,
}

impl VmSpec {
    /// The image in `images`, default memory and deadline, no disk.
    pub fn new(images: impl Into<PathBuf>) -> Self {
        Self {
            images: images.into(),
            tool_dirs: Vec::new(),
            memory_mib: DEFAULT_MEMORY_MIB,
            disk_mib: None,
            boot_deadline: DEFAULT_BOOT_DEADLINE,
            deadline: None,
            entropy: GuestEntropy::None,
            cpu_model: DEFAULT_CPU_MODEL.to_string(),
            key_delivery: KeyDelivery::FwCfg,
        }
    }

    /// QEMU's `-cpu` value: [`cpu_option`] of this spec's model and entropy.
    pub fn cpu_option(&self) -> String {
        cpu_option(&self.cpu_model, self.entropy)
    }
}

/// QEMU's `-cpu` value for CPU `model` with `entropy`: RDRAND off or on
/// (some models, `max` among them, have RDRAND unless told otherwise).
pub fn cpu_option(model: &str, entropy: GuestEntropy) -> String {
    let rdrand = match entropy {
        GuestEntropy::None => "rdrand=off",
        GuestEntropy::Rdrand => "+rdrand",
    };
    format!("{model},{rdrand}")
}

/// The CPU model a VM gets unless its [`VmSpec`] names another: QEMU's
/// baseline x86-64 (no SSE4.1, no AVX).
pub const DEFAULT_CPU_MODEL: &str = "qemu64";

/// Finds `name` in `first` directories, then on `PATH`, then in the sbin
/// directories (mkfs.ext4 and qemu-ga live there and are not on every
/// user's `PATH`).
pub fn find_tool(name: &str, first: &[PathBuf]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    first
        .iter()
        .cloned()
        .chain(std::env::split_paths(&path))
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// A booted VM; QEMU and vhost-device-vsock are killed by PID on drop.
pub struct Vm {
    // Shared with the watchdog, which may kill them. Drop kills QEMU first,
    // then its backend; the directory goes last.
    qemu: SharedChild,
    backend: SharedChild,
    watchdog: Option<Watchdog>,
    logs: VmLogs,
    psk: Psk,
    identity: PathBuf,
    rt: tokio::runtime::Runtime,
    dir: tempfile::TempDir,
}

impl Vm {
    /// Boots the VM of `spec` and waits until its agent completes a
    /// handshake with the image's key.
    pub fn boot(spec: &VmSpec) -> Result<Vm, VmError> {
        let kernel = spec.images.join("vmlinuz");
        let initrd = spec.images.join("initramfs.cpio.gz");
        if !kernel.is_file() || !initrd.is_file() {
            return Err(VmError::NoImage(spec.images.clone()));
        }
        let tool =
            |name: &'static str| find_tool(name, &spec.tool_dirs).ok_or(VmError::MissingTool(name));
        let qemu_bin = tool("qemu-system-x86_64")?;
        let backend_bin = tool("vhost-device-vsock")?;
        let mkfs = spec.disk_mib.map(|_| tool("mkfs.ext4")).transpose()?;
        let identity = spec.images.join("credentials");
        let psk = load_credentials(&identity)?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(io_error("start a runtime for the boot probe"))?;
        let dir = tempfile::Builder::new()
            .prefix("guestcomm-vm-")
            .tempdir()
            .map_err(io_error("create the VM's directory"))?;
        let vhost = dir.path().join("vhost.sock");
        let log = |name: &str| {
            std::fs::File::create(dir.path().join(name))
                .map(Stdio::from)
                .map_err(io_error(format!("create {name}")))
        };

        let mut qemu_cmd = Command::new(qemu_bin);
        let memory = format!("{}M", spec.memory_mib);
        qemu_cmd
            .args(["-accel", "tcg", "-M", "q35", "-m", &memory])
            .args(["-cpu", &spec.cpu_option()])
            .args(["-nographic", "-no-reboot"])
            .arg("-kernel")
            .arg(&kernel)
            .arg("-initrd")
            .arg(&initrd)
            .args(["-append", "console=ttyS0 quiet panic=-1"])
            // vhost-user needs the guest's memory shared with the backend.
            .arg("-object")
            .arg(format!(
                "memory-backend-memfd,id=mem,size={memory},share=on"
            ))
            .args(["-numa", "node,memdev=mem"]);
        // The options `guestcomm vm credentials --qemu-args` prints, from
        // the same library: a VM test boots a guest with exactly them.
        let delivery = match spec.key_delivery {
            KeyDelivery::FwCfg => guestcomm_client::provision::qemu_fw_cfg(&identity),
            KeyDelivery::Smbios => {
                let psk = guestcomm_protocol::auth::load_credentials(&identity)
                    .map_err(|e| io_error("read the VM's key")(std::io::Error::other(e)))?;
                let oem = dir.path().join("smbios-oem.txt");
                guestcomm_protocol::auth::write_private_file(
                    &oem,
                    guestcomm_client::provision::smbios_oem_string(&psk).as_bytes(),
                )
                .map_err(io_error("write the SMBIOS OEM string"))?;
                guestcomm_client::provision::qemu_smbios_file(&oem)
            }
        }
        .map_err(|e| io_error("form the key's QEMU options")(std::io::Error::other(e)))?;
        qemu_cmd.args(&delivery);
        if let (Some(mkfs), Some(mib)) = (mkfs, spec.disk_mib) {
            // An ext4 disk (/dev/vda in the guest): a filesystem that can freeze.
            let disk = dir.path().join("disk.img");
            let made = Command::new(mkfs)
                .args(["-q", "-F", "-L", "guestdata"])
                .arg(&disk)
                .arg(format!("{mib}M"))
                .output()
                .map_err(io_error("run mkfs.ext4"))?;
            if !made.status.success() {
                let why = String::from_utf8_lossy(&made.stderr).trim().to_string();
                return Err(VmError::Mkfs(why));
            }
            qemu_cmd
                .arg("-drive")
                .arg(format!("file={},if=virtio,format=raw", disk.display()));
        }
        qemu_cmd
            .arg("-chardev")
            .arg(format!("socket,id=vsock0,path={}", vhost.display()))
            .args(["-device", "vhost-user-vsock-pci,chardev=vsock0"])
            // QMP, to pause and resume the guest as an operator would.
            .arg("-qmp")
            .arg(format!(
                "unix:{},server=on,wait=off",
                dir.path().join("qmp.sock").display()
            ))
            .stdin(Stdio::null())
            .stdout(log("console.log")?)
            .stderr(log("qemu.err")?);

        let logs = VmLogs {
            dir: dir.path().to_path_buf(),
            backend_bin,
        };
        let backend = ChildGuard::new(
            Command::new(&logs.backend_bin)
                .args(["--guest-cid", &GUEST_CID.to_string(), "--socket"])
                .arg(&vhost)
                .arg("--uds-path")
                .arg(dir.path().join("vm.vsock"))
                // Its warnings too, for the report of a failed test.
                .env(
                    "RUST_LOG",
                    std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
                )
                .stdin(Stdio::null())
                .stdout(log("backend.log")?)
                .stderr(log("backend.err")?)
                .spawn()
                .map_err(io_error("start vhost-device-vsock"))?,
        );
        let socket_deadline = Instant::now() + BACKEND_SOCKET_DEADLINE;
        while !vhost.exists() {
            if Instant::now() > socket_deadline {
                return Err(VmError::NoBackendSocket {
                    report: logs.report(),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let qemu = Arc::new(Mutex::new(ChildGuard::new(
            qemu_cmd.spawn().map_err(io_error("start QEMU"))?,
        )));
        let backend = Arc::new(Mutex::new(backend));
        let watchdog = spec
            .deadline
            .map(|limit| {
                let victims = vec![Arc::clone(&qemu), Arc::clone(&backend)];
                Watchdog::start(limit, logs.clone(), victims)
            })
            .transpose()
            .map_err(io_error("start the VM's deadline"))?;
        let mut vm = Vm {
            qemu,
            backend,
            watchdog,
            logs,
            psk,
            identity,
            rt,
            dir,
        };
        vm.wait_for_agent(spec.boot_deadline)?;
        Ok(vm)
    }

    fn wait_for_agent(&mut self, deadline: Duration) -> Result<(), VmError> {
        let end = Instant::now() + deadline;
        let addr = self.addr();
        loop {
            // The timer is made inside the runtime (it needs its clock).
            let probe = self.rt.block_on(async {
                let connect = guestcomm_client::connect_with(&addr, CLIENT_NAME, Some(&self.psk));
                tokio::time::timeout(PROBE_TIMEOUT, connect).await
            });
            if matches!(probe, Ok(Ok(_))) {
                return Ok(());
            }
            let exited = lock(&self.qemu).try_wait();
            if let Ok(Some(status)) = exited {
                return Err(VmError::QemuExited {
                    status,
                    report: self.report(),
                });
            }
            if Instant::now() > end {
                return Err(VmError::NoAgent {
                    deadline,
                    report: self.report(),
                });
            }
            std::thread::sleep(PROBE_INTERVAL);
        }
    }

    /// The hybrid vsock socket vhost-device-vsock serves for the VM.
    pub fn uds(&self) -> PathBuf {
        self.dir.path().join("vm.vsock")
    }

    /// The agent's address (`hvsock-uds://…`, the agent's default port).
    pub fn addr(&self) -> Address {
        Address::HybridVsock {
            path: self.uds(),
            port: AGENT_VSOCK_PORT,
        }
    }

    /// The VM's key file, which its agent requires (`--identity`).
    pub fn identity(&self) -> &Path {
        &self.identity
    }

    /// The VM's key.
    pub fn psk(&self) -> &Psk {
        &self.psk
    }

    /// The directory with the VM's logs (console.log, qemu.err, backend.*).
    pub fn log_dir(&self) -> &Path {
        self.dir.path()
    }

    /// The guest's serial console so far.
    pub fn console(&self) -> String {
        self.logs.console()
    }

    /// The VM's state for a failure message: which backend (patched or
    /// not), the guest's last entropy report, and the ends of the console
    /// and of the backend's and QEMU's logs.
    pub fn report(&self) -> String {
        self.logs.report()
    }

    /// QEMU's process id.
    pub fn qemu_pid(&self) -> u32 {
        lock(&self.qemu).pid()
    }

    /// Pauses the guest (QMP `stop`, as `virsh suspend` does): its vCPUs
    /// stop, while QEMU and the vsock backend keep running (connections to
    /// the guest are accepted by the backend and wait).
    pub fn pause(&self) -> Result<(), VmError> {
        self.qmp("stop").map(drop)
    }

    /// Resumes a paused guest (QMP `cont`).
    pub fn resume(&self) -> Result<(), VmError> {
        self.qmp("cont").map(drop)
    }

    /// QMP `query-status`: `{"status": "running" | "paused", ...}`.
    pub fn status(&self) -> Result<serde_json::Value, VmError> {
        self.qmp("query-status")
    }

    fn qmp(&self, command: &str) -> Result<serde_json::Value, VmError> {
        qmp::run(&self.dir.path().join("qmp.sock"), command)
            .map_err(io_error(format!("run QMP {command}")))
    }

    /// Kills the vsock backend at once (SIGKILL by PID) under the running
    /// guest: the VM's hybrid vsock socket stops answering.
    pub fn kill_backend(&mut self) -> std::io::Result<()> {
        lock(&self.backend).kill()
    }

    /// vhost-device-vsock's process id.
    pub fn backend_pid(&self) -> u32 {
        lock(&self.backend).pid()
    }

    /// Whether QEMU has exited (the guest powered off, with `-no-reboot`).
    pub fn qemu_exited(&mut self) -> bool {
        lock(&self.qemu).has_exited()
    }

    /// Kills QEMU at once (SIGKILL by PID): the guest just stops existing.
    pub fn kill_qemu(&mut self) -> std::io::Result<()> {
        lock(&self.qemu).kill()
    }

    /// A blocking stream to guest vsock `port` through the hybrid socket
    /// (`CONNECT <port>` answered by `OK …`), for programs that are not
    /// guestcomm (qemu-ga).
    pub fn connect_port(&self, port: u32) -> Result<StdUnixStream, VmError> {
        let uds = self.uds();
        let stream = self.rt.block_on(async {
            let mut stream = tokio::net::UnixStream::connect(&uds)
                .await
                .map_err(HybridError::Io)?;
            guestcomm_transport::hybrid::handshake(&mut stream, port).await?;
            stream.into_std().map_err(HybridError::Io)
        });
        let stream = stream.map_err(|source| VmError::Connect { port, source })?;
        stream
            .set_nonblocking(false)
            .map_err(io_error("make the guest stream blocking"))?;
        Ok(stream)
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        let deadline_passed = self.watchdog.as_mut().is_some_and(Watchdog::stop);
        let _ = lock(&self.qemu).kill();
        let _ = lock(&self.backend).kill();
        // A test that went on after its VM was killed must not pass.
        if deadline_passed && !std::thread::panicking() {
            panic!("the VM test ran past its deadline (the VM's state is printed above)");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_image_is_unavailable_not_a_failure() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = match Vm::boot(&VmSpec::new(dir.path())) {
            Err(e) => e,
            Ok(_) => panic!("booted without an image"),
        };
        assert!(err.is_unavailable(), "{err}");
        assert!(err.to_string().contains("run scripts/vm/build-image"));
        let failed = VmError::NoBackendSocket {
            report: String::new(),
        };
        assert!(!failed.is_unavailable());
    }

    #[test]
    fn the_cpu_option_is_the_model_with_rdrand_as_the_entropy_says() {
        let mut spec = VmSpec::new("/nowhere");
        assert_eq!(spec.cpu_option(), "qemu64,rdrand=off");
        spec.entropy = GuestEntropy::Rdrand;
        assert_eq!(spec.cpu_option(), "qemu64,+rdrand");
        spec.cpu_model = "max".into();
        assert_eq!(spec.cpu_option(), "max,+rdrand");
        spec.entropy = GuestEntropy::None;
        assert_eq!(spec.cpu_option(), "max,rdrand=off");
    }

    #[test]
    fn tools_are_found_in_the_given_directories_first() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fake = dir.path().join("sh");
        std::fs::write(&fake, b"").expect("write");
        assert_eq!(find_tool("sh", &[dir.path().to_path_buf()]), Some(fake));
        assert!(find_tool("no-such-tool-anywhere", &[]).is_none());
    }
}
