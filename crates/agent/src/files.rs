//! The file service: copies into the guest (the agent receives) and out of
//! it (the agent sends), both through `guestcomm-files`, the same code the
//! host uses for the other direction.

use std::path::PathBuf;
use std::time::Duration;

use futures::SinkExt;
use guestcomm_files::{
    check_destination, receive_copy, send_copy, CopyError, NoProgress, ReceiveOptions,
};
use guestcomm_protocol::closing::linger;
use guestcomm_protocol::files::{CopyFromGuest, CopySummary, CopyToGuest};
use guestcomm_protocol::{Control, Frame, FramedConn};
use guestcomm_transport::Stream;

/// Receives a copy into `req.dst`: checks the destination, answers
/// `CopyReady`, stores the entries, answers `CopySummary` or an error. A
/// host that sends nothing for `idle` fails the copy as stalled.
pub async fn serve_to_guest(
    mut conn: FramedConn<Stream>,
    req: CopyToGuest,
    idle: Duration,
) -> Result<CopySummary, CopyError> {
    let opts = ReceiveOptions {
        overwrite: req.overwrite,
        create_full_path: req.create_full_path,
        recursive: req.recursive,
        resume: req.resume,
        preserve_owner: req.preserve_owner,
    };
    let dst = PathBuf::from(&req.dst);
    let checked = if req.dst.contains('\0') {
        Err(CopyError::BadEntry {
            path: req.dst.clone(),
            reason: "the destination contains a NUL byte".into(),
        })
    } else {
        check_destination(&dst, opts)
    };
    if let Err(e) = checked {
        if let Some(frame) = e.to_error_frame() {
            if conn
                .send(Frame::Control(Control::Error(frame)))
                .await
                .is_ok()
            {
                linger(&mut conn).await;
            }
        }
        return Err(e);
    }
    conn.send(Frame::Control(Control::CopyReady)).await?;
    receive_copy(conn, &dst, opts, idle, &mut NoProgress).await
}

/// Sends `req.src` to the host and waits for its summary; a host that
/// takes nothing, or does not answer, for `idle` fails the copy as stalled.
pub async fn serve_from_guest(
    conn: FramedConn<Stream>,
    req: CopyFromGuest,
    idle: Duration,
) -> Result<CopySummary, CopyError> {
    send_copy(
        conn,
        &PathBuf::from(&req.src),
        req.recursive,
        req.resume,
        idle,
        &mut NoProgress,
    )
    .await
}
