//! [`Guest`] through guestcommd: each operation is one request to the
//! daemon's API for the VM (`/v1/vms/{name}/...`); the daemon checks the
//! VM's policy and reaches the agent with the VM's key.

use futures::future::BoxFuture;
use futures::FutureExt;
use guestcomm_api::{
    encode_path_segment, ApiClient, FreezeStatus, FsRequest, GuestInfo, KvpEntries, KvpPair,
    KvpValue, KvpWrite, Method, ShutdownAnswer, ShutdownRequest, TimeReport,
};
use guestcomm_client::Session;
use guestcomm_protocol::integration::KvpPool;
use guestcomm_protocol::message::Request;

use super::operations::{FsOp, Guest};
use crate::api;
use crate::session::{self, AgentStream};

/// A VM known to guestcommd.
pub(super) struct Daemon {
    client: ApiClient,
    name: String,
    /// `/v1/vms/{name}`.
    vm_path: String,
}

impl Daemon {
    pub(super) fn new(client: ApiClient, name: String, vm_path: String) -> Self {
        Self {
            client,
            name,
            vm_path,
        }
    }

    /// `GET` the VM's `path` (after `/v1/vms/{name}`).
    async fn get<R: serde::de::DeserializeOwned>(&self, path: &str) -> anyhow::Result<R> {
        let path = format!("{}{path}", self.vm_path);
        self.client.get(&path).await.map_err(|e| api::one_line(&e))
    }

    /// `method` on the VM's `path` (after `/v1/vms/{name}`) with `body`.
    async fn send<B, R>(&self, method: Method, path: &str, body: &B) -> anyhow::Result<R>
    where
        B: serde::Serialize + Sync,
        R: serde::de::DeserializeOwned,
    {
        let path = format!("{}{path}", self.vm_path);
        self.client
            .send(method, &path, body)
            .await
            .map_err(|e| api::one_line(&e))
    }

    /// The path of `key` in `pool`, after the VM's.
    fn kvp_path(pool: KvpPool, key: &str) -> String {
        format!("/kvp/{pool}/{}", encode_path_segment(key))
    }

    /// Writes or removes `key`; why the write is still pending, if it is.
    async fn kvp_write<B: serde::Serialize + Sync>(
        &self,
        method: Method,
        pool: KvpPool,
        key: String,
        body: B,
    ) -> anyhow::Result<Option<String>> {
        let written: KvpWrite = self
            .send(method, &Self::kvp_path(pool, &key), &body)
            .await?;
        Ok(written.pending_reason)
    }
}

impl Guest for Daemon {
    fn open(
        &self,
        request: Option<Request>,
    ) -> BoxFuture<'_, anyhow::Result<Session<AgentStream>>> {
        session::through_daemon(&self.client, &self.name, &self.vm_path, request).boxed()
    }

    fn info(&self) -> BoxFuture<'_, anyhow::Result<GuestInfo>> {
        self.get("/info").boxed()
    }

    fn time(&self, sync: bool, samples: u32) -> BoxFuture<'_, anyhow::Result<TimeReport>> {
        async move {
            let query = format!("?samples={samples}");
            if sync {
                let path = format!("/time/sync{query}");
                self.send(Method::POST, &path, &()).await
            } else {
                self.get(&format!("/time{query}")).await
            }
        }
        .boxed()
    }

    fn kvp_get<'a>(&'a self, pool: KvpPool, key: &'a str) -> BoxFuture<'a, anyhow::Result<String>> {
        async move {
            let pair: KvpPair = self.get(&Self::kvp_path(pool, key)).await?;
            Ok(pair.value)
        }
        .boxed()
    }

    fn kvp_list(&self, pool: KvpPool) -> BoxFuture<'_, anyhow::Result<KvpEntries>> {
        async move { self.get(&format!("/kvp/{pool}")).await }.boxed()
    }

    fn kvp_set(
        &self,
        pool: KvpPool,
        key: String,
        value: String,
    ) -> BoxFuture<'_, anyhow::Result<Option<String>>> {
        self.kvp_write(Method::PUT, pool, key, KvpValue { value })
            .boxed()
    }

    fn kvp_remove(
        &self,
        pool: KvpPool,
        key: String,
    ) -> BoxFuture<'_, anyhow::Result<Option<String>>> {
        self.kvp_write(Method::DELETE, pool, key, ()).boxed()
    }

    fn shutdown(&self, request: ShutdownRequest) -> BoxFuture<'_, anyhow::Result<String>> {
        async move {
            let answer: ShutdownAnswer = self.send(Method::POST, "/shutdown", &request).await?;
            Ok(answer.acknowledged)
        }
        .boxed()
    }

    fn fs(&self, op: FsOp) -> BoxFuture<'_, anyhow::Result<FreezeStatus>> {
        async move {
            match op {
                FsOp::Freeze {
                    mountpoints,
                    timeout_s,
                } => {
                    let body = FsRequest {
                        mountpoints,
                        timeout_s: Some(timeout_s),
                    };
                    self.send(Method::POST, "/fs/freeze", &body).await
                }
                FsOp::Thaw { mountpoints } => {
                    let body = FsRequest {
                        mountpoints,
                        timeout_s: None,
                    };
                    self.send(Method::POST, "/fs/thaw", &body).await
                }
                FsOp::Status => self.get("/fs").await,
            }
        }
        .boxed()
    }
}
