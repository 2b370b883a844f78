//! The fake Kubernetes API server, exercised over HTTPS with reqwest as the product's client
//! does.

use std::net::TcpStream;
use std::path::Path;

use commissaire_testsupport::fakekube::{FakeKube, FakeKubeOptions};
use reqwest::{Client, Method};
use serde_json::{Value, json};

const MERGE_PATCH: &str = "application/merge-patch+json";

fn install_provider() {
    // Another test may have installed it already.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A client trusting `ca` only, with the fake's client certificate if `identity`.
fn client_with(kube: &FakeKube, ca: &Path, identity: bool) -> Client {
    install_provider();
    let pem = std::fs::read(ca).expect("read CA");
    let mut b = Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&pem).expect("CA PEM")])
        .timeout(std::time::Duration::from_secs(10));
    if identity {
        let (cert, key) = kube.client_cert_paths();
        let mut pem = std::fs::read(cert).expect("read client cert");
        pem.extend(std::fs::read(key).expect("read client key"));
        b = b.identity(reqwest::Identity::from_pem(&pem).expect("client identity"));
    }
    b.build().expect("reqwest client")
}

fn client(kube: &FakeKube) -> Client {
    client_with(kube, &kube.ca_path(), false)
}

/// Sends a request with the fake's token; `body` is `(content type, JSON)`.
async fn call(
    c: &Client,
    kube: &FakeKube,
    method: Method,
    path: &str,
    body: Option<(&str, Value)>,
) -> (u16, Value) {
    let mut rb = c.request(method, format!("{}{path}", kube.url()));
    if let Some(t) = kube.token() {
        rb = rb.bearer_auth(t);
    }
    if let Some((ctype, v)) = body {
        rb = rb.header("Content-Type", ctype).body(v.to_string());
    }
    let resp = rb.send().await.expect("request");
    let status = resp.status().as_u16();
    let text = resp.text().await.expect("body");
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn get(c: &Client, kube: &FakeKube, path: &str) -> (u16, Value) {
    call(c, kube, Method::GET, path, None).await
}

fn ready_status(node: &Value) -> String {
    node["status"]["conditions"]
        .as_array()
        .expect("conditions")
        .iter()
        .find(|c| c["type"] == "Ready")
        .expect("Ready condition")["status"]
        .as_str()
        .expect("status string")
        .to_string()
}

fn assert_status(v: &Value, code: u16, reason: &str) {
    assert_eq!(v["kind"], "Status", "{v}");
    assert_eq!(v["apiVersion"], "v1", "{v}");
    assert_eq!(v["status"], "Failure", "{v}");
    assert_eq!(v["reason"], reason, "{v}");
    assert_eq!(v["code"], code, "{v}");
}

fn names(list: &Value) -> Vec<String> {
    list["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| {
            let m = &i["metadata"];
            match m["namespace"].as_str() {
                Some(ns) => format!("{ns}/{}", m["name"].as_str().unwrap()),
                None => m["name"].as_str().unwrap().to_string(),
            }
        })
        .collect()
}

#[tokio::test]
async fn token_is_required() {
    let kube = FakeKube::start(FakeKubeOptions::default());
    assert_eq!(kube.token().as_deref(), Some("fake-token"));
    let c = client(&kube);
    let url = format!("{}/api/v1/nodes", kube.url());

    let r = c.get(&url).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let v: Value = r.json().await.unwrap();
    assert_status(&v, 401, "Unauthorized");

    let r = c.get(&url).bearer_auth("wrong").send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401);

    let r = c.get(&url).bearer_auth("fake-token").send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(
        r.headers()["content-type"].to_str().unwrap(),
        "application/json"
    );
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["kind"], "NodeList");
    assert_eq!(v["apiVersion"], "v1");
    assert!(v["metadata"]["resourceVersion"].is_string());
    assert_eq!(v["items"], json!([]));

    let statuses: Vec<u16> = kube.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [401, 401, 200]);
}

#[tokio::test]
async fn no_token_configured_means_no_check() {
    let kube = FakeKube::start(FakeKubeOptions {
        token: None,
        ..FakeKubeOptions::default()
    });
    assert_eq!(kube.token(), None);
    let r = client(&kube)
        .get(format!("{}/api/v1/nodes", kube.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
}

#[tokio::test]
async fn wrong_ca_fails_the_handshake() {
    let kube = FakeKube::start(FakeKubeOptions::default());
    let c = client_with(&kube, &kube.other_ca_path(), false);
    let err = c
        .get(format!("{}/version", kube.url()))
        .bearer_auth("fake-token")
        .send()
        .await
        .expect_err("a server certificate from another CA must be refused");
    assert!(err.is_connect(), "{err:?}");
    assert!(kube.requests().is_empty(), "{:?}", kube.requests());

    // The right CA works, by IP (the URL) and by name.
    let (code, v) = get(&client(&kube), &kube, "/version").await;
    assert_eq!(code, 200);
    assert_eq!(v["gitVersion"], "v1.33.0");
    let port = kube.url().rsplit(':').next().unwrap().to_string();
    let r = client(&kube)
        .get(format!("https://localhost:{port}/healthz"))
        .bearer_auth("fake-token")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.text().await.unwrap(), "ok");
}

#[tokio::test]
async fn client_certificate_required_mode() {
    let kube = FakeKube::start(FakeKubeOptions {
        require_client_cert: true,
        ..FakeKubeOptions::default()
    });
    let err = client(&kube)
        .get(format!("{}/api/v1/nodes", kube.url()))
        .bearer_auth("fake-token")
        .send()
        .await
        .expect_err("no client certificate must be refused");
    assert!(err.is_connect() || err.is_request(), "{err:?}");
    assert!(kube.requests().is_empty());

    let c = client_with(&kube, &kube.ca_path(), true);
    let (code, _) = get(&c, &kube, "/api/v1/nodes").await;
    assert_eq!(code, 200);
    // The token is still required on top of the certificate.
    let r = c
        .get(format!("{}/api/v1/nodes", kube.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
}

#[tokio::test]
async fn client_certificate_optional_by_default() {
    let kube = FakeKube::start(FakeKubeOptions::default());
    let c = client_with(&kube, &kube.ca_path(), true);
    let (code, _) = get(&c, &kube, "/api/v1/nodes").await;
    assert_eq!(code, 200);
    let (code, _) = get(&client(&kube), &kube, "/api/v1/nodes").await;
    assert_eq!(code, 200);
}

#[tokio::test]
async fn client_certificate_from_another_ca_is_refused() {
    let kube = FakeKube::start(FakeKubeOptions::default());
    install_provider();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(Vec::<String>::new())
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let pem = format!("{}{}", cert.pem(), key.serialize_pem());
    let ca = std::fs::read(kube.ca_path()).unwrap();
    let c = Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&ca).unwrap()])
        .identity(reqwest::Identity::from_pem(pem.as_bytes()).unwrap())
        .build()
        .unwrap();
    let err = c
        .get(format!("{}/version", kube.url()))
        .bearer_auth("fake-token")
        .send()
        .await
        .expect_err("a client certificate from another CA must be refused");
    assert!(err.is_connect() || err.is_request(), "{err:?}");
    assert!(kube.requests().is_empty());
}

#[tokio::test]
async fn posted_node_becomes_ready_after_gets() {
    let kube = FakeKube::start(FakeKubeOptions {
        ready_after_gets: Some(3),
        ..FakeKubeOptions::default()
    });
    let c = client(&kube);
    let node = json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": "n1", "labels": {"role": "worker"}},
    });
    let (code, v) = call(
        &c,
        &kube,
        Method::POST,
        "/api/v1/nodes",
        Some(("application/json", node.clone())),
    )
    .await;
    assert_eq!(code, 201, "{v}");
    assert_eq!(v["kind"], "Node");
    assert_eq!(v["metadata"]["name"], "n1");
    assert_eq!(v["metadata"]["labels"]["role"], "worker");
    assert!(v["metadata"]["uid"].as_str().is_some_and(|u| !u.is_empty()));
    assert!(
        v["metadata"]["creationTimestamp"]
            .as_str()
            .unwrap()
            .ends_with('Z')
    );
    let rv0 = v["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(ready_status(&v), "Unknown");
    assert_eq!(v["status"]["nodeInfo"]["kubeletVersion"], "v1.33.0");
    assert_eq!(v["status"]["addresses"][0]["type"], "InternalIP");
    assert_eq!(v["status"]["addresses"][0]["address"], "n1");

    for _ in 0..2 {
        let (code, v) = get(&c, &kube, "/api/v1/nodes/n1").await;
        assert_eq!(code, 200);
        assert_eq!(ready_status(&v), "Unknown");
        // A list does not count.
        let (_, l) = get(&c, &kube, "/api/v1/nodes").await;
        assert_eq!(ready_status(&l["items"][0]), "Unknown");
    }
    let (_, v) = get(&c, &kube, "/api/v1/nodes/n1").await;
    assert_eq!(ready_status(&v), "True");
    let ready = v["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Ready")
        .unwrap()
        .clone();
    assert_eq!(ready["reason"], "KubeletReady");
    assert_ne!(v["metadata"]["resourceVersion"], rv0.as_str());
    assert_eq!(ready_status(&kube.node("n1").unwrap()), "True");

    // Already there: 409.
    let (code, v) = call(
        &c,
        &kube,
        Method::POST,
        "/api/v1/nodes",
        Some(("application/json", node)),
    )
    .await;
    assert_eq!(code, 409);
    assert_status(&v, 409, "AlreadyExists");
    assert_eq!(v["message"], "nodes \"n1\" already exists");
    assert_eq!(v["details"], json!({"name": "n1", "kind": "nodes"}));

    // No name: 422; not JSON: 400.
    let (code, v) = call(
        &c,
        &kube,
        Method::POST,
        "/api/v1/nodes",
        Some(("application/json", json!({"kind": "Node", "metadata": {}}))),
    )
    .await;
    assert_eq!(code, 422);
    assert_status(&v, 422, "Invalid");
    let r = c
        .post(format!("{}/api/v1/nodes", kube.url()))
        .bearer_auth("fake-token")
        .header("Content-Type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);

    // set_ready overrides; label selectors filter lists.
    kube.set_ready("n1", false);
    let (_, v) = get(&c, &kube, "/api/v1/nodes/n1").await;
    assert_eq!(ready_status(&v), "False");
    kube.add_node("n2", &[("role", "control-plane")], true);
    let (_, l) = get(&c, &kube, "/api/v1/nodes?labelSelector=role%3Dworker").await;
    assert_eq!(names(&l), ["n1"]);
    let (_, l) = get(&c, &kube, "/api/v1/nodes?labelSelector=role=control-plane").await;
    assert_eq!(names(&l), ["n2"]);
    let (_, l) = get(&c, &kube, "/api/v1/nodes").await;
    assert_eq!(names(&l), ["n1", "n2"]);
}

#[tokio::test]
async fn default_options_ready_at_first_get_and_never_without_option() {
    let kube = FakeKube::start(FakeKubeOptions::default());
    let c = client(&kube);
    let body = Some(("application/json", json!({"metadata": {"name": "a"}})));
    let (_, v) = call(&c, &kube, Method::POST, "/api/v1/nodes", body).await;
    assert_eq!(ready_status(&v), "Unknown");
    let (_, v) = get(&c, &kube, "/api/v1/nodes/a").await;
    assert_eq!(ready_status(&v), "True");

    let kube = FakeKube::start(FakeKubeOptions {
        ready_after_gets: None,
        ..FakeKubeOptions::default()
    });
    let c = client(&kube);
    let body = Some(("application/json", json!({"metadata": {"name": "a"}})));
    call(&c, &kube, Method::POST, "/api/v1/nodes", body).await;
    for _ in 0..5 {
        let (_, v) = get(&c, &kube, "/api/v1/nodes/a").await;
        assert_eq!(ready_status(&v), "Unknown");
    }
    kube.set_ready("a", true);
    let (_, v) = get(&c, &kube, "/api/v1/nodes/a").await;
    assert_eq!(ready_status(&v), "True");
}

#[tokio::test]
async fn merge_patch_cordons_and_uncordons() {
    let kube = FakeKube::start(FakeKubeOptions::default());
    kube.add_node("n1", &[("a", "1"), ("b", "2")], true);
    let c = client(&kube);
    let rv0 = kube.node("n1").unwrap()["metadata"]["resourceVersion"].clone();

    let (code, v) = call(
        &c,
        &kube,
        Method::PATCH,
        "/api/v1/nodes/n1",
        Some((MERGE_PATCH, json!({"spec": {"unschedulable": true}}))),
    )
    .await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["spec"]["unschedulable"], true);
    assert_ne!(v["metadata"]["resourceVersion"], rv0);
    assert_eq!(kube.node("n1").unwrap()["spec"]["unschedulable"], true);
    let (_, l) = get(
        &c,
        &kube,
        "/api/v1/nodes?fieldSelector=spec.unschedulable%3Dtrue",
    )
    .await;
    assert_eq!(names(&l), ["n1"]);

    // null removes keys; other keys are merged.
    let (code, v) = call(
        &c,
        &kube,
        Method::PATCH,
        "/api/v1/nodes/n1",
        Some((
            MERGE_PATCH,
            json!({"spec": {"unschedulable": null}, "metadata": {"labels": {"a": null, "c": "3"}}}),
        )),
    )
    .await;
    assert_eq!(code, 200);
    assert!(v["spec"].get("unschedulable").is_none(), "{v}");
    assert_eq!(v["metadata"]["labels"], json!({"b": "2", "c": "3"}));
    // The status cannot be changed through the main resource.
    assert_eq!(ready_status(&v), "True");

    // Only merge patches are accepted.
    for ctype in ["application/json-patch+json", "application/json"] {
        let (code, v) = call(
            &c,
            &kube,
            Method::PATCH,
            "/api/v1/nodes/n1",
            Some((
                ctype,
                json!([{"op": "add", "path": "/spec/unschedulable", "value": true}]),
            )),
        )
        .await;
        assert_eq!(code, 415, "{ctype}");
        assert_status(&v, 415, "UnsupportedMediaType");
    }
    let r = c
        .patch(format!("{}/api/v1/nodes/n1", kube.url()))
        .bearer_auth("fake-token")
        .body(r#"{"spec":{"unschedulable":true}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 415);
    assert!(
        kube.node("n1").unwrap()["spec"]
            .get("unschedulable")
            .is_none()
    );

    // A stale resourceVersion conflicts; an absent node is 404.
    let (code, v) = call(
        &c,
        &kube,
        Method::PATCH,
        "/api/v1/nodes/n1",
        Some((
            MERGE_PATCH,
            json!({"metadata": {"resourceVersion": "1"}, "spec": {}}),
        )),
    )
    .await;
    assert_eq!(code, 409);
    assert_status(&v, 409, "Conflict");
    let (code, v) = call(
        &c,
        &kube,
        Method::PATCH,
        "/api/v1/nodes/nope",
        Some((MERGE_PATCH, json!({"spec": {"unschedulable": true}}))),
    )
    .await;
    assert_eq!(code, 404);
    assert_status(&v, 404, "NotFound");
    assert_eq!(v["message"], "nodes \"nope\" not found");
}

#[tokio::test]
async fn pods_by_field_selector() {
    let kube = FakeKube::start(FakeKubeOptions::default());
    kube.add_node("n1", &[], true);
    kube.add_node("n2", &[], true);
    kube.add_pod("default", "web-7d9f-abcde", "n1", Some("ReplicaSet"));
    kube.add_pod("kube-system", "proxy-x1y2z", "n1", Some("DaemonSet"));
    kube.add_pod("default", "bare", "n1", None);
    kube.add_mirror_pod("kube-system", "etcd-n1", "n1");
    kube.add_pod("default", "other", "n2", None);
    assert_eq!(
        kube.pods_on("n1"),
        [
            "default/bare",
            "default/web-7d9f-abcde",
            "kube-system/etcd-n1",
            "kube-system/proxy-x1y2z"
        ]
    );
    let c = client(&kube);

    let (code, l) = get(&c, &kube, "/api/v1/pods?fieldSelector=spec.nodeName%3Dn1").await;
    assert_eq!(code, 200);
    assert_eq!(l["kind"], "PodList");
    assert_eq!(names(&l).len(), 4);
    let items = l["items"].as_array().unwrap();
    let by_name = |n: &str| items.iter().find(|p| p["metadata"]["name"] == n).unwrap();
    let web = by_name("web-7d9f-abcde");
    assert_eq!(web["spec"]["nodeName"], "n1");
    assert_eq!(web["status"]["phase"], "Running");
    let owner = &web["metadata"]["ownerReferences"][0];
    assert_eq!(owner["kind"], "ReplicaSet");
    assert_eq!(owner["apiVersion"], "apps/v1");
    assert_eq!(owner["name"], "web-7d9f");
    assert_eq!(owner["controller"], true);
    assert_eq!(
        by_name("proxy-x1y2z")["metadata"]["ownerReferences"][0]["kind"],
        "DaemonSet"
    );
    assert!(by_name("bare")["metadata"].get("ownerReferences").is_none());
    assert!(
        by_name("etcd-n1")["metadata"]["annotations"]["kubernetes.io/config.mirror"].is_string()
    );

    let (_, l) = get(&c, &kube, "/api/v1/pods?fieldSelector=spec.nodeName=n2").await;
    assert_eq!(names(&l), ["default/other"]);
    let (_, l) = get(
        &c,
        &kube,
        "/api/v1/namespaces/default/pods?fieldSelector=spec.nodeName%3Dn1",
    )
    .await;
    assert_eq!(names(&l), ["default/bare", "default/web-7d9f-abcde"]);
    let (_, l) = get(&c, &kube, "/api/v1/pods").await;
    assert_eq!(names(&l).len(), 5);
    let (code, v) = get(&c, &kube, "/api/v1/pods?fieldSelector=spec.bogus%3Dx").await;
    assert_eq!(code, 400);
    assert_status(&v, 400, "BadRequest");

    // Paging.
    let (_, l) = get(&c, &kube, "/api/v1/pods?limit=2").await;
    assert_eq!(names(&l).len(), 2);
    let cont = l["metadata"]["continue"].as_str().unwrap().to_string();
    let (_, l) = get(&c, &kube, &format!("/api/v1/pods?limit=10&continue={cont}")).await;
    assert_eq!(names(&l).len(), 3);
    assert!(l["metadata"].get("continue").is_none());

    // Single pod GET and DELETE.
    let (code, p) = get(&c, &kube, "/api/v1/namespaces/default/pods/bare").await;
    assert_eq!(code, 200);
    assert_eq!(p["kind"], "Pod");
    let (code, _) = call(
        &c,
        &kube,
        Method::DELETE,
        "/api/v1/namespaces/default/pods/bare",
        None,
    )
    .await;
    assert_eq!(code, 200);
    let (code, v) = get(&c, &kube, "/api/v1/namespaces/default/pods/bare").await;
    assert_eq!(code, 404);
    assert_eq!(v["message"], "pods \"bare\" not found");
    assert!(!kube.pods_on("n1").contains(&"default/bare".to_string()));
}

fn eviction(ns: &str, name: &str) -> Option<(&'static str, Value)> {
    Some((
        "application/json",
        json!({
            "apiVersion": "policy/v1",
            "kind": "Eviction",
            "metadata": {"name": name, "namespace": ns},
        }),
    ))
}

#[tokio::test]
async fn eviction_with_disruption_budget() {
    let kube = FakeKube::start(FakeKubeOptions::default());
    kube.add_pod("default", "web-1", "n1", Some("ReplicaSet"));
    kube.add_pod("default", "web-2", "n1", Some("ReplicaSet"));
    kube.block_eviction("default", "web-2", 2);
    let c = client(&kube);

    let (code, v) = call(
        &c,
        &kube,
        Method::POST,
        "/api/v1/namespaces/default/pods/web-1/eviction",
        eviction("default", "web-1"),
    )
    .await;
    assert_eq!(code, 201, "{v}");
    assert_eq!(v["kind"], "Status");
    assert_eq!(v["status"], "Success");
    assert_eq!(kube.pods_on("n1"), ["default/web-2"]);

    let path = "/api/v1/namespaces/default/pods/web-2/eviction";
    for _ in 0..2 {
        let (code, v) = call(&c, &kube, Method::POST, path, eviction("default", "web-2")).await;
        assert_eq!(code, 429);
        assert_status(&v, 429, "TooManyRequests");
        assert_eq!(
            v["message"],
            "Cannot evict pod as it would violate the pod's disruption budget."
        );
        assert_eq!(kube.pods_on("n1"), ["default/web-2"]);
    }
    let (code, _) = call(&c, &kube, Method::POST, path, eviction("default", "web-2")).await;
    assert_eq!(code, 201);
    assert!(kube.pods_on("n1").is_empty());

    // Gone now: 404. Name mismatch: 400.
    let (code, v) = call(&c, &kube, Method::POST, path, eviction("default", "web-2")).await;
    assert_eq!(code, 404);
    assert_status(&v, 404, "NotFound");
    kube.add_pod("default", "web-3", "n1", None);
    let (code, _) = call(
        &c,
        &kube,
        Method::POST,
        "/api/v1/namespaces/default/pods/web-3/eviction",
        eviction("default", "web-2"),
    )
    .await;
    assert_eq!(code, 400);
}

#[tokio::test]
async fn node_delete() {
    let kube = FakeKube::start(FakeKubeOptions::default());
    kube.add_node("n1", &[], true);
    let c = client(&kube);
    let (code, v) = call(&c, &kube, Method::DELETE, "/api/v1/nodes/n1", None).await;
    assert_eq!(code, 200);
    assert_eq!(v["kind"], "Status");
    assert_eq!(v["status"], "Success");
    assert_eq!(v["details"]["name"], "n1");
    assert!(kube.node("n1").is_none());
    let (code, v) = call(&c, &kube, Method::DELETE, "/api/v1/nodes/n1", None).await;
    assert_eq!(code, 404);
    assert_status(&v, 404, "NotFound");
    assert_eq!(v["details"], json!({"name": "n1", "kind": "nodes"}));
    let (code, _) = get(&c, &kube, "/api/v1/nodes/n1").await;
    assert_eq!(code, 404);
}

#[tokio::test]
async fn token_review() {
    let kube = FakeKube::start(FakeKubeOptions::default());
    kube.add_user_token("sa-token", "system:serviceaccount:default:commissaire");
    let c = client(&kube);
    let review = |token: &str| {
        Some((
            "application/json",
            json!({
                "apiVersion": "authentication.k8s.io/v1",
                "kind": "TokenReview",
                "spec": {"token": token},
            }),
        ))
    };
    let path = "/apis/authentication.k8s.io/v1/tokenreviews";

    let (code, v) = call(&c, &kube, Method::POST, path, review("sa-token")).await;
    assert_eq!(code, 201, "{v}");
    assert_eq!(v["kind"], "TokenReview");
    assert_eq!(v["spec"]["token"], "sa-token");
    assert_eq!(v["status"]["authenticated"], true);
    assert_eq!(
        v["status"]["user"]["username"],
        "system:serviceaccount:default:commissaire"
    );
    let groups = v["status"]["user"]["groups"].as_array().unwrap();
    assert!(groups.contains(&json!("system:serviceaccounts:default")));
    assert!(groups.contains(&json!("system:authenticated")));

    let (code, v) = call(&c, &kube, Method::POST, path, review("bogus")).await;
    assert_eq!(code, 201);
    assert_eq!(v["status"]["authenticated"], false);
    assert_eq!(v["status"]["error"], "invalid bearer token");
    assert!(v["status"].get("user").is_none());

    // The review request itself needs the server's token.
    let r = c
        .post(format!("{}{path}", kube.url()))
        .header("Content-Type", "application/json")
        .body(review("sa-token").unwrap().1.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
}

#[tokio::test]
async fn unknown_paths_and_wrong_methods() {
    let kube = FakeKube::start(FakeKubeOptions::default());
    let c = client(&kube);
    let (code, v) = get(&c, &kube, "/api/v1/secrets").await;
    assert_eq!(code, 404);
    assert_status(&v, 404, "NotFound");
    let (code, v) = get(&c, &kube, "/nonsense").await;
    assert_eq!(code, 404);
    assert_status(&v, 404, "NotFound");
    let (code, v) = call(&c, &kube, Method::PUT, "/api/v1/nodes", None).await;
    assert_eq!(code, 405);
    assert_status(&v, 405, "MethodNotAllowed");
    let (code, v) = call(
        &c,
        &kube,
        Method::GET,
        "/api/v1/namespaces/default/pods/x/eviction",
        None,
    )
    .await;
    assert_eq!(code, 405);
    assert_status(&v, 405, "MethodNotAllowed");
}

#[tokio::test]
async fn request_log_in_order() {
    let kube = FakeKube::start(FakeKubeOptions::default());
    kube.add_node("n1", &[], true);
    let c = client(&kube);
    get(&c, &kube, "/api/v1/nodes?labelSelector=a%3Db").await;
    call(
        &c,
        &kube,
        Method::PATCH,
        "/api/v1/nodes/n1",
        Some((MERGE_PATCH, json!({"spec": {"unschedulable": true}}))),
    )
    .await;
    c.get(format!("{}/api/v1/nodes/n1", kube.url()))
        .send()
        .await
        .unwrap();
    call(&c, &kube, Method::DELETE, "/api/v1/nodes/n1", None).await;

    let log = kube.requests();
    let summary: Vec<(&str, &str, &str, u16)> = log
        .iter()
        .map(|r| {
            (
                r.method.as_str(),
                r.path.as_str(),
                r.query.as_str(),
                r.status,
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("GET", "/api/v1/nodes", "labelSelector=a%3Db", 200),
            ("PATCH", "/api/v1/nodes/n1", "", 200),
            ("GET", "/api/v1/nodes/n1", "", 401),
            ("DELETE", "/api/v1/nodes/n1", "", 200),
        ]
    );
    assert_eq!(log[0].body, Value::Null);
    assert_eq!(log[0].content_type, None);
    assert_eq!(log[1].body, json!({"spec": {"unschedulable": true}}));
    assert_eq!(log[1].content_type.as_deref(), Some(MERGE_PATCH));

    kube.clear_requests();
    assert!(kube.requests().is_empty());
    get(&c, &kube, "/version").await;
    assert_eq!(kube.requests().len(), 1);
}

/// Starting and dropping works outside any runtime, and the drop closes the port.
#[test]
fn sync_start_and_drop() {
    let kube = FakeKube::start(FakeKubeOptions::default());
    let addr = kube.url().trim_start_matches("https://").to_string();
    TcpStream::connect(&addr).expect("the fake listens");
    assert!(kube.ca_path().exists());
    assert!(kube.other_ca_path().exists());
    let (cert, key) = kube.client_cert_paths();
    assert!(
        std::fs::read_to_string(cert)
            .unwrap()
            .contains("BEGIN CERTIFICATE")
    );
    assert!(
        std::fs::read_to_string(key)
            .unwrap()
            .contains("PRIVATE KEY")
    );
    let ca = kube.ca_path();
    drop(kube);
    assert!(
        TcpStream::connect(&addr).is_err(),
        "still listening after drop"
    );
    assert!(!ca.exists());
}

/// Dropping from inside an async test, with a connection still open, does not hang.
#[tokio::test]
async fn drop_with_open_connection() {
    let kube = FakeKube::start(FakeKubeOptions::default());
    let c = client(&kube);
    let (code, _) = get(&c, &kube, "/version").await;
    assert_eq!(code, 200);
    let url = format!("{}/version", kube.url());
    drop(kube);
    let err = c
        .get(&url)
        .bearer_auth("fake-token")
        .send()
        .await
        .expect_err("the server is gone");
    assert!(err.is_connect() || err.is_request(), "{err:?}");
}
