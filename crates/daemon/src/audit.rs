//! The audit log's records: built here (no SQL; the table `audit`, schema
//! migration 5, is kept by `store/audit.rs`), written to SQLite through the
//! store and emitted as a `tracing` event (target `guestcomm::audit`) for
//! journald or a log shipper.
//!
//! A record is committed (WAL, `synchronous = NORMAL`: no fsync per record)
//! before the answer goes out, so it survives a SIGKILL of the daemon; a
//! power loss may lose the newest records. Relayed operations (exec,
//! cp) are written when they start, as `running`, and updated when they
//! end; one still `running` when the daemon starts again becomes
//! `interrupted`. Retention (`[audit]` in the configuration file) is applied
//! at start and every [`AUDIT_PRUNE_INTERVAL_SECS`](crate::limits::AUDIT_PRUNE_INTERVAL_SECS), to each chain apart.
//!
//! Complete records are hash-chained (module `store::audit_chain`, schema
//! migration 8; `GET /v1/audit/verify`); refusals of callers without a role
//! or an identity have a chain of their own and are counted past a bound
//! (module `refusals`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use guestcomm_api::{AuditEnvironment, AuditOutcome, AuditRecord};
use guestcomm_protocol::auth::to_hex;
use sha2::{Digest, Sha256};

use crate::caller::Caller;
use crate::clock::now_ms;
use crate::limits::{MAX_AUDIT_ARGUMENTS_BYTES, MAX_AUDIT_ENV_NAMES_BYTES};
use crate::store::audit_chain::{self, Link};

/// A record being built.
pub(crate) type Record = AuditRecord;
/// How it ended.
pub(crate) type Outcome = AuditOutcome;

/// A new record of `operation` by `caller`, starting now.
pub(crate) fn record(caller: Caller, operation: &str) -> Record {
    Record {
        time_ms: now_ms(),
        uid: caller.uid,
        gid: caller.gid,
        pid: caller.pid,
        certificate: caller.fingerprint(),
        operation: operation.into(),
        outcome: Outcome::Running,
        ..Record::default()
    }
}

/// Sets how `record` ended and how long it took since `started`.
pub(crate) fn finish(
    record: &mut Record,
    outcome: Outcome,
    error: Option<String>,
    started: Instant,
) {
    record.outcome = outcome;
    record.error = error;
    record.duration_ms = started.elapsed().as_millis() as u64;
}

/// Completes the record of a relayed connection: the bytes it moved both
/// ways, `ok`, or `failed` with how it ended.
pub(crate) fn finish_relay(
    record: &mut Record,
    ended: Result<(), String>,
    bytes: u64,
    started: Instant,
) {
    record.bytes = Some(bytes);
    let outcome = if ended.is_ok() {
        Outcome::Ok
    } else {
        Outcome::Failed
    };
    finish(record, outcome, ended.err(), started);
}

/// `text` as kept in a record: whole when short, otherwise cut at
/// [`MAX_AUDIT_ARGUMENTS_BYTES`] and followed by the SHA-256 of the whole.
pub(crate) fn arguments(text: &str) -> String {
    if text.len() <= MAX_AUDIT_ARGUMENTS_BYTES {
        return text.to_string();
    }
    let mut end = MAX_AUDIT_ARGUMENTS_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let hex = to_hex(&Sha256::digest(text.as_bytes()));
    format!("{}... ({} bytes, sha256 {hex})", &text[..end], text.len())
}

/// The environment `env` of an exec as kept in its record: the names (those
/// that fit in [`MAX_AUDIT_ENV_NAMES_BYTES`]), how many, and one SHA-256
/// over every `name=value` followed by a NUL byte, in name order; `None`
/// when it sets nothing. No value is kept.
pub(crate) fn environment(env: &BTreeMap<String, String>) -> Option<AuditEnvironment> {
    if env.is_empty() {
        return None;
    }
    let mut digest = Sha256::new();
    for (name, value) in env {
        digest.update(name.as_bytes());
        digest.update(b"=");
        digest.update(value.as_bytes());
        digest.update(b"\0");
    }
    let mut room = MAX_AUDIT_ENV_NAMES_BYTES;
    let names = env
        .keys()
        .take_while(|name| {
            let fits = name.len() <= room;
            room = room.saturating_sub(name.len());
            fits
        })
        .cloned()
        .collect();
    Some(AuditEnvironment {
        names,
        count: env.len(),
        sha256: to_hex(&digest.finalize()),
    })
}

/// A command line as one string: words with spaces or quotes are quoted.
pub(crate) fn command_line(program: &str, args: &[String]) -> String {
    std::iter::once(program)
        .chain(args.iter().map(String::as_str))
        .map(|w| {
            if !w.is_empty() && !w.contains([' ', '"', '\'', '\\', '\n', '\t']) {
                w.to_string()
            } else {
                format!("{w:?}")
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Details a handler adds to its call's audit record (the VM or service a
/// request body names, what was asked), also when it then fails. The
/// access middleware puts one in each request's extensions and reads it back.
#[derive(Clone, Debug, Default)]
pub(crate) struct Note(Arc<std::sync::Mutex<Record>>);

impl Note {
    fn with(&self, f: impl FnOnce(&mut Record)) {
        f(&mut self.0.lock().unwrap_or_else(|e| e.into_inner()));
    }

    /// The VM the call concerns.
    pub(crate) fn vm(&self, vm: &str) {
        self.with(|r| r.vm = Some(vm.into()));
    }

    /// The service the call concerns.
    pub(crate) fn service(&self, service: &str) {
        self.with(|r| r.service = Some(service.into()));
    }

    /// What was asked (cut with a digest when long; never a secret).
    pub(crate) fn arguments(&self, text: &str) {
        self.with(|r| r.arguments = arguments(text));
    }

    /// Copies what was noted into `record`.
    pub(crate) fn apply(&self, record: &mut Record) {
        self.with(|note| {
            if note.vm.is_some() {
                record.vm.clone_from(&note.vm);
            }
            if note.service.is_some() {
                record.service.clone_from(&note.service);
            }
            if !note.arguments.is_empty() {
                record.arguments.clone_from(&note.arguments);
            }
        });
    }
}

/// Emits `record` as a structured event, with its place in its chain (a
/// copy of the chain's head outside the database).
pub(crate) fn trace(record: &Record, link: Option<Link>) {
    tracing::info!(
        target: "guestcomm::audit",
        id = record.id,
        operation = %record.operation,
        outcome = record.outcome.name(),
        uid = ?record.uid,
        pid = ?record.pid,
        certificate = record.certificate.as_deref().unwrap_or(""),
        vm = record.vm.as_deref().unwrap_or(""),
        service = record.service.as_deref().unwrap_or(""),
        arguments = %record.arguments,
        environment = record.environment.as_ref().map_or(String::new(), |e| e.names.join(" ")),
        environment_sha256 = record.environment.as_ref().map_or("", |e| e.sha256.as_str()),
        exit_code = ?record.exit_code,
        bytes = ?record.bytes,
        error = record.error.as_deref().unwrap_or(""),
        duration_ms = record.duration_ms,
        chain = link.map_or("", |l| l.chain.name()),
        seq = link.map(|l| l.seq),
        digest = link.map(|l| audit_chain::hex(&l.digest)),
        "audit"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    #[test]
    fn an_environment_is_kept_as_names_and_one_digest_never_values() {
        assert_eq!(environment(&BTreeMap::new()), None);
        let env: BTreeMap<String, String> = [("TOKEN", "hunter2"), ("A", "1")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let kept = environment(&env).unwrap();
        assert_eq!(
            (kept.names.clone(), kept.count),
            (vec!["A".into(), "TOKEN".into()], 2)
        );
        let expected = Sha256::digest(b"A=1\0TOKEN=hunter2\0");
        assert_eq!(kept.sha256, to_hex(&expected));
        let mut s = Store::in_memory().unwrap();
        let r = Record {
            time_ms: 1,
            vm: Some("a".into()),
            operation: "exec".into(),
            environment: Some(kept.clone()),
            ..Record::default()
        };
        s.write_audit(&r).unwrap();
        let back = s.audit_records(None, None, 1).unwrap();
        assert_eq!(back[0].environment.as_ref(), Some(&kept));
        assert!(!serde_json::to_string(&back).unwrap().contains("hunter2"));
        // Many long names: those that fit, the count and digest of all.
        let many: BTreeMap<String, String> = (0..100)
            .map(|i| (format!("VARIABLE_{i:03}_{}", "X".repeat(40)), String::new()))
            .collect();
        let kept = environment(&many).unwrap();
        assert_eq!(kept.count, 100);
        assert!(!kept.names.is_empty() && kept.names.len() < 100);
        assert!(kept.names.iter().map(String::len).sum::<usize>() <= MAX_AUDIT_ENV_NAMES_BYTES);
    }

    #[test]
    fn long_arguments_are_cut_with_a_digest_and_command_lines_quoted() {
        assert_eq!(arguments("ls -l"), "ls -l");
        let long = "é".repeat(MAX_AUDIT_ARGUMENTS_BYTES);
        let kept = arguments(&long);
        assert!(
            kept.len() < long.len() && kept.contains("sha256 "),
            "{kept}"
        );
        let line = command_line("sh", &["-c".into(), "echo hi".into(), String::new()]);
        assert_eq!(line, r#"sh -c "echo hi" """#);
    }
}
