//! A fake Kubernetes API server on loopback, for tests of Commissaire's Kubernetes client.
//!
//! No real API server can run on the test machines, so [`FakeKube`] serves the small part of
//! the real API that Commissaire uses, on the real paths, with the real verbs, JSON shapes and
//! status codes (errors are `Status` objects, e.g. `404` with `reason: NotFound`):
//!
//! | path | verbs |
//! | --- | --- |
//! | `/api/v1/nodes` | `GET` (`labelSelector`, `fieldSelector`, `limit`/`continue`), `POST` |
//! | `/api/v1/nodes/{name}` | `GET`, `PATCH` (`application/merge-patch+json` only), `DELETE` |
//! | `/api/v1/pods`, `/api/v1/namespaces/{ns}/pods` | `GET` (same query parameters) |
//! | `/api/v1/namespaces/{ns}/pods/{name}` | `GET`, `DELETE` |
//! | `/api/v1/namespaces/{ns}/pods/{name}/eviction` | `POST` (policy/v1 `Eviction`) |
//! | `/apis/authentication.k8s.io/v1/tokenreviews` | `POST` |
//! | `/version`, `/healthz`, `/livez`, `/readyz` | `GET` |
//!
//! It speaks HTTPS only (HTTP/1.1 and HTTP/2) on `127.0.0.1:<free port>` with a certificate
//! (for `127.0.0.1` and `localhost`) from a CA made afresh for each server, checks a bearer
//! token and, optionally, a client certificate, and logs every request that got past the TLS
//! handshake (see [`FakeKube::requests`]).
//!
//! A node created with `POST /api/v1/nodes` starts with its `Ready` condition `Unknown`, as a
//! node object that no kubelet has reported on yet, and turns `Ready` after a number of `GET`s
//! of it ([`FakeKubeOptions::ready_after_gets`]), as if its kubelet had joined meanwhile.
//!
//! The server runs on its own thread with its own tokio runtime, so it serves both synchronous
//! tests and `#[tokio::test]`s; dropping the [`FakeKube`] stops it.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;

use axum::Router;
use axum::body::Body;
use axum::extract::State as AxumState;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use rcgen::ExtendedKeyUsagePurpose;
use rustls::RootCertStore;
use rustls::crypto::ring;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::WebPkiClientVerifier;
use serde_json::{Map, Value, json};

use crate::pki::{make_ca, make_leaf};
use tempfile::TempDir;

/// The kubelet version reported by the fake's nodes.
const KUBELET_VERSION: &str = "v1.33.0";

/// Largest request body the fake reads.
const MAX_BODY: usize = 16 << 20;

/// How a [`FakeKube`] behaves.
#[derive(Clone, Debug)]
pub struct FakeKubeOptions {
    /// Bearer token required on every request (None: no token check).
    pub token: Option<String>,
    /// Require a TLS client certificate signed by the fake's CA.
    pub require_client_cert: bool,
    /// A node created by POST /api/v1/nodes becomes Ready after this many GETs of it (simulates
    /// the kubelet joining); None: never Ready by itself.
    ///
    /// Only `GET /api/v1/nodes/{name}` counts (not lists, not [`FakeKube::node`]); the N-th
    /// such GET already answers `Ready: "True"`. So with `Some(1)` the `POST` answers
    /// `Unknown` and the first GET `True`; with `Some(0)` the node is Ready as created.
    pub ready_after_gets: Option<u32>,
}

impl Default for FakeKubeOptions {
    /// Token `fake-token`, no client certificate required, nodes Ready at their first GET.
    fn default() -> Self {
        FakeKubeOptions {
            token: Some("fake-token".to_string()),
            require_client_cert: false,
            ready_after_gets: Some(1),
        }
    }
}

/// One request as the fake received it, in [`FakeKube::requests`].
#[derive(Clone, Debug)]
pub struct Request {
    /// The HTTP method, e.g. `PATCH`.
    pub method: String,
    /// The URL path, as sent (not percent-decoded), e.g. `/api/v1/nodes/n1`.
    pub path: String,
    /// The raw query string without `?` (not percent-decoded); empty when there is none.
    pub query: String,
    /// The body parsed as JSON; `Null` if empty or not JSON.
    pub body: Value,
    /// The `Content-Type` header, if any.
    pub content_type: Option<String>,
    /// The status code answered; `401` marks a request rejected for its (missing) token.
    pub status: u16,
    /// When it was answered, in seconds since the Unix epoch (comparable with the testbed's
    /// command logs).
    pub at: f64,
}

/// A running fake Kubernetes API server on `127.0.0.1`; see the [module docs](self).
///
/// Dropping it stops the server and removes its temporary directory (CA and client
/// certificate files).
pub struct FakeKube {
    /// The objects and the request log, shared with the server thread.
    state: Arc<Mutex<State>>,
    /// Where the server listens.
    addr: SocketAddr,
    /// The required bearer token.
    token: Option<String>,
    /// Holds `ca.pem`, `other-ca.pem`, `client.pem` and `client-key.pem`.
    dir: TempDir,
    /// Dropping (or sending on) it stops the server.
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    /// The server thread.
    thread: Option<JoinHandle<()>>,
}

impl fmt::Debug for FakeKube {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FakeKube")
            .field("url", &self.url())
            .field("dir", &self.dir.path())
            .finish_non_exhaustive()
    }
}

impl FakeKube {
    /// Makes a fresh CA (plus an unrelated one), a server certificate for IP `127.0.0.1` and
    /// DNS name `localhost` and a client certificate (CN `commissaire`), both signed by the CA,
    /// and starts serving HTTPS on `127.0.0.1:<free port>`. The port is bound before this
    /// returns, so the server can be used at once.
    ///
    /// # Panics
    ///
    /// When certificates cannot be made, files written or the port bound.
    pub fn start(opts: FakeKubeOptions) -> FakeKube {
        let dir = tempfile::Builder::new()
            .prefix("commissaire-fakekube-")
            .tempdir()
            .expect("create a temporary directory for the fake Kubernetes API");
        let pki = Pki::generate();
        let write = |name: &str, contents: &str| {
            std::fs::write(dir.path().join(name), contents)
                .unwrap_or_else(|e| panic!("write {name}: {e}"));
        };
        write("ca.pem", &pki.ca_pem);
        write("other-ca.pem", &pki.other_ca_pem);
        write("client.pem", &pki.client_pem);
        write("client-key.pem", &pki.client_key_pem);
        let tls = server_tls_config(&pki, opts.require_client_cert);

        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
        listener
            .set_nonblocking(true)
            .expect("make the listener non-blocking");
        let addr = listener.local_addr().expect("local address");

        let state = Arc::new(Mutex::new(State {
            token: opts.token.clone(),
            ready_after_gets: opts.ready_after_gets,
            ..State::default()
        }));
        let app = Router::new().fallback(serve).with_state(state.clone());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(format!("fakekube-{}", addr.port()))
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("tokio runtime for the fake Kubernetes API");
                rt.block_on(async move {
                    let config = axum_server::tls_rustls::RustlsConfig::from_config(tls);
                    let server = axum_server::from_tcp_rustls(listener, config)
                        .expect("serve on the bound listener");
                    tokio::select! {
                        r = server.serve(app.into_make_service()) => {
                            if let Err(e) = r {
                                eprintln!("fake Kubernetes API on {addr}: {e}");
                            }
                        }
                        _ = stopped => {}
                    }
                });
                // Dropping the runtime here cancels the connections still open.
            })
            .expect("spawn the fake Kubernetes API thread");

        FakeKube {
            state,
            addr,
            token: opts.token,
            dir,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// The base URL, `https://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.addr.port())
    }

    /// The PEM file of the CA that signed the server (and client) certificate.
    pub fn ca_path(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// The PEM file of an unrelated CA, which did not sign the server certificate (for "wrong
    /// CA" tests).
    pub fn other_ca_path(&self) -> PathBuf {
        self.dir.path().join("other-ca.pem")
    }

    /// The PEM files of a client certificate (CN `commissaire`) and its PKCS#8 private key,
    /// signed by the CA: `(cert, key)`.
    pub fn client_cert_paths(&self) -> (PathBuf, PathBuf) {
        (
            self.dir.path().join("client.pem"),
            self.dir.path().join("client-key.pem"),
        )
    }

    /// The bearer token the server requires, if any.
    pub fn token(&self) -> Option<String> {
        self.token.clone()
    }

    /// Adds (or replaces) a node registered by someone else (say, its own kubelet), with the
    /// given labels and its `Ready` condition `True` or `False`. It does not change by itself.
    pub fn add_node(&self, name: &str, labels: &[(&str, &str)], ready: bool) {
        let mut st = self.lock();
        let labels: Map<String, Value> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
            .collect();
        let mut obj = json!({
            "kind": "Node",
            "apiVersion": "v1",
            "metadata": {"name": name, "labels": labels},
            "spec": {},
            "status": {},
        });
        fill_node_status(&mut obj, name, if ready { "True" } else { "False" });
        let uid = new_uid();
        let rv = st.bump();
        finish_metadata(&mut obj, &uid, rv);
        st.nodes.insert(
            name.to_string(),
            NodeEntry {
                obj,
                gets_to_ready: None,
            },
        );
    }

    /// Sets the node's `Ready` condition to `True` or `False` (and cancels its pending
    /// becoming Ready by itself, if any).
    ///
    /// # Panics
    ///
    /// When there is no such node.
    pub fn set_ready(&self, name: &str, ready: bool) {
        let mut st = self.lock();
        let rv = st.next_rv();
        let entry = st
            .nodes
            .get_mut(name)
            .unwrap_or_else(|| panic!("fake Kubernetes API: no node {name:?}"));
        entry.gets_to_ready = None;
        if set_ready_condition(&mut entry.obj, if ready { "True" } else { "False" }) {
            set_rv(&mut entry.obj, rv);
            st.rv = rv;
        }
    }

    /// The current Node object, as `GET /api/v1/nodes/{name}` would answer it (without
    /// counting as such a GET).
    pub fn node(&self, name: &str) -> Option<Value> {
        self.lock().nodes.get(name).map(|n| n.obj.clone())
    }

    /// Adds (or replaces) a running pod bound to `node`. `owner_kind` is the kind of its
    /// controller (e.g. `Some("ReplicaSet")`, `Some("DaemonSet")`, `Some("StatefulSet")`,
    /// `Some("Job")`), named after the pod; `None` makes a bare pod without owner.
    pub fn add_pod(&self, namespace: &str, name: &str, node: &str, owner_kind: Option<&str>) {
        let mut obj = pod_object(namespace, name, node);
        if let Some(kind) = owner_kind {
            let api_version = match kind {
                "Job" | "CronJob" => "batch/v1",
                "ReplicationController" => "v1",
                _ => "apps/v1",
            };
            let owner = match name.rsplit_once('-') {
                Some((prefix, _)) if !prefix.is_empty() => prefix,
                _ => name,
            };
            obj["metadata"]["ownerReferences"] = json!([{
                "apiVersion": api_version,
                "kind": kind,
                "name": owner,
                "uid": new_uid(),
                "controller": true,
                "blockOwnerDeletion": true,
            }]);
        }
        self.insert_pod(namespace, name, obj);
    }

    /// Adds (or replaces) a mirror pod: the API's copy of a static pod that the kubelet of
    /// `node` runs from a file. Like a real one it carries the annotation
    /// `kubernetes.io/config.mirror` and is owned by its Node (`ownerReferences` of kind
    /// `Node`).
    pub fn add_mirror_pod(&self, namespace: &str, name: &str, node: &str) {
        let mut obj = pod_object(namespace, name, node);
        let hash = uuid::Uuid::new_v4().simple().to_string();
        obj["metadata"]["annotations"] = json!({
            "kubernetes.io/config.hash": hash,
            "kubernetes.io/config.mirror": hash,
            "kubernetes.io/config.source": "file",
        });
        let node_uid = self
            .lock()
            .nodes
            .get(node)
            .and_then(|n| n.obj["metadata"]["uid"].as_str().map(str::to_string))
            .unwrap_or_else(new_uid);
        obj["metadata"]["ownerReferences"] = json!([{
            "apiVersion": "v1",
            "kind": "Node",
            "name": node,
            "uid": node_uid,
            "controller": true,
        }]);
        self.insert_pod(namespace, name, obj);
    }

    /// The pods still bound to `node`, as `namespace/name`, sorted.
    pub fn pods_on(&self, node: &str) -> Vec<String> {
        self.lock()
            .pods
            .iter()
            .filter(|(_, p)| p["spec"]["nodeName"] == node)
            .map(|((ns, name), _)| format!("{ns}/{name}"))
            .collect()
    }

    /// Makes the next `times` evictions of the pod answer `429 TooManyRequests`, as when they
    /// would violate a PodDisruptionBudget. Replaces any count left from an earlier call.
    pub fn block_eviction(&self, namespace: &str, pod: &str, times: u32) {
        self.lock()
            .blocked_evictions
            .insert((namespace.to_string(), pod.to_string()), times);
    }

    /// Makes `token` valid for `POST /apis/authentication.k8s.io/v1/tokenreviews`, as the
    /// token of user `username` (e.g. `system:serviceaccount:default:commissaire`).
    pub fn add_user_token(&self, token: &str, username: &str) {
        self.lock().user_tokens.insert(
            token.to_string(),
            User {
                username: username.to_string(),
                uid: new_uid(),
            },
        );
    }

    /// Every request received since the start (or [`FakeKube::clear_requests`]), in arrival
    /// order, including those rejected for a missing or wrong token (status 401). Connections
    /// that failed the TLS handshake send no request and so are not logged.
    pub fn requests(&self) -> Vec<Request> {
        self.lock().requests.clone()
    }

    /// Empties the request log.
    pub fn clear_requests(&self) {
        self.lock().requests.clear();
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    fn insert_pod(&self, namespace: &str, name: &str, mut obj: Value) {
        let mut st = self.lock();
        let rv = st.bump();
        finish_metadata(&mut obj, &new_uid(), rv);
        st.pods
            .insert((namespace.to_string(), name.to_string()), obj);
    }
}

impl Drop for FakeKube {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Locks the state, ignoring poisoning (a panicking test thread must not hide its own panic
/// behind others).
fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

// ---------------------------------------------------------------------------------------------
// State

/// Everything the fake knows.
#[derive(Default)]
struct State {
    /// The required bearer token.
    token: Option<String>,
    /// From the options.
    ready_after_gets: Option<u32>,
    /// The last resourceVersion handed out (one counter for all objects, as etcd's revision).
    rv: u64,
    /// Nodes by name.
    nodes: BTreeMap<String, NodeEntry>,
    /// Pod objects by (namespace, name).
    pods: BTreeMap<(String, String), Value>,
    /// Evictions still to refuse, by (namespace, pod).
    blocked_evictions: HashMap<(String, String), u32>,
    /// Tokens known to TokenReview.
    user_tokens: HashMap<String, User>,
    /// The request log.
    requests: Vec<Request>,
}

impl State {
    /// The next resourceVersion, not yet taken.
    fn next_rv(&self) -> u64 {
        self.rv + 1
    }

    /// Takes the next resourceVersion.
    fn bump(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }
}

/// A stored node.
struct NodeEntry {
    /// The Node object as served.
    obj: Value,
    /// GETs still to come before it turns Ready by itself; None: it does not.
    gets_to_ready: Option<u32>,
}

/// A user known to TokenReview.
struct User {
    username: String,
    uid: String,
}

// ---------------------------------------------------------------------------------------------
// Objects

fn now() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn new_uid() -> String {
    uuid::Uuid::new_v4().to_string()
}

fn set_rv(obj: &mut Value, rv: u64) {
    obj["metadata"]["resourceVersion"] = Value::String(rv.to_string());
}

/// Sets the server-owned metadata of a new object.
fn finish_metadata(obj: &mut Value, uid: &str, rv: u64) {
    obj["metadata"]["uid"] = Value::String(uid.to_string());
    obj["metadata"]["creationTimestamp"] = Value::String(now());
    set_rv(obj, rv);
    normalize(obj);
}

/// Drops what the real server never serializes: empty label and annotation maps, and
/// `spec.unschedulable: false` (Go's `omitempty`).
fn normalize(obj: &mut Value) {
    if let Some(meta) = obj["metadata"].as_object_mut() {
        for key in ["labels", "annotations"] {
            if meta
                .get(key)
                .is_some_and(|m| m.is_null() || m.as_object().is_some_and(|m| m.is_empty()))
            {
                meta.remove(key);
            }
        }
    }
    if let Some(spec) = obj["spec"].as_object_mut()
        && spec.get("unschedulable") == Some(&Value::Bool(false))
    {
        spec.remove("unschedulable");
    }
}

/// A running pod bound to `node`, without uid/resourceVersion yet.
fn pod_object(namespace: &str, name: &str, node: &str) -> Value {
    json!({
        "kind": "Pod",
        "apiVersion": "v1",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "nodeName": node,
            "containers": [{"name": "main", "image": "registry.k8s.io/pause:3.10"}],
        },
        "status": {"phase": "Running"},
    })
}

/// The node conditions for a `Ready` status of `True`, `False` or `Unknown`.
fn node_conditions(ready: &str) -> Value {
    let t = now();
    let (pressure, reasons, ready_reason, ready_message) = match ready {
        "True" => (
            "False",
            [
                (
                    "KubeletHasSufficientMemory",
                    "kubelet has sufficient memory available",
                ),
                ("KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
                (
                    "KubeletHasSufficientPID",
                    "kubelet has sufficient PID available",
                ),
            ],
            "KubeletReady",
            "kubelet is posting ready status",
        ),
        "False" => (
            "False",
            [
                (
                    "KubeletHasSufficientMemory",
                    "kubelet has sufficient memory available",
                ),
                ("KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
                (
                    "KubeletHasSufficientPID",
                    "kubelet has sufficient PID available",
                ),
            ],
            "KubeletNotReady",
            "container runtime network not ready: NetworkReady=false \
             reason:NetworkPluginNotReady message:Network plugin returns error: \
             cni plugin not initialized",
        ),
        _ => (
            "Unknown",
            [(
                "NodeStatusNeverUpdated",
                "Kubelet never posted node status.",
            ); 3],
            "NodeStatusNeverUpdated",
            "Kubelet never posted node status.",
        ),
    };
    let mut conditions: Vec<Value> = ["MemoryPressure", "DiskPressure", "PIDPressure"]
        .iter()
        .zip(reasons)
        .map(|(ty, (reason, message))| {
            json!({
                "type": ty, "status": pressure, "reason": reason, "message": message,
                "lastHeartbeatTime": t, "lastTransitionTime": t,
            })
        })
        .collect();
    conditions.push(json!({
        "type": "Ready", "status": ready, "reason": ready_reason, "message": ready_message,
        "lastHeartbeatTime": t, "lastTransitionTime": t,
    }));
    Value::Array(conditions)
}

/// Sets the node status as a kubelet would: the conditions, and the node info and addresses
/// unless already there.
fn fill_node_status(obj: &mut Value, name: &str, ready: &str) {
    if !obj["status"].is_object() {
        obj["status"] = json!({});
    }
    let status = &mut obj["status"];
    status["conditions"] = node_conditions(ready);
    if !status["nodeInfo"].is_object() {
        status["nodeInfo"] = json!({
            "machineID": uuid::Uuid::new_v4().simple().to_string(),
            "systemUUID": new_uid(),
            "bootID": new_uid(),
            "kernelVersion": "6.1.0-28-amd64",
            "osImage": "Debian GNU/Linux 12 (bookworm)",
            "containerRuntimeVersion": "containerd://1.7.24",
            "kubeletVersion": KUBELET_VERSION,
            "kubeProxyVersion": KUBELET_VERSION,
            "operatingSystem": "linux",
            "architecture": "amd64",
        });
    }
    if !status["addresses"].is_array() {
        status["addresses"] = json!([
            {"type": "InternalIP", "address": name},
            {"type": "Hostname", "address": name},
        ]);
    }
}

/// Sets the `Ready` condition's status; returns whether it changed.
fn set_ready_condition(obj: &mut Value, ready: &str) -> bool {
    let current = obj["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
        .and_then(|c| c["status"].as_str())
        .map(str::to_string);
    if current.as_deref() == Some(ready) {
        if let Some(cs) = obj["status"]["conditions"].as_array_mut() {
            let t = now();
            for c in cs {
                c["lastHeartbeatTime"] = Value::String(t.clone());
            }
        }
        return false;
    }
    obj["status"]["conditions"] = node_conditions(ready);
    true
}

/// RFC 7386 JSON merge patch.
fn merge_patch(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = Value::Object(Map::new());
            }
            let t = target.as_object_mut().expect("made an object above");
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        _ => *target = patch.clone(),
    }
}

/// A list item as the real server serves it: without `kind` and `apiVersion`.
fn list_item(obj: &Value) -> Value {
    let mut item = obj.clone();
    if let Some(m) = item.as_object_mut() {
        m.remove("kind");
        m.remove("apiVersion");
    }
    item
}

// ---------------------------------------------------------------------------------------------
// Answers

/// What the fake answers.
enum Out {
    Json(u16, Value),
    Text(u16, &'static str),
}

impl Out {
    fn code(&self) -> u16 {
        match self {
            Out::Json(c, _) | Out::Text(c, _) => *c,
        }
    }
}

/// A `Status` object with `status: Failure`.
fn failure(code: u16, reason: &str, message: impl Into<String>, details: Option<Value>) -> Out {
    let mut s = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message.into(),
        "reason": reason,
        "code": code,
    });
    if let Some(d) = details {
        s["details"] = d;
    }
    Out::Json(code, s)
}

/// A `Status` object with `status: Success`.
fn success(code: u16, details: Option<Value>) -> Out {
    let mut s = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"});
    match details {
        Some(d) => s["details"] = d,
        None => s["code"] = json!(code),
    }
    Out::Json(code, s)
}

fn not_found(kind: &str, name: &str) -> Out {
    failure(
        404,
        "NotFound",
        format!("{kind} \"{name}\" not found"),
        Some(json!({"name": name, "kind": kind})),
    )
}

fn no_such_path() -> Out {
    failure(
        404,
        "NotFound",
        "the server could not find the requested resource",
        Some(json!({})),
    )
}

fn method_not_allowed() -> Out {
    failure(
        405,
        "MethodNotAllowed",
        "the server does not allow this method on the requested resource",
        Some(json!({})),
    )
}

fn bad_request(message: impl Into<String>) -> Out {
    failure(400, "BadRequest", message, None)
}

fn unsupported_media_type(content_type: Option<&str>, accepted: &str) -> Out {
    failure(
        415,
        "UnsupportedMediaType",
        format!(
            "the body of the request was in an unknown format ({}) - accepted media types \
             include: {accepted}",
            content_type.unwrap_or("none")
        ),
        None,
    )
}

fn invalid(kind: &str, name: &str, field: &str, reason: &str, detail: &str) -> Out {
    failure(
        422,
        "Invalid",
        format!("{kind} \"{name}\" is invalid: {field}: {detail}"),
        Some(json!({
            "name": name,
            "kind": kind,
            "causes": [{"reason": reason, "message": detail, "field": field}],
        })),
    )
}

fn conflict(kind: &str, name: &str) -> Out {
    failure(
        409,
        "Conflict",
        format!(
            "Operation cannot be fulfilled on {kind} \"{name}\": the object has been modified; \
             please apply your changes to the latest version and try again"
        ),
        Some(json!({"name": name, "kind": kind})),
    )
}

// ---------------------------------------------------------------------------------------------
// Serving

/// The one handler: reads the whole request, answers it under the state lock (so the log is
/// in the order requests were handled) and logs it.
async fn serve(
    AxumState(state): AxumState<Arc<Mutex<State>>>,
    req: axum::extract::Request,
) -> Response {
    let (parts, body) = req.into_parts();
    let body = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(_) => return StatusCode::PAYLOAD_TOO_LARGE.into_response(),
    };
    let header_str = |name: header::HeaderName| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let content_type = header_str(header::CONTENT_TYPE);
    let authorization = header_str(header::AUTHORIZATION);
    let path = parts.uri.path().to_string();
    let raw_query = parts.uri.query().unwrap_or("").to_string();
    let incoming = Incoming {
        method: parts.method.as_str(),
        path: &path,
        query: parse_query(&raw_query),
        body: &body,
        content_type: content_type.as_deref(),
    };

    let out = {
        let mut st = lock(&state);
        let out = if authorized(&st, authorization.as_deref()) {
            dispatch(&mut st, &incoming)
        } else {
            failure(401, "Unauthorized", "Unauthorized", None)
        };
        st.requests.push(Request {
            method: parts.method.to_string(),
            path: path.clone(),
            query: raw_query,
            body: serde_json::from_slice(&body).unwrap_or(Value::Null),
            content_type: content_type.clone(),
            status: out.code(),
            at: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or_default(),
        });
        out
    };

    let code = StatusCode::from_u16(out.code()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let (ctype, bytes) = match out {
        Out::Json(_, v) => (
            "application/json",
            serde_json::to_vec(&v).unwrap_or_default(),
        ),
        Out::Text(_, t) => ("text/plain; charset=utf-8", t.as_bytes().to_vec()),
    };
    let mut resp = Response::new(Body::from(bytes));
    *resp.status_mut() = code;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
    resp
}

/// A request, decoded enough to be answered.
struct Incoming<'a> {
    method: &'a str,
    path: &'a str,
    query: Vec<(String, String)>,
    body: &'a [u8],
    content_type: Option<&'a str>,
}

impl Incoming<'_> {
    fn param(&self, key: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The media type of the body, lower-case, without parameters.
    fn media_type(&self) -> Option<String> {
        self.content_type
            .map(|c| {
                c.split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase()
            })
            .filter(|c| !c.is_empty())
    }

    /// The body as a JSON object, for a create (`POST`): the content type must be absent
    /// (the real server then assumes JSON) or `application/json`.
    fn json_object(&self) -> Result<Map<String, Value>, Out> {
        if let Some(mt) = self.media_type()
            && mt != "application/json"
        {
            return Err(unsupported_media_type(
                self.content_type,
                "application/json",
            ));
        }
        parse_object(self.body)
    }
}

fn parse_object(body: &[u8]) -> Result<Map<String, Value>, Out> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(bad_request("the body of the request is empty"));
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(bad_request(
            "couldn't get version/kind; json parse error: the body is not a JSON object",
        )),
        Err(e) => Err(bad_request(format!(
            "couldn't get version/kind; json parse error: {e}"
        ))),
    }
}

/// Checks the bearer token (the auth scheme is case-insensitive, as in the real server).
fn authorized(st: &State, authorization: Option<&str>) -> bool {
    let Some(token) = &st.token else {
        return true;
    };
    let Some((scheme, given)) = authorization.and_then(|a| a.trim().split_once(' ')) else {
        return false;
    };
    scheme.eq_ignore_ascii_case("bearer") && given.trim() == token
}

fn percent_decode(s: &str, plus_is_space: bool) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b'+' if plus_is_space => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse_query(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k, true), percent_decode(v, true))
        })
        .collect()
}

fn dispatch(st: &mut State, req: &Incoming<'_>) -> Out {
    let Some(rest) = req.path.strip_prefix('/') else {
        return no_such_path();
    };
    let segs: Vec<String> = rest.split('/').map(|s| percent_decode(s, false)).collect();
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    let m = req.method;
    match segs.as_slice() {
        ["version"] => match m {
            "GET" => Out::Json(
                200,
                json!({
                    "major": "1",
                    "minor": "33",
                    "gitVersion": KUBELET_VERSION,
                    "gitCommit": "0000000000000000000000000000000000000000",
                    "gitTreeState": "clean",
                    "buildDate": "2025-04-23T00:00:00Z",
                    "goVersion": "go1.24.2",
                    "compiler": "gc",
                    "platform": "linux/amd64",
                }),
            ),
            _ => method_not_allowed(),
        },
        ["healthz"] | ["livez"] | ["readyz"] => match m {
            "GET" => Out::Text(200, "ok"),
            _ => method_not_allowed(),
        },
        ["api", "v1", "nodes"] => match m {
            "GET" => {
                let items: Vec<&Value> = st.nodes.values().map(|n| &n.obj).collect();
                list(
                    st,
                    req,
                    "NodeList",
                    &["metadata.name", "spec.unschedulable"],
                    items,
                )
            }
            "POST" => create_node(st, req),
            _ => method_not_allowed(),
        },
        ["api", "v1", "nodes", name] => match m {
            "GET" => get_node(st, name),
            "PATCH" => patch_node(st, req, name),
            "DELETE" => match st.nodes.remove(*name) {
                Some(n) => {
                    st.bump();
                    success(
                        200,
                        Some(
                            json!({"name": name, "kind": "nodes", "uid": n.obj["metadata"]["uid"]}),
                        ),
                    )
                }
                None => not_found("nodes", name),
            },
            _ => method_not_allowed(),
        },
        ["api", "v1", "pods"] => match m {
            "GET" => {
                let items: Vec<&Value> = st.pods.values().collect();
                list(st, req, "PodList", POD_FIELDS, items)
            }
            _ => method_not_allowed(),
        },
        ["api", "v1", "namespaces", ns, "pods"] => match m {
            "GET" => {
                let items: Vec<&Value> = st
                    .pods
                    .iter()
                    .filter(|((pns, _), _)| pns == ns)
                    .map(|(_, p)| p)
                    .collect();
                list(st, req, "PodList", POD_FIELDS, items)
            }
            _ => method_not_allowed(),
        },
        ["api", "v1", "namespaces", ns, "pods", name] => {
            let key = (ns.to_string(), name.to_string());
            match m {
                "GET" => match st.pods.get(&key) {
                    Some(p) => Out::Json(200, p.clone()),
                    None => not_found("pods", name),
                },
                "DELETE" => match st.pods.remove(&key) {
                    Some(mut p) => {
                        st.bump();
                        p["metadata"]["deletionTimestamp"] = Value::String(now());
                        p["metadata"]["deletionGracePeriodSeconds"] = json!(0);
                        Out::Json(200, p)
                    }
                    None => not_found("pods", name),
                },
                _ => method_not_allowed(),
            }
        }
        ["api", "v1", "namespaces", ns, "pods", name, "eviction"] => match m {
            "POST" => evict(st, req, ns, name),
            _ => method_not_allowed(),
        },
        ["apis", "authentication.k8s.io", "v1", "tokenreviews"] => match m {
            "POST" => token_review(st, req),
            _ => method_not_allowed(),
        },
        _ => no_such_path(),
    }
}

/// The field selectors the real server supports on pods (a subset).
const POD_FIELDS: &[&str] = &[
    "metadata.name",
    "metadata.namespace",
    "spec.nodeName",
    "spec.restartPolicy",
    "spec.schedulerName",
    "spec.serviceAccountName",
    "status.phase",
    "status.podIP",
    "status.nominatedNodeName",
];

/// One requirement of a label or field selector.
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    Exists(String),
    NotExists(String),
}

/// Parses a selector of comma-separated `k=v`, `k==v`, `k!=v` and (labels only) `k`, `!k`.
/// Set-based requirements (`k in (a,b)`) are not supported.
fn parse_selector(s: &str, labels: bool) -> Result<Vec<Requirement>, String> {
    let mut reqs = Vec::new();
    for term in s.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        let req = if let Some((k, v)) = term.split_once("!=") {
            Requirement::NotEquals(k.trim().to_string(), v.trim().to_string())
        } else if let Some((k, v)) = term.split_once("==") {
            Requirement::Equals(k.trim().to_string(), v.trim().to_string())
        } else if let Some((k, v)) = term.split_once('=') {
            Requirement::Equals(k.trim().to_string(), v.trim().to_string())
        } else if labels && !term.contains([' ', '(', ')']) {
            match term.strip_prefix('!') {
                Some(k) => Requirement::NotExists(k.trim().to_string()),
                None => Requirement::Exists(term.to_string()),
            }
        } else {
            return Err(format!("unable to parse requirement: {term:?}"));
        };
        reqs.push(req);
    }
    Ok(reqs)
}

/// The value of a field (dotted path) as a field selector sees it: strings as they are,
/// booleans and numbers printed, missing fields as `""`.
fn field_value(obj: &Value, field: &str) -> String {
    let mut v = obj;
    for part in field.split('.') {
        v = &v[part];
    }
    match v {
        Value::String(s) => s.clone(),
        Value::Null => match field {
            "spec.unschedulable" => "false".to_string(),
            _ => String::new(),
        },
        other => other.to_string(),
    }
}

fn matches(obj: &Value, labels: &[Requirement], fields: &[Requirement]) -> bool {
    let label = |k: &str| obj["metadata"]["labels"][k].as_str().map(str::to_string);
    let labels_ok = labels.iter().all(|r| match r {
        Requirement::Equals(k, v) => label(k).as_deref() == Some(v.as_str()),
        Requirement::NotEquals(k, v) => label(k).as_deref() != Some(v.as_str()),
        Requirement::Exists(k) => label(k).is_some(),
        Requirement::NotExists(k) => label(k).is_none(),
    });
    labels_ok
        && fields.iter().all(|r| match r {
            Requirement::Equals(k, v) => field_value(obj, k) == *v,
            Requirement::NotEquals(k, v) => field_value(obj, k) != *v,
            Requirement::Exists(_) | Requirement::NotExists(_) => false,
        })
}

/// Answers a list `GET`: `labelSelector`, `fieldSelector` (on `fields` only), `limit` and
/// `continue` (the token is the offset of the next item); `watch` is refused.
fn list(st: &State, req: &Incoming<'_>, kind: &str, fields: &[&str], items: Vec<&Value>) -> Out {
    if matches!(req.param("watch"), Some("true" | "1")) {
        return bad_request("the fake Kubernetes API server does not support watch");
    }
    let labels = match parse_selector(req.param("labelSelector").unwrap_or(""), true) {
        Ok(l) => l,
        Err(e) => return bad_request(format!("unable to parse requirement: {e}")),
    };
    let field_reqs = match parse_selector(req.param("fieldSelector").unwrap_or(""), false) {
        Ok(f) => f,
        Err(e) => return bad_request(format!("invalid field selector: {e}")),
    };
    for r in &field_reqs {
        if let Requirement::Equals(k, _) | Requirement::NotEquals(k, _) = r
            && !fields.contains(&k.as_str())
        {
            return bad_request(format!("field label not supported: {k}"));
        }
    }
    let selected: Vec<Value> = items
        .into_iter()
        .filter(|o| matches(o, &labels, &field_reqs))
        .map(list_item)
        .collect();
    let start = match req.param("continue").filter(|c| !c.is_empty()) {
        None => 0,
        Some(c) => match c.parse::<usize>() {
            Ok(n) => n.min(selected.len()),
            Err(_) => return bad_request("invalid continue token"),
        },
    };
    let limit = match req.param("limit").filter(|l| !l.is_empty()) {
        None => 0,
        Some(l) => match l.parse::<usize>() {
            Ok(n) => n,
            Err(_) => return bad_request(format!("invalid limit {l:?}")),
        },
    };
    let end = if limit == 0 {
        selected.len()
    } else {
        (start + limit).min(selected.len())
    };
    let mut metadata = json!({"resourceVersion": st.rv.to_string()});
    if end < selected.len() {
        metadata["continue"] = Value::String(end.to_string());
        metadata["remainingItemCount"] = json!(selected.len() - end);
    }
    Out::Json(
        200,
        json!({
            "kind": kind,
            "apiVersion": "v1",
            "metadata": metadata,
            "items": selected[start..end],
        }),
    )
}

fn get_node(st: &mut State, name: &str) -> Out {
    let rv = st.next_rv();
    let Some(entry) = st.nodes.get_mut(name) else {
        return not_found("nodes", name);
    };
    if let Some(left) = entry.gets_to_ready {
        let left = left.saturating_sub(1);
        if left == 0 {
            entry.gets_to_ready = None;
            if set_ready_condition(&mut entry.obj, "True") {
                set_rv(&mut entry.obj, rv);
                st.rv = rv;
            }
        } else {
            entry.gets_to_ready = Some(left);
        }
    }
    let obj = st.nodes[name].obj.clone();
    Out::Json(200, obj)
}

/// Whether `name` is a valid DNS subdomain (RFC 1123), as object names must be.
fn valid_name(name: &str) -> bool {
    let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.';
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    !name.is_empty()
        && name.len() <= 253
        && name.chars().all(ok_char)
        && name.starts_with(alnum)
        && name.ends_with(alnum)
}

fn create_node(st: &mut State, req: &Incoming<'_>) -> Out {
    let mut body = match req.json_object() {
        Ok(b) => b,
        Err(out) => return out,
    };
    if let Some(kind) = body.get("kind")
        && kind != "Node"
    {
        return bad_request(format!(
            "the kind of the provided object ({kind}) does not match the resource (Node)"
        ));
    }
    if let Some(av) = body.get("apiVersion")
        && av != "v1"
    {
        return bad_request(format!(
            "the API version in the data ({av}) does not match the expected API version (v1)"
        ));
    }
    let mut metadata = match body.remove("metadata") {
        Some(Value::Object(m)) => m,
        None | Some(Value::Null) => Map::new(),
        Some(_) => return bad_request("metadata must be an object"),
    };
    let name = match metadata.get("name").and_then(Value::as_str) {
        Some(n) if !n.is_empty() => n.to_string(),
        _ => match metadata.get("generateName").and_then(Value::as_str) {
            Some(prefix) if !prefix.is_empty() => {
                const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
                let suffix: String = uuid::Uuid::new_v4().as_bytes()[..5]
                    .iter()
                    .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
                    .collect();
                format!("{prefix}{suffix}")
            }
            _ => {
                return invalid(
                    "Node",
                    "",
                    "metadata.name",
                    "FieldValueRequired",
                    "Required value: name or generateName is required",
                );
            }
        },
    };
    if !valid_name(&name) {
        return invalid(
            "Node",
            &name,
            "metadata.name",
            "FieldValueInvalid",
            &format!(
                "Invalid value: {name:?}: a lowercase RFC 1123 subdomain must consist of lower \
                 case alphanumeric characters, '-' or '.', and must start and end with an \
                 alphanumeric character"
            ),
        );
    }
    if st.nodes.contains_key(&name) {
        return failure(
            409,
            "AlreadyExists",
            format!("nodes \"{name}\" already exists"),
            Some(json!({"name": name, "kind": "nodes"})),
        );
    }
    for server_owned in [
        "uid",
        "resourceVersion",
        "creationTimestamp",
        "deletionTimestamp",
    ] {
        metadata.remove(server_owned);
    }
    metadata.insert("name".to_string(), Value::String(name.clone()));
    let mut obj = json!({
        "kind": "Node",
        "apiVersion": "v1",
        "metadata": metadata,
        "spec": match body.remove("spec") {
            Some(s @ Value::Object(_)) => s,
            _ => json!({}),
        },
        "status": match body.remove("status") {
            Some(s @ Value::Object(_)) => s,
            _ => json!({}),
        },
    });
    let gets = st.ready_after_gets;
    fill_node_status(
        &mut obj,
        &name,
        if gets == Some(0) { "True" } else { "Unknown" },
    );
    let rv = st.bump();
    finish_metadata(&mut obj, &new_uid(), rv);
    st.nodes.insert(
        name,
        NodeEntry {
            obj: obj.clone(),
            gets_to_ready: gets.filter(|n| *n > 0),
        },
    );
    Out::Json(201, obj)
}

fn patch_node(st: &mut State, req: &Incoming<'_>, name: &str) -> Out {
    if req.media_type().as_deref() != Some("application/merge-patch+json") {
        return unsupported_media_type(req.content_type, "application/merge-patch+json");
    }
    let patch = match parse_object(req.body) {
        Ok(p) => Value::Object(p),
        Err(out) => return out,
    };
    let rv = st.next_rv();
    let Some(entry) = st.nodes.get_mut(name) else {
        return not_found("nodes", name);
    };
    let old = entry.obj.clone();
    if let Some(want) = patch["metadata"]["resourceVersion"].as_str()
        && Some(want) != old["metadata"]["resourceVersion"].as_str()
    {
        return conflict("nodes", name);
    }
    if let Some(n) = patch["metadata"]["name"].as_str()
        && n != name
    {
        return bad_request(format!(
            "the name of the object ({n}) does not match the name on the URL ({name})"
        ));
    }
    let mut new = old.clone();
    merge_patch(&mut new, &patch);
    // What the client may not change through the main resource: identity, server-owned
    // metadata, and the status (a subresource of its own).
    new["kind"] = old["kind"].clone();
    new["apiVersion"] = old["apiVersion"].clone();
    if !new["metadata"].is_object() || !new["spec"].is_object() {
        return bad_request("metadata and spec must be objects");
    }
    for key in ["name", "uid", "creationTimestamp", "resourceVersion"] {
        new["metadata"][key] = old["metadata"][key].clone();
    }
    new["status"] = old["status"].clone();
    normalize(&mut new);
    if new != old {
        set_rv(&mut new, rv);
        st.rv = rv;
    }
    entry.obj = new.clone();
    Out::Json(200, new)
}

fn evict(st: &mut State, req: &Incoming<'_>, ns: &str, name: &str) -> Out {
    let body = match req.json_object() {
        Ok(b) => b,
        Err(out) => return out,
    };
    if let Some(kind) = body.get("kind")
        && kind != "Eviction"
    {
        return bad_request(format!(
            "the kind of the provided object ({kind}) does not match the resource (Eviction)"
        ));
    }
    if let Some(n) = body
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        && n != name
    {
        return bad_request("name in URL does not match name in Eviction object");
    }
    if let Some(n) = body
        .get("metadata")
        .and_then(|m| m.get("namespace"))
        .and_then(Value::as_str)
        && n != ns
    {
        return bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        );
    }
    let key = (ns.to_string(), name.to_string());
    if !st.pods.contains_key(&key) {
        return not_found("pods", name);
    }
    if let Some(left) = st.blocked_evictions.get_mut(&key)
        && *left > 0
    {
        *left -= 1;
        return failure(
            429,
            "TooManyRequests",
            "Cannot evict pod as it would violate the pod's disruption budget.",
            Some(json!({"causes": [{
                "reason": "DisruptionBudget",
                "message": format!("The disruption budget {name}-pdb needs 1 healthy pods and has 1 currently"),
            }]})),
        );
    }
    st.pods.remove(&key);
    st.bump();
    success(201, None)
}

fn token_review(st: &mut State, req: &Incoming<'_>) -> Out {
    let mut body = match req.json_object() {
        Ok(b) => b,
        Err(out) => return out,
    };
    if let Some(kind) = body.get("kind")
        && kind != "TokenReview"
    {
        return bad_request(format!(
            "the kind of the provided object ({kind}) does not match the resource (TokenReview)"
        ));
    }
    let token = body
        .get("spec")
        .and_then(|s| s.get("token"))
        .and_then(Value::as_str)
        .unwrap_or("");
    if token.is_empty() {
        return bad_request("token is required for TokenReview in authentication");
    }
    let status = match st.user_tokens.get(token) {
        Some(user) => {
            let mut groups = Vec::new();
            if let Some(rest) = user.username.strip_prefix("system:serviceaccount:") {
                groups.push("system:serviceaccounts".to_string());
                if let Some((ns, _)) = rest.split_once(':') {
                    groups.push(format!("system:serviceaccounts:{ns}"));
                }
            }
            groups.push("system:authenticated".to_string());
            json!({
                "authenticated": true,
                "user": {"username": user.username, "uid": user.uid, "groups": groups},
            })
        }
        None => json!({"authenticated": false, "error": "invalid bearer token"}),
    };
    body.insert("kind".into(), json!("TokenReview"));
    body.insert("apiVersion".into(), json!("authentication.k8s.io/v1"));
    body.insert("metadata".into(), json!({"creationTimestamp": null}));
    body.insert("status".into(), status);
    Out::Json(201, Value::Object(body))
}

// ---------------------------------------------------------------------------------------------
// Certificates

/// The PEMs the fake hands out, and the server's own certificate and key.
struct Pki {
    ca_pem: String,
    other_ca_pem: String,
    client_pem: String,
    client_key_pem: String,
    ca_der: CertificateDer<'static>,
    server_der: CertificateDer<'static>,
    server_key_der: Vec<u8>,
}

impl Pki {
    fn generate() -> Pki {
        let (ca, issuer) = make_ca("commissaire fake kubernetes CA");
        let (other_ca, _) = make_ca("unrelated CA");
        let (server, server_key) = make_leaf(
            &issuer,
            "kube-apiserver",
            &["127.0.0.1", "localhost"],
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        let (client, client_key) = make_leaf(
            &issuer,
            "commissaire",
            &[],
            ExtendedKeyUsagePurpose::ClientAuth,
        );
        Pki {
            ca_pem: ca.pem(),
            other_ca_pem: other_ca.pem(),
            client_pem: client.pem(),
            client_key_pem: client_key.serialize_pem(),
            ca_der: ca.der().clone(),
            server_der: server.der().clone(),
            server_key_der: server_key.serialize_der(),
        }
    }
}

/// The rustls server configuration (ring provider, HTTP/2 and HTTP/1.1 by ALPN): client
/// certificates must chain to the CA, and are required or optional.
fn server_tls_config(pki: &Pki, require_client_cert: bool) -> Arc<rustls::ServerConfig> {
    let provider = Arc::new(ring::default_provider());
    let mut roots = RootCertStore::empty();
    roots
        .add(pki.ca_der.clone())
        .expect("add the CA to the roots");
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
    let verifier = if require_client_cert {
        verifier.build()
    } else {
        verifier.allow_unauthenticated().build()
    }
    .expect("client certificate verifier");
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pki.server_key_der.clone()));
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS protocol versions")
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![pki.server_der.clone()], key)
        .expect("server certificate and key");
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(config)
}
