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

/// `GET /api/v0/cluster/{name}/restart|upgrade|deploy`
#[utoipa::path(get, path = "/api/v0/cluster/{name}/{operation}", tag = "operations",
    params(("name" = String, Path), ("operation" = String, Path, description = "restart, upgrade or deploy")),
    responses((status = 200, body = Operation), (status = 404, body = model::ErrorBody)))]
pub async fn get(state: AppState, name: String, kind: OperationKind) -> ApiResult<Json<Operation>> {
    let name = url_name("name", &name)?;
    Ok(Json(operations::get(&state.domain, &name, kind).await?))
}

/// `PUT /api/v0/cluster/{name}/restart|upgrade|deploy` — start a run over the cluster's
/// current members.
#[utoipa::path(put, path = "/api/v0/cluster/{name}/{operation}", tag = "operations",
    params(("name" = String, Path), ("operation" = String, Path, description = "restart, upgrade or deploy")),
    request_body(content = Object, description = "optional: batch_size (count or \"N%\"), max_failures, pause_seconds, drain, reboot (upgrade), timeout_seconds; deploy requires version"),
    responses((status = 201, body = Operation), (status = 400, body = model::ErrorBody),
              (status = 404, body = model::ErrorBody), (status = 409, body = model::ErrorBody, description = "an operation is running on the cluster")))]
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

/// `DELETE /api/v0/cluster/{name}/{operation}` (cancel), `PUT .../pause`, `PUT .../resume`.
#[utoipa::path(put, path = "/api/v0/cluster/{name}/{operation}/{control}", tag = "operations",
    params(("name" = String, Path), ("operation" = String, Path, description = "restart, upgrade or deploy"),
           ("control" = String, Path, description = "pause or resume (cancel is DELETE on the operation path)")),
    responses((status = 200, body = Operation), (status = 404, body = model::ErrorBody),
              (status = 409, body = model::ErrorBody, description = "the operation already ended, or is not paused/running")))]
pub async fn control(
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

/// Registers the routes of one operation kind.
pub fn routes(mut r: axum::Router<AppState>, kind: OperationKind) -> axum::Router<AppState> {
    use axum::routing::{get as get_m, put as put_m};
    let base = format!("/api/v0/cluster/{{name}}/{}", kind.as_str());
    let mr = get_m(move |State(s): State<AppState>, Path(n): Path<String>| get(s, n, kind))
        .put(
            move |State(s): State<AppState>, Path(n): Path<String>, body: Bytes| {
                start(s, n, kind, body)
            },
        )
        .delete(move |State(s): State<AppState>, Path(n): Path<String>| {
            control(s, n, kind, Control::Cancel)
        });
    r = super::route(r, &base, mr);
    r = super::route(
        r,
        &format!("{base}/pause"),
        put_m(move |State(s): State<AppState>, Path(n): Path<String>| {
            control(s, n, kind, Control::Pause)
        }),
    );
    super::route(
        r,
        &format!("{base}/resume"),
        put_m(move |State(s): State<AppState>, Path(n): Path<String>| {
            control(s, n, kind, Control::Resume)
        }),
    )
}
