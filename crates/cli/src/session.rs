//! Opening a [`Session`] with an agent, past its handshake: straight to the
//! agent's address (with the key of `--identity`, if any), or through
//! guestcommd's `connect` upgrade for a VM name (the daemon checks policy
//! and holds the VM's key). The `guest` module picks which.
//!
//! A first request may ride with the handshake when the stream allows it
//! (a round trip saved; see [`Early`]).

use std::path::Path;

use anyhow::Context as _;
use guestcomm_api::{early_upgrade, ApiClient};
use guestcomm_client::{Early, Session};
use guestcomm_protocol::auth::load_credentials;
use guestcomm_protocol::message::Request;
use guestcomm_transport::Address;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::api;

/// Any byte stream to an agent.
pub(crate) trait AgentIo: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> AgentIo for T {}

/// The stream under a [`Session`], whichever way it was opened.
pub(crate) type AgentStream = Box<dyn AgentIo>;

/// How this client names itself in the handshake.
fn client_name() -> String {
    format!("guestcomm {}", env!("CARGO_PKG_VERSION"))
}

fn early(request: Option<Request>, unix: bool) -> Early {
    match request {
        None => Early::None,
        Some(request) => Early::as_soon_as_safe(request, unix),
    }
}

/// A session straight to the agent at `addr`, sending `request` first.
pub(crate) async fn direct(
    addr: &Address,
    identity: Option<&Path>,
    request: Option<Request>,
) -> anyhow::Result<Session<AgentStream>> {
    let psk = identity
        .map(load_credentials)
        .transpose()
        .context("failed to load --identity")?;
    let stream = guestcomm_transport::connect(addr).await?;
    let session = guestcomm_client::handshake_then(
        Box::new(stream) as AgentStream,
        &addr.to_string(),
        &client_name(),
        psk.as_ref(),
        early(request, matches!(addr, Address::Unix(_))),
    )
    .await?;
    Ok(session)
}

/// A session with the agent of VM `name` through guestcommd, at `vm_path`,
/// sending `request` first.
pub(crate) async fn through_daemon(
    client: &ApiClient,
    name: &str,
    vm_path: &str,
    request: Option<Request>,
) -> anyhow::Result<Session<AgentStream>> {
    let path = format!("{vm_path}/connect");
    let early = early(request, client.is_unix());
    // With a request to send, the daemon's answer to the upgrade is read
    // with the stream, after the request went out.
    let stream = match &early {
        Early::None => client
            .upgrade(&path)
            .await
            .map(|s| Box::new(s) as AgentStream),
        _ => client
            .upgrade_early(&path)
            .await
            .map(|s| Box::new(s) as AgentStream),
    }
    .map_err(|e| api::one_line(&e))?;
    let peer = format!("VM {name} through guestcommd");
    guestcomm_client::handshake_then(stream, &peer, &client_name(), None, early)
        .await
        .map_err(|e| match early_upgrade::api_error(&e) {
            // The daemon refused the upgrade: its one line, as when the
            // answer is awaited first.
            Some(refusal) => api::one_line(refusal),
            None => e.into(),
        })
}
