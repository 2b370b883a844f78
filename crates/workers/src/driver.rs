//! The reconcile driver every worker runs on, in the single-process shape and in the
//! scaled-out one alike (in the style of kube-rs controllers).
//!
//! A worker is a [`Reconciler`]: `scan` lists the keys that need work according to the store,
//! `reconcile(key)` does the next idempotent steps for one key and returns once there is
//! nothing more to do for now. The driver calls `scan` at start and on every resync, takes
//! wake-ups from a [`JobSource`] (the in-process queue, or Redis Streams), runs at most one
//! reconcile per key at a time (a wake-up for a key in flight runs it once more afterwards),
//! bounds concurrency, and retries failed keys with exponential backoff and jitter. Nothing it
//! holds matters across a restart: the store says what is left to do.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use domain::DomainError;
use rand::Rng;
use tokio::sync::{Mutex, Semaphore, mpsc, watch};

/// A kind of worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WorkerKind {
    /// New hosts: facts and bootstrap.
    Investigator,
    /// Periodic health checks.
    Watcher,
    /// Rolling operations.
    Clusterexec,
    /// Container-manager side effects (node removals).
    Containermgr,
}

impl WorkerKind {
    /// Every kind.
    pub const ALL: [WorkerKind; 4] = [
        WorkerKind::Investigator,
        WorkerKind::Watcher,
        WorkerKind::Clusterexec,
        WorkerKind::Containermgr,
    ];

    /// The name used in configuration, metrics, Redis stream names and etcd keys.
    pub fn as_str(self) -> &'static str {
        match self {
            WorkerKind::Investigator => "investigator",
            WorkerKind::Watcher => "watcher",
            WorkerKind::Clusterexec => "clusterexec",
            WorkerKind::Containermgr => "containermgr",
        }
    }

    /// Parses a name given on the command line.
    pub fn parse(name: &str) -> Option<WorkerKind> {
        WorkerKind::ALL.into_iter().find(|k| k.as_str() == name)
    }
}

/// One worker's logic.
#[async_trait]
pub trait Reconciler: Send + Sync + 'static {
    /// Which worker this is.
    fn kind(&self) -> WorkerKind;

    /// The keys that need work, read from the store (at start and on every resync).
    async fn scan(&self) -> Result<Vec<String>, DomainError>;

    /// Does what `key` needs now. Idempotent: running it again after a crash, or twice in a
    /// row, leads to the same end state.
    async fn reconcile(&self, key: &str) -> Result<(), DomainError>;
}

/// Acknowledges a delivered job once it has been handled.
#[async_trait]
pub trait Acker: Send + Sync {
    /// Marks the job done at its source.
    async fn ack(self: Box<Self>);
}

/// One wake-up from a job source.
pub struct Delivery {
    /// The key to reconcile.
    pub key: String,
    /// How to acknowledge it, for sources that redeliver unacknowledged jobs.
    pub ack: Option<Box<dyn Acker>>,
}

/// Where wake-ups come from.
#[async_trait]
pub trait JobSource: Send {
    /// The next wake-up; `None` when the source is closed for good.
    async fn next(&mut self) -> Option<Delivery>;
}

/// A source with no jobs (a worker driven by its resync alone, like the watcher).
pub struct NoJobs;

#[async_trait]
impl JobSource for NoJobs {
    async fn next(&mut self) -> Option<Delivery> {
        std::future::pending().await
    }
}

/// How a driver runs.
#[derive(Clone, Debug)]
pub struct DriverOptions {
    /// Time between scans of the store.
    pub resync: Duration,
    /// Reconciles running at once.
    pub concurrency: usize,
    /// Spread the keys of each resync over the first half of the interval, in random groups
    /// of [`SPREAD_GROUP`] (checks that would otherwise all start at once), instead of
    /// starting them at once.
    pub spread: bool,
    /// Longest wait before retrying a key whose reconcile failed.
    pub max_backoff: Duration,
}

impl Default for DriverOptions {
    fn default() -> Self {
        DriverOptions {
            resync: Duration::from_secs(60),
            concurrency: 32,
            spread: false,
            max_backoff: Duration::from_secs(60),
        }
    }
}

/// Counters of one driver (for `/status` and metrics).
#[derive(Debug, Default)]
pub struct DriverStats {
    /// Reconciles that succeeded.
    pub ok: AtomicU64,
    /// Reconciles that failed (and were scheduled again).
    pub errors: AtomicU64,
    /// Jobs taken from the job source.
    pub jobs: AtomicU64,
    /// Resyncs completed.
    pub resyncs: AtomicU64,
    /// Reconciles running now.
    pub running: AtomicU64,
    /// When rounds and jobs last finished, the last error, the loop's state: for `/status`.
    pub progress: std::sync::Mutex<Progress>,
}

/// How long past its due time a round may be late before its worker counts as stuck: the
/// round is a scan of the store, which the store's own timeouts bound well below this.
pub const ROUND_GRACE: Duration = Duration::from_secs(60);

/// What a driver last did, with the times (API timestamp format) an operator reads and the
/// instants the stuck check measures with.
#[derive(Debug, Default, Clone)]
pub struct Progress {
    /// The driver loop runs (set at start, cleared when it ends).
    pub running: bool,
    /// When the loop started.
    pub started: Option<std::time::Instant>,
    /// Its resync interval: one round is due per interval.
    pub resync: Duration,
    /// When the last round (scan of the store) finished.
    pub last_round: Option<(std::time::Instant, String)>,
    /// When the last job (one reconcile) finished, and its key.
    pub last_job: Option<(String, String)>,
    /// The last failure: when, the key (or `scan`), and the error.
    pub last_error: Option<(String, String, String)>,
}

impl Progress {
    /// Why the worker counts as stuck, or `None`: its loop has ended (while `shutting_down`
    /// is false), or no round has finished within two resync intervals plus [`ROUND_GRACE`]
    /// of the previous one (or of the start).
    pub fn stuck(&self, now: std::time::Instant, shutting_down: bool) -> Option<String> {
        let started = self.started?;
        if !self.running {
            return (!shutting_down).then(|| "its loop has stopped".to_string());
        }
        let since = self.last_round.as_ref().map(|r| r.0).unwrap_or(started);
        let allowed = self.resync * 2 + ROUND_GRACE;
        let late = now.saturating_duration_since(since);
        (late > allowed).then(|| {
            format!(
                "no round finished for {} s (one is due every {} s)",
                late.as_secs(),
                self.resync.as_secs()
            )
        })
    }
}

impl DriverStats {
    fn with_progress(&self, f: impl FnOnce(&mut Progress)) {
        // A poisoned lock only means a panic elsewhere mid-update; the data stays usable.
        let mut p = self.progress.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut p);
    }

    /// A copy of the driver's progress.
    pub fn progress(&self) -> Progress {
        self.progress
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// Clears [`Progress::running`] however the driver loop ends (return or panic).
struct LoopGuard(Arc<DriverStats>);

impl Drop for LoopGuard {
    fn drop(&mut self) {
        self.0.with_progress(|p| p.running = false);
    }
}

struct Shared<R> {
    reconciler: Arc<R>,
    sem: Semaphore,
    /// Key → a wake-up arrived while it was running (run once more).
    inflight: Mutex<HashMap<String, bool>>,
    /// Key → consecutive failures.
    failures: Mutex<HashMap<String, u32>>,
    retry_tx: mpsc::UnboundedSender<String>,
    opts: DriverOptions,
    stats: Arc<DriverStats>,
}

/// Runs `reconciler` until `shutdown` turns `true`.
pub async fn run<R: Reconciler>(
    reconciler: Arc<R>,
    mut source: Box<dyn JobSource>,
    opts: DriverOptions,
    stats: Arc<DriverStats>,
    mut shutdown: watch::Receiver<bool>,
) {
    let (retry_tx, mut retry_rx) = mpsc::unbounded_channel();
    let kind = reconciler.kind().as_str();
    stats.with_progress(|p| {
        p.running = true;
        p.started = Some(std::time::Instant::now());
        p.resync = opts.resync;
    });
    let _guard = LoopGuard(stats.clone());
    let shared = Arc::new(Shared {
        reconciler,
        sem: Semaphore::new(opts.concurrency.max(1)),
        inflight: Mutex::default(),
        failures: Mutex::default(),
        retry_tx,
        opts: opts.clone(),
        stats,
    });
    let mut resync = tokio::time::interval(opts.resync);
    resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = resync.tick() => {
                match shared.reconciler.scan().await {
                    Ok(keys) => {
                        shared.stats.resyncs.fetch_add(1, Ordering::Relaxed);
                        shared.stats.with_progress(|p| {
                            p.last_round = Some((std::time::Instant::now(), model::now_timestamp()));
                        });
                        if opts.spread {
                            spread_round(&shared, keys, opts.resync / 2);
                        } else {
                            for key in keys {
                                submit(&shared, key, None).await;
                            }
                        }
                    }
                    Err(e) => {
                        tracing::warn!(worker = kind, error = %e, "scan failed; retried at the next resync");
                        shared.stats.with_progress(|p| {
                            p.last_error = Some((model::now_timestamp(), "scan".into(), e.to_string()));
                        });
                    }
                }
            }
            Some(key) = retry_rx.recv() => submit(&shared, key, None).await,
            delivery = source.next() => match delivery {
                Some(d) => {
                    shared.stats.jobs.fetch_add(1, Ordering::Relaxed);
                    metrics::counter!("commissaire_jobs_claimed_total", "worker" => kind).increment(1);
                    submit(&shared, d.key, d.ack).await;
                }
                // A closed source: keep resyncing, jobs are only wake-ups.
                None => source = Box::new(NoJobs),
            },
        }
    }
}

/// Keys started together by a spread round.
///
/// A group's reconciles wait on the network at the same moments, so one wake-up of the process
/// serves several of them. With a fixed group size that saving does not depend on how many
/// keys this process has, so a fleet split over several processes costs no more per key than
/// one process doing it all, and a group of this size is no burst for hosts or the store.
pub const SPREAD_GROUP: usize = 32;

/// Starts `keys` in random groups of [`SPREAD_GROUP`], each group at a random moment within
/// `spread`.
fn spread_round<R: Reconciler>(shared: &Arc<Shared<R>>, mut keys: Vec<String>, spread: Duration) {
    use rand::seq::SliceRandom;
    keys.shuffle(&mut rand::rng());
    while !keys.is_empty() {
        let group: Vec<String> = keys.drain(..SPREAD_GROUP.min(keys.len())).collect();
        let delay = rand::rng().random_range(Duration::ZERO..=spread);
        let shared = shared.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            for key in group {
                submit(&shared, key, None).await;
            }
        });
    }
}

async fn submit<R: Reconciler>(shared: &Arc<Shared<R>>, key: String, ack: Option<Box<dyn Acker>>) {
    {
        let mut map = shared.inflight.lock().await;
        if let Some(again) = map.get_mut(&key) {
            // Running now: once more afterwards covers this wake-up.
            *again = true;
            drop(map);
            if let Some(a) = ack {
                a.ack().await;
            }
            return;
        }
        map.insert(key.clone(), false);
    }
    let shared = shared.clone();
    tokio::spawn(async move {
        let kind = shared.reconciler.kind().as_str();
        let mut ack = ack;
        loop {
            let result = {
                let _permit = shared.sem.acquire().await;
                shared.stats.running.fetch_add(1, Ordering::Relaxed);
                let r = shared.reconciler.reconcile(&key).await;
                shared.stats.running.fetch_sub(1, Ordering::Relaxed);
                r
            };
            match result {
                Ok(()) => {
                    shared.stats.ok.fetch_add(1, Ordering::Relaxed);
                    shared.stats.with_progress(|p| {
                        p.last_job = Some((model::now_timestamp(), key.clone()));
                    });
                    metrics::counter!("commissaire_reconciles_total", "worker" => kind, "result" => "ok").increment(1);
                    shared.failures.lock().await.remove(&key);
                }
                Err(e) => {
                    shared.stats.errors.fetch_add(1, Ordering::Relaxed);
                    shared.stats.with_progress(|p| {
                        let at = model::now_timestamp();
                        p.last_job = Some((at.clone(), key.clone()));
                        p.last_error = Some((at, key.clone(), e.to_string()));
                    });
                    metrics::counter!("commissaire_reconciles_total", "worker" => kind, "result" => "error").increment(1);
                    let n = {
                        let mut f = shared.failures.lock().await;
                        let n = f.entry(key.clone()).or_insert(0);
                        *n += 1;
                        *n
                    };
                    let delay = backoff(n, shared.opts.max_backoff);
                    tracing::warn!(worker = kind, key = %key, error = %e, retry_in_ms = delay.as_millis() as u64, "reconcile failed");
                    let (tx, k) = (shared.retry_tx.clone(), key.clone());
                    tokio::spawn(async move {
                        tokio::time::sleep(delay).await;
                        let _ = tx.send(k);
                    });
                }
            }
            if let Some(a) = ack.take() {
                a.ack().await;
            }
            let mut map = shared.inflight.lock().await;
            if map.get(&key) == Some(&true) {
                map.insert(key.clone(), false);
                continue;
            }
            map.remove(&key);
            return;
        }
    });
}

/// Exponential backoff from 250 ms, capped, with full jitter over its upper half.
fn backoff(failures: u32, max: Duration) -> Duration {
    let base = Duration::from_millis(250).saturating_mul(1 << failures.min(16).saturating_sub(1));
    let capped = base.min(max);
    let half = capped / 2;
    half + rand::rng().random_range(Duration::ZERO..=half)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    struct Counting {
        calls: Mutex<HashMap<String, usize>>,
        concurrent: AtomicUsize,
        max_concurrent: AtomicUsize,
        fail_first: bool,
    }

    #[async_trait]
    impl Reconciler for Counting {
        fn kind(&self) -> WorkerKind {
            WorkerKind::Investigator
        }
        async fn scan(&self) -> Result<Vec<String>, DomainError> {
            Ok(vec!["a".into(), "b".into()])
        }
        async fn reconcile(&self, key: &str) -> Result<(), DomainError> {
            let now = self.concurrent.fetch_add(1, Ordering::SeqCst) + 1;
            self.max_concurrent.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(20)).await;
            self.concurrent.fetch_sub(1, Ordering::SeqCst);
            let n = {
                let mut c = self.calls.lock().await;
                let n = c.entry(key.to_string()).or_insert(0);
                *n += 1;
                *n
            };
            if self.fail_first && n == 1 {
                return Err(DomainError::Unavailable("first try fails".into()));
            }
            Ok(())
        }
    }

    struct Burst(Vec<String>);

    #[async_trait]
    impl JobSource for Burst {
        async fn next(&mut self) -> Option<Delivery> {
            match self.0.pop() {
                Some(key) => Some(Delivery { key, ack: None }),
                None => std::future::pending().await,
            }
        }
    }

    fn counting(fail_first: bool) -> Arc<Counting> {
        Arc::new(Counting {
            calls: Mutex::default(),
            concurrent: AtomicUsize::new(0),
            max_concurrent: AtomicUsize::new(0),
            fail_first,
        })
    }

    async fn wait_for(r: &Counting, key: &str, n: usize) {
        for _ in 0..500 {
            if r.calls.lock().await.get(key).copied().unwrap_or(0) >= n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("{key} was not reconciled {n} times within 5 s");
    }

    #[tokio::test]
    async fn one_reconcile_per_key_at_a_time_and_bursts_collapse() {
        let r = counting(false);
        let (tx, rx) = watch::channel(false);
        // Twenty wake-ups for one key while it runs: it runs at most twice more, never in parallel.
        let burst = Burst(vec!["k".to_string(); 20]);
        let opts = DriverOptions {
            resync: Duration::from_secs(3600),
            concurrency: 8,
            ..Default::default()
        };
        let h = tokio::spawn(run(r.clone(), Box::new(burst), opts, Arc::default(), rx));
        wait_for(&r, "k", 1).await;
        wait_for(&r, "a", 1).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let k = r.calls.lock().await["k"];
        assert!((1..=3).contains(&k), "{k} runs for a burst of 20");
        assert!(r.max_concurrent.load(Ordering::SeqCst) <= 3);
        tx.send(true).unwrap();
        h.await.unwrap();
    }

    #[tokio::test]
    async fn failures_are_retried_with_backoff() {
        let r = counting(true);
        let (_tx, rx) = watch::channel(false);
        let opts = DriverOptions {
            resync: Duration::from_secs(3600),
            ..Default::default()
        };
        tokio::spawn(run(r.clone(), Box::new(NoJobs), opts, Arc::default(), rx));
        // The initial scan fails each key once; the retry succeeds without another resync.
        wait_for(&r, "a", 2).await;
        wait_for(&r, "b", 2).await;
    }

    #[tokio::test]
    async fn progress_records_rounds_jobs_errors_and_stuck_loops() {
        let r = counting(true);
        let (tx, rx) = watch::channel(false);
        let stats: Arc<DriverStats> = Arc::default();
        let opts = DriverOptions {
            resync: Duration::from_secs(3600),
            ..Default::default()
        };
        let h = tokio::spawn(run(r.clone(), Box::new(NoJobs), opts, stats.clone(), rx));
        wait_for(&r, "a", 2).await;
        wait_for(&r, "b", 2).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        let p = stats.progress();
        assert!(p.running && p.last_round.is_some() && p.last_job.is_some());
        let (_, key, err) = p.last_error.clone().expect("the first tries failed");
        assert!(
            ["a", "b"].contains(&key.as_str()) && err.contains("first try fails"),
            "{err}"
        );
        let now = std::time::Instant::now();
        assert_eq!(p.stuck(now, false), None);
        // Two intervals and the grace without a round: stuck.
        let later = now + Duration::from_secs(7200) + ROUND_GRACE + Duration::from_secs(1);
        assert!(p.stuck(later, false).unwrap().contains("no round finished"));
        tx.send(true).unwrap();
        h.await.unwrap();
        let p = stats.progress();
        assert!(!p.running);
        assert_eq!(
            p.stuck(now, true),
            None,
            "stopping at shutdown is not stuck"
        );
        assert_eq!(p.stuck(now, false).as_deref(), Some("its loop has stopped"));
        // A driver never started is not reported stuck (this process does not run it).
        assert_eq!(Progress::default().stuck(now, false), None);
    }

    struct Many(Counting, usize);

    #[async_trait]
    impl Reconciler for Many {
        fn kind(&self) -> WorkerKind {
            WorkerKind::Watcher
        }
        async fn scan(&self) -> Result<Vec<String>, DomainError> {
            Ok((0..self.1).map(|i| format!("k{i}")).collect())
        }
        async fn reconcile(&self, key: &str) -> Result<(), DomainError> {
            self.0.reconcile(key).await
        }
    }

    #[tokio::test]
    async fn a_spread_round_starts_every_key_once_within_half_the_interval() {
        // Two whole groups and a partial one.
        let n = SPREAD_GROUP * 2 + 5;
        let r = Arc::new(Many(Arc::into_inner(counting(false)).unwrap(), n));
        let (tx, rx) = watch::channel(false);
        let opts = DriverOptions {
            resync: Duration::from_secs(4),
            spread: true,
            concurrency: 64,
            ..Default::default()
        };
        let started = std::time::Instant::now();
        let h = tokio::spawn(run(r.clone(), Box::new(NoJobs), opts, Arc::default(), rx));
        for i in 0..n {
            wait_for(&r.0, &format!("k{i}"), 1).await;
        }
        // Every start falls within the first 2 s; each reconcile takes 20 ms.
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
        let calls = r.0.calls.lock().await.clone();
        assert_eq!(calls.len(), n);
        assert!(calls.values().all(|&c| c == 1), "{calls:?}");
        tx.send(true).unwrap();
        h.await.unwrap();
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let max = Duration::from_secs(60);
        assert!(backoff(1, max) <= Duration::from_millis(250));
        assert!(backoff(5, max) >= Duration::from_secs(2));
        assert!(backoff(40, max) <= max);
        assert!(backoff(40, max) >= max / 2);
    }
}
