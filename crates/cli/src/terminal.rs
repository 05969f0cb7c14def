//! The local terminal: raw mode for `exec -t` (restored on every exit path
//! by a guard) and the window size to give the guest's pseudo-terminal.

use std::io::IsTerminal;
use std::os::fd::{AsFd, AsRawFd};

use guestcomm_protocol::WindowSize;
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
