//! Service addressing by GUID, as Hyper-V sockets do.
//!
//! A guest communication service is named by a GUID. Linux guests on Hyper-V
//! (`hv_sock`) only accept service GUIDs built from the VSOCK template
//! `PPPPPPPP-facb-11e6-bd58-64006a7986d3`, whose first 32 bits are the vsock
//! port. Every built-in guestcomm service has a GUID of that form, so the same
//! identifier works over vsock, hybrid vsock and hv_sock unchanged.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The bytes 4..16 of every GUID derived from a vsock port (the VSOCK template).
const VSOCK_TEMPLATE_TAIL: [u8; 12] = [
    0xfa, 0xcb, 0x11, 0xe6, 0xbd, 0x58, 0x64, 0x00, 0x6a, 0x79, 0x86, 0xd3,
];

/// A GUID that names a guest communication service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ServiceId(Uuid);

/// Why a string is not a service GUID.
#[derive(Debug, thiserror::Error)]
#[error("invalid service GUID {input:?}: expected the form xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx, braces optional")]
pub struct ServiceIdError {
    input: String,
}

impl ServiceId {
    /// Wraps any GUID (registered services may use GUIDs outside the VSOCK template).
    pub const fn from_uuid(uuid: Uuid) -> Self {
        Self(uuid)
    }

    /// The GUID of vsock port `port`: the VSOCK template with Data1 = `port`.
    pub const fn from_vsock_port(port: u32) -> Self {
        let p = port.to_be_bytes();
        let t = VSOCK_TEMPLATE_TAIL;
        Self(Uuid::from_bytes([
            p[0], p[1], p[2], p[3], t[0], t[1], t[2], t[3], t[4], t[5], t[6], t[7], t[8], t[9],
            t[10], t[11],
        ]))
    }

    /// The vsock port this GUID stands for, if it follows the VSOCK template.
    pub fn vsock_port(&self) -> Option<u32> {
        let b = self.0.as_bytes();
        if b[4..] == VSOCK_TEMPLATE_TAIL {
            Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        } else {
            None
        }
    }

    /// The GUID itself.
    pub const fn as_uuid(&self) -> &Uuid {
        &self.0
    }

    /// The built-in service this GUID names, if any.
    pub fn builtin(&self) -> Option<BuiltinService> {
        BuiltinService::ALL.into_iter().find(|s| s.id() == *self)
    }
}

impl fmt::Display for ServiceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

impl FromStr for ServiceId {
    type Err = ServiceIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let trimmed = s.trim();
        let inner = trimmed
            .strip_prefix('{')
            .and_then(|t| t.strip_suffix('}'))
            .unwrap_or(trimmed);
        // Only the hyphenated form: a bare 32-digit hex string is too easy to mistype.
        if inner.len() != 36 {
            return Err(ServiceIdError { input: s.into() });
        }
        Uuid::parse_str(inner)
            .map(Self)
            .map_err(|_| ServiceIdError { input: s.into() })
    }
}

/// The vsock port the agent listens on by default (Data1 of [`BuiltinService::Agent`]).
///
/// 0x4743 is "GC" in ASCII; the built-in services take the ports just above it.
pub const AGENT_VSOCK_PORT: u32 = 0x4743;

/// The services built into guestcomm, each with a GUID in the VSOCK template.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BuiltinService {
    /// The agent endpoint itself: handshake, and the port every request arrives on.
    Agent,
    /// Run commands with streamed stdin, stdout and stderr.
    Exec,
    /// Copy files and directories in and out of the guest.
    Files,
    /// Key-value pair exchange.
    KeyValue,
    /// Graceful shutdown and reboot.
    Shutdown,
    /// Time synchronization.
    Time,
    /// Heartbeat and health.
    Heartbeat,
    /// Guest information (OS, network, filesystems, users).
    GuestInfo,
    /// Filesystem freeze and thaw for consistent backups.
    FsFreeze,
}

impl BuiltinService {
    /// Every built-in service, in port order.
    pub const ALL: [BuiltinService; 9] = [
        Self::Agent,
        Self::Exec,
        Self::Files,
        Self::KeyValue,
        Self::Shutdown,
        Self::Time,
        Self::Heartbeat,
        Self::GuestInfo,
        Self::FsFreeze,
    ];

    /// The vsock port (Data1 of the GUID) of this service.
    pub const fn vsock_port(self) -> u32 {
        AGENT_VSOCK_PORT
            + match self {
                Self::Agent => 0,
                Self::Exec => 1,
                Self::Files => 2,
                Self::KeyValue => 3,
                Self::Shutdown => 4,
                Self::Time => 5,
                Self::Heartbeat => 6,
                Self::GuestInfo => 7,
                Self::FsFreeze => 8,
            }
    }

    /// The service GUID.
    pub const fn id(self) -> ServiceId {
        ServiceId::from_vsock_port(self.vsock_port())
    }

    /// The short name used on the command line and in logs.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Agent => "agent",
            Self::Exec => "exec",
            Self::Files => "files",
            Self::KeyValue => "kvp",
            Self::Shutdown => "shutdown",
            Self::Time => "time",
            Self::Heartbeat => "heartbeat",
            Self::GuestInfo => "info",
            Self::FsFreeze => "fsfreeze",
        }
    }

    /// The friendly name, as Hyper-V's `ElementName`.
    pub const fn element_name(self) -> &'static str {
        match self {
            Self::Agent => "guestcomm Agent",
            Self::Exec => "guestcomm Command Execution",
            Self::Files => "guestcomm File Copy",
            Self::KeyValue => "guestcomm Key-Value Pair Exchange",
            Self::Shutdown => "guestcomm Shutdown",
            Self::Time => "guestcomm Time Synchronization",
            Self::Heartbeat => "guestcomm Heartbeat",
            Self::GuestInfo => "guestcomm Guest Information",
            Self::FsFreeze => "guestcomm Filesystem Freeze",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_2761_maps_to_the_documented_hyperv_guid() {
        let id = ServiceId::from_vsock_port(2761);
        assert_eq!(id.to_string(), "00000ac9-facb-11e6-bd58-64006a7986d3");
        assert_eq!(id.vsock_port(), Some(2761));
    }

    #[test]
    fn port_and_guid_round_trip_at_the_extremes() {
        for port in [0, 1, 0x4743, 0x8000_0000, u32::MAX] {
            assert_eq!(ServiceId::from_vsock_port(port).vsock_port(), Some(port));
        }
    }

    #[test]
    fn guid_outside_the_template_has_no_port() {
        let id: ServiceId = "{0e0b6031-5213-4934-818b-38d90ced39db}".parse().unwrap();
        assert_eq!(id.vsock_port(), None);
        assert_eq!(id.builtin(), None);
    }

    #[test]
    fn parse_accepts_braces_and_upper_case() {
        let id: ServiceId = "{00004744-FACB-11E6-BD58-64006A7986D3}".parse().unwrap();
        assert_eq!(id, BuiltinService::Exec.id());
        assert_eq!(id.builtin(), Some(BuiltinService::Exec));
    }

    #[test]
    fn parse_rejects_malformed_guids_with_the_expected_form() {
        for bad in [
            "",
            "exec",
            "00004744facb11e6bd5864006a7986d3",
            "00004744-facb-11e6-bd58-64006a7986dz",
        ] {
            let err = bad.parse::<ServiceId>().unwrap_err().to_string();
            assert!(err.contains("xxxxxxxx-xxxx"), "{err}");
        }
    }

    #[test]
    fn builtin_services_have_distinct_ports_and_names() {
        let mut ports: Vec<u32> = BuiltinService::ALL.iter().map(|s| s.vsock_port()).collect();
        ports.dedup();
        assert_eq!(ports.len(), BuiltinService::ALL.len());
        for s in BuiltinService::ALL {
            assert_eq!(s.id().builtin(), Some(s));
        }
    }

    #[test]
    fn service_id_serializes_as_a_plain_guid_string() {
        let json = serde_json::to_string(&BuiltinService::Exec.id()).unwrap();
        assert_eq!(json, "\"00004744-facb-11e6-bd58-64006a7986d3\"");
    }
}
