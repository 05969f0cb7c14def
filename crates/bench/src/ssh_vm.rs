//! Case K (in a VM): guestcomm against OpenSSH inside one real TCG guest,
//! both on vsock and both reached from the host through the same
//! vhost-device-vsock hybrid socket. The image is built by
//! `scripts/vm/build-image --with-sshd` (target/vm-ssh): Debian's sshd
//! started per vsock connection on port 22 in inetd mode (`sshd -i`, as
//! systemd's socket-activated sshd), with throwaway keys; ssh reaches it
//! with `ProxyCommand=guestcomm-bench --proxy-hvsock SOCKET 22` (see
//! `proxy.rs`). The VM boots with RDRAND (sshd needs randomness; a TCG
//! guest has none of its own) and is killed by PID at the end.
//!
//! Workloads, each path once per round in an order that rotates:
//! - exec latency of `true` ([`EXEC_SAMPLES`] per path after [`WARMUP`]):
//!   guestcomm library (connect + handshake with the VM's key + exec), the
//!   library on one kept connection, the CLI; `ssh host true` through a
//!   ControlMaster connection, and with a new connection each time
//!   ([`SSH_COLD_SAMPLES`]: each is a key exchange in the guest);
//! - command output, the same 16 MiB `dd` as case G ([`ROUNDS`]): the
//!   guestcomm library and CLI, and `ssh host dd …` through the master;
//! - file copy of [`COPY_BYTES`] each way ([`ROUNDS`]): `guestcomm cp`
//!   against `scp` (SFTP protocol, OpenSSH's default since 9.0), `scp -O`
//!   (the old SCP protocol) and `sftp -b`, each through the master; guest
//!   files on the guest's tmpfs, host files fsynced;
//! - where the time goes: the guest CPU time sshd (with its children) and
//!   guestcomm-agent (with its children) spend per exec and per output
//!   round, read from the guest's /proc through guestcomm between rounds;
//! - the agent's start to its first answered exec, in the guest, right
//!   after boot, with RDRAND (see `vm_startup.rs`; case G measures it
//!   without).
//!
//! The guest's CPU model is `--guest-cpu` (default `qemu64`), named in the
//! report.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use guestcomm_vmtest::{run_with_deadline, GuestEntropy};
use tokio::runtime::Runtime;

use crate::cases::{library_output, library_true_keyed, rotated};
use crate::compare::Row;
use crate::vm_guest::{
    agent_proc_script, copy_rounds, image_field, load_average, mb_per_s, phase_done, read_manifest,
    row, section_name, Guest, EXEC_SAMPLES, GUEST_DST, GUEST_SRC, OPERATION_DEADLINE, OUTPUT_BYTES,
    OUTPUT_COMMAND, ROUNDS, WARMUP,
};
use crate::vm_startup::Startup;

/// Exec samples of ssh with a new connection each: every one is a key
/// exchange and a signature in the emulated guest.
pub(crate) const SSH_COLD_SAMPLES: usize = 20;
/// sshd's first connection (socat starts after the agent).
const SSH_READY_DEADLINE: Duration = Duration::from_secs(60);
/// The host name ssh is given: the known_hosts entry's name (the proxy
/// decides where the connection goes).
const HOST_ALIAS: &str = "guestcomm-vm";
/// The guest's clock ticks per second (`getconf CLK_TCK` on Linux x86-64).
const GUEST_CLOCK_TICKS: f64 = 100.0;

/// What `OUT/image.txt` of a `--with-sshd` image says, and where its keys are.
#[derive(Debug, PartialEq)]
pub(crate) struct Image {
    /// The guest's kernel package.
    pub(crate) kernel: String,
    /// `guestcomm-agent --version` of the agent in the image.
    pub(crate) agent: String,
    /// The sshd package in the image.
    pub(crate) sshd: String,
    /// The socat package that accepts the vsock connections.
    pub(crate) socat: String,
    /// sshd's vsock port in the guest.
    pub(crate) port: u32,
    /// `OUT/ssh`: client_key (root's authorized key) and known_hosts.
    pub(crate) keys: PathBuf,
}

/// Parses `image.txt` (`key=value` lines); says why the image cannot serve
/// this case (no sshd: built without `--with-sshd`).
pub(crate) fn parse_image(text: &str, keys: PathBuf) -> Result<Image, String> {
    let get = |key: &str| image_field(text, key);
    let sshd = get("sshd").ok_or("the image has no sshd (build it with --with-sshd)")?;
    let port = get("sshd-port").ok_or("image.txt names no sshd-port")?;
    let port = port
        .parse()
        .map_err(|_| format!("sshd-port {port:?} in image.txt is not a port number"))?;
    Ok(Image {
        kernel: get("kernel").unwrap_or_else(|| "unknown".into()),
        agent: get("agent").unwrap_or_else(|| "unknown".into()),
        sshd,
        socat: get("socat").unwrap_or_else(|| "unknown".into()),
        port,
        keys,
    })
}

/// The image in `dir`, or why this case must be skipped.
pub(crate) fn find_image(dir: &Path) -> Result<Image, String> {
    let text = read_manifest(dir, "--with-sshd")?;
    let image = parse_image(&text, dir.join("ssh"))
        .map_err(|why| format!("{}: {why}", dir.join("image.txt").display()))?;
    for file in ["client_key", "known_hosts"] {
        if !image.keys.join(file).is_file() {
            return Err(format!(
                "{} is missing (rebuild the image with --with-sshd)",
                image.keys.join(file).display()
            ));
        }
    }
    Ok(image)
}

/// The ssh client side: command lines that reach the guest's sshd through
/// the proxy, and the master connection they can share (killed by PID on
/// drop).
struct Ssh {
    proxy: String,
    keys: PathBuf,
    control: PathBuf,
    master: Option<Child>,
}

impl Ssh {
    /// Options every ssh, scp and sftp command line shares: no user
    /// configuration, the throwaway key, the image's known_hosts checked
    /// strictly, no prompts.
    fn common(&self, cmd: &mut Command, master: bool) {
        cmd.args(["-F", "/dev/null", "-i"])
            .arg(self.keys.join("client_key"))
            .arg("-o")
            .arg(format!(
                "UserKnownHostsFile={}",
                self.keys.join("known_hosts").display()
            ))
            .args([
                "-o",
                "StrictHostKeyChecking=yes",
                "-o",
                "IdentitiesOnly=yes",
                "-o",
                "BatchMode=yes",
                "-o",
                "LogLevel=ERROR",
                "-o",
            ])
            .arg(format!("ProxyCommand={}", self.proxy));
        if master {
            cmd.arg("-o")
                .arg(format!("ControlPath={}", self.control.display()));
        }
    }

    /// `ssh root@guest REMOTE…`, through the master or on a new connection.
    fn ssh(&self, master: bool, remote: &[&str]) -> Command {
        let mut cmd = Command::new("ssh");
        self.common(&mut cmd, master);
        cmd.arg(format!("root@{HOST_ALIAS}")).args(remote);
        cmd
    }

    /// `scp [-O] -q SRC DST` through the master; a guest path is `:PATH`.
    fn scp(&self, legacy: bool, src: &str, dst: &str) -> Command {
        let remote = |p: &str| match p.strip_prefix(':') {
            Some(path) => format!("root@{HOST_ALIAS}:{path}"),
            None => p.to_string(),
        };
        let mut cmd = Command::new("scp");
        if legacy {
            cmd.arg("-O");
        }
        self.common(&mut cmd, true);
        cmd.arg("-q").arg(remote(src)).arg(remote(dst));
        cmd
    }

    /// `sftp -b BATCH` through the master.
    fn sftp(&self, batch: &Path) -> Command {
        let mut cmd = Command::new("sftp");
        self.common(&mut cmd, true);
        cmd.arg("-q")
            .arg("-b")
            .arg(batch)
            .arg(format!("root@{HOST_ALIAS}"));
        cmd
    }

    /// Opens the master connection, retrying while the guest's sshd is not
    /// yet listening.
    fn start_master(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + SSH_READY_DEADLINE;
        loop {
            let mut cmd = Command::new("ssh");
            self.common(&mut cmd, false);
            cmd.args(["-M", "-N", "-o"])
                .arg(format!("ControlPath={}", self.control.display()))
                .arg(format!("root@{HOST_ALIAS}"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped());
            let mut child = cmd
                .spawn()
                .context("failed to start ssh (openssh-client)")?;
            loop {
                if self.control.exists() {
                    self.master = Some(child);
                    return Ok(());
                }
                if let Some(status) = child.try_wait()? {
                    let mut why = String::new();
                    if let Some(mut err) = child.stderr.take() {
                        use std::io::Read;
                        let _ = err.read_to_string(&mut why);
                    }
                    if Instant::now() > deadline {
                        bail!(
                            "the ssh master connection to the guest failed: {status}: {}",
                            why.trim()
                        );
                    }
                    break;
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    bail!("the ssh master connection did not come up in {SSH_READY_DEADLINE:?}");
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

impl Drop for Ssh {
    fn drop(&mut self) {
        if let Some(master) = self.master.as_mut() {
            let _ = master.kill();
            let _ = master.wait();
        }
    }
}

/// Guest CPU time (user + system, with reaped children) of a program's
/// processes, from their /proc/PID/stat lines, in seconds.
pub(crate) fn cpu_seconds(stat_lines: &str) -> anyhow::Result<f64> {
    let mut ticks = 0u64;
    for line in stat_lines.lines().filter(|l| !l.trim().is_empty()) {
        // The command name may hold spaces: fields count from after its ')'.
        let rest = line
            .rsplit_once(')')
            .with_context(|| format!("not a /proc/PID/stat line: {line:?}"))?
            .1;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // utime, stime, cutime, cstime are fields 14-17; `rest` starts at 3.
        for i in 11..15 {
            let field = fields
                .get(i)
                .with_context(|| format!("short /proc/PID/stat line: {line:?}"))?;
            ticks += field
                .parse::<u64>()
                .with_context(|| format!("field {} of {line:?}", i + 3))?;
        }
    }
    Ok(ticks as f64 / GUEST_CLOCK_TICKS)
}

/// Guest CPU per operation, ms: measured over `operations` operations.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct GuestCpu {
    /// Milliseconds of guest CPU per operation.
    pub(crate) per_op_ms: f64,
    /// Of the operations' wall time, the share the guest CPU was busy
    /// with them (0..1), when the wall time is known.
    pub(crate) busy: Option<f64>,
}

/// Everything case K measured.
pub(crate) struct SshComparison {
    pub(crate) image: Image,
    /// QEMU's `-cpu` value.
    pub(crate) cpu: String,
    /// The report section's name (`ssh-vm`, or one per CPU model).
    pub(crate) section: String,
    /// The agent's start to its first answered exec.
    pub(crate) startup: Startup,
    pub(crate) latency: Vec<Row>,
    pub(crate) output: Vec<Row>,
    pub(crate) copy_to: Vec<Row>,
    pub(crate) copy_from: Vec<Row>,
    /// Guest CPU of one new ssh connection running `true` (sshd and its
    /// children, under socat).
    pub(crate) cold_cpu: GuestCpu,
    /// Guest CPU of one guestcomm exec of `true`, the three guestcomm
    /// paths together (the agent and its children).
    pub(crate) exec_cpu: GuestCpu,
    /// Guest CPU per 16 MiB output round: guestcomm library, ssh.
    pub(crate) output_cpu: [GuestCpu; 2],
    /// `/proc/loadavg` of the host before and after.
    pub(crate) load: [String; 2],
}

/// CPU seconds so far of the guest processes named `program` (pidof).
fn cpu_of(g: &Guest<'_>, program: &str) -> anyhow::Result<f64> {
    let script = format!("for p in $(pidof {program}); do cat /proc/$p/stat; done");
    cpu_seconds(&g.shell("reading /proc", &script)?)
}

/// The guestcomm agent's CPU (its exec children are reaped into it).
fn agent_cpu(g: &Guest<'_>) -> anyhow::Result<f64> {
    cpu_seconds(&g.shell("reading the agent's /proc", &agent_proc_script("stat"))?)
}

/// Runs `cmd` (stdin closed), checks its exit status, and returns its
/// wall time.
fn timed(cmd: Command) -> anyhow::Result<Duration> {
    Ok(counted(cmd)?.0)
}

/// [`timed`], also returning how many bytes it wrote to stdout.
fn counted(cmd: Command) -> anyhow::Result<(Duration, u64)> {
    let shown = format!("{cmd:?}");
    let start = Instant::now();
    let out = run_with_deadline(cmd, None, OPERATION_DEADLINE)
        .with_context(|| format!("failed to run {shown}"))?;
    let elapsed = start.elapsed();
    if !out.status.success() {
        bail!(
            "{shown}: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok((elapsed, out.stdout.len() as u64))
}

/// Runs case K in the image in `images`; `tool_dirs` are searched for QEMU
/// and vhost-device-vsock before `PATH`; `proxy` is this executable; the
/// guest's CPU is `cpu_model`.
pub(crate) fn ssh_vm(
    rt: &Runtime,
    cli: &Path,
    proxy: &Path,
    images: &Path,
    tool_dirs: Vec<PathBuf>,
    (image, cpu_model): (Image, &str),
) -> anyhow::Result<SshComparison> {
    let load_before = load_average();
    // sshd draws from getrandom(): without RDRAND the guest's pool is not
    // initialized for minutes.
    let entropy = GuestEntropy::Rdrand;
    let g = Guest::boot('K', rt, cli, images, tool_dirs, (entropy, cpu_model))?;
    let phase = Instant::now();
    let startup = crate::vm_startup::measure(&g)?;
    phase_done('K', "agent start-up", phase);
    let control = tempfile::Builder::new()
        .prefix("guestcomm-bench-ssh-")
        .tempdir()?;
    let proxy_command = format!(
        "{} --proxy-hvsock {} {}",
        proxy.display(),
        g.vm.uds().display(),
        image.port
    );
    ensure!(
        !proxy_command.contains(['\'', '"', '%', '\\']) && !control.path().to_string_lossy().contains(' '),
        "paths with quotes, %, backslashes or spaces cannot go into ssh's ProxyCommand: {proxy_command}"
    );
    let mut ssh = Ssh {
        proxy: proxy_command,
        keys: image.keys.clone(),
        control: control.path().join("master.sock"),
        master: None,
    };
    ssh.start_master()?;

    let phase = Instant::now();
    let (latency, cold_cpu, exec_cpu) = exec_latency(&g, &ssh)?;
    let phase = phase_done('K', "exec latency", phase);
    let (output, output_cpu) = output_throughput(&g, &ssh)?;
    let phase = phase_done('K', "command output", phase);
    let (copy_to, copy_from) = copies(&g, &ssh)?;
    phase_done('K', "copies", phase);
    drop(ssh);
    drop(g);
    Ok(SshComparison {
        image,
        cpu: guestcomm_vmtest::cpu_option(cpu_model, entropy),
        section: section_name("ssh-vm", cpu_model),
        startup,
        latency,
        output,
        copy_to,
        copy_from,
        cold_cpu,
        exec_cpu,
        output_cpu,
        load: [load_before, load_average()],
    })
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum ExecPath {
    Library,
    Reused,
    Cli,
    SshMaster,
    SshCold,
}

/// The exec rows, the guest CPU of one new ssh connection and of one
/// guestcomm exec.
fn exec_latency(g: &Guest<'_>, ssh: &Ssh) -> anyhow::Result<(Vec<Row>, GuestCpu, GuestCpu)> {
    use ExecPath::*;
    let paths = [Library, Reused, Cli, SshMaster, SshCold];
    let mut reused = crate::cases::Reused::new(&g.vm.addr(), Some(g.vm.psk()));
    let mut rows = vec![
        row("guestcomm", "library, direct to the agent"),
        row(
            "guestcomm",
            "library, one connection, one exec after another",
        ),
        row("guestcomm", "CLI `guestcomm exec hvsock-uds://… -- true`"),
        row("OpenSSH", "`ssh host true`, ControlMaster connection"),
        row("OpenSSH", "`ssh host true`, new connection"),
    ];
    let addr = g.vm.addr();
    let addr_text = addr.to_string();
    // Every new ssh connection is a child of socat in the guest: its CPU
    // (sshd's, with the shell it ran) is reaped into socat's.
    let socat_before = cpu_of(g, "socat")?;
    let agent_before = agent_cpu(g)?;
    let (mut cold, mut cold_wall, mut ours) = (0usize, Duration::ZERO, 0usize);
    for round in 0..WARMUP + EXEC_SAMPLES {
        for path in rotated(&paths, round) {
            if path == SshCold && round >= WARMUP + SSH_COLD_SAMPLES {
                continue;
            }
            let elapsed = match path {
                Library => g.library("exec `true`", library_true_keyed(&addr, Some(g.vm.psk())))?,
                Reused => g.library("exec `true` on one connection", reused.exec_true())?,
                Cli => g.cli(&["exec", &addr_text, "--", "true"])?,
                SshMaster => timed(ssh.ssh(true, &["true"]))?,
                SshCold => timed(ssh.ssh(false, &["true"]))?,
            };
            if path == SshCold {
                cold += 1;
                cold_wall += elapsed;
            } else if path != SshMaster {
                ours += 1;
            }
            if round >= WARMUP {
                let at = paths.iter().position(|p| *p == path).unwrap_or(0);
                rows[at].samples.push_ms(elapsed);
            }
        }
    }
    let socat = cpu_of(g, "socat")? - socat_before;
    // (With one read of socat's /proc between the two: noise beside
    // hundreds of execs.)
    let agent = agent_cpu(g)? - agent_before;
    let cold_cpu = GuestCpu {
        per_op_ms: socat * 1e3 / cold.max(1) as f64,
        busy: Some(socat / cold_wall.as_secs_f64()),
    };
    let exec_cpu = GuestCpu {
        per_op_ms: agent * 1e3 / ours.max(1) as f64,
        busy: None,
    };
    Ok((rows, cold_cpu, exec_cpu))
}

/// The output rows, and the guest CPU per round of the guestcomm library
/// path and of the ssh path.
fn output_throughput(g: &Guest<'_>, ssh: &Ssh) -> anyhow::Result<(Vec<Row>, [GuestCpu; 2])> {
    let mut rows = vec![
        row("guestcomm", "library exec, streamed"),
        row("guestcomm", "CLI `guestcomm exec … -- dd …`"),
        row("OpenSSH", "`ssh host dd …`, ControlMaster connection"),
    ];
    let addr = g.vm.addr();
    let addr_text = addr.to_string();
    let [program, ref args @ ..] = OUTPUT_COMMAND;
    // (CPU seconds, wall seconds) summed over the rounds.
    let mut cpu = [(0.0f64, 0.0f64); 2];
    for round in 0..ROUNDS {
        for path in rotated(&[0usize, 1, 2], round) {
            // The agent's CPU is read before and after its library rounds,
            // sshd's (the master's session: ssh execs are its children)
            // around the ssh rounds.
            let before = match path {
                0 => Some(agent_cpu(g)?),
                2 => Some(cpu_of(g, "sshd")?),
                _ => None,
            };
            let elapsed = match path {
                0 => g.library(
                    "exec `dd`",
                    library_output(&addr, Some(g.vm.psk()), program, args, OUTPUT_BYTES),
                )?,
                1 => {
                    let mut cmd = Command::new(g.cli);
                    cmd.args(["exec", "--identity"])
                        .arg(g.vm.identity())
                        .args([addr_text.as_str(), "--"])
                        .args(OUTPUT_COMMAND);
                    let (d, n) = counted(cmd)?;
                    ensure!(n == OUTPUT_BYTES, "guestcomm exec wrote {n} bytes");
                    d
                }
                _ => {
                    let (d, n) = counted(ssh.ssh(true, &OUTPUT_COMMAND))?;
                    ensure!(n == OUTPUT_BYTES, "ssh wrote {n} bytes");
                    d
                }
            };
            if let Some(before) = before {
                let after = if path == 0 {
                    agent_cpu(g)?
                } else {
                    cpu_of(g, "sshd")?
                };
                let slot = &mut cpu[path / 2];
                slot.0 += after - before;
                slot.1 += elapsed.as_secs_f64();
            }
            rows[path].samples.push(mb_per_s(OUTPUT_BYTES, elapsed));
        }
    }
    let per_round = |(cpu, wall): (f64, f64)| GuestCpu {
        per_op_ms: cpu * 1e3 / ROUNDS as f64,
        busy: Some(cpu / wall),
    };
    Ok((rows, [per_round(cpu[0]), per_round(cpu[1])]))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum CopyPath {
    Guestcomm,
    Scp,
    ScpLegacy,
    Sftp,
}

/// Host → guest and guest → host copies: `(to, from)`.
fn copies(g: &Guest<'_>, ssh: &Ssh) -> anyhow::Result<(Vec<Row>, Vec<Row>)> {
    use CopyPath::*;
    let addr_text = g.vm.addr().to_string();
    let remote = |p: &str| format!("{addr_text}:{p}");
    // sftp's two batch files, written once (the copy's files are named
    // when the rounds start).
    let batches = tempfile::tempdir().context("failed to create a temporary directory")?;
    let batch = |to_guest: bool| batches.path().join(if to_guest { "put" } else { "get" });
    let rows = || {
        vec![
            row("guestcomm", "`guestcomm cp`"),
            row("OpenSSH", "`scp` (SFTP protocol), ControlMaster"),
            row("OpenSSH", "`scp -O` (SCP protocol), ControlMaster"),
            row("OpenSSH", "`sftp -b` put/get, ControlMaster"),
        ]
    };
    let paths = [Guestcomm, Scp, ScpLegacy, Sftp];
    copy_rounds(g, &paths, rows, |path, to_guest, files| {
        let (src, dst) = (
            files.src.display().to_string(),
            files.dst.display().to_string(),
        );
        if !batch(to_guest).exists() {
            std::fs::write(batch(true), format!("put {src} {GUEST_DST}\n"))?;
            std::fs::write(batch(false), format!("get {GUEST_SRC} {dst}\n"))?;
        }
        match (path, to_guest) {
            // The guest's copy of the previous round is replaced.
            (Guestcomm, true) => g.cli(&["cp", "--force", &src, &remote(GUEST_DST)])?,
            (Guestcomm, false) => g.cli(&["cp", &remote(GUEST_SRC), &dst])?,
            (Scp | ScpLegacy, true) => {
                timed(ssh.scp(path == ScpLegacy, &src, &format!(":{GUEST_DST}")))?
            }
            (Scp | ScpLegacy, false) => {
                timed(ssh.scp(path == ScpLegacy, &format!(":{GUEST_SRC}"), &dst))?
            }
            (Sftp, _) => timed(ssh.sftp(&batch(to_guest)))?,
        };
        if !to_guest && path != Guestcomm {
            // `guestcomm cp` fsyncs what it writes; so must the others.
            File::open(&files.dst)?.sync_all()?;
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_image_manifest_names_sshd_and_its_port() {
        let text = "kernel=linux-image-6.1.0-57-cloud-amd64-unsigned\n\
                    agent=guestcomm-agent 0.1.0\n\
                    sshd=OpenSSH sshd 1:9.2p1-2+deb12u10 (Debian)\n\
                    sshd-port=22\n\
                    socat=socat 1.7.4.4-2 (Debian)\n";
        let image = parse_image(text, PathBuf::from("/x/ssh")).unwrap();
        assert_eq!(image.sshd, "OpenSSH sshd 1:9.2p1-2+deb12u10 (Debian)");
        assert_eq!(image.port, 22);
        assert_eq!(image.socat, "socat 1.7.4.4-2 (Debian)");
        assert_eq!(image.keys, PathBuf::from("/x/ssh"));
    }

    #[test]
    fn an_image_without_sshd_says_how_to_build_one() {
        let err = parse_image("kernel=k\nagent=a\n", PathBuf::new()).unwrap_err();
        assert!(err.contains("--with-sshd"), "{err}");
        let err = parse_image("sshd=x\nsshd-port=ssh\n", PathBuf::new()).unwrap_err();
        assert!(err.contains("not a port number"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let err = find_image(dir.path()).unwrap_err();
        assert!(err.contains("build-image --with-sshd"), "{err}");
        std::fs::write(dir.path().join("image.txt"), "sshd=x\nsshd-port=22\n").unwrap();
        let err = find_image(dir.path()).unwrap_err();
        assert!(err.contains("client_key"), "{err}");
    }

    #[test]
    fn cpu_time_sums_user_system_and_reaped_children() {
        // pid (comm with spaces) state ppid … utime stime cutime cstime …
        let line = |comm: &str, times: &str| {
            format!("42 ({comm}) S 1 42 42 0 -1 4194560 100 0 0 0 {times} 20 0 1 0 5 1 2\n")
        };
        let text = line("sshd: root@notty", "10 5 30 15") + &line("socat", "1 1 0 0");
        assert!((cpu_seconds(&text).unwrap() - 0.62).abs() < 1e-9);
        assert_eq!(cpu_seconds("").unwrap(), 0.0);
        assert!(cpu_seconds("42 (x) S 1").is_err());
    }
}
