//! Receiving a copy: the sender is untrusted.
//!
//! ```text
//! socket -> frame loop (async) -> bounded queue -> store (blocking thread)
//!                                                   |  per entry: validate the name,
//!                                                   |  open each parent with O_NOFOLLOW,
//!                                                   |  file: temp file in the parent,
//!                                                   |  size + BLAKE3 check, fsync, rename
//!                                                   v
//!                                         CopySummary | error frame
//! ```
//!
//! Every name is relative to a directory descriptor opened once for the
//! destination (which the local user chose, so it may itself be reached
//! through symlinks); below it, no component is ever followed if it is a
//! symlink, so nothing lands outside. A file exists under its final name
//! only once complete and verified: on any failure the temporary file is
//! removed and an older file of that name is untouched. With `resume`, the
//! temporary file has a name derived from the entry (name, size, mtime), is
//! kept when the connection drops, and a later copy of the same file
//! continues it after the sender has checked its BLAKE3. Directories are
//! created `0700` and get their mode and mtime at the end, deepest first.
//! With `preserve_owner` (root only), every entry also gets its source's
//! numeric owner and group.

use std::ffi::{OsStr, OsString};

use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use guestcomm_protocol::files::{CopySummary, Entry, EntryKind};
use guestcomm_protocol::handshake::describe;
use guestcomm_protocol::limits::{MAX_COPY_DIR_RECORD_BYTES, MAX_COPY_ENTRIES};
use guestcomm_protocol::split::{split, FrameWriter};
use guestcomm_protocol::{Control, Frame, FrameError, FramedConn, StreamId};
use nix::errno::Errno;
use nix::fcntl::{openat, renameat2, AtFlags, OFlag, RenameFlags};
use nix::sys::stat::{fchmod, fstatat, futimens, mkdirat, utimensat, Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;
use nix::unistd::{fchown, fchownat, symlinkat, unlinkat, Gid, Uid, UnlinkatFlags};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;

use crate::error::Stall;
use crate::hashing::Hashing;
use crate::idle::{finish, within};
use crate::path::{check_target, components};
use crate::temp::{TempFile, TEMP_COUNTER};
use crate::writeback::Writeback;
use crate::{CopyError, Progress};

/// Frames queued between the socket and the store: with 1 MiB data frames,
/// at most this many MiB in flight per copy.
const RECEIVE_QUEUE_FRAMES: usize = 8;

/// Options of the receiving side (`Msvm_CopyFileToGuestSettingData`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReceiveOptions {
    /// Replace existing files and symlinks (`OverwriteExisting`).
    pub overwrite: bool,
    /// Create missing parents of the destination (`CreateFullPath`).
    pub create_full_path: bool,
    /// Accept a directory tree.
    pub recursive: bool,
    /// Keep partial files on interruption and continue them (`ResumeFrom`).
    pub resume: bool,
    /// Give entries the numeric owner they have at the source (needs root).
    /// Set-user-ID, set-group-ID and sticky bits are never kept, owner or
    /// not: a copy must not mint privileged programs on the receiving side.
    pub preserve_owner: bool,
}

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

fn parent_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Receives one copy on `conn` (after the request) into `dst`, answers the
/// sender with `CopySummary` or an error frame, and returns the outcome.
/// Each wait on the sender is bounded by `idle`.
pub async fn receive_copy<T>(
    conn: FramedConn<T>,
    dst: &Path,
    opts: ReceiveOptions,
    idle: Duration,
    progress: &mut dyn Progress,
) -> Result<CopySummary, CopyError>
where
    T: AsyncRead + AsyncWrite + Send + 'static,
{
    let (mut reader, mut writer) = split(conn);
    let result = receive(&mut reader, &mut writer, dst, opts, idle, progress).await;
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

/// Messages from the frame loop to the store.
enum Msg {
    Entry(Entry),
    Data(Bytes),
    EntryEnd(String),
    CopyEnd,
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
    let dst = dst.to_path_buf();
    let mut store = tokio::task::spawn_blocking(move || Store::new(dst, opts, reply_tx).run(rx));
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
            other => break Err(CopyError::Protocol(describe(&other))),
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

/// The file being received.
struct Current {
    entry: Entry,
    temp: TempFile,
    final_name: OsString,
    shown: PathBuf,
    received: u64,
    hasher: Hashing,
    writeback: Writeback,
}

/// The destination, fixed by the first (root) entry.
struct Root {
    /// Directory that holds the root.
    parent: OwnedFd,
    parent_path: PathBuf,
    /// The root's name at the destination.
    name: OsString,
    /// The root's name as the sender gave it.
    sent: String,
    kind: EntryKind,
}

/// The filesystem side of a receive; runs on a blocking thread.
struct Store {
    dst: PathBuf,
    opts: ReceiveOptions,
    root: Option<Root>,
    current: Option<Current>,
    /// Directories to finish (mode, mtime), in creation order.
    dirs: Vec<(Vec<OsString>, Entry)>,
    /// Approximate heap bytes held by `dirs`, bounded by `max_dir_record_bytes`.
    dir_record_bytes: usize,
    max_dir_record_bytes: usize,
    entries: u64,
    summary: CopySummary,
    /// `ResumeFrom` answers, written by the frame loop.
    replies: mpsc::UnboundedSender<Control>,
}

fn timespec(entry: &Entry) -> TimeSpec {
    TimeSpec::new(entry.mtime, i64::from(entry.mtime_nsec.min(999_999_999)))
}

/// The owner to give `entry`: its source owner with `preserve_owner`, else
/// none (the receiver's own, as created).
fn owner_of(entry: &Entry, opts: ReceiveOptions) -> (Option<Uid>, Option<Gid>) {
    if !opts.preserve_owner {
        return (None, None);
    }
    (entry.uid.map(Uid::from_raw), entry.gid.map(Gid::from_raw))
}

fn mode_of(entry: &Entry) -> Mode {
    // Permission bits only: no setuid, setgid or sticky from a peer.
    Mode::from_bits_truncate(entry.mode & 0o777)
}

impl Store {
    fn new(dst: PathBuf, opts: ReceiveOptions, replies: mpsc::UnboundedSender<Control>) -> Self {
        Self {
            replies,
            dst,
            opts,
            root: None,
            current: None,
            dirs: Vec::new(),
            dir_record_bytes: 0,
            max_dir_record_bytes: MAX_COPY_DIR_RECORD_BYTES,
            entries: 0,
            summary: CopySummary::default(),
        }
    }

    fn run(mut self, mut rx: mpsc::Receiver<Msg>) -> Result<CopySummary, CopyError> {
        while let Some(msg) = rx.blocking_recv() {
            match msg {
                Msg::Entry(entry) => self.entry(entry)?,
                Msg::Data(body) => self.data(body)?,
                Msg::EntryEnd(hash) => self.entry_end(&hash)?,
                Msg::CopyEnd => return self.finish(),
            }
        }
        Err(CopyError::Interrupted)
    }

    fn entry(&mut self, entry: Entry) -> Result<(), CopyError> {
        if self.current.is_some() {
            return Err(CopyError::Protocol(
                "entry before the previous file's entry_end".into(),
            ));
        }
        self.entries += 1;
        if self.entries > MAX_COPY_ENTRIES {
            return Err(CopyError::TooManyEntries(MAX_COPY_ENTRIES));
        }
        let parts = components(&entry.path)?;
        let bad = |reason: &str| CopyError::BadEntry {
            path: entry.path.clone(),
            reason: reason.into(),
        };
        let names: Vec<OsString> = match &self.root {
            None => {
                if parts.len() != 1 {
                    return Err(bad(
                        "the first entry must be the copy's root, a single name",
                    ));
                }
                if entry.kind == EntryKind::Dir && !self.opts.recursive {
                    return Err(CopyError::IsADirectory(PathBuf::from(&entry.path)));
                }
                let root = self.open_root(&entry)?;
                let name = root.name.clone();
                self.root = Some(root);
                vec![name]
            }
            Some(root) => {
                if root.kind != EntryKind::Dir || parts[0] != root.sent || parts.len() < 2 {
                    return Err(bad("not inside the copy's root directory"));
                }
                std::iter::once(root.name.clone())
                    .chain(parts[1..].iter().map(OsString::from))
                    .collect()
            }
        };
        let root = self.root()?;
        let shown = names
            .iter()
            .fold(root.parent_path.clone(), |p, n| p.join(n));
        let Some((last, parents)) = names.split_last() else {
            return Err(bad("an empty path"));
        };
        let dir = open_beneath(root.parent.as_fd(), parents)
            .map_err(|e| beneath_error(e, &entry.path, &shown))?;
        let existing = match fstatat(&dir, last.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => Some(SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT),
            Err(Errno::ENOENT) => None,
            Err(e) => return Err(CopyError::fs("inspect", &shown, e)),
        };
        let is_dir = existing == Some(SFlag::S_IFDIR);
        match entry.kind {
            EntryKind::Dir => {
                match existing {
                    None => mkdirat(&dir, last.as_os_str(), Mode::from_bits_truncate(0o700))
                        .map_err(|e| CopyError::fs("create directory", &shown, e))?,
                    Some(_) if is_dir => {}
                    Some(_) => {
                        return Err(CopyError::WrongKind {
                            path: shown,
                            what: "not a directory",
                        })
                    }
                }
                self.summary.dirs += 1;
                self.remember_dir(names.clone(), entry)?;
            }
            EntryKind::File | EntryKind::Symlink => {
                if is_dir {
                    return Err(CopyError::WrongKind {
                        path: shown,
                        what: "a directory",
                    });
                }
                if existing.is_some() && !self.opts.overwrite {
                    return Err(CopyError::Exists(shown));
                }
                if entry.kind == EntryKind::Symlink {
                    check_target(&entry.path, entry.target.as_deref())?;
                    self.symlink(dir, last, &entry, &shown)?;
                } else {
                    let (temp, received, hasher) = if self.opts.resume {
                        let (temp, held, hasher) = TempFile::resume(dir, last, &entry, &shown)?;
                        let reply = Control::ResumeFrom {
                            offset: held,
                            blake3: hasher.clone().finalize().to_hex().to_string(),
                        };
                        self.replies
                            .send(reply)
                            .map_err(|_| CopyError::Interrupted)?;
                        self.summary.resumed_bytes += held;
                        (temp, held, hasher)
                    } else {
                        (TempFile::create(dir, &shown)?, 0, blake3::Hasher::new())
                    };
                    let hasher = Hashing::start(hasher, entry.size - received);
                    self.current = Some(Current {
                        entry,
                        temp,
                        final_name: last.clone(),
                        shown,
                        received,
                        hasher,
                        writeback: Writeback::from(received),
                    });
                }
            }
        }
        Ok(())
    }

    /// Keeps a directory to finish at the end, within the bookkeeping limit.
    fn remember_dir(&mut self, names: Vec<OsString>, entry: Entry) -> Result<(), CopyError> {
        let names_bytes: usize = names
            .iter()
            .map(|n| n.len() + std::mem::size_of::<OsString>())
            .sum();
        let bytes = names_bytes + entry.path.len() + std::mem::size_of::<(Vec<OsString>, Entry)>();
        self.dir_record_bytes = self.dir_record_bytes.saturating_add(bytes);
        if self.dir_record_bytes > self.max_dir_record_bytes {
            return Err(CopyError::TooManyDirectories(self.max_dir_record_bytes));
        }
        self.dirs.push((names, entry));
        Ok(())
    }

    fn root(&self) -> Result<&Root, CopyError> {
        self.root
            .as_ref()
            .ok_or_else(|| CopyError::Protocol("an entry before the copy's root".into()))
    }

    /// Decides where the root lands, as `cp` and `CopyFilesToGuest` do: into
    /// an existing directory under its own name, else under `dst`'s name.
    fn open_root(&self, entry: &Entry) -> Result<Root, CopyError> {
        let (parent_path, name) = if self.dst.is_dir() {
            (self.dst.clone(), OsString::from(&entry.path))
        } else {
            let name = self
                .dst
                .file_name()
                .filter(|n| *n != OsStr::new(".."))
                .ok_or_else(|| CopyError::BadEntry {
                    path: self.dst.display().to_string(),
                    reason: "the destination has no file name".into(),
                })?;
            (parent_of(&self.dst), name.to_os_string())
        };
        if !parent_path.is_dir() {
            if !self.opts.create_full_path {
                return Err(CopyError::MissingParent(parent_path));
            }
            std::fs::create_dir_all(&parent_path)
                .map_err(|e| CopyError::fs("create directory", &parent_path, e))?;
        }
        // The destination itself is the local user's choice: follow links here.
        let parent = openat(
            nix::fcntl::AT_FDCWD,
            &parent_path,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| CopyError::fs("open directory", &parent_path, e))?;
        Ok(Root {
            parent,
            parent_path,
            name,
            sent: entry.path.clone(),
            kind: entry.kind,
        })
    }

    fn symlink(
        &mut self,
        dir: OwnedFd,
        last: &OsStr,
        entry: &Entry,
        shown: &Path,
    ) -> Result<(), CopyError> {
        let target = entry.target.as_deref().unwrap_or_default();
        let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let temp = OsString::from(format!(".guestcomm-{}-{n}.tmp", std::process::id()));
        symlinkat(target, &dir, temp.as_os_str())
            .map_err(|e| CopyError::fs("create symlink", shown, e))?;
        let (uid, gid) = owner_of(entry, self.opts);
        let placed = fchownat(
            &dir,
            temp.as_os_str(),
            uid,
            gid,
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(|e| CopyError::fs("set the owner of", shown, e))
        .and_then(|()| {
            utimensat(
                &dir,
                temp.as_os_str(),
                &TimeSpec::UTIME_OMIT,
                &timespec(entry),
                UtimensatFlags::NoFollowSymlink,
            )
            .map_err(|e| CopyError::fs("set the time of", shown, e))
        })
        .and_then(|()| self.rename(&dir, &temp, last, shown));
        if placed.is_err() {
            let _ = unlinkat(&dir, temp.as_os_str(), UnlinkatFlags::NoRemoveDir);
        }
        placed?;
        self.summary.symlinks += 1;
        Ok(())
    }

    /// Renames into place; without overwrite, atomically refuses an existing name.
    fn rename(
        &self,
        dir: &OwnedFd,
        from: &OsStr,
        to: &OsStr,
        shown: &Path,
    ) -> Result<(), CopyError> {
        let flags = if self.opts.overwrite {
            RenameFlags::empty()
        } else {
            RenameFlags::RENAME_NOREPLACE
        };
        renameat2(dir, from, dir, to, flags).map_err(|e| match e {
            Errno::EEXIST => CopyError::Exists(shown.to_path_buf()),
            e => CopyError::fs("rename into place", shown, e),
        })
    }

    fn data(&mut self, body: Bytes) -> Result<(), CopyError> {
        let Some(cur) = self.current.as_mut() else {
            return Err(CopyError::Protocol("file data outside a file entry".into()));
        };
        let received = cur.received + body.len() as u64;
        if received > cur.entry.size {
            // Bad data is not worth resuming.
            cur.temp.keep = false;
            return Err(CopyError::Size {
                path: cur.entry.path.clone(),
                declared: cur.entry.size,
                received,
            });
        }
        cur.temp
            .file
            .write_all(&body)
            .map_err(|e| CopyError::fs("write", &cur.shown, e))?;
        cur.hasher.update(body);
        cur.received = received;
        cur.writeback.advance(&cur.temp.file, received);
        Ok(())
    }

    fn entry_end(&mut self, expected: &str) -> Result<(), CopyError> {
        let Some(mut cur) = self.current.take() else {
            return Err(CopyError::Protocol("entry_end outside a file entry".into()));
        };
        // Whatever happens now, this partial file is not worth resuming.
        cur.temp.keep = false;
        if cur.received != cur.entry.size {
            return Err(CopyError::Size {
                path: cur.entry.path.clone(),
                declared: cur.entry.size,
                received: cur.received,
            });
        }
        let actual = cur.hasher.finish()?;
        if !actual.eq_ignore_ascii_case(expected) {
            return Err(CopyError::Checksum {
                path: cur.entry.path.clone(),
                expected: expected.into(),
                actual,
            });
        }
        let file = &cur.temp.file;
        // Owner before mode: chown clears set-id bits.
        let (uid, gid) = owner_of(&cur.entry, self.opts);
        fchown(file, uid, gid).map_err(|e| CopyError::fs("set the owner of", &cur.shown, e))?;
        fchmod(file, mode_of(&cur.entry))
            .and_then(|()| futimens(file, &TimeSpec::UTIME_OMIT, &timespec(&cur.entry)))
            .map_err(|e| CopyError::fs("set the mode and time of", &cur.shown, e))?;
        file.sync_all()
            .map_err(|e| CopyError::fs("sync", &cur.shown, e))?;
        self.rename(&cur.temp.dir, &cur.temp.name, &cur.final_name, &cur.shown)?;
        cur.temp.committed = true;
        self.summary.files += 1;
        self.summary.bytes += cur.received;
        if self.root()?.kind == EntryKind::File {
            self.summary.blake3 = Some(actual);
        }
        Ok(())
    }

    fn finish(mut self) -> Result<CopySummary, CopyError> {
        if self.current.is_some() {
            return Err(CopyError::Protocol(
                "copy_end before the file's entry_end".into(),
            ));
        }
        let Some(root) = self.root.take() else {
            return Err(CopyError::Protocol("copy_end without any entry".into()));
        };
        // Deepest first, so setting a directory's time is not undone by its
        // children, and a read-only mode does not block them.
        for (names, entry) in self.dirs.iter().rev() {
            let shown = names
                .iter()
                .fold(root.parent_path.clone(), |p, n| p.join(n));
            let dir = open_beneath(root.parent.as_fd(), names)
                .map_err(|e| beneath_error(e, &entry.path, &shown))?;
            let (uid, gid) = owner_of(entry, self.opts);
            fchown(&dir, uid, gid)
                .and_then(|()| fchmod(&dir, mode_of(entry)))
                .and_then(|()| futimens(&dir, &TimeSpec::UTIME_OMIT, &timespec(entry)))
                .map_err(|e| CopyError::fs("set the owner, mode and time of", &shown, e))?;
        }
        Ok(self.summary)
    }
}

/// Opens the directory `names` below `base`, refusing to follow any symlink.
fn open_beneath(base: BorrowedFd<'_>, names: &[OsString]) -> Result<OwnedFd, Errno> {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let mut dir = openat(base, ".", flags, Mode::empty())?;
    for name in names {
        dir = openat(&dir, name.as_os_str(), flags, Mode::empty())?;
    }
    Ok(dir)
}

fn beneath_error(e: Errno, sent: &str, shown: &Path) -> CopyError {
    match e {
        Errno::ELOOP | Errno::ENOTDIR => CopyError::ThroughSymlink { path: sent.into() },
        e => CopyError::fs("open the directory of", shown, e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(path: &str) -> Entry {
        Entry {
            path: path.into(),
            kind: EntryKind::Dir,
            mode: 0o755,
            mtime: 0,
            mtime_nsec: 0,
            size: 0,
            target: None,
            uid: None,
            gid: None,
        }
    }

    #[test]
    fn directory_bookkeeping_is_bounded_against_a_hostile_tree() {
        let dst = tempfile::tempdir().unwrap();
        let (replies, _) = mpsc::unbounded_channel();
        let opts = ReceiveOptions {
            recursive: true,
            ..Default::default()
        };
        let mut store = Store::new(dst.path().join("tree"), opts, replies);
        store.max_dir_record_bytes = 4096;
        store.entry(dir("tree")).unwrap();
        let long = "d".repeat(200);
        let mut refused = None;
        for i in 0..100 {
            if let Err(e) = store.entry(dir(&format!("tree/{long}{i}"))) {
                refused = Some((i, e));
                break;
            }
        }
        let (i, err) = refused.expect("the limit never triggered");
        assert!(
            i > 0 && matches!(err, CopyError::TooManyDirectories(4096)),
            "{i}: {err}"
        );
        assert!(store.dir_record_bytes > 4096 && store.dirs.len() == i + 1);
    }
}
