//! The one mapping from failures to HTTP responses.
//!
//! Every handler returns `Result<_, ApiError>`; domain failures become one by [`status_of`],
//! the only place a domain error kind meets an HTTP status. The status and message are what the
//! client sees, as `{"error": {"status": N, "message": "..."}}`. Internal details (store errors,
//! I/O) are logged, never sent: the client gets a short operator-level message.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use domain::DomainError;
use model::{ErrorBody, ErrorDetail, ValidationError};
use store::StoreError;

/// An error answer of the API.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Operator-readable message.
    pub message: String,
}

impl ApiError {
    /// An error with any status.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
        }
    }
    /// 400: the request is malformed or a value is invalid.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
    /// 404: the resource does not exist.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }
    /// 405: the action is not allowed in the resource's current state.
    pub fn not_allowed(message: impl Into<String>) -> Self {
        Self::new(StatusCode::METHOD_NOT_ALLOWED, message)
    }
    /// 409: the request conflicts with what is stored.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, message)
    }
    /// 503: the store cannot be reached.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, message)
    }
    /// 500: our fault; `detail` is logged, the client gets a generic message.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        tracing::error!(error = %detail, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal error; the server log has the details",
        )
    }
}

/// The one mapping from domain failures to HTTP: each kind has exactly one status.
pub fn status_of(e: &DomainError) -> StatusCode {
    match e {
        DomainError::Invalid(_) => StatusCode::BAD_REQUEST,
        DomainError::NotFound(_) => StatusCode::NOT_FOUND,
        DomainError::NotReady(_) => StatusCode::METHOD_NOT_ALLOWED,
        DomainError::Conflict(_) => StatusCode::CONFLICT,
        DomainError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
        DomainError::Forbidden(_) => StatusCode::FORBIDDEN,
        DomainError::Unavailable(_) | DomainError::Contended(_) => StatusCode::SERVICE_UNAVAILABLE,
        DomainError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl From<DomainError> for ApiError {
    fn from(e: DomainError) -> Self {
        ApiError::new(status_of(&e), e.to_string())
    }
}

impl From<ValidationError> for ApiError {
    fn from(e: ValidationError) -> Self {
        ApiError::bad_request(e.to_string())
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        DomainError::from(e).into()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (
            self.status,
            Json(ErrorBody {
                error: ErrorDetail {
                    status: self.status.as_u16(),
                    message: self.message,
                },
            }),
        )
            .into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        resp
    }
}

/// Result type of handlers.
pub type ApiResult<T> = Result<T, ApiError>;
