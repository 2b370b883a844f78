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

/// `GET /api/v0/status` — 200 when the store answers, 503 otherwise.
#[utoipa::path(get, path = "/api/v0/status", tag = "operations",
    responses((status = 200, description = "Healthy", body = Object), (status = 503, description = "Store unreachable", body = Object)))]
pub async fn status(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
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
    let body = json!({
        "status": if ok { "ok" } else { "unavailable" },
        "store": store,
        "bus": {"type": "in-process", "status": "ok"},
        "jobs": {"pending": state.jobs.pending()},
        "workers": {
            "investigator": {"status": "running",
                             "in_flight": state.workers.investigations.load(Ordering::Relaxed)},
            "watcher": {"status": "running",
                        "rounds": state.workers.watcher_rounds.load(Ordering::Relaxed),
                        "hosts_checked_last_round": state.workers.watcher_last_checked.load(Ordering::Relaxed)},
        },
    });
    let code = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body))
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

/// Middleware counting requests by route and status, and timing them.
pub async fn track(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().trim_end_matches('/').to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let method = req.method().to_string();
    let started = Instant::now();
    let resp = next.run(req).await;
    let status = resp.status().as_u16().to_string();
    metrics::counter!("http_requests_total", "route" => route.clone(), "method" => method.clone(), "status" => status)
        .increment(1);
    metrics::histogram!("http_request_duration_seconds", "route" => route, "method" => method)
        .record(started.elapsed().as_secs_f64());
    resp
}
