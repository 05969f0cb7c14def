//! What every relay's HTTP handler does before it upgrades: the caller,
//! the `Upgrade` header asked for, a relay slot, and the `101` answer.

use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use hyper::header::{CONNECTION, UPGRADE};
use hyper::StatusCode;
use tokio::sync::OwnedSemaphorePermit;
use tracing::warn;

use crate::access::Authorized;
use crate::caller::Caller;
use crate::error::Error;
use crate::state::State;

/// The caller [`authorize`](crate::http) identified.
pub(crate) fn caller_of(req: &Request) -> Caller {
    req.extensions()
        .get::<Authorized>()
        .map(|a| a.caller)
        .unwrap_or_default()
}

/// Refuses a request that does not ask for the guestcomm upgrade.
pub(crate) fn require_upgrade(req: &Request) -> Result<(), Error> {
    require_upgrade_to(req, &[guestcomm_api::UPGRADE_PROTOCOL]).map(drop)
}

/// [`require_upgrade`] to one of `protocols`; returns the one asked for.
pub(crate) fn require_upgrade_to(
    req: &Request,
    protocols: &[&'static str],
) -> Result<&'static str, Error> {
    let asked = req.headers().get(UPGRADE).and_then(|v| v.to_str().ok());
    let chosen = asked.and_then(|v| {
        protocols
            .iter()
            .find(|p| v.eq_ignore_ascii_case(p))
            .copied()
    });
    if let Some(protocol) = chosen {
        Ok(protocol)
    } else {
        Err(Error::BadRequest(format!(
            "this endpoint needs `Connection: Upgrade` and `Upgrade: {}`",
            guestcomm_api::UPGRADE_PROTOCOL
        )))
    }
}

/// A relay slot, or 503 at [`MAX_RELAYS`](crate::limits::MAX_RELAYS).
pub(crate) fn acquire_relay(state: &State, vm: &str) -> Result<OwnedSemaphorePermit, Error> {
    state.relays.clone().try_acquire_owned().map_err(|_| {
        warn!(vm, "relay limit reached, refusing a connection");
        Error::Busy(format!(
            "guestcommd is relaying its maximum of {} connections; retry later",
            crate::limits::MAX_RELAYS
        ))
    })
}

/// The 101 answer that starts a relay.
pub(crate) fn switching_protocols() -> Result<Response, Error> {
    switching_to(guestcomm_api::UPGRADE_PROTOCOL)
}

/// The 101 answer to `protocol`.
pub(crate) fn switching_to(protocol: &'static str) -> Result<Response, Error> {
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(CONNECTION, "upgrade")
        .header(UPGRADE, protocol)
        .body(Body::empty())
        .map_err(|e| Error::Internal(e.to_string()))
}
