//! Typed control messages, carried as JSON in control frames.
//!
//! Every message is a JSON object with a `"type"` field. Unknown types and
//! unknown request operations decode to [`Control::Unknown`] and
//! [`Call::Unsupported`], so a newer peer gets a clear error, not a
//! malformed-frame failure.
//!
//! An exec operation, after the handshake:
//!
//! ```text
//! client                                        agent
//!   | -- Request {exec, program, args, ...} -->   |
//!   | <-- ExecStarted {pid} | Error {code} -----   |  spawn failed: error, last frame
//!   | -- data(stdin) ... Eof{stdin} ---------->   |  any time; Eof closes the pipe,
//!   |                                             |  stdin after it: Error
//!   |                                             |  unexpected_message
//!   | -- Resize {rows, cols} / Signal {n} ---->   |  any time
//!   | <-- data(stdout), data(stderr) ----------   |  interleaved, in order per stream
//!   | <-- Eof{stdout}, Eof{stderr} ------------   |  when each pipe closes
//!   | <-- Exited {code | signal, timed_out} ---   |  last frame: the client closes,
//!   |                                             |  then the agent (`closing`)
//! ```
//!
//! If the client's side closes before `Exited`, the agent kills the process
//! group: nothing outlives its caller.
//!
//! The file service's copies (`CopyToGuest`, `CopyFromGuest`, then `Entry`,
//! `EntryEnd`, `ResumeFrom`, `CopyEnd`, `CopySummary`) are described in
//! [`crate::files`]; the integration services' questions and answers in
//! [`crate::integration`].

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error_code::ErrorFrame;
use crate::files::{CopyFromGuest, CopySummary, CopyToGuest, Entry};
use crate::integration::{
    AgentCounters, FreezeStatus, GuestInfo, KvpEntries, KvpPool, ShutdownRequest,
};
use crate::service::{BuiltinService, ServiceId};
use crate::stream::StreamId;

/// A protocol version: peers must share the major number; the lower minor wins.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ProtocolVersion {
    /// Incompatible changes bump this.
    pub major: u16,
    /// Compatible additions bump this.
    pub minor: u16,
}

impl ProtocolVersion {
    /// The version this implementation speaks.
    pub const CURRENT: ProtocolVersion = ProtocolVersion { major: 1, minor: 0 };
}

impl fmt::Display for ProtocolVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// Every control message, in both directions.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Control {
    /// Client to server, first frame of every connection.
    Hello(Hello),
    /// Server to client: handshake accepted.
    Welcome(Welcome),
    /// Server to client, between Hello and Welcome when the method is
    /// `psk-hmac-sha256`: the server's nonce and its proof of the key.
    AuthChallenge {
        /// The method chosen.
        method: String,
        /// The server's nonce, hex.
        nonce: String,
        /// The server's proof, hex.
        proof: String,
    },
    /// Client to server, answering `AuthChallenge`: the client's proof.
    AuthResponse {
        /// The client's proof, hex.
        proof: String,
    },
    /// Client to server, first frame after the handshake: what to do.
    Request(Request),
    /// Either direction: the operation (or the handshake) failed; the
    /// sender's last frame (the reader closes first, see `closing`).
    Error(ErrorFrame),
    /// Server to client: the exec process started.
    ExecStarted {
        /// Process id in the guest.
        pid: u32,
    },
    /// Either direction: no more data will follow on this stream.
    Eof {
        /// The stream that ended.
        stream: StreamId,
    },
    /// Client to server: the terminal changed size (pty mode).
    Resize(WindowSize),
    /// Client to server: deliver this signal to the guest process group.
    Signal {
        /// Signal number (Linux numbering: 2 = SIGINT, 15 = SIGTERM, ...).
        signal: i32,
    },
    /// Server to client: the process ended and all its output was sent.
    Exited(ExitStatus),
    /// Server to client: the copy destination is acceptable; send entries.
    CopyReady,
    /// Sender to receiver: the next file, directory or symlink of a copy.
    Entry(Entry),
    /// Sender to receiver: the current file's content is complete.
    EntryEnd {
        /// BLAKE3 of the whole content, 64 lower-case hex digits.
        blake3: String,
    },
    /// Receiver to sender (resume only): the partial file holds `offset`
    /// bytes whose BLAKE3 is `blake3`; send the content from there.
    ResumeFrom {
        /// Bytes already held.
        offset: u64,
        /// BLAKE3 of those bytes.
        blake3: String,
    },
    /// Sender to receiver: no more entries.
    CopyEnd,
    /// Receiver to sender: every entry was stored; the last message of a copy.
    CopySummary(CopySummary),
    /// Agent to client: the answer to `guest_info`.
    GuestInfo(Box<GuestInfo>),
    /// Agent to client: the guest's clock (`time_query`, `time_step`).
    TimeSample {
        /// CLOCK_REALTIME in the guest, nanoseconds since the Unix epoch.
        guest_unix_ns: i64,
    },
    /// Agent to client: one key's value (`kvp_get`).
    KvpValue {
        /// The pool.
        pool: KvpPool,
        /// The key.
        key: String,
        /// Its value.
        value: String,
    },
    /// Agent to client: a whole pool (`kvp_list`).
    KvpEntries {
        /// The pool.
        pool: KvpPool,
        /// Every key and value.
        entries: KvpEntries,
    },
    /// Agent to client: the operation succeeded and has nothing to say.
    Done,
    /// Agent to client: the shutdown was accepted and starts after this frame.
    ShutdownAck {
        /// `poweroff` or `reboot`.
        action: String,
        /// `graceful` or `force`.
        mode: String,
    },
    /// Agent to client: the freeze state after `fs_freeze`, `fs_thaw`, `fs_status`.
    FsFreezeStatus(FreezeStatus),
    /// Agent to client: its counters, after `heartbeat`.
    AgentCounters(AgentCounters),
    /// A message type this version does not know.
    #[serde(other)]
    Unknown,
}

impl Control {
    /// The message's `"type"` on the wire (`"unknown"` for a type this
    /// version does not know).
    pub const fn kind(&self) -> &'static str {
        match self {
            Self::Hello(..) => "hello",
            Self::Welcome(..) => "welcome",
            Self::AuthChallenge { .. } => "auth_challenge",
            Self::AuthResponse { .. } => "auth_response",
            Self::Request(..) => "request",
            Self::Error(..) => "error",
            Self::ExecStarted { .. } => "exec_started",
            Self::Eof { .. } => "eof",
            Self::Resize(..) => "resize",
            Self::Signal { .. } => "signal",
            Self::Exited(..) => "exited",
            Self::CopyReady => "copy_ready",
            Self::Entry(..) => "entry",
            Self::EntryEnd { .. } => "entry_end",
            Self::ResumeFrom { .. } => "resume_from",
            Self::CopyEnd => "copy_end",
            Self::CopySummary(..) => "copy_summary",
            Self::GuestInfo(..) => "guest_info",
            Self::TimeSample { .. } => "time_sample",
            Self::KvpValue { .. } => "kvp_value",
            Self::KvpEntries { .. } => "kvp_entries",
            Self::Done => "done",
            Self::ShutdownAck { .. } => "shutdown_ack",
            Self::FsFreezeStatus(..) => "fs_freeze_status",
            Self::AgentCounters(..) => "agent_counters",
            Self::Unknown => "unknown",
        }
    }
}

/// Opens every connection.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    /// Always `"guestcomm"`: tells a stray client from a real one.
    pub protocol: String,
    /// The newest version the client speaks.
    pub version: ProtocolVersion,
    /// Optional features the client understands (e.g. `"pty"`).
    #[serde(default)]
    pub features: Vec<String>,
    /// Authentication methods the client offers. `"none"` means no
    /// credentials; `"psk-hmac-sha256"` a pre-shared key (see [`crate::auth`]).
    #[serde(default)]
    pub auth: Vec<String>,
    /// Who is connecting, for the guest's logs (e.g. `"guestcomm 0.1.0"`).
    #[serde(default)]
    pub client: String,
    /// The client's nonce (64 hex digits) when it offers `psk-hmac-sha256`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_nonce: Option<String>,
}

/// Accepts the handshake.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Welcome {
    /// The version both sides now speak.
    pub version: ProtocolVersion,
    /// Features the agent offers (`"exec"`, `"pty"`, ...).
    #[serde(default)]
    pub features: Vec<String>,
    /// The authentication method that was used.
    pub auth: String,
    /// The agent's name and version.
    #[serde(default)]
    pub agent: String,
}

/// Names the service and the operation of this connection.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Request {
    /// GUID of the service addressed.
    pub service: ServiceId,
    /// The operation and its parameters.
    pub call: Call,
}

/// The operations, one variant per request type.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Call {
    /// Run a program (service: exec).
    Exec(ExecRequest),
    /// Copy a file or tree into the guest; the client sends it (service: files).
    CopyToGuest(CopyToGuest),
    /// Copy a file or tree out of the guest; the agent sends it (service: files).
    CopyFromGuest(CopyFromGuest),
    /// OS, kernel, host name, resources, filesystems, network, users (service: info).
    GuestInfo,
    /// Read the guest clock (service: time).
    TimeQuery,
    /// Step the guest clock by `delta_ns` (service: time).
    TimeStep {
        /// Nanoseconds to add to CLOCK_REALTIME (negative: back).
        delta_ns: i64,
    },
    /// Read one key (service: kvp).
    KvpGet {
        /// The pool.
        pool: KvpPool,
        /// The key.
        key: String,
    },
    /// Write one key (service: kvp); only the pool's writer may.
    KvpSet {
        /// The pool.
        pool: KvpPool,
        /// The key.
        key: String,
        /// The value.
        value: String,
    },
    /// Remove one key (service: kvp); only the pool's writer may.
    KvpDelete {
        /// The pool.
        pool: KvpPool,
        /// The key.
        key: String,
    },
    /// Every key of a pool (service: kvp).
    KvpList {
        /// The pool.
        pool: KvpPool,
    },
    /// Replace the whole external pool (service: kvp): the daemon's push.
    KvpReplace {
        /// The new contents.
        entries: KvpEntries,
        /// The host's own data for Hyper-V's pool 3 (`HostName`,
        /// `VirtualMachineId`, `VirtualMachineName`): an agent keeping
        /// Hyper-V's pool files writes it to `.kvp_pool_3`. Absent from an
        /// older daemon; an older agent ignores it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        host_data: Option<KvpEntries>,
    },
    /// Power off or reboot (service: shutdown).
    Shutdown(ShutdownRequest),
    /// Freeze filesystems (service: fsfreeze); none named: every one that can.
    FsFreeze {
        /// Mount points; empty for all.
        #[serde(default)]
        mountpoints: Vec<String>,
        /// Thaw automatically after this many seconds.
        #[serde(default)]
        timeout_s: Option<u64>,
    },
    /// Thaw filesystems (service: fsfreeze); none named: every frozen one.
    FsThaw {
        /// Mount points; empty for all.
        #[serde(default)]
        mountpoints: Vec<String>,
    },
    /// What is frozen (service: fsfreeze).
    FsStatus,
    /// Whether the agent is there, and its own counters (service:
    /// heartbeat): the daemon's health probe asks after its handshake, and
    /// again on the connection it keeps.
    Heartbeat {
        /// Answer `agent_counters` (the default, and what an agent older
        /// than this member always answers); `false`: answer `done`, a
        /// liveness answer with nothing to build or parse.
        #[serde(default = "counters_wanted", skip_serializing_if = "is_true")]
        counters: bool,
    },
    /// An operation this version does not know.
    #[serde(other)]
    Unsupported,
}

/// `heartbeat`'s `counters` when absent: asked, as before the member existed.
const fn counters_wanted() -> bool {
    true
}

fn is_true(b: &bool) -> bool {
    *b
}

impl Call {
    /// The operation's `"op"` on the wire (`"unsupported"` for one this
    /// version does not know).
    pub const fn op(&self) -> &'static str {
        match self {
            Self::Exec(..) => "exec",
            Self::CopyToGuest(..) => "copy_to_guest",
            Self::CopyFromGuest(..) => "copy_from_guest",
            Self::GuestInfo => "guest_info",
            Self::TimeQuery => "time_query",
            Self::TimeStep { .. } => "time_step",
            Self::KvpGet { .. } => "kvp_get",
            Self::KvpSet { .. } => "kvp_set",
            Self::KvpDelete { .. } => "kvp_delete",
            Self::KvpList { .. } => "kvp_list",
            Self::KvpReplace { .. } => "kvp_replace",
            Self::Shutdown(..) => "shutdown",
            Self::FsFreeze { .. } => "fs_freeze",
            Self::FsThaw { .. } => "fs_thaw",
            Self::FsStatus => "fs_status",
            Self::Heartbeat { .. } => "heartbeat",
            Self::Unsupported => "unsupported",
        }
    }

    /// The service the operation belongs to (an unknown operation: the
    /// agent endpoint itself, which answers it with an error).
    pub const fn service(&self) -> BuiltinService {
        match self {
            Self::Exec(..) => BuiltinService::Exec,
            Self::CopyToGuest(..) | Self::CopyFromGuest(..) => BuiltinService::Files,
            Self::GuestInfo => BuiltinService::GuestInfo,
            Self::TimeQuery | Self::TimeStep { .. } => BuiltinService::Time,
            Self::KvpGet { .. }
            | Self::KvpSet { .. }
            | Self::KvpDelete { .. }
            | Self::KvpList { .. }
            | Self::KvpReplace { .. } => BuiltinService::KeyValue,
            Self::Shutdown(..) => BuiltinService::Shutdown,
            Self::FsFreeze { .. } | Self::FsThaw { .. } | Self::FsStatus => {
                BuiltinService::FsFreeze
            }
            Self::Heartbeat { .. } => BuiltinService::Heartbeat,
            Self::Unsupported => BuiltinService::Agent,
        }
    }
}

impl Request {
    /// The request for `call`, addressed to the service it belongs to.
    pub fn new(call: Call) -> Self {
        Self {
            service: call.service().id(),
            call,
        }
    }
}

/// A program to run in the guest.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ExecRequest {
    /// Program name (searched in `PATH`) or path.
    pub program: String,
    /// Arguments, without the program name.
    #[serde(default)]
    pub args: Vec<String>,
    /// Variables added to (or overriding) the agent's environment.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Working directory; the agent's own when absent.
    #[serde(default)]
    pub cwd: Option<String>,
    /// Run as this user (name or numeric uid); the agent's user when absent.
    #[serde(default)]
    pub user: Option<String>,
    /// Allocate a pseudo-terminal of this size; stderr then merges into stdout.
    #[serde(default)]
    pub tty: Option<WindowSize>,
    /// Kill the process group after this many milliseconds.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

/// A terminal size in character cells.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowSize {
    /// Lines.
    pub rows: u16,
    /// Columns.
    pub cols: u16,
}

/// How a guest process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitStatus {
    /// Exit code, when it exited normally.
    #[serde(default)]
    pub code: Option<i32>,
    /// Signal number, when a signal killed it.
    #[serde(default)]
    pub signal: Option<i32>,
    /// True when the agent killed it because the request's timeout expired.
    #[serde(default)]
    pub timed_out: bool,
}

impl ExitStatus {
    /// The status a shell would report: the code, or 128 + signal number.
    pub fn shell_code(&self) -> i32 {
        match (self.code, self.signal) {
            (Some(code), _) => code,
            (None, Some(sig)) => sig.saturating_add(128),
            (None, None) => 255,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_request_has_the_documented_json_shape() {
        let msg = Control::Request(Request {
            service: BuiltinService::Exec.id(),
            call: Call::Exec(ExecRequest {
                program: "echo".into(),
                args: vec!["hi".into()],
                ..Default::default()
            }),
        });
        let json: serde_json::Value = serde_json::to_value(&msg).unwrap();
        assert_eq!(json["type"], "request");
        assert_eq!(json["service"], "00004744-facb-11e6-bd58-64006a7986d3");
        assert_eq!(json["call"]["op"], "exec");
        assert_eq!(json["call"]["program"], "echo");
        assert_eq!(json["call"]["args"][0], "hi");
    }

    #[test]
    fn minimal_exec_request_decodes_with_defaults() {
        let json = r#"{"type":"request","service":"00004744-facb-11e6-bd58-64006a7986d3","call":{"op":"exec","program":"true"}}"#;
        let Control::Request(req) = serde_json::from_str(json).unwrap() else {
            panic!("not a request")
        };
        let Call::Exec(exec) = req.call else {
            panic!("not exec")
        };
        assert_eq!(exec.program, "true");
        assert!(exec.args.is_empty() && exec.env.is_empty() && exec.tty.is_none());
    }

    #[test]
    fn kvp_replace_carries_host_data_only_when_there_is_some() {
        // An older daemon's push: no host data.
        let old = r#"{"op":"kvp_replace","entries":{"color":"blue"}}"#;
        let Call::KvpReplace { entries, host_data } = serde_json::from_str(old).unwrap() else {
            panic!("not kvp_replace")
        };
        assert_eq!(entries.len(), 1);
        assert_eq!(host_data, None);
        let none = Call::KvpReplace {
            entries,
            host_data: None,
        };
        assert_eq!(
            serde_json::to_string(&none).unwrap(),
            old,
            "the frame an older agent knows"
        );
        let with = Call::KvpReplace {
            entries: KvpEntries::new(),
            host_data: Some([("HostName".to_string(), "h".to_string())].into()),
        };
        let json = serde_json::to_value(&with).unwrap();
        assert_eq!(json["host_data"]["HostName"], "h");
    }

    #[test]
    fn heartbeat_asks_for_counters_unless_told_otherwise() {
        // An older daemon's heartbeat: the counters are asked.
        let old = r#"{"op":"heartbeat"}"#;
        let asked: Call = serde_json::from_str(old).unwrap();
        assert_eq!(asked, Call::Heartbeat { counters: true });
        assert_eq!(
            serde_json::to_string(&asked).unwrap(),
            old,
            "the frame an older agent knows"
        );
        let liveness = Call::Heartbeat { counters: false };
        let json = serde_json::to_string(&liveness).unwrap();
        assert_eq!(json, r#"{"op":"heartbeat","counters":false}"#);
        assert_eq!(serde_json::from_str::<Call>(&json).unwrap(), liveness);
    }

    #[test]
    fn an_agent_older_than_counters_reads_a_liveness_heartbeat_as_a_heartbeat() {
        // `Call` as an agent before `counters` declared it: `heartbeat` a
        // unit variant. It must take the new member as the call it knows
        // (and answer `agent_counters`, which the daemon's probe accepts as
        // liveness), not as an unknown operation.
        #[derive(Debug, PartialEq, Deserialize)]
        #[serde(tag = "op", rename_all = "snake_case")]
        enum OldCall {
            Heartbeat,
            #[serde(other)]
            Unsupported,
        }
        let json = serde_json::to_string(&Call::Heartbeat { counters: false }).unwrap();
        assert_eq!(
            serde_json::from_str::<OldCall>(&json).unwrap(),
            OldCall::Heartbeat
        );
        assert_eq!(
            serde_json::from_str::<OldCall>(r#"{"op":"teleport","counters":false}"#).unwrap(),
            OldCall::Unsupported
        );
    }

    #[test]
    fn unknown_type_and_op_decode_to_catch_all_variants() {
        let msg: Control = serde_json::from_str(r#"{"type":"teleport","x":1}"#).unwrap();
        assert_eq!(msg, Control::Unknown);
        let json = r#"{"type":"request","service":"00004744-facb-11e6-bd58-64006a7986d3","call":{"op":"teleport"}}"#;
        let Control::Request(req) = serde_json::from_str(json).unwrap() else {
            panic!("not a request")
        };
        assert_eq!(req.call, Call::Unsupported);
    }

    #[test]
    fn shell_code_follows_shell_conventions() {
        let by_code = ExitStatus {
            code: Some(7),
            signal: None,
            timed_out: false,
        };
        let by_signal = ExitStatus {
            code: None,
            signal: Some(9),
            timed_out: true,
        };
        assert_eq!(by_code.shell_code(), 7);
        assert_eq!(by_signal.shell_code(), 137);
    }

    #[test]
    fn a_signal_number_from_the_wire_cannot_overflow_the_shell_code() {
        let hostile = ExitStatus {
            code: None,
            signal: Some(i32::MAX),
            timed_out: false,
        };
        assert_eq!(hostile.shell_code(), i32::MAX);
    }

    #[test]
    fn kinds_and_ops_are_the_wire_names() {
        let controls = [
            Control::Done,
            Control::CopyEnd,
            Control::Eof {
                stream: StreamId::Stdin,
            },
            Control::TimeSample { guest_unix_ns: 1 },
            Control::Error(ErrorFrame::new(crate::ErrorCode::Io, "x")),
        ];
        for c in controls {
            let json = serde_json::to_value(&c).unwrap();
            assert_eq!(json["type"].as_str(), Some(c.kind()), "{c:?}");
        }
        let calls = [
            Call::Exec(ExecRequest::default()),
            Call::GuestInfo,
            Call::TimeStep { delta_ns: 1 },
            Call::KvpList {
                pool: KvpPool::Guest,
            },
            Call::FsStatus,
        ];
        for call in calls {
            let json = serde_json::to_value(&call).unwrap();
            assert_eq!(json["op"].as_str(), Some(call.op()), "{call:?}");
        }
        assert_eq!(Control::Unknown.kind(), "unknown");
        assert_eq!(Call::Unsupported.op(), "unsupported");
    }

    #[test]
    fn a_request_is_addressed_to_its_calls_service() {
        let req = Request::new(Call::KvpList {
            pool: KvpPool::External,
        });
        assert_eq!(req.service, BuiltinService::KeyValue.id());
        assert_eq!(
            Request::new(Call::FsStatus).service,
            BuiltinService::FsFreeze.id()
        );
        assert_eq!(
            Request::new(Call::Exec(ExecRequest::default())).service,
            BuiltinService::Exec.id()
        );
    }
}
