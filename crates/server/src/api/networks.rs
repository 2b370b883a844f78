//! Network routes. The rules (the `default` network, networks in use) are in
//! `domain::networks`.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use domain::networks;
use model::{Network, NetworkRequest};

use super::{body_fields, url_name};
use crate::error::ApiResult;
use crate::state::AppState;

/// `GET /api/v0/networks`
#[utoipa::path(get, path = "/api/v0/networks", tag = "networks",
    operation_id = "list_networks",
    responses((status = 200, body = Vec<String>, description = "Network names")))]
pub async fn list(State(state): State<AppState>) -> ApiResult<Json<Vec<String>>> {
    Ok(Json(networks::list(&state.domain).await?))
}

/// `GET /api/v0/network/{name}`
#[utoipa::path(get, path = "/api/v0/network/{name}", tag = "networks",
    operation_id = "get_network",
    params(("name" = String, Path)),
    responses((status = 200, body = Network), (status = 404, body = model::ErrorBody)))]
pub async fn get_one(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<Json<Network>> {
    let name = url_name("name", &name)?;
    Ok(Json(networks::get(&state.domain, &name).await?))
}

/// `PUT /api/v0/network/{name}` — create; identical → 201 without a write; different → 409.
#[utoipa::path(put, path = "/api/v0/network/{name}", tag = "networks",
    operation_id = "put_network",
    params(("name" = String, Path)),
    request_body(content = super::bodies::NetworkBody, description = "{\"type\": \"flannel_etcd\"|\"flannel_server\"|\"flanneld_service\", \"options\": {}}"),
    responses((status = 201, body = Network), (status = 400, body = model::ErrorBody), (status = 409, body = model::ErrorBody)))]
pub async fn put(
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<Network>)> {
    let name = url_name("name", &name)?;
    let network = NetworkRequest::from_json(&name, &body_fields(&body)?)?;
    let network = networks::put(&state.domain, network).await?;
    Ok((StatusCode::CREATED, Json(network)))
}

/// `DELETE /api/v0/network/{name}`
#[utoipa::path(delete, path = "/api/v0/network/{name}", tag = "networks",
    operation_id = "delete_network",
    params(("name" = String, Path)),
    responses((status = 200, body = Vec<String>, description = "[]"), (status = 404, body = model::ErrorBody),
              (status = 409, body = model::ErrorBody, description = "the default network, or in use by a cluster")))]
pub async fn delete(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<Json<Vec<String>>> {
    let name = url_name("name", &name)?;
    networks::delete(&state.domain, &name).await?;
    Ok(Json(vec![]))
}
