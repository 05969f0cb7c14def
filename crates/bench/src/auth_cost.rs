//! Case F: what mutual authentication costs. Two agents on Unix
//! sockets, one without credentials and one with `--credentials` (the
//! psk-hmac-sha256 handshake: nonces both ways, two HMAC-SHA256 proofs),
//! measured in the same run, paths alternated round by round:
//!
//! - exec round trip of `true` (connect + handshake + exec), `iterations`
//!   samples each; reported as medians and the added milliseconds. Target:
//!   under 0.3 ms added per connection.
//! - bulk transfer, `rounds` samples each (at least [`MIN_BULK_ROUNDS`]): copy_to_guest of one file of
//!   `bytes`, and exec output (`head -c BYTES /dev/zero` into a counting
//!   sink); reported as MB/s and the median of the round-by-round ratios.
//!   Target: within 5% (authentication covers the handshake; the stream
//!   after it is not encrypted on unix and vsock, docs/SECURITY.md).
//!
//! The copy's source and destination are in memory (a directory on
//! `/dev/shm` when there is one): what is compared is the authenticated
//! stream, and an fsync of a gigabyte to a shared disk swings from round to
//! round by more than the whole target.
//!
//! The chart (`auth.png`): the authenticated exec's median over the
//! unauthenticated one's, and the authenticated copy and output as shares
//! of the unauthenticated ones (round by round, as the targets).

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use guestcomm_protocol::auth::Psk;
use tokio::runtime::Runtime;

use crate::agent::AgentGuard;
use crate::cases::{library_output, library_true_keyed, rotated};
use crate::copy::{library_to, make_file};
use crate::ratio::{Panel, RatioChart};
use crate::report::Machine;
use crate::stats::{format_bytes, Samples};

/// Target: added latency of the authenticated handshake, ms.
const TARGET_ADDED_MS: f64 = 0.3;
/// Target: authenticated bulk throughput as a share of unauthenticated.
const TARGET_THROUGHPUT_RATIO: f64 = 0.95;
/// Where the copies' files go when it exists: a tmpfs, so that no disk
/// writeback is measured.
const MEMORY_DIR: &str = "/dev/shm";

/// Figures of case F.
pub(crate) struct AuthCost {
    exec_plain: Samples,
    exec_keyed: Samples,
    copy_plain: Samples,
    copy_keyed: Samples,
    output_plain: Samples,
    output_keyed: Samples,
    iterations: usize,
    rounds: usize,
    bytes: u64,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    Plain,
    Keyed,
}

/// Fewest rounds of copy and output in case F. Its target is a 5% ratio,
/// and one round's ratio of two identical streams swings by more than that
/// on a shared two-core host (3 rounds gave 88% and 109% for the same
/// build); the median of 15 round-by-round ratios settles within a few %.
pub(crate) const MIN_BULK_ROUNDS: usize = 15;

/// Runs case F with a fresh pair of agents; `rounds` is raised to
/// [`MIN_BULK_ROUNDS`].
pub(crate) fn auth_cost(
    rt: &Runtime,
    agent_bin: &Path,
    iterations: usize,
    warmup: usize,
    rounds: usize,
    bytes: u64,
) -> anyhow::Result<AuthCost> {
    let rounds = rounds.max(MIN_BULK_ROUNDS);
    let plain = AgentGuard::start(agent_bin, rt)?;
    let psk = Psk::generate().context("failed to make a key")?;
    let keyed = AgentGuard::start_keyed(agent_bin, rt, Some(psk))?;
    let target = |side: Side| match side {
        Side::Plain => (&plain, None),
        Side::Keyed => (&keyed, keyed.psk()),
    };
    let sides = [Side::Plain, Side::Keyed];
    let mut exec_plain = Samples::default();
    let mut exec_keyed = Samples::default();
    for round in 0..warmup + iterations {
        for side in rotated(&sides, round) {
            let (agent, psk) = target(side);
            let elapsed = rt.block_on(library_true_keyed(agent.addr(), psk))?;
            if round >= warmup {
                match side {
                    Side::Plain => exec_plain.push_ms(elapsed),
                    Side::Keyed => exec_keyed.push_ms(elapsed),
                }
            }
        }
    }
    let mut dir = tempfile::Builder::new();
    dir.prefix("guestcomm-bench-");
    let dir = if Path::new(MEMORY_DIR).is_dir() {
        dir.tempdir_in(MEMORY_DIR)?
    } else {
        dir.tempdir()?
    };
    let src = dir.path().join("source");
    make_file(&src, bytes)?;
    let dst = dir.path().join("destination");
    let mut copy_plain = Samples::default();
    let mut copy_keyed = Samples::default();
    let mut output_plain = Samples::default();
    let mut output_keyed = Samples::default();
    let size = bytes.to_string();
    let head_args = ["-c", size.as_str(), "/dev/zero"];
    let mb_per_s = |d: std::time::Duration| bytes as f64 / d.as_secs_f64() / 1e6;
    for round in 0..rounds {
        for side in rotated(&sides, round) {
            let (agent, psk) = target(side);
            let _ = std::fs::remove_file(&dst);
            let copy = rt.block_on(library_to(agent.addr(), psk, &src, &dst))?;
            let output =
                rt.block_on(library_output(agent.addr(), psk, "head", &head_args, bytes))?;
            let (copies, outputs) = match side {
                Side::Plain => (&mut copy_plain, &mut output_plain),
                Side::Keyed => (&mut copy_keyed, &mut output_keyed),
            };
            copies.push(mb_per_s(copy));
            outputs.push(mb_per_s(output));
        }
    }
    Ok(AuthCost {
        exec_plain,
        exec_keyed,
        copy_plain,
        copy_keyed,
        output_plain,
        output_keyed,
        iterations,
        rounds,
        bytes,
    })
}

impl AuthCost {
    /// The chart of case F (`auth.png`).
    pub(crate) fn chart(&self) -> RatioChart {
        let exec = Panel::new(
            "exec round trip of `true` (connect + handshake + exec), median",
            "× no authentication (log scale; lower is better)",
        )
        .baseline("no authentication")
        .bar(
            "psk-hmac-sha256",
            self.exec_keyed.median() / self.exec_plain.median(),
            "guestcomm",
        );
        let bulk = Panel::new(
            format!("bulk transfer of {}, MB/s", format_bytes(self.bytes)),
            "share of no authentication, round by round (log scale; higher is better)",
        )
        .baseline("no authentication (copy and output alike)")
        .bar(
            "psk-hmac-sha256: copy into the agent",
            self.copy_keyed.paired_ratio(&self.copy_plain),
            "guestcomm",
        )
        .bar(
            "psk-hmac-sha256: exec output",
            self.output_keyed.paired_ratio(&self.output_plain),
            "guestcomm",
        )
        .target(
            &format!(
                "≥ {:.0}% of no authentication",
                100.0 * TARGET_THROUGHPUT_RATIO
            ),
            TARGET_THROUGHPUT_RATIO,
        );
        RatioChart::new(
            "auth",
            "authentication (psk-hmac-sha256) on against off, same run",
            vec![exec, bulk],
        )
    }

    /// The Markdown section of case F, markers included.
    pub(crate) fn render(&self, m: &Machine) -> String {
        let met = |ok: bool| if ok { "**met**" } else { "**missed**" };
        let added = self.exec_keyed.median() - self.exec_plain.median();
        let copy_ratio = self.copy_keyed.paired_ratio(&self.copy_plain);
        let output_ratio = self.output_keyed.paired_ratio(&self.output_plain);
        let mut o = String::new();
        let _ = writeln!(o, "<!-- bench:auth:begin -->");
        let _ = writeln!(
            o,
            "## Authentication on versus off\n\n\
             Written by `target/release/guestcomm-bench --case auth --plots docs/img --write \
             docs/BENCHMARKS.md` (method: `crates/bench/src/auth_cost.rs`; chart \
             docs/img/auth.png: the authenticated paths over the unauthenticated ones). Two agents on Unix sockets, one with \
             `--credentials` (psk-hmac-sha256), alternated. The copy's files are in memory \
             (`/dev/shm`): the authenticated stream is compared, not the disk.\n"
        );
        o.push_str(&m.table());
        let _ = writeln!(
            o,
            "| path | exec `true`: median ms | p99 ms | copy of {size}: median MB/s | exec output of {size}: median MB/s |\n| --- | ---: | ---: | ---: | ---: |",
            size = format_bytes(self.bytes)
        );
        for (name, exec, copy, output) in [
            (
                "no authentication",
                &self.exec_plain,
                &self.copy_plain,
                &self.output_plain,
            ),
            (
                "psk-hmac-sha256",
                &self.exec_keyed,
                &self.copy_keyed,
                &self.output_keyed,
            ),
        ] {
            let _ = writeln!(
                o,
                "| {name} | {:.3} | {:.3} | {:.0} | {:.0} |",
                exec.median(),
                exec.percentile(99.0),
                copy.median(),
                output.median()
            );
        }
        let _ = writeln!(
            o,
            "\n{} exec samples per path, {} rounds of copy and output; ratios are medians of the round-by-round ratios.\n\n### Targets\n\n| target | measured | |\n| --- | ---: | --- |",
            self.iterations, self.rounds
        );
        let _ = writeln!(
            o,
            "| authentication adds < {TARGET_ADDED_MS} ms per connection | {added:.3} ms | {} |",
            met(added < TARGET_ADDED_MS)
        );
        for (what, ratio) in [("copy", copy_ratio), ("exec output", output_ratio)] {
            let _ = writeln!(
                o,
                "| authenticated {what} ≥ {:.0}% of unauthenticated | {:.0}% | {} |",
                100.0 * TARGET_THROUGHPUT_RATIO,
                100.0 * ratio,
                met(ratio >= TARGET_THROUGHPUT_RATIO)
            );
        }
        let _ = writeln!(o, "<!-- bench:auth:end -->");
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chart_has_keyed_over_plain_for_latency_and_throughput() {
        let of = |v: &[f64]| -> Samples { v.iter().copied().collect() };
        let f = AuthCost {
            exec_plain: of(&[1.0, 1.0, 1.0]),
            exec_keyed: of(&[1.1, 1.1, 1.1]),
            copy_plain: of(&[500.0, 250.0]),
            copy_keyed: of(&[250.0, 125.0]),
            output_plain: of(&[800.0, 800.0]),
            output_keyed: of(&[800.0, 800.0]),
            iterations: 3,
            rounds: 2,
            bytes: 1 << 20,
        };
        let chart = f.chart();
        assert_eq!(chart.file_name(), "auth.png");
        let [exec, bulk] = &chart.panels[..] else {
            panic!("{chart:?}")
        };
        assert_eq!(exec.ratio_of("baseline: no authentication"), Some(1.0));
        assert_eq!(exec.ratio_of("psk-hmac-sha256"), Some(1.1));
        assert_eq!(
            bulk.ratio_of("psk-hmac-sha256: copy into the agent"),
            Some(0.5)
        );
        assert_eq!(bulk.ratio_of("psk-hmac-sha256: exec output"), Some(1.0));
        assert_eq!(bulk.targets[0].at, TARGET_THROUGHPUT_RATIO);
        let text = f.render(&Machine::probe());
        assert!(text.contains("chart docs/img/auth.png"), "{text}");
    }
}
