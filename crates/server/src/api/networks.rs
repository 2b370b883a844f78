//! Network routes. The `default` network always exists (seeded at start-up) and cannot be
//! deleted; a network a cluster uses cannot be deleted either.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use model::{Cluster, DEFAULT_NETWORK, Network, NetworkRequest};
use store::records::{self, get_json, list_json, list_names, network_key, put_json};
use store::{Compare, Op};

use super::{CAS_ATTEMPTS, body_fields, cas_backoff, too_contended, url_name};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// Writes the `default` network if it is missing (run at start-up; safe from several servers).
pub async fn seed_default(store: &dyn store::Store) -> store::StoreResult<()> {
    let key = network_key(DEFAULT_NETWORK);
    store
        .txn(
            vec![Compare::Absent(key.clone())],
            vec![put_json(&key, &Network::default_network())],
        )
        .await?;
    Ok(())
}

/// `GET /api/v0/networks`
#[utoipa::path(get, path = "/api/v0/networks", tag = "networks",
    responses((status = 200, body = Vec<String>, description = "Network names")))]
pub async fn list(State(state): State<AppState>) -> ApiResult<Json<Vec<String>>> {
    Ok(Json(
        list_names(state.store.as_ref(), records::NETWORKS).await?,
    ))
}

/// `GET /api/v0/network/{name}`
#[utoipa::path(get, path = "/api/v0/network/{name}", tag = "networks",
    params(("name" = String, Path)),
    responses((status = 200, body = Network), (status = 404, body = model::ErrorBody)))]
pub async fn get_one(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<Json<Network>> {
    let name = url_name("name", &name)?;
    get_json::<Network>(state.store.as_ref(), &network_key(&name))
        .await?
        .map(|v| Json(v.value))
        .ok_or_else(|| ApiError::not_found(format!("network {name} does not exist")))
}

/// `PUT /api/v0/network/{name}` — create; identical → 201 without a write; different → 409.
#[utoipa::path(put, path = "/api/v0/network/{name}", tag = "networks",
    params(("name" = String, Path)),
    request_body(content = Object, description = "{\"type\": \"flannel_etcd\"|\"flannel_server\", \"options\": {}}"),
    responses((status = 201, body = Network), (status = 400, body = model::ErrorBody), (status = 409, body = model::ErrorBody)))]
pub async fn put(
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<Network>)> {
    let name = url_name("name", &name)?;
    let network = NetworkRequest::from_json(&name, &body_fields(&body)?)?;
    kube::trusted::check_network(&network)?;
    let key = network_key(&name);
    for attempt in 0..CAS_ATTEMPTS {
        if let Some(existing) = get_json::<Network>(state.store.as_ref(), &key).await? {
            return if existing.value == network {
                Ok((StatusCode::CREATED, Json(existing.value)))
            } else {
                Err(ApiError::conflict(format!(
                    "network {name} already exists with a different configuration; delete it first to change it"
                )))
            };
        }
        let out = state
            .store
            .txn(
                vec![Compare::Absent(key.clone())],
                vec![put_json(&key, &network)],
            )
            .await?;
        if out.succeeded {
            tracing::info!(network = %name, "network created");
            return Ok((StatusCode::CREATED, Json(network)));
        }
        cas_backoff(attempt).await;
    }
    Err(too_contended(&format!("network {name}")))
}

/// `DELETE /api/v0/network/{name}`
#[utoipa::path(delete, path = "/api/v0/network/{name}", tag = "networks",
    params(("name" = String, Path)),
    responses((status = 200, body = Vec<String>, description = "[]"), (status = 404, body = model::ErrorBody),
              (status = 409, body = model::ErrorBody, description = "the default network, or in use by a cluster")))]
pub async fn delete(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<Json<Vec<String>>> {
    let name = url_name("name", &name)?;
    if name == DEFAULT_NETWORK {
        return Err(ApiError::conflict("the default network cannot be deleted"));
    }
    let key = network_key(&name);
    for attempt in 0..CAS_ATTEMPTS {
        let Some(existing) = state.store.get(&key).await? else {
            return Err(ApiError::not_found(format!(
                "network {name} does not exist"
            )));
        };
        let clusters = list_json::<Cluster>(state.store.as_ref(), records::CLUSTERS).await?;
        let users: Vec<&str> = clusters
            .iter()
            .filter(|c| c.value.network == name)
            .map(|c| c.value.name.as_str())
            .collect();
        if !users.is_empty() {
            return Err(ApiError::conflict(format!(
                "network {name} is used by cluster(s) {}; change their network first",
                users.join(", ")
            )));
        }
        let out = state
            .store
            .txn(
                vec![Compare::ModRevision(key.clone(), existing.mod_revision)],
                vec![Op::Delete { key: key.clone() }],
            )
            .await?;
        if out.succeeded {
            tracing::info!(network = %name, "network deleted");
            return Ok(Json(vec![]));
        }
        cas_backoff(attempt).await;
    }
    Err(too_contended(&format!("network {name}")))
}
