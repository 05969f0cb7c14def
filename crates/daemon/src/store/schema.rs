//! The schema of the state database and its migrations: [`MIGRATIONS`]
//! holds every step in order, versioned by `PRAGMA user_version`, and
//! [`migrate`] applies the missing ones, one transaction each.

use rusqlite::Connection;

use super::audit_chain;
use super::error::StoreError;

/// Schema steps; step N brings `user_version` from N to N + 1.
pub(super) const MIGRATIONS: &[&str] = &[
    // 1: inventory, registry, per-VM policies.
    "CREATE TABLE vms (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        endpoint TEXT NOT NULL,
        interface_enabled INTEGER NOT NULL DEFAULT 1,
        default_policy INTEGER NOT NULL DEFAULT 2,
        created_at INTEGER NOT NULL
    );
    CREATE TABLE services (
        id TEXT PRIMARY KEY,
        element_name TEXT NOT NULL,
        description TEXT NOT NULL DEFAULT '',
        builtin INTEGER NOT NULL DEFAULT 0,
        enabled INTEGER NOT NULL DEFAULT 1,
        installed_at INTEGER NOT NULL
    );
    CREATE TABLE service_vm_policy (
        service TEXT NOT NULL REFERENCES services(id) ON DELETE CASCADE,
        vm TEXT NOT NULL REFERENCES vms(id) ON DELETE CASCADE,
        policy INTEGER NOT NULL,
        PRIMARY KEY (service, vm)
    );",
    // 2: where guest-initiated connections to a service are relayed on the host.
    "ALTER TABLE services ADD COLUMN host_endpoint TEXT;",
    // 3: the VM's pre-shared key (hex), NULL for agents without credentials.
    "ALTER TABLE vms ADD COLUMN psk TEXT;",
    // 4: the host-to-guest key-value pool (KVP pool 0) of each VM, and the
    // VMs whose agent has not received its latest contents yet.
    "CREATE TABLE kvp_external (
        vm TEXT NOT NULL REFERENCES vms(id) ON DELETE CASCADE,
        key TEXT NOT NULL,
        value TEXT NOT NULL,
        PRIMARY KEY (vm, key)
    );
    CREATE TABLE kvp_pending (
        vm TEXT PRIMARY KEY REFERENCES vms(id) ON DELETE CASCADE
    );",
    // 5: the audit log (see store/audit.rs); vm and service are names, not keys,
    // so records outlive what they name.
    "CREATE TABLE audit (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        time_ms INTEGER NOT NULL,
        uid INTEGER,
        gid INTEGER,
        pid INTEGER,
        vm TEXT,
        service TEXT,
        operation TEXT NOT NULL,
        arguments TEXT NOT NULL DEFAULT '',
        outcome TEXT NOT NULL,
        exit_code INTEGER,
        bytes INTEGER,
        error TEXT,
        duration_ms INTEGER NOT NULL DEFAULT 0,
        certificate TEXT
    );
    CREATE INDEX audit_vm ON audit (vm, id);
    CREATE INDEX audit_time ON audit (time_ms);",
    // 6: each VM's argument-level policy document, validated JSON (see store/policy_docs.rs).
    "CREATE TABLE vm_policies (
        vm TEXT PRIMARY KEY REFERENCES vms(id) ON DELETE CASCADE,
        document TEXT NOT NULL,
        updated_at INTEGER NOT NULL
    );",
    // 7: the environment of an exec in its audit record: JSON of
    // `guestcomm_api::AuditEnvironment` (names and a digest, no value).
    "ALTER TABLE audit ADD COLUMN environment TEXT;",
    // 8: the audit log's hash chains (see audit_chain.rs): each record's
    // chain, position and digest, and each chain's anchor and head. The
    // records already there are chained by [`AUDIT_CHAIN_MIGRATION`]'s
    // code. A column added to `audit` later must be NULL in the rows it
    // finds (no default): NULL columns are outside the chain's encoding, so
    // the records chained before stay valid.
    "ALTER TABLE audit ADD COLUMN chain INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE audit ADD COLUMN seq INTEGER;
    ALTER TABLE audit ADD COLUMN digest BLOB;
    CREATE UNIQUE INDEX audit_chain_seq ON audit (chain, seq);
    CREATE TABLE audit_chain (
        chain INTEGER PRIMARY KEY,
        anchor_seq INTEGER NOT NULL,
        anchor_digest BLOB NOT NULL,
        head_seq INTEGER NOT NULL,
        head_digest BLOB NOT NULL
    );",
    // 9: the VMs that follow a libvirt domain (`guestcommd --libvirt`; see
    // libvirt_domains.rs): the VM's id is the domain's UUID.
    "CREATE TABLE libvirt_domains (
        vm TEXT PRIMARY KEY REFERENCES vms(id) ON DELETE CASCADE,
        uri TEXT NOT NULL
    );",
];

/// The step of [`MIGRATIONS`] (from 0) after which the audit records already
/// there are put in their chain.
pub(super) const AUDIT_CHAIN_MIGRATION: usize = 7;

/// Brings the database on `conn` to the newest schema, or refuses one
/// written by a newer guestcommd ([`StoreError::TooNew`]).
pub(super) fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let version: u32 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let known = MIGRATIONS.len() as u32;
    if version > known {
        return Err(StoreError::TooNew {
            found: version,
            known,
        });
    }
    for (step, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        if step == AUDIT_CHAIN_MIGRATION {
            audit_chain::link_unchained(&tx)?;
        }
        tx.pragma_update(None, "user_version", step as u32 + 1)?;
        tx.commit()?;
    }
    Ok(())
}
