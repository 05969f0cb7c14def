//! The closing rule of every operation (`docs/PROTOCOL.md` section 2.5):
//! the side that sends an operation's last frame (`exited`, an integration
//! answer, `copy_summary`, or an `error`) waits for its peer to close
//! first; the side that reads the last frame closes at once.
//!
//! ```text
//! last frame's sender                    its reader
//!   | -- exited | answer | copy_summary | error -->  |  reads it, closes
//!   |  reads and drops frames until the peer closes, |
//!   |  at most LINGER_AFTER_LAST_FRAME_MS, closes    |
//! ```
//!
//! No side half-closes: hybrid vsock turns a half-close into a full
//! shutdown, and an early full close into a reset that can lose the last
//! frame before the peer has read it.

use std::time::Duration;

use futures::{Stream, StreamExt};

use crate::frame::{Frame, FrameError};
use crate::limits::LINGER_AFTER_LAST_FRAME_MS;

/// Waits, after this side sent its last frame, until the peer closes `frames`
/// (or fails, or [`LINGER_AFTER_LAST_FRAME_MS`] passes), dropping anything it
/// still sends. The caller then closes the connection.
pub async fn linger<S>(frames: &mut S)
where
    S: Stream<Item = Result<Frame, FrameError>> + Unpin,
{
    let _ = tokio::time::timeout(Duration::from_millis(LINGER_AFTER_LAST_FRAME_MS), async {
        while let Some(Ok(_)) = frames.next().await {}
    })
    .await;
}
