//! What every handler shares: the store, the sealer for secrets, the job queue and the
//! shutdown signal.

use std::sync::Arc;

use store::SharedStore;
use store::secrets::Sealer;
use tokio::sync::watch;
pub use workers::{Job, JobQueue, WorkerStatus};

/// Shared state of the HTTP layer.
#[derive(Clone)]
pub struct AppState {
    /// The Redis bus, when the workers run in `commissaire-service` processes.
    pub bus: Option<Arc<workers::bus::Bus>>,
    /// Reconcile counters of the in-process workers.
    pub drivers: Arc<workers::DriverStatsByKind>,
    /// The rules over the store that the API routes call.
    pub domain: domain::Domain,
    /// The store.
    pub store: SharedStore,
    /// Seals and opens secrets.
    pub sealer: Arc<Sealer>,
    /// Jobs for the workers.
    pub jobs: Arc<JobQueue>,
    /// The workers' counters (for `/api/v0/status`).
    pub workers: Arc<WorkerStatus>,
    /// Becomes `true` when the server is shutting down (ends long-lived streams).
    pub shutdown: watch::Receiver<bool>,
}
