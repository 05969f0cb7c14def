//! Case G (in a VM): guestcomm and qemu-ga side by side inside one
//! real TCG guest, both agents listening on AF_VSOCK in the guest and both
//! reached from the host through the same vhost-device-vsock hybrid socket
//! (`CONNECT <port>`), so both pay the same transport. The image is built by
//! `scripts/vm/build-image --with-qemu-ga` (target/vm-compare); the VM is
//! booted by `guestcomm-vmtest` and killed by PID at the end.
//!
//! Workloads, each path once per round in an order that rotates:
//! - exec latency of `true` ([`EXEC_SAMPLES`] per path after [`WARMUP`]):
//!   guestcomm library (connect + handshake with the VM's key + exec), the
//!   CLI, and qemu-ga `guest-exec` + `guest-exec-status` polled without pause
//!   on a kept connection;
//! - command output, 16 MiB of `dd if=/dev/zero bs=64k` ([`ROUNDS`]):
//!   guestcomm library, streamed; qemu-ga capture-output (returned after
//!   exit, base64, capped at 16 MiB, so 16 MiB is the most both can move).
//!   Not `head -c` as on the host: the guest's busybox `head` writes in small
//!   pieces and alone needs over a second for 16 MiB under TCG;
//! - file copy of [`COPY_BYTES`] each way ([`ROUNDS`]): `guestcomm cp` and
//!   qemu-ga `guest-file-write`/`guest-file-read` (base64, 4 MiB chunks);
//!   guest files on the guest's tmpfs, host files fsynced;
//! - resident memory of both agents in the guest, idle and after the
//!   workloads, each agent's /proc/PID/status read through the other one,
//!   so that neither is busy when it is measured.

use std::fs::File;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use guestcomm_vmtest::{run_with_deadline, Vm, VmSpec};
use tokio::runtime::Runtime;

use crate::cases::{library_capture, library_output, library_true_keyed, rotated, CLIENT_NAME};
use crate::compare::Row;
use crate::daemon::status_field_mib;
use crate::qga::QgaClient;
use crate::stats::Samples;

/// Exec samples per path.
pub(crate) const EXEC_SAMPLES: usize = 100;
/// Unmeasured exec rounds first.
const WARMUP: usize = 5;
/// Rounds of the output and copy workloads.
pub(crate) const ROUNDS: usize = 5;
/// Command output per run: qemu-ga's capture cap (`GUEST_EXEC_MAX_OUTPUT`).
pub(crate) const OUTPUT_BYTES: u64 = crate::qga::QGA_MAX_OUTPUT_BYTES;
/// The command that writes [`OUTPUT_BYTES`] in the guest (64 KiB writes).
pub(crate) const OUTPUT_COMMAND: [&str; 4] = ["dd", "if=/dev/zero", "bs=64k", "count=256"];
/// File copied each way: TCG is slow, and the guest keeps it in RAM.
pub(crate) const COPY_BYTES: u64 = 32 * 1024 * 1024;
/// Guest memory: two copies of the file on tmpfs, the agents, qemu-ga's
/// base64 buffers.
const GUEST_MEMORY_MIB: u32 = 512;
/// Any single operation in the guest (an unpatched vsock backend can stall:
/// docs/DEPLOYMENT.md).
const OPERATION_DEADLINE: Duration = Duration::from_secs(300);
/// qemu-ga may start listening just after the guestcomm agent.
const QGA_CONNECT_DEADLINE: Duration = Duration::from_secs(30);
/// Where the files live in the guest (tmpfs).
const GUEST_SRC: &str = "/tmp/bench-src";
const GUEST_DST: &str = "/tmp/bench-dst";

/// What `OUT/image.txt` of a `--with-qemu-ga` image says.
#[derive(Debug, PartialEq)]
pub(crate) struct Image {
    /// The guest's kernel package.
    pub(crate) kernel: String,
    /// `guestcomm-agent --version` of the agent in the image.
    pub(crate) agent: String,
    /// `qemu-ga --version` of the qemu-ga in the image.
    pub(crate) qga: String,
    /// qemu-ga's vsock port in the guest.
    pub(crate) qga_port: u32,
}

/// Parses `image.txt` (`key=value` lines); says why the image cannot serve
/// this case (no qemu-ga: built without `--with-qemu-ga`).
pub(crate) fn parse_image(text: &str) -> Result<Image, String> {
    let get = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
            .map(|v| v.trim().to_string())
    };
    let qga = get("qemu-ga").ok_or("the image has no qemu-ga (build it with --with-qemu-ga)")?;
    let port = get("qemu-ga-port").ok_or("image.txt names no qemu-ga-port")?;
    let qga_port = port
        .parse()
        .map_err(|_| format!("qemu-ga-port {port:?} in image.txt is not a port number"))?;
    Ok(Image {
        kernel: get("kernel").unwrap_or_else(|| "unknown".into()),
        agent: get("agent").unwrap_or_else(|| "unknown".into()),
        qga,
        qga_port,
    })
}

/// The image in `dir`, or why this case must be skipped.
pub(crate) fn find_image(dir: &Path) -> Result<Image, String> {
    let manifest = dir.join("image.txt");
    let text = std::fs::read_to_string(&manifest).map_err(|_| {
        format!(
            "no VM image in {} (build it: cargo build --profile agent -p guestcomm-agent && bash scripts/vm/build-image --with-qemu-ga)",
            dir.display()
        )
    })?;
    parse_image(&text).map_err(|why| format!("{}: {why}", manifest.display()))
}

/// Memory of one agent in the guest, MiB.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct GuestMemory {
    /// Resident set when idle: total, anonymous, file-backed.
    pub(crate) idle: [f64; 3],
    /// Resident set after the workloads.
    pub(crate) after: f64,
    /// Peak resident set (VmHWM) after the workloads.
    pub(crate) peak: f64,
}

/// Reads `VmRSS`, `RssAnon`, `RssFile` + `RssShmem` (the guest's files are
/// on its initramfs, a tmpfs: its programs' pages count as shared memory)
/// and `VmHWM` of a status text.
pub(crate) fn parse_memory(status: &str) -> anyhow::Result<[f64; 4]> {
    let field = |name: &str| {
        status_field_mib(status, name).with_context(|| format!("no {name} in {status:?}"))
    };
    Ok([
        field("VmRSS")?,
        field("RssAnon")?,
        field("RssFile")? + field("RssShmem")?,
        field("VmHWM")?,
    ])
}

/// Everything case G measured, with the paired ratios against qemu-ga.
pub(crate) struct VmComparison {
    pub(crate) image: Image,
    pub(crate) latency: Vec<Row>,
    /// guestcomm's connect + authenticated handshake alone, ms.
    pub(crate) handshake: Samples,
    pub(crate) output: Vec<Row>,
    pub(crate) copy_to: Vec<Row>,
    pub(crate) copy_from: Vec<Row>,
    pub(crate) agent_memory: GuestMemory,
    pub(crate) qga_memory: GuestMemory,
    /// `/proc/loadavg` of the host before and after.
    pub(crate) load: [String; 2],
}

fn row(system: &'static str, path: &'static str) -> Row {
    Row {
        system,
        path,
        samples: Samples::default(),
    }
}

/// The measured guest: the VM, the bench's runtime, the CLI, qemu-ga.
struct Guest<'a> {
    vm: Vm,
    rt: &'a Runtime,
    cli: &'a Path,
    qga: Option<QgaClient>,
}

impl Guest<'_> {
    fn cli(&self, args: &[&str]) -> anyhow::Result<Duration> {
        let mut cmd = Command::new(self.cli);
        cmd.arg(args[0]).arg("--identity").arg(self.vm.identity());
        cmd.args(&args[1..]);
        let start = Instant::now();
        let out = run_with_deadline(cmd, None, OPERATION_DEADLINE)?;
        let elapsed = start.elapsed();
        if !out.status.success() {
            bail!(
                "guestcomm {}: {}: {}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(elapsed)
    }

    /// Runs a guestcomm library future with the deadline.
    fn library<T>(
        &self,
        what: &str,
        f: impl std::future::Future<Output = anyhow::Result<T>>,
    ) -> anyhow::Result<T> {
        self.rt
            .block_on(async { tokio::time::timeout(OPERATION_DEADLINE, f).await })
            .with_context(|| format!("{what} through guestcomm ran past {OPERATION_DEADLINE:?}"))?
            .with_context(|| format!("{what} through guestcomm failed"))
    }

    fn qga(&mut self) -> anyhow::Result<&mut QgaClient> {
        self.qga.as_mut().context("qemu-ga is not connected")
    }

    /// qemu-ga's /proc/PID/status, read through guestcomm.
    fn qga_status(&self) -> anyhow::Result<[f64; 4]> {
        let addr = self.vm.addr();
        let psk = self.vm.psk();
        let script = "cat /proc/$(pidof qemu-ga)/status";
        let out = self.library(
            "reading qemu-ga's memory",
            library_capture(&addr, Some(psk), "sh", &["-c", script]),
        )?;
        parse_memory(&String::from_utf8_lossy(&out))
    }

    /// guestcomm-agent's /proc/PID/status (the agent is init's child),
    /// read through qemu-ga.
    fn agent_status(&mut self) -> anyhow::Result<[f64; 4]> {
        let script = "for p in $(pidof guestcomm-agent); do \
             grep -q '^PPid:[[:space:]]*1$' /proc/$p/status && cat /proc/$p/status; done";
        let out = self.qga()?.exec("/bin/sh", &["-c", script], true)?;
        parse_memory(&String::from_utf8_lossy(&out))
    }
}

/// Runs case G in the image in `images`; `tool_dirs` are searched for QEMU
/// and vhost-device-vsock before `PATH`.
pub(crate) fn compare_vm(
    rt: &Runtime,
    cli: &Path,
    images: &Path,
    tool_dirs: Vec<std::path::PathBuf>,
    image: Image,
) -> anyhow::Result<VmComparison> {
    let load_before = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut spec = VmSpec::new(images);
    spec.tool_dirs = tool_dirs;
    spec.memory_mib = GUEST_MEMORY_MIB;
    let boot = Instant::now();
    let vm = Vm::boot(&spec).context("failed to boot the VM")?;
    eprintln!(
        "guestcomm-bench: G. VM up in {:.1} s (QEMU pid {}, logs in {})",
        boot.elapsed().as_secs_f64(),
        vm.qemu_pid(),
        vm.log_dir().display()
    );
    let mut g = Guest {
        vm,
        rt,
        cli,
        qga: None,
    };
    // qemu-ga first, while it is untouched (no connection yet).
    let qga_idle = g.qga_status()?;
    let deadline = Instant::now() + QGA_CONNECT_DEADLINE;
    let stream = loop {
        match g.vm.connect_port(image.qga_port) {
            Ok(s) => break s,
            Err(e) if Instant::now() > deadline => {
                return Err(e).context("qemu-ga does not answer in the guest")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    };
    stream.set_read_timeout(Some(OPERATION_DEADLINE))?;
    stream.set_write_timeout(Some(OPERATION_DEADLINE))?;
    g.qga = Some(QgaClient::over(stream)?);
    let agent_idle = g.agent_status()?;

    let phase = Instant::now();
    let (latency, handshake) = exec_latency(&mut g)?;
    let done = |what: &str, since: Instant| {
        eprintln!(
            "guestcomm-bench: G. {what} in {:.0} s",
            since.elapsed().as_secs_f64()
        );
        Instant::now()
    };
    let phase = done("exec latency", phase);
    let output = output_throughput(&mut g)?;
    let phase = done("command output", phase);
    let (copy_to, copy_from) = copies(&mut g)?;
    done("copies", phase);

    let qga_after = g.qga_status()?;
    let agent_after = g.agent_status()?;
    let memory = |idle: [f64; 4], after: [f64; 4]| GuestMemory {
        idle: [idle[0], idle[1], idle[2]],
        after: after[0],
        peak: after[3],
    };
    drop(g);
    Ok(VmComparison {
        image,
        latency,
        handshake,
        output,
        copy_to,
        copy_from,
        agent_memory: memory(agent_idle, agent_after),
        qga_memory: memory(qga_idle, qga_after),
        load: [
            load_before.trim().to_string(),
            std::fs::read_to_string("/proc/loadavg")
                .unwrap_or_default()
                .trim()
                .to_string(),
        ],
    })
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum ExecPath {
    Library,
    /// One connection kept open, each exec after the previous one.
    Reused,
    Cli,
    Qga,
    /// guestcomm's connect + handshake alone, for the breakdown.
    Handshake,
}

/// The exec rows, and guestcomm's connect + handshake alone.
fn exec_latency(g: &mut Guest<'_>) -> anyhow::Result<(Vec<Row>, Samples)> {
    use ExecPath::*;
    let paths = [Library, Reused, Cli, Qga, Handshake];
    let mut handshake = Samples::default();
    // (`ExecPath::Reused` is in scope: the struct by its path.)
    let mut reused = crate::cases::Reused::new(&g.vm.addr(), Some(g.vm.psk()));
    let mut rows = vec![
        row("guestcomm", "library, direct to the agent"),
        row(
            "guestcomm",
            "library, one connection, one exec after another",
        ),
        row("guestcomm", "CLI `guestcomm exec hvsock-uds://… -- true`"),
        row("qemu-ga", "guest-exec + guest-exec-status polling"),
    ];
    let addr = g.vm.addr();
    let addr_text = addr.to_string();
    for round in 0..WARMUP + EXEC_SAMPLES {
        for path in rotated(&paths, round) {
            let elapsed = match path {
                Library => g.library("exec `true`", library_true_keyed(&addr, Some(g.vm.psk())))?,
                Reused => g.library("exec `true` on one connection", reused.exec_true())?,
                Cli => g.cli(&["exec", &addr_text, "--", "true"])?,
                Qga => {
                    let start = Instant::now();
                    g.qga()?.exec("/bin/true", &[], false)?;
                    start.elapsed()
                }
                Handshake => g.library("a handshake", async {
                    let start = Instant::now();
                    guestcomm_client::connect_with(&addr, CLIENT_NAME, Some(g.vm.psk())).await?;
                    Ok(start.elapsed())
                })?,
            };
            if round < WARMUP {
                continue;
            }
            match paths.iter().position(|p| *p == path) {
                Some(at) if at < rows.len() => rows[at].samples.push_ms(elapsed),
                _ => handshake.push_ms(elapsed),
            }
        }
    }
    Ok((rows, handshake))
}

fn mb_per_s(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / d.as_secs_f64() / 1e6
}

fn output_throughput(g: &mut Guest<'_>) -> anyhow::Result<Vec<Row>> {
    let mut rows = vec![
        row("guestcomm", "library exec, streamed"),
        row("qemu-ga", "guest-exec capture-output"),
    ];
    let addr = g.vm.addr();
    for round in 0..ROUNDS {
        for path in rotated(&[0usize, 1], round) {
            let [program, ref args @ ..] = OUTPUT_COMMAND;
            let rate = if path == 0 {
                let d = g.library(
                    "exec `dd`",
                    library_output(&addr, Some(g.vm.psk()), program, args, OUTPUT_BYTES),
                )?;
                mb_per_s(OUTPUT_BYTES, d)
            } else {
                let start = Instant::now();
                let got = g.qga()?.exec(&format!("/bin/{program}"), args, true)?;
                let d = start.elapsed();
                ensure!(
                    got.len() as u64 == OUTPUT_BYTES,
                    "qemu-ga returned {} bytes",
                    got.len()
                );
                mb_per_s(OUTPUT_BYTES, d)
            };
            rows[path].samples.push(rate);
        }
    }
    Ok(rows)
}

/// Host → guest and guest → host copies: `(to, from)`.
fn copies(g: &mut Guest<'_>) -> anyhow::Result<(Vec<Row>, Vec<Row>)> {
    let dir = tempfile::tempdir().context("failed to create a temporary directory")?;
    let src = dir.path().join("source");
    crate::copy::make_file(&src, COPY_BYTES)?;
    let dst = dir.path().join("destination");
    let addr_text = g.vm.addr().to_string();
    let remote = |p: &str| format!("{addr_text}:{p}");
    let src_text = src.display().to_string();
    let dst_text = dst.display().to_string();
    // The guest's source file: the same bytes, put there untimed.
    g.cli(&["cp", &src_text, &remote(GUEST_SRC)])?;
    let rows = || {
        vec![
            row("guestcomm", "`guestcomm cp`"),
            row("qemu-ga", "guest-file-write/read, base64, 4 MiB"),
        ]
    };
    let (mut to, mut from) = (rows(), rows());
    for round in 0..ROUNDS {
        for (path, to_guest) in rotated(&[0usize, 1], round)
            .into_iter()
            .flat_map(|p| [(p, true), (p, false)])
        {
            let _ = std::fs::remove_file(&dst);
            nix::unistd::sync();
            let start = Instant::now();
            match (path, to_guest) {
                (0, true) => {
                    // The guest's copy of the previous round is replaced.
                    g.cli(&["cp", "--force", &src_text, &remote(GUEST_DST)])?;
                }
                (0, false) => {
                    g.cli(&["cp", &remote(GUEST_SRC), &dst_text])?;
                }
                (_, true) => {
                    g.qga()?.write_file(&src, Path::new(GUEST_DST))?;
                }
                (_, false) => {
                    g.qga()?.read_file(Path::new(GUEST_SRC), &dst)?;
                    File::open(&dst)?.sync_all()?;
                }
            }
            let rate = mb_per_s(COPY_BYTES, start.elapsed());
            let copied = if to_guest {
                let out = g.library(
                    "stat",
                    library_capture(
                        &g.vm.addr(),
                        Some(g.vm.psk()),
                        "stat",
                        &["-c", "%s", GUEST_DST],
                    ),
                )?;
                String::from_utf8_lossy(&out).trim().parse::<u64>().ok()
            } else {
                std::fs::metadata(&dst).ok().map(|m| m.len())
            };
            ensure!(
                copied == Some(COPY_BYTES),
                "a copy has {copied:?} bytes, expected {COPY_BYTES}"
            );
            let rows = if to_guest { &mut to } else { &mut from };
            rows[path].samples.push(rate);
        }
    }
    Ok((to, from))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_image_manifest_names_qemu_ga_and_its_port() {
        let text = "kernel=linux-image-6.1.0-56-cloud-amd64-unsigned\n\
                    agent=guestcomm-agent 0.1.0\n\
                    qemu-ga=QEMU Guest Agent 7.2.22\n\
                    qemu-ga-port=18244\n";
        assert_eq!(
            parse_image(text),
            Ok(Image {
                kernel: "linux-image-6.1.0-56-cloud-amd64-unsigned".into(),
                agent: "guestcomm-agent 0.1.0".into(),
                qga: "QEMU Guest Agent 7.2.22".into(),
                qga_port: 18244,
            })
        );
    }

    #[test]
    fn an_image_without_qemu_ga_says_how_to_build_one() {
        let err = parse_image("kernel=k\nagent=a\n").unwrap_err();
        assert!(err.contains("--with-qemu-ga"), "{err}");
        let err = parse_image("qemu-ga=x\nqemu-ga-port=port\n").unwrap_err();
        assert!(err.contains("not a port number"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let err = find_image(dir.path()).unwrap_err();
        assert!(err.contains("build-image --with-qemu-ga"), "{err}");
    }

    #[test]
    fn memory_comes_from_the_status_text() {
        let status = "Name:\tqemu-ga\nVmHWM:\t    8192 kB\nVmRSS:\t    6144 kB\n\
                      RssAnon:\t    1024 kB\nRssFile:\t    1024 kB\nRssShmem:\t    4096 kB\n";
        assert_eq!(parse_memory(status).unwrap(), [6.0, 1.0, 5.0, 8.0]);
        assert!(parse_memory("").is_err());
    }
}
