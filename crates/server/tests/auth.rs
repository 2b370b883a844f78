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

async fn new_token(s: &Server, body: Value) -> Resp {
    call(s, None, Method::POST, "/registration-tokens", Some(&body)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_tokens_register_hosts_and_nothing_else() {
    let env = Env::new(Backend::Sqlite);
    add_role_users(&env);
    let s = env.server().await;
    let key = env.key(KeyKind::Ed25519);
    let host = |addr: &str| json!({"address": addr, "ssh_priv_key": key.b64});
    expect_status(&s.put("/cluster/c1", s.cluster_body().await).await, 201);
    expect_status(&s.put("/cluster/c2", s.cluster_body().await).await, 201);

    // Only admins create them; bad input is refused naming the field, and writes nothing
    // (but the audit log).
    for (bad, needle) in [
        (json!({"expires_in": -5}), "expires_in"),
        (json!({"single_use": "yes"}), "single_use"),
        (json!({"cluster": "nope"}), "cluster nope does not exist"),
        (json!({"password": "x"}), "unknown field"),
    ] {
        let r = new_token(&s, bad).await;
        assert!(r.status == 400 || r.status == 409, "{r:?}");
        assert!(r.text.contains(needle), "{r:?}");
    }
    expect_error(
        &call(
            &s,
            Some(OPERATOR),
            Method::POST,
            "/registration-tokens",
            Some(&json!({})),
        )
        .await,
        403,
        "registration-tokens:manage",
    );
    assert_eq!(
        expect_status(&s.get("/registration-tokens").await, 200),
        json!([]),
        "refused requests made no token"
    );

    let any = expect_status(&new_token(&s, json!({"description": "rack 12"})).await, 201);
    let token = any["token"].as_str().unwrap().to_string();
    assert!(token.starts_with("cmsreg_"), "{any}");
    let expires = chrono::DateTime::parse_from_rfc3339(any["expires"].as_str().unwrap()).unwrap();
    let in_a_day = chrono::Utc::now() + chrono::Duration::hours(24);
    assert!(
        (expires.timestamp() - in_a_day.timestamp()).abs() < 60,
        "the default lifetime is 24 h: {any}"
    );
    // The list never shows a secret.
    let list = expect_status(&s.get("/registration-tokens").await, 200);
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert!(list[0].get("token").is_none() && !list.to_string().contains(&token[20..]));

    // It registers a host...
    let h = expect_status(
        &bearer(&s, &token, Method::PUT, "/host", Some(&host("127.0.1.1"))).await,
        201,
    );
    assert_eq!(h["address"], "127.0.1.1");
    // The audit log names the token and the host it registered (never the token's secret).
    let audit = expect_status(&s.get("/audit?target=host/127.0.1.1").await, 200);
    let rec = &audit[0];
    assert_eq!(
        rec["user"],
        format!("registration-token/{}", any["id"].as_str().unwrap())
    );
    assert_eq!(
        (rec["route"].as_str(), rec["status"].as_u64()),
        (Some("/api/v0/host"), Some(201))
    );
    assert!(rec["role"].is_null(), "{rec}");
    assert!(!audit.to_string().contains(&token[20..]));
    // ...and does nothing else.
    for (m, path, body) in [
        (Method::GET, "/hosts", None),
        (Method::GET, "/host/127.0.1.1/creds", None),
        (Method::PUT, "/host/127.0.1.2", Some(host("127.0.1.2"))),
        (Method::DELETE, "/host/127.0.1.1", None),
        (Method::PUT, "/cluster/c3", Some(json!({}))),
        (Method::POST, "/registration-tokens", Some(json!({}))),
        (Method::GET, "/audit", None),
    ] {
        expect_error(
            &bearer(&s, &token, m, path, body.as_ref()).await,
            403,
            "may only register a host",
        );
    }
    expect_status(&s.get("/host/127.0.1.1").await, 200);

    // Scoped to a cluster: the host joins it, and may not name another.
    let scoped = expect_status(&new_token(&s, json!({"cluster": "c1"})).await, 201);
    let scoped = scoped["token"].as_str().unwrap();
    let mut other = host("127.0.1.3");
    other["cluster"] = json!("c2");
    expect_error(
        &bearer(&s, scoped, Method::PUT, "/host", Some(&other)).await,
        403,
        "only registers hosts into cluster c1",
    );
    expect_status(&s.get("/host/127.0.1.3").await, 404);
    expect_status(
        &bearer(&s, scoped, Method::PUT, "/host", Some(&host("127.0.1.3"))).await,
        201,
    );
    let members = expect_status(&s.get("/cluster/c1/hosts").await, 200);
    assert_eq!(members, json!(["127.0.1.3"]));

    // Single use: the second host is refused, the token is gone.
    let once = expect_status(&new_token(&s, json!({"single_use": true})).await, 201);
    let once_token = once["token"].as_str().unwrap();
    expect_status(
        &bearer(
            &s,
            once_token,
            Method::PUT,
            "/host",
            Some(&host("127.0.1.4")),
        )
        .await,
        201,
    );
    expect_error(
        &bearer(
            &s,
            once_token,
            Method::PUT,
            "/host",
            Some(&host("127.0.1.5")),
        )
        .await,
        401,
        "invalid credentials",
    );
    expect_status(&s.get("/host/127.0.1.5").await, 404);

    // Expiry.
    let short = expect_status(&new_token(&s, json!({"expires_in": 1})).await, 201);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    expect_error(
        &bearer(
            &s,
            short["token"].as_str().unwrap(),
            Method::PUT,
            "/host",
            Some(&host("127.0.1.6")),
        )
        .await,
        401,
        "invalid credentials",
    );
    expect_status(&s.get("/host/127.0.1.6").await, 404);

    // Revocation, by id; a wrong secret for a live id is refused as well.
    let id = any["id"].as_str().unwrap();
    let forged = format!("cmsreg_{id}.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA");
    expect_error(
        &bearer(&s, &forged, Method::PUT, "/host", Some(&host("127.0.1.7"))).await,
        401,
        "invalid credentials",
    );
    expect_status(&s.delete(&format!("/registration-tokens/{id}")).await, 200);
    expect_error(
        &bearer(&s, &token, Method::PUT, "/host", Some(&host("127.0.1.7"))).await,
        401,
        "invalid credentials",
    );
    expect_status(&s.get("/host/127.0.1.7").await, 404);
    expect_error(
        &s.delete(&format!("/registration-tokens/{id}")).await,
        404,
        "does not exist",
    );
    // Used-up, expired and revoked tokens are not listed.
    let ids: Vec<String> = expect_status(&s.get("/registration-tokens").await, 200)
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        ids.len(),
        1,
        "only the cluster-scoped token is left: {ids:?}"
    );
    // The store holds digests, never a token.
    let db = std::fs::read(env.dir().join("data/store.db")).unwrap();
    let db = String::from_utf8_lossy(&db);
    for t in [&token, scoped] {
        let secret = t.split_once('.').unwrap().1;
        assert!(
            !db.contains(secret),
            "a token secret is in the store in clear"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_log_records_changes_and_refusals_of_each_user() {
    let env = Env::new(Backend::Sqlite);
    add_role_users(&env);
    let s = env.server().await;
    let key = env.key(KeyKind::Ed25519);
    // Changes by the admin and by the operator; refused attempts by the viewer, by the
    // operator beyond its role, and with a wrong password.
    expect_status(&s.put("/cluster/c1", s.cluster_body().await).await, 201);
    expect_status(
        &call(
            &s,
            Some(OPERATOR),
            Method::PUT,
            "/host/127.0.1.1",
            Some(&json!({"ssh_priv_key": key.b64})),
        )
        .await,
        201,
    );
    expect_status(
        &call(&s, Some(OPERATOR), Method::DELETE, "/host/127.0.1.1", None).await,
        200,
    );
    expect_status(
        &call(&s, Some(VIEWER), Method::DELETE, "/cluster/c1", None).await,
        403,
    );
    expect_status(
        &call(&s, Some(OPERATOR), Method::DELETE, "/cluster/c1", None).await,
        403,
    );
    expect_status(
        &call(&s, Some(VIEWER), Method::GET, "/host/127.0.1.1/creds", None).await,
        403,
    );
    expect_status(
        &call(
            &s,
            Some((OPERATOR.0, "wrong-password-999")),
            Method::PUT,
            "/cluster/c9",
            Some(&json!({})),
        )
        .await,
        401,
    );
    // A read that is allowed is not a change: not recorded.
    expect_status(
        &call(&s, Some(VIEWER), Method::GET, "/clusters", None).await,
        200,
    );

    let all = expect_status(&s.get("/audit").await, 200);
    let records = all.as_array().unwrap();
    let find = |user: Option<&str>, method: &str, route: &str| {
        records
            .iter()
            .find(|r| r["user"].as_str() == user && r["method"] == method && r["route"] == route)
            .unwrap_or_else(|| panic!("no record of {user:?} {method} {route} in {all:#}"))
            .clone()
    };
    let r = find(Some(OPERATOR.0), "PUT", "/api/v0/host/127.0.1.1");
    assert_eq!(r["role"], "operator");
    assert_eq!(r["status"], 201);
    assert_eq!(r["outcome"], "allowed");
    assert_eq!(r["target"], "host/127.0.1.1");
    assert_eq!(r["source"], "127.0.0.1");
    assert!(
        r["request_id"].as_str().is_some_and(|id| !id.is_empty()),
        "{r}"
    );
    assert!(chrono::DateTime::parse_from_rfc3339(r["time"].as_str().unwrap()).is_ok());
    let r = find(Some(USER), "PUT", "/api/v0/cluster/c1");
    assert_eq!(
        (r["role"].as_str(), r["outcome"].as_str()),
        (Some("admin"), Some("allowed"))
    );
    for (user, method, route) in [
        (VIEWER.0, "DELETE", "/api/v0/cluster/c1"),
        (OPERATOR.0, "DELETE", "/api/v0/cluster/c1"),
        (VIEWER.0, "GET", "/api/v0/host/127.0.1.1/creds"),
    ] {
        let r = find(Some(user), method, route);
        assert_eq!(
            (r["status"].as_u64(), r["outcome"].as_str()),
            (Some(403), Some("refused")),
            "{r}"
        );
    }
    let r = find(None, "PUT", "/api/v0/cluster/c9");
    assert_eq!(
        (r["status"].as_u64(), r["outcome"].as_str()),
        (Some(401), Some("refused"))
    );
    assert!(
        !records
            .iter()
            .any(|r| r["method"] == "GET" && r["route"] == "/api/v0/clusters"),
        "allowed reads are not audited"
    );
    // No secret in any field: passwords, the private key.
    let text = all.to_string();
    for secret in [PASSWORD, OPERATOR.1, VIEWER.1, "wrong-password-999"]
        .into_iter()
        .map(str::to_string)
        .chain(key.secret_fragments())
    {
        assert!(!text.contains(&secret), "a secret is in the audit log");
    }
    // Filters: user, target, time.
    let mine = expect_status(&s.get(&format!("/audit?user={}", OPERATOR.0)).await, 200);
    assert!(
        mine.as_array()
            .unwrap()
            .iter()
            .all(|r| r["user"] == OPERATOR.0)
    );
    assert_eq!(mine.as_array().unwrap().len(), 3);
    let host = expect_status(&s.get("/audit?target=host/127.0.1.1").await, 200);
    assert_eq!(host.as_array().unwrap().len(), 2, "{host:#}");
    let later = chrono::Utc::now() + chrono::Duration::seconds(5);
    let since = later.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let none = expect_status(&s.get(&format!("/audit?since={since}")).await, 200);
    assert_eq!(none, json!([]));
    expect_error(&s.get("/audit?since=yesterday").await, 400, "since");
    // Admins only (and asking is itself a refused attempt on record).
    expect_error(
        &call(&s, Some(OPERATOR), Method::GET, "/audit", None).await,
        403,
        "audit:read",
    );
    // Each record is also a JSON log line.
    let log = std::fs::read_to_string(&s.opts.log_path).unwrap();
    assert!(
        log.lines().any(|l| l.contains("audit")
            && l.contains(r#""route":"/api/v0/host/127.0.1.1""#)
            && l.contains(r#""user":"olga""#)),
        "{}",
        s.log_tail(20)
    );
}

/// Options for a server with `plugins` in front of the harness's basic-auth plugin.
fn with_plugins(env: &Env, name: &str, plugins: &[String]) -> ServerOptions {
    let mut opts = env.options(name);
    for p in plugins {
        opts.extra_args.push("--authentication-plugin".into());
        opts.extra_args.push(p.clone());
    }
    opts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_tokens_authenticate_scripts_with_their_role() {
    use sha2::Digest;
    let env = Env::new(Backend::Sqlite);
    let token = "ci-token-0123456789abcdef0123456789abcdef";
    let tokens = env.dir().join("tokens.json");
    let hash = format!(
        "sha256:{}",
        hex::encode(sha2::Sha256::digest(token.as_bytes()))
    );
    std::fs::write(
        &tokens,
        json!({"ci-bot": {"hash": hash, "role": "operator"}}).to_string(),
    )
    .unwrap();
    // Spelled the way the seeds spell plugins.
    let s = Server::start(with_plugins(
        &env,
        "data",
        &[format!(
            "commissaire.authentication.apitokenauth:filepath={}",
            tokens.display()
        )],
    ))
    .await;
    expect_status(&bearer(&s, token, Method::GET, "/hosts", None).await, 200);
    expect_error(
        &bearer(
            &s,
            token,
            Method::PUT,
            "/network/n1",
            Some(&json!({"type": "flannel_server", "options": {"address": "127.0.0.1:8080"}})),
        )
        .await,
        403,
        "user ci-bot (role operator) lacks permission networks:write",
    );
    expect_error(
        &bearer(&s, "ci-token-wrong", Method::GET, "/hosts", None).await,
        401,
        "invalid credentials",
    );
    // Stacked: basic credentials still work, through the next plugin.
    expect_status(&s.get("/hosts").await, 200);
    // The file holds digests only, and a changed file is read again.
    std::fs::write(&tokens, json!({"ci-bot": {"hash": hash, "role": "viewer"}, "pad": {"hash": format!("sha256:{}", "0".repeat(64))}}).to_string()).unwrap();
    expect_error(
        &bearer(&s, token, Method::PUT, "/host/127.0.1.1", Some(&json!({}))).await,
        403,
        "role viewer",
    );
    // A bad tokens file stops start-up with a message naming it.
    let bad = env.dir().join("bad-tokens.json");
    std::fs::write(&bad, json!({"x": {"hash": token}}).to_string()).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_commissaire-server"))
        .args(["--no-config-file", "--data-dir"])
        .arg(env.dir().join("bad"))
        .arg("--authentication-plugin")
        .arg(format!("apitokenauth:filepath={}", bad.display()))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("sha256:") && !err.contains(token), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keystone_passwords_and_tokens_over_tls() {
    let ks = FakeKeystone::start();
    ks.add_user("Default", "kate", "ks-pass-kate", &["member"]);
    ks.add_user("Default", "adam", "ks-pass-adam", &["admin"]);
    ks.add_user("Other", "odin", "ks-pass-odin", &["admin"]);
    let env = Env::new(Backend::Sqlite);
    let ca = ks.ca_path();
    let opts = |url: &str, ca: Option<&std::path::Path>| {
        let ca = ca
            .map(|c| format!(",ca_path={}", c.display()))
            .unwrap_or_default();
        vec![
            format!(
                "commissaire_http.authentication.keystonepasswordauth:url={url}{ca},default_role=viewer,roles={{\"admin\":\"admin\"}}"
            ),
            format!(
                "keystonetokenauth:url={url}/auth/tokens{ca},default_role=viewer,roles={{\"admin\":\"admin\"}}"
            ),
        ]
    };
    let s = Server::start(with_plugins(&env, "data", &opts(&ks.url(), Some(&ca)))).await;
    let net = json!({"type": "flannel_server", "options": {"address": "127.0.0.1:8080"}});

    // Passwords: the Keystone roles decide.
    expect_status(
        &call(
            &s,
            Some(("kate", "ks-pass-kate")),
            Method::GET,
            "/hosts",
            None,
        )
        .await,
        200,
    );
    expect_error(
        &call(
            &s,
            Some(("kate", "ks-pass-kate")),
            Method::PUT,
            "/network/n1",
            Some(&net),
        )
        .await,
        403,
        "role viewer",
    );
    expect_status(
        &call(
            &s,
            Some(("adam", "ks-pass-adam")),
            Method::PUT,
            "/network/n1",
            Some(&net),
        )
        .await,
        201,
    );
    // Wrong password, and a user of another domain than the configured one (Default).
    expect_error(
        &call(&s, Some(("kate", "nope")), Method::GET, "/hosts", None).await,
        401,
        "invalid credentials",
    );
    expect_status(
        &call(
            &s,
            Some(("odin", "ks-pass-odin")),
            Method::GET,
            "/hosts",
            None,
        )
        .await,
        401,
    );
    // A success is remembered briefly: no second Keystone call.
    let before = ks.requests().len();
    expect_status(
        &call(
            &s,
            Some(("kate", "ks-pass-kate")),
            Method::GET,
            "/clusters",
            None,
        )
        .await,
        200,
    );
    assert_eq!(ks.requests().len(), before, "{:?}", ks.requests());
    // Stacking: Keystone refuses the harness's user, the basic plugin after it accepts.
    expect_status(&s.get("/hosts").await, 200);

    // Tokens, validated with GET /v3/auth/tokens.
    let token = ks.issue_token("Default", "adam");
    let with_token = |t: &str, m: Method, path: &str| {
        s.client()
            .request(m, s.url(path))
            .timeout(REQUEST_TIMEOUT)
            .header("X-Auth-Token", t)
    };
    expect_status(
        &s.send(with_token(&token, Method::DELETE, "/network/n1"))
            .await,
        200,
    );
    assert!(ks.requests().contains(&"GET /v3/auth/tokens".to_string()));
    expect_error(
        &s.send(with_token("gAAAAnot-a-token", Method::GET, "/hosts"))
            .await,
        401,
        "invalid credentials",
    );
    let viewer_token = ks.issue_token("Default", "kate");
    expect_status(
        &s.send(
            with_token(&viewer_token, Method::PUT, "/network/n1")
                .header("content-type", "application/json")
                .body(net.to_string()),
        )
        .await,
        403,
    );

    // Keystone unreachable: 503, never an allow; other plugins still let their users in.
    let down = format!("https://127.0.0.1:{}/v3", testsupport::free_port());
    let s2 = Server::start(with_plugins(&env, "down", &opts(&down, Some(&ca)))).await;
    expect_error(
        &call(
            &s2,
            Some(("kate", "ks-pass-kate")),
            Method::GET,
            "/hosts",
            None,
        )
        .await,
        503,
        "Keystone",
    );
    expect_error(&s2.send(with_token_on(&s2, &token)).await, 503, "Keystone");
    expect_status(&s2.get("/hosts").await, 200);
    // TLS is verified: without the fake's CA, Keystone is not trusted, and nobody gets in
    // through it.
    let s3 = Server::start(with_plugins(&env, "untrusted", &opts(&ks.url(), None))).await;
    expect_status(
        &call(
            &s3,
            Some(("kate", "ks-pass-kate")),
            Method::GET,
            "/hosts",
            None,
        )
        .await,
        503,
    );
}

fn with_token_on(s: &Server, token: &str) -> reqwest::RequestBuilder {
    s.client()
        .get(s.url("/hosts"))
        .timeout(REQUEST_TIMEOUT)
        .header("X-Auth-Token", token)
}

/// Sends a request with its own client (`Server::send` uses the harness's).
async fn via(client: &reqwest::Client, rb: reqwest::RequestBuilder) -> Resp {
    let req = rb.build().unwrap();
    let what = format!("{} {}", req.method(), req.url().path());
    Resp::read(what, client.execute(req).await.unwrap()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_authenticate_by_common_name() {
    let env = Env::new(Backend::Sqlite);
    let pki = TestPki::generate("clients CA");
    let stranger_ca = TestPki::generate("unrelated CA");
    let tls = TlsOptions {
        pemfile: pki.server_bundle_path(),
        ca: pki.ca_path(),
        client_ca: Some(pki.ca_path()),
    };
    let mut opts = with_plugins(
        &env,
        "data",
        &["httpauthclientcert:default_role=viewer,roles={\"ops-bot\":\"operator\"}".to_string()],
    );
    opts.tls = Some(tls.clone());
    let s = Server::start(opts).await;
    let client_as = |pem: &std::path::Path| {
        let ca = std::fs::read(pki.ca_path()).unwrap();
        reqwest::Client::builder()
            .tls_certs_only(reqwest::Certificate::from_pem_bundle(&ca).unwrap())
            .identity(reqwest::Identity::from_pem(&std::fs::read(pem).unwrap()).unwrap())
            .timeout(REQUEST_TIMEOUT)
            .build()
            .unwrap()
    };
    let ops = client_as(&pki.client("ops-bot"));
    let r = via(&ops, ops.get(s.url("/hosts"))).await;
    expect_status(&r, 200);
    let r = via(
        &ops,
        ops.put(s.url("/cluster/c1"))
            .header("content-type", "application/json")
            .body("{}"),
    )
    .await;
    expect_error(
        &r,
        403,
        "user ops-bot (role operator) lacks permission clusters:write",
    );
    let viewer = client_as(&pki.client("someone"));
    expect_status(&via(&viewer, viewer.get(s.url("/hosts"))).await, 200);
    expect_error(
        &via(&viewer, viewer.get(s.url("/host/127.0.1.1/creds"))).await,
        403,
        "role viewer",
    );
    // A certificate from another CA does not even get through the handshake.
    let stranger = client_as(&stranger_ca.client("ops-bot"));
    assert!(stranger.get(s.url("/hosts")).send().await.is_err());
    // Stacked: no certificate, basic credentials → the basic plugin.
    expect_status(&s.get("/hosts").await, 200);
    expect_status(
        &s.send(s.client().get(s.url("/hosts")).timeout(REQUEST_TIMEOUT))
            .await,
        401,
    );

    // With cn set, only that CN is accepted.
    let mut opts = with_plugins(&env, "cn", &["httpauthclientcert:cn=ops-bot".to_string()]);
    opts.tls = Some(tls);
    let s2 = Server::start(opts).await;
    expect_status(&via(&ops, ops.get(s2.url("/hosts"))).await, 200);
    expect_error(
        &via(&viewer, viewer.get(s2.url("/hosts"))).await,
        401,
        "invalid credentials",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_use_token_registers_exactly_one_of_many_racing_hosts() {
    let env = Env::new(Backend::Etcd);
    let s = env.server().await;
    let key = env.key(KeyKind::Ed25519);
    let once = expect_status(&new_token(&s, json!({"single_use": true})).await, 201);
    let token = once["token"].as_str().unwrap().to_string();
    let attempts = (0..8).map(|i| {
        let (s, token, key) = (&s, token.clone(), key.b64.clone());
        async move {
            let body = json!({"address": format!("127.0.2.{}", i + 1), "ssh_priv_key": key});
            bearer(s, &token, Method::PUT, "/host", Some(&body))
                .await
                .status
        }
    });
    let statuses = futures::future::join_all(attempts).await;
    assert_eq!(
        statuses.iter().filter(|s| **s == 201).count(),
        1,
        "{statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| *s == 201 || *s == 401),
        "{statuses:?}"
    );
    let hosts = expect_status(&s.get("/hosts").await, 200);
    assert_eq!(hosts.as_array().unwrap().len(), 1, "{hosts}");
}
