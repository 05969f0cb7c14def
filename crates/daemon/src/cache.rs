//! What every relayed request needs from the store, kept in memory: the VM
//! by name, the registered services, the VM's per-service policies and its
//! host policy document; and the whole inventory, which the health monitor
//! walks every heartbeat (reading 10,000 rows from SQLite each round was a
//! fifth of an idle daemon's CPU).
//!
//! Without it an exec or cp through the daemon pays two blocking hand-offs
//! to SQLite (the VM when the CLI connects, admission when its request
//! arrives) before the one write it cannot avoid, the write-ahead audit
//! record. With it, the common case reads none.
//!
//! Invalidation is coarse and cannot miss a change: every store call made
//! through [`State::db`](crate::state::State::db) that changed anything but the
//! audit log bumps a generation ([`Store::config_changes`]), and a cache
//! built from an older generation is dropped whole. A load that raced with
//! a change is used once but not kept, so once a change has returned to its
//! caller no later request sees the state before it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use guestcomm_policy::PolicyDocument;
use guestcomm_protocol::ServiceId;

use crate::limits::MAX_CACHED_VMS;
use crate::model::Policy;
use crate::model::{ServiceRow, VmRow};
use crate::store::{Store, StoreError};

/// One VM as admission sees it.
#[derive(Debug)]
pub(crate) struct VmView {
    /// The VM's row.
    pub(crate) row: VmRow,
    /// Its per-service policies; a service not listed is Deferred.
    policies: HashMap<ServiceId, Policy>,
    /// Its host policy document, if it has one.
    pub(crate) document: Option<PolicyDocument>,
}

impl VmView {
    /// Reads VM `name`'s view.
    pub(crate) fn load(store: &Store, name: &str) -> Result<Self, StoreError> {
        let row = store.vm(name)?;
        let policies = store.vm_policies(row.id)?;
        let document = store.policy_document(row.id)?;
        Ok(Self {
            row,
            policies,
            document,
        })
    }

    /// The VM's own policy for service `id` (Deferred when it has none).
    pub(crate) fn policy(&self, id: ServiceId) -> Policy {
        self.policies.get(&id).copied().unwrap_or(Policy::Deferred)
    }
}

/// The registered services, by GUID.
pub(crate) type Services = HashMap<ServiceId, ServiceRow>;

/// The change counter and the views built at one value of it.
#[derive(Debug, Default)]
pub(crate) struct Cache {
    /// The store's generation: bumped by every change of configuration.
    generation: AtomicU64,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// The generation the entries below were read at.
    generation: u64,
    services: Option<Arc<Services>>,
    vms: HashMap<String, Arc<VmView>>,
    inventory: Option<Arc<Vec<VmRow>>>,
}

impl Cache {
    /// The current generation.
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Marks everything read so far as stale (called with the store locked,
    /// right after a change, so no reader can see the change and an old
    /// generation together).
    pub(crate) fn bump(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// The entries, emptied first if they are older than the store.
    fn current(&self) -> MutexGuard<'_, Inner> {
        let now = self.generation();
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if inner.generation != now {
            *inner = Inner {
                generation: now,
                ..Inner::default()
            };
        }
        inner
    }

    pub(crate) fn cached_vm(&self, name: &str) -> Option<Arc<VmView>> {
        self.current().vms.get(name).cloned()
    }

    pub(crate) fn cached_services(&self) -> Option<Arc<Services>> {
        self.current().services.clone()
    }

    pub(crate) fn cached_inventory(&self) -> Option<Arc<Vec<VmRow>>> {
        self.current().inventory.clone()
    }

    /// Keeps `view`, read at generation `read_at`, unless the store has
    /// changed since.
    pub(crate) fn keep_vm(&self, read_at: u64, view: &Arc<VmView>) {
        let mut inner = self.current();
        if inner.generation == read_at {
            if inner.vms.len() >= MAX_CACHED_VMS {
                inner.vms.clear();
            }
            inner.vms.insert(view.row.name.clone(), view.clone());
        }
    }

    pub(crate) fn keep_services(&self, read_at: u64, services: &Arc<Services>) {
        let mut inner = self.current();
        if inner.generation == read_at {
            inner.services = Some(services.clone());
        }
    }

    pub(crate) fn keep_inventory(&self, read_at: u64, inventory: &Arc<Vec<VmRow>>) {
        let mut inner = self.current();
        if inner.generation == read_at {
            inner.inventory = Some(inventory.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::State;

    fn state() -> State {
        let mut store = Store::in_memory().unwrap();
        store
            .add_vm("web1", &"unix:///a".parse().unwrap(), None)
            .unwrap();
        State::new(store)
    }

    #[tokio::test]
    async fn a_view_is_read_once_and_dropped_by_any_change() {
        let state = state();
        let first = state.vm_view("web1").await.unwrap();
        let again = state.vm_view("web1").await.unwrap();
        assert!(
            Arc::ptr_eq(&first, &again),
            "the second read is from memory"
        );

        let exec = guestcomm_protocol::BuiltinService::Exec.id();
        assert_eq!(first.policy(exec), Policy::Deferred);
        state
            .db(move |s| s.set_vm_policy(exec, "web1", Policy::Disabled))
            .await
            .unwrap();
        let changed = state.vm_view("web1").await.unwrap();
        assert!(!Arc::ptr_eq(&first, &changed));
        assert_eq!(changed.policy(exec), Policy::Disabled);
    }

    #[tokio::test]
    async fn audit_records_do_not_invalidate_but_registrations_do() {
        let state = state();
        let services = state.services().await.unwrap();
        let generation = state.cache.generation();
        state
            .db(|s| s.write_audit(&crate::audit::Record::default()))
            .await
            .unwrap();
        assert_eq!(
            state.cache.generation(),
            generation,
            "audit is not configuration"
        );
        assert!(Arc::ptr_eq(&services, &state.services().await.unwrap()));

        let id: ServiceId = "0e0b6031-5213-4934-818b-38d90ced39db".parse().unwrap();
        state
            .db(move |s| s.register(id, "probe", "", None))
            .await
            .unwrap();
        let now = state.services().await.unwrap();
        assert!(now.contains_key(&id) && !services.contains_key(&id));
    }

    #[tokio::test]
    async fn the_inventory_is_read_once_and_dropped_by_any_change() {
        let state = state();
        let first = state.inventory().await.unwrap();
        assert!(Arc::ptr_eq(&first, &state.inventory().await.unwrap()));
        state
            .db(|s| s.add_vm("web2", &"unix:///b".parse().unwrap(), None))
            .await
            .unwrap();
        let now = state.inventory().await.unwrap();
        let names: Vec<&str> = now.iter().map(|vm| vm.name.as_str()).collect();
        assert_eq!(names, ["web1", "web2"]);
        assert_eq!(first.len(), 1, "what was read before stays as it was");
    }

    #[tokio::test]
    async fn unknown_and_removed_vms_are_errors_not_cached_rows() {
        let state = state();
        assert!(matches!(
            state.vm_view("nope").await,
            Err(StoreError::UnknownVm(_))
        ));
        state.vm_view("web1").await.unwrap();
        state.db(|s| s.remove_vm("web1")).await.unwrap();
        assert!(matches!(
            state.vm_view("web1").await,
            Err(StoreError::UnknownVm(_))
        ));
    }

    #[test]
    fn a_load_that_raced_with_a_change_is_not_kept() {
        let cache = Cache::default();
        let read_at = cache.generation();
        cache.bump();
        let mut store = Store::in_memory().unwrap();
        store
            .add_vm("web1", &"unix:///a".parse().unwrap(), None)
            .unwrap();
        let view = Arc::new(VmView::load(&store, "web1").unwrap());
        cache.keep_vm(read_at, &view);
        assert!(cache.cached_vm("web1").is_none());
        cache.keep_vm(cache.generation(), &view);
        assert!(cache.cached_vm("web1").is_some());
    }
}
