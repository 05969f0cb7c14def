//! What a command can ask of a guest: the [`Guest`] trait and the types of
//! its operations ([`FsOp`]). A leaf of `guest`: its direct and daemon
//! implementations import it.

use futures::future::BoxFuture;
use guestcomm_api::{FreezeStatus, GuestInfo, KvpEntries, ShutdownRequest, TimeReport};
use guestcomm_client::Session;
use guestcomm_protocol::integration::KvpPool;
use guestcomm_protocol::message::Request;

use crate::session::AgentStream;

/// A filesystem freeze operation.
#[derive(Clone, Debug)]
pub(crate) enum FsOp {
    /// Freeze these mount points (all that can freeze when empty); the
    /// agent thaws on its own after `timeout_s`.
    Freeze {
        mountpoints: Vec<String>,
        timeout_s: u64,
    },
    /// Thaw these mount points (all frozen when empty).
    Thaw { mountpoints: Vec<String> },
    /// What is frozen.
    Status,
}

/// What a command can ask of a guest. Each call is one operation; a
/// written key-value pair answers why it is still pending, if it is (the
/// daemon keeps it for an unreachable VM).
pub(crate) trait Guest: Send + Sync {
    /// A session with the agent, `request` sent first (exec, copies).
    fn open(&self, request: Option<Request>)
        -> BoxFuture<'_, anyhow::Result<Session<AgentStream>>>;
    /// Everything the guest says about itself.
    fn info(&self) -> BoxFuture<'_, anyhow::Result<GuestInfo>>;
    /// The guest clock's offset, after stepping it to the host's with `sync`.
    fn time(&self, sync: bool, samples: u32) -> BoxFuture<'_, anyhow::Result<TimeReport>>;
    /// One value of a key-value pool.
    fn kvp_get<'a>(&'a self, pool: KvpPool, key: &'a str) -> BoxFuture<'a, anyhow::Result<String>>;
    /// Every pair of a pool.
    fn kvp_list(&self, pool: KvpPool) -> BoxFuture<'_, anyhow::Result<KvpEntries>>;
    /// Writes a key of a pool.
    fn kvp_set(
        &self,
        pool: KvpPool,
        key: String,
        value: String,
    ) -> BoxFuture<'_, anyhow::Result<Option<String>>>;
    /// Removes a key of a pool.
    fn kvp_remove(
        &self,
        pool: KvpPool,
        key: String,
    ) -> BoxFuture<'_, anyhow::Result<Option<String>>>;
    /// Powers off or reboots the guest; the guest's acknowledgement.
    fn shutdown(&self, request: ShutdownRequest) -> BoxFuture<'_, anyhow::Result<String>>;
    /// Freezes, thaws, or shows the frozen filesystems.
    fn fs(&self, op: FsOp) -> BoxFuture<'_, anyhow::Result<FreezeStatus>>;
}
