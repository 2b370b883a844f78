//! `GET /api/v0/events`: the change feed, as Server-Sent Events.
//!
//! Every create, update and delete of a host, cluster, network, container manager or operation
//! record is one event whose data is `{"revision", "kind", "action", "name", "object"}`. Secrets
//! are never streamed. The SSE `id` is the store revision; when one transaction changed several
//! records, the events of that revision are numbered `R.0`, `R.1`, ... and the last one is `R`,
//! so a client reconnecting with `Last-Event-ID` (or `?last_event_id=`) gets exactly the events
//! it missed.

use std::convert::Infallible;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};
use store::records::{CLUSTERS, CONTAINER_MANAGERS, HOSTS, NETWORKS, OPERATIONS, SECRETS};
use store::{Event, EventKind, Revision, StoreError};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

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

fn parse_event_id(id: &str) -> Option<Resume> {
    match id.split_once('.') {
        None => {
            let rev: Revision = id.trim().parse().ok()?;
            (rev >= 0).then_some(Resume {
                from: Some(rev + 1),
                skip: 0,
            })
        }
        Some((r, i)) => {
            let rev: Revision = r.trim().parse().ok()?;
            let idx: usize = i.trim().parse().ok()?;
            (rev >= 0).then_some(Resume {
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

fn to_sse(events: &[Event], skip: usize) -> Vec<SseEvent> {
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
            SseEvent::default().id(id).data(data.to_string())
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
    let resume = match raw_id.as_deref() {
        None | Some("") => Resume {
            from: None,
            skip: 0,
        },
        Some(id) => parse_event_id(id).ok_or_else(|| {
            ApiError::bad_request(format!(
                "Last-Event-ID {id:?} is not an event id of this feed (a revision number such as 42 or 42.1)"
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
    let (tx, rx) = mpsc::channel::<Result<SseEvent, Infallible>>(64);
    let mut shutdown = state.shutdown.clone();
    tokio::spawn(async move {
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
                    for ev in to_sse(&group, skip) {
                        if tx.send(Ok(ev)).await.is_err() {
                            return;
                        }
                    }
                }
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "change feed interrupted");
                    let msg = json!({"message": "the store connection was lost; reconnect with Last-Event-ID to resume"});
                    let _ = tx
                        .send(Ok(SseEvent::default().event("error").data(msg.to_string())))
                        .await;
                    return;
                }
            }
        }
    });
    Ok(Sse::new(ReceiverStream::new(rx))
        .keep_alive(KeepAlive::default())
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        assert_eq!(
            parse_event_id("41"),
            Some(Resume {
                from: Some(42),
                skip: 0
            })
        );
        assert_eq!(
            parse_event_id("41.0"),
            Some(Resume {
                from: Some(41),
                skip: 1
            })
        );
        assert_eq!(parse_event_id("x"), None);
        assert_eq!(parse_event_id("-3"), None);
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
