//! The request bodies of `/api/v0`, as schemas for the OpenAPI document.
//!
//! Handlers do not deserialize into these types: they validate the raw JSON with the `model`
//! parsers (`HostCreateRequest::from_json`, ...), which name the offending field in their 400
//! messages and accept what old clients send. These types describe the same bodies for
//! clients and the Swagger UI — names, patterns, enums, required fields and an example each —
//! and the tests below feed every example to the real parser, so the two cannot drift apart.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A name of a cluster, network or container manager: 1-253 letters, digits, `_` or `-`.
pub const NAME_PATTERN: &str = "^[A-Za-z0-9_-]{1,253}$";

/// Body of `PUT /api/v0/host/{address}` (and `PUT /api/v0/host`, which also takes `address`).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({"ssh_priv_key": "LS0tLS1CRUdJTiBPUEVOU1NIIFBSSVZBVEUgS0VZLS0tLS0K...", "remote_user": "root", "cluster": "prod"}))]
pub struct HostCreateBody {
    /// Base64 of the SSH private key file (OpenSSH or PEM) used to log in to the host.
    #[schema(format = "byte")]
    pub ssh_priv_key: String,
    /// User to log in as.
    #[schema(pattern = "^[A-Za-z0-9_.][A-Za-z0-9_.-]{0,31}$", default = "root")]
    pub remote_user: Option<String>,
    /// Cluster to join once the host is bootstrapped (`""`: none).
    #[schema(pattern = "^[A-Za-z0-9_-]{0,253}$")]
    pub cluster: Option<String>,
    /// `PUT /api/v0/host` only: the host's address (default: the caller's IP). On
    /// `PUT /api/v0/host/{address}` the URL's address wins.
    pub address: Option<String>,
}

/// Body of `PUT /api/v0/cluster/{name}`: the fields to set (members join through the
/// membership routes).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({"network": "fs", "container_manager": "k8s"}))]
pub struct ClusterBody {
    /// Name of an existing network (default `default`; the embedded store refuses it, see the
    /// README).
    #[schema(pattern = "^[A-Za-z0-9_-]{1,253}$")]
    pub network: Option<String>,
    /// Name of an existing container manager; `""` removes it.
    #[schema(pattern = "^[A-Za-z0-9_-]{0,253}$")]
    pub container_manager: Option<String>,
}

/// Body of `PUT /api/v0/cluster/{name}/hosts`: replace the member list if it still equals
/// `old`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({"old": ["192.168.152.10"], "new": ["192.168.152.10", "192.168.152.11"]}))]
pub struct MembershipBody {
    /// The member list the client last saw.
    pub old: Vec<String>,
    /// The member list wanted.
    pub new: Vec<String>,
}

/// Options of a network.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct NetworkOptions {
    /// `flannel_server` and `flanneld_service` (required): `host:port` of the flannel server.
    pub address: Option<String>,
    /// `flannel_etcd`: etcd URL for flannel (default: the store's etcd).
    #[schema(pattern = "^https?://[^/\\s]+")]
    pub server_url: Option<String>,
    /// `flannel_etcd`: etcd prefix of the flannel configuration (default `/atomic01/network`).
    #[schema(pattern = "^/")]
    pub key: Option<String>,
}

/// Body of `PUT /api/v0/network/{name}`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({"type": "flannel_server", "options": {"address": "192.168.152.1:8080"}}))]
pub struct NetworkBody {
    /// The network's kind (default `flannel_etcd`).
    #[serde(rename = "type")]
    pub kind: Option<model::NetworkType>,
    /// Type-specific options.
    pub options: Option<NetworkOptions>,
}

/// Options of an `openshift` or `kubernetes` container manager (`trivial` takes none).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ContainerManagerOptions {
    /// The API server's URL (required for openshift and kubernetes).
    #[schema(pattern = "^https?://[^/\\s]+")]
    pub server_url: Option<String>,
    /// Bearer token of the account Commissaire uses (never shown again).
    pub token: Option<String>,
    /// Client certificate file on the server (with `certificate_key_path`).
    pub certificate_path: Option<String>,
    /// Client key file on the server (with `certificate_path`).
    pub certificate_key_path: Option<String>,
    /// CA bundle file on the server.
    pub ca_path: Option<String>,
    /// Skip TLS verification of the API server (default false).
    pub insecure_skip_tls_verify: Option<bool>,
    /// How long a new host's node may take to become Ready (default 300).
    #[schema(minimum = 1)]
    pub node_ready_timeout_seconds: Option<u64>,
}

/// Body of `PUT /api/v0/containermanager/{name}`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({"type": "kubernetes", "options": {"server_url": "https://192.168.152.1:6443", "token": "eyJhbGciOi..."}}))]
pub struct ContainerManagerBody {
    /// The manager's kind (default `openshift`).
    #[serde(rename = "type")]
    pub kind: Option<model::ContainerManagerType>,
    /// Type-specific options.
    pub options: Option<ContainerManagerOptions>,
}

/// A number of hosts, or a percentage of the operation's hosts such as `"25%"`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(untagged)]
pub enum HostAmount {
    /// An absolute number of hosts.
    Count(u64),
    /// A percentage, 0-100.
    Percent(String),
}

// Written by hand: the derive cannot put bounds and patterns on the variants of an untagged
// enum, and they are the point of the schema.
impl utoipa::PartialSchema for HostAmount {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Type};
        OneOfBuilder::new()
            .description(Some(
                "A number of hosts, or a percentage of the operation's hosts such as \"25%\"",
            ))
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .minimum(Some(0)),
            )
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .pattern(Some("^(100|[0-9]{1,2})%$")),
            )
            .into()
    }
}

impl ToSchema for HostAmount {}

/// Body of `PUT /api/v0/cluster/{name}/restart` (every field optional).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({"batch_size": "25%", "max_failures": 1, "pause_seconds": 5, "drain": true, "timeout_seconds": 900}))]
pub struct RestartBody {
    /// Hosts in flight at once (at least 1, or a percentage; default 1).
    pub batch_size: Option<HostAmount>,
    /// Failed hosts tolerated over the whole run before it stops (default 0).
    pub max_failures: Option<HostAmount>,
    /// Wait between batches, 0-86400 seconds (default 0).
    #[schema(minimum = 0, maximum = 86400)]
    pub pause_seconds: Option<f64>,
    /// Cordon and drain through the container manager before, uncordon after (default: when
    /// the cluster has a manager).
    pub drain: Option<bool>,
    /// Limit for one host's whole step, reboot included, 1-86400 seconds (default 600).
    #[schema(minimum = 1, maximum = 86400)]
    pub timeout_seconds: Option<u64>,
}

/// Body of `PUT /api/v0/cluster/{name}/upgrade` (every field optional).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({"batch_size": 2, "max_failures": "10%", "reboot": true}))]
pub struct UpgradeBody {
    /// Hosts in flight at once (at least 1, or a percentage; default 1).
    pub batch_size: Option<HostAmount>,
    /// Failed hosts tolerated over the whole run before it stops (default 0).
    pub max_failures: Option<HostAmount>,
    /// Wait between batches, 0-86400 seconds (default 0).
    #[schema(minimum = 0, maximum = 86400)]
    pub pause_seconds: Option<f64>,
    /// Cordon and drain through the container manager before, uncordon after.
    pub drain: Option<bool>,
    /// Reboot after the package transaction (OSTree hosts always reboot; default false).
    pub reboot: Option<bool>,
    /// Limit for one host's whole step, reboot included, 1-86400 seconds (default 600).
    #[schema(minimum = 1, maximum = 86400)]
    pub timeout_seconds: Option<u64>,
}

/// Body of `PUT /api/v0/cluster/{name}/deploy`: `version` is required.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({"version": "7.2.1", "batch_size": 1}))]
pub struct DeployBody {
    /// The OSTree version to deploy on every host.
    #[schema(pattern = "^[A-Za-z0-9.:+_-]+$")]
    pub version: String,
    /// Hosts in flight at once (at least 1, or a percentage; default 1).
    pub batch_size: Option<HostAmount>,
    /// Failed hosts tolerated over the whole run before it stops (default 0).
    pub max_failures: Option<HostAmount>,
    /// Wait between batches, 0-86400 seconds (default 0).
    #[schema(minimum = 0, maximum = 86400)]
    pub pause_seconds: Option<f64>,
    /// Cordon and drain through the container manager before, uncordon after.
    pub drain: Option<bool>,
    /// Limit for one host's whole step, reboot included, 1-86400 seconds (default 600).
    #[schema(minimum = 1, maximum = 86400)]
    pub timeout_seconds: Option<u64>,
}

/// Body of `PUT /api/v0/host/{address}/hostkey`; an empty body (or no `key`) trusts the key
/// the host presents at the next contact.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({"key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGb0cm9vdC1leGFtcGxlLWtleS1tYXRlcmlhbA"}))]
pub struct HostKeyBody {
    /// OpenSSH public key line to trust.
    pub key: Option<String>,
}

/// Body of `POST /api/v0/registration-tokens`; every field optional.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({"cluster": "prod", "expires_in": 3600, "single_use": true, "description": "rack 12 re-install"}))]
pub struct RegistrationTokenBody {
    /// The only cluster hosts registering with the token may join (they join it when they
    /// name none).
    pub cluster: Option<String>,
    /// Lifetime in seconds (default 86400, at most one year).
    pub expires_in: Option<u64>,
    /// Whether the first host registered with it uses it up (default false).
    pub single_use: Option<bool>,
    /// Free text, up to 200 characters.
    pub description: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use model::{
        ClusterRequest, ContainerManagerRequest, Fields, HostCreateRequest, MembershipRequest,
        NetworkRequest, OperationKind, OperationOptions,
    };
    use utoipa::PartialSchema;

    /// The example of a schema, as the request fields a handler would parse.
    fn example<T: ToSchema + PartialSchema>() -> Fields {
        let schema = serde_json::to_value(T::schema()).unwrap();
        let ex = schema
            .get("example")
            .or_else(|| schema.get("examples").and_then(|e| e.get(0)))
            .unwrap_or_else(|| panic!("{} has no example: {schema}", T::name()));
        ex.as_object()
            .unwrap_or_else(|| panic!("{} example is not an object", T::name()))
            .clone()
    }

    #[test]
    fn every_example_is_accepted_by_the_real_parser() {
        HostCreateRequest::from_json(&example::<HostCreateBody>()).unwrap();
        ClusterRequest::from_json(&example::<ClusterBody>()).unwrap();
        MembershipRequest::from_json(&example::<MembershipBody>()).unwrap();
        NetworkRequest::from_json("n", &example::<NetworkBody>()).unwrap();
        ContainerManagerRequest::from_json("m", &example::<ContainerManagerBody>()).unwrap();
        OperationOptions::from_json(OperationKind::Restart, &example::<RestartBody>(), true)
            .unwrap();
        OperationOptions::from_json(OperationKind::Upgrade, &example::<UpgradeBody>(), false)
            .unwrap();
        let (_, version) =
            OperationOptions::from_json(OperationKind::Deploy, &example::<DeployBody>(), false)
                .unwrap();
        assert_eq!(version.as_deref(), Some("7.2.1"));
        assert!(example::<HostKeyBody>()["key"].is_string());
    }

    #[test]
    fn the_name_pattern_matches_the_validator() {
        // The same alphabet and length as model::validate_name.
        assert!(NAME_PATTERN.ends_with("{1,253}$"));
        assert!(model::validate_name("n", &"a".repeat(253)).is_ok());
        assert!(model::validate_name("n", &"a".repeat(254)).is_err());
        assert!(model::validate_name("n", "a_b-9").is_ok());
        assert!(model::validate_name("n", "a.b").is_err());
    }
}
