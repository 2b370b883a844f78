//! Cluster routes: the cluster records and their membership.
//!
//! Membership lives in the cluster record's `hostset`; every change is a compare-and-swap on
//! that record, so concurrent joins and leaves (even through different servers sharing one
//! etcd) never lose each other. A host belongs to at most one cluster.

use std::collections::{BTreeSet, HashMap};

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use model::{
    Cluster, ClusterRequest, ClusterView, DEFAULT_NETWORK, Host, HostState, MembershipRequest,
};
use store::records::{
    self, OPERATION_KINDS, Versioned, cluster_key, container_manager_key, get_json, host_key,
    list_json, list_names, network_key, operation_key, put_json,
};
use store::{Compare, Op};

use super::{CAS_ATTEMPTS, body_fields, cas_backoff, too_contended, url_address, url_name};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use workers::Job;

async fn load_cluster(state: &AppState, name: &str) -> ApiResult<Versioned<Cluster>> {
    get_json::<Cluster>(state.store.as_ref(), &cluster_key(name))
        .await?
        .ok_or_else(|| ApiError::not_found(format!("cluster {name} does not exist")))
}

/// One record per member (`None` where it is missing), in member order: point reads for small
/// clusters, one range read over `prefix` for big ones (it beats many point reads).
async fn member_records<T: serde::de::DeserializeOwned>(
    state: &AppState,
    cluster: &Cluster,
    prefix: &str,
) -> ApiResult<Vec<Option<T>>> {
    let store = state.store.as_ref();
    if cluster.hostset.len() <= 16 {
        let mut out = Vec::with_capacity(cluster.hostset.len());
        for a in &cluster.hostset {
            out.push(
                get_json::<T>(store, &format!("{prefix}{a}"))
                    .await?
                    .map(|v| v.value),
            );
        }
        return Ok(out);
    }
    let mut all: HashMap<String, T> = store
        .list(prefix)
        .await?
        .iter()
        .map(|kv| {
            let v = records::decode::<T>(kv)?.value;
            Ok((
                kv.key.strip_prefix(prefix).unwrap_or(&kv.key).to_string(),
                v,
            ))
        })
        .collect::<store::StoreResult<_>>()?;
    Ok(cluster.hostset.iter().map(|a| all.remove(a)).collect())
}

/// Computes the API view of a cluster from its members' current states (and, when its
/// container manager has nodes, from the members' node views).
async fn view(state: &AppState, cluster: &Cluster) -> ApiResult<ClusterView> {
    let states: Vec<Option<HostState>> = member_records::<Host>(state, cluster, records::HOSTS)
        .await?
        .into_iter()
        .map(|h| h.map(|h| h.status))
        .collect();
    let mut v = ClusterView::compute(cluster, &states);
    if super::cluster_has_nodes(state, cluster).await? {
        let views = member_records::<model::NodeView>(state, cluster, records::NODES).await?;
        v.nodes = Some(model::ClusterNodesSummary::compute(&views));
    }
    Ok(v)
}

/// `GET /api/v0/clusters`
#[utoipa::path(get, path = "/api/v0/clusters", tag = "clusters",
    responses((status = 200, body = Vec<String>, description = "Cluster names")))]
pub async fn list(State(state): State<AppState>) -> ApiResult<Json<Vec<String>>> {
    Ok(Json(
        list_names(state.store.as_ref(), records::CLUSTERS).await?,
    ))
}

/// `GET /api/v0/cluster/{name}`
#[utoipa::path(get, path = "/api/v0/cluster/{name}", tag = "clusters",
    params(("name" = String, Path)),
    responses((status = 200, body = ClusterView), (status = 404, body = model::ErrorBody)))]
pub async fn get_one(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<Json<ClusterView>> {
    let name = url_name("name", &name)?;
    let c = load_cluster(&state, &name).await?;
    Ok(Json(view(&state, &c.value).await?))
}

/// `PUT /api/v0/cluster/{name}` — create, or update the given fields (members and operations
/// are kept).
#[utoipa::path(put, path = "/api/v0/cluster/{name}", tag = "clusters",
    params(("name" = String, Path)),
    request_body(content = Object, description = "{\"network\": \"default\", \"container_manager\": \"\"}"),
    responses((status = 201, body = ClusterView), (status = 400, body = model::ErrorBody)))]
pub async fn put(
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<ClusterView>)> {
    let name = url_name("name", &name)?;
    let req = ClusterRequest::from_json(&body_fields(&body)?)?;
    let store = state.store.as_ref();
    if let Some(n) = &req.network
        && n != DEFAULT_NETWORK
        && store.get(&network_key(n)).await?.is_none()
    {
        return Err(ApiError::bad_request(format!(
            "network: network {n} does not exist; create it first"
        )));
    }
    if let Some(cm) = &req.container_manager
        && !cm.is_empty()
        && store.get(&container_manager_key(cm)).await?.is_none()
    {
        return Err(ApiError::bad_request(format!(
            "container_manager: container manager {cm} does not exist; create it first"
        )));
    }
    for attempt in 0..CAS_ATTEMPTS {
        let existing = get_json::<Cluster>(store, &cluster_key(&name)).await?;
        let (compare, mut cluster) = match existing {
            Some(v) => (
                Compare::ModRevision(cluster_key(&name), v.mod_revision),
                v.value,
            ),
            None => (
                Compare::Absent(cluster_key(&name)),
                Cluster {
                    name: name.clone(),
                    status: String::new(),
                    network: DEFAULT_NETWORK.to_string(),
                    container_manager: String::new(),
                    hostset: vec![],
                },
            ),
        };
        let before = cluster.clone();
        if let Some(n) = &req.network {
            cluster.network = n.clone();
        }
        if let Some(cm) = &req.container_manager {
            cluster.container_manager = cm.clone();
        }
        let is_new = matches!(compare, Compare::Absent(_));
        if !is_new && cluster == before {
            return Ok((StatusCode::CREATED, Json(view(&state, &cluster).await?)));
        }
        let ops = vec![put_json(&cluster_key(&name), &cluster)];
        if store.txn(vec![compare], ops).await?.succeeded {
            tracing::info!(cluster = %name, created = is_new, "cluster saved");
            return Ok((StatusCode::CREATED, Json(view(&state, &cluster).await?)));
        }
        cas_backoff(attempt).await;
    }
    Err(too_contended(&format!("cluster {name}")))
}

/// `DELETE /api/v0/cluster/{name}` — also deletes its operation records.
#[utoipa::path(delete, path = "/api/v0/cluster/{name}", tag = "clusters",
    params(("name" = String, Path)),
    responses((status = 200, body = Vec<String>, description = "[]"), (status = 404, body = model::ErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<Json<Vec<String>>> {
    let name = url_name("name", &name)?;
    for attempt in 0..CAS_ATTEMPTS {
        let c = load_cluster(&state, &name).await?;
        if let Some(active) = super::operations::active_operation(&state, &name).await? {
            return Err(ApiError::conflict(format!(
                "cluster {name} has a {} in progress; cancel it first (DELETE /api/v0/cluster/{name}/{})",
                active.kind, active.kind
            )));
        }
        let mut ops = vec![Op::Delete {
            key: cluster_key(&name),
        }];
        for kind in OPERATION_KINDS {
            ops.push(Op::Delete {
                key: operation_key(&name, kind),
            });
        }
        let removals = super::node_removal_ops(&state, &c.value, &c.value.hostset).await?;
        ops.extend(removals.iter().cloned());
        let cmp = Compare::ModRevision(cluster_key(&name), c.mod_revision);
        if state.store.txn(vec![cmp], ops).await?.succeeded {
            super::queue_node_removals(&state, &removals);
            tracing::info!(cluster = %name, "cluster deleted");
            return Ok(Json(vec![]));
        }
        cas_backoff(attempt).await;
    }
    Err(too_contended(&format!("cluster {name}")))
}

/// `GET /api/v0/cluster/{name}/hosts`
#[utoipa::path(get, path = "/api/v0/cluster/{name}/hosts", tag = "clusters",
    params(("name" = String, Path)),
    responses((status = 200, body = Vec<String>, description = "Member addresses"), (status = 404, body = model::ErrorBody)))]
pub async fn members(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<Json<Vec<String>>> {
    let name = url_name("name", &name)?;
    Ok(Json(load_cluster(&state, &name).await?.value.hostset))
}

/// Finds the cluster (other than `except`) that already has `address` as a member.
async fn other_cluster_of(
    state: &AppState,
    address: &str,
    except: &str,
) -> ApiResult<Option<String>> {
    Ok(
        list_json::<Cluster>(state.store.as_ref(), records::CLUSTERS)
            .await?
            .into_iter()
            .find(|c| c.value.name != except && c.value.hostset.iter().any(|a| a == address))
            .map(|c| c.value.name),
    )
}

/// Checks that every host in `addresses` exists, may join, and is in no other cluster.
/// Returns the guards on their records' revisions plus, when `rebootstrap`, the writes that
/// hand each one back to the investigator as `bootstrapping`: joining a cluster whose
/// container manager has nodes means the host must run a kubelet configured for it, so it is
/// bootstrapped again with the cluster's plan and becomes `active` once its node is Ready.
/// (Joining any other cluster only changes the membership, as in the original.)
async fn check_joiners(
    state: &AppState,
    cluster: &str,
    addresses: &[String],
    rebootstrap: bool,
) -> ApiResult<(Vec<Compare>, Vec<Op>)> {
    let mut compares = vec![];
    let mut ops = vec![];
    let mut not_ready = vec![];
    for a in addresses {
        let Some(h) = get_json::<Host>(state.store.as_ref(), &host_key(a)).await? else {
            return Err(ApiError::not_found(format!("host {a} does not exist")));
        };
        if !h.value.status.can_join_cluster() {
            not_ready.push(format!("{a} (status: {})", h.value.status));
        }
        if let Some(other) = other_cluster_of(state, a, cluster).await? {
            return Err(ApiError::conflict(format!(
                "host {a} is already a member of cluster {other}; remove it from there first"
            )));
        }
        compares.push(Compare::ModRevision(host_key(a), h.mod_revision));
        if rebootstrap {
            let mut host = h.value;
            host.status = HostState::Bootstrapping;
            host.status_reason.clear();
            ops.push(put_json(&host_key(a), &host));
        }
    }
    if !not_ready.is_empty() {
        return Err(ApiError::not_allowed(format!(
            "hosts not ready to join cluster {cluster} (only active or disassociated hosts may join): {}",
            not_ready.join(", ")
        )));
    }
    Ok((compares, ops))
}

/// `PUT /api/v0/cluster/{name}/hosts` — replace the member list if it still equals `old`.
#[utoipa::path(put, path = "/api/v0/cluster/{name}/hosts", tag = "clusters",
    params(("name" = String, Path)),
    request_body(content = Object, description = "{\"old\": [current members], \"new\": [wanted members]}"),
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
    let old: BTreeSet<&String> = req.old.iter().collect();
    let mut new = Vec::new();
    for a in &req.new {
        if !new.contains(a) {
            new.push(a.clone());
        }
    }
    for attempt in 0..CAS_ATTEMPTS {
        let c = load_cluster(&state, &name).await?;
        let current: BTreeSet<&String> = c.value.hostset.iter().collect();
        if current != old {
            return Err(ApiError::conflict(format!(
                "the members of cluster {name} are not the given old list (current: [{}]); read them again",
                c.value.hostset.join(", ")
            )));
        }
        let joining: Vec<String> = new
            .iter()
            .filter(|a| !current.contains(a))
            .cloned()
            .collect();
        let rebootstrap = super::cluster_has_nodes(&state, &c.value).await?;
        let (mut compares, host_ops) = check_joiners(&state, &name, &joining, rebootstrap).await?;
        compares.push(Compare::ModRevision(cluster_key(&name), c.mod_revision));
        let mut cluster = c.value;
        if cluster.hostset == new {
            return Ok(Json(view(&state, &cluster).await?));
        }
        let leaving: Vec<String> = cluster
            .hostset
            .iter()
            .filter(|a| !new.contains(a))
            .cloned()
            .collect();
        let removals = super::node_removal_ops(&state, &cluster, &leaving).await?;
        cluster.hostset = new.clone();
        let mut ops = vec![put_json(&cluster_key(&name), &cluster)];
        ops.extend(removals.iter().cloned());
        ops.extend(host_ops);
        if state.store.txn(compares, ops).await?.succeeded {
            super::queue_node_removals(&state, &removals);
            if rebootstrap {
                for a in joining {
                    state.jobs.push(Job::Investigate { address: a });
                }
            }
            return Ok(Json(view(&state, &cluster).await?));
        }
        cas_backoff(attempt).await;
    }
    Err(too_contended(&format!("cluster {name}")))
}

/// `GET /api/v0/cluster/{name}/hosts/{address}` — 200 `[address]` if a member, else 404.
#[utoipa::path(get, path = "/api/v0/cluster/{name}/hosts/{address}", tag = "clusters",
    params(("name" = String, Path), ("address" = String, Path)),
    responses((status = 200, body = Vec<String>), (status = 404, body = model::ErrorBody)))]
pub async fn member(
    State(state): State<AppState>,
    Path((name, address)): Path<(String, String)>,
) -> ApiResult<Json<Vec<String>>> {
    let name = url_name("name", &name)?;
    let address = url_address(&address)?;
    let c = load_cluster(&state, &name).await?;
    if c.value.hostset.contains(&address) {
        Ok(Json(vec![address]))
    } else {
        Err(ApiError::not_found(format!(
            "host {address} is not a member of cluster {name}"
        )))
    }
}

/// `PUT /api/v0/cluster/{name}/hosts/{address}` — idempotent join.
#[utoipa::path(put, path = "/api/v0/cluster/{name}/hosts/{address}", tag = "clusters",
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
    for attempt in 0..CAS_ATTEMPTS {
        let c = load_cluster(&state, &name).await?;
        if c.value.hostset.contains(&address) {
            // Still 404 if the host itself is gone.
            return Ok(Json(vec![address]));
        }
        let rebootstrap = super::cluster_has_nodes(&state, &c.value).await?;
        let (mut compares, host_ops) =
            check_joiners(&state, &name, std::slice::from_ref(&address), rebootstrap).await?;
        compares.push(Compare::ModRevision(cluster_key(&name), c.mod_revision));
        let mut cluster = c.value;
        cluster.hostset.push(address.clone());
        let mut ops = vec![put_json(&cluster_key(&name), &cluster)];
        ops.extend(host_ops);
        if state.store.txn(compares, ops).await?.succeeded {
            if rebootstrap {
                state.jobs.push(Job::Investigate {
                    address: address.clone(),
                });
            }
            tracing::info!(cluster = %name, address = %address, "host joined cluster");
            return Ok(Json(vec![address]));
        }
        cas_backoff(attempt).await;
    }
    Err(too_contended(&format!("cluster {name}")))
}

/// `DELETE /api/v0/cluster/{name}/hosts/{address}` — idempotent leave.
#[utoipa::path(delete, path = "/api/v0/cluster/{name}/hosts/{address}", tag = "clusters",
    params(("name" = String, Path), ("address" = String, Path)),
    responses((status = 200, body = Vec<String>, description = "[]"), (status = 404, body = model::ErrorBody)))]
pub async fn leave(
    State(state): State<AppState>,
    Path((name, address)): Path<(String, String)>,
) -> ApiResult<Json<Vec<String>>> {
    let name = url_name("name", &name)?;
    let address = url_address(&address)?;
    for attempt in 0..CAS_ATTEMPTS {
        let c = load_cluster(&state, &name).await?;
        if !c.value.hostset.contains(&address) {
            return Ok(Json(vec![]));
        }
        let cmp = Compare::ModRevision(cluster_key(&name), c.mod_revision);
        let mut cluster = c.value;
        let removals =
            super::node_removal_ops(&state, &cluster, std::slice::from_ref(&address)).await?;
        cluster.hostset.retain(|a| a != &address);
        let mut ops = vec![put_json(&cluster_key(&name), &cluster)];
        ops.extend(removals.iter().cloned());
        if state.store.txn(vec![cmp], ops).await?.succeeded {
            super::queue_node_removals(&state, &removals);
            tracing::info!(cluster = %name, address = %address, "host left cluster");
            return Ok(Json(vec![]));
        }
        cas_backoff(attempt).await;
    }
    Err(too_contended(&format!("cluster {name}")))
}
