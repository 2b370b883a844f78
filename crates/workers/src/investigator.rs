//! The investigator: takes a new host from `investigating` through fact gathering and
//! bootstrap to `disassociated` (or `active` with the trivial container manager).
//!
//! It works from the store, not from memory: it runs on the reconcile driver, whose scans pick
//! up every host still `investigating` or `bootstrapping` (jobs lost in a crash included) and
//! whose job source wakes it for new hosts.
//! Each step writes its result before the next begins, and bootstrap itself is skipped on a host
//! whose marker shows it already completed, so a crash at any point neither loses a host nor
//! bootstraps one twice.

use std::sync::Arc;

use async_trait::async_trait;

use domain::DomainResult;
use domain::hosts::{apply, apply_after_first_contact, cluster_of};
use domain::lifecycle::{Event, HostFacts, ManagerKind};
use model::{FailureKind, Host, HostState, Network, TrustedHostKey};
use store::records::{self, get_json, list_json, network_key};

use crate::Ctx;
use crate::bootstrap::{self, Applied, Inputs};
use crate::driver::{Reconciler, WorkerKind};
use crate::hosts::{TargetError, connect_failure, describe_remote_error, first_use_record, target};
use crate::nodes;
use crate::oscmd::OsCommands;

/// Investigations running at once in one process. As many as the watcher's checks: an
/// investigation mostly waits on its host (key exchange, facts, bootstrap), so a fleet
/// registered at once is investigated in fewer waves without costing the server more CPU.
pub const MAX_CONCURRENT: usize = 64;

/// Marks a host `failed` (if it is still being investigated) with a kind and a reason.
async fn fail(
    store: &dyn store::Store,
    address: &str,
    kind: FailureKind,
    reason: &str,
) -> DomainResult<()> {
    tracing::warn!(address, kind = %kind, reason, "host failed");
    apply(store, address, Event::Failed(kind, reason.to_string())).await?;
    Ok(())
}

/// The investigator as a reconciler: its keys are host addresses; the hosts that need it are
/// those `investigating` or `bootstrapping`.
pub struct Investigator {
    ctx: Arc<Ctx>,
}

impl Investigator {
    /// The investigator of this process.
    pub fn new(ctx: Arc<Ctx>) -> Self {
        Investigator { ctx }
    }
}

#[async_trait]
impl Reconciler for Investigator {
    fn kind(&self) -> WorkerKind {
        WorkerKind::Investigator
    }

    async fn scan(&self) -> DomainResult<Vec<String>> {
        let hosts = list_json::<Host>(self.ctx.store.as_ref(), records::HOSTS).await?;
        Ok(hosts
            .into_iter()
            .filter(|h| {
                matches!(
                    h.value.status,
                    HostState::Investigating | HostState::Bootstrapping
                )
            })
            .map(|h| h.value.address)
            .collect())
    }

    async fn reconcile(&self, address: &str) -> DomainResult<()> {
        let status = &self.ctx.status.investigations;
        status.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let started = std::time::Instant::now();
        let r = investigate(&self.ctx, address).await;
        status.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        metrics::histogram!("commissaire_investigation_duration_seconds")
            .record(started.elapsed().as_secs_f64());
        r
    }
}

/// One investigation. Errors returned are store errors (retry); host problems end in `failed`.
async fn investigate(ctx: &Ctx, address: &str) -> DomainResult<()> {
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
        Err(TargetError::Store(e)) => return Err(e.into()),
        Err(e) => return fail(store, address, FailureKind::Credentials, &e.to_string()).await,
    };
    let first_contact = target.known_host_key.is_none();
    let (session, key) = match remote::Session::connect(&target, ctx.cfg.ssh).await {
        Ok(s) => s,
        Err(e) => {
            let kind = connect_failure(&e);
            let reason = match kind {
                FailureKind::Unreachable => format!("unreachable: {e}"),
                _ => describe_remote_error(address, &e),
            };
            return fail(store, address, kind, &reason).await;
        }
    };
    // Recorded with the first result of this session (facts, or why they failed): one store
    // write instead of two. A crash before that leaves no key recorded, and the next attempt
    // trusts on first use again, as if this contact had not happened.
    let first_key = first_contact.then(|| first_use_record(address, &key));
    let result = investigate_connected(ctx, address, &session, first_key.as_ref()).await;
    session.close().await;
    result
}

async fn investigate_connected(
    ctx: &Ctx,
    address: &str,
    session: &remote::Session,
    first_key: Option<&TrustedHostKey>,
) -> DomainResult<()> {
    let store = ctx.store.as_ref();
    let facts = match session.facts().await {
        Ok(f) => f,
        Err(e) => {
            let reason = format!("gathering facts: {e}");
            tracing::warn!(address, kind = %FailureKind::Facts, reason, "host failed");
            let failed = Event::Failed(FailureKind::Facts, reason);
            apply_after_first_contact(store, address, failed, first_key).await?;
            return Ok(());
        }
    };
    let gathered = Event::FactsGathered(HostFacts {
        os: facts.os_id.clone(),
        os_version: facts.os_version.clone(),
        ostree: facts.ostree,
        cpus: facts.cpus,
        memory: facts.memory_kib,
        space: facts.root_space_bytes,
        boot_id: facts.boot_id.clone(),
    });
    match apply_after_first_contact(store, address, gathered, first_key).await? {
        Some(o) if o.host.status == HostState::Bootstrapping => {}
        // Deleted, or moved on meanwhile (e.g. it left the cluster it was re-bootstrapped for).
        _ => return Ok(()),
    }
    tracing::info!(address, os = %facts.os_id, ostree = facts.ostree, "facts gathered; bootstrapping");

    let os = match OsCommands::for_host(&facts.os_id, facts.ostree) {
        Ok(os) => os,
        Err(e) => return fail(store, address, FailureKind::Facts, &e).await,
    };
    let cluster = cluster_of(store, address).await?;
    let network = match &cluster {
        Some(c) => match get_json::<Network>(store, &network_key(&c.network)).await? {
            Some(n) => Some(n.value),
            None if c.network == model::DEFAULT_NETWORK => Some(Network::default_network()),
            None => {
                let reason = format!("network {} of cluster {} does not exist", c.network, c.name);
                return fail(store, address, FailureKind::Configuration, &reason).await;
            }
        },
        None => None,
    };
    let manager = match &cluster {
        Some(c) => match nodes::manager_of_cluster(ctx, c).await {
            Ok(m) => m,
            Err(e) => return fail(store, address, FailureKind::Configuration, &e).await,
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
            let reason = format!("bootstrap: {e}");
            return fail(store, address, FailureKind::Configuration, &reason).await;
        }
    };
    let started = std::time::Instant::now();
    let applied = bootstrap::run(session, &plan, ctx.cfg.ssh.command).await;
    let outcome = if applied.is_ok() { "ok" } else { "error" };
    metrics::histogram!("commissaire_bootstrap_duration_seconds", "outcome" => outcome)
        .record(started.elapsed().as_secs_f64());
    match applied {
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
            return fail(store, address, FailureKind::Bootstrap, &reason).await;
        }
    }
    let kind = match &manager {
        None => ManagerKind::None,
        Some(m) if !m.has_nodes() => ManagerKind::Trivial,
        Some(_) => ManagerKind::Nodes,
    };
    let Some(done) = apply(store, address, Event::BootstrapDone(kind)).await? else {
        return Ok(());
    };
    // With a manager that has nodes the host is `active` once its node is Ready.
    if let Some(m) = manager.as_ref().filter(|m| m.has_nodes())
        && done.host.status == HostState::Bootstrapping
    {
        let event = match nodes::join(ctx, m, address).await {
            Ok(_) => Event::NodeReady,
            Err(e) => Event::NodeJoinFailed(format!("container manager {}: {e}", m.cfg.name)),
        };
        apply(store, address, event).await?;
    }
    tracing::info!(address, "investigation finished");
    Ok(())
}
