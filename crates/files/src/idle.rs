//! Every wait of a copy on its peer has a bound (the idle timeout), and a
//! copy ends the way the closing rule says (`docs/PROTOCOL.md` 2.5 and 13.3).

use std::future::Future;
use std::time::Duration;

use futures::Stream;
use guestcomm_protocol::closing::linger;
use guestcomm_protocol::limits::LINGER_AFTER_LAST_FRAME_MS;
use guestcomm_protocol::split::FrameWriter;
use guestcomm_protocol::{Control, Frame, FrameError};
use tokio::io::AsyncWrite;

use crate::error::Stall;
use crate::CopyError;

/// The output of `fut`, or a stall on `wait` when it takes longer than `idle`.
pub(crate) async fn waited<T>(
    idle: Duration,
    wait: Stall,
    fut: impl Future<Output = T>,
) -> Result<T, CopyError> {
    tokio::time::timeout(idle, fut)
        .await
        .map_err(|_| CopyError::stalled(wait, idle))
}

/// [`waited`] for a fallible `fut`.
pub(crate) async fn within<T, E>(
    idle: Duration,
    wait: Stall,
    fut: impl Future<Output = Result<T, E>>,
) -> Result<T, CopyError>
where
    E: Into<CopyError>,
{
    waited(idle, wait, fut).await?.map_err(Into::into)
}

/// Sends `last` (this side's last frame), then closes as the closing rule
/// says: after waiting for the peer to close first, unless the peer has
/// stalled (then at once, and `last` is sent only if the peer takes it
/// within [`LINGER_AFTER_LAST_FRAME_MS`]).
pub(crate) async fn finish<S, W>(
    frames: &mut S,
    writer: &mut FrameWriter<W>,
    last: Control,
    idle: Duration,
    stalled: bool,
) -> Result<(), CopyError>
where
    S: Stream<Item = Result<Frame, FrameError>> + Unpin,
    W: AsyncWrite,
{
    // A stalled peer gets its error only if it takes it promptly.
    let bound = if stalled {
        idle.min(Duration::from_millis(LINGER_AFTER_LAST_FRAME_MS))
    } else {
        idle
    };
    within(bound, Stall::Write, writer.send(Frame::Control(last))).await?;
    if !stalled {
        linger(frames).await;
    }
    Ok(())
}
