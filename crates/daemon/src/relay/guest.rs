//! Guest-initiated connections over hybrid vsock.
//!
//! A guest program that connects to the host's vsock port P arrives, with
//! Firecracker, Cloud Hypervisor and vhost-device-vsock, at the Unix socket
//! `<vm socket>_<P>` on the host. For every hybrid vsock VM and every
//! service that is registered with a host endpoint, has a vsock port and is
//! enabled on that VM, the daemon listens there and relays each connection to
//! the host endpoint. [`reconcile`] recomputes that set after every change
//! (no polling: it waits on [`State::changed`](crate::state::State::changed)),
//! closing the listeners of services that were disabled or removed.
//!
//! Only the VMM may speak for the guest: each `<vm socket>_<P>` is mode
//! 0600 and given to the user that owns the VM's socket (the VMM's), and
//! each connection's peer credentials are checked against that user (or
//! root, or the daemon's own user); anyone else is refused and audited.
//! Guest-initiated relays have a budget of their own, per VM and overall
//! ([`MAX_GUEST_RELAYS_PER_VM`], [`MAX_GUEST_RELAYS`]), apart from the
//! operators' relay slots, so one hostile guest can take neither the
//! operators' slots nor another VM's. Each relayed connection is audited
//! as `service.guest_connect`, attributed to the VMM process that
//! delivered it, with the bytes moved both ways.

use std::collections::HashMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use guestcomm_protocol::error_chain;
use guestcomm_protocol::ServiceId;
use guestcomm_transport::{Address, Listener, Peer};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn, Instrument};
use uuid::Uuid;

use crate::admission;
use crate::audit::{self, Outcome};
use crate::caller::Caller;
use crate::limits::{
    ACCEPT_ERROR_PAUSE_MS, GUEST_LISTENER_MODE, MAX_GUEST_RELAYS, MAX_GUEST_RELAYS_PER_VM,
};
use crate::model::VmRow;
use crate::model::{effective_on, Policy};
use crate::state::State;
use crate::store::{Store, StoreError};

use super::copy::copy_both_ways;
use super::tap::{Tap, TapStats};

/// One listener the daemon should have.
#[derive(Clone, Debug, PartialEq)]
struct Spec {
    vm: VmRow,
    /// The VM's own socket, whose owner is the VMM's user.
    vm_socket: PathBuf,
    service: ServiceId,
    host: Address,
}

/// Every `<vm socket>_<port>` that should be listened on, and what for.
fn desired(store: &mut Store) -> Result<HashMap<PathBuf, Spec>, StoreError> {
    let services = store.services()?;
    let mut out = HashMap::new();
    for vm in store.vms()? {
        let Address::HybridVsock { path, .. } = &vm.endpoint else {
            continue;
        };
        for service in &services {
            let (Some(host), Some(port)) = (&service.host_endpoint, service.id.vsock_port()) else {
                continue;
            };
            let policy = store.vm_policy(service.id, vm.id)?;
            let state = effective_on(&vm, service, policy);
            if state == Policy::Enabled {
                let listen = PathBuf::from(format!("{}_{port}", path.display()));
                let spec = Spec {
                    vm: vm.clone(),
                    vm_socket: path.clone(),
                    service: service.id,
                    host: host.clone(),
                };
                out.insert(listen, spec);
            }
        }
    }
    Ok(out)
}

/// Keeps the listeners in step with the state until the task is dropped.
pub(crate) async fn reconcile(state: Arc<State>) {
    let mut running: HashMap<PathBuf, (Spec, JoinHandle<()>)> = HashMap::new();
    let budget = Arc::new(Budget::default());
    loop {
        match state.db(desired).await {
            Ok(want) => {
                budget.keep_only(want.values().map(|spec| spec.vm.id));
                running.retain(|path, (spec, task)| {
                    let keep = want.get(path) == Some(spec);
                    if !keep {
                        // Dropping the accept loop drops its Listener, which removes the socket.
                        task.abort();
                        info!(listen = %path.display(), vm = %spec.vm.name, service = %spec.service, "guest listener closed");
                    }
                    keep
                });
                for (path, spec) in want {
                    if running.contains_key(&path) {
                        continue;
                    }
                    let restrict = |private: &Path| {
                        restrict_to_vmm(private, &spec.vm_socket);
                        Ok(())
                    };
                    match Listener::bind_unix(&path, restrict).await {
                        Ok(listener) => {
                            info!(listen = %path.display(), vm = %spec.vm.name, service = %spec.service, "guest listener open");
                            let task = tokio::spawn(accept_loop(
                                state.clone(),
                                listener,
                                spec.clone(),
                                budget.clone(),
                            ));
                            running.insert(path, (spec, task));
                        }
                        Err(e) => warn!(error = %error_chain(&e), "cannot open a guest listener"),
                    }
                }
            }
            Err(e) => warn!(error = %error_chain(&e), "cannot compute guest listeners"),
        }
        state.changed.notified().await;
    }
}

/// The guest-initiated relay slots: [`MAX_GUEST_RELAYS`] in all, at most
/// [`MAX_GUEST_RELAYS_PER_VM`] for each VM.
struct Budget {
    all: Arc<Semaphore>,
    per_vm: Mutex<HashMap<Uuid, Arc<VmBudget>>>,
}

struct VmBudget {
    slots: Arc<Semaphore>,
    /// Whether the last connection was refused: the warning is logged once
    /// per run of refusals, not once per connection a guest throws at it.
    refusing: AtomicBool,
}

impl Default for Budget {
    fn default() -> Self {
        Self {
            all: Arc::new(Semaphore::new(MAX_GUEST_RELAYS)),
            per_vm: Mutex::default(),
        }
    }
}

impl Budget {
    fn vm(&self, id: Uuid) -> Arc<VmBudget> {
        let mut per_vm = self.per_vm.lock().unwrap_or_else(|e| e.into_inner());
        per_vm
            .entry(id)
            .or_insert_with(|| {
                Arc::new(VmBudget {
                    slots: Arc::new(Semaphore::new(MAX_GUEST_RELAYS_PER_VM)),
                    refusing: AtomicBool::new(false),
                })
            })
            .clone()
    }

    /// Forgets the VMs that have no listener any more.
    fn keep_only(&self, vms: impl Iterator<Item = Uuid>) {
        let keep: std::collections::HashSet<Uuid> = vms.collect();
        let mut per_vm = self.per_vm.lock().unwrap_or_else(|e| e.into_inner());
        per_vm.retain(|id, _| keep.contains(id));
    }

    /// A slot of `vm`'s and one of the overall budget, or `None` (logged
    /// once per run of refusals).
    fn take(&self, vm: &VmRow) -> Option<(OwnedSemaphorePermit, OwnedSemaphorePermit)> {
        let mine = self.vm(vm.id);
        let permits = mine
            .slots
            .clone()
            .try_acquire_owned()
            .ok()
            .zip(self.all.clone().try_acquire_owned().ok());
        let refused = permits.is_none();
        if mine.refusing.swap(refused, Ordering::Relaxed) != refused && refused {
            warn!(
                vm = %vm.name,
                per_vm = MAX_GUEST_RELAYS_PER_VM,
                all = MAX_GUEST_RELAYS,
                "guest-initiated relay budget used up: closing this VM's new guest connections until one ends"
            );
        }
        permits
    }
}

/// The owner of the VM's socket: the user of the VMM that delivers the
/// guest's connections. `None` while the VMM has not made it.
fn vmm_user(vm_socket: &Path) -> Option<u32> {
    std::fs::metadata(vm_socket).ok().map(|m| m.uid())
}

/// Makes the listener at `path` reachable by the VMM's user only: mode
/// [`GUEST_LISTENER_MODE`], owned by that user when it is not the daemon's.
/// A failure is logged: the peer check in [`accept_loop`] still refuses
/// anyone else.
fn restrict_to_vmm(path: &Path, vm_socket: &Path) {
    let mode = std::fs::Permissions::from_mode(GUEST_LISTENER_MODE);
    if let Err(e) = std::fs::set_permissions(path, mode) {
        warn!(listen = %path.display(), error = %e, "cannot restrict a guest listener's mode");
    }
    let Some(owner) = vmm_user(vm_socket) else {
        return;
    };
    if owner != nix::unistd::geteuid().as_raw() {
        if let Err(e) = std::os::unix::fs::chown(path, Some(owner), None) {
            warn!(listen = %path.display(), uid = owner, error = %e, "cannot give a guest listener to the VMM's user; it can only be reached by the daemon's");
        }
    }
}

/// Whether `peer` may deliver a guest's connections: the VMM's user (the
/// owner of the VM's socket), root, or the daemon's own user.
fn is_vmm(peer: &Caller, vm_socket: &Path) -> bool {
    let Some(uid) = peer.uid else { return false };
    uid == 0 || uid == nix::unistd::geteuid().as_raw() || Some(uid) == vmm_user(vm_socket)
}

/// Accepts guest connections and relays each to the service's host endpoint.
async fn accept_loop(state: Arc<State>, listener: Listener, spec: Spec, budget: Arc<Budget>) {
    loop {
        let (guest, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                warn!(error = %e, "guest listener accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(ACCEPT_ERROR_PAUSE_MS)).await;
                continue;
            }
        };
        let caller = match peer {
            Peer::Unix { uid, gid, pid } => Caller {
                uid,
                gid,
                pid,
                certificate: None,
            },
            _ => Caller::default(),
        };
        let mut record = audit::record(caller, "service.guest_connect");
        record.vm = Some(spec.vm.name.clone());
        record.service = Some(spec.service.to_string());
        if !is_vmm(&caller, &spec.vm_socket) {
            let error = format!(
                "uid {} is not the user of VM {}'s VMM: only the VMM delivers the guest's connections",
                caller.uid.map_or("?".into(), |u| u.to_string()),
                spec.vm.name
            );
            warn!(vm = %spec.vm.name, uid = ?caller.uid, pid = ?caller.pid, "refused a connection to a guest listener from outside the VMM");
            audit::finish(&mut record, Outcome::Refused, Some(error), Instant::now());
            state.audit(record).await;
            continue;
        }
        let Some(permits) = budget.take(&spec.vm) else {
            continue;
        };
        let state = state.clone();
        let spec = spec.clone();
        let span = tracing::info_span!("guest", vm = %spec.vm.name, service = %spec.service);
        tokio::spawn(
            async move {
                let started = Instant::now();
                // The listener may be about to close: check again.
                if let Err(refusal) = admission::verdict(&state, &spec.vm, spec.service).await {
                    let error = refusal.message(spec.service, &spec.vm.name);
                    info!(error = %error, "guest connection refused");
                    audit::finish(&mut record, Outcome::Refused, Some(error), started);
                    return state.audit(record).await;
                }
                let audit_id = state.audit_start(&record).await;
                let stats = Arc::new(TapStats::counting());
                let ended = relay_to_host(guest, &spec.host, stats.clone()).await;
                if let Err(e) = &ended {
                    debug!(error = %e, "guest relay ended with an error");
                }
                drop(permits);
                audit::finish_relay(&mut record, ended, stats.bytes(), started);
                state.audit_end(audit_id, record).await;
            }
            .instrument(span),
        );
    }
}

/// Relays `guest` to the service's host endpoint `host`, counting the bytes.
async fn relay_to_host(
    guest: guestcomm_transport::Stream,
    host: &Address,
    stats: Arc<TapStats>,
) -> Result<(), String> {
    let host = guestcomm_transport::connect(host)
        .await
        .map_err(|e| format!("cannot reach the host endpoint: {}", error_chain(&e)))?;
    copy_both_ways(Tap::new(guest, stats), &[], host, &[], None)
        .await
        .map_err(|e| e.to_string())
}
