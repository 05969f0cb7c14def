//! The exec service: run a program in the guest with its stdin, stdout and
//! stderr streamed over the connection (or one pseudo-terminal with `tty`).
//!
//! ```text
//!            +--> stdout reader --+
//!  process --+--> stderr reader --+--> frame writer (shared, one at a time) --> host
//!            +<-- stdin writer <-- bounded queue <-- session loop <-- host
//! ```
//!
//! Each output reader writes its chunk to the socket itself, holding the
//! shared writer, and reads the next chunk into the same buffer once the
//! write is done: no queue, no allocation per chunk, one chunk in flight per
//! stream. When the host reads slowly the write waits, the reader stops, the
//! pipe fills and the process blocks (back-pressure, not buffering). A
//! reader starts small ([`FIRST_READ_BYTES`]) and takes full chunks, and a
//! larger pipe, only once the command's output fills a read: most commands
//! write little, and every exec would otherwise pay for both.
//!
//! The stdin writer starts with the first stdin data: until then the pipe's
//! end is a plain descriptor, and the host's `eof` alone closes it (what
//! most execs send), with no task, queue or registration with the runtime.
//! The session loop also handles resize, signals, the timeout and the host
//! going away (which kills the whole process group). `Exited` is sent only
//! after the process ended *and* both output streams reached end of file;
//! the outputs' `eof`s go out in the same write as `exited` (one wake-up of
//! the host instead of three), unless the process runs on for
//! [`OUTPUT_EOF_GRACE_MS`] after closing them.

use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use futures::{SinkExt, StreamExt};
use guestcomm_protocol::closing::linger;
use guestcomm_protocol::limits::{
    DATA_CHUNK_BYTES, LINGER_AFTER_LAST_FRAME_MS, MAX_EXEC_ARGS, MAX_EXEC_ENV,
};
use guestcomm_protocol::split::{join, split, FrameWriter};
use guestcomm_protocol::FramedConn;
use guestcomm_protocol::{Control, Frame, FrameError, StreamId};
use guestcomm_protocol::{ErrorCode, ErrorFrame, ExecRequest, ExitStatus};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::limits::{OUTPUT_EOF_GRACE_MS, PIPE_BUFFER_BYTES, STDIN_QUEUE_FRAMES};
use crate::pty::{self, PtyMaster};
use crate::user::{self, UserError};

/// The byte a terminal reads as end of input (VEOF, Ctrl-D) in pty mode,
/// where the input cannot be closed without closing the output too.
const TERMINAL_EOF: u8 = 0x04;

/// An output reader's first read; a read that fills it moves the reader to
/// whole chunks ([`DATA_CHUNK_BYTES`]) and the pipe to [`PIPE_BUFFER_BYTES`].
const FIRST_READ_BYTES: usize = 16 * 1024;

/// How an exec session ended early.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ExecError {
    /// The request was refused before anything ran; the error frame was sent.
    #[error("exec request refused")]
    Refused(#[source] ErrorFrame),
    /// The host closed the connection (or it failed) before `Exited`; the
    /// process group was killed.
    #[error("the host went away before the command finished; its process group was killed")]
    Disconnected,
    /// The host sent a frame that has no place in an exec session.
    #[error("unexpected frame from the host: {0}")]
    Protocol(String),
    /// Sending to the host failed.
    #[error("cannot send to the host")]
    Send(#[source] FrameError),
}

/// A spawned process and the agent's ends of its stdio.
struct Spawned {
    child: Child,
    pgid: Pid,
    input: Input,
    outputs: Vec<(StreamId, Output)>,
    pty: Option<Arc<PtyMaster>>,
}

/// Where the command's input goes.
enum Input {
    /// The writing end of its stdin pipe, not yet registered with the
    /// runtime (the stdin writer does that with the first data).
    Pipe(OwnedFd),
    Pty(Arc<PtyMaster>),
}

/// A pipe the command writes to.
trait OutputPipe: AsyncRead + AsFd + Send + Unpin {}

impl<T: AsyncRead + AsFd + Send + Unpin> OutputPipe for T {}

/// Where the command's output comes from.
enum Output {
    Pipe(Box<dyn OutputPipe>),
    Pty(Arc<PtyMaster>),
}

fn refuse(code: ErrorCode, message: impl Into<String>) -> ErrorFrame {
    ErrorFrame::new(code, message)
}

/// Checks a request and builds the command, without running anything.
fn prepare(req: &ExecRequest) -> Result<Command, ErrorFrame> {
    let invalid = |what: &str| refuse(ErrorCode::InvalidArgument, what.to_string());
    if req.program.is_empty() {
        return Err(invalid("empty program name"));
    }
    if req.args.len() > MAX_EXEC_ARGS || req.env.len() > MAX_EXEC_ENV {
        return Err(invalid(&format!(
            "too many arguments or environment variables (limits {MAX_EXEC_ARGS} and {MAX_EXEC_ENV})"
        )));
    }
    if req.timeout_ms == Some(0) {
        return Err(invalid("timeout of 0 ms: give a positive timeout, or none"));
    }
    let has_nul = |s: &str| s.contains('\0');
    if has_nul(&req.program) || req.args.iter().any(|a| has_nul(a)) {
        return Err(invalid("program or argument contains a NUL byte"));
    }
    for (name, value) in &req.env {
        if name.is_empty() || name.contains('=') || has_nul(name) || has_nul(value) {
            return Err(refuse(
                ErrorCode::InvalidArgument,
                format!("invalid environment variable name {name:?}: names are non-empty, without '=' or NUL"),
            ));
        }
    }
    let mut cmd = Command::new(&req.program);
    cmd.args(&req.args);
    if let Some(cwd) = &req.cwd {
        match std::fs::metadata(cwd) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => {
                return Err(refuse(
                    ErrorCode::InvalidArgument,
                    format!("working directory {cwd} is not a directory"),
                ))
            }
            Err(_) => {
                return Err(refuse(
                    ErrorCode::NotFound,
                    format!("working directory {cwd} does not exist in the guest"),
                ))
            }
        }
        cmd.current_dir(cwd);
    }
    let target = match req.user.as_deref().map(user::resolve).transpose() {
        Ok(target) => target,
        Err(e @ UserError::NotFound(_)) => return Err(refuse(ErrorCode::NotFound, e.to_string())),
        Err(e @ UserError::NotPermitted { .. }) => {
            return Err(refuse(ErrorCode::PermissionDenied, e.to_string()))
        }
        Err(e) => return Err(refuse(ErrorCode::Io, guestcomm_protocol::error_chain(&e))),
    };
    if let Some(user) = &target {
        cmd.env("HOME", &user.home)
            .env("USER", &user.name)
            .env("LOGNAME", &user.name)
            .env("SHELL", &user.shell);
    }
    cmd.envs(&req.env);
    let new_session = req.tty.is_some();
    let ids = target.map(|u| (u.uid, u.gid, u.groups));
    if !new_session && ids.is_none() {
        // Nothing to do between fork and exec: without a pre-exec step the
        // standard library starts the child with posix_spawn (a vfork that
        // copies no page tables), which is most of an exec's cost here.
        cmd.process_group(0);
        return Ok(cmd);
    }
    // SAFETY: the closure runs in the child between fork and exec and only
    // makes async-signal-safe system calls (setsid, ioctl, setgroups,
    // setgid, setuid); everything it needs was computed before the fork.
    unsafe {
        cmd.pre_exec(move || {
            if new_session {
                // A new session whose controlling terminal is the pty (fd 0).
                nix::unistd::setsid()?;
                if libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            if let Some((uid, gid, groups)) = &ids {
                let groups: Vec<_> = groups
                    .iter()
                    .map(|g| nix::unistd::Gid::from_raw(*g))
                    .collect();
                nix::unistd::setgroups(&groups)?;
                nix::unistd::setgid(nix::unistd::Gid::from_raw(*gid))?;
                nix::unistd::setuid(nix::unistd::Uid::from_raw(*uid))?;
            }
            Ok(())
        });
    }
    if !new_session {
        // Its own process group, so that signals and the final kill reach
        // everything it started.
        cmd.process_group(0);
    }
    Ok(cmd)
}

fn spawn_error(program: &str, err: std::io::Error) -> ErrorFrame {
    match err.kind() {
        std::io::ErrorKind::NotFound => refuse(
            ErrorCode::CommandNotFound,
            format!("{program}: command not found in the guest"),
        ),
        std::io::ErrorKind::PermissionDenied => refuse(
            ErrorCode::PermissionDenied,
            format!("{program}: permission denied"),
        ),
        _ => refuse(ErrorCode::Io, format!("cannot run {program}: {err}")),
    }
}

/// Starts the process described by `req`.
fn spawn(req: &ExecRequest) -> Result<Spawned, ErrorFrame> {
    let mut cmd = prepare(req)?;
    let io_error = |e: std::io::Error| refuse(ErrorCode::Io, format!("cannot set up stdio: {e}"));
    if let Some(size) = req.tty {
        let pty = pty::open(size).map_err(io_error)?;
        let slave = |fd: &OwnedFd| fd.try_clone().map(Stdio::from).map_err(io_error);
        cmd.stdin(slave(&pty.slave)?)
            .stdout(slave(&pty.slave)?)
            .stderr(slave(&pty.slave)?);
        let child = cmd.spawn().map_err(|e| spawn_error(&req.program, e))?;
        // Our copy of the slave must go, or the master never reads EOF.
        drop(pty.slave);
        let master = Arc::new(pty.master);
        let pgid = Pid::from_raw(child.id().map_or(0, |id| id as i32));
        return Ok(Spawned {
            child,
            pgid,
            input: Input::Pty(master.clone()),
            outputs: vec![(StreamId::Stdout, Output::Pty(master.clone()))],
            pty: Some(master),
        });
    }
    // Stdin is a pipe of our own, so that its end stays a plain descriptor
    // until the host sends data (tokio's would register it at once).
    let (stdin_read, stdin_write) = std::io::pipe().map_err(io_error)?;
    cmd.stdin(stdin_read)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let spawned = cmd.spawn();
    // The command holds the child's end of stdin: closing ours now lets
    // the child read end of file once the agent closes its end.
    drop(cmd);
    let mut child = spawned.map_err(|e| spawn_error(&req.program, e))?;
    let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        return Err(refuse(ErrorCode::Internal, "child stdio was not piped"));
    };
    let pgid = Pid::from_raw(child.id().map_or(0, |id| id as i32));
    Ok(Spawned {
        child,
        pgid,
        input: Input::Pipe(stdin_write.into()),
        outputs: vec![
            (StreamId::Stdout, Output::Pipe(Box::new(stdout))),
            (StreamId::Stderr, Output::Pipe(Box::new(stderr))),
        ],
        pty: None,
    })
}

/// The connection's writing half, shared by the output readers and the
/// session loop; whoever holds it writes whole frames.
type SharedWriter<T> = Arc<tokio::sync::Mutex<FrameWriter<T>>>;

/// Reads one output stream into frames until end of file.
async fn pump_output<T: AsyncWrite>(
    mut source: Output,
    stream: StreamId,
    to_host: SharedWriter<T>,
) {
    let mut buf = BytesMut::new();
    let mut scratch = Vec::new();
    let mut chunk = FIRST_READ_BYTES;
    loop {
        // The previous chunk was written and dropped: this reuses its memory.
        buf.reserve(chunk);
        let read = match &mut source {
            Output::Pipe(pipe) => pipe.read_buf(&mut (&mut buf).limit(chunk)).await,
            Output::Pty(master) => {
                scratch.resize(chunk.min(64 * 1024), 0);
                master
                    .read(&mut scratch)
                    .await
                    .inspect(|&n| buf.extend_from_slice(&scratch[..n]))
            }
        };
        if matches!(read, Ok(n) if n == chunk && chunk < DATA_CHUNK_BYTES) {
            // Bulk output: whole chunks from now on, and a larger pipe.
            chunk = DATA_CHUNK_BYTES;
            if let Output::Pipe(pipe) = &source {
                // Best effort: a smaller pipe only costs more reads.
                let larger = nix::fcntl::FcntlArg::F_SETPIPE_SZ(PIPE_BUFFER_BYTES);
                let _ = nix::fcntl::fcntl(pipe.as_fd(), larger);
            }
        }
        let frame = match read {
            Ok(0) => Frame::Control(Control::Eof { stream }),
            Ok(_) => Frame::Data(stream, buf.split().freeze()),
            Err(e) => {
                warn!(?stream, error = %e, "reading the command's output failed");
                Frame::Control(Control::Eof { stream })
            }
        };
        let last = matches!(frame, Frame::Control(_));
        // The `eof` waits in the writer for `exited` (see `serve`): one
        // write, and one wake-up of the host, for the end of an exec.
        let mut writer = to_host.lock().await;
        let written = if last {
            writer.feed(frame).await
        } else {
            writer.send(frame).await
        };
        drop(writer);
        if let Err(e) = written {
            debug!(?stream, error = %e, "the host no longer takes output");
            return;
        }
        if last {
            return;
        }
    }
}

/// The command's input, as the stdin writer holds it.
enum Writer {
    Pipe(pipe::Sender),
    Pty(Arc<PtyMaster>),
}

/// Writes stdin chunks to the process until the queue closes (host EOF).
async fn pump_stdin(input: Input, mut rx: mpsc::Receiver<Bytes>) {
    let mut writer = match input {
        Input::Pipe(fd) => match pipe::Sender::from_owned_fd(fd) {
            Ok(sender) => Some(Writer::Pipe(sender)),
            Err(e) => {
                debug!(error = %e, "cannot write the command's input");
                None
            }
        },
        Input::Pty(master) => Some(Writer::Pty(master)),
    };
    while let Some(chunk) = rx.recv().await {
        let result = match &mut writer {
            Some(Writer::Pipe(pipe)) => pipe.write_all(&chunk).await,
            Some(Writer::Pty(master)) => master.write_all(&chunk).await,
            // The process stopped reading: keep draining so the host is not blocked.
            None => Ok(()),
        };
        if let Err(e) = result {
            debug!(error = %e, "the command no longer reads its input");
            writer = None;
        }
    }
    if let Some(Writer::Pty(master)) = &writer {
        let _ = master.write_all(&[TERMINAL_EOF]).await;
    }
    // Dropping a pipe closes it: the process reads end of file.
}

/// Starts the stdin writer on `input`.
fn start_stdin(input: Input) -> (mpsc::Sender<Bytes>, JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(STDIN_QUEUE_FRAMES);
    (tx, tokio::spawn(pump_stdin(input, rx)))
}

fn signal_group(pgid: Pid, signal: Signal) {
    if pgid.as_raw() > 0 {
        if let Err(e) = killpg(pgid, signal) {
            debug!(%pgid, ?signal, error = %e, "signalling the process group failed");
        }
    }
}

fn exit_status(status: std::io::Result<std::process::ExitStatus>, timed_out: bool) -> ExitStatus {
    match status {
        Ok(s) => ExitStatus {
            code: s.code(),
            signal: s.signal(),
            timed_out,
        },
        Err(e) => {
            warn!(error = %e, "waiting for the command failed");
            ExitStatus {
                code: None,
                signal: None,
                timed_out,
            }
        }
    }
}

/// Serves one exec request on a connection whose handshake is done.
///
/// After `Exited` the connection is given back whole, without waiting for
/// the host: the caller lingers until the host closes, or reads its next
/// request. (`None`: its halves could not be joined, and it was lingered on
/// here.)
pub(crate) async fn serve<T>(
    mut conn: FramedConn<T>,
    req: ExecRequest,
) -> Result<(ExitStatus, Option<FramedConn<T>>), ExecError>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let spawned = match spawn(&req) {
        Ok(spawned) => spawned,
        Err(frame) => {
            let sent = conn.send(Frame::Control(Control::Error(frame.clone())));
            if sent.await.is_ok() {
                linger(&mut conn).await;
            }
            return Err(ExecError::Refused(frame));
        }
    };
    let Spawned {
        mut child,
        pgid,
        input,
        outputs,
        pty,
    } = spawned;
    info!(program = %req.program, pid = pgid.as_raw(), tty = req.tty.is_some(), "command started");
    conn.send(Frame::Control(Control::ExecStarted {
        pid: pgid.as_raw() as u32,
    }))
    .await
    .map_err(|e| {
        signal_group(pgid, Signal::SIGKILL);
        ExecError::Send(e)
    })?;

    let (mut from_host, to_host) = split(conn);
    let to_host: SharedWriter<T> = Arc::new(tokio::sync::Mutex::new(to_host));
    let readers: Vec<_> = outputs
        .into_iter()
        .map(|(stream, source)| tokio::spawn(pump_output(source, stream, to_host.clone())))
        .collect();
    let abort_readers: Vec<_> = readers.iter().map(|r| r.abort_handle()).collect();
    // The input until the first stdin data starts its writer.
    let mut unused_input = Some(input);
    let mut stdin_tx: Option<mpsc::Sender<Bytes>> = None;
    let mut stdin_task: Option<JoinHandle<()>> = None;

    let eofs = to_host.clone();
    let mut done = std::pin::pin!(async move {
        let mut outputs = std::pin::pin!(async {
            for reader in readers {
                let _ = reader.await;
            }
        });
        let mut exit = std::pin::pin!(child.wait());
        let status = tokio::select! {
            biased;
            status = &mut exit => {
                outputs.await;
                status
            }
            () = &mut outputs => {
                // The outputs' `eof`s wait in the writer to go out with
                // `exited`; the exit is usually a moment behind the pipes'
                // end. A command that closed its output and runs on: the
                // host is told after the grace.
                let grace = Duration::from_millis(OUTPUT_EOF_GRACE_MS);
                match tokio::time::timeout(grace, &mut exit).await {
                    Ok(status) => status,
                    Err(_) => {
                        if let Err(e) = eofs.lock().await.flush().await {
                            debug!(error = %e, "the host no longer takes output");
                        }
                        exit.await
                    }
                }
            }
        };
        // The writer's last holder joins it with the reader again.
        drop(eofs);
        status
    });
    let deadline = tokio::time::sleep(Duration::from_millis(req.timeout_ms.unwrap_or(0)));
    let mut deadline = std::pin::pin!(deadline);
    let mut timed_out = false;
    let mut pending: Option<Bytes> = None;
    // After `Eof {stdin}`, stdin data (or a second `Eof`) has no place: it
    // is answered `unexpected_message` like any other stray frame.
    let mut stdin_ended = false;

    let status = loop {
        let mut close_stdin = false;
        tokio::select! {
            status = &mut done => break status,
            permit = async { match &stdin_tx { Some(tx) => tx.reserve().await.ok(), None => None } },
                if pending.is_some() =>
            {
                if let (Some(permit), Some(chunk)) = (permit, pending.take()) {
                    permit.send(chunk);
                }
            }
            () = &mut deadline, if req.timeout_ms.is_some() && !timed_out => {
                info!(pid = pgid.as_raw(), "timeout expired, killing the process group");
                timed_out = true;
                signal_group(pgid, Signal::SIGKILL);
            }
            frame = from_host.next(), if pending.is_none() => match frame {
                Some(Ok(Frame::Data(StreamId::Stdin, chunk))) if !stdin_ended => {
                    if !chunk.is_empty() {
                        pending = Some(chunk);
                    }
                }
                Some(Ok(Frame::Control(Control::Eof { stream: StreamId::Stdin }))) if !stdin_ended => {
                    close_stdin = true;
                    stdin_ended = true;
                }
                Some(Ok(Frame::Control(Control::Resize(size)))) => {
                    if let Some(master) = &pty {
                        if let Err(e) = master.resize(size) {
                            debug!(error = %e, "resize failed");
                        }
                    }
                }
                Some(Ok(Frame::Control(Control::Signal { signal }))) => match Signal::try_from(signal) {
                    Ok(sig) => {
                        let group = pty.as_ref().and_then(|m| m.foreground_group()).unwrap_or(pgid);
                        signal_group(group, sig);
                    }
                    Err(_) => debug!(signal, "ignoring an invalid signal number"),
                },
                Some(Ok(other)) => {
                    let what = other.describe();
                    let when = if stdin_ended { "after eof stdin" } else { "during exec" };
                    signal_group(pgid, Signal::SIGKILL);
                    let frame = ErrorFrame::new(ErrorCode::UnexpectedMessage, format!("unexpected {what} {when}"));
                    abort_readers.iter().for_each(|r| r.abort());
                    stdin_task.as_ref().inspect(|t| t.abort());
                    // An aborted reader lets go of the writer at its next await, which
                    // is not at once: one that saw the killed group's pipes close may be
                    // sending its `eof` (a frame it began stays whole in the writer's
                    // buffer and goes out first). So wait for the writer, boundedly,
                    // rather than skip the error when it is busy.
                    let writer = tokio::time::timeout(
                        Duration::from_millis(LINGER_AFTER_LAST_FRAME_MS),
                        to_host.lock(),
                    )
                    .await;
                    if let Ok(mut writer) = writer {
                        let sent = writer.send(Frame::Control(Control::Error(frame))).await;
                        drop(writer);
                        if sent.is_ok() {
                            linger(&mut from_host).await;
                        }
                    }
                    return Err(ExecError::Protocol(what));
                }
                None | Some(Err(_)) => {
                    warn!(pid = pgid.as_raw(), "host went away, killing the process group");
                    signal_group(pgid, Signal::SIGKILL);
                    abort_readers.iter().for_each(|r| r.abort());
                    stdin_task.as_ref().inspect(|t| t.abort());
                    return Err(ExecError::Disconnected);
                }
            },
        }
        if pending.is_some() {
            // The first data starts the stdin writer.
            if let Some(input) = unused_input.take() {
                let (tx, task) = start_stdin(input);
                stdin_tx = Some(tx);
                stdin_task = Some(task);
            }
        }
        if close_stdin {
            // Dropping the queue's sender ends the stdin writer: the pipe closes.
            stdin_tx = None;
            match unused_input.take() {
                // A terminal is told by its end-of-file character.
                Some(input @ Input::Pty(_)) => stdin_task = Some(start_stdin(input).1),
                // No data came: closing the pipe's end is all there is to do.
                Some(Input::Pipe(fd)) => drop(fd),
                None => {}
            }
        }
    };
    stdin_task.as_ref().inspect(|t| t.abort());
    let exit = exit_status(status, timed_out);
    info!(pid = pgid.as_raw(), code = ?exit.code, signal = ?exit.signal, timed_out, "command ended");
    to_host
        .lock()
        .await
        .send(Frame::Control(Control::Exited(exit)))
        .await
        .map_err(ExecError::Send)?;
    // The output readers have ended, so this is the writer's last holder.
    match Arc::try_unwrap(to_host) {
        Ok(writer) => Ok((exit, Some(join(from_host, writer.into_inner())))),
        Err(_) => {
            linger(&mut from_host).await;
            Ok((exit, None))
        }
    }
}
