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
pub mod clusterexec;
pub mod hosts;
pub mod investigator;
pub mod nodes;
pub mod oscmd;
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
}

/// Starts the investigator, clusterexec, the node worker and the watcher. They stop when `ctx.shutdown` turns `true`.
pub async fn start(ctx: Arc<Ctx>) -> Vec<JoinHandle<()>> {
    let mut handles = Vec::new();
    if let Some(rx) = ctx.jobs.take_receiver().await {
        handles.push(tokio::spawn(investigator::run(ctx.clone(), rx)));
    }
    if let Some(rx) = ctx.jobs.take_operation_receiver().await {
        handles.push(tokio::spawn(clusterexec::run(ctx.clone(), rx)));
    }
    if let Some(rx) = ctx.jobs.take_node_receiver().await {
        handles.push(tokio::spawn(nodes::run(ctx.clone(), rx)));
    }
    handles.push(tokio::spawn(watcher::run(ctx)));
    handles
}
