//! clusterexec: runs rolling restarts, upgrades and OSTree deploys.
//!
//! An operation is a record in the store (see `model::operation`); this worker only moves it
//! forward. The coordinator loop asks the pure `model::decide` what comes next (start a batch,
//! wait, pause, finish); one task per host in flight walks that host through its steps, saving
//! every transition before acting on the next one. After a crash, the record says where each
//! host was, and the steps are safe to repeat: a reboot is issued only if the host's boot id is
//! still the one read before and the host holds no reboot request made in this boot, so no host
//! is rebooted twice.
//!
//! One process runs an operation at a time: it owns the operation through the coordinator
//! (on etcd, a key bound to the owner's lease), and the record names it for operators. When the
//! owner dies its lease expires, and another process's next scan takes the operation over —
//! no clocks are compared.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use domain::DomainResult;
use model::{
    Decision, Host, HostAction, HostProgress, HostStep, Operation, OperationKind, decide,
    now_timestamp,
};
use store::records::{self, get_json, host_key, operation_key};
use store::{StoreError, StoreResult};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::Ctx;
use crate::driver::{Reconciler, WorkerKind};
use crate::hosts::target;
use crate::nodes;
use crate::oscmd::OsCommands;

/// How often the running owner checks that the operation is still its own (its lease may
/// have expired while the store was unreachable).
const OWNERSHIP_CHECK_EVERY: Duration = Duration::from_secs(2);
/// How often active operations are looked for (to take over from a dead process).
pub const SCAN_EVERY: Duration = Duration::from_secs(10);
/// File on the host recording that a reboot was requested in the current boot.
pub const REBOOT_MARKER: &str = "/var/lib/commissaire/reboot-requested";
/// While a rebooting host cannot be reached, how soon to look again: it is seen back within a
/// fraction of a second.
const REBOOT_PROBE_MIN: Duration = Duration::from_millis(100);
/// Longest wait between probes of a host that still answers in its old boot after the reboot
/// was requested (a slow shutdown, or a reboot that is not happening): each probe is an SSH
/// login on a host that is up, so they back off up to this instead of hammering it.
const REBOOT_PROBE_MAX: Duration = Duration::from_secs(2);

/// Parses an API timestamp.
fn parse_ts(s: &str) -> Option<chrono::NaiveDateTime> {
    chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f").ok()
}

/// Seconds from timestamp `s` to now (`None` if `s` is empty or unreadable).
fn seconds_since(s: &str) -> Option<f64> {
    let t = parse_ts(s)?;
    let now = chrono::Utc::now().naive_utc();
    Some((now - t).num_milliseconds() as f64 / 1000.0)
}

/// Applies `change` to an operation record with compare-and-swap; `None` if it is gone.
pub async fn update_op<F>(ctx: &Ctx, key: &str, change: F) -> StoreResult<Option<Operation>>
where
    F: FnMut(&mut Operation) -> bool + Send,
{
    domain::txn::update_record(ctx.store.as_ref(), key, change)
        .await
        .map_err(|e| match e {
            domain::DomainError::Unavailable(m) => StoreError::Unavailable(m),
            other => StoreError::Backend(other.to_string()),
        })
}

/// clusterexec as a reconciler: its keys are operation records (`cluster/<name>/<kind>`); a
/// reconcile claims the operation and runs it until it ends or stops being ours.
pub struct Clusterexec {
    ctx: Arc<Ctx>,
}

impl Clusterexec {
    /// The clusterexec of this process.
    pub fn new(ctx: Arc<Ctx>) -> Self {
        Clusterexec { ctx }
    }
}

#[async_trait]
impl Reconciler for Clusterexec {
    fn kind(&self) -> WorkerKind {
        WorkerKind::Clusterexec
    }

    async fn scan(&self) -> DomainResult<Vec<String>> {
        Ok(
            records::list_json::<Operation>(self.ctx.store.as_ref(), records::OPERATIONS)
                .await?
                .into_iter()
                .filter(|o| o.value.status.is_active())
                .map(|o| operation_key(&o.value.name, o.value.kind.as_str()))
                .collect(),
        )
    }

    async fn reconcile(&self, key: &str) -> DomainResult<()> {
        Ok(run_operation(&self.ctx, key).await?)
    }
}

/// Claims the operation for this process if nobody else runs it, and names the owner in the
/// record.
async fn claim(ctx: &Ctx, key: &str) -> StoreResult<bool> {
    let mine = ctx
        .coord
        .claim(key)
        .await
        .map_err(|e| StoreError::Unavailable(e.to_string()))?;
    if !mine {
        return Ok(false);
    }
    let me = ctx.coord.id().to_string();
    let op = update_op(ctx, key, |op| {
        if !op.status.is_active() || op.owner == me {
            return false;
        }
        op.owner = me.clone();
        op.heartbeat = now_timestamp();
        true
    })
    .await?;
    Ok(op.is_some_and(|o| o.status.is_active()))
}

async fn run_operation(ctx: &Arc<Ctx>, key: &str) -> StoreResult<()> {
    if !claim(ctx, key).await? {
        return Ok(());
    }
    tracing::info!(operation = %key, "running operation");
    let mut tasks: HashMap<String, JoinHandle<()>> = HashMap::new();
    let host_done = Arc::new(Notify::new());
    let mut checked = Instant::now();
    let mut shutdown = ctx.shutdown.clone();
    let me = ctx.coord.id().to_string();
    let result = loop {
        if *shutdown.borrow() {
            break Ok(());
        }
        let op = match get_json::<Operation>(ctx.store.as_ref(), key).await {
            Ok(Some(op)) => op.value,
            Ok(None) => break Ok(()),
            Err(e) => break Err(e),
        };
        if op.owner != me || !op.status.is_active() {
            break Ok(());
        }
        tasks.retain(|_, t| !t.is_finished());
        for a in &op.in_process {
            if !tasks.contains_key(a) {
                let (ctx, key, a2, done) =
                    (ctx.clone(), key.to_string(), a.clone(), host_done.clone());
                tasks.insert(
                    a.clone(),
                    tokio::spawn(async move { host_task(&ctx, &key, &a2, &done).await }),
                );
            }
        }
        let mut pause = Duration::from_millis(250);
        match decide(&op, seconds_since(&op.batch_finished_at)) {
            Decision::Over => break Ok(()),
            Decision::Wait => {}
            Decision::PauseBetweenBatches(s) => pause = Duration::from_secs_f64(s.min(1.0)),
            Decision::StartBatch(batch) => {
                let now = now_timestamp();
                let r = update_op(ctx, key, |o| {
                    // Decided on a read that may be stale: a pause, cancel or failure written
                    // since then must win, so decide again on the record being replaced.
                    if decide(o, seconds_since(&o.batch_finished_at))
                        != Decision::StartBatch(batch.clone())
                    {
                        return false;
                    }
                    for a in &batch {
                        o.in_process.push(a.clone());
                        let p = o.hosts.entry(a.clone()).or_default();
                        p.started_at = now.clone();
                    }
                    true
                })
                .await;
                if let Err(e) = r {
                    break Err(e);
                }
                tracing::info!(operation = %key, hosts = ?batch, "batch started");
                continue;
            }
            Decision::Finish(status, reason) => {
                let r = update_op(ctx, key, |o| {
                    if !o.status.is_active() || !o.in_process.is_empty() {
                        return false;
                    }
                    o.status = status;
                    o.reason = reason.clone();
                    o.finished_at = now_timestamp();
                    true
                })
                .await;
                tracing::info!(operation = %key, status = ?status, reason = %reason, "operation ended");
                break r.map(|_| ());
            }
        }
        if checked.elapsed() >= OWNERSHIP_CHECK_EVERY {
            checked = Instant::now();
            match ctx.coord.still_owner(key).await {
                Ok(true) => {}
                Ok(false) => {
                    tracing::warn!(operation = %key, "operation no longer ours (lease lost); stopping");
                    break Ok(());
                }
                Err(e) => break Err(StoreError::Unavailable(e.to_string())),
            }
        }
        tokio::select! {
            _ = shutdown.changed() => {},
            _ = tokio::time::sleep(pause) => {},
            _ = host_done.notified() => {},
        }
    };
    for (_, t) in tasks {
        t.abort();
    }
    if result.is_ok()
        && let Ok(Some(op)) = get_json::<Operation>(ctx.store.as_ref(), key).await
        && !op.value.status.is_active()
        && let Err(e) = ctx.coord.release(key).await
    {
        tracing::warn!(operation = %key, error = %e, "cannot release the finished operation");
    }
    result
}

/// Walks one host through its steps until it is done or failed, then wakes the coordinator.
async fn host_task(ctx: &Ctx, key: &str, address: &str, done: &Notify) {
    let mut cache: SessionCache = None;
    host_steps(ctx, key, address, &mut cache).await;
    drop_session(&mut cache).await;
    // The coordinator starts the next batch as soon as this one is over.
    done.notify_one();
}

async fn host_steps(ctx: &Ctx, key: &str, address: &str, cache: &mut SessionCache) {
    for _ in 0..10_000u32 {
        let op = match get_json::<Operation>(ctx.store.as_ref(), key).await {
            Ok(Some(op)) => op.value,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(operation = %key, address, error = %e, "cannot read operation; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if op.owner != ctx.coord.id() || !op.in_process.iter().any(|a| a == address) {
            return;
        }
        let progress = op.hosts.get(address).cloned().unwrap_or_default();
        let action = progress.next_action(op.options.drain);
        let draining = action == HostAction::Drain;
        if action == HostAction::Nothing {
            return;
        }
        let elapsed = seconds_since(&progress.started_at).unwrap_or(0.0);
        let remaining = op.options.timeout_seconds as f64 - elapsed;
        let outcome = if remaining <= 0.0 {
            Err(format!(
                "timed out after {} s (while {:?})",
                op.options.timeout_seconds, progress.state
            ))
        } else {
            let deadline = Instant::now() + Duration::from_secs_f64(remaining);
            step(ctx, &op, address, &progress, action, deadline, cache).await
        };
        let next = match outcome {
            Ok(next) => next,
            Err(error) => {
                tracing::warn!(operation = %key, address, error = %error, "host failed");
                // A drain that failed half-way may have cordoned the node already.
                if (progress.drained || draining)
                    && let Ok(Some(m)) = manager(ctx, &op).await
                {
                    nodes::uncordon_after_failure(&m, address).await;
                }
                HostProgress {
                    state: HostStep::Failed,
                    finished_at: now_timestamp(),
                    error,
                    ..progress.clone()
                }
            }
        };
        let acted_on = progress.state;
        let r = update_op(ctx, key, |o| {
            // Apply only if nobody moved this host meanwhile (e.g. a takeover).
            if o.hosts.get(address).map(|p| p.state) != Some(acted_on)
                || !o.in_process.iter().any(|a| a == address)
            {
                return false;
            }
            let mut next = next.clone();
            if next.state.is_final() && next.finished_at.is_empty() {
                next.finished_at = now_timestamp();
            }
            o.set_host(address, next);
            if o.in_process.is_empty() {
                o.batch_finished_at = now_timestamp();
            }
            true
        })
        .await;
        if let Err(e) = r {
            tracing::warn!(operation = %key, address, error = %e, "cannot save host progress; retrying");
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

/// Loads the host record, or explains why not.
async fn load_host(ctx: &Ctx, address: &str) -> Result<Host, String> {
    match get_json::<Host>(ctx.store.as_ref(), &host_key(address)).await {
        Ok(Some(h)) => Ok(h.value),
        Ok(None) => Err("the host was deleted".into()),
        Err(e) => Err(format!("store: {e}")),
    }
}

async fn connect(ctx: &Ctx, address: &str, timeout: Duration) -> Result<remote::Session, String> {
    let t = target(ctx.store.as_ref(), &ctx.sealer, address)
        .await
        .map_err(|e| e.to_string())?;
    let timeouts = remote::Timeouts {
        connect: timeout.min(Duration::from_secs(15)),
        command: timeout,
    };
    remote::Session::connect(&t, timeouts)
        .await
        .map(|(s, _)| s)
        .map_err(|e| e.to_string())
}

/// A host task's open SSH session, kept across its steps: a restart is then one handshake
/// before the reboot and one after, instead of one per step.
type SessionCache = Option<remote::Session>;

/// The cached session if it still works, else a new one (cached).
async fn session<'a>(
    ctx: &Ctx,
    address: &str,
    timeout: Duration,
    cache: &'a mut SessionCache,
) -> Result<&'a remote::Session, String> {
    if cache.as_ref().is_some_and(|s| s.is_closed()) {
        *cache = None;
    }
    if cache.is_none() {
        *cache = Some(connect(ctx, address, timeout).await?);
    }
    Ok(cache.as_ref().expect("just filled"))
}

/// Closes and forgets the cached session.
async fn drop_session(cache: &mut SessionCache) {
    if let Some(s) = cache.take() {
        s.close().await;
    }
}

async fn run_checked(
    session: &remote::Session,
    cmd: &str,
    timeout: Duration,
) -> Result<String, String> {
    let out = session
        .exec(cmd, None, timeout)
        .await
        .map_err(|e| format!("`{cmd}`: {e}"))?;
    if out.success() {
        Ok(out.stdout_text())
    } else {
        Err(format!(
            "`{cmd}` failed with exit status {}: {}",
            out.status,
            out.stderr_text()
        ))
    }
}

/// [`run_checked`] for commands that may hang (package managers): the host ends them when
/// the host's time is up, a few seconds before we stop waiting.
async fn run_bounded(
    session: &remote::Session,
    cmd: &str,
    timeout: Duration,
) -> Result<String, String> {
    let limit = timeout.saturating_sub(Duration::from_secs(3));
    let out = session
        .exec(&remote::bounded(cmd, limit), None, timeout)
        .await
        .map_err(|e| format!("`{cmd}`: {e}"))?;
    match out.status {
        0 => Ok(out.stdout_text()),
        124 => Err(format!(
            "`{cmd}` did not finish within {} s and was stopped on the host",
            limit.as_secs()
        )),
        s => Err(format!(
            "`{cmd}` failed with exit status {s}: {}",
            out.stderr_text()
        )),
    }
}

/// The booted and staged OSTree versions, from `rpm-ostree status --json`.
fn ostree_versions(json: &str) -> Result<(String, Option<String>), String> {
    let v: serde_json::Value =
        serde_json::from_str(json).map_err(|e| format!("rpm-ostree status --json: {e}"))?;
    let deployments = v["deployments"]
        .as_array()
        .ok_or("rpm-ostree status --json has no deployments")?;
    let version = |d: &serde_json::Value| d["version"].as_str().unwrap_or_default().to_string();
    let booted = deployments
        .iter()
        .find(|d| d["booted"] == true)
        .map(version)
        .ok_or("rpm-ostree status --json shows no booted deployment")?;
    let staged = deployments
        .iter()
        .find(|d| d["staged"] == true)
        // Older rpm-ostree lists a pending deployment first without a `staged` flag.
        .or_else(|| deployments.first().filter(|d| d["booted"] != true))
        .map(version);
    Ok((booted, staged))
}

/// Performs one action and returns the host's next progress.
async fn step(
    ctx: &Ctx,
    op: &Operation,
    address: &str,
    progress: &HostProgress,
    action: HostAction,
    deadline: Instant,
    cache: &mut SessionCache,
) -> Result<HostProgress, String> {
    let remaining = || deadline.saturating_duration_since(Instant::now());
    let mut next = progress.clone();
    match action {
        HostAction::Nothing => {}
        HostAction::Drain => {
            if let Some(m) = manager(ctx, op).await? {
                nodes::drain(&m, address, deadline).await?;
            }
            next.drained = true;
            next.state = HostStep::Running;
        }
        HostAction::RunCommand => {
            let host = load_host(ctx, address).await?;
            let os = OsCommands::for_host(host.distribution_id(), host.ostree)?;
            let session = session(ctx, address, remaining(), cache).await?;
            let result = async {
                match op.kind {
                    OperationKind::Restart => {}
                    OperationKind::Upgrade => {
                        run_bounded(session, os.upgrade, remaining()).await?;
                        if host.ostree {
                            let st = run_checked(session, "rpm-ostree status --json", remaining())
                                .await?;
                            let (booted, staged) = ostree_versions(&st)?;
                            next.target_version = staged.unwrap_or(booted);
                        }
                    }
                    OperationKind::Deploy => {
                        let version = op.version.clone().unwrap_or_default();
                        // The API's rule, checked again: the record may predate it.
                        model::validate::validate_ostree_version("version", &version)
                            .map_err(|e| e.to_string())?;
                        let cmd = os.deploy(&version)?;
                        run_bounded(session, &cmd, remaining()).await?;
                        next.target_version = version;
                    }
                }
                next.state = HostProgress::after_command(op.kind, host.ostree, op.options.reboot);
                if next.state == HostStep::Rebooting {
                    // The reboot is over when the boot id differs from this one.
                    let boot =
                        run_checked(session, "cat /proc/sys/kernel/random/boot_id", remaining())
                            .await?;
                    next.boot_id_before = boot.trim().to_string();
                }
                Ok::<(), String>(())
            }
            .await;
            if result.is_err() {
                drop_session(cache).await;
            }
            result?;
        }
        HostAction::AwaitReboot => {
            await_reboot(ctx, address, progress, deadline, cache).await?;
            next.state = HostStep::Verifying;
        }
        HostAction::Verify => {
            let host = load_host(ctx, address).await?;
            let session = session(ctx, address, remaining(), cache).await?;
            let result = async {
                let boot = run_checked(session, "cat /proc/sys/kernel/random/boot_id", remaining())
                    .await?;
                if host.ostree && matches!(op.kind, OperationKind::Upgrade | OperationKind::Deploy)
                {
                    let st = run_checked(session, "rpm-ostree status --json", remaining()).await?;
                    let (booted, _) = ostree_versions(&st)?;
                    if booted != progress.target_version {
                        return Err(format!(
                            "booted OSTree version is {booted:?}, expected {:?}",
                            progress.target_version
                        ));
                    }
                }
                Ok(boot.trim().to_string())
            }
            .await;
            // Nothing more to do on the host in this operation.
            drop_session(cache).await;
            let boot = result?;
            if let Err(e) = domain::hosts::record_contact(ctx.store.as_ref(), address, &boot).await
            {
                tracing::warn!(address, error = %e, "cannot record the host's new boot id");
            }
            next.state = progress.after_verify();
        }
        HostAction::Uncordon => {
            if let Some(m) = manager(ctx, op).await? {
                nodes::uncordon(ctx, &m, address, deadline).await?;
            }
            next.state = HostStep::Done;
        }
    }
    Ok(next)
}

/// Makes sure the host was asked to reboot exactly once in its current boot, then waits until
/// it answers with a different boot id.
async fn await_reboot(
    ctx: &Ctx,
    address: &str,
    progress: &HostProgress,
    deadline: Instant,
    cache: &mut SessionCache,
) -> Result<(), String> {
    let before = progress.boot_id_before.clone();
    let host = load_host(ctx, address).await?;
    let os = OsCommands::for_host(host.distribution_id(), host.ostree)?;
    let probe =
        format!("cat /proc/sys/kernel/random/boot_id; cat {REBOOT_MARKER} 2>/dev/null || true");
    // What the host last answered, and what went wrong since: a failed last attempt (e.g. one
    // cut short by the deadline) must not hide that the host was seen still in its old boot.
    let mut last_seen: Option<&str> = None;
    let mut last_error: Option<String> = None;
    let mut pause = REBOOT_PROBE_MIN;
    while Instant::now() < deadline {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let attempt = Duration::from_secs(5).min(remaining);
        match session(ctx, address, attempt, cache).await {
            Ok(session) => {
                let out = session.exec(&probe, None, attempt).await;
                match out {
                    Ok(o) if o.success() => {
                        let text = o.stdout_text();
                        let mut lines = text.lines();
                        let boot = lines.next().unwrap_or_default().trim().to_string();
                        let marker = lines.next().unwrap_or_default().trim().to_string();
                        if !boot.is_empty() && boot != before {
                            // Back in a new boot: the session serves the verification.
                            return Ok(());
                        }
                        if marker != before {
                            // Not requested in this boot yet: request it, recording the boot id
                            // first so a repeat of this step knows it was done.
                            let cmd = format!(
                                "mkdir -p /var/lib/commissaire && echo {before} > {REBOOT_MARKER} && sync && {}",
                                os.restart
                            );
                            // The connection usually drops under the command: that is success.
                            let _ = session.exec(&cmd, None, attempt).await;
                            tracing::info!(address, "reboot requested");
                            pause = REBOOT_PROBE_MIN;
                        } else {
                            // Requested, and still up in the old boot.
                            last_seen = Some(
                                "still running the boot it had before the reboot was requested",
                            );
                            last_error = None;
                            pause = (pause * 2).min(REBOOT_PROBE_MAX);
                        }
                    }
                    Ok(o) => {
                        last_error = Some(format!("boot id check exited with {}", o.status));
                        pause = REBOOT_PROBE_MIN;
                    }
                    Err(e) => {
                        last_error = Some(e.to_string());
                        pause = REBOOT_PROBE_MIN;
                    }
                }
                // Still the old boot (or going down): this connection is about to drop.
                drop_session(cache).await;
            }
            Err(e) => {
                last_error = Some(e);
                pause = REBOOT_PROBE_MIN;
            }
        }
        // A host coming back refuses connections until its sshd listens: retry soon, so the
        // host is seen back within a fraction of a second (bounded by the deadline).
        tokio::time::sleep(pause.min(deadline.saturating_duration_since(Instant::now()))).await;
    }
    let detail = match (last_seen, last_error) {
        (Some(seen), Some(e)) => format!("last seen {seen}; then: {e}"),
        (Some(seen), None) => format!("last seen {seen}"),
        (None, Some(e)) => format!("last: {e}"),
        (None, None) => "no answer".to_string(),
    };
    Err(format!(
        "did not come back with a new boot id in time ({detail})"
    ))
}

/// The container manager of the operation's cluster, if any.
async fn manager(ctx: &Ctx, op: &Operation) -> Result<Option<nodes::Manager>, String> {
    let cluster = get_json::<model::Cluster>(ctx.store.as_ref(), &records::cluster_key(&op.name))
        .await
        .map_err(|e| format!("store: {e}"))?
        .ok_or("the cluster was deleted")?
        .value;
    nodes::manager_of_cluster(ctx, &cluster).await
}

/// Addresses of hosts currently in flight in any active operation (the watcher leaves them
/// alone: a rebooting host is expected to be unreachable).
pub async fn hosts_in_flight(ctx: &Ctx) -> StoreResult<HashSet<String>> {
    Ok(
        records::list_json::<Operation>(ctx.store.as_ref(), records::OPERATIONS)
            .await?
            .into_iter()
            .filter(|o| o.value.status.is_active())
            .flat_map(|o| o.value.in_process)
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ostree_status_parsing() {
        let (b, s) = ostree_versions(
            r#"{"deployments":[{"version":"7.2","booted":false,"staged":true},{"version":"7.1","booted":true,"staged":false}],"transaction":null}"#,
        )
        .unwrap();
        assert_eq!(b, "7.1");
        assert_eq!(s.as_deref(), Some("7.2"));
        let (b, s) =
            ostree_versions(r#"{"deployments":[{"version":"7.1","booted":true}]}"#).unwrap();
        assert_eq!((b.as_str(), s), ("7.1", None));
        assert!(ostree_versions("nope").is_err());
    }

    #[test]
    fn timestamps() {
        let now = now_timestamp();
        assert!(seconds_since(&now).unwrap() < 5.0);
        assert!(seconds_since("").is_none());
    }
}
