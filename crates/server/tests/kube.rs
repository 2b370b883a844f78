//! Kubernetes container managers against a fake Kubernetes API server (the only component we
//! fake) and real testbed hosts: node registration and readiness, cordon/drain/uncordon around
//! a rolling restart, node removal, and credential errors.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};
use testsupport::fakekube::{FakeKube, FakeKubeOptions, Request};
use testsupport::testbed::{Testbed, TestbedOptions};

/// Creates container manager `name` and cluster `name` using it.
async fn manager_and_cluster(server: &Server, name: &str, options: Value) {
    expect_status(
        &server
            .put(
                &format!("/containermanager/{name}"),
                json!({"type": "kubernetes", "options": options}),
            )
            .await,
        201,
    );
    expect_status(
        &server
            .put(
                &format!("/cluster/{name}"),
                json!({"network": "fs", "container_manager": name}),
            )
            .await,
        201,
    );
}

async fn add_host(server: &Server, tb: &Testbed, address: &str, cluster: &str) {
    expect_status(
        &server
            .put(
                &format!("/host/{address}"),
                json!({"ssh_priv_key": tb.client_key_base64(), "cluster": cluster}),
            )
            .await,
        201,
    );
}

/// Waits until the host's status is one of `wanted` (a settled state); returns the host.
async fn wait_status(server: &Server, address: &str, wanted: &[&str], timeout: Duration) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        let h = server.get(&format!("/host/{address}")).await.json;
        if wanted.iter().any(|w| h["status"] == *w) {
            return h;
        }
        assert!(
            Instant::now() < deadline,
            "host {address} did not reach {wanted:?}: {h}\n{}",
            server.log_tail(60)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A testbed, a fake Kubernetes API and a server with cluster `k` (Kubernetes manager) of
/// every testbed host, all `active`.
struct KubeFleet {
    tb: Testbed,
    kube: FakeKube,
    env: Env,
    server: Server,
}

async fn active_fleet(hosts: usize) -> KubeFleet {
    let tb = Testbed::up(TestbedOptions {
        hosts,
        ..TestbedOptions::default()
    });
    let kube = FakeKube::start(FakeKubeOptions::default());
    let env = Env::new(Backend::Sqlite);
    let server = env.server().await;
    flannel_server_network(&server, &tb).await;
    manager_and_cluster(&server, "k", good_options(&kube)).await;
    for h in &tb.addresses() {
        add_host(&server, &tb, h, "k").await;
    }
    for h in &tb.addresses() {
        let st = settled(&server, h).await;
        assert_eq!(st["status"], "active", "{st}");
    }
    KubeFleet {
        tb,
        kube,
        env,
        server,
    }
}

/// Waits (up to 2 minutes) until the host is `active` or `failed`; returns it.
async fn settled(server: &Server, address: &str) -> Value {
    wait_status(
        server,
        address,
        &["active", "failed"],
        Duration::from_secs(120),
    )
    .await
}

fn good_options(k: &FakeKube) -> Value {
    json!({
        "server_url": k.url(),
        "token": k.token().unwrap(),
        // PEM text, not a server path: the API never reads files it is pointed at.
        "ca": std::fs::read_to_string(k.ca_path()).unwrap(),
        "node_ready_timeout_seconds": 4,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_become_active_when_ready_fail_when_never_and_only_ours_are_deleted() {
    let tb = Testbed::up(TestbedOptions {
        hosts: 3,
        ..TestbedOptions::default()
    });
    let kube = FakeKube::start(FakeKubeOptions {
        ready_after_gets: Some(2),
        ..FakeKubeOptions::default()
    });
    let env = Env::new(Backend::Sqlite);
    let mut opts = env.options("data");
    opts.extra_args = vec!["--watcher-interval".into(), "2".into()];
    let server = Server::start(opts).await;
    flannel_server_network(&server, &tb).await;
    manager_and_cluster(&server, "k", good_options(&kube)).await;
    let a = tb.addresses();
    // Someone else's node for the second host, never Ready; the third host's node was
    // registered by someone else and is Ready.
    kube.add_node(&a[1], &[], false);
    kube.add_node(&a[2], &[("team", "platform")], true);
    for h in &a {
        add_host(&server, &tb, h, "k").await;
    }

    let h0 = settled(&server, &a[0]).await;
    assert_eq!(h0["status"], "active", "{h0}");
    let node = kube.node(&a[0]).expect("node registered");
    assert_eq!(
        node["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "commissaire"
    );
    let st = server.get(&format!("/host/{}/status", a[0])).await.json;
    assert_eq!(st["type"], "container_manager", "{st}");
    assert_eq!(st["container_manager"]["ready"], true, "{st}");
    assert_eq!(st["container_manager"]["managed"], true, "{st}");

    let h1 = settled(&server, &a[1]).await;
    assert_eq!(h1["status"], "failed", "{h1}");
    let reason = h1["status_reason"].as_str().unwrap();
    assert!(
        reason.contains("did not become Ready within 4 s")
            && reason.contains("container manager k"),
        "{reason}"
    );
    let h2 = settled(&server, &a[2]).await;
    assert_eq!(h2["status"], "active", "{h2}");

    // The cluster counts the failed host as unavailable.
    let c = server.get("/cluster/k").await.json;
    assert_eq!(c["status"], "degraded", "{c}");

    // Once its node turns Ready, the watcher makes the failed host active.
    kube.set_ready(&a[1], true);
    let h1 = wait_status(&server, &a[1], &["active"], Duration::from_secs(60)).await;
    assert_eq!(h1["status_reason"], "", "{h1}");
    // And a node that stops being Ready makes its host disassociated, with the reason.
    kube.set_ready(&a[0], false);
    let h0 = wait_status(&server, &a[0], &["disassociated"], Duration::from_secs(60)).await;
    assert!(
        h0["status_reason"]
            .as_str()
            .unwrap()
            .starts_with("node not Ready"),
        "{h0}"
    );

    // Deleting hosts: our node goes, the others' nodes stay.
    kube.clear_requests();
    for h in &a {
        expect_status(&server.delete(&format!("/host/{h}")).await, 200);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while kube.node(&a[0]).is_some() {
        assert!(Instant::now() < deadline, "{}", server.log_tail(40));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Give the removals of the other two time to be (wrongly) done, then check.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let pending = server.get("/hosts").await.json;
        assert_eq!(pending, json!([]));
        let gets = kube
            .requests()
            .iter()
            .filter(|r| r.method == "GET" && (r.path.ends_with(&a[1]) || r.path.ends_with(&a[2])))
            .count();
        if gets >= 2 || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        kube.node(&a[1]).is_some(),
        "someone else's node was deleted"
    );
    assert!(
        kube.node(&a[2]).is_some(),
        "someone else's node was deleted"
    );
    let deletes: Vec<String> = kube
        .requests()
        .iter()
        .filter(|r| r.method == "DELETE")
        .map(|r| r.path.clone())
        .collect();
    assert_eq!(deletes, vec![format!("/api/v1/nodes/{}", a[0])]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_with_drain_cordons_drains_and_uncordons_each_host_in_order() {
    let KubeFleet {
        tb,
        kube,
        env: _env,
        server,
    } = active_fleet(3).await;
    let a = tb.addresses();
    for h in &a {
        let suffix = h.replace('.', "-");
        kube.add_pod("default", &format!("web-{suffix}"), h, Some("ReplicaSet"));
        kube.add_pod("default", &format!("job-{suffix}"), h, None);
        kube.add_pod(
            "kube-system",
            &format!("proxy-{suffix}"),
            h,
            Some("DaemonSet"),
        );
        kube.add_mirror_pod("kube-system", &format!("etcd-{suffix}"), h);
    }
    // The second host's web pod is protected by a budget for a while.
    let protected = format!("web-{}", a[1].replace('.', "-"));
    kube.block_eviction("default", &protected, 3);
    kube.clear_requests();

    let r = server
        .put("/cluster/k/restart", json!({"batch_size": 1}))
        .await;
    expect_status(&r, 201);
    assert_eq!(r.json["options"]["drain"], true, "{}", r.json);
    let deadline = Instant::now() + Duration::from_secs(240);
    let op = loop {
        let op = server.get("/cluster/k/restart").await.json;
        if op["status"] != "in_process" {
            break op;
        }
        assert!(Instant::now() < deadline, "{op}\n{}", server.log_tail(60));
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(op["status"], "finished", "{op}\n{}", server.log_tail(60));

    let reqs = kube.requests();
    let mut windows = vec![];
    for h in &a {
        let suffix = h.replace('.', "-");
        let mine: Vec<&Request> = reqs
            .iter()
            .filter(|r| {
                r.path == format!("/api/v1/nodes/{h}")
                    || r.path.ends_with(&format!("-{suffix}/eviction"))
            })
            .collect();
        let cordon = mine
            .iter()
            .position(|r| r.method == "PATCH" && r.body["spec"]["unschedulable"] == true)
            .unwrap_or_else(|| panic!("{h} never cordoned: {mine:#?}"));
        let uncordon = mine
            .iter()
            .rposition(|r| r.method == "PATCH" && r.body["spec"]["unschedulable"].is_null())
            .unwrap_or_else(|| panic!("{h} never uncordoned: {mine:#?}"));
        assert_eq!(
            mine[cordon].content_type.as_deref(),
            Some("application/merge-patch+json")
        );
        let evictions: Vec<usize> = mine
            .iter()
            .enumerate()
            .filter(|(_, r)| r.path.ends_with("/eviction") && r.status == 201)
            .map(|(i, _)| i)
            .collect();
        assert_eq!(
            evictions.len(),
            2,
            "{h}: web and job pods evicted: {mine:#?}"
        );
        assert!(
            evictions.iter().all(|&i| cordon < i && i < uncordon),
            "{h}: cordon, evictions, uncordon out of order: {mine:#?}"
        );
        // The reboot happened between the drain and the uncordon.
        let reboot_at = tb
            .commands_log(h)
            .iter()
            .filter(|l| l.contains(" reboot") || l.contains("systemctl reboot"))
            .filter_map(|l| l.split_whitespace().next()?.parse::<f64>().ok())
            .next_back()
            .unwrap_or_else(|| panic!("{h}: no reboot in {:?}", tb.commands_log(h)));
        let last_eviction = mine[*evictions.last().unwrap()].at;
        assert!(
            last_eviction < reboot_at && reboot_at < mine[uncordon].at,
            "{h}: evicted at {last_eviction}, rebooted at {reboot_at}, uncordoned at {}",
            mine[uncordon].at
        );
        windows.push((mine[cordon].at, mine[uncordon].at));
        // DaemonSet and mirror pods are left alone.
        assert!(
            !reqs
                .iter()
                .any(|r| r.path.contains(&format!("proxy-{suffix}"))
                    || r.path.contains(&format!("etcd-{suffix}"))),
            "{h}: a DaemonSet or mirror pod was evicted"
        );
        let node = kube.node(h).unwrap();
        assert!(
            node["spec"]["unschedulable"].is_null(),
            "{h} left cordoned: {node}"
        );
        assert_eq!(tb.boot_count(h), 2, "{h} rebooted once");
    }
    // Batch size 1: one node out of service at a time.
    windows.sort_by(|x, y| x.0.total_cmp(&y.0));
    for w in windows.windows(2) {
        assert!(w[0].1 <= w[1].0, "two nodes cordoned at once: {windows:?}");
    }
    // The budget refused the protected pod's eviction three times before it went.
    let refused = reqs
        .iter()
        .filter(|r| r.path.ends_with(&format!("{protected}/eviction")) && r.status == 429)
        .count();
    assert_eq!(refused, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_that_cannot_finish_fails_the_host_and_leaves_it_uncordoned() {
    let KubeFleet {
        tb,
        kube,
        env: _env,
        server,
    } = active_fleet(2).await;
    let a = tb.addresses();
    // A budget that never allows the first host's pod to go.
    kube.add_pod("default", "db-0", &a[0], Some("StatefulSet"));
    kube.block_eviction("default", "db-0", 1_000_000);
    let r = server
        .put(
            "/cluster/k/restart",
            json!({"batch_size": 1, "timeout_seconds": 5, "max_failures": 0}),
        )
        .await;
    expect_status(&r, 201);
    let deadline = Instant::now() + Duration::from_secs(120);
    let op = loop {
        let op = server.get("/cluster/k/restart").await.json;
        if op["status"] != "in_process" {
            break op;
        }
        assert!(Instant::now() < deadline, "{op}\n{}", server.log_tail(60));
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(op["status"], "failed", "{op}");
    assert_eq!(op["failed"], json!([a[0]]), "{op}");
    let err = op["hosts"][&a[0]]["error"].as_str().unwrap_or_default();
    assert!(
        err.contains("disruption budget") && err.contains("db-0"),
        "{err}"
    );
    let node = kube.node(&a[0]).unwrap();
    assert!(
        node["spec"]["unschedulable"].is_null() || node["spec"]["unschedulable"] == false,
        "a failed host was left cordoned: {node}"
    );
    // Nothing rebooted: the drain failed before the command.
    assert_eq!(tb.boot_count(&a[0]), 1);
    assert_eq!(tb.boot_count(&a[1]), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_work_and_a_wrong_ca_or_token_is_a_clear_error() {
    let tb = Testbed::up(TestbedOptions {
        hosts: 3,
        ..TestbedOptions::default()
    });
    let kube = FakeKube::start(FakeKubeOptions {
        require_client_cert: true,
        ..FakeKubeOptions::default()
    });
    let env = Env::new(Backend::Sqlite);
    let server = env.server().await;
    flannel_server_network(&server, &tb).await;
    let (cert, key) = kube.client_cert_paths();
    let mut good = good_options(&kube);
    let pem = |p: &std::path::Path| json!(std::fs::read_to_string(p).unwrap());
    good["certificate"] = pem(&cert);
    good["certificate_key"] = pem(&key);
    let mut bad_ca = good.clone();
    bad_ca["ca"] = pem(&kube.other_ca_path());
    let mut bad_token = good.clone();
    bad_token["token"] = json!("not-the-token");

    // Options that cannot work are refused up front, and nothing is stored.
    let mut missing = good.clone();
    missing.as_object_mut().unwrap().remove("ca");
    missing["ca_path"] = json!("/nonexistent/ca.pem");
    expect_error(
        &server
            .put(
                "/containermanager/m",
                json!({"type": "kubernetes", "options": missing}),
            )
            .await,
        400,
        "/nonexistent/ca.pem",
    );
    let mut not_pem = good.clone();
    not_pem["certificate"] = pem(&kube.ca_path());
    not_pem["certificate_key"] = pem(&kube.ca_path());
    expect_error(
        &server
            .put(
                "/containermanager/m",
                json!({"type": "kubernetes", "options": not_pem}),
            )
            .await,
        400,
        "certificate_key",
    );
    expect_status(&server.get("/containermanager/m").await, 404);

    manager_and_cluster(&server, "good", good).await;
    manager_and_cluster(&server, "badca", bad_ca).await;
    manager_and_cluster(&server, "badtoken", bad_token).await;
    let a = tb.addresses();
    add_host(&server, &tb, &a[0], "good").await;
    add_host(&server, &tb, &a[1], "badca").await;
    add_host(&server, &tb, &a[2], "badtoken").await;

    let h = settled(&server, &a[0]).await;
    assert_eq!(h["status"], "active", "{h}");
    let h = settled(&server, &a[1]).await;
    assert_eq!(h["status"], "failed", "{h}");
    let reason = h["status_reason"].as_str().unwrap();
    assert!(
        reason.contains("cannot reach the Kubernetes API") && reason.contains("certificate"),
        "{reason}"
    );
    let h = settled(&server, &a[2]).await;
    assert_eq!(h["status"], "failed", "{h}");
    let reason = h["status_reason"].as_str().unwrap();
    assert!(
        reason.contains("rejected our credentials") && reason.contains("token"),
        "{reason}"
    );
    assert!(kube.node(&a[1]).is_none() && kube.node(&a[2]).is_none());
    // The token never shows in what the server says or logs.
    let log = std::fs::read_to_string(&server.opts.log_path).unwrap_or_default();
    assert!(!log.contains(&kube.token().unwrap()) && !log.contains("not-the-token"));
    let cm = server.get("/containermanager/badtoken").await.json;
    assert!(!cm.to_string().contains("not-the-token"), "{cm}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_tokens_are_checked_with_a_token_review() {
    let kube = FakeKube::start(FakeKubeOptions::default());
    kube.add_user_token("alice-token", "alice");
    let env = Env::new(Backend::Sqlite);
    let mut opts = env.options("data");
    opts.extra_args = vec![
        "--authentication-plugin".into(),
        format!(
            "openshiftbearertokenauth:server_url={},token={},ca_path={}",
            kube.url(),
            kube.token().unwrap(),
            kube.ca_path().display()
        ),
    ];
    let server = Server::start(opts).await;
    let http = reqwest::Client::new();
    let hosts = server.url("/hosts");
    let get = |token: Option<&'static str>| {
        let mut r = http.get(&hosts);
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        r.send()
    };
    // A token the cluster knows: in, and the review is remembered (one TokenReview for two
    // requests).
    kube.clear_requests();
    for _ in 0..2 {
        let r = get(Some("alice-token")).await.unwrap();
        assert_eq!(r.status(), 200);
    }
    let reviews = kube
        .requests()
        .iter()
        .filter(|r| r.path == "/apis/authentication.k8s.io/v1/tokenreviews")
        .count();
    assert_eq!(reviews, 1);
    // Unknown token, no token: 401 with WWW-Authenticate.
    for token in [Some("mallory-token"), None] {
        let r = get(token).await.unwrap();
        assert_eq!(r.status(), 401);
        assert!(r.headers().contains_key("www-authenticate"));
    }
    // HTTP basic (the other plugin configured by the harness) still works alongside.
    expect_status(&server.get("/hosts").await, 200);
    // No token reaches the log.
    let log = std::fs::read_to_string(&server.opts.log_path).unwrap_or_default();
    assert!(!log.contains("alice-token") && !log.contains("mallory-token"));
    assert!(!log.contains(&kube.token().unwrap()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_token_roles_come_from_kubernetes_groups_and_an_outage_is_503() {
    let kube = FakeKube::start(FakeKubeOptions::default());
    // The fake puts service accounts in group system:serviceaccounts, everyone in
    // system:authenticated.
    kube.add_user_token("robot-token", "system:serviceaccount:ops:robot");
    kube.add_user_token("alice-token", "alice");
    let env = Env::new(Backend::Sqlite);
    let mut opts = env.options("data");
    let plugin = |url: &str| {
        format!(
            "commissaire_http.authentication.openshiftbearertokenauth:server_url={url},token={},ca_path={},default_role=viewer,roles={{\"system:serviceaccounts\":\"operator\"}}",
            kube.token().unwrap(),
            kube.ca_path().display()
        )
    };
    opts.extra_args = vec!["--authentication-plugin".into(), plugin(&kube.url())];
    let server = Server::start(opts).await;
    let send = |token: &str, m: reqwest::Method, path: &str| {
        server
            .client()
            .request(m, server.url(path))
            .timeout(REQUEST_TIMEOUT)
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body("{}")
    };
    // alice: the default role, viewer.
    expect_status(
        &server
            .send(send("alice-token", reqwest::Method::GET, "/hosts"))
            .await,
        200,
    );
    expect_error(
        &server
            .send(send(
                "alice-token",
                reqwest::Method::PUT,
                "/cluster/c1/hosts",
            ))
            .await,
        403,
        "user alice (role viewer) lacks permission membership:write",
    );
    // The service account: operator through its group, still not an admin.
    let r = server
        .send(send(
            "robot-token",
            reqwest::Method::PUT,
            "/cluster/c1/hosts",
        ))
        .await;
    // Allowed: the request gets as far as checking its body.
    expect_error(&r, 400, "old: is required");
    expect_error(
        &server
            .send(send("robot-token", reqwest::Method::PUT, "/cluster/c1"))
            .await,
        403,
        "role operator",
    );
    // The API that reviews tokens is down: 503, not 401 and never an allow.
    let mut down = env.options("down");
    down.extra_args = vec![
        "--authentication-plugin".into(),
        plugin(&format!("https://127.0.0.1:{}", testsupport::free_port())),
    ];
    let down = Server::start(down).await;
    let r = down
        .send(
            down.client()
                .get(down.url("/hosts"))
                .timeout(REQUEST_TIMEOUT)
                .bearer_auth("alice-token"),
        )
        .await;
    expect_error(&r, 503, "cannot be reached");
    expect_status(&down.get("/hosts").await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_joining_later_becomes_a_node_and_leaving_removes_it() {
    let tb = Testbed::up(TestbedOptions {
        hosts: 1,
        ..TestbedOptions::default()
    });
    let kube = FakeKube::start(FakeKubeOptions::default());
    let env = Env::new(Backend::Sqlite);
    let server = env.server().await;
    flannel_server_network(&server, &tb).await;
    manager_and_cluster(&server, "k", good_options(&kube)).await;
    let a = tb.addresses()[0].clone();
    expect_status(
        &server
            .put(
                &format!("/host/{a}"),
                json!({"ssh_priv_key": tb.client_key_base64()}),
            )
            .await,
        201,
    );
    wait_status(&server, &a, &["disassociated"], Duration::from_secs(120)).await;
    assert!(tb.host_file(&a, "/etc/kubernetes/kubeconfig").is_none());
    assert!(kube.node(&a).is_none());

    // Joining bootstraps it again with the cluster's plan, then registers its node. The join
    // itself rewrites the host in the same transaction: `updated Cluster`, then `updated Host`
    // (bootstrapping), before the answer.
    let mut feed =
        EventReader::open(&server, Some(&server.store_revision().await.to_string())).await;
    expect_status(
        &server
            .put(&format!("/cluster/k/hosts/{a}"), json!({}))
            .await,
        200,
    );
    let first = feed.take(2, Duration::from_secs(30)).await;
    let (c, h) = (first[0].json(), first[1].json());
    assert_eq!(
        (c["kind"].as_str(), c["name"].as_str()),
        (Some("Cluster"), Some("k")),
        "{c}"
    );
    assert_eq!(
        (h["kind"].as_str(), h["action"].as_str()),
        (Some("Host"), Some("updated")),
        "{h}"
    );
    assert_eq!(h["object"]["status"], "bootstrapping", "{h}");
    let h = settled(&server, &a).await;
    assert_eq!(h["status"], "active", "{h}");
    let kubeconfig = tb
        .host_file(&a, "/etc/kubernetes/kubeconfig")
        .expect("kubeconfig written at join");
    assert!(kubeconfig.contains(&kube.url()), "{kubeconfig}");
    assert!(kube.node(&a).is_some());
    let c = server.get("/cluster/k").await.json;
    assert_eq!(c["status"], "ok", "{c}");
    assert_eq!(
        c["nodes"],
        json!({"registered": 1, "ready": 1, "unschedulable": 0}),
        "{c}"
    );

    // Leaving removes the node (ours) and the node view, and the host is disassociated.
    let mut feed =
        EventReader::open(&server, Some(&server.store_revision().await.to_string())).await;
    expect_status(&server.delete(&format!("/cluster/k/hosts/{a}")).await, 200);
    let first = feed.take(2, Duration::from_secs(30)).await;
    let (c, h) = (first[0].json(), first[1].json());
    assert_eq!(
        (c["kind"].as_str(), c["name"].as_str()),
        (Some("Cluster"), Some("k")),
        "{c}"
    );
    assert_eq!(
        (h["kind"].as_str(), h["object"]["status"].as_str()),
        (Some("Host"), Some("disassociated")),
        "{h}"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while kube.node(&a).is_some() {
        assert!(Instant::now() < deadline, "{}", server.log_tail(40));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let st = server.get(&format!("/host/{a}/status")).await.json;
        if st["type"] == "host_only" {
            break;
        }
        assert!(Instant::now() < deadline, "{st}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
