//! WBEM: the management model over CIM-XML (DMTF DSP0200 operations,
//! DSP0201 encoding) at `POST /cimom`, so that existing CIM clients
//! (pywbem, wbemcli, ...) manage guestcomm as they manage Hyper-V.
//!
//! ```text
//! POST /cimom (API socket: role by SO_PEERCRED, access::authorize;
//!              --wbem tcp://127.0.0.1:PORT: the role of --wbem-role)
//!   -> body over 1 MiB: 413          (Content-Length, then a bounded read)
//!   -> guestcomm_cim::xml::request    not XML / not CIM-XML: 400 + CIMError header
//!   -> namespace root/virtualization/v2, else CIM_ERR_INVALID_NAMESPACE
//!   -> operations: classes from the repository, instances from the state
//!      (objects; each VM's devices: components; their settings:
//!      settings), methods (methods),
//!      CopyFilesToGuest jobs (jobs)
//!   -> a CIM-XML answer, failures as ERROR with their CIM status
//! ```
//!
//! Reads need `viewer`; every method `admin` (as the JSON API's
//! RequestStateChange; CopyFilesToGuest reads host files as guestcommd).
//! Methods are audited (`wbem.invoke`, and `cp.to_guest` for each job).

mod components;
pub(crate) mod jobs;
mod management;
mod methods;
pub(crate) mod objects;
mod operations;
mod refusal;
mod settings;

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use axum::body::Body;
use axum::extract::{Request, State as AxumState};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Router};
use guestcomm_api::Role;
use guestcomm_cim::xml::request::{parse_request, CallKind};
use guestcomm_cim::xml::{response, XmlError, MAX_REQUEST_BYTES};
use guestcomm_cim::{CimError, CimStatus, MofError, Repository, NAMESPACE};

use crate::access::Authorized;
use crate::caller::Caller;
use crate::limits::{MAX_WBEM_DRAIN_BYTES, WBEM_DRAIN_TIMEOUT_MS};
use crate::state::State;

/// The class repository, parsed once from the built-in MOF.
fn repository() -> Result<&'static Repository, CimError> {
    static REPO: OnceLock<Result<Repository, MofError>> = OnceLock::new();
    REPO.get_or_init(Repository::builtin).as_ref().map_err(|e| {
        CimError::new(
            CimStatus::Failed,
            format!("the class repository is broken: {e}"),
        )
    })
}

/// An HTTP answer with a CIM-XML body.
fn xml_answer(body: String) -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/xml; charset=\"utf-8\""),
            ),
            (
                header::HeaderName::from_static("cimoperation"),
                HeaderValue::from_static("MethodResponse"),
            ),
        ],
        body,
    )
        .into_response()
}

/// A refusal before any CIM operation (DSP0200: HTTP status, `CIMError`
/// header), with the reason as text.
fn http_refusal(status: StatusCode, cim_error: &'static str, reason: String) -> Response {
    tracing::info!(%reason, "WBEM request refused");
    (
        status,
        [(
            header::HeaderName::from_static("cimerror"),
            HeaderValue::from_static(cim_error),
        )],
        reason,
    )
        .into_response()
}

/// `POST /cimom`: one CIM-XML operation.
pub(crate) async fn cimom(
    AxumState(state): AxumState<Arc<State>>,
    Extension(auth): Extension<Authorized>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let body = match read_bounded(body, declared).await {
        Ok(body) => body,
        Err(size) => {
            let e = XmlError::TooLarge(size, MAX_REQUEST_BYTES);
            return http_refusal(
                StatusCode::PAYLOAD_TOO_LARGE,
                e.cim_error_header(),
                e.to_string(),
            );
        }
    };
    let request = match parse_request(&body) {
        Ok(r) => r,
        Err(e) => {
            return http_refusal(StatusCode::BAD_REQUEST, e.cim_error_header(), e.to_string())
        }
    };
    let call = &request.call;
    let repo = repository().and_then(|repo| {
        if call.namespace.eq_ignore_ascii_case(NAMESPACE) {
            Ok(repo)
        } else {
            Err(CimError::new(
                CimStatus::InvalidNamespace,
                format!(
                    "no namespace {:?}: guestcomm serves {NAMESPACE}",
                    call.namespace
                ),
            ))
        }
    });
    let failed = |e: &CimError| {
        tracing::debug!(operation = %call.name, error = %e, "WBEM operation failed");
    };
    let (id, name) = (&request.id, &call.name);
    let body = match (&call.kind, repo) {
        (CallKind::Intrinsic, Ok(repo)) => {
            let result = operations::run(&state, repo, call).await;
            if let Err(e) = &result {
                failed(e);
            }
            response::imethod_response(id, name, result.as_deref())
        }
        (CallKind::Intrinsic, Err(e)) => {
            failed(&e);
            response::imethod_response(id, name, Err(&e))
        }
        (_, Ok(repo)) => {
            let result = methods::invoke(&state, repo, &auth, call).await;
            if let Err(e) = &result {
                failed(e);
            }
            response::method_response(id, name, NAMESPACE, result.as_ref())
        }
        (_, Err(e)) => {
            failed(&e);
            response::method_response(id, name, NAMESPACE, Err(&e))
        }
    };
    xml_answer(body)
}

/// The request body, at most [`MAX_REQUEST_BYTES`]; a larger one (by its
/// Content-Length or as it streams) is `Err` with its size as far as known.
/// The rest of a refused body is read and dropped, up to
/// [`MAX_WBEM_DRAIN_BYTES`] for [`WBEM_DRAIN_TIMEOUT_MS`], so that the client
/// can read the refusal (closing with unread data would reset the
/// connection under it); past that the connection is closed.
async fn read_bounded(body: Body, declared: Option<u64>) -> Result<Vec<u8>, usize> {
    use futures::StreamExt;
    let mut stream = body.into_data_stream();
    let mut kept = Vec::new();
    let mut seen = 0usize;
    let too_large = declared.is_some_and(|n| n > MAX_REQUEST_BYTES as u64);
    if !too_large {
        while let Some(Ok(chunk)) = stream.next().await {
            seen = seen.saturating_add(chunk.len());
            if seen > MAX_REQUEST_BYTES {
                break;
            }
            kept.extend_from_slice(&chunk);
        }
        if seen <= MAX_REQUEST_BYTES {
            return Ok(kept);
        }
    }
    let drain = async {
        while let Some(Ok(chunk)) = stream.next().await {
            seen = seen.saturating_add(chunk.len());
            if seen > MAX_WBEM_DRAIN_BYTES {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(
        std::time::Duration::from_millis(WBEM_DRAIN_TIMEOUT_MS),
        drain,
    )
    .await;
    let size = declared.map_or(seen, |n| usize::try_from(n).unwrap_or(usize::MAX));
    Err(size)
}

/// The router of a `--wbem tcp://` listener: `/cimom` only, every caller
/// with `role` (plain HTTP on loopback identifies nobody: whoever can
/// connect to the port gets that role, `viewer` unless configured).
pub(crate) fn tcp_router(state: Arc<State>, role: Role) -> Router {
    Router::new()
        .route("/cimom", axum::routing::post(cimom))
        .route_layer(axum::middleware::from_fn(
            move |req: Request, next: Next| tcp_caller(role, req, next),
        ))
        .with_state(state)
}

/// Gives each TCP request the listener's role.
async fn tcp_caller(role: Role, mut req: Request, next: Next) -> Response {
    let peer = req
        .extensions()
        .get::<axum::extract::ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    tracing::debug!(?peer, "WBEM request over TCP");
    req.extensions_mut().insert(Authorized {
        caller: Caller::default(),
        role,
        grants: crate::access::Grants {
            host: Some(role),
            vms: Vec::new(),
        },
    });
    next.run(req).await
}

/// Checks a `--wbem` address: loopback only (no TLS and no caller identity
/// on this listener, so it must not leave the host).
pub(crate) fn check_listen_address(addr: &SocketAddr) -> Result<(), String> {
    if addr.ip().is_loopback() {
        Ok(())
    } else {
        Err(format!(
            "--wbem tcp://{addr}: the WBEM listener is plain HTTP and serves loopback only (127.0.0.1 or [::1]); remote CIM clients reach guestcomm through an SSH tunnel or a TLS proxy"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_addresses_may_serve_wbem() {
        for ok in ["127.0.0.1:5988", "[::1]:5988", "127.0.0.2:1"] {
            assert!(check_listen_address(&ok.parse().unwrap()).is_ok(), "{ok}");
        }
        for bad in ["0.0.0.0:5988", "10.0.0.1:5988", "[::]:5988"] {
            let err = check_listen_address(&bad.parse().unwrap()).unwrap_err();
            assert!(err.contains("loopback only"), "{err}");
        }
    }
}
