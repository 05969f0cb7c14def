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
//!   so that neither is busy when it is measured;
//! - a bare vsock byte stream through the same socket in the same guest
//!   (`socat`, see `vm_bare.rs`), a path of its own in the output and copy
//!   rounds: the baseline of the output and copy targets;
//! - the agent's start to its first answered exec, in the guest, right
//!   after boot while the guest's random pool is not initialized (see
//!   `vm_startup.rs`).
//!
//! The guest's CPU model is `--guest-cpu` (default `qemu64`; `max` lets TCG
//! emulate SSE4.1 and AVX2), named in the report.

use std::fs::File;
use std::ops::Deref;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use guestcomm_vmtest::GuestEntropy;
use tokio::runtime::Runtime;

use crate::cases::{library_output, library_true_keyed, rotated, CLIENT_NAME};
use crate::compare::Row;
use crate::daemon::status_field_mib;
use crate::qga::QgaClient;
use crate::stats::Samples;
use crate::vm_guest::{
    agent_proc_script, copy_rounds, image_field, load_average, mb_per_s, phase_done, read_manifest,
    row, section_name, EXEC_SAMPLES, GUEST_DST, GUEST_SRC, OPERATION_DEADLINE, OUTPUT_BYTES,
    OUTPUT_COMMAND, ROUNDS, WARMUP,
};
use crate::vm_startup::Startup;

/// qemu-ga may start listening just after the guestcomm agent.
const QGA_CONNECT_DEADLINE: Duration = Duration::from_secs(30);

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
    /// The socat package of the bare stream.
    pub(crate) socat: String,
}

/// Parses `image.txt` (`key=value` lines); says why the image cannot serve
/// this case (no qemu-ga: built without `--with-qemu-ga`).
pub(crate) fn parse_image(text: &str) -> Result<Image, String> {
    let get = |key: &str| image_field(text, key);
    let qga = get("qemu-ga").ok_or("the image has no qemu-ga (build it with --with-qemu-ga)")?;
    let port = get("qemu-ga-port").ok_or("image.txt names no qemu-ga-port")?;
    let qga_port = port
        .parse()
        .map_err(|_| format!("qemu-ga-port {port:?} in image.txt is not a port number"))?;
    let socat = get("socat").ok_or(
        "the image has no socat for the bare vsock stream (rebuild it with --with-qemu-ga)",
    )?;
    Ok(Image {
        kernel: get("kernel").unwrap_or_else(|| "unknown".into()),
        agent: get("agent").unwrap_or_else(|| "unknown".into()),
        qga,
        qga_port,
        socat,
    })
}

/// The image in `dir`, or why this case must be skipped.
pub(crate) fn find_image(dir: &Path) -> Result<Image, String> {
    let text = read_manifest(dir, "--with-qemu-ga")?;
    parse_image(&text).map_err(|why| format!("{}: {why}", dir.join("image.txt").display()))
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

/// The system of the bare vsock stream's rows.
pub(crate) const BARE_SYSTEM: &str = "bare vsock";

/// Everything case G measured, with the paired ratios against qemu-ga.
pub(crate) struct VmComparison {
    pub(crate) image: Image,
    /// QEMU's `-cpu` value.
    pub(crate) cpu: String,
    /// The report section's name (`compare-vm`, or one per CPU model).
    pub(crate) section: String,
    /// The agent's start to its first answered exec.
    pub(crate) startup: Startup,
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

/// The measured guest (the VM, the bench's runtime, the CLI) and qemu-ga.
struct Guest<'a> {
    guest: crate::vm_guest::Guest<'a>,
    qga: Option<QgaClient>,
}

impl<'a> Deref for Guest<'a> {
    type Target = crate::vm_guest::Guest<'a>;

    fn deref(&self) -> &Self::Target {
        &self.guest
    }
}

impl Guest<'_> {
    fn qga(&mut self) -> anyhow::Result<&mut QgaClient> {
        self.qga.as_mut().context("qemu-ga is not connected")
    }

    /// qemu-ga's /proc/PID/status, read through guestcomm.
    fn qga_status(&self) -> anyhow::Result<[f64; 4]> {
        let out = self.shell(
            "reading qemu-ga's memory",
            "cat /proc/$(pidof qemu-ga)/status",
        )?;
        parse_memory(&out)
    }

    /// guestcomm-agent's /proc/PID/status (the agent is init's child),
    /// read through qemu-ga.
    fn agent_status(&mut self) -> anyhow::Result<[f64; 4]> {
        let script = agent_proc_script("status");
        let out = self.qga()?.exec("/bin/sh", &["-c", &script], true)?;
        parse_memory(&String::from_utf8_lossy(&out))
    }
}

/// Runs case G in the image in `images` on CPU model `cpu_model`;
/// `tool_dirs` are searched for QEMU and vhost-device-vsock before `PATH`.
pub(crate) fn compare_vm(
    rt: &Runtime,
    cli: &Path,
    images: &Path,
    tool_dirs: Vec<std::path::PathBuf>,
    (image, cpu_model): (Image, &str),
) -> anyhow::Result<VmComparison> {
    let load_before = load_average();
    let entropy = GuestEntropy::None;
    let guest =
        crate::vm_guest::Guest::boot('G', rt, cli, images, tool_dirs, (entropy, cpu_model))?;
    let cpu = guestcomm_vmtest::cpu_option(cpu_model, entropy);
    let mut g = Guest { guest, qga: None };
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

    // Right after boot, before the guest's random pool fills.
    let phase = Instant::now();
    let startup = crate::vm_startup::measure(&g)?;
    let phase = phase_done('G', "agent start-up", phase);
    crate::vm_bare::start(&g)?;
    let phase = phase_done('G', "bare stream ready", phase);
    let (latency, handshake) = exec_latency(&mut g)?;
    let phase = phase_done('G', "exec latency", phase);
    let output = output_throughput(&mut g)?;
    let phase = phase_done('G', "command output", phase);
    let (copy_to, copy_from) = copies(&mut g)?;
    phase_done('G', "copies", phase);

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
        cpu,
        section: section_name("compare-vm", cpu_model),
        startup,
        latency,
        handshake,
        output,
        copy_to,
        copy_from,
        agent_memory: memory(agent_idle, agent_after),
        qga_memory: memory(qga_idle, qga_after),
        load: [load_before, load_average()],
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

fn output_throughput(g: &mut Guest<'_>) -> anyhow::Result<Vec<Row>> {
    let mut rows = vec![
        row("guestcomm", "library exec, streamed"),
        row("qemu-ga", "guest-exec capture-output"),
        row(
            BARE_SYSTEM,
            "`dd` straight into the vsock connection, drained",
        ),
    ];
    let addr = g.vm.addr();
    for round in 0..ROUNDS {
        for path in rotated(&[0usize, 1, 2], round) {
            let [program, ref args @ ..] = OUTPUT_COMMAND;
            let rate = if path == 0 {
                let d = g.library(
                    "exec `dd`",
                    library_output(&addr, Some(g.vm.psk()), program, args, OUTPUT_BYTES),
                )?;
                mb_per_s(OUTPUT_BYTES, d)
            } else if path == 2 {
                mb_per_s(OUTPUT_BYTES, crate::vm_bare::output(g)?)
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
    let addr_text = g.vm.addr().to_string();
    let remote = |p: &str| format!("{addr_text}:{p}");
    let rows = || {
        vec![
            row("guestcomm", "`guestcomm cp`"),
            row("qemu-ga", "guest-file-write/read, base64, 4 MiB"),
            row(BARE_SYSTEM, "`socat` in the guest: tmpfs file ↔ vsock"),
        ]
    };
    let Guest { guest, qga } = g;
    let qga = qga.as_mut().context("qemu-ga is not connected")?;
    copy_rounds(guest, &[0usize, 1, 2], rows, |path, to_guest, files| {
        let (src, dst) = (
            files.src.display().to_string(),
            files.dst.display().to_string(),
        );
        match (path, to_guest) {
            // The guest's copy of the previous round is replaced.
            (0, true) => {
                guest.cli(&["cp", "--force", &src, &remote(GUEST_DST)])?;
            }
            (0, false) => {
                guest.cli(&["cp", &remote(GUEST_SRC), &dst])?;
            }
            (2, true) => crate::vm_bare::to_guest(guest, &files.src)?,
            (2, false) => crate::vm_bare::from_guest(guest, &files.dst)?,
            (_, true) => {
                qga.write_file(&files.src, Path::new(GUEST_DST))?;
            }
            (_, false) => {
                qga.read_file(Path::new(GUEST_SRC), &files.dst)?;
                File::open(&files.dst)?.sync_all()?;
            }
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_image_manifest_names_qemu_ga_and_its_port() {
        let text = "kernel=linux-image-6.1.0-56-cloud-amd64-unsigned\n\
                    agent=guestcomm-agent 0.1.0\n\
                    qemu-ga=QEMU Guest Agent 7.2.22\n\
                    qemu-ga-port=18244\n\
                    socat=socat 1.7.4.4-2 (Debian)\n";
        assert_eq!(
            parse_image(text),
            Ok(Image {
                kernel: "linux-image-6.1.0-56-cloud-amd64-unsigned".into(),
                agent: "guestcomm-agent 0.1.0".into(),
                qga: "QEMU Guest Agent 7.2.22".into(),
                qga_port: 18244,
                socat: "socat 1.7.4.4-2 (Debian)".into(),
            })
        );
    }

    #[test]
    fn an_image_without_qemu_ga_says_how_to_build_one() {
        let err = parse_image("kernel=k\nagent=a\n").unwrap_err();
        assert!(err.contains("--with-qemu-ga"), "{err}");
        let err = parse_image("qemu-ga=x\nqemu-ga-port=port\n").unwrap_err();
        assert!(err.contains("not a port number"), "{err}");
        let err = parse_image("qemu-ga=x\nqemu-ga-port=1\n").unwrap_err();
        assert!(err.contains("no socat"), "{err}");
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
