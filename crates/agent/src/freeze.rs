//! Filesystem freeze and thaw (FIFREEZE/FITHAW), the counterpart of
//! Hyper-V's VSS service, with a safety timeout.
//!
//! ```text
//! freeze [MOUNTPOINT...]  check each is a mount point (else nothing happens)
//!                         freeze in mount order; a filesystem that cannot
//!                         freeze is skipped with the reason; any other failure
//!                         thaws what this request froze
//!                         arm the timer: thaw everything after timeout_s
//! thaw [MOUNTPOINT...]    thaw in reverse order; disarm when nothing is left
//! ```
//!
//! The [`Freezer`] trait is the one place that touches filesystems:
//! [`IoctlFreezer`] in a guest, [`SimulatedFreezer`] in tests
//! (`guestcomm-agent --simulate-fsfreeze`), which never issues an ioctl.

use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use guestcomm_protocol::integration::{FreezeStatus, SkippedMount};
use guestcomm_protocol::limits::{
    DEFAULT_FREEZE_TIMEOUT_S, MAX_FREEZE_MOUNTPOINTS, MAX_FREEZE_TIMEOUT_S,
};
use nix::errno::Errno;
use tracing::{info, warn};

use crate::info::{parse_mounts, Mount};

nix::ioctl_readwrite!(
    /// FIFREEZE, `_IOWR('X', 119, int)`.
    fifreeze,
    b'X',
    119,
    libc::c_int
);
nix::ioctl_readwrite!(
    /// FITHAW, `_IOWR('X', 120, int)`.
    fithaw,
    b'X',
    120,
    libc::c_int
);

/// Freezes and thaws one filesystem, given its mount point.
pub trait Freezer: Send + Sync {
    /// FIFREEZE.
    fn freeze(&self, mount: &Mount) -> Result<(), Errno>;
    /// FITHAW.
    fn thaw(&self, mount: &Mount) -> Result<(), Errno>;
}

/// The real ioctls, on the mount point's directory.
#[derive(Debug, Default)]
pub(crate) struct IoctlFreezer;

fn on_dir(path: &str, op: impl FnOnce(i32) -> Result<(), Errno>) -> Result<(), Errno> {
    let dir =
        std::fs::File::open(path).map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(0)))?;
    op(dir.as_raw_fd())
}

impl Freezer for IoctlFreezer {
    fn freeze(&self, mount: &Mount) -> Result<(), Errno> {
        let mut arg: libc::c_int = 0;
        // SAFETY: FIFREEZE on an open directory fd; the argument is ignored
        // by the kernel and points to a live int.
        on_dir(&mount.mountpoint, |fd| {
            unsafe { fifreeze(fd, &mut arg) }.map(drop)
        })
    }

    fn thaw(&self, mount: &Mount) -> Result<(), Errno> {
        let mut arg: libc::c_int = 0;
        // SAFETY: as above, FITHAW.
        on_dir(&mount.mountpoint, |fd| {
            unsafe { fithaw(fd, &mut arg) }.map(drop)
        })
    }
}

/// Pretends: storage filesystems freeze, others answer EOPNOTSUPP, as the kernel does.
#[derive(Debug, Default)]
pub(crate) struct SimulatedFreezer;

impl Freezer for SimulatedFreezer {
    fn freeze(&self, mount: &Mount) -> Result<(), Errno> {
        if mount.is_storage() {
            Ok(())
        } else {
            Err(Errno::EOPNOTSUPP)
        }
    }

    fn thaw(&self, _mount: &Mount) -> Result<(), Errno> {
        Ok(())
    }
}

/// Why a freeze or thaw was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum FreezeError {
    /// A path named is not a mount point.
    #[error("{0} is not a mount point in the guest (see `guestcomm info`)")]
    NotMountPoint(String),
    /// Too many paths, or a bad timeout.
    #[error("{0}")]
    Invalid(String),
    /// A freeze failed; what it froze was thawed again.
    #[error("cannot freeze {0}")]
    Freeze(String, #[source] Errno),
    /// A thaw failed; the filesystem stays frozen until the safety timeout retries.
    #[error("cannot thaw {0}")]
    Thaw(String, #[source] Errno),
}

#[derive(Default)]
struct Frozen {
    mounts: Vec<Mount>,
    skipped: Vec<SkippedMount>,
    deadline: Option<Instant>,
    /// Bumped at each freeze, so an old timer does not thaw a newer freeze.
    generation: u64,
}

/// The freeze state of the guest.
pub struct FreezeManager {
    freezer: Box<dyn Freezer>,
    mounts_file: std::path::PathBuf,
    state: Mutex<Frozen>,
}

fn normalize(path: &str) -> String {
    let trimmed = path.trim_end_matches('/');
    if trimmed.is_empty() {
        "/".into()
    } else {
        trimmed.into()
    }
}

impl FreezeManager {
    /// A manager using `freezer`, reading mounts from /proc/self/mounts.
    pub fn new(freezer: Box<dyn Freezer>) -> Arc<Self> {
        Self::with_mounts(freezer, "/proc/self/mounts".into())
    }

    /// Same, reading mounts from `mounts_file` (tests).
    pub fn with_mounts(freezer: Box<dyn Freezer>, mounts_file: std::path::PathBuf) -> Arc<Self> {
        Arc::new(Self {
            freezer,
            mounts_file,
            state: Mutex::new(Frozen::default()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Frozen> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn mounts(&self) -> Vec<Mount> {
        let text = std::fs::read_to_string(&self.mounts_file).unwrap_or_default();
        // The last mount of a path is the visible one.
        let mut mounts: Vec<Mount> = Vec::new();
        for m in parse_mounts(&text) {
            mounts.retain(|o| o.mountpoint != m.mountpoint);
            mounts.push(m);
        }
        mounts
    }

    fn status_of(state: &Frozen, thawed: Vec<String>) -> FreezeStatus {
        FreezeStatus {
            frozen: state.mounts.iter().map(|m| m.mountpoint.clone()).collect(),
            skipped: state.skipped.clone(),
            thawed,
            auto_thaw_in_s: state
                .deadline
                .map(|d| d.saturating_duration_since(Instant::now()).as_secs()),
        }
    }

    /// What is frozen now.
    pub fn status(&self) -> FreezeStatus {
        Self::status_of(&self.lock(), Vec::new())
    }

    /// Freezes `paths` (all storage filesystems when empty) and arms the
    /// safety timer for `timeout_s` seconds.
    pub fn freeze(
        self: &Arc<Self>,
        paths: &[String],
        timeout_s: Option<u64>,
    ) -> Result<FreezeStatus, FreezeError> {
        let timeout = timeout_s.unwrap_or(DEFAULT_FREEZE_TIMEOUT_S);
        if timeout == 0 || timeout > MAX_FREEZE_TIMEOUT_S {
            return Err(FreezeError::Invalid(format!(
                "invalid freeze timeout {timeout} s: expected 1 to {MAX_FREEZE_TIMEOUT_S}"
            )));
        }
        if paths.len() > MAX_FREEZE_MOUNTPOINTS {
            return Err(FreezeError::Invalid(format!(
                "{} mount points in one request; the limit is {MAX_FREEZE_MOUNTPOINTS}",
                paths.len()
            )));
        }
        let mounts = self.mounts();
        let chosen: Vec<Mount> = if paths.is_empty() {
            mounts.into_iter().filter(Mount::is_storage).collect()
        } else {
            let mut chosen = Vec::new();
            for path in paths {
                let want = normalize(path);
                match mounts.iter().find(|m| m.mountpoint == want) {
                    Some(m) if !chosen.contains(m) => chosen.push(m.clone()),
                    Some(_) => {}
                    None => {
                        return Err(FreezeError::NotMountPoint(path.chars().take(256).collect()))
                    }
                }
            }
            chosen
        };
        let mut state = self.lock();
        let mut skipped = Vec::new();
        let mut newly = Vec::new();
        for mount in chosen {
            if state.mounts.contains(&mount) {
                continue;
            }
            let skip = |reason: &str| SkippedMount {
                mountpoint: mount.mountpoint.clone(),
                reason: reason.into(),
            };
            if mount.read_only {
                skipped.push(skip("mounted read-only: nothing to make consistent"));
                continue;
            }
            match self.freezer.freeze(&mount) {
                Ok(()) => newly.push(mount),
                Err(Errno::EOPNOTSUPP | Errno::EINVAL | Errno::ENOTTY) => {
                    skipped.push(skip("this filesystem cannot freeze"))
                }
                Err(Errno::EBUSY) => skipped.push(skip("already frozen by someone else")),
                Err(e) => {
                    for done in newly.iter().rev() {
                        let _ = self.freezer.thaw(done);
                    }
                    return Err(FreezeError::Freeze(mount.mountpoint, e));
                }
            }
        }
        for m in &newly {
            info!(mountpoint = %m.mountpoint, "filesystem frozen");
        }
        state.mounts.extend(newly);
        state.skipped = skipped;
        if !state.mounts.is_empty() {
            state.generation += 1;
            state.deadline = Some(Instant::now() + Duration::from_secs(timeout));
            let generation = state.generation;
            let me = self.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(timeout)).await;
                me.auto_thaw(generation);
            });
        }
        Ok(Self::status_of(&state, Vec::new()))
    }

    fn auto_thaw(&self, generation: u64) {
        if self.lock().generation != generation {
            return;
        }
        warn!("the host did not thaw in time: thawing every frozen filesystem (safety timeout)");
        if let Err(e) = self.thaw(&[]) {
            warn!(error = %guestcomm_protocol::error_chain(&e), "safety thaw failed");
        }
    }

    /// Thaws `paths` (everything frozen when empty), in reverse order.
    pub fn thaw(&self, paths: &[String]) -> Result<FreezeStatus, FreezeError> {
        let mut state = self.lock();
        let wanted: Vec<String> = paths.iter().map(|p| normalize(p)).collect();
        if let Some(bad) = wanted
            .iter()
            .find(|w| !state.mounts.iter().any(|m| &&m.mountpoint == w))
        {
            let known = self.mounts().iter().any(|m| &m.mountpoint == bad);
            if !known {
                return Err(FreezeError::NotMountPoint(bad.clone()));
            }
        }
        let mut thawed = Vec::new();
        let mut failure = None;
        let mut kept = Vec::new();
        for mount in std::mem::take(&mut state.mounts).into_iter().rev() {
            if !wanted.is_empty() && !wanted.contains(&mount.mountpoint) {
                kept.push(mount);
                continue;
            }
            match self.freezer.thaw(&mount) {
                // EINVAL: it was not frozen (thawed by someone else): it is thawed now.
                Ok(()) | Err(Errno::EINVAL) => {
                    info!(mountpoint = %mount.mountpoint, "filesystem thawed");
                    thawed.push(mount.mountpoint);
                }
                Err(e) => {
                    failure.get_or_insert((mount.mountpoint.clone(), e));
                    kept.push(mount);
                }
            }
        }
        kept.reverse();
        state.mounts = kept;
        if state.mounts.is_empty() {
            state.deadline = None;
            state.generation += 1;
        }
        match failure {
            Some((path, e)) => Err(FreezeError::Thaw(path, e)),
            None => Ok(Self::status_of(&state, thawed)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records calls; fails freezing `fail_on` with EIO.
    #[derive(Default)]
    struct Recorder {
        calls: Mutex<Vec<String>>,
        fail_on: Option<String>,
    }

    impl Freezer for Arc<Recorder> {
        fn freeze(&self, m: &Mount) -> Result<(), Errno> {
            self.calls
                .lock()
                .unwrap()
                .push(format!("freeze {}", m.mountpoint));
            if m.fstype == "tmpfs" {
                return Err(Errno::EOPNOTSUPP);
            }
            if self.fail_on.as_deref() == Some(m.mountpoint.as_str()) {
                return Err(Errno::EIO);
            }
            Ok(())
        }
        fn thaw(&self, m: &Mount) -> Result<(), Errno> {
            self.calls
                .lock()
                .unwrap()
                .push(format!("thaw {}", m.mountpoint));
            Ok(())
        }
    }

    const MOUNTS: &str = "proc /proc proc rw 0 0\n/dev/vda1 / ext4 rw 0 0\ntmpfs /tmp tmpfs rw 0 0\n/dev/vdb /data xfs rw 0 0\n/dev/vdc /ro ext4 ro 0 0\n";

    fn manager(fail_on: Option<&str>) -> (Arc<FreezeManager>, Arc<Recorder>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("mounts");
        std::fs::write(&file, MOUNTS).unwrap();
        let rec = Arc::new(Recorder {
            fail_on: fail_on.map(String::from),
            ..Default::default()
        });
        (
            FreezeManager::with_mounts(Box::new(rec.clone()), file),
            rec,
            dir,
        )
    }

    #[tokio::test]
    async fn freeze_all_skips_pseudo_and_read_only_and_thaws_in_reverse() {
        let (m, rec, _dir) = manager(None);
        let status = m.freeze(&[], Some(60)).unwrap();
        assert_eq!(status.frozen, ["/", "/data"]);
        assert!(status.skipped.iter().any(|s| s.mountpoint == "/ro"));
        assert!(status.auto_thaw_in_s.is_some());
        let status = m.thaw(&[]).unwrap();
        assert_eq!(status.thawed, ["/data", "/"]);
        assert!(status.frozen.is_empty() && status.auto_thaw_in_s.is_none());
        assert_eq!(
            *rec.calls.lock().unwrap(),
            ["freeze /", "freeze /data", "thaw /data", "thaw /"]
        );
    }

    #[tokio::test]
    async fn a_path_that_is_not_a_mount_point_freezes_nothing() {
        let (m, rec, _dir) = manager(None);
        let err = m
            .freeze(&["/data".into(), "/data/sub".into()], None)
            .unwrap_err();
        assert!(
            err.to_string().contains("/data/sub is not a mount point"),
            "{err}"
        );
        assert!(rec.calls.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_filesystem_that_cannot_freeze_is_skipped_with_the_reason() {
        let (m, _rec, _dir) = manager(None);
        let status = m.freeze(&["/tmp/".into()], None).unwrap();
        assert!(status.frozen.is_empty());
        assert_eq!(status.skipped[0].reason, "this filesystem cannot freeze");
    }

    #[tokio::test]
    async fn a_failed_freeze_thaws_what_it_froze() {
        let (m, rec, _dir) = manager(Some("/data"));
        assert!(m.freeze(&[], None).is_err());
        assert_eq!(
            *rec.calls.lock().unwrap(),
            ["freeze /", "freeze /data", "thaw /"]
        );
        assert!(m.status().frozen.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn the_safety_timeout_thaws_when_the_host_never_does() {
        let (m, rec, _dir) = manager(None);
        m.freeze(&["/data".into()], Some(5)).unwrap();
        tokio::time::sleep(Duration::from_secs(6)).await;
        assert!(m.status().frozen.is_empty());
        assert!(rec
            .calls
            .lock()
            .unwrap()
            .contains(&"thaw /data".to_string()));
    }

    #[test]
    fn timeouts_are_bounded() {
        let (m, _rec, _dir) = manager(None);
        assert!(m.freeze(&[], Some(0)).is_err());
        assert!(m.freeze(&[], Some(MAX_FREEZE_TIMEOUT_S + 1)).is_err());
    }
}
