//! The audit log's hash chains: each completed record carries the SHA-256
//! of the record before it in its chain and of its own canonical encoding,
//! so that a record deleted, altered or inserted out of order in the SQLite
//! file shows when the chain is verified ([`verify_batch`], `GET
//! /v1/audit/verify`, `guestcomm audit --verify`).
//!
//! ```text
//! digest(n) = SHA-256("guestcomm-audit-chain-v1" || digest(n-1) || encoding(record n))
//! digest(anchor) = 32 zero bytes, or the digest of the last pruned record
//! ```
//!
//! - The encoding is of the whole row as stored: every column but `digest`,
//!   by name in byte order, each as its name and its typed value; NULL
//!   columns are left out, so a column added later as NULL leaves the
//!   records chained before it valid.
//! - Records are chained when they complete, in completion order: a relayed
//!   operation's record, written `running` when it starts and rewritten
//!   when it ends, gets its place in the chain (`seq`) only then, so its
//!   completion never breaks the chain. A `running` record is outside the
//!   chain until it ends (or is marked `interrupted` at the next start).
//! - Two chains, each with its own retention ([`Chain`]): refusals of
//!   callers without a role have theirs, so they never push a record of
//!   the other out of the log.
//! - Table `audit_chain` keeps each chain's anchor (position and digest of
//!   the last pruned record) and head (position and digest of the newest
//!   record): pruning the oldest records moves the anchor, deleting the
//!   newest shows as a head with no record. The head's digest is also in
//!   every audit event of the daemon's log (`seq`, `digest`), a copy
//!   outside the database.
//!
//! Whoever can write the database can also recompute a chain: the chains
//! show tampering by anyone who did not (or could not) rewrite every record
//! after the one changed and the daemon's log.

use guestcomm_api::{AuditChainState, AuditProblem, AuditVerification};
use guestcomm_protocol::auth::to_hex;
use rusqlite::types::ValueRef;
use rusqlite::{params, Connection, OptionalExtension};
use sha2::{Digest, Sha256};

use super::error::StoreError;
use crate::config::AuditSection;
use crate::limits::MAX_AUDIT_VERIFY_PROBLEMS;

/// A SHA-256 digest.
pub(crate) type Sha = [u8; 32];

/// Which chain a record belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Chain {
    /// Every operation, failure and refusal of a caller with a role.
    Operations,
    /// Refusals of callers without a role (module `refusals`).
    Refusals,
}

impl Chain {
    /// Both, in the order reports list them.
    pub(crate) const ALL: [Chain; 2] = [Chain::Operations, Chain::Refusals];

    /// The value of column `chain`.
    pub(crate) fn value(self) -> i64 {
        match self {
            Chain::Operations => 0,
            Chain::Refusals => 1,
        }
    }

    /// Its name in reports.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Chain::Operations => "operations",
            Chain::Refusals => "refusals-without-role",
        }
    }

    fn from_value(value: i64) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.value() == value)
    }
}

/// Where a record went in its chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Link {
    /// Its chain.
    pub(crate) chain: Chain,
    /// Its position, from 1.
    pub(crate) seq: i64,
    /// Its digest.
    pub(crate) digest: Sha,
}

const DOMAIN: &[u8] = b"guestcomm-audit-chain-v1";

/// `sha256:` and the hex of `digest`.
pub(crate) fn hex(digest: &Sha) -> String {
    format!("sha256:{}", to_hex(digest))
}

fn sha_of(bytes: Option<Vec<u8>>) -> Sha {
    bytes
        .and_then(|b| <Sha>::try_from(b.as_slice()).ok())
        .unwrap_or([0; 32])
}

/// The canonical encoding of row `id` (module doc), or `None` without one.
fn encoding(conn: &Connection, id: i64) -> Result<Option<Vec<u8>>, StoreError> {
    let mut stmt = conn.prepare_cached("SELECT * FROM audit WHERE id = ?1")?;
    let names: Vec<String> = stmt.column_names().map(str::to_string).collect();
    let mut order: Vec<usize> = (0..names.len()).filter(|&i| names[i] != "digest").collect();
    order.sort_by(|&a, &b| names[a].as_bytes().cmp(names[b].as_bytes()));
    let mut rows = stmt.query([id])?;
    let Some(row) = rows.next()? else {
        return Ok(None);
    };
    let mut out = Vec::with_capacity(256);
    for i in order {
        let value = row.get_ref(i)?;
        let (tag, payload): (u8, std::borrow::Cow<'_, [u8]>) = match value {
            ValueRef::Null => continue,
            ValueRef::Integer(v) => (1, v.to_be_bytes().to_vec().into()),
            ValueRef::Real(v) => (2, v.to_bits().to_be_bytes().to_vec().into()),
            ValueRef::Text(t) => (3, t.into()),
            ValueRef::Blob(b) => (4, b.into()),
        };
        out.extend_from_slice(&(names[i].len() as u32).to_be_bytes());
        out.extend_from_slice(names[i].as_bytes());
        out.push(tag);
        out.extend_from_slice(&(payload.len() as u64).to_be_bytes());
        out.extend_from_slice(&payload);
    }
    Ok(Some(out))
}

fn chain_digest(prev: &Sha, encoding: &[u8]) -> Sha {
    let mut h = Sha256::new();
    h.update(DOMAIN);
    h.update(prev);
    h.update(encoding);
    h.finalize().into()
}

/// A chain's anchor and head.
struct Ends {
    anchor_seq: i64,
    anchor: Sha,
    head_seq: i64,
    head: Sha,
}

fn ends(conn: &Connection, chain: Chain) -> Result<Ends, StoreError> {
    let row = conn
        .prepare_cached(
            "SELECT anchor_seq, anchor_digest, head_seq, head_digest FROM audit_chain WHERE chain = ?1",
        )?
        .query_row([chain.value()], |r| {
            Ok(Ends {
                anchor_seq: r.get(0)?,
                anchor: sha_of(r.get(1)?),
                head_seq: r.get(2)?,
                head: sha_of(r.get(3)?),
            })
        })
        .optional()?;
    Ok(row.unwrap_or(Ends {
        anchor_seq: 0,
        anchor: [0; 32],
        head_seq: 0,
        head: [0; 32],
    }))
}

/// Puts the completed record `id` at the end of its chain (in the caller's
/// transaction).
pub(super) fn link(conn: &Connection, id: i64) -> Result<Link, StoreError> {
    let value: i64 = conn.query_row("SELECT chain FROM audit WHERE id = ?1", [id], |r| r.get(0))?;
    let chain = Chain::from_value(value).unwrap_or(Chain::Operations);
    let ends = ends(conn, chain)?;
    let seq = ends.head_seq + 1;
    conn.prepare_cached("UPDATE audit SET seq = ?1, digest = NULL WHERE id = ?2")?
        .execute(params![seq, id])?;
    let encoded = encoding(conn, id)?.unwrap_or_default();
    let digest = chain_digest(&ends.head, &encoded);
    conn.prepare_cached("UPDATE audit SET digest = ?1 WHERE id = ?2")?
        .execute(params![digest.to_vec(), id])?;
    conn.prepare_cached(
        "INSERT INTO audit_chain (chain, anchor_seq, anchor_digest, head_seq, head_digest)
         VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT(chain) DO UPDATE SET head_seq = excluded.head_seq, head_digest = excluded.head_digest",
    )?
    .execute(params![
        chain.value(),
        ends.anchor_seq,
        ends.anchor.to_vec(),
        seq,
        digest.to_vec()
    ])?;
    Ok(Link { chain, seq, digest })
}

/// The records outside their chain, oldest first: those `running` or,
/// with `running` false, those complete.
pub(super) fn unchained(conn: &Connection, running: bool) -> Result<Vec<i64>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT id FROM audit WHERE seq IS NULL AND (outcome = 'running') = ?1 ORDER BY id",
    )?;
    let rows = stmt.query_map([running], |r| r.get(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Chains every completed record that is outside its chain, oldest first:
/// the records of a database from before the chains (its migration).
pub(super) fn link_unchained(conn: &Connection) -> Result<usize, StoreError> {
    let ids = unchained(conn, false)?;
    for &id in &ids {
        link(conn, id)?;
    }
    Ok(ids.len())
}

/// Applies the retention to each chain: drops its records older than the
/// age limit, then its oldest beyond the count limit, always a prefix of
/// the chain, and moves the chain's anchor to the last record dropped.
/// Records outside the chains (`running`) stay. Returns how many went.
pub(super) fn prune(
    conn: &Connection,
    retention: AuditSection,
    now_ms: i64,
) -> Result<usize, StoreError> {
    let mut removed = 0;
    for chain in Chain::ALL {
        let mut last: Option<i64> = None;
        if retention.max_age_days > 0 {
            let age_ms = retention
                .max_age_days
                .saturating_mul(86_400_000)
                .min(i64::MAX as u64) as i64;
            let cutoff = now_ms.saturating_sub(age_ms);
            // Up to the first record still within the age (all when none is).
            let kept_from: Option<i64> = conn.query_row(
                "SELECT MIN(seq) FROM audit WHERE chain = ?1 AND seq IS NOT NULL AND time_ms >= ?2",
                params![chain.value(), cutoff],
                |r| r.get(0),
            )?;
            last = match kept_from {
                Some(seq) => Some(seq - 1),
                None => conn.query_row(
                    "SELECT MAX(seq) FROM audit WHERE chain = ?1",
                    [chain.value()],
                    |r| r.get(0),
                )?,
            };
        }
        if retention.max_records > 0 {
            let keep = retention.max_records.min(i64::MAX as u64) as i64;
            let beyond: Option<i64> = conn
                .query_row(
                    "SELECT seq FROM audit WHERE chain = ?1 AND seq IS NOT NULL ORDER BY seq DESC LIMIT 1 OFFSET ?2",
                    params![chain.value(), keep],
                    |r| r.get(0),
                )
                .optional()?;
            last = last.max(beyond);
        }
        let ends = ends(conn, chain)?;
        let Some(last) = last.filter(|&l| l > ends.anchor_seq) else {
            continue;
        };
        let anchor: Option<Vec<u8>> = conn
            .query_row(
                "SELECT digest FROM audit WHERE chain = ?1 AND seq = ?2",
                params![chain.value(), last],
                |r| r.get(0),
            )
            .optional()?
            .flatten();
        removed += conn.execute(
            "DELETE FROM audit WHERE chain = ?1 AND seq IS NOT NULL AND seq <= ?2",
            params![chain.value(), last],
        )?;
        conn.execute(
            "UPDATE audit_chain SET anchor_seq = ?2, anchor_digest = ?3 WHERE chain = ?1",
            params![chain.value(), last, sha_of(anchor).to_vec()],
        )?;
    }
    Ok(removed)
}

/// Adds a problem to `report`, or counts it past [`MAX_AUDIT_VERIFY_PROBLEMS`].
fn problem(
    report: &mut AuditVerification,
    chain: Chain,
    id: Option<i64>,
    seq: Option<i64>,
    text: String,
) {
    if report.problems.len() < MAX_AUDIT_VERIFY_PROBLEMS {
        report.problems.push(AuditProblem {
            chain: chain.name().into(),
            id,
            seq,
            problem: text,
        });
    } else {
        report.more_problems += 1;
    }
}

/// A verification in progress: [`verify_batch`] walks the chains a batch
/// of records at a time, so that the store is never held for the whole log.
#[derive(Debug, Default)]
pub(crate) struct Walk {
    /// The chain being walked, an index of [`Chain::ALL`].
    chain: usize,
    /// Whether its walk has begun.
    begun: bool,
    /// The digest of the last record walked.
    prev: Sha,
    /// The position the next record should have.
    expected: i64,
    /// Records walked in this chain.
    records: u64,
    /// What was found so far.
    pub(crate) report: AuditVerification,
}

/// Walks on by at most `batch` records (module doc); true once both chains
/// and the records outside them were checked (`walk.report` is then final).
/// Records added meanwhile are walked too; records pruned meanwhile move
/// the walk to the new anchor.
pub(super) fn verify_batch(
    conn: &Connection,
    walk: &mut Walk,
    batch: usize,
) -> Result<bool, StoreError> {
    let Some(&chain) = Chain::ALL.get(walk.chain) else {
        return Ok(true);
    };
    let ends = ends(conn, chain)?;
    if !walk.begun || ends.anchor_seq >= walk.expected {
        (walk.prev, walk.expected, walk.begun) = (ends.anchor, ends.anchor_seq + 1, true);
    }
    let report = &mut walk.report;
    let mut stmt = conn.prepare_cached(
        "SELECT id, seq, digest FROM audit WHERE chain = ?1 AND seq >= ?2 ORDER BY seq, id LIMIT ?3",
    )?;
    let rows = stmt.query_map(
        params![
            chain.value(),
            walk.expected,
            batch.min(i64::MAX as usize) as i64
        ],
        |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, Option<Vec<u8>>>(2)?,
            ))
        },
    )?;
    let mut walked = 0;
    for row in rows {
        let (id, seq, stored) = row?;
        walked += 1;
        walk.records += 1;
        if seq < walk.expected {
            let text =
                format!("record {id} has position {seq}, which another record has: inserted");
            problem(report, chain, Some(id), Some(seq), text);
            continue;
        }
        if seq > walk.expected {
            let text = if seq == walk.expected + 1 {
                format!(
                    "the record at position {} is missing: deleted",
                    walk.expected
                )
            } else {
                format!(
                    "the records at positions {} to {} are missing: deleted",
                    walk.expected,
                    seq - 1
                )
            };
            problem(report, chain, None, Some(walk.expected), text);
        }
        let encoded = encoding(conn, id)?.unwrap_or_default();
        let stored = sha_of(stored);
        if chain_digest(&walk.prev, &encoded) != stored {
            problem(
                report,
                chain,
                Some(id),
                Some(seq),
                format!("record {id} at position {seq} does not match its digest: altered, or the record before it was deleted or moved"),
            );
        }
        walk.prev = stored;
        walk.expected = seq + 1;
    }
    if walked == batch {
        return Ok(false);
    }
    // The chain's end: its head, and records placed at or before its anchor.
    let last = walk.expected - 1;
    if last != ends.head_seq || walk.prev != ends.head {
        let text = if last < ends.head_seq {
            format!(
                "the chain ends at position {last} but its head is at {}: the newest records were deleted",
                ends.head_seq
            )
        } else {
            format!(
                "the chain's last record (position {last}) is not its recorded head (position {}, {}): altered or inserted",
                ends.head_seq,
                hex(&ends.head)
            )
        };
        problem(report, chain, None, Some(last), text);
    }
    let mut stmt = conn.prepare_cached(
        "SELECT id, seq FROM audit WHERE chain = ?1 AND seq <= ?2 ORDER BY seq, id",
    )?;
    let before = stmt.query_map(params![chain.value(), ends.anchor_seq], |r| {
        Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?))
    })?;
    for row in before {
        let (id, seq) = row?;
        let text = format!(
            "record {id} has position {seq}, at or before the chain's anchor ({}): inserted",
            ends.anchor_seq
        );
        problem(report, chain, Some(id), Some(seq), text);
    }
    report.chains.push(AuditChainState {
        chain: chain.name().into(),
        anchor_seq: ends.anchor_seq,
        anchor_digest: hex(&ends.anchor),
        head_seq: ends.head_seq,
        head_digest: hex(&ends.head),
        records: walk.records,
    });
    (walk.chain, walk.begun, walk.records) = (walk.chain + 1, false, 0);
    if walk.chain < Chain::ALL.len() {
        return Ok(false);
    }
    let mut stmt = conn.prepare(
        "SELECT id, chain FROM audit WHERE (seq IS NULL AND outcome != 'running')
         OR chain NOT IN (0, 1) ORDER BY id",
    )?;
    let outside = stmt.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)))?;
    for row in outside {
        let (id, chain) = row?;
        let chain = Chain::from_value(chain).unwrap_or(Chain::Operations);
        problem(
            report,
            chain,
            Some(id),
            None,
            format!("record {id} is complete but outside the chain: inserted"),
        );
    }
    report.intact = report.problems.is_empty() && report.more_problems == 0;
    Ok(true)
}
