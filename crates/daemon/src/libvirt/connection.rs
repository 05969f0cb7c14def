//! The connection to libvirt, through its own API (`virt`, libvirt's Rust
//! bindings over libvirt.so): the one unsafe part of the daemon, kept small.
//!
//! Two threads, neither a tokio worker (libvirt's calls block):
//!
//! 1. `libvirt-events` runs libvirt's default event loop for the process
//!    (registered once, before any connection): it reads the connection,
//!    answers keepalives and calls the callbacks below, which only queue a
//!    [`Message`] (bounded: on overflow a flag asks for a full read instead).
//! 2. `libvirt` (the follower) connects, registers the lifecycle, metadata
//!    change and close callbacks, reads every domain ([`inventory::all`]),
//!    then applies each queued event by reading that domain again ([`inventory::seen`],
//!    [`inventory::undefined`]) on the daemon's runtime; a VM just added
//!    whose domain's definition lacks the key's fwcfg entry gets it, an
//!    undefined domain's key file goes, and a delivery that failed is tried
//!    again at each idle check (`keys.rs`). When the connection
//!    closes (libvirtd stopped, keepalive lost) it reconnects, waiting
//!    [`LIBVIRT_RECONNECT_FIRST_MS`] and doubling up to
//!    [`LIBVIRT_RECONNECT_MAX_MS`], and reads everything again. An outage
//!    is logged once (a warning when it begins, the attempts counted when
//!    it ends), however long it lasts.

use std::ffi::{c_int, c_void};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use guestcomm_protocol::error_chain;

use tracing::{debug, info, warn};
use uuid::Uuid;
use virt::connect::Connect;
use virt::domain::Domain;
use virt::error::ErrorNumber;
use virt::sys;

use super::domain_xml;
use super::inventory::{self, Definition};
use super::keys::{Context, DomainKeys};
use crate::health::Power;
use crate::limits::{
    LIBVIRT_EVENT_QUEUE, LIBVIRT_IDLE_CHECK_MS, LIBVIRT_KEEPALIVE_COUNT,
    LIBVIRT_KEEPALIVE_INTERVAL_S, LIBVIRT_RECONNECT_FIRST_MS, LIBVIRT_RECONNECT_MAX_MS,
};
use crate::state::State;

/// Why following libvirt could not begin.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnectionError {
    /// libvirt's event loop could not be registered.
    #[error("cannot start libvirt's event loop: {0}")]
    EventLoop(String),
    /// A thread could not be started.
    #[error("cannot start a thread")]
    Thread(#[source] std::io::Error),
}

/// The follower of one libvirt URI; it stops when dropped.
pub(crate) struct Follower {
    stop: Arc<AtomicBool>,
}

impl Drop for Follower {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Starts following the domains of libvirt at `uri` into `state`'s
/// inventory, applying changes on `runtime`.
pub(crate) fn follow(
    state: Arc<State>,
    uri: String,
    key_dir: Option<PathBuf>,
    runtime: tokio::runtime::Handle,
) -> Result<Follower, ConnectionError> {
    event_loop()?;
    let stop = Arc::new(AtomicBool::new(false));
    let stopped = stop.clone();
    let followed = Followed {
        state,
        uri,
        keys: DomainKeys::new(key_dir),
        runtime,
    };
    std::thread::Builder::new()
        .name("libvirt".into())
        .spawn(move || reconnect_loop(&followed, &stopped))
        .map_err(ConnectionError::Thread)?;
    Ok(Follower { stop })
}

/// Registers libvirt's default event loop and runs it on its own thread,
/// once per process.
fn event_loop() -> Result<(), ConnectionError> {
    static STARTED: OnceLock<Result<(), String>> = OnceLock::new();
    STARTED
        .get_or_init(|| {
            // libvirt prints every error on stderr by default; they are
            // logged here, with their context, instead.
            virt::error::clear_error_callback();
            virt::event::event_register_default_impl().map_err(|e| e.to_string())?;
            std::thread::Builder::new()
                .name("libvirt-events".into())
                .spawn(|| loop {
                    if let Err(e) = virt::event::event_run_default_impl() {
                        warn!(error = %e, "libvirt's event loop failed; running it again in 1 s");
                        std::thread::sleep(Duration::from_secs(1));
                    }
                })
                .map(drop)
                .map_err(|e| e.to_string())
        })
        .clone()
        .map_err(ConnectionError::EventLoop)
}

/// What the follower applies libvirt's domains to, and how.
struct Followed {
    state: Arc<State>,
    uri: String,
    /// The keys of the domains it adds (`[libvirt] key_dir`).
    keys: DomainKeys,
    runtime: tokio::runtime::Handle,
}

impl Followed {
    fn context(&self) -> Context<'_> {
        Context {
            state: &self.state,
            uri: &self.uri,
            runtime: &self.runtime,
        }
    }
}

/// Connects, follows until the connection closes, and again, until `stop`.
fn reconnect_loop(followed: &Followed, stop: &AtomicBool) {
    let uri = followed.uri.as_str();
    let first = Duration::from_millis(LIBVIRT_RECONNECT_FIRST_MS);
    let mut wait = first;
    // One warning per outage (the close, or the first failed attempt);
    // the attempts after it are debug, counted in the line that ends it.
    let mut outage_logged = false;
    let mut failed_attempts: u32 = 0;
    while !stop.load(Ordering::Relaxed) {
        match Session::open(uri) {
            Ok(session) => {
                if failed_attempts > 0 {
                    info!(libvirt = uri, failed_attempts, "reconnected to libvirt");
                }
                failed_attempts = 0;
                info!(libvirt = uri, "following libvirt's domains");
                session.follow(followed, stop);
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                warn!(
                    libvirt = uri,
                    "the connection to libvirt closed; reconnecting (every {} s at most; logged again once connected)",
                    LIBVIRT_RECONNECT_MAX_MS / 1000
                );
                outage_logged = true;
                wait = first;
            }
            Err(e) => {
                failed_attempts = failed_attempts.saturating_add(1);
                let retry_in_ms = wait.as_millis() as u64;
                if outage_logged {
                    debug!(libvirt = uri, error = %e, retry_in_ms, "cannot connect to libvirt");
                } else {
                    warn!(libvirt = uri, error = %e, retry_in_ms, "cannot connect to libvirt; retrying (every {} s at most; logged again once connected)", LIBVIRT_RECONNECT_MAX_MS / 1000);
                    outage_logged = true;
                }
            }
        }
        std::thread::sleep(wait);
        wait = (wait * 2).min(Duration::from_millis(LIBVIRT_RECONNECT_MAX_MS));
    }
}

/// What libvirt's callbacks tell the follower.
enum Message {
    /// Domain `uuid` changed (a lifecycle event, or its metadata);
    /// `undefined` when it is gone.
    Changed { uuid: Uuid, undefined: bool },
    /// The connection closed.
    Closed,
}

/// Where a callback queues its message: given to libvirt as the callback's
/// opaque pointer (a `Box`), freed by libvirt through [`free_sink`].
struct Sink {
    queue: SyncSender<Message>,
    /// Set when the queue was full: the follower reads every domain again.
    overflowed: Arc<AtomicBool>,
}

impl Sink {
    fn send(&self, message: Message) {
        match self.queue.try_send(message) {
            Ok(()) | Err(TrySendError::Disconnected(_)) => {}
            Err(TrySendError::Full(_)) => self.overflowed.store(true, Ordering::Relaxed),
        }
    }

    /// The opaque pointer libvirt keeps until it calls [`free_sink`].
    fn into_opaque(self) -> *mut c_void {
        Box::into_raw(Box::new(self)).cast()
    }
}

/// The UUID of `dom`, a domain handed to a callback.
///
/// # Safety
/// `dom` must be valid (it is, for the callback's duration).
unsafe fn domain_uuid(dom: sys::virDomainPtr) -> Option<Uuid> {
    let mut bytes = [0u8; 16];
    // SAFETY: the caller's; VIR_UUID_BUFLEN is 16 bytes.
    let got = unsafe { sys::virDomainGetUUID(dom, bytes.as_mut_ptr()) };
    (got == 0).then(|| Uuid::from_bytes(bytes))
}

/// libvirt's lifecycle callback (`virConnectDomainEventCallback`).
unsafe extern "C" fn on_lifecycle(
    _conn: sys::virConnectPtr,
    dom: sys::virDomainPtr,
    event: c_int,
    detail: c_int,
    opaque: *mut c_void,
) -> c_int {
    // SAFETY: `opaque` is the `Sink` registered with this callback; libvirt
    // frees it (free_sink) only after the callback can no longer run.
    let sink = unsafe { &*opaque.cast::<Sink>() };
    // SAFETY: `dom` is valid for the callback's duration.
    let Some(uuid) = (unsafe { domain_uuid(dom) }) else {
        return 0;
    };
    // A rename undefines the old name and defines the new one, the UUID
    // the same: the VM is renamed (read again), not removed.
    let undefined = u32::try_from(event).ok() == Some(sys::VIR_DOMAIN_EVENT_UNDEFINED)
        && u32::try_from(detail).ok() != Some(sys::VIR_DOMAIN_EVENT_UNDEFINED_RENAMED);
    sink.send(Message::Changed { uuid, undefined });
    0
}

/// libvirt's metadata change callback
/// (`virConnectDomainEventMetadataChangeCallback`): the guestcomm element
/// may have been set or removed.
unsafe extern "C" fn on_metadata_change(
    _conn: sys::virConnectPtr,
    dom: sys::virDomainPtr,
    _kind: c_int,
    _namespace: *const std::ffi::c_char,
    opaque: *mut c_void,
) {
    // SAFETY: as in on_lifecycle.
    let sink = unsafe { &*opaque.cast::<Sink>() };
    // SAFETY: as in on_lifecycle.
    if let Some(uuid) = unsafe { domain_uuid(dom) } {
        sink.send(Message::Changed {
            uuid,
            undefined: false,
        });
    }
}

/// libvirt's close callback (`virConnectCloseFunc`).
unsafe extern "C" fn on_close(_conn: sys::virConnectPtr, _reason: c_int, opaque: *mut c_void) {
    // SAFETY: as in on_lifecycle.
    let sink = unsafe { &*opaque.cast::<Sink>() };
    sink.send(Message::Closed);
}

/// Frees a [`Sink`] given to libvirt (`virFreeCallback`).
unsafe extern "C" fn free_sink(opaque: *mut c_void) {
    // SAFETY: `opaque` came from Sink::into_opaque, and libvirt frees it once.
    drop(unsafe { Box::from_raw(opaque.cast::<Sink>()) });
}

/// One connection with its callbacks registered.
struct Session {
    conn: Connect,
    queue: Receiver<Message>,
    overflowed: Arc<AtomicBool>,
    /// The ids of the domain event callbacks registered.
    callbacks: Vec<c_int>,
    /// Whether the close callback is registered.
    close: bool,
}

impl Session {
    /// Connects to `uri` and registers the callbacks.
    fn open(uri: &str) -> Result<Self, virt::error::Error> {
        let conn = Connect::open(Some(uri))?;
        let (queue, received) = sync_channel(LIBVIRT_EVENT_QUEUE);
        let overflowed = Arc::new(AtomicBool::new(false));
        let mut session = Self {
            conn,
            queue: received,
            overflowed: overflowed.clone(),
            callbacks: Vec::new(),
            close: false,
        };
        if let Err(e) = session
            .conn
            .set_keep_alive(LIBVIRT_KEEPALIVE_INTERVAL_S, LIBVIRT_KEEPALIVE_COUNT)
        {
            // A local driver (test:///) has no keepalive; a remote one does.
            tracing::debug!(error = %e, "no keepalive on the libvirt connection");
        }
        let sink = || Sink {
            queue: queue.clone(),
            overflowed: overflowed.clone(),
        };
        let opaque = sink().into_opaque();
        // SAFETY: a live connection; once registered, libvirt owns `opaque`
        // and frees it with free_sink. Should registration fail, the sink
        // is left alone (leaked): whether libvirt freed it is not said.
        let closed = unsafe {
            sys::virConnectRegisterCloseCallback(
                session.conn.as_ptr(),
                Some(on_close),
                opaque,
                Some(free_sink),
            )
        };
        if closed != 0 {
            return Err(virt::error::Error::last_error());
        }
        session.close = true;
        // The C API takes every event callback as the generic type and
        // calls it with its event's own signature (VIR_DOMAIN_EVENT_CALLBACK).
        type Lifecycle = unsafe extern "C" fn(
            sys::virConnectPtr,
            sys::virDomainPtr,
            c_int,
            c_int,
            *mut c_void,
        ) -> c_int;
        type MetadataChange = unsafe extern "C" fn(
            sys::virConnectPtr,
            sys::virDomainPtr,
            c_int,
            *const std::ffi::c_char,
            *mut c_void,
        );
        type Generic = unsafe extern "C" fn(sys::virConnectPtr, sys::virDomainPtr, *mut c_void);
        // SAFETY: libvirt calls a VIR_DOMAIN_EVENT_ID_LIFECYCLE callback with
        // the lifecycle signature, whatever type it was registered as.
        let lifecycle = unsafe { std::mem::transmute::<Lifecycle, Generic>(on_lifecycle) };
        // SAFETY: as above, for VIR_DOMAIN_EVENT_ID_METADATA_CHANGE.
        let metadata =
            unsafe { std::mem::transmute::<MetadataChange, Generic>(on_metadata_change) };
        for (event, callback) in [
            (sys::VIR_DOMAIN_EVENT_ID_LIFECYCLE, lifecycle),
            (sys::VIR_DOMAIN_EVENT_ID_METADATA_CHANGE, metadata),
        ] {
            let opaque = sink().into_opaque();
            // SAFETY: as for the close callback.
            let id = unsafe {
                sys::virConnectDomainEventRegisterAny(
                    session.conn.as_ptr(),
                    std::ptr::null_mut(),
                    event as c_int,
                    Some(callback),
                    opaque,
                    Some(free_sink),
                )
            };
            if id < 0 {
                return Err(virt::error::Error::last_error());
            }
            session.callbacks.push(id);
        }
        Ok(session)
    }

    /// Reads every domain, then applies events until the connection closes
    /// or `stop`.
    fn follow(&self, followed: &Followed, stop: &AtomicBool) {
        let Followed {
            state,
            uri,
            runtime,
            keys,
        } = followed;
        let cx = followed.context();
        // Its VM goes (if it follows it), and the key file written for it.
        let undefined = |uuid| {
            if let Some(vm) = runtime.block_on(inventory::undefined(state, uuid)) {
                keys.forget(&cx, uuid, &vm);
            }
        };
        if !self.read_all(followed) {
            return;
        }
        let idle = Duration::from_millis(LIBVIRT_IDLE_CHECK_MS);
        while !stop.load(Ordering::Relaxed) {
            match self.queue.recv_timeout(idle) {
                Ok(Message::Changed {
                    uuid,
                    undefined: true,
                }) => undefined(uuid),
                Ok(Message::Changed { uuid, .. }) => {
                    match Domain::lookup_by_uuid(&self.conn, uuid) {
                        Ok(dom) => match read(&dom) {
                            Ok(domain) => {
                                if let Some(psk) =
                                    runtime.block_on(inventory::seen(state, uri, domain))
                                {
                                    keys.deliver(&cx, &self.conn, &dom, uuid, &psk);
                                } else {
                                    keys.retry(&cx, &self.conn, Some(uuid));
                                }
                            }
                            Err(e) => warn!(%uuid, error = %e, "cannot read a libvirt domain"),
                        },
                        // Transient, and gone with its event.
                        Err(e) if e.code() == ErrorNumber::NoDomain => undefined(uuid),
                        Err(e) => warn!(%uuid, error = %e, "cannot find a libvirt domain"),
                    }
                }
                Ok(Message::Closed) | Err(RecvTimeoutError::Disconnected) => return,
                Err(RecvTimeoutError::Timeout) => {
                    if !self.conn.is_alive().unwrap_or(false) {
                        return;
                    }
                    keys.retry(&cx, &self.conn, None);
                }
            }
            if self.overflowed.swap(false, Ordering::Relaxed) {
                warn!("libvirt events came faster than they were applied; reading every domain");
                if !self.read_all(followed) {
                    return;
                }
            }
        }
    }

    /// Reads every domain into the inventory; false if libvirt failed.
    fn read_all(&self, followed: &Followed) -> bool {
        let domains = match self.conn.list_all_domains(0) {
            Ok(domains) => domains,
            Err(e) => {
                warn!(error = %e, "cannot list libvirt's domains");
                return false;
            }
        };
        let mut read_ok = Vec::with_capacity(domains.len());
        for dom in &domains {
            match read(dom) {
                Ok(domain) => read_ok.push(domain),
                Err(e) if e.code() == ErrorNumber::NoDomain => {}
                Err(e) => {
                    // Without it the full read could remove its VM.
                    warn!(error = %e, "cannot read a libvirt domain; reading them all again later");
                    return false;
                }
            }
        }
        let read =
            followed
                .runtime
                .block_on(inventory::all(&followed.state, &followed.uri, read_ok));
        let cx = followed.context();
        for (uuid, vm) in read.gone {
            followed.keys.forget(&cx, uuid, &vm);
        }
        for (uuid, psk) in read.keys {
            if let Some(dom) = domains.iter().find(|d| d.get_uuid().ok() == Some(uuid)) {
                followed.keys.deliver(&cx, &self.conn, dom, uuid, &psk);
            }
        }
        followed.keys.retry(&cx, &self.conn, None);
        true
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let conn = self.conn.as_ptr();
        // Failures (a dead connection) change nothing: libvirt frees the
        // sinks when the connection goes.
        for &id in &self.callbacks {
            // SAFETY: `id` was registered on this connection object.
            unsafe { sys::virConnectDomainEventDeregisterAny(conn, id) };
        }
        if self.close {
            // SAFETY: registered on this connection object.
            unsafe { sys::virConnectUnregisterCloseCallback(conn, Some(on_close)) };
        }
        let _ = self.conn.close();
    }
}

/// What the inventory needs of one domain.
fn read(dom: &Domain) -> Result<inventory::Domain, virt::error::Error> {
    let (state, _reason) = dom.get_state()?;
    let power = match state {
        sys::VIR_DOMAIN_RUNNING | sys::VIR_DOMAIN_BLOCKED | sys::VIR_DOMAIN_SHUTDOWN => {
            Power::Running
        }
        sys::VIR_DOMAIN_PAUSED | sys::VIR_DOMAIN_PMSUSPENDED => Power::Paused,
        _ => Power::Off,
    };
    // The live XML: a running domain's auto-assigned CID is in it.
    let live = domain_xml::read(&dom.get_xml_desc(0)?);
    let definition = if dom.is_persistent()? {
        let xml = dom.get_xml_desc(sys::VIR_DOMAIN_XML_INACTIVE | sys::VIR_DOMAIN_XML_SECURE)?;
        match domain_xml::read(&xml) {
            Ok(read) => Definition::Persistent(read.credential),
            Err(e) => Definition::Unreadable(error_chain(&e)),
        }
    } else {
        Definition::Transient
    };
    let (endpoint, live_key) = match live {
        Ok(read) => (Ok(read.endpoint), read.credential),
        Err(e) => (Err(e), None),
    };
    Ok(inventory::Domain {
        uuid: dom.get_uuid()?,
        name: dom.get_name()?,
        endpoint,
        power,
        live_key,
        definition,
    })
}
