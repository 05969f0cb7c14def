//! Charts of case E as PNG files (plotters, bitmap backend): one horizontal
//! bar chart per workload, medians on a logarithmic axis (the systems differ
//! by orders of magnitude), one colour per system.
//!
//! plotters draws text only with a registered font: DejaVu Sans from
//! Debian's `fonts-dejavu-core`; without it the charts are skipped with a
//! message (the Markdown tables carry the same figures).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use plotters::prelude::*;

use crate::compare::{Comparison, Row};
use crate::ratio::{self, RatioChart};

/// Where the font is looked for.
const FONT_PATHS: [&str; 2] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
];

/// Registers DejaVu Sans as plotters' "sans-serif", once.
fn register_font() -> anyhow::Result<()> {
    static REGISTERED: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    let result = REGISTERED.get_or_init(|| {
        let path = FONT_PATHS
            .iter()
            .find(|p| Path::new(p).is_file())
            .ok_or_else(|| "no DejaVu Sans font (Debian: fonts-dejavu-core)".to_string())?;
        let bytes = std::fs::read(path).map_err(|e| format!("cannot read {path}: {e}"))?;
        // plotters keeps the font for the life of the process.
        let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
        plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
            .map_err(|_| format!("{path} is not a usable font"))
    });
    result.clone().map_err(anyhow::Error::msg)
}

fn colour(system: &str) -> RGBColor {
    match system {
        "guestcomm" => RGBColor(0x1f, 0x77, 0xb4),
        "qemu-ga" => RGBColor(0xd6, 0x27, 0x28),
        ratio::BASELINE => RGBColor(0xc7, 0xc7, 0xc7),
        _ => RGBColor(0x7f, 0x7f, 0x7f),
    }
}

/// One chart: a bar per row (its median), labelled "system: path".
fn bars(file: &Path, title: &str, unit: &str, rows: &[Row]) -> anyhow::Result<()> {
    let values: Vec<Bar<'_>> = rows
        .iter()
        .map(|r| {
            (
                format!("{}: {}", r.system, r.path),
                r.samples.median(),
                r.system,
            )
        })
        .collect();
    bars_of(file, title, unit, values)
}

/// A bar: its label, its value and the system that gives it its colour.
type Bar<'a> = (String, f64, &'a str);

/// One chart of `values` (those that can sit on a log axis), top down.
fn bars_of(file: &Path, title: &str, unit: &str, values: Vec<Bar<'_>>) -> anyhow::Result<()> {
    let values = drawable(values);
    if values.is_empty() {
        bail!("nothing to draw for {title}");
    }
    let root = BitMapBackend::new(file, (WIDTH, panel_height(values.len()))).into_drawing_area();
    let draw = |e: &dyn std::fmt::Display| anyhow::anyhow!("drawing {}: {e}", file.display());
    root.fill(&WHITE).map_err(|e| draw(&e))?;
    let panel = Panel {
        title,
        unit,
        values: &values,
        targets: &[],
        value_text: |v| format!(" {v:.3}"),
    };
    panel.draw(&root).map_err(|e| draw(&e))?;
    root.present().map_err(|e| draw(&e))?;
    Ok(())
}

/// Width of every chart, pixels.
const WIDTH: u32 = 1100;

/// Height of a chart of `rows` bars, pixels.
fn panel_height(rows: usize) -> u32 {
    90 + 44 * rows as u32
}

/// The bars that can sit on a log axis.
fn drawable(values: Vec<Bar<'_>>) -> Vec<Bar<'_>> {
    values
        .into_iter()
        .filter(|(_, v, _)| v.is_finite() && *v > 0.0)
        .collect()
}

/// A label of the log axis: only at 1, 2 and 5 times a power of ten, so
/// that the labels do not run into each other where the ticks crowd.
fn log_label(v: &f64) -> String {
    if !(v.is_finite() && *v > 0.0) {
        return String::new();
    }
    let mantissa = v / 10f64.powf(v.log10().floor());
    if [1.0, 2.0, 5.0, 10.0]
        .iter()
        .any(|m| (mantissa - m).abs() < 1e-6)
    {
        // Rounded: a tick may sit a rounding error off 0.2.
        format!("{}", (v * 1e6).round() / 1e6)
    } else {
        String::new()
    }
}

/// The colour of target lines.
const TARGET_COLOUR: RGBColor = RGBColor(0x2c, 0xa0, 0x2c);

/// One bar chart on a log axis, top down: each target first, on a row of
/// its own (its label on the left, its value beside a dashed line that
/// runs from there down through the bars), then one bar per value.
struct Panel<'a, 'b> {
    title: &'a str,
    unit: &'a str,
    values: &'a [Bar<'b>],
    targets: &'a [ratio::Target],
    value_text: fn(f64) -> String,
}

type Area<'a> = DrawingArea<BitMapBackend<'a>, plotters::coord::Shift>;

impl Panel<'_, '_> {
    /// Draws the panel on `area` (not empty: see [`drawable`]).
    fn draw(&self, area: &Area<'_>) -> Result<(), String> {
        let err = |e: &dyn std::fmt::Display| e.to_string();
        let targets: Vec<&ratio::Target> = self
            .targets
            .iter()
            .filter(|t| t.at.is_finite() && t.at > 0.0)
            .collect();
        let all = self
            .values
            .iter()
            .map(|v| v.1)
            .chain(targets.iter().map(|t| t.at));
        let min = all.clone().fold(f64::INFINITY, f64::min);
        let max = all.fold(0.0, f64::max);
        let (lo, hi) = (min / 3.0, max * 3.0);
        // Row i (targets, then values) is drawn top down: segment n-1-i.
        let n = targets.len() + self.values.len();
        let segment = |i: usize| n - 1 - i;
        let labels: Vec<String> = targets
            .iter()
            .map(|t| format!("target: {}", t.label))
            .chain(self.values.iter().map(|v| v.0.clone()))
            .collect();
        let mut chart = ChartBuilder::on(area)
            .caption(self.title, ("sans-serif", 22))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(430)
            // A discrete range includes its end: n segments are 0..n-1.
            .build_cartesian_2d((lo..hi).log_scale(), (0..n - 1).into_segmented())
            .map_err(|e| err(&e))?;
        let label = |s: &SegmentValue<usize>| match s {
            SegmentValue::CenterOf(s) => labels
                .get(n.saturating_sub(1).saturating_sub(*s))
                .cloned()
                .unwrap_or_default(),
            _ => String::new(),
        };
        chart
            .configure_mesh()
            .disable_y_mesh()
            .x_desc(self.unit)
            .x_label_formatter(&log_label)
            .y_labels(n)
            .y_label_formatter(&label)
            .label_style(("sans-serif", 15))
            .draw()
            .map_err(|e| err(&e))?;
        let first_bar = targets.len();
        chart
            .draw_series(self.values.iter().enumerate().map(|(i, (_, v, system))| {
                let y = segment(first_bar + i);
                let top = if y + 1 == n {
                    SegmentValue::Last
                } else {
                    SegmentValue::Exact(y + 1)
                };
                let bottom = SegmentValue::Exact(y);
                let mut bar = Rectangle::new([(lo, bottom), (*v, top)], colour(system).filled());
                bar.set_margin(6, 6, 0, 0);
                bar
            }))
            .map_err(|e| err(&e))?;
        chart
            .draw_series(self.values.iter().enumerate().map(|(i, (_, v, _))| {
                Text::new(
                    (self.value_text)(*v),
                    (*v, SegmentValue::CenterOf(segment(first_bar + i))),
                    ("sans-serif", 15),
                )
            }))
            .map_err(|e| err(&e))?;
        for (i, t) in targets.iter().enumerate() {
            let own = SegmentValue::CenterOf(segment(i));
            let line = plotters::element::DashedPathElement::new(
                [(t.at, own.clone()), (t.at, SegmentValue::Exact(0))],
                6,
                4,
                TARGET_COLOUR.stroke_width(2),
            );
            chart.plotting_area().draw(&line).map_err(|e| err(&e))?;
            let marker = Circle::new((t.at, own.clone()), 5, TARGET_COLOUR.filled());
            chart.plotting_area().draw(&marker).map_err(|e| err(&e))?;
            let text = Text::new(
                format!("  {}", (self.value_text)(t.at).trim()),
                (t.at, own),
                ("sans-serif", 15).into_font().color(&TARGET_COLOUR),
            );
            chart.plotting_area().draw(&text).map_err(|e| err(&e))?;
        }
        Ok(())
    }
}

/// Draws every chart of `e` into `dir`; returns the files written.
pub(crate) fn draw_all(e: &Comparison, dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    if let Err(why) = register_font() {
        eprintln!("guestcomm-bench: charts skipped: {why}");
        return Ok(Vec::new());
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let charts = [
        (
            "compare-exec-latency.png",
            "exec latency of `true` (median, lower is better)",
            "ms (log scale)",
            &e.latency,
        ),
        (
            "compare-output.png",
            "command output throughput (median, higher is better)",
            "MB/s (log scale)",
            &e.output,
        ),
        (
            "compare-copy-to-guest.png",
            "file copy host → guest (median, higher is better)",
            "MB/s (log scale)",
            &e.copy_to,
        ),
        (
            "compare-copy-from-guest.png",
            "file copy guest → host (median, higher is better)",
            "MB/s (log scale)",
            &e.copy_from,
        ),
    ];
    let mut written = Vec::new();
    for (name, title, unit, rows) in charts {
        let file = dir.join(name);
        bars(&file, title, unit, rows)?;
        written.push(file);
    }
    Ok(written)
}

/// The chart of the in-VM case: for each workload, how many times better
/// guestcomm does than qemu-ga in the same guest (paired per-round ratios,
/// latency inverted so that more is better everywhere). Returns the file,
/// or nothing when the font is missing (said on stderr).
pub(crate) fn draw_vm(
    ratios: &[(String, f64)],
    dir: &Path,
    name: &str,
) -> anyhow::Result<Option<PathBuf>> {
    draw_ratios(
        ratios,
        &dir.join(format!("{name}.png")),
        "guestcomm against qemu-ga in one TCG guest, both over vsock",
        "× qemu-ga (log scale; 1 = equal, more is better for guestcomm)",
    )
}

/// The chart of case K: guestcomm against ssh, scp and sftp in one TCG
/// guest, as [`draw_vm`] draws case G's.
pub(crate) fn draw_ssh_vm(
    ratios: &[(String, f64)],
    dir: &Path,
    name: &str,
) -> anyhow::Result<Option<PathBuf>> {
    draw_ratios(
        ratios,
        &dir.join(format!("{name}.png")),
        "guestcomm against OpenSSH in one TCG guest, both over vsock",
        "× OpenSSH (log scale; 1 = equal, more is better for guestcomm)",
    )
}

/// One bar per ratio into `file`.
fn draw_ratios(
    ratios: &[(String, f64)],
    file: &Path,
    title: &str,
    unit: &str,
) -> anyhow::Result<Option<PathBuf>> {
    if let Err(why) = register_font() {
        eprintln!("guestcomm-bench: chart skipped: {why}");
        return Ok(None);
    }
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let values = ratios
        .iter()
        .map(|(label, ratio)| (label.clone(), *ratio, "guestcomm"))
        .collect();
    bars_of(file, title, unit, values)?;
    Ok(Some(file.to_path_buf()))
}

/// A ratio as the ratio charts print it beside a bar or a target.
fn ratio_text(v: f64) -> String {
    match v {
        v if v >= 100.0 => format!(" {v:.0}×"),
        v if v >= 10.0 => format!(" {v:.1}×"),
        v => format!(" {v:.3}×"),
    }
}

/// Draws a case's ratio chart into `dir` as `NAME.png`: its title on
/// top, then its panels one below the other, each a bar per path on a log
/// axis (the baseline a grey bar at 1) and a dashed line per target.
/// Returns the file, or nothing when the font is missing or no panel has a
/// bar to draw (either said on stderr).
pub(crate) fn draw_ratio_chart(chart: &RatioChart, dir: &Path) -> anyhow::Result<Option<PathBuf>> {
    if let Err(why) = register_font() {
        eprintln!(
            "guestcomm-bench: chart {} skipped: {why}",
            chart.file_name()
        );
        return Ok(None);
    }
    let panels: Vec<(&ratio::Panel, Vec<Bar<'_>>)> = chart
        .panels
        .iter()
        .map(|p| {
            let bars = p.bars.iter().map(|b| (b.label.clone(), b.ratio, b.system));
            (p, drawable(bars.collect()))
        })
        .filter(|(_, bars)| !bars.is_empty())
        .collect();
    if panels.is_empty() {
        eprintln!(
            "guestcomm-bench: chart {} skipped: no figure to draw",
            chart.file_name()
        );
        return Ok(None);
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let file = dir.join(chart.file_name());
    let heights: Vec<u32> = panels
        .iter()
        .map(|(p, bars)| panel_height(bars.len() + p.targets.len()))
        .collect();
    const TITLE: u32 = 44;
    let total = TITLE + heights.iter().sum::<u32>();
    let root = BitMapBackend::new(&file, (WIDTH, total)).into_drawing_area();
    let draw = |e: &dyn std::fmt::Display| anyhow::anyhow!("drawing {}: {e}", file.display());
    root.fill(&WHITE).map_err(|e| draw(&e))?;
    let body = root
        .titled(&chart.title, ("sans-serif", 24))
        .map_err(|e| draw(&e))?;
    let breaks: Vec<i32> = heights
        .iter()
        .scan(0, |top, h| {
            *top += *h as i32;
            Some(*top)
        })
        .take(heights.len().saturating_sub(1))
        .collect();
    for ((p, bars), area) in panels
        .iter()
        .zip(body.split_by_breakpoints([] as [i32; 0], breaks))
    {
        let panel = Panel {
            title: &p.title,
            unit: &p.axis,
            values: bars,
            targets: &p.targets,
            value_text: ratio_text,
        };
        panel.draw(&area).map_err(|e| draw(&e))?;
    }
    root.present().map_err(|e| draw(&e))?;
    Ok(Some(file.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compare::Memory;
    use crate::stats::Samples;

    fn row(system: &'static str, path: &'static str, value: f64) -> Row {
        let mut samples = Samples::default();
        samples.push(value);
        Row {
            system,
            path,
            samples,
        }
    }

    /// A PNG's width and height, from its IHDR chunk.
    fn png_size(bytes: &[u8]) -> (u32, u32) {
        assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
        assert_eq!(&bytes[12..16], b"IHDR");
        let word = |at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap());
        (word(16), word(20))
    }

    #[test]
    fn a_ratio_chart_is_a_png_with_a_panel_per_way_or_skipped_without_the_font() {
        let latency = ratio::Panel::new("exec", "× local (lower is better)")
            .baseline("local spawn")
            .bar("library", 1.5, "guestcomm")
            .bar("qemu-ga", 2.0, "qemu-ga")
            .target("CLI ≤ 2×", 2.2);
        let share = ratio::Panel::new("output", "share of bare (higher is better)")
            .baseline("bare socket")
            .bar("library", 0.78, "guestcomm")
            .bar("not measured", f64::NAN, "guestcomm")
            .target("≥ 70%", 0.7)
            .target("≥ 80%", 0.8);
        let chart = RatioChart::new("exec", "test chart", vec![latency, share]);
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("img");
        let drawn = draw_ratio_chart(&chart, &out).unwrap();
        if register_font().is_err() {
            assert!(drawn.is_none());
            return;
        }
        let file = drawn.unwrap();
        assert_eq!(file, out.join("exec.png"));
        let bytes = std::fs::read(&file).unwrap();
        let (width, height) = png_size(&bytes);
        assert_eq!(width, WIDTH);
        // Two panels: 3 bars + 1 target and 2 bars (NaN left out) + 2 targets.
        assert_eq!(height, 44 + panel_height(4) + panel_height(4));
        assert!(bytes.len() > 10_000, "{} bytes", bytes.len());

        let empty = ratio::Panel::new("none", "×").bar("NaN", f64::NAN, "guestcomm");
        let nothing = RatioChart::new("empty", "nothing", vec![empty]);
        assert_eq!(draw_ratio_chart(&nothing, &out).unwrap(), None);
        assert!(!out.join("empty.png").exists());
    }

    #[test]
    fn the_log_axis_is_labelled_at_1_2_and_5_times_a_power_of_ten() {
        let labels: Vec<String> = [
            0.2 + 1e-12,
            0.3,
            0.5,
            1.0,
            2.0,
            3.0,
            7.0,
            10.0,
            500.0,
            f64::NAN,
        ]
        .iter()
        .map(log_label)
        .collect();
        assert_eq!(
            labels,
            ["0.2", "", "0.5", "1", "2", "", "", "10", "500", ""]
        );
    }

    #[test]
    fn every_chart_is_a_png_or_all_are_skipped_without_the_font() {
        let rows = || {
            vec![
                row("guestcomm", "direct", 1.2),
                row("qemu-ga", "polling", 2.5),
                row("OpenSSH", "new connection", 300.0),
            ]
        };
        let e = Comparison {
            latency: rows(),
            output: rows(),
            copy_to: rows(),
            copy_from: rows(),
            memory: vec![Memory {
                system: "guestcomm-agent",
                idle: 4.0,
                peak: None,
            }],
            left_out: vec![],
            iterations: 1,
            rounds: 1,
            bytes: 1,
        };
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("img");
        let files = draw_all(&e, &out).unwrap();
        if register_font().is_err() {
            assert!(files.is_empty());
            return;
        }
        assert_eq!(files.len(), 4);
        let ratios = [("exec".to_string(), 0.8), ("copy".to_string(), 300.0)];
        let vm = draw_vm(&ratios, &out, "compare-vm-cpu-max")
            .unwrap()
            .unwrap();
        assert!(vm.ends_with("compare-vm-cpu-max.png"));
        assert!(std::fs::read(vm).unwrap().starts_with(b"\x89PNG\r\n\x1a\n"));
        for file in files {
            let bytes = std::fs::read(&file).unwrap();
            assert!(
                bytes.starts_with(b"\x89PNG\r\n\x1a\n"),
                "{}",
                file.display()
            );
        }
    }
}
