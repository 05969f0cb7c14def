//! The local terminal: raw mode for `exec -t` (restored on every exit path
//! by a guard), the window size to give the guest's pseudo-terminal, and
//! whether stdin is /dev/null (nothing to forward).

use std::io::IsTerminal;
use std::os::fd::{AsFd, AsRawFd};

use guestcomm_protocol::WindowSize;
use nix::sys::stat::{fstat, makedev, SFlag};
use nix::sys::termios::{self, SetArg, Termios};

/// Used when the local side is not a terminal but a pty was asked for.
pub(crate) const DEFAULT_WINDOW: WindowSize = WindowSize { rows: 24, cols: 80 };

/// Puts stdin's terminal in raw mode until dropped.
pub(crate) struct RawMode {
    saved: Termios,
}

impl RawMode {
    /// Enters raw mode if stdin is a terminal; `None` otherwise.
    pub(crate) fn enter() -> nix::Result<Option<Self>> {
        let stdin = std::io::stdin();
        if !stdin.is_terminal() {
            return Ok(None);
        }
        let saved = termios::tcgetattr(stdin.as_fd())?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw)?;
        Ok(Some(Self { saved }))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(std::io::stdin().as_fd(), SetArg::TCSAFLUSH, &self.saved);
    }
}

/// The size of the terminal on stdout (or stdin), if either is one.
pub(crate) fn window_size() -> Option<WindowSize> {
    [std::io::stdout().as_raw_fd(), std::io::stdin().as_raw_fd()]
        .into_iter()
        .find_map(|fd| {
            let mut ws = libc::winsize {
                ws_row: 0,
                ws_col: 0,
                ws_xpixel: 0,
                ws_ypixel: 0,
            };
            // SAFETY: TIOCGWINSZ writes one `winsize` into the live struct.
            let rc = unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws) };
            (rc == 0 && ws.ws_row > 0 && ws.ws_col > 0).then_some(WindowSize {
                rows: ws.ws_row,
                cols: ws.ws_col,
            })
        })
}

/// Whether `fd` is /dev/null (character device 1:3 on Linux). Stdin that
/// is has nothing to forward, so `exec` need not start the blocking thread
/// that reading stdin takes (one thread per exec, for every script that
/// runs `guestcomm exec ... </dev/null`).
pub(crate) fn is_dev_null(fd: impl AsFd) -> bool {
    fstat(fd).is_ok_and(|st| {
        SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFCHR
            && st.st_rdev == makedev(1, 3)
    })
}

#[cfg(test)]
mod tests {
    use std::fs::File;

    use super::is_dev_null;

    #[test]
    fn dev_null_is_recognized_and_nothing_else() {
        assert!(is_dev_null(File::open("/dev/null").unwrap()));
        assert!(!is_dev_null(File::open("/dev/zero").unwrap()));
        assert!(!is_dev_null(tempfile::tempfile().unwrap()));
        let (read, _write) = nix::unistd::pipe().unwrap();
        assert!(!is_dev_null(read));
    }
}
