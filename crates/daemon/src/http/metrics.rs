//! `GET /metrics`: the Prometheus exposition, on the API (any role) and on
//! the `--metrics` listener, plain HTTP that serves this one route (404 for
//! anything else): read-only counters and gauges, no secrets.

use std::sync::Arc;

use axum::extract::State as AxumState;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::error::Error;
use crate::metrics::Format;
use crate::state::State;

/// `GET /metrics`: OpenMetrics to a client whose `Accept` names it, else
/// the classic text format.
pub(super) async fn metrics(
    AxumState(state): AxumState<Arc<State>>,
    headers: HeaderMap,
) -> Result<Response, Error> {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let format = Format::accepted(accept);
    let text = crate::ops::metrics::exposition(&state, format).await?;
    Ok(([(header::CONTENT_TYPE, format.content_type())], text).into_response())
}

/// The `--metrics` listener's routes: `GET /metrics`, nothing else.
pub(crate) fn listener_router(state: Arc<State>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(not_found)
        .with_state(state)
}

async fn not_found() -> StatusCode {
    StatusCode::NOT_FOUND
}
