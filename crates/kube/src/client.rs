//! A small client for the parts of the Kubernetes API a container manager needs: nodes, pods,
//! evictions and token reviews, on the real API paths and JSON shapes.
//!
//! It is plain reqwest rather than `kube` + `k8s-openapi`: a handful of calls on untyped JSON
//! does not pay for ~200 s of extra release build.

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::KubeError;

/// Connect timeout for the API server.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Whole-request timeout: every call we make is small.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

/// A connection to one Kubernetes (or OpenShift) API server.
#[derive(Clone)]
pub struct KubeClient {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

/// What creating an object found.
#[derive(Clone, Debug, PartialEq)]
pub enum Created {
    /// We created it; the stored object.
    New(Value),
    /// It already existed (409 AlreadyExists).
    Existed,
}

/// What an eviction request got.
#[derive(Clone, Debug, PartialEq)]
pub enum Eviction {
    /// Accepted: the pod is being deleted.
    Accepted,
    /// Refused for now (429, a PodDisruptionBudget); the API's message.
    Refused(String),
    /// The pod no longer exists.
    Gone,
}

impl std::fmt::Debug for KubeClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the token.
        f.debug_struct("KubeClient")
            .field("base", &self.base)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

fn opt_str<'a>(options: &'a BTreeMap<String, Value>, key: &str) -> Option<&'a str> {
    options.get(key).and_then(Value::as_str)
}

/// A container manager's TLS material, as bytes: from PEM text in the options (`ca`,
/// `certificate`, `certificate_key`) or from files named in the trusted files directory
/// (`ca_path`, `certificate_path`, `certificate_key_path`). Never from any other server path.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct TlsMaterial {
    /// CA bundle that replaces the system roots.
    pub ca: Option<Vec<u8>>,
    /// Client certificate (chain).
    pub certificate: Option<Vec<u8>>,
    /// Client private key.
    pub certificate_key: Option<Vec<u8>>,
}

impl std::fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsMaterial")
            .field("ca", &self.ca.as_ref().map(Vec::len))
            .field("certificate", &self.certificate.as_ref().map(Vec::len))
            .field(
                "certificate_key",
                &self.certificate_key.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

impl TlsMaterial {
    /// Collects the material from a container manager's options (secrets opened).
    pub fn from_options(options: &BTreeMap<String, Value>) -> Result<TlsMaterial, KubeError> {
        let one = |text_key: &str, path_key: &str| -> Result<Option<Vec<u8>>, KubeError> {
            if let Some(text) = opt_str(options, text_key) {
                return Ok(Some(text.as_bytes().to_vec()));
            }
            match opt_str(options, path_key) {
                None => Ok(None),
                Some(name) => crate::trusted::read(&format!("options.{path_key}"), name)
                    .map(Some)
                    .map_err(|e| KubeError::Config(e.to_string())),
            }
        };
        Ok(TlsMaterial {
            ca: one("ca", "ca_path")?,
            certificate: one("certificate", "certificate_path")?,
            certificate_key: one("certificate_key", "certificate_key_path")?,
        })
    }
}

/// The innermost error in a chain, which is where reqwest/hyper/rustls say what went wrong.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(s) = cur {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        cur = s.source();
    }
    parts.join(": ")
}

impl KubeClient {
    /// Builds a client from a container manager's options: `server_url` (required), `token`,
    /// `certificate` + `certificate_key` (client certificate), `ca` (CA bundle that replaces
    /// the system roots) as PEM text, or the `*_path` forms naming files in the trusted files
    /// directory ([`crate::trusted`]), `insecure_skip_tls_verify`. Material that is not PEM
    /// is reported at once; errors never quote it.
    pub fn from_options(options: &BTreeMap<String, Value>) -> Result<KubeClient, KubeError> {
        // reqwest is built without a default provider; ours is ring (idempotent).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let url = opt_str(options, "server_url")
            .ok_or_else(|| KubeError::Config("options.server_url is required".into()))?;
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            return Err(KubeError::Config(format!(
                "options.server_url {url:?} must start with https:// or http://"
            )));
        }
        let mut b = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .user_agent(concat!("commissaire/", env!("CARGO_PKG_VERSION")));
        let tls = TlsMaterial::from_options(options)?;
        let source = |text_key: &'static str, path_key: &'static str| {
            if options.contains_key(text_key) {
                text_key
            } else {
                path_key
            }
        };
        if let Some(pem) = &tls.ca {
            let field = source("ca", "ca_path");
            let certs = reqwest::Certificate::from_pem_bundle(pem).map_err(|e| {
                KubeError::Config(format!(
                    "options.{field}: not a PEM certificate bundle: {}",
                    chain(&e)
                ))
            })?;
            if certs.is_empty() {
                return Err(KubeError::Config(format!(
                    "options.{field}: holds no PEM certificate"
                )));
            }
            b = b.tls_certs_only(certs);
        }
        if let (Some(cert), Some(key)) = (&tls.certificate, &tls.certificate_key) {
            let mut pem = cert.clone();
            pem.push(b'\n');
            pem.extend_from_slice(key);
            let id = reqwest::Identity::from_pem(&pem).map_err(|e| {
                KubeError::Config(format!(
                    "options.{} / {}: not a PEM certificate and private key: {}",
                    source("certificate", "certificate_path"),
                    source("certificate_key", "certificate_key_path"),
                    chain(&e)
                ))
            })?;
            b = b.identity(id);
        }
        if options
            .get("insecure_skip_tls_verify")
            .and_then(Value::as_bool)
            .unwrap_or(false)
        {
            b = b.danger_accept_invalid_certs(true);
        }
        let http = b
            .build()
            .map_err(|e| KubeError::Config(format!("setting up HTTPS: {}", chain(&e))))?;
        Ok(KubeClient {
            http,
            base: url.trim_end_matches('/').to_string(),
            token: opt_str(options, "token").map(str::to_string),
        })
    }

    /// The API server's URL.
    pub fn server_url(&self) -> &str {
        &self.base
    }

    /// One request; answers the status and the JSON body (`Null` when empty or not JSON).
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<(&str, Value)>,
    ) -> Result<(StatusCode, Value), KubeError> {
        let url = format!("{}{path}", self.base);
        let mut req = self
            .http
            .request(method.clone(), &url)
            .header("Accept", "application/json");
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some((content_type, v)) = body {
            req = req
                .header("Content-Type", content_type)
                .body(serde_json::to_vec(&v).unwrap_or_default());
        }
        let resp = req.send().await.map_err(|e| KubeError::Unreachable {
            server: self.base.clone(),
            detail: chain(&e),
        })?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(|e| KubeError::Unreachable {
            server: self.base.clone(),
            detail: format!("reading the answer: {}", chain(&e)),
        })?;
        let v = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        match status {
            StatusCode::UNAUTHORIZED => Err(KubeError::Unauthorized {
                server: self.base.clone(),
                detail: status_message(&v, status),
            }),
            StatusCode::FORBIDDEN => Err(KubeError::Forbidden {
                server: self.base.clone(),
                detail: format!("{method} {path}: {}", status_message(&v, status)),
            }),
            _ => Ok((status, v)),
        }
    }

    fn unexpected(&self, what: &str, status: StatusCode, v: &Value) -> KubeError {
        KubeError::Api {
            server: self.base.clone(),
            detail: format!("{what}: {}", status_message(v, status)),
        }
    }

    /// `GET /api/v1/nodes/{name}`; `None` when there is no such node.
    pub async fn get_node(&self, name: &str) -> Result<Option<Value>, KubeError> {
        let (status, v) = self
            .call(Method::GET, &format!("/api/v1/nodes/{name}"), None)
            .await?;
        match status {
            StatusCode::OK => Ok(Some(v)),
            StatusCode::NOT_FOUND => Ok(None),
            s => Err(self.unexpected(&format!("reading node {name}"), s, &v)),
        }
    }

    /// `POST /api/v1/nodes` with the given labels.
    pub async fn create_node(
        &self,
        name: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<Created, KubeError> {
        let body = json!({
            "kind": "Node",
            "apiVersion": "v1",
            "metadata": {"name": name, "labels": labels},
        });
        let (status, v) = self
            .call(
                Method::POST,
                "/api/v1/nodes",
                Some(("application/json", body)),
            )
            .await?;
        match status {
            StatusCode::CREATED | StatusCode::OK => Ok(Created::New(v)),
            StatusCode::CONFLICT => Ok(Created::Existed),
            s => Err(self.unexpected(&format!("registering node {name}"), s, &v)),
        }
    }

    /// `PATCH /api/v1/nodes/{name}` with a JSON merge patch.
    pub async fn patch_node(&self, name: &str, patch: Value) -> Result<(), KubeError> {
        let (status, v) = self
            .call(
                Method::PATCH,
                &format!("/api/v1/nodes/{name}"),
                Some(("application/merge-patch+json", patch)),
            )
            .await?;
        match status {
            StatusCode::OK => Ok(()),
            StatusCode::NOT_FOUND => Err(KubeError::NoNode(name.to_string())),
            s => Err(self.unexpected(&format!("updating node {name}"), s, &v)),
        }
    }

    /// `DELETE /api/v1/nodes/{name}`; `false` when it did not exist.
    pub async fn delete_node(&self, name: &str) -> Result<bool, KubeError> {
        let (status, v) = self
            .call(Method::DELETE, &format!("/api/v1/nodes/{name}"), None)
            .await?;
        match status {
            StatusCode::OK | StatusCode::ACCEPTED => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            s => Err(self.unexpected(&format!("deleting node {name}"), s, &v)),
        }
    }

    /// Pods bound to a node, in every namespace.
    pub async fn pods_on(&self, node: &str) -> Result<Vec<Value>, KubeError> {
        let (status, v) = self
            .call(
                Method::GET,
                &format!("/api/v1/pods?fieldSelector=spec.nodeName%3D{node}"),
                None,
            )
            .await?;
        match status {
            StatusCode::OK => Ok(v["items"].as_array().cloned().unwrap_or_default()),
            s => Err(self.unexpected(&format!("listing the pods of node {node}"), s, &v)),
        }
    }

    /// Asks the Eviction API to evict a pod (which respects PodDisruptionBudgets).
    pub async fn evict(&self, namespace: &str, pod: &str) -> Result<Eviction, KubeError> {
        let body = json!({
            "apiVersion": "policy/v1",
            "kind": "Eviction",
            "metadata": {"name": pod, "namespace": namespace},
        });
        let (status, v) = self
            .call(
                Method::POST,
                &format!("/api/v1/namespaces/{namespace}/pods/{pod}/eviction"),
                Some(("application/json", body)),
            )
            .await?;
        match status {
            StatusCode::OK | StatusCode::CREATED => Ok(Eviction::Accepted),
            StatusCode::NOT_FOUND => Ok(Eviction::Gone),
            StatusCode::TOO_MANY_REQUESTS => Ok(Eviction::Refused(status_message(&v, status))),
            s => Err(self.unexpected(&format!("evicting pod {namespace}/{pod}"), s, &v)),
        }
    }

    /// Asks the API server who a bearer token belongs to (TokenReview); `None` when the token
    /// is not valid.
    pub async fn review_token(
        &self,
        token: &str,
    ) -> Result<Option<(String, Vec<String>)>, KubeError> {
        let body = json!({
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview",
            "spec": {"token": token},
        });
        let (status, v) = self
            .call(
                Method::POST,
                "/apis/authentication.k8s.io/v1/tokenreviews",
                Some(("application/json", body)),
            )
            .await?;
        match status {
            StatusCode::OK | StatusCode::CREATED => {
                if v["status"]["authenticated"].as_bool() == Some(true) {
                    let user = &v["status"]["user"];
                    let groups = user["groups"]
                        .as_array()
                        .map(|g| {
                            g.iter()
                                .filter_map(|x| x.as_str().map(str::to_string))
                                .collect()
                        })
                        .unwrap_or_default();
                    Ok(Some((
                        user["username"].as_str().unwrap_or_default().to_string(),
                        groups,
                    )))
                } else {
                    Ok(None)
                }
            }
            s => Err(self.unexpected("reviewing a token", s, &v)),
        }
    }
}

/// The message of a Kubernetes `Status` answer, or the HTTP status.
fn status_message(v: &Value, status: StatusCode) -> String {
    match v["message"].as_str() {
        Some(m) if !m.is_empty() => format!("{m} ({status})"),
        _ => status.to_string(),
    }
}
