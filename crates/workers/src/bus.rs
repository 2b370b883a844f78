//! The Redis bus of the scaled-out shape: one stream of jobs per worker kind
//! (`<exchange>:jobs:<kind>`), one consumer group per kind, one consumer per process.
//!
//! Jobs only name a record, so at-least-once delivery is enough: a process takes entries with
//! `XREADGROUP`, keeps the ones it is working on fresh (`XCLAIM` to itself, so they never look
//! abandoned while a long reconcile runs), and `XACK`s each once its reconcile is done. Entries
//! a dead consumer left pending for more than [`ABANDONED_AFTER`] are taken over with
//! `XAUTOCLAIM`. When Redis is down nothing is lost: the API has written the record already and
//! every worker's periodic scan of the store finds the work.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::streams::{StreamAutoClaimReply, StreamReadReply};
use redis::{AsyncConnectionConfig, Client, RedisResult};
use tokio::sync::{Mutex, watch};

use crate::driver::{Acker, Delivery, JobSource, WorkerKind};
use crate::sources::job_key;
use crate::{Job, JobQueue};

/// A pending entry idle for longer than this belongs to a consumer that is gone.
pub const ABANDONED_AFTER: Duration = Duration::from_secs(5);
/// How often a consumer refreshes the entries it works on.
const TOUCH_EVERY: Duration = Duration::from_secs(2);
/// Bound on the length of each stream (entries are wake-ups; old ones are worthless).
const MAX_LEN: usize = 100_000;

/// A handle on the bus.
pub struct Bus {
    client: Client,
    exchange: String,
    manager: Mutex<Option<ConnectionManager>>,
}

impl Bus {
    /// A bus on the Redis at `uri` (`redis://host:port/db`), with stream names under
    /// `exchange`. Connects lazily: a Redis that is down at start is not an error.
    pub fn new(uri: &str, exchange: &str) -> Result<Arc<Bus>, String> {
        let client = Client::open(uri).map_err(|e| format!("bus-uri {uri:?}: {e}"))?;
        Ok(Arc::new(Bus {
            client,
            exchange: exchange.to_string(),
            manager: Mutex::new(None),
        }))
    }

    /// The stream of jobs of `kind`.
    pub fn stream(&self, kind: WorkerKind) -> String {
        format!("{}:jobs:{}", self.exchange, kind.as_str())
    }

    /// A shared connection for short commands (reconnects by itself once made).
    async fn conn(&self) -> RedisResult<ConnectionManager> {
        let mut m = self.manager.lock().await;
        if let Some(c) = m.as_ref() {
            return Ok(c.clone());
        }
        let cfg = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(2)))
            .set_number_of_retries(1);
        let c = ConnectionManager::new_with_config(self.client.clone(), cfg).await?;
        *m = Some(c.clone());
        Ok(c)
    }

    /// A dedicated connection for blocking reads (no response timeout: `XREADGROUP BLOCK`
    /// waits longer than any default would allow, and must not stall other commands).
    async fn blocking_conn(&self) -> RedisResult<MultiplexedConnection> {
        let cfg = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(None);
        self.client
            .get_multiplexed_async_connection_with_config(&cfg)
            .await
    }

    /// Adds a job to its worker kind's stream.
    pub async fn publish(&self, job: &Job) -> RedisResult<()> {
        let kind = kind_of(job);
        let mut c = self.conn().await?;
        let _: String = redis::cmd("XADD")
            .arg(self.stream(kind))
            .arg("MAXLEN")
            .arg("~")
            .arg(MAX_LEN)
            .arg("*")
            .arg("key")
            .arg(job_key(job))
            .query_async(&mut c)
            .await?;
        Ok(())
    }

    /// The stream the `storage` service publishes the change feed to.
    pub fn events_stream(&self) -> String {
        format!("{}:events", self.exchange)
    }

    /// The store revision and per-revision index of the last entry of a change-feed stream
    /// (`(0, None)` when it is empty).
    pub async fn last_event_id(&self, stream: &str) -> RedisResult<(i64, Option<u64>)> {
        let mut c = self.conn().await?;
        let last: Vec<(String, Vec<(String, String)>)> = redis::cmd("XREVRANGE")
            .arg(stream)
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1)
            .query_async(&mut c)
            .await?;
        Ok(last
            .first()
            .and_then(|(id, _)| id.split_once('-'))
            .and_then(|(r, i)| Some((r.parse().ok()?, Some(i.parse().ok()?))))
            .unwrap_or((0, None)))
    }

    /// Appends one change-feed event with id `<revision>-<index>`. An id not above the
    /// stream's last one means it was published already (by a publisher that died before it
    /// could know): skipped, so every event is in the stream once.
    pub async fn publish_event(
        &self,
        stream: &str,
        revision: i64,
        index: u64,
        body: &str,
    ) -> RedisResult<()> {
        let mut c = self.conn().await?;
        let r: RedisResult<String> = redis::cmd("XADD")
            .arg(stream)
            .arg(format!("{revision}-{index}"))
            .arg("event")
            .arg(body)
            .query_async(&mut c)
            .await;
        match r {
            Ok(_) => Ok(()),
            Err(e) if e.to_string().contains("equal or smaller") => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Checks that Redis answers (for `/status`).
    pub async fn ping(&self) -> RedisResult<()> {
        let mut c = self.conn().await?;
        let _: String = redis::cmd("PING").query_async(&mut c).await?;
        Ok(())
    }
}

/// The worker kind that handles a job.
pub fn kind_of(job: &Job) -> WorkerKind {
    match job {
        Job::Investigate { .. } => WorkerKind::Investigator,
        Job::RunOperation { .. } => WorkerKind::Clusterexec,
        Job::RemoveNode { .. } => WorkerKind::Containermgr,
    }
}

/// Forwards every job the API queues in this process to the bus, until shutdown. A job that
/// cannot be published is dropped with a warning: the record is in the store, and the
/// workers' scans find it.
pub async fn forward_jobs(bus: Arc<Bus>, jobs: Arc<JobQueue>, mut shutdown: watch::Receiver<bool>) {
    let (Some(mut inv), Some(mut ops), Some(mut nodes)) = (
        jobs.take_receiver().await,
        jobs.take_operation_receiver().await,
        jobs.take_node_receiver().await,
    ) else {
        return;
    };
    loop {
        let job = tokio::select! {
            _ = shutdown.changed() => return,
            Some(j) = inv.recv() => j,
            Some(j) = ops.recv() => j,
            Some(j) = nodes.recv() => j,
        };
        jobs.mark_taken();
        if let Err(e) = bus.publish(&job).await {
            tracing::warn!(job = ?job, error = %e, "cannot publish a job on the bus; the workers' next scan will find it");
        }
    }
}

/// Jobs of one worker kind from its Redis stream.
pub struct RedisSource {
    bus: Arc<Bus>,
    stream: String,
    group: String,
    consumer: String,
    blocking: Option<MultiplexedConnection>,
    group_ready: bool,
    last_autoclaim: Option<Instant>,
    pending: VecDeque<(String, String)>,
    failures: u32,
}

impl RedisSource {
    /// Consumer `consumer` of the group of `kind`.
    pub fn new(bus: Arc<Bus>, kind: WorkerKind, consumer: &str) -> RedisSource {
        RedisSource {
            stream: bus.stream(kind),
            group: kind.as_str().to_string(),
            consumer: consumer.to_string(),
            bus,
            blocking: None,
            group_ready: false,
            last_autoclaim: None,
            pending: VecDeque::new(),
            failures: 0,
        }
    }

    fn delivery(&self, id: String, key: String) -> Delivery {
        Delivery {
            key,
            ack: Some(Box::new(RedisAck::start(
                self.bus.clone(),
                self.stream.clone(),
                self.group.clone(),
                self.consumer.clone(),
                id,
            ))),
        }
    }

    async fn fill(&mut self) -> RedisResult<()> {
        if !self.group_ready {
            let mut c = self.bus.conn().await?;
            let r: RedisResult<String> = redis::cmd("XGROUP")
                .arg("CREATE")
                .arg(&self.stream)
                .arg(&self.group)
                .arg("0")
                .arg("MKSTREAM")
                .query_async(&mut c)
                .await;
            match r {
                Ok(_) => {}
                Err(e) if e.to_string().contains("BUSYGROUP") => {}
                Err(e) => return Err(e),
            }
            self.group_ready = true;
        }
        if self
            .last_autoclaim
            .is_none_or(|t| t.elapsed() >= ABANDONED_AFTER / 2)
        {
            self.last_autoclaim = Some(Instant::now());
            let mut c = self.bus.conn().await?;
            let reply: StreamAutoClaimReply = redis::cmd("XAUTOCLAIM")
                .arg(&self.stream)
                .arg(&self.group)
                .arg(&self.consumer)
                .arg(ABANDONED_AFTER.as_millis() as u64)
                .arg("0-0")
                .arg("COUNT")
                .arg(100)
                .query_async(&mut c)
                .await?;
            for e in reply.claimed {
                if let Some(key) = e.get::<String>("key") {
                    tracing::info!(stream = %self.stream, key = %key, "took over a job a gone consumer left");
                    self.pending.push_back((e.id, key));
                }
            }
            if !self.pending.is_empty() {
                return Ok(());
            }
        }
        if self.blocking.is_none() {
            self.blocking = Some(self.bus.blocking_conn().await?);
        }
        let c = self.blocking.as_mut().expect("connected above");
        let reply: Option<StreamReadReply> = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(&self.group)
            .arg(&self.consumer)
            .arg("COUNT")
            .arg(100)
            .arg("BLOCK")
            .arg(2000)
            .arg("STREAMS")
            .arg(&self.stream)
            .arg(">")
            .query_async(c)
            .await?;
        for k in reply.map(|r| r.keys).unwrap_or_default() {
            for e in k.ids {
                if let Some(key) = e.get::<String>("key") {
                    self.pending.push_back((e.id, key));
                }
            }
        }
        Ok(())
    }
}

#[async_trait]
impl JobSource for RedisSource {
    async fn next(&mut self) -> Option<Delivery> {
        loop {
            if let Some((id, key)) = self.pending.pop_front() {
                return Some(self.delivery(id, key));
            }
            match self.fill().await {
                Ok(()) => self.failures = 0,
                Err(e) => {
                    self.failures += 1;
                    self.blocking = None;
                    self.group_ready = false;
                    if self.failures == 1 {
                        tracing::warn!(stream = %self.stream, error = %e, "the bus is unreachable; the store's scans carry the work meanwhile");
                    }
                    let delay = Duration::from_millis(500 * u64::from(self.failures.min(10)));
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }
}

/// Acknowledges one entry once its reconcile is done, and keeps it fresh until then.
struct RedisAck {
    bus: Arc<Bus>,
    stream: String,
    group: String,
    id: String,
    touch: tokio::task::JoinHandle<()>,
}

impl RedisAck {
    fn start(bus: Arc<Bus>, stream: String, group: String, consumer: String, id: String) -> Self {
        let touch = {
            let (bus, stream, group, id) = (bus.clone(), stream.clone(), group.clone(), id.clone());
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(TOUCH_EVERY).await;
                    // Claiming our own entry resets its idle time: nobody takes it over while
                    // we are alive and working on it.
                    if let Ok(mut c) = bus.conn().await {
                        let _: RedisResult<redis::Value> = redis::cmd("XCLAIM")
                            .arg(&stream)
                            .arg(&group)
                            .arg(&consumer)
                            .arg(0)
                            .arg(&id)
                            .arg("JUSTID")
                            .query_async(&mut c)
                            .await;
                    }
                }
            })
        };
        RedisAck {
            bus,
            stream,
            group,
            id,
            touch,
        }
    }
}

#[async_trait]
impl Acker for RedisAck {
    async fn ack(self: Box<Self>) {
        self.touch.abort();
        let r: RedisResult<i64> = match self.bus.conn().await {
            Ok(mut c) => {
                redis::cmd("XACK")
                    .arg(&self.stream)
                    .arg(&self.group)
                    .arg(&self.id)
                    .query_async(&mut c)
                    .await
            }
            Err(e) => Err(e),
        };
        if let Err(e) = r {
            // Left pending: another consumer redoes it later, which is harmless.
            tracing::warn!(stream = %self.stream, id = %self.id, error = %e, "cannot acknowledge a job");
        }
    }
}

impl Drop for RedisAck {
    fn drop(&mut self) {
        self.touch.abort();
    }
}
