//! Host routes: list, read, create (by an operator or by the host itself), delete, credentials
//! and status.

use std::net::{IpAddr, SocketAddr};

use axum::Json;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::StatusCode;
use base64::Engine;
use model::{Host, HostCreateRequest, HostCreds, HostStatus, HostStatusHost, canonical_address};
use store::records::{
    self, TrustedHostKey, Versioned, cluster_key, get_host_creds, get_json, host_creds_key,
    host_key, host_key_record_key, list_json, put_host_creds, put_json,
};
use store::{Compare, Op};
use zeroize::Zeroizing;

use super::{CAS_ATTEMPTS, body_fields, cas_backoff, too_contended, url_address};
use crate::error::{ApiError, ApiResult};
use crate::state::{AppState, Job};

/// Reads a host or answers 404.
pub async fn load_host(state: &AppState, address: &str) -> ApiResult<Versioned<Host>> {
    get_json::<Host>(state.store.as_ref(), &host_key(address))
        .await?
        .ok_or_else(|| ApiError::not_found(format!("host {address} does not exist")))
}

/// `GET /api/v0/hosts`
#[utoipa::path(get, path = "/api/v0/hosts", tag = "hosts",
    responses((status = 200, description = "Every host", body = [Host])))]
pub async fn list(State(state): State<AppState>) -> ApiResult<Json<Vec<Host>>> {
    let hosts = list_json::<Host>(state.store.as_ref(), records::HOSTS).await?;
    Ok(Json(hosts.into_iter().map(|v| v.value).collect()))
}

/// `GET /api/v0/host/{address}`
#[utoipa::path(get, path = "/api/v0/host/{address}", tag = "hosts",
    params(("address" = String, Path, description = "IPv4, IPv6 or DNS name")),
    responses((status = 200, body = Host), (status = 404, body = model::ErrorBody)))]
pub async fn get_one(
    State(state): State<AppState>,
    Path(address): Path<String>,
) -> ApiResult<Json<Host>> {
    let address = url_address(&address)?;
    Ok(Json(load_host(&state, &address).await?.value))
}

/// Checks that `b64` is the base64 of a private key file that parses, without keeping any
/// copy of the key beyond this call.
pub fn check_private_key(b64: &str) -> ApiResult<()> {
    let cleaned: Zeroizing<String> =
        Zeroizing::new(b64.chars().filter(|c| !c.is_whitespace()).collect());
    if cleaned.is_empty() {
        return Err(ApiError::bad_request(
            "ssh_priv_key: is required (the base64 of the host's SSH private key file)",
        ));
    }
    let raw = Zeroizing::new(
        base64::engine::general_purpose::STANDARD
            .decode(cleaned.as_bytes())
            .map_err(|_| {
                ApiError::bad_request(
                    "ssh_priv_key: is not base64; send the base64 of the private key file",
                )
            })?,
    );
    let text = std::str::from_utf8(&raw).map_err(|_| {
        ApiError::bad_request("ssh_priv_key: does not decode to a text private key file")
    })?;
    match russh::keys::decode_secret_key(text, None) {
        Ok(_) => Ok(()),
        Err(russh::keys::Error::KeyIsEncrypted) => Err(ApiError::bad_request(
            "ssh_priv_key: the key is protected by a passphrase; give an unencrypted key",
        )),
        Err(_) => Err(ApiError::bad_request(
            "ssh_priv_key: does not parse as a private key (OpenSSH or PEM format; Ed25519, ECDSA or RSA)",
        )),
    }
}

/// Peer address as a host address: IPv4-mapped IPv6 peers become plain IPv4.
fn peer_address(peer: SocketAddr) -> String {
    match peer.ip() {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => v6.to_string(),
        },
        IpAddr::V4(v4) => v4.to_string(),
    }
}

/// `PUT /api/v0/host/{address}`
#[utoipa::path(put, path = "/api/v0/host/{address}", tag = "hosts",
    params(("address" = String, Path, description = "IPv4, IPv6 or DNS name; wins over a body address")),
    request_body(content = Object, description = "{\"ssh_priv_key\": base64 of the key file, \"remote_user\": \"root\", \"cluster\": optional cluster to join}"),
    responses((status = 201, body = Host), (status = 400, body = model::ErrorBody), (status = 409, body = model::ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    Path(address): Path<String>,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<Host>)> {
    let address = url_address(&address)?;
    let req = HostCreateRequest::from_json(&body_fields(&body)?)?;
    create_host(&state, address, req).await
}

/// `PUT /api/v0/host` — self-registration: the address comes from the body, or else from the
/// TCP peer (the host calling us at first boot).
#[utoipa::path(put, path = "/api/v0/host", tag = "hosts",
    request_body(content = Object, description = "As PUT /host/{address}, plus optional \"address\" (default: the caller's IP)"),
    responses((status = 201, body = Host), (status = 400, body = model::ErrorBody), (status = 409, body = model::ErrorBody)))]
pub async fn register(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<Host>)> {
    let req = HostCreateRequest::from_json(&body_fields(&body)?)?;
    let address = match &req.address {
        Some(a) => a.clone(),
        None => canonical_address("address", &peer_address(peer))?,
    };
    create_host(&state, address, req).await
}

async fn create_host(
    state: &AppState,
    address: String,
    req: HostCreateRequest,
) -> ApiResult<(StatusCode, Json<Host>)> {
    let key_b64 = req.ssh_priv_key.clone().unwrap_or_default();
    check_private_key(&key_b64)?;
    let store = state.store.as_ref();
    for attempt in 0..CAS_ATTEMPTS {
        let cluster = match &req.cluster {
            Some(name) => Some(
                get_json::<model::Cluster>(store, &cluster_key(name))
                    .await?
                    .ok_or_else(|| {
                        ApiError::conflict(format!(
                            "cluster {name} does not exist; create it first"
                        ))
                    })?,
            ),
            None => None,
        };
        if let Some(existing) = get_json::<Host>(store, &host_key(&address)).await? {
            let creds = get_host_creds(store, &state.sealer, &address).await?;
            let same_key = creds.is_some_and(|c| c.ssh_priv_key == key_b64);
            if !same_key {
                return Err(ApiError::conflict(format!(
                    "host {address} already exists with a different ssh_priv_key; delete it first to replace it"
                )));
            }
            if let Some(c) = &cluster
                && !c.value.hostset.contains(&address)
            {
                return Err(ApiError::conflict(format!(
                    "host {address} already exists and is not a member of cluster {}",
                    c.value.name
                )));
            }
            return Ok((StatusCode::CREATED, Json(existing.value)));
        }
        let host = Host::new(address.clone());
        let creds = HostCreds {
            address: address.clone(),
            ssh_priv_key: key_b64.clone(),
            remote_user: req.remote_user.clone(),
        };
        let mut compares = vec![
            Compare::Absent(host_key(&address)),
            Compare::Absent(host_creds_key(&address)),
        ];
        let mut ops = vec![
            put_json(&host_key(&address), &host),
            put_host_creds(&state.sealer, &creds),
        ];
        if let Some(mut c) = cluster {
            compares.push(Compare::ModRevision(
                cluster_key(&c.value.name),
                c.mod_revision,
            ));
            if !c.value.hostset.contains(&address) {
                c.value.hostset.push(address.clone());
            }
            ops.push(put_json(&cluster_key(&c.value.name), &c.value));
        }
        if state.store.txn(compares, ops).await?.succeeded {
            tracing::info!(address = %address, "host registered; investigation queued");
            state.jobs.push(Job::Investigate {
                address: address.clone(),
            });
            return Ok((StatusCode::CREATED, Json(host)));
        }
        cas_backoff(attempt).await;
    }
    Err(too_contended(&format!("host {address}")))
}

/// `DELETE /api/v0/host/{address}` — also removes it from its cluster.
#[utoipa::path(delete, path = "/api/v0/host/{address}", tag = "hosts",
    params(("address" = String, Path)),
    responses((status = 200, body = Vec<String>, description = "[]"), (status = 404, body = model::ErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    Path(address): Path<String>,
) -> ApiResult<Json<Vec<String>>> {
    let address = url_address(&address)?;
    let store = state.store.as_ref();
    for attempt in 0..CAS_ATTEMPTS {
        let host = load_host(&state, &address).await?;
        let clusters = list_json::<model::Cluster>(store, records::CLUSTERS).await?;
        let mut compares = vec![Compare::ModRevision(host_key(&address), host.mod_revision)];
        let mut ops = vec![
            Op::Delete {
                key: host_key(&address),
            },
            Op::Delete {
                key: host_creds_key(&address),
            },
            Op::Delete {
                key: host_key_record_key(&address),
            },
        ];
        let mut removals = vec![];
        for mut c in clusters {
            if c.value.hostset.contains(&address) {
                compares.push(Compare::ModRevision(
                    cluster_key(&c.value.name),
                    c.mod_revision,
                ));
                removals.extend(
                    super::node_removal_ops(&state, &c.value, std::slice::from_ref(&address))
                        .await?,
                );
                c.value.hostset.retain(|a| a != &address);
                ops.push(put_json(&cluster_key(&c.value.name), &c.value));
            }
        }
        ops.extend(removals.iter().cloned());
        if store.txn(compares, ops).await?.succeeded {
            super::queue_node_removals(&state, &removals);
            tracing::info!(address = %address, "host deleted");
            return Ok(Json(vec![]));
        }
        cas_backoff(attempt).await;
    }
    Err(too_contended(&format!("host {address}")))
}

/// `GET /api/v0/host/{address}/creds` — returns the private key: the most privileged read.
#[utoipa::path(get, path = "/api/v0/host/{address}/creds", tag = "hosts",
    params(("address" = String, Path)),
    responses((status = 200, body = HostCreds), (status = 404, body = model::ErrorBody)))]
pub async fn creds(
    State(state): State<AppState>,
    Path(address): Path<String>,
) -> ApiResult<Json<HostCreds>> {
    let address = url_address(&address)?;
    let creds = get_host_creds(state.store.as_ref(), &state.sealer, &address)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("host {address} has no credentials")))?;
    tracing::info!(address = %address, "host credentials read");
    Ok(Json(creds))
}

/// `GET /api/v0/host/{address}/status`
#[utoipa::path(get, path = "/api/v0/host/{address}/status", tag = "hosts",
    params(("address" = String, Path)),
    responses((status = 200, body = HostStatus), (status = 404, body = model::ErrorBody)))]
pub async fn status(
    State(state): State<AppState>,
    Path(address): Path<String>,
) -> ApiResult<Json<HostStatus>> {
    let address = url_address(&address)?;
    let host = load_host(&state, &address).await?.value;
    // The node view is what the workers last saw (they refresh it on every watcher round and
    // every operation step): handlers never call the container manager themselves.
    let node =
        get_json::<model::NodeView>(state.store.as_ref(), &store::records::node_key(&address))
            .await?;
    let (kind, container_manager) = match node {
        Some(n) => (
            "container_manager",
            serde_json::to_value(n.value).unwrap_or_default(),
        ),
        None => ("host_only", serde_json::json!({})),
    };
    Ok(Json(HostStatus {
        kind: kind.to_string(),
        host: HostStatusHost {
            status: host.status,
            last_check: host.last_check,
            status_reason: host.status_reason,
        },
        container_manager,
    }))
}

/// `GET /api/v0/host/{address}/hostkey` — the SSH host key trusted for the host.
#[utoipa::path(get, path = "/api/v0/host/{address}/hostkey", tag = "hosts",
    params(("address" = String, Path)),
    responses((status = 200, body = TrustedHostKey),
              (status = 404, body = model::ErrorBody, description = "no such host, or no key recorded yet")))]
pub async fn get_hostkey(
    State(state): State<AppState>,
    Path(address): Path<String>,
) -> ApiResult<Json<TrustedHostKey>> {
    let address = url_address(&address)?;
    load_host(&state, &address).await?;
    get_json::<TrustedHostKey>(state.store.as_ref(), &host_key_record_key(&address))
        .await?
        .map(|v| Json(v.value))
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "no SSH host key is recorded for host {address} yet (it is recorded at first contact)"
            ))
        })
}

/// `PUT /api/v0/host/{address}/hostkey` — re-trust a host whose SSH host key changed.
///
/// With `{"key": "ssh-ed25519 AAAA..."}` exactly that key is trusted; with an empty body the
/// recorded key is forgotten and the key the host presents at the next contact is trusted.
/// A `failed` host is investigated again.
#[utoipa::path(put, path = "/api/v0/host/{address}/hostkey", tag = "hosts",
    params(("address" = String, Path)),
    request_body(content = Object, description = "optional {\"key\": \"ssh-ed25519 AAAA...\"}; empty: trust on next contact"),
    responses((status = 200, body = Host), (status = 400, body = model::ErrorBody), (status = 404, body = model::ErrorBody)))]
pub async fn trust_hostkey(
    State(state): State<AppState>,
    Path(address): Path<String>,
    body: Bytes,
) -> ApiResult<Json<Host>> {
    let address = url_address(&address)?;
    let fields = body_fields(&body)?;
    let key = match fields.get("key") {
        None => None,
        Some(serde_json::Value::String(k)) => {
            let parsed = russh::keys::PublicKey::from_openssh(k.trim()).map_err(|_| {
                ApiError::bad_request(
                    "key: is not an OpenSSH public key line (e.g. \"ssh-ed25519 AAAA...\")",
                )
            })?;
            Some(TrustedHostKey {
                address: address.clone(),
                key: parsed.to_openssh().map_err(ApiError::internal)?,
                fingerprint: parsed.fingerprint(russh::keys::HashAlg::Sha256).to_string(),
                trusted_at: model::now_timestamp(),
            })
        }
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "key: must be a string, got {}",
                model::describe(other)
            )));
        }
    };
    let store = state.store.as_ref();
    for attempt in 0..CAS_ATTEMPTS {
        let host = load_host(&state, &address).await?;
        let mut updated = host.value.clone();
        let reinvestigate = updated.status == model::HostState::Failed;
        if reinvestigate {
            updated.status = model::HostState::Investigating;
            updated.status_reason.clear();
        }
        let rk = host_key_record_key(&address);
        let mut ops = vec![match &key {
            Some(k) => put_json(&rk, k),
            None => Op::Delete { key: rk },
        }];
        if updated != host.value {
            ops.push(put_json(&host_key(&address), &updated));
        }
        let cmp = Compare::ModRevision(host_key(&address), host.mod_revision);
        if store.txn(vec![cmp], ops).await?.succeeded {
            tracing::info!(address = %address, explicit = key.is_some(), "host key re-trusted");
            if reinvestigate {
                state.jobs.push(Job::Investigate {
                    address: address.clone(),
                });
            }
            return Ok(Json(updated));
        }
        cas_backoff(attempt).await;
    }
    Err(too_contended(&format!("host {address}")))
}
