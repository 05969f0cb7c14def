//! The API's closed sets of words, each an enum: the stable code of every
//! error answer ([`ApiErrorCode`]), the status of a VM's agent
//! ([`HealthStatus`]) and where a libvirt domain's key is ([`DomainKey`]). On the wire each is the same JSON string as ever;
//! a word this version does not know (a newer daemon's) reads as `Other`
//! with its text, never as a decoding failure.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An enum of known words plus `Other(String)`: `as_str` and the parse come
/// from the one list, so the two cannot drift apart.
macro_rules! wire_words {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $( $(#[$variant_meta:meta])* $variant:ident = $text:literal, )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash)]
        pub enum $name {
            $( $(#[$variant_meta])* $variant, )*
            /// A word this version does not know (a newer daemon's), as sent.
            Other(String),
        }

        impl $name {
            /// Every word this version knows.
            pub const KNOWN: &'static [Self] = &[$(Self::$variant),*];

            /// The word on the wire.
            pub fn as_str(&self) -> &str {
                match self {
                    $( Self::$variant => $text, )*
                    Self::Other(text) => text,
                }
            }

            /// The word `text` stands for; [`Self::Other`] when unknown.
            pub fn from_wire(text: &str) -> Self {
                match text {
                    $( $text => Self::$variant, )*
                    other => Self::Other(other.to_string()),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                String::deserialize(deserializer).map(|text| Self::from_wire(&text))
            }
        }
    };
}

wire_words! {
    /// The stable, machine-readable kind of an error answer
    /// ([`ErrorBody::code`](crate::ErrorBody::code)).
    pub enum ApiErrorCode {
        /// No such VM, service, key or endpoint.
        NotFound = "not_found",
        /// It exists already, or the guest's state forbids it now.
        Conflict = "conflict",
        /// A built-in service cannot be unregistered.
        BuiltinService = "builtin_service",
        /// The request or one of its parameters is invalid.
        InvalidArgument = "invalid_argument",
        /// The caller may not do this (role, scope, read-only pool).
        PermissionDenied = "permission_denied",
        /// A policy (the VM's argument policy, or the agent's) refuses it.
        PolicyDenied = "policy_denied",
        /// The service is disabled for the VM.
        ServiceDisabled = "service_disabled",
        /// The VM's agent could not be reached.
        AgentUnreachable = "agent_unreachable",
        /// A port in the guest could not be reached.
        GuestUnreachable = "guest_unreachable",
        /// The VM's agent failed the request.
        AgentFailed = "agent_failed",
        /// The agent does not support the request.
        UnsupportedRequest = "unsupported_request",
        /// A limit of the guest or of the daemon was reached.
        ResourceLimit = "resource_limit",
        /// A bug, or the daemon's state store failed.
        Internal = "internal",
        /// Made by the client, never sent: the answer was not an error body.
        Http = "http",
    }
}

wire_words! {
    /// The CIM status of a VM's agent, as the health monitor sees it
    /// ([`Health::status`](crate::Health::status)).
    pub enum HealthStatus {
        /// The agent answers.
        Ok = "OK",
        /// Before the first contact, or while the guest does not answer at
        /// all (paused or hung, as Hyper-V shows a paused VM's heartbeat).
        NoContact = "No Contact",
        /// An agent that answered before cannot be reached or refuses.
        LostComm = "Lost Comm",
        /// The VM is paused (its hypervisor says so: `guestcommd --libvirt`),
        /// so its agent cannot answer; not probed until it resumes.
        Paused = "Paused",
        /// The VM is not running (its hypervisor says so: `guestcommd
        /// --libvirt`); not probed until it starts.
        Off = "Off",
    }
}

impl Default for HealthStatus {
    /// Nothing known yet.
    fn default() -> Self {
        Self::NoContact
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_code_keeps_its_wire_string() {
        let expected = [
            "not_found",
            "conflict",
            "builtin_service",
            "invalid_argument",
            "permission_denied",
            "policy_denied",
            "service_disabled",
            "agent_unreachable",
            "guest_unreachable",
            "agent_failed",
            "unsupported_request",
            "resource_limit",
            "internal",
            "http",
        ];
        let words: Vec<&str> = ApiErrorCode::KNOWN
            .iter()
            .map(ApiErrorCode::as_str)
            .collect();
        assert_eq!(words, expected);
        for code in ApiErrorCode::KNOWN {
            let json = serde_json::to_string(code).unwrap();
            assert_eq!(json, format!("\"{code}\""));
            assert_eq!(&serde_json::from_str::<ApiErrorCode>(&json).unwrap(), code);
        }
    }

    #[test]
    fn every_health_status_keeps_its_wire_string() {
        let words: Vec<&str> = HealthStatus::KNOWN
            .iter()
            .map(HealthStatus::as_str)
            .collect();
        assert_eq!(words, ["OK", "No Contact", "Lost Comm", "Paused", "Off"]);
        for status in HealthStatus::KNOWN {
            let json = serde_json::to_string(status).unwrap();
            assert_eq!(json, format!("\"{status}\""));
            assert_eq!(
                &serde_json::from_str::<HealthStatus>(&json).unwrap(),
                status
            );
        }
        assert_eq!(HealthStatus::default(), HealthStatus::NoContact);
    }

    #[test]
    fn a_word_from_a_newer_daemon_is_kept_not_refused() {
        let code: ApiErrorCode = serde_json::from_str("\"quota_exceeded\"").unwrap();
        assert_eq!(code, ApiErrorCode::Other("quota_exceeded".into()));
        assert_eq!(serde_json::to_string(&code).unwrap(), "\"quota_exceeded\"");
        let status: HealthStatus = serde_json::from_str("\"Degraded\"").unwrap();
        assert_eq!(status.as_str(), "Degraded");
        let escaped: HealthStatus = serde_json::from_str(r#""No\u0020Contact""#).unwrap();
        assert_eq!(
            escaped,
            HealthStatus::NoContact,
            "an escaped string reads the same"
        );
        assert!(
            serde_json::from_str::<ApiErrorCode>("5").is_err(),
            "not a string"
        );
    }
}

wire_words! {
    /// Whether the libvirt domain a VM follows carries the VM's key, its
    /// firmware configuration credential entry
    /// ([`Vm::domain_key`](crate::Vm::domain_key)).
    pub enum DomainKey {
        /// The running (or paused) domain has the entry: its guest can read the key.
        InRunningDomain = "in-running-domain",
        /// Only its definition has the entry: the guest gets it once the
        /// domain is shut down and started again.
        RestartNeeded = "restart-needed",
        /// The domain is off and its definition has the entry: the guest
        /// gets it at the next start.
        AtNextStart = "at-next-start",
        /// Neither the domain nor its definition has the entry (a transient
        /// domain, or the entry was removed): deliver the key otherwise.
        NotInDomain = "not-in-domain",
    }
}
