//! [`Guest`] straight to an agent's address: one session per operation,
//! authenticated with the `--identity` key when there is one.

use std::path::PathBuf;

use futures::future::BoxFuture;
use futures::FutureExt;
use guestcomm_api::{FreezeStatus, GuestInfo, KvpEntries, ShutdownRequest, TimeReport};
use guestcomm_client::integration as ops;
use guestcomm_client::Session;
use guestcomm_protocol::integration::KvpPool;
use guestcomm_protocol::message::{Call, Request};
use guestcomm_transport::Address;

use super::operations::{FsOp, Guest};
use crate::session::{self, AgentStream};

/// An agent at a transport address.
pub(super) struct Direct {
    addr: Address,
    identity: Option<PathBuf>,
}

impl Direct {
    pub(super) fn new(addr: Address, identity: Option<PathBuf>) -> Self {
        Self { addr, identity }
    }

    /// A session with nothing sent yet, for one integration call.
    async fn session(&self) -> anyhow::Result<Session<AgentStream>> {
        session::direct(&self.addr, self.identity.as_deref(), None).await
    }

    /// Writes or removes a key (`change`); the agent applies it at once, so
    /// nothing is ever pending.
    async fn kvp_change(&self, change: Call) -> anyhow::Result<Option<String>> {
        ops::kvp_change(self.session().await?, change).await?;
        Ok(None)
    }
}

impl Guest for Direct {
    fn open(
        &self,
        request: Option<Request>,
    ) -> BoxFuture<'_, anyhow::Result<Session<AgentStream>>> {
        session::direct(&self.addr, self.identity.as_deref(), request).boxed()
    }

    fn info(&self) -> BoxFuture<'_, anyhow::Result<GuestInfo>> {
        async move { Ok(ops::guest_info(self.session().await?).await?) }.boxed()
    }

    fn time(&self, sync: bool, samples: u32) -> BoxFuture<'_, anyhow::Result<TimeReport>> {
        async move {
            let open = || self.session();
            if sync {
                ops::sync_time(open, samples).await
            } else {
                ops::measure_time(open, samples).await
            }
        }
        .boxed()
    }

    fn kvp_get<'a>(&'a self, pool: KvpPool, key: &'a str) -> BoxFuture<'a, anyhow::Result<String>> {
        async move { Ok(ops::kvp_get(self.session().await?, pool, key).await?) }.boxed()
    }

    fn kvp_list(&self, pool: KvpPool) -> BoxFuture<'_, anyhow::Result<KvpEntries>> {
        async move { Ok(ops::kvp_list(self.session().await?, pool).await?) }.boxed()
    }

    fn kvp_set(
        &self,
        pool: KvpPool,
        key: String,
        value: String,
    ) -> BoxFuture<'_, anyhow::Result<Option<String>>> {
        self.kvp_change(Call::KvpSet { pool, key, value }).boxed()
    }

    fn kvp_remove(
        &self,
        pool: KvpPool,
        key: String,
    ) -> BoxFuture<'_, anyhow::Result<Option<String>>> {
        self.kvp_change(Call::KvpDelete { pool, key }).boxed()
    }

    fn shutdown(&self, request: ShutdownRequest) -> BoxFuture<'_, anyhow::Result<String>> {
        async move { Ok(ops::shutdown(self.session().await?, request).await?) }.boxed()
    }

    fn fs(&self, op: FsOp) -> BoxFuture<'_, anyhow::Result<FreezeStatus>> {
        let call = match op {
            FsOp::Freeze {
                mountpoints,
                timeout_s,
            } => Call::FsFreeze {
                mountpoints,
                timeout_s: Some(timeout_s),
            },
            FsOp::Thaw { mountpoints } => Call::FsThaw { mountpoints },
            FsOp::Status => Call::FsStatus,
        };
        async move { Ok(ops::fs(self.session().await?, call).await?) }.boxed()
    }
}
