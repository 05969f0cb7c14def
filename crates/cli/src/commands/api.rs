//! What the management subcommands share: reaching the daemon's API,
//! reporting its errors on one line, and printing tables or JSON.

use std::process::ExitCode;
use std::sync::OnceLock;

use guestcomm_api::tls::ClientTlsFiles;
use guestcomm_api::{validate_vm_name, ApiClient, ApiError, DEFAULT_API_ADDRESS};
use guestcomm_protocol::text::{escape_controls, Escaped};

/// Exit code of a management command that failed (`vm`, `service`, `status`).
pub const FAILED: u8 = 1;

/// The mutual-TLS files for an API on `tcp://` (`--api-cert`, `--api-key`,
/// `--api-ca`), set once by [`crate::run`] before any command runs.
static TLS_FILES: OnceLock<ClientTlsFiles> = OnceLock::new();

/// Records the TLS files of this process's API connections.
pub fn set_tls_files(files: ClientTlsFiles) {
    let _ = TLS_FILES.set(files);
}

/// A client for `--api` / `GUESTCOMM_API`, or the default socket.
pub fn client(api: Option<&str>) -> Result<ApiClient, ApiError> {
    ApiClient::with_tls(api.unwrap_or(DEFAULT_API_ADDRESS), TLS_FILES.get())
}

/// The API path of a VM, after checking its name (so it is URL-safe).
pub fn vm_path(name: &str) -> Result<String, ApiError> {
    validate_vm_name(name).map_err(|error| local_error(400, "invalid_argument", error))?;
    Ok(format!("/v1/vms/{name}"))
}

/// An error found before asking the daemon, shaped as the daemon's.
pub fn local_error(status: u16, code: &str, error: String) -> ApiError {
    ApiError::Status {
        status,
        body: guestcomm_api::ErrorBody {
            code: code.into(),
            chain: vec![error.clone()],
            error,
            required_role: None,
        },
    }
}

/// Prints an API error on one line (its control characters escaped: it may
/// quote a guest's or a caller's text) and returns `code`.
pub fn report(err: &ApiError, code: u8) -> ExitCode {
    eprintln!("guestcomm: {}", Escaped(&one_line(err)));
    ExitCode::from(code)
}

/// The error and its causes, joined by ": " (the daemon's body is already one line).
pub fn one_line(err: &ApiError) -> String {
    guestcomm_protocol::error_chain(err)
}

/// Prints `value` as pretty JSON.
pub fn print_json<T: serde::Serialize>(value: &T) -> ExitCode {
    match serde_json::to_string_pretty(value) {
        Ok(text) => {
            println!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => report(&ApiError::Decode(e), FAILED),
    }
}

/// Prints `items` as a table, or as JSON with `json`; `row` gives the cells.
pub fn print_list<T: serde::Serialize>(
    items: &[T],
    json: bool,
    header: &[&str],
    row: impl Fn(&T) -> Vec<String>,
) -> ExitCode {
    if json {
        return print_json(&items);
    }
    print_table(header, &items.iter().map(row).collect::<Vec<_>>());
    ExitCode::SUCCESS
}

/// Prints rows as aligned columns under `header`.
pub fn print_table(header: &[&str], rows: &[Vec<String>]) {
    print!("{}", render_table(header, rows));
}

/// Rows as aligned columns under `header`, one line each; each cell's
/// control characters escaped (cells show names and texts callers and
/// guests chose).
pub fn render_table(header: &[&str], rows: &[Vec<String>]) -> String {
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
