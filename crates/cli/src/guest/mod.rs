//! One way for every command to reach a guest, whatever its TARGET names:
//! the [`Guest`] trait, implemented by [`direct::Direct`] (straight to an
//! agent's address, with `--identity`) and [`daemon::Daemon`] (a VM name,
//! through guestcommd's API, which checks the VM's policy and holds its
//! key). [`connect`] is the one place that tells them apart.
//!
//! Errors are one line each (`anyhow`); the command picks the exit code.

mod daemon;
mod direct;

use futures::future::BoxFuture;
use guestcomm_api::{FreezeStatus, GuestInfo, KvpEntries, ShutdownRequest, TimeReport};
use guestcomm_client::Session;
use guestcomm_protocol::integration::KvpPool;
use guestcomm_protocol::message::Request;

use crate::api;
use crate::context::Context;
use crate::session::AgentStream;
use crate::target::Target;

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

/// The guest `target` names; `--identity` is refused for VM names.
pub(crate) fn connect(target: &Target, ctx: &Context) -> anyhow::Result<Box<dyn Guest>> {
    match target {
        Target::Direct(addr) => Ok(Box::new(direct::Direct::new(
            addr.clone(),
            ctx.identity().map(Into::into),
        ))),
        Target::Vm(name) => {
            if ctx.identity().is_some() {
                anyhow::bail!("--identity is for agent addresses; for VM {name:?} guestcommd holds the key (see `guestcomm vm credentials`)");
            }
            let client = ctx.api().map_err(|e| api::one_line(&e))?.clone();
            let vm_path = api::vm_path(name).map_err(|e| api::one_line(&e))?;
            Ok(Box::new(daemon::Daemon::new(client, name.clone(), vm_path)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::Output;

    fn context(identity: Option<&str>) -> Context {
        Context::new(None, None, identity.map(Into::into), Output::Text)
    }

    fn refusal(target: &str, ctx: &Context) -> String {
        match connect(&target.parse().unwrap(), ctx) {
            Ok(_) => panic!("{target}: accepted"),
            Err(e) => format!("{e:#}"),
        }
    }

    #[test]
    fn identity_is_for_agent_addresses_only() {
        let err = refusal("web1", &context(Some("/k")));
        assert!(
            err.starts_with("--identity is for agent addresses"),
            "{err}"
        );
        assert!(connect(&"unix:///a.sock".parse().unwrap(), &context(Some("/k"))).is_ok());
        assert!(connect(&"web1".parse().unwrap(), &context(None)).is_ok());
    }

    #[test]
    fn vm_names_are_checked_before_asking_the_daemon() {
        let err = refusal("bad name", &context(None));
        assert!(err.starts_with("invalid VM name"), "{err}");
    }
}
