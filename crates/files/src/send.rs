//! Sending a copy: walk the source on a blocking thread, stream it as
//! entries and file data frames through the copy-free frame writer.
//!
//! ```text
//! walker (blocking thread): stat, read 1 MiB chunks, BLAKE3
//!    -> bounded queue of frames -> FrameWriter (one vectored write per chunk)
//! ```
//!
//! The root is followed if it is a symlink (as `cp -rH`; when a policy
//! confines the copy, only while it stays beneath the allowed directories,
//! module `beneath`); below it, every entry is reached by name from its
//! directory's open descriptor, never followed if it is a symlink: symlinks
//! are sent as symlinks, and an entry replaced meanwhile fails the copy
//! ("changed") instead of leading out of the tree. What is sent (kind,
//! mode, size) is read from the opened descriptor. FIFOs, sockets and device files are refused with a
//! message, and so are names that are not UTF-8 (entry names are JSON
//! strings). A file is sent with exactly the size announced in its entry; a
//! file that shrinks meanwhile fails the copy.

use std::ffi::{OsStr, OsString};
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use guestcomm_protocol::files::{CopySummary, Entry, EntryKind};
use guestcomm_protocol::limits::{FILE_CHUNK_BYTES, LINGER_AFTER_LAST_FRAME_MS};
use guestcomm_protocol::split::{split, FrameWriter};
use guestcomm_protocol::{Control, Frame, FrameError, FramedConn, StreamId};
use nix::dir::Dir;
use nix::errno::Errno;
use nix::fcntl::{openat, readlinkat, AtFlags, OFlag};
use nix::sys::stat::{fstat, fstatat, FileStat, Mode, SFlag};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;

use crate::beneath::Confine;
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
    confine: &Confine,
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
            confine,
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
        Some(Ok(other)) => CopyError::Protocol(other.describe()),
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
    confine: &Confine,
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
    let (src, confine) = (src.to_path_buf(), confine.clone());
    let walker = tokio::task::spawn_blocking(move || {
        walk(&src, &confine, recursive, &tx, &mut walker_answers)
    });
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
    confine: &Confine,
    recursive: bool,
    tx: &mpsc::Sender<Frame>,
    resume: &mut Option<Resumes>,
) -> Result<(), CopyError> {
    let not_found = |e: Errno, op| match e {
        Errno::ENOENT => CopyError::SourceNotFound(src.into()),
        e => confine.error(e, op, src),
    };
    // Looked at without opening it for reading (a device or a FIFO is
    // refused before it is opened), then opened, and both must be the same.
    let looked = confine
        .open(src, OFlag::O_PATH)
        .map_err(|e| not_found(e, "read"))?;
    let stat = fstat(&looked).map_err(|e| CopyError::fs("read", src, e))?;
    check_kind(&stat, src)?;
    let is_dir = kind_of(&stat) == SFlag::S_IFDIR;
    if is_dir && !recursive {
        return Err(CopyError::IsADirectory(src.into()));
    }
    let fd = confine
        .open(src, READ_FLAGS)
        .map_err(|e| not_found(e, "open"))?;
    let opened = opened(fd, &stat, src)?;
    emit(src, root_name(src)?, opened, tx, resume)?;
    put(tx, Frame::Control(Control::CopyEnd))
}

/// Flags of every open for reading: never blocks on a FIFO, never becomes
/// a controlling terminal.
const READ_FLAGS: OFlag = OFlag::O_RDONLY
    .union(OFlag::O_NONBLOCK)
    .union(OFlag::O_NOCTTY)
    .union(OFlag::O_CLOEXEC);

/// A source entry, opened (files and directories) or read (symlinks).
enum Opened {
    File(File, FileStat),
    Dir(OwnedFd, FileStat),
    Symlink(String, FileStat),
}

fn kind_of(stat: &FileStat) -> SFlag {
    SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT
}

/// `fd`, opened for what `expected` (looked at before) was: the same file
/// (device and inode) of the same kind, or the source changed meanwhile.
fn opened(fd: OwnedFd, expected: &FileStat, path: &Path) -> Result<Opened, CopyError> {
    let stat = fstat(&fd).map_err(|e| CopyError::fs("read", path, e))?;
    if (stat.st_dev, stat.st_ino) != (expected.st_dev, expected.st_ino)
        || kind_of(&stat) != kind_of(expected)
    {
        return Err(CopyError::Changed(path.into()));
    }
    match kind_of(&stat) {
        SFlag::S_IFDIR => Ok(Opened::Dir(fd, stat)),
        SFlag::S_IFREG => Ok(Opened::File(File::from(fd), stat)),
        _ => Err(CopyError::Changed(path.into())),
    }
}

/// Opens the child `name` of `dir` without following it if it is a
/// symlink (a symlink is read, and sent as one).
fn open_child(dir: &OwnedFd, name: &OsStr, path: &Path) -> Result<Opened, CopyError> {
    let stat = fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW)
        .map_err(|e| CopyError::fs("read", path, e))?;
    check_kind(&stat, path)?;
    if kind_of(&stat) == SFlag::S_IFLNK {
        let target =
            readlinkat(dir, name).map_err(|e| CopyError::fs("read the symlink", path, e))?;
        return Ok(Opened::Symlink(utf8(&target, path)?, stat));
    }
    let fd =
        openat(dir, name, READ_FLAGS | OFlag::O_NOFOLLOW, Mode::empty()).map_err(|e| match e {
            // Replaced by a symlink since it was looked at.
            Errno::ELOOP => CopyError::Changed(path.into()),
            e => CopyError::fs("open", path, e),
        })?;
    opened(fd, &stat, path)
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

fn check_kind(stat: &FileStat, path: &Path) -> Result<(), CopyError> {
    let what = match kind_of(stat) {
        SFlag::S_IFIFO => "a FIFO",
        SFlag::S_IFBLK | SFlag::S_IFCHR => "a device file",
        SFlag::S_IFSOCK => "a socket",
        _ => return Ok(()),
    };
    Err(CopyError::Unsupported {
        path: path.into(),
        what,
    })
}

/// The names in the directory `dir`, sorted.
fn list(dir: &OwnedFd, path: &Path) -> Result<Vec<OsString>, CopyError> {
    let listing = dir
        .try_clone()
        .map_err(|e| CopyError::fs("list", path, e))?;
    let mut listing = Dir::from_fd(listing).map_err(|e| CopyError::fs("list", path, e))?;
    let mut names = Vec::new();
    for item in listing.iter() {
        let item = item.map_err(|e| CopyError::fs("list", path, e))?;
        let name = OsStr::from_bytes(item.file_name().to_bytes());
        if name != "." && name != ".." {
            names.push(name.to_os_string());
        }
    }
    names.sort();
    Ok(names)
}

fn emit(
    path: &Path,
    rel: String,
    opened: Opened,
    tx: &mpsc::Sender<Frame>,
    resume: &mut Option<Resumes>,
) -> Result<(), CopyError> {
    let (kind, stat, target) = match &opened {
        Opened::File(_, stat) => (EntryKind::File, stat, None),
        Opened::Dir(_, stat) => (EntryKind::Dir, stat, None),
        Opened::Symlink(target, stat) => (EntryKind::Symlink, stat, Some(target.clone())),
    };
    let size = if kind == EntryKind::File {
        u64::try_from(stat.st_size).unwrap_or(0)
    } else {
        0
    };
    let entry = Entry {
        path: rel.clone(),
        kind,
        mode: stat.st_mode & 0o7777,
        mtime: stat.st_mtime,
        mtime_nsec: u32::try_from(stat.st_mtime_nsec).unwrap_or(0),
        size,
        target,
        uid: Some(stat.st_uid),
        gid: Some(stat.st_gid),
    };
    put(tx, Frame::Control(Control::Entry(entry)))?;
    match opened {
        Opened::File(file, _) => {
            let blake3 = send_content(file, path, size, tx, resume)?;
            put(tx, Frame::Control(Control::EntryEnd { blake3 }))
        }
        Opened::Dir(dir, _) => {
            // Each child is reached from this directory's descriptor: a
            // directory replaced by a symlink meanwhile is not followed.
            for name in list(&dir, path)? {
                let child = path.join(&name);
                let child_rel = format!("{rel}/{}", utf8(&name, &child)?);
                let opened = open_child(&dir, &name, &child)?;
                emit(&child, child_rel, opened, tx, resume)?;
            }
            Ok(())
        }
        Opened::Symlink(..) => Ok(()),
    }
}

/// Sends exactly `size` bytes of `path` (from where the receiver's partial
/// file ends, when resuming) and returns the BLAKE3 of all of them.
fn send_content(
    mut file: File,
    path: &Path,
    size: u64,
    tx: &mpsc::Sender<Frame>,
    resume: &mut Option<Resumes>,
) -> Result<String, CopyError> {
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
