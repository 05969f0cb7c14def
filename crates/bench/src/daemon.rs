//! Case D: what going through guestcommd costs.
//!
//! D1. exec round trip of `true`: connect + handshake + exec straight to the
//!     agent (baseline) versus through the daemon (HTTP upgrade on its API
//!     socket, policy check, relay), alternated round by round; reported as
//!     medians and the added milliseconds. Target: under 0.5 ms added.
//!     Through the daemon twice: as it runs by default, where an operation
//!     finds a warm agent connection left by the previous one (module
//!     `spare` of guestcommd), and a second daemon with
//!     `--no-warm-connections`, as the first operation after an idle spell.
//!     Every sample is followed by an unmeasured pause of [`SETTLE`], so
//!     the daemon's background work (making the next warm connection) does
//!     not land on the next sample of another path.
//! D2. the daemon with `vms` VMs registered (10,000 by default, spread over
//!     agents `vms_per_agent` to each, 50 by default: each VM's agent is one
//!     process in real life, and the daemon keeps at most 64 probe
//!     connections open to one agent) and heartbeats every 5 s:
//!     CPU over an idle period from /proc/PID/stat, resident memory at its
//!     end and at its peak (VmHWM), and `guestcomm vm list --json` of them
//!     all through the CLI. Targets: under 2% of one core, under 128 MiB,
//!     the listing under 200 ms.
//!
//! The chart (`daemon.png`): D1's paths over the direct one; D2's figures
//! over their targets (no baseline there: 1 is the target).

use std::fmt::Write as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use guestcomm_api::{AddVm, ApiClient, Method, NewCredentials, Vm};
use guestcomm_transport::Address;
use tokio::runtime::Runtime;

use crate::agent::AgentGuard;
use crate::cases::{exec_true_over, library_true, rotated, run_timed};
use crate::ratio::{Panel, RatioChart};
use crate::report::Machine;
use crate::stats::Samples;

/// The daemon's heartbeat interval in D2, as the target states it.
const HEARTBEAT: &str = "5s";

/// Unmeasured wait between the last registration and D2's CPU window: two
/// heartbeat rounds, so that every VM's first probe (a connect and
/// handshake, whose connection is then kept) is behind and the window
/// holds the steady state.
const SETTLE_ROUNDS: Duration = Duration::from_secs(10);
/// Unmeasured pause after each D1 sample.
const SETTLE: Duration = Duration::from_millis(3);
/// `vm list --json` runs timed in D2.
const LIST_SAMPLES: usize = 20;
/// How long the daemon may take to listen.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);

/// A running guestcommd, killed by PID on drop.
pub(crate) struct DaemonGuard {
    child: Child,
    pub(crate) api: String,
    _dir: tempfile::TempDir,
}

impl DaemonGuard {
    /// Adds VM `name` at `endpoint` (the daemon makes no key: none needed
    /// for an agent without credentials).
    pub(crate) async fn add_vm(
        &self,
        client: &ApiClient,
        name: &str,
        endpoint: &str,
    ) -> anyhow::Result<()> {
        let vm = AddVm {
            name: name.into(),
            endpoint: endpoint.into(),
            credentials: NewCredentials::Auto,
        };
        client.send::<_, Vm>(Method::POST, "/v1/vms", &vm).await?;
        Ok(())
    }

    /// Starts `binary` with a state directory and API socket of its own,
    /// plus `extra` arguments, and waits until it listens.
    pub(crate) fn start(binary: &Path, extra: &[&str]) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("guestcomm-bench-daemon-")
            .tempdir()?;
        let socket = dir.path().join("api.sock");
        let api = format!("unix://{}", socket.display());
        let child = Command::new(binary)
            .arg("--state")
            .arg(dir.path().join("state"))
            .args(["--api", &api, "--heartbeat-interval", HEARTBEAT])
            .args(extra)
            .env("GUESTCOMM_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .with_context(|| {
                format!(
                    "failed to start {} (cargo build --release -p guestcommd)",
                    binary.display()
                )
            })?;
        let guard = Self {
            child,
            api,
            _dir: dir,
        };
        let start = Instant::now();
        while std::os::unix::net::UnixStream::connect(&socket).is_err() {
            ensure!(
                start.elapsed() < STARTUP_TIMEOUT,
                "guestcommd did not listen within {STARTUP_TIMEOUT:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(guard)
    }
}

impl DaemonGuard {
    /// The daemon's process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for DaemonGuard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Case D2's fleet: how many VMs, on how many agents, idle for how long.
pub(crate) struct Fleet<'a> {
    /// The agent binary (one process per `vms_per_agent` VMs).
    pub(crate) agent_bin: &'a Path,
    pub(crate) vms: usize,
    pub(crate) vms_per_agent: usize,
    pub(crate) idle_secs: u64,
}

/// The figures of case D.
pub(crate) struct DaemonFigures {
    direct: Samples,
    through: Samples,
    through_cold: Samples,
    vms: usize,
    agents: usize,
    idle_secs: u64,
    cpu_percent: f64,
    rss_mib: f64,
    peak_rss_mib: f64,
    /// Registering the VMs one API call after another.
    registration: Duration,
    list: Samples,
}

#[derive(Clone, Copy)]
enum Path2 {
    Direct,
    Daemon,
    DaemonCold,
}

/// How many file descriptors process `pid` has open (/proc/PID/fd).
pub(crate) fn fd_count(pid: u32) -> anyhow::Result<usize> {
    let dir = format!("/proc/{pid}/fd");
    Ok(std::fs::read_dir(&dir)
        .with_context(|| format!("cannot read {dir}"))?
        .count())
}

/// CPU time (user + system) of a process, from /proc/PID/stat.
fn cpu_time(pid: u32) -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .context("malformed stat")?
        .1
        .split_whitespace()
        .collect();
    let ticks: u64 = fields.get(11).context("no utime")?.parse::<u64>()?
        + fields.get(12).context("no stime")?.parse::<u64>()?;
    // SAFETY: sysconf only reads a configuration value.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Ok(Duration::from_micros(ticks * 1_000_000 / hz))
}

/// A memory figure of a process from /proc/PID/status (`VmRSS`, `VmHWM`), in MiB.
pub(crate) fn status_mib(pid: u32, field: &str) -> anyhow::Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status_field_mib(&status, field).with_context(|| format!("no {field} in /proc/{pid}/status"))
}

/// A `FIELD:   N kB` line of a /proc/PID/status text, in MiB (also for a
/// guest's, read through an agent).
pub(crate) fn status_field_mib(status: &str, field: &str) -> Option<f64> {
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())?;
    Some(kib / 1024.0)
}

/// One exec of `true` in VM `bench` through the daemon `client` talks to
/// (upgrade, hello and request in one burst), timed.
pub(crate) fn exec_true_through(rt: &Runtime, client: &ApiClient) -> anyhow::Result<Duration> {
    rt.block_on(async {
        let start = Instant::now();
        let stream = client.upgrade_early("/v1/vms/bench/connect").await?;
        exec_true_over(stream, "guestcommd").await?;
        anyhow::Ok(start.elapsed())
    })
}

/// Runs case D against the agent at `agent`.
/// `programs`: the daemon and the CLI.
pub(crate) fn daemon_case(
    rt: &Runtime,
    agent: &Address,
    (daemon_bin, cli): (&Path, &Path),
    iterations: usize,
    warmup: usize,
    fleet: &Fleet<'_>,
) -> anyhow::Result<DaemonFigures> {
    let daemon = DaemonGuard::start(daemon_bin, &[])?;
    let cold_daemon = DaemonGuard::start(daemon_bin, &["--no-warm-connections"])?;
    let client = ApiClient::new(&daemon.api)?;
    let cold_client = ApiClient::new(&cold_daemon.api)?;
    let add = |name: String| AddVm {
        name,
        endpoint: agent.to_string(),
        credentials: NewCredentials::Auto,
    };
    rt.block_on(async {
        for c in [&client, &cold_client] {
            c.send::<_, Vm>(Method::POST, "/v1/vms", &add("bench".into()))
                .await?;
        }
        anyhow::Ok(())
    })?;
    let through_daemon = |c: &ApiClient| exec_true_through(rt, c);
    let mut direct = Samples::default();
    let mut through = Samples::default();
    let mut through_cold = Samples::default();
    let paths = [Path2::Direct, Path2::Daemon, Path2::DaemonCold];
    for round in 0..warmup + iterations {
        for path in rotated(&paths, round) {
            let (samples, elapsed) = match path {
                Path2::Direct => (&mut direct, rt.block_on(library_true(agent))?),
                Path2::Daemon => (&mut through, through_daemon(&client)?),
                Path2::DaemonCold => (&mut through_cold, through_daemon(&cold_client)?),
            };
            if round >= warmup {
                samples.push_ms(elapsed);
            }
            std::thread::sleep(SETTLE);
        }
    }
    drop(cold_daemon);
    let vms = fleet.vms;
    let idle_secs = fleet.idle_secs;
    // The first agent already serves VM "bench"; the others start now.
    let more = vms.div_ceil(fleet.vms_per_agent.max(1)).saturating_sub(1);
    let fleet_agents = (0..more)
        .map(|_| AgentGuard::start(fleet.agent_bin, rt))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let endpoints: Vec<String> = std::iter::once(agent.to_string())
        .chain(fleet_agents.iter().map(|a| a.addr().to_string()))
        .collect();
    let registering = Instant::now();
    rt.block_on(async {
        for i in 1..vms {
            let vm = AddVm {
                name: format!("vm{i:05}"),
                endpoint: endpoints[i / fleet.vms_per_agent.max(1)].clone(),
                credentials: NewCredentials::Auto,
            };
            client.send::<_, Vm>(Method::POST, "/v1/vms", &vm).await?;
        }
        anyhow::Ok(())
    })?;
    let registration = registering.elapsed();
    let pid = daemon.child.id();
    std::thread::sleep(SETTLE_ROUNDS);
    let before = cpu_time(pid)?;
    std::thread::sleep(Duration::from_secs(idle_secs));
    let used = cpu_time(pid)?.saturating_sub(before);
    let rss_mib = status_mib(pid, "VmRSS")?;
    let peak_rss_mib = status_mib(pid, "VmHWM")?;
    let mut list = Samples::default();
    for _ in 0..LIST_SAMPLES {
        let mut cmd = Command::new(cli);
        cmd.args(["--api", &daemon.api, "vm", "list", "--json"]);
        list.push_ms(run_timed(&mut cmd)?);
    }
    Ok(DaemonFigures {
        direct,
        through,
        through_cold,
        vms,
        agents: endpoints.len(),
        idle_secs,
        cpu_percent: 100.0 * used.as_secs_f64() / idle_secs as f64,
        rss_mib,
        peak_rss_mib,
        registration,
        list,
    })
}

/// D2's targets: CPU, % of one core; RSS, MiB; `vm list --json`, ms.
const TARGET_CPU_PERCENT: f64 = 2.0;
const TARGET_RSS_MIB: f64 = 128.0;
const TARGET_LIST_MS: f64 = 200.0;
/// D1's target: milliseconds the daemon adds to an exec.
const TARGET_ADDED_MS: f64 = 0.5;

impl DaemonFigures {
    /// The chart of case D (`daemon.png`).
    pub(crate) fn chart(&self) -> RatioChart {
        let direct = self.direct.median();
        let d1 = Panel::new(
            "D1. exec round trip of `true`, median",
            "× straight to the agent (log scale; lower is better)",
        )
        .baseline("direct: connect + handshake + exec")
        .bar(
            "through guestcommd (warm agent connection)",
            self.through.median() / direct,
            "guestcomm",
        )
        .bar(
            "through guestcommd `--no-warm-connections`",
            self.through_cold.median() / direct,
            "guestcomm",
        );
        let d2 = Panel::new(
            format!("D2. {} VMs heartbeating every {HEARTBEAT}", self.vms),
            "measured ÷ target (log scale; below 1 meets it)",
        )
        .bar(
            &format!("CPU, % of one core (target {TARGET_CPU_PERCENT}%)"),
            self.cpu_percent / TARGET_CPU_PERCENT,
            "guestcomm",
        )
        .bar(
            &format!("RSS (target {TARGET_RSS_MIB} MiB)"),
            self.rss_mib / TARGET_RSS_MIB,
            "guestcomm",
        )
        .bar(
            &format!("`vm list --json`, median (target {TARGET_LIST_MS} ms)"),
            self.list.median() / TARGET_LIST_MS,
            "guestcomm",
        )
        .target("each figure at its target", 1.0);
        RatioChart::new(
            "daemon",
            "guestcommd: exec through it, and many VMs",
            vec![d1, d2],
        )
    }
}

/// The Markdown section of case D.
pub(crate) fn render(m: &Machine, iterations: usize, warmup: usize, d: &DaemonFigures) -> String {
    let added = d.through.median() - d.direct.median();
    let added_cold = d.through_cold.median() - d.direct.median();
    let met = |ok: bool| if ok { "**met**" } else { "**missed**" };
    let mut o = String::new();
    let _ = writeln!(o, "<!-- bench:daemon:begin -->");
    let _ = writeln!(
        o,
        "## daemon: exec through guestcommd, and {} VMs heartbeating\n",
        d.vms
    );
    let _ = writeln!(
        o,
        "Written by `target/release/guestcomm-bench --case daemon --plots docs/img --write \
         docs/BENCHMARKS.md` (method: `crates/bench/src/daemon.rs`; chart docs/img/daemon.png: \
         D1's paths over the direct one, D2's figures over their targets). Agent and daemon on \
         the same machine, Unix sockets.\n"
    );
    o.push_str(&m.table());
    let _ = writeln!(o, "### D1. exec round trip of `true`\n\n{iterations} samples per path after {warmup} warm-up rounds, alternated.\n");
    let _ = writeln!(o, "| path | median ms | p99 ms |\n| --- | ---: | ---: |");
    for (name, s) in [
        ("direct: connect + handshake + exec", &d.direct),
        (
            "through guestcommd: upgrade + policy + relay (warm agent connection) + exec",
            &d.through,
        ),
        (
            "through guestcommd `--no-warm-connections`: the same + agent connect + handshake",
            &d.through_cold,
        ),
    ] {
        let _ = writeln!(
            o,
            "| {name} | {:.3} | {:.3} |",
            s.median(),
            s.percentile(99.0)
        );
    }
    let _ = writeln!(
        o,
        "\n### D2. {} VMs registered, heartbeat every {HEARTBEAT}\n\n{} VMs on each of {} agents (Unix sockets). CPU over {} s idle (user + system from /proc, after two unmeasured heartbeat rounds), resident memory at the end and its peak (VmHWM, the registration included), then `guestcomm vm list --json` {LIST_SAMPLES} times.\n",
        d.vms,
        d.vms.div_ceil(d.agents.max(1)),
        d.agents,
        d.idle_secs
    );
    let _ = writeln!(
        o,
        "| measure | value |\n| --- | ---: |\n| CPU, % of one core | {:.2} |\n| RSS, MiB | {:.1} |\n| peak RSS, MiB | {:.1} |\n| `vm list --json`, median ms (p99) | {:.1} ({:.1}) |\n| registering the {} VMs one API call after another, s | {:.1} |",
        d.cpu_percent,
        d.rss_mib,
        d.peak_rss_mib,
        d.list.median(),
        d.list.percentile(99.0),
        d.vms,
        d.registration.as_secs_f64()
    );
    let _ = writeln!(
        o,
        "\n### Targets\n\n| target | measured | |\n| --- | ---: | --- |"
    );
    let _ = writeln!(
        o,
        "| daemon adds < {TARGET_ADDED_MS} ms per exec | {added:.3} ms | {} |",
        met(added < TARGET_ADDED_MS)
    );
    let _ = writeln!(
        o,
        "| the same, first operation after 5 s idle (no warm connection) | {added_cold:.3} ms | {} |",
        met(added_cold < TARGET_ADDED_MS)
    );
    let _ = writeln!(
        o,
        "| CPU < {TARGET_CPU_PERCENT}% of one core with {} VMs | {:.2}% | {} |",
        d.vms,
        d.cpu_percent,
        met(d.cpu_percent < TARGET_CPU_PERCENT)
    );
    let _ = writeln!(
        o,
        "| RSS < {TARGET_RSS_MIB} MiB with {} VMs | {:.1} MiB | {} |",
        d.vms,
        d.rss_mib,
        met(d.rss_mib < TARGET_RSS_MIB)
    );
    let _ = writeln!(
        o,
        "| `guestcomm vm list --json` of {} VMs < {TARGET_LIST_MS} ms | {:.1} ms | {} |",
        d.vms,
        d.list.median(),
        met(d.list.median() < TARGET_LIST_MS)
    );
    let _ = writeln!(o, "<!-- bench:daemon:end -->");
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chart_has_d1_over_direct_and_d2_over_its_targets() {
        let ms = |v: f64| -> Samples { [v, v, v].into_iter().collect() };
        let d = DaemonFigures {
            direct: ms(1.0),
            through: ms(1.25),
            through_cold: ms(2.0),
            vms: 1000,
            agents: 20,
            idle_secs: 1,
            cpu_percent: 4.0,
            rss_mib: 64.0,
            peak_rss_mib: 70.0,
            registration: Duration::from_secs(3),
            list: ms(50.0),
        };
        let chart = d.chart();
        assert_eq!(chart.file_name(), "daemon.png");
        let d1 = &chart.panels[0];
        assert_eq!(
            d1.ratio_of("baseline: direct: connect + handshake + exec"),
            Some(1.0)
        );
        assert_eq!(
            d1.ratio_of("through guestcommd (warm agent connection)"),
            Some(1.25)
        );
        assert_eq!(
            d1.ratio_of("through guestcommd `--no-warm-connections`"),
            Some(2.0)
        );
        let d2 = &chart.panels[1];
        let ratios: Vec<f64> = d2.bars.iter().map(|b| b.ratio).collect();
        assert_eq!(ratios, [2.0, 0.5, 0.25]);
        assert!(d2.bars.iter().all(|b| b.system != crate::ratio::BASELINE));
        assert_eq!(d2.targets[0].at, 1.0);
        let text = render(&Machine::probe(), 3, 0, &d);
        assert!(text.contains("chart docs/img/daemon.png"), "{text}");
        assert!(text.contains("| CPU < 2% of one core with 1000 VMs | 4.00% | **missed** |"));
    }

    #[test]
    fn memory_figures_come_from_proc_status() {
        let pid = std::process::id();
        let rss = status_mib(pid, "VmRSS").unwrap();
        let peak = status_mib(pid, "VmHWM").unwrap();
        assert!(rss > 0.0 && peak >= rss, "rss {rss} peak {peak}");
        assert!(status_mib(pid, "NoSuchField").is_err());
        let text = "Name:\tqemu-ga\nVmHWM:\t    6144 kB\nVmRSS:\t    4096 kB\n";
        assert_eq!(status_field_mib(text, "VmRSS"), Some(4.0));
        assert_eq!(status_field_mib(text, "VmHWM"), Some(6.0));
        assert_eq!(status_field_mib(text, "Vm"), None);
        assert_eq!(status_field_mib("VmRSS: lots", "VmRSS"), None);
    }
}
