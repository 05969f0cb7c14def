//! Opening a copy's path beneath the directories a policy allows, at the
//! moment of use.
//!
//! A policy names allowed prefixes (the host's, relayed in the request, and
//! the guest's own). Checking a path as written, or resolved once when the
//! request arrives, leaves a window: a symbolic link planted later on the
//! way (or one the copy itself created) leads out. So every open of a
//! copy's source or destination goes through [`Confine`]: the outermost
//! allowed directory is opened, each inner one beneath it, then the rest of
//! the path beneath the innermost, each with `openat2(RESOLVE_BENEATH |
//! RESOLVE_NO_MAGICLINKS)`: symbolic links are followed only while they
//! stay beneath. What lies below the opened directory is then reached by
//! name from its descriptor, never by a path checked earlier.

use std::ffi::OsStr;
use std::os::fd::OwnedFd;
use std::path::{Component, Path, PathBuf};

use guestcomm_policy::covering_prefix;
use nix::errno::Errno;
use nix::fcntl::{openat, openat2, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{mkdirat, Mode};

use crate::CopyError;

/// The directories a copy's path must stay beneath: nested, outermost
/// first; none when no policy restricts the copy.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Confine {
    roots: Vec<PathBuf>,
}

impl Confine {
    /// No restriction: paths are opened as the local user wrote them.
    pub fn none() -> Self {
        Self::default()
    }

    /// The confinement of `path`, which must be beneath one prefix of each
    /// of `lists` (each list one policy's allowed prefixes for the copy's
    /// direction). Of each list the shortest prefix that covers `path`
    /// applies; as all cover `path`, they nest.
    pub fn new(path: &str, lists: &[&[String]]) -> Result<Self, CopyError> {
        let mut roots = Vec::with_capacity(lists.len());
        for prefixes in lists {
            let prefix = covering_prefix(prefixes, path).ok_or_else(|| CopyError::NotAllowed {
                path: path.into(),
                allowed: if prefixes.is_empty() {
                    "none".into()
                } else {
                    prefixes.join(", ")
                },
            })?;
            roots.push(PathBuf::from(prefix));
        }
        roots.sort_by_key(|r| r.components().count());
        roots.dedup();
        Ok(Self { roots })
    }

    /// Whether a policy restricts the copy.
    pub fn is_confined(&self) -> bool {
        !self.roots.is_empty()
    }

    /// Opens `path` with `flags`: unconfined, as written (following
    /// links); confined, beneath every root (see the module doc).
    pub(crate) fn open(&self, path: &Path, flags: OFlag) -> Result<OwnedFd, Errno> {
        let flags = flags | OFlag::O_CLOEXEC;
        let Some((inner, dir)) = self.innermost()? else {
            return openat(nix::fcntl::AT_FDCWD, path, flags, Mode::empty());
        };
        let rest = path.strip_prefix(inner).map_err(|_| Errno::EXDEV)?;
        beneath(&dir, rest, flags)
    }

    /// Creates the missing directories of `path` (as `mkdir -p`): unconfined
    /// as written; confined, one component at a time, each opened beneath
    /// the one before, so that nothing is created outside.
    pub(crate) fn create_dirs(&self, path: &Path) -> Result<(), CopyError> {
        let Some(outer) = self.roots.first() else {
            return std::fs::create_dir_all(path)
                .map_err(|e| CopyError::fs("create directory", path, e));
        };
        // The allowed directory itself is the policy's choice.
        std::fs::create_dir_all(outer).map_err(|e| CopyError::fs("create directory", outer, e))?;
        let rest = path.strip_prefix(outer).map_err(|_| self.escapes(path))?;
        let dir_flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
        let mut dir = openat(nix::fcntl::AT_FDCWD, outer, dir_flags, Mode::empty())
            .map_err(|e| CopyError::fs("open directory", outer, e))?;
        for part in rest.components() {
            let Component::Normal(name) = part else {
                return Err(self.escapes(path));
            };
            match mkdirat(&dir, name, Mode::from_bits_truncate(0o777)) {
                Ok(()) | Err(Errno::EEXIST) => {}
                Err(e) => return Err(CopyError::fs("create directory", path, e)),
            }
            dir = beneath(&dir, Path::new(name), dir_flags)
                .map_err(|e| self.error(e, "open directory", path))?;
        }
        Ok(())
    }

    /// The innermost root and a descriptor of it, each root opened beneath
    /// the one before; `None` unconfined.
    fn innermost(&self) -> Result<Option<(&Path, OwnedFd)>, Errno> {
        let Some((outer, inner)) = self.roots.split_first() else {
            return Ok(None);
        };
        let dir_flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
        // The outermost allowed directory is the policy's choice: followed.
        let mut dir = openat(
            nix::fcntl::AT_FDCWD,
            outer.as_path(),
            dir_flags,
            Mode::empty(),
        )?;
        let mut at = outer.as_path();
        for root in inner {
            let rest = root.strip_prefix(at).map_err(|_| Errno::EXDEV)?;
            dir = beneath(&dir, rest, dir_flags)?;
            at = root;
        }
        Ok(Some((at, dir)))
    }

    /// The copy error for `e`, raised while doing `op` on `path`: leaving
    /// the allowed directory is a policy refusal, anything else a file
    /// system error.
    pub(crate) fn error(&self, e: Errno, op: &'static str, path: &Path) -> CopyError {
        match e {
            Errno::EXDEV | Errno::ELOOP if self.is_confined() => self.escapes(path),
            Errno::ENOSYS if self.is_confined() => CopyError::fs(
                "open (the kernel lacks openat2, needed to confine copy paths: Linux 5.6 or later)",
                path,
                e,
            ),
            e => CopyError::fs(op, path, e),
        }
    }

    fn escapes(&self, path: &Path) -> CopyError {
        CopyError::Escapes {
            path: path.into(),
            root: self
                .roots
                .last()
                .map_or_else(String::new, |r| r.display().to_string()),
        }
    }
}

/// Opens `rest` (relative; empty for `dir` itself) beneath `dir`.
fn beneath(dir: &OwnedFd, rest: &Path, flags: OFlag) -> Result<OwnedFd, Errno> {
    let rest = if rest.as_os_str().is_empty() {
        OsStr::new(".")
    } else {
        rest.as_os_str()
    };
    let how = OpenHow::new()
        .flags(flags | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    openat2(dir, rest, how)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn list(paths: &[&Path]) -> Vec<String> {
        paths.iter().map(|p| p.display().to_string()).collect()
    }

    #[test]
    fn links_are_followed_only_while_they_stay_beneath() {
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path().canonicalize().unwrap();
        let allowed = base.join("in");
        let outside = base.join("etc");
        std::fs::create_dir_all(allowed.join("sub")).unwrap();
        std::fs::create_dir(&outside).unwrap();
        symlink("../etc", allowed.join("esc")).unwrap();
        symlink("sub", allowed.join("inside")).unwrap();
        let confine = Confine::new(
            allowed.join("esc/x").to_str().unwrap(),
            &[&list(&[&allowed])],
        )
        .unwrap();
        let dir = OFlag::O_RDONLY | OFlag::O_DIRECTORY;
        assert_eq!(
            confine.open(&allowed.join("esc"), dir).unwrap_err(),
            Errno::EXDEV
        );
        assert!(confine.open(&allowed.join("inside"), dir).is_ok());
        assert!(confine.open(&allowed, dir).is_ok());
        assert_eq!(confine.open(&base, dir).unwrap_err(), Errno::EXDEV);
        assert!(Confine::none().open(&allowed.join("esc"), dir).is_ok());
    }

    #[test]
    fn two_policies_nest_and_both_must_cover_the_path() {
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path().canonicalize().unwrap();
        let inner = base.join("in/deeper");
        std::fs::create_dir_all(&inner).unwrap();
        // An absolute link is refused even where it points inside.
        symlink(base.join("in"), base.join("in/loop")).unwrap();
        let host = list(&[&base.join("in")]);
        let guest = list(&[&inner, &base.join("in/loop")]);
        let path = inner.join("f");
        let confine = Confine::new(path.to_str().unwrap(), &[&host, &guest]).unwrap();
        let dir = OFlag::O_RDONLY | OFlag::O_DIRECTORY;
        assert!(confine.open(&inner, dir).is_ok());
        let looped = base.join("in/loop/x");
        let confine = Confine::new(looped.to_str().unwrap(), &[&host, &guest]).unwrap();
        assert_eq!(
            confine.open(&base.join("in/loop"), dir).unwrap_err(),
            Errno::EXDEV
        );
        let err = Confine::new("/elsewhere/f", &[&host, &guest]).unwrap_err();
        assert!(matches!(err, CopyError::NotAllowed { .. }), "{err}");
    }

    #[test]
    fn creating_parents_never_leaves_the_allowed_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path().canonicalize().unwrap();
        let allowed = base.join("in");
        let outside = base.join("etc");
        std::fs::create_dir_all(&allowed).unwrap();
        std::fs::create_dir(&outside).unwrap();
        symlink(&outside, allowed.join("esc")).unwrap();
        let target = allowed.join("esc/new/dirs");
        let confine = Confine::new(target.to_str().unwrap(), &[&list(&[&allowed])]).unwrap();
        let err = confine.create_dirs(&target).unwrap_err();
        assert!(matches!(err, CopyError::Escapes { .. }), "{err}");
        assert!(!outside.join("new").exists());
        confine.create_dirs(&allowed.join("a/b")).unwrap();
        assert!(allowed.join("a/b").is_dir());
    }
}
