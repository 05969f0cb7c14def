//! `guestcomm exec TARGET -- CMD [ARGS...]`: run a command in the guest.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::os::fd::AsFd;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::pin::Pin;
use std::process::ExitCode;
use std::task::{Context as TaskContext, Poll};

use anyhow::Context as _;
use clap::Args;
use guestcomm_client::{ExecInput, ExecIo};
use guestcomm_protocol::message::ExecRequest;
use guestcomm_protocol::FramedConn;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;

use crate::context::Context;
use crate::exit::{self, Failure};
use crate::guest;
use crate::target::Target;
use crate::terminal::{self, RawMode};

/// Run a command in the guest, streaming stdin, stdout and stderr.
///
/// Stdin is forwarded until end of file (use -n when the command should
/// not read it). Ctrl-C, SIGTERM and SIGHUP are forwarded to the guest
/// process group; with -t the local terminal is in raw mode and Ctrl-C goes
/// through the guest's terminal instead. If guestcomm is killed or the
/// connection drops, the agent kills the command.
#[derive(Debug, Args)]
#[command(after_help = exit::EXIT_CODES_HELP)]
pub(crate) struct ExecArgs {
    /// Allocate a pseudo-terminal in the guest (stderr merges into stdout).
    #[arg(short = 't', long)]
    pub(crate) tty: bool,

    /// Do not forward stdin; the command reads end of file at once.
    #[arg(short = 'n', long)]
    pub(crate) no_stdin: bool,

    /// Set an environment variable for the command (repeatable).
    #[arg(short = 'e', long = "env", value_name = "KEY=VAL", value_parser = parse_env)]
    pub(crate) env: Vec<(String, String)>,

    /// Working directory in the guest.
    #[arg(short = 'w', long = "workdir", value_name = "DIR")]
    pub(crate) workdir: Option<String>,

    /// Run as this guest user (name or uid; the agent must run as root).
    #[arg(short = 'u', long, value_name = "USER")]
    pub(crate) user: Option<String>,

    /// Key file shared with the agent (`guestcomm identity new`); both sides
    /// then prove they hold it. Required by agents started with --credentials.
    #[arg(long, env = "GUESTCOMM_IDENTITY", value_name = "FILE")]
    pub(crate) identity: Option<std::path::PathBuf>,

    /// Kill the command after this many seconds.
    #[arg(long, value_name = "SECONDS")]
    pub(crate) timeout: Option<u64>,

    /// The guest agent's address (see `guestcomm --help`) or a VM name.
    #[arg(value_name = "TARGET")]
    pub(crate) target: Target,

    /// The command and its arguments (after `--`).
    #[arg(value_name = "CMD", required = true, last = true, num_args = 1..)]
    pub(crate) command: Vec<String>,
}

fn parse_env(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.into(), value.into())),
        _ => Err(format!("expected KEY=VALUE, got {text:?}")),
    }
}

impl ExecArgs {
    /// The request this command line describes.
    pub(crate) fn request(&self) -> ExecRequest {
        let mut env: BTreeMap<String, String> = self.env.iter().cloned().collect();
        let tty = self
            .tty
            .then(|| terminal::window_size().unwrap_or(terminal::DEFAULT_WINDOW));
        if tty.is_some() {
            if let Ok(term) = std::env::var("TERM") {
                env.entry("TERM".into()).or_insert(term);
            }
        }
        let (program, args) = self.command.split_first().map_or_else(
            || (String::new(), Vec::new()),
            |(p, a)| (p.clone(), a.to_vec()),
        );
        ExecRequest {
            program,
            args,
            env,
            cwd: self.workdir.clone(),
            user: self.user.clone(),
            tty,
            timeout_ms: self.timeout.map(|s| s.saturating_mul(1000)),
        }
    }
}

/// Runs `guestcomm exec`: directly to an agent's address, or through
/// guestcommd for a VM name (see [`crate::guest`]).
pub(crate) async fn run(args: ExecArgs, ctx: &Context) -> Result<ExitCode, Failure> {
    let request = guestcomm_client::exec::request(args.request());
    let session = async { guest::connect(&args.target, ctx)?.open(Some(request)).await }
        .await
        .map_err(|e| Failure::guestcomm(&e))?;
    run_session(session.conn, args).await
}

/// The exec itself, on a connection past its handshake (the request sent),
/// whatever carries it.
async fn run_session<T>(conn: FramedConn<T>, args: ExecArgs) -> Result<ExitCode, Failure>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let tty = args.tty;
    let (input_tx, input_rx) = mpsc::channel(8);
    let forwarder = forward_signals(input_tx, tty).map_err(|e| Failure::guestcomm(&e))?;
    let raw = if tty {
        RawMode::enter()
            .context("failed to put the terminal in raw mode")
            .map_err(|e| Failure::guestcomm(&e))?
    } else {
        None
    };
    let stdout = Stdout::open().map_err(|e| Failure::guestcomm(&e))?;
    let io = ExecIo {
        stdin: (!args.no_stdin && !terminal::is_dev_null(std::io::stdin())).then(tokio::io::stdin),
        stdout,
        stderr: tokio::io::stderr(),
        input: Some(input_rx),
    };
    let result = guestcomm_client::exec_sent(conn, io, |_| {}).await;
    forwarder.abort();
    drop(raw);
    let status = result.map_err(Failure::exec)?;
    if status.timed_out {
        eprintln!("guestcomm: the command timed out and was killed");
    }
    Ok(exit::from_status(status.shell_code()))
}

/// Standard output as `exec` writes it: without std's line buffering, and
/// by the cheapest way its kind allows.
///
/// `tokio::io::stdout()` writes through `std::io::Stdout`, a `LineWriter`
/// that scans every chunk for a newline (a `memrchr` over each 256 KiB data
/// frame: ~15% of the CLI's CPU time for bulk output) and may split it; and
/// tokio's files copy each chunk and hand it to a blocking thread (four
/// futex calls per frame). Each end of stream is flushed anyway.
enum Stdout {
    /// A pipe, opened again through /proc with O_NONBLOCK: its own open
    /// file description, so the shell's stays blocking. Written from the
    /// runtime when the reader makes room, with no thread and no copy.
    Pipe(tokio::net::unix::pipe::Sender),
    /// A regular file or /dev/null: a write never waits for a reader, so
    /// it is made in place.
    InPlace(std::fs::File),
    /// Anything else (a terminal, a socket): on a blocking thread.
    Threaded(tokio::fs::File),
}

impl Stdout {
    /// A duplicate of fd 1, of the variant its kind allows.
    fn open() -> anyhow::Result<Self> {
        let fd = std::io::stdout()
            .as_fd()
            .try_clone_to_owned()
            .context("failed to duplicate standard output")?;
        let file = std::fs::File::from(fd);
        let kind = file.metadata().map(|m| m.file_type());
        if kind.as_ref().is_ok_and(|t| t.is_fifo()) {
            if let Some(pipe) = Self::reopen_pipe() {
                return Ok(Stdout::Pipe(pipe));
            }
        }
        if kind.is_ok_and(|t| t.is_file()) || terminal::is_dev_null(&file) {
            return Ok(Stdout::InPlace(file));
        }
        Ok(Stdout::Threaded(tokio::fs::File::from_std(file)))
    }

    /// Stdout's pipe as a non-blocking writer of its own; `None` where that
    /// cannot be had (no /proc, no reader left), for the threaded fallback.
    fn reopen_pipe() -> Option<tokio::net::unix::pipe::Sender> {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open("/proc/self/fd/1")
            .ok()?;
        tokio::net::unix::pipe::Sender::from_file(file).ok()
    }
}

impl AsyncWrite for Stdout {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stdout::Pipe(pipe) => Pin::new(pipe).poll_write(cx, buf),
            Stdout::InPlace(file) => Poll::Ready(file.write(buf)),
            Stdout::Threaded(file) => Pin::new(file).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stdout::Pipe(pipe) => Pin::new(pipe).poll_flush(cx),
            Stdout::InPlace(_) => Poll::Ready(Ok(())),
            Stdout::Threaded(file) => Pin::new(file).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stdout::Pipe(pipe) => Pin::new(pipe).poll_shutdown(cx),
            Stdout::InPlace(_) => Poll::Ready(Ok(())),
            Stdout::Threaded(file) => Pin::new(file).poll_shutdown(cx),
        }
    }
}

/// Forwards local signals (and, with a pty, window size changes) to the guest.
fn forward_signals(
    tx: mpsc::Sender<ExecInput>,
    tty: bool,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let install = |kind: SignalKind| signal(kind).context("failed to install a signal handler");
    let mut int = install(SignalKind::interrupt())?;
    let mut term = install(SignalKind::terminate())?;
    let mut hup = install(SignalKind::hangup())?;
    let mut quit = install(SignalKind::quit())?;
    let mut winch = install(SignalKind::window_change())?;
    Ok(tokio::spawn(async move {
        loop {
            let input = tokio::select! {
                _ = int.recv() => ExecInput::Signal(libc::SIGINT),
                _ = term.recv() => ExecInput::Signal(libc::SIGTERM),
                _ = hup.recv() => ExecInput::Signal(libc::SIGHUP),
                _ = quit.recv() => ExecInput::Signal(libc::SIGQUIT),
                _ = winch.recv() => match terminal::window_size() {
                    Some(size) if tty => ExecInput::Resize(size),
                    _ => continue,
                },
            };
            if tx.send(input).await.is_err() {
                return;
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::ExecArgs;

    /// `exec`'s arguments alone, as `guestcomm exec` parses them.
    #[derive(Debug, Parser)]
    #[command(name = "exec")]
    struct Exec {
        #[command(flatten)]
        args: ExecArgs,
    }

    #[test]
    fn command_line_becomes_a_request() {
        let args = Exec::try_parse_from([
            "exec",
            "-e",
            "A=1",
            "-w",
            "/tmp",
            "--timeout",
            "3",
            "unix:///a.sock",
            "--",
            "ls",
            "-l",
        ])
        .unwrap()
        .args;
        let req = args.request();
        assert_eq!(req.program, "ls");
        assert_eq!(req.args, ["-l"]);
        assert_eq!(req.env.get("A").map(String::as_str), Some("1"));
        assert_eq!(req.cwd.as_deref(), Some("/tmp"));
        assert_eq!(req.timeout_ms, Some(3000));
        assert!(req.tty.is_none());
    }

    #[test]
    fn env_without_equals_is_refused() {
        let err = Exec::try_parse_from(["exec", "-e", "A", "unix:///a", "--", "x"]).unwrap_err();
        assert!(err.to_string().contains("KEY=VALUE"), "{err}");
    }
}
