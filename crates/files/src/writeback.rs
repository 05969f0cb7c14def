//! Early writeback of a file being received, so the fsync before its rename
//! finds little left to write.
//!
//! Written pages otherwise sit dirty in the page cache until the final
//! fsync, which then writes the whole file while the sender waits (about
//! half of a 1 GiB copy's time on a virtio disk). Instead, every
//! [`WINDOW_BYTES`] received start asynchronous writeback of that range
//! (`sync_file_range(SYNC_FILE_RANGE_WRITE)`), and wait for the range
//! [`WAIT_LAG_WINDOWS`] windows behind, which also bounds how much of the
//! copy is dirty at a time. This is an optimisation only: durability still
//! comes from the fsync, and a file system that does not support
//! `sync_file_range` just skips it.

use std::fs::File;
use std::os::fd::AsRawFd;

/// Writeback is started for each range of this many bytes.
const WINDOW_BYTES: u64 = 8 * 1024 * 1024;

/// Writeback is waited for this many windows behind the newest one.
const WAIT_LAG_WINDOWS: u64 = 4;

/// Where writeback stands for one file.
#[derive(Debug)]
pub(crate) struct Writeback {
    /// Writeback was started up to here.
    started: u64,
    /// Writeback was waited for up to here.
    waited: u64,
    /// `sync_file_range` failed once (unsupported here): stop trying.
    disabled: bool,
}

impl Writeback {
    /// A file whose first `offset` bytes are already there (a resume).
    pub(crate) fn from(offset: u64) -> Self {
        Self {
            started: offset,
            waited: offset,
            disabled: false,
        }
    }

    /// The file now holds `written` bytes: start and wait for writeback as
    /// the windows fill.
    pub(crate) fn advance(&mut self, file: &File, written: u64) {
        if self.disabled || written < self.started + WINDOW_BYTES {
            return;
        }
        let start = sync_range(file, self.started, written - self.started, START);
        self.started = written;
        let lag = WINDOW_BYTES * WAIT_LAG_WINDOWS;
        let wait = if start && self.started > self.waited + lag {
            let upto = self.started - lag;
            let ok = sync_range(file, self.waited, upto - self.waited, WAIT);
            self.waited = upto;
            ok
        } else {
            start
        };
        self.disabled = !wait;
    }
}

/// Start writeback of dirty pages in the range, without waiting.
const START: libc::c_uint = libc::SYNC_FILE_RANGE_WRITE;

/// Write the range's dirty pages and wait until they are written.
const WAIT: libc::c_uint = libc::SYNC_FILE_RANGE_WAIT_BEFORE
    | libc::SYNC_FILE_RANGE_WRITE
    | libc::SYNC_FILE_RANGE_WAIT_AFTER;

/// `sync_file_range` on `len` bytes from `offset`; false if it failed.
fn sync_range(file: &File, offset: u64, len: u64, flags: libc::c_uint) -> bool {
    let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
        return false;
    };
    // SAFETY: the descriptor is open for the lifetime of `file`; the call
    // reads no memory of ours.
    let rc = unsafe { libc::sync_file_range(file.as_raw_fd(), offset, len, flags) };
    rc == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn windows_advance_and_lagged_waits_follow() {
        let mut file = tempfile::tempfile().unwrap();
        let mut wb = Writeback::from(0);
        let chunk = vec![7u8; 1024 * 1024];
        let mut written = 0u64;
        for _ in 0..(WINDOW_BYTES * (WAIT_LAG_WINDOWS + 3) / chunk.len() as u64) {
            file.write_all(&chunk).unwrap();
            written += chunk.len() as u64;
            wb.advance(&file, written);
        }
        assert!(!wb.disabled, "sync_file_range works on a regular file");
        assert_eq!(wb.started, written);
        assert_eq!(wb.waited, written - WINDOW_BYTES * WAIT_LAG_WINDOWS);
    }

    #[test]
    fn below_one_window_nothing_is_started() {
        let file = tempfile::tempfile().unwrap();
        let mut wb = Writeback::from(100);
        wb.advance(&file, 100 + WINDOW_BYTES - 1);
        assert_eq!((wb.started, wb.waited), (100, 100));
    }

    #[test]
    fn an_unsupported_descriptor_disables_writeback() {
        // A pipe is not a file: sync_file_range fails with ESPIPE.
        let (read, _write) = nix::unistd::pipe().unwrap();
        let file = File::from(read);
        let mut wb = Writeback::from(0);
        wb.advance(&file, WINDOW_BYTES);
        assert!(wb.disabled);
        wb.advance(&file, 4 * WINDOW_BYTES);
        assert_eq!(wb.started, WINDOW_BYTES, "no more attempts once disabled");
    }
}
