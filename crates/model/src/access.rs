//! Who may do what, and the records that say who did what: roles, registration tokens and
//! audit records.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The role of an authenticated identity. Roles are ordered: each one may do everything the
/// roles below it may.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads, except host credentials and the audit log.
    Viewer,
    /// Hosts, cluster membership and rolling operations, besides what a viewer may do.
    Operator,
    /// Everything: clusters, networks, container managers, host-key re-trust, registration
    /// tokens, the audit log.
    Admin,
}

impl Role {
    /// Every role, lowest first.
    pub const ALL: [Role; 3] = [Role::Viewer, Role::Operator, Role::Admin];

    /// The name used in files, the API and the audit log.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }

    /// Parses a role name; the error names the accepted ones.
    pub fn parse(s: &str) -> Result<Role, String> {
        match s {
            "viewer" => Ok(Role::Viewer),
            "operator" => Ok(Role::Operator),
            "admin" => Ok(Role::Admin),
            other => Err(format!(
                "{other:?} is not a role (roles: admin, operator, viewer)"
            )),
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A registration token as shown by the API: everything but its secret (which is only ever
/// shown once, when it is created, and stored only as a digest).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RegistrationToken {
    /// Public identifier (also the first part of the token itself).
    pub id: String,
    /// The only cluster a host registering with it may join; `None`: any or none.
    pub cluster: Option<String>,
    /// When it stops being accepted (RFC 3339, UTC).
    pub expires: String,
    /// Whether the first host registered with it consumes it.
    pub single_use: bool,
    /// Who created it.
    pub created_by: String,
    /// When it was created (RFC 3339, UTC).
    pub created: String,
    /// Free text from its creator (e.g. what the hosts are for).
    pub description: Option<String>,
}

/// The answer to creating a registration token: the record plus the token itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RegistrationTokenCreated {
    /// The stored record.
    #[serde(flatten)]
    pub record: RegistrationToken,
    /// The secret to send as `Authorization: Bearer <token>`; shown only in this answer.
    pub token: String,
}

/// One audit record: a change (any request that may write) or a refused attempt.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AuditRecord {
    /// Sortable unique id (time first).
    pub id: String,
    /// When the request was answered (RFC 3339, UTC, microseconds).
    pub time: String,
    /// The authenticated user; `None` when authentication failed.
    pub user: Option<String>,
    /// The user's role; `None` when authentication failed.
    pub role: Option<Role>,
    /// The client's IP address.
    pub source: Option<String>,
    /// HTTP method.
    pub method: String,
    /// The request path.
    pub route: String,
    /// What the request was about, e.g. `host/10.0.0.1` or `cluster/prod`.
    pub target: Option<String>,
    /// HTTP status of the answer.
    pub status: u16,
    /// `allowed` (2xx), `refused` (401/403) or `failed` (any other answer).
    pub outcome: String,
    /// The request's `X-Request-Id`.
    pub request_id: Option<String>,
}
