//! One behavioural test suite for every [`Store`] backend.
//!
//! Each scenario is an `async fn(SharedStore)` written only against the trait; the `both!`
//! macro runs it twice, as `<scenario>::sqlite` on a fresh SQLite file and as
//! `<scenario>::etcd` on a fresh etcd (its own process, so tests can run in parallel). The
//! backends must be interchangeable: a difference here is a bug in one of them. A few tests at
//! the end cover what only the etcd backend has (a server that goes away, compaction, several
//! endpoints, the key prefix).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use commissaire_store::etcd::{EtcdConfig, EtcdStore};
use commissaire_store::sqlite::SqliteStore;
use commissaire_store::{
    Compare, Event, EventKind, EventStream, Op, SharedStore, Store, StoreError, StoreExt,
};
use futures::StreamExt;
use testsupport::EtcdServer;

/// How long a watch may take to deliver an expected change before the test fails.
const DELIVERY: Duration = Duration::from_secs(5);

/// A store under test plus whatever must outlive it.
struct Fixture {
    store: SharedStore,
    _dir: Option<tempfile::TempDir>,
    etcd: Option<EtcdServer>,
}

impl Fixture {
    fn sqlite() -> Fixture {
        let dir = tempfile::tempdir().expect("temporary directory");
        let store = SqliteStore::open(&dir.path().join("store.db")).expect("open sqlite store");
        Fixture {
            store: Arc::new(store),
            _dir: Some(dir),
            etcd: None,
        }
    }

    async fn etcd() -> Fixture {
        let server = EtcdServer::start();
        let store = etcd_store(&server, "/commissaire/").await;
        Fixture {
            store: Arc::new(store),
            _dir: None,
            etcd: Some(server),
        }
    }
}

async fn etcd_store(server: &EtcdServer, prefix: &str) -> EtcdStore {
    EtcdStore::connect(EtcdConfig {
        endpoints: vec![server.url()],
        prefix: prefix.to_string(),
        ..EtcdConfig::default()
    })
    .await
    .expect("connect to etcd")
}

/// Runs a scenario on both backends, as `<scenario>::sqlite` and `<scenario>::etcd`.
macro_rules! both {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let fixture = super::Fixture::sqlite();
                assert_eq!(fixture.store.backend_name(), "sqlite");
                super::$name(fixture.store.clone()).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn etcd() {
                let fixture = super::Fixture::etcd().await;
                assert!(fixture.etcd.is_some());
                assert_eq!(fixture.store.backend_name(), "etcd");
                super::$name(fixture.store.clone()).await;
            }
        }
    )*};
}

both!(
    put_get_list_delete,
    txn_compares,
    txn_revisions,
    watch_replays_history_then_live,
    watch_from_now,
    watch_txn_is_one_batch,
    concurrent_compare_and_swap,
    concurrent_conflicting_txns,
);

fn put(key: &str, value: &str) -> Op {
    Op::Put {
        key: key.to_string(),
        value: value.as_bytes().to_vec(),
    }
}

fn del(key: &str) -> Op {
    Op::Delete {
        key: key.to_string(),
    }
}

async fn value_of(store: &SharedStore, key: &str) -> Option<String> {
    store
        .get(key)
        .await
        .expect("get")
        .map(|kv| String::from_utf8(kv.value).expect("utf-8 value"))
}

async fn keys(store: &SharedStore, prefix: &str) -> Vec<String> {
    store
        .list(prefix)
        .await
        .expect("list")
        .into_iter()
        .map(|kv| kv.key)
        .collect()
}

/// The next batch of a watch; fails the test on an error, the end, or a long wait.
async fn next_batch(stream: &mut EventStream) -> Vec<Event> {
    match tokio::time::timeout(DELIVERY, stream.next()).await {
        Ok(Some(Ok(batch))) => batch,
        Ok(Some(Err(e))) => panic!("watch failed: {e}"),
        Ok(None) => panic!("watch ended"),
        Err(_) => panic!("no change delivered within {DELIVERY:?}"),
    }
}

/// Asserts that the watch delivers nothing more for a little while.
async fn assert_quiet(stream: &mut EventStream) {
    if let Ok(item) = tokio::time::timeout(Duration::from_millis(300), stream.next()).await {
        panic!("unexpected watch item: {item:?}");
    }
}

fn event(revision: i64, key: &str, kind: EventKind, created: bool, value: Option<&str>) -> Event {
    Event {
        revision,
        key: key.to_string(),
        kind,
        created,
        value: value.map(|v| v.as_bytes().to_vec()),
    }
}

async fn put_get_list_delete(store: SharedStore) {
    assert_eq!(store.get("hosts/10.0.0.1").await.unwrap(), None);
    assert!(keys(&store, "hosts/").await.is_empty());

    let r1 = store.put("hosts/10.0.0.1", b"one".to_vec()).await.unwrap();
    let kv = store.get("hosts/10.0.0.1").await.unwrap().expect("stored");
    assert_eq!(kv.key, "hosts/10.0.0.1");
    assert_eq!(kv.value, b"one");
    assert_eq!((kv.create_revision, kv.mod_revision), (r1, r1));

    store.put("hosts/10.0.0.2", b"two".to_vec()).await.unwrap();
    store.put("hosts/10.0.0.10", b"ten".to_vec()).await.unwrap();
    store.put("clusters/a", b"{}".to_vec()).await.unwrap();
    store.put("hostsx/y", b"other".to_vec()).await.unwrap();
    store
        .put("hosts/fe80::1%eth0", b"v6".to_vec())
        .await
        .unwrap();

    // Sorted by key bytes; a prefix ending in `/` does not pick up `hostsx/`.
    assert_eq!(
        keys(&store, "hosts/").await,
        [
            "hosts/10.0.0.1",
            "hosts/10.0.0.10",
            "hosts/10.0.0.2",
            "hosts/fe80::1%eth0"
        ]
    );
    assert_eq!(keys(&store, "clusters/").await, ["clusters/a"]);
    assert_eq!(
        keys(&store, "hosts/10.0.0.1").await,
        ["hosts/10.0.0.1", "hosts/10.0.0.10"]
    );
    // A byte prefix without the slash matches both.
    assert_eq!(keys(&store, "hosts").await.len(), 5);
    assert_eq!(keys(&store, "").await.len(), 6);
    assert!(keys(&store, "networks/").await.is_empty());
    // Keys alone come back in the same order, for the same prefixes.
    for prefix in ["hosts/", "hosts/10.0.0.1", "", "networks/"] {
        assert_eq!(
            store.list_keys(prefix).await.unwrap(),
            keys(&store, prefix).await,
            "list_keys({prefix:?})"
        );
    }
    let listed = store.list("hosts/").await.unwrap();
    assert_eq!(listed[0].value, b"one");
    assert_eq!(listed[2].value, b"two");
    assert_eq!(
        value_of(&store, "hosts/fe80::1%eth0").await.as_deref(),
        Some("v6")
    );

    // An update keeps the create revision and moves the mod revision.
    let r2 = store.put("hosts/10.0.0.1", b"uno".to_vec()).await.unwrap();
    assert!(r2 > r1);
    let kv = store.get("hosts/10.0.0.1").await.unwrap().unwrap();
    assert_eq!((kv.create_revision, kv.mod_revision), (r1, r2));
    assert_eq!(kv.value, b"uno");

    assert!(store.delete("hosts/10.0.0.1").await.unwrap());
    assert!(!store.delete("hosts/10.0.0.1").await.unwrap());
    assert_eq!(store.get("hosts/10.0.0.1").await.unwrap(), None);
    assert!(!store.delete("never/existed").await.unwrap());
    assert_eq!(
        keys(&store, "hosts/").await,
        ["hosts/10.0.0.10", "hosts/10.0.0.2", "hosts/fe80::1%eth0"]
    );

    // Empty and binary values round-trip.
    store.put("bin/empty", Vec::new()).await.unwrap();
    store.put("bin/bytes", vec![0, 255, 1, 254]).await.unwrap();
    assert_eq!(store.get("bin/empty").await.unwrap().unwrap().value, b"");
    assert_eq!(
        store.get("bin/bytes").await.unwrap().unwrap().value,
        [0, 255, 1, 254]
    );

    store.health().await.expect("healthy");
}

async fn txn_compares(store: SharedStore) {
    let absent = |k: &str| Compare::Absent(k.to_string());
    let modrev = |k: &str, r| Compare::ModRevision(k.to_string(), r);

    // Absent holds for a missing key.
    let out = store
        .txn(vec![absent("n/a")], vec![put("n/a", "1")])
        .await
        .unwrap();
    assert!(out.succeeded);
    let r1 = out.revision;
    assert_eq!(store.revision().await.unwrap(), r1);

    // ...and fails for an existing one: nothing written, revision unchanged.
    let out = store
        .txn(vec![absent("n/a")], vec![put("n/a", "2"), put("n/b", "2")])
        .await
        .unwrap();
    assert!(!out.succeeded);
    assert_eq!(out.revision, r1);
    assert_eq!(value_of(&store, "n/a").await.as_deref(), Some("1"));
    assert_eq!(store.get("n/b").await.unwrap(), None);

    // ModRevision: a stale revision fails and writes nothing.
    let out = store
        .txn(
            vec![modrev("n/a", r1 - 1)],
            vec![put("n/a", "3"), put("n/c", "3")],
        )
        .await
        .unwrap();
    assert!(!out.succeeded);
    assert_eq!(out.revision, r1);
    assert_eq!(value_of(&store, "n/a").await.as_deref(), Some("1"));
    assert_eq!(store.get("n/c").await.unwrap(), None);

    // The current revision succeeds.
    let out = store
        .txn(vec![modrev("n/a", r1)], vec![put("n/a", "4")])
        .await
        .unwrap();
    assert!(out.succeeded);
    assert_eq!(out.revision, r1 + 1);
    assert_eq!(value_of(&store, "n/a").await.as_deref(), Some("4"));
    // ...and is now stale itself.
    let out = store
        .txn(vec![modrev("n/a", r1)], vec![put("n/a", "5")])
        .await
        .unwrap();
    assert!(!out.succeeded);

    // ModRevision requires the key to exist, whatever revision is given.
    for rev in [0, r1, r1 + 1] {
        let out = store
            .txn(vec![modrev("n/missing", rev)], vec![put("n/missing", "x")])
            .await
            .unwrap();
        assert!(!out.succeeded, "ModRevision(missing, {rev}) held");
    }
    assert_eq!(store.get("n/missing").await.unwrap(), None);

    // Every compare must hold.
    let out = store
        .txn(
            vec![modrev("n/a", r1 + 1), absent("n/a")],
            vec![put("n/d", "x")],
        )
        .await
        .unwrap();
    assert!(!out.succeeded);
    let out = store
        .txn(
            vec![modrev("n/a", r1 + 1), absent("n/d")],
            vec![put("n/d", "x")],
        )
        .await
        .unwrap();
    assert!(out.succeeded);

    // The StoreExt helpers built on txn.
    assert!(
        !store
            .compare_and_swap("n/a", None, b"6".to_vec())
            .await
            .unwrap()
    );
    assert!(
        store
            .compare_and_swap("n/e", None, b"6".to_vec())
            .await
            .unwrap()
    );
    let e = store.get("n/e").await.unwrap().unwrap();
    assert!(
        !store
            .compare_and_swap("n/e", Some(e.mod_revision - 1), b"7".to_vec())
            .await
            .unwrap()
    );
    assert!(
        store
            .compare_and_swap("n/e", Some(e.mod_revision), b"7".to_vec())
            .await
            .unwrap()
    );
    assert_eq!(value_of(&store, "n/e").await.as_deref(), Some("7"));
}

async fn txn_revisions(store: SharedStore) {
    let r0 = store.revision().await.unwrap();
    let r1 = store.put("t/c", b"c".to_vec()).await.unwrap();
    assert_eq!(r1, r0 + 1);
    assert_eq!(store.revision().await.unwrap(), r1);

    // Several writes in one transaction: one revision, all or nothing.
    let out = store
        .txn(vec![], vec![put("t/a", "a"), put("t/b", "b"), del("t/c")])
        .await
        .unwrap();
    assert!(out.succeeded);
    assert_eq!(out.revision, r1 + 1);
    let a = store.get("t/a").await.unwrap().unwrap();
    let b = store.get("t/b").await.unwrap().unwrap();
    assert_eq!((a.mod_revision, b.mod_revision), (r1 + 1, r1 + 1));
    assert_eq!(store.get("t/c").await.unwrap(), None);
    assert_eq!(store.revision().await.unwrap(), r1 + 1);

    // A transaction without writes does not create a revision, whether or not it has
    // compares.
    let out = store.txn(vec![], vec![]).await.unwrap();
    assert!(out.succeeded);
    assert_eq!(out.revision, r1 + 1);
    let out = store
        .txn(
            vec![Compare::ModRevision("t/a".to_string(), r1 + 1)],
            vec![],
        )
        .await
        .unwrap();
    assert!(out.succeeded);
    assert_eq!(out.revision, r1 + 1);
    // Nor does a failed one.
    let out = store
        .txn(
            vec![Compare::Absent("t/a".to_string())],
            vec![put("t/z", "z")],
        )
        .await
        .unwrap();
    assert!(!out.succeeded);
    assert_eq!(out.revision, r1 + 1);
    assert_eq!(store.revision().await.unwrap(), r1 + 1);

    // Each successful write transaction adds exactly one.
    for i in 0..5 {
        let r = store.put("t/n", i.to_string().into_bytes()).await.unwrap();
        assert_eq!(r, r1 + 2 + i);
    }
    assert_eq!(store.revision().await.unwrap(), r1 + 6);
}

async fn watch_replays_history_then_live(store: SharedStore) {
    let r1 = store.put("w/k1", b"a".to_vec()).await.unwrap();
    let r2 = store.put("w/k2", b"b".to_vec()).await.unwrap();
    store.put("other/x", b"not watched".to_vec()).await.unwrap();
    let r3 = store.put("w/k1", b"a2".to_vec()).await.unwrap();
    assert!(store.delete("w/k2").await.unwrap());
    let r4 = store.revision().await.unwrap();
    let r5 = store.put("w/k2", b"b2".to_vec()).await.unwrap();

    let mut watch = store.watch("w/", Some(r1)).await.unwrap();
    assert_eq!(
        next_batch(&mut watch).await,
        [event(r1, "w/k1", EventKind::Put, true, Some("a"))]
    );
    assert_eq!(
        next_batch(&mut watch).await,
        [event(r2, "w/k2", EventKind::Put, true, Some("b"))]
    );
    assert_eq!(
        next_batch(&mut watch).await,
        [event(r3, "w/k1", EventKind::Put, false, Some("a2"))]
    );
    // A delete carries the value the key had.
    assert_eq!(
        next_batch(&mut watch).await,
        [event(r4, "w/k2", EventKind::Delete, false, Some("b"))]
    );
    // Re-creating a deleted key is a creation again.
    assert_eq!(
        next_batch(&mut watch).await,
        [event(r5, "w/k2", EventKind::Put, true, Some("b2"))]
    );
    assert_quiet(&mut watch).await;

    // Then live changes follow.
    store.put("other/y", b"not watched".to_vec()).await.unwrap();
    let r6 = store.put("w/k3", b"c".to_vec()).await.unwrap();
    assert_eq!(
        next_batch(&mut watch).await,
        [event(r6, "w/k3", EventKind::Put, true, Some("c"))]
    );
    assert!(store.delete("w/k3").await.unwrap());
    assert_eq!(
        next_batch(&mut watch).await,
        [event(r6 + 1, "w/k3", EventKind::Delete, false, Some("c"))]
    );

    // Starting in the middle of history skips what came before.
    let mut watch = store.watch("w/", Some(r3)).await.unwrap();
    assert_eq!(next_batch(&mut watch).await[0].revision, r3);
    // A watch on a single key's prefix sees only that key.
    let mut watch = store.watch("w/k1", Some(r1)).await.unwrap();
    assert_eq!(next_batch(&mut watch).await[0].revision, r1);
    assert_eq!(next_batch(&mut watch).await[0].revision, r3);
    assert_quiet(&mut watch).await;
}

async fn watch_from_now(store: SharedStore) {
    store.put("f/old", b"old".to_vec()).await.unwrap();
    let mut watch = store.watch("f/", None).await.unwrap();
    // Everything written after `watch` returned is delivered, nothing from before.
    let r = store.put("f/new", b"new".to_vec()).await.unwrap();
    assert_eq!(
        next_batch(&mut watch).await,
        [event(r, "f/new", EventKind::Put, true, Some("new"))]
    );
    let r = store.put("f/old", b"old2".to_vec()).await.unwrap();
    assert_eq!(
        next_batch(&mut watch).await,
        [event(r, "f/old", EventKind::Put, false, Some("old2"))]
    );
    assert_quiet(&mut watch).await;

    // Two watches on the same prefix each get every change.
    let mut second = store.watch("f/", None).await.unwrap();
    let r = store.put("f/both", b"x".to_vec()).await.unwrap();
    assert_eq!(next_batch(&mut watch).await[0].revision, r);
    assert_eq!(next_batch(&mut second).await[0].revision, r);
    // Dropping one watch does not disturb the other.
    drop(second);
    let r = store.put("f/both", b"y".to_vec()).await.unwrap();
    assert_eq!(next_batch(&mut watch).await[0].revision, r);
}

async fn watch_txn_is_one_batch(store: SharedStore) {
    store.put("b/c", b"c".to_vec()).await.unwrap();
    let mut watch = store.watch("b/", None).await.unwrap();
    let out = store
        .txn(vec![], vec![put("b/a", "a"), put("b/b", "b"), del("b/c")])
        .await
        .unwrap();
    let r = out.revision;
    assert_eq!(
        next_batch(&mut watch).await,
        [
            event(r, "b/a", EventKind::Put, true, Some("a")),
            event(r, "b/b", EventKind::Put, true, Some("b")),
            event(r, "b/c", EventKind::Delete, false, Some("c")),
        ]
    );
    // Consecutive transactions are separate batches, also when replayed from history.
    let r2 = store
        .txn(vec![], vec![put("b/a", "a2"), put("b/b", "b2")])
        .await
        .unwrap()
        .revision;
    let r3 = store.put("b/a", b"a3".to_vec()).await.unwrap();
    assert_eq!(next_batch(&mut watch).await.len(), 2);
    assert_eq!(next_batch(&mut watch).await.len(), 1);

    let mut replay = store.watch("b/", Some(r)).await.unwrap();
    let batches = [
        next_batch(&mut replay).await,
        next_batch(&mut replay).await,
        next_batch(&mut replay).await,
    ];
    let shape: Vec<(i64, usize)> = batches
        .iter()
        .map(|b| {
            assert!(b.iter().all(|e| e.revision == b[0].revision));
            (b[0].revision, b.len())
        })
        .collect();
    assert_eq!(shape, [(r, 3), (r2, 2), (r3, 1)]);
    assert_eq!(batches[1][0].value.as_deref(), Some(&b"a2"[..]));
    assert!(!batches[1][0].created);
}

async fn concurrent_compare_and_swap(store: SharedStore) {
    const TASKS: usize = 200;
    const KEY: &str = "lists/members";
    let mut tasks = Vec::new();
    for i in 0..TASKS {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let me = format!("m{i}");
            for _ in 0..1000 {
                let current = store.get(KEY).await.expect("get");
                let mut list: Vec<String> = match &current {
                    Some(kv) => serde_json::from_slice(&kv.value).expect("json list"),
                    None => Vec::new(),
                };
                list.push(me.clone());
                let value = serde_json::to_vec(&list).unwrap();
                let expected = current.map(|kv| kv.mod_revision);
                if store
                    .compare_and_swap(KEY, expected, value)
                    .await
                    .expect("compare_and_swap")
                {
                    return;
                }
            }
            panic!("{me} lost 1000 races in a row");
        }));
    }
    for task in tasks {
        task.await.expect("task");
    }
    let kv = store.get(KEY).await.unwrap().expect("list stored");
    let list: Vec<String> = serde_json::from_slice(&kv.value).unwrap();
    assert_eq!(list.len(), TASKS, "lost updates");
    let members: BTreeSet<String> = list.into_iter().collect();
    let expected: BTreeSet<String> = (0..TASKS).map(|i| format!("m{i}")).collect();
    assert_eq!(members, expected);
    // One creation plus one update per other member.
    assert_eq!(kv.mod_revision - kv.create_revision, TASKS as i64 - 1);
}

/// Writers released at once (on the embedded store they are committed together, in one
/// group commit): half race to create one key, half write keys of their own. Exactly one racer
/// wins, the losers see its write and change nothing, every other writer's transaction is
/// applied, and each applied transaction has a revision of its own.
async fn concurrent_conflicting_txns(store: SharedStore) {
    const WRITERS: usize = 64;
    let before = store.revision().await.expect("revision");
    let start = Arc::new(tokio::sync::Barrier::new(WRITERS));
    let tasks: Vec<_> = (0..WRITERS)
        .map(|i| {
            let store = store.clone();
            let start = start.clone();
            tokio::spawn(async move {
                let me = format!("w{i}");
                let (compares, ops) = if i % 2 == 0 {
                    (
                        vec![Compare::Absent("race/leader".into())],
                        vec![
                            put("race/leader", &me),
                            put(&format!("race/won/{me}"), "yes"),
                        ],
                    )
                } else {
                    (vec![], vec![put(&format!("race/own/{me}"), &me)])
                };
                start.wait().await;
                (i, store.txn(compares, ops).await.expect("txn"))
            })
        })
        .collect();
    let mut outcomes = Vec::new();
    for t in tasks {
        outcomes.push(t.await.expect("task"));
    }
    let racers: Vec<_> = outcomes.iter().filter(|(i, _)| i % 2 == 0).collect();
    let winners: Vec<_> = racers.iter().filter(|(_, o)| o.succeeded).collect();
    assert_eq!(winners.len(), 1, "exactly one racer creates the key");
    let (winner, won) = winners[0];
    let leader = store.get("race/leader").await.unwrap().expect("leader");
    assert_eq!(leader.value, format!("w{winner}").into_bytes());
    assert_eq!(leader.mod_revision, won.revision);
    assert_eq!(
        keys(&store, "race/won/").await,
        [format!("race/won/w{winner}")]
    );
    for (_, lost) in racers.iter().filter(|(_, o)| !o.succeeded) {
        assert!(
            lost.revision >= won.revision,
            "a loser was judged before the winner's write: {} < {}",
            lost.revision,
            won.revision
        );
    }
    let own: Vec<_> = outcomes.iter().filter(|(i, _)| i % 2 == 1).collect();
    assert!(own.iter().all(|(_, o)| o.succeeded));
    assert_eq!(keys(&store, "race/own/").await.len(), WRITERS / 2);
    // One revision per applied transaction, none for the losers.
    let mut applied: Vec<i64> = outcomes
        .iter()
        .filter(|(_, o)| o.succeeded)
        .map(|(_, o)| o.revision)
        .collect();
    applied.sort();
    applied.dedup();
    assert_eq!(applied.len(), WRITERS / 2 + 1);
    let after = store.revision().await.expect("revision");
    assert_eq!(after - before, WRITERS as i64 / 2 + 1);
    assert_eq!(applied, ((before + 1)..=after).collect::<Vec<_>>());
}

// ---- sqlite only -----------------------------------------------------------------------

fn sqlite_store() -> (SqliteStore, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = SqliteStore::open(&dir.path().join("store.db")).expect("open sqlite store");
    (store, dir)
}

/// Transactions that fail half-way (a leased put, which the embedded store refuses after the
/// transaction's first put) sent at the same moment as valid ones: each failing one is answered
/// with its error and leaves nothing behind, the valid ones are applied with one revision and
/// one change-feed batch each, and they shared commits (group commit).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_group_commit_isolates_failing_txns() {
    const WRITERS: usize = 64;
    let (sqlite, _dir) = sqlite_store();
    let commits_before = sqlite.commits();
    let store: SharedStore = Arc::new(sqlite.clone());
    let before = store.revision().await.unwrap();
    let mut watch = store.watch("", Some(before + 1)).await.unwrap();
    let start = Arc::new(tokio::sync::Barrier::new(WRITERS));
    let tasks: Vec<_> = (0..WRITERS)
        .map(|i| {
            let store = store.clone();
            let start = start.clone();
            tokio::spawn(async move {
                let ops = if i % 2 == 0 {
                    vec![put(&format!("good/{i}"), "v")]
                } else {
                    vec![
                        put(&format!("bad/{i}"), "v"),
                        Op::PutLeased {
                            key: format!("bad/{i}/leased"),
                            value: b"v".to_vec(),
                            lease: 7,
                        },
                    ]
                };
                start.wait().await;
                (i, store.txn(vec![], ops).await)
            })
        })
        .collect();
    let mut revisions = Vec::new();
    for t in tasks {
        let (i, out) = t.await.expect("task");
        if i % 2 == 0 {
            let out = out.expect("a valid transaction is applied");
            assert!(out.succeeded);
            revisions.push(out.revision);
        } else {
            let err = out.expect_err("a leased put fails on the embedded store");
            assert!(err.to_string().contains("no leases"), "{err}");
        }
    }
    assert!(
        keys(&store, "bad/").await.is_empty(),
        "a failed transaction left writes behind"
    );
    assert_eq!(keys(&store, "good/").await.len(), WRITERS / 2);
    revisions.sort();
    let after = store.revision().await.unwrap();
    assert_eq!(revisions, ((before + 1)..=after).collect::<Vec<_>>());
    for rev in revisions {
        let batch = next_batch(&mut watch).await;
        assert_eq!(batch.len(), 1);
        assert_eq!(batch[0].revision, rev);
        assert!(batch[0].key.starts_with("good/"), "{}", batch[0].key);
    }
    assert_quiet(&mut watch).await;
    let commits = sqlite.commits() - commits_before;
    assert!(
        (1..WRITERS as u64 / 2).contains(&commits),
        "{} writes released at once took {commits} commits",
        WRITERS / 2
    );
}

/// A write that was answered is on disk: the store can be dropped and the file reopened at
/// once (the writer has closed its connection and released the lock), with every write there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_reopen_right_after_drop_keeps_every_answered_write() {
    let (sqlite, _dir) = sqlite_store();
    let path = sqlite.path().to_path_buf();
    let store: SharedStore = Arc::new(sqlite);
    let mut tasks = Vec::new();
    for i in 0..20 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store.put(&format!("k/{i}"), b"v".to_vec()).await.unwrap()
        }));
    }
    let mut last = 0;
    for t in tasks {
        last = last.max(t.await.unwrap());
    }
    drop(store);
    let reopened: SharedStore = Arc::new(SqliteStore::open(&path).expect("reopen at once"));
    assert_eq!(keys(&reopened, "k/").await.len(), 20);
    assert_eq!(reopened.revision().await.unwrap(), last);
}

// ---- etcd only -------------------------------------------------------------------------

fn assert_unavailable<T: std::fmt::Debug>(
    what: &str,
    result: Result<T, StoreError>,
    started: Instant,
) {
    let elapsed = started.elapsed();
    match result {
        Err(StoreError::Unavailable(_)) => {}
        other => panic!("{what} with etcd down: expected Unavailable, got {other:?}"),
    }
    assert!(
        elapsed < Duration::from_secs(2),
        "{what} took {elapsed:?} to report etcd down"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_down_then_back() {
    let mut server = EtcdServer::start();
    let store: SharedStore = Arc::new(etcd_store(&server, "/commissaire/").await);
    let r = store.put("hosts/a", b"a".to_vec()).await.unwrap();
    let mut watch = store.watch("hosts/", Some(r + 1)).await.unwrap();

    server.stop();

    // An open watch reports the loss once, then ends.
    match tokio::time::timeout(DELIVERY, watch.next()).await {
        Ok(Some(Err(StoreError::Unavailable(_)))) => {}
        other => panic!("watch with etcd down: expected Unavailable, got {other:?}"),
    }
    assert!(matches!(
        tokio::time::timeout(DELIVERY, watch.next()).await,
        Ok(None)
    ));

    // Twice each: once on the broken connection, once on a failing reconnect.
    for _ in 0..2 {
        let t = Instant::now();
        assert_unavailable("get", store.get("hosts/a").await, t);
        let t = Instant::now();
        assert_unavailable("list", store.list("hosts/").await, t);
        let t = Instant::now();
        assert_unavailable("txn", store.put("hosts/b", b"b".to_vec()).await, t);
        let t = Instant::now();
        assert_unavailable("revision", store.revision().await, t);
        let t = Instant::now();
        assert_unavailable("health", store.health().await, t);
        let t = Instant::now();
        assert_unavailable("watch", store.watch("hosts/", None).await.map(|_| ()), t);
    }

    server.restart();

    // The same store handle reconnects by itself.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match store.get("hosts/a").await {
            Ok(kv) => {
                assert_eq!(kv.expect("data survived the restart").value, b"a");
                break;
            }
            Err(StoreError::Unavailable(e)) if Instant::now() < deadline => {
                eprintln!("still unavailable: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("etcd did not come back: {e}"),
        }
    }
    store.health().await.unwrap();
    // Re-watching from the last seen revision + 1 catches up on what happened meanwhile.
    let mut watch = store.watch("hosts/", Some(r + 1)).await.unwrap();
    let r2 = store.put("hosts/b", b"b".to_vec()).await.unwrap();
    assert_eq!(
        next_batch(&mut watch).await,
        [event(r2, "hosts/b", EventKind::Put, true, Some("b"))]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_connect_needs_no_server() {
    // Nothing listens on this port: connecting still works, operations say Unavailable.
    let url = format!("http://127.0.0.1:{}", testsupport::free_port());
    let store = EtcdStore::connect(EtcdConfig {
        endpoints: vec![url.clone()],
        ..EtcdConfig::default()
    })
    .await
    .expect("connect does not contact etcd");
    let t = Instant::now();
    assert_unavailable("get", store.get("x").await, t);

    // A server that accepts connections but never answers must not make anything hang.
    let hung = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let store = EtcdStore::connect(EtcdConfig {
        endpoints: vec![format!("http://{}", hung.local_addr().unwrap())],
        ..EtcdConfig::default()
    })
    .await
    .unwrap();
    let t = Instant::now();
    assert_unavailable("get", store.get("x").await, t);
    let t = Instant::now();
    assert_unavailable("txn", store.put("x", b"1".to_vec()).await, t);
    let t = Instant::now();
    assert_unavailable("watch", store.watch("", None).await.map(|_| ()), t);
    drop(hung);

    // With a dead and a live member, requests go to the live one (writes included: the dead
    // one refuses connections, so nothing was sent to it).
    let server = EtcdServer::start();
    let store = EtcdStore::connect(EtcdConfig {
        endpoints: vec![url, server.url()],
        ..EtcdConfig::default()
    })
    .await
    .unwrap();
    let r = store.put("x", b"1".to_vec()).await.unwrap();
    assert_eq!(store.get("x").await.unwrap().unwrap().mod_revision, r);
    let mut watch = store.watch("", Some(r)).await.unwrap();
    assert_eq!(next_batch(&mut watch).await[0].key, "x");
    store.health().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_watch_from_compacted_revision() {
    let server = EtcdServer::start();
    let store = etcd_store(&server, "/commissaire/").await;
    let r1 = store.put("c/a", b"1".to_vec()).await.unwrap();
    store.put("c/a", b"2".to_vec()).await.unwrap();
    let r3 = store.put("c/a", b"3".to_vec()).await.unwrap();
    server.compact(r3);
    let mut watch = store.watch("c/", Some(r1)).await.unwrap();
    match tokio::time::timeout(DELIVERY, watch.next()).await {
        Ok(Some(Err(StoreError::Compacted { requested, oldest }))) => {
            assert_eq!(requested, r1);
            assert!(oldest >= r3, "oldest {oldest} < {r3}");
        }
        other => panic!("expected Compacted, got {other:?}"),
    }
    assert!(matches!(
        tokio::time::timeout(DELIVERY, watch.next()).await,
        Ok(None)
    ));
    // From the compaction revision on, history is still there.
    let mut watch = store.watch("c/", Some(r3)).await.unwrap();
    assert_eq!(next_batch(&mut watch).await[0].revision, r3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_keys_live_under_the_prefix() {
    let server = EtcdServer::start();
    let one = etcd_store(&server, "/one").await;
    let two = etcd_store(&server, "/two/").await;
    let root = etcd_store(&server, "").await;
    assert_eq!(one.prefix(), "/one/");
    one.put("hosts/a", b"1".to_vec()).await.unwrap();
    two.put("hosts/b", b"2".to_vec()).await.unwrap();
    assert_eq!(
        keys(&(Arc::new(one.clone()) as SharedStore), "").await,
        ["hosts/a"]
    );
    assert_eq!(
        keys(&(Arc::new(two) as SharedStore), "hosts/").await,
        ["hosts/b"]
    );
    assert_eq!(
        keys(&(Arc::new(root) as SharedStore), "").await,
        ["/one/hosts/a", "/two/hosts/b"]
    );
    // A store's watch sees only its own prefix.
    let mut watch = one.watch("", Some(1)).await.unwrap();
    assert_eq!(next_batch(&mut watch).await[0].key, "hosts/a");
    assert_quiet(&mut watch).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_leases_keep_keys_while_renewed_and_drop_them_after() {
    let server = EtcdServer::start();
    let s = etcd_store(&server, "/lease-test/").await;
    let lease = s.lease_grant(2).await.unwrap();
    let put = |k: &str| Op::PutLeased {
        key: k.to_string(),
        value: b"me".to_vec(),
        lease,
    };
    assert!(s.txn(vec![], vec![put("owned")]).await.unwrap().succeeded);
    // Renewed for three TTLs: the key stays.
    for _ in 0..12 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(s.lease_keep_alive(lease).await.unwrap(), "renewal refused");
    }
    assert!(
        s.get("owned").await.unwrap().is_some(),
        "a renewed lease lost its key"
    );
    // Not renewed: gone after the TTL, and the lease says so.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while s.get("owned").await.unwrap().is_some() {
        assert!(
            std::time::Instant::now() < deadline,
            "the key outlived its lease"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(!s.lease_keep_alive(lease).await.unwrap());
    // Revoking drops the keys at once.
    let l2 = s.lease_grant(30).await.unwrap();
    assert!(
        s.txn(
            vec![],
            vec![Op::PutLeased {
                key: "second".into(),
                value: vec![],
                lease: l2
            }]
        )
        .await
        .unwrap()
        .succeeded
    );
    s.lease_revoke(l2).await.unwrap();
    assert!(s.get("second").await.unwrap().is_none());
}
