//! The investigator: takes a new host from `investigating` through fact gathering and
//! bootstrap to `disassociated` (or `active` with the trivial container manager).
//!
//! It works from the store, not from memory: at start it picks up every host still
//! `investigating` or `bootstrapping` (jobs queued before a crash), then serves the job queue.
//! Each step writes its result before the next begins, and bootstrap itself is skipped on a host
//! whose marker shows it already completed, so a crash at any point neither loses a host nor
//! bootstraps one twice.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use model::{Host, HostState, Network, now_timestamp};
use store::StoreError;
use store::records::{self, get_json, list_json, network_key};
use tokio::sync::{Mutex, Semaphore, mpsc};

use crate::Ctx;
use crate::bootstrap::{self, Applied, Inputs};
use crate::hosts::{
    TargetError, cluster_of, describe_remote_error, fail_host, record_first_key, target,
    update_host,
};
use crate::jobs::Job;
use crate::nodes;
use crate::oscmd::OsCommands;

/// Investigations running at once.
pub const MAX_CONCURRENT: usize = 32;
/// Prefix of `status_reason` for hosts that could not be reached; the watcher brings such
/// hosts back when they answer again.
pub const UNREACHABLE: &str = "unreachable: ";

/// Runs the investigator until shutdown.
pub async fn run(ctx: Arc<Ctx>, mut jobs: mpsc::UnboundedReceiver<Job>) {
    let sem = Arc::new(Semaphore::new(MAX_CONCURRENT));
    // Address → whether another run was requested while one is in flight.
    let inflight: Arc<Mutex<HashMap<String, bool>>> = Arc::default();
    let mut shutdown = ctx.shutdown.clone();

    // Recover work from the store; retried while the store is unreachable.
    let recover = {
        let ctx = ctx.clone();
        let sem = sem.clone();
        let inflight = inflight.clone();
        tokio::spawn(async move {
            let mut delay = Duration::from_millis(200);
            loop {
                match list_json::<Host>(ctx.store.as_ref(), records::HOSTS).await {
                    Ok(hosts) => {
                        let pending: Vec<String> = hosts
                            .into_iter()
                            .filter(|h| {
                                matches!(
                                    h.value.status,
                                    HostState::Investigating | HostState::Bootstrapping
                                )
                            })
                            .map(|h| h.value.address)
                            .collect();
                        if !pending.is_empty() {
                            tracing::info!(
                                hosts = pending.len(),
                                "resuming unfinished investigations"
                            );
                        }
                        for a in pending {
                            dispatch(&ctx, &sem, &inflight, a).await;
                        }
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot scan hosts yet; retrying");
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(Duration::from_secs(5));
                    }
                }
            }
        })
    };

    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            job = jobs.recv() => match job {
                None => break,
                Some(Job::Investigate { address }) => {
                    ctx.jobs.mark_taken();
                    dispatch(&ctx, &sem, &inflight, address).await;
                }
                Some(_) => {}
            },
        }
    }
    recover.abort();
}

/// Starts an investigation of `address` unless one is running; then it runs once more after.
async fn dispatch(
    ctx: &Arc<Ctx>,
    sem: &Arc<Semaphore>,
    inflight: &Arc<Mutex<HashMap<String, bool>>>,
    address: String,
) {
    {
        let mut map = inflight.lock().await;
        if let Some(again) = map.get_mut(&address) {
            *again = true;
            return;
        }
        map.insert(address.clone(), false);
    }
    let ctx = ctx.clone();
    let sem = sem.clone();
    let inflight = inflight.clone();
    tokio::spawn(async move {
        loop {
            {
                let _permit = sem.acquire().await;
                ctx.status
                    .investigations
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                investigate_with_retries(&ctx, &address).await;
                ctx.status
                    .investigations
                    .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
            }
            let mut map = inflight.lock().await;
            if map.get(&address) == Some(&true) {
                map.insert(address.clone(), false);
                continue;
            }
            map.remove(&address);
            return;
        }
    });
}

/// Store outages interrupt an investigation without failing the host: it is retried (bounded)
/// and, if the store stays away, picked up again by the next start's recovery scan.
async fn investigate_with_retries(ctx: &Ctx, address: &str) {
    for attempt in 0..30u32 {
        match investigate(ctx, address).await {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(address, error = %e, attempt, "investigation interrupted by the store; retrying");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    }
}

/// One investigation. Errors returned are store errors (retry); host problems end in `failed`.
async fn investigate(ctx: &Ctx, address: &str) -> Result<(), StoreError> {
    let store = ctx.store.as_ref();
    let Some(host) = get_json::<Host>(store, &records::host_key(address)).await? else {
        return Ok(());
    };
    if !matches!(
        host.value.status,
        HostState::Investigating | HostState::Bootstrapping
    ) {
        return Ok(());
    }
    let target = match target(store, &ctx.sealer, address).await {
        Ok(t) => t,
        Err(TargetError::Store(e)) => return Err(e),
        Err(e) => {
            fail_host(store, address, &e.to_string()).await?;
            return Ok(());
        }
    };
    let first_contact = target.known_host_key.is_none();
    let (session, key) = match remote::Session::connect(&target, ctx.cfg.ssh).await {
        Ok(s) => s,
        Err(e) => {
            let reason = match e {
                remote::RemoteError::HostKeyChanged { .. }
                | remote::RemoteError::Auth(_)
                | remote::RemoteError::BadKey(_) => describe_remote_error(address, &e),
                other => format!("{UNREACHABLE}{other}"),
            };
            fail_host(store, address, &reason).await?;
            return Ok(());
        }
    };
    if first_contact {
        record_first_key(store, address, &key).await?;
    }
    let result = investigate_connected(ctx, address, &session).await;
    session.close().await;
    result
}

async fn investigate_connected(
    ctx: &Ctx,
    address: &str,
    session: &remote::Session,
) -> Result<(), StoreError> {
    let store = ctx.store.as_ref();
    let facts = match session.facts().await {
        Ok(f) => f,
        Err(e) => {
            fail_host(store, address, &format!("gathering facts: {e}")).await?;
            return Ok(());
        }
    };
    let updated = update_host(store, address, |h| {
        if !matches!(
            h.status,
            HostState::Investigating | HostState::Bootstrapping
        ) {
            return false;
        }
        h.os = facts.os_id.clone();
        h.os_version = facts.os_version.clone();
        h.ostree = facts.ostree;
        h.cpus = facts.cpus;
        h.memory = facts.memory_kib;
        h.space = facts.root_space_bytes;
        h.boot_id = facts.boot_id.clone();
        h.last_check = now_timestamp();
        h.status = HostState::Bootstrapping;
        h.status_reason.clear();
        true
    })
    .await?;
    match updated {
        Some(h) if h.status == HostState::Bootstrapping => {}
        // Deleted, or changed by someone else meanwhile: nothing more to do here.
        _ => return Ok(()),
    }
    tracing::info!(address, os = %facts.os_id, ostree = facts.ostree, "facts gathered; bootstrapping");

    let os = match OsCommands::for_host(&facts.os_id, facts.ostree) {
        Ok(os) => os,
        Err(e) => {
            fail_host(store, address, &e).await?;
            return Ok(());
        }
    };
    let cluster = cluster_of(store, address).await?;
    let network = match &cluster {
        Some(c) => match get_json::<Network>(store, &network_key(&c.network)).await? {
            Some(n) => Some(n.value),
            None if c.network == model::DEFAULT_NETWORK => Some(Network::default_network()),
            None => {
                fail_host(
                    store,
                    address,
                    &format!("network {} of cluster {} does not exist", c.network, c.name),
                )
                .await?;
                return Ok(());
            }
        },
        None => None,
    };
    let manager = match &cluster {
        Some(c) => match nodes::manager_of_cluster(ctx, c).await {
            Ok(m) => m,
            Err(e) => {
                fail_host(store, address, &e).await?;
                return Ok(());
            }
        },
        None => None,
    };
    let plan = match bootstrap::plan(
        &Inputs {
            address,
            os: &os,
            cluster: cluster.as_ref(),
            network: network.as_ref(),
            container_manager: manager.as_ref().map(|m| &m.cfg),
            etcd: ctx.cfg.etcd.as_ref(),
        },
        &ctx.cfg.templates,
    ) {
        Ok(p) => p,
        Err(e) => {
            fail_host(store, address, &format!("bootstrap: {e}")).await?;
            return Ok(());
        }
    };
    match bootstrap::run(session, &plan, ctx.cfg.ssh.command).await {
        Ok(Applied::Ran) => tracing::info!(address, "bootstrap applied"),
        Ok(Applied::AlreadyDone) => tracing::info!(
            address,
            "bootstrap already applied on the host; not repeated"
        ),
        Err(e) => {
            let reason = match &e {
                bootstrap::RunError::Remote(r) => {
                    format!("bootstrap: {}", describe_remote_error(address, r))
                }
                other => other.to_string(),
            };
            fail_host(store, address, &reason).await?;
            return Ok(());
        }
    }
    // In a cluster with a container manager the host is `active` once its node is Ready.
    let final_state = match &manager {
        None => HostState::Disassociated,
        Some(m) if !m.has_nodes() => HostState::Active,
        Some(m) => match nodes::join(ctx, m, address).await {
            Ok(_) => HostState::Active,
            Err(e) => {
                // Bootstrap itself is done: remember it, so a retry only joins the node.
                update_host(store, address, |h| {
                    h.bootstrapped = true;
                    true
                })
                .await?;
                fail_host(
                    store,
                    address,
                    &format!("{}{}: {e}", crate::watcher::NODE_FAILURE, m.cfg.name),
                )
                .await?;
                return Ok(());
            }
        },
    };
    update_host(store, address, |h| {
        if h.status != HostState::Bootstrapping {
            return false;
        }
        h.status = final_state;
        h.bootstrapped = true;
        h.status_reason.clear();
        h.last_check = now_timestamp();
        true
    })
    .await?;
    tracing::info!(address, status = %final_state, "host ready");
    Ok(())
}
