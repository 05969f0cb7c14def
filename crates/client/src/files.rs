//! Copying files into and out of a guest, host side. The sending and
//! receiving logic is `guestcomm-files`, shared with the agent; this module
//! only opens the operation (request, `CopyReady`). `idle` bounds every wait
//! on the agent (`DEFAULT_COPY_IDLE_TIMEOUT_MS` unless configured).

use std::path::Path;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use guestcomm_files::{
    check_destination, receive_copy, send_copy, Confine, CopyError, Progress, ReceiveOptions, Stall,
};
use guestcomm_protocol::files::{CopyFromGuest, CopySummary, CopyToGuest};
use guestcomm_protocol::message::Request;
use guestcomm_protocol::{Call, Control, Frame, FrameCodec};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::codec::Framed;

/// Copies the local `src` into the guest as `req` says; returns the guest's summary.
pub async fn copy_to_guest<T>(
    mut conn: Framed<T, FrameCodec>,
    src: &Path,
    req: CopyToGuest,
    idle: Duration,
    progress: &mut dyn Progress,
) -> Result<CopySummary, CopyError>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (recursive, resume) = (req.recursive, req.resume);
    let request = Request::new(Call::CopyToGuest(req));
    conn.send(Frame::Control(Control::Request(request))).await?;
    let ready = tokio::time::timeout(idle, conn.next())
        .await
        .map_err(|_| CopyError::stalled(Stall::Ready, idle))?;
    match ready {
        Some(Ok(Frame::Control(Control::CopyReady))) => {}
        Some(Ok(Frame::Control(Control::Error(e)))) => return Err(CopyError::Peer(e)),
        Some(Ok(other)) => return Err(CopyError::Protocol(other.describe())),
        Some(Err(e)) => return Err(e.into()),
        None => return Err(CopyError::Disconnected),
    }
    // The host's own files: the local user's choice, not confined.
    send_copy(
        conn,
        src,
        &Confine::none(),
        recursive,
        resume,
        idle,
        progress,
    )
    .await
}

/// Copies `req.src` out of the guest into the local `dst`.
pub async fn copy_from_guest<T>(
    mut conn: Framed<T, FrameCodec>,
    req: CopyFromGuest,
    dst: &Path,
    opts: ReceiveOptions,
    idle: Duration,
    progress: &mut dyn Progress,
) -> Result<CopySummary, CopyError>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    check_destination(dst, opts)?;
    let request = Request::new(Call::CopyFromGuest(req));
    conn.send(Frame::Control(Control::Request(request))).await?;
    receive_copy(conn, dst, &Confine::none(), opts, idle, progress).await
}
