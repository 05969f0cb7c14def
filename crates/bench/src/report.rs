//! The report: machine information, the Markdown tables, the targets, and
//! the rewrite of one marked section of `docs/BENCHMARKS.md` (other benches
//! keep their own sections in the same file).

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

use anyhow::Context;

use crate::cases::{RoundTrip, Throughput};
use crate::copy::CopyThroughput;
use crate::ratio::{Panel, RatioChart};
use crate::stats::{format_bytes, Samples};

/// First line of this bench's section.
pub(crate) const BEGIN_MARKER: &str = "<!-- bench:exec:begin -->";
/// Last line of this bench's section.
pub(crate) const END_MARKER: &str = "<!-- bench:exec:end -->";

/// Target: added latency of one exec, median against local.
pub(crate) const TARGET_OVERHEAD_MS: f64 = 1.0;
/// Target: exec stdout throughput as a share of the bare socket.
pub(crate) const TARGET_THROUGHPUT_RATIO: f64 = 0.70;
/// Target: the CLI's start-up (`guestcomm --version`) over spawning `true`.
const TARGET_STARTUP_MS: f64 = 0.5;
/// Target: `guestcomm exec … -- true` as a multiple of a local `sh -c true`.
const TARGET_CLI_TIMES_SH: f64 = 2.0;
/// Target: the CLI's stdout throughput as a share of the bare socket.
const TARGET_CLI_THROUGHPUT_RATIO: f64 = 0.80;

/// Target: guestcomm cp against qemu-ga's file commands.
pub(crate) const TARGET_TIMES_QGA: f64 = 20.0;

/// Where and with what the figures were measured.
pub(crate) struct Machine {
    cpus: String,
    cpu_model: String,
    kernel: String,
    rustc: String,
    date: String,
}

fn command_line(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
}

impl Machine {
    pub(crate) fn probe() -> Self {
        let unknown = || "unknown".to_string();
        let cpus = std::thread::available_parallelism()
            .map(|n| n.to_string())
            .unwrap_or_else(|_| unknown());
        let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|info| {
                info.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, model)| model.trim().to_string())
            })
            .unwrap_or_else(unknown);
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|k| format!("Linux {}", k.trim()))
            .unwrap_or_else(|_| unknown());
        let rustc =
            command_line("rustc", &["-V"]).unwrap_or_else(|| "unknown (rustc not on PATH)".into());
        let date = command_line("date", &["-u", "+%Y-%m-%d %H:%M UTC"]).unwrap_or_else(unknown);
        Self {
            cpus,
            cpu_model,
            kernel,
            rustc,
            date,
        }
    }
}

/// What was asked for, echoed in the report.
pub(crate) struct Settings {
    pub(crate) iterations: usize,
    pub(crate) warmup: usize,
    pub(crate) bytes: u64,
    pub(crate) rounds: usize,
    /// Which build of the CLI ran, for the text.
    pub(crate) cli: &'static str,
}

/// Whether the measured figures meet the targets.
pub(crate) struct Verdict {
    pub(crate) overhead_ms: f64,
    pub(crate) throughput_ratio: f64,
}

impl Machine {
    /// The machine as a Markdown table, followed by a blank line.
    pub(crate) fn table(&self) -> String {
        format!(
            "| machine | |\n| --- | --- |\n| CPUs (nproc) | {} |\n| CPU | {} |\n| kernel | {} |\n| rustc | {} |\n| date | {} |\n\n",
            self.cpus, self.cpu_model, self.kernel, self.rustc, self.date
        )
    }
}

impl Verdict {
    pub(crate) fn new(a: &RoundTrip, b: &Throughput) -> Self {
        Self {
            overhead_ms: a.library.median() - a.local.median(),
            throughput_ratio: b.library.paired_ratio(&b.bare),
        }
    }

    pub(crate) fn overhead_met(&self) -> bool {
        self.overhead_ms < TARGET_OVERHEAD_MS
    }

    pub(crate) fn throughput_met(&self) -> bool {
        self.throughput_ratio >= TARGET_THROUGHPUT_RATIO
    }
}

fn met(ok: bool) -> &'static str {
    if ok {
        "**met**"
    } else {
        "**missed**"
    }
}

/// The whole section, markers included.
pub(crate) fn render(m: &Machine, s: &Settings, a: &RoundTrip, b: &Throughput) -> String {
    let v = Verdict::new(a, b);
    let local = a.local.median();
    let mut o = String::new();
    // Writing to a String cannot fail.
    let _ = writeln!(o, "{BEGIN_MARKER}");
    let _ = writeln!(o, "## exec: round trip and stdout throughput\n");
    let _ = writeln!(
        o,
        "Written by `target/release/guestcomm-bench --plots docs/img --write docs/BENCHMARKS.md` \
         (source and method: `crates/bench/src/main.rs`; chart docs/img/exec.png: each path \
         over its baseline, the targets that are ratios as lines). The agent runs on the same \
         machine on a Unix socket, so these figures are the cost of guestcomm itself, \
         without a VM or vsock. The CLI is {}.\n",
        s.cli
    );
    o.push_str(&m.table());

    let _ = writeln!(
        o,
        "### A. exec round trip of `true`\n\n{} samples per path after {} warm-up rounds, \
         paths alternated round by round. Overhead = median minus the local median.\n",
        s.iterations, s.warmup
    );
    let _ = writeln!(
        o,
        "| path | median ms | p99 ms | overhead ms | ratio to local |\n| --- | ---: | ---: | ---: | ---: |"
    );
    let row = |o: &mut String, name: &str, x: &Samples, baseline: bool| {
        let (over, ratio) = if baseline {
            ("—".to_string(), "1.00×".to_string())
        } else {
            (
                format!("{:+.3}", x.median() - local),
                format!("{:.2}×", x.median() / local),
            )
        };
        let _ = writeln!(
            o,
            "| {name} | {:.3} | {:.3} | {over} | {ratio} |",
            x.median(),
            x.percentile(99.0)
        );
    };
    row(
        &mut o,
        "local: spawn `true` (std::process::Command)",
        &a.local,
        true,
    );
    row(&mut o, "local: spawn `sh -c true`", &a.local_sh, false);
    row(
        &mut o,
        "CLI start-up: `guestcomm --version`",
        &a.startup,
        false,
    );
    row(
        &mut o,
        "library: connect + handshake + exec `true`",
        &a.library,
        false,
    );
    row(
        &mut o,
        "CLI: `guestcomm exec unix://… -- true`",
        &a.cli,
        false,
    );

    let _ = writeln!(
        o,
        "\n### B. stdout throughput of `head -c {} /dev/zero`\n\n{} rounds per path, \
         alternated; MB/s = 10^6 bytes/s, over the whole run (process start included).\n",
        format_bytes(s.bytes),
        s.rounds
    );
    let _ = writeln!(
        o,
        "| path | median MB/s | min | max | ratio to bare |\n| --- | ---: | ---: | ---: | ---: |"
    );
    throughput_rows(
        &mut o,
        &b.bare,
        &[
            (
                "bare: child pipe → copy → Unix socket pair → drain",
                &b.bare,
            ),
            ("library: exec, stdout into a counting sink", &b.library),
            ("CLI: `guestcomm exec … > /dev/null`", &b.cli),
        ],
    );

    let cli_over = a.cli.median() - local;
    let startup_over = a.startup.median() - local;
    let cli_times_sh = a.cli.median() / a.local_sh.median();
    let cli_ratio = b.cli.paired_ratio(&b.bare);
    let _ = writeln!(
        o,
        "\n### Targets\n\n| target | measured | |\n| --- | ---: | --- |"
    );
    let _ = writeln!(
        o,
        "| library exec overhead < {TARGET_OVERHEAD_MS} ms | {:.3} ms | {} |",
        v.overhead_ms,
        met(v.overhead_met())
    );
    let _ = writeln!(
        o,
        "| CLI exec overhead < {TARGET_OVERHEAD_MS} ms (what users feel) | {cli_over:.3} ms | {} |",
        met(cli_over < TARGET_OVERHEAD_MS)
    );
    let _ = writeln!(
        o,
        "| CLI start-up (`--version` over spawning `true`) < {TARGET_STARTUP_MS} ms | {startup_over:.3} ms | {} |",
        met(startup_over < TARGET_STARTUP_MS)
    );
    let _ = writeln!(
        o,
        "| CLI exec of `true` ≤ {TARGET_CLI_TIMES_SH:.0}× a local `sh -c true` | {cli_times_sh:.2}× | {} |",
        met(cli_times_sh <= TARGET_CLI_TIMES_SH)
    );
    let _ = writeln!(
        o,
        "| library stdout ≥ {:.0}% of bare socket | {:.0}% | {} |",
        100.0 * TARGET_THROUGHPUT_RATIO,
        100.0 * v.throughput_ratio,
        met(v.throughput_met())
    );
    let _ = writeln!(
        o,
        "| CLI stdout ≥ {:.0}% of bare socket | {:.0}% | {} |",
        100.0 * TARGET_CLI_THROUGHPUT_RATIO,
        100.0 * cli_ratio,
        met(cli_ratio >= TARGET_CLI_THROUGHPUT_RATIO)
    );
    let _ = writeln!(o, "{END_MARKER}");
    o
}

/// Rows of a throughput table: median, min, max MB/s and share of `bare`
/// (the median of the round-by-round ratios, see [`Samples::paired_ratio`]).
fn throughput_rows(o: &mut String, bare: &Samples, rows: &[(&str, &Samples)]) {
    for (name, x) in rows {
        let _ = writeln!(
            o,
            "| {name} | {:.0} | {:.0} | {:.0} | {:.0}% |",
            x.median(),
            x.min(),
            x.max(),
            100.0 * x.paired_ratio(bare)
        );
    }
}

/// The `cp` section (case C), markers included.
pub(crate) fn render_cp(m: &Machine, bytes: u64, rounds: usize, c: &CopyThroughput) -> String {
    let bare = &c.bare;
    let mut o = String::new();
    let _ = writeln!(o, "<!-- bench:cp:begin -->");
    let _ = writeln!(o, "## cp: one large file each way\n");
    let _ = writeln!(
        o,
        "Written by `target/release/guestcomm-bench --case cp --plots docs/img --write \
         docs/BENCHMARKS.md` (method: `crates/bench/src/copy.rs`; chart docs/img/cp.png: each \
         path's share of the bare socket, the 70% target as a line). The agent runs on the same machine on a Unix \
         socket; \"guest\" and host paths are on the same disk. Every path writes a new \
         file and fsyncs it.\n"
    );
    o.push_str(&m.table());
    let _ = writeln!(
        o,
        "{} file, {rounds} rounds, paths alternated round by round; MB/s = 10^6 B/s, \
         connection and process start included.\n",
        format_bytes(bytes)
    );
    let _ = writeln!(
        o,
        "| path | median MB/s | min | max | share of bare |\n| --- | ---: | ---: | ---: | ---: |"
    );
    throughput_rows(
        &mut o,
        bare,
        &[
            ("bare: file → Unix socket pair → file, fsync", &c.bare),
            ("`cp(1)` + fsync", &c.system_cp),
            ("library: copy_to_guest (host → guest)", &c.library_to),
            ("library: copy_from_guest (guest → host)", &c.library_from),
            ("CLI: `guestcomm cp FILE unix://…:/DST`", &c.cli_to),
            ("CLI: `guestcomm cp unix://…:/SRC FILE`", &c.cli_from),
        ],
    );
    let with_qga = !c.qga_to.is_empty() && !c.qga_from.is_empty();
    if with_qga {
        throughput_rows(
            &mut o,
            bare,
            &[
                (
                    "qemu-ga: guest-file-write, base64 (host → guest)",
                    &c.qga_to,
                ),
                (
                    "qemu-ga: guest-file-read, base64 (guest → host)",
                    &c.qga_from,
                ),
            ],
        );
    }
    let _ = writeln!(
        o,
        "\n### Targets\n\n| target | measured | |\n| --- | ---: | --- |"
    );
    for (name, x) in [
        ("host → guest (library)", &c.library_to),
        ("guest → host (library)", &c.library_from),
        ("host → guest (CLI)", &c.cli_to),
        ("guest → host (CLI)", &c.cli_from),
    ] {
        let ratio = x.paired_ratio(bare);
        let _ = writeln!(
            o,
            "| {name} ≥ {:.0}% of bare socket | {:.0}% | {} |",
            100.0 * TARGET_THROUGHPUT_RATIO,
            100.0 * ratio,
            met(ratio >= TARGET_THROUGHPUT_RATIO)
        );
    }
    if with_qga {
        for (name, ours, theirs) in [
            ("host → guest (CLI)", &c.cli_to, &c.qga_to),
            ("guest → host (CLI)", &c.cli_from, &c.qga_from),
        ] {
            let times = ours.paired_ratio(theirs);
            let _ = writeln!(
                o,
                "| {name} > {TARGET_TIMES_QGA:.0}× qemu-ga | {times:.1}× | {} |",
                met(times > TARGET_TIMES_QGA)
            );
        }
    } else {
        let _ = writeln!(
            o,
            "\nqemu-ga was not installed for this run (Debian: `qemu-guest-agent`); \
             its comparison is left out."
        );
    }
    let _ = writeln!(o, "<!-- bench:cp:end -->");
    o
}

/// The chart of cases A and B (`exec.png`), with the ratios of their
/// tables: A, each path's median over spawning `true` locally (the CLI's
/// target against `sh -c true` drawn in those units); B, each path's share
/// of the bare socket, round by round.
pub(crate) fn exec_chart(a: &RoundTrip, b: &Throughput, bytes: u64) -> RatioChart {
    let local = a.local.median();
    let times = |x: &Samples| x.median() / local;
    let round_trip = Panel::new(
        "A. exec round trip of `true`, median",
        "× spawning `true` locally (log scale; lower is better)",
    )
    .baseline("spawn `true` (std::process::Command)")
    .bar("local: spawn `sh -c true`", times(&a.local_sh), "local")
    .bar(
        "CLI start-up: `guestcomm --version`",
        times(&a.startup),
        "guestcomm",
    )
    .bar(
        "library: connect + handshake + exec",
        times(&a.library),
        "guestcomm",
    )
    .bar(
        "CLI: `guestcomm exec unix://… -- true`",
        times(&a.cli),
        "guestcomm",
    )
    .target(
        &format!("CLI ≤ {TARGET_CLI_TIMES_SH:.0}× `sh -c true`"),
        TARGET_CLI_TIMES_SH * a.local_sh.median() / local,
    );
    let output = Panel::new(
        format!(
            "B. stdout of `head -c {}`, median MB/s",
            format_bytes(bytes)
        ),
        "share of the bare socket, round by round (log scale; higher is better)",
    )
    .baseline("child pipe → copy → Unix socket pair")
    .bar(
        "library: exec into a counting sink",
        b.library.paired_ratio(&b.bare),
        "guestcomm",
    )
    .bar(
        "CLI: `guestcomm exec … > /dev/null`",
        b.cli.paired_ratio(&b.bare),
        "guestcomm",
    )
    .target(
        &format!("library ≥ {:.0}%", 100.0 * TARGET_THROUGHPUT_RATIO),
        TARGET_THROUGHPUT_RATIO,
    )
    .target(
        &format!("CLI ≥ {:.0}%", 100.0 * TARGET_CLI_THROUGHPUT_RATIO),
        TARGET_CLI_THROUGHPUT_RATIO,
    );
    RatioChart::new(
        "exec",
        "exec through guestcomm against local baselines, same run",
        vec![round_trip, output],
    )
}

/// The chart of case C (`cp.png`): each path's share of the bare socket
/// (file → socket pair → file), round by round, as in its table.
pub(crate) fn cp_chart(c: &CopyThroughput, bytes: u64) -> RatioChart {
    let share = |x: &Samples| x.paired_ratio(&c.bare);
    let mut panel = Panel::new(
        format!(
            "C. copy of one {} file, fsynced, median MB/s",
            format_bytes(bytes)
        ),
        "share of the bare socket, round by round (log scale; higher is better)",
    )
    .baseline("file → Unix socket pair → file")
    .bar("`cp(1)`", share(&c.system_cp), "local")
    .bar("library: host → guest", share(&c.library_to), "guestcomm")
    .bar("library: guest → host", share(&c.library_from), "guestcomm")
    .bar("CLI: host → guest", share(&c.cli_to), "guestcomm")
    .bar("CLI: guest → host", share(&c.cli_from), "guestcomm");
    if !c.qga_to.is_empty() && !c.qga_from.is_empty() {
        panel = panel
            .bar("qemu-ga: guest-file-write", share(&c.qga_to), "qemu-ga")
            .bar("qemu-ga: guest-file-read", share(&c.qga_from), "qemu-ga");
    }
    let panel = panel.target(
        &format!("guestcomm ≥ {:.0}%", 100.0 * TARGET_THROUGHPUT_RATIO),
        TARGET_THROUGHPUT_RATIO,
    );
    RatioChart::new(
        "cp",
        "cp through guestcomm against a bare socket, same run",
        vec![panel],
    )
}

/// Title of a benchmarks file this bench creates.
const NEW_FILE_HEADER: &str = "# Benchmarks\n\n\
Measured figures. Each section is rewritten by the command named in it, between its \
`<!-- bench:NAME:begin -->` and `<!-- bench:NAME:end -->` markers; text outside the \
markers is kept.\n\n";

/// Puts `section` (markers included: its first and last lines) into
/// `existing`: in place of the section with the same markers when there is
/// one, else at the end.
pub(crate) fn splice(existing: &str, section: &str) -> String {
    // The section's own first and last lines are its markers.
    let begin_marker = section.lines().next().unwrap_or(BEGIN_MARKER);
    let end_marker = section.lines().last().unwrap_or(END_MARKER);
    if let Some(begin) = existing.find(begin_marker) {
        if let Some(end_rel) = existing[begin..].find(end_marker) {
            let mut end = begin + end_rel + end_marker.len();
            if existing[end..].starts_with('\n') {
                end += 1;
            }
            return format!("{}{section}{}", &existing[..begin], &existing[end..]);
        }
    }
    let mut out = existing.to_string();
    if !out.is_empty() && !out.ends_with("\n\n") {
        out.push_str(if out.ends_with('\n') { "\n" } else { "\n\n" });
    }
    out.push_str(section);
    out
}

/// Creates `path` or replaces `section`'s part of it.
pub(crate) fn write_section(path: &Path, section: &str) -> anyhow::Result<()> {
    let existing = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("failed to create {}", dir.display()))?;
            }
            NEW_FILE_HEADER.to_string()
        }
        Err(e) => return Err(e).with_context(|| format!("failed to read {}", path.display())),
    };
    std::fs::write(path, splice(&existing, section))
        .with_context(|| format!("failed to write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(body: &str) -> String {
        format!("{BEGIN_MARKER}\n{body}\n{END_MARKER}\n")
    }

    fn samples(values: &[f64]) -> Samples {
        values.iter().copied().collect()
    }

    #[test]
    fn the_exec_chart_has_each_path_over_its_baseline() {
        let a = RoundTrip {
            local: samples(&[1.0, 1.0, 1.0]),
            local_sh: samples(&[1.2, 1.2, 1.2]),
            startup: samples(&[1.1, 1.1, 1.1]),
            library: samples(&[1.5, 1.4, 1.6]),
            cli: samples(&[2.0, 2.0, 2.0]),
        };
        // The machine halves its speed in round 2: the shares hold.
        let b = Throughput {
            bare: samples(&[1000.0, 500.0, 1000.0]),
            library: samples(&[500.0, 250.0, 500.0]),
            cli: samples(&[900.0, 450.0, 900.0]),
        };
        let chart = exec_chart(&a, &b, 1 << 30);
        assert_eq!(chart.file_name(), "exec.png");
        let [round_trip, output] = &chart.panels[..] else {
            panic!("{chart:?}")
        };
        assert_eq!(round_trip.bars[0].system, crate::ratio::BASELINE);
        assert_eq!(round_trip.bars[0].ratio, 1.0);
        assert_eq!(
            round_trip.ratio_of("CLI: `guestcomm exec unix://… -- true`"),
            Some(2.0)
        );
        assert_eq!(
            round_trip.ratio_of("library: connect + handshake + exec"),
            Some(1.5)
        );
        // The CLI's target, 2× `sh -c true`, in units of the local spawn.
        assert_eq!(round_trip.targets[0].at, 2.4);
        assert_eq!(output.bars[0].ratio, 1.0);
        assert_eq!(
            output.ratio_of("library: exec into a counting sink"),
            Some(0.5)
        );
        assert_eq!(
            output.ratio_of("CLI: `guestcomm exec … > /dev/null`"),
            Some(0.9)
        );
        let at: Vec<f64> = output.targets.iter().map(|t| t.at).collect();
        assert_eq!(at, [TARGET_THROUGHPUT_RATIO, TARGET_CLI_THROUGHPUT_RATIO]);

        let settings = Settings {
            iterations: 3,
            warmup: 0,
            bytes: 1 << 30,
            rounds: 3,
            cli: "test",
        };
        let text = render(&Machine::probe(), &settings, &a, &b);
        assert!(text.contains("chart docs/img/exec.png"), "{text}");
    }

    #[test]
    fn the_cp_chart_has_qemu_ga_only_when_it_was_measured() {
        let mut c = CopyThroughput {
            bare: samples(&[1000.0, 800.0]),
            system_cp: samples(&[2000.0, 1600.0]),
            library_to: samples(&[900.0, 720.0]),
            library_from: samples(&[1000.0, 800.0]),
            cli_to: samples(&[700.0, 560.0]),
            cli_from: samples(&[500.0, 400.0]),
            ..CopyThroughput::default()
        };
        let chart = cp_chart(&c, 1 << 30);
        let panel = &chart.panels[0];
        assert_eq!(
            panel.ratio_of("baseline: file → Unix socket pair → file"),
            Some(1.0)
        );
        assert_eq!(panel.ratio_of("`cp(1)`"), Some(2.0));
        assert_eq!(panel.ratio_of("CLI: guest → host"), Some(0.5));
        assert_eq!(panel.bars.len(), 6);
        assert_eq!(panel.targets[0].at, TARGET_THROUGHPUT_RATIO);
        c.qga_to = samples(&[30.0, 24.0]);
        c.qga_from = samples(&[100.0, 80.0]);
        let panel = &cp_chart(&c, 1 << 30).panels[0];
        assert_eq!(panel.ratio_of("qemu-ga: guest-file-write"), Some(0.03));
        assert_eq!(panel.bars.len(), 8);
        let text = render_cp(&Machine::probe(), 1 << 30, 2, &c);
        assert!(text.contains("chart docs/img/cp.png"), "{text}");
    }

    #[test]
    fn splice_replaces_only_the_marked_section() {
        let old = format!(
            "# Benchmarks\n\nintro\n\n{}\n<!-- bench:cp:begin -->\ncp\n<!-- bench:cp:end -->\n",
            section("old figures")
        );
        let new = splice(&old, &section("new figures"));
        assert!(new.contains("new figures"));
        assert!(!new.contains("old figures"));
        assert!(new.starts_with("# Benchmarks\n\nintro\n\n"));
        assert!(new.ends_with("\n<!-- bench:cp:begin -->\ncp\n<!-- bench:cp:end -->\n"));
        assert_eq!(splice(&new, &section("new figures")), new);
    }

    #[test]
    fn splice_appends_when_there_is_no_section() {
        let new = splice("# Benchmarks\nother", &section("figures"));
        assert_eq!(
            new,
            format!("# Benchmarks\nother\n\n{}", section("figures"))
        );
        assert_eq!(splice("", &section("x")), section("x"));
    }

    #[test]
    fn write_section_creates_the_file_and_its_directory() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("docs/BENCHMARKS.md");
        write_section(&path, &section("one")).unwrap();
        write_section(&path, &section("two")).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("# Benchmarks"));
        assert!(text.contains("two") && !text.contains("one\n"));
        assert_eq!(text.matches(BEGIN_MARKER).count(), 1);
    }
}
