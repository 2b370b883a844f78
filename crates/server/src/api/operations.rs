//! Rolling-operation routes: start, read, cancel, pause and resume a cluster's restart, upgrade
//! or deploy. The handlers only write the record and queue it; clusterexec runs it.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use model::{Cluster, Operation, OperationKind, OperationOptions, OperationStatus, now_timestamp};
use store::Compare;
use store::records::{cluster_key, get_json, operation_key, put_json};

use super::{CAS_ATTEMPTS, body_fields, cas_backoff, too_contended, url_name};
use crate::error::{ApiError, ApiResult};
use crate::state::{AppState, Job};

/// The active operation of a cluster, if any (at most one runs at a time).
pub async fn active_operation(state: &AppState, cluster: &str) -> ApiResult<Option<Operation>> {
    for kind in OperationKind::ALL {
        if let Some(op) =
            get_json::<Operation>(state.store.as_ref(), &operation_key(cluster, kind.as_str()))
                .await?
            && op.value.status.is_active()
        {
            return Ok(Some(op.value));
        }
    }
    Ok(None)
}

async fn load(state: &AppState, cluster: &str, kind: OperationKind) -> ApiResult<(Operation, i64)> {
    let key = operation_key(cluster, kind.as_str());
    match get_json::<Operation>(state.store.as_ref(), &key).await? {
        Some(v) => Ok((v.value, v.mod_revision)),
        None => {
            let exists = state.store.get(&cluster_key(cluster)).await?.is_some();
            Err(ApiError::not_found(if exists {
                format!("no {kind} has been started on cluster {cluster}")
            } else {
                format!("cluster {cluster} does not exist")
            }))
        }
    }
}

/// `GET /api/v0/cluster/{name}/restart|upgrade|deploy`
#[utoipa::path(get, path = "/api/v0/cluster/{name}/{operation}", tag = "operations",
    params(("name" = String, Path), ("operation" = String, Path, description = "restart, upgrade or deploy")),
    responses((status = 200, body = Operation), (status = 404, body = model::ErrorBody)))]
pub async fn get(state: AppState, name: String, kind: OperationKind) -> ApiResult<Json<Operation>> {
    let name = url_name("name", &name)?;
    Ok(Json(load(&state, &name, kind).await?.0))
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
    let store = state.store.as_ref();
    for attempt in 0..CAS_ATTEMPTS {
        let cluster = get_json::<Cluster>(store, &cluster_key(&name))
            .await?
            .ok_or_else(|| ApiError::not_found(format!("cluster {name} does not exist")))?;
        let (options, version) = OperationOptions::from_json(
            kind,
            &fields,
            !cluster.value.container_manager.is_empty(),
        )?;
        if let Some(active) = active_operation(&state, &name).await? {
            return Err(ApiError::conflict(format!(
                "a {} is already {} on cluster {name}; wait for it, or cancel it with DELETE /api/v0/cluster/{name}/{}",
                active.kind,
                if active.status == OperationStatus::Paused {
                    "paused"
                } else {
                    "running"
                },
                active.kind
            )));
        }
        let op = Operation::new(
            &name,
            kind,
            version.clone(),
            options,
            cluster.value.hostset.clone(),
            now_timestamp(),
        );
        let key = operation_key(&name, kind.as_str());
        // Guarded by the cluster's revision (members fixed) and by every operation record of
        // the cluster (no other run started meanwhile).
        let mut compares = vec![Compare::ModRevision(
            cluster_key(&name),
            cluster.mod_revision,
        )];
        for k in OperationKind::ALL {
            let okey = operation_key(&name, k.as_str());
            compares.push(match store.get(&okey).await? {
                Some(kv) => Compare::ModRevision(okey, kv.mod_revision),
                None => Compare::Absent(okey),
            });
        }
        if store
            .txn(compares, vec![put_json(&key, &op)])
            .await?
            .succeeded
        {
            tracing::info!(cluster = %name, kind = %kind, hosts = op.order.len(), "operation started");
            state.jobs.push(Job::RunOperation {
                cluster: name.clone(),
                kind,
            });
            return Ok((StatusCode::CREATED, Json(op)));
        }
        cas_backoff(attempt).await;
    }
    Err(too_contended(&format!("cluster {name}")))
}

/// What a control request does to an operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Control {
    /// Stop after the hosts in flight.
    Cancel,
    /// Start no new hosts until resumed.
    Pause,
    /// Continue a paused run.
    Resume,
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
    let key = operation_key(&name, kind.as_str());
    for attempt in 0..CAS_ATTEMPTS {
        let (mut op, rev) = load(&state, &name, kind).await?;
        if !op.status.is_active() {
            return Err(ApiError::conflict(format!(
                "the {kind} of cluster {name} already ended ({:?}); start a new one instead",
                op.status
            )));
        }
        let before = op.clone();
        match control {
            Control::Cancel => op.cancel_requested = true,
            Control::Pause => op.status = OperationStatus::Paused,
            Control::Resume => op.status = OperationStatus::InProcess,
        }
        if op == before {
            return Ok(Json(op));
        }
        let out = state
            .store
            .txn(
                vec![Compare::ModRevision(key.clone(), rev)],
                vec![put_json(&key, &op)],
            )
            .await?;
        if out.succeeded {
            tracing::info!(cluster = %name, kind = %kind, control = ?control, "operation control");
            return Ok(Json(op));
        }
        cas_backoff(attempt).await;
    }
    Err(too_contended(&format!("the {kind} of cluster {name}")))
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
