//! Wire types of the Commissaire `/api/v0` REST API and their validation.
//!
//! The JSON shapes are those of the original Commissaire (2017) so existing clients keep
//! working; fields we add (`status_reason`, operation options) never rename or remove the
//! original ones. Request bodies are parsed field by field from a JSON object by the
//! `*Request::from_json` functions, so every rejection names the field and what was wrong with
//! it. This crate does no I/O.
#![warn(missing_docs)]

pub mod access;
pub mod operation;
pub mod request;
pub mod validate;

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

pub use access::*;
pub use operation::*;
pub use request::*;
pub use validate::{canonical_address, validate_name};

/// A request field that failed validation, with an operator-readable explanation.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ValidationError {
    /// The offending field (`address`, `options.server_url`, `body`, ...).
    pub field: String,
    /// What was wrong with it.
    pub message: String,
}

impl ValidationError {
    /// Builds an error for `field`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Formats a timestamp the way the original API does: ISO-8601 UTC with microseconds and no
/// zone suffix (`2015-12-17T15:48:18.710454`).
pub fn format_timestamp(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.6f").to_string()
}

/// The current time in the API's timestamp format.
pub fn now_timestamp() -> String {
    format_timestamp(chrono::Utc::now())
}

/// Lifecycle state of a host.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum HostState {
    /// Connecting and gathering facts.
    Investigating,
    /// Installing and configuring the node software.
    Bootstrapping,
    /// Bootstrapped, not registered with a container manager.
    Disassociated,
    /// Bootstrapped and registered with its cluster's container manager.
    Active,
    /// A step failed or the host is unreachable; see `status_reason`.
    Failed,
}

impl HostState {
    /// Whether a host in this state may join a cluster (`active` or `disassociated`).
    pub fn can_join_cluster(self) -> bool {
        matches!(self, HostState::Active | HostState::Disassociated)
    }

    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            HostState::Investigating => "investigating",
            HostState::Bootstrapping => "bootstrapping",
            HostState::Disassociated => "disassociated",
            HostState::Active => "active",
            HostState::Failed => "failed",
        }
    }
}

impl fmt::Display for HostState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a host is `failed`, as a closed set the workers act on (the human sentence is in
/// `status_reason`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// The host did not answer over SSH (network, timeout, sshd down). The watcher brings it
    /// back when it answers again.
    Unreachable,
    /// The host presented a different SSH host key than the one trusted. Only an operator
    /// re-trusting the key brings it back.
    HostKeyChanged,
    /// The stored credentials were refused, or cannot be used.
    Credentials,
    /// Facts could not be gathered, or the operating system is not supported.
    Facts,
    /// Installing or configuring the node software failed.
    Bootstrap,
    /// The cluster's network or container manager is missing or unusable.
    Configuration,
    /// The container manager did not report the host's node Ready. The watcher makes the host
    /// `active` once the node is Ready.
    Node,
}

impl FailureKind {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Unreachable => "unreachable",
            FailureKind::HostKeyChanged => "host_key_changed",
            FailureKind::Credentials => "credentials",
            FailureKind::Facts => "facts",
            FailureKind::Bootstrap => "bootstrap",
            FailureKind::Configuration => "configuration",
            FailureKind::Node => "node",
        }
    }
}

impl fmt::Display for FailureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The SSH host key trusted for a host (public data, so stored in clear).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TrustedHostKey {
    /// The host's address.
    pub address: String,
    /// OpenSSH public key line, e.g. `ssh-ed25519 AAAA...`.
    pub key: String,
    /// `SHA256:...` fingerprint of the key.
    pub fingerprint: String,
    /// When the key was first trusted.
    pub trusted_at: String,
}

/// A managed host: its address, lifecycle state and gathered facts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Host {
    /// IPv4, IPv6 or DNS name; the host's identity.
    pub address: String,
    /// Lifecycle state.
    pub status: HostState,
    /// Operating system, as the original's enum: `atomic` for an OSTree host, else the
    /// distribution id (`fedora`, `rhel`, `centos`, `debian`, ...); empty until investigated.
    #[serde(default)]
    pub os: String,
    /// The distribution id from `/etc/os-release` (`fedora`, `rhel`, `centos`, `debian`, ...),
    /// also for OSTree hosts; empty until investigated.
    #[serde(default)]
    pub distribution: String,
    /// Number of CPUs.
    #[serde(default)]
    pub cpus: i64,
    /// Total memory in KiB.
    #[serde(default)]
    pub memory: i64,
    /// Size of the root filesystem in bytes.
    #[serde(default)]
    pub space: i64,
    /// Time of the last successful check, `""` if never.
    #[serde(default)]
    pub last_check: String,
    /// Where the host record came from (kept for compatibility; normally `""`).
    #[serde(default)]
    pub source: String,
    /// Why the host is `failed`, or why its node is not Ready, in words (empty otherwise).
    #[serde(default)]
    pub status_reason: String,
    /// What kind of failure made the host `failed` (absent otherwise). Workers decide recovery
    /// from this, never from the wording of `status_reason`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<FailureKind>,
    /// Operating system version (`VERSION_ID`), empty until investigated.
    #[serde(default)]
    pub os_version: String,
    /// Whether the host boots from OSTree (an "atomic" host, updated with rpm-ostree).
    #[serde(default)]
    pub ostree: bool,
    /// Boot id seen at the last contact; it changes on every reboot.
    #[serde(default)]
    pub boot_id: String,
    /// Whether bootstrap has completed on this host.
    #[serde(default)]
    pub bootstrapped: bool,
}

impl Host {
    /// A freshly registered host, waiting for investigation.
    pub fn new(address: String) -> Self {
        Host {
            address,
            status: HostState::Investigating,
            os: String::new(),
            distribution: String::new(),
            cpus: 0,
            memory: 0,
            space: 0,
            last_check: String::new(),
            source: String::new(),
            status_reason: String::new(),
            failure: None,
            os_version: String::new(),
            ostree: false,
            boot_id: String::new(),
            bootstrapped: false,
        }
    }

    /// The distribution id that selects per-OS behaviour. Records written before
    /// `distribution` existed hold the distribution id in `os`.
    pub fn distribution_id(&self) -> &str {
        if self.distribution.is_empty() {
            &self.os
        } else {
            &self.distribution
        }
    }
}

/// The value of [`Host::os`] for a host with distribution id `distribution`: `atomic` for
/// OSTree hosts (the original's enum: `atomic`, `rhel`, `centos`, `fedora`), else the id.
pub fn os_name(distribution: &str, ostree: bool) -> String {
    if ostree {
        OS_ATOMIC.to_string()
    } else {
        distribution.to_string()
    }
}

/// [`Host::os`] of every OSTree host.
pub const OS_ATOMIC: &str = "atomic";

/// SSH credentials of a host. Stored sealed; returned only by `GET /host/{address}/creds`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct HostCreds {
    /// The host's address.
    pub address: String,
    /// Base64 of the private key file (OpenSSH or PEM).
    pub ssh_priv_key: String,
    /// User to log in as.
    pub remote_user: String,
}

impl fmt::Debug for HostCreds {
    // Never print the key, even in debug output.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HostCreds")
            .field("address", &self.address)
            .field("ssh_priv_key", &"<redacted>")
            .field("remote_user", &self.remote_user)
            .finish()
    }
}

/// The `host` part of [`HostStatus`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct HostStatusHost {
    /// Lifecycle state.
    pub status: HostState,
    /// Time of the last successful check.
    pub last_check: String,
    /// Why the host is `failed` (empty otherwise).
    #[serde(default)]
    pub status_reason: String,
}

/// Health of a host as seen by Commissaire and, if any, its container manager.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct HostStatus {
    /// `host_only`, or `container_manager` when a manager reports the node.
    #[serde(rename = "type")]
    pub kind: String,
    /// The host's own state.
    pub host: HostStatusHost,
    /// The container manager's view of the node, a `NodeView` (`{}` when there is none).
    #[schema(value_type = Object)]
    pub container_manager: serde_json::Value,
}

/// A container manager's view of a host's node, as last observed by the workers (stored under
/// `nodes/<address>`, shown in `HostStatus.container_manager`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct NodeView {
    /// The container manager's name.
    pub container_manager: String,
    /// The node's name in the manager (the host's address).
    pub node: String,
    /// The node object exists.
    pub registered: bool,
    /// Its `Ready` condition is `True`.
    pub ready: bool,
    /// Cordoned (`spec.unschedulable`).
    #[serde(default)]
    pub unschedulable: bool,
    /// Commissaire registered the node (so it may delete it).
    #[serde(default)]
    pub managed: bool,
    /// `Ready` condition's reason and message, or why the node could not be read.
    #[serde(default)]
    pub reason: String,
    /// The kubelet's version, when reported.
    #[serde(default)]
    pub kubelet_version: String,
    /// When this view was taken (`%Y-%m-%dT%H:%M:%S.%f`, UTC).
    #[serde(default)]
    pub checked_at: String,
}

/// The cluster a host belongs to (stored under `memberships/<address>`). It exists exactly
/// when the cluster's `hostset` names the host; both are written in one transaction.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Membership {
    /// The cluster's name.
    pub cluster: String,
}

/// A node to remove from a container manager because its host left the cluster or was deleted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct NodeRemoval {
    /// The host's address (the node's name).
    pub address: String,
    /// The container manager to remove it from.
    pub container_manager: String,
    /// When the removal was requested.
    #[serde(default)]
    pub requested_at: String,
}

/// Computed health of a cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ClusterState {
    /// Every member is available (or there are none).
    Ok,
    /// Some member is not available.
    Degraded,
    /// Every member of a non-empty cluster is unavailable.
    Failed,
}

/// A cluster as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Cluster {
    /// The cluster's name.
    pub name: String,
    /// Stored for compatibility; the API always reports the computed status.
    #[serde(default)]
    pub status: String,
    /// Name of the cluster's network.
    #[serde(default = "default_network")]
    pub network: String,
    /// Name of the container manager, `""` for none.
    #[serde(default)]
    pub container_manager: String,
    /// Addresses of the member hosts.
    #[serde(default)]
    pub hostset: Vec<String>,
}

fn default_network() -> String {
    DEFAULT_NETWORK.to_string()
}

/// The network that always exists.
pub const DEFAULT_NETWORK: &str = "default";

/// Member counts reported with a cluster.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ClusterHostsSummary {
    /// Number of members.
    pub total: u64,
    /// Members that are available: `active`, or `disassociated` in a cluster without a
    /// container manager.
    pub available: u64,
    /// Members that are not available.
    pub unavailable: u64,
}

/// A cluster as returned by the API: the stored record plus computed status and counts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ClusterView {
    /// The cluster's name.
    pub name: String,
    /// Computed from the members' states.
    pub status: ClusterState,
    /// Name of the cluster's network.
    pub network: String,
    /// Name of the container manager, `""` for none.
    pub container_manager: String,
    /// Addresses of the member hosts.
    pub hostset: Vec<String>,
    /// Member counts.
    pub hosts: ClusterHostsSummary,
    /// The container manager's view of the members' nodes, as the workers last saw them
    /// (absent when the cluster has no manager with nodes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes: Option<ClusterNodesSummary>,
}

/// Counts of a cluster's nodes in its container manager.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ClusterNodesSummary {
    /// Members whose node is registered.
    pub registered: u64,
    /// Members whose node is Ready.
    pub ready: u64,
    /// Members whose node is cordoned.
    pub unschedulable: u64,
}

impl ClusterNodesSummary {
    /// Counts the members' node views (`None`: no view recorded yet).
    pub fn compute(views: &[Option<NodeView>]) -> Self {
        let mut s = ClusterNodesSummary::default();
        for v in views.iter().flatten() {
            s.registered += u64::from(v.registered);
            s.ready += u64::from(v.ready);
            s.unschedulable += u64::from(v.unschedulable);
        }
        s
    }
}

impl ClusterView {
    /// Computes the view of `cluster` given the state of each member (`None`: the host record
    /// is missing, which counts as unavailable). A member is available when `active`, or
    /// `disassociated` in a cluster without a container manager (nothing more is expected of
    /// it there).
    pub fn compute(cluster: &Cluster, member_states: &[Option<HostState>]) -> Self {
        let total = member_states.len() as u64;
        let unmanaged = cluster.container_manager.is_empty();
        let available = member_states
            .iter()
            .filter(|s| match s {
                Some(HostState::Active) => true,
                Some(HostState::Disassociated) => unmanaged,
                _ => false,
            })
            .count() as u64;
        let unavailable = total - available;
        let status = if total > 0 && unavailable == total {
            ClusterState::Failed
        } else if unavailable > 0 {
            ClusterState::Degraded
        } else {
            ClusterState::Ok
        };
        ClusterView {
            name: cluster.name.clone(),
            status,
            network: cluster.network.clone(),
            container_manager: cluster.container_manager.clone(),
            hostset: cluster.hostset.clone(),
            hosts: ClusterHostsSummary {
                total,
                available,
                unavailable,
            },
            nodes: None,
        }
    }
}

/// Kind of network a cluster's hosts are configured for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum NetworkType {
    /// flannel reading its configuration from etcd.
    FlannelEtcd,
    /// flannel in client/server mode; needs `options.address` (`host:port`).
    FlannelServer,
    /// The seeds' name for client/server flannel: the same as [`NetworkType::FlannelServer`],
    /// stored and shown as given.
    FlanneldService,
}

impl NetworkType {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            NetworkType::FlannelEtcd => "flannel_etcd",
            NetworkType::FlannelServer => "flannel_server",
            NetworkType::FlanneldService => "flanneld_service",
        }
    }

    /// Whether flannel runs in client/server mode (`flannel_server` or `flanneld_service`).
    pub fn is_client_server(self) -> bool {
        matches!(
            self,
            NetworkType::FlannelServer | NetworkType::FlanneldService
        )
    }
}

/// A network configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Network {
    /// The network's name.
    pub name: String,
    /// The network's kind.
    #[serde(rename = "type")]
    pub kind: NetworkType,
    /// Type-specific options.
    #[schema(value_type = Object)]
    pub options: BTreeMap<String, serde_json::Value>,
}

impl Network {
    /// The built-in `default` network (flannel on etcd, no options).
    pub fn default_network() -> Self {
        Network {
            name: DEFAULT_NETWORK.to_string(),
            kind: NetworkType::FlannelEtcd,
            options: BTreeMap::new(),
        }
    }
}

/// Kind of container manager.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ContainerManagerType {
    /// OpenShift (Kubernetes API).
    Openshift,
    /// Kubernetes API.
    Kubernetes,
    /// In-process manager for tests and unmanaged clusters.
    Trivial,
}

impl ContainerManagerType {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ContainerManagerType::Openshift => "openshift",
            ContainerManagerType::Kubernetes => "kubernetes",
            ContainerManagerType::Trivial => "trivial",
        }
    }
}

/// A container manager's configuration.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ContainerManagerConfig {
    /// The manager's name.
    pub name: String,
    /// The manager's kind.
    #[serde(rename = "type")]
    pub kind: ContainerManagerType,
    /// Type-specific options (`server_url`, `token`, certificate paths).
    #[schema(value_type = Object)]
    pub options: BTreeMap<String, serde_json::Value>,
}

/// Option keys of container managers that hold secrets and are never shown.
pub const SECRET_OPTION_KEYS: &[&str] = &["token", "certificate_key"];

/// What the API shows instead of a secret option value.
pub const REDACTED: &str = "<redacted>";

impl ContainerManagerConfig {
    /// A copy fit for responses, logs and events: secret options replaced by [`REDACTED`].
    pub fn redacted(&self) -> Self {
        let mut copy = self.clone();
        for key in SECRET_OPTION_KEYS {
            if let Some(v) = copy.options.get_mut(*key) {
                *v = serde_json::Value::String(REDACTED.to_string());
            }
        }
        copy
    }
}

impl fmt::Debug for ContainerManagerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = self.redacted();
        f.debug_struct("ContainerManagerConfig")
            .field("name", &r.name)
            .field("kind", &r.kind)
            .field("options", &r.options)
            .finish()
    }
}

/// Body of every error response: `{"error": {"status": 404, "message": "..."}}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// The inside of [`ErrorBody`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// The HTTP status code.
    pub status: u16,
    /// What was wrong, in words an operator understands.
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn host_wire_shape_matches_original() {
        let h = Host::new("10.0.0.1".into());
        let v = serde_json::to_value(&h).unwrap();
        for key in [
            "address",
            "status",
            "os",
            "cpus",
            "memory",
            "space",
            "last_check",
            "source",
        ] {
            assert!(v.get(key).is_some(), "missing {key}");
        }
        assert_eq!(v["status"], "investigating");
        // A record written by the original (no status_reason) still reads.
        let orig = json!({"address": "127.0.0.7", "status": "active", "os": "fedora", "cpus": 1,
            "memory": 1234, "space": 12345, "last_check": "", "source": ""});
        let h: Host = serde_json::from_value(orig).unwrap();
        assert_eq!(h.status, HostState::Active);
    }

    #[test]
    fn cluster_status_computed() {
        let c = Cluster {
            name: "c".into(),
            status: String::new(),
            network: "default".into(),
            container_manager: String::new(),
            hostset: vec![],
        };
        assert_eq!(ClusterView::compute(&c, &[]).status, ClusterState::Ok);
        let a = Some(HostState::Active);
        let f = Some(HostState::Failed);
        assert_eq!(ClusterView::compute(&c, &[a, a]).status, ClusterState::Ok);
        let v = ClusterView::compute(&c, &[a, f]);
        assert_eq!(v.status, ClusterState::Degraded);
        assert_eq!(v.hosts.unavailable, 1);
        assert_eq!(
            ClusterView::compute(&c, &[f, None]).status,
            ClusterState::Failed
        );
        // Without a container manager nothing more than `disassociated` is expected.
        let d = Some(HostState::Disassociated);
        assert_eq!(ClusterView::compute(&c, &[d, d]).status, ClusterState::Ok);
        let managed = Cluster {
            container_manager: "k8s".into(),
            ..c.clone()
        };
        assert_eq!(
            ClusterView::compute(&managed, &[d, d]).status,
            ClusterState::Failed
        );
        assert_eq!(
            ClusterView::compute(&managed, &[a, d]).status,
            ClusterState::Degraded
        );
    }

    #[test]
    fn creds_debug_hides_key() {
        let c = HostCreds {
            address: "a".into(),
            ssh_priv_key: "SECRETKEY".into(),
            remote_user: "root".into(),
        };
        assert!(!format!("{c:?}").contains("SECRETKEY"));
    }

    #[test]
    fn timestamp_format() {
        let t = chrono::DateTime::parse_from_rfc3339("2015-12-17T15:48:18.710454Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        assert_eq!(format_timestamp(t), "2015-12-17T15:48:18.710454");
    }

    fn arb_state() -> impl Strategy<Value = HostState> {
        prop_oneof![
            Just(HostState::Investigating),
            Just(HostState::Bootstrapping),
            Just(HostState::Disassociated),
            Just(HostState::Active),
            Just(HostState::Failed),
        ]
    }

    proptest! {
        #[test]
        fn host_json_round_trip(addr in "[a-z]{1,10}\\.example", st in arb_state(), os in "[a-z]{0,8}",
                                cpus in 0i64..1024, memory in 0i64..i64::MAX, space in 0i64..i64::MAX,
                                reason in "\\PC{0,30}") {
            let h = Host { address: addr, status: st, distribution: os.clone(), os, cpus, memory, space,
                           last_check: now_timestamp(), source: String::new(), status_reason: reason, failure: None,
                           os_version: "7.4".into(), ostree: cpus % 2 == 0, boot_id: "b".into(),
                           bootstrapped: memory % 2 == 0 };
            let back: Host = serde_json::from_str(&serde_json::to_string(&h).unwrap()).unwrap();
            prop_assert_eq!(back, h);
        }

        #[test]
        fn network_json_round_trip(name in "[A-Za-z0-9_-]{1,30}", server in any::<bool>(), port in 1u16..) {
            let mut options = BTreeMap::new();
            let kind = if server {
                options.insert("address".to_string(), json!(format!("10.1.2.3:{port}")));
                NetworkType::FlannelServer
            } else { NetworkType::FlannelEtcd };
            let n = Network { name, kind, options };
            let back: Network = serde_json::from_str(&serde_json::to_string(&n).unwrap()).unwrap();
            prop_assert_eq!(back, n);
        }

        #[test]
        fn cluster_counts_add_up(states in proptest::collection::vec(proptest::option::of(arb_state()), 0..50)) {
            let c = Cluster { name: "c".into(), status: String::new(), network: "default".into(),
                              container_manager: String::new(), hostset: vec![] };
            let v = ClusterView::compute(&c, &states);
            prop_assert_eq!(v.hosts.total, states.len() as u64);
            prop_assert_eq!(v.hosts.available + v.hosts.unavailable, v.hosts.total);
        }
    }
}
