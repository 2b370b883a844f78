//! The `/api/v0` routes, one module per resource, and the helpers they share.
//!
//! Handlers are thin: validate everything first (nothing is written when a request is
//! rejected), then read-modify-write the store through compare-and-swap transactions that are
//! retried when another writer got there first.

pub mod clusters;
pub mod events;
pub mod hosts;
pub mod managers;
pub mod networks;
pub mod operations;
pub mod ops;

use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::routing::MethodRouter;
use model::{Fields, canonical_address, parse_body, validate_name};
use rand::Rng;

use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// How many times a read-modify-write is retried when other writers keep winning.
pub const CAS_ATTEMPTS: usize = 500;

/// Sleeps a little before retrying a lost compare-and-swap, so that contending writers spread
/// out instead of colliding again at once.
pub async fn cas_backoff(attempt: usize) {
    let max_ms = (1 + attempt as u64).min(20);
    let ms = rand::rng().random_range(0..=max_ms);
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

/// The error when [`CAS_ATTEMPTS`] were not enough.
pub fn too_contended(what: &str) -> ApiError {
    ApiError::unavailable(format!(
        "{what} is being changed by many clients at once; try again"
    ))
}

/// Whether the cluster's container manager has nodes (Kubernetes/OpenShift, not trivial).
pub async fn cluster_has_nodes(state: &AppState, cluster: &model::Cluster) -> ApiResult<bool> {
    if cluster.container_manager.is_empty() {
        return Ok(false);
    }
    let cm = store::records::get_json::<model::ContainerManagerConfig>(
        state.store.as_ref(),
        &store::records::container_manager_key(&cluster.container_manager),
    )
    .await?;
    Ok(cm.is_some_and(|c| c.value.kind != model::ContainerManagerType::Trivial))
}

/// Writes that record node removals for hosts leaving `cluster`, when its container manager
/// has nodes (Kubernetes/OpenShift). They go in the same transaction as the change itself, so
/// the node worker learns of every departure even across a crash; call
/// [`queue_node_removals`] once the transaction succeeded.
pub async fn node_removal_ops(
    state: &AppState,
    cluster: &model::Cluster,
    leaving: &[String],
) -> ApiResult<Vec<store::Op>> {
    if leaving.is_empty() || !cluster_has_nodes(state, cluster).await? {
        return Ok(vec![]);
    }
    let now = model::now_timestamp();
    Ok(leaving
        .iter()
        .map(|a| {
            store::records::put_json(
                &store::records::node_removal_key(a),
                &model::NodeRemoval {
                    address: a.clone(),
                    container_manager: cluster.container_manager.clone(),
                    requested_at: now.clone(),
                },
            )
        })
        .collect())
}

/// Hands the removals written by [`node_removal_ops`] to the node worker.
pub fn queue_node_removals(state: &AppState, ops: &[store::Op]) {
    for op in ops {
        if let store::Op::Put { key, .. } = op
            && let Some(address) = key.strip_prefix(store::records::NODE_REMOVALS)
        {
            state.jobs.push(workers::Job::RemoveNode {
                address: address.to_string(),
            });
        }
    }
}

/// Parses a request body into a JSON object (400 naming the problem otherwise).
pub fn body_fields(body: &Bytes) -> ApiResult<Fields> {
    Ok(parse_body(body)?)
}

/// Validates a URL name parameter.
pub fn url_name(field: &str, name: &str) -> ApiResult<String> {
    validate_name(field, name)?;
    Ok(name.to_string())
}

/// Validates and canonicalizes a URL address parameter.
pub fn url_address(address: &str) -> ApiResult<String> {
    Ok(canonical_address("address", address)?)
}

/// Adds `path` and `path/` (a trailing slash is optional on every route).
pub(crate) fn route(
    router: Router<AppState>,
    path: &str,
    mr: MethodRouter<AppState>,
) -> Router<AppState> {
    router
        .route(path, mr.clone())
        .route(&format!("{path}/"), mr)
}

/// Every `/api/v0` route.
pub fn router() -> Router<AppState> {
    use axum::routing::{get, put};
    let mut r = Router::new();
    r = route(r, "/api/v0/hosts", get(hosts::list));
    r = route(r, "/api/v0/host", put(hosts::register));
    r = route(
        r,
        "/api/v0/host/{address}",
        get(hosts::get_one).put(hosts::create).delete(hosts::delete),
    );
    r = route(r, "/api/v0/host/{address}/creds", get(hosts::creds));
    r = route(r, "/api/v0/host/{address}/status", get(hosts::status));
    r = route(
        r,
        "/api/v0/host/{address}/hostkey",
        get(hosts::get_hostkey).put(hosts::trust_hostkey),
    );
    r = route(r, "/api/v0/clusters", get(clusters::list));
    r = route(
        r,
        "/api/v0/cluster/{name}",
        get(clusters::get_one)
            .put(clusters::put)
            .delete(clusters::delete),
    );
    r = route(
        r,
        "/api/v0/cluster/{name}/hosts",
        get(clusters::members).put(clusters::set_members),
    );
    r = route(
        r,
        "/api/v0/cluster/{name}/hosts/{address}",
        get(clusters::member)
            .put(clusters::join)
            .delete(clusters::leave),
    );
    for kind in model::OperationKind::ALL {
        r = operations::routes(r, kind);
    }
    r = route(r, "/api/v0/networks", get(networks::list));
    r = route(
        r,
        "/api/v0/network/{name}",
        get(networks::get_one)
            .put(networks::put)
            .delete(networks::delete),
    );
    r = route(r, "/api/v0/containermanagers", get(managers::list));
    r = route(
        r,
        "/api/v0/containermanager/{name}",
        get(managers::get_one)
            .put(managers::put)
            .delete(managers::delete),
    );
    r = route(r, "/api/v0/events", get(events::stream));
    r = route(r, "/api/v0/status", get(ops::status));
    r
}
