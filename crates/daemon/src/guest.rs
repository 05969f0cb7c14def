//! Guest-initiated connections over hybrid vsock.
//!
//! A guest program that connects to the host's vsock port P arrives, with
//! Firecracker, Cloud Hypervisor and vhost-device-vsock, at the Unix socket
//! `<vm socket>_<P>` on the host. For every hybrid vsock VM and every
//! service that is registered with a host endpoint, has a vsock port and is
//! enabled on that VM, the daemon listens there and relays each connection to
//! the host endpoint. [`reconcile`] recomputes that set after every change
//! (no polling: it waits on [`State::changed`](crate::State::changed)),
//! closing the listeners of services that were disabled or removed.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use guestcomm_protocol::handshake::error_chain;
use guestcomm_protocol::ServiceId;
use guestcomm_transport::{Address, Listener};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn, Instrument};

use crate::policy::{effective_on, Policy};
use crate::relay::{admit, copy_both_ways};
use crate::store::{Store, StoreError, VmRow};
use crate::State;

/// One listener the daemon should have.
#[derive(Clone, Debug, PartialEq)]
struct Spec {
    vm: VmRow,
    service: ServiceId,
    host: String,
}

/// Every `<vm socket>_<port>` that should be listened on, and what for.
fn desired(store: &mut Store) -> Result<HashMap<PathBuf, Spec>, StoreError> {
    let services = store.services()?;
    let mut out = HashMap::new();
    for vm in store.vms()? {
        let Ok(Address::HybridVsock { path, .. }) = vm.endpoint.parse() else {
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
pub async fn reconcile(state: Arc<State>) {
    let mut running: HashMap<PathBuf, (Spec, JoinHandle<()>)> = HashMap::new();
    loop {
        match state.db(desired).await {
            Ok(want) => {
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
                    match Listener::bind(&Address::Unix(path.clone())).await {
                        Ok(listener) => {
                            info!(listen = %path.display(), vm = %spec.vm.name, service = %spec.service, "guest listener open");
                            let task =
                                tokio::spawn(accept_loop(state.clone(), listener, spec.clone()));
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

/// Accepts guest connections and relays each to the service's host endpoint.
async fn accept_loop(state: Arc<State>, listener: Listener, spec: Spec) {
    loop {
        let guest = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                warn!(error = %e, "guest listener accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = state.relays.clone().try_acquire_owned() else {
            warn!(vm = %spec.vm.name, "relay limit reached, refusing a guest connection");
            continue;
        };
        let state = state.clone();
        let spec = spec.clone();
        let span = tracing::info_span!("guest", vm = %spec.vm.name, service = %spec.service);
        tokio::spawn(
            async move {
                // The listener may be about to close: check again.
                if let Err(refusal) = admit(&state, &spec.vm, spec.service).await {
                    info!(error = %refusal.message(spec.service, &spec.vm.name), "guest connection refused");
                    return;
                }
                let Ok(addr) = spec.host.parse::<Address>() else {
                    return;
                };
                let host = match guestcomm_transport::connect(&addr).await {
                    Ok(host) => host,
                    Err(e) => return warn!(error = %error_chain(&e), "cannot reach the host endpoint"),
                };
                if let Err(e) = copy_both_ways(guest, &[], host, &[], None).await {
                    debug!(error = %e, "guest relay ended with an error");
                }
                drop(permit);
            }
            .instrument(span),
        );
    }
}
