//! Hosts as container-manager nodes: joining a bootstrapped host (register, wait for Ready),
//! keeping the stored view of its node current, cordon/drain/uncordon for rolling operations,
//! and removing the node when the host leaves its cluster.
//!
//! Removals are durable: the API writes a `node_removals/<address>` record in the same
//! transaction that takes the host out of its cluster; [`NodeRemover`] works through those
//! records (on every scan, and as jobs arrive) and deletes each once the manager has answered,
//! so a crash never forgets a node.

use std::sync::Arc;
use std::time::Duration;

use kube::{Registration, Removal, SharedManager};
use model::{Cluster, ContainerManagerConfig, ContainerManagerType, NodeRemoval, NodeView};
use std::time::Instant;
use store::records::{
    self, container_manager_key, get_container_manager_secrets, get_json, list_json,
    node_removal_key,
};

use crate::Ctx;
use crate::driver::{Reconciler, WorkerKind};
use async_trait::async_trait;
use domain::{DomainError, DomainResult};

/// How long a new host's node may take to become Ready when the manager does not say.
pub const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(300);

/// A cluster's container manager, ready to call.
pub struct Manager {
    /// Its configuration (secret options opened).
    pub cfg: ContainerManagerConfig,
    /// The client.
    pub api: SharedManager,
}

impl Manager {
    /// Whether this manager has real nodes (not the trivial one).
    pub fn has_nodes(&self) -> bool {
        self.cfg.kind != ContainerManagerType::Trivial
    }

    /// How long a new node may take to become Ready.
    pub fn ready_timeout(&self) -> Duration {
        self.cfg
            .options
            .get("node_ready_timeout_seconds")
            .and_then(serde_json::Value::as_u64)
            .map(Duration::from_secs)
            .unwrap_or(DEFAULT_READY_TIMEOUT)
    }
}

/// Loads a container manager by name (with its sealed options opened) and builds its client.
/// `Ok(None)` when no such manager exists; `Err` says why it cannot be used.
pub async fn load_manager(ctx: &Ctx, name: &str) -> Result<Option<Manager>, String> {
    let store = ctx.store.as_ref();
    let Some(v) = get_json::<ContainerManagerConfig>(store, &container_manager_key(name))
        .await
        .map_err(|e| format!("store: {e}"))?
    else {
        return Ok(None);
    };
    let mut cfg = v.value;
    cfg.options.extend(
        get_container_manager_secrets(store, &ctx.sealer, name)
            .await
            .map_err(|e| format!("store: {e}"))?,
    );
    let api = kube::manager_for(&cfg).map_err(|e| format!("container manager {name}: {e}"))?;
    Ok(Some(Manager { cfg, api }))
}

/// The container manager of a cluster, if it has one.
pub async fn manager_of_cluster(ctx: &Ctx, cluster: &Cluster) -> Result<Option<Manager>, String> {
    if cluster.container_manager.is_empty() {
        return Ok(None);
    }
    match load_manager(ctx, &cluster.container_manager).await? {
        Some(m) => Ok(Some(m)),
        None => Err(format!(
            "container manager {} of cluster {} does not exist",
            cluster.container_manager, cluster.name
        )),
    }
}

/// Stores the latest view of a host's node (best effort: a view is advisory).
pub async fn save_view(ctx: &Ctx, address: &str, view: &NodeView) {
    if let Err(e) = domain::nodes::save_view(ctx.store.as_ref(), address, view).await {
        tracing::warn!(address, error = %e, "cannot store the node view");
    }
}

/// Registers a bootstrapped host's node and waits, with backoff, until it is Ready or the
/// manager's ready timeout passes. Answers the last view, or why the host cannot be active.
pub async fn join(ctx: &Ctx, m: &Manager, address: &str) -> Result<NodeView, String> {
    match m.api.register(address).await {
        Ok(Registration::Created) => {
            tracing::info!(address, manager = %m.cfg.name, "node registered");
        }
        Ok(Registration::Existing { managed }) => {
            tracing::info!(address, manager = %m.cfg.name, managed, "node already registered");
        }
        Err(e) => return Err(format!("registering the node: {e}")),
    }
    let timeout = m.ready_timeout();
    match wait_ready(
        ctx,
        m,
        address,
        Instant::now() + timeout,
        Duration::from_secs(5),
    )
    .await?
    {
        Ok(view) => Ok(view),
        Err(view) => Err(format!(
            "node {address} did not become Ready within {} s (last: {})",
            timeout.as_secs(),
            if view.reason.is_empty() {
                "no Ready condition"
            } else {
                &view.reason
            }
        )),
    }
}

/// Polls the node (with backoff up to `max_delay`, storing each view) until it is Ready
/// (`Ok(Ok(view))`) or `deadline` passes (`Ok(Err(last view))`); `Err` when the API fails.
async fn wait_ready(
    ctx: &Ctx,
    m: &Manager,
    address: &str,
    deadline: Instant,
    max_delay: Duration,
) -> Result<Result<NodeView, NodeView>, String> {
    let mut delay = Duration::from_millis(250);
    loop {
        let view = m
            .api
            .view(address)
            .await
            .map_err(|e| format!("reading the node: {e}"))?;
        save_view(ctx, address, &view).await;
        if view.ready {
            return Ok(Ok(view));
        }
        let now = Instant::now();
        if now >= deadline {
            return Ok(Err(view));
        }
        tokio::time::sleep(delay.min(deadline - now)).await;
        delay = (delay * 2).min(max_delay);
    }
}

/// Cordons and drains a host's node before a restart; bounded by `deadline`.
pub async fn drain(m: &Manager, address: &str, deadline: Instant) -> Result<(), String> {
    if !m.has_nodes() {
        return Ok(());
    }
    m.api
        .cordon(address)
        .await
        .map_err(|e| format!("cordoning the node: {e}"))?;
    let left = deadline.saturating_duration_since(Instant::now());
    let report = m
        .api
        .drain(address, left)
        .await
        .map_err(|e| format!("draining the node: {e}"))?;
    tracing::info!(
        address,
        evicted = report.evicted.len(),
        skipped = report.skipped.len(),
        "node drained"
    );
    Ok(())
}

/// Uncordons a host's node and waits until it is Ready again (bounded by `deadline`).
pub async fn uncordon(
    ctx: &Ctx,
    m: &Manager,
    address: &str,
    deadline: Instant,
) -> Result<(), String> {
    if !m.has_nodes() {
        return Ok(());
    }
    m.api
        .uncordon(address)
        .await
        .map_err(|e| format!("uncordoning the node: {e}"))?;
    match wait_ready(ctx, m, address, deadline, Duration::from_secs(2)).await? {
        Ok(_) => Ok(()),
        Err(view) => Err(format!(
            "node {address} was uncordoned but is not Ready ({})",
            view.reason
        )),
    }
}

/// Uncordons after a failure, retrying a few times: a failed host must not stay cordoned.
pub async fn uncordon_after_failure(m: &Manager, address: &str) {
    if !m.has_nodes() {
        return;
    }
    let mut delay = Duration::from_millis(500);
    for attempt in 1..=5u32 {
        match m.api.uncordon(address).await {
            Ok(()) => {
                tracing::info!(address, "node uncordoned after the host failed");
                return;
            }
            Err(e) => {
                tracing::warn!(address, attempt, error = %e, "cannot uncordon the node of a failed host");
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
        }
    }
}

/// Node removals as a reconciler (the `containermgr` worker): its keys are host addresses
/// with a pending `node_removals/` record.
pub struct NodeRemover {
    ctx: Arc<Ctx>,
}

impl NodeRemover {
    /// The node remover of this process.
    pub fn new(ctx: Arc<Ctx>) -> Self {
        NodeRemover { ctx }
    }
}

#[async_trait]
impl Reconciler for NodeRemover {
    fn kind(&self) -> WorkerKind {
        WorkerKind::Containermgr
    }

    async fn scan(&self) -> DomainResult<Vec<String>> {
        Ok(
            list_json::<NodeRemoval>(self.ctx.store.as_ref(), records::NODE_REMOVALS)
                .await?
                .into_iter()
                .map(|r| r.value.address)
                .collect(),
        )
    }

    async fn reconcile(&self, address: &str) -> DomainResult<()> {
        // Failures are the manager's (unreachable API, refused request): retried with backoff.
        remove(&self.ctx, address)
            .await
            .map_err(DomainError::Unavailable)
    }
}

/// One removal attempt; the pending record is deleted once the manager has answered.
async fn remove(ctx: &Ctx, address: &str) -> Result<(), String> {
    let store = ctx.store.as_ref();
    let key = node_removal_key(address);
    let Some(rec) = get_json::<NodeRemoval>(store, &key)
        .await
        .map_err(|e| format!("store: {e}"))?
    else {
        return Ok(());
    };
    let outcome = match load_manager(ctx, &rec.value.container_manager).await? {
        Some(m) => Some(
            m.api
                .remove(address)
                .await
                .map_err(|e| format!("removing the node: {e}"))?,
        ),
        None => None,
    };
    match outcome {
        Some(Removal::Deleted) => {
            tracing::info!(address, manager = %rec.value.container_manager, "node removed")
        }
        Some(Removal::NotOurs) => tracing::info!(
            address,
            "node left in place: it was not registered by Commissaire"
        ),
        Some(Removal::Absent) => tracing::info!(address, "node already absent"),
        None => tracing::warn!(
            address,
            manager = %rec.value.container_manager,
            "container manager no longer exists; node removal dropped"
        ),
    }
    domain::nodes::finish_removal(store, address, rec.mod_revision)
        .await
        .map_err(|e| format!("store: {e}"))
}
