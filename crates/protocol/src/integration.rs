//! The integration services' messages: guest information, time, key-value
//! exchange, shutdown and filesystem freeze (the counterparts of Hyper-V's
//! Heartbeat, Time Synchronization, KVP, Shutdown and VSS services).
//!
//! Each is one question and one answer on its own connection:
//!
//! ```text
//! client                                         agent
//!   | -- Request {service, call: {op, ...}} -->   |
//!   | <-- answer (guest_info, time_sample,  ----  |  or Error {code}
//!   |      kvp_value, kvp_entries, done,          |
//!   |      shutdown_ack, fs_freeze_status)        |
//!   | (client closes; the agent waits for that)   |
//! ```
//!
//! Key-value pools follow Hyper-V's model ([`KvpPool`]); keys, values and
//! pools are bounded by [`check_key`], [`check_value`] and
//! [`MAX_KVP_KEYS_PER_POOL`](crate::limits::MAX_KVP_KEYS_PER_POOL).

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error_code::ErrorCode;
use crate::limits::{MAX_KVP_KEY_BYTES, MAX_KVP_VALUE_BYTES, MAX_SHUTDOWN_REASON_BYTES};

/// A key-value pool, as Hyper-V's (its numbers in parentheses).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KvpPool {
    /// (0) The host writes, guest programs read: the daemon keeps it and
    /// pushes it to the agent.
    External,
    /// (1) Guest programs write, the host reads.
    Guest,
    /// (2) Intrinsic data the agent fills itself (OS, kernel, FQDN,
    /// addresses, agent version); read-only on both sides.
    Auto,
}

impl KvpPool {
    /// Every pool, in Hyper-V's order.
    pub const ALL: [KvpPool; 3] = [Self::External, Self::Guest, Self::Auto];

    /// The name on the command line and the wire.
    pub const fn name(self) -> &'static str {
        match self {
            Self::External => "external",
            Self::Guest => "guest",
            Self::Auto => "auto",
        }
    }

    /// Hyper-V's pool number.
    pub const fn number(self) -> u8 {
        match self {
            Self::External => 0,
            Self::Guest => 1,
            Self::Auto => 2,
        }
    }

    /// Who may write this pool.
    pub const fn writer(self) -> Option<KvpSide> {
        match self {
            Self::External => Some(KvpSide::Host),
            Self::Guest => Some(KvpSide::Guest),
            Self::Auto => None,
        }
    }
}

impl fmt::Display for KvpPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for KvpPool {
    type Err = KvpError;

    /// A name (`external`, `guest`, `auto`) or Hyper-V's number (0, 1, 2).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|p| p.name() == s || p.number().to_string() == s)
            .ok_or_else(|| KvpError::UnknownPool(s.chars().take(64).collect()))
    }
}

/// Which side of the VM writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KvpSide {
    /// The host (guestcomm, guestcommd).
    Host,
    /// Programs in the guest (through the agent's local socket).
    Guest,
}

impl fmt::Display for KvpSide {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Host => "the host",
            Self::Guest => "guest programs",
        })
    }
}

/// Why a key-value operation is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KvpError {
    /// Not a pool name or number.
    #[error("unknown pool {0:?}: expected external (0), guest (1) or auto (2)")]
    UnknownPool(String),
    /// The empty key.
    #[error("empty key")]
    EmptyKey,
    /// A key over the limit.
    #[error("key of {0} bytes exceeds the {MAX_KVP_KEY_BYTES}-byte limit")]
    KeyTooLong(usize),
    /// A value over the limit.
    #[error("value of {0} bytes exceeds the {MAX_KVP_VALUE_BYTES}-byte limit")]
    ValueTooLong(usize),
    /// A key or value with a control character.
    #[error("{0} contains a control character (only tab, newline and carriage return are allowed in values)")]
    ControlCharacter(&'static str),
    /// The pool is full.
    #[error("pool {pool} holds its maximum of {max} keys; remove one first")]
    PoolFull {
        /// The pool.
        pool: KvpPool,
        /// Its limit.
        max: usize,
    },
    /// This side may not write that pool.
    #[error("pool {pool} is read-only for {side}{}", match .pool.writer() { Some(w) => format!(": only {w} write it"), None => ": the agent fills it".into() })]
    ReadOnly {
        /// The pool.
        pool: KvpPool,
        /// Who tried.
        side: KvpSide,
    },
    /// No such key.
    #[error("no key {key:?} in pool {pool}")]
    UnknownKey {
        /// The pool.
        pool: KvpPool,
        /// The key (cut to 64 characters).
        key: String,
    },
}

impl KvpError {
    /// The error code an agent answers with.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::PoolFull { .. } => ErrorCode::ResourceLimit,
            Self::ReadOnly { .. } => ErrorCode::PermissionDenied,
            Self::UnknownKey { .. } => ErrorCode::NotFound,
            _ => ErrorCode::InvalidArgument,
        }
    }
}

/// Checks a key: 1 to [`MAX_KVP_KEY_BYTES`] bytes of UTF-8, no control characters.
pub fn check_key(key: &str) -> Result<(), KvpError> {
    if key.is_empty() {
        return Err(KvpError::EmptyKey);
    }
    if key.len() > MAX_KVP_KEY_BYTES {
        return Err(KvpError::KeyTooLong(key.len()));
    }
    if key.chars().any(char::is_control) {
        return Err(KvpError::ControlCharacter("the key"));
    }
    Ok(())
}

/// Checks a value: up to [`MAX_KVP_VALUE_BYTES`] bytes of UTF-8; control
/// characters other than tab, newline and carriage return are refused (so a
/// full pool always fits in one frame, see the limits).
pub fn check_value(value: &str) -> Result<(), KvpError> {
    if value.len() > MAX_KVP_VALUE_BYTES {
        return Err(KvpError::ValueTooLong(value.len()));
    }
    if value
        .chars()
        .any(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r'))
    {
        return Err(KvpError::ControlCharacter("the value"));
    }
    Ok(())
}

/// A key cut to 64 characters, for error messages.
pub fn short_key(key: &str) -> String {
    key.chars().take(64).collect()
}

/// `shutdown`: power off or reboot the guest.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShutdownRequest {
    /// Reboot instead of powering off.
    #[serde(default)]
    pub reboot: bool,
    /// Immediately, without the init system's orderly stop.
    #[serde(default)]
    pub force: bool,
    /// Why, for the guest's logs (up to [`MAX_SHUTDOWN_REASON_BYTES`]).
    #[serde(default)]
    pub reason: String,
}

impl ShutdownRequest {
    /// Checks the reason's length.
    pub fn check(&self) -> Result<(), String> {
        if self.reason.len() > MAX_SHUTDOWN_REASON_BYTES {
            return Err(format!(
                "shutdown reason of {} bytes exceeds the {MAX_SHUTDOWN_REASON_BYTES}-byte limit",
                self.reason.len()
            ));
        }
        Ok(())
    }

    /// `poweroff` or `reboot`.
    pub const fn action(&self) -> &'static str {
        if self.reboot {
            "reboot"
        } else {
            "poweroff"
        }
    }
}

/// The answer to `heartbeat`: the agent's own counters since it started
/// (a smaller value than the last one means it restarted). Cheap to make:
/// relaxed atomic loads. A receiver takes only the service names it knows
/// (`requests`), whatever else a guest sends.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentCounters {
    /// Connections accepted (after the vsock peer filter).
    #[serde(default)]
    pub connections: u64,
    /// Handshakes refused for their authentication (a wrong key, none).
    #[serde(default)]
    pub auth_failures: u64,
    /// Requests dispatched to a service, by the service's name (`exec`,
    /// `files`, `info`...).
    #[serde(default)]
    pub requests: BTreeMap<String, u64>,
    /// Requests refused before any service ran them (the guest's policy,
    /// an unknown service or operation).
    #[serde(default)]
    pub refused: u64,
    /// File bytes copied into the guest.
    #[serde(default)]
    pub copied_to_guest_bytes: u64,
    /// File bytes copied out of the guest.
    #[serde(default)]
    pub copied_from_guest_bytes: u64,
}

/// The answer to `fs_freeze`, `fs_thaw` and `fs_status`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FreezeStatus {
    /// Mount points frozen now, in the order they were frozen.
    #[serde(default)]
    pub frozen: Vec<String>,
    /// Mount points skipped by the last freeze, each with why (e.g. the
    /// filesystem cannot freeze).
    #[serde(default)]
    pub skipped: Vec<SkippedMount>,
    /// Mount points thawed by this request.
    #[serde(default)]
    pub thawed: Vec<String>,
    /// Seconds until the agent thaws on its own, while anything is frozen.
    #[serde(default)]
    pub auto_thaw_in_s: Option<u64>,
}

/// A mount point a freeze left alone.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkippedMount {
    /// The mount point.
    pub mountpoint: String,
    /// Why.
    pub reason: String,
}

/// Everything `guest_info` answers, in one message.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct GuestInfo {
    /// The guest's host name.
    pub hostname: String,
    /// Its fully qualified name (the host name when no domain is known).
    pub fqdn: String,
    /// From `/etc/os-release`.
    pub os: OsInfo,
    /// From `uname`.
    pub kernel: KernelInfo,
    /// Seconds since boot.
    pub uptime_s: u64,
    /// Online CPUs.
    pub cpus: u32,
    /// Memory, in bytes.
    pub memory: MemoryInfo,
    /// Mounted filesystems backed by storage, with usage.
    pub filesystems: Vec<FilesystemInfo>,
    /// Network interfaces and their addresses.
    pub interfaces: Vec<InterfaceInfo>,
    /// Logged-in users, from utmp; `None` when utmp cannot be read.
    pub users: Option<Vec<UserSession>>,
    /// The agent's name and version.
    pub agent: String,
    /// Short names of the services the agent offers.
    pub services: Vec<String>,
}

/// The operating system, from `/etc/os-release`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct OsInfo {
    /// `ID` (e.g. `debian`).
    pub id: String,
    /// `NAME` (e.g. `Debian GNU/Linux`).
    pub name: String,
    /// `VERSION_ID` (e.g. `12`).
    pub version_id: String,
    /// `VERSION`.
    pub version: String,
    /// `PRETTY_NAME`.
    pub pretty_name: String,
    /// `VARIANT` (e.g. `Server Edition`), when the file has one.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub variant: String,
    /// `VARIANT_ID` (e.g. `server`), when the file has one.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub variant_id: String,
}

/// The kernel, from `uname`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct KernelInfo {
    /// `uname -s`.
    pub sysname: String,
    /// `uname -r`.
    pub release: String,
    /// `uname -v`.
    pub version: String,
    /// `uname -m`.
    pub machine: String,
}

/// Memory totals, bytes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct MemoryInfo {
    /// Total usable RAM.
    pub total_bytes: u64,
    /// Available for new work without swapping (`MemAvailable`).
    pub available_bytes: u64,
}

/// One mounted filesystem.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct FilesystemInfo {
    /// Where it is mounted.
    pub mountpoint: String,
    /// The device or source.
    pub device: String,
    /// The filesystem type (`ext4`, `xfs`, ...).
    pub fstype: String,
    /// Size.
    pub total_bytes: u64,
    /// Used.
    pub used_bytes: u64,
    /// Available to unprivileged users.
    pub available_bytes: u64,
    /// Mounted read-only.
    pub read_only: bool,
}

/// One network interface.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct InterfaceInfo {
    /// Name (`eth0`).
    pub name: String,
    /// Hardware address, `aa:bb:cc:dd:ee:ff`, when it has one.
    pub mac: Option<String>,
    /// Administratively up.
    pub up: bool,
    /// Addresses with prefix length, `192.0.2.1/24`, `2001:db8::1/64`.
    pub addresses: Vec<String>,
}

/// A login session from utmp.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct UserSession {
    /// Login name.
    pub user: String,
    /// Terminal (`pts/0`).
    pub terminal: String,
    /// Remote host, if any.
    pub host: String,
    /// Login time, seconds since the Unix epoch.
    pub login_time_s: i64,
}

/// What `guestcomm time` measured: the guest clock against the host's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimeReport {
    /// Guest clock minus host clock, nanoseconds, corrected for half the round trip.
    pub offset_ns: i64,
    /// Round trip of the best sample (the uncertainty of the offset is half of it), nanoseconds.
    pub rtt_ns: u64,
    /// The guest's clock at the best sample, nanoseconds since the Unix epoch.
    pub guest_unix_ns: i64,
    /// Samples taken.
    pub samples: u32,
    /// The guest clock was stepped by `-offset_ns` (`--sync`).
    #[serde(default)]
    pub synced: bool,
}

/// NTP-style offset of one sample: `guest` read between host times `t0`
/// (request sent) and `t1` (answer received), all nanoseconds.
/// Returns (offset, round trip).
pub fn sample_offset(t0: i64, guest: i64, t1: i64) -> (i64, u64) {
    let rtt = t1.saturating_sub(t0).max(0);
    let midpoint = t0.saturating_add(rtt / 2);
    (guest.saturating_sub(midpoint), rtt as u64)
}

/// The pool replaced by the host in one push (`kvp_replace`).
pub type KvpEntries = BTreeMap<String, String>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{Call, Control, Request};
    use crate::BuiltinService;

    #[test]
    fn pools_parse_by_name_and_hyperv_number() {
        assert_eq!("external".parse::<KvpPool>().unwrap(), KvpPool::External);
        assert_eq!("1".parse::<KvpPool>().unwrap(), KvpPool::Guest);
        assert_eq!("auto".parse::<KvpPool>().unwrap(), KvpPool::Auto);
        let err = "intrinsic".parse::<KvpPool>().unwrap_err().to_string();
        assert!(err.contains("external (0)"), "{err}");
    }

    #[test]
    fn keys_and_values_are_bounded_at_exactly_the_limits() {
        assert!(check_key(&"k".repeat(MAX_KVP_KEY_BYTES)).is_ok());
        assert_eq!(
            check_key(&"k".repeat(MAX_KVP_KEY_BYTES + 1)),
            Err(KvpError::KeyTooLong(513))
        );
        assert!(check_value(&"v".repeat(MAX_KVP_VALUE_BYTES)).is_ok());
        assert_eq!(
            check_value(&"v".repeat(MAX_KVP_VALUE_BYTES + 1)),
            Err(KvpError::ValueTooLong(2049))
        );
        // Bytes, not characters: 1,024 two-byte characters are 2,048 bytes.
        assert!(check_value(&"é".repeat(1024)).is_ok());
        assert!(check_value(&"é".repeat(1025)).is_err());
        assert_eq!(check_key(""), Err(KvpError::EmptyKey));
        assert!(check_key("a\nb").is_err());
        assert!(check_value("a\nb\tc").is_ok());
        assert!(check_value("a\0b").is_err());
    }

    #[test]
    fn read_only_errors_name_the_writer() {
        let e = KvpError::ReadOnly {
            pool: KvpPool::External,
            side: KvpSide::Guest,
        };
        assert_eq!(
            e.to_string(),
            "pool external is read-only for guest programs: only the host write it"
        );
        let e = KvpError::ReadOnly {
            pool: KvpPool::Auto,
            side: KvpSide::Host,
        };
        assert!(e.to_string().contains("the agent fills it"), "{e}");
    }

    #[test]
    fn offset_is_corrected_by_half_the_round_trip() {
        // Sent at 1000, answered at 1200; the guest read 1100 + 5000.
        assert_eq!(sample_offset(1000, 6100, 1200), (5000, 200));
        // A host clock that went backwards counts as no round trip.
        assert_eq!(sample_offset(1000, 900, 990), (-100, 0));
    }

    #[test]
    fn calls_and_answers_have_the_documented_json_shape() {
        let req = Control::Request(Request {
            service: BuiltinService::KeyValue.id(),
            call: Call::KvpSet {
                pool: KvpPool::Guest,
                key: "k".into(),
                value: "v".into(),
            },
        });
        let json = serde_json::to_value(&req).unwrap();
        assert_eq!(json["call"]["op"], "kvp_set");
        assert_eq!(json["call"]["pool"], "guest");
        let json = serde_json::to_value(Control::TimeSample { guest_unix_ns: 5 }).unwrap();
        assert_eq!(json["type"], "time_sample");
        let shutdown: Call = serde_json::from_str(r#"{"op":"shutdown","reboot":true}"#).unwrap();
        assert_eq!(
            shutdown,
            Call::Shutdown(ShutdownRequest {
                reboot: true,
                ..Default::default()
            })
        );
        let info: Control =
            serde_json::from_str(r#"{"type":"guest_info","hostname":"h"}"#).unwrap();
        let Control::GuestInfo(info) = info else {
            panic!("not guest info")
        };
        assert_eq!(info.hostname, "h");
    }
}
