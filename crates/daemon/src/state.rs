//! The state every handler, operation and task shares: the store (on a
//! blocking thread), the health of each VM, the bounds of relays and agent
//! calls, the roles, warm connections and the admission cache.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::health::HealthMap;
use crate::store::{Store, StoreError};
use crate::{access, agent_calls, cache, limits, refusals, spare, wbem};

/// Shared by every handler and the monitor.
pub(crate) struct State {
    store: Arc<Mutex<Store>>,
    /// Health of each VM.
    pub(crate) health: HealthMap,
    /// One permit per relayed connection ([`limits::MAX_RELAYS`]).
    pub(crate) relays: Arc<tokio::sync::Semaphore>,
    /// The API calls asking each VM's agent, bounded per VM.
    pub(crate) agent_calls: Arc<agent_calls::AgentCalls>,
    /// Signalled after every change of VMs, registrations or policies.
    pub(crate) changed: tokio::sync::Notify,
    /// Who holds which role on the API.
    pub(crate) access: access::Access,
    /// Warm, authenticated agent connections of recently used VMs.
    pub(crate) spares: Arc<spare::Spares>,
    /// What relayed requests need from the store, kept while it is unchanged.
    pub(crate) cache: Arc<cache::Cache>,
    /// CopyFilesToGuest jobs of the WBEM endpoint (in memory).
    pub(crate) wbem_jobs: wbem::jobs::Jobs,
    /// How long a relayed copy may move no byte before it is closed.
    pub(crate) relay_copy_idle: Duration,
    /// Refusals of callers without a role, recorded and counted apart.
    pub(crate) refusals: refusals::Refusals,
}

impl State {
    #[cfg(test)]
    /// State over `store`, with no health known yet and no roles but the
    /// built-in admins.
    pub(crate) fn new(store: Store) -> Self {
        Self::with_access(store, access::Access::default())
    }

    /// State over `store` with these role memberships.
    pub(crate) fn with_access(store: Store, access: access::Access) -> Self {
        Self {
            access,
            store: Arc::new(Mutex::new(store)),
            health: HealthMap::default(),
            relays: Arc::new(tokio::sync::Semaphore::new(limits::MAX_RELAYS)),
            agent_calls: Arc::default(),
            changed: tokio::sync::Notify::new(),
            spares: Arc::default(),
            cache: Arc::default(),
            wbem_jobs: wbem::jobs::Jobs::default(),
            relay_copy_idle: Duration::from_millis(limits::DEFAULT_RELAY_COPY_IDLE_TIMEOUT_MS),
            refusals: refusals::Refusals::default(),
        }
    }

    /// Runs `f` on the database on a blocking thread (SQLite calls block).
    /// A call that changed the configuration marks [`State::cache`] stale.
    pub(crate) async fn db<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&mut Store) -> Result<R, StoreError> + Send + 'static,
    {
        self.db_at_generation(f).await.map(|(r, _)| r)
    }

    /// [`State::db`], also returning the cache generation the call left.
    pub(crate) async fn db_at_generation<R, F>(&self, f: F) -> Result<(R, u64), StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&mut Store) -> Result<R, StoreError> + Send + 'static,
    {
        let store = self.store.clone();
        let cache = self.cache.clone();
        tokio::task::spawn_blocking(move || {
            let mut store = store.lock().unwrap_or_else(|e| e.into_inner());
            let before = store.config_changes();
            let result = f(&mut store);
            if store.config_changes() != before {
                cache.bump();
            }
            result.map(|r| (r, cache.generation()))
        })
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
    }
}
