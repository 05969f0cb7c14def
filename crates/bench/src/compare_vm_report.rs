//! The report of case G (guestcomm and qemu-ga in one TCG guest): the
//! Markdown section between `<!-- bench:compare-vm:begin -->` and its end
//! marker, and the ratios against qemu-ga that the tables, the targets and
//! the chart share (medians of per-round ratios, see
//! [`Samples::paired_ratio`]); also the pieces case K's report (OpenSSH in
//! a guest) draws the same way: the chart's ratios and the throughput tables.

use std::fmt::Write as _;

use crate::compare::Row;
use crate::compare_vm::{GuestMemory, VmComparison, BARE_SYSTEM};
use crate::report::{Machine, TARGET_TIMES_QGA};
use crate::stats::{format_bytes, Samples};
use crate::vm_guest::{COPY_BYTES, EXEC_SAMPLES, OUTPUT_BYTES, OUTPUT_COMMAND, ROUNDS};

/// How many times better `ours` does than `theirs`, round by round (the
/// median of the per-round ratios): `theirs / ours` where lower is better
/// (latency), `ours / theirs` where higher is better (throughput).
pub(crate) fn advantage(ours: &Samples, theirs: &Samples, lower_is_better: bool) -> f64 {
    if lower_is_better {
        theirs.paired_ratio(ours)
    } else {
        ours.paired_ratio(theirs)
    }
}

fn qga_row(rows: &[Row]) -> Option<&Row> {
    rows.iter().find(|r| r.system == "qemu-ga")
}

/// Exec output (library) against the bare vsock stream: at least this share.
pub(crate) const TARGET_OUTPUT_OF_BARE: f64 = 0.8;
/// `guestcomm cp`, each way, against the bare vsock stream: at least this.
pub(crate) const TARGET_COPY_OF_BARE: f64 = 0.7;

/// One workload's guestcomm path against the bare vsock stream of the same
/// rounds.
pub(crate) struct BareShare<'a> {
    pub(crate) ours: &'a Row,
    pub(crate) bare: &'a Row,
    /// Median of the per-round ratios guestcomm ÷ bare (throughput).
    pub(crate) share: f64,
}

/// The first guestcomm row of `rows` against its bare vsock row, if both
/// are there.
pub(crate) fn bare_share(rows: &[Row]) -> Option<BareShare<'_>> {
    let ours = rows.iter().find(|r| r.system == "guestcomm")?;
    let bare = rows.iter().find(|r| r.system == BARE_SYSTEM)?;
    let share = ours.samples.paired_ratio(&bare.samples);
    Some(BareShare { ours, bare, share })
}

/// A table for the chart: the workload, its rows, the row guestcomm's are
/// compared with, and whether lower is better.
pub(crate) type ChartTable<'a> = (&'a str, &'a [Row], Option<&'a Row>, bool);

/// One bar per guestcomm row of each table with a reference row: its
/// advantage over that row, labelled by the workload (and the path when the
/// table has more than one guestcomm row).
pub(crate) fn advantages_over<'a>(
    tables: impl IntoIterator<Item = ChartTable<'a>>,
) -> Vec<(String, f64)> {
    let mut out = Vec::new();
    for (workload, rows, reference, lower) in tables {
        let Some(reference) = reference else { continue };
        let ours: Vec<&Row> = rows.iter().filter(|r| r.system == "guestcomm").collect();
        for r in &ours {
            let label = if ours.len() > 1 {
                format!("{workload}: {}", short(r.path))
            } else {
                workload.to_string()
            };
            out.push((label, advantage(&r.samples, &reference.samples, lower)));
        }
    }
    out
}

/// A throughput table: `### TITLE, N rounds`, then each row's median, min
/// and max MB/s and `ratio(row)` under `column`.
pub(crate) fn throughput_table(
    o: &mut String,
    title: &str,
    note: &str,
    column: &str,
    rows: &[Row],
    ratio: impl Fn(&Row) -> String,
) {
    let _ = writeln!(
        o,
        "\n### {title}, {ROUNDS} rounds\n\n{note}\
         | system | path | median MB/s | min | max | {column} |\n\
         | --- | --- | ---: | ---: | ---: | ---: |"
    );
    for r in rows {
        let _ = writeln!(
            o,
            "| {} | {} | {:.2} | {:.2} | {:.2} | {} |",
            r.system,
            r.path,
            r.samples.median(),
            r.samples.min(),
            r.samples.max(),
            ratio(r)
        );
    }
}

impl VmComparison {
    /// guestcomm's advantage over qemu-ga per workload, for the chart.
    pub(crate) fn advantages(&self) -> Vec<(String, f64)> {
        let tables: [(&str, &[Row], bool); 4] = [
            ("exec `true`", &self.latency, true),
            ("command output", &self.output, false),
            ("copy host → guest", &self.copy_to, false),
            ("copy guest → host", &self.copy_from, false),
        ];
        advantages_over(
            tables
                .into_iter()
                .map(|(workload, rows, lower)| (workload, rows, qga_row(rows), lower)),
        )
    }

    /// The Markdown section, markers included; `versions` names every program.
    pub(crate) fn render(&self, m: &Machine, versions: &str) -> String {
        let mut o = String::new();
        let name = &self.section;
        let _ = writeln!(o, "<!-- bench:{name}:begin -->");
        let (title, option) = crate::vm_guest::cpu_model_notes(&self.cpu);
        let _ = writeln!(
            o,
            "## Side by side in a VM: guestcomm and the QEMU guest agent, both over vsock{title}\n"
        );
        let _ = writeln!(
            o,
            "Written by `target/release/guestcomm-bench --case compare-vm{option} --plots docs/img \
             --write docs/BENCHMARKS.md` after `cargo build --release -p guestcomm-cli -p \
             guestcomm-bench && RUSTFLAGS='-C target-feature=+crt-static' cargo build --profile agent \
             --target x86_64-unknown-linux-gnu -p guestcomm-agent && bash \
             scripts/vm/build-image --with-qemu-ga` (method: `crates/bench/src/compare_vm.rs`; \
             chart docs/img/{name}.png). One QEMU guest under TCG (no KVM: every guest \
             instruction is emulated; 1 vCPU `-cpu {}`, 512 MiB), kernel `{}`, booted from an \
             initramfs. In it guestcomm-agent (`{}`, built as it ships: profile `agent`, statically linked) listens \
             on vsock port 18243 with the VM's key, and qemu-ga on `-m vsock-listen -p \
             3:{}`; the host reaches both through the same vhost-device-vsock hybrid socket \
             (`CONNECT <port>`), so both pay the same transport. What differs: qemu-ga moves \
             bytes as base64 in JSON and returns exec output only after the command exits, \
             capped at 16 MiB; guestcomm authenticates every connection (HMAC handshake) and \
             streams. The baseline of the output and copy targets is a bare vsock byte stream \
             through the same socket in the same guest, a path of its own in the same \
             alternated rounds: `socat` between a vsock connection and what the guestcomm \
             path reads or writes (`crates/bench/src/\
             vm_bare.rs`). Guest files are on the guest's tmpfs (RAM); host files are fsynced. \
             Ratios are medians of per-round ratios within this run.\n",
            self.cpu, self.image.kernel, self.image.agent, self.image.qga_port
        );
        o.push_str(&m.table());
        let _ = writeln!(
            o,
            "Host load average (1, 5, 15 min, runnable/total, last PID) before: `{}`; after: \
             `{}`. The host is shared: other builds may have run during the measurement.\n",
            self.load[0], self.load[1]
        );
        let _ = writeln!(o, "Versions: {versions}\n");
        let _ = writeln!(
            o,
            "### Exec latency of `true`\n\n{EXEC_SAMPLES} samples per path after a warm-up, \
             alternated.\n\n| system | path | p50 ms | p99 ms | qemu-ga ÷ this |\n\
             | --- | --- | ---: | ---: | ---: |"
        );
        for r in &self.latency {
            let _ = writeln!(
                o,
                "| {} | {} | {:.2} | {:.2} | {} |",
                r.system,
                r.path,
                r.samples.median(),
                r.samples.percentile(99.0),
                self.times(&self.latency, r, true)
            );
        }
        let _ = writeln!(
            o,
            "\nOf guestcomm's time, connect + authenticated handshake alone (no exec) take \
             p50 {:.2} ms, p99 {:.2} ms (measured in the same rounds).",
            self.handshake.median(),
            self.handshake.percentile(99.0)
        );
        let tables = [
            (
                format!(
                    "Command output (`{}`: {})",
                    OUTPUT_COMMAND.join(" "),
                    format_bytes(OUTPUT_BYTES)
                ),
                "Not `head -c` as on the host: the guest's busybox `head` writes in small \
                 pieces and alone needs over a second for 16 MiB under TCG.\n\n",
                &self.output,
            ),
            (
                format!("File copy host → guest, {}", format_bytes(COPY_BYTES)),
                "",
                &self.copy_to,
            ),
            (
                format!("File copy guest → host, {}", format_bytes(COPY_BYTES)),
                "",
                &self.copy_from,
            ),
        ];
        for (title, note, rows) in tables {
            throughput_table(&mut o, &title, note, "this ÷ qemu-ga", rows, |r| {
                self.times(rows, r, false)
            });
        }
        self.render_bare(&mut o);
        self.render_memory(&mut o);
        self.startup
            .render(&mut o, "no RDRAND, no virtio-rng: `rdrand=off`");
        self.render_targets(&mut o);
        let _ = writeln!(o, "<!-- bench:{name}:end -->");
        o
    }

    /// Each workload's guestcomm path against the bare stream.
    fn bare_shares(&self) -> [(&'static str, f64, Option<BareShare<'_>>); 3] {
        [
            (
                "exec output (library)",
                TARGET_OUTPUT_OF_BARE,
                bare_share(&self.output),
            ),
            (
                "copy host → guest",
                TARGET_COPY_OF_BARE,
                bare_share(&self.copy_to),
            ),
            (
                "copy guest → host",
                TARGET_COPY_OF_BARE,
                bare_share(&self.copy_from),
            ),
        ]
    }

    fn render_bare(&self, o: &mut String) {
        let _ = writeln!(
            o,
            "\n### Against a bare vsock byte stream, same guest, same socket\n\n\
             From the rounds above: exec output is `dd` writing straight into the vsock \
             connection (socat's `EXEC:…,nofork`), drained on the host; guest → host is socat \
             (buffer 256 KiB) reading the tmpfs file into the connection, the host writing \
             it into a file and fsyncing it; host → guest is the host sending its file, socat \
             writing it into a tmpfs file (created, truncated) and closing the connection after \
             the last byte, which ends the host's timing. Each bare leg is timed from before \
             its connect (`CONNECT <port>`) to the end of its stream.\n\n\
             | workload | guestcomm path | guestcomm median MB/s | bare median MB/s | guestcomm ÷ bare |\n\
             | --- | --- | ---: | ---: | ---: |"
        );
        for (workload, _, share) in self.bare_shares() {
            if let Some(b) = share {
                let _ = writeln!(
                    o,
                    "| {workload} | {} | {:.2} | {:.2} | {:.0}% |",
                    b.ours.path,
                    b.ours.samples.median(),
                    b.bare.samples.median(),
                    100.0 * b.share
                );
            }
        }
    }

    /// A row's paired ratio against the qemu-ga row of its table.
    fn times(&self, rows: &[Row], r: &Row, lower_is_better: bool) -> String {
        match qga_row(rows) {
            Some(q) if r.system != "qemu-ga" => {
                let x = advantage(&r.samples, &q.samples, lower_is_better);
                format!("{x:.1}×")
            }
            _ => "1×".into(),
        }
    }

    fn render_memory(&self, o: &mut String) {
        let _ = writeln!(
            o,
            "\n### Resident memory in the guest\n\n\
             Each agent's /proc/PID/status read through the other agent, so neither is busy \
             when measured; idle = after boot, before any workload (guestcomm-agent has \
             answered the boot probe's handshake and one exec).\n\n\
             The programs' pages are on the initramfs (a tmpfs), so they count as shared \
             memory; \"code and files\" is RssFile + RssShmem.\n\n\
             | process | idle RSS MiB | anonymous | code and files | after the workloads | peak (VmHWM) |\n\
             | --- | ---: | ---: | ---: | ---: | ---: |"
        );
        let row = |o: &mut String, name: &str, m: &GuestMemory| {
            let _ = writeln!(
                o,
                "| {name} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} |",
                m.idle[0], m.idle[1], m.idle[2], m.after, m.peak
            );
        };
        row(o, "guestcomm-agent", &self.agent_memory);
        row(o, "qemu-ga", &self.qga_memory);
    }

    fn render_targets(&self, o: &mut String) {
        let met = |ok: bool| if ok { "**met**" } else { "**missed**" };
        let _ = writeln!(
            o,
            "\n### Targets, in the guest\n\n| target | measured | |\n| --- | ---: | --- |"
        );
        if let (Some(ours), Some(qga)) = (self.latency.first(), qga_row(&self.latency)) {
            // ours / theirs: at most ½.
            let x = ours.samples.paired_ratio(&qga.samples);
            let _ = writeln!(
                o,
                "| exec latency (library) ≤ ½ of qemu-ga's | {x:.2}× qemu-ga's | {} |",
                met(x <= 0.5)
            );
        }
        let reused = self
            .latency
            .iter()
            .find(|r| r.path.contains("one connection"));
        if let (Some(ours), Some(qga)) = (reused, qga_row(&self.latency)) {
            let x = ours.samples.paired_ratio(&qga.samples);
            let _ = writeln!(
                o,
                "| exec p50 (library, one connection) ≤ 0.6× qemu-ga's (its channel is open too) | {x:.2}× qemu-ga's | {} |",
                met(x <= 0.6)
            );
        }
        for (name, rows) in [
            ("host → guest", &self.copy_to),
            ("guest → host", &self.copy_from),
        ] {
            if let (Some(ours), Some(qga)) = (rows.first(), qga_row(rows)) {
                let x = advantage(&ours.samples, &qga.samples, false);
                let _ = writeln!(
                    o,
                    "| copy {name} ≥ {TARGET_TIMES_QGA:.0}× qemu-ga | {x:.1}× | {} |",
                    met(x >= TARGET_TIMES_QGA)
                );
            }
        }
        for (workload, target, share) in self.bare_shares() {
            if let Some(b) = share {
                let _ = writeln!(
                    o,
                    "| {workload} ≥ {:.0}% of the bare vsock stream | {:.0}% | {} |",
                    100.0 * target,
                    100.0 * b.share,
                    met(b.share >= target)
                );
            }
        }
        let (ours, qga) = (self.agent_memory.idle[0], self.qga_memory.idle[0]);
        let _ = writeln!(
            o,
            "| agent idle RSS ≤ qemu-ga's | {ours:.1} vs {qga:.1} MiB | {} |",
            met(ours <= qga)
        );
    }
}

/// "library, direct to the agent" → "library"; "CLI `…`" → "CLI";
/// "library, one connection, …" → "library, one connection".
pub(crate) fn short(path: &str) -> &str {
    const REUSED: &str = "library, one connection";
    if path.starts_with(REUSED) {
        return REUSED;
    }
    path.split([',', ' ']).next().unwrap_or(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advantage_is_more_is_better_both_ways() {
        // Latency: qemu-ga takes 3× as long in every round.
        let ours: Samples = [10.0, 20.0, 10.0].into_iter().collect();
        let theirs: Samples = [30.0, 60.0, 30.0].into_iter().collect();
        assert_eq!(advantage(&ours, &theirs, true), 3.0);
        // Throughput: guestcomm moves 40× as much, though the machine halved in round 2.
        let ours: Samples = [400.0, 200.0, 400.0].into_iter().collect();
        let theirs: Samples = [10.0, 5.0, 10.0].into_iter().collect();
        assert_eq!(advantage(&ours, &theirs, false), 40.0);
    }

    #[test]
    fn guestcomm_is_compared_with_the_bare_stream_round_by_round() {
        let row = |system: &'static str, values: [f64; 3]| Row {
            system,
            path: "p",
            samples: values.into_iter().collect(),
        };
        // The host halved in round 2; guestcomm had 3/4 of the bare stream
        // in rounds 1 and 2, half in round 3.
        let rows = [
            row("guestcomm", [30.0, 15.0, 20.0]),
            row("qemu-ga", [1.0, 1.0, 1.0]),
            row(BARE_SYSTEM, [40.0, 20.0, 40.0]),
        ];
        let share = bare_share(&rows).unwrap();
        assert_eq!(share.share, 0.75);
        assert_eq!(share.bare.system, BARE_SYSTEM);
        assert_eq!(share.ours.system, "guestcomm");
        assert!(share.share < TARGET_OUTPUT_OF_BARE && share.share >= TARGET_COPY_OF_BARE);
        assert!(bare_share(&rows[..2]).is_none());
    }

    #[test]
    fn paths_are_shortened_for_the_chart() {
        assert_eq!(short("library, direct to the agent"), "library");
        assert_eq!(short("CLI `guestcomm exec hvsock-uds://… -- true`"), "CLI");
        assert_eq!(short("x"), "x");
        assert_eq!(
            short("library, one connection, one exec after another"),
            "library, one connection"
        );
    }
}
