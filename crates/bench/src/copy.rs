//! Case C: `cp` of one large file, host to guest and guest to
//! host, against a bare Unix socket and `cp(1)` on the same disk.
//!
//! Every path reads the same source file (in the page cache after it is
//! made) and writes a new file on the same file system, then makes it
//! durable with fsync, as the file service does before its rename; each
//! destination is removed, and the file system synced, before its path is
//! timed.
//!
//! - library to guest / from guest: `guestcomm_client::copy_to_guest` /
//!   `copy_from_guest` against the agent (BLAKE3 on both sides, temp file,
//!   fsync, rename);
//! - CLI to guest / from guest: `guestcomm cp` as a child process;
//! - bare: one thread reads the file in 1 MiB chunks into one end of a Unix
//!   socket pair, the other end is written to the new file, then fsync;
//! - cp(1): `cp SRC DST`, then fsync of DST;
//! - qemu-ga (when installed): `guest-file-write` / `guest-file-read` with
//!   base64 bodies of 4 MiB (module `qga`), then fsync of DST.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use guestcomm_client::{NoProgress, ReceiveOptions};
use guestcomm_protocol::auth::Psk;
use guestcomm_protocol::files::{CopyFromGuest, CopyToGuest};
use guestcomm_protocol::limits::FILE_CHUNK_BYTES;
use guestcomm_transport::Address;
use tokio::runtime::Runtime;

use crate::cases::{rotated, run_timed, CLIENT_NAME};
use crate::qga::QgaAgent;
use crate::stats::Samples;

/// Throughput of case C, in MB/s (10^6 bytes per second).
#[derive(Debug, Default)]
pub(crate) struct CopyThroughput {
    pub(crate) bare: Samples,
    pub(crate) system_cp: Samples,
    pub(crate) library_to: Samples,
    pub(crate) library_from: Samples,
    pub(crate) cli_to: Samples,
    pub(crate) cli_from: Samples,
    /// Empty when qemu-ga is not installed.
    pub(crate) qga_to: Samples,
    /// Empty when qemu-ga is not installed.
    pub(crate) qga_from: Samples,
}

#[derive(Clone, Copy)]
enum CopyPath {
    Bare,
    SystemCp,
    LibraryTo,
    LibraryFrom,
    CliTo,
    CliFrom,
    QgaTo,
    QgaFrom,
}

/// Case C: `rounds` rounds of copying a file of `bytes` bytes each way,
/// also through `qga` when given.
pub(crate) fn copy_throughput(
    rt: &Runtime,
    addr: &Address,
    cli: &Path,
    qga: Option<&QgaAgent>,
    bytes: u64,
    rounds: usize,
) -> anyhow::Result<CopyThroughput> {
    use CopyPath::*;
    let dir = tempfile::tempdir().context("failed to create a temporary directory")?;
    let src = dir.path().join("source");
    make_file(&src, bytes)?;
    // The "guest" copy that the from-guest paths read.
    let in_guest = dir.path().join("in-guest");
    fs::copy(&src, &in_guest).context("failed to prepare the guest-side file")?;
    let dst = dir.path().join("destination");
    let remote = |p: &Path| format!("{addr}:{}", p.display());
    let mut out = CopyThroughput::default();
    let mb_per_s = |d: Duration| bytes as f64 / d.as_secs_f64() / 1e6;
    let mut paths = vec![Bare, SystemCp, LibraryTo, LibraryFrom, CliTo, CliFrom];
    if qga.is_some() {
        paths.extend([QgaTo, QgaFrom]);
    }
    for round in 0..rounds {
        for path in rotated(&paths, round) {
            // Untimed: the previous copy's removal and writeback must not
            // slow the next path.
            let _ = fs::remove_file(&dst);
            nix::unistd::sync();
            let (samples, d) = match path {
                Bare => (&mut out.bare, bare_copy(&src, &dst)?),
                SystemCp => {
                    let start = Instant::now();
                    run_timed(Command::new("cp").arg(&src).arg(&dst))?;
                    File::open(&dst)?.sync_all()?;
                    (&mut out.system_cp, start.elapsed())
                }
                LibraryTo => (
                    &mut out.library_to,
                    rt.block_on(library_to(addr, None, &src, &dst))?,
                ),
                LibraryFrom => (
                    &mut out.library_from,
                    rt.block_on(library_from(addr, &in_guest, &dst))?,
                ),
                CliTo => {
                    let mut cmd = Command::new(cli);
                    cmd.arg("cp").arg(&src).arg(remote(&dst));
                    (&mut out.cli_to, run_timed(&mut cmd)?)
                }
                CliFrom => {
                    let mut cmd = Command::new(cli);
                    cmd.arg("cp").arg(remote(&in_guest)).arg(&dst);
                    (&mut out.cli_from, run_timed(&mut cmd)?)
                }
                QgaTo | QgaFrom => {
                    let agent = qga.context("qemu-ga paths without qemu-ga")?;
                    let start = Instant::now();
                    let mut client = agent.connect()?;
                    if matches!(path, QgaTo) {
                        client.write_file(&src, &dst)?;
                        File::open(&dst)?.sync_all()?;
                        (&mut out.qga_to, start.elapsed())
                    } else {
                        client.read_file(&in_guest, &dst)?;
                        (&mut out.qga_from, start.elapsed())
                    }
                }
            };
            let copied = fs::metadata(&dst)?.len();
            ensure!(
                copied == bytes,
                "a copy has {copied} bytes, expected {bytes}"
            );
            samples.push(mb_per_s(d));
        }
    }
    Ok(out)
}

/// Writes `bytes` of incompressible data (a random MiB, varied per block).
pub(crate) fn make_file(path: &Path, bytes: u64) -> anyhow::Result<()> {
    let mut block = vec![0u8; FILE_CHUNK_BYTES];
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for chunk in block.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    let mut file = File::create(path).context("failed to create the source file")?;
    let mut left = bytes;
    let mut n = 0u64;
    while left > 0 {
        block[..8].copy_from_slice(&n.to_le_bytes());
        let len = left.min(block.len() as u64) as usize;
        file.write_all(&block[..len])?;
        left -= len as u64;
        n += 1;
    }
    Ok(())
}

/// The baseline: file -> Unix socket pair -> new file, then fsync.
fn bare_copy(src: &Path, dst: &Path) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let (mut tx, mut rx) = UnixStream::pair()?;
    let mut input = File::open(src)?;
    let reader = std::thread::spawn(move || -> std::io::Result<()> {
        let mut buf = vec![0u8; FILE_CHUNK_BYTES];
        loop {
            match input.read(&mut buf)? {
                0 => return Ok(()),
                n => tx.write_all(&buf[..n])?,
            }
        }
    });
    let mut output = File::create(dst)?;
    let mut buf = vec![0u8; FILE_CHUNK_BYTES];
    loop {
        match rx.read(&mut buf)? {
            0 => break,
            n => output.write_all(&buf[..n])?,
        }
    }
    output.sync_all()?;
    reader
        .join()
        .map_err(|_| anyhow::anyhow!("the reader thread panicked"))??;
    Ok(start.elapsed())
}

/// copy_to_guest of `src` to `dst` through the agent at `addr` (proving
/// `psk` when given), timed from the connect.
pub(crate) async fn library_to(
    addr: &Address,
    psk: Option<&Psk>,
    src: &Path,
    dst: &Path,
) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let session = guestcomm_client::connect_with(addr, CLIENT_NAME, psk).await?;
    let req = CopyToGuest {
        dst: dst.display().to_string(),
        ..Default::default()
    };
    let idle = guestcomm_client::DEFAULT_COPY_IDLE_TIMEOUT;
    guestcomm_client::copy_to_guest(session.conn, src, req, idle, &mut NoProgress).await?;
    Ok(start.elapsed())
}

async fn library_from(addr: &Address, src: &Path, dst: &Path) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let session = guestcomm_client::connect(addr, CLIENT_NAME).await?;
    let req = CopyFromGuest {
        src: src.display().to_string(),
        recursive: false,
        resume: false,
        ..CopyFromGuest::default()
    };
    let dst: PathBuf = dst.to_path_buf();
    guestcomm_client::copy_from_guest(
        session.conn,
        req,
        &dst,
        ReceiveOptions::default(),
        guestcomm_client::DEFAULT_COPY_IDLE_TIMEOUT,
        &mut NoProgress,
    )
    .await?;
    Ok(start.elapsed())
}
