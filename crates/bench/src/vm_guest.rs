//! What the in-VM cases (G: qemu-ga, K: OpenSSH) share: the image
//! manifest, booting the test VM, and driving guestcomm in it (the CLI and
//! the library, each under a deadline), the guest's files and the checks
//! that a copy arrived whole.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use guestcomm_vmtest::{run_with_deadline, GuestEntropy, Vm, VmSpec};
use tokio::runtime::Runtime;

use crate::cases::library_capture;
use crate::compare::Row;
use crate::stats::Samples;

/// Exec samples per path.
pub(crate) const EXEC_SAMPLES: usize = 100;
/// Unmeasured exec rounds first.
pub(crate) const WARMUP: usize = 5;
/// Rounds of the output and copy workloads.
pub(crate) const ROUNDS: usize = 5;
/// Command output per run: qemu-ga's capture cap (`GUEST_EXEC_MAX_OUTPUT`).
pub(crate) const OUTPUT_BYTES: u64 = crate::qga::QGA_MAX_OUTPUT_BYTES;
/// The command that writes [`OUTPUT_BYTES`] in the guest (64 KiB writes).
pub(crate) const OUTPUT_COMMAND: [&str; 4] = ["dd", "if=/dev/zero", "bs=64k", "count=256"];
/// File copied each way: TCG is slow, and the guest keeps it in RAM.
pub(crate) const COPY_BYTES: u64 = 32 * 1024 * 1024;
/// Guest memory: two copies of the file on tmpfs, the agents, their buffers.
const GUEST_MEMORY_MIB: u32 = 512;
/// Any single operation in the guest (an unpatched vsock backend can stall:
/// docs/DEPLOYMENT.md).
pub(crate) const OPERATION_DEADLINE: Duration = Duration::from_secs(300);
/// Where the copied files live in the guest (tmpfs).
pub(crate) const GUEST_SRC: &str = "/tmp/bench-src";
pub(crate) const GUEST_DST: &str = "/tmp/bench-dst";
/// A shell script printing guestcomm-agent's /proc/PID/`FILE` (the agent is
/// init's child; the sessions it forks are not).
pub(crate) fn agent_proc_script(file: &str) -> String {
    format!(
        "for p in $(pidof guestcomm-agent); do \
         grep -q '^PPid:[[:space:]]*1$' /proc/$p/status && cat /proc/$p/{file}; done"
    )
}

/// The value of `key` in an image manifest (`key=value` lines).
pub(crate) fn image_field(text: &str, key: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .map(|v| v.trim().to_string())
}

/// The manifest of the image in `dir`, or how to build one with `option`.
pub(crate) fn read_manifest(dir: &Path, option: &str) -> Result<String, String> {
    std::fs::read_to_string(dir.join("image.txt")).map_err(|_| {
        format!(
            "no VM image in {} (build it: RUSTFLAGS='-C target-feature=+crt-static' cargo build --profile agent --target x86_64-unknown-linux-gnu -p guestcomm-agent && bash scripts/vm/build-image {option})",
            dir.display()
        )
    })
}

/// The report section of case `base` (its `<!-- bench:NAME:… -->`
/// markers) for a guest with CPU model `cpu_model`: `base` itself for the
/// default model, else `BASE-cpu-MODEL` (letters, digits and `-` kept), so
/// that a run on another CPU model gets a section of its own.
pub(crate) fn section_name(base: &str, cpu_model: &str) -> String {
    if cpu_model == guestcomm_vmtest::DEFAULT_CPU_MODEL {
        return base.to_string();
    }
    let model: String = cpu_model
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    format!("{base}-cpu-{}", model.trim_matches('-'))
}

/// For a report on `-cpu CPU`: what its title adds and the bench's option
/// to add to its command line, both empty for the default CPU model.
pub(crate) fn cpu_model_notes(cpu: &str) -> (String, String) {
    let model = cpu.split(',').next().unwrap_or_default();
    if model == guestcomm_vmtest::DEFAULT_CPU_MODEL {
        return (String::new(), String::new());
    }
    (
        format!(", CPU model `{model}`"),
        format!(" --guest-cpu {model}"),
    )
}

/// An empty row of a table.
pub(crate) fn row(system: &'static str, path: &'static str) -> Row {
    Row {
        system,
        path,
        samples: Samples::default(),
    }
}

/// 10^6 bytes per second.
pub(crate) fn mb_per_s(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / d.as_secs_f64() / 1e6
}

/// The host's `/proc/loadavg`, for a report.
pub(crate) fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// Prints that phase `what` of case `case` took since `since`; returns now.
pub(crate) fn phase_done(case: char, what: &str, since: Instant) -> Instant {
    eprintln!(
        "guestcomm-bench: {case}. {what} in {:.0} s",
        since.elapsed().as_secs_f64()
    );
    Instant::now()
}

/// The measured guest: the VM, the bench's runtime, the CLI.
pub(crate) struct Guest<'a> {
    pub(crate) vm: Vm,
    pub(crate) rt: &'a Runtime,
    pub(crate) cli: &'a Path,
}

impl<'a> Guest<'a> {
    /// Boots the image in `images` for case `case` with `-cpu
    /// CPU_MODEL,…` and says so.
    pub(crate) fn boot(
        case: char,
        rt: &'a Runtime,
        cli: &'a Path,
        images: &Path,
        tool_dirs: Vec<PathBuf>,
        (entropy, cpu_model): (GuestEntropy, &str),
    ) -> anyhow::Result<Self> {
        let mut spec = VmSpec::new(images);
        spec.tool_dirs = tool_dirs;
        spec.memory_mib = GUEST_MEMORY_MIB;
        spec.entropy = entropy;
        spec.cpu_model = cpu_model.to_string();
        let boot = Instant::now();
        let vm = Vm::boot(&spec).context("failed to boot the VM")?;
        eprintln!(
            "guestcomm-bench: {case}. VM up in {:.1} s (-cpu {}, QEMU pid {}, logs in {})",
            boot.elapsed().as_secs_f64(),
            spec.cpu_option(),
            vm.qemu_pid(),
            vm.log_dir().display()
        );
        Ok(Self { vm, rt, cli })
    }

    /// `guestcomm ARGS[0] --identity KEY ARGS[1..]`, timed.
    pub(crate) fn cli(&self, args: &[&str]) -> anyhow::Result<Duration> {
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
    pub(crate) fn library<T>(
        &self,
        what: &str,
        f: impl std::future::Future<Output = anyhow::Result<T>>,
    ) -> anyhow::Result<T> {
        self.rt
            .block_on(async { tokio::time::timeout(OPERATION_DEADLINE, f).await })
            .with_context(|| format!("{what} through guestcomm ran past {OPERATION_DEADLINE:?}"))?
            .with_context(|| format!("{what} through guestcomm failed"))
    }

    /// The stdout of `sh -c SCRIPT` in the guest, through the library.
    pub(crate) fn shell(&self, what: &str, script: &str) -> anyhow::Result<String> {
        let out = self.library(
            what,
            library_capture(&self.vm.addr(), Some(self.vm.psk()), "sh", &["-c", script]),
        )?;
        Ok(String::from_utf8_lossy(&out).into_owned())
    }

    /// Checks that a copy arrived whole: [`GUEST_DST`] in the guest, or
    /// `dst` on the host.
    fn check_copied(&self, to_guest: bool, dst: &Path) -> anyhow::Result<()> {
        let copied = if to_guest {
            let out = self.shell("stat", &format!("stat -c %s {GUEST_DST}"))?;
            out.trim().parse::<u64>().ok()
        } else {
            std::fs::metadata(dst).ok().map(|m| m.len())
        };
        ensure!(
            copied == Some(COPY_BYTES),
            "a copy has {copied:?} bytes, expected {COPY_BYTES}"
        );
        Ok(())
    }
}

/// The files of the copy workload: a host file of [`COPY_BYTES`] and its
/// destination, the guest's copy of it at [`GUEST_SRC`], and [`GUEST_DST`].
pub(crate) struct CopyFiles {
    /// The host's source file.
    pub(crate) src: PathBuf,
    /// Where a copy from the guest goes (removed before each copy).
    pub(crate) dst: PathBuf,
    _dir: tempfile::TempDir,
}

/// The copy workload: [`ROUNDS`] rounds, each path once per round in an
/// order that rotates, host → guest then guest → host; `copy(path,
/// to_guest, files)` copies (and must leave the destination on the host
/// fsynced), timed here, then checked whole. Returns the rows `rows` made,
/// `(to the guest, from the guest)`, in the order of `paths`.
pub(crate) fn copy_rounds<P: Copy + PartialEq>(
    g: &Guest<'_>,
    paths: &[P],
    rows: impl Fn() -> Vec<Row>,
    mut copy: impl FnMut(P, bool, &CopyFiles) -> anyhow::Result<()>,
) -> anyhow::Result<(Vec<Row>, Vec<Row>)> {
    let dir = tempfile::tempdir().context("failed to create a temporary directory")?;
    let files = CopyFiles {
        src: dir.path().join("source"),
        dst: dir.path().join("destination"),
        _dir: dir,
    };
    crate::copy::make_file(&files.src, COPY_BYTES)?;
    // The guest's source file: the same bytes, put there untimed.
    let remote = format!("{}:{GUEST_SRC}", g.vm.addr());
    g.cli(&["cp", &files.src.display().to_string(), &remote])?;
    let (mut to, mut from) = (rows(), rows());
    for round in 0..ROUNDS {
        for (path, to_guest) in crate::cases::rotated(paths, round)
            .into_iter()
            .flat_map(|p| [(p, true), (p, false)])
        {
            let _ = std::fs::remove_file(&files.dst);
            nix::unistd::sync();
            let start = Instant::now();
            copy(path, to_guest, &files)?;
            let rate = mb_per_s(COPY_BYTES, start.elapsed());
            g.check_copied(to_guest, &files.dst)?;
            let at = paths.iter().position(|p| *p == path).unwrap_or(0);
            let rows = if to_guest { &mut to } else { &mut from };
            rows[at].samples.push(rate);
        }
    }
    Ok((to, from))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_fields_are_found_by_exact_key() {
        let text = "sshd=OpenSSH\nsshd-port=22\n";
        assert_eq!(image_field(text, "sshd").as_deref(), Some("OpenSSH"));
        assert_eq!(image_field(text, "sshd-port").as_deref(), Some("22"));
        assert_eq!(image_field(text, "ssh"), None);
        let dir = tempfile::tempdir().unwrap();
        let err = read_manifest(dir.path(), "--with-sshd").unwrap_err();
        assert!(err.contains("build-image --with-sshd"), "{err}");
    }

    #[test]
    fn another_cpu_model_is_named_in_the_report() {
        assert_eq!(
            cpu_model_notes("qemu64,rdrand=off"),
            (String::new(), String::new())
        );
        assert_eq!(
            cpu_model_notes("max,+rdrand"),
            (", CPU model `max`".into(), " --guest-cpu max".into())
        );
    }

    #[test]
    fn another_cpu_model_gets_a_section_of_its_own() {
        assert_eq!(section_name("compare-vm", "qemu64"), "compare-vm");
        assert_eq!(section_name("compare-vm", "max"), "compare-vm-cpu-max");
        assert_eq!(
            section_name("ssh-vm", "Skylake-Client,+avx2"),
            "ssh-vm-cpu-skylake-client--avx2"
        );
    }
}
