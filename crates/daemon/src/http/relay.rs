//! The relays' routes: `POST /v1/vms/{name}/connect` (a guestcomm session
//! with the VM's agent, for exec and cp) and `POST
//! /v1/vms/{name}/services/{id}/connect` (a guest program's port). Each
//! checks the `Upgrade` asked for, opens its relay (module `relay`: the VM,
//! admission, a relay slot, the guest reached), answers `101` and hands the
//! upgraded connection over; the relay audits the rest.

use std::future::Future;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Request, State as AxumState};
use axum::response::Response;
use guestcomm_api::{FRAMED_STREAM_PROTOCOL, UPGRADE_PROTOCOL};
use hyper::header::{CONNECTION, UPGRADE};
use hyper::StatusCode;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::access::Authorized;
use crate::caller::Caller;
use crate::error::Error;
use crate::ops::services::parse_id;
use crate::relay::{self, Framing};
use crate::state::State;

/// `POST /v1/vms/{name}/connect` with `Upgrade: guestcomm`.
pub(super) async fn connect(
    AxumState(state): AxumState<Arc<State>>,
    Path(name): Path<String>,
    mut req: Request,
) -> Result<Response, Error> {
    let protocol = require_upgrade_to(&req, &[UPGRADE_PROTOCOL])?;
    let session = relay::open_session(state, &name, caller_of(&req)).await?;
    session.start(upgraded(&mut req));
    switching_to(protocol)
}

/// `POST /v1/vms/{name}/services/{id}/connect` with `Upgrade: guestcomm`
/// (raw bytes) or `guestcomm-framed` (the guest's bytes in frames).
pub(super) async fn connect_service(
    AxumState(state): AxumState<Arc<State>>,
    Path((name, id)): Path<(String, String)>,
    mut req: Request,
) -> Result<Response, Error> {
    let protocol = require_upgrade_to(&req, &[FRAMED_STREAM_PROTOCOL, UPGRADE_PROTOCOL])?;
    let caller = caller_of(&req);
    let id = parse_id(&id)?;
    let stream = relay::open_service_stream(state, name, id, caller).await?;
    let framing = if protocol == FRAMED_STREAM_PROTOCOL {
        Framing::Frames
    } else {
        Framing::Raw
    };
    stream.start(framing, upgraded(&mut req));
    switching_to(protocol)
}

/// The caller [`authorize`](super::authorize::authorize) identified.
fn caller_of(req: &Request) -> Caller {
    req.extensions()
        .get::<Authorized>()
        .map(|a| a.caller)
        .unwrap_or_default()
}

/// Refuses a request that does not ask for one of `protocols`; returns the
/// one asked for.
fn require_upgrade_to(req: &Request, protocols: &[&'static str]) -> Result<&'static str, Error> {
    let asked = req.headers().get(UPGRADE).and_then(|v| v.to_str().ok());
    let chosen = asked.and_then(|v| {
        protocols
            .iter()
            .find(|p| v.eq_ignore_ascii_case(p))
            .copied()
    });
    chosen.ok_or_else(|| {
        Error::BadRequest(format!(
            "this endpoint needs `Connection: Upgrade` and `Upgrade: {UPGRADE_PROTOCOL}`"
        ))
    })
}

/// The caller's connection once the `101` is sent, as a byte stream.
fn upgraded(
    req: &mut Request,
) -> impl Future<Output = Result<impl AsyncRead + AsyncWrite + Unpin + Send + 'static, hyper::Error>>
       + Send
       + 'static {
    let upgrade = hyper::upgrade::on(req);
    async move { upgrade.await.map(TokioIo::new) }
}

/// The `101` answer to `protocol`, which starts a relay.
fn switching_to(protocol: &'static str) -> Result<Response, Error> {
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(CONNECTION, "upgrade")
        .header(UPGRADE, protocol)
        .body(Body::empty())
        .map_err(|e| Error::Internal(e.into()))
}
