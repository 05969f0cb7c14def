//! `guestcomm-bench --proxy-hvsock SOCKET PORT`: ssh's `ProxyCommand` for
//! a guest port behind a hybrid vsock socket (vhost-device-vsock, Firecracker,
//! Cloud Hypervisor): `CONNECT <port>`, the `OK …` reply, then raw bytes
//! between stdin/stdout and the guest, as systemd-ssh-proxy does for
//! AF_VSOCK. Case K reaches the guest's sshd through it.
//!
//! It lives in the bench, not in the `guestcomm` CLI: it carries no
//! guestcomm protocol (no key, no policy, no audit), only bytes to whatever
//! listens on the port, and for a VM that guestcommd manages the same
//! stream goes through `guestcomm connect VM SERVICE`, which guestcommd
//! authorizes and audits; a second, unchecked way into a guest port is not
//! something the CLI should offer.
//!
//! End of stdin is not forwarded as a half-close (over hybrid vsock a
//! `shutdown(SHUT_WR)` ends both directions): ssh closes the pipe only when
//! it exits, so the proxy then exits too, closing the connection.

use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::path::Path;

use anyhow::{bail, Context};
use guestcomm_transport::hybrid::{parse_reply, MAX_REPLY_BYTES};

/// Sends `CONNECT <port>` and reads the reply line one byte at a time, so
/// that nothing of the guest's stream is consumed.
fn connect(stream: &mut UnixStream, port: u32) -> anyhow::Result<()> {
    stream
        .write_all(format!("CONNECT {port}\n").as_bytes())
        .context("failed to send CONNECT")?;
    let mut line = Vec::with_capacity(16);
    loop {
        let mut byte = [0u8; 1];
        if stream.read(&mut byte)? == 0 {
            bail!(
                "the socket closed after CONNECT {port} (reply so far {:?}): is the guest listening on that port?",
                String::from_utf8_lossy(&line)
            );
        }
        if byte[0] == b'\n' {
            break;
        }
        if line.len() + 1 >= MAX_REPLY_BYTES {
            bail!("the reply to CONNECT {port} has no newline in {MAX_REPLY_BYTES} bytes");
        }
        line.push(byte[0]);
    }
    match parse_reply(&line) {
        Some(_) => Ok(()),
        None => bail!(
            "expected \"OK <port>\" after CONNECT {port}, got {:?}",
            String::from_utf8_lossy(&line)
        ),
    }
}

/// Bytes moved per read.
const BUFFER_BYTES: usize = 256 * 1024;

/// Copies `from` to `to` until `from` ends, with plain reads and writes:
/// `std::io::copy` would splice between the pipes and the socket, and a
/// splice from the Unix socket into ssh's pipe was seen to hold back bytes
/// ssh waited for (the key exchange stalled).
fn relay(mut from: impl Read, mut to: impl Write) -> std::io::Result<()> {
    let mut buf = vec![0u8; BUFFER_BYTES];
    loop {
        match from.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => to.write_all(&buf[..n])?,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Connects to guest `port` through `socket` and relays stdin and stdout
/// until the guest closes the stream or stdin ends.
pub(crate) fn run(socket: &Path, port: u32) -> anyhow::Result<()> {
    let mut stream = UnixStream::connect(socket)
        .with_context(|| format!("failed to connect to {}", socket.display()))?;
    connect(&mut stream, port)?;
    let up = stream.try_clone()?;
    let stdin = std::fs::File::from(std::io::stdin().as_fd().try_clone_to_owned()?);
    std::thread::spawn(move || {
        let _ = relay(stdin, &up);
        // ssh closed its end: it is exiting and reads nothing more.
        std::process::exit(0);
    });
    // Unbuffered stdout (std's is line-buffered), so that every byte of
    // the guest's reaches ssh at once.
    let stdout = std::fs::File::from(std::io::stdout().as_fd().try_clone_to_owned()?);
    relay(&stream, stdout).context("relaying the guest's stream")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reply_is_read_up_to_its_newline_and_no_further() {
        let (mut ours, mut vmm) = UnixStream::pair().unwrap();
        vmm.write_all(b"OK 1073741824\nSSH-2.0-x").unwrap();
        connect(&mut ours, 22).unwrap();
        let mut asked = [0u8; 11];
        vmm.read_exact(&mut asked).unwrap();
        assert_eq!(&asked, b"CONNECT 22\n");
        let mut rest = [0u8; 9];
        ours.read_exact(&mut rest).unwrap();
        assert_eq!(&rest, b"SSH-2.0-x");
    }

    #[test]
    fn a_refusal_or_a_close_is_an_error() {
        let (mut ours, mut vmm) = UnixStream::pair().unwrap();
        vmm.write_all(b"ERR no listener\n").unwrap();
        let err = connect(&mut ours, 22).unwrap_err().to_string();
        assert!(err.contains("ERR no listener"), "{err}");
        let (mut ours, mut vmm) = UnixStream::pair().unwrap();
        vmm.write_all(b"OK").unwrap();
        vmm.shutdown(std::net::Shutdown::Write).unwrap();
        let err = connect(&mut ours, 22).unwrap_err().to_string();
        assert!(err.contains("closed") && err.contains("\"OK\""), "{err}");
    }
}
