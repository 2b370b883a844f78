//! Job sources for the reconcile driver: the in-process queue of the single-binary shape.

use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::mpsc;

use crate::driver::{Delivery, JobSource};
use crate::{Job, JobQueue};

/// The key a job names, as the driver of its worker kind reconciles it.
pub fn job_key(job: &Job) -> String {
    match job {
        Job::Investigate { address } | Job::RemoveNode { address } => address.clone(),
        Job::RunOperation { cluster, kind } => {
            store::records::operation_key(cluster, kind.as_str())
        }
    }
}

/// Jobs from one of the in-process queues.
pub struct ChannelSource {
    rx: mpsc::UnboundedReceiver<Job>,
    queue: Arc<JobQueue>,
}

impl ChannelSource {
    /// Wraps a receiver taken from `queue`.
    pub fn new(rx: mpsc::UnboundedReceiver<Job>, queue: Arc<JobQueue>) -> Self {
        ChannelSource { rx, queue }
    }
}

#[async_trait]
impl JobSource for ChannelSource {
    async fn next(&mut self) -> Option<Delivery> {
        let job = self.rx.recv().await?;
        self.queue.mark_taken();
        Some(Delivery {
            key: job_key(&job),
            ack: None,
        })
    }
}
