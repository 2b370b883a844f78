//! Rolling-operation routes: start, read, cancel, pause and resume a cluster's restart, upgrade
//! or deploy. `domain::operations` writes the record and queues it; clusterexec runs it.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use domain::operations::{self, Control};
use model::{Operation, OperationKind};

use super::{body_fields, url_name};
use crate::error::ApiResult;
use crate::state::AppState;

/// `GET /api/v0/cluster/{name}/restart|upgrade|deploy` — the cluster's last run of that kind.
///
/// The document lists one path per kind (`{operation}` is expanded by `openapi`).
#[utoipa::path(get, path = "/api/v0/cluster/{name}/{operation}", tag = "operations",
    operation_id = "get_operation",
    params(("name" = String, Path, description = "Cluster name"),
           ("operation" = String, Path, description = "restart, upgrade or deploy")),
    responses((status = 200, body = Operation, description = "The operation record: status, per-host progress, failures"),
              (status = 404, body = model::ErrorBody, description = "No such cluster, or no operation of this kind yet")))]
pub async fn get(state: AppState, name: String, kind: OperationKind) -> ApiResult<Json<Operation>> {
    let name = url_name("name", &name)?;
    Ok(Json(operations::get(&state.domain, &name, kind).await?))
}

/// `PUT /api/v0/cluster/{name}/restart|upgrade|deploy` — start a run over the cluster's
/// current members.
#[utoipa::path(put, path = "/api/v0/cluster/{name}/{operation}", tag = "operations",
    operation_id = "start_operation",
    params(("name" = String, Path, description = "Cluster name"),
           ("operation" = String, Path, description = "restart, upgrade or deploy")),
    request_body(content = super::bodies::RestartBody, description = "How the run goes; every field optional (deploy requires version)"),
    responses((status = 201, body = Operation, description = "Started: the new record, every host pending"),
              (status = 400, body = model::ErrorBody, description = "An option is invalid"),
              (status = 404, body = model::ErrorBody, description = "No such cluster"),
              (status = 409, body = model::ErrorBody, description = "An operation is already running or paused on the cluster")))]
pub async fn start(
    state: AppState,
    name: String,
    kind: OperationKind,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<Operation>)> {
    let name = url_name("name", &name)?;
    let fields = body_fields(&body)?;
    let op = operations::start(&state.domain, &name, kind, &fields).await?;
    Ok((StatusCode::CREATED, Json(op)))
}

async fn control(
    state: AppState,
    name: String,
    kind: OperationKind,
    control: Control,
) -> ApiResult<Json<Operation>> {
    let name = url_name("name", &name)?;
    Ok(Json(
        operations::control(&state.domain, &name, kind, control).await?,
    ))
}

/// `DELETE /api/v0/cluster/{name}/restart|upgrade|deploy` — cancel: hosts in flight finish
/// their step, the rest are not touched.
#[utoipa::path(delete, path = "/api/v0/cluster/{name}/{operation}", tag = "operations",
    operation_id = "cancel_operation",
    params(("name" = String, Path, description = "Cluster name"),
           ("operation" = String, Path, description = "restart, upgrade or deploy")),
    responses((status = 200, body = Operation, description = "Cancel requested (status becomes cancelled once the hosts in flight are done)"),
              (status = 404, body = model::ErrorBody, description = "No such cluster or operation"),
              (status = 409, body = model::ErrorBody, description = "The operation already ended")))]
pub async fn cancel(
    state: AppState,
    name: String,
    kind: OperationKind,
) -> ApiResult<Json<Operation>> {
    control(state, name, kind, Control::Cancel).await
}

/// `PUT /api/v0/cluster/{name}/restart|upgrade|deploy/pause` — no new hosts start until resumed.
#[utoipa::path(put, path = "/api/v0/cluster/{name}/{operation}/pause", tag = "operations",
    operation_id = "pause_operation",
    params(("name" = String, Path, description = "Cluster name"),
           ("operation" = String, Path, description = "restart, upgrade or deploy")),
    responses((status = 200, body = Operation, description = "Paused"),
              (status = 404, body = model::ErrorBody, description = "No such cluster or operation"),
              (status = 409, body = model::ErrorBody, description = "The operation already ended")))]
pub async fn pause(
    state: AppState,
    name: String,
    kind: OperationKind,
) -> ApiResult<Json<Operation>> {
    control(state, name, kind, Control::Pause).await
}

/// `PUT /api/v0/cluster/{name}/restart|upgrade|deploy/resume` — continue a paused run.
#[utoipa::path(put, path = "/api/v0/cluster/{name}/{operation}/resume", tag = "operations",
    operation_id = "resume_operation",
    params(("name" = String, Path, description = "Cluster name"),
           ("operation" = String, Path, description = "restart, upgrade or deploy")),
    responses((status = 200, body = Operation, description = "Running again"),
              (status = 404, body = model::ErrorBody, description = "No such cluster or operation"),
              (status = 409, body = model::ErrorBody, description = "The operation already ended")))]
pub async fn resume(
    state: AppState,
    name: String,
    kind: OperationKind,
) -> ApiResult<Json<Operation>> {
    control(state, name, kind, Control::Resume).await
}

/// Registers the routes of one operation kind.
pub fn routes(mut r: super::Routes, kind: OperationKind) -> super::Routes {
    use axum::routing::{get as get_m, put as put_m};
    let base = format!("/api/v0/cluster/{{name}}/{}", kind.as_str());
    let mr = get_m(move |State(s): State<AppState>, Path(n): Path<String>| get(s, n, kind))
        .put(
            move |State(s): State<AppState>, Path(n): Path<String>, body: Bytes| {
                start(s, n, kind, body)
            },
        )
        .delete(move |State(s): State<AppState>, Path(n): Path<String>| cancel(s, n, kind));
    r = r.route(&base, mr);
    r = r.route(
        &format!("{base}/pause"),
        put_m(move |State(s): State<AppState>, Path(n): Path<String>| pause(s, n, kind)),
    );
    r.route(
        &format!("{base}/resume"),
        put_m(move |State(s): State<AppState>, Path(n): Path<String>| resume(s, n, kind)),
    )
}
