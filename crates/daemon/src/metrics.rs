//! The daemon's Prometheus metrics: one registry with every family, and the
//! few calls the layers make where things are decided (the audit writer for
//! operations, the store for its latency, the caps for their refusals),
//! served at `GET /metrics` (and `--metrics`) as OpenMetrics text, or the
//! classic Prometheus text to clients that do not ask for OpenMetrics.
//!
//! ```text
//! # TYPE guestcomm_operations counter
//! guestcomm_operations_total{vm="web1",service="…",op="exec",outcome="ok"} 3
//! # TYPE guestcomm_exec_duration_seconds histogram
//! guestcomm_exec_duration_seconds_bucket{vm="web1",le="0.005"} 1
//! # TYPE guestcomm_vm_health gauge
//! guestcomm_vm_health{vm="web1",state="OK"} 1
//! # EOF
//! ```
//!
//! Labels take only bounded words: a VM name or a service id only while the
//! inventory holds it (else empty: a refused call may name anything), an
//! operation's name from the daemon's own tables, and the words of the
//! enums below. Never a command line, a path or a user's text. A VM (or
//! service) that leaves the inventory loses its series. The inventory is
//! read whole at start ([`Metrics::set_inventory`]); after that the metrics
//! follow the store's changes one by one ([`Metrics::inventory_changed`]),
//! so registering N VMs costs N set insertions, not N reads of the
//! inventory.
//!
//! Cost per finished operation: one read lock of the inventory, the label
//! strings built, and one read lock of the family with an atomic add (a
//! write lock only the first time a label set appears); an exec or copy
//! also observes its histogram (prometheus-client holds a mutex per
//! series for that). Each store call observes one histogram.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::Duration;

use guestcomm_api::{AuditOutcome, AuditRecord, HealthStatus};
use guestcomm_protocol::integration::AgentCounters;
use guestcomm_protocol::BuiltinService;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

use crate::error::ErrorKind;
use crate::limits::METRICS_READ_RECENTLY_S;
use crate::model::InventoryChange;

/// The two formats of the exposition: OpenMetrics text 1.0.0 for clients
/// that ask for it (Prometheus does), else Prometheus' classic text format
/// 0.0.4 (what `curl … | promtool check metrics` reads), as Prometheus' own
/// client libraries negotiate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Format {
    /// `application/openmetrics-text; version=1.0.0`.
    OpenMetrics,
    /// `text/plain; version=0.0.4`.
    Text,
}

impl Format {
    /// The format an `Accept` header asks for.
    pub(crate) fn accepted(accept: Option<&str>) -> Self {
        match accept {
            Some(accept) if accept.contains("application/openmetrics-text") => Self::OpenMetrics,
            _ => Self::Text,
        }
    }

    /// Its content type.
    pub(crate) fn content_type(self) -> &'static str {
        match self {
            Self::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Self::Text => "text/plain; version=0.0.4; charset=utf-8",
        }
    }
}

/// OpenMetrics text as the classic text format: a counter's `HELP` and
/// `TYPE` name its samples (`_total`), and no `UNIT` or `EOF` lines.
fn classic_text(open_metrics: &str) -> String {
    let counters: HashSet<&str> = open_metrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut text = String::with_capacity(open_metrics.len());
    for line in open_metrics.lines() {
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|p| line.strip_prefix(p).map(|rest| (p, rest)));
        match meta.and_then(|(p, rest)| rest.split_once(' ').map(|(n, r)| (p, n, r))) {
            Some((prefix, name, rest)) if counters.contains(name) => {
                text.push_str(&format!("{prefix}{name}_total {rest}"));
            }
            _ => text.push_str(line),
        }
        text.push('\n');
    }
    text
}

/// An operation's outcome as a label: refusals split by who refused.
pub(crate) fn outcome_label(outcome: AuditOutcome, refusal: Option<ErrorKind>) -> &'static str {
    match outcome {
        AuditOutcome::Ok => "ok",
        AuditOutcome::Refused => match refusal {
            Some(ErrorKind::Forbidden) => "refused_role",
            Some(ErrorKind::ServiceDisabled | ErrorKind::Unsupported) => "refused_disabled",
            _ => "refused_policy",
        },
        _ => "failed",
    }
}

/// The daemon's admission bounds whose refusals are counted.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Cap {
    /// Relayed connections at once (`MAX_RELAYS`).
    Relays,
    /// API calls asking one VM's agent at once.
    AgentCalls,
    /// HTTP connections of one peer, or of all, on a listener.
    HttpConnections,
}

impl Cap {
    const ALL: [Cap; 3] = [Self::Relays, Self::AgentCalls, Self::HttpConnections];

    fn label(self) -> &'static str {
        match self {
            Self::Relays => "relays",
            Self::AgentCalls => "agent_calls",
            Self::HttpConnections => "http_connections",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabels {
    vm: String,
    service: String,
    op: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VmLabels {
    vm: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CopyLabels {
    vm: String,
    direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HealthLabels {
    vm: String,
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServiceLabels {
    vm: String,
    service: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CapLabels {
    cap: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ChainLabels {
    chain: &'static str,
}

/// The directions of a copy, as the relay's operation names them.
const COPY_DIRECTIONS: [(&str, &str); 2] =
    [("cp.to_guest", "to_guest"), ("cp.from_guest", "from_guest")];

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Exec and copy durations: 5 ms to about 22 min, ×4 per bucket.
fn operation_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 4.0, 10))
}

/// Store calls: 50 µs to about 3 s, ×4 per bucket.
fn store_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_05, 4.0, 9))
}

/// What the inventory holds: the only VM names and service ids a label takes.
#[derive(Default)]
struct Known {
    vms: HashSet<String>,
    services: HashSet<String>,
}

/// The registry and every family.
pub(crate) struct Metrics {
    /// Off (`--no-metrics`): every recording call returns at once.
    enabled: bool,
    /// When the exposition was last rendered (seconds since the epoch).
    last_read: AtomicU64,
    registry: Registry,
    known: RwLock<Known>,
    /// Every label set of `operations` made so far, to drop a VM's or a
    /// service's when it leaves the inventory (a family cannot be listed).
    operation_series: Mutex<HashSet<OperationLabels>>,
    operations: Family<OperationLabels, Counter>,
    exec_duration: HistogramFamily<VmLabels>,
    copy_duration: HistogramFamily<CopyLabels>,
    copy_bytes: Family<CopyLabels, Counter>,
    vm_health: Family<HealthLabels, Gauge>,
    heartbeat_rtt: Family<VmLabels, Gauge<f64, AtomicU64>>,
    relays_active: Gauge,
    warm_connections: Gauge,
    cap_refusals: Family<CapLabels, Counter>,
    audit_records: Family<ChainLabels, Counter>,
    store_duration: Histogram,
    agent: AgentFamilies,
}

/// The agents' own counters (their heartbeat answers), by VM: set to what
/// the agent last said, not added to (a restarted agent starts again at 0,
/// which Prometheus reads as a counter reset).
#[derive(Default)]
struct AgentFamilies {
    connections: Family<VmLabels, Counter>,
    auth_failures: Family<VmLabels, Counter>,
    requests: Family<ServiceLabels, Counter>,
    refused: Family<VmLabels, Counter>,
    copy_bytes: Family<CopyLabels, Counter>,
}

impl AgentFamilies {
    fn register(&self, registry: &mut Registry) {
        registry.register(
            "agent_connections",
            "Connections the VM's agent accepted, as it last said (heartbeat)",
            self.connections.clone(),
        );
        registry.register(
            "agent_auth_failures",
            "Handshakes the VM's agent refused for their authentication",
            self.auth_failures.clone(),
        );
        registry.register(
            "agent_requests",
            "Requests the VM's agent dispatched, by service (exec, files, info, time, kvp, shutdown, fsfreeze, heartbeat)",
            self.requests.clone(),
        );
        registry.register(
            "agent_refused",
            "Requests the VM's agent refused before a service ran them (its guest policy, unknown requests)",
            self.refused.clone(),
        );
        registry.register_with_unit(
            "agent_copy",
            "File bytes the VM's agent copied, by direction (to_guest, from_guest)",
            Unit::Bytes,
            self.copy_bytes.clone(),
        );
    }

    fn set(&self, vm: &str, counters: &AgentCounters) {
        let store = |c: &Counter, v: u64| c.inner().store(v, Ordering::Relaxed);
        let labels = VmLabels { vm: vm.into() };
        store(
            &self.connections.get_or_create(&labels),
            counters.connections,
        );
        store(
            &self.auth_failures.get_or_create(&labels),
            counters.auth_failures,
        );
        store(&self.refused.get_or_create(&labels), counters.refused);
        // Only the names this daemon knows: a guest's others are dropped.
        for service in BuiltinService::ALL {
            if let Some(n) = counters.requests.get(service.name()) {
                let labels = ServiceLabels {
                    vm: vm.into(),
                    service: service.name(),
                };
                store(&self.requests.get_or_create(&labels), *n);
            }
        }
        for (direction, n) in [
            ("to_guest", counters.copied_to_guest_bytes),
            ("from_guest", counters.copied_from_guest_bytes),
        ] {
            let labels = CopyLabels {
                vm: vm.into(),
                direction,
            };
            store(&self.copy_bytes.get_or_create(&labels), n);
        }
    }

    fn forget(&self, vm: &str) {
        let labels = VmLabels { vm: vm.into() };
        for family in [&self.connections, &self.auth_failures, &self.refused] {
            family.remove(&labels);
        }
        for service in BuiltinService::ALL {
            self.requests.remove(&ServiceLabels {
                vm: vm.into(),
                service: service.name(),
            });
        }
        for (_, direction) in COPY_DIRECTIONS {
            self.copy_bytes.remove(&CopyLabels {
                vm: vm.into(),
                direction,
            });
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("guestcomm");
        let operations = Family::default();
        registry.register(
            "operations",
            "Operations by VM (empty: not in the inventory), service, operation and outcome (ok, refused_role, refused_policy, refused_disabled, failed)",
            operations.clone(),
        );
        let exec_duration: HistogramFamily<VmLabels> =
            Family::new_with_constructor(operation_histogram);
        registry.register_with_unit(
            "exec_duration",
            "Duration of relayed execs, from the request to the command's end",
            Unit::Seconds,
            exec_duration.clone(),
        );
        let copy_duration: HistogramFamily<CopyLabels> =
            Family::new_with_constructor(operation_histogram);
        registry.register_with_unit(
            "copy_duration",
            "Duration of relayed copies by direction (to_guest, from_guest)",
            Unit::Seconds,
            copy_duration.clone(),
        );
        let copy_bytes = Family::default();
        registry.register_with_unit(
            "copy",
            "Bytes relayed by copies, by direction (to_guest, from_guest)",
            Unit::Bytes,
            copy_bytes.clone(),
        );
        let vm_health = Family::default();
        registry.register(
            "vm_health",
            "1 for the VM's agent health state (OK, No Contact, Lost Comm, Paused, Off), 0 for the others",
            vm_health.clone(),
        );
        let heartbeat_rtt = Family::default();
        registry.register_with_unit(
            "vm_heartbeat_round_trip",
            "Round trip of the last answered health probe (connect and handshake)",
            Unit::Seconds,
            heartbeat_rtt.clone(),
        );
        let relays_active = Gauge::default();
        registry.register(
            "relays_active",
            "Relayed connections (exec, cp, service streams) open now",
            relays_active.clone(),
        );
        let warm_connections = Gauge::default();
        registry.register(
            "warm_connections",
            "Warm, authenticated agent connections kept for the next operation",
            warm_connections.clone(),
        );
        let cap_refusals: Family<CapLabels, Counter> = Family::default();
        // At 0 from the start, so that a rate over them is defined.
        for cap in Cap::ALL {
            drop(cap_refusals.get_or_create(&CapLabels { cap: cap.label() }));
        }
        registry.register(
            "cap_refusals",
            "Requests refused at one of the daemon's bounds (relays, agent_calls, http_connections)",
            cap_refusals.clone(),
        );
        let audit_records = Family::default();
        registry.register(
            "audit_records",
            "Audit records written, by chain (operations, refusals)",
            audit_records.clone(),
        );
        let store_duration = store_histogram();
        registry.register_with_unit(
            "store_call_duration",
            "Duration of state store (SQLite) calls, waiting for the store included",
            Unit::Seconds,
            store_duration.clone(),
        );
        let agent = AgentFamilies::default();
        agent.register(&mut registry);
        Self {
            enabled: true,
            last_read: AtomicU64::new(0),
            agent,
            registry,
            known: RwLock::default(),
            operation_series: Mutex::default(),
            operations,
            exec_duration,
            copy_duration,
            copy_bytes,
            vm_health,
            heartbeat_rtt,
            relays_active,
            warm_connections,
            cap_refusals,
            audit_records,
            store_duration,
        }
    }
}

impl Metrics {
    /// Metrics that record nothing (`--no-metrics`, `[metrics] enabled =
    /// false`): what the operations cost without them, and `GET /metrics`
    /// refused.
    pub(crate) fn disabled() -> Self {
        Self {
            enabled: false,
            ..Self::default()
        }
    }

    /// Whether anything is recorded.
    pub(crate) fn enabled(&self) -> bool {
        self.enabled
    }

    /// Whether the metrics are on and were scraped lately (within
    /// `METRICS_READ_RECENTLY_S`): what is only worth gathering for a reader.
    pub(crate) fn read_recently(&self) -> bool {
        let last = self.last_read.load(Ordering::Relaxed);
        let now = u64::try_from(crate::clock::now_secs()).unwrap_or(0);
        self.enabled && last > 0 && now.saturating_sub(last) <= METRICS_READ_RECENTLY_S
    }

    /// Counts a finished operation from its audit record (a `running` one is
    /// not finished); `refusal` says who refused a refused one.
    pub(crate) fn operation_finished(&self, record: &AuditRecord, refusal: Option<ErrorKind>) {
        if !self.enabled || record.outcome == AuditOutcome::Running {
            return;
        }
        let (vm, service) = {
            let known = self.known.read().unwrap_or_else(|e| e.into_inner());
            let bounded = |name: &Option<String>, set: &HashSet<String>| match name {
                Some(name) if set.contains(name) => name.clone(),
                _ => String::new(),
            };
            (
                bounded(&record.vm, &known.vms),
                bounded(&record.service, &known.services),
            )
        };
        let labels = OperationLabels {
            vm: vm.clone(),
            service,
            op: record.operation.clone(),
            outcome: outcome_label(record.outcome, refusal),
        };
        match self.operations.get(&labels) {
            Some(counter) => {
                counter.inc();
            }
            None => {
                let mut series = self
                    .operation_series
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                series.insert(labels.clone());
                self.operations.get_or_create(&labels).inc();
            }
        }
        if record.outcome == AuditOutcome::Refused {
            // Never ran: no duration, no bytes.
            return;
        }
        let seconds = record.duration_ms as f64 / 1000.0;
        if record.operation == "exec" {
            self.exec_duration
                .get_or_create(&VmLabels { vm })
                .observe(seconds);
        } else if let Some((_, direction)) = COPY_DIRECTIONS
            .iter()
            .find(|(op, _)| *op == record.operation)
        {
            let labels = CopyLabels { vm, direction };
            self.copy_duration.get_or_create(&labels).observe(seconds);
            self.copy_bytes
                .get_or_create(&labels)
                .inc_by(record.bytes.unwrap_or(0));
        }
    }

    /// What VM `vm`'s agent said of itself (its heartbeat answer), for a VM
    /// the inventory holds.
    pub(crate) fn agent_counters(&self, vm: &str, counters: &AgentCounters) {
        if !self.enabled {
            return;
        }
        let known = self.known.read().unwrap_or_else(|e| e.into_inner());
        if known.vms.contains(vm) {
            self.agent.set(vm, counters);
        }
    }

    /// Counts a refusal at `cap`.
    pub(crate) fn refused_at(&self, cap: Cap) {
        if !self.enabled {
            return;
        }
        self.cap_refusals
            .get_or_create(&CapLabels { cap: cap.label() })
            .inc();
    }

    /// Counts an audit record written to `chain` (`operations`, `refusals`).
    pub(crate) fn audit_written(&self, chain: &'static str) {
        if !self.enabled {
            return;
        }
        self.audit_records
            .get_or_create(&ChainLabels { chain })
            .inc();
    }

    /// Records the duration of one store call.
    pub(crate) fn store_call(&self, took: Duration) {
        if !self.enabled {
            return;
        }
        self.store_duration.observe(took.as_secs_f64());
    }

    /// The VM names and service ids the inventory holds now (read whole, at
    /// start); the series of those that left it are dropped.
    pub(crate) fn set_inventory(&self, vms: HashSet<String>, services: HashSet<String>) {
        if !self.enabled {
            return;
        }
        let (gone, services_gone) = {
            let mut known = self.known.write().unwrap_or_else(|e| e.into_inner());
            let gone: Vec<String> = known.vms.difference(&vms).cloned().collect();
            let services_gone = !known.services.is_subset(&services);
            *known = Known { vms, services };
            (gone, services_gone)
        };
        self.drop_series_of(gone, services_gone);
    }

    /// Follows the inventory's changes as the store made them, in order: a
    /// registration costs a set insertion, not a read of every VM. The
    /// series of a VM or a service that left are dropped.
    pub(crate) fn inventory_changed(&self, changes: Vec<InventoryChange>) {
        if !self.enabled || changes.is_empty() {
            return;
        }
        let mut gone = Vec::new();
        let mut services_gone = false;
        {
            let mut known = self.known.write().unwrap_or_else(|e| e.into_inner());
            for change in changes {
                match change {
                    InventoryChange::VmAdded(name) => {
                        gone.retain(|g| *g != name);
                        known.vms.insert(name);
                    }
                    InventoryChange::VmRemoved(name) => {
                        if known.vms.remove(&name) {
                            gone.push(name);
                        }
                    }
                    InventoryChange::ServiceAdded(id) => {
                        known.services.insert(id.to_string());
                    }
                    InventoryChange::ServiceRemoved(id) => {
                        services_gone |= known.services.remove(&id.to_string());
                    }
                }
            }
        }
        self.drop_series_of(gone, services_gone);
    }

    /// Drops the series of the VMs `gone`, and the operations' series whose
    /// VM or service the inventory no longer holds.
    fn drop_series_of(&self, gone: Vec<String>, services_gone: bool) {
        if gone.is_empty() && !services_gone {
            return;
        }
        for vm in gone {
            self.forget_vm(vm);
        }
        let known = self.known.read().unwrap_or_else(|e| e.into_inner());
        let mut series = self
            .operation_series
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        series.retain(|labels| {
            let kept = (labels.vm.is_empty() || known.vms.contains(&labels.vm))
                && (labels.service.is_empty() || known.services.contains(&labels.service));
            if !kept {
                self.operations.remove(labels);
            }
            kept
        });
    }

    /// Drops the per-VM series of `vm` (its operations: [`Metrics::set_inventory`]).
    fn forget_vm(&self, vm: String) {
        for state in HealthStatus::KNOWN {
            self.vm_health.remove(&HealthLabels {
                vm: vm.clone(),
                state: state.as_str().to_string(),
            });
        }
        for (_, direction) in COPY_DIRECTIONS {
            let labels = CopyLabels {
                vm: vm.clone(),
                direction,
            };
            self.copy_duration.remove(&labels);
            self.copy_bytes.remove(&labels);
        }
        self.agent.forget(&vm);
        let labels = VmLabels { vm };
        self.exec_duration.remove(&labels);
        self.heartbeat_rtt.remove(&labels);
    }

    /// The exposition, with the gauges read now: each VM's health and last
    /// round trip, the relays open and the warm connections kept.
    pub(crate) fn render(
        &self,
        health: &[(String, HealthStatus, Option<Duration>)],
        relays_active: usize,
        warm_connections: usize,
        format: Format,
    ) -> Result<String, std::fmt::Error> {
        for (vm, status, rtt) in health {
            for state in HealthStatus::KNOWN {
                let labels = HealthLabels {
                    vm: vm.clone(),
                    state: state.as_str().to_string(),
                };
                self.vm_health
                    .get_or_create(&labels)
                    .set(i64::from(state == status));
            }
            let labels = VmLabels { vm: vm.clone() };
            match rtt {
                Some(rtt) => {
                    self.heartbeat_rtt
                        .get_or_create(&labels)
                        .set(rtt.as_secs_f64());
                }
                None => {
                    self.heartbeat_rtt.remove(&labels);
                }
            }
        }
        self.relays_active
            .set(i64::try_from(relays_active).unwrap_or(i64::MAX));
        self.warm_connections
            .set(i64::try_from(warm_connections).unwrap_or(i64::MAX));
        let now = u64::try_from(crate::clock::now_secs()).unwrap_or(0);
        self.last_read.store(now, Ordering::Relaxed);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(match format {
            Format::OpenMetrics => text,
            Format::Text => classic_text(&text),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finished(vm: &str, operation: &str, outcome: AuditOutcome) -> AuditRecord {
        AuditRecord {
            vm: Some(vm.into()),
            operation: operation.into(),
            outcome,
            duration_ms: 20,
            bytes: Some(100),
            ..AuditRecord::default()
        }
    }

    #[test]
    fn names_outside_the_inventory_are_not_labels_and_leaving_drops_the_series() {
        let metrics = Metrics::default();
        let names = |list: &[&str]| list.iter().map(|s| s.to_string()).collect();
        metrics.set_inventory(names(&["web1"]), HashSet::new());
        metrics.operation_finished(&finished("web1", "exec", AuditOutcome::Ok), None);
        metrics.operation_finished(&finished("web1", "cp.to_guest", AuditOutcome::Ok), None);
        metrics.operation_finished(
            &finished("$(rm -rf)", "vm.show", AuditOutcome::Refused),
            Some(ErrorKind::Forbidden),
        );
        metrics.operation_finished(&finished("web1", "exec", AuditOutcome::Running), None);
        let text = metrics.render(&[], 0, 0, Format::OpenMetrics).unwrap();
        assert!(text.contains(
            r#"guestcomm_operations_total{vm="web1",service="",op="exec",outcome="ok"} 1"#
        ));
        assert!(text.contains(
            r#"guestcomm_operations_total{vm="",service="",op="vm.show",outcome="refused_role"} 1"#
        ));
        assert!(text.contains(r#"guestcomm_copy_bytes_total{vm="web1",direction="to_guest"} 100"#));
        assert!(text.contains(r#"guestcomm_exec_duration_seconds_count{vm="web1"} 1"#));
        assert!(!text.contains("rm -rf"));
        assert!(text.ends_with("# EOF\n"));
        metrics.set_inventory(HashSet::new(), HashSet::new());
        let text = metrics.render(&[], 0, 0, Format::OpenMetrics).unwrap();
        assert!(!text.contains("web1"), "{text}");
    }

    #[test]
    fn the_inventory_followed_change_by_change_bounds_the_labels_as_a_whole_read_does() {
        use guestcomm_protocol::ServiceId;
        let metrics = Metrics::default();
        let service: ServiceId = "0e0b6031-5213-4934-818b-38d90ced39db".parse().unwrap();
        let with_service = |vm: &str| {
            let mut record = finished(vm, "connect", AuditOutcome::Ok);
            record.service = Some(service.to_string());
            record
        };
        metrics.set_inventory(HashSet::new(), HashSet::new());
        // Not yet in the inventory: no label.
        metrics.operation_finished(&with_service("web1"), None);
        metrics.inventory_changed(vec![
            InventoryChange::VmAdded("web1".into()),
            InventoryChange::VmAdded("web2".into()),
            InventoryChange::ServiceAdded(service),
        ]);
        metrics.operation_finished(&with_service("web1"), None);
        metrics.operation_finished(&with_service("web2"), None);
        metrics.operation_finished(&finished("web2", "exec", AuditOutcome::Ok), None);
        let text = metrics.render(&[], 0, 0, Format::OpenMetrics).unwrap();
        let series = |vm: &str, service: &str| {
            format!(
                r#"guestcomm_operations_total{{vm="{vm}",service="{service}",op="connect",outcome="ok"}} 1"#
            )
        };
        assert!(text.contains(&series("", "")), "{text}");
        assert!(
            text.contains(&series("web1", &service.to_string())),
            "{text}"
        );
        assert!(
            text.contains(&series("web2", &service.to_string())),
            "{text}"
        );
        // A rename is a removal and an addition; an unregistered service
        // takes its series with it.
        metrics.inventory_changed(vec![
            InventoryChange::VmRemoved("web2".into()),
            InventoryChange::VmAdded("db1".into()),
            InventoryChange::ServiceRemoved(service),
        ]);
        let text = metrics.render(&[], 0, 0, Format::OpenMetrics).unwrap();
        assert!(!text.contains("web2"), "{text}");
        assert!(!text.contains(&service.to_string()), "{text}");
        assert!(text.contains(&series("", "")), "{text}");
        metrics.operation_finished(&finished("db1", "exec", AuditOutcome::Ok), None);
        metrics.operation_finished(&finished("web2", "exec", AuditOutcome::Ok), None);
        let text = metrics.render(&[], 0, 0, Format::OpenMetrics).unwrap();
        assert!(
            text.contains(r#"guestcomm_exec_duration_seconds_count{vm="db1"} 1"#),
            "{text}"
        );
        assert!(!text.contains("web2"), "{text}");
        // Removed and added back in one batch: still known.
        metrics.inventory_changed(vec![
            InventoryChange::VmRemoved("db1".into()),
            InventoryChange::VmAdded("db1".into()),
        ]);
        let text = metrics.render(&[], 0, 0, Format::OpenMetrics).unwrap();
        assert!(
            text.contains(r#"guestcomm_exec_duration_seconds_count{vm="db1"} 1"#),
            "{text}"
        );
    }

    #[test]
    fn the_classic_text_names_counters_by_their_samples() {
        let metrics = Metrics::default();
        metrics.refused_at(Cap::Relays);
        let text = metrics.render(&[], 0, 0, Format::Text).unwrap();
        assert!(text.contains("# TYPE guestcomm_cap_refusals_total counter\n"));
        assert!(text.contains("# HELP guestcomm_cap_refusals_total Requests"));
        assert!(text.contains("guestcomm_cap_refusals_total{cap=\"relays\"} 1\n"));
        assert!(text.contains("# TYPE guestcomm_relays_active gauge\n"));
        assert!(!text.contains("# EOF") && !text.contains("# UNIT"));
        assert_eq!(
            Format::accepted(Some(
                "application/openmetrics-text;version=1.0.0,text/plain;q=0.5"
            )),
            Format::OpenMetrics
        );
        assert_eq!(Format::accepted(Some("*/*")), Format::Text);
        assert_eq!(Format::accepted(None), Format::Text);
    }

    #[test]
    fn refusals_are_split_by_who_refused() {
        let refused = AuditOutcome::Refused;
        assert_eq!(
            outcome_label(refused, Some(ErrorKind::Forbidden)),
            "refused_role"
        );
        assert_eq!(
            outcome_label(refused, Some(ErrorKind::PolicyDenied)),
            "refused_policy"
        );
        assert_eq!(
            outcome_label(refused, Some(ErrorKind::ServiceDisabled)),
            "refused_disabled"
        );
        assert_eq!(outcome_label(AuditOutcome::Stalled, None), "failed");
    }
}
