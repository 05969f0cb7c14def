//! The audit log's table (`audit`, schema migration 5): records appended,
//! completed and read, the `running` ones of a stopped daemon interrupted,
//! the retention applied and the chains checked (the chain itself is in
//! `audit_chain.rs`). The records are built in the crate's `audit` module.
//!
//! Audit records are committed with `synchronous = NORMAL` (see
//! [`Store::append_audit`]); the store's other writes stay FULL.

use guestcomm_api::{AuditOutcome as Outcome, AuditRecord as Record};
use rusqlite::{params, Connection, OptionalExtension, Row};

use super::audit_chain::{self, Chain, Link, Walk};
use super::error::StoreError;
use super::Store;
use crate::config::AuditSection;

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
    /// Runs `write` on the connection as a write of the audit log, which
    /// [`config_changes`](Self::config_changes) leaves out.
    fn audit_write<R>(&mut self, write: impl FnOnce(&Connection) -> R) -> R {
        let before = self.conn.total_changes();
        let result = write(&self.conn);
        let changed = self.conn.total_changes().wrapping_sub(before);
        self.audit_changes = self.audit_changes.wrapping_add(changed);
        result
    }

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

    fn insert_audit(conn: &Connection, r: &Record, chain: Chain) -> Result<Written, StoreError> {
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
        let mut stmt = self.conn.prepare(&sql)?;
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

    /// Walks the chains on by at most `batch` records
    /// (`audit_chain::verify_batch`); true once `walk.report` is final.
    pub(crate) fn verify_audit_batch(
        &self,
        walk: &mut Walk,
        batch: usize,
    ) -> Result<bool, StoreError> {
        audit_chain::verify_batch(&self.conn, walk, batch)
    }

    #[cfg(test)]
    /// Checks the chains (`audit_chain::verify_batch`) at once.
    pub(crate) fn verify_audit(&self) -> Result<guestcomm_api::AuditVerification, StoreError> {
        let mut walk = Walk::default();
        while !self.verify_audit_batch(&mut walk, crate::limits::MAX_AUDIT_VERIFY_BATCH)? {}
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
            s.conn
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

    fn store_with(n: i64) -> Store {
        let mut s = Store::in_memory().unwrap();
        for i in 1..=n {
            let r = Record {
                time_ms: i * 1000,
                vm: Some(format!("vm{i}")),
                operation: "vm.add".into(),
                ..Record::default()
            };
            s.write_audit(&r).unwrap();
        }
        s
    }

    fn problems(s: &Store) -> Vec<String> {
        let report = s.verify_audit().unwrap();
        assert_eq!(report.intact, report.problems.is_empty());
        report.problems.into_iter().map(|p| p.problem).collect()
    }

    #[test]
    fn an_untouched_log_is_intact_and_each_kind_of_tampering_shows() {
        let s = store_with(5);
        assert_eq!(problems(&s), Vec::<String>::new());
        let report = s.verify_audit().unwrap();
        assert_eq!(report.chains[0].head_seq, 5);
        assert_eq!(report.chains[0].records, 5);

        let tampered = |sql: &str| {
            let s = store_with(5);
            s.conn.execute_batch(sql).unwrap();
            problems(&s)
        };
        let deleted = tampered("DELETE FROM audit WHERE id = 3");
        assert!(
            deleted.iter().any(|p| p.contains("position 3 is missing")),
            "{deleted:?}"
        );
        let altered = tampered("UPDATE audit SET vm = 'other' WHERE id = 2");
        assert!(
            altered.iter().any(|p| p.contains("record 2 at position 2")),
            "{altered:?}"
        );
        let reordered =
            tampered("UPDATE audit SET seq = -seq WHERE id IN (2, 3); UPDATE audit SET seq = 5 - seq WHERE seq IN (-2, -3)");
        assert!(!reordered.is_empty(), "reordered");
        let newest_gone = tampered("DELETE FROM audit WHERE id = 5");
        assert!(
            newest_gone
                .iter()
                .any(|p| p.contains("newest records were deleted")),
            "{newest_gone:?}"
        );
        let inserted =
            tampered("INSERT INTO audit (time_ms, operation, outcome) VALUES (1, 'vm.rm', 'ok')");
        assert!(
            inserted.iter().any(|p| p.contains("outside the chain")),
            "{inserted:?}"
        );
        // A column added later, NULL in the records there, leaves them valid.
        assert!(tampered("ALTER TABLE audit ADD COLUMN env TEXT").is_empty());
    }

    #[test]
    fn a_walk_in_small_batches_finds_what_one_walk_finds_and_follows_a_prune() {
        let walk_by_two = |s: &Store| {
            let mut walk = Walk::default();
            let mut steps = 0;
            while !s.verify_audit_batch(&mut walk, 2).unwrap() {
                steps += 1;
            }
            (walk.report, steps)
        };
        let mut s = store_with(7);
        let (report, steps) = walk_by_two(&s);
        assert!(report.intact && steps > 3, "{report:?}");
        assert_eq!(report, s.verify_audit().unwrap());
        // Pruned between two steps: the walk goes on from the new anchor.
        let mut walk = Walk::default();
        assert!(!s.verify_audit_batch(&mut walk, 2).unwrap());
        let retention = AuditSection {
            max_records: 2,
            max_age_days: 0,
        };
        s.prune_audit(retention, 0).unwrap();
        while !s.verify_audit_batch(&mut walk, 2).unwrap() {}
        assert!(walk.report.intact, "{:?}", walk.report.problems);
        s.conn
            .execute_batch("DELETE FROM audit WHERE seq = 6")
            .unwrap();
        let (report, _) = walk_by_two(&s);
        assert_eq!(report, s.verify_audit().unwrap());
        assert!(!report.intact);
    }

    #[test]
    fn pruning_moves_the_anchor_and_a_completed_running_record_extends_the_chain() {
        let mut s = store_with(6);
        let mut running = Record {
            time_ms: 7000,
            operation: "exec".into(),
            outcome: Outcome::Running,
            ..Record::default()
        };
        running.id = s.write_audit(&running).unwrap();
        assert_eq!(
            problems(&s),
            Vec::<String>::new(),
            "a running record is outside the chain"
        );
        let retention = AuditSection {
            max_records: 3,
            max_age_days: 0,
        };
        assert_eq!(s.prune_audit(retention, 0).unwrap(), 3);
        let report = s.verify_audit().unwrap();
        assert!(report.intact, "{:?}", report.problems);
        assert_eq!(
            (report.chains[0].anchor_seq, report.chains[0].records),
            (3, 3)
        );
        running.outcome = Outcome::Ok;
        s.write_audit(&running).unwrap();
        let report = s.verify_audit().unwrap();
        assert!(report.intact, "{:?}", report.problems);
        assert_eq!(report.chains[0].head_seq, 7);
        let rows = s.audit_records(None, None, 100).unwrap();
        assert_eq!(
            rows.last().map(|r| (r.id, r.outcome)),
            Some((running.id, Outcome::Ok))
        );
    }
}
