//! Request and response bodies of the API, as JSON.
//!
//! Inventory and registry objects use snake_case; the management objects
//! ([`GuestCommunicationService`]) use the CIM property names of
//! Msvm_GuestCommunicationService (see docs/MANAGEMENT.md).

use guestcomm_protocol::ServiceId;
use guestcomm_transport::Address;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::vocabulary::{ApiErrorCode, DomainKey, HealthStatus};

pub use guestcomm_protocol::integration::{
    FreezeStatus, GuestInfo, KvpEntries, ShutdownRequest, TimeReport,
};

/// `POST /v1/vms`: add a VM to the inventory.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddVm {
    /// Unique name.
    pub name: String,
    /// The agent's transport address (`vsock://CID:PORT`, `hvsock-uds:///path`, ...).
    /// Text: the daemon parses it itself, so that a bad one is refused with
    /// its own message and audited under the VM's name.
    pub endpoint: String,
    /// How the daemon authenticates to this VM's agent.
    #[serde(default)]
    pub credentials: NewCredentials,
}

/// The key for a new VM.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "mode", deny_unknown_fields)]
pub enum NewCredentials {
    /// A new random key for vsock and hybrid vsock endpoints (whose agents
    /// must have credentials); none for unix and tcp endpoints.
    #[default]
    Auto,
    /// A new random key, whatever the endpoint.
    Generate,
    /// This key (64 hex digits), e.g. one already baked into the VM's image.
    Import {
        /// The key, hex.
        key: String,
    },
    /// No key: only for unix and tcp endpoints.
    None,
}

/// `GET /v1/vms/{name}/credentials`: the guest side of the VM's key, in the
/// credentials file format (`guestcomm-agent --credentials`).
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    /// Always `psk-hmac-sha256`.
    pub method: String,
    /// The key, hex: a secret.
    pub key: String,
}

/// `PATCH /v1/vms/{name}`: the VM's guest service interface settings
/// (Msvm_GuestServiceInterfaceComponentSettingData); absent fields keep their value.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateVm {
    /// Turn the guest service interface on or off (off disables every service).
    #[serde(default)]
    pub interface_enabled: Option<bool>,
    /// DefaultEnabledStatePolicy: 2 Enabled or 3 Disabled.
    #[serde(default)]
    pub default_enabled_state_policy: Option<u16>,
}

/// A VM in the inventory, with its health.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Vm {
    /// The VM's identity (CIM SystemName of its guest services).
    pub id: Uuid,
    /// Unique name.
    pub name: String,
    /// The agent's transport address, in its canonical form.
    pub endpoint: Address,
    /// The guest service interface (Msvm_GuestServiceInterfaceComponent) is on.
    pub interface_enabled: bool,
    /// DefaultEnabledStatePolicy: state of services whose policy is Deferred (2 or 3).
    pub default_enabled_state_policy: u16,
    /// When it was added, seconds since the Unix epoch.
    pub created_at: i64,
    /// The daemon holds a key for this VM and its agent must prove it too.
    #[serde(default)]
    pub authenticated: bool,
    /// Health, from the monitor.
    pub health: Health,
    /// For a VM following a libvirt domain (`guestcommd --libvirt`):
    /// whether the domain carries the VM's key; absent for other VMs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain_key: Option<DomainKey>,
}

/// What the health monitor knows about a VM's agent.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Health {
    /// CIM status: "OK"; "No Contact" before the first contact or while the
    /// guest does not answer at all (paused or hung, as Hyper-V shows a
    /// paused VM's heartbeat); "Lost Comm" once an agent that answered
    /// before cannot be reached or refuses; "Paused" or "Off" while the
    /// VM's hypervisor says so (`guestcommd --libvirt`).
    pub status: HealthStatus,
    /// Why the last probe failed, as a class (absent while the agent
    /// answers): which part of the path to the agent is at fault.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<HealthDetail>,
    /// Last successful probe, milliseconds since the Unix epoch.
    pub last_contact_ms: Option<u64>,
    /// Round-trip time of the last successful probe (connect + handshake), microseconds.
    pub rtt_us: Option<u64>,
    /// The agent's name and version, from its Welcome.
    pub agent_version: Option<String>,
    /// Why the last probe failed, if it did.
    pub last_error: Option<String>,
}

/// Which part of the path to a VM's agent failed its last probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthDetail {
    /// The VMM's socket or the vsock connection cannot be reached: the VM
    /// (or its vsock backend) is not running.
    TransportUnreachable,
    /// The guest answers, but nothing listens on the agent's port: the
    /// agent is not running in the guest.
    AgentNotListening,
    /// Connected, but no handshake within the probe's deadline: the guest
    /// is paused or hung, or the agent is stuck.
    AgentNotAnswering,
    /// The agent refused the daemon: authentication (wrong or missing key).
    AgentRefusing,
    /// The agent answered with something other than a handshake.
    AgentError,
}

impl HealthDetail {
    /// One line for people.
    pub fn describe(self) -> &'static str {
        match self {
            Self::TransportUnreachable => {
                "transport unreachable: the VMM's socket or the vsock connection fails (VM or vsock backend not running?)"
            }
            Self::AgentNotListening => {
                "agent not listening: the guest answers, but nothing listens on the agent's port"
            }
            Self::AgentNotAnswering => {
                "agent not answering: connected, but no handshake within the deadline (guest paused or hung?)"
            }
            Self::AgentRefusing => "agent refusing: authentication failed (do the keys match?)",
            Self::AgentError => "agent error: the agent did not complete the handshake",
        }
    }
}

/// `POST /v1/services`: register a guest communication service.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterService {
    /// The service GUID. Text, as `host_endpoint`: the daemon parses both
    /// itself, so that a bad one is refused with its own message and
    /// audited under the service.
    pub id: String,
    /// Friendly name (ElementName).
    pub element_name: String,
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// Where guest-initiated connections to this service are relayed on the
    /// host (`unix:///path` or `tcp://127.0.0.1:PORT`); hybrid vsock VMs only.
    #[serde(default)]
    pub host_endpoint: Option<String>,
}

/// A registration (host-wide), built-in or registered.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ServiceRegistration {
    /// The service GUID.
    pub id: ServiceId,
    /// Friendly name (ElementName).
    pub element_name: String,
    /// Free text.
    pub description: String,
    /// Built into guestcomm (cannot be unregistered).
    pub builtin: bool,
    /// Host-wide switch: when false the service is disabled on every VM.
    pub enabled: bool,
    /// When it was registered, seconds since the Unix epoch.
    pub installed_at: i64,
    /// Where guest-initiated connections are relayed on the host, if anywhere.
    pub host_endpoint: Option<Address>,
}

/// A per-VM (or host-wide) enablement request.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetPolicy {
    /// The VM; absent for the host-wide switch.
    #[serde(default)]
    pub vm: Option<String>,
    /// 2 Enabled, 3 Disabled, 8 Deferred (Deferred only per VM).
    pub policy: u16,
}

/// `POST .../RequestStateChange`, as the CIM method.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestStateChange {
    /// 2 Enabled or 3 Disabled; anything else is "not supported".
    #[serde(rename = "RequestedState")]
    pub requested_state: u16,
}

/// The result of a CIM method call.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MethodResult {
    /// 0 completed, 1 not supported, 32775 invalid state.
    #[serde(rename = "ReturnValue")]
    pub return_value: u32,
}

/// One Msvm_GuestCommunicationService instance: a service on one VM.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
#[allow(missing_docs)] // The CIM property names are documented in docs/MANAGEMENT.md.
pub struct GuestCommunicationService {
    pub caption: String,
    pub creation_class_name: String,
    pub description: String,
    pub element_name: String,
    /// CIM datetime `yyyymmddhhmmss.mmmmmm+000`.
    pub install_date: Option<String>,
    /// The service GUID.
    pub name: String,
    pub started: bool,
    pub start_mode: String,
    pub status: String,
    pub system_creation_class_name: String,
    /// The VM's GUID.
    pub system_name: String,
    pub enabled_state: u16,
    pub requested_state: u16,
    /// guestcomm extension: the VM's name (not a CIM property).
    #[serde(rename = "guestcomm_vm_name")]
    pub vm_name: String,
}

/// `PUT /v1/vms/{name}/kvp/external/{key}`: the new value.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KvpValue {
    /// Up to 2,048 bytes of UTF-8.
    pub value: String,
}

/// `GET /v1/vms/{name}/kvp/{pool}/{key}`: one key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvpPair {
    /// The pool.
    pub pool: String,
    /// The key.
    pub key: String,
    /// Its value.
    pub value: String,
}

/// The answer to a change of the external pool: stored, and whether the
/// VM's agent has it yet (otherwise it gets it at its next contact).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvpWrite {
    /// The agent received the new pool.
    pub delivered: bool,
    /// Why not, when it did not.
    #[serde(default)]
    pub pending_reason: Option<String>,
}

/// `POST /v1/vms/{name}/fs/freeze` and `.../thaw`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FsRequest {
    /// Mount points; empty for every one (freeze: that can freeze; thaw: frozen).
    #[serde(default)]
    pub mountpoints: Vec<String>,
    /// Freeze only: thaw automatically after this many seconds (default 60, at most 600).
    #[serde(default)]
    pub timeout_s: Option<u64>,
}

/// `POST /v1/vms/{name}/shutdown`: the guest's acknowledgement.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShutdownAnswer {
    /// What the guest acknowledged, e.g. `poweroff (graceful)`.
    pub acknowledged: String,
}

/// Percent-encodes `text` for one path segment (everything but RFC 3986's
/// unreserved characters), so a key may hold any character.
pub fn encode_path_segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The body of every error response.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Stable, machine-readable kind: `not_found`, `conflict`, `invalid_argument`, ...
    pub code: ApiErrorCode,
    /// The whole error chain on one line, joined by ": ".
    pub error: String,
    /// The chain, outermost first.
    pub chain: Vec<String>,
    /// With `permission_denied` (HTTP 403): the role the call needs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub required_role: Option<Role>,
}

/// A role on the daemon's API; each includes the ones below it
/// (`admin` ⊇ `operator` ⊇ `viewer`), so they compare with `<`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads: list, show, status, info, the audit log.
    Viewer,
    /// Acts on guests: exec, cp, connect, kvp, shutdown, time, fs.
    Operator,
    /// Changes the host: VMs, services, policies, credentials.
    Admin,
}

impl Role {
    /// Every role, lowest first.
    pub const ALL: [Role; 3] = [Role::Viewer, Role::Operator, Role::Admin];

    /// The lowercase name, as in the configuration file.
    pub fn name(self) -> &'static str {
        match self {
            Self::Viewer => "viewer",
            Self::Operator => "operator",
            Self::Admin => "admin",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// `PUT /v1/vms/{name}/policy`: the VM's new argument-level policy.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetVmPolicy {
    /// The document, TOML or JSON text (see `guestcomm_policy`);
    /// empty: no restriction.
    pub document: String,
}

/// One record of the audit log (`GET /v1/audit`): who did what to which
/// VM, and how it ended.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Sequence number, increasing.
    pub id: i64,
    /// When the operation started, milliseconds since the Unix epoch.
    pub time_ms: i64,
    /// The caller's user id (`SO_PEERCRED`).
    pub uid: Option<u32>,
    /// The caller's group id.
    pub gid: Option<u32>,
    /// The caller's process id.
    pub pid: Option<i32>,
    /// The caller's client certificate, `sha256:...` (TCP API).
    #[serde(default)]
    pub certificate: Option<String>,
    /// The VM, when the operation names one.
    pub vm: Option<String>,
    /// The service GUID, when the operation names one.
    pub service: Option<String>,
    /// What was asked: `exec`, `cp.to_guest`, `vm.add`, `policy.set`, ...
    pub operation: String,
    /// The command line, the paths, or the query; cut and followed by a
    /// SHA-256 digest when long. Never a secret.
    pub arguments: String,
    /// The environment an exec set: names and a digest, never a value.
    #[serde(default)]
    pub environment: Option<AuditEnvironment>,
    /// How it ended.
    pub outcome: AuditOutcome,
    /// The guest command's exit code (exec).
    pub exit_code: Option<i32>,
    /// Bytes moved in both directions (relayed operations).
    pub bytes: Option<u64>,
    /// Why it was refused or failed.
    pub error: Option<String>,
    /// How long it took, milliseconds.
    pub duration_ms: u64,
}

/// The environment variables an exec request set, as the audit log keeps
/// them: the names, and one digest standing for the values, so that a
/// secret passed in the environment is never stored.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEnvironment {
    /// The variables' names, sorted; when together longer than 1 KiB, the
    /// first ones that fit (`count` says how many there were).
    pub names: Vec<String>,
    /// How many variables the request set.
    pub count: usize,
    /// SHA-256, hex, over every `name=value` of the request, sorted by
    /// name, each followed by a NUL byte: equal digests mean the same
    /// environment, and a value can be confirmed by whoever knows it.
    pub sha256: String,
}

/// `GET /v1/audit/verify`: whether the audit log's hash chains are intact
/// from their anchors (guestcommd's module `audit_chain`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditVerification {
    /// No problem found.
    pub intact: bool,
    /// Each chain's anchor, head and records.
    pub chains: Vec<AuditChainState>,
    /// What was found, up to a bound.
    pub problems: Vec<AuditProblem>,
    /// Problems beyond those listed.
    #[serde(default)]
    pub more_problems: u64,
}

/// One hash chain of the audit log.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditChainState {
    /// `operations` or `refusals-without-role`.
    pub chain: String,
    /// Position of the last record pruned (0: none yet).
    pub anchor_seq: i64,
    /// That record's digest, `sha256:...` (zeros: none yet).
    pub anchor_digest: String,
    /// Position of the newest record.
    pub head_seq: i64,
    /// Its digest, `sha256:...`; the daemon's log carries it too.
    pub head_digest: String,
    /// Records found in the chain.
    pub records: u64,
}

/// A record deleted, altered or inserted out of order.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditProblem {
    /// The chain.
    pub chain: String,
    /// The record concerned, when there is one.
    pub id: Option<i64>,
    /// Its position in the chain, when known.
    pub seq: Option<i64>,
    /// What is wrong.
    pub problem: String,
}

/// How an audited operation ended.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditOutcome {
    /// Done.
    #[default]
    Ok,
    /// Refused by a role, a policy or the service registry.
    Refused,
    /// Allowed but failed (agent unreachable, bad request, guest error).
    Failed,
    /// Still running (a relayed operation).
    Running,
    /// Was running when guestcommd stopped.
    Interrupted,
    /// A relayed copy that moved no byte for guestcommd's idle bound
    /// (`--copy-idle-timeout`): closed both ways.
    Stalled,
}

impl AuditOutcome {
    /// The snake_case name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Refused => "refused",
            Self::Failed => "failed",
            Self::Running => "running",
            Self::Interrupted => "interrupted",
            Self::Stalled => "stalled",
        }
    }

    /// The outcome named `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        [
            Self::Ok,
            Self::Refused,
            Self::Failed,
            Self::Running,
            Self::Interrupted,
            Self::Stalled,
        ]
        .into_iter()
        .find(|o| o.name() == name)
    }
}

/// Longest VM name, in bytes (a DNS label's limit: names often become host names).
pub const MAX_VM_NAME_BYTES: usize = 63;

/// Checks a VM name: 1 to [`MAX_VM_NAME_BYTES`] ASCII letters, digits, `-`,
/// `_` or `.`, starting with a letter or digit (so it can never look like a
/// transport address or an option).
pub fn validate_vm_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_VM_NAME_BYTES {
        return Err(format!(
            "invalid VM name {name:?}: must be 1 to {MAX_VM_NAME_BYTES} characters long"
        ));
    }
    let ok_first = name.as_bytes()[0].is_ascii_alphanumeric();
    let ok_rest = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if !(ok_first && ok_rest) {
        return Err(format!(
            "invalid VM name {name:?}: use letters, digits, '-', '_' and '.', starting with a letter or digit"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_ordered_and_named_in_lowercase() {
        assert!(Role::Viewer < Role::Operator && Role::Operator < Role::Admin);
        assert_eq!(
            serde_json::to_string(&Role::Operator).unwrap(),
            "\"operator\""
        );
        let body: ErrorBody =
            serde_json::from_str(r#"{"code":"x","error":"y","chain":[]}"#).unwrap();
        assert_eq!(body.required_role, None);
        assert_eq!(body.code, ApiErrorCode::Other("x".into()));
    }

    #[test]
    fn typed_fields_read_and_write_the_same_json() {
        let vm = serde_json::json!({
            "id": "6f9619ff-8b86-d011-b42d-00c04fc964ff",
            "name": "web1",
            "endpoint": "hvsock-uds:///run/web1.vsock?port=18243",
            "interface_enabled": true,
            "default_enabled_state_policy": 2,
            "created_at": 1,
            "authenticated": true,
            "health": {"status": "Lost Comm", "detail": "agent_not_listening",
                "last_contact_ms": 5, "rtt_us": null, "agent_version": null, "last_error": "x"},
        });
        let typed: Vm = serde_json::from_value(vm.clone()).unwrap();
        assert_eq!(typed.health.status, HealthStatus::LostComm);
        assert_eq!(serde_json::to_value(&typed).unwrap(), vm);
        let service = serde_json::json!({
            "id": "0e0b6031-5213-4934-818b-38d90ced39db",
            "element_name": "Echo",
            "description": "",
            "builtin": false,
            "enabled": true,
            "installed_at": 1,
            "host_endpoint": "tcp://127.0.0.1:7000",
        });
        let typed: ServiceRegistration = serde_json::from_value(service.clone()).unwrap();
        assert_eq!(serde_json::to_value(&typed).unwrap(), service);
        let mut bad = vm;
        bad["endpoint"] = "web1.sock".into();
        let err = serde_json::from_value::<Vm>(bad).unwrap_err().to_string();
        assert!(err.contains("unknown address"), "{err}");
    }

    #[test]
    fn path_segments_are_percent_encoded() {
        assert_eq!(encode_path_segment("a-b_c.d~"), "a-b_c.d~");
        assert_eq!(encode_path_segment("a/b c?é"), "a%2Fb%20c%3F%C3%A9");
    }

    #[test]
    fn vm_names_are_checked_for_length_and_characters() {
        for good in ["web1", "a", "db-2.prod_x", &"x".repeat(63)] {
            assert!(validate_vm_name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "-x",
            ".x",
            "a b",
            "a/b",
            "unix:///x",
            "é",
            &"x".repeat(64),
        ] {
            assert!(validate_vm_name(bad).is_err(), "{bad}");
        }
    }
}
