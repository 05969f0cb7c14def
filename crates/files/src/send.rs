//! Sending a copy: walk the source on a blocking thread, stream it as
//! entries and file data frames through the copy-free frame writer.
//!
//! ```text
//! walker (blocking thread): stat, read 1 MiB chunks, BLAKE3
//!    -> bounded queue of frames -> FrameWriter (one vectored write per chunk)
//! ```
//!
//! The root is followed if it is a symlink (as `cp -rH`); below it, symlinks
//! are sent as symlinks. FIFOs, sockets and device files are refused with a
//! message, and so are names that are not UTF-8 (entry names are JSON
//! strings). A file is sent with exactly the size announced in its entry; a
//! file that shrinks meanwhile fails the copy.

use std::fs::{self, File, Metadata};
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use guestcomm_protocol::files::{CopySummary, Entry, EntryKind};
use guestcomm_protocol::handshake::describe;
use guestcomm_protocol::limits::{FILE_CHUNK_BYTES, LINGER_AFTER_LAST_FRAME_MS};
use guestcomm_protocol::split::{split, FrameWriter};
use guestcomm_protocol::{Control, Frame, FrameError, FramedConn, StreamId};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;

use crate::error::Stall;
use crate::idle::{finish, waited, within};
use crate::{CopyError, Progress};

/// Frames queued between the walker and the socket (at most this many MiB).
const SEND_QUEUE_FRAMES: usize = 4;

/// Sends `src` on `conn` (after the request, and `CopyReady` host to guest),
/// then waits for the receiver's `CopySummary`. On a local failure the
/// receiver is told with an error frame. With `resume`, each file waits for
/// the receiver's `ResumeFrom` and continues from there. Each wait on the
/// receiver (a write it does not take, an answer that does not come) is
/// bounded by `idle`.
pub async fn send_copy<T>(
    conn: FramedConn<T>,
    src: &Path,
    recursive: bool,
    resume: bool,
    idle: Duration,
    progress: &mut dyn Progress,
) -> Result<CopySummary, CopyError>
where
    T: AsyncRead + AsyncWrite + Send + 'static,
{
    let (mut reader, mut writer) = split(conn);
    let (resume_tx, resume_rx) = mpsc::channel(1);
    // While sending, the receiver speaks to refuse, to say where to resume,
    // or, once it has stored everything up to `CopyEnd`, with its summary:
    // that can arrive before this side's last flush has returned.
    let watch = async {
        loop {
            match reader.next().await {
                Some(Ok(Frame::Control(Control::ResumeFrom { offset, blake3 }))) if resume => {
                    if resume_tx.send((offset, blake3)).await.is_err() {
                        std::future::pending::<()>().await;
                    }
                }
                Some(Ok(Frame::Control(Control::CopySummary(summary)))) => return Ok(summary),
                frame => return Err(answer(frame)),
            }
        }
    };
    let sent = {
        let sending = send(
            &mut writer,
            src,
            recursive,
            resume.then_some(resume_rx),
            idle,
            progress,
        );
        tokio::pin!(sending);
        tokio::select! {
            sent = &mut sending => sent,
            early = watch => match early {
                // The receiver has stored everything up to `CopyEnd`: this
                // side finishes its last flush and the walker, then reports
                // (a summary before all was sent is no success).
                Ok(summary) => {
                    return sending.await.map(|()| summary);
                }
                Err(refused) => Err(refused),
            },
        }
    };
    match sent {
        Ok(()) => match waited(idle, Stall::Summary, reader.next()).await? {
            Some(Ok(Frame::Control(Control::CopySummary(summary)))) => Ok(summary),
            frame => Err(answer(frame)),
        },
        Err(CopyError::Frame(FrameError::Io(e))) => {
            // The receiver may have refused and closed: its reason is better
            // than "broken pipe".
            let reason = tokio::time::timeout(
                Duration::from_millis(LINGER_AFTER_LAST_FRAME_MS),
                reader.next(),
            )
            .await;
            match reason {
                Ok(Some(Ok(Frame::Control(Control::Error(frame))))) => Err(CopyError::Peer(frame)),
                _ => Err(CopyError::Frame(FrameError::Io(e))),
            }
        }
        Err(e) => {
            if let Some(frame) = e.to_error_frame() {
                let stalled = matches!(e, CopyError::Stalled { .. });
                let last = Control::Error(frame);
                let _ = finish(&mut reader, &mut writer, last, idle, stalled).await;
            }
            Err(e)
        }
    }
}

/// What an unexpected or early frame from the receiver means.
fn answer(frame: Option<Result<Frame, FrameError>>) -> CopyError {
    match frame {
        Some(Ok(Frame::Control(Control::Error(e)))) => CopyError::Peer(e),
        Some(Ok(other)) => CopyError::Protocol(describe(&other)),
        Some(Err(e)) => e.into(),
        None => CopyError::Disconnected,
    }
}

/// Streams `src` as entries, ending with `CopyEnd`. With `resume`, each
/// file entry is flushed and its answer awaited (at most `idle`) before the
/// walker reads the file; every write is bounded by `idle` too.
pub async fn send<T: AsyncWrite>(
    writer: &mut FrameWriter<T>,
    src: &Path,
    recursive: bool,
    mut resume: Option<Resumes>,
    idle: Duration,
    progress: &mut dyn Progress,
) -> Result<(), CopyError> {
    let (tx, mut rx) = mpsc::channel(SEND_QUEUE_FRAMES);
    // The walker gets each answer from this loop, once it has arrived.
    let (answers, mut walker_answers) = match resume {
        Some(_) => {
            let (answers, walker_answers) = mpsc::channel(1);
            (Some(answers), Some(walker_answers))
        }
        None => (None, None),
    };
    let src = src.to_path_buf();
    let walker =
        tokio::task::spawn_blocking(move || walk(&src, recursive, &tx, &mut walker_answers));
    let mut written = Ok(());
    while let Some(frame) = rx.recv().await {
        let asks = match &frame {
            Frame::Data(_, body) => {
                progress.bytes(body.len() as u64);
                false
            }
            Frame::Control(Control::Entry(entry)) => {
                progress.entry(entry);
                entry.kind == EntryKind::File
            }
            _ => false,
        };
        let answer = resume.as_mut().filter(|_| asks);
        written = within(idle, Stall::Write, writer.feed(frame)).await;
        if written.is_ok() && (rx.is_empty() || answer.is_some()) {
            written = within(idle, Stall::Write, writer.flush()).await;
        }
        if written.is_err() {
            break;
        }
        if let (Some(resumes), Some(answers)) = (answer, &answers) {
            written = match waited(idle, Stall::ResumeAnswer, resumes.recv()).await {
                Ok(Some(offset)) => answers
                    .send(offset)
                    .await
                    .map_err(|_| CopyError::Interrupted),
                // The watcher stopped: it has the reason.
                Ok(None) => Err(CopyError::Interrupted),
                Err(stall) => Err(stall),
            };
            if written.is_err() {
                break;
            }
        }
    }
    // Stops the walker if it is still sending (or waiting for an answer).
    drop(rx);
    drop(answers);
    let walked = walker.await.unwrap_or(Err(CopyError::Interrupted));
    written?;
    walked?;
    within(idle, Stall::Write, writer.flush()).await
}

/// The receiver's `ResumeFrom` answers (offset, BLAKE3 of the prefix).
pub type Resumes = mpsc::Receiver<(u64, String)>;

fn put(tx: &mpsc::Sender<Frame>, frame: Frame) -> Result<(), CopyError> {
    tx.blocking_send(frame).map_err(|_| CopyError::Interrupted)
}

fn walk(
    src: &Path,
    recursive: bool,
    tx: &mpsc::Sender<Frame>,
    resume: &mut Option<Resumes>,
) -> Result<(), CopyError> {
    let meta = fs::metadata(src).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => CopyError::SourceNotFound(src.into()),
        _ => CopyError::fs("read", src, e),
    })?;
    check_kind(&meta, src)?;
    if meta.is_dir() && !recursive {
        return Err(CopyError::IsADirectory(src.into()));
    }
    emit(src, root_name(src)?, &meta, tx, resume)?;
    put(tx, Frame::Control(Control::CopyEnd))
}

/// The name the root travels under: its own, as `cp` keeps it.
fn root_name(src: &Path) -> Result<String, CopyError> {
    let name = match src.file_name() {
        Some(name) => Some(name.to_os_string()),
        // `..`, `/`: name it after what it resolves to.
        None => fs::canonicalize(src)
            .map_err(|e| CopyError::fs("resolve", src, e))?
            .file_name()
            .map(|n| n.to_os_string()),
    };
    let name = name.ok_or_else(|| CopyError::Unsupported {
        path: src.into(),
        what: "a file system root",
    })?;
    utf8(&name, src)
}

fn utf8(name: &std::ffi::OsStr, path: &Path) -> Result<String, CopyError> {
    name.to_str()
        .map(str::to_owned)
        .ok_or(CopyError::Unsupported {
            path: path.into(),
            what: "named with bytes that are not UTF-8",
        })
}

fn check_kind(meta: &Metadata, path: &Path) -> Result<(), CopyError> {
    let ft = meta.file_type();
    let what = if ft.is_fifo() {
        "a FIFO"
    } else if ft.is_block_device() || ft.is_char_device() {
        "a device file"
    } else if ft.is_socket() {
        "a socket"
    } else {
        return Ok(());
    };
    Err(CopyError::Unsupported {
        path: path.into(),
        what,
    })
}

fn emit(
    path: &Path,
    rel: String,
    meta: &Metadata,
    tx: &mpsc::Sender<Frame>,
    resume: &mut Option<Resumes>,
) -> Result<(), CopyError> {
    let ft = meta.file_type();
    let (kind, target) = if ft.is_dir() {
        (EntryKind::Dir, None)
    } else if ft.is_symlink() {
        let target = fs::read_link(path).map_err(|e| CopyError::fs("read the symlink", path, e))?;
        (EntryKind::Symlink, Some(utf8(target.as_os_str(), path)?))
    } else {
        (EntryKind::File, None)
    };
    let size = if kind == EntryKind::File {
        meta.len()
    } else {
        0
    };
    let entry = Entry {
        path: rel.clone(),
        kind,
        mode: meta.mode() & 0o7777,
        mtime: meta.mtime(),
        mtime_nsec: u32::try_from(meta.mtime_nsec()).unwrap_or(0),
        size,
        target,
        uid: Some(meta.uid()),
        gid: Some(meta.gid()),
    };
    put(tx, Frame::Control(Control::Entry(entry)))?;
    match kind {
        EntryKind::File => {
            let blake3 = send_content(path, size, tx, resume)?;
            put(tx, Frame::Control(Control::EntryEnd { blake3 }))
        }
        EntryKind::Dir => {
            let mut children: Vec<PathBuf> = fs::read_dir(path)
                .and_then(|dir| dir.map(|e| e.map(|e| e.path())).collect())
                .map_err(|e| CopyError::fs("list", path, e))?;
            children.sort();
            for child in children {
                let name = utf8(child.file_name().unwrap_or_default(), &child)?;
                let meta =
                    fs::symlink_metadata(&child).map_err(|e| CopyError::fs("read", &child, e))?;
                check_kind(&meta, &child)?;
                emit(&child, format!("{rel}/{name}"), &meta, tx, resume)?;
            }
            Ok(())
        }
        EntryKind::Symlink => Ok(()),
    }
}

/// Sends exactly `size` bytes of `path` (from where the receiver's partial
/// file ends, when resuming) and returns the BLAKE3 of all of them.
fn send_content(
    path: &Path,
    size: u64,
    tx: &mpsc::Sender<Frame>,
    resume: &mut Option<Resumes>,
) -> Result<String, CopyError> {
    let mut file = File::open(path).map_err(|e| CopyError::fs("open", path, e))?;
    let mut hasher = blake3::Hasher::new();
    let mut offset = 0;
    if let Some(resumes) = resume.as_mut() {
        let (held, theirs) = resumes.blocking_recv().ok_or(CopyError::Interrupted)?;
        let copied = io::copy(&mut (&mut file).take(held.min(size)), &mut hasher)
            .map_err(|e| CopyError::fs("read", path, e))?;
        let ours = hasher.clone().finalize().to_hex();
        if held > size || copied != held || !ours.eq_ignore_ascii_case(&theirs) {
            return Err(CopyError::ResumeMismatch(path.into()));
        }
        offset = held;
    }
    let mut left = size - offset;
    while left > 0 {
        let n = left.min(FILE_CHUNK_BYTES as u64) as usize;
        // Read into spare capacity: no zeroing, no copy into the frame.
        let mut buf = Vec::with_capacity(n);
        match (&mut file).take(n as u64).read_to_end(&mut buf) {
            Ok(got) if got == n => {}
            Ok(_) => return Err(CopyError::Changed(path.into())),
            Err(e) => return Err(CopyError::fs("read", path, e)),
        }
        hasher.update(&buf);
        left -= n as u64;
        put(tx, Frame::Data(StreamId::File, Bytes::from(buf)))?;
    }
    Ok(hasher.finalize().to_hex().to_string())
}
