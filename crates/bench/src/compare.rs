//! Case E: guestcomm side by side with the QEMU guest agent and
//! OpenSSH, on one host, over Unix sockets (guestcomm, qemu-ga) and loopback
//! TCP (ssh), in one run, paths alternated round by round.
//!
//! - exec latency of `true`: guestcomm library and CLI straight to the agent,
//!   and through guestcommd; qemu-ga `guest-exec` + `guest-exec-status`
//!   polled without pause on a kept connection; `ssh host true` with a
//!   master connection and without;
//! - output throughput: `head -c 512MiB /dev/zero` through `guestcomm exec`
//!   and `ssh` (stdout to /dev/null); qemu-ga returns output only after exit,
//!   base64, and at most 16 MiB, so it moves 16 MiB;
//! - file copy of `--bytes` each way: `guestcomm cp`, `scp` (through the
//!   master), qemu-ga `guest-file-write`/`guest-file-read`; every path ends
//!   with the destination fsynced;
//! - memory: each agent's resident set idle (fresh process) and at its peak
//!   after the workloads (VmHWM); for ssh, the listening sshd idle (sessions
//!   are separate processes).
//!
//! Systems that are not installed are left out, and the report says so.

use std::fmt::Write as _;
use std::fs::File;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context;
use guestcomm_api::ApiClient;
use tokio::runtime::Runtime;

use crate::agent::AgentGuard;
use crate::cases::{exec_true_over, library_head, library_true, rotated, run_timed, Reused};
use crate::daemon::{status_mib, DaemonGuard};
use crate::qga::{QgaAgent, QGA_MAX_OUTPUT_BYTES};
use crate::report::Machine;
use crate::ssh::Sshd;
use crate::stats::{format_bytes, Samples};

/// Output moved per run in the throughput workload (the target's figure).
const OUTPUT_BYTES: u64 = 512 * 1024 * 1024;
/// `ssh` without a master connection is slow: at most this many samples.
const MAX_SSH_COLD_SAMPLES: usize = 30;

/// Where the binaries are.
pub(crate) struct Binaries<'a> {
    pub(crate) agent: &'a Path,
    pub(crate) cli: &'a Path,
    pub(crate) daemon: &'a Path,
}

/// One measured path of a workload.
pub(crate) struct Row {
    pub(crate) system: &'static str,
    pub(crate) path: &'static str,
    pub(crate) samples: Samples,
}

/// Resident memory of one agent, MiB.
pub(crate) struct Memory {
    pub(crate) system: &'static str,
    pub(crate) idle: f64,
    pub(crate) peak: Option<f64>,
}

/// Everything case E measured.
pub(crate) struct Comparison {
    pub(crate) latency: Vec<Row>,
    pub(crate) output: Vec<Row>,
    pub(crate) copy_to: Vec<Row>,
    pub(crate) copy_from: Vec<Row>,
    pub(crate) memory: Vec<Memory>,
    pub(crate) left_out: Vec<String>,
    pub(crate) iterations: usize,
    pub(crate) rounds: usize,
    pub(crate) bytes: u64,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Exec {
    Spawn,
    Library,
    Reused,
    Cli,
    Daemon,
    Qga,
    SshMaster,
    SshCold,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Bulk {
    Guestcomm,
    Qga,
    Ssh,
}

fn row(system: &'static str, path: &'static str) -> Row {
    Row {
        system,
        path,
        samples: Samples::default(),
    }
}

/// Runs case E: `iterations` exec samples per path, `rounds` of the bulk
/// workloads, copies of `bytes`.
pub(crate) fn compare(
    rt: &Runtime,
    bins: &Binaries<'_>,
    iterations: usize,
    rounds: usize,
    bytes: u64,
) -> anyhow::Result<Comparison> {
    let mut left_out = Vec::new();
    let agent = AgentGuard::start(bins.agent, rt)?;
    let agent_idle = status_mib(agent.pid(), "VmRSS")?;
    let addr = agent.addr().clone();
    let addr_text = addr.to_string();
    let daemon = DaemonGuard::start(bins.daemon, &[])?;
    let api = ApiClient::new(&daemon.api)?;
    rt.block_on(daemon.add_vm(&api, "bench", &addr_text))?;

    let qga = match crate::qga::find() {
        Some(program) => Some(QgaAgent::start(&program)?),
        None => {
            left_out.push("qemu-ga (Debian: qemu-guest-agent) is not installed".into());
            None
        }
    };
    let mut qga_client = qga.as_ref().map(QgaAgent::connect).transpose()?;
    let qga_idle = qga
        .as_ref()
        .map(|q| status_mib(q.pid(), "VmRSS"))
        .transpose()?;
    let mut sshd = match crate::ssh::available() {
        Ok(()) => Some(Sshd::start()?),
        Err(why) => {
            left_out.push(format!("OpenSSH: {why}"));
            None
        }
    };
    let sshd_idle = sshd
        .as_ref()
        .map(|s| status_mib(s.pid(), "VmRSS"))
        .transpose()?;
    if let Some(sshd) = sshd.as_mut() {
        sshd.start_master()?;
    }

    // Exec latency.
    let mut exec_paths = vec![
        Exec::Spawn,
        Exec::Library,
        Exec::Reused,
        Exec::Cli,
        Exec::Daemon,
    ];
    let mut reused = Reused::new(&addr, None);
    if qga.is_some() {
        exec_paths.push(Exec::Qga);
    }
    if sshd.is_some() {
        exec_paths.extend([Exec::SshMaster, Exec::SshCold]);
    }
    let mut latency: Vec<Row> = exec_paths
        .iter()
        .map(|p| match p {
            Exec::Spawn => row("local", "spawn `true` (std::process::Command)"),
            Exec::Library => row("guestcomm", "library, direct to the agent"),
            Exec::Reused => row(
                "guestcomm",
                "library, one connection, one exec after another",
            ),
            Exec::Cli => row("guestcomm", "CLI `guestcomm exec unix://… -- true`"),
            Exec::Daemon => row("guestcomm", "library, through guestcommd"),
            Exec::Qga => row("qemu-ga", "guest-exec + guest-exec-status polling"),
            Exec::SshMaster => row("OpenSSH", "`ssh host true`, master connection"),
            Exec::SshCold => row("OpenSSH", "`ssh host true`, new connection"),
        })
        .collect();
    for round in 0..iterations {
        for path in rotated(&exec_paths, round) {
            let i = exec_paths.iter().position(|p| *p == path).unwrap_or(0);
            let elapsed = match path {
                Exec::Spawn => run_timed(&mut Command::new("true"))?,
                Exec::Library => rt.block_on(library_true(&addr))?,
                Exec::Reused => rt.block_on(reused.exec_true())?,
                Exec::Cli => {
                    let mut cmd = Command::new(bins.cli);
                    run_timed(cmd.args(["exec", &addr_text, "--", "true"]))?
                }
                Exec::Daemon => rt.block_on(async {
                    let start = Instant::now();
                    let stream = api.upgrade_early("/v1/vms/bench/connect").await?;
                    exec_true_over(stream, "guestcommd").await?;
                    anyhow::Ok(start.elapsed())
                })?,
                Exec::Qga => {
                    let client = qga_client.as_mut().context("qemu-ga client")?;
                    let start = Instant::now();
                    client.exec("/bin/true", &[], false)?;
                    start.elapsed()
                }
                Exec::SshMaster | Exec::SshCold => {
                    if path == Exec::SshCold && round >= MAX_SSH_COLD_SAMPLES {
                        continue;
                    }
                    let sshd = sshd.as_ref().context("sshd")?;
                    run_timed(&mut sshd.ssh(path == Exec::SshMaster, &["true"]))?
                }
            };
            latency[i].samples.push_ms(elapsed);
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    // Output throughput, then copies: guestcomm, qemu-ga, ssh per round.
    let mut bulk = vec![Bulk::Guestcomm];
    if qga.is_some() {
        bulk.push(Bulk::Qga);
    }
    if sshd.is_some() {
        bulk.push(Bulk::Ssh);
    }
    let mut output: Vec<Row> = bulk
        .iter()
        .map(|b| match b {
            Bulk::Guestcomm => row("guestcomm", "library exec, streamed"),
            Bulk::Qga => row("qemu-ga", "guest-exec capture-output, 16 MiB"),
            Bulk::Ssh => row("OpenSSH", "`ssh host head …`, master"),
        })
        .collect();
    let mb_per_s = |n: u64, d: Duration| n as f64 / d.as_secs_f64() / 1e6;
    for round in 0..rounds {
        for b in rotated(&bulk, round) {
            let i = bulk.iter().position(|p| *p == b).unwrap_or(0);
            let rate = match b {
                Bulk::Guestcomm => {
                    let d = rt.block_on(library_head(&addr, OUTPUT_BYTES))?;
                    mb_per_s(OUTPUT_BYTES, d)
                }
                Bulk::Qga => {
                    let client = qga_client.as_mut().context("qemu-ga client")?;
                    let size = QGA_MAX_OUTPUT_BYTES.to_string();
                    let start = Instant::now();
                    let got = client
                        .exec("/usr/bin/head", &["-c", &size, "/dev/zero"], true)?
                        .len() as u64;
                    anyhow::ensure!(got == QGA_MAX_OUTPUT_BYTES, "qemu-ga returned {got} bytes");
                    mb_per_s(got, start.elapsed())
                }
                Bulk::Ssh => {
                    let sshd = sshd.as_ref().context("sshd")?;
                    let size = OUTPUT_BYTES.to_string();
                    let mut cmd = sshd.ssh(true, &["head", "-c", &size, "/dev/zero"]);
                    mb_per_s(OUTPUT_BYTES, run_timed(&mut cmd)?)
                }
            };
            output[i].samples.push(rate);
        }
    }

    let dir = tempfile::tempdir()?;
    let src = dir.path().join("source");
    crate::copy::make_file(&src, bytes)?;
    let in_guest = dir.path().join("in-guest");
    std::fs::copy(&src, &in_guest)?;
    let dst = dir.path().join("destination");
    let copy_row = |b: &Bulk| match b {
        Bulk::Guestcomm => row("guestcomm", "`guestcomm cp`"),
        Bulk::Qga => row("qemu-ga", "guest-file-write/read, base64, 4 MiB"),
        Bulk::Ssh => row("OpenSSH", "`scp`, master"),
    };
    let mut copy_to: Vec<Row> = bulk.iter().map(copy_row).collect();
    let mut copy_from: Vec<Row> = bulk.iter().map(copy_row).collect();
    let remote = |p: &Path| format!("{addr_text}:{}", p.display());
    let scp_remote = |p: &Path| format!("root@127.0.0.1:{}", p.display());
    for round in 0..rounds {
        for (to_guest, b) in rotated(&bulk, round)
            .into_iter()
            .flat_map(|b| [(true, b), (false, b)])
        {
            let i = bulk.iter().position(|p| *p == b).unwrap_or(0);
            let _ = std::fs::remove_file(&dst);
            nix::unistd::sync();
            let from = if to_guest { &src } else { &in_guest };
            let start = Instant::now();
            match b {
                Bulk::Guestcomm => {
                    let (a, z) = if to_guest {
                        (from.display().to_string(), remote(&dst))
                    } else {
                        (remote(from), dst.display().to_string())
                    };
                    run_timed(Command::new(bins.cli).args(["cp", &a, &z]))?;
                }
                Bulk::Qga => {
                    let client = qga_client.as_mut().context("qemu-ga client")?;
                    if to_guest {
                        client.write_file(from, &dst)?;
                        File::open(&dst)?.sync_all()?;
                    } else {
                        client.read_file(from, &dst)?;
                    }
                }
                Bulk::Ssh => {
                    let sshd = sshd.as_ref().context("sshd")?;
                    let (a, z) = if to_guest {
                        (from.display().to_string(), scp_remote(&dst))
                    } else {
                        (scp_remote(from), dst.display().to_string())
                    };
                    run_timed(&mut sshd.scp(true, &a, &z))?;
                    File::open(&dst)?.sync_all()?;
                }
            }
            let rate = mb_per_s(bytes, start.elapsed());
            anyhow::ensure!(
                std::fs::metadata(&dst)?.len() == bytes,
                "a copy is not {bytes} bytes long"
            );
            let rows = if to_guest {
                &mut copy_to
            } else {
                &mut copy_from
            };
            rows[i].samples.push(rate);
        }
    }

    let mut memory = vec![Memory {
        system: "guestcomm-agent",
        idle: agent_idle,
        peak: Some(status_mib(agent.pid(), "VmHWM")?),
    }];
    if let (Some(q), Some(idle)) = (qga.as_ref(), qga_idle) {
        memory.push(Memory {
            system: "qemu-ga",
            idle,
            peak: Some(status_mib(q.pid(), "VmHWM")?),
        });
    }
    if let Some(idle) = sshd_idle {
        memory.push(Memory {
            system: "sshd (listener)",
            idle,
            peak: None,
        });
    }
    Ok(Comparison {
        latency,
        output,
        copy_to,
        copy_from,
        memory,
        left_out,
        iterations,
        rounds,
        bytes,
    })
}

impl Comparison {
    fn median_of(rows: &[Row], system: &str, path_prefix: &str) -> Option<f64> {
        rows.iter()
            .find(|r| r.system == system && r.path.starts_with(path_prefix))
            .map(|r| r.samples.median())
    }

    /// The Markdown section of case E, markers included.
    pub(crate) fn render(&self, m: &Machine, versions: &str) -> String {
        let mut o = String::new();
        let _ = writeln!(o, "<!-- bench:compare:begin -->");
        let _ = writeln!(
            o,
            "## Side by side: guestcomm, the QEMU guest agent and OpenSSH\n"
        );
        let _ = writeln!(
            o,
            "Written by `target/release/guestcomm-bench --case compare --write docs/BENCHMARKS.md` \
             (method: `crates/bench/src/compare.rs`; charts in docs/img/). Every system runs on \
             this host: guestcomm-agent and qemu-ga on Unix sockets \
             (`qemu-ga -m unix-listen`), sshd on 127.0.0.1 with a throwaway key. What differs: \
             ssh encrypts everything (and scp/ssh pay TCP); qemu-ga moves bytes as base64 in JSON \
             and returns exec output only after the command exits, capped at 16 MiB. Files are in \
             the page cache (warm) and every copy ends with an fsync of the destination.\n"
        );
        o.push_str(&m.table());
        let _ = writeln!(o, "Versions: {versions}\n");
        for why in &self.left_out {
            let _ = writeln!(o, "- left out: {why}");
        }
        if !self.left_out.is_empty() {
            o.push('\n');
        }
        let _ = writeln!(
            o,
            "### Exec latency of `true`\n\n{} samples per path (new-connection ssh: {}), alternated.\n",
            self.iterations,
            self.iterations.min(MAX_SSH_COLD_SAMPLES)
        );
        let _ = writeln!(
            o,
            "| system | path | p50 ms | p99 ms |\n| --- | --- | ---: | ---: |"
        );
        for r in &self.latency {
            let _ = writeln!(
                o,
                "| {} | {} | {:.3} | {:.3} |",
                r.system,
                r.path,
                r.samples.median(),
                r.samples.percentile(99.0)
            );
        }
        let mut rates = |title: String, rows: &[Row]| {
            let _ = writeln!(
                o,
                "\n### {title}\n\n| system | path | median MB/s | min | max |\n| --- | --- | ---: | ---: | ---: |"
            );
            for r in rows {
                let _ = writeln!(
                    o,
                    "| {} | {} | {:.1} | {:.1} | {:.1} |",
                    r.system,
                    r.path,
                    r.samples.median(),
                    r.samples.min(),
                    r.samples.max()
                );
            }
        };
        rates(
            format!(
                "Command output (`head -c {} /dev/zero`), {} rounds",
                format_bytes(OUTPUT_BYTES),
                self.rounds
            ),
            &self.output,
        );
        rates(
            format!(
                "File copy host → guest, {}, {} rounds",
                format_bytes(self.bytes),
                self.rounds
            ),
            &self.copy_to,
        );
        rates(
            format!(
                "File copy guest → host, {}, {} rounds",
                format_bytes(self.bytes),
                self.rounds
            ),
            &self.copy_from,
        );
        let _ = writeln!(
            o,
            "\n### Resident memory\n\n| process | idle MiB | peak after the workloads MiB |\n| --- | ---: | ---: |"
        );
        for mem in &self.memory {
            let peak = mem.peak.map_or_else(
                || "n/a (per-session processes)".into(),
                |p| format!("{p:.1}"),
            );
            let _ = writeln!(o, "| {} | {:.1} | {peak} |", mem.system, mem.idle);
        }
        self.render_targets(&mut o);
        let _ = writeln!(o, "<!-- bench:compare:end -->");
        o
    }

    fn render_targets(&self, o: &mut String) {
        let _ = writeln!(
            o,
            "\n### Targets\n\n| target | measured | |\n| --- | ---: | --- |"
        );
        let met = |ok: bool| if ok { "**met**" } else { "**missed**" };
        let ours = Self::median_of(&self.latency, "guestcomm", "library, direct");
        let qga = Self::median_of(&self.latency, "qemu-ga", "");
        if let (Some(ours), Some(qga)) = (ours, qga) {
            let _ = writeln!(
                o,
                "| exec latency ≤ ½ of qemu-ga's | {:.2}× qemu-ga's | {} |",
                ours / qga,
                met(ours <= qga / 2.0)
            );
        }
        // Overheads above spawning the same program here, qemu-ga's channel
        // and guestcomm's connection both open before the exec.
        let spawn = Self::median_of(&self.latency, "local", "spawn");
        for (connection, path) in [
            ("an open connection", "library, one connection"),
            ("a new connection and handshake per exec", "library, direct"),
        ] {
            let exec = Self::median_of(&self.latency, "guestcomm", path);
            if let (Some(spawn), Some(exec), Some(qga)) = (spawn, exec, qga) {
                let (ours, theirs) = (exec - spawn, qga - spawn);
                let _ = writeln!(
                    o,
                    "| exec overhead above a local spawn ≤ ¼ of qemu-ga's, {connection} | +{ours:.3} vs +{theirs:.3} ms: {:.2}× | {} |",
                    ours / theirs,
                    met(ours <= theirs / 4.0)
                );
            }
        }
        let cli = Self::median_of(&self.latency, "guestcomm", "CLI");
        if let (Some(cli), Some(ssh)) = (
            cli,
            Self::median_of(&self.latency, "OpenSSH", "`ssh host true`, new"),
        ) {
            let _ = writeln!(
                o,
                "| exec latency (CLI) < 1/10 of ssh without a master | {:.3}× ssh's | {} |",
                cli / ssh,
                met(cli < ssh / 10.0)
            );
        }
        for (name, rows) in [
            ("host → guest", &self.copy_to),
            ("guest → host", &self.copy_from),
        ] {
            let ours = Self::median_of(rows, "guestcomm", "");
            if let (Some(ours), Some(qga)) = (ours, Self::median_of(rows, "qemu-ga", "")) {
                let _ = writeln!(
                    o,
                    "| copy {name} ≥ 20× qemu-ga | {:.1}× | {} |",
                    ours / qga,
                    met(ours >= 20.0 * qga)
                );
            }
            if let (Some(ours), Some(scp)) = (ours, Self::median_of(rows, "OpenSSH", "")) {
                let _ = writeln!(
                    o,
                    "| copy {name} faster than scp | {:.2}× scp | {} |",
                    ours / scp,
                    met(ours > scp)
                );
            }
        }
        if let (Some(ours), Some(qga)) = (
            self.memory.iter().find(|m| m.system == "guestcomm-agent"),
            self.memory.iter().find(|m| m.system == "qemu-ga"),
        ) {
            let _ = writeln!(
                o,
                "| agent idle RSS ≤ qemu-ga's | {:.1} vs {:.1} MiB | {} |",
                ours.idle,
                qga.idle,
                met(ours.idle <= qga.idle)
            );
        }
    }
}

/// `program --version`-style first line, or "not installed".
pub(crate) fn version_of(program: &str, args: &[&str]) -> String {
    match Command::new(program).args(args).output() {
        Ok(out) => {
            let text = if out.stdout.is_empty() {
                out.stderr
            } else {
                out.stdout
            };
            String::from_utf8_lossy(&text)
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_string()
        }
        Err(_) => "not installed".into(),
    }
}
