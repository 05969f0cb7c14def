//! The HTTP/JSON API on the Unix socket (routes in [`router`]).
//!
//! The handlers, one file per resource (`vms`, `services`, `integration`,
//! `policy`, `audit`, `openapi`, `metrics`), decode their request, call an operation of
//! [`crate::ops`] and encode the answer; `relay` opens a relay
//! ([`crate::relay`]) and hands it the upgraded connection. Each returns `Result<_, Error>`, and
//! [`status`] is the one place where an error's kind becomes an HTTP status,
//! and the body is always an [`ErrorBody`] with the whole error chain. Every
//! route passes through [`authorize::authorize`] first: the caller's role,
//! then the audit log.

mod audit;
mod authorize;
mod integration;
pub(crate) mod metrics;
mod openapi;
mod policy;
mod relay;
pub(crate) mod server;
mod services;
pub(crate) mod tls_listener;
mod vms;

use std::sync::Arc;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use guestcomm_api::{ApiErrorCode, ErrorBody};
use guestcomm_protocol::error_chain;

use crate::error::{Error, ErrorKind, ErrorText};
use crate::state::State;

/// The HTTP status and stable code of every kind of error: the one mapping.
pub(crate) fn status(kind: ErrorKind) -> (StatusCode, ApiErrorCode) {
    match kind {
        ErrorKind::NotFound => (StatusCode::NOT_FOUND, ApiErrorCode::NotFound),
        ErrorKind::Conflict => (StatusCode::CONFLICT, ApiErrorCode::Conflict),
        ErrorKind::Builtin => (StatusCode::CONFLICT, ApiErrorCode::BuiltinService),
        ErrorKind::InvalidArgument => (StatusCode::BAD_REQUEST, ApiErrorCode::InvalidArgument),
        ErrorKind::Forbidden => (StatusCode::FORBIDDEN, ApiErrorCode::PermissionDenied),
        ErrorKind::PolicyDenied => (StatusCode::FORBIDDEN, ApiErrorCode::PolicyDenied),
        ErrorKind::ServiceDisabled => (StatusCode::FORBIDDEN, ApiErrorCode::ServiceDisabled),
        ErrorKind::AgentUnreachable => (StatusCode::BAD_GATEWAY, ApiErrorCode::AgentUnreachable),
        ErrorKind::GuestUnreachable => (StatusCode::BAD_GATEWAY, ApiErrorCode::GuestUnreachable),
        ErrorKind::AgentFailed => (StatusCode::BAD_GATEWAY, ApiErrorCode::AgentFailed),
        ErrorKind::Unsupported => (
            StatusCode::NOT_IMPLEMENTED,
            ApiErrorCode::UnsupportedRequest,
        ),
        ErrorKind::LimitReached => (StatusCode::CONFLICT, ApiErrorCode::ResourceLimit),
        ErrorKind::Busy => (StatusCode::SERVICE_UNAVAILABLE, ApiErrorCode::ResourceLimit),
        ErrorKind::Internal => (StatusCode::INTERNAL_SERVER_ERROR, ApiErrorCode::Internal),
    }
}

impl From<JsonRejection> for Error {
    fn from(e: JsonRejection) -> Self {
        Self::BadRequest(e.body_text())
    }
}

impl From<QueryRejection> for Error {
    fn from(e: QueryRejection) -> Self {
        Self::BadRequest(e.body_text())
    }
}

/// Unknown paths, and known paths with another method.
async fn no_route(method: axum::http::Method, uri: axum::http::Uri) -> Error {
    Error::NoRoute {
        method: method.to_string(),
        path: uri.path().to_string(),
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let kind = self.kind();
        let (status, code) = status(kind);
        let mut chain = vec![self.to_string()];
        let mut source = std::error::Error::source(&self);
        while let Some(cause) = source {
            chain.push(cause.to_string());
            source = cause.source();
        }
        if status.is_server_error() {
            tracing::warn!(error = %error_chain(&self), "API call failed");
        }
        let required_role = self.required_role();
        let body = ErrorBody {
            code,
            error: error_chain(&self),
            chain,
            required_role,
        };
        let mut response = (status, Json(body.clone())).into_response();
        response.extensions_mut().insert(ErrorText(body.error));
        response.extensions_mut().insert(kind);
        response
    }
}

/// Every route of the API.
pub(crate) fn router(state: Arc<State>) -> Router {
    Router::new()
        .route("/openapi.json", get(openapi::openapi))
        .route("/metrics", get(metrics::metrics))
        .route("/v1/vms", get(vms::list_vms).post(vms::add_vm))
        .route(
            "/v1/vms/{name}",
            get(vms::show_vm)
                .delete(vms::remove_vm)
                .patch(vms::update_vm),
        )
        .route("/v1/vms/{name}/connect", post(relay::connect))
        .route("/v1/vms/{name}/credentials", get(vms::vm_credentials))
        .route("/v1/vms/{name}/services", get(services::vm_services))
        .route(
            "/v1/vms/{name}/integration-services",
            get(integration::integration_services),
        )
        .route("/v1/vms/{name}/info", get(integration::info))
        .route("/v1/vms/{name}/time", get(integration::time))
        .route("/v1/vms/{name}/time/sync", post(integration::time_sync))
        .route("/v1/vms/{name}/kvp/{pool}", get(integration::kvp_list))
        .route(
            "/v1/vms/{name}/kvp/{pool}/{key}",
            get(integration::kvp_get)
                .put(integration::kvp_put)
                .delete(integration::kvp_delete),
        )
        .route("/v1/vms/{name}/shutdown", post(integration::shutdown))
        .route("/v1/vms/{name}/fs", get(integration::fs_status))
        .route("/v1/vms/{name}/fs/freeze", post(integration::fs_freeze))
        .route("/v1/vms/{name}/fs/thaw", post(integration::fs_thaw))
        .route(
            "/v1/vms/{name}/services/{id}/RequestStateChange",
            post(services::request_state_change),
        )
        .route(
            "/v1/vms/{name}/services/{id}/connect",
            post(relay::connect_service),
        )
        .route(
            "/v1/vms/{name}/services/{id}/{method}",
            post(services::start_stop_service),
        )
        .route(
            "/v1/services",
            get(services::list_services).post(services::register),
        )
        .route(
            "/v1/services/{id}",
            axum::routing::delete(services::unregister),
        )
        .route("/v1/services/{id}/policy", put(services::set_policy))
        .route("/v1/services/instances", get(services::all_instances))
        .route("/v1/vms/{name}/policy", get(policy::show).put(policy::set))
        .route("/v1/audit", get(audit::audit_records))
        .route("/v1/audit/verify", get(audit::audit_verify))
        .route("/cimom", post(crate::wbem::cimom))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            authorize::authorize,
        ))
        .fallback(no_route)
        .method_not_allowed_fallback(no_route)
        .with_state(state)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreError;
    use guestcomm_protocol::integration::{KvpPool, KvpSide};
    use guestcomm_protocol::{ErrorCode, ErrorFrame};

    #[test]
    fn every_kind_of_error_has_its_status_and_code() {
        let cases = [
            (ErrorKind::NotFound, 404, "not_found"),
            (ErrorKind::Conflict, 409, "conflict"),
            (ErrorKind::Builtin, 409, "builtin_service"),
            (ErrorKind::InvalidArgument, 400, "invalid_argument"),
            (ErrorKind::Forbidden, 403, "permission_denied"),
            (ErrorKind::PolicyDenied, 403, "policy_denied"),
            (ErrorKind::ServiceDisabled, 403, "service_disabled"),
            (ErrorKind::AgentUnreachable, 502, "agent_unreachable"),
            (ErrorKind::GuestUnreachable, 502, "guest_unreachable"),
            (ErrorKind::AgentFailed, 502, "agent_failed"),
            (ErrorKind::Unsupported, 501, "unsupported_request"),
            (ErrorKind::LimitReached, 409, "resource_limit"),
            (ErrorKind::Busy, 503, "resource_limit"),
            (ErrorKind::Internal, 500, "internal"),
        ];
        for (kind, code, name) in cases {
            let (status, wire) = status(kind);
            assert_eq!((status.as_u16(), wire.as_str()), (code, name), "{kind:?}");
        }
        // openapi.json lists exactly the codes the daemon sends.
        let doc: serde_json::Value = serde_json::from_str(openapi::OPENAPI).unwrap();
        let listed = &doc["components"]["schemas"]["ErrorBody"]["properties"]["code"]["enum"];
        let mut documented: Vec<&str> = listed
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap())
            .collect();
        let mut sent: Vec<&str> = cases.iter().map(|(_, _, name)| *name).collect();
        documented.sort_unstable();
        sent.sort_unstable();
        sent.dedup();
        assert_eq!(documented, sent);
    }

    #[test]
    fn agent_refusals_keep_their_meaning_as_http_statuses() {
        let refused = |code| Error::Refused {
            vm: "web1".into(),
            frame: ErrorFrame::new(code, "x"),
        };
        let cases = [
            (ErrorCode::InvalidArgument, 400),
            (ErrorCode::NotFound, 404),
            (ErrorCode::PermissionDenied, 403),
            (ErrorCode::ResourceLimit, 409),
            (ErrorCode::UnsupportedRequest, 501),
            (ErrorCode::Io, 502),
        ];
        for (code, status) in cases {
            assert_eq!(
                super::status(refused(code).kind()).0.as_u16(),
                status,
                "{code}"
            );
        }
        let read_only = Error::from(StoreError::Kvp(
            guestcomm_protocol::integration::KvpError::ReadOnly {
                pool: KvpPool::Guest,
                side: KvpSide::Host,
            },
        ));
        assert_eq!(
            status(read_only.kind()),
            (StatusCode::FORBIDDEN, ApiErrorCode::PermissionDenied)
        );
        assert_eq!(refused(ErrorCode::NotFound).to_string(), "VM web1: x");
    }
}
