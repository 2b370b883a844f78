//! Container managers: what Commissaire asks of the system that schedules containers on the
//! hosts. `kubernetes` and `openshift` talk to the Kubernetes API (nodes, cordon, drain through
//! the Eviction API); `trivial` is in-process and always agrees (tests, unmanaged clusters).
//!
//! A node's name is the host's address. Commissaire marks the nodes it registers with the label
//! [`MANAGED_LABEL`]` = `[`MANAGED_VALUE`] and only ever deletes nodes that carry it.
#![warn(missing_docs)]

pub mod client;
pub mod trusted;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use model::{ContainerManagerConfig, ContainerManagerType, NodeView, now_timestamp};
use serde_json::{Value, json};
use tokio::time::Instant;

pub use client::{Created, Eviction, KubeClient};

/// Label Commissaire puts on the nodes it registers.
pub const MANAGED_LABEL: &str = "app.kubernetes.io/managed-by";
/// Value of [`MANAGED_LABEL`] on nodes Commissaire registered.
pub const MANAGED_VALUE: &str = "commissaire";
/// Annotation of mirror (static) pods, which the API cannot evict.
const MIRROR_ANNOTATION: &str = "kubernetes.io/config.mirror";

/// Why a container manager call failed. Messages name the server and what to fix; they never
/// contain the token.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    /// The manager's options are unusable (a file missing, not PEM, a bad URL).
    #[error("{0}")]
    Config(String),
    /// No answer: connection refused, TLS handshake failed (wrong CA), timeout.
    #[error("cannot reach the Kubernetes API at {server}: {detail}")]
    Unreachable {
        /// The API server's URL.
        server: String,
        /// The underlying error chain.
        detail: String,
    },
    /// 401: the token or client certificate was not accepted.
    #[error(
        "the Kubernetes API at {server} rejected our credentials ({detail}); check the container manager's token or client certificate"
    )]
    Unauthorized {
        /// The API server's URL.
        server: String,
        /// The API's message.
        detail: String,
    },
    /// 403: authenticated but not allowed.
    #[error(
        "the Kubernetes API at {server} does not allow this to our credentials: {detail}; grant the container manager's account access to nodes, pods and evictions"
    )]
    Forbidden {
        /// The API server's URL.
        server: String,
        /// What was refused.
        detail: String,
    },
    /// Any other unexpected answer.
    #[error("the Kubernetes API at {server} answered unexpectedly, {detail}")]
    Api {
        /// The API server's URL.
        server: String,
        /// What was asked and what came back.
        detail: String,
    },
    /// The node does not exist.
    #[error("node {0} is not registered")]
    NoNode(String),
    /// A drain did not finish in time.
    #[error("{0}")]
    DrainTimeout(String),
}

/// What registering a node did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Registration {
    /// Commissaire created the node object (and labelled it as its own).
    Created,
    /// It already existed; `managed` tells whether Commissaire had registered it.
    Existing {
        /// Carries [`MANAGED_LABEL`].
        managed: bool,
    },
}

/// What removing a node did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Removal {
    /// Deleted.
    Deleted,
    /// Left alone: Commissaire did not register it.
    NotOurs,
    /// There was no such node.
    Absent,
}

/// What a drain evicted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DrainReport {
    /// `namespace/name` of the pods evicted.
    pub evicted: Vec<String>,
    /// Pods left in place on purpose (DaemonSet and mirror pods).
    pub skipped: Vec<String>,
}

/// The operations Commissaire needs from a container manager.
#[async_trait]
pub trait ContainerManager: Send + Sync {
    /// Registers the node of a host, unless it already exists.
    async fn register(&self, node: &str) -> Result<Registration, KubeError>;
    /// The node as the manager sees it now; `registered: false` when it does not exist.
    async fn view(&self, node: &str) -> Result<NodeView, KubeError>;
    /// Marks the node unschedulable.
    async fn cordon(&self, node: &str) -> Result<(), KubeError>;
    /// Evicts the node's pods (not DaemonSet or mirror pods) through the Eviction API, retrying
    /// evictions refused by a PodDisruptionBudget, until none is left or `timeout` passes.
    async fn drain(&self, node: &str, timeout: Duration) -> Result<DrainReport, KubeError>;
    /// Marks the node schedulable again.
    async fn uncordon(&self, node: &str) -> Result<(), KubeError>;
    /// Deletes the node if Commissaire registered it.
    async fn remove(&self, node: &str) -> Result<Removal, KubeError>;
}

/// A shared container manager.
pub type SharedManager = Arc<dyn ContainerManager>;

/// The manager for a configuration (with its secret options opened).
pub fn manager_for(cfg: &ContainerManagerConfig) -> Result<SharedManager, KubeError> {
    Ok(match cfg.kind {
        ContainerManagerType::Trivial => Arc::new(Trivial {
            name: cfg.name.clone(),
        }),
        ContainerManagerType::Kubernetes | ContainerManagerType::Openshift => {
            Arc::new(Kubernetes {
                name: cfg.name.clone(),
                client: KubeClient::from_options(&cfg.options)?,
            })
        }
    })
}

/// The in-process manager: every node is registered, Ready and has nothing to drain.
#[derive(Debug)]
pub struct Trivial {
    name: String,
}

#[async_trait]
impl ContainerManager for Trivial {
    async fn register(&self, _node: &str) -> Result<Registration, KubeError> {
        Ok(Registration::Existing { managed: true })
    }
    async fn view(&self, node: &str) -> Result<NodeView, KubeError> {
        Ok(NodeView {
            container_manager: self.name.clone(),
            node: node.to_string(),
            registered: true,
            ready: true,
            unschedulable: false,
            managed: true,
            reason: "trivial container manager".into(),
            kubelet_version: String::new(),
            checked_at: now_timestamp(),
        })
    }
    async fn cordon(&self, _node: &str) -> Result<(), KubeError> {
        Ok(())
    }
    async fn drain(&self, _node: &str, _timeout: Duration) -> Result<DrainReport, KubeError> {
        Ok(DrainReport::default())
    }
    async fn uncordon(&self, _node: &str) -> Result<(), KubeError> {
        Ok(())
    }
    async fn remove(&self, _node: &str) -> Result<Removal, KubeError> {
        Ok(Removal::Deleted)
    }
}

/// A Kubernetes or OpenShift cluster's API.
#[derive(Debug)]
pub struct Kubernetes {
    name: String,
    client: KubeClient,
}

impl Kubernetes {
    /// The API client.
    pub fn client(&self) -> &KubeClient {
        &self.client
    }
}

fn is_managed(node: &Value) -> bool {
    node["metadata"]["labels"][MANAGED_LABEL].as_str() == Some(MANAGED_VALUE)
}

/// Reads a Node object into the view shown to operators.
pub fn node_view(manager: &str, name: &str, node: Option<&Value>) -> NodeView {
    let Some(node) = node else {
        return NodeView {
            container_manager: manager.to_string(),
            node: name.to_string(),
            reason: "the node is not registered".into(),
            checked_at: now_timestamp(),
            ..NodeView::default()
        };
    };
    let ready = node["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"));
    let reason = match ready {
        Some(c) => {
            let mut r = c["reason"].as_str().unwrap_or_default().to_string();
            if let Some(m) = c["message"].as_str().filter(|m| !m.is_empty()) {
                if !r.is_empty() {
                    r.push_str(": ");
                }
                r.push_str(m);
            }
            r
        }
        None => "the node reports no Ready condition yet".into(),
    };
    NodeView {
        container_manager: manager.to_string(),
        node: name.to_string(),
        registered: true,
        ready: ready.is_some_and(|c| c["status"] == "True"),
        unschedulable: node["spec"]["unschedulable"].as_bool().unwrap_or(false),
        managed: is_managed(node),
        reason,
        kubelet_version: node["status"]["nodeInfo"]["kubeletVersion"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        checked_at: now_timestamp(),
    }
}

fn pod_name(p: &Value) -> String {
    format!(
        "{}/{}",
        p["metadata"]["namespace"].as_str().unwrap_or("default"),
        p["metadata"]["name"].as_str().unwrap_or_default()
    )
}

/// Pods a drain leaves alone: DaemonSet pods (their controller would put them right back) and
/// mirror pods (the kubelet owns them; the API cannot evict them).
fn stays(p: &Value) -> bool {
    let daemonset = p["metadata"]["ownerReferences"]
        .as_array()
        .is_some_and(|os| os.iter().any(|o| o["kind"] == "DaemonSet"));
    let mirror = p["metadata"]["annotations"][MIRROR_ANNOTATION].is_string();
    daemonset || mirror
}

#[async_trait]
impl ContainerManager for Kubernetes {
    async fn register(&self, node: &str) -> Result<Registration, KubeError> {
        let labels = BTreeMap::from([(MANAGED_LABEL.to_string(), MANAGED_VALUE.to_string())]);
        match self.client.create_node(node, &labels).await? {
            Created::New(_) => Ok(Registration::Created),
            Created::Existed => {
                let managed = self
                    .client
                    .get_node(node)
                    .await?
                    .is_some_and(|n| is_managed(&n));
                Ok(Registration::Existing { managed })
            }
        }
    }

    async fn view(&self, node: &str) -> Result<NodeView, KubeError> {
        let n = self.client.get_node(node).await?;
        Ok(node_view(&self.name, node, n.as_ref()))
    }

    async fn cordon(&self, node: &str) -> Result<(), KubeError> {
        self.client
            .patch_node(node, json!({"spec": {"unschedulable": true}}))
            .await
    }

    async fn drain(&self, node: &str, timeout: Duration) -> Result<DrainReport, KubeError> {
        let deadline = Instant::now() + timeout;
        let mut report = DrainReport::default();
        let mut delay = Duration::from_millis(250);
        loop {
            let pods = self.client.pods_on(node).await?;
            let (skip, evict): (Vec<&Value>, Vec<&Value>) = pods.iter().partition(|p| stays(p));
            report.skipped = skip.iter().map(|p| pod_name(p)).collect();
            if evict.is_empty() {
                return Ok(report);
            }
            let mut refused = Vec::new();
            for p in evict {
                let ns = p["metadata"]["namespace"].as_str().unwrap_or("default");
                let name = p["metadata"]["name"].as_str().unwrap_or_default();
                match self.client.evict(ns, name).await? {
                    Eviction::Accepted | Eviction::Gone => {
                        let full = pod_name(p);
                        if !report.evicted.contains(&full) {
                            report.evicted.push(full);
                        }
                    }
                    Eviction::Refused(why) => refused.push(format!("{} ({why})", pod_name(p))),
                }
            }
            let now = Instant::now();
            if now >= deadline {
                let still = if refused.is_empty() {
                    "pods are still terminating".to_string()
                } else {
                    format!("evictions refused: {}", refused.join(", "))
                };
                return Err(KubeError::DrainTimeout(format!(
                    "draining node {node} did not finish within {} s: {still}",
                    timeout.as_secs()
                )));
            }
            // Evicted pods take a moment to go; refused ones wait for their budget. Back off,
            // bounded by the deadline.
            tokio::time::sleep(delay.min(deadline - now)).await;
            delay = (delay * 2).min(Duration::from_secs(2));
        }
    }

    async fn uncordon(&self, node: &str) -> Result<(), KubeError> {
        match self
            .client
            .patch_node(node, json!({"spec": {"unschedulable": null}}))
            .await
        {
            // A node that is gone is not cordoned.
            Err(KubeError::NoNode(_)) => Ok(()),
            other => other,
        }
    }

    async fn remove(&self, node: &str) -> Result<Removal, KubeError> {
        match self.client.get_node(node).await? {
            None => Ok(Removal::Absent),
            Some(n) if !is_managed(&n) => Ok(Removal::NotOurs),
            Some(_) => Ok(if self.client.delete_node(node).await? {
                Removal::Deleted
            } else {
                Removal::Absent
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_views() {
        let none = node_view("k", "10.0.0.1", None);
        assert!(!none.registered && !none.ready);
        let n = json!({
            "metadata": {"name": "a", "labels": {MANAGED_LABEL: MANAGED_VALUE}},
            "spec": {"unschedulable": true},
            "status": {"conditions": [
                {"type": "MemoryPressure", "status": "False"},
                {"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "kubelet is posting ready status"}
            ], "nodeInfo": {"kubeletVersion": "v1.33.0"}}
        });
        let v = node_view("k", "a", Some(&n));
        assert!(v.registered && v.ready && v.unschedulable && v.managed);
        assert_eq!(v.reason, "KubeletReady: kubelet is posting ready status");
        assert_eq!(v.kubelet_version, "v1.33.0");
        let not_ours = json!({"metadata": {"name": "a", "labels": {MANAGED_LABEL: "someone"}}});
        let v = node_view("k", "a", Some(&not_ours));
        assert!(v.registered && !v.ready && !v.managed);
    }

    #[test]
    fn drain_leaves_daemonset_and_mirror_pods() {
        let ds = json!({"metadata": {"name": "p", "ownerReferences": [{"kind": "DaemonSet"}]}});
        let mirror = json!({"metadata": {"name": "p", "annotations": {MIRROR_ANNOTATION: "abc"}}});
        let rs = json!({"metadata": {"name": "p", "ownerReferences": [{"kind": "ReplicaSet"}]}});
        let bare = json!({"metadata": {"name": "p"}});
        assert!(stays(&ds) && stays(&mirror));
        assert!(!stays(&rs) && !stays(&bare));
    }

    #[test]
    fn bad_options_are_config_errors() {
        let opts = |v: Value| -> BTreeMap<String, Value> {
            v.as_object().unwrap().clone().into_iter().collect()
        };
        let e = KubeClient::from_options(&opts(json!({}))).unwrap_err();
        assert!(e.to_string().contains("server_url is required"), "{e}");
        // A server path is refused without being opened, whatever it names.
        for path in ["/nonexistent/ca.pem", "/etc/passwd", "/dev/zero"] {
            let e = KubeClient::from_options(&opts(
                json!({"server_url": "https://127.0.0.1:1", "ca_path": path}),
            ))
            .unwrap_err();
            assert!(
                e.to_string().contains("options.ca_path")
                    && e.to_string().contains("not the name of a file"),
                "{e}"
            );
        }
        let e = KubeClient::from_options(&opts(
            json!({"server_url": "https://127.0.0.1:1", "ca": "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n"}),
        ))
        .unwrap_err();
        assert!(e.to_string().contains("options.ca"), "{e}");
    }

    #[test]
    fn debug_never_shows_the_token() {
        let opts: BTreeMap<String, Value> = [
            ("server_url".to_string(), json!("https://127.0.0.1:1")),
            ("token".to_string(), json!("s3cr3t-token")),
        ]
        .into_iter()
        .collect();
        let c = KubeClient::from_options(&opts).unwrap();
        assert!(!format!("{c:?}").contains("s3cr3t"));
    }
}
