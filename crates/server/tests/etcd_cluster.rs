//! etcd only: two servers sharing one etcd lose no update under concurrent writes; an etcd
//! outage gives fast 503s and service resumes when etcd returns; joining hosts that are ready
//! (records seeded straight into etcd, as the original's test-suite seeded them).

#[macro_use]
mod common;

use std::time::{Duration, Instant};

use common::{Backend, Env, KeyKind, Server, expect_error, expect_status};
use futures::StreamExt;
use reqwest::Method;
use serde_json::json;
use store::StoreExt;

/// Hosts created concurrently through the two servers.
const HOSTS: usize = 200;
/// Requests in flight at once.
const IN_FLIGHT: usize = 32;
/// An unreachable store must be reported within this.
const FAST_FAILURE: Duration = Duration::from_secs(2);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_lose_no_update_and_survive_an_etcd_outage() {
    let mut env = Env::new(Backend::Etcd);
    let secrets_key = env.dir().join("shared-secrets.key");
    let mut opts_a = env.options("a");
    opts_a.secrets_key_file = Some(secrets_key.clone());
    let mut opts_b = env.options("b");
    opts_b.secrets_key_file = Some(secrets_key);
    let a = Server::start(opts_a).await;
    let b = Server::start(opts_b).await;
    let key = env.key(KeyKind::Ed25519);

    expect_status(&a.put("/cluster/c", json!({})).await, 201);
    let addresses: Vec<String> = (0..HOSTS)
        .map(|i| format!("127.9.{}.{}", i / 200, i % 200 + 1))
        .collect();
    let started = Instant::now();
    let results: Vec<(String, u16, String)> = futures::stream::iter(addresses.iter().enumerate())
        .map(|(i, addr)| {
            let server = if i % 2 == 0 { &a } else { &b };
            let body = json!({"ssh_priv_key": key.b64, "cluster": "c"});
            async move {
                let r = server.put(&format!("/host/{addr}"), body).await;
                (addr.clone(), r.status, r.text)
            }
        })
        .buffer_unordered(IN_FLIGHT)
        .collect()
        .await;
    let failed: Vec<_> = results.iter().filter(|(_, st, _)| *st != 201).collect();
    assert!(
        failed.is_empty(),
        "{} of {HOSTS} host creations failed, e.g. {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
    eprintln!(
        "{HOSTS} concurrent host creations took {:?}",
        started.elapsed()
    );

    let mut want = addresses.clone();
    want.sort();
    for server in [&a, &b] {
        let c = expect_status(&server.get("/cluster/c").await, 200);
        let mut got: Vec<String> = c["hostset"]
            .as_array()
            .expect("hostset")
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect();
        assert_eq!(got.len(), HOSTS, "lost updates: {} members", got.len());
        got.sort();
        assert_eq!(got, want);
        assert_eq!(c["hosts"]["total"], HOSTS);
        let hosts = expect_status(&server.get("/hosts").await, 200);
        assert_eq!(hosts.as_array().unwrap().len(), HOSTS);
    }
    // Credentials sealed by one server open on the other (shared secrets key).
    assert_eq!(
        expect_status(&b.get(&format!("/host/{}/creds", addresses[0])).await, 200)["ssh_priv_key"],
        key.b64
    );

    // etcd goes away: fast 503s with JSON bodies, nothing hangs.
    env.etcd.as_mut().expect("etcd").stop();
    for server in [&a, &b] {
        for path in ["/clusters", "/cluster/c", "/hosts", "/host/127.9.0.1"] {
            let t = Instant::now();
            let r = server.get(path).await;
            let took = t.elapsed();
            expect_error(&r, 503, "store");
            assert!(
                took < FAST_FAILURE,
                "GET {path} took {took:?} with etcd down"
            );
            assert!(r.headers.contains_key("retry-after"), "{r:?}");
        }
        let t = Instant::now();
        let r = server.put("/cluster/d", json!({})).await;
        let took = t.elapsed();
        expect_error(&r, 503, "store");
        assert!(took < FAST_FAILURE, "PUT took {took:?} with etcd down");

        let t = Instant::now();
        let r = server
            .send(
                server
                    .client()
                    .get(server.url("/status"))
                    .timeout(common::REQUEST_TIMEOUT),
            )
            .await;
        let took = t.elapsed();
        assert_eq!(r.status, 503, "{r:?}");
        assert!(
            took < FAST_FAILURE,
            "GET /status took {took:?} with etcd down"
        );
        assert!(r.content_type().starts_with("application/json"), "{r:?}");
        assert_eq!(r.json["status"], "unavailable", "{r:?}");
    }

    // etcd comes back: service resumes.
    env.etcd.as_mut().expect("etcd").restart();
    for server in [&a, &b] {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let r = server.get("/clusters").await;
            if r.status == 200 {
                assert_eq!(r.json, json!(["c"]));
                break;
            }
            assert!(
                Instant::now() < deadline,
                "service did not resume within 20 s after etcd returned: {r:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        expect_status(&server.get("/status").await, 200);
    }
    expect_status(&b.put("/cluster/d", json!({})).await, 201);
    assert_eq!(
        expect_status(&a.get("/clusters").await, 200),
        json!(["c", "d"])
    );
}

/// Hosts in a state that may join (`disassociated`, `active`), written straight into etcd.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_of_ready_hosts() {
    let env = Env::new(Backend::Etcd);
    let s = env.server().await;
    let store = env.etcd_store().await;
    // Nothing queues an investigation for records written this way, so they keep their state.
    for (addr, status) in [
        ("127.0.1.20", "disassociated"),
        ("127.0.1.21", "disassociated"),
        ("127.0.1.22", "active"),
        ("127.0.1.23", "investigating"),
        ("127.0.1.24", "bootstrapping"),
        ("127.0.1.25", "failed"),
    ] {
        // The original's Host JSON.
        let host = json!({"address": addr, "status": status, "os": "fedora", "cpus": 2,
                          "memory": 11989228, "space": 487652,
                          "last_check": "2015-12-17T15:48:18.710454", "source": ""});
        store
            .put(&format!("hosts/{addr}"), host.to_string().into_bytes())
            .await
            .expect("seed a host record");
    }
    assert_eq!(
        expect_status(&s.get("/host/127.0.1.20").await, 200)["status"],
        "disassociated"
    );
    expect_status(&s.put("/cluster/c1", json!({})).await, 201);
    expect_status(&s.put("/cluster/c2", json!({})).await, 201);

    // Only active and disassociated hosts may join: 405 naming the state, nothing written.
    let rev = s.revision().await;
    for (addr, status) in [
        ("127.0.1.23", "investigating"),
        ("127.0.1.24", "bootstrapping"),
        ("127.0.1.25", "failed"),
    ] {
        expect_error(
            &s.put(&format!("/cluster/c1/hosts/{addr}"), json!({})).await,
            405,
            &format!("{addr} (status: {status})"),
        );
        expect_error(
            &s.put(
                "/cluster/c1/hosts",
                json!({"old": [], "new": ["127.0.1.20", addr]}),
            )
            .await,
            405,
            status,
        );
    }
    assert_eq!(s.revision().await, rev);

    assert_eq!(
        expect_status(&s.put("/cluster/c1/hosts/127.0.1.20", json!({})).await, 200),
        json!(["127.0.1.20"])
    );
    assert_eq!(
        expect_status(&s.get("/cluster/c1/hosts/127.0.1.20").await, 200),
        json!(["127.0.1.20"])
    );
    let rev = s.revision().await;
    assert_eq!(
        expect_status(&s.put("/cluster/c1/hosts/127.0.1.20", json!({})).await, 200),
        json!(["127.0.1.20"])
    );
    assert_eq!(s.revision().await, rev, "an idempotent join must not write");
    expect_error(
        &s.put("/cluster/c2/hosts/127.0.1.20", json!({})).await,
        409,
        "already a member of cluster c1",
    );
    let c = expect_status(&s.get("/cluster/c1").await, 200);
    assert_eq!(c["hostset"], json!(["127.0.1.20"]));
    // Unmanaged: a disassociated member is all that can be expected, so it is available.
    assert_eq!(
        c["hosts"],
        json!({"total": 1, "available": 1, "unavailable": 0})
    );

    // Compare-and-swap replacement of the whole list.
    let new = json!(["127.0.1.20", "127.0.1.21", "127.0.1.22"]);
    let c = expect_status(
        &s.put(
            "/cluster/c1/hosts",
            json!({"old": ["127.0.1.20"], "new": new}),
        )
        .await,
        200,
    );
    assert_eq!(c["name"], "c1");
    assert_eq!(c["hostset"], new);
    assert_eq!(c["status"], "ok");
    assert_eq!(
        c["hosts"],
        json!({"total": 3, "available": 3, "unavailable": 0})
    );
    // Joining a cluster without a container manager rewrites the host: the active one is now
    // disassociated (nothing registers it anywhere).
    assert_eq!(
        expect_status(&s.get("/host/127.0.1.22").await, 200)["status"],
        "disassociated"
    );
    assert_eq!(expect_status(&s.get("/cluster/c1/hosts").await, 200), new);
    // A stale old list is refused and changes nothing.
    let rev = s.revision().await;
    expect_error(
        &s.put(
            "/cluster/c1/hosts",
            json!({"old": ["127.0.1.20"], "new": []}),
        )
        .await,
        409,
        "old",
    );
    expect_error(
        &s.put(
            "/cluster/c2/hosts",
            json!({"old": [], "new": ["127.0.1.21"]}),
        )
        .await,
        409,
        "already a member of cluster c1",
    );
    assert_eq!(s.revision().await, rev);
    // Order of `old` does not matter.
    let c = expect_status(
        &s.put(
            "/cluster/c1/hosts",
            json!({"old": ["127.0.1.22", "127.0.1.21", "127.0.1.20"], "new": ["127.0.1.22"]}),
        )
        .await,
        200,
    );
    assert_eq!(c["hostset"], json!(["127.0.1.22"]));
    assert_eq!(c["status"], "ok");
    assert_eq!(
        c["hosts"],
        json!({"total": 1, "available": 1, "unavailable": 0})
    );

    // Left c1, so it may join c2; deleting the host removes it from there.
    assert_eq!(
        expect_status(
            &s.put("/cluster/c2/hosts/127.0.1.20/", json!({})).await,
            200
        ),
        json!(["127.0.1.20"])
    );
    assert_eq!(
        expect_status(&s.delete("/cluster/c1/hosts/127.0.1.22").await, 200),
        json!([])
    );
    assert_eq!(
        expect_status(&s.get("/cluster/c1/hosts").await, 200),
        json!([])
    );
    assert_eq!(
        expect_status(&s.delete("/host/127.0.1.20").await, 200),
        json!([])
    );
    assert_eq!(
        expect_status(&s.get("/cluster/c2/hosts").await, 200),
        json!([])
    );
    let r = s.send(s.request(Method::GET, "/host/127.0.1.20")).await;
    expect_error(&r, 404, "does not exist");
}
