//! The audit log: every operation and every refusal, in SQLite (table
//! `audit`, schema migration 5) and as a `tracing` event (target
//! `guestcomm::audit`) for journald or a log shipper.
//!
//! A record is committed (WAL, `synchronous = NORMAL`: no fsync per record)
//! before the answer goes out, so it survives a SIGKILL of the daemon; a
//! power loss may lose the newest records. Relayed operations (exec,
//! cp) are written when they start, as `running`, and updated when they
//! end; one still `running` when the daemon starts again becomes
//! `interrupted`. Retention (`[audit]` in the configuration file) is applied
//! at start and every [`AUDIT_PRUNE_INTERVAL_SECS`](crate::limits::AUDIT_PRUNE_INTERVAL_SECS), to each chain apart.
//!
//! Complete records are hash-chained (module `audit_chain`, schema
//! migration 8; `GET /v1/audit/verify`); refusals of callers without a role
//! or an identity have a chain of their own and are counted past a bound
//! (module `refusals`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use guestcomm_api::{AuditEnvironment, AuditOutcome, AuditRecord};
use rusqlite::{params, OptionalExtension, Row};
use sha2::{Digest, Sha256};

use crate::caller::Caller;
use crate::config::AuditSection;
use crate::limits::{MAX_AUDIT_ARGUMENTS_BYTES, MAX_AUDIT_ENV_NAMES_BYTES};
use crate::store::audit_chain::{self, Chain, Link};
use crate::store::{Store, StoreError};

/// A record being built.
pub(crate) type Record = AuditRecord;
/// How it ended.
pub(crate) type Outcome = AuditOutcome;

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

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
    let digest = Sha256::digest(text.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
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
        sha256: digest
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect(),
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

const COLUMNS: &str = "id, time_ms, uid, gid, pid, vm, service, operation, arguments, outcome, exit_code, bytes, error, duration_ms, certificate, environment";

fn audit_row(r: &Row<'_>) -> rusqlite::Result<Record> {
    let outcome: String = r.get(9)?;
    Ok(Record {
        id: r.get(0)?,
        time_ms: r.get(1)?,
        uid: r.get(2)?,
        gid: r.get(3)?,
        pid: r.get(4)?,
        vm: r.get(5)?,
        service: r.get(6)?,
        operation: r.get(7)?,
        arguments: r.get(8)?,
        outcome: Outcome::from_name(&outcome).unwrap_or(Outcome::Failed),
        exit_code: r.get(10)?,
        bytes: r.get::<_, Option<i64>>(11)?.map(|b| b.max(0) as u64),
        error: r.get(12)?,
        duration_ms: r.get::<_, i64>(13)?.max(0) as u64,
        certificate: r.get(14)?,
        // Written by this module from the type; a value that no longer
        // parses reads as an empty environment rather than failing the query.
        environment: r
            .get::<_, Option<String>>(15)?
            .map(|json| serde_json::from_str(&json).unwrap_or_default()),
    })
}

/// A record as written: its id and, once complete, its place in its chain.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Written {
    /// Its id.
    pub(crate) id: i64,
    /// Its chain, position and digest (`None` while `running`).
    pub(crate) link: Option<Link>,
}

impl Store {
    #[cfg(test)]
    /// Appends a record (`r.id` 0) or rewrites record `r.id`; returns its id.
    pub(crate) fn write_audit(&mut self, r: &Record) -> Result<i64, StoreError> {
        self.append_audit(r, Chain::Operations).map(|w| w.id)
    }

    /// Appends a record (`r.id` 0) or completes the `running` record `r.id`,
    /// in `chain`; a complete record goes to the end of its chain.
    pub(crate) fn append_audit(&mut self, r: &Record, chain: Chain) -> Result<Written, StoreError> {
        // Audit records are committed with synchronous = NORMAL: in WAL mode
        // that survives a crash or SIGKILL of the daemon (the commit is in
        // the OS's hands) without an fsync per record, which would put a
        // disk flush on the path of every exec and cp. The store's other
        // writes stay FULL.
        self.audit_write(|conn| {
            conn.pragma_update(None, "synchronous", "NORMAL")?;
            let written = Self::insert_audit(conn, r, chain);
            conn.pragma_update(None, "synchronous", "FULL")?;
            written
        })
    }

    fn insert_audit(
        conn: &rusqlite::Connection,
        r: &Record,
        chain: Chain,
    ) -> Result<Written, StoreError> {
        let tx = conn.unchecked_transaction()?;
        // Only a record outside the chain (`running`) may be rewritten; one
        // already chained is never changed, the new text goes to a new record.
        let rewrite = r.id > 0
            && tx
                .query_row(
                    "SELECT seq IS NULL FROM audit WHERE id = ?1",
                    [r.id],
                    |row| row.get::<_, bool>(0),
                )
                .optional()?
                .unwrap_or(false);
        tx.prepare_cached(
            "INSERT OR REPLACE INTO audit (id, time_ms, uid, gid, pid, vm, service, operation, arguments, outcome, exit_code, bytes, error, duration_ms, certificate, environment, chain)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)",
        )?.execute(params![
                rewrite.then_some(r.id),
                r.time_ms,
                r.uid,
                r.gid,
                r.pid,
                r.vm,
                r.service,
                r.operation,
                r.arguments,
                r.outcome.name(),
                r.exit_code,
                r.bytes.map(|b| b.min(i64::MAX as u64) as i64),
                r.error,
                r.duration_ms.min(i64::MAX as u64) as i64,
                r.certificate,
                r.environment.as_ref().and_then(|e| serde_json::to_string(e).ok()),
                chain.value()
            ])?;
        let id = tx.last_insert_rowid();
        let link = if r.outcome == Outcome::Running {
            None
        } else {
            Some(audit_chain::link(&tx, id)?)
        };
        tx.commit()?;
        Ok(Written { id, link })
    }

    /// The newest `limit` records (of `vm`, from `since_ms` on), oldest first.
    pub(crate) fn audit_records(
        &self,
        vm: Option<&str>,
        since_ms: Option<i64>,
        limit: u32,
    ) -> Result<Vec<Record>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM audit WHERE (?1 IS NULL OR vm = ?1) AND time_ms >= ?2 ORDER BY id DESC LIMIT ?3"
        );
        let mut stmt = self.conn().prepare(&sql)?;
        let rows = stmt.query_map(params![vm, since_ms.unwrap_or(i64::MIN), limit], audit_row)?;
        let mut out: Vec<Record> = rows.collect::<Result<_, _>>()?;
        out.reverse();
        Ok(out)
    }

    /// Marks records left `running` by a daemon that stopped as
    /// `interrupted`, and puts them in their chains.
    pub(crate) fn interrupt_running_audit(&mut self) -> Result<usize, StoreError> {
        self.audit_write(|conn| {
            let tx = conn.unchecked_transaction()?;
            let ids = audit_chain::unchained(&tx, true)?;
            for &id in &ids {
                tx.execute(
                    "UPDATE audit SET outcome = 'interrupted' WHERE id = ?1",
                    [id],
                )?;
                audit_chain::link(&tx, id)?;
            }
            tx.commit()?;
            Ok(ids.len())
        })
    }

    /// Applies the retention to each chain (`audit_chain::prune`). Returns
    /// how many records went.
    pub(crate) fn prune_audit(
        &mut self,
        retention: AuditSection,
        now_ms: i64,
    ) -> Result<usize, StoreError> {
        self.audit_write(|conn| {
            let tx = conn.unchecked_transaction()?;
            let removed = audit_chain::prune(&tx, retention, now_ms)?;
            tx.commit()?;
            Ok(removed)
        })
    }

    #[cfg(test)]
    /// Checks the chains (`audit_chain::verify_batch`) at once.
    pub(crate) fn verify_audit(&self) -> Result<guestcomm_api::AuditVerification, StoreError> {
        let mut walk = audit_chain::Walk::default();
        while !audit_chain::verify_batch(
            self.conn(),
            &mut walk,
            crate::limits::MAX_AUDIT_VERIFY_BATCH,
        )? {}
        Ok(walk.report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(vm: &str, time_ms: i64) -> Record {
        Record {
            time_ms,
            vm: Some(vm.into()),
            operation: "exec".into(),
            ..Record::default()
        }
    }

    #[test]
    fn records_are_kept_filtered_and_pruned_by_count_and_age() {
        let mut s = Store::in_memory().unwrap();
        for i in 0..10 {
            s.write_audit(&rec(if i % 2 == 0 { "a" } else { "b" }, i * 1000))
                .unwrap();
        }
        assert_eq!(s.audit_records(Some("a"), None, 100).unwrap().len(), 5);
        let recent = s.audit_records(None, Some(7000), 100).unwrap();
        assert_eq!(
            recent.iter().map(|r| r.time_ms).collect::<Vec<_>>(),
            [7000, 8000, 9000]
        );
        assert_eq!(s.audit_records(None, None, 2).unwrap()[1].time_ms, 9000);

        let by_count = AuditSection {
            max_records: 4,
            max_age_days: 0,
        };
        assert_eq!(s.prune_audit(by_count, 9000).unwrap(), 6);
        let left = s.audit_records(None, None, 100).unwrap();
        assert_eq!(left.first().map(|r| r.time_ms), Some(6000));

        let by_age = AuditSection {
            max_records: 0,
            max_age_days: 1,
        };
        assert_eq!(s.prune_audit(by_age, 86_400_000 + 7500).unwrap(), 2);
        assert_eq!(s.audit_records(None, None, 100).unwrap().len(), 2);
    }

    #[test]
    fn audit_writes_leave_the_store_fully_synchronous() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(dir.path()).unwrap();
        let sync = |s: &Store| -> i64 {
            s.conn()
                .pragma_query_value(None, "synchronous", |r| r.get(0))
                .unwrap()
        };
        assert_eq!(sync(&s), 2, "FULL");
        s.write_audit(&rec("a", 1)).unwrap();
        assert_eq!(sync(&s), 2, "FULL again after an audit record");
        assert_eq!(s.audit_records(None, None, 10).unwrap().len(), 1);
    }

    #[test]
    fn running_records_become_interrupted() {
        let mut s = Store::in_memory().unwrap();
        let mut r = rec("a", 1);
        r.outcome = Outcome::Running;
        let id = s.write_audit(&r).unwrap();
        assert_eq!(s.interrupt_running_audit().unwrap(), 1);
        let got = s.audit_records(None, None, 1).unwrap();
        assert_eq!((got[0].id, got[0].outcome), (id, Outcome::Interrupted));
    }

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
        let hex: String = expected.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(kept.sha256, hex);
        let mut s = Store::in_memory().unwrap();
        let mut r = rec("a", 1);
        r.environment = Some(kept.clone());
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
