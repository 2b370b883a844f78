//! The in-process job queue between the API and the workers.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::{Mutex, mpsc};

/// Work the API hands to background workers. Jobs only name a record: the record in the store
/// says what to do, so a job lost in a crash is recovered by the investigator, which scans the store for
/// unfinished hosts when it starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Job {
    /// Investigate and bootstrap the host with this address.
    Investigate {
        /// The host's address.
        address: String,
    },
}

/// The in-process job queue between the API and the workers.
pub struct JobQueue {
    tx: mpsc::UnboundedSender<Job>,
    rx: Mutex<Option<mpsc::UnboundedReceiver<Job>>>,
    queued: AtomicU64,
    taken: Arc<AtomicU64>,
}

impl Default for JobQueue {
    fn default() -> Self {
        Self::new()
    }
}

impl JobQueue {
    /// An empty queue.
    pub fn new() -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        JobQueue {
            tx,
            rx: Mutex::new(Some(rx)),
            queued: AtomicU64::new(0),
            taken: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Adds a job.
    pub fn push(&self, job: Job) {
        self.queued.fetch_add(1, Ordering::Relaxed);
        // The receiver lives as long as the queue, so sending cannot fail.
        let _ = self.tx.send(job);
    }

    /// Hands the receiving end to the worker that consumes jobs (once).
    pub async fn take_receiver(&self) -> Option<mpsc::UnboundedReceiver<Job>> {
        self.rx.lock().await.take()
    }

    /// Call when a worker has taken a job off the queue.
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
