//! The change feed `GET /api/v0/events` through real HTTP on both backends: order, content,
//! no secrets, multi-record revisions (`R.0` … `R`), and exact resumption with
//! `Last-Event-ID`.

#[macro_use]
mod common;

use std::time::Duration;

use common::{Backend, Env, EventReader, KeyKind, SseEvent, expect_error, expect_status};
use reqwest::Method;
use serde_json::{Value, json};

both_backends!(change_feed);

/// How long an expected event may take.
const WAIT: Duration = Duration::from_secs(60);
/// How long to listen to make sure nothing more arrives.
const QUIET: Duration = Duration::from_millis(700);

#[track_caller]
fn check(ev: &SseEvent, kind: &str, action: &str, name: &str) -> Value {
    let v = ev.json();
    assert_eq!(
        (v["kind"].as_str(), v["action"].as_str(), v["name"].as_str()),
        (Some(kind), Some(action), Some(name)),
        "unexpected event {ev:?}"
    );
    assert!(ev.event.is_none(), "unexpected event type: {ev:?}");
    v
}

/// The feed as the test's own requests shape it: the investigator's updates of a new host (a
/// background worker racing the test, so their number is not fixed) are set aside in
/// `host_updates`, after checking that they too hold no key material; the test checks them
/// separately (which host, where in the feed, the last one matching the stored host, the same
/// ones on every resume).
struct Feed {
    reader: EventReader,
    secrets: Vec<String>,
    /// Position of the last event read, to check that ids only grow (no repeats).
    last: Option<(i64, u64)>,
    /// The `Host updated` events read so far.
    host_updates: Vec<SseEvent>,
}

/// `R.i` → `(R, i)`; `R` (the last event of revision R) → `(R, MAX)`.
fn position(ev: &SseEvent) -> (i64, u64) {
    let id = ev.id.as_deref().expect("every event has an id");
    match id.split_once('.') {
        Some((r, i)) => (r.parse().expect("id"), i.parse().expect("id")),
        None => (id.parse().expect("id"), u64::MAX),
    }
}

impl Feed {
    async fn open(s: &common::Server, last_event_id: Option<&str>, secrets: &[String]) -> Feed {
        Feed::from_reader(EventReader::open(s, last_event_id).await, secrets)
    }

    fn from_reader(reader: EventReader, secrets: &[String]) -> Feed {
        Feed {
            reader,
            secrets: secrets.to_vec(),
            last: None,
            host_updates: Vec::new(),
        }
    }

    async fn next(&mut self, timeout: Duration) -> Option<SseEvent> {
        loop {
            let ev = self.reader.next(timeout).await?;
            let pos = position(&ev);
            assert!(
                self.last.is_none_or(|l| pos > l),
                "event ids out of order or repeated: {:?} after {:?}",
                ev.id,
                self.last
            );
            self.last = Some(pos);
            for frag in &self.secrets {
                assert!(!ev.data.contains(frag), "an event shows the key: {ev:?}");
            }
            assert!(!ev.data.contains("ssh_priv_key"), "{ev:?}");
            assert!(!ev.data.contains("secrets/"), "{ev:?}");
            let v = ev.json();
            if v["kind"] == "Host" && v["action"] == "updated" {
                self.host_updates.push(ev);
                continue;
            }
            return Some(ev);
        }
    }

    async fn take(&mut self, n: usize) -> Vec<SseEvent> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            match self.next(WAIT).await {
                Some(e) => out.push(e),
                None => panic!("expected {n} events, got {}: {out:#?}", out.len()),
            }
        }
        out
    }
}

/// `(id, data)` of each event, to compare two reads of the same stretch of the feed.
fn ids_and_data(evs: &[SseEvent]) -> Vec<(Option<String>, String)> {
    evs.iter().map(|e| (e.id.clone(), e.data.clone())).collect()
}

fn id_revision(ev: &SseEvent) -> i64 {
    let id = ev.id.as_deref().expect("every event has an id");
    id.split('.').next().unwrap().parse().expect("numeric id")
}

async fn change_feed(backend: Backend) {
    let env = Env::new(backend);
    let s = env.server().await;
    let key = env.key(KeyKind::Ed25519);

    let secrets = key.secret_fragments();
    let mut feed = Feed::open(&s, None, &secrets).await;
    // A flannel_etcd network with its own etcd URL works on either store.
    expect_status(
        &s.put(
            "/network/n1",
            json!({"options": {"server_url": "http://127.0.0.1:2379"}}),
        )
        .await,
        201,
    );
    expect_status(&s.put("/cluster/c1", json!({"network": "n1"})).await, 201);
    expect_status(
        &s.put(
            "/host/127.0.1.1",
            json!({"ssh_priv_key": key.b64, "cluster": "c1"}),
        )
        .await,
        201,
    );
    let evs = feed.take(4).await;

    let v = check(&evs[0], "Network", "created", "n1");
    assert_eq!(
        v["object"],
        json!({"name": "n1", "type": "flannel_etcd", "options": {"server_url": "http://127.0.0.1:2379"}})
    );
    let r0 = id_revision(&evs[0]);
    assert_eq!(evs[0].id.as_deref(), Some(r0.to_string().as_str()));
    assert_eq!(v["revision"], r0);

    let v = check(&evs[1], "Cluster", "created", "c1");
    assert_eq!(v["object"]["network"], "n1");
    assert_eq!(v["object"]["hostset"], json!([]));
    let r1 = id_revision(&evs[1]);
    assert_eq!(evs[1].id.as_deref(), Some(r1.to_string().as_str()));
    assert!(r1 > r0);

    // One transaction wrote the host, its sealed creds and the cluster: two visible events,
    // numbered R.0 and R.
    let v = check(&evs[2], "Host", "created", "127.0.1.1");
    assert_eq!(v["object"]["address"], "127.0.1.1");
    assert_eq!(v["object"]["status"], "investigating");
    let r = id_revision(&evs[2]);
    assert!(r > r1);
    assert_eq!(evs[2].id.as_deref(), Some(format!("{r}.0").as_str()));
    assert_eq!(v["revision"], r);
    let v = check(&evs[3], "Cluster", "updated", "c1");
    assert_eq!(v["object"]["hostset"], json!(["127.0.1.1"]));
    assert_eq!(evs[3].id.as_deref(), Some(r.to_string().as_str()));
    assert_eq!(v["revision"], r);
    let settled = s.settle_host("127.0.1.1").await;
    assert!(
        feed.next(QUIET).await.is_none(),
        "no other event (and none for the sealed credentials)"
    );
    // The investigation's updates: only of this host, after its creation, and the last one is
    // the host as stored now.
    let live_updates = std::mem::take(&mut feed.host_updates);
    assert!(
        !live_updates.is_empty(),
        "the investigation changed the host without an event"
    );
    for ev in &live_updates {
        let v = check(ev, "Host", "updated", "127.0.1.1");
        assert!(
            id_revision(ev) > r,
            "an update before the host's creation: {ev:?}"
        );
        assert_eq!(v["object"]["address"], "127.0.1.1", "{ev:?}");
    }
    let last_update = live_updates.last().unwrap().json();
    assert_eq!(
        last_update["object"]["status"], settled["status"],
        "the feed's last word on the host is not the stored host: {last_update}"
    );
    assert_eq!(
        last_update["object"]["status_reason"],
        settled["status_reason"]
    );
    drop(feed);

    // Three changes while disconnected.
    expect_status(&s.put("/network/n2", json!({})).await, 201);
    expect_status(&s.delete("/network/n2").await, 200);
    expect_status(&s.put("/cluster/c2", json!({"network": "n1"})).await, 201);

    let last = evs[3].id.clone().unwrap();
    let mut feed = Feed::open(&s, Some(&last), &secrets).await;
    let missed = feed.take(3).await;
    check(&missed[0], "Network", "created", "n2");
    check(&missed[1], "Network", "deleted", "n2");
    let v = check(&missed[2], "Cluster", "created", "c2");
    assert_eq!(v["object"]["name"], "c2");
    let ids: Vec<i64> = missed.iter().map(id_revision).collect();
    assert!(ids[0] > r && ids[0] < ids[1] && ids[1] < ids[2], "{ids:?}");
    // The host's updates came after `last` and before n2: replayed, identical, in place.
    assert_eq!(
        ids_and_data(&feed.host_updates),
        ids_and_data(&live_updates),
        "the resumed feed does not replay the host's updates as they were"
    );
    assert!(
        feed.next(QUIET).await.is_none(),
        "exactly the missed events"
    );
    // Live events keep coming on the resumed stream.
    expect_status(&s.put("/network/n3", json!({})).await, 201);
    let live = feed.take(1).await;
    check(&live[0], "Network", "created", "n3");
    drop(feed);

    // Resuming in the middle of a multi-record revision: only its remaining event, then the rest.
    let mut feed = Feed::open(&s, Some(&format!("{r}.0")), &secrets).await;
    let got = feed.take(5).await;
    check(&got[0], "Cluster", "updated", "c1");
    assert_eq!(got[0].id.as_deref(), Some(r.to_string().as_str()));
    check(&got[1], "Network", "created", "n2");
    check(&got[2], "Network", "deleted", "n2");
    check(&got[3], "Cluster", "created", "c2");
    check(&got[4], "Network", "created", "n3");
    assert!(feed.next(QUIET).await.is_none());
    assert_eq!(
        ids_and_data(&feed.host_updates),
        ids_and_data(&live_updates)
    );
    drop(feed);

    // The query parameter works like the header: the same events from the same point.
    let reader =
        common::EventReader::open_path(&s, &format!("/events?last_event_id={r1}"), None).await;
    let mut feed = Feed::from_reader(reader, &secrets);
    let got = feed.take(6).await;
    check(&got[0], "Host", "created", "127.0.1.1");
    assert_eq!(got[0].id.as_deref(), Some(format!("{r}.0").as_str()));
    check(&got[1], "Cluster", "updated", "c1");
    check(&got[2], "Network", "created", "n2");
    check(&got[3], "Network", "deleted", "n2");
    check(&got[4], "Cluster", "created", "c2");
    check(&got[5], "Network", "created", "n3");
    assert!(feed.next(QUIET).await.is_none());
    assert_eq!(
        ids_and_data(&feed.host_updates),
        ids_and_data(&live_updates)
    );
    drop(feed);

    // A host delete: the host and the cluster it left, never the credentials.
    let mut feed = Feed::open(&s, None, &secrets).await;
    expect_status(&s.delete("/host/127.0.1.1").await, 200);
    let got = feed.take(2).await;
    check(&got[0], "Host", "deleted", "127.0.1.1");
    let v = check(&got[1], "Cluster", "updated", "c1");
    assert_eq!(v["object"]["hostset"], json!([]));
    assert!(feed.next(QUIET).await.is_none());
    assert!(
        feed.host_updates.is_empty(),
        "a settled (then deleted) host was updated: {:?}",
        feed.host_updates
    );
    drop(feed);

    // A malformed id is refused.
    let r = s
        .send(
            s.request(Method::GET, "/events")
                .header("last-event-id", "not-an-id"),
        )
        .await;
    expect_error(&r, 400, "Last-Event-ID");
}
