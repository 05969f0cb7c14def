//! Receiving a copy: the sender is untrusted.
//!
//! ```text
//! socket -> frame loop (async, here) -> bounded queue -> store (blocking thread, module `store`)
//!                                                   |  per entry: validate the name,
//!                                                   |  open each parent with O_NOFOLLOW,
//!                                                   |  file: temp file in the parent,
//!                                                   |  size + BLAKE3 check, fsync, rename
//!                                                   v
//!                                         CopySummary | error frame
//! ```
//!
//! Every name is relative to a directory descriptor opened once for the
//! destination when the root entry arrives (the local user chose it, so it
//! may itself be reached through symlinks; when a policy confines the
//! copy, only while they stay beneath the allowed directories, module
//! `beneath`); below it, no component is ever followed if it is a
//! symlink, so nothing lands outside. A file exists under its final name
//! only once complete and verified: on any failure the temporary file is
//! removed and an older file of that name is untouched. With `resume`, the
//! temporary file has a name derived from the entry (name, size, mtime), is
//! kept when the connection drops, and a later copy of the same file
//! continues it after the sender has checked its BLAKE3. Directories are
//! created `0700` and get their mode and mtime at the end, deepest first.
//! With `preserve_owner` (root only), every entry also gets its source's
//! numeric owner and group.

use std::path::Path;
use std::time::Duration;

use futures::{Stream, StreamExt};
use guestcomm_protocol::files::CopySummary;
use guestcomm_protocol::split::{split, FrameWriter};
use guestcomm_protocol::{Control, Frame, FrameError, FramedConn, StreamId};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;

use crate::beneath::Confine;
use crate::error::Stall;
use crate::idle::{finish, within};
use crate::path::parent_of;
use crate::store::{Msg, ReceiveOptions, Store};
use crate::{CopyError, Progress};

/// Frames queued between the socket and the store: with 1 MiB data frames,
/// at most this many MiB in flight per copy.
const RECEIVE_QUEUE_FRAMES: usize = 8;

/// Checks, before any entry arrives, that `dst` can receive a copy: its
/// parent exists (or may be created). Refusing here gives a clear error
/// before the sender starts.
pub fn check_destination(dst: &Path, opts: ReceiveOptions) -> Result<(), CopyError> {
    if dst.as_os_str().is_empty() {
        return Err(CopyError::BadEntry {
            path: String::new(),
            reason: "empty destination path".into(),
        });
    }
    if opts.preserve_owner && !nix::unistd::geteuid().is_root() {
        return Err(CopyError::OwnerNeedsRoot);
    }
    if dst.is_dir() || opts.create_full_path {
        return Ok(());
    }
    let parent = parent_of(dst);
    if parent.is_dir() {
        Ok(())
    } else {
        Err(CopyError::MissingParent(parent))
    }
}

/// Receives one copy on `conn` (after the request) into `dst`, answers the
/// sender with `CopySummary` or an error frame, and returns the outcome.
/// Each wait on the sender is bounded by `idle`.
pub async fn receive_copy<T>(
    conn: FramedConn<T>,
    dst: &Path,
    confine: &Confine,
    opts: ReceiveOptions,
    idle: Duration,
    progress: &mut dyn Progress,
) -> Result<CopySummary, CopyError>
where
    T: AsyncRead + AsyncWrite + Send + 'static,
{
    let (mut reader, mut writer) = split(conn);
    let result = receive(&mut reader, &mut writer, dst, confine, opts, idle, progress).await;
    let (last, stalled) = match &result {
        Ok(summary) => (Some(Control::CopySummary(summary.clone())), false),
        Err(e) => (
            e.to_error_frame().map(Control::Error),
            matches!(e, CopyError::Stalled { .. }),
        ),
    };
    if let Some(last) = last {
        let sent = finish(&mut reader, &mut writer, last, idle, stalled).await;
        // The summary is only useful if the sender gets it.
        if let (Ok(_), Err(e)) = (&result, sent) {
            return Err(e);
        }
    }
    result
}

/// Reads entries from `frames` until `CopyEnd` and stores them under `dst`;
/// `writer` carries the `ResumeFrom` answers (resume only). An entry the
/// store refuses ends the copy at once, without waiting for the next frame
/// (the sender of a resumed file waits for an answer to its entry). A wait
/// on the sender longer than `idle` fails the copy as stalled.
pub async fn receive<S, W>(
    frames: &mut S,
    writer: &mut FrameWriter<W>,
    dst: &Path,
    confine: &Confine,
    opts: ReceiveOptions,
    idle: Duration,
    progress: &mut dyn Progress,
) -> Result<CopySummary, CopyError>
where
    S: Stream<Item = Result<Frame, FrameError>> + Unpin,
    W: AsyncWrite,
{
    let (tx, rx) = mpsc::channel(RECEIVE_QUEUE_FRAMES);
    // Unbounded, as the store must never block on it: one small answer
    // per file entry at most, so bounded by MAX_COPY_ENTRIES.
    let (reply_tx, mut replies) = mpsc::unbounded_channel();
    let (dst, confine) = (dst.to_path_buf(), confine.clone());
    let mut store =
        tokio::task::spawn_blocking(move || Store::new(dst, confine, opts, reply_tx).run(rx));
    let mut stored = None;
    // Runs only while this side waits for the sender's next frame, not
    // while it waits for its own disk.
    let quiet = tokio::time::sleep(idle);
    tokio::pin!(quiet);
    // A reply that cannot be written means the sender is going away; what it
    // sent before is still read and stored (worth keeping for a resume)
    // until its end of stream.
    let mut replies_open = true;
    let fed = loop {
        let next = tokio::select! {
            biased;
            // Before CopyEnd the store ends only by refusing (or failing).
            ended = &mut store => {
                stored = Some(ended);
                break Ok(());
            }
            Some(reply) = replies.recv(), if replies_open => {
                match within(idle, Stall::Write, writer.send(Frame::Control(reply))).await {
                    Ok(()) => {}
                    Err(stall @ CopyError::Stalled { .. }) => break Err(stall),
                    Err(_) => replies_open = false,
                }
                continue;
            }
            next = frames.next() => next,
            () = &mut quiet => break Err(CopyError::stalled(Stall::Frame, idle)),
        };
        let frame = match next {
            Some(Ok(frame)) => frame,
            Some(Err(e)) => break Err(e.into()),
            None => break Err(CopyError::Disconnected),
        };
        let (msg, last) = match frame {
            Frame::Data(StreamId::File, body) => {
                progress.bytes(body.len() as u64);
                (Msg::Data(body), false)
            }
            Frame::Control(Control::Entry(entry)) => {
                progress.entry(&entry);
                (Msg::Entry(entry), false)
            }
            Frame::Control(Control::EntryEnd { blake3 }) => (Msg::EntryEnd(blake3), false),
            Frame::Control(Control::CopyEnd) => (Msg::CopyEnd, true),
            Frame::Control(Control::Error(e)) => break Err(CopyError::Peer(e)),
            other => break Err(CopyError::Protocol(other.describe())),
        };
        // A closed queue means the store failed; its error explains why.
        if tx.send(msg).await.is_err() || last {
            break Ok(());
        }
        quiet.as_mut().reset(tokio::time::Instant::now() + idle);
    };
    drop(tx);
    let stored = match stored {
        Some(ended) => ended,
        None => store.await,
    }
    .unwrap_or(Err(CopyError::Interrupted));
    match (stored, fed) {
        (Err(CopyError::Interrupted), Err(e)) => Err(e),
        (stored, _) => stored,
    }
}
