//! Running a command through an agent, host side.
//!
//! The caller supplies where stdin comes from and where stdout and stderr
//! go; [`exec`] streams them concurrently (see the exec sequence in
//! `guestcomm_protocol::message`). Back-pressure is end to end: a slow
//! stdout writer here stops reading the socket, which stops the agent's
//! pipe readers, which blocks the guest process.

use std::io;
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use futures::{SinkExt, StreamExt};
use guestcomm_protocol::limits::{DATA_CHUNK_BYTES, REQUEST_ANSWER_TIMEOUT_MS};
use guestcomm_protocol::split::{forward_frames, join, split};
use guestcomm_protocol::{Call, ErrorFrame, ExecRequest, ExitStatus, Request};
use guestcomm_protocol::{
    Control, Frame, FrameCodec, FrameError, FramedConn, StreamId, WindowSize,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::codec::Framed;
use tracing::debug;

/// Frames queued from the stdin and control tasks to the socket writer.
const SEND_QUEUE_FRAMES: usize = 8;

/// Something the caller asks for while the command runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExecInput {
    /// The local terminal changed size.
    Resize(WindowSize),
    /// Deliver this signal (Linux number) to the guest process group.
    Signal(i32),
}

/// Where the command's streams come from and go to.
pub struct ExecIo<I, O, E> {
    /// Standard input; `None` sends end of file at once.
    pub stdin: Option<I>,
    /// Standard output (the terminal in pty mode).
    pub stdout: O,
    /// Standard error (unused in pty mode).
    pub stderr: E,
    /// Resize and signal requests while the command runs.
    pub input: Option<mpsc::Receiver<ExecInput>>,
}

/// Why a command did not run to completion.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The agent refused to start the command (not found, bad cwd, ...).
    #[error("{}", .0.message)]
    Refused(ErrorFrame),
    /// The agent reported an error after the command started.
    #[error("the agent failed during the command: {}", .0.message)]
    Remote(ErrorFrame),
    /// The connection ended before the command's exit status arrived.
    #[error("the connection to the agent closed before the command finished")]
    Disconnected,
    /// The agent sent something that has no place in an exec session.
    #[error("protocol error: unexpected {0} from the agent")]
    Protocol(String),
    /// The connection failed.
    #[error("connection to the agent failed")]
    Frame(#[from] FrameError),
    /// The command's output could not be written locally.
    #[error("cannot write the command's output")]
    Output(#[source] io::Error),
    /// The agent did not answer the request in time.
    #[error("the agent did not answer the request within {0} ms (is the guest paused or hung?)")]
    NoAnswer(u64),
}

/// Runs `req` on a connection whose handshake is done and returns how the
/// command ended. `started` is called with the guest pid once it runs.
pub async fn exec<T, I, O, E>(
    conn: Framed<T, FrameCodec>,
    req: ExecRequest,
    io: ExecIo<I, O, E>,
    started: impl FnOnce(u32),
) -> Result<ExitStatus, ExecError>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    I: AsyncRead + Unpin + Send + 'static,
    O: AsyncWrite + Unpin,
    E: AsyncWrite + Unpin,
{
    // Dropping the connection closes it: the agent waits for that.
    exec_reusing(conn, req, io, started)
        .await
        .map(|(status, _)| status)
}

/// The request frame of an exec of `req`, for
/// [`handshake_then`](crate::session::handshake_then).
pub fn request(req: ExecRequest) -> Request {
    Request::new(Call::Exec(req))
}

/// [`exec`] on a connection whose request was sent during the handshake
/// ([`handshake_then`](crate::session::handshake_then) with [`request`]).
pub async fn exec_sent<T, I, O, E>(
    conn: Framed<T, FrameCodec>,
    io: ExecIo<I, O, E>,
    started: impl FnOnce(u32),
) -> Result<ExitStatus, ExecError>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    I: AsyncRead + Unpin + Send + 'static,
    O: AsyncWrite + Unpin,
    E: AsyncWrite + Unpin,
{
    // Dropping the connection closes it: the agent waits for that.
    run(conn, io, started).await.map(|(status, _)| status)
}

/// [`exec`] that gives the connection back, for the next request on a
/// session that negotiated reuse ([`connect_reusable`](crate::connect_reusable),
/// [`Session::reusable`](crate::Session::reusable);
/// docs/PROTOCOL.md, "Connection reuse"): no connect and no handshake for
/// the next operation. The connection is `None` when it cannot carry
/// another (its writer failed); close it by dropping it.
pub async fn exec_reusing<T, I, O, E>(
    mut conn: Framed<T, FrameCodec>,
    req: ExecRequest,
    io: ExecIo<I, O, E>,
    started: impl FnOnce(u32),
) -> Result<(ExitStatus, Option<FramedConn<T>>), ExecError>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    I: AsyncRead + Unpin + Send + 'static,
    O: AsyncWrite + Unpin,
    E: AsyncWrite + Unpin,
{
    conn.send(Frame::Control(Control::Request(request(req))))
        .await?;
    run(conn, io, started).await
}

/// Runs an exec whose request was sent, to its `exited`, and joins the
/// connection's halves again.
async fn run<T, I, O, E>(
    mut conn: Framed<T, FrameCodec>,
    io: ExecIo<I, O, E>,
    started: impl FnOnce(u32),
) -> Result<(ExitStatus, Option<FramedConn<T>>), ExecError>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    I: AsyncRead + Unpin + Send + 'static,
    O: AsyncWrite + Unpin,
    E: AsyncWrite + Unpin,
{
    let answer = tokio::time::timeout(
        Duration::from_millis(REQUEST_ANSWER_TIMEOUT_MS),
        conn.next(),
    )
    .await
    .map_err(|_| ExecError::NoAnswer(REQUEST_ANSWER_TIMEOUT_MS))?;
    match answer {
        Some(Ok(Frame::Control(Control::ExecStarted { pid }))) => started(pid),
        Some(Ok(Frame::Control(Control::Error(e)))) => return Err(ExecError::Refused(e)),
        Some(Ok(other)) => return Err(ExecError::Protocol(other.describe())),
        Some(Err(e)) => return Err(e.into()),
        None => return Err(ExecError::Disconnected),
    }

    let ExecIo {
        stdin,
        mut stdout,
        mut stderr,
        input,
    } = io;
    let (mut from_agent, to_agent) = split(conn);
    let (tx, rx) = mpsc::channel(SEND_QUEUE_FRAMES);
    let writer = tokio::spawn(forward_frames(to_agent, rx));
    let stdin_task = tokio::spawn(pump_stdin(stdin, tx.clone()));
    let input_task = input.map(|rx| tokio::spawn(pump_input(rx, tx.clone())));
    drop(tx);

    let result = loop {
        let frame = match from_agent.next().await {
            Some(Ok(frame)) => frame,
            Some(Err(e)) => break Err(e.into()),
            None => break Err(ExecError::Disconnected),
        };
        let written = match frame {
            Frame::Data(StreamId::Stdout, data) => stdout.write_all(&data).await,
            Frame::Data(StreamId::Stderr, data) => stderr.write_all(&data).await,
            Frame::Control(Control::Eof {
                stream: StreamId::Stdout,
            }) => stdout.flush().await,
            Frame::Control(Control::Eof {
                stream: StreamId::Stderr,
            }) => stderr.flush().await,
            Frame::Control(Control::Exited(status)) => break Ok(status),
            Frame::Control(Control::Error(e)) => break Err(ExecError::Remote(e)),
            other => break Err(ExecError::Protocol(other.describe())),
        };
        if let Err(e) = written {
            break Err(ExecError::Output(e));
        }
    };
    stdin_task.abort();
    let _ = stdin_task.await;
    if let Some(task) = input_task {
        task.abort();
        let _ = task.await;
    }
    let flushed = async {
        stdout.flush().await?;
        stderr.flush().await
    };
    if let (Ok(_), Err(e)) = (&result, flushed.await) {
        return Err(ExecError::Output(e));
    }
    // The writer ends (flushed) once the aborted tasks dropped their senders.
    let writer = writer.await;
    let status = result?;
    match writer {
        Ok(Ok(writer)) => Ok((status, Some(join(from_agent, writer)))),
        _ => Ok((status, None)),
    }
}

/// Sends stdin as data frames, then `Eof`.
async fn pump_stdin<I: AsyncRead + Unpin>(stdin: Option<I>, tx: mpsc::Sender<Frame>) {
    if let Some(mut stdin) = stdin {
        let mut buf = BytesMut::with_capacity(DATA_CHUNK_BYTES);
        loop {
            buf.reserve(DATA_CHUNK_BYTES);
            match stdin
                .read_buf(&mut (&mut buf).limit(DATA_CHUNK_BYTES))
                .await
            {
                Ok(0) => break,
                Ok(_) => {
                    let chunk = buf.split().freeze();
                    if tx.send(Frame::Data(StreamId::Stdin, chunk)).await.is_err() {
                        return;
                    }
                }
                Err(e) => {
                    debug!(error = %e, "reading stdin failed; sending end of file");
                    break;
                }
            }
        }
    }
    let _ = tx
        .send(Frame::Control(Control::Eof {
            stream: StreamId::Stdin,
        }))
        .await;
}

/// Forwards resize and signal requests.
async fn pump_input(mut rx: mpsc::Receiver<ExecInput>, tx: mpsc::Sender<Frame>) {
    while let Some(input) = rx.recv().await {
        let msg = match input {
            ExecInput::Resize(size) => Control::Resize(size),
            ExecInput::Signal(signal) => Control::Signal { signal },
        };
        if tx.send(Frame::Control(msg)).await.is_err() {
            return;
        }
    }
}
