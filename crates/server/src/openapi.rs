//! The OpenAPI description of `/api/v0` and the Swagger UI that renders it.
//!
//! The document is served at `/api/v0/openapi.json`; the UI (vendored into the binary, nothing
//! is fetched at build or run time) at `/api/v0/docs/`.
//!
//! The route attributes (`#[utoipa::path]` in `api::*`) say what is particular to each route.
//! [`document`] then completes what is the same everywhere, so that no route can forget it:
//! the answers every route may give (401 without credentials, 400 for a bad name or body, 413
//! for an oversized body, 503 when the store is away), a description on every response,
//! examples built from real `model` values, per-route security (`/api/v0/status` and
//! `/metrics` are open), and one path per rolling-operation kind instead of a `{operation}`
//! placeholder (the router has literal paths, and `deploy` takes another body).

use std::collections::BTreeMap;

use axum::Router;
use serde_json::{Value, json};
use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa_swagger_ui::SwaggerUi;

use crate::api::{access, bodies, clusters, events, hosts, managers, networks, operations, ops};
use crate::state::AppState;

struct BasicAuthScheme;

impl utoipa::Modify for BasicAuthScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "basic",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Basic).build()),
        );
    }
}

/// The API description.
#[derive(OpenApi)]
#[openapi(
    info(title = "Commissaire", description = "Manage Linux hosts over SSH: inventory, bootstrap into Kubernetes/OpenShift clusters, rolling operations. Every route except /api/v0/status needs authentication (HTTP basic by default) and a role: admin, operator or viewer; each operation names its role in x-required-role. Errors are {\"error\": {\"status\", \"message\"}}."),
    paths(
        hosts::list, hosts::get_one, hosts::create, hosts::register, hosts::delete, hosts::creds, hosts::status,
        hosts::get_hostkey, hosts::trust_hostkey,
        clusters::list, clusters::get_one, clusters::put, clusters::delete, clusters::members,
        clusters::set_members, clusters::member, clusters::join, clusters::leave,
        networks::list, networks::get_one, networks::put, networks::delete,
        managers::list, managers::get_one, managers::put, managers::delete,
        operations::get, operations::start, operations::cancel, operations::pause, operations::resume,
        access::create, access::list, access::revoke, access::audit,
        events::stream, ops::status,
    ),
    components(schemas(
        model::Host, model::HostState, model::HostCreds, model::HostStatus, model::HostStatusHost,
        model::Cluster, model::ClusterView, model::ClusterState, model::ClusterHostsSummary,
        model::Network, model::NetworkType, model::ContainerManagerConfig, model::ContainerManagerType,
        model::ErrorBody, model::ErrorDetail, model::TrustedHostKey,
        model::Operation, model::OperationKind, model::OperationStatus, model::OperationOptions,
        model::HostProgress, model::HostStep, model::NodeView, model::NodeRemoval, model::ClusterNodesSummary,
        model::FailureKind,
        bodies::HostCreateBody, bodies::ClusterBody, bodies::MembershipBody, bodies::NetworkBody,
        bodies::NetworkOptions, bodies::ContainerManagerBody, bodies::ContainerManagerOptions,
        bodies::HostAmount, bodies::RestartBody, bodies::UpgradeBody, bodies::DeployBody,
        bodies::HostKeyBody, bodies::RegistrationTokenBody,
        model::Role, model::RegistrationToken, model::RegistrationTokenCreated, model::AuditRecord,
    )),
    modifiers(&BasicAuthScheme),
    security(("basic" = [])),
)]
pub struct ApiDoc;

/// Routes serving the document and the UI.
pub fn docs_router() -> Router<AppState> {
    Router::new().merge(
        SwaggerUi::new("/api/v0/docs").external_url_unchecked("/api/v0/openapi.json", document()),
    )
}

/// Paths that need no authentication (see `auth::Authenticator`).
const OPEN_PATHS: &[&str] = &["/api/v0/status", "/metrics"];

const METHODS: &[&str] = &["get", "put", "post", "delete", "patch", "head", "options"];

/// The complete document served at `/api/v0/openapi.json`.
pub fn document() -> Value {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).expect("the document serializes");
    expand_operations(&mut doc);
    add_metrics(&mut doc);
    add_component_examples(&mut doc);
    complete(&mut doc);
    doc
}

/// Replaces the `{operation}` paths by one path per kind, with that kind's body.
fn expand_operations(doc: &mut Value) {
    let paths = doc["paths"].as_object_mut().expect("paths");
    let templated: Vec<String> = paths
        .keys()
        .filter(|k| k.contains("{operation}"))
        .cloned()
        .collect();
    for template in templated {
        let item = paths.remove(&template).expect("listed above");
        for kind in model::OperationKind::ALL {
            let k = kind.as_str();
            let mut item = item.clone();
            for method in METHODS {
                let Some(op) = item.get_mut(*method) else {
                    continue;
                };
                if let Some(params) = op["parameters"].as_array_mut() {
                    params.retain(|p| p["name"] != "operation");
                }
                let id = op["operationId"].as_str().unwrap_or_default();
                op["operationId"] = json!(id.replace("operation", k));
                for field in ["summary", "description"] {
                    if let Some(text) = op[field].as_str() {
                        op[field] = json!(text.replace("restart|upgrade|deploy", k));
                    }
                }
                op["tags"] = json!(["operations"]);
                if op.get("requestBody").is_some() {
                    let (schema, what) = match kind {
                        model::OperationKind::Restart => ("RestartBody", "every field optional"),
                        model::OperationKind::Upgrade => ("UpgradeBody", "every field optional"),
                        model::OperationKind::Deploy => ("DeployBody", "version is required"),
                    };
                    op["requestBody"] = json!({
                        "description": format!("How the {k} runs; {what}"),
                        "required": kind == model::OperationKind::Deploy,
                        "content": {"application/json": {
                            "schema": {"$ref": format!("#/components/schemas/{schema}")}}}
                    });
                }
            }
            paths.insert(template.replace("{operation}", k), item);
        }
    }
}

/// `/metrics` is part of the router, so it is part of the document.
fn add_metrics(doc: &mut Value) {
    doc["paths"]["/metrics"] = json!({"get": {
        "tags": ["operations"],
        "summary": "Prometheus metrics: HTTP, fleet, watcher, SSH, store and change feed",
        "operationId": "metrics",
        "responses": {"200": {
            "description": "Prometheus text exposition format; every family has # HELP and # TYPE",
            "content": {"text/plain": {
                "schema": {"type": "string"},
                "example": "# HELP commissaire_hosts Hosts by lifecycle status\n# TYPE commissaire_hosts gauge\ncommissaire_hosts{status=\"active\"} 12\n"
            }}
        }}
    }});
}

/// Example values, built from the model types so that they have the wire shape.
fn model_examples() -> BTreeMap<&'static str, Value> {
    use model::*;
    let at = "2026-05-04T10:15:02.125000";
    let host = Host {
        status: HostState::Active,
        os: "fedora".into(),
        distribution: "fedora".into(),
        os_version: "40".into(),
        cpus: 4,
        memory: 8_165_432,
        space: 21_474_836_480,
        last_check: at.into(),
        boot_id: "6f1c0a52-9c1e-4a55-8f83-3d1f1e0b2a77".into(),
        bootstrapped: true,
        ..Host::new("192.168.152.10".into())
    };
    let mut failed = host.clone();
    failed.address = "192.168.152.11".into();
    failed.status = HostState::Failed;
    failed.failure = Some(FailureKind::Unreachable);
    failed.status_reason =
        "unreachable: connecting to 192.168.152.11:22 took longer than 5 s (while connecting)"
            .into();
    let view = ClusterView {
        name: "prod".into(),
        status: ClusterState::Degraded,
        network: "fs".into(),
        container_manager: "k8s".into(),
        hostset: vec![host.address.clone(), failed.address.clone()],
        hosts: ClusterHostsSummary {
            total: 2,
            available: 1,
            unavailable: 1,
        },
        nodes: Some(ClusterNodesSummary {
            registered: 2,
            ready: 1,
            unschedulable: 0,
        }),
    };
    let node = NodeView {
        container_manager: "k8s".into(),
        node: host.address.clone(),
        registered: true,
        ready: true,
        unschedulable: false,
        managed: true,
        reason: "KubeletReady: kubelet is posting ready status".into(),
        kubelet_version: "v1.30.2".into(),
        checked_at: at.into(),
    };
    let mut op = Operation::new(
        "prod",
        OperationKind::Restart,
        None,
        OperationOptions::defaults(true),
        view.hostset.clone(),
        at.into(),
    );
    op.restarted = Some(vec![host.address.clone()]);
    op.in_process = vec![failed.address.clone()];
    if let Some(p) = op.hosts.get_mut(&host.address) {
        p.state = HostStep::Done;
        p.started_at = at.into();
        p.finished_at = "2026-05-04T10:16:40.500000".into();
    }
    if let Some(p) = op.hosts.get_mut(&failed.address) {
        p.state = HostStep::Rebooting;
        p.started_at = "2026-05-04T10:16:40.600000".into();
    }
    let key = TrustedHostKey {
        address: host.address.clone(),
        key: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGb0cm9vdC1leGFtcGxlLWtleS1tYXRlcmlhbA".into(),
        fingerprint: "SHA256:Zm9yIGV4YW1wbGUgb25seSwgbm90IGEgcmVhbCBrZXk".into(),
        trusted_at: at.into(),
    };
    let creds = HostCreds {
        address: host.address.clone(),
        ssh_priv_key: "LS0tLS1CRUdJTiBPUEVOU1NIIFBSSVZBVEUgS0VZLS0tLS0K...".into(),
        remote_user: "root".into(),
    };
    let status = HostStatus {
        kind: "container_manager".into(),
        host: HostStatusHost {
            status: host.status,
            last_check: at.into(),
            status_reason: String::new(),
        },
        container_manager: serde_json::to_value(&node).expect("serializes"),
    };
    let network = Network {
        name: "fs".into(),
        kind: NetworkType::FlannelServer,
        options: [("address".to_string(), json!("192.168.152.1:8080"))].into(),
    };
    let manager = ContainerManagerConfig {
        name: "k8s".into(),
        kind: ContainerManagerType::Kubernetes,
        options: [
            (
                "server_url".to_string(),
                json!("https://192.168.152.1:6443"),
            ),
            ("token".to_string(), json!(REDACTED)),
        ]
        .into(),
    };
    let token = RegistrationToken {
        id: "9f86d081884c7d65".into(),
        cluster: Some("prod".into()),
        expires: "2026-05-05T10:15:02Z".into(),
        single_use: true,
        created_by: "admin".into(),
        created: "2026-05-04T10:15:02Z".into(),
        description: Some("rack 12 re-install".into()),
    };
    let created = RegistrationTokenCreated {
        record: token.clone(),
        token: "cmsreg_9f86d081884c7d65.<secret, shown only here>".into(),
    };
    let audit = AuditRecord {
        id: "00063e5b1c2d3e4f-1a2b3c4d".into(),
        time: "2026-05-04T10:15:02.125000Z".into(),
        user: Some("alice".into()),
        role: Some(Role::Operator),
        source: Some("192.168.152.1".into()),
        method: "PUT".into(),
        route: "/api/v0/cluster/prod/hosts/192.168.152.10".into(),
        target: Some("cluster/prod/hosts/192.168.152.10".into()),
        status: 200,
        outcome: "allowed".into(),
        request_id: Some("6f1c5a2e-3b4d-4e5f-8a9b-0c1d2e3f4a5b".into()),
    };
    let v = |x: &dyn erased::Ser| x.value();
    BTreeMap::from([
        ("RegistrationToken", v(&token)),
        ("RegistrationTokenCreated", v(&created)),
        ("AuditRecord", v(&audit)),
        ("Host", v(&host)),
        ("ClusterView", v(&view)),
        ("NodeView", v(&node)),
        ("Operation", v(&op)),
        ("TrustedHostKey", v(&key)),
        ("HostCreds", v(&creds)),
        ("HostStatus", v(&status)),
        ("Network", v(&network)),
        ("ContainerManagerConfig", v(&manager)),
    ])
}

/// Lets [`model_examples`] put values of different types in one table.
mod erased {
    pub trait Ser {
        fn value(&self) -> serde_json::Value;
    }
    impl<T: serde::Serialize> Ser for T {
        fn value(&self) -> serde_json::Value {
            serde_json::to_value(self).expect("model values serialize")
        }
    }
}

fn add_component_examples(doc: &mut Value) {
    let schemas = &mut doc["components"]["schemas"];
    for (name, example) in model_examples() {
        if let Some(s) = schemas.get_mut(name) {
            s["examples"] = json!([example]);
        }
    }
}

/// The example of a component schema (`examples[0]`, or the older `example`).
fn component_example(doc: &Value, reference: &str) -> Option<Value> {
    let name = reference.strip_prefix("#/components/schemas/")?;
    let s = &doc["components"]["schemas"][name];
    s.get("examples")
        .and_then(|e| e.get(0))
        .or_else(|| s.get("example"))
        .cloned()
}

fn default_description(code: &str) -> &'static str {
    match code {
        "200" => "OK",
        "201" => "Created",
        "400" => "Invalid request: the message names the field or parameter and what is wrong",
        "401" => "No credentials, or invalid ones (WWW-Authenticate: Basic)",
        "403" => {
            "Authenticated, but the caller's role lacks the permission this route needs (the message names it)"
        }
        "404" => "Not found",
        "405" => "The resource is not in a state that allows this",
        "409" => "Conflicts with what is stored",
        "410" => "Gone",
        "413" => "Request body larger than the limit (1 MiB)",
        "503" => "The store is unreachable or did not answer in time; retry later",
        _ => "Response",
    }
}

fn error_example(code: &str, path: &str, description: &str) -> Value {
    let status: u16 = code.parse().unwrap_or(500);
    let subject = if path.contains("/host/") {
        "host 192.168.152.10"
    } else if path.contains("/network/") {
        "network fs"
    } else if path.contains("/containermanager/") {
        "container manager k8s"
    } else {
        "cluster prod"
    };
    let message = match status {
        400 if path.contains("/host") => {
            "remote_user: \"-x\" is not a valid user name (1-32 letters, digits, '.', '_' or '-', not starting with '-')".to_string()
        }
        400 => "name: \"my cluster\" contains ' '; only letters, digits, '_' and '-' are allowed".to_string(),
        403 => "user bob (role viewer) lacks permission networks:write for PUT /api/v0/network/fs (needs role admin)".to_string(),
        401 => "authentication required: send HTTP basic credentials (or a bearer token, when a token plugin is configured)".to_string(),
        404 => format!("{subject} does not exist"),
        413 => format!("request body is larger than the limit of {} bytes", crate::BODY_LIMIT),
        503 => "store unavailable: no answer from etcd within 5 s".to_string(),
        _ => format!("{subject}: {}", description.to_lowercase()),
    };
    json!({"error": {"status": status, "message": message}})
}

/// Example of a list of names or addresses, by operation.
fn list_example(operation_id: &str) -> Value {
    match operation_id {
        "list_clusters" => json!(["prod", "staging"]),
        "list_networks" => json!(["default", "fs"]),
        "list_container_managers" => json!(["k8s"]),
        "list_cluster_members" => json!(["192.168.152.10", "192.168.152.11"]),
        "get_cluster_member" | "join_cluster" => json!(["192.168.152.10"]),
        _ => json!([]),
    }
}

/// Fills in what every operation needs; see the module documentation.
fn complete(doc: &mut Value) {
    let snapshot = doc.clone();
    let paths = doc["paths"].as_object_mut().expect("paths");
    for (path, item) in paths.iter_mut() {
        let open = OPEN_PATHS.contains(&path.as_str());
        let has_params = path.contains('{');
        for method in METHODS {
            let Some(op) = item.get_mut(*method) else {
                continue;
            };
            let op_id = op["operationId"].as_str().unwrap_or_default().to_string();
            let has_body = op.get("requestBody").is_some();
            if open {
                op["security"] = json!([]);
            }
            let error_ref = json!({"$ref": "#/components/schemas/ErrorBody"});
            let mut wanted = Vec::new();
            if has_params || has_body || path == "/api/v0/events" {
                wanted.push("400");
            }
            if !open {
                wanted.push("401");
                wanted.push("403");
                let need = crate::authz::required(
                    &method
                        .to_uppercase()
                        .parse()
                        .unwrap_or(axum::http::Method::GET),
                    path,
                );
                op["x-required-role"] = json!(need.role.as_str());
                op["x-required-permission"] = json!(need.name);
                let text = op["description"].as_str().unwrap_or_default().to_string();
                let mut who = format!(
                    "Requires role **{}** (permission `{}`).",
                    need.role, need.name
                );
                if path == "/api/v0/host" && *method == "put" {
                    who.push_str(" A registration token may also call it.");
                }
                op["description"] = json!(if text.is_empty() {
                    who
                } else {
                    format!("{text}\n\n{who}")
                });
            }
            if has_params {
                wanted.push("404");
            }
            if has_body {
                wanted.push("413");
            }
            if path != "/metrics" {
                wanted.push("503");
            }
            let responses = op["responses"].as_object_mut().expect("responses");
            for code in wanted {
                responses.entry(code).or_insert_with(
                    || json!({"content": {"application/json": {"schema": error_ref.clone()}}}),
                );
            }
            for (code, resp) in responses.iter_mut() {
                if resp["description"].as_str().unwrap_or_default().is_empty() {
                    resp["description"] = json!(default_description(code));
                }
                let description = resp["description"].as_str().unwrap_or_default().to_string();
                if code == "401" {
                    resp["headers"] = json!({"WWW-Authenticate": {
                        "description": "Basic realm=\"commissaire\"",
                        "schema": {"type": "string"}}});
                }
                let Some(content) = resp.get_mut("content").and_then(Value::as_object_mut) else {
                    continue;
                };
                for (media, c) in content.iter_mut() {
                    if c.get("example").is_some() {
                        continue;
                    }
                    let schema = &c["schema"];
                    let example = if let Some(r) = schema["$ref"].as_str() {
                        if r.ends_with("/ErrorBody") {
                            Some(error_example(code, path, &description))
                        } else {
                            component_example(&snapshot, r)
                        }
                    } else if schema["type"] == "array" {
                        match schema["items"]["$ref"].as_str() {
                            Some(r) => component_example(&snapshot, r).map(|e| json!([e])),
                            None => Some(list_example(&op_id)),
                        }
                    } else if media == "text/event-stream" {
                        Some(json!(
                            "id: 42\ndata: {\"revision\":42,\"kind\":\"Host\",\"action\":\"updated\",\"name\":\"192.168.152.10\",\"object\":{\"address\":\"192.168.152.10\",\"status\":\"failed\"}}\n\n"
                        ))
                    } else if path == "/api/v0/status" {
                        Some(json!({"status": "ok", "stuck_workers": [],
                            "store": {"status": "ok", "backend": "etcd", "revision": 4711, "latency_ms": 1.8},
                            "bus": {"type": "in-process", "status": "ok"},
                            "jobs": {"pending": 0},
                            "workers": {
                                "investigator": {"status": "running", "in_process": true, "running": true,
                                    "stuck_reason": null, "round_interval_seconds": 60.0,
                                    "last_round_at": "2026-05-04T10:15:02.125000",
                                    "last_job_at": "2026-05-04T10:14:51.003000", "last_job": "192.168.152.10",
                                    "last_error": {"at": "2026-05-04T09:58:40.500000", "key": "192.168.152.11",
                                        "message": "unreachable: connecting to 192.168.152.11:22 took longer than 5 s (while connecting)"},
                                    "reconciles_ok": 41, "reconcile_errors": 1, "reconciles_running": 0, "in_flight": 0},
                                "watcher": {"status": "running", "in_process": true, "running": true,
                                    "stuck_reason": null, "round_interval_seconds": 60.0,
                                    "last_round_at": "2026-05-04T10:15:00.010000",
                                    "last_job_at": "2026-05-04T10:15:01.700000", "last_job": "192.168.152.10",
                                    "last_error": null, "reconciles_ok": 240, "reconcile_errors": 0,
                                    "reconciles_running": 0, "rounds": 12, "hosts_checked_last_round": 20}}}))
                    } else {
                        None
                    };
                    if let Some(e) = example {
                        c["example"] = e;
                    }
                }
            }
            if let Some(body) = op.get_mut("requestBody") {
                if op_id == "trust_host_key" {
                    body["required"] = json!(false);
                }
                if let Some(c) = body["content"]["application/json"].as_object_mut()
                    && !c.contains_key("example")
                {
                    let schema = c.get("schema").cloned().unwrap_or(Value::Null);
                    let reference = schema["$ref"].as_str().or_else(|| {
                        // `Option<T>` bodies are `oneOf: [null, T]`.
                        schema["oneOf"]
                            .as_array()
                            .and_then(|v| v.iter().find_map(|s| s["$ref"].as_str()))
                    });
                    if let Some(e) = reference.and_then(|r| component_example(&snapshot, r)) {
                        c.insert("example".into(), e);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn every_operation_is_complete() {
        let doc = document();
        let mut ids = HashSet::new();
        let mut operations = 0;
        for (path, item) in doc["paths"].as_object().unwrap() {
            assert!(!path.contains("{operation}"), "{path}");
            for method in METHODS {
                let Some(op) = item.get(*method) else {
                    continue;
                };
                operations += 1;
                let id = op["operationId"].as_str().unwrap();
                assert!(ids.insert(id.to_string()), "duplicate operationId {id}");
                let mut examples = 0;
                for (code, r) in op["responses"].as_object().unwrap() {
                    assert!(
                        !r["description"].as_str().unwrap_or_default().is_empty(),
                        "{method} {path} {code}: no description"
                    );
                    for (media, c) in r["content"].as_object().into_iter().flatten() {
                        assert!(
                            c.get("example").is_some(),
                            "{method} {path} {code} {media}: no example"
                        );
                        examples += 1;
                    }
                }
                if let Some(b) = op.get("requestBody") {
                    let c = &b["content"]["application/json"];
                    assert!(
                        c.get("example").is_some(),
                        "{method} {path}: body without example"
                    );
                    assert_ne!(
                        c["schema"]["type"], "object",
                        "{method} {path}: untyped body"
                    );
                }
                assert!(examples > 0, "{method} {path}: no example");
                let open = OPEN_PATHS.contains(&path.as_str());
                assert_eq!(op.get("security") == Some(&json!([])), open, "{path}");
                assert_eq!(op["responses"].get("401").is_some(), !open, "{path}");
            }
        }
        assert!(operations > 40, "{operations}");
        assert!(ids.contains("start_deploy") && ids.contains("resume_upgrade"));
    }
}
