//! guest-get-fsinfo: each filesystem mounted from a block device, with its
//! size and the disk under it as libvirt's `domfsinfo` matches it to the
//! domain's disks (the PCI address of its controller, the bus type).

use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::reply::{generic, Reply};
use crate::info::parse_mounts;

/// The sysfs device directory of block device `device` (`/dev/vda1`).
pub(super) fn sysfs_of(device: &Path) -> Option<PathBuf> {
    let meta = std::fs::metadata(device).ok()?;
    if !meta.file_type().is_block_device() {
        return None;
    }
    let rdev = std::os::unix::fs::MetadataExt::rdev(&meta);
    let (major, minor) = (nix::sys::stat::major(rdev), nix::sys::stat::minor(rdev));
    std::fs::canonicalize(format!("/sys/dev/block/{major}:{minor}")).ok()
}

/// A PCI address component, `dddd:bb:ss.f`.
fn pci_address(component: &str) -> Option<Value> {
    let (domain, rest) = component.split_once(':')?;
    let (bus, rest) = rest.split_once(':')?;
    let (slot, function) = rest.split_once('.')?;
    let hex = |s: &str| u32::from_str_radix(s, 16).ok();
    if domain.len() != 4 || bus.len() != 2 || slot.len() != 2 || function.len() != 1 {
        return None;
    }
    Some(json!({
        "domain": hex(domain)?,
        "bus": hex(bus)?,
        "slot": hex(slot)?,
        "function": hex(function)?,
    }))
}

/// The address of the disk under the block device at `sysfs` (a
/// partition's parent): qemu-ga's `GuestDiskAddress`.
pub(super) fn disk_address(sysfs: &Path) -> Value {
    let disk_dir = if sysfs.join("partition").exists() {
        sysfs.parent().unwrap_or(sysfs).to_path_buf()
    } else {
        sysfs.to_path_buf()
    };
    let name = disk_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let text = disk_dir.display().to_string();
    let components: Vec<&str> = text.split('/').collect();
    let pci = components.iter().rev().find_map(|c| pci_address(c));
    let bus_type = if components.iter().any(|c| c.starts_with("virtio")) {
        "virtio"
    } else if components.contains(&"nvme") {
        "nvme"
    } else if components.iter().any(|c| c.starts_with("ata")) {
        "sata"
    } else if components.iter().any(|c| c.starts_with("target")) {
        "scsi"
    } else {
        "unknown"
    };
    let mut out = json!({
        "bus-type": bus_type,
        "bus": 0,
        "unit": 0,
        "target": 0,
        "dev": format!("/dev/{name}"),
    });
    if let Some(pci) = pci {
        out["pci-controller"] = pci;
    }
    out
}

/// The filesystems of /proc/self/mounts mounted from block devices.
pub(super) fn fsinfo() -> Reply {
    let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") else {
        return generic("cannot read /proc/self/mounts");
    };
    let mut out = Vec::new();
    for mount in parse_mounts(&mounts) {
        let Some(sysfs) = sysfs_of(Path::new(&mount.device)) else {
            continue;
        };
        let name = sysfs
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut fs = json!({
            "name": name,
            "mountpoint": mount.mountpoint,
            "type": mount.fstype,
            "disk": [disk_address(&sysfs)],
        });
        if let Ok(stat) = nix::sys::statvfs::statvfs(mount.mountpoint.as_str()) {
            // As qemu-ga (and df): the total is what is used plus what an
            // unprivileged user may still use.
            let unit = stat.fragment_size();
            let used = stat.blocks().saturating_sub(stat.blocks_free());
            fs["total-bytes"] = json!(unit * (used + stat.blocks_available()));
            fs["used-bytes"] = json!(unit * used);
        }
        out.push(fs);
    }
    Reply::Return(Value::Array(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pci_address_is_four_hex_fields_and_nothing_else_is() {
        assert_eq!(
            pci_address("0000:00:1f.2"),
            Some(json!({"domain": 0, "bus": 0, "slot": 31, "function": 2}))
        );
        for not in ["pci0000:00", "virtio1", "0000:00:02", "block"] {
            assert_eq!(pci_address(not), None, "{not}");
        }
    }
}
