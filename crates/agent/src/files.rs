//! The file service: copies into the guest (the agent receives) and out of
//! it (the agent sends), both through `guestcomm-files`, the same code the
//! host uses for the other direction.
//!
//! A copy's guest path is confined at the moment of use to the prefixes
//! the host's policy relayed in the request (`host_prefixes`) and the
//! guest's own policy allows for its direction: every open of it is made
//! beneath them (`guestcomm_files::Confine`), when the root entry arrives
//! or the walk reaches it, not when the request was checked.

use std::path::PathBuf;
use std::time::Duration;

use futures::SinkExt;
use guestcomm_files::{
    check_destination, receive_copy, send_copy, Confine, CopyError, NoProgress, ReceiveOptions,
};
use guestcomm_policy::{Direction, PolicyDocument};
use guestcomm_protocol::closing::linger;
use guestcomm_protocol::files::{CopyFromGuest, CopySummary, CopyToGuest};
use guestcomm_protocol::{Control, Frame, FramedConn};
use guestcomm_transport::Stream;

/// Where `path` must stay: beneath the host's prefixes (when it relayed
/// any) and the guest policy's for `direction`.
fn confine(
    path: &str,
    host: Option<&[String]>,
    guest: Option<&PolicyDocument>,
    direction: Direction,
) -> Result<Confine, CopyError> {
    let lists: Vec<&[String]> = host
        .into_iter()
        .chain(guest.and_then(|doc| doc.copy_prefixes(direction)))
        .collect();
    Confine::new(path, &lists)
}

/// Tells the client why the copy cannot start, then waits for it to close.
async fn refuse(conn: &mut FramedConn<Stream>, e: &CopyError) {
    if let Some(frame) = e.to_error_frame() {
        if conn
            .send(Frame::Control(Control::Error(frame)))
            .await
            .is_ok()
        {
            linger(conn).await;
        }
    }
}

/// Bounds of the copies the agent serves.
#[derive(Clone, Copy, Debug)]
pub(crate) struct CopyLimits {
    /// How long a copy waits on the host before failing as stalled
    /// (`--copy-idle-timeout`).
    pub idle: Duration,
    /// Most bytes of file content one copy into the guest may write
    /// (`--max-copy-bytes`); `None`: no bound but the disk's.
    pub max_bytes: Option<u64>,
}

/// Receives a copy into `req.dst`: checks the destination, answers
/// `CopyReady`, stores the entries, answers `CopySummary` or an error. A
/// host that sends nothing for `idle` fails the copy as stalled.
pub(crate) async fn serve_to_guest(
    mut conn: FramedConn<Stream>,
    req: CopyToGuest,
    limits: CopyLimits,
    guest_policy: Option<&PolicyDocument>,
) -> Result<CopySummary, CopyError> {
    let idle = limits.idle;
    let opts = ReceiveOptions {
        overwrite: req.overwrite,
        create_full_path: req.create_full_path,
        recursive: req.recursive,
        resume: req.resume,
        preserve_owner: req.preserve_owner,
        max_bytes: limits.max_bytes,
    };
    let dst = PathBuf::from(&req.dst);
    let checked = if req.dst.contains('\0') {
        Err(CopyError::BadEntry {
            path: req.dst.clone(),
            reason: "the destination contains a NUL byte".into(),
        })
    } else {
        confine(
            &req.dst,
            req.host_prefixes.as_deref(),
            guest_policy,
            Direction::ToGuest,
        )
        .and_then(|confine| check_destination(&dst, opts).map(|()| confine))
    };
    let confine = match checked {
        Ok(confine) => confine,
        Err(e) => {
            refuse(&mut conn, &e).await;
            return Err(e);
        }
    };
    conn.send(Frame::Control(Control::CopyReady)).await?;
    receive_copy(conn, &dst, &confine, opts, idle, &mut NoProgress).await
}

/// Sends `req.src` to the host and waits for its summary; a host that
/// takes nothing, or does not answer, for `idle` fails the copy as stalled.
pub(crate) async fn serve_from_guest(
    mut conn: FramedConn<Stream>,
    req: CopyFromGuest,
    CopyLimits { idle, .. }: CopyLimits,
    guest_policy: Option<&PolicyDocument>,
) -> Result<CopySummary, CopyError> {
    let confine = match confine(
        &req.src,
        req.host_prefixes.as_deref(),
        guest_policy,
        Direction::FromGuest,
    ) {
        Ok(confine) => confine,
        Err(e) => {
            refuse(&mut conn, &e).await;
            return Err(e);
        }
    };
    send_copy(
        conn,
        &PathBuf::from(&req.src),
        &confine,
        req.recursive,
        req.resume,
        idle,
        &mut NoProgress,
    )
    .await
}
