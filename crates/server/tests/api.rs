//! The `/api/v0` resources through real HTTP, on both store backends: networks, container
//! managers, clusters, hosts, URL-over-body precedence, self-registration and membership
//! (SPEC §2.1–§2.4).

#[macro_use]
mod common;

use common::{Backend, Env, KeyKind, b64, expect_error, expect_status};
use serde_json::{Value, json};

both_backends!(
    networks,
    container_managers,
    clusters,
    hosts,
    url_parameters_win_over_body,
    self_registration,
    membership,
);

/// Asserts that every field of `expected` is in `actual` with the same value.
#[track_caller]
fn assert_fields(actual: &Value, expected: &Value) {
    for (k, v) in expected.as_object().expect("an object") {
        assert_eq!(&actual[k], v, "field {k} of {actual}");
    }
}

fn names(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("expected a JSON array, got {v}"))
        .iter()
        .map(|x| x.as_str().expect("a string").to_string())
        .collect()
}

async fn networks(backend: Backend) {
    let env = Env::new(backend);
    let s = env.server().await;

    let list = expect_status(&s.get("/networks").await, 200);
    assert_eq!(names(&list), ["default"]);
    let default = expect_status(&s.get("/network/default").await, 200);
    assert_eq!(
        default,
        json!({"name": "default", "type": "flannel_etcd", "options": {}})
    );

    let body = json!({"type": "flannel_server", "options": {"address": "127.0.1.2:8080"}});
    let created = expect_status(&s.put("/network/fs1", body.clone()).await, 201);
    assert_eq!(
        created,
        json!({"name": "fs1", "type": "flannel_server", "options": {"address": "127.0.1.2:8080"}})
    );
    let rev = s.revision().await;
    let again = expect_status(&s.put("/network/fs1", body).await, 201);
    assert_eq!(again, created);
    assert_eq!(s.revision().await, rev, "an identical PUT must not write");
    expect_error(
        &s.put(
            "/network/fs1",
            json!({"type": "flannel_server", "options": {"address": "127.0.1.3:8080"}}),
        )
        .await,
        409,
        "already exists",
    );
    assert_eq!(expect_status(&s.get("/network/fs1").await, 200), created);

    expect_error(
        &s.put("/network/bad", json!({"type": "vxlan"})).await,
        400,
        "not a network type",
    );
    expect_error(
        &s.put(
            "/network/bad",
            json!({"type": "flannel_server", "options": {}}),
        )
        .await,
        400,
        "options.address",
    );
    expect_error(
        &s.put(
            "/network/bad",
            json!({"type": "flannel_server", "options": {"address": "no-port"}}),
        )
        .await,
        400,
        "host:port",
    );
    expect_error(
        &s.get("/network/bad").await,
        404,
        "network bad does not exist",
    );

    // Defaults: flannel_etcd, no options.
    let fe = expect_status(&s.put("/network/fe", json!({})).await, 201);
    assert_eq!(
        fe,
        json!({"name": "fe", "type": "flannel_etcd", "options": {}})
    );
    let list = expect_status(&s.get("/networks").await, 200);
    let mut got = names(&list);
    got.sort();
    assert_eq!(got, ["default", "fe", "fs1"]);

    expect_error(&s.get("/network/missing").await, 404, "missing");
    expect_error(&s.delete("/network/missing").await, 404, "does not exist");
    expect_error(&s.delete("/network/default").await, 409, "default network");

    expect_status(&s.put("/cluster/c1", json!({"network": "fs1"})).await, 201);
    expect_error(&s.delete("/network/fs1").await, 409, "used by cluster");
    expect_status(&s.get("/network/fs1").await, 200);
    assert_eq!(
        expect_status(&s.delete("/cluster/c1").await, 200),
        json!([])
    );
    assert_eq!(
        expect_status(&s.delete("/network/fs1").await, 200),
        json!([])
    );
    expect_error(&s.get("/network/fs1").await, 404, "does not exist");
    expect_error(&s.delete("/network/fs1").await, 404, "does not exist");
}

async fn container_managers(backend: Backend) {
    let env = Env::new(backend);
    let s = env.server().await;
    assert_eq!(
        expect_status(&s.get("/containermanagers").await, 200),
        json!([])
    );

    let body = json!({"type": "kubernetes",
                      "options": {"server_url": "https://k8s.example.com:6443", "token": "tok-SECRET-4711"}});
    let created = expect_status(&s.put("/containermanager/k1", body.clone()).await, 201);
    assert_eq!(
        created,
        json!({"name": "k1", "type": "kubernetes",
               "options": {"server_url": "https://k8s.example.com:6443", "token": "<redacted>"}})
    );
    let rev = s.revision().await;
    // Secrets are never compared (that would confirm a guessed token): a re-PUT carrying a
    // secret is a conflict whether or not the secret matches, and writes nothing.
    expect_error(
        &s.put("/containermanager/k1", body).await,
        409,
        "already exists",
    );
    assert_eq!(s.revision().await, rev, "a repeated PUT must not write");
    // Without secrets, an identical re-PUT is still idempotent.
    let plain =
        json!({"type": "kubernetes", "options": {"server_url": "https://k8s.example.com:6443"}});
    let p1 = expect_status(&s.put("/containermanager/k0", plain.clone()).await, 201);
    let rev = s.revision().await;
    assert_eq!(
        expect_status(&s.put("/containermanager/k0", plain).await, 201),
        p1
    );
    assert_eq!(s.revision().await, rev, "an identical PUT must not write");
    expect_status(&s.delete("/containermanager/k0").await, 200);
    expect_error(
        &s.put(
            "/containermanager/k1",
            json!({"type": "kubernetes",
                   "options": {"server_url": "https://k8s.example.com:6443", "token": "another"}}),
        )
        .await,
        409,
        "already exists",
    );
    let got = expect_status(&s.get("/containermanager/k1").await, 200);
    assert_eq!(got, created);
    assert!(!s.get("/containermanager/k1").await.text.contains("SECRET"));
    assert_eq!(
        names(&expect_status(&s.get("/containermanagers").await, 200)),
        ["k1"]
    );

    expect_error(
        &s.put("/containermanager/bad", json!({"type": "nomad"}))
            .await,
        400,
        "not a container manager type",
    );
    expect_error(
        &s.put(
            "/containermanager/bad",
            json!({"type": "kubernetes", "options": {"token": "t"}}),
        )
        .await,
        400,
        "server_url",
    );
    expect_error(&s.get("/containermanager/bad").await, 404, "does not exist");

    let net = s.usable_network().await;
    let c = expect_status(
        &s.put(
            "/cluster/c1",
            json!({"container_manager": "k1", "network": net}),
        )
        .await,
        201,
    );
    assert_eq!(c["container_manager"], "k1");
    expect_error(
        &s.put(
            "/cluster/c2",
            json!({"container_manager": "nope", "network": net}),
        )
        .await,
        400,
        "container manager nope does not exist",
    );
    expect_error(
        &s.delete("/containermanager/k1").await,
        409,
        "used by cluster",
    );
    let c = expect_status(
        &s.put("/cluster/c1", json!({"container_manager": ""})).await,
        201,
    );
    assert_eq!(c["container_manager"], "");
    assert_eq!(
        expect_status(&s.delete("/containermanager/k1").await, 200),
        json!([])
    );
    expect_error(&s.get("/containermanager/k1").await, 404, "does not exist");
    expect_error(
        &s.delete("/containermanager/k1").await,
        404,
        "does not exist",
    );
    assert_eq!(
        expect_status(&s.get("/containermanagers").await, 200),
        json!([])
    );
}

async fn clusters(backend: Backend) {
    let env = Env::new(backend);
    let s = env.server().await;
    let key = env.key(KeyKind::Ed25519);

    assert_eq!(expect_status(&s.get("/clusters").await, 200), json!([]));
    let net = s.usable_network().await;
    let c1 = expect_status(&s.put("/cluster/c1", json!({"network": net})).await, 201);
    assert_eq!(
        c1,
        json!({"name": "c1", "status": "ok", "network": net, "container_manager": "",
               "hostset": [], "hosts": {"total": 0, "available": 0, "unavailable": 0}})
    );
    assert_eq!(expect_status(&s.get("/clusters").await, 200), json!(["c1"]));
    assert_eq!(expect_status(&s.get("/cluster/c1").await, 200), c1);

    expect_error(
        &s.put("/cluster/c2", json!({"network": "nope"})).await,
        400,
        "network nope does not exist",
    );
    expect_error(
        &s.put("/cluster/c2", json!({"hostset": ["127.0.1.1"]}))
            .await,
        400,
        "hostset",
    );
    expect_error(
        &s.get("/cluster/c2").await,
        404,
        "cluster c2 does not exist",
    );
    // An empty hostset is accepted (old clients send it).
    expect_status(
        &s.put("/cluster/c3", json!({"hostset": [], "network": net}))
            .await,
        201,
    );

    // A member, then a new network: the member is kept.
    expect_status(
        &s.put(
            "/host/127.0.1.1",
            json!({"ssh_priv_key": key.b64, "cluster": "c1"}),
        )
        .await,
        201,
    );
    expect_status(
        &s.put(
            "/network/n2",
            json!({"type": "flannel_server", "options": {"address": "127.0.0.1:8081"}}),
        )
        .await,
        201,
    );
    let updated = expect_status(&s.put("/cluster/c1", json!({"network": "n2"})).await, 201);
    assert_eq!(updated["network"], "n2");
    assert_eq!(updated["hostset"], json!(["127.0.1.1"]));
    // The only member is not active (investigating, or failed once the investigation gives
    // up), so unavailable: the cluster is failed.
    assert_eq!(updated["status"], "failed");
    assert_eq!(
        updated["hosts"],
        json!({"total": 1, "available": 0, "unavailable": 1})
    );
    let rev = s.revision().await;
    assert_eq!(
        expect_status(&s.put("/cluster/c1", json!({"network": "n2"})).await, 201),
        updated
    );
    assert_eq!(
        s.revision().await,
        rev,
        "an unchanged cluster PUT must not write"
    );
    assert_eq!(expect_status(&s.get("/cluster/c1").await, 200), updated);
    assert_eq!(
        expect_status(&s.get("/cluster/c1/hosts").await, 200),
        json!(["127.0.1.1"])
    );

    expect_error(
        &s.get("/cluster/missing").await,
        404,
        "cluster missing does not exist",
    );
    expect_error(&s.delete("/cluster/missing").await, 404, "does not exist");
    assert_eq!(
        expect_status(&s.delete("/cluster/c1").await, 200),
        json!([])
    );
    expect_error(&s.get("/cluster/c1").await, 404, "does not exist");
    expect_error(&s.delete("/cluster/c1").await, 404, "does not exist");
    assert_eq!(expect_status(&s.get("/clusters").await, 200), json!(["c3"]));
}

async fn hosts(backend: Backend) {
    let env = Env::new(backend);
    let s = env.server().await;
    let ed = env.key(KeyKind::Ed25519);
    let rsa = env.key(KeyKind::RsaPem);
    let ecdsa = env.key(KeyKind::Ecdsa);
    let encrypted = env.key(KeyKind::Ed25519Passphrase);

    let h = expect_status(
        &s.put("/host/127.0.1.1", json!({"ssh_priv_key": ed.b64}))
            .await,
        201,
    );
    // The original's fields (ours may be added, never removed).
    assert_fields(
        &h,
        &json!({"address": "127.0.1.1", "status": "investigating", "os": "", "cpus": 0,
                "memory": 0, "space": 0, "last_check": "", "source": ""}),
    );
    // The investigation (a background worker) moves the new host on; once it is done, an
    // identical PUT answers 201 with the stored host and writes nothing.
    let settled = s.settle_host("127.0.1.1").await;
    let rev = s.revision().await;
    assert_eq!(
        expect_status(
            &s.put("/host/127.0.1.1", json!({"ssh_priv_key": ed.b64}))
                .await,
            201
        ),
        settled
    );
    assert_eq!(
        s.revision().await,
        rev,
        "an identical host PUT must not write"
    );
    expect_error(
        &s.put("/host/127.0.1.1", json!({"ssh_priv_key": rsa.b64}))
            .await,
        409,
        "different ssh_priv_key",
    );

    // Every supported key format.
    for (addr, key) in [("127.0.1.2", &rsa), ("127.0.1.3", &ecdsa)] {
        let h = expect_status(
            &s.put(&format!("/host/{addr}"), json!({"ssh_priv_key": key.b64}))
                .await,
            201,
        );
        assert_eq!(h["address"], addr);
        assert_eq!(h["status"], "investigating");
    }

    // Bad keys.
    expect_error(
        &s.put(
            "/host/127.0.1.4",
            json!({"ssh_priv_key": "!!! not base64 !!!"}),
        )
        .await,
        400,
        "not base64",
    );
    expect_error(
        &s.put(
            "/host/127.0.1.4",
            json!({"ssh_priv_key": b64(b"this is not a private key at all")}),
        )
        .await,
        400,
        "does not parse as a private key",
    );
    expect_error(
        &s.put("/host/127.0.1.4", json!({"ssh_priv_key": encrypted.b64}))
            .await,
        400,
        "passphrase",
    );
    expect_error(
        &s.put("/host/127.0.1.4", json!({})).await,
        400,
        "ssh_priv_key",
    );
    expect_error(
        &s.put("/host/127.0.1.4", json!({"ssh_priv_key": 42})).await,
        400,
        "ssh_priv_key",
    );
    expect_error(
        &s.put(
            "/host/127.0.1.4",
            json!({"ssh_priv_key": ed.b64, "cluster": "nope"}),
        )
        .await,
        409,
        "cluster nope does not exist",
    );
    expect_error(
        &s.get("/host/127.0.1.4").await,
        404,
        "host 127.0.1.4 does not exist",
    );

    // Joining a cluster on creation.
    expect_status(&s.put("/cluster/c1", s.cluster_body().await).await, 201);
    let body = json!({"ssh_priv_key": ed.b64, "cluster": "c1"});
    expect_status(&s.put("/host/127.0.1.5", body.clone()).await, 201);
    let c = expect_status(&s.get("/cluster/c1").await, 200);
    assert_eq!(c["hostset"], json!(["127.0.1.5"]));
    assert_eq!(c["hosts"]["total"], 1);
    s.settle_host("127.0.1.5").await;
    let rev = s.revision().await;
    expect_status(&s.put("/host/127.0.1.5", body).await, 201);
    assert_eq!(
        s.revision().await,
        rev,
        "an identical host PUT must not write"
    );
    // Existing host, other cluster named: conflict.
    expect_status(&s.put("/cluster/c2", s.cluster_body().await).await, 201);
    expect_error(
        &s.put(
            "/host/127.0.1.5",
            json!({"ssh_priv_key": ed.b64, "cluster": "c2"}),
        )
        .await,
        409,
        "not a member of cluster c2",
    );

    let creds = expect_status(&s.get("/host/127.0.1.5/creds").await, 200);
    assert_eq!(
        creds,
        json!({"address": "127.0.1.5", "ssh_priv_key": ed.b64, "remote_user": "root"})
    );
    let host = expect_status(&s.get("/host/127.0.1.5").await, 200);
    let st = expect_status(&s.get("/host/127.0.1.5/status").await, 200);
    assert_eq!(st["type"], "host_only");
    assert_eq!(st["host"]["status"], host["status"]);
    assert_eq!(st["host"]["last_check"], host["last_check"]);

    expect_status(
        &s.put(
            "/host/127.0.1.7",
            json!({"ssh_priv_key": ed.b64, "remote_user": "core"}),
        )
        .await,
        201,
    );
    assert_eq!(
        expect_status(&s.get("/host/127.0.1.7/creds").await, 200)["remote_user"],
        "core"
    );
    expect_error(
        &s.put(
            "/host/127.0.1.8",
            json!({"ssh_priv_key": ed.b64, "remote_user": "bad user;"}),
        )
        .await,
        400,
        "remote_user",
    );

    let list = s.get("/hosts").await;
    let v = expect_status(&list, 200);
    let mut addrs: Vec<&str> = v
        .as_array()
        .expect("array")
        .iter()
        .map(|h| h["address"].as_str().expect("address"))
        .collect();
    addrs.sort();
    assert_eq!(
        addrs,
        [
            "127.0.1.1",
            "127.0.1.2",
            "127.0.1.3",
            "127.0.1.5",
            "127.0.1.7"
        ]
    );
    for key in [&ed, &rsa, &ecdsa] {
        for frag in key.secret_fragments() {
            assert!(!list.text.contains(&frag), "GET /hosts shows key material");
        }
    }
    assert!(!list.text.contains("ssh_priv_key"));
    let one = s.get("/host/127.0.1.5").await;
    expect_status(&one, 200);
    assert!(!one.text.contains(&ed.b64));

    assert_eq!(
        expect_status(&s.delete("/host/127.0.1.5").await, 200),
        json!([])
    );
    assert_eq!(
        expect_status(&s.get("/cluster/c1").await, 200)["hostset"],
        json!([])
    );
    expect_error(&s.get("/host/127.0.1.5").await, 404, "does not exist");
    expect_error(&s.get("/host/127.0.1.5/creds").await, 404, "127.0.1.5");
    expect_error(
        &s.get("/host/127.0.1.5/status").await,
        404,
        "does not exist",
    );
    expect_error(&s.delete("/host/127.0.1.5").await, 404, "does not exist");

    // IPv6 and DNS names, canonicalized (loopback ones: the investigation connects to them).
    let h = expect_status(
        &s.put("/host/0:0:0:0:0:0:0:1", json!({"ssh_priv_key": ed.b64}))
            .await,
        201,
    );
    assert_eq!(h["address"], "::1");
    assert_eq!(
        expect_status(&s.get("/host/::1").await, 200)["address"],
        "::1"
    );
    assert_eq!(
        expect_status(&s.get("/host/[0::1]/creds").await, 200)["address"],
        "::1"
    );
    expect_error(
        &s.get("/host/2001:DB8:0::1").await,
        404,
        "host 2001:db8::1 does not exist",
    );
    let h = expect_status(
        &s.put("/host/LocalHost", json!({"ssh_priv_key": ed.b64}))
            .await,
        201,
    );
    assert_eq!(h["address"], "localhost");
    expect_status(&s.get("/host/localhost").await, 200);

    // Invalid addresses.
    expect_error(
        &s.put("/host/10.0.0.300", json!({"ssh_priv_key": ed.b64}))
            .await,
        400,
        "10.0.0.300",
    );
    expect_error(&s.get("/host/10.0.0.300").await, 400, "10.0.0.300");
    expect_error(&s.get("/host/2001:db8::g").await, 400, "IPv6");
    expect_error(&s.delete("/host/a_b.example").await, 400, "a_b.example");
}

async fn url_parameters_win_over_body(backend: Backend) {
    let env = Env::new(backend);
    let s = env.server().await;
    let key = env.key(KeyKind::Ed25519);

    let n = expect_status(&s.put("/network/n1", json!({"name": "y1"})).await, 201);
    assert_eq!(n["name"], "n1");
    expect_status(&s.get("/network/n1").await, 200);
    expect_error(&s.get("/network/y1").await, 404, "does not exist");

    let h = expect_status(
        &s.put(
            "/host/127.0.1.5",
            json!({"address": "127.0.1.6", "ssh_priv_key": key.b64}),
        )
        .await,
        201,
    );
    assert_eq!(h["address"], "127.0.1.5");
    expect_status(&s.get("/host/127.0.1.5").await, 200);
    expect_error(&s.get("/host/127.0.1.6").await, 404, "does not exist");
    assert_eq!(
        expect_status(&s.get("/host/127.0.1.5/creds").await, 200)["address"],
        "127.0.1.5"
    );

    let net = s.usable_network().await;
    let c = expect_status(
        &s.put("/cluster/c1", json!({"name": "zz", "network": net}))
            .await,
        201,
    );
    assert_eq!(c["name"], "c1");
    expect_error(&s.get("/cluster/zz").await, 404, "does not exist");

    let m = expect_status(
        &s.put(
            "/containermanager/m1",
            json!({"name": "other", "type": "trivial"}),
        )
        .await,
        201,
    );
    assert_eq!(m["name"], "m1");
    expect_error(
        &s.get("/containermanager/other").await,
        404,
        "does not exist",
    );
}

async fn self_registration(backend: Backend) {
    let env = Env::new(backend);
    let s = env.server().await;
    let key = env.key(KeyKind::Ed25519);

    let h = expect_status(&s.put("/host", json!({"ssh_priv_key": key.b64})).await, 201);
    assert_eq!(h["address"], "127.0.0.1", "address from the TCP peer");
    assert_eq!(h["status"], "investigating");
    // Same again: idempotent.
    expect_status(
        &s.put("/host/", json!({"ssh_priv_key": key.b64})).await,
        201,
    );

    let h = expect_status(
        &s.put(
            "/host",
            json!({"ssh_priv_key": key.b64, "address": "127.0.2.3"}),
        )
        .await,
        201,
    );
    assert_eq!(h["address"], "127.0.2.3");
    expect_status(&s.put("/cluster/c1", s.cluster_body().await).await, 201);
    let h = expect_status(
        &s.put(
            "/host",
            json!({"ssh_priv_key": key.b64, "address": "0:0::1", "cluster": "c1"}),
        )
        .await,
        201,
    );
    assert_eq!(h["address"], "::1");
    assert_eq!(
        expect_status(&s.get("/cluster/c1/hosts").await, 200),
        json!(["::1"])
    );

    expect_error(
        &s.put(
            "/host",
            json!({"ssh_priv_key": key.b64, "address": "127.0.2.300"}),
        )
        .await,
        400,
        "address",
    );
    expect_error(&s.put("/host", json!({})).await, 400, "ssh_priv_key");

    let v = expect_status(&s.get("/hosts").await, 200);
    let mut addrs: Vec<&str> = v
        .as_array()
        .expect("array")
        .iter()
        .map(|h| h["address"].as_str().expect("address"))
        .collect();
    addrs.sort();
    assert_eq!(addrs, ["127.0.0.1", "127.0.2.3", "::1"]);
}

async fn membership(backend: Backend) {
    let env = Env::new(backend);
    let s = env.server().await;
    let key = env.key(KeyKind::Ed25519);

    expect_status(&s.put("/cluster/c", s.cluster_body().await).await, 201);
    expect_status(
        &s.put("/host/127.0.1.1", json!({"ssh_priv_key": key.b64}))
            .await,
        201,
    );

    expect_error(
        &s.put(
            "/cluster/c/hosts",
            json!({"old": ["127.0.1.9"], "new": ["127.0.1.1"]}),
        )
        .await,
        409,
        "old",
    );
    expect_error(
        &s.put("/cluster/c/hosts", json!({"old": []})).await,
        400,
        "new",
    );
    expect_error(
        &s.put("/cluster/c/hosts", json!({"new": []})).await,
        400,
        "old",
    );
    expect_error(
        &s.put(
            "/cluster/c/hosts",
            json!({"old": [], "new": ["10.0.0.300"]}),
        )
        .await,
        400,
        "10.0.0.300",
    );
    expect_error(
        &s.put("/cluster/c/hosts", json!({"old": [], "new": ["127.0.1.1"]}))
            .await,
        405,
        "not ready to join",
    );
    expect_error(
        &s.put("/cluster/c/hosts/127.0.1.1", json!({})).await,
        405,
        "not ready to join",
    );
    expect_error(
        &s.put("/cluster/c/hosts/127.0.1.99", json!({})).await,
        404,
        "host 127.0.1.99 does not exist",
    );
    expect_error(
        &s.get("/cluster/c/hosts/127.0.1.1").await,
        404,
        "not a member",
    );
    assert_eq!(
        expect_status(&s.delete("/cluster/c/hosts/127.0.1.1").await, 200),
        json!([])
    );
    assert_eq!(
        expect_status(&s.get("/cluster/c/hosts").await, 200),
        json!([])
    );
    // A no-op replacement is fine.
    let c = expect_status(
        &s.put("/cluster/c/hosts", json!({"old": [], "new": []}))
            .await,
        200,
    );
    assert_eq!(c["hostset"], json!([]));
    assert_eq!(c["name"], "c");

    // A member (joined on creation) can be read and removed, idempotently.
    expect_status(
        &s.put(
            "/host/127.0.1.2",
            json!({"ssh_priv_key": key.b64, "cluster": "c"}),
        )
        .await,
        201,
    );
    assert_eq!(
        expect_status(&s.get("/cluster/c/hosts/127.0.1.2").await, 200),
        json!(["127.0.1.2"])
    );
    // Joining again is idempotent even though it is not ready: it is already a member.
    assert_eq!(
        expect_status(&s.put("/cluster/c/hosts/127.0.1.2", json!({})).await, 200),
        json!(["127.0.1.2"])
    );
    assert_eq!(
        expect_status(&s.delete("/cluster/c/hosts/127.0.1.2").await, 200),
        json!([])
    );
    assert_eq!(
        expect_status(&s.delete("/cluster/c/hosts/127.0.1.2").await, 200),
        json!([])
    );
    expect_error(
        &s.get("/cluster/c/hosts/127.0.1.2").await,
        404,
        "not a member",
    );
    // The host itself is still there.
    expect_status(&s.get("/host/127.0.1.2").await, 200);

    // Missing cluster.
    for r in [
        s.get("/cluster/missing/hosts").await,
        s.put("/cluster/missing/hosts", json!({"old": [], "new": []}))
            .await,
        s.get("/cluster/missing/hosts/127.0.1.1").await,
        s.put("/cluster/missing/hosts/127.0.1.1", json!({})).await,
        s.delete("/cluster/missing/hosts/127.0.1.1").await,
    ] {
        expect_error(&r, 404, "cluster missing does not exist");
    }
}
