//! Cluster routes: the cluster records and their membership. The rules (a host in one
//! cluster at most, joins and leaves rewriting the host, refusal of clusters that cannot work)
//! are in `domain::clusters`.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use domain::clusters;
use model::{ClusterRequest, ClusterView, MembershipRequest};

use super::{body_fields, url_address, url_name};
use crate::error::ApiResult;
use crate::state::AppState;

/// `GET /api/v0/clusters`
#[utoipa::path(get, path = "/api/v0/clusters", tag = "clusters",
    operation_id = "list_clusters",
    responses((status = 200, body = Vec<String>, description = "Cluster names")))]
pub async fn list(State(state): State<AppState>) -> ApiResult<Json<Vec<String>>> {
    Ok(Json(clusters::list(&state.domain).await?))
}

/// `GET /api/v0/cluster/{name}`
#[utoipa::path(get, path = "/api/v0/cluster/{name}", tag = "clusters",
    operation_id = "get_cluster",
    params(("name" = String, Path)),
    responses((status = 200, body = ClusterView), (status = 404, body = model::ErrorBody)))]
pub async fn get_one(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<Json<ClusterView>> {
    let name = url_name("name", &name)?;
    Ok(Json(clusters::get(&state.domain, &name).await?))
}

/// `PUT /api/v0/cluster/{name}` — create, or update the given fields (members and operations
/// are kept).
#[utoipa::path(put, path = "/api/v0/cluster/{name}", tag = "clusters",
    operation_id = "put_cluster",
    params(("name" = String, Path)),
    request_body(content = super::bodies::ClusterBody, description = "{\"network\": \"default\", \"container_manager\": \"\"}"),
    responses((status = 201, body = ClusterView), (status = 400, body = model::ErrorBody)))]
pub async fn put(
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<ClusterView>)> {
    let name = url_name("name", &name)?;
    let req = ClusterRequest::from_json(&body_fields(&body)?)?;
    let view = clusters::put(&state.domain, &name, req).await?;
    Ok((StatusCode::CREATED, Json(view)))
}

/// `DELETE /api/v0/cluster/{name}` — also deletes its operation records.
#[utoipa::path(delete, path = "/api/v0/cluster/{name}", tag = "clusters",
    operation_id = "delete_cluster",
    params(("name" = String, Path)),
    responses((status = 200, body = Vec<String>, description = "[]"), (status = 404, body = model::ErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<Json<Vec<String>>> {
    let name = url_name("name", &name)?;
    clusters::delete(&state.domain, &name).await?;
    Ok(Json(vec![]))
}

/// `GET /api/v0/cluster/{name}/hosts`
#[utoipa::path(get, path = "/api/v0/cluster/{name}/hosts", tag = "clusters",
    operation_id = "list_cluster_members",
    params(("name" = String, Path)),
    responses((status = 200, body = Vec<String>, description = "Member addresses"), (status = 404, body = model::ErrorBody)))]
pub async fn members(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<Json<Vec<String>>> {
    let name = url_name("name", &name)?;
    Ok(Json(clusters::members(&state.domain, &name).await?))
}

/// `PUT /api/v0/cluster/{name}/hosts` — replace the member list if it still equals `old`.
#[utoipa::path(put, path = "/api/v0/cluster/{name}/hosts", tag = "clusters",
    operation_id = "set_cluster_members",
    params(("name" = String, Path)),
    request_body(content = super::bodies::MembershipBody, description = "{\"old\": [current members], \"new\": [wanted members]}"),
    responses((status = 200, body = ClusterView), (status = 400, body = model::ErrorBody),
              (status = 404, body = model::ErrorBody), (status = 405, body = model::ErrorBody),
              (status = 409, body = model::ErrorBody, description = "old does not match the current members")))]
pub async fn set_members(
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult<Json<ClusterView>> {
    let name = url_name("name", &name)?;
    let req = MembershipRequest::from_json(&body_fields(&body)?)?;
    Ok(Json(
        clusters::set_members(&state.domain, &name, req).await?,
    ))
}

/// `GET /api/v0/cluster/{name}/hosts/{address}` — 200 `[address]` if a member, else 404.
#[utoipa::path(get, path = "/api/v0/cluster/{name}/hosts/{address}", tag = "clusters",
    operation_id = "get_cluster_member",
    params(("name" = String, Path), ("address" = String, Path)),
    responses((status = 200, body = Vec<String>), (status = 404, body = model::ErrorBody)))]
pub async fn member(
    State(state): State<AppState>,
    Path((name, address)): Path<(String, String)>,
) -> ApiResult<Json<Vec<String>>> {
    let name = url_name("name", &name)?;
    let address = url_address(&address)?;
    Ok(Json(
        clusters::member(&state.domain, &name, &address).await?,
    ))
}

/// `PUT /api/v0/cluster/{name}/hosts/{address}` — idempotent join.
#[utoipa::path(put, path = "/api/v0/cluster/{name}/hosts/{address}", tag = "clusters",
    operation_id = "join_cluster",
    params(("name" = String, Path), ("address" = String, Path)),
    responses((status = 200, body = Vec<String>), (status = 404, body = model::ErrorBody),
              (status = 405, body = model::ErrorBody, description = "host not active/disassociated"),
              (status = 409, body = model::ErrorBody, description = "host is in another cluster")))]
pub async fn join(
    State(state): State<AppState>,
    Path((name, address)): Path<(String, String)>,
) -> ApiResult<Json<Vec<String>>> {
    let name = url_name("name", &name)?;
    let address = url_address(&address)?;
    Ok(Json(clusters::join(&state.domain, &name, &address).await?))
}

/// `DELETE /api/v0/cluster/{name}/hosts/{address}` — idempotent leave.
#[utoipa::path(delete, path = "/api/v0/cluster/{name}/hosts/{address}", tag = "clusters",
    operation_id = "leave_cluster",
    params(("name" = String, Path), ("address" = String, Path)),
    responses((status = 200, body = Vec<String>, description = "[]"), (status = 404, body = model::ErrorBody)))]
pub async fn leave(
    State(state): State<AppState>,
    Path((name, address)): Path<(String, String)>,
) -> ApiResult<Json<Vec<String>>> {
    let name = url_name("name", &name)?;
    let address = url_address(&address)?;
    clusters::leave(&state.domain, &name, &address).await?;
    Ok(Json(vec![]))
}
