//! The watcher: checks every host on an interval and keeps its health current.
//!
//! Each round lists the hosts, then checks the settled ones (`active`, `disassociated`,
//! `failed`) with bounded concurrency, each at a random offset within the first half of the
//! interval so checks do not arrive in bursts. A check reuses the host's open SSH session when
//! it still works (a check is then one exec), reads the boot id, and updates `last_check`.
//! An unreachable host becomes `failed` with a reason starting `unreachable: `; when it answers
//! again it recovers (a bootstrapped host to its settled state, an unfinished one back to the
//! investigator). Hosts deleted from the store drop out of the next round and their sessions
//! are closed.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use model::{ContainerManagerType, Host, HostState, now_timestamp};
use rand::Rng;
use store::records::{self, container_manager_key, list_json};
use tokio::sync::{Mutex, Semaphore};
use tokio::task::JoinSet;

use crate::Ctx;
use crate::hosts::{cluster_of, describe_remote_error, record_first_key, target, update_host};
use crate::investigator::UNREACHABLE;
use crate::jobs::Job;
use crate::nodes;

/// Checks running at once.
pub const MAX_CONCURRENT: usize = 64;

type Pool = Arc<Mutex<HashMap<String, Arc<remote::Session>>>>;

/// How long one check may take: half the interval, between 5 and 10 seconds.
///
/// The floor is what a healthy host on a busy manager needs: an SSH key exchange plus one
/// command can take a few seconds when the manager's cores are saturated (many hosts checked at
/// once, or other work on the machine). A shorter budget would turn slowness on our side into
/// `failed` hosts. With a short `--watcher-interval` a round may therefore outlast the interval;
/// the next round then starts as soon as this one ends.
pub fn check_timeout(interval: Duration) -> Duration {
    (interval / 2).clamp(Duration::from_secs(5), Duration::from_secs(10))
}

/// Runs the watcher until shutdown.
pub async fn run(ctx: Arc<Ctx>) {
    let pool: Pool = Arc::default();
    let sem = Arc::new(Semaphore::new(MAX_CONCURRENT));
    let mut shutdown = ctx.shutdown.clone();
    let interval = ctx.cfg.watcher_interval;
    loop {
        let started = Instant::now();
        let round = round(&ctx, &pool, &sem);
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = round => {}
        }
        let rest = interval.saturating_sub(started.elapsed());
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tokio::time::sleep(rest) => {}
        }
    }
}

async fn round(ctx: &Arc<Ctx>, pool: &Pool, sem: &Arc<Semaphore>) {
    let hosts = match list_json::<Host>(ctx.store.as_ref(), records::HOSTS).await {
        Ok(h) => h,
        Err(e) => {
            tracing::warn!(error = %e, "watcher cannot list hosts this round");
            return;
        }
    };
    {
        // Close sessions of hosts that are gone.
        let mut p = pool.lock().await;
        p.retain(|a, _| hosts.iter().any(|h| &h.value.address == a));
    }
    // Hosts in flight in a rolling operation are expected to go away (reboots): not checked.
    let busy = crate::clusterexec::hosts_in_flight(ctx)
        .await
        .unwrap_or_default();
    let managers = managers_by_host(ctx).await;
    let interval = ctx.cfg.watcher_interval;
    let mut set = JoinSet::new();
    for h in hosts {
        let host = h.value;
        if busy.contains(&host.address) {
            continue;
        }
        if !matches!(
            host.status,
            HostState::Active | HostState::Disassociated | HostState::Failed
        ) {
            continue;
        }
        let (ctx, pool, sem, managers) = (ctx.clone(), pool.clone(), sem.clone(), managers.clone());
        let jitter = rand::rng().random_range(0..=(interval.as_millis() as u64 / 2).max(1));
        set.spawn(async move {
            tokio::time::sleep(Duration::from_millis(jitter)).await;
            let _permit = sem.acquire().await;
            check(&ctx, &pool, &managers, host).await;
        });
    }
    let mut checked = 0u64;
    while set.join_next().await.is_some() {
        checked += 1;
    }
    ctx.status.watcher_rounds.fetch_add(1, Ordering::Relaxed);
    ctx.status
        .watcher_last_checked
        .store(checked, Ordering::Relaxed);
}

/// The outcome of contacting a host.
enum Contact {
    Up { boot_id: String },
    Down(String),
}

async fn contact(ctx: &Ctx, pool: &Pool, host: &Host) -> Contact {
    let address = &host.address;
    let timeout = check_timeout(ctx.cfg.watcher_interval);
    let pooled = pool.lock().await.get(address).cloned();
    if let Some(s) = pooled.filter(|s| !s.is_closed()) {
        match s
            .exec("cat /proc/sys/kernel/random/boot_id", None, timeout)
            .await
        {
            Ok(out) if out.success() => {
                return Contact::Up {
                    boot_id: String::from_utf8_lossy(&out.stdout).trim().to_string(),
                };
            }
            // A broken pooled session says little: retry below on a fresh connection.
            _ => {
                pool.lock().await.remove(address);
            }
        }
    }
    let store = ctx.store.as_ref();
    let t = match target(store, &ctx.sealer, address).await {
        Ok(t) => t,
        Err(e) => return Contact::Down(e.to_string()),
    };
    let first = t.known_host_key.is_none();
    let timeouts = remote::Timeouts {
        connect: timeout,
        command: timeout,
    };
    match remote::Session::connect(&t, timeouts).await {
        Ok((s, key)) => {
            if first && let Err(e) = record_first_key(store, address, &key).await {
                tracing::warn!(address = %address, error = %e, "cannot record host key");
            }
            let out = s
                .exec("cat /proc/sys/kernel/random/boot_id", None, timeout)
                .await;
            match out {
                Ok(o) if o.success() => {
                    let boot_id = String::from_utf8_lossy(&o.stdout).trim().to_string();
                    pool.lock().await.insert(address.clone(), Arc::new(s));
                    Contact::Up { boot_id }
                }
                Ok(o) => Contact::Down(format!(
                    "{UNREACHABLE}check command failed with status {}",
                    o.status
                )),
                Err(e) => Contact::Down(format!("{UNREACHABLE}{e}")),
            }
        }
        Err(e @ remote::RemoteError::HostKeyChanged { .. }) => {
            Contact::Down(describe_remote_error(address, &e))
        }
        Err(e @ (remote::RemoteError::Auth(_) | remote::RemoteError::BadKey(_))) => {
            Contact::Down(e.to_string())
        }
        Err(e) => Contact::Down(format!("{UNREACHABLE}{e}")),
    }
}

async fn check(ctx: &Ctx, pool: &Pool, managers: &Managers, host: Host) {
    let store = ctx.store.as_ref();
    let address = host.address.clone();
    match contact(ctx, pool, &host).await {
        Contact::Up { boot_id } => {
            let recovering =
                host.status == HostState::Failed && host.status_reason.starts_with(UNREACHABLE);
            // The container manager's view decides between `active` and `disassociated`.
            let node = if host.bootstrapped {
                node_ready(ctx, managers, &address).await
            } else {
                NodeReady::Unknown
            };
            let recovered_state = if recovering && host.bootstrapped {
                Some(settled_state(ctx, &address, node.clone()).await)
            } else {
                None
            };
            let mut requeue = false;
            let res = update_host(store, &address, |h| {
                if !matches!(
                    h.status,
                    HostState::Active | HostState::Disassociated | HostState::Failed
                ) {
                    return false;
                }
                h.last_check = now_timestamp();
                h.boot_id = boot_id.clone();
                if h.bootstrapped {
                    match (&node, h.status) {
                        (NodeReady::Ready, HostState::Disassociated) => {
                            h.status = HostState::Active;
                            h.status_reason.clear();
                        }
                        (NodeReady::Ready, HostState::Failed)
                            if h.status_reason.starts_with(NODE_FAILURE) =>
                        {
                            h.status = HostState::Active;
                            h.status_reason.clear();
                        }
                        (NodeReady::NotReady(why), HostState::Active) => {
                            h.status = HostState::Disassociated;
                            h.status_reason = format!("node not Ready: {why}");
                        }
                        _ => {}
                    }
                }
                if h.status == HostState::Failed && h.status_reason.starts_with(UNREACHABLE) {
                    h.status_reason.clear();
                    match recovered_state {
                        Some(s) if h.bootstrapped => h.status = s,
                        _ => {
                            // Never finished bootstrap: hand it back to the investigator.
                            h.status = HostState::Investigating;
                            requeue = true;
                        }
                    }
                }
                true
            })
            .await;
            match res {
                Ok(Some(h)) if recovering && h.status != HostState::Failed => {
                    tracing::info!(address = %address, status = %h.status, "host recovered");
                    if requeue {
                        ctx.jobs.push(Job::Investigate {
                            address: address.clone(),
                        });
                    }
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(address = %address, error = %e, "cannot record check"),
            }
        }
        Contact::Down(reason) => {
            let res = update_host(store, &address, |h| {
                if !matches!(
                    h.status,
                    HostState::Active | HostState::Disassociated | HostState::Failed
                ) {
                    return false;
                }
                if h.status == HostState::Failed && h.status_reason == reason {
                    return false;
                }
                h.status = HostState::Failed;
                h.status_reason = reason.clone();
                true
            })
            .await;
            if let Ok(Some(h)) = res
                && h.status == HostState::Failed
                && host.status != HostState::Failed
            {
                tracing::warn!(address = %address, reason = %reason, "host failed its check");
            }
        }
    }
}

/// Prefix of `status_reason` of hosts that failed because of their container manager; the
/// watcher makes them `active` once their node is Ready.
pub const NODE_FAILURE: &str = "container manager ";

/// A host's node as far as the watcher is concerned.
#[derive(Clone, Debug)]
enum NodeReady {
    /// No manager with nodes, or its API could not be asked.
    Unknown,
    /// No manager with nodes (no cluster, no manager, or the trivial one).
    NoNodes,
    /// Registered and Ready.
    Ready,
    /// Not registered or not Ready, and why.
    NotReady(String),
}

/// The container managers with nodes, by member address, loaded once per round (`None`: the
/// manager exists but cannot be used, e.g. its CA file is gone).
type Managers = Arc<HashMap<String, Option<Arc<nodes::Manager>>>>;

async fn managers_by_host(ctx: &Ctx) -> Managers {
    let mut out = HashMap::new();
    let clusters = match list_json::<model::Cluster>(ctx.store.as_ref(), records::CLUSTERS).await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "watcher cannot list clusters this round");
            return Arc::new(out);
        }
    };
    let mut loaded: HashMap<String, Option<Arc<nodes::Manager>>> = HashMap::new();
    for c in clusters.into_iter().map(|c| c.value) {
        if c.container_manager.is_empty() {
            continue;
        }
        if !loaded.contains_key(&c.container_manager) {
            let m = match nodes::load_manager(ctx, &c.container_manager).await {
                Ok(Some(m)) if m.has_nodes() => Some(Some(Arc::new(m))),
                Ok(_) => None,
                Err(e) => {
                    tracing::warn!(manager = %c.container_manager, error = %e, "container manager unusable this round");
                    Some(None)
                }
            };
            if let Some(m) = m {
                loaded.insert(c.container_manager.clone(), m);
            } else {
                continue;
            }
        }
        if let Some(m) = loaded.get(&c.container_manager) {
            for a in c.hostset {
                out.insert(a, m.clone());
            }
        }
    }
    Arc::new(out)
}

/// Asks the host's container manager about its node and stores the view.
async fn node_ready(ctx: &Ctx, managers: &Managers, address: &str) -> NodeReady {
    let m = match managers.get(address) {
        Some(Some(m)) => m,
        Some(None) => return NodeReady::Unknown,
        None => return NodeReady::NoNodes,
    };
    match m.api.view(address).await {
        Ok(view) => {
            nodes::save_view(ctx, address, &view).await;
            if view.ready {
                NodeReady::Ready
            } else {
                NodeReady::NotReady(view.reason)
            }
        }
        Err(e) => {
            tracing::warn!(address, error = %e, "cannot read the node");
            NodeReady::Unknown
        }
    }
}

/// The state a bootstrapped host returns to: `active` when its node is Ready or its cluster's
/// manager is the trivial one, `disassociated` otherwise.
async fn settled_state(ctx: &Ctx, address: &str, node: NodeReady) -> HostState {
    match node {
        NodeReady::Ready => return HostState::Active,
        NodeReady::NotReady(_) | NodeReady::Unknown => return HostState::Disassociated,
        NodeReady::NoNodes => {}
    }
    let store = ctx.store.as_ref();
    let Ok(Some(cluster)) = cluster_of(store, address).await else {
        return HostState::Disassociated;
    };
    if cluster.container_manager.is_empty() {
        return HostState::Disassociated;
    }
    match store::records::get_json::<model::ContainerManagerConfig>(
        store,
        &container_manager_key(&cluster.container_manager),
    )
    .await
    {
        Ok(Some(cm)) if cm.value.kind == ContainerManagerType::Trivial => HostState::Active,
        _ => HostState::Disassociated,
    }
}
