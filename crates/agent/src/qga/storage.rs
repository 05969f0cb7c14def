//! guest-fstrim and guest-get-disks: the FITRIM ioctl on each filesystem
//! mounted from a block device (per-path results and errors, in qemu-ga's
//! words), and the guest's disks with their partitions and the disk
//! address libvirt matches to the domain's disks.

use std::os::fd::AsRawFd;
use std::path::Path;

use nix::errno::Errno;
use serde_json::{json, Value};

use super::fsinfo::{disk_address, sysfs_of};
use super::reply::{generic, Reply};
use crate::info::parse_mounts;

/// `struct fstrim_range` of <linux/fs.h>.
#[repr(C)]
struct FstrimRange {
    start: u64,
    len: u64,
    minlen: u64,
}

// FITRIM: _IOWR('X', 121, struct fstrim_range).
nix::ioctl_readwrite!(fitrim, b'X', 121, FstrimRange);

/// The mountpoints of the filesystems mounted from block devices.
fn block_mounts() -> Result<Vec<String>, Reply> {
    let mounts = std::fs::read_to_string("/proc/self/mounts")
        .map_err(|_| generic("cannot read /proc/self/mounts"))?;
    Ok(parse_mounts(&mounts)
        .into_iter()
        .filter(|m| sysfs_of(Path::new(&m.device)).is_some())
        .map(|m| m.mountpoint)
        .collect())
}

/// Trims the filesystem mounted at `path`, discarding free extents of at
/// least `minimum` bytes: qemu-ga's `GuestFilesystemTrimResult`.
fn trim(path: &str, minimum: u64) -> Value {
    let dir = match std::fs::File::open(path) {
        Ok(dir) => dir,
        Err(e) => {
            let errno = Errno::from_raw(e.raw_os_error().unwrap_or(0));
            return json!({"path": path, "error": format!("failed to open: {}", errno.desc())});
        }
    };
    let mut range = FstrimRange {
        start: 0,
        len: u64::MAX,
        minlen: minimum,
    };
    // SAFETY: `dir` is an open descriptor and `range` a live fstrim_range,
    // which the kernel reads and updates.
    match unsafe { fitrim(dir.as_raw_fd(), &mut range) } {
        Ok(_) => json!({"path": path, "trimmed": range.len, "minimum": range.minlen}),
        Err(Errno::ENOTTY | Errno::EOPNOTSUPP) => {
            json!({"path": path, "error": "trim not supported"})
        }
        Err(e) => json!({"path": path, "error": format!("failed to trim: {}", e.desc())}),
    }
}

/// guest-fstrim: every filesystem mounted from a block device, trimmed.
pub(super) fn fstrim(minimum: u64) -> Reply {
    let mountpoints = match block_mounts() {
        Ok(m) => m,
        Err(reply) => return reply,
    };
    let paths: Vec<Value> = mountpoints.iter().map(|p| trim(p, minimum)).collect();
    Reply::Return(json!({ "paths": paths }))
}

/// The block devices `/sys/block/NAME/slaves` names (what a device-mapper
/// or md device is built on), as `/dev/NAME`.
fn dependencies(sysfs: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(sysfs.join("slaves")) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .flatten()
        .map(|e| format!("/dev/{}", e.file_name().to_string_lossy()))
        .collect();
    names.sort();
    names
}

/// guest-get-disks: each disk of /sys/block (not loop, ram or zram
/// devices without a size) and each of its partitions.
pub(super) fn disks() -> Reply {
    let Ok(entries) = std::fs::read_dir("/sys/block") else {
        return generic("cannot read /sys/block");
    };
    let mut names: Vec<String> = entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let mut out = Vec::new();
    for name in names {
        let Ok(sysfs) = std::fs::canonicalize(Path::new("/sys/block").join(&name)) else {
            continue;
        };
        let size = std::fs::read_to_string(sysfs.join("size")).unwrap_or_default();
        if size.trim() == "0" {
            continue;
        }
        let mut disk = json!({
            "name": format!("/dev/{name}"),
            "partition": false,
            "dependencies": dependencies(&sysfs),
        });
        if let Ok(alias) = std::fs::read_to_string(sysfs.join("dm/name")) {
            disk["alias"] = json!(alias.trim());
        }
        if !name.starts_with("dm-") && !name.starts_with("md") {
            disk["address"] = disk_address(&sysfs);
        }
        out.push(disk);
        let Ok(children) = std::fs::read_dir(&sysfs) else {
            continue;
        };
        let mut partitions: Vec<String> = children
            .flatten()
            .filter(|c| c.path().join("partition").exists())
            .map(|c| c.file_name().to_string_lossy().into_owned())
            .collect();
        partitions.sort();
        for partition in partitions {
            out.push(json!({
                "name": format!("/dev/{partition}"),
                "partition": true,
                "dependencies": [format!("/dev/{name}")],
            }));
        }
    }
    Reply::Return(Value::Array(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_that_cannot_be_opened_is_an_error_of_its_own() {
        let result = trim("/nonexistent/guestcomm", 0);
        assert_eq!(
            result,
            json!({"path": "/nonexistent/guestcomm", "error": "failed to open: No such file or directory"})
        );
    }
}
