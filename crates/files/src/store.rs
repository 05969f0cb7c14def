//! The filesystem side of a receive, on a blocking thread: each entry's
//! name validated and its parents opened with `O_NOFOLLOW` below the
//! destination, files through a temporary file (size and BLAKE3 checked,
//! fsynced, renamed into place), directories finished at the end. Module
//! `receive` feeds it and answers the sender.

use std::ffi::{OsStr, OsString};
use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use bytes::Bytes;
use guestcomm_protocol::files::{CopySummary, Entry, EntryKind};
use guestcomm_protocol::limits::{MAX_COPY_DIR_RECORD_BYTES, MAX_COPY_ENTRIES};
use guestcomm_protocol::Control;
use nix::errno::Errno;
use nix::fcntl::{openat, renameat2, AtFlags, OFlag, RenameFlags};
use nix::sys::stat::{fchmod, fstatat, futimens, mkdirat, utimensat, Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;
use nix::unistd::{fchown, fchownat, symlinkat, unlinkat, Gid, Uid, UnlinkatFlags};
use tokio::sync::mpsc;

use crate::beneath::Confine;
use crate::hashing::Hashing;
use crate::path::{check_target, components, parent_of};
use crate::temp::{TempFile, TEMP_COUNTER};
use crate::writeback::Writeback;
use crate::CopyError;

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
    /// Most bytes of file content the copy may put on this side's disk
    /// (declared sizes, resumed bytes included); a file that would pass it
    /// is refused before any of its bytes are written. `None`: no bound
    /// but the disk's.
    pub max_bytes: Option<u64>,
}

/// Messages from the frame loop to the store.
pub(crate) enum Msg {
    /// An entry starts.
    Entry(Entry),
    /// File content.
    Data(Bytes),
    /// The file ends, with the sender's BLAKE3.
    EntryEnd(String),
    /// The copy ends.
    CopyEnd,
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
pub(crate) struct Store {
    dst: PathBuf,
    /// Where the destination must stay, checked when the root arrives.
    confine: Confine,
    /// This process's umask, taken from every mode a sender asks for.
    umask: u32,
    opts: ReceiveOptions,
    root: Option<Root>,
    current: Option<Current>,
    /// The directories along the last entry's path, kept open.
    held: HeldDirs,
    /// Directories to finish (mode, mtime), in creation order: their
    /// entries as sent (the path names the directory).
    dirs: Vec<Entry>,
    /// Heap bytes of the paths in `dirs`, each with its allocation's
    /// overhead ([`ALLOCATION_OVERHEAD_BYTES`]).
    dir_path_bytes: usize,
    /// Bound of what `dirs` holds, its own array included.
    max_dir_record_bytes: usize,
    entries: u64,
    /// Most entries accepted ([`MAX_COPY_ENTRIES`]).
    max_entries: u64,
    /// Declared bytes of the files accepted so far ([`ReceiveOptions::max_bytes`]).
    admitted_bytes: u64,
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

/// The mode to give `entry`: its permission bits (never setuid, setgid or
/// sticky from a peer), less the receiving process's `umask` unless owners
/// are preserved (then, as `cp -p`, the bits are kept as sent).
fn mode_of(entry: &Entry, opts: ReceiveOptions, umask: u32) -> Mode {
    let mask = if opts.preserve_owner { 0 } else { umask };
    Mode::from_bits_truncate(entry.mode & 0o777 & !mask)
}

/// The umask of this process, read from `/proc/self/status` (setting it to
/// read it back would race with other threads creating files); the usual
/// `022` when that cannot be read.
fn process_umask() -> u32 {
    const USUAL: u32 = 0o022;
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("Umask:"))
                .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
        })
        .unwrap_or(USUAL)
        & 0o777
}

impl Store {
    pub(crate) fn new(
        dst: PathBuf,
        confine: Confine,
        opts: ReceiveOptions,
        replies: mpsc::UnboundedSender<Control>,
    ) -> Self {
        Self {
            replies,
            dst,
            confine,
            umask: process_umask(),
            opts,
            root: None,
            current: None,
            held: HeldDirs::default(),
            dirs: Vec::new(),
            dir_path_bytes: 0,
            max_dir_record_bytes: MAX_COPY_DIR_RECORD_BYTES,
            entries: 0,
            max_entries: MAX_COPY_ENTRIES,
            admitted_bytes: 0,
            summary: CopySummary::default(),
        }
    }

    /// Stores what `rx` brings until `CopyEnd`; the first failure ends it.
    pub(crate) fn run(mut self, mut rx: mpsc::Receiver<Msg>) -> Result<CopySummary, CopyError> {
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
        if self.entries > self.max_entries {
            return Err(CopyError::TooManyEntries(self.max_entries));
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
        let Some(root) = self.root.as_ref() else {
            return Err(CopyError::Protocol(
                "an entry before the copy's root".into(),
            ));
        };
        let shown = names
            .iter()
            .fold(root.parent_path.clone(), |p, n| p.join(n));
        let Some((last, parents)) = names.split_last() else {
            return Err(bad("an empty path"));
        };
        let dir = self
            .held
            .open(root.parent.as_fd(), parents)
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
                self.remember_dir(entry)?;
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
                if entry.kind == EntryKind::File {
                    self.admit_bytes(entry.size, &shown)?;
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

    /// Counts a file's declared size against the copy's byte limit.
    fn admit_bytes(&mut self, size: u64, shown: &Path) -> Result<(), CopyError> {
        let needed = self.admitted_bytes.saturating_add(size);
        match self.opts.max_bytes {
            Some(max) if needed > max => Err(CopyError::OverLimit {
                path: shown.to_path_buf(),
                needed,
                max,
            }),
            _ => {
                self.admitted_bytes = needed;
                Ok(())
            }
        }
    }

    /// Keeps a directory to finish at the end, within the bookkeeping limit.
    fn remember_dir(&mut self, mut entry: Entry) -> Result<(), CopyError> {
        entry.path.shrink_to_fit();
        entry.target = None;
        let path_bytes = entry.path.capacity() + ALLOCATION_OVERHEAD_BYTES;
        self.dir_path_bytes = self.dir_path_bytes.saturating_add(path_bytes);
        self.dirs.push(entry);
        if self.dir_record_bytes() > self.max_dir_record_bytes {
            self.dirs.pop();
            self.dir_path_bytes -= path_bytes;
            return Err(CopyError::TooManyDirectories(self.max_dir_record_bytes));
        }
        Ok(())
    }

    /// What the directory bookkeeping holds: the array as allocated, and
    /// each path with its allocation's overhead.
    fn dir_record_bytes(&self) -> usize {
        self.dirs
            .capacity()
            .saturating_mul(std::mem::size_of::<Entry>())
            .saturating_add(self.dir_path_bytes)
    }

    fn root(&self) -> Result<&Root, CopyError> {
        self.root
            .as_ref()
            .ok_or_else(|| CopyError::Protocol("an entry before the copy's root".into()))
    }

    /// Decides where the root lands, as `cp` and `CopyFilesToGuest` do: into
    /// an existing directory under its own name, else under `dst`'s name.
    /// The destination is opened now, when the root arrives (beneath the
    /// allowed directories when a policy confines the copy); below it,
    /// nothing is followed.
    fn open_root(&self, entry: &Entry) -> Result<Root, CopyError> {
        let dir_flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY;
        let root = |parent, parent_path, name| Root {
            parent,
            parent_path,
            name,
            sent: entry.path.clone(),
            kind: entry.kind,
        };
        match self.confine.open(&self.dst, dir_flags) {
            Ok(parent) => return Ok(root(parent, self.dst.clone(), OsString::from(&entry.path))),
            Err(Errno::ENOENT | Errno::ENOTDIR) => {}
            Err(e) => return Err(self.confine.error(e, "open directory", &self.dst)),
        }
        let name = self
            .dst
            .file_name()
            .filter(|n| *n != OsStr::new(".."))
            .ok_or_else(|| CopyError::BadEntry {
                path: self.dst.display().to_string(),
                reason: "the destination has no file name".into(),
            })?;
        let parent_path = parent_of(&self.dst);
        let parent = match self.confine.open(&parent_path, dir_flags) {
            Ok(parent) => parent,
            Err(Errno::ENOENT) if self.opts.create_full_path => {
                self.confine.create_dirs(&parent_path)?;
                self.confine
                    .open(&parent_path, dir_flags)
                    .map_err(|e| self.confine.error(e, "open directory", &parent_path))?
            }
            Err(Errno::ENOENT | Errno::ENOTDIR) => {
                return Err(CopyError::MissingParent(parent_path))
            }
            Err(e) => return Err(self.confine.error(e, "open directory", &parent_path)),
        };
        Ok(root(parent, parent_path, name.to_os_string()))
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
        fchmod(file, mode_of(&cur.entry, self.opts, self.umask))
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
        self.held = HeldDirs::default();
        for entry in self.dirs.iter().rev() {
            // As stored by `entry`: the root under its name at the destination.
            let names: Vec<OsString> = std::iter::once(root.name.clone())
                .chain(
                    components(&entry.path)?
                        .into_iter()
                        .skip(1)
                        .map(OsString::from),
                )
                .collect();
            let shown = names
                .iter()
                .fold(root.parent_path.clone(), |p, n| p.join(n));
            let dir = self
                .held
                .open(root.parent.as_fd(), &names)
                .map_err(|e| beneath_error(e, &entry.path, &shown))?;
            let (uid, gid) = owner_of(entry, self.opts);
            fchown(&dir, uid, gid)
                .and_then(|()| fchmod(&dir, mode_of(entry, self.opts, self.umask)))
                .and_then(|()| futimens(&dir, &TimeSpec::UTIME_OMIT, &timespec(entry)))
                .map_err(|e| CopyError::fs("set the owner, mode and time of", &shown, e))?;
        }
        Ok(self.summary)
    }
}

/// Heap bookkeeping of one allocation beyond its bytes (glibc's malloc
/// header and rounding), counted with every path kept.
const ALLOCATION_OVERHEAD_BYTES: usize = 16;

/// Most directories kept open between entries: the deepest ones of the
/// last entry's path, so a walk deeper than this still opens only what is
/// new to it, and the descriptors stay bounded.
const MAX_HELD_DIRS: usize = 64;

const DIR_FLAGS: OFlag = OFlag::O_RDONLY
    .union(OFlag::O_DIRECTORY)
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_CLOEXEC);

/// The directories along the last entry's path below the root's parent,
/// opened once (never following a symlink) and kept while the sender's
/// depth-first walk stays beneath them: an entry opens only the components
/// its path does not share with the previous one, instead of its whole
/// path (a tree 1,000 deep cost 1,000 opens per entry). The deepest
/// [`MAX_HELD_DIRS`] are kept; climbing above them walks down again once.
#[derive(Default)]
struct HeldDirs {
    /// The last entry's directory path, every component.
    path: Vec<OsString>,
    /// The deepest of them, opened: `fds[i]` is component
    /// `path.len() - fds.len() + i`.
    fds: std::collections::VecDeque<OwnedFd>,
}

impl HeldDirs {
    /// The directory `names` below `base`, its own descriptor.
    fn open(&mut self, base: BorrowedFd<'_>, names: &[OsString]) -> Result<OwnedFd, Errno> {
        let shared = self
            .path
            .iter()
            .zip(names)
            .take_while(|(held, name)| held == name)
            .count();
        let left = self.path.len() - shared;
        self.path.truncate(shared);
        for _ in 0..left.min(self.fds.len()) {
            self.fds.pop_back();
        }
        if self.fds.is_empty() {
            // Above what is held (or nothing yet): from the base again.
            self.path.clear();
        }
        for name in &names[self.path.len()..] {
            let parent = self.fds.back().map_or(base, |fd| fd.as_fd());
            let dir = openat(parent, name.as_os_str(), DIR_FLAGS, Mode::empty())?;
            self.path.push(name.clone());
            self.fds.push_back(dir);
            if self.fds.len() > MAX_HELD_DIRS {
                self.fds.pop_front();
            }
        }
        let deepest = self.fds.back().map_or(base, |fd| fd.as_fd());
        openat(deepest, ".", DIR_FLAGS, Mode::empty())
    }
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
    fn held_directories_follow_a_walk_deeper_than_they_keep() {
        use std::os::unix::fs::MetadataExt;
        let top = tempfile::tempdir().unwrap();
        let base = openat(nix::fcntl::AT_FDCWD, top.path(), DIR_FLAGS, Mode::empty()).unwrap();
        let deep: Vec<OsString> = (0..3 * MAX_HELD_DIRS)
            .map(|i| OsString::from(format!("d{i}")))
            .collect();
        let on_disk = |names: &[OsString]| {
            names
                .iter()
                .fold(top.path().to_path_buf(), |p, n| p.join(n))
        };
        std::fs::create_dir_all(on_disk(&deep)).unwrap();
        let mut side = deep[..MAX_HELD_DIRS / 2].to_vec();
        side.push("side".into());
        std::fs::create_dir(on_disk(&side)).unwrap();
        let same = |fd: &OwnedFd, names: &[OsString]| {
            nix::sys::stat::fstat(fd).unwrap().st_ino
                == std::fs::metadata(on_disk(names)).unwrap().ino()
        };

        let mut held = HeldDirs::default();
        for walk in [
            &deep[..],
            &deep[..deep.len() - 1],
            &side[..],
            &deep[..],
            &[][..],
        ] {
            let dir = held.open(base.as_fd(), walk).unwrap();
            assert!(same(&dir, walk), "{} deep", walk.len());
            assert!(held.fds.len() <= MAX_HELD_DIRS);
        }
        // A link on the way is never followed, held or not.
        std::os::unix::fs::symlink(on_disk(&deep), on_disk(&side).join("link")).unwrap();
        let mut through = side.clone();
        through.push("link".into());
        let refused = held.open(base.as_fd(), &through).unwrap_err();
        assert!(
            matches!(refused, Errno::ELOOP | Errno::ENOTDIR),
            "{refused}"
        );
    }

    /// A store receiving a tree into `dst/tree`, unconfined.
    fn tree_store(dst: &Path) -> Store {
        let (replies, _) = mpsc::unbounded_channel();
        let opts = ReceiveOptions {
            recursive: true,
            ..Default::default()
        };
        Store::new(dst.join("tree"), Confine::none(), opts, replies)
    }

    #[test]
    fn a_copy_of_more_entries_than_allowed_is_refused_at_the_first_one_over() {
        let dst = tempfile::tempdir().unwrap();
        let mut store = tree_store(dst.path());
        store.max_entries = 3;
        for path in ["tree", "tree/a", "tree/b"] {
            store.entry(dir(path)).unwrap();
        }
        let refused = store.entry(dir("tree/c")).unwrap_err();
        assert!(matches!(refused, CopyError::TooManyEntries(3)), "{refused}");
        assert!(!dst.path().join("tree/c").exists());
    }

    #[test]
    fn directory_bookkeeping_is_bounded_against_a_hostile_tree() {
        let dst = tempfile::tempdir().unwrap();
        let mut store = tree_store(dst.path());
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
        assert!(store.dir_record_bytes() <= 4096 && store.dirs.len() == i + 1);
    }
}
