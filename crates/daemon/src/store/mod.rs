//! Persistent state in SQLite, and the only module of the daemon that
//! speaks SQL: the VM inventory, service registrations, per-VM enablement
//! policies and each VM's host-to-guest key-value pool (here), the audit log
//! (`audit.rs`, its hash chains in `audit_chain.rs`), each VM's argument
//! policy document (`policy_docs.rs`) and which VMs follow a libvirt domain
//! (`libvirt_domains.rs`).
//!
//! The database lives at `<state>/guestcommd.db` in WAL mode with
//! `synchronous = FULL`: a committed change survives SIGKILL and power loss.
//! The daemon holds it exclusively while it runs (a second guestcommd on the
//! same directory is refused with [`StoreError::InUse`]).
//! The schema is versioned by `PRAGMA user_version` (`schema.rs` holds every
//! migration in order, applied in one transaction each at open). Built-in
//! services are (re)inserted at every open, so a new built-in needs no
//! migration.
//!
//! The files of this module import only downwards: `error.rs` and
//! `schema.rs` are leaves for the others, `audit_chain.rs` works on a bare
//! connection, and `audit.rs`, `policy_docs.rs` and `libvirt_domains.rs` add
//! methods to [`Store`].

mod audit;
pub(crate) mod audit_chain;
mod error;
#[cfg(any(test, feature = "libvirt"))]
mod libvirt_domains;
mod policy_docs;
mod schema;

use std::collections::{HashMap, HashSet};
use std::path::Path;

use guestcomm_protocol::auth::Psk;
use guestcomm_protocol::integration::{short_key, KvpEntries, KvpError, KvpPool};
use guestcomm_protocol::limits::MAX_KVP_KEYS_PER_POOL;
use guestcomm_protocol::{BuiltinService, ServiceId};
use guestcomm_transport::Address;
use rusqlite::{params, Connection, OptionalExtension};
use uuid::Uuid;

use crate::clock::now_secs;
use crate::model::Policy;
use crate::model::{InventoryChange, ServiceRow, VmRow};

pub(crate) use error::StoreError;

/// Sets a key of a VM's external pool (?1 the VM, ?2 the key, ?3 the value).
const KVP_UPSERT: &str = "INSERT INTO kvp_external (vm, key, value) VALUES (?1, ?2, ?3)
     ON CONFLICT(vm, key) DO UPDATE SET value = excluded.value";

/// Removes a key of a VM's external pool (?1 the VM, ?2 the key).
const KVP_DELETE: &str = "DELETE FROM kvp_external WHERE vm = ?1 AND key = ?2";

/// The external pool holds its maximum of keys.
fn pool_full() -> StoreError {
    KvpError::PoolFull {
        pool: KvpPool::External,
        max: MAX_KVP_KEYS_PER_POOL,
    }
    .into()
}

/// How [`Store::kvp_batch`] changes the keys it is given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum KvpBatch {
    /// Each key is new.
    Add,
    /// Each key exists and gets its new value.
    Modify,
    /// Each key exists and goes.
    Remove,
}

/// Which VMs' external key-value pools the health monitor may have to deliver.
#[derive(Debug, Default)]
pub(crate) struct KvpDeliveryState {
    /// Pools marked for delivery.
    pub(crate) pending: HashSet<Uuid>,
    /// Pools that are not empty.
    pub(crate) with_entries: HashSet<Uuid>,
}

impl KvpDeliveryState {
    /// Whether `vm`'s pool must go to its agent now that it answered: it
    /// waits for delivery, or the agent `came_back` (it may have lost it,
    /// and an empty pool still carries the host's data for pool 3).
    pub(crate) fn needs_push(&self, vm: Uuid, came_back: bool) -> bool {
        self.pending.contains(&vm) || came_back
    }

    /// Whether `vm`'s pool waits for delivery or is not empty: a failed
    /// push of it is worth a warning.
    pub(crate) fn holds_entries(&self, vm: Uuid) -> bool {
        self.pending.contains(&vm) || self.with_entries.contains(&vm)
    }
}

/// The open database.
pub(crate) struct Store {
    conn: Connection,
    /// Rows the audit log's writes changed, so that they do not count as
    /// changes of configuration ([`Store::config_changes`]).
    audit_changes: u64,
    /// VM names and service ids added or removed since the last
    /// [`Store::take_inventory_changes`], in the order they were made.
    inventory_changes: Vec<InventoryChange>,
}

impl Store {
    /// Rows changed on this connection by anything but the audit log: a
    /// different value means the configuration (VMs, services, policies,
    /// key-value pools) may have changed, the signal of module
    /// [`cache`](crate::cache).
    pub(crate) fn config_changes(&self) -> u64 {
        self.conn.total_changes().wrapping_sub(self.audit_changes)
    }

    /// The VM names and service ids added and removed since the last call,
    /// in order (none at open: the inventory is then read whole).
    pub(crate) fn take_inventory_changes(&mut self) -> Vec<InventoryChange> {
        std::mem::take(&mut self.inventory_changes)
    }

    /// Opens (creating if needed) the database in `dir`, migrating it.
    ///
    /// The file holds the VMs' keys: it is created (or set) mode 0600 before
    /// SQLite opens it, and SQLite gives its WAL and shared-memory files the
    /// same mode.
    pub(crate) fn open(dir: &Path) -> Result<Self, StoreError> {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let path = dir.join("guestcommd.db");
        let secret = |e: std::io::Error| StoreError::File(path.display().to_string(), e);
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&path)
            .map_err(secret)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).map_err(secret)?;
        let conn = Connection::open(&path)?;
        Self::init(conn).map_err(|e| match e {
            StoreError::Sqlite(e)
                if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy) =>
            {
                StoreError::InUse(path.display().to_string())
            }
            e => e,
        })
    }

    #[cfg(test)]
    /// An in-memory database, for tests.
    pub(crate) fn in_memory() -> Result<Self, StoreError> {
        Self::init(Connection::open_in_memory()?)
    }

    fn init(mut conn: Connection) -> Result<Self, StoreError> {
        // The daemon is the database's only user (everyone else goes through
        // its API): holding it exclusively spares every transaction its file
        // locks and the WAL its shared-memory index, and keeps a second
        // guestcommd off the same state directory. Set before the first
        // access in WAL mode, as SQLite requires for the latter.
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.pragma_update(None, "locking_mode", "EXCLUSIVE")?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        schema::migrate(&mut conn)?;
        let now = now_secs();
        for s in BuiltinService::ALL {
            conn.execute(
                "INSERT OR IGNORE INTO services (id, element_name, builtin, installed_at) VALUES (?1, ?2, 1, ?3)",
                params![s.id().to_string(), s.element_name(), now],
            )?;
        }
        Ok(Self {
            conn,
            audit_changes: 0,
            inventory_changes: Vec::new(),
        })
    }

    /// Adds a VM; the name must be free.
    pub(crate) fn add_vm(
        &mut self,
        name: &str,
        endpoint: &Address,
        psk: Option<Psk>,
    ) -> Result<VmRow, StoreError> {
        let row = VmRow {
            id: Uuid::new_v4(),
            name: name.into(),
            endpoint: endpoint.clone(),
            interface_enabled: true,
            default_policy: Policy::Enabled,
            created_at: now_secs(),
            psk,
        };
        insert_vm(&self.conn, &row)?;
        self.inventory_changes
            .push(InventoryChange::VmAdded(row.name.clone()));
        Ok(row)
    }

    /// Every VM, by name.
    pub(crate) fn vms(&self) -> Result<Vec<VmRow>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT id, name, endpoint, interface_enabled, default_policy, created_at, psk FROM vms ORDER BY name",
        )?;
        let rows = stmt.query_map([], vm_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// One VM by name.
    pub(crate) fn vm(&self, name: &str) -> Result<VmRow, StoreError> {
        self.conn
            .query_row(
                "SELECT id, name, endpoint, interface_enabled, default_policy, created_at, psk FROM vms WHERE name = ?1",
                [name],
                vm_row,
            )
            .optional()?
            .ok_or_else(|| StoreError::UnknownVm(name.into()))
    }

    /// Changes a VM's interface switch and default policy (`None` keeps a value).
    pub(crate) fn update_vm(
        &mut self,
        name: &str,
        interface_enabled: Option<bool>,
        default_policy: Option<Policy>,
    ) -> Result<VmRow, StoreError> {
        let vm = self.vm(name)?;
        self.conn.execute(
            "UPDATE vms SET interface_enabled = ?2, default_policy = ?3 WHERE id = ?1",
            params![
                vm.id.to_string(),
                interface_enabled.unwrap_or(vm.interface_enabled),
                default_policy.unwrap_or(vm.default_policy).value()
            ],
        )?;
        self.vm(name)
    }

    /// Removes a VM and its policies.
    pub(crate) fn remove_vm(&mut self, name: &str) -> Result<(), StoreError> {
        match self
            .conn
            .execute("DELETE FROM vms WHERE name = ?1", [name])?
        {
            0 => Err(StoreError::UnknownVm(name.into())),
            _ => {
                self.inventory_changes
                    .push(InventoryChange::VmRemoved(name.into()));
                Ok(())
            }
        }
    }

    /// Registers a service GUID.
    pub(crate) fn register(
        &mut self,
        id: ServiceId,
        element_name: &str,
        description: &str,
        host_endpoint: Option<&str>,
    ) -> Result<ServiceRow, StoreError> {
        let now = now_secs();
        let inserted = self.conn.execute(
            "INSERT INTO services (id, element_name, description, installed_at, host_endpoint) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT(id) DO NOTHING",
            params![id.to_string(), element_name, description, now, host_endpoint],
        )?;
        if inserted == 0 {
            return Err(StoreError::DuplicateService(id));
        }
        self.inventory_changes
            .push(InventoryChange::ServiceAdded(id));
        self.service(id)
    }

    /// Unregisters a (non-built-in) service and its per-VM policies.
    pub(crate) fn unregister(&mut self, id: ServiceId) -> Result<(), StoreError> {
        if self.service(id)?.builtin {
            return Err(StoreError::Builtin(id));
        }
        self.conn
            .execute("DELETE FROM services WHERE id = ?1", [id.to_string()])?;
        self.inventory_changes
            .push(InventoryChange::ServiceRemoved(id));
        Ok(())
    }

    /// Every registration, built-ins first, then by GUID.
    pub(crate) fn services(&self) -> Result<Vec<ServiceRow>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT id, element_name, description, builtin, enabled, installed_at, host_endpoint FROM services
             ORDER BY builtin DESC, id",
        )?;
        let rows = stmt.query_map([], service_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// One registration.
    pub(crate) fn service(&self, id: ServiceId) -> Result<ServiceRow, StoreError> {
        self.conn
            .query_row(
                "SELECT id, element_name, description, builtin, enabled, installed_at, host_endpoint FROM services WHERE id = ?1",
                [id.to_string()],
                service_row,
            )
            .optional()?
            .ok_or(StoreError::UnknownService(id))
    }

    /// Sets the host-wide switch of a service.
    pub(crate) fn set_global(&mut self, id: ServiceId, enabled: bool) -> Result<(), StoreError> {
        let n = self.conn.execute(
            "UPDATE services SET enabled = ?2 WHERE id = ?1",
            params![id.to_string(), enabled],
        )?;
        if n == 0 {
            return Err(StoreError::UnknownService(id));
        }
        Ok(())
    }

    /// Sets the policy of a service on one VM (Deferred removes the row).
    pub(crate) fn set_vm_policy(
        &mut self,
        id: ServiceId,
        vm: &str,
        policy: Policy,
    ) -> Result<(), StoreError> {
        self.service(id)?;
        let vm = self.vm(vm)?;
        if policy == Policy::Deferred {
            self.conn.execute(
                "DELETE FROM service_vm_policy WHERE service = ?1 AND vm = ?2",
                params![id.to_string(), vm.id.to_string()],
            )?;
        } else {
            self.conn.execute(
                "INSERT INTO service_vm_policy (service, vm, policy) VALUES (?1, ?2, ?3)
                 ON CONFLICT(service, vm) DO UPDATE SET policy = excluded.policy",
                params![id.to_string(), vm.id.to_string(), policy.value()],
            )?;
        }
        Ok(())
    }

    /// Every per-service policy VM `vm` has (services not listed are Deferred).
    pub(crate) fn vm_policies(&self, vm: Uuid) -> Result<HashMap<ServiceId, Policy>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT service, policy FROM service_vm_policy WHERE vm = ?1")?;
        let rows = stmt.query_map([vm.to_string()], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, u16>(1)?))
        })?;
        let mut policies = HashMap::new();
        for row in rows {
            let (service, value) = row?;
            // As in vm_policy, a value that is no policy counts as Deferred.
            if let (Ok(id), Some(policy)) = (service.parse(), Policy::from_value(value)) {
                policies.insert(id, policy);
            }
        }
        Ok(policies)
    }

    /// The policy of a service on a VM (Deferred when none was set).
    pub(crate) fn vm_policy(&self, id: ServiceId, vm: Uuid) -> Result<Policy, StoreError> {
        let value: Option<u16> = self
            .conn
            .query_row(
                "SELECT policy FROM service_vm_policy WHERE service = ?1 AND vm = ?2",
                params![id.to_string(), vm.to_string()],
                |r| r.get(0),
            )
            .optional()?;
        Ok(value
            .and_then(Policy::from_value)
            .unwrap_or(Policy::Deferred))
    }
}

impl Store {
    /// The external key-value pool of a VM.
    pub(crate) fn kvp_entries(&self, vm: Uuid) -> Result<KvpEntries, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT key, value FROM kvp_external WHERE vm = ?1 ORDER BY key")?;
        let rows = stmt.query_map([vm.to_string()], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Sets a key of a VM's external pool (checked by the caller) and marks
    /// the pool for delivery, in one transaction.
    pub(crate) fn kvp_set(&mut self, vm: Uuid, key: &str, value: &str) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        let vm_id = vm.to_string();
        let exists: bool = tx.query_row(
            "SELECT EXISTS(SELECT 1 FROM kvp_external WHERE vm = ?1 AND key = ?2)",
            params![vm_id, key],
            |r| r.get(0),
        )?;
        let count: i64 = tx.query_row(
            "SELECT COUNT(*) FROM kvp_external WHERE vm = ?1",
            [&vm_id],
            |r| r.get(0),
        )?;
        if !exists && usize::try_from(count).unwrap_or(usize::MAX) >= MAX_KVP_KEYS_PER_POOL {
            return Err(pool_full());
        }
        tx.execute(KVP_UPSERT, params![vm_id, key, value])?;
        commit_pending(tx, &vm_id)
    }

    /// Adds, changes or removes several keys of a VM's external pool (each
    /// checked by the caller) in one transaction, or none: each key must be
    /// absent (Add) or present (Modify, Remove), and the pool keep its
    /// bound. Marks the pool for delivery.
    pub(crate) fn kvp_batch(
        &mut self,
        vm: Uuid,
        batch: KvpBatch,
        items: &[(String, String)],
    ) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        let vm_id = vm.to_string();
        let mut keys: HashSet<String> = {
            let mut stmt = tx.prepare("SELECT key FROM kvp_external WHERE vm = ?1")?;
            let rows = stmt.query_map([&vm_id], |r| r.get(0))?;
            rows.collect::<Result<_, _>>()?
        };
        for (key, value) in items {
            let present = keys.contains(key);
            match (batch, present) {
                (KvpBatch::Add, true) => return Err(StoreError::KvpExists(short_key(key))),
                (KvpBatch::Modify | KvpBatch::Remove, false) => {
                    return Err(KvpError::UnknownKey {
                        pool: KvpPool::External,
                        key: short_key(key),
                    }
                    .into())
                }
                (KvpBatch::Add, false) => {
                    keys.insert(key.clone());
                }
                (KvpBatch::Modify, true) => {}
                (KvpBatch::Remove, true) => {
                    keys.remove(key);
                }
            }
            if keys.len() > MAX_KVP_KEYS_PER_POOL {
                return Err(pool_full());
            }
            if batch == KvpBatch::Remove {
                tx.execute(KVP_DELETE, params![vm_id, key])?;
            } else {
                tx.execute(KVP_UPSERT, params![vm_id, key, value])?;
            }
        }
        commit_pending(tx, &vm_id)
    }

    /// Removes a key of a VM's external pool and marks the pool for delivery.
    pub(crate) fn kvp_delete(&mut self, vm: Uuid, key: &str) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        let vm_id = vm.to_string();
        let n = tx.execute(KVP_DELETE, params![vm_id, key])?;
        if n == 0 {
            return Err(KvpError::UnknownKey {
                pool: KvpPool::External,
                key: short_key(key),
            }
            .into());
        }
        commit_pending(tx, &vm_id)
    }

    /// For a round of the health monitor, in one call: the VMs whose pool
    /// waits for delivery, and the VMs whose pool is not empty.
    pub(crate) fn kvp_delivery_state(&self) -> Result<KvpDeliveryState, StoreError> {
        let ids = |sql: &str| -> Result<HashSet<Uuid>, StoreError> {
            let mut stmt = self.conn.prepare_cached(sql)?;
            let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
            let mut ids = HashSet::new();
            for id in rows {
                // A row this daemon did not write is skipped, not fatal.
                if let Ok(id) = Uuid::parse_str(&id?) {
                    ids.insert(id);
                }
            }
            Ok(ids)
        };
        Ok(KvpDeliveryState {
            pending: ids("SELECT vm FROM kvp_pending")?,
            with_entries: ids("SELECT DISTINCT vm FROM kvp_external")?,
        })
    }

    #[cfg(test)]
    /// Whether the VM's agent has yet to receive its external pool.
    pub(crate) fn kvp_pending(&self, vm: Uuid) -> Result<bool, StoreError> {
        Ok(self.conn.query_row(
            "SELECT EXISTS(SELECT 1 FROM kvp_pending WHERE vm = ?1)",
            [vm.to_string()],
            |r| r.get(0),
        )?)
    }

    /// Records that the agent received `entries` (unless the pool changed since).
    pub(crate) fn kvp_delivered(
        &mut self,
        vm: Uuid,
        entries: &KvpEntries,
    ) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        let now = {
            let mut stmt = tx.prepare("SELECT key, value FROM kvp_external WHERE vm = ?1")?;
            let rows = stmt.query_map([vm.to_string()], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect::<Result<KvpEntries, _>>()?
        };
        if &now == entries {
            tx.execute("DELETE FROM kvp_pending WHERE vm = ?1", [vm.to_string()])?;
        }
        tx.commit()?;
        Ok(())
    }
}

/// Why the name `name` is taken: a VM that follows a libvirt domain
/// ([`StoreError::DuplicateDomainVm`], naming it) or one added by hand.
fn duplicate(conn: &Connection, name: &str) -> StoreError {
    let followed = conn
        .query_row(
            "SELECT vms.id, libvirt_domains.uri FROM vms JOIN libvirt_domains ON libvirt_domains.vm = vms.id WHERE vms.name = ?1",
            [name],
            |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)),
        )
        .optional();
    match followed {
        Ok(Some((id, uri))) => match id.parse() {
            Ok(domain) => StoreError::DuplicateDomainVm {
                name: name.to_string(),
                domain,
                uri,
            },
            Err(_) => StoreError::DuplicateVm(name.to_string()),
        },
        _ => StoreError::DuplicateVm(name.to_string()),
    }
}

/// Marks a VM's external pool for delivery and commits the change.
/// Inserts `row`; its name must be free.
fn insert_vm(conn: &Connection, row: &VmRow) -> Result<(), StoreError> {
    let inserted = conn.execute(
        "INSERT INTO vms (id, name, endpoint, interface_enabled, default_policy, created_at, psk)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT(name) DO NOTHING",
        params![
            row.id.to_string(),
            row.name,
            row.endpoint.to_string(),
            row.interface_enabled,
            row.default_policy.value(),
            row.created_at,
            row.psk.as_ref().map(Psk::secret_hex)
        ],
    )?;
    if inserted == 0 {
        return Err(duplicate(conn, &row.name));
    }
    Ok(())
}

fn commit_pending(tx: rusqlite::Transaction<'_>, vm_id: &str) -> Result<(), StoreError> {
    tx.execute(
        "INSERT OR IGNORE INTO kvp_pending (vm) VALUES (?1)",
        [vm_id],
    )?;
    tx.commit()?;
    Ok(())
}

fn vm_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<VmRow> {
    let id: String = r.get(0)?;
    let policy: u16 = r.get(4)?;
    Ok(VmRow {
        id: Uuid::parse_str(&id).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
        })?,
        name: r.get(1)?,
        endpoint: r.get::<_, String>(2)?.parse().map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(2, rusqlite::types::Type::Text, Box::new(e))
        })?,
        interface_enabled: r.get(3)?,
        default_policy: Policy::from_value(policy).unwrap_or(Policy::Enabled),
        created_at: r.get(5)?,
        psk: r
            .get::<_, Option<String>>(6)?
            .map(|hex| Psk::from_hex(&hex))
            .transpose()
            .map_err(|e| unreadable(6, e))?,
    })
}

fn service_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ServiceRow> {
    let id: String = r.get(0)?;
    Ok(ServiceRow {
        id: id.parse().map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
        })?,
        element_name: r.get(1)?,
        description: r.get(2)?,
        builtin: r.get(3)?,
        enabled: r.get(4)?,
        installed_at: r.get(5)?,
        host_endpoint: r
            .get::<_, Option<String>>(6)?
            .map(|text| text.parse())
            .transpose()
            .map_err(|e| unreadable(6, e))?,
    })
}

/// A text column whose value does not parse as what it holds.
fn unreadable(column: usize, e: impl std::error::Error + Send + Sync + 'static) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(column, rusqlite::types::Type::Text, Box::new(e))
}

#[cfg(test)]
mod tests {
    use super::schema::{AUDIT_CHAIN_MIGRATION, MIGRATIONS};
    use super::*;

    #[test]
    fn the_inventory_changes_are_kept_in_order_until_taken_and_failures_leave_none() {
        let mut s = Store::in_memory().unwrap();
        assert_eq!(s.take_inventory_changes(), [], "opening adds nothing");
        let endpoint = "unix:///a".parse().unwrap();
        s.add_vm("a", &endpoint, None).unwrap();
        assert!(s.add_vm("a", &endpoint, None).is_err());
        s.update_vm("a", Some(false), None).unwrap();
        let id: ServiceId = "0e0b6031-5213-4934-818b-38d90ced39db".parse().unwrap();
        s.register(id, "Mine", "", None).unwrap();
        assert!(s.register(id, "Mine", "", None).is_err());
        s.set_global(id, false).unwrap();
        s.unregister(id).unwrap();
        s.remove_vm("a").unwrap();
        assert!(s.remove_vm("a").is_err());
        assert_eq!(
            s.take_inventory_changes(),
            [
                InventoryChange::VmAdded("a".into()),
                InventoryChange::ServiceAdded(id),
                InventoryChange::ServiceRemoved(id),
                InventoryChange::VmRemoved("a".into()),
            ]
        );
        assert_eq!(s.take_inventory_changes(), [], "taken");
        let mut row = s.add_vm("b", &endpoint, None).unwrap();
        s.remove_vm("b").unwrap();
        row.name = "dom".into();
        s.add_domain_vm(&row, "qemu:///system").unwrap();
        s.update_domain_vm(&row).unwrap();
        row.name = "dom2".into();
        s.update_domain_vm(&row).unwrap();
        assert_eq!(
            s.take_inventory_changes(),
            [
                InventoryChange::VmAdded("b".into()),
                InventoryChange::VmRemoved("b".into()),
                InventoryChange::VmAdded("dom".into()),
                InventoryChange::VmRemoved("dom".into()),
                InventoryChange::VmAdded("dom2".into()),
            ],
            "an update that keeps the name changes nothing"
        );
    }

    #[test]
    fn kvp_delivery_state_lists_pending_and_non_empty_pools() {
        let mut s = Store::in_memory().unwrap();
        let a = s.add_vm("a", &"unix:///a".parse().unwrap(), None).unwrap();
        let b = s.add_vm("b", &"unix:///b".parse().unwrap(), None).unwrap();
        s.kvp_set(a.id, "k", "v").unwrap();
        let d = s.kvp_delivery_state().unwrap();
        assert!(d.needs_push(a.id, false), "set, not yet delivered");
        assert!(
            !d.needs_push(b.id, false),
            "an empty pool waits for nothing"
        );
        assert!(
            d.needs_push(b.id, true),
            "an agent that came back gets the host's data even with an empty pool"
        );
        assert!(d.holds_entries(a.id) && !d.holds_entries(b.id));
        let entries = s.kvp_entries(a.id).unwrap();
        s.kvp_delivered(a.id, &entries).unwrap();
        let d = s.kvp_delivery_state().unwrap();
        assert!(!d.needs_push(a.id, false), "delivered");
        assert!(
            d.needs_push(a.id, true),
            "an agent that came back gets it again"
        );
    }

    #[test]
    fn vms_are_unique_by_name_and_removal_cascades_policies() {
        let mut s = Store::in_memory().unwrap();
        s.add_vm("web1", &"unix:///a".parse().unwrap(), None)
            .unwrap();
        assert!(matches!(
            s.add_vm("web1", &"unix:///b".parse().unwrap(), None),
            Err(StoreError::DuplicateVm(_))
        ));
        let exec = BuiltinService::Exec.id();
        s.set_vm_policy(exec, "web1", Policy::Disabled).unwrap();
        let id = s.vm("web1").unwrap().id;
        assert_eq!(s.vm_policy(exec, id).unwrap(), Policy::Disabled);
        s.remove_vm("web1").unwrap();
        assert_eq!(s.vm_policy(exec, id).unwrap(), Policy::Deferred);
        assert!(matches!(s.remove_vm("web1"), Err(StoreError::UnknownVm(_))));
    }

    #[test]
    fn builtins_are_present_and_cannot_be_unregistered() {
        let mut s = Store::in_memory().unwrap();
        assert_eq!(s.services().unwrap().len(), BuiltinService::ALL.len());
        let err = s.unregister(BuiltinService::Exec.id()).unwrap_err();
        assert!(matches!(err, StoreError::Builtin(_)));
    }

    #[test]
    fn reopening_keeps_state_and_schema_version() {
        let dir = tempfile::tempdir().unwrap();
        let id: ServiceId = "0e0b6031-5213-4934-818b-38d90ced39db".parse().unwrap();
        {
            let mut s = Store::open(dir.path()).unwrap();
            s.add_vm("a", &"unix:///a".parse().unwrap(), None).unwrap();
            s.register(id, "Mine", "", None).unwrap();
        }
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(s.vms().unwrap()[0].name, "a");
        assert_eq!(s.service(id).unwrap().element_name, "Mine");
        let v: u32 = s
            .conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(v as usize, MIGRATIONS.len());
    }

    #[test]
    fn a_version_1_database_is_migrated_keeping_its_rows() {
        let dir = tempfile::tempdir().unwrap();
        {
            let conn = Connection::open(dir.path().join("guestcommd.db")).unwrap();
            conn.execute_batch(MIGRATIONS[0]).unwrap();
            conn.pragma_update(None, "user_version", 1).unwrap();
            conn.execute(
                "INSERT INTO services (id, element_name, installed_at) VALUES ('0e0b6031-5213-4934-818b-38d90ced39db', 'Old', 0)",
                [],
            )
            .unwrap();
            conn.execute(
                "INSERT INTO vms (id, name, endpoint, created_at) VALUES ('6f9619ff-8b86-d011-b42d-00c04fc964ff', 'old-vm', 'unix:///a', 0)",
                [],
            )
            .unwrap();
        }
        let s = Store::open(dir.path()).unwrap();
        let id: ServiceId = "0e0b6031-5213-4934-818b-38d90ced39db".parse().unwrap();
        let row = s.service(id).unwrap();
        assert_eq!(
            (row.element_name.as_str(), row.host_endpoint),
            ("Old", None)
        );
        // Migration 3: VMs from before keys existed have none.
        assert_eq!(s.vm("old-vm").unwrap().psk, None);
        // Migration 4: they have an empty external key-value pool.
        let old = s.vm("old-vm").unwrap().id;
        assert!(s.kvp_entries(old).unwrap().is_empty());
        assert!(!s.kvp_pending(old).unwrap());
        let v: u32 = s
            .conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(v as usize, MIGRATIONS.len());
    }

    #[test]
    fn external_pool_is_bounded_marked_pending_and_removed_with_its_vm() {
        let mut s = Store::in_memory().unwrap();
        let vm = s
            .add_vm("web1", &"unix:///a".parse().unwrap(), None)
            .unwrap()
            .id;
        assert!(!s.kvp_pending(vm).unwrap());
        for i in 0..MAX_KVP_KEYS_PER_POOL {
            s.kvp_set(vm, &format!("k{i}"), "v").unwrap();
        }
        let err = s.kvp_set(vm, "one-more", "v").unwrap_err();
        assert!(matches!(err, StoreError::Kvp(KvpError::PoolFull { .. })));
        s.kvp_set(vm, "k0", "new").unwrap();
        assert!(s.kvp_pending(vm).unwrap());
        let entries = s.kvp_entries(vm).unwrap();
        assert_eq!(entries["k0"], "new");
        s.kvp_delivered(vm, &entries).unwrap();
        assert!(!s.kvp_pending(vm).unwrap());
        assert!(matches!(
            s.kvp_delete(vm, "nope"),
            Err(StoreError::Kvp(KvpError::UnknownKey { .. }))
        ));
        s.kvp_delete(vm, "k0").unwrap();
        // A batch changes every key or none.
        let items = |keys: &[&str]| -> Vec<(String, String)> {
            keys.iter()
                .map(|k| (k.to_string(), "b".to_string()))
                .collect()
        };
        let before = s.kvp_entries(vm).unwrap();
        let err = s
            .kvp_batch(vm, KvpBatch::Modify, &items(&["k1", "nope"]))
            .unwrap_err();
        assert!(matches!(err, StoreError::Kvp(KvpError::UnknownKey { .. })));
        let err = s
            .kvp_batch(vm, KvpBatch::Add, &items(&["new", "k1"]))
            .unwrap_err();
        assert!(matches!(err, StoreError::KvpExists(_)), "{err}");
        let err = s
            .kvp_batch(vm, KvpBatch::Add, &items(&["new1", "new2"]))
            .unwrap_err();
        assert!(matches!(err, StoreError::Kvp(KvpError::PoolFull { .. })));
        assert_eq!(s.kvp_entries(vm).unwrap(), before);
        s.kvp_batch(vm, KvpBatch::Remove, &items(&["k1", "k2"]))
            .unwrap();
        s.kvp_batch(vm, KvpBatch::Add, &items(&["new1", "new2"]))
            .unwrap();
        s.kvp_batch(vm, KvpBatch::Modify, &items(&["k3"])).unwrap();
        let now = s.kvp_entries(vm).unwrap();
        assert!(!now.contains_key("k1") && now["new2"] == "b" && now["k3"] == "b");
        s.kvp_batch(vm, KvpBatch::Remove, &items(&["new1", "new2"]))
            .unwrap();
        // Delivered contents that are no longer current keep the mark.
        s.kvp_delivered(vm, &entries).unwrap();
        assert!(s.kvp_pending(vm).unwrap());
        s.remove_vm("web1").unwrap();
        assert!(s.kvp_entries(vm).unwrap().is_empty());
    }

    #[test]
    fn audit_records_from_before_the_chains_are_chained_by_the_migration() {
        let dir = tempfile::tempdir().unwrap();
        {
            let conn = Connection::open(dir.path().join("guestcommd.db")).unwrap();
            for sql in &MIGRATIONS[..AUDIT_CHAIN_MIGRATION] {
                conn.execute_batch(sql).unwrap();
            }
            conn.pragma_update(None, "user_version", AUDIT_CHAIN_MIGRATION as u32)
                .unwrap();
            for (time, outcome) in [(1, "ok"), (2, "running"), (3, "refused")] {
                conn.execute(
                    "INSERT INTO audit (time_ms, operation, outcome) VALUES (?1, 'vm.add', ?2)",
                    params![time, outcome],
                )
                .unwrap();
            }
        }
        let mut s = Store::open(dir.path()).unwrap();
        let report = s.verify_audit().unwrap();
        assert!(report.intact, "{:?}", report.problems);
        assert_eq!(report.chains[0].head_seq, 2, "the two complete records");
        assert_eq!(s.interrupt_running_audit().unwrap(), 1);
        let report = s.verify_audit().unwrap();
        assert!(report.intact, "{:?}", report.problems);
        assert_eq!(report.chains[0].head_seq, 3, "and the interrupted one");
    }

    #[test]
    fn a_database_from_a_newer_daemon_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let conn = Connection::open(dir.path().join("guestcommd.db")).unwrap();
        conn.pragma_update(None, "user_version", 99).unwrap();
        drop(conn);
        assert!(matches!(
            Store::open(dir.path()),
            Err(StoreError::TooNew { found: 99, .. })
        ));
    }
}
