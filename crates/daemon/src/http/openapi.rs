//! `GET /openapi.json`: the API's OpenAPI document.

use axum::response::IntoResponse;

/// The OpenAPI document of this API, hand-written.
pub(super) const OPENAPI: &str = include_str!("../openapi.json");

/// `GET /openapi.json`.
pub(super) async fn openapi() -> impl IntoResponse {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        OPENAPI,
    )
}
