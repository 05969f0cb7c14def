//! Pseudo-terminals for `exec -t`: the master side as an async reader/writer.
//!
//! The child gets the slave as stdin, stdout and stderr and makes it its
//! controlling terminal; the agent reads and writes the master through
//! tokio's reactor. When every slave descriptor is closed, Linux fails reads
//! on the master with `EIO`: that is the end of the output, not an error.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use guestcomm_protocol::WindowSize;
use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::pty::{openpty, Winsize};
use nix::unistd::Pid;
use tokio::io::unix::AsyncFd;

/// A new pseudo-terminal pair.
pub(crate) struct Pty {
    /// The side the agent keeps.
    pub master: PtyMaster,
    /// The side the child gets.
    pub slave: OwnedFd,
}

/// Opens a pseudo-terminal of the given size.
pub(crate) fn open(size: WindowSize) -> io::Result<Pty> {
    let pair = openpty(&winsize(size), None)?;
    let flags = OFlag::from_bits_truncate(fcntl(&pair.master, FcntlArg::F_GETFL)?);
    fcntl(
        &pair.master,
        FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC),
    )?;
    // SAFETY: `pair.master` is an open OwnedFd that the AsyncFd owns until
    // it is dropped, and an OwnedFd always returns the same descriptor.
    let fd = unsafe { AsyncFd::register(pair.master) }.map_err(|e| e.into_parts().1)?;
    Ok(Pty {
        master: PtyMaster { fd },
        slave: pair.slave,
    })
}

fn winsize(size: WindowSize) -> Winsize {
    Winsize {
        ws_row: size.rows,
        ws_col: size.cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    }
}

/// The master side of a pseudo-terminal, non-blocking.
pub(crate) struct PtyMaster {
    fd: AsyncFd<OwnedFd>,
}

impl PtyMaster {
    /// Reads what the terminal printed; `Ok(0)` once the slave side is closed.
    pub(crate) async fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let mut guard = self.fd.readable().await?;
            match guard.try_io(|fd| Ok(nix::unistd::read(fd.get_ref(), buf)?)) {
                Ok(Err(e)) if e.raw_os_error() == Some(Errno::EIO as i32) => return Ok(0),
                Ok(result) => return result,
                Err(_would_block) => continue,
            }
        }
    }

    /// Writes all of `data` as terminal input.
    pub(crate) async fn write_all(&self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            let mut guard = self.fd.writable().await?;
            match guard.try_io(|fd| Ok(nix::unistd::write(fd.get_ref(), data)?)) {
                Ok(Ok(n)) => data = &data[n..],
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
        Ok(())
    }

    /// Tells the terminal (and so the foreground process) its new size.
    pub(crate) fn resize(&self, size: WindowSize) -> io::Result<()> {
        let ws = winsize(size);
        // SAFETY: TIOCSWINSZ reads one `winsize` from the pointer, which
        // points to a live, initialized struct for the whole call.
        let rc = unsafe { libc::ioctl(self.fd.get_ref().as_raw_fd(), libc::TIOCSWINSZ, &ws) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// The terminal's foreground process group (where Ctrl-C would go).
    pub(crate) fn foreground_group(&self) -> Option<Pid> {
        nix::unistd::tcgetpgrp(self.fd.get_ref().as_fd()).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn slave_output_reaches_the_master_and_close_reads_as_eof() {
        let pty = open(WindowSize { rows: 24, cols: 80 }).unwrap();
        nix::unistd::write(&pty.slave, b"hello").unwrap();
        let mut buf = [0u8; 64];
        let n = pty.master.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"hello");
        drop(pty.slave);
        assert_eq!(pty.master.read(&mut buf).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn resize_changes_the_slave_window_size() {
        let pty = open(WindowSize { rows: 24, cols: 80 }).unwrap();
        pty.master
            .resize(WindowSize {
                rows: 50,
                cols: 132,
            })
            .unwrap();
        let mut ws = winsize(WindowSize { rows: 0, cols: 0 });
        // SAFETY: TIOCGWINSZ writes one `winsize` into the live struct.
        let rc = unsafe { libc::ioctl(pty.slave.as_raw_fd(), libc::TIOCGWINSZ, &mut ws) };
        assert_eq!(rc, 0);
        assert_eq!((ws.ws_row, ws.ws_col), (50, 132));
    }
}
