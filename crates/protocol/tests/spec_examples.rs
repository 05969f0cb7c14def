//! Keeps `docs/PROTOCOL.md` exact: every JSON example in a `json` block and
//! every control line of the example session must be what this
//! implementation sends, byte for byte; the service and limit tables must
//! match the code.

use guestcomm_protocol::frame::HEADER_BYTES;
use guestcomm_protocol::limits::{
    DATA_CHUNK_BYTES, DEFAULT_FREEZE_TIMEOUT_S, FILE_CHUNK_BYTES, HANDSHAKE_TIMEOUT_MS,
    MAX_COPY_ENTRIES, MAX_COPY_NAME_BYTES, MAX_COPY_PATH_BYTES, MAX_ERROR_MESSAGE_BYTES,
    MAX_EXEC_ARGS, MAX_EXEC_ENV, MAX_FRAME_BYTES, MAX_FREEZE_MOUNTPOINTS, MAX_FREEZE_TIMEOUT_S,
    MAX_INFO_ITEMS, MAX_KVP_KEYS_PER_POOL, MAX_KVP_KEY_BYTES, MAX_KVP_VALUE_BYTES,
    MAX_SHUTDOWN_REASON_BYTES,
};
use guestcomm_protocol::message::Control;
use guestcomm_protocol::service::BuiltinService;

const SPEC: &str = include_str!("../../../docs/PROTOCOL.md");

/// Lines of fenced blocks whose info string is `lang`.
fn block_lines(lang: &str) -> Vec<&'static str> {
    let mut lines = Vec::new();
    let mut current: Option<&str> = None;
    for line in SPEC.lines() {
        match (current, line.strip_prefix("```")) {
            (None, Some(info)) => current = Some(info.trim()),
            (Some(_), Some(_)) => current = None,
            (Some(info), None) if info == lang && !line.trim().is_empty() => lines.push(line),
            _ => {}
        }
    }
    lines
}

fn assert_round_trips(json: &str) {
    let msg: Control = serde_json::from_str(json)
        .unwrap_or_else(|e| panic!("example does not decode: {e}\n{json}"));
    assert_ne!(msg, Control::Unknown, "example has an unknown type: {json}");
    let again = serde_json::to_string(&msg).expect("a control message serializes");
    assert_eq!(again, json, "example is not what this implementation sends");
}

#[test]
fn json_examples_are_exactly_what_the_implementation_sends() {
    let lines = block_lines("json");
    assert!(
        lines.len() >= 12,
        "only {} json examples found",
        lines.len()
    );
    for line in lines {
        assert_round_trips(line);
    }
}

#[test]
fn example_session_control_frames_are_exact() {
    let mut seen = 0;
    for line in block_lines("text") {
        for prefix in ["C: control ", "S: control "] {
            if let Some(json) = line.strip_prefix(prefix) {
                assert_round_trips(json);
                seen += 1;
            }
        }
    }
    assert!(seen >= 8, "only {seen} session lines found");
}

#[test]
fn decode_only_examples_decode() {
    for line in block_lines("text") {
        if line.starts_with("{\"type\":") {
            let msg: Control = serde_json::from_str(line).unwrap();
            assert_ne!(msg, Control::Unknown, "{line}");
        }
    }
}

#[test]
fn builtin_service_table_matches_the_code() {
    for s in BuiltinService::ALL {
        let row = format!(
            "| {:?} | {} | 0x{:08x} | `{}` | `{}` | {} |",
            s,
            s.vsock_port(),
            s.vsock_port(),
            s.id(),
            s.name(),
            s.element_name()
        );
        assert!(SPEC.lines().any(|l| l == row), "missing row:\n{row}");
    }
}

#[test]
fn limit_table_matches_the_code() {
    let limits = [
        ("HEADER_BYTES", HEADER_BYTES as u64),
        ("MAX_FRAME_BYTES", MAX_FRAME_BYTES as u64),
        ("DATA_CHUNK_BYTES", DATA_CHUNK_BYTES as u64),
        ("HANDSHAKE_TIMEOUT_MS", HANDSHAKE_TIMEOUT_MS),
        ("MAX_EXEC_ARGS", MAX_EXEC_ARGS as u64),
        ("MAX_EXEC_ENV", MAX_EXEC_ENV as u64),
        ("MAX_ERROR_MESSAGE_BYTES", MAX_ERROR_MESSAGE_BYTES as u64),
        ("MAX_COPY_PATH_BYTES", MAX_COPY_PATH_BYTES as u64),
        ("MAX_COPY_NAME_BYTES", MAX_COPY_NAME_BYTES as u64),
        ("MAX_COPY_ENTRIES", MAX_COPY_ENTRIES),
        ("FILE_CHUNK_BYTES", FILE_CHUNK_BYTES as u64),
        ("MAX_KVP_KEY_BYTES", MAX_KVP_KEY_BYTES as u64),
        ("MAX_KVP_VALUE_BYTES", MAX_KVP_VALUE_BYTES as u64),
        ("MAX_KVP_KEYS_PER_POOL", MAX_KVP_KEYS_PER_POOL as u64),
        (
            "MAX_SHUTDOWN_REASON_BYTES",
            MAX_SHUTDOWN_REASON_BYTES as u64,
        ),
        ("MAX_INFO_ITEMS", MAX_INFO_ITEMS as u64),
        ("MAX_FREEZE_MOUNTPOINTS", MAX_FREEZE_MOUNTPOINTS as u64),
        ("MAX_FREEZE_TIMEOUT_S", MAX_FREEZE_TIMEOUT_S),
        ("DEFAULT_FREEZE_TIMEOUT_S", DEFAULT_FREEZE_TIMEOUT_S),
    ];
    for (name, value) in limits {
        let prefix = format!("| `{name}` | {value} ");
        assert!(
            SPEC.lines().any(|l| l.starts_with(&prefix)),
            "limit table: no row starting {prefix:?}"
        );
    }
}
