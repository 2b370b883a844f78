//! `GET /api/v0/events`: the change feed, as Server-Sent Events.
//!
//! Every create, update and delete of a host, cluster, network, container manager or operation
//! record is one event whose data is `{"revision", "kind", "action", "name", "object"}`. Secrets
//! are never streamed. The SSE `id` is the store revision; when one transaction changed several
//! records, the events of that revision are numbered `R.0`, `R.1`, ... and the last one is `R`,
//! so a client reconnecting with `Last-Event-ID` (or `?last_event_id=`) gets exactly the events
//! it missed.
//!
//! Bounded by design ([`FeedLimits`]): at most `max-event-subscribers` feeds at once (503 with
//! `Retry-After` beyond); each feed buffers at most [`FeedLimits::buffer_bytes`] of events, and
//! a client that does not make room within [`FeedLimits::slow_grace`] is sent a final `resync`
//! event naming the last id it was given and disconnected, so it loses nothing: it reconnects
//! with that `Last-Event-ID`. History is replayed from the store page by page, behind the
//! same bound. `Last-Event-ID` must name a revision this feed has reached (400 otherwise).

use std::convert::Infallible;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};
use store::records::{CLUSTERS, CONTAINER_MANAGERS, HOSTS, NETWORKS, OPERATIONS, SECRETS};
use store::{Event, EventKind, Revision, StoreError};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_stream::wrappers::UnboundedReceiverStream;

use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// Query parameters of the feed.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
pub struct EventsQuery {
    /// Resume after this event id (same as the `Last-Event-ID` header, which wins).
    pub last_event_id: Option<String>,
}

/// Where to resume: the first revision to read, and how many events of it were already seen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Resume {
    from: Option<Revision>,
    skip: usize,
}

/// Limits of the change feed, set once at start-up by [`configure`].
#[derive(Clone, Copy, Debug)]
pub struct FeedLimits {
    /// Feeds open at once.
    pub max_subscribers: usize,
    /// Bytes of events buffered for one feed.
    pub buffer_bytes: usize,
    /// How long a full buffer may stay full before the feed is closed.
    pub slow_grace: Duration,
    /// Interval of SSE keep-alive comments.
    pub keep_alive: Duration,
}

impl Default for FeedLimits {
    fn default() -> Self {
        FeedLimits {
            max_subscribers: 256,
            buffer_bytes: 256 * 1024,
            slow_grace: Duration::from_secs(10),
            keep_alive: Duration::from_secs(15),
        }
    }
}

static LIMITS: OnceLock<FeedLimits> = OnceLock::new();
static SUBSCRIBERS: AtomicUsize = AtomicUsize::new(0);

/// Sets the feed's limits (once; later calls are ignored).
pub fn configure(limits: FeedLimits) {
    let _ = LIMITS.set(limits);
}

fn limits() -> FeedLimits {
    *LIMITS.get_or_init(FeedLimits::default)
}

/// Feeds open now.
pub fn subscribers() -> usize {
    SUBSCRIBERS.load(Ordering::Relaxed)
}

/// One open feed; dropping it frees the slot.
struct Slot;

impl Slot {
    fn take(max: usize) -> Option<Slot> {
        SUBSCRIBERS
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| Slot)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        SUBSCRIBERS.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Parses an event id strictly: `R` or `R.i` with `0 <= R <= latest` (the store's current
/// revision) and `i` below a million; anything else is `None`.
fn parse_event_id(id: &str, latest: Revision) -> Option<Resume> {
    let digits = |t: &str| !t.is_empty() && t.len() <= 19 && t.bytes().all(|b| b.is_ascii_digit());
    let rev_of = |r: &str| -> Option<Revision> {
        let rev: Revision = r.parse().ok()?;
        (digits(r) && rev <= latest).then_some(rev)
    };
    match id.trim().split_once('.') {
        None => {
            let rev = rev_of(id.trim())?;
            Some(Resume {
                from: Some(rev + 1),
                skip: 0,
            })
        }
        Some((r, i)) => {
            let rev = rev_of(r)?;
            if !digits(i) || i.len() > 6 {
                return None;
            }
            let idx: usize = i.parse().ok()?;
            Some(Resume {
                from: Some(rev),
                skip: idx + 1,
            })
        }
    }
}

/// Maps a store key to (kind, name) for the feed; `None` for keys that are never shown.
pub fn classify(key: &str) -> Option<(&'static str, String)> {
    if key.starts_with(SECRETS) {
        return None;
    }
    let simple = [
        (HOSTS, "Host"),
        (CLUSTERS, "Cluster"),
        (NETWORKS, "Network"),
        (CONTAINER_MANAGERS, "ContainerManagerConfig"),
    ];
    for (prefix, kind) in simple {
        if let Some(name) = key.strip_prefix(prefix) {
            return Some((kind, name.to_string()));
        }
    }
    let rest = key.strip_prefix(OPERATIONS)?;
    let (cluster, op) = rest.rsplit_once('/')?;
    let kind = match op {
        "restart" => "ClusterRestart",
        "upgrade" => "ClusterUpgrade",
        "deploy" => "ClusterDeploy",
        _ => return None,
    };
    Some((kind, cluster.to_string()))
}

/// The feed's events of one store revision, as (SSE id, data).
fn to_sse(events: &[Event], skip: usize) -> Vec<(String, String)> {
    let visible: Vec<(&Event, &'static str, String)> = events
        .iter()
        .filter_map(|e| classify(&e.key).map(|(k, n)| (e, k, n)))
        .collect();
    let n = visible.len();
    visible
        .into_iter()
        .enumerate()
        .skip(skip)
        .map(|(i, (e, kind, name))| {
            let action = match (e.kind, e.created) {
                (EventKind::Delete, _) => "deleted",
                (EventKind::Put, true) => "created",
                (EventKind::Put, false) => "updated",
            };
            let object = e
                .value
                .as_deref()
                .and_then(|v| serde_json::from_slice::<Value>(v).ok())
                .unwrap_or(Value::Null);
            let id = if i + 1 == n {
                e.revision.to_string()
            } else {
                format!("{}.{i}", e.revision)
            };
            let data = json!({
                "revision": e.revision,
                "kind": kind,
                "action": action,
                "name": name,
                "object": object,
            });
            (id, data.to_string())
        })
        .collect()
}

/// `GET /api/v0/events`
#[utoipa::path(get, path = "/api/v0/events", tag = "events",
    params(EventsQuery, ("Last-Event-ID" = Option<String>, Header, description = "Resume after this event id")),
    responses((status = 200, content_type = "text/event-stream",
               description = "Server-Sent Events; data: {\"revision\",\"kind\",\"action\",\"name\",\"object\"}"),
              (status = 400, body = model::ErrorBody), (status = 410, body = model::ErrorBody, description = "history no longer kept")))]
pub async fn stream(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<EventsQuery>,
) -> ApiResult<Response> {
    let raw_id = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or(q.last_event_id);
    let limits = limits();
    let Some(slot) = Slot::take(limits.max_subscribers) else {
        let mut resp = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "the change feed already has its maximum of {} subscribers; retry later",
                limits.max_subscribers
            ),
        )
        .into_response();
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        return Ok(resp);
    };
    let latest = state.store.revision().await?;
    let resume = match raw_id.as_deref() {
        // Start at the revision read just now, so a `resync` can always name a position.
        None | Some("") => Resume {
            from: Some(latest + 1),
            skip: 0,
        },
        Some(id) => parse_event_id(id, latest).ok_or_else(|| {
            ApiError::bad_request(format!(
                "Last-Event-ID {:?} is not an event id of this feed (a revision number from 0 to the latest, {latest}, such as 42 or 42.1)",
                id.chars().take(64).collect::<String>()
            ))
        })?,
    };
    let mut changes = match state.store.watch("", resume.from).await {
        Ok(s) => s,
        Err(StoreError::Compacted { requested, oldest }) => {
            return Err(ApiError::new(
                StatusCode::GONE,
                format!(
                    "events from revision {requested} are no longer kept (oldest: {oldest}); reconnect without Last-Event-ID and read the current state"
                ),
            ));
        }
        Err(e) => return Err(e.into()),
    };
    // Events travel with their share of the byte budget, given back when the response
    // stream takes them.
    let budget = std::sync::Arc::new(Semaphore::new(limits.buffer_bytes));
    let (tx, rx) = mpsc::unbounded_channel::<(SseEvent, Option<OwnedSemaphorePermit>)>();
    let mut shutdown = state.shutdown.clone();
    let mut last_id = match resume {
        Resume {
            from: Some(r),
            skip: 0,
        } => (r - 1).to_string(),
        Resume {
            from: Some(r),
            skip,
        } => format!("{r}.{}", skip - 1),
        Resume { from: None, .. } => latest.to_string(),
    };
    tokio::spawn(async move {
        let _slot = slot;
        let mut skip_in = resume.from.filter(|_| resume.skip > 0);
        loop {
            let next = tokio::select! {
                _ = tx.closed() => return,
                _ = shutdown.changed() => return,
                n = changes.next() => n,
            };
            match next {
                None => return,
                Some(Ok(group)) => {
                    let skip = match skip_in.take() {
                        Some(rev) if group[0].revision == rev => resume.skip,
                        _ => 0,
                    };
                    for (id, data) in to_sse(&group, skip) {
                        let cost = (id.len() + data.len() + 16).min(limits.buffer_bytes) as u32;
                        let permit = tokio::select! {
                            _ = tx.closed() => return,
                            p = tokio::time::timeout(limits.slow_grace, budget.clone().acquire_many_owned(cost)) => p,
                        };
                        match permit {
                            Ok(Ok(permit)) => {
                                let ev = SseEvent::default().id(id.clone()).data(data);
                                if tx.send((ev, Some(permit))).is_err() {
                                    return;
                                }
                                last_id = id;
                            }
                            _ => {
                                // Too slow: everything buffered is still delivered, then this
                                // tells the client where to resume.
                                let msg = json!({
                                    "message": "this subscriber fell behind the change feed and is disconnected; reconnect with Last-Event-ID set to last_event_id to resume without loss",
                                    "last_event_id": last_id,
                                });
                                let _ = tx.send((
                                    SseEvent::default().event("resync").data(msg.to_string()),
                                    None,
                                ));
                                return;
                            }
                        }
                    }
                }
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "change feed interrupted");
                    let msg = json!({"message": "the store connection was lost; reconnect with Last-Event-ID to resume", "last_event_id": last_id});
                    let _ = tx.send((
                        SseEvent::default().event("error").data(msg.to_string()),
                        None,
                    ));
                    return;
                }
            }
        }
    });
    let stream = UnboundedReceiverStream::new(rx).map(|(ev, permit)| {
        drop(permit);
        Ok::<_, Infallible>(ev)
    });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(limits.keep_alive))
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        assert_eq!(
            parse_event_id("41", 100),
            Some(Resume {
                from: Some(42),
                skip: 0
            })
        );
        assert_eq!(
            parse_event_id("41.0", 100),
            Some(Resume {
                from: Some(41),
                skip: 1
            })
        );
        for bad in [
            "x",
            "-3",
            "+3",
            "101",
            "18446744073709551615",
            "9223372036854775807",
            "41.-1",
            "41.99999999999",
            "41.",
            ".1",
        ] {
            assert_eq!(parse_event_id(bad, 100), None, "{bad}");
        }
    }

    #[test]
    fn classification_hides_secrets() {
        assert_eq!(
            classify("hosts/10.0.0.1"),
            Some(("Host", "10.0.0.1".into()))
        );
        assert_eq!(classify("secrets/hosts/10.0.0.1"), None);
        assert_eq!(
            classify("cluster/c1/restart"),
            Some(("ClusterRestart", "c1".into()))
        );
        assert_eq!(classify("config/x"), None);
    }
}
