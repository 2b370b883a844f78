//! The OpenAPI document: valid according to a real validator (`openapi-spec-validator`, the
//! reference implementation from PyPI, which `scripts/test.sh` installs when missing), and
//! complete: every route the router answers — with every method it answers — is in it, and
//! nothing in it is not routed.

mod common;

use std::collections::BTreeSet;
use std::process::Command;

use common::*;
use reqwest::Method;
use serde_json::Value;

/// The Python that has `openapi_spec_validator` (`COMMISSAIRE_PYTHON`, default `python3`).
fn python() -> String {
    std::env::var("COMMISSAIRE_PYTHON").unwrap_or_else(|_| "python3".to_string())
}

async fn document(server: &Server) -> Value {
    let r = server
        .send(
            server
                .client()
                .get(format!("{}/api/v0/openapi.json", server.base))
                .timeout(REQUEST_TIMEOUT),
        )
        .await;
    expect_status(&r, 200)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_passes_openapi_spec_validator() {
    let env = Env::new(Backend::Sqlite);
    let server = env.server().await;
    let doc = document(&server).await;
    assert_eq!(doc["openapi"], "3.1.0");
    let path = env.dir().join("openapi.json");
    std::fs::write(&path, doc.to_string()).expect("write the document");
    let out = Command::new(python())
        .args([
            "-c",
            "import json, sys\n\
             from openapi_spec_validator import validate\n\
             validate(json.load(open(sys.argv[1])))\n\
             print('valid')",
        ])
        .arg(&path)
        .output()
        .expect("run python3 (scripts/test.sh installs it)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("No module named 'openapi_spec_validator'"),
        "openapi-spec-validator is not installed for {}: run scripts/test.sh --check, or \
         `{} -m pip install openapi-spec-validator`",
        python(),
        python()
    );
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "valid",
        "the document is not valid OpenAPI:\n{stderr}"
    );
}

/// A concrete URL for a path template.
fn concrete(template: &str) -> String {
    template
        .replace("{address}", "192.0.2.1")
        .replace("{name}", "c1")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_and_method_is_documented() {
    let env = Env::new(Backend::Sqlite);
    let server = env.server().await;
    let doc = document(&server).await;
    let documented = doc["paths"].as_object().expect("paths");

    let mut routed = commissaire_server::api::paths();
    routed.push("/metrics".to_string());
    let mut checked = 0;
    for path in &routed {
        // A method no route has: the router answers 405 and lists the methods it serves.
        let r = server
            .send(server.request_url(Method::TRACE, &format!("{}{}", server.base, concrete(path))))
            .await;
        assert_eq!(r.status, 405, "TRACE {path}: {r:?}");
        let allow = r
            .headers
            .get("allow")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_else(|| panic!("{path}: 405 without Allow: {r:?}"))
            .to_string();
        let item = documented
            .get(path)
            .unwrap_or_else(|| panic!("{path} is routed but not in the document"));
        for method in allow.split(',').map(|m| m.trim().to_lowercase()) {
            // axum answers HEAD wherever GET is routed; HEAD is implied by GET in OpenAPI.
            if method == "head" || method.is_empty() {
                continue;
            }
            assert!(
                item.get(&method).is_some(),
                "{} {path} is routed but not documented (documented: {:?})",
                method.to_uppercase(),
                item.as_object().map(|o| o.keys().collect::<Vec<_>>())
            );
            checked += 1;
        }
    }
    assert!(checked >= 40, "only {checked} routes checked");
    let routed: BTreeSet<&String> = routed.iter().collect();
    for path in documented.keys() {
        assert!(routed.contains(path), "{path} is documented but not routed");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_are_typed_and_security_is_per_route() {
    let env = Env::new(Backend::Sqlite);
    let server = env.server().await;
    let doc = document(&server).await;
    let paths = &doc["paths"];
    let body =
        |path: &str| paths[path]["put"]["requestBody"]["content"]["application/json"].clone();
    let host = body("/api/v0/host/{address}");
    assert_eq!(
        host["schema"]["$ref"],
        "#/components/schemas/HostCreateBody"
    );
    assert!(host["example"]["ssh_priv_key"].is_string(), "{host}");
    let deploy = &paths["/api/v0/cluster/{name}/deploy"]["put"]["requestBody"];
    assert_eq!(deploy["required"], true);
    let schemas = &doc["components"]["schemas"];
    assert_eq!(
        schemas["DeployBody"]["required"],
        serde_json::json!(["version"])
    );
    assert_eq!(
        schemas["ClusterBody"]["properties"]["network"]["pattern"],
        "^[A-Za-z0-9_-]{1,253}$"
    );
    let network_type = &schemas["NetworkBody"]["properties"]["type"];
    assert!(
        network_type.to_string().contains("NetworkType"),
        "{network_type}"
    );

    // /status is open, the rest needs the basic scheme (the document-wide default).
    assert_eq!(
        paths["/api/v0/status"]["get"]["security"],
        serde_json::json!([])
    );
    assert!(paths["/api/v0/hosts"]["get"].get("security").is_none());
    assert_eq!(doc["security"], serde_json::json!([{"basic": []}]));
    assert!(paths["/api/v0/hosts"]["get"]["responses"]["401"].is_object());

    // The Swagger UI is served and points at this document.
    let r = server
        .send(
            server
                .client()
                .get(format!(
                    "{}/api/v0/docs/swagger-initializer.js",
                    server.base
                ))
                .timeout(REQUEST_TIMEOUT),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.text.contains("/api/v0/openapi.json"), "{}", r.text);
}
