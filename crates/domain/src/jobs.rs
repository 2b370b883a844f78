//! The in-process job queues between the domain (which writes a record, then names it in a
//! job) and the workers.
//!
//! Jobs only name a record: the record in the store says what to do, so a job lost in a crash
//! is recovered by the worker's own scan of the store when it starts (unfinished hosts for the
//! investigator, active operations for clusterexec).

use std::sync::atomic::{AtomicU64, Ordering};

use model::OperationKind;
use tokio::sync::{Mutex, mpsc};

/// Work the API hands to background workers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Job {
    /// Investigate and bootstrap the host with this address.
    Investigate {
        /// The host's address.
        address: String,
    },
    /// Remove a host's node from its former container manager (the `node_removals/` record
    /// says which).
    RemoveNode {
        /// The host's address.
        address: String,
    },
    /// Run (or continue) a cluster's rolling operation.
    RunOperation {
        /// The cluster's name.
        cluster: String,
        /// Which operation.
        kind: OperationKind,
    },
}

/// The in-process job queues: investigations, rolling operations, node removals.
pub struct JobQueue {
    investigate_tx: mpsc::UnboundedSender<Job>,
    investigate_rx: Mutex<Option<mpsc::UnboundedReceiver<Job>>>,
    operations_tx: mpsc::UnboundedSender<Job>,
    operations_rx: Mutex<Option<mpsc::UnboundedReceiver<Job>>>,
    nodes_tx: mpsc::UnboundedSender<Job>,
    nodes_rx: Mutex<Option<mpsc::UnboundedReceiver<Job>>>,
    queued: AtomicU64,
    taken: AtomicU64,
}

impl Default for JobQueue {
    fn default() -> Self {
        Self::new()
    }
}

impl JobQueue {
    /// Empty queues.
    pub fn new() -> Self {
        let (investigate_tx, irx) = mpsc::unbounded_channel();
        let (operations_tx, orx) = mpsc::unbounded_channel();
        let (nodes_tx, nrx) = mpsc::unbounded_channel();
        JobQueue {
            investigate_tx,
            investigate_rx: Mutex::new(Some(irx)),
            operations_tx,
            operations_rx: Mutex::new(Some(orx)),
            nodes_tx,
            nodes_rx: Mutex::new(Some(nrx)),
            queued: AtomicU64::new(0),
            taken: AtomicU64::new(0),
        }
    }

    /// Adds a job to the queue of the worker that handles it.
    pub fn push(&self, job: Job) {
        self.queued.fetch_add(1, Ordering::Relaxed);
        // The receivers live as long as the queue, so sending cannot fail.
        let _ = match job {
            Job::Investigate { .. } => self.investigate_tx.send(job),
            Job::RunOperation { .. } => self.operations_tx.send(job),
            Job::RemoveNode { .. } => self.nodes_tx.send(job),
        };
    }

    /// Hands the investigation queue to the investigator (once).
    pub async fn take_receiver(&self) -> Option<mpsc::UnboundedReceiver<Job>> {
        self.investigate_rx.lock().await.take()
    }

    /// Hands the operation queue to clusterexec (once).
    pub async fn take_operation_receiver(&self) -> Option<mpsc::UnboundedReceiver<Job>> {
        self.operations_rx.lock().await.take()
    }

    /// Hands the node-removal queue to its worker (once).
    pub async fn take_node_receiver(&self) -> Option<mpsc::UnboundedReceiver<Job>> {
        self.nodes_rx.lock().await.take()
    }
    /// Call when a worker has taken a job off a queue.
    pub fn mark_taken(&self) {
        self.taken.fetch_add(1, Ordering::Relaxed);
    }

    /// Jobs pushed and not yet taken by a worker.
    pub fn pending(&self) -> u64 {
        self.queued
            .load(Ordering::Relaxed)
            .saturating_sub(self.taken.load(Ordering::Relaxed))
    }
}
