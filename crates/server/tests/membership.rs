//! Membership under concurrency and its effect on hosts, through real HTTP:
//!
//! * a host is in at most one cluster and a cluster never names a deleted host, with many
//!   simultaneous requests — on SQLite through one server, on etcd through two servers;
//! * every join rewrites the host in the same transaction as the cluster (no manager →
//!   `disassociated`, `trivial` → `active`), and the change feed shows `updated Cluster` then
//!   `updated Host`; a leave makes the host `disassociated`;
//! * cluster status counts `disassociated` members of unmanaged clusters as available;
//! * a network or container manager is never deleted while a cluster uses it, with the cluster
//!   created through one server and the records deleted through the other;
//! * on the embedded store a cluster on a `flannel_etcd` network without `server_url` is
//!   refused, naming the fix;
//! * `PUT /cluster/{n}/hosts` with a 1 MiB list is cheap.
//!
//! Hosts that need no SSH are seeded straight into the store as bootstrapped `disassociated`
//! hosts before the servers start (the watcher is off in these tests, so nothing else touches
//! them); everything after that goes through the API.

#[macro_use]
mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::{Backend, Env, EventReader, Server, expect_error, expect_status};
use model::{Host, HostState};
use serde_json::{Value, json};
use store::{Op, Store};

/// Writes bootstrapped, just-checked `disassociated` hosts (records only) into the
/// environment's store.
async fn seed_hosts(env: &Env, addresses: &[String]) {
    let ops: Vec<Op> = addresses
        .iter()
        .map(|a| {
            let mut h = Host::new(a.clone());
            h.status = HostState::Disassociated;
            h.bootstrapped = true;
            // As a bootstrapped host has: checked just now. The watcher then leaves it for
            // later rounds instead of finding these made-up addresses unreachable.
            h.last_check = model::now_timestamp();
            store::records::put_json(&store::records::host_key(a), &h)
        })
        .collect();
    match env.backend {
        Backend::Sqlite => {
            let dir = env.dir().join("data");
            std::fs::create_dir_all(&dir).unwrap();
            let s = store::sqlite::SqliteStore::open(&dir.join("store.db")).unwrap();
            for chunk in ops.chunks(50) {
                assert!(s.txn(vec![], chunk.to_vec()).await.unwrap().succeeded);
            }
        }
        Backend::Etcd => {
            let s = env.etcd_store().await;
            for chunk in ops.chunks(50) {
                assert!(s.txn(vec![], chunk.to_vec()).await.unwrap().succeeded);
            }
        }
    }
}

/// One server on SQLite; two on one etcd.
async fn servers(env: &Env) -> (Server, Option<Server>) {
    let a = Server::start(env.options("data")).await;
    let b = match env.backend {
        Backend::Sqlite => None,
        Backend::Etcd => Some(Server::start(env.options("data-b")).await),
    };
    (a, b)
}

/// A flannel-server network `flat` (usable on any store) and unmanaged clusters on it.
async fn clusters(s: &Server, names: &[&str]) {
    expect_status(
        &s.put(
            "/network/flat",
            json!({"type": "flannel_server", "options": {"address": "127.0.0.1:8080"}}),
        )
        .await,
        201,
    );
    for n in names {
        expect_status(
            &s.put(&format!("/cluster/{n}"), json!({"network": "flat"}))
                .await,
            201,
        );
    }
}

fn addresses(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i}.hosts.test")).collect()
}

async fn hostset(s: &Server, cluster: &str) -> Vec<String> {
    let c = expect_status(&s.get(&format!("/cluster/{cluster}")).await, 200);
    c["hostset"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

/// No address in two of the clusters, and every member exists.
async fn assert_invariants(s: &Server, names: &[&str]) {
    let mut seen = HashSet::new();
    for n in names {
        for a in hostset(s, n).await {
            assert!(seen.insert(a.clone()), "host {a} is in two clusters");
            expect_status(&s.get(&format!("/host/{a}")).await, 200);
        }
    }
}

async fn join_races(backend: Backend) {
    let env = Env::new(backend);
    let pairs = 100;
    let hosts = addresses("j", pairs);
    let doomed = addresses("d", pairs);
    let listed = addresses("l", pairs);
    seed_hosts(
        &env,
        &[hosts.clone(), doomed.clone(), listed.clone()].concat(),
    )
    .await;
    let (a, b) = servers(&env).await;
    let second = b.as_ref().unwrap_or(&a);
    clusters(&a, &["a", "b"]).await;

    // Join A through one server and B through the other, for the same host at once.
    for chunk in hosts.chunks(10) {
        let mut tasks = Vec::new();
        for h in chunk {
            let a = &a;
            tasks.push(async move {
                let (pa, pb) = (
                    format!("/cluster/a/hosts/{h}"),
                    format!("/cluster/b/hosts/{h}"),
                );
                let (ra, rb) = tokio::join!(a.put(&pa, json!({})), second.put(&pb, json!({})));
                let mut got = [ra.status, rb.status];
                got.sort();
                assert_eq!(got, [200, 409], "join {h} to a and b: {ra:?} / {rb:?}");
            });
        }
        futures::future::join_all(tasks).await;
    }
    assert_invariants(&a, &["a", "b"]).await;
    let total = hostset(&a, "a").await.len() + hostset(&a, "b").await.len();
    assert_eq!(total, pairs, "every host joined exactly one cluster");

    // Join A while the host is deleted through the other server.
    for chunk in doomed.chunks(10) {
        let mut tasks = Vec::new();
        for h in chunk {
            let a = &a;
            tasks.push(async move {
                let (pj, pd) = (format!("/cluster/a/hosts/{h}"), format!("/host/{h}"));
                let (rj, rd) = tokio::join!(a.put(&pj, json!({})), second.delete(&pd));
                assert_eq!(rd.status, 200, "delete {h}: {rd:?}");
                assert!(
                    rj.status == 200 || rj.status == 404,
                    "join {h} while deleted: {rj:?}"
                );
            });
        }
        futures::future::join_all(tasks).await;
    }
    assert_invariants(&a, &["a", "b"]).await;
    let members_a: HashSet<String> = hostset(&a, "a").await.into_iter().collect();
    for h in &doomed {
        assert!(!members_a.contains(h), "cluster a names deleted host {h}");
    }

    // PUT /cluster/a/hosts (old → old + host) against a single join to B.
    for h in &listed {
        let old = hostset(&a, "a").await;
        let mut new = old.clone();
        new.push(h.clone());
        let pj = format!("/cluster/b/hosts/{h}");
        let (rs, rj) = tokio::join!(
            a.put("/cluster/a/hosts", json!({"old": old, "new": new})),
            second.put(&pj, json!({}))
        );
        let mut got = [rs.status, rj.status];
        got.sort();
        assert_eq!(got, [200, 409], "set a + {h} vs join b: {rs:?} / {rj:?}");
    }
    assert_invariants(&a, &["a", "b"]).await;
    if let Some(b) = &b {
        assert_invariants(b, &["a", "b"]).await;
    }
}

/// Reads events until one about `kind`/`name` with this action arrives; earlier events about
/// other records (creations in the set-up) are skipped, but not ones about the same record.
async fn next_about(feed: &mut EventReader, kinds: &[&str]) -> Value {
    loop {
        let e = feed
            .next(Duration::from_secs(30))
            .await
            .expect("an event within 30 s");
        let v = e.json();
        if kinds.contains(&v["kind"].as_str().unwrap_or("")) {
            return v;
        }
    }
}

async fn join_rewrites_hosts(backend: Backend) {
    let env = Env::new(backend);
    let hosts = addresses("m", 4);
    seed_hosts(&env, &hosts).await;
    let (s, _b) = servers(&env).await;
    clusters(&s, &["plain"]).await;
    expect_status(
        &s.put("/containermanager/triv", json!({"type": "trivial"}))
            .await,
        201,
    );
    expect_status(
        &s.put(
            "/cluster/managed",
            json!({"network": "flat", "container_manager": "triv"}),
        )
        .await,
        201,
    );
    let mut feed = EventReader::open(&s, Some(&s.store_revision().await.to_string())).await;
    let kinds = ["Cluster", "Host"];

    // Single join, unmanaged cluster: Cluster, then Host (disassociated).
    let h0 = &hosts[0];
    expect_status(
        &s.put(&format!("/cluster/plain/hosts/{h0}"), json!({}))
            .await,
        200,
    );
    let c = next_about(&mut feed, &kinds).await;
    assert_eq!(
        (c["kind"].as_str(), c["action"].as_str()),
        (Some("Cluster"), Some("updated"))
    );
    assert_eq!(c["name"], "plain");
    let h = next_about(&mut feed, &kinds).await;
    assert_eq!(
        (h["kind"].as_str(), h["action"].as_str()),
        (Some("Host"), Some("updated"))
    );
    assert_eq!(
        (h["name"].as_str(), h["object"]["status"].as_str()),
        (Some(h0.as_str()), Some("disassociated"))
    );
    // Unmanaged and disassociated: available.
    let view = expect_status(&s.get("/cluster/plain").await, 200);
    assert_eq!(view["status"], "ok", "{view}");
    assert_eq!(view["hosts"]["available"], 1);
    let st = expect_status(&s.get(&format!("/host/{h0}/status")).await, 200);
    assert_eq!(st["type"], "host_only");

    // Moving it to a trivial-managed cluster (leave, then join): leave → Cluster, Host
    // (disassociated; unchanged here, so no host event), join → Cluster, Host (active).
    expect_status(&s.delete(&format!("/cluster/plain/hosts/{h0}")).await, 200);
    let c = next_about(&mut feed, &kinds).await;
    assert_eq!(
        (c["kind"].as_str(), c["name"].as_str()),
        (Some("Cluster"), Some("plain"))
    );
    expect_status(
        &s.put(&format!("/cluster/managed/hosts/{h0}"), json!({}))
            .await,
        200,
    );
    let c = next_about(&mut feed, &kinds).await;
    assert_eq!(
        (c["kind"].as_str(), c["name"].as_str()),
        (Some("Cluster"), Some("managed"))
    );
    let h = next_about(&mut feed, &kinds).await;
    assert_eq!(
        (h["kind"].as_str(), h["object"]["status"].as_str()),
        (Some("Host"), Some("active"))
    );
    let st = expect_status(&s.get(&format!("/host/{h0}/status")).await, 200);
    assert_eq!(st["type"], "container_manager", "{st}");
    assert_eq!(st["container_manager"]["container_manager"], "triv");
    assert_eq!(st["container_manager"]["ready"], true);
    assert_eq!(
        expect_status(&s.get("/cluster/managed").await, 200)["status"],
        "ok"
    );

    // Leaving the managed cluster: Cluster, then Host (disassociated).
    expect_status(
        &s.delete(&format!("/cluster/managed/hosts/{h0}")).await,
        200,
    );
    let c = next_about(&mut feed, &kinds).await;
    assert_eq!(
        (c["kind"].as_str(), c["name"].as_str()),
        (Some("Cluster"), Some("managed"))
    );
    let h = next_about(&mut feed, &kinds).await;
    assert_eq!(
        (h["kind"].as_str(), h["object"]["status"].as_str()),
        (Some("Host"), Some("disassociated"))
    );
    let got = expect_status(&s.get(&format!("/host/{h0}")).await, 200);
    assert_eq!(got["status"], "disassociated");

    // PUT /cluster/managed/hosts adds three: Cluster, then one Host event (active) each.
    let added: Vec<String> = hosts[1..].to_vec();
    expect_status(
        &s.put("/cluster/managed/hosts", json!({"old": [], "new": added}))
            .await,
        200,
    );
    let c = next_about(&mut feed, &kinds).await;
    assert_eq!(
        (c["kind"].as_str(), c["name"].as_str()),
        (Some("Cluster"), Some("managed"))
    );
    let mut rewritten = HashSet::new();
    for _ in &added {
        let h = next_about(&mut feed, &kinds).await;
        assert_eq!(
            (h["kind"].as_str(), h["object"]["status"].as_str()),
            (Some("Host"), Some("active")),
            "{h}"
        );
        rewritten.insert(h["name"].as_str().unwrap().to_string());
    }
    assert_eq!(rewritten, added.iter().cloned().collect::<HashSet<_>>());

    // A host in one cluster cannot join another.
    expect_error(
        &s.put(&format!("/cluster/plain/hosts/{}", hosts[1]), json!({}))
            .await,
        409,
        "already a member of cluster managed",
    );
    // Deleting the cluster makes its members leave it.
    expect_status(&s.delete("/cluster/managed").await, 200);
    for a in &added {
        let h = expect_status(&s.get(&format!("/host/{a}")).await, 200);
        assert_eq!(h["status"], "disassociated", "{h}");
    }
    expect_status(
        &s.put(&format!("/cluster/plain/hosts/{}", hosts[1]), json!({}))
            .await,
        200,
    );
}

/// A network or container manager is never deleted while a cluster uses it: a cluster that
/// starts using one while it is being deleted (through the other server on etcd) either wins —
/// the delete answers 409 — or loses — the cluster is refused because the record is gone —
/// and no cluster is ever left naming a record that does not exist.
async fn reference_races(backend: Backend) {
    let env = Env::new(backend);
    let (a, b) = servers(&env).await;
    let second = b.as_ref().unwrap_or(&a);
    let rounds = 30;
    let mut outcomes = HashSet::new();
    for i in 0..rounds {
        let (net, cm, cluster) = (format!("n{i}"), format!("m{i}"), format!("c{i}"));
        expect_status(
            &a.put(
                &format!("/network/{net}"),
                json!({"type": "flannel_server", "options": {"address": "127.0.0.1:8080"}}),
            )
            .await,
            201,
        );
        expect_status(
            &a.put(
                &format!("/containermanager/{cm}"),
                json!({"type": "trivial"}),
            )
            .await,
            201,
        );
        let (cpath, npath, mpath) = (
            format!("/cluster/{cluster}"),
            format!("/network/{net}"),
            format!("/containermanager/{cm}"),
        );
        let (rc, rn, rm) = tokio::join!(
            a.put(&cpath, json!({"network": net, "container_manager": cm})),
            second.delete(&npath),
            second.delete(&mpath),
        );
        match rc.status {
            201 => {
                // The cluster exists, so neither record may have gone.
                assert_eq!(
                    rn.status, 409,
                    "network deleted under cluster {cluster}: {rn:?}"
                );
                assert_eq!(
                    rm.status, 409,
                    "manager deleted under cluster {cluster}: {rm:?}"
                );
            }
            400 => assert!(
                rn.status == 200 || rm.status == 200,
                "cluster {cluster} refused though both records stayed: {rc:?} / {rn:?} / {rm:?}"
            ),
            _ => panic!("cluster {cluster}: {rc:?}"),
        }
        outcomes.insert((rc.status, rn.status, rm.status));
        // Whatever happened, what the cluster names exists.
        if rc.status == 201 {
            let c = expect_status(&a.get(&format!("/cluster/{cluster}")).await, 200);
            assert_eq!(c["network"], net.as_str());
            expect_status(&a.get(&format!("/network/{net}")).await, 200);
            expect_status(&a.get(&format!("/containermanager/{cm}")).await, 200);
        } else {
            expect_status(&a.get(&format!("/cluster/{cluster}")).await, 404);
        }
    }
    eprintln!("outcomes (cluster, network delete, manager delete): {outcomes:?}");
}

both_backends!(join_races, join_rewrites_hosts, reference_races);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_store_refuses_clusters_flannel_cannot_use() {
    let env = Env::new(Backend::Sqlite);
    let s = env.server().await;
    for body in [json!({}), json!({"network": "default"})] {
        let r = s.put("/cluster/c", body).await;
        expect_error(&r, 400, "flannel_server");
        expect_error(&r, 400, "network default");
    }
    expect_error(&s.get("/cluster/c").await, 404, "does not exist");
    expect_status(
        &s.put("/network/e2", json!({"type": "flannel_etcd"})).await,
        201,
    );
    expect_error(
        &s.put("/cluster/c", json!({"network": "e2"})).await,
        400,
        "server_url",
    );
    // With its own etcd URL a flannel_etcd network works anywhere.
    expect_status(
        &s.put(
            "/network/e3",
            json!({"type": "flannel_etcd", "options": {"server_url": "http://127.0.0.1:2379"}}),
        )
        .await,
        201,
    );
    expect_status(&s.put("/cluster/c", json!({"network": "e3"})).await, 201);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_store_accepts_the_default_network() {
    let env = Env::new(Backend::Etcd);
    let s = env.server().await;
    let c = expect_status(&s.put("/cluster/c", json!({})).await, 201);
    assert_eq!(c["network"], "default");
}

/// CPU time (user + system) the process has used, from `/proc/<pid>/stat`.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    // USER_HZ, the unit of these counters, is 100 on every Linux build we run on.
    ticks as f64 / 100.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_megabyte_member_list_is_cheap() {
    let env = Env::new(Backend::Sqlite);
    let s = env.server().await;
    clusters(&s, &["big"]).await;
    // Just under the 1 MiB body limit, with duplicates (de-duplication must stay linear).
    let mut new: Vec<String> = Vec::new();
    let mut size = 32;
    let mut i = 0u64;
    loop {
        let a = format!("h{i}.big.test");
        let copies = if i.is_multiple_of(3) { 2 } else { 1 };
        if size + copies * (a.len() + 3) > (1 << 20) - 64 {
            break;
        }
        size += copies * (a.len() + 3);
        for _ in 0..copies {
            new.push(a.clone());
        }
        i += 1;
    }
    let body = json!({"old": [], "new": new}).to_string();
    assert!(
        body.len() <= 1 << 20 && body.len() > 1_000_000,
        "{}",
        body.len()
    );
    let pid = s.pid().expect("server pid");
    let before = cpu_seconds(pid);
    let r = s.put_raw("/cluster/big/hosts", body.into_bytes()).await;
    let used = cpu_seconds(pid) - before;
    // No such hosts: refused, naming the first missing one, after a linear pass.
    expect_error(&r, 404, "host h0.big.test does not exist");
    assert!(
        used < 1.0,
        "the server used {used:.2} s of CPU on one request"
    );
    assert!(hostset(&s, "big").await.is_empty());
}
