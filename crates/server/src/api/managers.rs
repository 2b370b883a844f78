//! Container-manager routes. The rules (secrets sealed apart and redacted, identical re-PUT,
//! managers in use) are in `domain::managers`.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use domain::managers;
use model::{ContainerManagerConfig, ContainerManagerRequest};

use super::{body_fields, url_name};
use crate::error::ApiResult;
use crate::state::AppState;

/// `GET /api/v0/containermanagers`
#[utoipa::path(get, path = "/api/v0/containermanagers", tag = "container managers",
    operation_id = "list_container_managers",
    responses((status = 200, body = Vec<String>, description = "Container manager names")))]
pub async fn list(State(state): State<AppState>) -> ApiResult<Json<Vec<String>>> {
    Ok(Json(managers::list(&state.domain).await?))
}

/// `GET /api/v0/containermanager/{name}` — secret options are shown as `<redacted>`.
#[utoipa::path(get, path = "/api/v0/containermanager/{name}", tag = "container managers",
    operation_id = "get_container_manager",
    params(("name" = String, Path)),
    responses((status = 200, body = ContainerManagerConfig), (status = 404, body = model::ErrorBody)))]
pub async fn get_one(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<Json<ContainerManagerConfig>> {
    let name = url_name("name", &name)?;
    Ok(Json(managers::get(&state.domain, &name).await?))
}

/// `PUT /api/v0/containermanager/{name}` — create; the same request again without secrets → 201
/// without a write; anything else (a different one, or one carrying a secret) → 409.
#[utoipa::path(put, path = "/api/v0/containermanager/{name}", tag = "container managers",
    operation_id = "put_container_manager",
    params(("name" = String, Path)),
    request_body(content = super::bodies::ContainerManagerBody, description = "{\"type\": \"openshift\"|\"kubernetes\"|\"trivial\", \"options\": {\"server_url\": ..., \"token\": ...}}"),
    responses((status = 201, body = ContainerManagerConfig), (status = 400, body = model::ErrorBody), (status = 409, body = model::ErrorBody)))]
pub async fn put(
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<ContainerManagerConfig>)> {
    let name = url_name("name", &name)?;
    let cfg = ContainerManagerRequest::from_json(&name, &body_fields(&body)?)?;
    let cfg = managers::put(&state.domain, cfg).await?;
    Ok((StatusCode::CREATED, Json(cfg)))
}

/// `DELETE /api/v0/containermanager/{name}`
#[utoipa::path(delete, path = "/api/v0/containermanager/{name}", tag = "container managers",
    operation_id = "delete_container_manager",
    params(("name" = String, Path)),
    responses((status = 200, body = Vec<String>, description = "[]"), (status = 404, body = model::ErrorBody),
              (status = 409, body = model::ErrorBody, description = "in use by a cluster")))]
pub async fn delete(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<Json<Vec<String>>> {
    let name = url_name("name", &name)?;
    managers::delete(&state.domain, &name).await?;
    Ok(Json(vec![]))
}
