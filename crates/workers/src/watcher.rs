//! The watcher: checks every host on an interval and keeps its health current.
//!
//! Each round lists the host keys and takes this process's share (all of them alone, its
//! rendezvous share among several watcher processes), then checks the settled ones (`active`,
//! `disassociated`, `failed`; read one by one) with bounded concurrency, in small random groups
//! each started at a random moment within the first half of the interval, so checks do not
//! arrive in bursts (see `driver::SPREAD_GROUP`). A check reuses the host's open SSH session
//! when it still works (a check is then one exec), reads the boot id, and updates `last_check`
//! from the record it read at its start (one read and one write per check).
//! An unreachable host becomes `failed` (failure kind `unreachable`); when it answers again it
//! recovers (a bootstrapped host to its settled state, an unfinished one back to the
//! investigator). What each observation does to a host is decided by the lifecycle state
//! machine (`domain::lifecycle`), not here. Hosts deleted from the store drop out of the next round and their sessions
//! are closed.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_trait::async_trait;
use domain::DomainResult;

use domain::hosts::apply_seen;
use domain::lifecycle::{Event, NodeObservation};
use model::{ContainerManagerType, FailureKind, Host, HostState};
use store::records::{self, Versioned, container_manager_key, get_json, list_json};
use tokio::sync::{Mutex, RwLock};

use crate::Ctx;
use crate::Job;
use crate::driver::{Reconciler, WorkerKind};
use crate::hosts::{connect_failure, describe_remote_error, record_first_key, target};
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

/// The watcher as a reconciler: each resync (one round per interval) lists the settled hosts
/// this process watches — all of them alone, its rendezvous share of them among several
/// watchers — and each reconcile checks one host.
pub struct Watcher {
    ctx: Arc<Ctx>,
    pool: Pool,
    managers: RwLock<Managers>,
    /// When the current round's scan ran, how many of its hosts are still to be seen (for the
    /// round-duration histogram), and how many it has checked so far (reported as the last
    /// round's count when the next round starts).
    round: std::sync::Mutex<(std::time::Instant, u64, u64)>,
}

impl Watcher {
    /// The watcher of this process.
    pub fn new(ctx: Arc<Ctx>) -> Self {
        Watcher {
            ctx,
            pool: Pool::default(),
            managers: RwLock::new(Arc::default()),
            round: std::sync::Mutex::new((std::time::Instant::now(), 0, 0)),
        }
    }
}

#[async_trait]
impl Reconciler for Watcher {
    fn kind(&self) -> WorkerKind {
        WorkerKind::Watcher
    }

    async fn scan(&self) -> DomainResult<Vec<String>> {
        let ctx = &self.ctx;
        // Keys only: every watcher process lists the whole fleet each round, so what it costs
        // is paid once per process. The records themselves are read one by one in `reconcile`,
        // only for this process's share (which also makes the state a check starts from fresh).
        // The round's reads are independent: asked at once, their answers share wake-ups.
        let (addresses, members, busy, managers) = tokio::join!(
            records::list_names(ctx.store.as_ref(), records::HOSTS),
            ctx.coord.members(WorkerKind::Watcher),
            crate::clusterexec::hosts_in_flight(ctx),
            managers_by_host(ctx),
        );
        let (addresses, members) = (addresses?, members?);
        let me = ctx.coord.id();
        let owned: HashSet<String> = addresses
            .into_iter()
            .filter(|a| crate::coordinator::rendezvous(&members, a).is_none_or(|owner| owner == me))
            .collect();
        {
            // Close the sessions of hosts that are gone or that another watcher now checks
            // (each open session is an `sshd` process on the host).
            let mut p = self.pool.lock().await;
            p.retain(|a, _| owned.contains(a));
        }
        // Hosts in flight in a rolling operation are expected to go away (reboots): not checked.
        let busy = busy.unwrap_or_default();
        *self.managers.write().await = managers;
        let mut mine: Vec<String> = owned.into_iter().filter(|a| !busy.contains(a)).collect();
        mine.sort_unstable();
        ctx.status.watcher_rounds.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("commissaire_watcher_rounds_total").increment(1);
        if let Ok(mut r) = self.round.lock() {
            // The previous round's checks all started within its first half: its count is final.
            if r.1 > 0 {
                // Some of its hosts were still being checked; the histogram gets this round's
                // length as it stands (the checks left are slower than the interval).
                metrics::histogram!("commissaire_watcher_round_duration_seconds")
                    .record(r.0.elapsed().as_secs_f64());
            }
            ctx.status
                .watcher_last_checked
                .store(r.2, Ordering::Relaxed);
            metrics::gauge!("commissaire_watcher_hosts_checked").set(r.2 as f64);
            *r = (std::time::Instant::now(), mine.len() as u64, 0);
        }
        if mine.is_empty() {
            // Nothing to check: the round is over as soon as it started.
            metrics::histogram!("commissaire_watcher_round_duration_seconds").record(0.0);
        }
        Ok(mine)
    }

    async fn reconcile(&self, address: &str) -> DomainResult<()> {
        // The record read here is also what the check's write starts from (one read per check).
        let host = get_json::<Host>(self.ctx.store.as_ref(), &records::host_key(address)).await?;
        let due = host.filter(|h| {
            matches!(
                h.value.status,
                HostState::Active | HostState::Disassociated | HostState::Failed
            ) && !checked_recently(&h.value.last_check, self.ctx.cfg.watcher_interval)
        });
        let checked = due.is_some();
        if let Some(host) = due {
            let managers = self.managers.read().await.clone();
            check(&self.ctx, &self.pool, &managers, host).await;
            metrics::counter!("commissaire_watcher_checks_total").increment(1);
            metrics::counter!("commissaire_watcher_hosts_checked_total").increment(1);
        }
        // The round ends with its last host, checked or not.
        if let Ok(mut r) = self.round.lock() {
            if checked {
                r.2 += 1;
            }
            if r.1 > 0 {
                r.1 -= 1;
                if r.1 == 0 {
                    metrics::histogram!("commissaire_watcher_round_duration_seconds")
                        .record(r.0.elapsed().as_secs_f64());
                }
            }
        }
        Ok(())
    }
}

/// Whether a successful check (or investigation) happened less than a quarter of the interval
/// ago: such a host is left for the next round. This spares hosts just bootstrapped, or just
/// checked before a restart, and can never skip a host for two rounds in a row (a round's checks
/// all start within its first half, so the next round sees them at least half an interval old,
/// less the duration of one check).
fn checked_recently(last_check: &str, interval: Duration) -> bool {
    let Ok(t) = chrono::NaiveDateTime::parse_from_str(last_check, "%Y-%m-%dT%H:%M:%S%.f") else {
        return false;
    };
    let age = chrono::Utc::now().naive_utc() - t;
    age >= chrono::TimeDelta::zero() && age.to_std().is_ok_and(|a| a < interval / 4)
}

/// The outcome of contacting a host.
enum Contact {
    Up { boot_id: String },
    Down(FailureKind, String),
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
        Err(e) => return Contact::Down(FailureKind::Credentials, e.to_string()),
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
                Ok(o) => Contact::Down(
                    FailureKind::Unreachable,
                    format!("unreachable: check command failed with status {}", o.status),
                ),
                Err(e) => Contact::Down(FailureKind::Unreachable, format!("unreachable: {e}")),
            }
        }
        Err(e) => match connect_failure(&e) {
            FailureKind::Unreachable => {
                Contact::Down(FailureKind::Unreachable, format!("unreachable: {e}"))
            }
            kind => Contact::Down(kind, describe_remote_error(address, &e)),
        },
    }
}

async fn check(ctx: &Ctx, pool: &Pool, managers: &Managers, seen: Versioned<Host>) {
    let store = ctx.store.as_ref();
    let address = seen.value.address.clone();
    let was = seen.value.status;
    let event = match contact(ctx, pool, &seen.value).await {
        Contact::Up { boot_id } => {
            // The container manager's view decides between `active` and `disassociated`.
            let node = if seen.value.bootstrapped {
                observe(ctx, managers, &address).await
            } else {
                NodeObservation::Unknown
            };
            Event::Reachable { boot_id, node }
        }
        Contact::Down(kind, reason) => Event::CheckFailed(kind, reason),
    };
    match apply_seen(store, seen, event).await {
        Ok(Some(o)) => {
            let now = o.host.status;
            if now != was {
                if now == HostState::Failed {
                    tracing::warn!(address = %address, reason = %o.host.status_reason, "host failed its check");
                } else {
                    tracing::info!(address = %address, from = %was, to = %now, "host state changed by its check");
                }
            }
            if o.investigate {
                ctx.jobs.push(Job::Investigate {
                    address: address.clone(),
                });
            }
        }
        Ok(None) => {}
        Err(e) => tracing::warn!(address = %address, error = %e, "cannot record check"),
    }
}

/// The container manager of each member of a cluster with one, loaded once per round:
/// `Trivial`, or a manager with nodes (`None` when it exists but cannot be used this round,
/// e.g. its CA file is gone). Hosts in no cluster, or in one without a manager, are absent.
enum MemberManager {
    Trivial,
    Nodes(Option<Arc<nodes::Manager>>),
}

type Managers = Arc<HashMap<String, Arc<MemberManager>>>;

async fn managers_by_host(ctx: &Ctx) -> Managers {
    let mut out = HashMap::new();
    let clusters = match list_json::<model::Cluster>(ctx.store.as_ref(), records::CLUSTERS).await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "watcher cannot list clusters this round");
            return Arc::new(out);
        }
    };
    let mut loaded: HashMap<String, Option<Arc<MemberManager>>> = HashMap::new();
    for c in clusters.into_iter().map(|c| c.value) {
        if c.container_manager.is_empty() {
            continue;
        }
        if !loaded.contains_key(&c.container_manager) {
            let m = load_member_manager(ctx, &c.container_manager).await;
            loaded.insert(c.container_manager.clone(), m.map(Arc::new));
        }
        if let Some(Some(m)) = loaded.get(&c.container_manager) {
            for a in c.hostset {
                out.insert(a, m.clone());
            }
        }
    }
    Arc::new(out)
}

/// `None` when no such manager exists (its cluster counts as unmanaged).
async fn load_member_manager(ctx: &Ctx, name: &str) -> Option<MemberManager> {
    let kind = match get_json::<model::ContainerManagerConfig>(
        ctx.store.as_ref(),
        &container_manager_key(name),
    )
    .await
    {
        Ok(Some(cm)) => cm.value.kind,
        Ok(None) => return None,
        Err(e) => {
            tracing::warn!(manager = %name, error = %e, "cannot read container manager this round");
            return Some(MemberManager::Nodes(None));
        }
    };
    if kind == ContainerManagerType::Trivial {
        return Some(MemberManager::Trivial);
    }
    match nodes::load_manager(ctx, name).await {
        Ok(Some(m)) => Some(MemberManager::Nodes(Some(Arc::new(m)))),
        Ok(None) => None,
        Err(e) => {
            tracing::warn!(manager = %name, error = %e, "container manager unusable this round");
            Some(MemberManager::Nodes(None))
        }
    }
}

/// What the host's container manager says of its node (the view is stored for the API).
async fn observe(ctx: &Ctx, managers: &Managers, address: &str) -> NodeObservation {
    let m = match managers.get(address).map(|m| m.as_ref()) {
        None => return NodeObservation::NoManager,
        Some(MemberManager::Trivial) => return NodeObservation::Trivial,
        Some(MemberManager::Nodes(None)) => return NodeObservation::Unknown,
        Some(MemberManager::Nodes(Some(m))) => m,
    };
    match m.api.view(address).await {
        Ok(view) => {
            nodes::save_view(ctx, address, &view).await;
            if view.ready {
                NodeObservation::Ready
            } else {
                NodeObservation::NotReady(view.reason)
            }
        }
        Err(e) => {
            tracing::warn!(address, error = %e, "cannot read the node");
            NodeObservation::Unknown
        }
    }
}
