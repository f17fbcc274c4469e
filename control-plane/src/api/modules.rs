//! HTTP endpoints of the built-in module store: `PUT /skiff/v1/modules/NAME:TAG` (upload),
//! `GET /skiff/v1/modules/NAME:TAG` (resolve to a digest), `GET /skiff/v1/blobs/sha256:HEX`.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};

use super::error::{ApiError, ApiResult};
use super::{read_body, AppState};
use crate::modules::ModuleError;

use crate::modules::MAX_MODULE;

fn split(reference: &str) -> ApiResult<(String, String)> {
    match skiff_common::image::ImageRef::parse(reference) {
        Ok(skiff_common::image::ImageRef::Local { name, tag }) => Ok((name, tag)),
        Ok(_) => Err(ApiError::BadRequest(format!(
            "{reference:?} is not a NAME:TAG reference of the built-in module store"
        ))),
        Err(e) => Err(ApiError::BadRequest(e.to_string())),
    }
}

fn map(e: ModuleError) -> ApiError {
    match e {
        ModuleError::NotWasm => ApiError::BadRequest(e.to_string()),
        ModuleError::NotFound(what) => ApiError::NotFound {
            resource: "modules".into(),
            name: what,
        },
        other => ApiError::Internal(other.to_string()),
    }
}

pub(super) async fn push(
    State(state): State<Arc<AppState>>,
    Path(reference): Path<String>,
    body: Body,
) -> ApiResult<Response> {
    let (name, tag) = split(&reference)?;
    let bytes = read_body(body, MAX_MODULE).await?;
    let desc = state.modules.push(&name, &tag, bytes).await.map_err(map)?;
    tracing::info!(module = %format!("{name}:{tag}"), digest = %desc.digest, size = desc.size, "module pushed");
    Ok((axum::http::StatusCode::CREATED, axum::Json(desc)).into_response())
}

pub(super) async fn resolve(
    State(state): State<Arc<AppState>>,
    Path(reference): Path<String>,
) -> ApiResult<Response> {
    let (name, tag) = split(&reference)?;
    let desc = state.modules.resolve(&name, &tag).await.map_err(map)?;
    Ok(axum::Json(desc).into_response())
}

/// `?local=true`: this server's own copy only (what a peer server asks, so no request goes
/// round between servers).
#[derive(serde::Deserialize)]
pub(super) struct BlobQuery {
    #[serde(default)]
    local: bool,
}

pub(super) async fn blob(
    State(state): State<Arc<AppState>>,
    Path(digest): Path<String>,
    axum::extract::Query(q): axum::extract::Query<BlobQuery>,
) -> ApiResult<Response> {
    let bytes = state.modules.blob(&digest, q.local).await.map_err(map)?;
    Ok(([(header::CONTENT_TYPE, "application/wasm")], bytes).into_response())
}
