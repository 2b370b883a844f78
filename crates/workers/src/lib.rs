//! Commissaire's background workers, run in-process by `commissaire-server`:
//!
//! * [`investigator`] — new hosts: connect over SSH (trust on first use), gather facts,
//!   bootstrap (flannel, docker, Kubernetes node), and settle them `disassociated`/`active`;
//! * [`watcher`] — every host on an interval: `last_check`, failure and recovery;
//! * [`clusterexec`] — rolling restarts, upgrades and OSTree deploys (cordon/drain through the
//!   cluster's container manager);
//! * [`nodes`] — hosts as container-manager nodes: join (register, wait for Ready), views,
//!   removal when a host leaves its cluster.
//!
//! Workers hold no state of their own that matters: everything is read from and written to the
//! store, so killing the process at any point and starting it again continues the work.
#![warn(missing_docs)]

pub mod bootstrap;
pub mod bus;
pub mod clusterexec;
pub mod coordinator;
pub mod driver;
pub mod hosts;
pub mod investigator;
pub mod nodes;
pub mod oscmd;
pub mod sources;
pub mod watcher;

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use store::SharedStore;
use store::secrets::Sealer;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use bootstrap::{EtcdInfo, Templates};
pub use domain::jobs::{Job, JobQueue};

/// Worker settings from the server configuration.
pub struct WorkerConfig {
    /// Time between watcher rounds.
    pub watcher_interval: Duration,
    /// Bootstrap templates (built-in plus operator overrides).
    pub templates: Templates,
    /// The server's etcd, used as the flannel backend by `flannel_etcd` networks.
    pub etcd: Option<EtcdInfo>,
    /// SSH timeouts for investigation and bootstrap.
    pub ssh: remote::Timeouts,
    /// How often the job-driven workers scan the store for work no job announced.
    pub resync: std::time::Duration,
}

/// Counters reported by `/api/v0/status`.
#[derive(Debug, Default)]
pub struct WorkerStatus {
    /// Investigations running now.
    pub investigations: AtomicU64,
    /// Watcher rounds completed.
    pub watcher_rounds: AtomicU64,
    /// Hosts checked in the last round.
    pub watcher_last_checked: AtomicU64,
}

/// What every worker shares.
pub struct Ctx {
    /// The store.
    pub store: SharedStore,
    /// Opens sealed credentials.
    pub sealer: Arc<Sealer>,
    /// The job queue (the watcher re-queues recovering hosts).
    pub jobs: Arc<JobQueue>,
    /// Settings.
    pub cfg: WorkerConfig,
    /// Counters.
    pub status: Arc<WorkerStatus>,
    /// Becomes `true` at shutdown.
    pub shutdown: watch::Receiver<bool>,
    /// This server's stable id (owner of the operations it runs).
    pub server_id: String,
    /// This process's place among the processes sharing the store.
    pub coord: Arc<coordinator::Coordinator>,
    /// Reconcile counters of each worker kind.
    pub drivers: Arc<DriverStatsByKind>,
}

/// Reconcile counters of each worker kind this process runs.
#[derive(Debug, Default)]
pub struct DriverStatsByKind {
    /// The investigator's.
    pub investigator: Arc<driver::DriverStats>,
    /// The watcher's.
    pub watcher: Arc<driver::DriverStats>,
    /// clusterexec's.
    pub clusterexec: Arc<driver::DriverStats>,
    /// The container-manager worker's.
    pub containermgr: Arc<driver::DriverStats>,
}

impl DriverStatsByKind {
    /// The counters of `kind`.
    pub fn of(&self, kind: driver::WorkerKind) -> &Arc<driver::DriverStats> {
        match kind {
            driver::WorkerKind::Investigator => &self.investigator,
            driver::WorkerKind::Watcher => &self.watcher,
            driver::WorkerKind::Clusterexec => &self.clusterexec,
            driver::WorkerKind::Containermgr => &self.containermgr,
        }
    }
}

/// How often, by default, the store is scanned for work that no job announced (lost jobs,
/// other processes' leftovers), for the workers that are driven by jobs.
pub const RESYNC: std::time::Duration = std::time::Duration::from_secs(60);

/// Starts every worker kind on the reconcile driver, with jobs from the in-process queue.
/// They stop when `ctx.shutdown` turns `true`.
pub async fn start(ctx: Arc<Ctx>) -> Vec<JoinHandle<()>> {
    let mut sources: Vec<(driver::WorkerKind, Box<dyn driver::JobSource>)> = Vec::new();
    if let Some(rx) = ctx.jobs.take_receiver().await {
        sources.push((
            driver::WorkerKind::Investigator,
            Box::new(sources::ChannelSource::new(rx, ctx.jobs.clone())),
        ));
    }
    if let Some(rx) = ctx.jobs.take_operation_receiver().await {
        sources.push((
            driver::WorkerKind::Clusterexec,
            Box::new(sources::ChannelSource::new(rx, ctx.jobs.clone())),
        ));
    }
    if let Some(rx) = ctx.jobs.take_node_receiver().await {
        sources.push((
            driver::WorkerKind::Containermgr,
            Box::new(sources::ChannelSource::new(rx, ctx.jobs.clone())),
        ));
    }
    sources.push((driver::WorkerKind::Watcher, Box::new(driver::NoJobs)));
    sources
        .into_iter()
        .map(|(kind, source)| start_kind(ctx.clone(), kind, source))
        .collect()
}

/// Starts one worker kind on the reconcile driver with the given job source.
pub fn start_kind(
    ctx: Arc<Ctx>,
    kind: driver::WorkerKind,
    source: Box<dyn driver::JobSource>,
) -> JoinHandle<()> {
    use driver::{DriverOptions, WorkerKind};
    let stats = ctx.drivers.of(kind).clone();
    let shutdown = ctx.shutdown.clone();
    match kind {
        WorkerKind::Investigator => tokio::spawn(driver::run(
            Arc::new(investigator::Investigator::new(ctx.clone())),
            source,
            DriverOptions {
                resync: ctx.cfg.resync,
                concurrency: investigator::MAX_CONCURRENT,
                ..Default::default()
            },
            stats,
            shutdown,
        )),
        WorkerKind::Watcher => tokio::spawn(driver::run(
            Arc::new(watcher::Watcher::new(ctx.clone())),
            source,
            DriverOptions {
                resync: ctx.cfg.watcher_interval,
                concurrency: watcher::MAX_CONCURRENT,
                spread: true,
                // A failed check is simply done again next round.
                max_backoff: ctx.cfg.watcher_interval,
            },
            stats,
            shutdown,
        )),
        WorkerKind::Clusterexec => tokio::spawn(driver::run(
            Arc::new(clusterexec::Clusterexec::new(ctx.clone())),
            source,
            DriverOptions {
                resync: clusterexec::SCAN_EVERY,
                // A reconcile runs a whole operation: one per cluster at once, never queued
                // behind each other.
                concurrency: 1024,
                ..Default::default()
            },
            stats,
            shutdown,
        )),
        WorkerKind::Containermgr => tokio::spawn(driver::run(
            Arc::new(nodes::NodeRemover::new(ctx.clone())),
            source,
            DriverOptions {
                resync: ctx.cfg.resync,
                concurrency: 16,
                ..Default::default()
            },
            stats,
            shutdown,
        )),
    }
}
