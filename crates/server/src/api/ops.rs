//! Operations surface: `/api/v0/status` (no authentication) and `/metrics` (Prometheus).

use std::sync::OnceLock;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::{MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde_json::{Value, json};

use crate::state::AppState;

/// How long the status check waits for the store.
const STATUS_TIMEOUT: Duration = Duration::from_millis(1500);

/// `GET /api/v0/status` — 200 when the store answers (`status` `ok`, or `degraded` when a
/// worker is stuck), 503 otherwise. Per worker kind: whether it runs, when its last round and
/// job finished, its last error (docs/api.md defines "stuck").
#[utoipa::path(get, path = "/api/v0/status", tag = "operations",
    responses((status = 200, description = "The store answers: `status` is `ok`, or `degraded` when a worker is stuck (its loop stopped, or no round finished within two round intervals plus 60 s); per worker kind `status` (starting, running, stuck, stopped), `running`, `last_round_at`, `last_job_at`, `last_job`, `last_error` {at, key, message}", body = Object),
        (status = 503, description = "Store unreachable", body = Object)))]
pub async fn status(
    State(state): State<AppState>,
    caller: Option<axum::Extension<crate::auth::Identity>>,
) -> (StatusCode, Json<Value>) {
    let backend = state.store.backend_name();
    let started = Instant::now();
    let store = match tokio::time::timeout(STATUS_TIMEOUT, state.store.revision()).await {
        Ok(Ok(rev)) => json!({"status": "ok", "backend": backend, "revision": rev,
                              "latency_ms": started.elapsed().as_secs_f64() * 1000.0}),
        Ok(Err(e)) => json!({"status": "unavailable", "backend": backend, "error": e.to_string()}),
        Err(_) => {
            json!({"status": "unavailable", "backend": backend, "error": "no answer in time"})
        }
    };
    let ok = store["status"] == "ok";
    let mut stuck_workers: Vec<&str> = Vec::new();
    let (bus, workers) = match &state.bus {
        None => {
            let mut w = serde_json::Map::new();
            let now = Instant::now();
            let shutting_down = *state.shutdown.borrow();
            for kind in workers::driver::WorkerKind::ALL {
                let d = state.drivers.of(kind);
                // Unauthenticated callers (load balancers, probes) see whether each worker
                // runs and when it last made progress, not what it worked on or its error text
                // (host addresses, failure reasons).
                let (v, stuck) = worker_status(d, now, shutting_down, caller.is_some());
                if stuck {
                    stuck_workers.push(kind.as_str());
                }
                w.insert(kind.as_str().into(), v);
            }
            w["investigator"]["in_flight"] =
                state.workers.investigations.load(Ordering::Relaxed).into();
            w["watcher"]["rounds"] = state.workers.watcher_rounds.load(Ordering::Relaxed).into();
            w["watcher"]["hosts_checked_last_round"] = state
                .workers
                .watcher_last_checked
                .load(Ordering::Relaxed)
                .into();
            (
                json!({"type": "in-process", "status": "ok"}),
                Value::Object(w),
            )
        }
        Some(b) => {
            let reachable = tokio::time::timeout(STATUS_TIMEOUT, b.ping()).await;
            let bus = match reachable {
                Ok(Ok(())) => json!({"type": "redis", "status": "ok"}),
                Ok(Err(e)) => {
                    json!({"type": "redis", "status": "unavailable", "error": e.to_string()})
                }
                Err(_) => {
                    json!({"type": "redis", "status": "unavailable", "error": "no answer in time"})
                }
            };
            // The live commissaire-service processes, as registered under their leases.
            let mut w = serde_json::Map::new();
            for kind in workers::driver::WorkerKind::ALL {
                let prefix = format!("{}{}/", workers::coordinator::WORKERS, kind.as_str());
                let live =
                    match tokio::time::timeout(STATUS_TIMEOUT, state.store.list(&prefix)).await {
                        Ok(Ok(kvs)) => kvs.len(),
                        _ => 0,
                    };
                // Their rounds, jobs and errors are on each process's own /status
                // (commissaire-service --metrics-listen).
                w.insert(
                    kind.as_str().into(),
                    json!({"status": if live > 0 { "running" } else { "none" }, "in_process": false,
                           "running": live > 0, "processes": live}),
                );
            }
            (bus, Value::Object(w))
        }
    };
    let overall = if !ok {
        "unavailable"
    } else if !stuck_workers.is_empty() {
        "degraded"
    } else {
        "ok"
    };
    let body = json!({
        "status": overall,
        "stuck_workers": stuck_workers,
        "store": store,
        "bus": bus,
        "jobs": {"pending": state.jobs.pending()},
        "workers": workers,
        "details": caller.is_some(),
    });
    let code = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body))
}

/// One worker kind's entry in a status answer, and whether it is stuck: whether its loop
/// runs, when its last round and job finished, its last error, its counters. Without
/// `details`, the last job is `null` and the last error only says when it happened.
pub fn worker_status(
    d: &workers::driver::DriverStats,
    now: Instant,
    shutting_down: bool,
    details: bool,
) -> (Value, bool) {
    let p = d.progress();
    let stuck = p.stuck(now, shutting_down);
    let status = match (&stuck, p.running, p.started) {
        (Some(_), _, _) => "stuck",
        (None, true, _) => "running",
        // Spawned at start-up but its loop has not begun yet.
        (None, false, None) => "starting",
        (None, false, Some(_)) => "stopped",
    };
    let is_stuck = stuck.is_some();
    let v = json!({"status": status, "in_process": true,
           "running": p.running,
           "stuck_reason": stuck,
           "round_interval_seconds": p.resync.as_secs_f64(),
           "last_round_at": p.last_round.map(|r| r.1),
           "last_job_at": p.last_job.as_ref().map(|j| j.0.clone()),
           "last_job": p.last_job.map(|j| j.1).filter(|_| details),
           "last_error": p.last_error.map(|(at, key, message)| if details {
               json!({"at": at, "key": key, "message": message})
           } else {
               json!({"at": at})
           }),
           "reconciles_ok": d.ok.load(Ordering::Relaxed),
           "reconcile_errors": d.errors.load(Ordering::Relaxed),
           "reconciles_running": d.running.load(Ordering::Relaxed)});
    (v, is_stuck)
}

/// The process-wide Prometheus recorder (installed once, shared by every server in a process).
pub fn prometheus() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets(&[
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
            ])
            .expect("bucket list is not empty");
        let recorder = crate::fleet_metrics::buckets(builder).build_recorder();
        let handle = recorder.handle();
        // Fails only if another recorder was installed first; then ours just stays unused.
        let _ = metrics::set_global_recorder(recorder);
        crate::fleet_metrics::describe();
        handle
    })
}

/// `GET /metrics` — Prometheus text format, fleet gauges read from the store first.
pub async fn metrics_route(State(state): State<AppState>) -> Response {
    crate::fleet_metrics::refresh(&state).await;
    (
        [("content-type", "text/plain; version=0.0.4")],
        prometheus().render(),
    )
        .into_response()
}

/// The method label: one of the methods the API uses, or `other`.
fn method_label(m: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *m {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// The status label: its class (`2xx` ... `5xx`).
fn status_label(s: StatusCode) -> &'static str {
    match s.as_u16() {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// Middleware counting requests by route and status, and timing them.
///
/// Every label comes from a closed set: the route template that matched (or `unmatched`), a
/// known method (or `other`) and the status class. No value a client sends becomes a label,
/// so no request, authenticated or not, can add series to `/metrics`.
pub async fn track(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().trim_end_matches('/').to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let method = method_label(req.method());
    let started = Instant::now();
    let resp = next.run(req).await;
    let status = status_label(resp.status());
    metrics::counter!("http_requests_total", "route" => route.clone(), "method" => method, "status" => status)
        .increment(1);
    metrics::histogram!("http_request_duration_seconds", "route" => route, "method" => method)
        .record(started.elapsed().as_secs_f64());
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_a_closed_set() {
        for m in ["GET", "PUT", "DELETE"] {
            assert_eq!(method_label(&m.parse().unwrap()), m);
        }
        assert_eq!(method_label(&"XYZZY".parse().unwrap()), "other");
        assert_eq!(status_label(StatusCode::NOT_FOUND), "4xx");
        assert_eq!(status_label(StatusCode::CREATED), "2xx");
        assert_eq!(status_label(StatusCode::BAD_GATEWAY), "5xx");
    }
}
