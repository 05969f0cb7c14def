//! `guestcomm-bench`: what exec through guestcomm costs, against local
//! baselines measured in the same run. A benchmark command, not a
//! timed test: run it on a quiet machine, in release mode.
//!
//! The agent (`guestcomm-agent`, by default next to this executable) is
//! started on a Unix socket in a temporary directory and killed by its PID
//! at the end. Every path of a case runs once per round, in an order that
//! rotates each round.
//!
//! - **A. exec round trip of `true`**, `--iterations` samples per path
//!   (default 200, after `--warmup` 10 unmeasured rounds): the library path
//!   (`guestcomm_client::connect` + handshake + `exec`, stdin closed, output
//!   discarded) and the CLI path (`guestcomm exec unix://… -- true` as a
//!   child process), both against the baseline of spawning `true` locally
//!   with `std::process::Command`; beside them `sh -c true` (a local shell
//!   command) and `guestcomm --version` (the CLI's start-up alone). Reported: median and p99 of each, the
//!   overhead (median minus local median, ms) and the ratio to local.
//! - **B. stdout throughput of `head -c SIZE /dev/zero`** (`--bytes`,
//!   default 1 GiB), `--rounds` samples per path (default 3): the library
//!   path (stdout into a byte-counting sink, count checked) and the CLI path
//!   (stdout to /dev/null), against the baseline of the same child whose
//!   stdout pipe (1 MiB, as the agent sets it) the bench copies with a
//!   256 KiB buffer into one end of a Unix socket pair and drains from the
//!   other. Reported: median, min and max MB/s (10^6 B/s, process start
//!   included) and the ratio to the baseline.
//!
//! - **C. `cp` of one file of `--bytes` each way** (`--case cp`),
//!   `--rounds` samples per path: library and CLI, host to guest and guest
//!   to host, against a bare Unix socket (file -> socket pair -> file) and
//!   `cp(1)`, every path ending with an fsync (see `copy.rs`); and, when
//!   `qemu-ga` is installed, its guest-file-write/read path on the same file.
//!
//! - **D. the daemon** (`--case daemon`): exec `true` straight to
//!   the agent versus through `guestcommd` (`--iterations` samples each), then
//!   `--vms` VMs (default 1,000) heartbeating every 5 s: the daemon's CPU over
//!   `--idle-secs` (default 30) and its RSS (see `daemon.rs`).
//!
//! - **E. side by side** (`--case compare`): guestcomm against
//!   qemu-ga and OpenSSH where installed (exec latency, output throughput,
//!   file copies both ways, agent memory), with PNG charts into `--plots`
//!   (see `compare.rs`, `plot.rs`).
//!
//! - **G. side by side in a VM** (`--case compare-vm`): guestcomm
//!   and qemu-ga both on vsock in one TCG guest, reached through the same
//!   vhost-device-vsock socket (exec latency, output, copies both ways,
//!   memory in the guest, the agent's start to its first answered exec),
//!   against a bare vsock byte stream through the same socket, with a chart
//!   into `--plots` (see `compare_vm.rs`, `vm_bare.rs`, `vm_startup.rs`);
//!   `--guest-cpu MODEL` (e.g. `max`) writes a section of its own.
//!   Needs the image of `scripts/vm/build-image --with-qemu-ga` (`--vm-image`);
//!   `--case all` runs it when the image is there and says why when not.
//!
//! - **F. authentication on versus off** (`--case auth`): exec
//!   round trip and copy throughput against an agent with and one without
//!   `--credentials` (see `auth_cost.rs`).
//!
//! - **H. guestcommd under load** (`--case load`): `--load-execs`
//!   concurrent execs and `--load-copies` concurrent copies through one
//!   daemon to `--load-agents` agents for `--load-secs`, with `--vms` VMs
//!   heartbeating: operations done and failed, p50/p99 latencies, the
//!   daemon's RSS and file descriptors (see `load.rs`); `--json` writes the
//!   figures for the load test.
//!
//! - **I. Ansible** (`--case ansible-vm`): one play of ten tasks through
//!   the collection's guestcomm connection into the test VM, through ssh
//!   with ControlPersist (this host's loopback sshd) and through
//!   `community.libvirt.libvirt_qemu` (`--libvirt-domain`), each where it
//!   can run: wall time per play and the ratios (see `ansible_vm.rs`). Needs
//!   ansible-core (GUESTCOMM_ANSIBLE_BIN) and the image of
//!   `scripts/vm/build-image --with-python` (`--python-image`); `--case all`
//!   runs it when both are there and says why when not.
//! - **J. metrics** (`--case metrics`): exec `true` through a daemon that
//!   records metrics and is scraped every second, against one with
//!   `--no-metrics`, alternated (see `metrics_cost.rs`). Target: under 1%.
//!
//! - **K. OpenSSH in a VM** (`--case ssh-vm`): guestcomm and Debian's sshd
//!   (inetd mode, per vsock connection on port 22) in one TCG guest, ssh
//!   reaching it through the same hybrid socket with this program's
//!   `--proxy-hvsock` as its ProxyCommand: exec latency with and without a
//!   ControlMaster connection, output, scp/sftp both ways against
//!   `guestcomm cp`, and the guest CPU each spends (see `ssh_vm.rs`). Needs
//!   the image of `scripts/vm/build-image --with-sshd` (`--ssh-image`);
//!   `--case all` runs it when the image is there and says why when not.
//!   Targets: exec under ½ of ssh with a master, copies at least 2× scp.
//!
//! With `--plots DIR`, every case draws a PNG chart into DIR: case E its
//! four (`plot.rs`), G and K guestcomm's advantage per workload, and every
//! other case `NAME.png` (exec, cp, daemon, auth, load, ansible-vm,
//! metrics): each path's ratio to the baseline the case measured in the
//! same run, the baseline a bar at 1, ratio targets as lines (`ratio.rs`).
//!
//! Targets: library exec overhead under 1 ms; library stdout
//! throughput at least 70% of the bare socket. Both are printed as met or
//! missed, as are the same figures for the CLI, its start-up under
//! 0.5 ms, its exec of `true` within 2× a local `sh -c true` and its stdout
//! at least 80% of the bare socket. Copies: each
//! direction at least 70% of the bare socket, and over 20 times qemu-ga's.

mod agent;
mod ansible_vm;
mod auth_cost;
mod cases;
mod compare;
mod compare_vm;
mod compare_vm_report;
mod copy;
mod daemon;
mod load;
mod metrics_cost;
mod plot;
mod proxy;
mod qga;
mod ratio;
mod report;
mod ssh;
mod ssh_vm;
mod ssh_vm_report;
mod stats;
mod vm_bare;
mod vm_guest;
mod vm_startup;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;

use crate::agent::AgentGuard;
use crate::report::{Machine, Settings, Verdict};

/// Default samples per path of case A.
const DEFAULT_ITERATIONS: usize = 200;
/// Default unmeasured rounds before case A.
const DEFAULT_WARMUP: usize = 10;
/// Default bytes of output in case B.
const DEFAULT_BYTES: &str = "1GiB";
/// Default samples per path of case B.
const DEFAULT_ROUNDS: usize = 3;

/// Measure what running a command through guestcomm costs.
///
/// Starts guestcomm-agent on a Unix socket in a temporary directory, then
/// measures, alternating the paths round by round:
///
/// A. exec round trip of `true`: connect + handshake + exec through the
///    client library, and `guestcomm exec unix://… -- true` through the
///    CLI, against spawning `true` locally (std::process::Command). Reports
///    median and p99, overhead in ms (median minus local median), ratio.
///
/// B. stdout throughput of `head -c SIZE /dev/zero`: exec through the
///    library into a byte-counting sink, and the CLI with stdout to
///    /dev/null, against a bare Unix socket pair (the bench copies the same
///    child's stdout into one end and drains the other). Reports MB/s
///    (median, min, max) and the ratio to the bare socket.
///
/// Targets: library exec overhead < 1 ms; library stdout throughput >= 70%
/// of the bare socket (printed as met or missed, with the CLI figures).
///
/// Prints a Markdown report (machine: nproc, CPU model, kernel, rustc,
/// date) to stdout; --write also puts it into a file.
#[derive(Debug, Parser)]
#[command(
    name = "guestcomm-bench",
    version,
    after_help = "Build first, in release mode, and the agent and the CLI as they ship:\n  cargo build --release -p guestcomm-agent -p guestcomm-cli -p guestcommd -p guestcomm-bench\n  cargo build --profile agent -p guestcomm-agent\n  RUSTFLAGS='-C target-feature=+crt-static' cargo build --release --target x86_64-unknown-linux-gnu -p guestcomm-cli   (or bash scripts/package)\n  target/release/guestcomm-bench --plots docs/img --write docs/BENCHMARKS.md\n  target/release/guestcomm-bench --case compare --plots docs/img --write docs/BENCHMARKS.md\n  bash scripts/vm/build-image --with-qemu-ga && target/release/guestcomm-bench --case compare-vm --plots docs/img --write docs/BENCHMARKS.md\n\nCase E uses qemu-ga (Debian: qemu-guest-agent) and sshd/ssh/scp (openssh-server, openssh-client; run as root) when installed, and leaves out what is not.\n\nExit status: 0 when every case ran (a missed target is reported, not an error), 1 on error."
)]
struct Args {
    /// The agent binary [default: target/agent/guestcomm-agent, the agent as
    /// it ships (`cargo build --profile agent -p guestcomm-agent`), if built;
    /// else guestcomm-agent next to this executable].
    #[arg(long, value_name = "PATH")]
    agent: Option<PathBuf>,

    /// The CLI binary [default: the statically linked CLI that
    /// scripts/package builds (target/x86_64-unknown-linux-gnu/release/guestcomm),
    /// as it ships, if built; else guestcomm next to this executable].
    #[arg(long, value_name = "PATH")]
    cli: Option<PathBuf>,

    /// Samples per path in case A (exec round trip).
    #[arg(short = 'n', long, value_name = "N", default_value_t = DEFAULT_ITERATIONS,
          value_parser = positive)]
    iterations: usize,

    /// Unmeasured rounds of every path before case A.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_WARMUP)]
    warmup: usize,

    /// Bytes of stdout per run in case B: a number or K/M/G (binary), e.g. 256MiB.
    #[arg(long, value_name = "SIZE", default_value = DEFAULT_BYTES, value_parser = stats::parse_bytes)]
    bytes: u64,

    /// Samples per path in case B (stdout throughput); the median is reported.
    /// Also the rounds of cases C and E; case F takes at least 15.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_ROUNDS,
          value_parser = positive)]
    rounds: usize,

    /// The daemon binary for case D [default: guestcommd next to this executable].
    #[arg(long, value_name = "PATH")]
    daemon: Option<PathBuf>,

    /// VMs registered in case D2.
    #[arg(long, value_name = "N", default_value_t = 10_000, value_parser = positive)]
    vms: usize,

    /// VMs per agent process in case D2 (each VM's agent is its own process
    /// in real life; guestcommd keeps at most 64 probe connections to one).
    #[arg(long, value_name = "N", default_value_t = 50, value_parser = positive)]
    vms_per_agent: usize,

    /// Seconds of idle CPU measured in case D2.
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    idle_secs: u64,

    /// Case H: seconds of load.
    #[arg(long, value_name = "SECONDS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    load_secs: u64,

    /// Case H: concurrent execs through the daemon.
    #[arg(long, value_name = "N", default_value_t = 500)]
    load_execs: usize,

    /// Case H: concurrent copies through the daemon.
    #[arg(long, value_name = "N", default_value_t = 50)]
    load_copies: usize,

    /// Case H: bytes of each copied file: a number or K/M/G (binary).
    #[arg(long, value_name = "SIZE", default_value = "20MiB", value_parser = stats::parse_bytes)]
    load_copy_bytes: u64,

    /// Case H: agents the VMs point at (the load test runs 20).
    #[arg(long, value_name = "N", default_value_t = 50, value_parser = positive)]
    load_agents: usize,

    /// Case H: also write its figures as JSON into this file.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,

    /// Case G: the directory of the image built by
    /// `scripts/vm/build-image --with-qemu-ga` [default: target/vm-compare,
    /// beside this executable's directory].
    #[arg(long, value_name = "DIR")]
    vm_image: Option<PathBuf>,

    /// Cases G and K: QEMU's CPU model for the guest (`-cpu MODEL`, RDRAND
    /// then off for G, on for K). With `max`, TCG also emulates SSE4.1 and
    /// AVX2; a model other than the default writes a section of its own
    /// (e.g. `compare-vm-cpu-max`) and a chart of that name.
    #[arg(long, value_name = "MODEL", default_value = guestcomm_vmtest::DEFAULT_CPU_MODEL)]
    guest_cpu: String,

    /// Case K: the directory of the image built by
    /// `scripts/vm/build-image --with-sshd` [default: target/vm-ssh,
    /// beside this executable's directory].
    #[arg(long, value_name = "DIR")]
    ssh_image: Option<PathBuf>,

    /// Do no benchmark: be ssh's ProxyCommand for guest vsock PORT behind
    /// the hybrid vsock SOCKET (`CONNECT PORT`, then stdin and stdout are
    /// the guest's stream), as case K uses it:
    /// `ssh -o ProxyCommand='guestcomm-bench --proxy-hvsock SOCKET 22' …`.
    #[arg(long, num_args = 2, value_names = ["SOCKET", "PORT"])]
    proxy_hvsock: Option<Vec<String>>,

    /// Case I: the directory of the image built by
    /// `scripts/vm/build-image --with-python` [default: target/vm-python,
    /// beside this executable's directory].
    #[arg(long, value_name = "DIR")]
    python_image: Option<PathBuf>,

    /// Case I: a libvirt domain (at --libvirt-uri, running qemu-ga and
    /// Python: scripts/bench-libvirt-domain starts one) for the
    /// `community.libvirt.libvirt_qemu` leg; without it that leg is not run.
    #[arg(long, value_name = "NAME")]
    libvirt_domain: Option<String>,

    /// Case I: the libvirt URI of --libvirt-domain.
    #[arg(long, value_name = "URI", default_value = "qemu:///system")]
    libvirt_uri: String,

    /// Which cases to run: exec (A and B), cp (C), daemon (D), compare (E),
    /// auth (F), compare-vm (G), load (H), ansible-vm (I), metrics (J),
    /// ssh-vm (K) or all (G, I and K only when what they need is here).
    #[arg(long, value_enum, default_value_t = Case::Exec)]
    case: Case,

    /// Also draw each case's charts as PNG files into this directory
    /// (e.g. docs/img): case E's four, compare-vm.png, ssh-vm.png, and for
    /// every other case NAME.png, its paths' ratios to its baseline.
    #[arg(long, value_name = "DIR")]
    plots: Option<PathBuf>,

    /// Also write the report into this Markdown file (e.g. docs/BENCHMARKS.md),
    /// replacing only the section between `<!-- bench:exec:begin -->` and
    /// `<!-- bench:exec:end -->` (appended, or the file created, if absent).
    #[arg(long, value_name = "FILE")]
    write: Option<PathBuf>,
}

/// Groups of cases, each with its own section of the report.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Case {
    /// A. exec round trip and B. stdout throughput.
    Exec,
    /// C. cp of one large file each way.
    Cp,
    /// D. exec through guestcommd, and the daemon with many VMs.
    Daemon,
    /// E. side by side with qemu-ga and OpenSSH, where installed.
    Compare,
    /// F. authentication on versus off: exec round trip and copy.
    Auth,
    /// G. guestcomm and qemu-ga in one TCG guest over vsock.
    CompareVm,
    /// H. guestcommd under load: concurrent execs and copies, many VMs.
    Load,
    /// I. one Ansible play through guestcomm, ssh and libvirt.
    AnsibleVm,
    /// J. what the Prometheus metrics cost an exec through guestcommd.
    Metrics,
    /// K. guestcomm and OpenSSH's sshd in one TCG guest over vsock.
    SshVm,
    /// Every case.
    All,
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("guestcomm-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn positive(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("expected a positive whole number, got {text:?}")),
    }
}

/// The daemon of cases D, E and H: `--daemon`, else `guestcommd` beside this executable.
fn daemon_binary(args: &Args) -> anyhow::Result<PathBuf> {
    match &args.daemon {
        Some(path) => Ok(path.clone()),
        None => sibling("guestcommd"),
    }
}

/// `NAME` in the directory of this executable (target/release when built by cargo).
fn sibling(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("failed to find this executable's path")?;
    Ok(exe.with_file_name(name))
}

/// Which build of the agent `path` is, for the reports: its directory
/// under target/ (`agent`: as it ships; `release`).
fn agent_build(path: &std::path::Path) -> String {
    path.parent().and_then(|dir| dir.file_name()).map_or_else(
        || path.display().to_string(),
        |d| d.to_string_lossy().into_owned(),
    )
}

/// The agent as it ships (`cargo build --profile agent`, target/agent) when
/// it was built, else the one next to this executable.
fn shipped_agent() -> anyhow::Result<PathBuf> {
    let here = sibling("guestcomm-agent")?;
    let shipped = here
        .parent()
        .and_then(|dir| dir.parent())
        .map(|target| target.join("agent").join("guestcomm-agent"));
    Ok(shipped.filter(|path| path.is_file()).unwrap_or(here))
}

/// Where scripts/package builds the CLI as it ships (statically linked).
const STATIC_CLI: &str = "x86_64-unknown-linux-gnu/release/guestcomm";

/// The CLI as it ships (statically linked, built by scripts/package) when
/// it was built, else the one next to this executable.
fn shipped_cli() -> anyhow::Result<PathBuf> {
    let here = sibling("guestcomm")?;
    let shipped = here
        .parent()
        .and_then(|dir| dir.parent())
        .map(|target| target.join(STATIC_CLI));
    Ok(shipped.filter(|path| path.is_file()).unwrap_or(here))
}

/// Which build of the CLI `path` is, for the reports.
fn cli_build(path: &std::path::Path) -> &'static str {
    if path.ends_with(STATIC_CLI) {
        "the statically linked build that the package ships (scripts/package)"
    } else {
        "the build at --cli or next to the bench (cargo's: dynamically linked)"
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    if let Some(socket_and_port) = &args.proxy_hvsock {
        return run_proxy(socket_and_port);
    }
    let agent_bin = match args.agent.clone() {
        Some(path) => path,
        None => shipped_agent()?,
    };
    let cli_bin = match args.cli.clone() {
        Some(path) => path,
        None => shipped_cli()?,
    };
    anyhow::ensure!(
        cli_bin.is_file(),
        "no CLI at {} (build it with `cargo build --release -p guestcomm-cli`, or pass --cli)",
        cli_bin.display()
    );
    let rt = tokio::runtime::Runtime::new().context("failed to start the async runtime")?;
    let agent = AgentGuard::start(&agent_bin, &rt)?;
    eprintln!(
        "guestcomm-bench: agent {} (pid {}) on {}",
        agent_bin.display(),
        agent.pid(),
        agent.addr()
    );

    if matches!(args.case, Case::Exec | Case::All) {
        run_exec_cases(&args, &rt, &agent, &cli_bin)?;
    }
    if matches!(args.case, Case::Daemon | Case::All) {
        let daemon_bin = daemon_binary(&args)?;
        eprintln!(
            "guestcomm-bench: D. daemon, {} + {} warm-up rounds, then {} VMs for {} s",
            args.iterations, args.warmup, args.vms, args.idle_secs
        );
        let d = daemon::daemon_case(
            &rt,
            agent.addr(),
            (&daemon_bin, &cli_bin),
            args.iterations,
            args.warmup,
            &daemon::Fleet {
                agent_bin: &agent_bin,
                vms: args.vms,
                vms_per_agent: args.vms_per_agent,
                idle_secs: args.idle_secs,
            },
        )?;
        let section = daemon::render(&Machine::probe(), args.iterations, args.warmup, &d);
        draw(&args, &d.chart())?;
        publish(&args, &section)?;
    }
    if matches!(args.case, Case::Metrics | Case::All) {
        let daemon_bin = daemon_binary(&args)?;
        eprintln!(
            "guestcomm-bench: J. metrics on and off, {} + {} warm-up rounds",
            args.iterations, args.warmup
        );
        let j = metrics_cost::metrics_case(
            &rt,
            agent.addr(),
            &daemon_bin,
            args.iterations,
            args.warmup,
        )?;
        let section = metrics_cost::render(&Machine::probe(), args.iterations, args.warmup, &j);
        draw(&args, &j.chart())?;
        publish(&args, &section)?;
    }
    if matches!(args.case, Case::Cp | Case::All) {
        eprintln!(
            "guestcomm-bench: C. cp, {} x {} rounds",
            stats::format_bytes(args.bytes),
            args.rounds
        );
        let qga = match qga::find() {
            Some(program) => Some(qga::QgaAgent::start(&program)?),
            None => {
                eprintln!("guestcomm-bench: qemu-ga not installed: its rows are left out");
                None
            }
        };
        let c = copy::copy_throughput(
            &rt,
            agent.addr(),
            &cli_bin,
            qga.as_ref(),
            args.bytes,
            args.rounds,
        )?;
        let section = report::render_cp(&Machine::probe(), args.bytes, args.rounds, &c);
        draw(&args, &report::cp_chart(&c, args.bytes))?;
        publish(&args, &section)?;
    }
    drop(agent);
    if matches!(args.case, Case::Auth | Case::All) {
        eprintln!(
            "guestcomm-bench: F. authentication, {} + {} warm-up exec rounds, {} copies of {}",
            args.iterations,
            args.warmup,
            args.rounds.max(auth_cost::MIN_BULK_ROUNDS),
            stats::format_bytes(args.bytes)
        );
        let f = auth_cost::auth_cost(
            &rt,
            &agent_bin,
            args.iterations,
            args.warmup,
            args.rounds,
            args.bytes,
        )?;
        let section = f.render(&Machine::probe());
        draw(&args, &f.chart())?;
        publish(&args, &section)?;
    }
    if matches!(args.case, Case::Compare | Case::All) {
        let daemon_bin = daemon_binary(&args)?;
        eprintln!(
            "guestcomm-bench: E. compare, {} exec samples, {} rounds, copies of {}",
            args.iterations,
            args.rounds,
            stats::format_bytes(args.bytes)
        );
        let bins = compare::Binaries {
            agent: &agent_bin,
            cli: &cli_bin,
            daemon: &daemon_bin,
        };
        let e = compare::compare(&rt, &bins, args.iterations, args.rounds, args.bytes)?;
        let versions = format!(
            "guestcomm {} (agent: `{}`); {}; {}",
            env!("CARGO_PKG_VERSION"),
            agent_build(&agent_bin),
            compare::version_of("qemu-ga", &["--version"]),
            compare::version_of("ssh", &["-V"])
        );
        let section = e.render(&Machine::probe(), &versions);
        if let Some(dir) = &args.plots {
            for file in plot::draw_all(&e, dir)? {
                eprintln!("guestcomm-bench: drew {}", file.display());
            }
        }
        publish(&args, &section)?;
    }
    if matches!(args.case, Case::Load | Case::All) {
        run_load(&args, &rt, &agent_bin)?;
    }
    if matches!(args.case, Case::CompareVm | Case::All) {
        run_compare_vm(&args, &rt, &cli_bin)?;
    }
    if matches!(args.case, Case::AnsibleVm | Case::All) {
        run_ansible_vm(&args, &rt, &agent_bin, &cli_bin)?;
    }
    if matches!(args.case, Case::SshVm | Case::All) {
        run_ssh_vm(&args, &rt, &cli_bin)?;
    }
    Ok(())
}

/// `--proxy-hvsock SOCKET PORT`.
fn run_proxy(socket_and_port: &[String]) -> anyhow::Result<()> {
    let [socket, port] = socket_and_port else {
        anyhow::bail!("--proxy-hvsock takes SOCKET and PORT");
    };
    let port: u32 = port
        .parse()
        .with_context(|| format!("--proxy-hvsock: {port:?} is not a vsock port"))?;
    proxy::run(std::path::Path::new(socket), port)
}

/// Case K, or a clear line why it is skipped (`--case all` without the image).
fn run_ssh_vm(
    args: &Args,
    rt: &tokio::runtime::Runtime,
    cli_bin: &std::path::Path,
) -> anyhow::Result<()> {
    let found = vm_image(
        args,
        "K. ssh-vm",
        &args.ssh_image,
        "../vm-ssh",
        ssh_vm::find_image,
    )?;
    let Some((images, image)) = found else {
        return Ok(());
    };
    let tool_dirs = vec![sibling("../tools/bin")?];
    let versions = format!(
        "guestcomm {} (agent in the image: {}); {} and {} in the guest; {} on the host; {}; {}",
        env!("CARGO_PKG_VERSION"),
        image.agent,
        image.sshd,
        image.socat,
        compare::version_of("ssh", &["-V"]),
        tool_version("qemu-system-x86_64", &tool_dirs),
        tool_version("vhost-device-vsock", &tool_dirs),
    );
    eprintln!(
        "guestcomm-bench: K. ssh-vm in {}: {} exec samples ({} for ssh without a master), {} rounds",
        images.display(),
        vm_guest::EXEC_SAMPLES,
        ssh_vm::SSH_COLD_SAMPLES,
        vm_guest::ROUNDS
    );
    let proxy = std::env::current_exe().context("failed to find this executable's path")?;
    let k = ssh_vm::ssh_vm(
        rt,
        cli_bin,
        &proxy,
        &images,
        tool_dirs,
        (image, &args.guest_cpu),
    )?;
    let section = k.render(&Machine::probe(), &versions);
    if let Some(dir) = &args.plots {
        if let Some(file) = plot::draw_ssh_vm(&k.advantages(), dir, &k.section)? {
            eprintln!("guestcomm-bench: drew {}", file.display());
        }
    }
    publish(args, &section)?;
    Ok(())
}

/// Case I, or a clear line why it is skipped (`--case all` without
/// ansible-core or the image).
fn run_ansible_vm(
    args: &Args,
    rt: &tokio::runtime::Runtime,
    agent_bin: &std::path::Path,
    cli_bin: &std::path::Path,
) -> anyhow::Result<()> {
    let images = match args.python_image.clone() {
        Some(dir) => dir,
        None => sibling("../vm-python")?,
    };
    match ansible_vm::available(&images) {
        Ok(()) => {}
        Err(why) if args.case == Case::All => {
            eprintln!("guestcomm-bench: I. ansible-vm SKIPPED: {why}");
            return Ok(());
        }
        Err(why) => anyhow::bail!(why),
    }
    eprintln!(
        "guestcomm-bench: I. ansible-vm in {}: {} plays per connection",
        images.display(),
        ansible_vm::ROUNDS
    );
    let tool_dirs = vec![sibling("../tools/bin")?];
    let host_agent = AgentGuard::start(agent_bin, rt)?;
    let i = ansible_vm::ansible_vm(
        &host_agent,
        &images,
        tool_dirs.clone(),
        cli_bin,
        args.libvirt_domain
            .as_deref()
            .map(|domain| (args.libvirt_uri.as_str(), domain)),
    )?;
    let versions = format!(
        "guestcomm {}; {}; {}; {}",
        env!("CARGO_PKG_VERSION"),
        compare::version_of("ssh", &["-V"]),
        tool_version("qemu-system-x86_64", &tool_dirs),
        tool_version("vhost-device-vsock", &tool_dirs),
    );
    draw(args, &i.chart())?;
    publish(args, &i.render(&Machine::probe(), &versions))?;
    Ok(())
}

/// Case H; an operation that failed under load fails the bench (after the
/// report and the JSON are written).
fn run_load(
    args: &Args,
    rt: &tokio::runtime::Runtime,
    agent_bin: &std::path::Path,
) -> anyhow::Result<()> {
    let daemon_bin = daemon_binary(args)?;
    let settings = load::LoadSettings {
        secs: args.load_secs,
        execs: args.load_execs,
        copies: args.load_copies,
        copy_bytes: args.load_copy_bytes,
        agents: args.load_agents,
        vms: args.vms.max(args.load_agents),
    };
    eprintln!(
        "guestcomm-bench: H. load, {} s of {} execs and {} copies of {} through guestcommd, {} agents, {} VMs",
        settings.secs,
        settings.execs,
        settings.copies,
        stats::format_bytes(settings.copy_bytes),
        settings.agents,
        settings.vms
    );
    let h = load::load_case(rt, agent_bin, &daemon_bin, settings)?;
    let section = h.render(&Machine::probe());
    draw(args, &h.chart())?;
    if let Some(path) = &args.json {
        load::write_json(path, &h)?;
        eprintln!("guestcomm-bench: wrote {}", path.display());
    }
    publish(args, &section)?;
    anyhow::ensure!(h.clean(), "operations failed under load (see the report)");
    Ok(())
}

/// An in-VM case's image directory (`option`, else `default` beside this
/// executable's directory) and what `find` reads there; nothing, said on
/// stderr, when `--case all` runs without it.
fn vm_image<T>(
    args: &Args,
    case: &str,
    option: &Option<PathBuf>,
    default: &str,
    find: impl Fn(&std::path::Path) -> Result<T, String>,
) -> anyhow::Result<Option<(PathBuf, T)>> {
    let images = match option.clone() {
        Some(dir) => dir,
        None => sibling(default)?,
    };
    match find(&images) {
        Ok(image) => Ok(Some((images, image))),
        Err(why) if args.case == Case::All => {
            eprintln!("guestcomm-bench: {case} SKIPPED: {why}");
            Ok(None)
        }
        Err(why) => anyhow::bail!(why),
    }
}

/// Case G, or a clear line why it is skipped (`--case all` without the image).
fn run_compare_vm(
    args: &Args,
    rt: &tokio::runtime::Runtime,
    cli_bin: &std::path::Path,
) -> anyhow::Result<()> {
    let found = vm_image(
        args,
        "G. compare-vm",
        &args.vm_image,
        "../vm-compare",
        compare_vm::find_image,
    )?;
    let Some((images, image)) = found else {
        return Ok(());
    };
    let tool_dirs = vec![sibling("../tools/bin")?];
    let versions = format!(
        "guestcomm {} (agent in the image: {}); {}; {} in the guest; {}; {}",
        env!("CARGO_PKG_VERSION"),
        image.agent,
        image.qga,
        image.socat,
        tool_version("qemu-system-x86_64", &tool_dirs),
        tool_version("vhost-device-vsock", &tool_dirs),
    );
    eprintln!(
        "guestcomm-bench: G. compare-vm in {}: {} exec samples, {} rounds",
        images.display(),
        vm_guest::EXEC_SAMPLES,
        vm_guest::ROUNDS
    );
    let g = compare_vm::compare_vm(
        rt,
        cli_bin,
        &images,
        tool_dirs.clone(),
        (image, &args.guest_cpu),
    )?;
    let section = g.render(&Machine::probe(), &versions);
    if let Some(dir) = &args.plots {
        if let Some(file) = plot::draw_vm(&g.advantages(), dir, &g.section)? {
            eprintln!("guestcomm-bench: drew {}", file.display());
        }
    }
    publish(args, &section)?;
    Ok(())
}

/// `NAME --version` of a VM tool found in `tool_dirs` or PATH, for a report.
fn tool_version(name: &str, tool_dirs: &[PathBuf]) -> String {
    guestcomm_vmtest::find_tool(name, tool_dirs).map_or_else(
        || format!("{name} not installed"),
        |path| compare::version_of(&path.display().to_string(), &["--version"]),
    )
}

/// With `--plots`, draws a case's ratio chart into that directory.
fn draw(args: &Args, chart: &ratio::RatioChart) -> anyhow::Result<()> {
    if let Some(dir) = &args.plots {
        if let Some(file) = plot::draw_ratio_chart(chart, dir)? {
            eprintln!("guestcomm-bench: drew {}", file.display());
        }
    }
    Ok(())
}

/// Prints a case's Markdown section and, with `--write`, puts it into
/// that file.
fn publish(args: &Args, section: &str) -> anyhow::Result<()> {
    print!("{section}");
    if let Some(path) = &args.write {
        report::write_section(path, section)?;
        eprintln!("guestcomm-bench: wrote {}", path.display());
    }
    Ok(())
}

fn run_exec_cases(
    args: &Args,
    rt: &tokio::runtime::Runtime,
    agent: &AgentGuard,
    cli_bin: &std::path::Path,
) -> anyhow::Result<()> {
    eprintln!(
        "guestcomm-bench: A. exec round trip, {} + {} warm-up rounds",
        args.iterations, args.warmup
    );
    let a = cases::exec_round_trip(rt, agent.addr(), cli_bin, args.iterations, args.warmup)?;
    eprintln!(
        "guestcomm-bench: B. stdout throughput, {} x {} rounds",
        stats::format_bytes(args.bytes),
        args.rounds
    );
    let b = cases::stdout_throughput(rt, agent.addr(), cli_bin, args.bytes, args.rounds)?;

    let settings = Settings {
        iterations: args.iterations,
        warmup: args.warmup,
        bytes: args.bytes,
        rounds: args.rounds,
        cli: cli_build(cli_bin),
    };
    let section = report::render(&Machine::probe(), &settings, &a, &b);
    draw(args, &report::exec_chart(&a, &b, args.bytes))?;
    publish(args, &section)?;
    let v = Verdict::new(&a, &b);
    eprintln!(
        "guestcomm-bench: overhead {:.3} ms (target < {} ms: {}), throughput {:.0}% of bare (target >= {:.0}%: {})",
        v.overhead_ms,
        report::TARGET_OVERHEAD_MS,
        if v.overhead_met() { "met" } else { "MISSED" },
        100.0 * v.throughput_ratio,
        100.0 * report::TARGET_THROUGHPUT_RATIO,
        if v.throughput_met() { "met" } else { "MISSED" },
    );
    Ok(())
}
