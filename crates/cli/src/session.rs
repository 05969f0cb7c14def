//! Where a command's connection to an agent comes from: straight to the
//! agent's address (direct mode, optionally with `--identity`), or through
//! guestcommd for a VM name (the daemon checks policy and holds the VM's
//! key). Either way the command gets a [`Session`] past its handshake and
//! speaks the same protocol over it.

use std::path::Path;

use anyhow::{anyhow, bail, Context};
use guestcomm_api::early_upgrade;
use guestcomm_client::{Early, Session};
use guestcomm_protocol::auth::load_credentials;
use guestcomm_protocol::message::Request;
use guestcomm_transport::Address;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::commands::api;
use crate::target::Target;

/// Any byte stream to an agent.
pub trait AgentIo: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> AgentIo for T {}

/// The stream under a [`Session`], whichever way it was opened.
pub type AgentStream = Box<dyn AgentIo>;

/// Opens a session with the agent `target` names.
pub async fn open(
    target: &Target,
    api_addr: Option<&str>,
    identity: Option<&Path>,
) -> anyhow::Result<Session<AgentStream>> {
    open_inner(target, api_addr, identity, None).await
}

/// [`open`] that also sends `request`, during the handshake when the
/// stream allows it (a round trip saved; see [`Early`]).
pub async fn open_then(
    target: &Target,
    api_addr: Option<&str>,
    identity: Option<&Path>,
    request: Request,
) -> anyhow::Result<Session<AgentStream>> {
    open_inner(target, api_addr, identity, Some(request)).await
}

async fn open_inner(
    target: &Target,
    api_addr: Option<&str>,
    identity: Option<&Path>,
    request: Option<Request>,
) -> anyhow::Result<Session<AgentStream>> {
    let client_name = format!("guestcomm {}", env!("CARGO_PKG_VERSION"));
    let early = |unix: bool| match request {
        None => Early::None,
        Some(request) => Early::as_soon_as_safe(request, unix),
    };
    match target {
        Target::Direct(addr) => {
            let psk = identity
                .map(load_credentials)
                .transpose()
                .context("failed to load --identity")?;
            let stream = guestcomm_transport::connect(addr).await?;
            let session = guestcomm_client::handshake_then(
                Box::new(stream) as AgentStream,
                &addr.to_string(),
                &client_name,
                psk.as_ref(),
                early(matches!(addr, Address::Unix(_))),
            )
            .await?;
            Ok(session)
        }
        Target::Vm(name) => {
            if identity.is_some() {
                bail!("--identity is for agent addresses; for VM {name:?} guestcommd holds the key (see `guestcomm vm credentials`)");
            }
            let client = api::client(api_addr).map_err(|e| anyhow!(api::one_line(&e)))?;
            let path = format!(
                "{}/connect",
                api::vm_path(name).map_err(|e| anyhow!(api::one_line(&e)))?
            );
            let early = early(client.is_unix());
            // With a request to send, the daemon's answer to the upgrade is
            // read with the stream, after the request went out.
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
            .map_err(|e| anyhow!(api::one_line(&e)))?;
            let peer = format!("VM {name} through guestcommd");
            guestcomm_client::handshake_then(stream, &peer, &client_name, None, early)
                .await
                .map_err(|e| match early_upgrade::api_error(&e) {
                    // The daemon refused the upgrade: its one line, as when
                    // the answer is awaited first.
                    Some(refusal) => anyhow!(api::one_line(refusal)),
                    None => e.into(),
                })
        }
    }
}
