//! The integration services' routes (`/v1/vms/{name}/info`, `time`, `kvp`,
//! `shutdown`, `fs`, `integration-services`): decode, call
//! [`crate::ops::integration`], encode.

use std::sync::Arc;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State as AxumState};
use axum::Json;
use guestcomm_api::{
    FreezeStatus, FsRequest, GuestCommunicationService, GuestInfo, KvpEntries, KvpPair, KvpValue,
    KvpWrite, ShutdownAnswer, ShutdownRequest, TimeReport,
};
use serde::Deserialize;

use crate::error::Error;
use crate::ops::integration::{self, parse_pool};
use crate::state::State;

/// `GET /v1/vms/{name}/integration-services`: the VM's integration services
/// as objects of guestcomm's Msvm_GuestService subclasses.
pub(super) async fn integration_services(
    AxumState(state): AxumState<Arc<State>>,
    Path(name): Path<String>,
) -> Result<Json<Vec<GuestCommunicationService>>, Error> {
    Ok(Json(integration::integration_services(&state, name).await?))
}

/// `GET /v1/vms/{name}/info`.
pub(super) async fn info(
    AxumState(state): AxumState<Arc<State>>,
    Path(name): Path<String>,
) -> Result<Json<GuestInfo>, Error> {
    Ok(Json(integration::info(&state, name).await?))
}

/// Query of `GET /v1/vms/{name}/time`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TimeQuery {
    samples: Option<u32>,
}

/// `GET /v1/vms/{name}/time`: the guest clock's offset from the host's.
pub(super) async fn time(
    AxumState(state): AxumState<Arc<State>>,
    Path(name): Path<String>,
    query: Result<Query<TimeQuery>, QueryRejection>,
) -> Result<Json<TimeReport>, Error> {
    let Query(q) = query?;
    Ok(Json(integration::time(&state, name, q.samples).await?))
}

/// `POST /v1/vms/{name}/time/sync`: steps the guest clock to the host's.
pub(super) async fn time_sync(
    AxumState(state): AxumState<Arc<State>>,
    Path(name): Path<String>,
    query: Result<Query<TimeQuery>, QueryRejection>,
) -> Result<Json<TimeReport>, Error> {
    let Query(q) = query?;
    Ok(Json(integration::time_sync(&state, name, q.samples).await?))
}

/// `GET /v1/vms/{name}/kvp/{pool}`: the external pool from the database,
/// the others from the agent.
pub(super) async fn kvp_list(
    AxumState(state): AxumState<Arc<State>>,
    Path((name, pool)): Path<(String, String)>,
) -> Result<Json<KvpEntries>, Error> {
    let pool = parse_pool(&pool)?;
    Ok(Json(integration::kvp_list(&state, name, pool).await?))
}

/// `GET /v1/vms/{name}/kvp/{pool}/{key}`.
pub(super) async fn kvp_get(
    AxumState(state): AxumState<Arc<State>>,
    Path((name, pool, key)): Path<(String, String, String)>,
) -> Result<Json<KvpPair>, Error> {
    let pool = parse_pool(&pool)?;
    Ok(Json(integration::kvp_get(&state, name, pool, key).await?))
}

/// `PUT /v1/vms/{name}/kvp/{pool}/{key}`: only the external pool.
pub(super) async fn kvp_put(
    AxumState(state): AxumState<Arc<State>>,
    Path((name, pool, key)): Path<(String, String, String)>,
    body: Result<Json<KvpValue>, JsonRejection>,
) -> Result<Json<KvpWrite>, Error> {
    let Json(KvpValue { value }) = body?;
    let pool = parse_pool(&pool)?;
    Ok(Json(
        integration::kvp_put(&state, name, pool, key, value).await?,
    ))
}

/// `DELETE /v1/vms/{name}/kvp/{pool}/{key}`: only the external pool.
pub(super) async fn kvp_delete(
    AxumState(state): AxumState<Arc<State>>,
    Path((name, pool, key)): Path<(String, String, String)>,
) -> Result<Json<KvpWrite>, Error> {
    let pool = parse_pool(&pool)?;
    Ok(Json(
        integration::kvp_delete(&state, name, pool, key).await?,
    ))
}

/// `POST /v1/vms/{name}/shutdown`: returns when the guest acknowledged.
pub(super) async fn shutdown(
    AxumState(state): AxumState<Arc<State>>,
    Path(name): Path<String>,
    body: Result<Json<ShutdownRequest>, JsonRejection>,
) -> Result<Json<ShutdownAnswer>, Error> {
    let Json(req) = body?;
    Ok(Json(integration::shutdown(&state, name, req).await?))
}

/// `GET /v1/vms/{name}/fs`: what is frozen.
pub(super) async fn fs_status(
    AxumState(state): AxumState<Arc<State>>,
    Path(name): Path<String>,
) -> Result<Json<FreezeStatus>, Error> {
    Ok(Json(integration::fs_status(&state, name).await?))
}

/// `POST /v1/vms/{name}/fs/freeze`.
pub(super) async fn fs_freeze(
    AxumState(state): AxumState<Arc<State>>,
    Path(name): Path<String>,
    body: Result<Json<FsRequest>, JsonRejection>,
) -> Result<Json<FreezeStatus>, Error> {
    let Json(req) = body?;
    Ok(Json(integration::fs_freeze(&state, name, req).await?))
}

/// `POST /v1/vms/{name}/fs/thaw`.
pub(super) async fn fs_thaw(
    AxumState(state): AxumState<Arc<State>>,
    Path(name): Path<String>,
    body: Result<Json<FsRequest>, JsonRejection>,
) -> Result<Json<FreezeStatus>, Error> {
    let Json(req) = body?;
    Ok(Json(integration::fs_thaw(&state, name, req).await?))
}
