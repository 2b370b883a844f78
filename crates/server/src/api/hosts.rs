//! Host routes: list, read, create (by an operator or by the host itself), delete, credentials,
//! status and the trusted SSH host key. The rules are in `domain::hosts`.

use std::net::SocketAddr;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use domain::hosts;
use model::{Host, HostCreateRequest, HostCreds, HostStatus, TrustedHostKey};

use super::{body_fields, url_address};
use crate::auth::{AuditTarget, Identity};
use crate::error::ApiResult;
use crate::state::AppState;

/// `GET /api/v0/hosts`
#[utoipa::path(get, path = "/api/v0/hosts", tag = "hosts",
    operation_id = "list_hosts",
    responses((status = 200, description = "Every host", body = [Host])))]
pub async fn list(State(state): State<AppState>) -> ApiResult<Json<Vec<Host>>> {
    Ok(Json(hosts::list(&state.domain).await?))
}

/// `GET /api/v0/host/{address}`
#[utoipa::path(get, path = "/api/v0/host/{address}", tag = "hosts",
    operation_id = "get_host",
    params(("address" = String, Path, description = "IPv4, IPv6 or DNS name")),
    responses((status = 200, body = Host), (status = 404, body = model::ErrorBody)))]
pub async fn get_one(
    State(state): State<AppState>,
    Path(address): Path<String>,
) -> ApiResult<Json<Host>> {
    let address = url_address(&address)?;
    Ok(Json(hosts::get(&state.domain, &address).await?))
}

/// `PUT /api/v0/host/{address}`
#[utoipa::path(put, path = "/api/v0/host/{address}", tag = "hosts",
    operation_id = "create_host",
    params(("address" = String, Path, description = "IPv4, IPv6 or DNS name; wins over a body address")),
    request_body(content = super::bodies::HostCreateBody, description = "{\"ssh_priv_key\": base64 of the key file, \"remote_user\": \"root\", \"cluster\": optional cluster to join}"),
    responses((status = 201, body = Host), (status = 400, body = model::ErrorBody), (status = 409, body = model::ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    Path(address): Path<String>,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<Host>)> {
    let address = url_address(&address)?;
    let req = HostCreateRequest::from_json(&body_fields(&body)?)?;
    let host = hosts::create(&state.domain, address, req).await?;
    Ok((StatusCode::CREATED, Json(host)))
}

/// `PUT /api/v0/host` — self-registration: the address comes from the body, or else from the
/// TCP peer (the host calling us at first boot).
#[utoipa::path(put, path = "/api/v0/host", tag = "hosts",
    operation_id = "register_host",
    request_body(content = super::bodies::HostCreateBody, description = "As PUT /host/{address}, plus optional \"address\" (default: the caller's IP)"),
    responses((status = 201, body = Host), (status = 400, body = model::ErrorBody), (status = 409, body = model::ErrorBody)))]
pub async fn register(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    who: Option<Extension<Identity>>,
    body: Bytes,
) -> ApiResult<(StatusCode, Extension<AuditTarget>, Json<Host>)> {
    let req = HostCreateRequest::from_json(&body_fields(&body)?)?;
    let scope = who.and_then(|Extension(w)| w.registration);
    let host = hosts::register(&state.domain, peer.ip(), req, scope).await?;
    // The path does not name the host: tell the audit log which one registered.
    let target = AuditTarget(format!("host/{}", host.address));
    Ok((StatusCode::CREATED, Extension(target), Json(host)))
}

/// `DELETE /api/v0/host/{address}` — also removes it from its cluster.
#[utoipa::path(delete, path = "/api/v0/host/{address}", tag = "hosts",
    operation_id = "delete_host",
    params(("address" = String, Path)),
    responses((status = 200, body = Vec<String>, description = "[]"), (status = 404, body = model::ErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    Path(address): Path<String>,
) -> ApiResult<Json<Vec<String>>> {
    let address = url_address(&address)?;
    hosts::delete(&state.domain, &address).await?;
    Ok(Json(vec![]))
}

/// `GET /api/v0/host/{address}/creds` — returns the private key: the most privileged read.
#[utoipa::path(get, path = "/api/v0/host/{address}/creds", tag = "hosts",
    operation_id = "get_host_creds",
    params(("address" = String, Path)),
    responses((status = 200, body = HostCreds), (status = 404, body = model::ErrorBody)))]
pub async fn creds(
    State(state): State<AppState>,
    Path(address): Path<String>,
) -> ApiResult<Json<HostCreds>> {
    let address = url_address(&address)?;
    Ok(Json(hosts::creds(&state.domain, &address).await?))
}

/// `GET /api/v0/host/{address}/status`
#[utoipa::path(get, path = "/api/v0/host/{address}/status", tag = "hosts",
    operation_id = "get_host_status",
    params(("address" = String, Path)),
    responses((status = 200, body = HostStatus), (status = 404, body = model::ErrorBody)))]
pub async fn status(
    State(state): State<AppState>,
    Path(address): Path<String>,
) -> ApiResult<Json<HostStatus>> {
    let address = url_address(&address)?;
    Ok(Json(hosts::status(&state.domain, &address).await?))
}

/// `GET /api/v0/host/{address}/hostkey` — the SSH host key trusted for the host.
#[utoipa::path(get, path = "/api/v0/host/{address}/hostkey", tag = "hosts",
    operation_id = "get_host_key",
    params(("address" = String, Path)),
    responses((status = 200, body = TrustedHostKey),
              (status = 404, body = model::ErrorBody, description = "no such host, or no key recorded yet")))]
pub async fn get_hostkey(
    State(state): State<AppState>,
    Path(address): Path<String>,
) -> ApiResult<Json<TrustedHostKey>> {
    let address = url_address(&address)?;
    Ok(Json(hosts::hostkey(&state.domain, &address).await?))
}

/// `PUT /api/v0/host/{address}/hostkey` — re-trust a host whose SSH host key changed.
///
/// With `{"key": "ssh-ed25519 AAAA..."}` exactly that key is trusted; with an empty body the
/// recorded key is forgotten and the key the host presents at the next contact is trusted.
/// A `failed` host is investigated again.
#[utoipa::path(put, path = "/api/v0/host/{address}/hostkey", tag = "hosts",
    operation_id = "trust_host_key",
    params(("address" = String, Path)),
    request_body(content = Option<super::bodies::HostKeyBody>, description = "optional {\"key\": \"ssh-ed25519 AAAA...\"}; empty: trust on next contact"),
    responses((status = 200, body = Host), (status = 400, body = model::ErrorBody), (status = 404, body = model::ErrorBody)))]
pub async fn trust_hostkey(
    State(state): State<AppState>,
    Path(address): Path<String>,
    body: Bytes,
) -> ApiResult<Json<Host>> {
    let address = url_address(&address)?;
    let fields = body_fields(&body)?;
    Ok(Json(
        hosts::trust_hostkey(&state.domain, &address, &fields).await?,
    ))
}
