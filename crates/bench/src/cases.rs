//! The measured cases. Each path of a case is timed once per round, in an
//! order that rotates from round to round, so that drift (CPU frequency,
//! page cache, other load) spreads over every path instead of one.

use std::io;
use std::os::fd::AsFd;
use std::path::Path;
use std::pin::Pin;
use std::process::{Command, Stdio};
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use guestcomm_client::{Early, ExecIo};
use guestcomm_protocol::auth::Psk;
use guestcomm_protocol::limits::DATA_CHUNK_BYTES;
use guestcomm_protocol::message::ExecRequest;
use guestcomm_transport::Address;
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::runtime::Runtime;

use crate::stats::Samples;

/// Pipe buffer asked for on the baseline's child stdout: the same value the
/// agent asks for (`guestcomm_agent::limits::PIPE_BUFFER_BYTES`), so both
/// paths read the pipe in chunks of the same size.
const BASELINE_PIPE_BYTES: i32 = 1024 * 1024;

/// Name the bench gives itself in the handshake.
pub(crate) const CLIENT_NAME: &str = "guestcomm-bench";

/// Rotates `paths` left by `round`: round 0 runs A B C, round 1 B C A, ...
pub(crate) fn rotated<T: Copy>(paths: &[T], round: usize) -> Vec<T> {
    let mut order = paths.to_vec();
    if !order.is_empty() {
        order.rotate_left(round % paths.len());
    }
    order
}

/// Latencies of case A, in milliseconds.
#[derive(Debug, Default)]
pub(crate) struct RoundTrip {
    /// `true` spawned locally with `std::process::Command`.
    pub(crate) local: Samples,
    /// `sh -c true` spawned locally: what a local shell command costs.
    pub(crate) local_sh: Samples,
    /// `guestcomm --version`: the CLI's start-up alone.
    pub(crate) startup: Samples,
    /// connect + handshake + exec `true` through `guestcomm_client`.
    pub(crate) library: Samples,
    /// `guestcomm exec unix://... -- true` as a child process.
    pub(crate) cli: Samples,
}

#[derive(Clone, Copy)]
enum RoundTripPath {
    Local,
    LocalSh,
    Startup,
    Library,
    Cli,
}

/// Case A: `iterations` measured rounds (after `warmup` unmeasured ones) of
/// each path.
pub(crate) fn exec_round_trip(
    rt: &Runtime,
    addr: &Address,
    cli: &Path,
    iterations: usize,
    warmup: usize,
) -> anyhow::Result<RoundTrip> {
    use RoundTripPath::*;
    let mut out = RoundTrip::default();
    let addr_text = addr.to_string();
    for round in 0..warmup + iterations {
        for path in rotated(&[Local, LocalSh, Startup, Library, Cli], round) {
            let elapsed = match path {
                Local => {
                    run_timed(&mut Command::new("true")).context("failed to run `true` locally")?
                }
                LocalSh => run_timed(Command::new("sh").args(["-c", "true"]))
                    .context("failed to run `sh -c true` locally")?,
                Startup => run_timed(Command::new(cli).arg("--version"))
                    .with_context(|| format!("`{} --version` failed", cli.display()))?,
                Library => rt
                    .block_on(library_true(addr))
                    .context("exec `true` through the client library failed")?,
                Cli => run_timed(Command::new(cli).args(["exec", &addr_text, "--", "true"]))
                    .with_context(|| {
                        format!("`{} exec {addr_text} -- true` failed", cli.display())
                    })?,
            };
            if round < warmup {
                continue;
            }
            match path {
                Local => out.local.push_ms(elapsed),
                LocalSh => out.local_sh.push_ms(elapsed),
                Startup => out.startup.push_ms(elapsed),
                Library => out.library.push_ms(elapsed),
                Cli => out.cli.push_ms(elapsed),
            }
        }
    }
    Ok(out)
}

/// Runs `cmd` to completion with stdin and stdout on /dev/null and stderr
/// captured (for the error message); every process-spawning path uses it,
/// so all pay for the same stdio set-up.
pub(crate) fn run_timed(cmd: &mut Command) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let output = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()?;
    let elapsed = start.elapsed();
    if !output.status.success() {
        bail!(
            "{}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(elapsed)
}

pub(crate) fn request(program: &str, args: &[&str]) -> ExecRequest {
    ExecRequest {
        program: program.into(),
        args: args.iter().map(|a| a.to_string()).collect(),
        ..ExecRequest::default()
    }
}

/// Runs `req` on a session past its handshake, stdout into `stdout`, and
/// checks that it exited with 0.
async fn exec_checked<T, O>(session: guestcomm_client::Session<T>, stdout: O) -> anyhow::Result<()>
where
    T: tokio::io::AsyncRead + AsyncWrite + Unpin + Send + 'static,
    O: AsyncWrite + Unpin,
{
    let io = ExecIo {
        stdin: None::<tokio::io::Empty>,
        stdout,
        stderr: tokio::io::sink(),
        input: None,
    };
    let status = guestcomm_client::exec_sent(session.conn, io, |_| {}).await?;
    ensure!(status.code == Some(0), "the command ended with {status:?}");
    Ok(())
}

/// Runs `req` straight to the agent at `addr` (connect + handshake + exec),
/// proving `psk` when given; the request travels as the CLI sends it.
async fn library_exec<O: AsyncWrite + Unpin>(
    addr: &Address,
    psk: Option<&Psk>,
    req: ExecRequest,
    stdout: O,
) -> anyhow::Result<()> {
    let stream = guestcomm_transport::connect(addr).await?;
    let request = guestcomm_client::exec::request(req);
    let early = Early::as_soon_as_safe(request, matches!(addr, Address::Unix(_)));
    let peer = addr.to_string();
    let session = guestcomm_client::handshake_then(stream, &peer, CLIENT_NAME, psk, early).await?;
    exec_checked(session, stdout).await
}

/// Handshake and exec `true` over an already open stream (the daemon's
/// relay on its Unix socket).
pub(crate) async fn exec_true_over<T>(stream: T, peer: &str) -> anyhow::Result<()>
where
    T: tokio::io::AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    exec_over(stream, peer, request("true", &[]), tokio::io::sink()).await
}

/// Handshake and exec `req` over an already open stream on a Unix socket
/// (the daemon's relay), stdout into `stdout`, exit status 0 checked.
pub(crate) async fn exec_over<T, O>(
    stream: T,
    peer: &str,
    req: ExecRequest,
    stdout: O,
) -> anyhow::Result<()>
where
    T: tokio::io::AsyncRead + AsyncWrite + Unpin + Send + 'static,
    O: AsyncWrite + Unpin,
{
    let early = Early::as_soon_as_safe(guestcomm_client::exec::request(req), true);
    let session = guestcomm_client::handshake_then(stream, peer, CLIENT_NAME, None, early).await?;
    exec_checked(session, stdout).await
}

/// connect + handshake + exec `true` straight to the agent, timed.
pub(crate) async fn library_true(addr: &Address) -> anyhow::Result<Duration> {
    library_true_keyed(addr, None).await
}

/// [`library_true`] with the handshake proving `psk`.
pub(crate) async fn library_true_keyed(
    addr: &Address,
    psk: Option<&Psk>,
) -> anyhow::Result<Duration> {
    let start = Instant::now();
    library_exec(addr, psk, request("true", &[]), tokio::io::sink()).await?;
    Ok(start.elapsed())
}

/// One connection to an agent kept open across samples, each exec on it
/// after the previous one (docs/PROTOCOL.md, "Connection reuse"): what an
/// exec costs once connect and handshake are paid, as qemu-ga's channel is
/// opened once. Opened (unmeasured) on first use, and again after an exec
/// that could not give it back.
pub(crate) struct Reused {
    addr: Address,
    psk: Option<Psk>,
    conn: Option<guestcomm_protocol::FramedConn<guestcomm_transport::Stream>>,
}

impl Reused {
    pub(crate) fn new(addr: &Address, psk: Option<&Psk>) -> Self {
        Self {
            addr: addr.clone(),
            psk: psk.cloned(),
            conn: None,
        }
    }

    /// Execs `true` on the kept connection, timed (the connect, when one
    /// is needed, is not).
    pub(crate) async fn exec_true(&mut self) -> anyhow::Result<Duration> {
        let conn = match self.conn.take() {
            Some(conn) => conn,
            None => {
                let session =
                    guestcomm_client::connect_reusable(&self.addr, CLIENT_NAME, self.psk.as_ref())
                        .await?;
                ensure!(
                    session.reusable(),
                    "the agent at {} does not offer connection reuse",
                    self.addr
                );
                session.conn
            }
        };
        let io = ExecIo {
            stdin: None::<tokio::io::Empty>,
            stdout: tokio::io::sink(),
            stderr: tokio::io::sink(),
            input: None,
        };
        let start = Instant::now();
        let (status, conn) =
            guestcomm_client::exec_reusing(conn, request("true", &[]), io, |_| {}).await?;
        let elapsed = start.elapsed();
        ensure!(status.code == Some(0), "the command ended with {status:?}");
        self.conn = conn;
        Ok(elapsed)
    }
}

/// Runs `program args` straight to the agent and returns its stdout
/// (exit status 0 checked).
pub(crate) async fn library_capture(
    addr: &Address,
    psk: Option<&Psk>,
    program: &str,
    args: &[&str],
) -> anyhow::Result<Vec<u8>> {
    let mut stdout = Vec::new();
    library_exec(addr, psk, request(program, args), &mut stdout).await?;
    Ok(stdout)
}

/// Throughputs of case B, in MB/s (10^6 bytes per second).
#[derive(Debug, Default)]
pub(crate) struct Throughput {
    /// Child pipe -> bench -> Unix socket pair -> drained by the bench.
    pub(crate) bare: Samples,
    /// exec through the client library, stdout into a counting sink.
    pub(crate) library: Samples,
    /// `guestcomm exec ... -- head -c SIZE /dev/zero > /dev/null`.
    pub(crate) cli: Samples,
}

#[derive(Clone, Copy)]
enum ThroughputPath {
    Bare,
    Library,
    Cli,
}

/// Case B: `rounds` rounds of moving `bytes` bytes of `head -c` output.
pub(crate) fn stdout_throughput(
    rt: &Runtime,
    addr: &Address,
    cli: &Path,
    bytes: u64,
    rounds: usize,
) -> anyhow::Result<Throughput> {
    use ThroughputPath::*;
    let mut out = Throughput::default();
    let addr_text = addr.to_string();
    let size = bytes.to_string();
    let mb_per_s = |d: Duration| bytes as f64 / d.as_secs_f64() / 1e6;
    for round in 0..rounds {
        for path in rotated(&[Bare, Library, Cli], round) {
            match path {
                Bare => {
                    let d = rt
                        .block_on(bare_socket(bytes))
                        .context("the bare socket baseline failed")?;
                    out.bare.push(mb_per_s(d));
                }
                Library => {
                    let d = rt
                        .block_on(library_head(addr, bytes))
                        .context("exec `head` through the client library failed")?;
                    out.library.push(mb_per_s(d));
                }
                Cli => {
                    let mut cmd = Command::new(cli);
                    cmd.args(["exec", &addr_text, "--", "head", "-c", &size, "/dev/zero"]);
                    let d = run_timed(&mut cmd).with_context(|| {
                        format!("`{} exec {addr_text} -- head ...` failed", cli.display())
                    })?;
                    out.cli.push(mb_per_s(d));
                }
            }
        }
    }
    Ok(out)
}

/// exec `head -c BYTES /dev/zero` straight to the agent into a counting
/// sink, timed.
pub(crate) async fn library_head(addr: &Address, bytes: u64) -> anyhow::Result<Duration> {
    let size = bytes.to_string();
    library_output(addr, None, "head", &["-c", &size, "/dev/zero"], bytes).await
}

/// exec `program args` straight to the agent, its stdout into a counting
/// sink that must receive `bytes`, timed; the handshake proves `psk` when
/// given.
pub(crate) async fn library_output(
    addr: &Address,
    psk: Option<&Psk>,
    program: &str,
    args: &[&str],
    bytes: u64,
) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let mut counter = CountingSink::default();
    library_exec(addr, psk, request(program, args), &mut counter).await?;
    let elapsed = start.elapsed();
    ensure!(
        counter.bytes == bytes,
        "received {} bytes of stdout, expected {bytes}",
        counter.bytes
    );
    Ok(elapsed)
}

/// The baseline for case B: the same child, its stdout pipe copied by this
/// process into one end of a Unix socket pair (`DATA_CHUNK_BYTES` buffer,
/// on a runtime task) while the other end is drained and counted. It is
/// everything the exec path does minus the protocol, the agent process and
/// the second socket hop.
async fn bare_socket(bytes: u64) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let mut child = tokio::process::Command::new("head")
        .args(["-c", &bytes.to_string(), "/dev/zero"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .context("failed to start `head`")?;
    let stdout = child.stdout.take().context("stdout was not piped")?;
    // Best effort, as in the agent.
    let _ = nix::fcntl::fcntl(
        stdout.as_fd(),
        nix::fcntl::FcntlArg::F_SETPIPE_SZ(BASELINE_PIPE_BYTES),
    );
    let (mut tx, mut rx) = tokio::net::UnixStream::pair()?;
    let copier = tokio::spawn(async move {
        let mut reader = BufReader::with_capacity(DATA_CHUNK_BYTES, stdout);
        let copied = tokio::io::copy_buf(&mut reader, &mut tx).await?;
        tx.shutdown().await?;
        io::Result::Ok(copied)
    });
    let mut buf = vec![0u8; DATA_CHUNK_BYTES];
    let mut received = 0u64;
    loop {
        match rx.read(&mut buf).await? {
            0 => break,
            n => received += n as u64,
        }
    }
    copier.await??;
    let status = child.wait().await?;
    let elapsed = start.elapsed();
    ensure!(status.success(), "`head` ended with {status}");
    ensure!(
        received == bytes,
        "received {received} bytes, expected {bytes}"
    );
    Ok(elapsed)
}

/// An `AsyncWrite` that accepts everything and counts it.
#[derive(Debug, Default)]
struct CountingSink {
    bytes: u64,
}

impl AsyncWrite for CountingSink {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.bytes += buf.len() as u64;
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_rotate_the_order_of_paths() {
        assert_eq!(rotated(&[1, 2, 3], 0), [1, 2, 3]);
        assert_eq!(rotated(&[1, 2, 3], 1), [2, 3, 1]);
        assert_eq!(rotated(&[1, 2, 3], 5), [3, 1, 2]);
    }

    #[tokio::test]
    async fn counting_sink_counts_every_byte() {
        let mut sink = CountingSink::default();
        sink.write_all(&[0; 1000]).await.unwrap();
        sink.write_all(b"abc").await.unwrap();
        assert_eq!(sink.bytes, 1003);
    }

    #[tokio::test]
    async fn bare_socket_baseline_moves_exactly_the_bytes_asked_for() {
        bare_socket(3 * 1024 * 1024 + 17).await.unwrap();
    }
}
