//! The integration services of a VM, by name: guest info, time, key-value
//! exchange, shutdown and filesystem freeze (the JSON API's handlers are in
//! `http/integration.rs`; WBEM calls these too).
//!
//! ```text
//! API call -> VM known? (404) -> agent service and this service enabled? (403)
//!          -> connect + handshake with the VM's key (502)
//!          -> one request, one answer (the agent's refusals keep their meaning:
//!             invalid_argument 400, not_found 404, permission_denied 403)
//! ```
//!
//! The external key-value pool (host to guest) lives in the daemon's
//! database: a change is stored first, then pushed to the agent as a whole
//! pool ([`push_kvp`]), with the host's own data for Hyper-V's pool 3
//! ([`host_data`]); an agent that cannot be reached gets it when the
//! health monitor next sees it come back (see [`crate::health`]).

use guestcomm_api::{
    FreezeStatus, FsRequest, GuestCommunicationService, GuestInfo, KvpEntries, KvpPair, KvpWrite,
    ShutdownAnswer, ShutdownRequest, TimeReport,
};
use guestcomm_client::integration::{self as calls, CallError};
use guestcomm_client::Session;
use guestcomm_protocol::error_chain;
use guestcomm_protocol::integration::{check_key, check_value, KvpError, KvpPool, KvpSide};
use guestcomm_protocol::limits::{DEFAULT_TIME_SAMPLES, MAX_TIME_SAMPLES};
use guestcomm_protocol::message::Call;
use guestcomm_protocol::BuiltinService;
use guestcomm_transport::Stream;
use tracing::{debug, info, warn};

use crate::admission;
use crate::agent;
use crate::error::Error;
use crate::limits::PERIODIC_SYNC_TOLERANCE_NS;
use crate::model::VmRow;
use crate::state::State;
use crate::store::{KvpBatch, KvpDeliveryState, StoreError};

/// The VM named `name`, admitted for `service`, and a session with its agent.
async fn open(
    state: &State,
    name: String,
    service: BuiltinService,
) -> Result<(VmRow, Session<Stream>), Error> {
    let vm = state.db(move |s| s.vm(&name)).await?;
    admission::integration(state, &vm, service).await?;
    let session = agent::connect(&vm).await?;
    Ok((vm, session))
}

fn call_error(vm: &VmRow, e: CallError) -> Error {
    match e {
        CallError::Refused(frame) => Error::Refused {
            vm: vm.name.clone(),
            frame,
        },
        other => Error::AgentCall {
            vm: vm.name.clone(),
            source: other,
        },
    }
}

/// The VM's integration services as objects of guestcomm's Msvm_GuestService
/// subclasses.
pub(crate) async fn integration_services(
    state: &State,
    name: String,
) -> Result<Vec<GuestCommunicationService>, Error> {
    let all = super::services::instances(state, Some(name)).await?;
    Ok(all
        .into_iter()
        .filter_map(crate::policy::integration_instance)
        .collect())
}

/// What the guest's agent tells of the guest.
pub(crate) async fn info(state: &State, name: String) -> Result<GuestInfo, Error> {
    let (vm, session) = open(state, name, BuiltinService::GuestInfo).await?;
    calls::guest_info(session)
        .await
        .map_err(|e| call_error(&vm, e))
}

async fn time_report(
    state: &State,
    name: String,
    samples: Option<u32>,
    sync: bool,
) -> Result<TimeReport, Error> {
    let samples = samples.unwrap_or(DEFAULT_TIME_SAMPLES);
    if samples == 0 || samples > MAX_TIME_SAMPLES {
        return Err(Error::BadRequest(format!(
            "invalid number of samples {samples}: expected 1 to {MAX_TIME_SAMPLES}"
        )));
    }
    let vm = state.db(move |s| s.vm(&name)).await?;
    admission::integration(state, &vm, BuiltinService::Time).await?;
    if sync {
        calls::sync_time(time_session(&vm), samples).await
    } else {
        calls::measure_time(time_session(&vm), samples).await
    }
    .map_err(|e| e.into_error(&vm))
}

/// What can fail while sampling the guest clock.
enum TimeFailure {
    /// The agent refused or failed.
    Call(CallError),
    /// The agent could not be reached.
    Session(Error),
}

impl From<CallError> for TimeFailure {
    fn from(e: CallError) -> Self {
        Self::Call(e)
    }
}

impl TimeFailure {
    fn into_error(self, vm: &VmRow) -> Error {
        match self {
            Self::Call(e) => call_error(vm, e),
            Self::Session(e) => e,
        }
    }
}

/// A session for one time sample.
type SampleSession<'a> = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<Session<Stream>, TimeFailure>> + Send + 'a>,
>;

/// Opens one session per time sample.
fn time_session<'a>(vm: &'a VmRow) -> impl FnMut() -> SampleSession<'a> + 'a {
    move || Box::pin(async move { agent::connect(vm).await.map_err(TimeFailure::Session) })
}

/// Steps `vm`'s clock if it is off by more than the tolerance (or the
/// measurement's uncertainty); returns the offset found and whether it stepped.
pub(crate) async fn sync_if_off(vm: &VmRow) -> Result<(i64, bool), Error> {
    let before = calls::measure_time(time_session(vm), DEFAULT_TIME_SAMPLES)
        .await
        .map_err(|e| e.into_error(vm))?;
    let tolerance = (before.rtt_ns / 2).max(PERIODIC_SYNC_TOLERANCE_NS);
    if before.offset_ns.unsigned_abs() <= tolerance {
        return Ok((before.offset_ns, false));
    }
    calls::sync_time(time_session(vm), DEFAULT_TIME_SAMPLES)
        .await
        .map_err(|e| e.into_error(vm))?;
    Ok((before.offset_ns, true))
}

/// The guest clock's offset from the host's, over `samples` (default
/// [`DEFAULT_TIME_SAMPLES`]).
pub(crate) async fn time(
    state: &State,
    name: String,
    samples: Option<u32>,
) -> Result<TimeReport, Error> {
    time_report(state, name, samples, false).await
}

/// Steps the guest clock to the host's.
pub(crate) async fn time_sync(
    state: &State,
    name: String,
    samples: Option<u32>,
) -> Result<TimeReport, Error> {
    let logged = name.clone();
    let report = time_report(state, name, samples, true).await?;
    info!(vm = %logged, offset_ns = report.offset_ns, "guest clock synchronized");
    Ok(report)
}

/// A key-value pool's name, as text from a caller.
pub(crate) fn parse_pool(text: &str) -> Result<KvpPool, Error> {
    text.parse()
        .map_err(|e: KvpError| Error::from(StoreError::Kvp(e)))
}

/// The entries of a pool: the external pool from the database, the others
/// from the agent.
pub(crate) async fn kvp_list(
    state: &State,
    name: String,
    pool: KvpPool,
) -> Result<KvpEntries, Error> {
    let vm = state.db(move |s| s.vm(&name)).await?;
    admission::integration(state, &vm, BuiltinService::KeyValue).await?;
    if pool == KvpPool::External {
        let id = vm.id;
        return Ok(state.db(move |s| s.kvp_entries(id)).await?);
    }
    calls::kvp_list(agent::connect(&vm).await?, pool)
        .await
        .map_err(|e| call_error(&vm, e))
}

/// One key of a pool.
pub(crate) async fn kvp_get(
    state: &State,
    name: String,
    pool: KvpPool,
    key: String,
) -> Result<KvpPair, Error> {
    check_key(&key).map_err(StoreError::from)?;
    let vm = state.db(move |s| s.vm(&name)).await?;
    admission::integration(state, &vm, BuiltinService::KeyValue).await?;
    let value = if pool == KvpPool::External {
        let id = vm.id;
        let mut entries = state.db(move |s| s.kvp_entries(id)).await?;
        entries.remove(&key).ok_or_else(|| {
            StoreError::Kvp(KvpError::UnknownKey {
                pool,
                key: guestcomm_protocol::integration::short_key(&key),
            })
        })?
    } else {
        calls::kvp_get(agent::connect(&vm).await?, pool, &key)
            .await
            .map_err(|e| call_error(&vm, e))?
    };
    Ok(KvpPair {
        pool: pool.to_string(),
        key,
        value,
    })
}

/// Refuses writes to pools the host does not write.
fn host_writes(pool: KvpPool) -> Result<(), Error> {
    if pool.writer() == Some(KvpSide::Host) {
        Ok(())
    } else {
        Err(StoreError::Kvp(KvpError::ReadOnly {
            pool,
            side: KvpSide::Host,
        })
        .into())
    }
}

/// After a change: push the pool now if the agent answers.
async fn deliver(state: &State, vm: &VmRow) -> KvpWrite {
    match push_kvp(state, vm).await {
        Ok(()) => KvpWrite {
            delivered: true,
            pending_reason: None,
        },
        Err(reason) => {
            info!(vm = %vm.name, %reason, "key-value pool stored; the agent gets it at its next contact");
            KvpWrite {
                delivered: false,
                pending_reason: Some(reason),
            }
        }
    }
}

/// Sets one key: only in the external pool; stored, then pushed.
pub(crate) async fn kvp_put(
    state: &State,
    name: String,
    pool: KvpPool,
    key: String,
    value: String,
) -> Result<KvpWrite, Error> {
    host_writes(pool)?;
    check_key(&key).map_err(StoreError::from)?;
    check_value(&value).map_err(StoreError::from)?;
    let vm = state.db(move |s| s.vm(&name)).await?;
    admission::integration(state, &vm, BuiltinService::KeyValue).await?;
    let id = vm.id;
    state.db(move |s| s.kvp_set(id, &key, &value)).await?;
    Ok(deliver(state, &vm).await)
}

/// Removes one key: only from the external pool; stored, then pushed.
pub(crate) async fn kvp_delete(
    state: &State,
    name: String,
    pool: KvpPool,
    key: String,
) -> Result<KvpWrite, Error> {
    host_writes(pool)?;
    check_key(&key).map_err(StoreError::from)?;
    let vm = state.db(move |s| s.vm(&name)).await?;
    admission::integration(state, &vm, BuiltinService::KeyValue).await?;
    let id = vm.id;
    state.db(move |s| s.kvp_delete(id, &key)).await?;
    Ok(deliver(state, &vm).await)
}

/// Adds, changes or removes several keys of the external pool at once, or
/// none (WBEM's AddKvpItems, ModifyKvpItems, RemoveKvpItems): each key and
/// value checked as [`kvp_put`] checks one, then stored in one transaction
/// ([`crate::store::Store::kvp_batch`]) and pushed.
pub(crate) async fn kvp_batch(
    state: &State,
    name: String,
    batch: KvpBatch,
    items: Vec<(String, String)>,
) -> Result<KvpWrite, Error> {
    for (key, value) in &items {
        check_key(key).map_err(StoreError::from)?;
        if batch != KvpBatch::Remove {
            check_value(value).map_err(StoreError::from)?;
        }
    }
    let vm = state.db(move |s| s.vm(&name)).await?;
    admission::integration(state, &vm, BuiltinService::KeyValue).await?;
    let id = vm.id;
    state.db(move |s| s.kvp_batch(id, batch, &items)).await?;
    Ok(deliver(state, &vm).await)
}

/// This host's name (`localhost` if it has none that is text).
pub(crate) fn host_name() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".into())
}

/// What Hyper-V puts in a guest's pool 3 that this daemon truly knows:
/// `HostName`, `VirtualMachineId` (the VM's id, its Msvm_ComputerSystem
/// Name) and `VirtualMachineName`. (Hyper-V's `PhysicalHostName*` and
/// `HostingSystem*` items describe hardware and nesting guestcommd does not
/// know, so they are left out.)
pub(crate) fn host_data(vm: &VmRow) -> KvpEntries {
    [
        ("HostName", host_name()),
        ("VirtualMachineId", vm.id.to_string()),
        ("VirtualMachineName", vm.name.clone()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// Sends the VM's whole external pool to its agent, with the host's own
/// data ([`host_data`]), if the key-value service is enabled there, and
/// records the delivery.
pub(crate) async fn push_kvp(state: &State, vm: &VmRow) -> Result<(), String> {
    admission::integration(state, vm, BuiltinService::KeyValue)
        .await
        .map_err(|e| error_chain(&e))?;
    let id = vm.id;
    let entries = state
        .db(move |s| s.kvp_entries(id))
        .await
        .map_err(|e| error_chain(&e))?;
    let session = agent::connect(vm).await.map_err(|e| error_chain(&e))?;
    calls::kvp_change(
        session,
        Call::KvpReplace {
            entries: entries.clone(),
            host_data: Some(host_data(vm)),
        },
    )
    .await
    .map_err(|e| error_chain(&e))?;
    state
        .db(move |s| s.kvp_delivered(id, &entries))
        .await
        .map_err(|e| error_chain(&e))?;
    info!(vm = %vm.name, "key-value pool delivered to the agent");
    Ok(())
}

/// After a successful probe: pushes the pool if it waits for delivery, or
/// when the agent `came_back` (first answer, or after Lost Comm: an agent
/// restarted without `--state-dir` lost the pool, and the host's data for
/// pool 3 goes with every push). `delivery` is read once per monitor
/// round, not once per VM.
pub(crate) async fn push_if_needed(
    state: &State,
    vm: &VmRow,
    came_back: bool,
    delivery: &KvpDeliveryState,
) {
    if delivery.needs_push(vm.id, came_back) {
        if let Err(reason) = push_kvp(state, vm).await {
            if delivery.holds_entries(vm.id) {
                warn!(vm = %vm.name, %reason, "key-value pool not delivered yet");
            } else {
                // Only the host's data was due (an empty pool, perhaps with
                // the key-value service disabled on the VM).
                debug!(vm = %vm.name, %reason, "host data not delivered");
            }
        }
    }
}

/// Asks the guest to shut down (or reboot); returns when the guest
/// acknowledged.
pub(crate) async fn shutdown(
    state: &State,
    name: String,
    req: ShutdownRequest,
) -> Result<ShutdownAnswer, Error> {
    req.check().map_err(Error::BadRequest)?;
    let (vm, session) = open(state, name, BuiltinService::Shutdown).await?;
    let acknowledged = calls::shutdown(session, req.clone())
        .await
        .map_err(|e| call_error(&vm, e))?;
    info!(vm = %vm.name, %acknowledged, reason = %req.reason, "guest shutdown acknowledged");
    Ok(ShutdownAnswer { acknowledged })
}

async fn fs_call(state: &State, name: String, call: Call) -> Result<FreezeStatus, Error> {
    let (vm, session) = open(state, name, BuiltinService::FsFreeze).await?;
    calls::fs(session, call)
        .await
        .map_err(|e| call_error(&vm, e))
}

/// What is frozen.
pub(crate) async fn fs_status(state: &State, name: String) -> Result<FreezeStatus, Error> {
    fs_call(state, name, Call::FsStatus).await
}

/// Freezes the request's filesystems.
pub(crate) async fn fs_freeze(
    state: &State,
    name: String,
    req: FsRequest,
) -> Result<FreezeStatus, Error> {
    let call = Call::FsFreeze {
        mountpoints: req.mountpoints,
        timeout_s: req.timeout_s,
    };
    fs_call(state, name, call).await
}

/// Thaws the request's filesystems.
pub(crate) async fn fs_thaw(
    state: &State,
    name: String,
    req: FsRequest,
) -> Result<FreezeStatus, Error> {
    let call = Call::FsThaw {
        mountpoints: req.mountpoints,
    };
    fs_call(state, name, call).await
}
