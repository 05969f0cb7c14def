//! Temporary files of the receiver: created beside their destination,
//! removed on drop unless renamed into place, or (resume) kept under a name
//! derived from the entry and locked while written.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{Read, Seek};
use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use guestcomm_protocol::files::Entry;
use nix::errno::Errno;
use nix::fcntl::{openat, OFlag};
use nix::sys::stat::{fstat, Mode, SFlag};
use nix::unistd::{geteuid, unlinkat, UnlinkatFlags};

use crate::CopyError;

/// Names temporary files uniquely within this process.
pub(crate) static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A temporary file in its final directory, removed on drop unless renamed
/// (or kept for a later resume).
pub(crate) struct TempFile {
    pub(crate) dir: OwnedFd,
    pub(crate) name: OsString,
    pub(crate) file: File,
    pub(crate) committed: bool,
    pub(crate) keep: bool,
}

impl TempFile {
    pub(crate) fn create(dir: OwnedFd, shown: &Path) -> Result<Self, CopyError> {
        let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = OsString::from(format!(".guestcomm-{}-{n}.tmp", std::process::id()));
        let flags =
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let fd = openat(
            &dir,
            name.as_os_str(),
            flags,
            Mode::from_bits_truncate(0o600),
        )
        .map_err(|e| CopyError::fs("create a temporary file for", shown, e))?;
        Ok(Self {
            dir,
            name,
            file: File::from(fd),
            committed: false,
            keep: false,
        })
    }

    /// Opens (or starts) the partial file of `entry` under its resume name,
    /// locked against a concurrent copy, and hashes what it holds. A file
    /// under that name that this process did not make (another owner, a
    /// hard link, not a regular file, a symlink) is removed, never resumed
    /// from: a fresh one is created with `O_EXCL`.
    pub(crate) fn resume(
        dir: OwnedFd,
        final_name: &OsStr,
        entry: &Entry,
        shown: &Path,
    ) -> Result<(Self, u64, blake3::Hasher), CopyError> {
        let name = partial_name(final_name, entry);
        let existing = OFlag::O_RDWR | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
        let kept = match openat(&dir, name.as_os_str(), existing, Mode::empty()) {
            Ok(fd) if is_own_partial(&fd) => Some(fd),
            // Not ours, or a symlink (O_NOFOLLOW): not resumed from.
            Ok(_) | Err(Errno::ELOOP) => {
                match unlinkat(&dir, name.as_os_str(), UnlinkatFlags::NoRemoveDir) {
                    Ok(()) | Err(Errno::ENOENT) => None,
                    Err(e) => {
                        return Err(CopyError::fs("remove a foreign partial file for", shown, e))
                    }
                }
            }
            Err(Errno::ENOENT) => None,
            Err(e) => return Err(CopyError::fs("open the partial file of", shown, e)),
        };
        let fd = match kept {
            Some(fd) => fd,
            None => {
                let fresh = OFlag::O_RDWR
                    | OFlag::O_CREAT
                    | OFlag::O_EXCL
                    | OFlag::O_NOFOLLOW
                    | OFlag::O_CLOEXEC;
                openat(
                    &dir,
                    name.as_os_str(),
                    fresh,
                    Mode::from_bits_truncate(0o600),
                )
                .map_err(|e| CopyError::fs("create the partial file of", shown, e))?
            }
        };
        let mut file = lock(File::from(fd), shown)?;
        let meta = file
            .metadata()
            .map_err(|e| CopyError::fs("inspect the partial file of", shown, e))?;
        let mut hasher = blake3::Hasher::new();
        let mut held = meta.len();
        if !meta.is_file() || held > entry.size {
            file.set_len(0)
                .map_err(|e| CopyError::fs("truncate the partial file of", shown, e))?;
            held = 0;
        } else {
            std::io::copy(&mut (&file).take(held), &mut hasher)
                .map_err(|e| CopyError::fs("read the partial file of", shown, e))?;
        }
        file.seek(std::io::SeekFrom::Start(held))
            .map_err(|e| CopyError::fs("read the partial file of", shown, e))?;
        let temp = Self {
            dir,
            name,
            file,
            committed: false,
            keep: true,
        };
        Ok((temp, held, hasher))
    }
}

/// Whether `fd` is a partial file this process could have made: a regular
/// file owned by its effective user, with no other name (hard link) and
/// writable by nobody else.
fn is_own_partial(fd: &OwnedFd) -> bool {
    fstat(fd).is_ok_and(|st| {
        SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFREG
            && st.st_uid == geteuid().as_raw()
            && st.st_nlink == 1
            && st.st_mode & 0o022 == 0
    })
}

/// Takes an exclusive `flock` for the life of the descriptor, so two
/// copies never write one partial file.
fn lock(file: File, shown: &Path) -> Result<File, CopyError> {
    use std::os::fd::AsRawFd;
    // SAFETY: flock on a descriptor we own; no memory is involved.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        Ok(file)
    } else {
        match Errno::last() {
            Errno::EWOULDBLOCK => Err(CopyError::Busy(shown.into())),
            e => Err(CopyError::fs("lock", shown, e)),
        }
    }
}

/// The resume name of a file: the same source (name, size, mtime) always
/// maps to the same partial file, a changed source to another.
fn partial_name(final_name: &OsStr, entry: &Entry) -> OsString {
    use std::os::unix::ffi::OsStrExt;
    let mut h = blake3::Hasher::new();
    h.update(final_name.as_bytes());
    h.update(&[0]);
    h.update(&entry.size.to_le_bytes());
    h.update(&entry.mtime.to_le_bytes());
    h.update(&entry.mtime_nsec.to_le_bytes());
    let hex = h.finalize().to_hex();
    OsString::from(format!(".guestcomm-partial-{}.tmp", &hex[..32]))
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.committed && !self.keep {
            let _ = unlinkat(&self.dir, self.name.as_os_str(), UnlinkatFlags::NoRemoveDir);
        }
    }
}
