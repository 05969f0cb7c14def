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
    let values: Vec<Bar<'_>> = values
        .into_iter()
        .filter(|(_, v, _)| v.is_finite() && *v > 0.0)
        .collect();
    if values.is_empty() {
        bail!("nothing to draw for {title}");
    }
    let min = values.iter().map(|v| v.1).fold(f64::INFINITY, f64::min);
    let max = values.iter().map(|v| v.1).fold(0.0, f64::max);
    let (lo, hi) = (min / 3.0, max * 3.0);
    let height = 90 + 44 * values.len() as u32;
    let root = BitMapBackend::new(file, (1100, height)).into_drawing_area();
    let draw = |e: &dyn std::fmt::Display| anyhow::anyhow!("drawing {}: {e}", file.display());
    root.fill(&WHITE).map_err(|e| draw(&e))?;
    let n = values.len();
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(430)
        // A discrete range includes its end: n segments are 0..n-1.
        .build_cartesian_2d((lo..hi).log_scale(), (0..n - 1).into_segmented())
        .map_err(|e| draw(&e))?;
    // Row i of `values` is drawn top down: segment n-1-i.
    let label = |segment: &SegmentValue<usize>| match segment {
        SegmentValue::CenterOf(s) => values
            .get(n.saturating_sub(1).saturating_sub(*s))
            .map(|v| v.0.clone())
            .unwrap_or_default(),
        _ => String::new(),
    };
    chart
        .configure_mesh()
        .disable_y_mesh()
        .x_desc(unit)
        .y_labels(n)
        .y_label_formatter(&label)
        .label_style(("sans-serif", 15))
        .draw()
        .map_err(|e| draw(&e))?;
    chart
        .draw_series(values.iter().enumerate().map(|(i, (_, v, system))| {
            let y = n - 1 - i;
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
        .map_err(|e| draw(&e))?;
    chart
        .draw_series(values.iter().enumerate().map(|(i, (_, v, _))| {
            let y = n - 1 - i;
            Text::new(
                format!(" {v:.3}"),
                (*v, SegmentValue::CenterOf(y)),
                ("sans-serif", 15),
            )
        }))
        .map_err(|e| draw(&e))?;
    root.present().map_err(|e| draw(&e))?;
    Ok(())
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
pub(crate) fn draw_vm(ratios: &[(String, f64)], dir: &Path) -> anyhow::Result<Option<PathBuf>> {
    draw_ratios(
        ratios,
        &dir.join("compare-vm.png"),
        "guestcomm against qemu-ga in one TCG guest, both over vsock",
        "× qemu-ga (log scale; 1 = equal, more is better for guestcomm)",
    )
}

/// The chart of case K: guestcomm against ssh, scp and sftp in one TCG
/// guest, as [`draw_vm`] draws case G's.
pub(crate) fn draw_ssh_vm(ratios: &[(String, f64)], dir: &Path) -> anyhow::Result<Option<PathBuf>> {
    draw_ratios(
        ratios,
        &dir.join("ssh-vm.png"),
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
        let vm = draw_vm(&ratios, &out).unwrap().unwrap();
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
