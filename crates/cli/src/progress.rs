//! The progress bar of `guestcomm cp`: shown on a terminal once a copy
//! passes a few MB, never otherwise (pipes, logs and `--json` stay clean).

use std::io::IsTerminal;

use guestcomm_client::Progress;
use guestcomm_protocol::files::{Entry, EntryKind};
use guestcomm_protocol::text::escape_controls;
use indicatif::{ProgressBar, ProgressStyle};

/// Copies smaller than this finish before a bar would tell anything.
pub(crate) const SHOW_ABOVE_BYTES: u64 = 4 * 1024 * 1024;

/// A progress bar on stderr that appears only when worth it.
pub(crate) struct CopyProgress {
    enabled: bool,
    total: Option<u64>,
    done: u64,
    seen_root: bool,
    bar: Option<ProgressBar>,
}

impl CopyProgress {
    /// A bar for a copy of `total` bytes (when known), if stderr is a terminal.
    pub(crate) fn new(total: Option<u64>) -> Self {
        Self {
            enabled: std::io::stderr().is_terminal(),
            total,
            done: 0,
            seen_root: false,
            bar: None,
        }
    }

    /// Removes the bar from the terminal.
    pub(crate) fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }

    fn show_if_worth_it(&mut self) {
        if self.bar.is_some() || !self.enabled || self.total.unwrap_or(self.done) < SHOW_ABOVE_BYTES
        {
            return;
        }
        let (bar, template) = match self.total {
            Some(total) => (
                ProgressBar::new(total),
                "{bar:40} {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}",
            ),
            None => (
                ProgressBar::new_spinner(),
                "{spinner} {bytes} {binary_bytes_per_sec} {msg}",
            ),
        };
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style);
        }
        bar.set_position(self.done);
        self.bar = Some(bar);
    }
}

impl Progress for CopyProgress {
    fn entry(&mut self, entry: &Entry) {
        if !self.seen_root {
            self.seen_root = true;
            if self.total.is_none() && entry.kind == EntryKind::File {
                self.total = Some(entry.size);
            }
        }
        if let Some(bar) = &self.bar {
            // The name is the peer's: escaped before it reaches the terminal.
            bar.set_message(escape_controls(&entry.path).into_owned());
        }
    }

    fn bytes(&mut self, n: u64) {
        self.done += n;
        self.show_if_worth_it();
        if let Some(bar) = &self.bar {
            bar.set_position(self.done);
        }
    }
}
