//! Warm agent connections: once a relayed operation has taken a connection
//! to a VM's agent, the daemon opens and authenticates the next one in the
//! background, so a following exec or cp to the same VM skips the connect
//! and handshake (about half of what the daemon adds to an operation).
//!
//! A spare is kept at most [`SPARE_MAX_AGE_MS`], well inside the agent's wait
//! for a request after the handshake (`HANDSHAKE_TIMEOUT_MS`), and then
//! closed (the agent logs that at debug level, like a health probe). It is
//! used only for the same endpoint and key it was made with, and only if it
//! is still open. At most [`MAX_SPARES`] exist, so a host with many VMs
//! keeps spares only for the busy ones. A VM that is not used again costs
//! one idle connection for a few seconds.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use guestcomm_client::Session;
use guestcomm_protocol::auth::Psk;
use guestcomm_transport::{Address, Stream};
use tracing::debug;

use crate::limits::{MAX_SPARES, SPARE_MAX_AGE_MS};
use crate::model::VmRow;

/// What a spare was made for: a VM whose endpoint or key changed since
/// must not get it.
#[derive(Clone, PartialEq, Eq)]
struct Key {
    endpoint: Address,
    psk: Option<Psk>,
}

impl Key {
    fn of(vm: &VmRow) -> Self {
        Self {
            endpoint: vm.endpoint.clone(),
            psk: vm.psk.clone(),
        }
    }
}

struct Spare {
    key: Key,
    session: Session<Stream>,
    /// Tells the expiry task whether this is still the spare it made.
    generation: u64,
}

#[derive(Default)]
struct Inner {
    by_vm: HashMap<String, Spare>,
    /// VMs whose next spare is being made.
    filling: std::collections::HashSet<String>,
    next_generation: u64,
}

/// The spare connections of all VMs.
pub(crate) struct Spares {
    inner: Mutex<Inner>,
    max_age: Duration,
    enabled: bool,
}

impl Default for Spares {
    fn default() -> Self {
        Self::with_max_age(Duration::from_millis(SPARE_MAX_AGE_MS))
    }
}

impl Spares {
    /// Spares closed after `max_age` (tests; the daemon uses [`SPARE_MAX_AGE_MS`]).
    pub(crate) fn with_max_age(max_age: Duration) -> Self {
        Self {
            inner: Mutex::default(),
            max_age,
            enabled: true,
        }
    }

    /// No spares at all (`guestcommd --no-warm-connections`): every
    /// operation connects anew.
    pub(crate) fn disabled() -> Self {
        Self {
            enabled: false,
            ..Self::default()
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes `vm`'s spare, if one is open and was made for its current
    /// endpoint and key.
    pub(crate) fn take(&self, vm: &VmRow) -> Option<Session<Stream>> {
        let spare = self.lock().by_vm.remove(&vm.name)?;
        if spare.key != Key::of(vm) {
            return None;
        }
        // Anything to read (end of stream, an error frame, stray bytes),
        // already buffered or waiting in the kernel, means the agent is
        // done with it; nothing at all, it waits for a request.
        let buffered = !spare.session.conn.read_buffer().is_empty();
        if buffered || !spare.session.conn.get_ref().is_quiet() {
            debug!(vm = %vm.name, "spare connection closed by the agent; connecting anew");
            return None;
        }
        Some(spare.session)
    }

    /// Makes `vm`'s next spare in the background with `connect` (module
    /// `agent`), unless one exists, one is being made, or [`MAX_SPARES`]
    /// are open.
    pub(crate) fn refill<F>(self: &Arc<Self>, vm: VmRow, connect: F)
    where
        F: Future<Output = Option<Session<Stream>>> + Send + 'static,
    {
        if !self.enabled {
            return;
        }
        {
            let mut inner = self.lock();
            if inner.by_vm.contains_key(&vm.name)
                || inner.filling.contains(&vm.name)
                || inner.by_vm.len() + inner.filling.len() >= MAX_SPARES
            {
                return;
            }
            inner.filling.insert(vm.name.clone());
        }
        let spares = Arc::clone(self);
        tokio::spawn(async move {
            let made = connect.await;
            let generation = {
                let mut inner = spares.lock();
                inner.filling.remove(&vm.name);
                let Some(session) = made else { return };
                inner.next_generation += 1;
                let generation = inner.next_generation;
                let spare = Spare {
                    key: Key::of(&vm),
                    session,
                    generation,
                };
                inner.by_vm.insert(vm.name.clone(), spare);
                generation
            };
            tokio::time::sleep(spares.max_age).await;
            let mut inner = spares.lock();
            if inner
                .by_vm
                .get(&vm.name)
                .is_some_and(|s| s.generation == generation)
            {
                inner.by_vm.remove(&vm.name);
            }
        });
    }

    /// Spare connections open now.
    pub(crate) fn len(&self) -> usize {
        self.lock().by_vm.len()
    }

    #[cfg(test)]
    /// Whether no spare connection is open.
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use guestcomm_protocol::handshake::{server_handshake, ServerOffer, AUTH_NONE};
    use guestcomm_protocol::FrameCodec;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::net::UnixListener;
    use tokio_util::codec::Framed;

    /// An agent stand-in: answers handshakes, counts them, and holds each
    /// connection until told to drop them all.
    struct FakeAgent {
        endpoint: String,
        handshakes: Arc<AtomicUsize>,
        hung_up: Arc<AtomicUsize>,
        hang_up: Arc<tokio::sync::Notify>,
        _dir: tempfile::TempDir,
    }

    impl FakeAgent {
        fn start() -> Self {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("agent.sock");
            let listener = UnixListener::bind(&path).unwrap();
            let handshakes = Arc::new(AtomicUsize::new(0));
            let hung_up = Arc::new(AtomicUsize::new(0));
            let hang_up = Arc::new(tokio::sync::Notify::new());
            let (count, closed, hang) = (handshakes.clone(), hung_up.clone(), hang_up.clone());
            tokio::spawn(async move {
                while let Ok((stream, _)) = listener.accept().await {
                    let (count, closed, hang) = (count.clone(), closed.clone(), hang.clone());
                    tokio::spawn(async move {
                        let mut conn = Framed::new(stream, FrameCodec::new());
                        let offer = ServerOffer {
                            features: vec![],
                            auth: vec![AUTH_NONE.into()],
                            agent: "fake".into(),
                            psk: None,
                            nonce_epoch: None,
                        };
                        if server_handshake(&mut conn, &offer).await.is_ok() {
                            count.fetch_add(1, Ordering::SeqCst);
                            hang.notified().await;
                            drop(conn);
                            closed.fetch_add(1, Ordering::SeqCst);
                        }
                    });
                }
            });
            Self {
                endpoint: format!("unix://{}", path.display()),
                handshakes,
                hung_up,
                hang_up,
                _dir: dir,
            }
        }
    }

    fn vm(endpoint: &str) -> VmRow {
        VmRow::for_test("web1", endpoint)
    }

    /// What module `agent` does: a spare made by connecting to `vm`'s
    /// endpoint (here the stand-in's).
    fn refill(spares: &Arc<Spares>, vm: VmRow) {
        let endpoint = vm.endpoint.clone();
        let made = async move {
            guestcomm_client::connect_with(&endpoint, "test", None)
                .await
                .ok()
        };
        spares.refill(vm, made);
    }

    async fn until(what: &str, mut ready: impl FnMut() -> bool) {
        for _ in 0..500 {
            if ready() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("timed out waiting for {what}");
    }

    #[tokio::test]
    async fn a_refilled_spare_is_taken_once_and_only_for_the_same_endpoint() {
        let agent = FakeAgent::start();
        let spares = Arc::new(Spares::default());
        let web1 = vm(&agent.endpoint);
        assert!(spares.take(&web1).is_none(), "nothing before a refill");
        refill(&spares, web1.clone());
        until("the spare", || spares.len() == 1).await;
        assert_eq!(agent.handshakes.load(Ordering::SeqCst), 1);
        assert!(spares.take(&web1).is_some());
        assert!(spares.take(&web1).is_none(), "a spare is used once");

        refill(&spares, web1.clone());
        until("the second spare", || spares.len() == 1).await;
        let moved = vm("unix:///elsewhere.sock");
        assert!(spares.take(&moved).is_none(), "made for another endpoint");
        assert!(spares.is_empty(), "and dropped");
    }

    #[tokio::test]
    async fn a_spare_the_agent_closed_is_not_used() {
        let agent = FakeAgent::start();
        let spares = Arc::new(Spares::default());
        let web1 = vm(&agent.endpoint);
        refill(&spares, web1.clone());
        until("the spare", || spares.len() == 1).await;
        agent.hang_up.notify_waiters();
        until("the hang-up", || agent.hung_up.load(Ordering::SeqCst) == 1).await;
        assert!(spares.take(&web1).is_none());
    }

    #[tokio::test]
    async fn disabled_spares_are_never_made() {
        let agent = FakeAgent::start();
        let spares = Arc::new(Spares::disabled());
        refill(&spares, vm(&agent.endpoint));
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(spares.is_empty());
        assert_eq!(agent.handshakes.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn spares_expire_and_an_unreachable_agent_leaves_none() {
        let agent = FakeAgent::start();
        let spares = Arc::new(Spares::with_max_age(Duration::from_millis(100)));
        let web1 = vm(&agent.endpoint);
        refill(&spares, web1.clone());
        until("the spare", || spares.len() == 1).await;
        until("its expiry", || spares.is_empty()).await;

        refill(&spares, vm("unix:///nonexistent/agent.sock"));
        until("the failed refill to be forgotten", || {
            spares.lock().filling.is_empty()
        })
        .await;
        assert!(spares.is_empty());
    }
}
