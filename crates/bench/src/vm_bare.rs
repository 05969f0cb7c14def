//! The bare vsock byte stream in the guest: case G's baseline for exec
//! output and `guestcomm cp`, through the same vhost-device-vsock hybrid
//! socket (`CONNECT <port>`) and the same guest, with no protocol at all.
//!
//! Three `socat` listeners in the guest (started once, detached, through
//! the agent), each moving the bytes of one workload between a vsock
//! connection and what the guestcomm path reads or writes:
//! - exec output: the same `dd` as the agent runs, with the accepted
//!   connection as its stdout (`EXEC:dd …,nofork`: no process relays its
//!   bytes); the host drains and counts;
//! - guest → host: the guest's tmpfs file [`GUEST_SRC`] read by socat into
//!   the connection (socat's buffer of guestcomm's frame size,
//!   [`DATA_CHUNK_BYTES`], instead of its 8 KiB; so for the next leg); the host writes it into a file and fsyncs it, as
//!   `guestcomm cp` does;
//! - host → guest: the host sends its file; socat writes it into the tmpfs
//!   file [`GUEST_DST`] (created, truncated) and closes the connection after
//!   [`COPY_BYTES`] (`readbytes`), so the host's timing ends when the guest
//!   has the whole file (a half-close does not cross the hybrid socket:
//!   `shutdown(SHUT_WR)` there ends both directions).
//!
//! Each leg is timed on the host from before the connect to the end of the
//! stream, as the guestcomm paths are from before their connect.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use guestcomm_protocol::limits::DATA_CHUNK_BYTES;

use crate::vm_guest::{
    Guest, COPY_BYTES, GUEST_DST, GUEST_SRC, OPERATION_DEADLINE, OUTPUT_BYTES, OUTPUT_COMMAND,
};

/// The guest's vsock ports of the three listeners.
const OUTPUT_PORT: u32 = 18250;
const FROM_GUEST_PORT: u32 = 18251;
const TO_GUEST_PORT: u32 = 18252;
/// Where the listeners' error messages go in the guest.
const SOCAT_ERRORS: &str = "/tmp/bench-socat.err";
/// How long the listeners may take to come up.
const LISTEN_DEADLINE: Duration = Duration::from_secs(20);

/// The shell script that starts the three listeners, each in a session of
/// its own with no tie to the exec that started it.
pub(crate) fn listeners_script() -> String {
    let b = DATA_CHUNK_BYTES;
    let dd = OUTPUT_COMMAND.join(" ");
    let listen = |port: u32, extra: &str| format!("VSOCK-LISTEN:{port},reuseaddr,fork{extra}");
    [
        format!(
            "/usr/bin/socat -b {b} -U {} 'EXEC:{dd},nofork'",
            listen(OUTPUT_PORT, "")
        ),
        format!(
            "/usr/bin/socat -b {b} -U {} OPEN:{GUEST_SRC},rdonly",
            listen(FROM_GUEST_PORT, "")
        ),
        format!(
            "/usr/bin/socat -b {b} -u {} CREATE:{GUEST_DST}",
            listen(TO_GUEST_PORT, &format!(",readbytes={COPY_BYTES}"))
        ),
    ]
    .iter()
    .map(|cmd| format!("setsid {cmd} </dev/null >/dev/null 2>>{SOCAT_ERRORS} &\n"))
    .collect()
}

/// Starts the listeners in the guest and waits until each accepts a
/// connection (an unmeasured run of each leg).
pub(crate) fn start(g: &Guest<'_>) -> anyhow::Result<()> {
    g.shell("starting socat in the guest", &listeners_script())?;
    for port in [OUTPUT_PORT, FROM_GUEST_PORT, TO_GUEST_PORT] {
        let deadline = Instant::now() + LISTEN_DEADLINE;
        let mut stream = loop {
            match connect(g, port) {
                Ok(s) => break s,
                Err(e) if Instant::now() > deadline => {
                    let said = g
                        .shell("reading socat's errors", &format!("cat {SOCAT_ERRORS}"))
                        .unwrap_or_default();
                    return Err(e).context(format!(
                        "socat does not listen in the guest; it said: {:?}",
                        said.trim()
                    ));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        };
        if port == TO_GUEST_PORT {
            // A whole file, so that this listener's child ends.
            send_zeros(&mut stream, COPY_BYTES)?;
        }
        drain(&mut stream, &mut std::io::sink())?;
    }
    Ok(())
}

fn connect(g: &Guest<'_>, port: u32) -> anyhow::Result<UnixStream> {
    let stream = g.vm.connect_port(port)?;
    stream.set_read_timeout(Some(OPERATION_DEADLINE))?;
    stream.set_write_timeout(Some(OPERATION_DEADLINE))?;
    Ok(stream)
}

/// Reads `stream` to its end into `out`; returns the bytes read.
fn drain(stream: &mut UnixStream, out: &mut impl Write) -> anyhow::Result<u64> {
    let mut buf = vec![0u8; DATA_CHUNK_BYTES];
    let mut total = 0u64;
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => {
                out.write_all(&buf[..n])?;
                total += n as u64;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            // The guest's close may reach the host as a reset.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Ok(total),
            Err(e) => return Err(e).context("reading the guest's stream"),
        }
    }
}

fn send_zeros(stream: &mut UnixStream, mut bytes: u64) -> anyhow::Result<()> {
    let zeros = vec![0u8; DATA_CHUNK_BYTES];
    while bytes > 0 {
        let n = bytes.min(zeros.len() as u64) as usize;
        stream.write_all(&zeros[..n])?;
        bytes -= n as u64;
    }
    Ok(())
}

/// The exec output leg: `dd`'s [`OUTPUT_BYTES`] drained on the host, timed.
pub(crate) fn output(g: &Guest<'_>) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let mut stream = connect(g, OUTPUT_PORT)?;
    let got = drain(&mut stream, &mut std::io::sink())?;
    let elapsed = start.elapsed();
    ensure!(
        got == OUTPUT_BYTES,
        "the bare stream carried {got} bytes of output, expected {OUTPUT_BYTES}"
    );
    Ok(elapsed)
}

/// Guest → host: [`GUEST_SRC`] into the host file `dst`, fsynced.
pub(crate) fn from_guest(g: &Guest<'_>, dst: &Path) -> anyhow::Result<()> {
    let mut stream = connect(g, FROM_GUEST_PORT)?;
    let mut file = std::fs::File::create(dst)
        .with_context(|| format!("failed to create {}", dst.display()))?;
    drain(&mut stream, &mut file)?;
    file.sync_all()?;
    Ok(())
}

/// Host → guest: the host file `src` ([`COPY_BYTES`]) into [`GUEST_DST`];
/// returns when the guest has written it all and closed the connection.
pub(crate) fn to_guest(g: &Guest<'_>, src: &Path) -> anyhow::Result<()> {
    let mut stream = connect(g, TO_GUEST_PORT)?;
    let mut file =
        std::fs::File::open(src).with_context(|| format!("failed to open {}", src.display()))?;
    let sent = std::io::copy(&mut file, &mut stream).context("sending the file to the guest")?;
    ensure!(
        sent == COPY_BYTES,
        "sent {sent} bytes, expected {COPY_BYTES}"
    );
    let echoed = drain(&mut stream, &mut std::io::sink())?;
    ensure!(echoed == 0, "the guest sent {echoed} bytes back");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_listeners_mirror_the_guestcomm_paths() {
        let script = listeners_script();
        let lines: Vec<&str> = script.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines
            .iter()
            .all(|l| l.starts_with("setsid /usr/bin/socat -b 262144 ")
                && l.ends_with(" </dev/null >/dev/null 2>>/tmp/bench-socat.err &")));
        assert!(lines[0].contains(
            "VSOCK-LISTEN:18250,reuseaddr,fork 'EXEC:dd if=/dev/zero bs=64k count=256,nofork'"
        ));
        assert!(
            lines[1].contains("-U VSOCK-LISTEN:18251,reuseaddr,fork OPEN:/tmp/bench-src,rdonly")
        );
        assert!(lines[2].contains(&format!(
            "-u VSOCK-LISTEN:18252,reuseaddr,fork,readbytes={COPY_BYTES} CREATE:/tmp/bench-dst"
        )));
    }
}
