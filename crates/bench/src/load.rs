//! Case H (`--case load`): guestcommd held under load.
//!
//! One daemon, `agents` agents on Unix sockets and `vms` VMs registered
//! (VM i at agent i mod `agents`), heartbeating every 5 s. For `secs`
//! seconds, through the daemon by VM name:
//! - `execs` tasks each run `echo TOKEN` one after another, output checked;
//! - `copies` tasks each copy a file of `copy_bytes` into the guest and back
//!   out again, alternately, the content checked after every return trip;
//! - a watcher lists the VMs every [`WATCH_INTERVAL`];
//! - a sampler reads the daemon's resident memory and open file descriptors.
//!
//! Every operation has a deadline ([`EXEC_DEADLINE`], [`COPY_DEADLINE`],
//! [`LIST_DEADLINE`]); a failure is counted (its first messages kept), never
//! retried. The figures go to the report and, with `--json`, to a file that
//! the load test (`crates/cli/tests/load.rs`) checks.
//!
//! The baseline of the same run is the same exec through the idle daemon,
//! one at a time, before the load; the chart (`load.png`) puts the exec's
//! p50 under load and the execs completed per second over it.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use guestcomm_api::{ApiClient, Vm};
use guestcomm_client::{NoProgress, ReceiveOptions};
use guestcomm_protocol::files::{CopyFromGuest, CopyToGuest};
use guestcomm_transport::Address;
use tokio::runtime::Runtime;
use tokio::time::timeout;

use crate::agent::AgentGuard;
use crate::cases::{exec_over, request, CLIENT_NAME};
use crate::daemon::{fd_count, status_mib, DaemonGuard};
use crate::ratio::{Panel, RatioChart};
use crate::report::Machine;
use crate::stats::{format_bytes, Samples};

/// Longest one exec through the daemon may take under load.
const EXEC_DEADLINE: Duration = Duration::from_secs(60);
/// Longest one copy (one direction) may take under load.
const COPY_DEADLINE: Duration = Duration::from_secs(180);
/// Longest one `GET /v1/vms` may take under load.
const LIST_DEADLINE: Duration = Duration::from_secs(30);
/// Pause between two listings of the VMs.
const WATCH_INTERVAL: Duration = Duration::from_millis(500);
/// Pause between two samples of the daemon's memory and descriptors.
const SAMPLE_INTERVAL: Duration = Duration::from_millis(250);
/// Execs through the idle daemon, one at a time, for the baseline.
const BASELINE_EXECS: usize = 50;
/// How long the daemon's descriptors are watched after the load.
const SETTLE_TIME: Duration = Duration::from_secs(15);
/// Failure messages kept for the report.
const KEPT_FAILURES: usize = 10;

/// What case H is asked to do.
#[derive(Clone, Debug)]
pub(crate) struct LoadSettings {
    /// How long the load lasts.
    pub(crate) secs: u64,
    /// Concurrent exec tasks.
    pub(crate) execs: usize,
    /// Concurrent copy tasks.
    pub(crate) copies: usize,
    /// Bytes of each copied file.
    pub(crate) copy_bytes: u64,
    /// Agents the VMs point at.
    pub(crate) agents: usize,
    /// VMs registered (and heartbeating).
    pub(crate) vms: usize,
}

/// What one kind of operation did under load.
#[derive(Debug, Default)]
pub(crate) struct OpTally {
    /// Latencies of the operations that succeeded, ms.
    pub(crate) ok: Samples,
    /// How many failed.
    pub(crate) failed: u64,
    /// The first failure messages.
    pub(crate) failures: Vec<String>,
}

impl OpTally {
    fn record(&mut self, what: &str, result: anyhow::Result<Duration>) {
        match result {
            Ok(elapsed) => self.ok.push_ms(elapsed),
            Err(e) => {
                self.failed += 1;
                if self.failures.len() < KEPT_FAILURES {
                    self.failures.push(format!("{what}: {e:#}"));
                }
            }
        }
    }

    fn merge(&mut self, other: OpTally) {
        self.ok.extend(&other.ok);
        self.failed += other.failed;
        let room = KEPT_FAILURES.saturating_sub(self.failures.len());
        self.failures.extend(other.failures.into_iter().take(room));
    }

    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "ok": self.ok.len(),
            "failed": self.failed,
            "p50_ms": finite(self.ok.median()),
            "p99_ms": finite(self.ok.percentile(99.0)),
            "max_ms": finite(self.ok.max()),
            "failures": self.failures,
        })
    }
}

/// NaN (no samples) as JSON null.
fn finite(v: f64) -> Option<f64> {
    v.is_finite().then_some(v)
}

/// The daemon's resources: at the start, the most seen, at the end.
#[derive(Debug, Default)]
pub(crate) struct Resources {
    pub(crate) rss_mib_before: f64,
    pub(crate) rss_mib_max: f64,
    pub(crate) rss_mib_after: f64,
    pub(crate) fds_before: usize,
    pub(crate) fds_max: usize,
    pub(crate) fds_after: usize,
}

/// The figures of case H.
#[derive(Debug)]
pub(crate) struct LoadFigures {
    pub(crate) settings: LoadSettings,
    pub(crate) exec: OpTally,
    pub(crate) copy: OpTally,
    pub(crate) list: OpTally,
    /// The same exec through the daemon, one at a time before the load:
    /// the baseline of the same run.
    pub(crate) exec_unloaded: OpTally,
    pub(crate) bytes_copied: u64,
    pub(crate) resources: Resources,
}

impl LoadFigures {
    /// Every operation succeeded and every listing answered.
    pub(crate) fn clean(&self) -> bool {
        [&self.exec, &self.copy, &self.list, &self.exec_unloaded]
            .iter()
            .all(|t| t.failed == 0)
    }

    /// The figures as JSON (`--json`), for the load test.
    pub(crate) fn json(&self) -> serde_json::Value {
        let s = &self.settings;
        let r = &self.resources;
        serde_json::json!({
            "settings": {
                "secs": s.secs, "execs": s.execs, "copies": s.copies,
                "copy_bytes": s.copy_bytes, "agents": s.agents, "vms": s.vms,
            },
            "exec": self.exec.json(),
            "copy": self.copy.json(),
            "list": self.list.json(),
            "exec_unloaded": self.exec_unloaded.json(),
            "bytes_copied": self.bytes_copied,
            "daemon": {
                "rss_mib_before": r.rss_mib_before, "rss_mib_max": r.rss_mib_max,
                "rss_mib_after": r.rss_mib_after, "fds_before": r.fds_before,
                "fds_max": r.fds_max, "fds_after": r.fds_after,
            },
        })
    }

    /// Execs completed per second under load, over the one-at-a-time
    /// rate of the baseline (1000 / its p50 ms).
    fn rate_ratio(&self) -> f64 {
        let under_load = self.exec.ok.len() as f64 / self.settings.secs as f64;
        under_load / (1e3 / self.exec_unloaded.ok.median())
    }

    /// The chart of case H (`load.png`).
    pub(crate) fn chart(&self) -> RatioChart {
        let s = &self.settings;
        let latency = Panel::new(
            "exec through guestcommd, p50 latency",
            "× one exec at a time before the load (log scale; lower is better)",
        )
        .baseline("one exec at a time, idle daemon")
        .bar(
            &format!("under load, among {} concurrent execs", s.execs),
            self.exec.ok.median() / self.exec_unloaded.ok.median(),
            "guestcomm",
        );
        let rate = Panel::new(
            "execs completed per second",
            "× the one-at-a-time rate (log scale; higher is better)",
        )
        .baseline("one exec at a time, idle daemon")
        .bar(
            &format!("under load, beside {} copies", s.copies),
            self.rate_ratio(),
            "guestcomm",
        );
        RatioChart::new(
            "load",
            format!("guestcommd under {} s of load, against itself idle", s.secs),
            vec![latency, rate],
        )
    }

    /// The Markdown section of case H.
    pub(crate) fn render(&self, m: &Machine) -> String {
        let s = &self.settings;
        let r = &self.resources;
        let mut out = String::new();
        let _ = writeln!(out, "<!-- bench:load:begin -->");
        let _ = writeln!(
            out,
            "## Load: guestcommd under concurrent execs and copies\n"
        );
        let _ = writeln!(
            out,
            "Written by `target/release/guestcomm-bench --case load --vms 1000 --plots docs/img \
             --write docs/BENCHMARKS.md` (method: `crates/bench/src/load.rs`; chart docs/img/load.png: \
             the exec under load over the same exec one at a time before it).\n"
        );
        let _ = writeln!(out, "{}", m.table());
        let _ = writeln!(
            out,
            "{} s: {} concurrent execs (`echo`) and {} concurrent copies of {} (into the guest and back, alternately) through one guestcommd to {} agents on Unix sockets, {} VMs registered and heartbeating every 5 s; `vm list` every {} ms. Latencies of the operations that succeeded.\n",
            s.secs,
            s.execs,
            s.copies,
            format_bytes(s.copy_bytes),
            s.agents,
            s.vms,
            WATCH_INTERVAL.as_millis()
        );
        let _ = writeln!(
            out,
            "| operation | done | failed | p50 ms | p99 ms | max ms |"
        );
        let _ = writeln!(out, "| --- | ---: | ---: | ---: | ---: | ---: |");
        for (name, t) in [
            ("exec", &self.exec),
            ("copy (one way)", &self.copy),
            ("vm list", &self.list),
        ] {
            let _ = writeln!(
                out,
                "| {name} | {} | {} | {:.1} | {:.1} | {:.1} |",
                t.ok.len(),
                t.failed,
                t.ok.median(),
                t.ok.percentile(99.0),
                t.ok.max()
            );
        }
        let _ = writeln!(
            out,
            "\nBaseline of the same run: the same exec through the daemon, one at a time before the load, p50 {:.2} ms ({:.0} execs/s). Under load each exec waits its turn among {} (p50 {:.0}× the baseline), while the daemon completes {:.0} execs/s ({:.2}× the one-at-a-time rate) beside the copies.",
            self.exec_unloaded.ok.median(),
            1e3 / self.exec_unloaded.ok.median(),
            s.execs,
            self.exec.ok.median() / self.exec_unloaded.ok.median(),
            self.exec.ok.len() as f64 / s.secs as f64,
            self.rate_ratio()
        );
        let _ = writeln!(
            out,
            "\nCopied {} in all ({:.0} MB/s). The daemon: RSS {:.1} MiB before, {:.1} MiB at most, {:.1} MiB after; open file descriptors {} before, {} at most, {} after.",
            format_bytes(self.bytes_copied),
            self.bytes_copied as f64 / s.secs as f64 / 1e6,
            r.rss_mib_before,
            r.rss_mib_max,
            r.rss_mib_after,
            r.fds_before,
            r.fds_max,
            r.fds_after
        );
        for failure in self
            .exec
            .failures
            .iter()
            .chain(&self.copy.failures)
            .chain(&self.list.failures)
            .chain(&self.exec_unloaded.failures)
        {
            let _ = writeln!(out, "- failed: {failure}");
        }
        let _ = writeln!(out, "\n<!-- bench:load:end -->");
        out
    }
}

/// Runs case H with agents of `agent_bin` and the daemon `daemon_bin`.
pub(crate) fn load_case(
    rt: &Runtime,
    agent_bin: &Path,
    daemon_bin: &Path,
    settings: LoadSettings,
) -> anyhow::Result<LoadFigures> {
    ensure!(
        settings.agents > 0 && settings.vms >= settings.agents,
        "need at least one agent and a VM for each"
    );
    let agents = (0..settings.agents)
        .map(|_| AgentGuard::start(agent_bin, rt))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let daemon = DaemonGuard::start(daemon_bin, &[])?;
    let client = Arc::new(ApiClient::new(&daemon.api)?);
    let addrs: Vec<Address> = agents.iter().map(|a| a.addr().clone()).collect();
    rt.block_on(async {
        for i in 0..settings.vms {
            daemon
                .add_vm(&client, &vm_name(i), &addrs[i % addrs.len()].to_string())
                .await?;
        }
        anyhow::Ok(())
    })?;
    let files = tempfile::Builder::new()
        .prefix("guestcomm-bench-load-")
        .tempdir()
        .context("failed to create a temporary directory")?;
    let copy_files = (0..settings.copies)
        .map(|worker| {
            let dir = files.path().join(format!("w{worker:03}"));
            CopyFiles::prepare(&dir, settings.copy_bytes, worker as u64)
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let pid = daemon.pid();
    let mut resources = Resources {
        rss_mib_before: status_mib(pid, "VmRSS")?,
        fds_before: fd_count(pid)?,
        ..Resources::default()
    };
    // The baseline: the same exec, one at a time, before any load.
    let exec_unloaded = rt.block_on(async {
        let mut tally = OpTally::default();
        for round in 0..BASELINE_EXECS {
            let once = exec_worker(&client, round, settings.vms, Instant::now(), Some(1)).await;
            tally.merge(once);
        }
        tally
    });
    let end = Instant::now() + Duration::from_secs(settings.secs);
    let copied = Arc::new(AtomicU64::new(0));
    let peak = Arc::new(Mutex::new((resources.rss_mib_before, resources.fds_before)));
    let (exec, copy, list) = rt.block_on(async {
        let mut execs = Vec::new();
        for worker in 0..settings.execs {
            let client = client.clone();
            let vms = settings.vms;
            execs.push(tokio::spawn(async move {
                exec_worker(&client, worker, vms, end, None).await
            }));
        }
        let mut copies = Vec::new();
        for (worker, files) in copy_files.into_iter().enumerate() {
            let (client, copied) = (client.clone(), copied.clone());
            let vm = vm_name(worker % settings.vms);
            copies.push(tokio::spawn(async move {
                copy_worker(&client, vm, files, end, &copied).await
            }));
        }
        let watcher = tokio::spawn(watch_list(client.clone(), end));
        let sampler = tokio::spawn(sample(pid, end, peak.clone()));
        let mut exec = OpTally::default();
        for task in execs {
            exec.merge(task.await.context("an exec task panicked")?);
        }
        let mut copy = OpTally::default();
        for task in copies {
            copy.merge(task.await.context("a copy task panicked")?);
        }
        let list = watcher.await.context("the watcher panicked")?;
        sampler.await.context("the sampler panicked")?;
        anyhow::Ok((exec, copy, list))
    })?;
    let (rss_max, fds_max) = *peak
        .lock()
        .map_err(|_| anyhow::anyhow!("sampler lock poisoned"))?;
    resources.rss_mib_max = rss_max;
    resources.fds_max = fds_max;
    // What the daemon holds once every client is gone: the fewest
    // descriptors seen within SETTLE_TIME (relays close as both ends do,
    // warm agent connections expire after 5 s).
    let settle_end = Instant::now() + SETTLE_TIME;
    resources.fds_after = fd_count(pid)?;
    while Instant::now() < settle_end {
        std::thread::sleep(SAMPLE_INTERVAL);
        resources.fds_after = resources.fds_after.min(fd_count(pid)?);
    }
    resources.rss_mib_after = status_mib(pid, "VmRSS")?;
    Ok(LoadFigures {
        settings,
        exec,
        copy,
        list,
        exec_unloaded,
        bytes_copied: copied.load(Ordering::Relaxed),
        resources,
    })
}

fn vm_name(i: usize) -> String {
    format!("vm{i:05}")
}

/// One exec task: `echo TOKEN` through the daemon until `end` (or `count`
/// times, when given), each on the next VM, its output checked.
async fn exec_worker(
    client: &ApiClient,
    worker: usize,
    vms: usize,
    end: Instant,
    count: Option<usize>,
) -> OpTally {
    let mut tally = OpTally::default();
    let mut round = 0usize;
    while count.map_or(Instant::now() < end, |n| round < n) {
        let vm = vm_name((worker * 7 + round) % vms);
        let token = format!("w{worker}r{round}");
        let result = timeout(EXEC_DEADLINE, async {
            let start = Instant::now();
            let stream = client
                .upgrade_early(&format!("/v1/vms/{vm}/connect"))
                .await?;
            let mut out = Vec::new();
            exec_over(stream, "guestcommd", request("echo", &[&token]), &mut out).await?;
            ensure!(
                out == format!("{token}\n").as_bytes(),
                "wrong output {:?}",
                String::from_utf8_lossy(&out)
            );
            Ok(start.elapsed())
        })
        .await
        .unwrap_or_else(|_| Err(anyhow::anyhow!("no answer within {EXEC_DEADLINE:?}")));
        tally.record(&format!("exec on {vm}"), result);
        round += 1;
    }
    tally
}

/// The files of one copy task: its source (and its content, to check what
/// comes back), the path it lands at in the guest, and where it comes back to.
struct CopyFiles {
    src: PathBuf,
    original: Vec<u8>,
    in_guest: PathBuf,
    back: PathBuf,
}

impl CopyFiles {
    /// Makes `dir` and a source file of `bytes` in it, its first bytes
    /// `tag` (so no two tasks' files are alike).
    fn prepare(dir: &Path, bytes: u64, tag: u64) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let src = dir.join("source");
        crate::copy::make_file(&src, bytes)?;
        let mut original =
            std::fs::read(&src).with_context(|| format!("cannot read {}", src.display()))?;
        for (byte, tag_byte) in original.iter_mut().zip(tag.to_le_bytes()) {
            *byte = tag_byte;
        }
        std::fs::write(&src, &original)
            .with_context(|| format!("cannot write {}", src.display()))?;
        Ok(Self {
            src,
            original,
            in_guest: dir.join("in-guest"),
            back: dir.join("back"),
        })
    }
}

/// One copy task: its file into the guest (even rounds) and back out (odd
/// rounds, then compared with the original) until `end`.
async fn copy_worker(
    client: &ApiClient,
    vm: String,
    files: CopyFiles,
    end: Instant,
    copied: &AtomicU64,
) -> OpTally {
    let idle = guestcomm_client::DEFAULT_COPY_IDLE_TIMEOUT;
    let mut tally = OpTally::default();
    let mut round = 0usize;
    while Instant::now() < end {
        let to_guest = round.is_multiple_of(2);
        let result = timeout(COPY_DEADLINE, async {
            let start = Instant::now();
            let stream = client.upgrade(&format!("/v1/vms/{vm}/connect")).await?;
            let session =
                guestcomm_client::handshake(stream, "guestcommd", CLIENT_NAME, None).await?;
            if to_guest {
                let req = CopyToGuest {
                    dst: files.in_guest.display().to_string(),
                    overwrite: true,
                    ..Default::default()
                };
                guestcomm_client::copy_to_guest(
                    session.conn,
                    &files.src,
                    req,
                    idle,
                    &mut NoProgress,
                )
                .await?;
            } else {
                let req = CopyFromGuest {
                    src: files.in_guest.display().to_string(),
                    recursive: false,
                    resume: false,
                    ..CopyFromGuest::default()
                };
                let opts = ReceiveOptions {
                    overwrite: true,
                    ..Default::default()
                };
                guestcomm_client::copy_from_guest(
                    session.conn,
                    req,
                    &files.back,
                    opts,
                    idle,
                    &mut NoProgress,
                )
                .await?;
                ensure!(
                    tokio::fs::read(&files.back).await? == files.original,
                    "the file that came back differs from the original"
                );
            }
            Ok(start.elapsed())
        })
        .await
        .unwrap_or_else(|_| Err(anyhow::anyhow!("no end within {COPY_DEADLINE:?}")));
        if result.is_ok() {
            copied.fetch_add(files.original.len() as u64, Ordering::Relaxed);
        }
        let way = if to_guest { "into" } else { "out of" };
        tally.record(&format!("copy {way} {vm}"), result);
        round += 1;
    }
    tally
}

/// Lists the VMs every [`WATCH_INTERVAL`] until `end`.
async fn watch_list(client: Arc<ApiClient>, end: Instant) -> OpTally {
    let mut tally = OpTally::default();
    while Instant::now() < end {
        let result = timeout(LIST_DEADLINE, async {
            let start = Instant::now();
            let vms: Vec<Vm> = client.get("/v1/vms").await?;
            ensure!(!vms.is_empty(), "the daemon listed no VMs");
            Ok(start.elapsed())
        })
        .await
        .unwrap_or_else(|_| Err(anyhow::anyhow!("no answer within {LIST_DEADLINE:?}")));
        tally.record("vm list", result);
        tokio::time::sleep(WATCH_INTERVAL).await;
    }
    tally
}

/// Keeps the largest RSS (MiB) and descriptor count of `pid` until `end`.
async fn sample(pid: u32, end: Instant, peak: Arc<Mutex<(f64, usize)>>) {
    while Instant::now() < end {
        if let (Ok(rss), Ok(fds)) = (status_mib(pid, "VmRSS"), fd_count(pid)) {
            if let Ok(mut p) = peak.lock() {
                p.0 = p.0.max(rss);
                p.1 = p.1.max(fds);
            }
        }
        tokio::time::sleep(SAMPLE_INTERVAL).await;
    }
}

/// Where `--json` writes.
pub(crate) fn write_json(path: &Path, figures: &LoadFigures) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(&figures.json())?;
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tally(ms: &[f64]) -> OpTally {
        OpTally {
            ok: ms.iter().copied().collect(),
            ..OpTally::default()
        }
    }

    #[test]
    fn the_chart_has_the_load_over_the_same_exec_one_at_a_time() {
        let h = LoadFigures {
            settings: LoadSettings {
                secs: 2,
                execs: 4,
                copies: 1,
                copy_bytes: 1 << 20,
                agents: 1,
                vms: 1,
            },
            // 1000 execs/s one at a time; 1000 done in 2 s under load.
            exec: tally(&vec![4.0; 1000]),
            copy: tally(&[10.0]),
            list: tally(&[1.0]),
            exec_unloaded: tally(&[1.0, 1.0, 1.0]),
            bytes_copied: 1 << 20,
            resources: Resources::default(),
        };
        let chart = h.chart();
        assert_eq!(chart.file_name(), "load.png");
        let [latency, rate] = &chart.panels[..] else {
            panic!("{chart:?}")
        };
        assert_eq!(latency.bars[0].ratio, 1.0);
        assert_eq!(
            latency.ratio_of("under load, among 4 concurrent execs"),
            Some(4.0)
        );
        assert_eq!(rate.ratio_of("under load, beside 1 copies"), Some(0.5));
        let text = h.render(&Machine::probe());
        assert!(text.contains("chart docs/img/load.png"), "{text}");
        assert!(text.contains("(0.50× the one-at-a-time rate)"), "{text}");
    }
}
