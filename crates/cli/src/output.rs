//! Printing results: JSON, aligned tables (every cell's control characters
//! escaped: cells show names and texts callers and guests chose), plain
//! text to a stdout that may close early, and byte counts for people.

use std::process::ExitCode;

use guestcomm_api::ApiError;
use guestcomm_protocol::text::escape_controls;

use crate::context::Context;
use crate::exit::Failure;

/// Prints `value` as pretty JSON.
pub(crate) fn print_json<T: serde::Serialize>(value: &T) -> Result<ExitCode, Failure> {
    let text = serde_json::to_string_pretty(value).map_err(ApiError::Decode)?;
    println!("{text}");
    Ok(ExitCode::SUCCESS)
}

/// Prints `items` as a table, or as JSON when the context says so; `row`
/// gives the cells.
pub(crate) fn print_list<T: serde::Serialize>(
    ctx: &Context,
    items: &[T],
    header: &[&str],
    row: impl Fn(&T) -> Vec<String>,
) -> Result<ExitCode, Failure> {
    if ctx.json() {
        return print_json(&items);
    }
    print!(
        "{}",
        render_table(header, &items.iter().map(row).collect::<Vec<_>>())
    );
    Ok(ExitCode::SUCCESS)
}

/// Rows as aligned columns under `header`, one line each; each cell's
/// control characters escaped.
pub(crate) fn render_table(header: &[&str], rows: &[Vec<String>]) -> String {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            row.iter()
                .map(|c| escape_controls(c).into_owned())
                .collect()
        })
        .collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut text = String::new();
    let mut line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}  "));
            }
        }
        text.push_str(out.trim_end());
        text.push('\n');
    };
    line(header.to_vec());
    for row in &rows {
        line(row.iter().map(String::as_str).collect());
    }
    text
}

/// Writes `text` to stdout; a closed pipe (`| head`) is not an error.
pub(crate) fn write_out(text: &str) -> Result<ExitCode, Failure> {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(ExitCode::SUCCESS),
        Err(e) => Err(Failure::failed(
            &anyhow::Error::new(e).context("failed to write the output"),
        )),
    }
}

/// Formats a byte count for people (binary units).
pub(crate) fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_read_in_binary_units() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 * 1024 * 1024 * 1024), "3.0 GiB");
    }
}
