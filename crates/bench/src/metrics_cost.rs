//! Case J: what the Prometheus metrics cost an exec through guestcommd.
//!
//! Two daemons in front of the same agent, alike but for the metrics: one
//! records them (as every daemon does by default) and serves them on a
//! loopback `--metrics` listener that a thread of the bench scrapes once a
//! second, as Prometheus would; the other runs with `--no-metrics`. Exec of
//! `true` through each (warm agent connections, the default), alternated
//! round by round. Reported: medians, the paired ratio (each sample against
//! the other daemon's sample of the same round) and the difference.
//! Target: metrics add under 1% to exec latency through the daemon.
//!
//! The chart (`metrics.png`): the paired ratio as a bar beside the
//! `--no-metrics` baseline, the target as a line at 1.01.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use guestcomm_api::{AddVm, ApiClient, Method, NewCredentials, Vm};
use guestcomm_transport::Address;
use tokio::runtime::Runtime;

use crate::cases::rotated;
use crate::daemon::{exec_true_through, DaemonGuard};
use crate::ratio::{Panel, RatioChart};
use crate::report::Machine;
use crate::stats::Samples;

/// How often the scraper asks for /metrics (Prometheus' default is 1 min;
/// this is 60 times as often).
const SCRAPE_EVERY: Duration = Duration::from_secs(1);
/// Unmeasured pause after each sample (the daemon's warm connection).
const SETTLE: Duration = Duration::from_millis(3);

/// The figures of case J.
pub(crate) struct MetricsCost {
    on: Samples,
    off: Samples,
    scrapes: u64,
    exposition_bytes: u64,
}

/// A free loopback port (bound, then let go for the daemon).
fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// One `GET /metrics` on `port`; the body's length.
fn scrape(port: u16) -> anyhow::Result<u64> {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: localhost\r\nAccept: application/openmetrics-text\r\nConnection: close\r\n\r\n"
    )?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer)?;
    anyhow::ensure!(
        answer.starts_with(b"HTTP/1.1 200"),
        "GET /metrics: {}",
        String::from_utf8_lossy(&answer[..answer.len().min(200)])
    );
    Ok(answer.len() as u64)
}

/// Runs case J against the agent at `agent`.
pub(crate) fn metrics_case(
    rt: &Runtime,
    agent: &Address,
    daemon_bin: &Path,
    iterations: usize,
    warmup: usize,
) -> anyhow::Result<MetricsCost> {
    let port = free_port()?;
    let listen = format!("tcp://127.0.0.1:{port}");
    let on = DaemonGuard::start(daemon_bin, &["--metrics", &listen])?;
    let off = DaemonGuard::start(daemon_bin, &["--no-metrics"])?;
    let clients = [ApiClient::new(&on.api)?, ApiClient::new(&off.api)?];
    rt.block_on(async {
        for c in &clients {
            let vm = AddVm {
                name: "bench".into(),
                endpoint: agent.to_string(),
                credentials: NewCredentials::Auto,
            };
            c.send::<_, Vm>(Method::POST, "/v1/vms", &vm).await?;
        }
        anyhow::Ok(())
    })?;
    scrape(port).context("the metrics listener does not answer")?;

    let stop = Arc::new(AtomicBool::new(false));
    let (scrapes, bytes) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let scraper = {
        let (stop, scrapes, bytes) = (stop.clone(), scrapes.clone(), bytes.clone());
        std::thread::spawn(move || -> anyhow::Result<()> {
            let mut next = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                if Instant::now() >= next {
                    bytes.store(scrape(port)?, Ordering::Relaxed);
                    scrapes.fetch_add(1, Ordering::Relaxed);
                    next += SCRAPE_EVERY;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Ok(())
        })
    };
    let (mut with, mut without) = (Samples::default(), Samples::default());
    let measured = (|| {
        for round in 0..warmup + iterations {
            for which in rotated(&[0usize, 1], round) {
                let elapsed = exec_true_through(rt, &clients[which])?;
                if round >= warmup {
                    [&mut with, &mut without][which].push_ms(elapsed);
                }
                std::thread::sleep(SETTLE);
            }
        }
        anyhow::Ok(())
    })();
    stop.store(true, Ordering::Relaxed);
    let scraped = scraper
        .join()
        .map_err(|_| anyhow::anyhow!("the scraper panicked"))?;
    measured?;
    scraped.context("scraping /metrics failed")?;
    Ok(MetricsCost {
        on: with,
        off: without,
        scrapes: scrapes.load(Ordering::Relaxed),
        exposition_bytes: bytes.load(Ordering::Relaxed),
    })
}

/// Target: what the metrics may add to exec latency, as a ratio.
const TARGET_RATIO: f64 = 1.01;

impl MetricsCost {
    /// The chart of case J (`metrics.png`).
    pub(crate) fn chart(&self) -> RatioChart {
        let panel = Panel::new(
            "exec of `true` through guestcommd, median of per-round ratios",
            "× the daemon with `--no-metrics` (log scale; lower is better)",
        )
        .baseline("`--no-metrics`")
        .bar(
            &format!("metrics on, scraped every {} s", SCRAPE_EVERY.as_secs()),
            self.on.paired_ratio(&self.off),
            "guestcomm",
        )
        .target(
            &format!("metrics add < {:.0}%", 100.0 * (TARGET_RATIO - 1.0)),
            TARGET_RATIO,
        );
        RatioChart::new(
            "metrics",
            "Prometheus metrics on against off, same run",
            vec![panel],
        )
    }
}

/// The Markdown section of case J.
pub(crate) fn render(m: &Machine, iterations: usize, warmup: usize, c: &MetricsCost) -> String {
    let ratio = c.on.paired_ratio(&c.off);
    let added_pct = (ratio - 1.0) * 100.0;
    let added_us = (c.on.median() - c.off.median()) * 1000.0;
    let mut o = String::new();
    let _ = writeln!(o, "<!-- bench:metrics:begin -->");
    let _ = writeln!(o, "## Metrics: what they cost an exec through guestcommd\n");
    let _ = writeln!(
        o,
        "Written by `target/release/guestcomm-bench --case metrics --plots docs/img --write \
         docs/BENCHMARKS.md` (method: `crates/bench/src/metrics_cost.rs`; chart \
         docs/img/metrics.png). Two daemons before the same agent on \
         Unix sockets, alike but for the metrics: one records them and serves them on a \
         loopback `--metrics` listener, scraped by the bench every {} s ({} scrapes of {} bytes \
         during the run); the other runs with `--no-metrics`. Exec of `true` through each, \
         {iterations} samples per daemon after {warmup} warm-up rounds, alternated.\n",
        SCRAPE_EVERY.as_secs(),
        c.scrapes,
        c.exposition_bytes
    );
    o.push_str(&m.table());
    let _ = writeln!(o, "| daemon | median ms | p99 ms |\n| --- | ---: | ---: |");
    for (name, s) in [("metrics on, scraped", &c.on), ("`--no-metrics`", &c.off)] {
        let _ = writeln!(
            o,
            "| {name} | {:.3} | {:.3} |",
            s.median(),
            s.percentile(99.0)
        );
    }
    let met = if ratio < TARGET_RATIO {
        "**met**"
    } else {
        "**missed**"
    };
    let _ = writeln!(
        o,
        "\n### Target\n\n| target | measured | |\n| --- | ---: | --- |\n\
         | metrics add < 1% to exec latency through the daemon | {added_pct:+.2}% \
         (paired ratio {ratio:.4}; medians {added_us:+.1} µs) | {met} |\n\n\
         A negative figure means the difference is below what this run can tell \
         apart from noise: the two daemons differ by one read lock, a few label \
         strings and atomic adds per operation (module doc of `crates/daemon/src/metrics.rs`)."
    );
    let _ = writeln!(o, "<!-- bench:metrics:end -->");
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chart_has_the_paired_ratio_and_the_target() {
        let c = MetricsCost {
            on: [1.01, 2.02, 1.01].into_iter().collect(),
            off: [1.0, 2.0, 1.0].into_iter().collect(),
            scrapes: 3,
            exposition_bytes: 4000,
        };
        let chart = c.chart();
        assert_eq!(chart.file_name(), "metrics.png");
        let panel = &chart.panels[0];
        assert_eq!(panel.ratio_of("baseline: `--no-metrics`"), Some(1.0));
        assert_eq!(panel.ratio_of("metrics on, scraped every 1 s"), Some(1.01));
        assert_eq!(panel.targets[0].at, TARGET_RATIO);
        let text = render(&Machine::probe(), 3, 0, &c);
        assert!(text.contains("chart docs/img/metrics.png"), "{text}");
    }
}
