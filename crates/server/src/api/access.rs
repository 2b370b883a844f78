//! Access routes: registration tokens and the audit log (both admin only; the table of
//! permissions is in `authz`). The rules are in `domain::registration` and `domain::audit`.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use domain::audit::AuditFilter;
use domain::registration::{self, NewToken};
use model::{AuditRecord, RegistrationToken, RegistrationTokenCreated};

use super::body_fields;
use crate::auth::Identity;
use crate::error::ApiResult;
use crate::state::AppState;

/// `POST /api/v0/registration-tokens` — a token that can only register hosts.
#[utoipa::path(post, path = "/api/v0/registration-tokens", tag = "access",
    operation_id = "create_registration_token",
    request_body(content = super::bodies::RegistrationTokenBody, description = "Every field optional: {\"cluster\", \"expires_in\" (seconds, default 86400), \"single_use\", \"description\"}"),
    responses((status = 201, body = RegistrationTokenCreated, description = "Created; `token` is shown only in this answer"),
              (status = 400, body = model::ErrorBody), (status = 409, body = model::ErrorBody, description = "The named cluster does not exist")))]
pub async fn create(
    State(state): State<AppState>,
    who: Option<Extension<Identity>>,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<RegistrationTokenCreated>)> {
    let new = NewToken::from_json(&body_fields(&body)?)?;
    let by = who.map_or_else(|| "anonymous".to_string(), |Extension(w)| w.user);
    let created = registration::create(&state.domain, &by, new).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

/// `GET /api/v0/registration-tokens` — the tokens still valid (never their secrets).
#[utoipa::path(get, path = "/api/v0/registration-tokens", tag = "access",
    operation_id = "list_registration_tokens",
    responses((status = 200, body = [RegistrationToken], description = "Tokens not yet expired, revoked or used up")))]
pub async fn list(State(state): State<AppState>) -> ApiResult<Json<Vec<RegistrationToken>>> {
    Ok(Json(registration::list(&state.domain).await?))
}

/// `DELETE /api/v0/registration-tokens/{id}` — revoke a token at once.
#[utoipa::path(delete, path = "/api/v0/registration-tokens/{id}", tag = "access",
    operation_id = "revoke_registration_token",
    params(("id" = String, Path, description = "The token's id (from the list)")),
    responses((status = 200, body = Vec<String>, description = "[]"), (status = 404, body = model::ErrorBody)))]
pub async fn revoke(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Vec<String>>> {
    registration::revoke(&state.domain, &id).await?;
    Ok(Json(vec![]))
}

/// `GET /api/v0/audit` — the audit log, oldest first.
#[utoipa::path(get, path = "/api/v0/audit", tag = "access",
    operation_id = "list_audit",
    params(("user" = Option<String>, Query, description = "Only this user's records"),
           ("target" = Option<String>, Query, description = "Only this target (host/10.0.0.1), or everything under it when it ends in /"),
           ("since" = Option<String>, Query, description = "RFC 3339 time: records at or after it"),
           ("until" = Option<String>, Query, description = "RFC 3339 time: records before it"),
           ("limit" = Option<u32>, Query, description = "At most this many, the newest (default 1000)")),
    responses((status = 200, body = [AuditRecord], description = "Matching records, oldest first")))]
pub async fn audit(
    State(state): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Json<Vec<AuditRecord>>> {
    let filter = AuditFilter::from_query(&q)?;
    Ok(Json(
        domain::audit::list(state.domain.store.as_ref(), &filter).await?,
    ))
}
