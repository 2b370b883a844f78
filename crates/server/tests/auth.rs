//! Authentication and authorization through real HTTP: the route × role matrix, registration
//! tokens, the audit log, and every plugin (basic with roles, static API tokens, Keystone
//! password and token against a fake Keystone over TLS, TLS client certificates), alone and
//! stacked.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use reqwest::Method;
use serde_json::{Value, json};
use testsupport::fakekeystone::FakeKeystone;
use testsupport::pki::TestPki;

const OPERATOR: (&str, &str) = ("olga", "operator-pass-1234");
const VIEWER: (&str, &str) = ("victor", "viewer-pass-5678");

/// Adds an operator and a viewer to the harness's users file (its own user, without a role,
/// stays an admin: what every user was before roles existed).
fn add_role_users(env: &Env) {
    let mut users: Value =
        serde_json::from_str(&std::fs::read_to_string(env.users_file()).unwrap()).unwrap();
    for ((name, pw), role) in [(OPERATOR, "operator"), (VIEWER, "viewer")] {
        users[name] = json!({"hash": bcrypt::hash(pw, 4).unwrap(), "role": role});
    }
    std::fs::write(env.users_file(), users.to_string()).unwrap();
}

/// Sends `method path` with `body` as `creds` (`None`: the harness's admin).
async fn call(
    s: &Server,
    creds: Option<(&str, &str)>,
    method: Method,
    path: &str,
    body: Option<&Value>,
) -> Resp {
    let mut rb = match creds {
        None => s.request(method, path),
        Some((u, p)) => s
            .client()
            .request(method, s.url(path))
            .timeout(REQUEST_TIMEOUT)
            .basic_auth(u, Some(p)),
    };
    if let Some(b) = body {
        rb = rb
            .header("content-type", "application/json")
            .body(b.to_string());
    }
    s.send(rb).await
}

/// Sends a request with a bearer token.
async fn bearer(s: &Server, token: &str, method: Method, path: &str, body: Option<&Value>) -> Resp {
    let mut rb = s
        .client()
        .request(method, s.url(path))
        .timeout(REQUEST_TIMEOUT)
        .bearer_auth(token);
    if let Some(b) = body {
        rb = rb
            .header("content-type", "application/json")
            .body(b.to_string());
    }
    s.send(rb).await
}

fn role_rank(r: &str) -> u8 {
    match r {
        "viewer" => 0,
        "operator" => 1,
        "admin" => 2,
        other => panic!("unknown role {other}"),
    }
}

/// One row of the matrix: a request, the role the documentation says it needs, and the
/// answers that mean "allowed" for it (2xx, or the route's own refusal such as a host that is
/// not ready to join).
struct Row {
    method: Method,
    template: &'static str,
    path: String,
    body: Option<Value>,
    role: &'static str,
    ok: &'static [u16],
}

fn row(
    method: Method,
    template: &'static str,
    path: impl Into<String>,
    body: Option<Value>,
    role: &'static str,
    ok: &'static [u16],
) -> Row {
    Row {
        method,
        template,
        path: path.into(),
        body,
        role,
        ok,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_answers_each_role_as_documented() {
    let env = Env::new(Backend::Sqlite);
    add_role_users(&env);
    let s = env.server().await;
    let key = env.key(KeyKind::Ed25519);
    // ssh-keygen wrote the public half next to it: a real key line to trust.
    let pub_file = std::fs::read_dir(env.dir().join("keys"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "pub"))
        .unwrap();
    let host_key = std::fs::read_to_string(pub_file)
        .unwrap()
        .trim()
        .to_string();
    use Method as M;
    let a = "127.0.1.1";
    let b = "127.0.1.2";
    let mut rows = vec![
        row(M::GET, "/api/v0/hosts", "/hosts", None, "viewer", &[200]),
        row(
            M::PUT,
            "/api/v0/network/{name}",
            "/network/n1",
            Some(json!({"type": "flannel_server", "options": {"address": "127.0.0.1:8080"}})),
            "admin",
            &[201],
        ),
        row(
            M::GET,
            "/api/v0/networks",
            "/networks",
            None,
            "viewer",
            &[200],
        ),
        row(
            M::GET,
            "/api/v0/network/{name}",
            "/network/n1",
            None,
            "viewer",
            &[200],
        ),
        row(
            M::PUT,
            "/api/v0/containermanager/{name}",
            "/containermanager/cm1",
            Some(json!({"type": "trivial"})),
            "admin",
            &[201],
        ),
        row(
            M::GET,
            "/api/v0/containermanagers",
            "/containermanagers",
            None,
            "viewer",
            &[200],
        ),
        row(
            M::GET,
            "/api/v0/containermanager/{name}",
            "/containermanager/cm1",
            None,
            "viewer",
            &[200],
        ),
        row(
            M::PUT,
            "/api/v0/cluster/{name}",
            "/cluster/c1",
            Some(json!({"network": "n1"})),
            "admin",
            &[201],
        ),
        row(
            M::GET,
            "/api/v0/clusters",
            "/clusters",
            None,
            "viewer",
            &[200],
        ),
        row(
            M::GET,
            "/api/v0/cluster/{name}",
            "/cluster/c1",
            None,
            "viewer",
            &[200],
        ),
        row(
            M::PUT,
            "/api/v0/host/{address}",
            format!("/host/{a}"),
            Some(json!({"ssh_priv_key": key.b64})),
            "operator",
            &[201],
        ),
        row(
            M::PUT,
            "/api/v0/host",
            "/host",
            Some(json!({"address": b, "ssh_priv_key": key.b64})),
            "operator",
            &[201],
        ),
        row(
            M::GET,
            "/api/v0/host/{address}",
            format!("/host/{a}"),
            None,
            "viewer",
            &[200],
        ),
        row(
            M::GET,
            "/api/v0/host/{address}/status",
            format!("/host/{a}/status"),
            None,
            "viewer",
            &[200],
        ),
        row(
            M::GET,
            "/api/v0/host/{address}/creds",
            format!("/host/{a}/creds"),
            None,
            "operator",
            &[200],
        ),
        row(
            M::PUT,
            "/api/v0/host/{address}/hostkey",
            format!("/host/{a}/hostkey"),
            Some(json!({"key": host_key})),
            "admin",
            &[200],
        ),
        row(
            M::GET,
            "/api/v0/host/{address}/hostkey",
            format!("/host/{a}/hostkey"),
            None,
            "viewer",
            &[200],
        ),
        row(
            M::GET,
            "/api/v0/cluster/{name}/hosts",
            "/cluster/c1/hosts",
            None,
            "viewer",
            &[200],
        ),
        row(
            M::PUT,
            "/api/v0/cluster/{name}/hosts",
            "/cluster/c1/hosts",
            Some(json!({"old": [], "new": []})),
            "operator",
            &[200],
        ),
        // The host is still being investigated: allowed, but not ready to join (405).
        row(
            M::PUT,
            "/api/v0/cluster/{name}/hosts/{address}",
            format!("/cluster/c1/hosts/{a}"),
            None,
            "operator",
            &[405],
        ),
        row(
            M::GET,
            "/api/v0/cluster/{name}/hosts/{address}",
            format!("/cluster/c1/hosts/{a}"),
            None,
            "viewer",
            &[404],
        ),
        row(
            M::DELETE,
            "/api/v0/cluster/{name}/hosts/{address}",
            format!("/cluster/c1/hosts/{a}"),
            None,
            "operator",
            &[200],
        ),
    ];
    for kind in ["restart", "upgrade", "deploy"] {
        let t = |suffix: &str| -> &'static str {
            Box::leak(format!("/api/v0/cluster/{{name}}/{kind}{suffix}").into_boxed_str())
        };
        let body = if kind == "deploy" {
            json!({"version": "1.2"})
        } else {
            json!({})
        };
        rows.push(row(
            M::PUT,
            t(""),
            format!("/cluster/c1/{kind}"),
            Some(body),
            "operator",
            &[201],
        ));
        rows.push(row(
            M::GET,
            t(""),
            format!("/cluster/c1/{kind}"),
            None,
            "viewer",
            &[200],
        ));
        // An empty cluster's run ends at once: pausing, resuming or cancelling it is a 409.
        rows.push(row(
            M::PUT,
            t("/pause"),
            format!("/cluster/c1/{kind}/pause"),
            None,
            "operator",
            &[200, 409],
        ));
        rows.push(row(
            M::PUT,
            t("/resume"),
            format!("/cluster/c1/{kind}/resume"),
            None,
            "operator",
            &[200, 409],
        ));
        rows.push(row(
            M::DELETE,
            t(""),
            format!("/cluster/c1/{kind}"),
            None,
            "operator",
            &[200, 409],
        ));
    }
    rows.extend([
        row(
            M::POST,
            "/api/v0/registration-tokens",
            "/registration-tokens",
            Some(json!({})),
            "admin",
            &[201],
        ),
        row(
            M::GET,
            "/api/v0/registration-tokens",
            "/registration-tokens",
            None,
            "admin",
            &[200],
        ),
        row(M::GET, "/api/v0/audit", "/audit", None, "admin", &[200]),
        row(
            M::DELETE,
            "/api/v0/host/{address}",
            format!("/host/{b}"),
            None,
            "operator",
            &[200],
        ),
        row(
            M::DELETE,
            "/api/v0/cluster/{name}",
            "/cluster/c1",
            None,
            "admin",
            &[200],
        ),
        row(
            M::DELETE,
            "/api/v0/containermanager/{name}",
            "/containermanager/cm1",
            None,
            "admin",
            &[200],
        ),
        row(
            M::DELETE,
            "/api/v0/network/{name}",
            "/network/n1",
            None,
            "admin",
            &[200],
        ),
    ]);
    let users = [
        ("viewer", Some(VIEWER)),
        ("operator", Some(OPERATOR)),
        ("admin", None),
    ];
    let mut token_id = String::new();
    for r in &rows {
        let need = role_rank(r.role);
        let write = r.method != M::GET;
        for (role, creds) in users {
            let allowed = role_rank(role) >= need;
            // A write is sent once by the lowest role allowed (after every refused one), so
            // each one runs exactly once; reads go to every role.
            if write && allowed && role_rank(role) != need {
                continue;
            }
            let resp = call(&s, creds, r.method.clone(), &r.path, r.body.as_ref()).await;
            if allowed {
                assert!(
                    r.ok.contains(&resp.status),
                    "{} {} as {role}: expected one of {:?}, got {resp:?}",
                    r.method,
                    r.path,
                    r.ok
                );
            } else {
                expect_error(&resp, 403, "lacks permission");
                assert!(
                    resp.text.contains(&format!("needs role {}", r.role)),
                    "{resp:?}"
                );
            }
            if r.template == "/api/v0/registration-tokens" && r.method == M::POST && allowed {
                token_id = resp.json["id"].as_str().unwrap().to_string();
            }
        }
    }
    // Revoking the token made above, by role.
    let path = format!("/registration-tokens/{token_id}");
    for (role, creds) in users {
        let resp = call(&s, creds, M::DELETE, &path, None).await;
        if role == "admin" {
            expect_status(&resp, 200);
        } else {
            expect_error(&resp, 403, "registration-tokens:manage");
        }
    }
    rows.push(row(
        M::DELETE,
        "/api/v0/registration-tokens/{id}",
        path,
        None,
        "admin",
        &[200],
    ));
    // The change feed, by role: a viewer may follow it.
    for (_, creds) in users {
        let mut rb = s
            .client()
            .get(s.url("/events"))
            .timeout(Duration::from_secs(3));
        if let Some((u, p)) = creds {
            rb = rb.basic_auth(u, Some(p));
        } else {
            let (u, p) = s.creds.clone().unwrap();
            rb = rb.basic_auth(u, Some(p));
        }
        let resp = rb.send().await.unwrap();
        assert_eq!(resp.status(), 200);
    }
    rows.push(row(
        M::GET,
        "/api/v0/events",
        "/events",
        None,
        "viewer",
        &[200],
    ));

    // The table is the documented one: every operation of the OpenAPI document (except the
    // open ones) is in it, with the role the document names.
    let doc = expect_status(
        &s.send(
            s.client()
                .get(format!("{}/api/v0/openapi.json", s.base))
                .timeout(REQUEST_TIMEOUT),
        )
        .await,
        200,
    );
    let tested: BTreeMap<(String, String), &str> = rows
        .iter()
        .map(|r| {
            (
                (r.method.as_str().to_lowercase(), r.template.to_string()),
                r.role,
            )
        })
        .collect();
    let mut documented = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let Some(role) = op.get("x-required-role").and_then(Value::as_str) else {
                assert_eq!(op["security"], json!([]), "{method} {path} names no role");
                continue;
            };
            documented += 1;
            let key = (method.clone(), path.clone());
            assert_eq!(
                tested.get(&key).copied(),
                Some(role),
                "{method} {path}: the document says {role}; the matrix must test it with that role"
            );
        }
    }
    assert_eq!(
        documented,
        tested.len(),
        "the matrix tests a route the document lacks"
    );
}
