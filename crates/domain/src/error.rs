//! The one error type of the domain: what went wrong, in a closed set of kinds the HTTP layer
//! maps to status codes in one place, each with a message an operator understands.

use model::ValidationError;
use store::StoreError;

/// Why a domain operation was refused or failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    /// A value in the request is malformed or not allowed (HTTP 400).
    #[error("{0}")]
    Invalid(String),
    /// The named resource does not exist (HTTP 404).
    #[error("{0}")]
    NotFound(String),
    /// The resource exists but is not in a state that allows the action, e.g. a host that is
    /// still being investigated asked to join a cluster (HTTP 405, as in the original).
    #[error("{0}")]
    NotReady(String),
    /// The request conflicts with what is stored (HTTP 409).
    #[error("{0}")]
    Conflict(String),
    /// The credentials presented no longer hold, e.g. a registration token revoked or used up
    /// while its request was under way (HTTP 401).
    #[error("{0}")]
    Unauthenticated(String),
    /// The caller is authenticated but may not do this (HTTP 403).
    #[error("{0}")]
    Forbidden(String),
    /// The store cannot be reached or did not answer in time (HTTP 503).
    #[error("{0}")]
    Unavailable(String),
    /// Other writers kept winning the compare-and-swap; the client may retry (HTTP 503).
    #[error("{0}")]
    Contended(String),
    /// Our fault (corrupt record, backend error). The detail is logged where it happens; the
    /// message is what may be shown (HTTP 500).
    #[error("{0}")]
    Internal(String),
}

/// Result type of domain operations.
pub type DomainResult<T> = Result<T, DomainError>;

impl DomainError {
    /// A not-found error.
    pub fn not_found(message: impl Into<String>) -> Self {
        DomainError::NotFound(message.into())
    }
    /// A conflict.
    pub fn conflict(message: impl Into<String>) -> Self {
        DomainError::Conflict(message.into())
    }
    /// An invalid value.
    pub fn invalid(message: impl Into<String>) -> Self {
        DomainError::Invalid(message.into())
    }
}

impl From<ValidationError> for DomainError {
    fn from(e: ValidationError) -> Self {
        DomainError::Invalid(e.to_string())
    }
}

impl From<StoreError> for DomainError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(detail) => {
                tracing::warn!(error = %detail, "store unavailable");
                DomainError::Unavailable("the store is unreachable; try again later".into())
            }
            other => {
                tracing::error!(error = %other, "store failure");
                DomainError::Internal("internal error; the server log has the details".into())
            }
        }
    }
}
