//! What a failed VM test prints about its VM: which vhost-device-vsock
//! served it (the patched build of `scripts/vm/build-backend` or not), the
//! guest's entropy as the image's init last reported it, and the ends of the
//! guest's serial console and of the backend's and QEMU's logs. Everything
//! is read from files, so the deadline's watchdog thread can gather it while
//! the test itself is stuck.

use std::path::{Path, PathBuf};

/// Lines shown from the end of each log (where a failure is).
const LOG_TAIL_LINES: usize = 60;

/// How the image's init starts each entropy report on the console
/// (`scripts/vm/build-image`).
const ENTROPY_REPORT_PREFIX: &str = "guestcomm-vm: entropy ";

/// The stamp `scripts/vm/build-backend` leaves beside `bin/` (version and
/// patch hash of the build).
const PATCHED_BACKEND_STAMP: &str = "vhost-device-vsock.patched";

/// Where a VM's logs are and which backend serves it.
#[derive(Clone, Debug)]
pub(crate) struct VmLogs {
    /// The VM's directory: console.log, qemu.err, backend.log, backend.err.
    pub(crate) dir: PathBuf,
    /// The vhost-device-vsock binary that was started.
    pub(crate) backend_bin: PathBuf,
}

impl VmLogs {
    /// The guest's serial console so far.
    pub(crate) fn console(&self) -> String {
        read(&self.dir.join("console.log"))
    }

    /// Everything a failure report shows, as one text.
    pub(crate) fn report(&self) -> String {
        let console = self.console();
        let mut out = format!(
            "--- VM state (files in {}) ---\nbackend: {}\nguest entropy: {}\n",
            self.dir.display(),
            self.backend_origin(),
            last_entropy_report(&console),
        );
        for (title, text) in [
            ("guest console", console.as_str()),
            (
                "vhost-device-vsock stderr",
                &read(&self.dir.join("backend.err")),
            ),
            (
                "vhost-device-vsock stdout",
                &read(&self.dir.join("backend.log")),
            ),
            ("QEMU stderr", &read(&self.dir.join("qemu.err"))),
        ] {
            out.push_str(&format!("--- {title} (end) ---\n{}\n", tail(text)));
        }
        out.push_str("--- end of VM state ---");
        out
    }

    /// The backend's path and whether build-backend's stamp is beside it.
    fn backend_origin(&self) -> String {
        let stamp = self
            .backend_bin
            .parent()
            .and_then(Path::parent)
            .map(|tools| tools.join(PATCHED_BACKEND_STAMP));
        match stamp.and_then(|s| std::fs::read_to_string(s).ok()) {
            Some(build) => format!("{} ({})", self.backend_bin.display(), build.trim()),
            None => format!(
                "{} (not built by scripts/vm/build-backend: an unpatched \
                 vhost-device-vsock 0.3.0 can stall two-way bulk streams for good \
                 under load, see docs/DEPLOYMENT.md)",
                self.backend_bin.display()
            ),
        }
    }
}

/// The last entropy report on `console`, or why there is none.
fn last_entropy_report(console: &str) -> String {
    console
        .lines()
        .rev()
        .find_map(|line| line.strip_prefix(ENTROPY_REPORT_PREFIX))
        .map_or_else(
            || "not reported on the console (yet)".to_string(),
            str::to_string,
        )
}

fn read(path: &Path) -> String {
    std::fs::read(path)
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .unwrap_or_else(|e| format!("(cannot read {}: {e})", path.display()))
}

/// The last [`LOG_TAIL_LINES`] lines of `text`, saying how many were left out.
fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let skipped = lines.len().saturating_sub(LOG_TAIL_LINES);
    let shown = lines[skipped..].join("\n");
    if skipped > 0 {
        format!("({skipped} earlier lines left out)\n{shown}")
    } else if shown.is_empty() {
        "(empty)".to_string()
    } else {
        shown
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_entropy_report_of_the_console_is_shown() {
        let console = "boot\nguestcomm-vm: entropy avail=3 crng=waiting up=1.0s\n\
                       guestcomm-vm: starting the agent\n\
                       guestcomm-vm: entropy avail=41 crng=waiting up=31.2s\n";
        assert_eq!(
            last_entropy_report(console),
            "avail=41 crng=waiting up=31.2s"
        );
        assert!(last_entropy_report("boot\n").contains("not reported"));
    }

    #[test]
    fn a_long_log_is_cut_to_its_end() {
        let text: String = (0..100).map(|i| format!("line {i}\n")).collect();
        let shown = tail(&text);
        assert!(shown.starts_with("(40 earlier lines left out)\nline 40\n"));
        assert!(shown.ends_with("line 99"));
        assert_eq!(tail(""), "(empty)");
    }

    #[test]
    fn the_report_names_an_unstamped_backend_and_missing_logs() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("console.log"),
            "guestcomm-vm: entropy avail=7 crng=ready up=2.0s\n",
        )
        .expect("write");
        let logs = VmLogs {
            dir: dir.path().to_path_buf(),
            backend_bin: dir.path().join("bin/vhost-device-vsock"),
        };
        let report = logs.report();
        assert!(
            report.contains("guest entropy: avail=7 crng=ready"),
            "{report}"
        );
        assert!(
            report.contains("not built by scripts/vm/build-backend"),
            "{report}"
        );
        assert!(report.contains("cannot read"), "{report}");

        std::fs::write(dir.path().join(PATCHED_BACKEND_STAMP), "0.3.0 patch abc\n").expect("write");
        assert!(logs.report().contains("(0.3.0 patch abc)"));
    }
}
