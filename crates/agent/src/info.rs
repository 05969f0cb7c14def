//! Guest information: what qemu-ga's guest-get-osinfo, guest-get-fsinfo,
//! guest-network-get-interfaces and guest-get-users give, in one answer.
//!
//! Every source is read with a bound and a missing one leaves its fields
//! empty: a guest without `/etc/os-release` or utmp still answers. The
//! parsers are pure functions with their own tests.

use std::collections::BTreeMap;
use std::ffi::CStr;
use std::path::Path;

use guestcomm_protocol::integration::{
    FilesystemInfo, GuestInfo, InterfaceInfo, KernelInfo, MemoryInfo, OsInfo, UserSession,
};
use guestcomm_protocol::limits::MAX_INFO_ITEMS;
use nix::net::if_::InterfaceFlags;

/// Largest text file read (os-release, mounts): far above real ones.
const MAX_TEXT_FILE_BYTES: u64 = 1024 * 1024;

/// Largest utmp read: 2,730 sessions of 384 bytes.
const MAX_UTMP_BYTES: u64 = 1024 * 1024;

/// Filesystem types that hold no storage of their own.
const PSEUDO_FS: &[&str] = &[
    "autofs",
    "binfmt_misc",
    "bpf",
    "cgroup",
    "cgroup2",
    "configfs",
    "debugfs",
    "devpts",
    "devtmpfs",
    "efivarfs",
    "fusectl",
    "hugetlbfs",
    "mqueue",
    "nsfs",
    "overlay",
    "proc",
    "pstore",
    "ramfs",
    "rootfs",
    "rpc_pipefs",
    "securityfs",
    "selinuxfs",
    "squashfs",
    "sysfs",
    "tmpfs",
    "tracefs",
];

/// Reads a text file of at most [`MAX_TEXT_FILE_BYTES`], empty if unreadable.
fn read_text(path: &Path) -> String {
    use std::io::Read;
    let mut text = String::new();
    if let Ok(file) = std::fs::File::open(path) {
        let _ = file.take(MAX_TEXT_FILE_BYTES).read_to_string(&mut text);
    }
    text
}

/// Everything, gathered now; `services` are the agent's offered services.
pub(crate) fn collect(agent: String, services: Vec<String>) -> GuestInfo {
    let hostname = nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_default();
    let sys = nix::sys::sysinfo::sysinfo().ok();
    GuestInfo {
        fqdn: fqdn(
            &hostname,
            &read_text(Path::new("/proc/sys/kernel/domainname")),
        ),
        hostname,
        os: parse_os_release(&read_text(Path::new("/etc/os-release"))),
        kernel: kernel(),
        uptime_s: sys.as_ref().map_or(0, |s| s.uptime().as_secs()),
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get() as u32),
        memory: parse_meminfo(&read_text(Path::new("/proc/meminfo"))),
        filesystems: filesystems(&read_text(Path::new("/proc/self/mounts"))),
        interfaces: interfaces(),
        users: users(Path::new("/run/utmp")),
        agent,
        services,
    }
}

/// The host name, qualified by the NIS/YP domain when the kernel has one.
fn fqdn(hostname: &str, domain: &str) -> String {
    let domain = domain.trim();
    if hostname.contains('.') || domain.is_empty() || domain == "(none)" {
        hostname.to_string()
    } else {
        format!("{hostname}.{domain}")
    }
}

fn kernel() -> KernelInfo {
    let u = nix::sys::utsname::uname().ok();
    let s = |f: fn(&nix::sys::utsname::UtsName) -> &std::ffi::OsStr| {
        u.as_ref()
            .map(|u| f(u).to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    KernelInfo {
        sysname: s(|u| u.sysname()),
        release: s(|u| u.release()),
        version: s(|u| u.version()),
        machine: s(|u| u.machine()),
    }
}

/// `KEY=value` and `KEY="value"` lines of os-release(5).
pub(crate) fn parse_os_release(text: &str) -> OsInfo {
    let mut fields = BTreeMap::new();
    for line in text.lines() {
        let Some((key, value)) = line.trim().split_once('=') else {
            continue;
        };
        let value = value.trim();
        let unquoted = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .or_else(|| value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
            .unwrap_or(value);
        fields.insert(key, unquoted.replace("\\\"", "\"").replace("\\\\", "\\"));
    }
    let mut take = |k: &str| fields.remove(k).unwrap_or_default();
    OsInfo {
        id: take("ID"),
        name: take("NAME"),
        version_id: take("VERSION_ID"),
        version: take("VERSION"),
        pretty_name: take("PRETTY_NAME"),
        variant: take("VARIANT"),
        variant_id: take("VARIANT_ID"),
    }
}

/// `MemTotal` and `MemAvailable` of /proc/meminfo, in bytes.
pub(crate) fn parse_meminfo(text: &str) -> MemoryInfo {
    let kib = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .and_then(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
            .map_or(0, |k| k.saturating_mul(1024))
    };
    MemoryInfo {
        total_bytes: kib("MemTotal"),
        available_bytes: kib("MemAvailable"),
    }
}

/// One line of /proc/self/mounts: device, mount point, type, options.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mount {
    /// Source.
    pub device: String,
    /// Mount point, octal escapes decoded.
    pub mountpoint: String,
    /// Filesystem type.
    pub fstype: String,
    /// Mounted read-only.
    pub read_only: bool,
}

impl Mount {
    /// Whether the filesystem holds storage (not proc, sysfs, tmpfs, ...).
    pub fn is_storage(&self) -> bool {
        !PSEUDO_FS.contains(&self.fstype.as_str()) && !self.fstype.starts_with("fuse.")
    }
}

/// Decodes the `\040`-style escapes of /proc/self/mounts.
fn unescape_mount(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
        if let (b'\\', Some(digits)) = (bytes[i], octal) {
            let value = digits.iter().fold(0u32, |v, d| v * 8 + u32::from(d - b'0'));
            out.push(u8::try_from(value).unwrap_or(b'?'));
            i += 4;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses /proc/self/mounts.
pub(crate) fn parse_mounts(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|line| {
            let mut f = line.split_whitespace();
            let (device, mountpoint, fstype, options) =
                (f.next()?, f.next()?, f.next()?, f.next()?);
            Some(Mount {
                device: unescape_mount(device),
                mountpoint: unescape_mount(mountpoint),
                fstype: fstype.to_string(),
                read_only: options.split(',').any(|o| o == "ro"),
            })
        })
        .collect()
}

fn filesystems(mounts: &str) -> Vec<FilesystemInfo> {
    let mut seen = std::collections::HashSet::new();
    parse_mounts(mounts)
        .into_iter()
        .filter(Mount::is_storage)
        // A mount point listed twice (over-mounted): the last one is visible.
        .rev()
        .filter(|m| seen.insert(m.mountpoint.clone()))
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .take(MAX_INFO_ITEMS)
        .map(|m| {
            let usage = nix::sys::statvfs::statvfs(m.mountpoint.as_str()).ok();
            let (total, free, avail) = usage.map_or((0, 0, 0), |s| {
                let unit = s.fragment_size().max(1);
                (
                    s.blocks().saturating_mul(unit),
                    s.blocks_free().saturating_mul(unit),
                    s.blocks_available().saturating_mul(unit),
                )
            });
            FilesystemInfo {
                mountpoint: m.mountpoint,
                device: m.device,
                fstype: m.fstype,
                total_bytes: total,
                used_bytes: total.saturating_sub(free),
                available_bytes: avail,
                read_only: m.read_only,
            }
        })
        .collect()
}

/// A link-layer address as `aa:bb:cc:dd:ee:ff`.
pub(crate) fn mac_text(mac: &[u8]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn interfaces() -> Vec<InterfaceInfo> {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    let mut by_name: BTreeMap<String, InterfaceInfo> = BTreeMap::new();
    for ifa in addrs {
        if by_name.len() >= MAX_INFO_ITEMS && !by_name.contains_key(&ifa.interface_name) {
            continue;
        }
        let entry = by_name
            .entry(ifa.interface_name.clone())
            .or_insert_with(|| InterfaceInfo {
                name: ifa.interface_name.clone(),
                ..InterfaceInfo::default()
            });
        entry.up |= ifa.flags.contains(InterfaceFlags::IFF_UP);
        let Some(addr) = ifa.address else { continue };
        if let Some(link) = addr.as_link_addr() {
            if let Some(mac) = link.addr().filter(|m| m.iter().any(|b| *b != 0)) {
                entry.mac = Some(mac_text(&mac));
            }
            continue;
        }
        if entry.addresses.len() >= MAX_INFO_ITEMS {
            continue;
        }
        let prefix = |mask: Option<u32>| mask.map_or(String::new(), |m| format!("/{m}"));
        if let Some(v4) = addr.as_sockaddr_in() {
            let mask = ifa
                .netmask
                .as_ref()
                .and_then(|n| n.as_sockaddr_in())
                .map(|n| u32::from(n.ip()).count_ones());
            entry.addresses.push(format!("{}{}", v4.ip(), prefix(mask)));
        } else if let Some(v6) = addr.as_sockaddr_in6() {
            let mask = ifa
                .netmask
                .as_ref()
                .and_then(|n| n.as_sockaddr_in6())
                .map(|n| u128::from(n.ip()).count_ones());
            entry.addresses.push(format!("{}{}", v6.ip(), prefix(mask)));
        }
    }
    by_name.into_values().collect()
}

/// Size of one `struct utmpx` record on Linux (glibc and musl agree on
/// x86_64 and aarch64).
const UTMP_RECORD_BYTES: usize = 384;
/// `ut_type` of a login session.
const USER_PROCESS: i16 = 7;

/// Logged-in users from utmp; `None` when it cannot be read.
fn users(path: &Path) -> Option<Vec<UserSession>> {
    use std::io::Read;
    let file = std::fs::File::open(path).ok()?;
    let mut data = Vec::new();
    file.take(MAX_UTMP_BYTES).read_to_end(&mut data).ok()?;
    Some(parse_utmp(&data))
}

/// A NUL-padded fixed field as text.
fn c_field(bytes: &[u8]) -> String {
    let text = CStr::from_bytes_until_nul(bytes)
        .map(CStr::to_bytes)
        .unwrap_or(bytes);
    String::from_utf8_lossy(text).into_owned()
}

/// The `USER_PROCESS` records of a utmp file (Linux `struct utmpx` layout:
/// type at 0, line at 8, user at 44, host at 76, seconds at 340).
pub(crate) fn parse_utmp(data: &[u8]) -> Vec<UserSession> {
    data.chunks_exact(UTMP_RECORD_BYTES)
        .filter(|r| i16::from_ne_bytes([r[0], r[1]]) == USER_PROCESS)
        .take(MAX_INFO_ITEMS)
        .map(|r| UserSession {
            terminal: c_field(&r[8..40]),
            user: c_field(&r[44..76]),
            host: c_field(&r[76..332]),
            login_time_s: i64::from(i32::from_ne_bytes([r[340], r[341], r[342], r[343]])),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_release_values_are_unquoted() {
        let os = parse_os_release(
            "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nNAME='Debian GNU/Linux'\nVERSION_ID=\"12\"\nID=debian\n# comment\n",
        );
        assert_eq!(os.id, "debian");
        assert_eq!(os.name, "Debian GNU/Linux");
        assert_eq!(os.version_id, "12");
        assert_eq!(os.pretty_name, "Debian GNU/Linux 12 (bookworm)");
    }

    #[test]
    fn meminfo_is_read_in_bytes() {
        let m = parse_meminfo("MemTotal:       2048 kB\nMemFree: 1 kB\nMemAvailable:   1024 kB\n");
        assert_eq!(
            (m.total_bytes, m.available_bytes),
            (2048 * 1024, 1024 * 1024)
        );
        assert_eq!(parse_meminfo("garbage"), MemoryInfo::default());
    }

    #[test]
    fn mounts_are_unescaped_and_pseudo_filesystems_skipped() {
        let mounts = parse_mounts(
            "proc /proc proc rw,nosuid 0 0\n/dev/vda1 / ext4 rw,relatime 0 0\n/dev/vdb /mnt/my\\040data xfs ro 0 0\nshort line\n",
        );
        assert_eq!(mounts.len(), 3);
        assert!(!mounts[0].is_storage());
        assert!(mounts[1].is_storage() && !mounts[1].read_only);
        assert_eq!(mounts[2].mountpoint, "/mnt/my data");
        assert!(mounts[2].read_only);
    }

    #[test]
    fn utmp_user_records_are_decoded_and_others_skipped() {
        let mut record = vec![0u8; UTMP_RECORD_BYTES];
        record[0..2].copy_from_slice(&USER_PROCESS.to_ne_bytes());
        record[8..13].copy_from_slice(b"pts/0");
        record[44..49].copy_from_slice(b"alice");
        record[76..85].copy_from_slice(b"192.0.2.9");
        record[340..344].copy_from_slice(&1_700_000_000i32.to_ne_bytes());
        let mut boot = vec![0u8; UTMP_RECORD_BYTES];
        boot[0..2].copy_from_slice(&2i16.to_ne_bytes());
        let data = [boot, record, vec![7u8; 10]].concat();
        let users = parse_utmp(&data);
        assert_eq!(users.len(), 1);
        assert_eq!(users[0].user, "alice");
        assert_eq!(users[0].terminal, "pts/0");
        assert_eq!(users[0].host, "192.0.2.9");
        assert_eq!(users[0].login_time_s, 1_700_000_000);
    }

    #[test]
    fn fqdn_adds_a_real_domain_only() {
        assert_eq!(fqdn("web1", "(none)\n"), "web1");
        assert_eq!(fqdn("web1", "example.org\n"), "web1.example.org");
        assert_eq!(fqdn("web1.example.org", "x"), "web1.example.org");
    }

    #[test]
    fn this_machine_answers_with_its_hostname_and_kernel() {
        let info = collect("agent".into(), vec![]);
        let uts = nix::sys::utsname::uname().unwrap();
        assert_eq!(info.kernel.release, uts.release().to_string_lossy());
        assert!(!info.hostname.is_empty());
        assert!(info.cpus >= 1 && info.memory.total_bytes > 0);
        assert!(info.interfaces.iter().any(|i| i.name == "lo"));
    }
}
