//! Metrics that describe the fleet, next to the HTTP ones of `api::ops`.
//!
//! Three sources feed `/metrics`:
//!
//! * gauges read from the store when `/metrics` is scraped ([`refresh`]): hosts by status,
//!   clusters by status, rolling operations by kind and status, and their hosts by step. They
//!   are recomputed from the records rather than counted as events go by, so they are right
//!   after a restart and with several servers sharing one etcd (each reports the same fleet);
//! * the store itself, through [`TimedStore`]: latency of every store call by operation, and
//!   the number of open change-feed subscriptions (`GET /api/v0/events` streams);
//! * the workers and the SSH transport, which record their own histograms and counters
//!   through the `metrics` facade (watcher rounds, investigations, bootstraps, SSH connect and
//!   exec). Their names are listed in [`FAMILIES`] so that every family has `# HELP`.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::Stream;
use metrics::Unit;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
use model::{ClusterState, HostState, HostStep, Operation, OperationKind, OperationStatus};
use store::{
    Compare, EventStream, KeyValue, Op, Revision, SharedStore, Store, StoreResult, TxnOutcome,
    records,
};

use crate::state::AppState;

/// What a family measures, for `describe`.
enum Family {
    Counter,
    Gauge,
    Histogram,
}

/// Every metric family the server exports, with its help text (HTTP ones included, so that
/// `/metrics` has `# HELP` on every family).
pub const FAMILIES: &[(&str, &str)] = &[
    (
        "http_requests_total",
        "HTTP requests answered, by route template, method and status code",
    ),
    (
        "http_request_duration_seconds",
        "Time to answer an HTTP request, by route template and method",
    ),
    ("commissaire_hosts", "Hosts by lifecycle status"),
    (
        "commissaire_clusters",
        "Clusters by computed status (ok, degraded, failed)",
    ),
    (
        "commissaire_operations",
        "Rolling-operation records (the last run of each kind per cluster) by kind and status",
    ),
    (
        "commissaire_operation_hosts",
        "Hosts of the rolling-operation records by kind and step; step=\"done\" counts hosts done",
    ),
    (
        "commissaire_watcher_round_duration_seconds",
        "Duration of one watcher round (checking every settled host once)",
    ),
    (
        "commissaire_watcher_rounds_total",
        "Watcher rounds completed since the server started",
    ),
    (
        "commissaire_watcher_checks_total",
        "Host checks this process's watcher made (its share of the hosts, each round)",
    ),
    (
        "commissaire_reconciles_total",
        "Reconciles by worker kind and result (ok, error: retried with backoff)",
    ),
    (
        "commissaire_jobs_claimed_total",
        "Jobs taken from the job source (in-process queue or Redis stream) by worker kind",
    ),
    (
        "commissaire_watcher_hosts_checked",
        "Hosts checked by the last watcher round",
    ),
    (
        "commissaire_watcher_hosts_checked_total",
        "Host checks done by the watcher since the server started",
    ),
    (
        "commissaire_ssh_connect_duration_seconds",
        "Time to connect, check the host key and authenticate over SSH, by outcome",
    ),
    (
        "commissaire_ssh_exec_duration_seconds",
        "Time to run one remote command over an open SSH session, by outcome",
    ),
    (
        "commissaire_investigation_duration_seconds",
        "Duration of one host investigation (connect, facts, bootstrap), retries included",
    ),
    (
        "commissaire_bootstrap_duration_seconds",
        "Duration of applying a bootstrap plan on a host, by outcome",
    ),
    (
        "commissaire_store_request_duration_seconds",
        "Latency of store calls (get, list, txn, revision, watch, health), by outcome",
    ),
    (
        "commissaire_store_write_txns_total",
        "Write transactions handled by the embedded (SQLite) store's writer, applied or not",
    ),
    (
        "commissaire_store_commits_total",
        "Commits (fsyncs) of the embedded (SQLite) store: write transactions that queue up meanwhile share one",
    ),
    (
        "commissaire_change_feed_subscribers",
        "Open subscriptions to the change feed (GET /api/v0/events streams)",
    ),
    (
        "commissaire_fleet_metrics_errors_total",
        "Scrapes whose fleet gauges could not be read from the store (the previous values stay)",
    ),
];

fn family_kind(name: &str) -> Family {
    if name.ends_with("_total") {
        Family::Counter
    } else if name.ends_with("_seconds") {
        Family::Histogram
    } else {
        Family::Gauge
    }
}

/// Registers the help text of every family with the installed recorder.
pub fn describe() {
    for (name, help) in FAMILIES {
        let (name, help) = (*name, *help);
        match family_kind(name) {
            Family::Counter => metrics::describe_counter!(name, help),
            Family::Gauge => metrics::describe_gauge!(name, help),
            Family::Histogram => metrics::describe_histogram!(name, Unit::Seconds, help),
        }
    }
}

/// Histogram buckets for the slow fleet work: SSH sessions, bootstraps, investigations and
/// watcher rounds take seconds to minutes, far beyond the HTTP buckets.
pub fn buckets(builder: PrometheusBuilder) -> PrometheusBuilder {
    const SLOW: &[f64] = &[
        0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
    ];
    let mut b = builder;
    for prefix in [
        "commissaire_ssh_",
        "commissaire_investigation_",
        "commissaire_bootstrap_",
        "commissaire_watcher_",
    ] {
        b = b
            .set_buckets_for_metric(Matcher::Prefix(prefix.to_string()), SLOW)
            .expect("bucket list is not empty");
    }
    b
}

/// How long a scrape waits for the store before keeping the previous fleet gauges.
const REFRESH_TIMEOUT: Duration = Duration::from_secs(3);

/// Recomputes the fleet gauges from the store. A store that does not answer in time leaves the
/// previous values (and counts an error): a scrape never fails because of the fleet part.
pub async fn refresh(state: &AppState) {
    match tokio::time::timeout(REFRESH_TIMEOUT, read_fleet(state)).await {
        Ok(Ok(fleet)) => fleet.publish(),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "fleet metrics: cannot read the store");
            metrics::counter!("commissaire_fleet_metrics_errors_total").increment(1);
        }
        Err(_) => {
            tracing::warn!("fleet metrics: the store did not answer in time");
            metrics::counter!("commissaire_fleet_metrics_errors_total").increment(1);
        }
    }
}

const HOST_STATES: [HostState; 5] = [
    HostState::Investigating,
    HostState::Bootstrapping,
    HostState::Disassociated,
    HostState::Active,
    HostState::Failed,
];
const CLUSTER_STATES: [ClusterState; 3] = [
    ClusterState::Ok,
    ClusterState::Degraded,
    ClusterState::Failed,
];
const OPERATION_STATUSES: [OperationStatus; 5] = [
    OperationStatus::InProcess,
    OperationStatus::Finished,
    OperationStatus::Failed,
    OperationStatus::Paused,
    OperationStatus::Cancelled,
];
const HOST_STEPS: [HostStep; 8] = [
    HostStep::Pending,
    HostStep::Draining,
    HostStep::Running,
    HostStep::Rebooting,
    HostStep::Verifying,
    HostStep::Uncordoning,
    HostStep::Done,
    HostStep::Failed,
];

/// The wire spelling of a serde enum (the labels are the API's own words).
fn wire<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// One reading of the fleet.
struct Fleet {
    hosts: Vec<HostState>,
    clusters: Vec<ClusterState>,
    operations: Vec<Operation>,
}

async fn read_fleet(state: &AppState) -> Result<Fleet, String> {
    let d = &state.domain;
    let hosts = domain::hosts::list(d)
        .await
        .map_err(|e| e.to_string())?
        .into_iter()
        .map(|h| h.status)
        .collect();
    let mut clusters = Vec::new();
    for name in domain::clusters::list(d).await.map_err(|e| e.to_string())? {
        match domain::clusters::get(d, &name).await {
            Ok(view) => clusters.push(view.status),
            // Deleted between the list and the read: not part of the fleet any more.
            Err(domain::DomainError::NotFound(_)) => {}
            Err(e) => return Err(e.to_string()),
        }
    }
    let operations = records::list_json::<Operation>(d.store.as_ref(), records::OPERATIONS)
        .await
        .map_err(|e| e.to_string())?
        .into_iter()
        .map(|v| v.value)
        .collect();
    Ok(Fleet {
        hosts,
        clusters,
        operations,
    })
}

impl Fleet {
    /// Sets every gauge, zeros included, so a status that emptied reads 0 rather than its last
    /// count.
    fn publish(&self) {
        for s in HOST_STATES {
            let n = self.hosts.iter().filter(|h| **h == s).count();
            metrics::gauge!("commissaire_hosts", "status" => s.as_str()).set(n as f64);
        }
        for s in CLUSTER_STATES {
            let n = self.clusters.iter().filter(|c| **c == s).count();
            metrics::gauge!("commissaire_clusters", "status" => wire(&s)).set(n as f64);
        }
        for kind in OperationKind::ALL {
            let ops: Vec<&Operation> = self.operations.iter().filter(|o| o.kind == kind).collect();
            for s in OPERATION_STATUSES {
                let n = ops.iter().filter(|o| o.status == s).count();
                metrics::gauge!("commissaire_operations", "kind" => kind.as_str(), "status" => wire(&s))
                    .set(n as f64);
            }
            for step in HOST_STEPS {
                let n: usize = ops
                    .iter()
                    .map(|o| o.hosts.values().filter(|p| p.state == step).count())
                    .sum();
                metrics::gauge!("commissaire_operation_hosts", "kind" => kind.as_str(), "step" => wire(&step))
                    .set(n as f64);
            }
        }
    }
}

/// A store that records the latency of every call and counts open change-feed subscriptions,
/// in front of the real backend.
pub struct TimedStore {
    inner: SharedStore,
}

/// Wraps `store` in a [`TimedStore`].
pub fn timed(store: SharedStore) -> SharedStore {
    Arc::new(TimedStore { inner: store })
}

fn observe<T>(op: &'static str, started: Instant, r: &StoreResult<T>) {
    let outcome = if r.is_ok() { "ok" } else { "error" };
    metrics::histogram!("commissaire_store_request_duration_seconds", "op" => op, "outcome" => outcome)
        .record(started.elapsed().as_secs_f64());
}

/// Keeps the subscriber gauge one higher while the stream it travels with is alive.
struct Subscription {
    inner: EventStream,
}

impl Subscription {
    fn new(inner: EventStream) -> Self {
        metrics::gauge!("commissaire_change_feed_subscribers").increment(1.0);
        Subscription { inner }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        metrics::gauge!("commissaire_change_feed_subscribers").decrement(1.0);
    }
}

impl Stream for Subscription {
    type Item = <EventStream as Stream>::Item;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

#[async_trait]
impl Store for TimedStore {
    async fn get(&self, key: &str) -> StoreResult<Option<KeyValue>> {
        let t = Instant::now();
        let r = self.inner.get(key).await;
        observe("get", t, &r);
        r
    }

    async fn list(&self, prefix: &str) -> StoreResult<Vec<KeyValue>> {
        let t = Instant::now();
        let r = self.inner.list(prefix).await;
        observe("list", t, &r);
        r
    }

    async fn list_keys(&self, prefix: &str) -> StoreResult<Vec<String>> {
        let t = Instant::now();
        let r = self.inner.list_keys(prefix).await;
        observe("list_keys", t, &r);
        r
    }

    async fn txn(&self, compares: Vec<Compare>, ops: Vec<Op>) -> StoreResult<TxnOutcome> {
        let t = Instant::now();
        let r = self.inner.txn(compares, ops).await;
        observe("txn", t, &r);
        r
    }

    async fn revision(&self) -> StoreResult<Revision> {
        let t = Instant::now();
        let r = self.inner.revision().await;
        observe("revision", t, &r);
        r
    }

    async fn watch(&self, prefix: &str, from: Option<Revision>) -> StoreResult<EventStream> {
        let t = Instant::now();
        let r = self.inner.watch(prefix, from).await;
        observe("watch", t, &r);
        r.map(|s| Box::pin(Subscription::new(s)) as EventStream)
    }

    async fn health(&self) -> StoreResult<()> {
        let t = Instant::now();
        let r = self.inner.health().await;
        observe("health", t, &r);
        r
    }

    fn backend_name(&self) -> &'static str {
        self.inner.backend_name()
    }

    async fn lease_grant(&self, ttl_seconds: i64) -> StoreResult<store::LeaseId> {
        let t = Instant::now();
        let r = self.inner.lease_grant(ttl_seconds).await;
        observe("lease_grant", t, &r);
        r
    }

    async fn lease_keep_alive(&self, lease: store::LeaseId) -> StoreResult<bool> {
        let t = Instant::now();
        let r = self.inner.lease_keep_alive(lease).await;
        observe("lease_keep_alive", t, &r);
        r
    }

    async fn lease_revoke(&self, lease: store::LeaseId) -> StoreResult<()> {
        let t = Instant::now();
        let r = self.inner.lease_revoke(lease).await;
        observe("lease_revoke", t, &r);
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_has_a_kind_matching_its_name() {
        for (name, help) in FAMILIES {
            assert!(!help.is_empty(), "{name}");
            assert!(
                name.starts_with("commissaire_") || name.starts_with("http_"),
                "{name}"
            );
        }
        assert!(matches!(family_kind("commissaire_hosts"), Family::Gauge));
        assert!(matches!(
            family_kind("commissaire_watcher_rounds_total"),
            Family::Counter
        ));
        assert!(matches!(
            family_kind("commissaire_store_request_duration_seconds"),
            Family::Histogram
        ));
    }

    #[test]
    fn the_grafana_dashboard_uses_exported_families() {
        let text = include_str!("../../../docs/grafana/commissaire-fleet.json");
        let dashboard: serde_json::Value = serde_json::from_str(text).unwrap();
        let mut used = 0;
        for panel in dashboard["panels"].as_array().unwrap() {
            for target in panel["targets"].as_array().unwrap() {
                let expr = target["expr"].as_str().unwrap();
                for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                    if !(word.starts_with("commissaire_") || word.starts_with("http_")) {
                        continue;
                    }
                    let family = ["_bucket", "_count", "_sum"]
                        .iter()
                        .find_map(|s| word.strip_suffix(s))
                        .unwrap_or(word);
                    assert!(
                        FAMILIES.iter().any(|(n, _)| *n == family),
                        "{word} in panel {} is not exported",
                        panel["title"]
                    );
                    used += 1;
                }
            }
        }
        assert!(used >= 12, "{used}");
    }

    #[test]
    fn labels_are_the_wire_spellings() {
        assert_eq!(wire(&OperationStatus::InProcess), "in_process");
        assert_eq!(wire(&ClusterState::Degraded), "degraded");
        assert_eq!(wire(&HostStep::Done), "done");
    }
}
