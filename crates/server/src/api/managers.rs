//! Container-manager routes. Secret options (`token`) are sealed in their own record and shown
//! as `<redacted>`; the stored configuration record never holds them in clear.

use std::collections::BTreeMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use model::{Cluster, ContainerManagerConfig, ContainerManagerRequest, SECRET_OPTION_KEYS};
use store::records::{
    self, container_manager_key, container_manager_secrets_key, get_container_manager_secrets,
    get_json, list_json, list_names, put_container_manager_secrets, put_json,
};
use store::{Compare, Op};

use super::{CAS_ATTEMPTS, body_fields, cas_backoff, too_contended, url_name};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// Splits secret options out of a configuration: (record to store, secrets to seal).
fn split_secrets(
    cfg: &ContainerManagerConfig,
) -> (ContainerManagerConfig, BTreeMap<String, serde_json::Value>) {
    let mut public = cfg.clone();
    let mut secrets = BTreeMap::new();
    for key in SECRET_OPTION_KEYS {
        if let Some(v) = public.options.remove(*key) {
            secrets.insert(key.to_string(), v);
        }
    }
    (public, secrets)
}

/// Reads a configuration with its secrets opened (for comparison and for the workers).
pub async fn load_full(
    state: &AppState,
    name: &str,
) -> ApiResult<Option<(ContainerManagerConfig, i64)>> {
    let store = state.store.as_ref();
    let Some(v) = get_json::<ContainerManagerConfig>(store, &container_manager_key(name)).await?
    else {
        return Ok(None);
    };
    let mut cfg = v.value;
    cfg.options
        .extend(get_container_manager_secrets(store, &state.sealer, name).await?);
    Ok(Some((cfg, v.mod_revision)))
}

/// `GET /api/v0/containermanagers`
#[utoipa::path(get, path = "/api/v0/containermanagers", tag = "container managers",
    responses((status = 200, body = Vec<String>, description = "Container manager names")))]
pub async fn list(State(state): State<AppState>) -> ApiResult<Json<Vec<String>>> {
    Ok(Json(
        list_names(state.store.as_ref(), records::CONTAINER_MANAGERS).await?,
    ))
}

/// `GET /api/v0/containermanager/{name}` — secret options are shown as `<redacted>`.
#[utoipa::path(get, path = "/api/v0/containermanager/{name}", tag = "container managers",
    params(("name" = String, Path)),
    responses((status = 200, body = ContainerManagerConfig), (status = 404, body = model::ErrorBody)))]
pub async fn get_one(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<Json<ContainerManagerConfig>> {
    let name = url_name("name", &name)?;
    load_full(&state, &name)
        .await?
        .map(|(cfg, _)| Json(cfg.redacted()))
        .ok_or_else(|| ApiError::not_found(format!("container manager {name} does not exist")))
}

/// `PUT /api/v0/containermanager/{name}` — create; identical → 201 without a write; different → 409.
#[utoipa::path(put, path = "/api/v0/containermanager/{name}", tag = "container managers",
    params(("name" = String, Path)),
    request_body(content = Object, description = "{\"type\": \"openshift\"|\"kubernetes\"|\"trivial\", \"options\": {\"server_url\": ..., \"token\": ...}}"),
    responses((status = 201, body = ContainerManagerConfig), (status = 400, body = model::ErrorBody), (status = 409, body = model::ErrorBody)))]
pub async fn put(
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<ContainerManagerConfig>)> {
    let name = url_name("name", &name)?;
    let cfg = ContainerManagerRequest::from_json(&name, &body_fields(&body)?)?;
    // Build the client now: an unreadable CA or certificate file is the operator's to fix,
    // and better told here than when the first host joins.
    kube::manager_for(&cfg).map_err(|e| ApiError::bad_request(format!("options: {e}")))?;
    let key = container_manager_key(&name);
    for attempt in 0..CAS_ATTEMPTS {
        if let Some((existing, _)) = load_full(&state, &name).await? {
            return if model::request::container_manager_reput_matches(&existing, &cfg) {
                Ok((StatusCode::CREATED, Json(existing.redacted())))
            } else {
                Err(ApiError::conflict(format!(
                    "container manager {name} already exists with a different configuration; delete it first to change it"
                )))
            };
        }
        let (public, secrets) = split_secrets(&cfg);
        let mut ops = vec![put_json(&key, &public)];
        if !secrets.is_empty() {
            ops.push(put_container_manager_secrets(
                &state.sealer,
                &name,
                &secrets,
            ));
        }
        let out = state
            .store
            .txn(vec![Compare::Absent(key.clone())], ops)
            .await?;
        if out.succeeded {
            tracing::info!(container_manager = %name, "container manager created");
            return Ok((StatusCode::CREATED, Json(cfg.redacted())));
        }
        cas_backoff(attempt).await;
    }
    Err(too_contended(&format!("container manager {name}")))
}

/// `DELETE /api/v0/containermanager/{name}`
#[utoipa::path(delete, path = "/api/v0/containermanager/{name}", tag = "container managers",
    params(("name" = String, Path)),
    responses((status = 200, body = Vec<String>, description = "[]"), (status = 404, body = model::ErrorBody),
              (status = 409, body = model::ErrorBody, description = "in use by a cluster")))]
pub async fn delete(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<Json<Vec<String>>> {
    let name = url_name("name", &name)?;
    let key = container_manager_key(&name);
    for attempt in 0..CAS_ATTEMPTS {
        let Some(existing) = state.store.get(&key).await? else {
            return Err(ApiError::not_found(format!(
                "container manager {name} does not exist"
            )));
        };
        let clusters = list_json::<Cluster>(state.store.as_ref(), records::CLUSTERS).await?;
        let users: Vec<&str> = clusters
            .iter()
            .filter(|c| c.value.container_manager == name)
            .map(|c| c.value.name.as_str())
            .collect();
        if !users.is_empty() {
            return Err(ApiError::conflict(format!(
                "container manager {name} is used by cluster(s) {}; change their container_manager first",
                users.join(", ")
            )));
        }
        let out = state
            .store
            .txn(
                vec![Compare::ModRevision(key.clone(), existing.mod_revision)],
                vec![
                    Op::Delete { key: key.clone() },
                    Op::Delete {
                        key: container_manager_secrets_key(&name),
                    },
                ],
            )
            .await?;
        if out.succeeded {
            tracing::info!(container_manager = %name, "container manager deleted");
            return Ok(Json(vec![]));
        }
        cas_backoff(attempt).await;
    }
    Err(too_contended(&format!("container manager {name}")))
}
