//! The state every handler, operation and task shares: the store (on a
//! blocking thread), the health of each VM, the bounds of relays and agent
//! calls, the roles, warm connections and the admission cache.

use std::sync::{Arc, Mutex};
use std::time::Duration;
use std::time::Instant;

use crate::audit::{trace, Record};
use crate::cache::{Services, VmView};
use crate::caller::Caller;
use crate::error::ErrorKind;
use crate::health::HealthMap;
use crate::metrics::Metrics;
use crate::model::VmRow;
use crate::refusals::Admit;
use crate::store::audit_chain::Chain;
use crate::store::{Store, StoreError};
use crate::{access, agent_calls, cache, copy_jobs, limits, refusals, spare};

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
    pub(crate) wbem_jobs: copy_jobs::Jobs,
    /// How long a relayed copy may move no byte before it is closed.
    pub(crate) relay_copy_idle: Duration,
    /// Refusals of callers without a role, recorded and counted apart.
    pub(crate) refusals: refusals::Refusals,
    /// The Prometheus metrics (`GET /metrics`).
    pub(crate) metrics: Arc<Metrics>,
    /// Whether each libvirt domain followed carries its VM's key.
    pub(crate) domain_keys: crate::health::DomainKeys,
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
            wbem_jobs: copy_jobs::Jobs::default(),
            relay_copy_idle: Duration::from_millis(limits::DEFAULT_RELAY_COPY_IDLE_TIMEOUT_MS),
            refusals: refusals::Refusals::default(),
            metrics: Arc::default(),
            domain_keys: crate::health::DomainKeys::default(),
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
        let metrics = self.metrics.clone();
        tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            let mut store = store.lock().unwrap_or_else(|e| e.into_inner());
            let before = store.config_changes();
            let result = f(&mut store);
            if store.config_changes() != before {
                cache.bump();
            }
            metrics.inventory_changed(store.take_inventory_changes());
            metrics.store_call(started.elapsed());
            result.map(|r| (r, cache.generation()))
        })
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
    }
}

/// Tells the metrics which VM names and service ids may be labels: the
/// whole inventory, read at start (then the store's changes follow, in
/// [`State::db`]).
fn inventory_to_metrics(store: &Store, metrics: &Metrics) {
    match (store.vms(), store.services()) {
        (Ok(vms), Ok(services)) => metrics.set_inventory(
            vms.into_iter().map(|vm| vm.name).collect(),
            services.into_iter().map(|s| s.id.to_string()).collect(),
        ),
        (Err(e), _) | (_, Err(e)) => {
            tracing::warn!(error = %guestcomm_protocol::error_chain(&e), "cannot read the inventory for the metrics");
        }
    }
}

/// The audit log's writes (records built by [`crate::audit`]), each
/// finished operation counted in the metrics as it is written.
impl State {
    /// Tells the metrics the inventory as the store holds it now (at start;
    /// then the store's changes, in [`State::db`]).
    pub(crate) async fn inventory_to_metrics(&self) {
        let metrics = self.metrics.clone();
        let _ = self
            .db(move |s| {
                inventory_to_metrics(s, &metrics);
                Ok(())
            })
            .await;
    }

    /// Records a finished operation (logged, never failing the caller).
    pub(crate) async fn audit(&self, record: Record) {
        self.audit_in(record, Chain::Operations).await;
    }

    /// Records a refused operation, `refusal` saying who refused it (a
    /// role, a policy, a disabled service: its label in the metrics).
    pub(crate) async fn audit_refusal(&self, record: Record, refusal: ErrorKind) -> Option<i64> {
        self.metrics.operation_finished(&record, Some(refusal));
        self.write_audit(record, Chain::Operations).await
    }

    /// Writes `record` (new, or completing the `running` record `record.id`)
    /// to `chain` and logs it; returns its id, `None` when it could not be
    /// written (logged, never failing the caller).
    pub(crate) async fn audit_in(&self, record: Record, chain: Chain) -> Option<i64> {
        if chain == Chain::Operations {
            self.metrics.operation_finished(&record, None);
        }
        self.write_audit(record, chain).await
    }

    /// [`State::audit_in`] without counting the operation.
    async fn write_audit(&self, record: Record, chain: Chain) -> Option<i64> {
        let copy = record.clone();
        match self.db(move |s| s.append_audit(&copy, chain)).await {
            Ok(written) => {
                self.metrics.audit_written(chain.name());
                if written.link.is_some() {
                    let mut shown = record;
                    shown.id = written.id;
                    trace(&shown, written.link);
                }
                Some(written.id)
            }
            Err(e) => {
                tracing::error!(error = %guestcomm_protocol::error_chain(&e), "cannot write an audit record");
                None
            }
        }
    }

    /// Records an operation that starts now; [`State::audit_end`] completes it.
    pub(crate) async fn audit_start(&self, record: &Record) -> Option<i64> {
        self.audit_in(record.clone(), Chain::Operations).await
    }

    /// Completes the record `id` from [`State::audit_start`] (or writes a new one).
    pub(crate) async fn audit_end(&self, id: Option<i64>, mut record: Record) {
        record.id = id.unwrap_or(0);
        self.audit_in(record, Chain::Operations).await;
    }
}

/// What admission reads, through the cache ([`crate::cache`]).
impl State {
    /// VM `name` as admission sees it, from memory when nothing changed
    /// since it was read.
    pub(crate) async fn vm_view(&self, name: &str) -> Result<Arc<VmView>, StoreError> {
        if let Some(view) = self.cache.cached_vm(name) {
            return Ok(view);
        }
        let name = name.to_string();
        let (view, read_at) = self
            .db_at_generation(move |s| VmView::load(s, &name))
            .await?;
        let view = Arc::new(view);
        self.cache.keep_vm(read_at, &view);
        Ok(view)
    }

    /// The registered services, from memory when nothing changed since
    /// they were read.
    pub(crate) async fn services(&self) -> Result<Arc<Services>, StoreError> {
        if let Some(services) = self.cache.cached_services() {
            return Ok(services);
        }
        let (rows, read_at) = self.db_at_generation(|s| s.services()).await?;
        let services = Arc::new(rows.into_iter().map(|row| (row.id, row)).collect());
        self.cache.keep_services(read_at, &services);
        Ok(services)
    }

    /// Every VM, by name (from memory unless the configuration changed).
    pub(crate) async fn inventory(&self) -> Result<Arc<Vec<VmRow>>, StoreError> {
        if let Some(inventory) = self.cache.cached_inventory() {
            return Ok(inventory);
        }
        let (rows, read_at) = self.db_at_generation(|s| s.vms()).await?;
        let inventory = Arc::new(rows);
        self.cache.keep_inventory(read_at, &inventory);
        Ok(inventory)
    }
}

impl State {
    /// Audits the refusal `record` of a caller without a role or an
    /// identity (module doc).
    pub(crate) async fn audit_unaccountable_refusal(&self, caller: Caller, record: Record) {
        // Counted as a refusal by role whether or not it is written.
        self.metrics
            .operation_finished(&record, Some(ErrorKind::Forbidden));
        if self.refusals.admit(caller, Instant::now()) == Admit::Record {
            self.write_audit(record, Chain::Refusals).await;
        }
    }
}
